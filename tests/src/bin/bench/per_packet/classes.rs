//! The per-packet classes: one frame each, and the allow-list size it runs against.

use std::{collections::BTreeSet, net::Ipv4Addr};

use ipnet::IpNet;
use mcfilter_tests::{fixtures::*, packet::*};

/// `2001:db8::3`, a /128 entry of every [`allow_list`] (its fourth generated entry).
const LISTED_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3];

/// The IPv4 address of generated entry `i` (a /32 unless `i % 10` says otherwise).
fn generated_v4(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000u32.wrapping_add(i.wrapping_mul(2_654_435_761) >> 4))
}

/// An allow-list of `n` entries: mostly /32 and /128, some /24 and /64, always including the
/// allowed fixtures' prefixes (`198.18.1.10/32`, `2001:db8:1::/48`) and [`LISTED_V6`].
pub(crate) fn allow_list(n: usize) -> Vec<IpNet> {
    let mut nets: BTreeSet<IpNet> = policy().allow.into_iter().collect();
    let mut i: u32 = 0;
    while nets.len() < n {
        let v4 = generated_v4(i);
        let net = match i % 10 {
            0 => IpNet::new(v4.into(), 24),
            1 | 2 => IpNet::new(
                std::net::Ipv6Addr::from((0x2001_0db8u128 << 96) | u128::from(i) << 64).into(),
                64,
            ),
            3 => IpNet::new(
                std::net::Ipv6Addr::from((0x2001_0db8u128 << 96) | u128::from(i)).into(),
                128,
            ),
            _ => IpNet::new(v4.into(), 32),
        }
        .expect("prefix")
        .trunc();
        nets.insert(net);
        i += 1;
    }
    nets.into_iter().collect()
}

/// Every class: its name, its frame, and the number of allow-list entries it runs against.
pub(super) fn classes() -> Vec<(&'static str, Vec<u8>, usize)> {
    let stats = udp(40000, 11211, &memcached_udp_request(1, b"stats\r\n"));
    let syn = tcp_syn(40000, 11211);
    let (q, qinq) = (ETH_P_8021Q, ETH_P_8021AD);
    let hbh_dst_rt = [Ext::HopByHop, Ext::DestOpts, Ext::Routing];
    vec![
        (
            "udp4 other port",
            v4(DENIED_V4, IPPROTO_UDP, &udp(1, 53, &[0; 32])),
            10,
        ),
        (
            "udp6 other port",
            v6(DENIED_V6, IPPROTO_UDP, &udp(1, 53, &[0; 32])),
            10,
        ),
        (
            "tcp4 other port",
            v4(DENIED_V4, IPPROTO_TCP, &tcp_syn(1, 80)),
            10,
        ),
        (
            "tcp6 other port",
            v6(DENIED_V6, IPPROTO_TCP, &tcp_syn(1, 80)),
            10,
        ),
        ("arp", arp(DENIED_V4, SERVER_V4), 10),
        ("udp4 11211", v4(DENIED_V4, IPPROTO_UDP, &stats), 10),
        ("udp6 11211", v6(DENIED_V6, IPPROTO_UDP, &stats), 10),
        (
            "udp4 11211, QinQ",
            v4_with(
                &[qinq, q],
                DENIED_V4,
                &[],
                NOT_FRAGMENTED,
                IPPROTO_UDP,
                &stats,
            ),
            10,
        ),
        (
            "udp4 11211, 40 B options",
            v4_with(
                &[],
                DENIED_V4,
                &[1; 40],
                NOT_FRAGMENTED,
                IPPROTO_UDP,
                &stats,
            ),
            10,
        ),
        (
            "udp6 11211, 3 ext headers",
            v6_with(&[], DENIED_V6, &hbh_dst_rt, IPPROTO_UDP, &stats),
            10,
        ),
        (
            "tcp4 allowed address, 10 entries",
            v4(ALLOWED_V4, IPPROTO_TCP, &syn),
            10,
        ),
        (
            "tcp4 denied, 10 entries",
            v4(DENIED_V4, IPPROTO_TCP, &syn),
            10,
        ),
        (
            "tcp6 allowed address, 10 entries",
            v6(LISTED_V6, IPPROTO_TCP, &syn),
            10,
        ),
        (
            "tcp6 allowed by a /48, 10 entries",
            v6(ALLOWED_V6, IPPROTO_TCP, &syn),
            10,
        ),
        (
            "tcp4 allowed address, 10k entries",
            v4(ALLOWED_V4, IPPROTO_TCP, &syn),
            10_000,
        ),
        (
            "tcp4 allowed address among the generated ones, 10k entries",
            v4(generated_v4(4).octets(), IPPROTO_TCP, &syn),
            10_000,
        ),
        (
            "tcp4 denied, 10k entries",
            v4(DENIED_V4, IPPROTO_TCP, &syn),
            10_000,
        ),
        (
            "tcp4 allowed address, 1M entries",
            v4(ALLOWED_V4, IPPROTO_TCP, &syn),
            1_000_000,
        ),
        (
            "tcp4 allowed address among the generated ones, 1M entries",
            v4(generated_v4(4).octets(), IPPROTO_TCP, &syn),
            1_000_000,
        ),
        (
            "tcp4 denied, 1M entries",
            v4(DENIED_V4, IPPROTO_TCP, &syn),
            1_000_000,
        ),
        (
            "tcp6 allowed address, 1M entries",
            v6(LISTED_V6, IPPROTO_TCP, &syn),
            1_000_000,
        ),
        (
            "tcp6 allowed by a /48, 1M entries",
            v6(ALLOWED_V6, IPPROTO_TCP, &syn),
            1_000_000,
        ),
        (
            "udp4 11211 first fragment",
            v4_with(&[], DENIED_V4, &[], Frag::first(9), IPPROTO_UDP, &stats),
            10,
        ),
        (
            "udp4 later fragment",
            v4_with(
                &[],
                DENIED_V4,
                &[],
                Frag::later(9, 185, false),
                IPPROTO_UDP,
                &[0; 64],
            ),
            10,
        ),
        (
            "udp6 later fragment",
            v6_with(
                &[],
                DENIED_V6,
                &[Ext::Fragment {
                    offset: 185,
                    more: false,
                    id: 9,
                }],
                IPPROTO_UDP,
                &[0; 64],
            ),
            10,
        ),
    ]
}
