//! Generated frames for differential testing: structure-aware random frames, and byte-level
//! mutations of fixture frames. Everything is drawn from a seeded [`Rng`], so a failure
//! reproduces from its seed.

use crate::{
    Rng,
    fixtures::{
        ALLOWED_V4, ALLOWED_V6, DENIED_V4, DENIED_V6, MAPPED_ALLOWED, SERVER_V4, SERVER_V6,
    },
    packet::*,
};

/// A frame assembled from random but well-formed layers.
pub fn random_frame(rng: &mut Rng) -> Vec<u8> {
    let ports = [11211, 22122, 11212, 80, 53, 0];
    let dport = *rng.pick(&ports);
    let l4proto = *rng.pick(&[IPPROTO_UDP, IPPROTO_TCP, IPPROTO_ICMP, IPPROTO_ICMPV6, 99]);
    let l4 = match l4proto {
        IPPROTO_UDP => udp(rng.below(65536) as u16, dport, &[0; 8]),
        IPPROTO_TCP => tcp_syn(rng.below(65536) as u16, dport),
        _ => icmp(8, &[0; 8]),
    };
    let vlans: Vec<u16> = (0..rng.below(4))
        .map(|_| *rng.pick(&[ETH_P_8021Q, ETH_P_8021AD]))
        .collect();
    if rng.chance(50) {
        let src = *rng.pick(&[ALLOWED_V4, DENIED_V4, [198, 18, 1, 11], [0; 4]]);
        let options = vec![1u8; 4 * rng.below(11)];
        let frag = Frag {
            offset: if rng.chance(20) {
                rng.below(8192) as u16
            } else {
                0
            },
            more: rng.chance(20),
        };
        eth(
            ETH_P_IP,
            &vlans,
            &ipv4(src, SERVER_V4, l4proto, &options, frag, &l4),
        )
    } else {
        let src = *rng.pick(&[ALLOWED_V6, DENIED_V6, MAPPED_ALLOWED]);
        let kinds = [
            Ext::HopByHop,
            Ext::Routing,
            Ext::DestOpts,
            Ext::Auth { words: 1 },
            Ext::Fragment {
                offset: 0,
                more: true,
            },
            Ext::Fragment {
                offset: 7,
                more: false,
            },
        ];
        let exts: Vec<Ext> = (0..rng.below(11)).map(|_| *rng.pick(&kinds)).collect();
        eth(
            ETH_P_IPV6,
            &vlans,
            &ipv6(src, SERVER_V6, &exts, l4proto, &l4),
        )
    }
}

/// Byte-level mutations: flips, truncation, growth.
pub fn mutate(rng: &mut Rng, mut frame: Vec<u8>) -> Vec<u8> {
    for _ in 0..=rng.below(4) {
        match rng.below(4) {
            0 | 1 if !frame.is_empty() => {
                let i = rng.below(frame.len());
                frame[i] = rng.next_u64() as u8;
            }
            2 if !frame.is_empty() => frame.truncate(rng.below(frame.len() + 1)),
            _ => frame.extend((0..rng.below(16)).map(|_| rng.next_u64() as u8)),
        }
    }
    frame
}
