//! Generated frames for differential testing: structure-aware random frames, and byte-level
//! mutations of fixture frames. Everything is drawn from a seeded [`Rng`], so a failure
//! reproduces from its seed. Fragment ids come from a small pool so that later fragments often
//! meet the first fragments before them.

use crate::{
    Rng,
    fixtures::{
        ALLOWED_V4, ALLOWED_V6, DENIED_V4, DENIED_V6, MAPPED_ALLOWED, SERVER_V4, SERVER_V6, pad,
    },
    packet::*,
};

/// Datagram ids drawn for fragments.
const FRAGMENT_IDS: usize = 8;

/// A frame assembled from random but well-formed layers.
pub fn random_frame(rng: &mut Rng) -> Vec<u8> {
    let dport = *rng.pick(&[11211, 22122, 11212, 80, 53, 0]);
    let protos = [
        IPPROTO_UDP,
        IPPROTO_TCP,
        IPPROTO_UDP,
        IPPROTO_TCP,
        IPPROTO_ICMP,
        IPPROTO_ICMPV6,
        IPPROTO_ESP,
        IPPROTO_MOBILITY,
        IPPROTO_NONE,
        99,
    ];
    let proto = *rng.pick(&protos);
    let any_port = rng.below(65536) as u16;
    let sport = *rng.pick(&[11211, 22122, 40000, 53, any_port]);
    let mut l4 = match proto {
        IPPROTO_UDP => udp(sport, dport, &[0; 8]),
        IPPROTO_TCP => tcp_syn(sport, dport),
        _ => icmp(8, &[0; 8]),
    };
    if rng.chance(10) {
        // Too short to hold the ports, or not quite.
        l4.truncate(rng.below(5));
    }
    // Mostly untagged; one, two and (over the limit) three tags too.
    let tags = *rng.pick(&[0, 0, 0, 0, 0, 1, 1, 2, 2, 3]);
    let vlans: Vec<u16> = (0..tags)
        .map(|_| *rng.pick(&[ETH_P_8021Q, ETH_P_8021AD]))
        .collect();
    let id = rng.below(FRAGMENT_IDS);
    let frame = if rng.chance(50) {
        let src = *rng.pick(&[ALLOWED_V4, DENIED_V4, [198, 18, 1, 11], [0; 4]]);
        let options = vec![1u8; 4 * rng.below(11)];
        let frag = match rng.below(4) {
            0 => Frag::first(id as u16),
            1 => Frag::later(id as u16, 1 + rng.below(8191) as u16, rng.chance(50)),
            _ => NOT_FRAGMENTED,
        };
        eth(
            ETH_P_IP,
            &vlans,
            &ipv4(src, SERVER_V4, proto, &options, frag, &l4),
        )
    } else {
        let src = *rng.pick(&[ALLOWED_V6, DENIED_V6, MAPPED_ALLOWED]);
        let frag = |rng: &mut Rng, offset| Ext::Fragment {
            offset,
            more: offset == 0 || rng.chance(50),
            id: id as u32,
        };
        let exts: Vec<Ext> = (0..rng.below(11))
            .map(|_| match rng.below(7) {
                0 => Ext::HopByHop,
                1 => Ext::Routing,
                2 => Ext::DestOpts,
                3 => Ext::Auth {
                    words: rng.below(3) as u8,
                },
                4 => frag(rng, 0),
                5 => {
                    let offset = 1 + rng.below(8191) as u16;
                    frag(rng, offset)
                }
                _ => Ext::Fragment {
                    offset: 0,
                    more: false,
                    id: id as u32,
                },
            })
            .collect();
        eth(ETH_P_IPV6, &vlans, &ipv6(src, SERVER_V6, &exts, proto, &l4))
    };
    if rng.chance(20) {
        pad(frame, 60)
    } else {
        frame
    }
}

/// Byte-level mutations: flips (mostly in the headers), truncation, growth.
pub fn mutate(rng: &mut Rng, mut frame: Vec<u8>) -> Vec<u8> {
    for _ in 0..=rng.below(4) {
        match rng.below(4) {
            0 | 1 if !frame.is_empty() => {
                let span = if rng.chance(70) {
                    frame.len().min(80)
                } else {
                    frame.len()
                };
                let i = rng.below(span);
                frame[i] = rng.next_u64() as u8;
            }
            2 if !frame.is_empty() => frame.truncate(rng.below(frame.len() + 1)),
            _ => frame.extend((0..rng.below(16)).map(|_| rng.next_u64() as u8)),
        }
    }
    frame
}
