//! The named evasion and policy frames every verdict test uses: one row per case, with the reason
//! the documented policy gives it, under one policy with two ports and both families allowed.

use std::collections::BTreeSet;

use mcfilter_common::Reason;

use crate::{oracle::Policy, packet::*};

pub const ALLOWED_V4: [u8; 4] = [198, 18, 1, 10];
pub const DENIED_V4: [u8; 4] = [198, 18, 2, 66];
pub const SERVER_V4: [u8; 4] = [198, 18, 0, 1];
pub const ALLOWED_V6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
pub const DENIED_V6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x66,
];
pub const SERVER_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
/// `::ffff:198.18.1.10`: an IPv6 source that must not match the IPv4 allow-list entry.
pub const MAPPED_ALLOWED: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 1, 10];

pub fn policy() -> Policy {
    Policy {
        ports: BTreeSet::from([11211, 22122]),
        allow: vec![
            "198.18.1.10/32".parse().unwrap(),
            "2001:db8:1::/48".parse().unwrap(),
        ],
    }
}

pub fn v4(src: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
    eth(
        ETH_P_IP,
        &[],
        &ipv4(src, SERVER_V4, proto, &[], NOT_FRAGMENTED, l4),
    )
}

pub fn v6(src: [u8; 16], proto: u8, l4: &[u8]) -> Vec<u8> {
    eth(ETH_P_IPV6, &[], &ipv6(src, SERVER_V6, &[], proto, l4))
}

/// The named fixture rows: (name, frame, expected reason).
pub fn table() -> Vec<(&'static str, Vec<u8>, Reason)> {
    let stats = udp(40000, 11211, &memcached_udp_request(1, b"stats\r\n"));
    let syn = tcp_syn(40000, 11211);
    let hbh_dst = [Ext::HopByHop, Ext::DestOpts];
    let first_frag = Frag {
        offset: 0,
        more: true,
    };
    let later_frag = Frag {
        offset: 185,
        more: false,
    };
    vec![
        (
            "udp4 11211 from allowed",
            v4(ALLOWED_V4, IPPROTO_UDP, &stats),
            Reason::UdpPort,
        ),
        (
            "udp4 11211 from denied",
            v4(DENIED_V4, IPPROTO_UDP, &stats),
            Reason::UdpPort,
        ),
        (
            "udp6 11211 from allowed",
            v6(ALLOWED_V6, IPPROTO_UDP, &stats),
            Reason::UdpPort,
        ),
        (
            "udp6 11211 from denied",
            v6(DENIED_V6, IPPROTO_UDP, &stats),
            Reason::UdpPort,
        ),
        (
            "udp4 second port 22122",
            v4(DENIED_V4, IPPROTO_UDP, &udp(1, 22122, b"x")),
            Reason::UdpPort,
        ),
        (
            "tcp4 syn from allowed",
            v4(ALLOWED_V4, IPPROTO_TCP, &syn),
            Reason::TcpAllowed,
        ),
        (
            "tcp4 syn from denied",
            v4(DENIED_V4, IPPROTO_TCP, &syn),
            Reason::TcpNotAllowed,
        ),
        (
            "tcp6 syn from allowed /48",
            v6(ALLOWED_V6, IPPROTO_TCP, &syn),
            Reason::TcpAllowed,
        ),
        (
            "tcp6 syn from denied",
            v6(DENIED_V6, IPPROTO_TCP, &syn),
            Reason::TcpNotAllowed,
        ),
        (
            "tcp6 from v4-mapped allowed",
            v6(MAPPED_ALLOWED, IPPROTO_TCP, &syn),
            Reason::TcpNotAllowed,
        ),
        (
            "tcp4 other port",
            v4(DENIED_V4, IPPROTO_TCP, &tcp_syn(40000, 22)),
            Reason::NotProtected,
        ),
        (
            "udp4 other port",
            v4(DENIED_V4, IPPROTO_UDP, &udp(53, 53, b"q")),
            Reason::NotProtected,
        ),
        (
            "udp4 from 11211 to other",
            v4(DENIED_V4, IPPROTO_UDP, &udp(11211, 40000, b"r")),
            Reason::NotProtected,
        ),
        (
            "udp6 other port",
            v6(DENIED_V6, IPPROTO_UDP, &udp(53, 53, b"q")),
            Reason::NotProtected,
        ),
        (
            "icmp4 echo",
            v4(DENIED_V4, IPPROTO_ICMP, &icmp(8, &[0, 1, 0, 1])),
            Reason::NotProtected,
        ),
        (
            "icmp6 neighbour solicitation",
            v6(DENIED_V6, IPPROTO_ICMPV6, &icmp(135, &[0; 20])),
            Reason::NotProtected,
        ),
        ("arp request", arp(DENIED_V4, SERVER_V4), Reason::NotIp),
        ("lldp", eth(ETH_P_LLDP, &[], &[0; 32]), Reason::NotIp),
        (
            "802.1Q udp4 11211",
            eth(
                ETH_P_IP,
                &[ETH_P_8021Q],
                &ipv4(
                    DENIED_V4,
                    SERVER_V4,
                    IPPROTO_UDP,
                    &[],
                    NOT_FRAGMENTED,
                    &stats,
                ),
            ),
            Reason::UdpPort,
        ),
        (
            "QinQ udp6 11211",
            eth(
                ETH_P_IPV6,
                &[ETH_P_8021AD, ETH_P_8021Q],
                &ipv6(DENIED_V6, SERVER_V6, &[], IPPROTO_UDP, &stats),
            ),
            Reason::UdpPort,
        ),
        (
            "QinQ tcp4 allowed",
            eth(
                ETH_P_IP,
                &[ETH_P_8021AD, ETH_P_8021Q],
                &ipv4(
                    ALLOWED_V4,
                    SERVER_V4,
                    IPPROTO_TCP,
                    &[],
                    NOT_FRAGMENTED,
                    &syn,
                ),
            ),
            Reason::TcpAllowed,
        ),
        (
            "three VLAN tags",
            eth(
                ETH_P_IP,
                &[ETH_P_8021Q, ETH_P_8021Q, ETH_P_8021Q],
                &ipv4(
                    DENIED_V4,
                    SERVER_V4,
                    IPPROTO_UDP,
                    &[],
                    NOT_FRAGMENTED,
                    &stats,
                ),
            ),
            Reason::VlanLimit,
        ),
        (
            "ipv4 options udp 11211",
            eth(
                ETH_P_IP,
                &[],
                &ipv4(
                    DENIED_V4,
                    SERVER_V4,
                    IPPROTO_UDP,
                    &[1; 40],
                    NOT_FRAGMENTED,
                    &stats,
                ),
            ),
            Reason::UdpPort,
        ),
        (
            "ipv4 options tcp allowed",
            eth(
                ETH_P_IP,
                &[],
                &ipv4(
                    ALLOWED_V4,
                    SERVER_V4,
                    IPPROTO_TCP,
                    &[1, 1, 1, 0],
                    NOT_FRAGMENTED,
                    &syn,
                ),
            ),
            Reason::TcpAllowed,
        ),
        (
            "ipv6 hbh+dstopts udp 11211",
            eth(
                ETH_P_IPV6,
                &[],
                &ipv6(DENIED_V6, SERVER_V6, &hbh_dst, IPPROTO_UDP, &stats),
            ),
            Reason::UdpPort,
        ),
        (
            "ipv6 routing+ah tcp denied",
            eth(
                ETH_P_IPV6,
                &[],
                &ipv6(
                    DENIED_V6,
                    SERVER_V6,
                    &[Ext::Routing, Ext::Auth { words: 2 }],
                    IPPROTO_TCP,
                    &syn,
                ),
            ),
            Reason::TcpNotAllowed,
        ),
        (
            "ipv6 8 ext headers then udp 11211",
            eth(
                ETH_P_IPV6,
                &[],
                &ipv6(
                    DENIED_V6,
                    SERVER_V6,
                    &[Ext::DestOpts; 8],
                    IPPROTO_UDP,
                    &stats,
                ),
            ),
            Reason::UdpPort,
        ),
        (
            "ipv6 9 ext headers",
            eth(
                ETH_P_IPV6,
                &[],
                &ipv6(
                    DENIED_V6,
                    SERVER_V6,
                    &[Ext::DestOpts; 9],
                    IPPROTO_UDP,
                    &stats,
                ),
            ),
            Reason::ExtHeaderLimit,
        ),
        (
            "ipv6 no next header",
            eth(
                ETH_P_IPV6,
                &[],
                &ipv6(DENIED_V6, SERVER_V6, &[Ext::HopByHop], IPPROTO_NONE, &[]),
            ),
            Reason::NotProtected,
        ),
        (
            "ipv4 first fragment udp 11211",
            eth(
                ETH_P_IP,
                &[],
                &ipv4(DENIED_V4, SERVER_V4, IPPROTO_UDP, &[], first_frag, &stats),
            ),
            Reason::UdpPort,
        ),
        (
            "ipv4 later fragment",
            eth(
                ETH_P_IP,
                &[],
                &ipv4(DENIED_V4, SERVER_V4, IPPROTO_UDP, &[], later_frag, &[0; 64]),
            ),
            Reason::LaterFragment,
        ),
        (
            "ipv6 first fragment udp 11211",
            eth(
                ETH_P_IPV6,
                &[],
                &ipv6(
                    DENIED_V6,
                    SERVER_V6,
                    &[Ext::Fragment {
                        offset: 0,
                        more: true,
                    }],
                    IPPROTO_UDP,
                    &stats,
                ),
            ),
            Reason::UdpPort,
        ),
        (
            "ipv6 later fragment",
            eth(
                ETH_P_IPV6,
                &[],
                &ipv6(
                    DENIED_V6,
                    SERVER_V6,
                    &[Ext::Fragment {
                        offset: 185,
                        more: false,
                    }],
                    IPPROTO_UDP,
                    &[0; 64],
                ),
            ),
            Reason::LaterFragment,
        ),
        (
            "udp4 header cut short",
            truncate(v4(DENIED_V4, IPPROTO_UDP, &stats), 14 + 20 + 3),
            Reason::Malformed,
        ),
        (
            "ipv4 header cut short",
            truncate(v4(DENIED_V4, IPPROTO_UDP, &stats), 14 + 19),
            Reason::Malformed,
        ),
        (
            "ipv4 ihl 4",
            patch(v4(DENIED_V4, IPPROTO_UDP, &stats), 14, 0x44),
            Reason::Malformed,
        ),
        (
            "ipv4 total length < header",
            patch(patch(v4(DENIED_V4, IPPROTO_UDP, &stats), 16, 0), 17, 19),
            Reason::Malformed,
        ),
        (
            "ipv4 version 6 in v4 frame",
            patch(v4(DENIED_V4, IPPROTO_UDP, &stats), 14, 0x65),
            Reason::Malformed,
        ),
        (
            "ipv6 header cut short",
            truncate(v6(DENIED_V6, IPPROTO_UDP, &stats), 14 + 39),
            Reason::Malformed,
        ),
        (
            "ipv6 ext header cut short",
            truncate(
                eth(
                    ETH_P_IPV6,
                    &[],
                    &ipv6(DENIED_V6, SERVER_V6, &[Ext::HopByHop], IPPROTO_UDP, &stats),
                ),
                14 + 40 + 6,
            ),
            Reason::Malformed,
        ),
        (
            "vlan tag cut short",
            truncate(eth(ETH_P_IP, &[ETH_P_8021Q], &[]), 16),
            Reason::Malformed,
        ),
    ]
}

pub fn truncate(mut frame: Vec<u8>, len: usize) -> Vec<u8> {
    frame.truncate(len);
    frame
}

pub fn patch(mut frame: Vec<u8>, offset: usize, byte: u8) -> Vec<u8> {
    frame[offset] = byte;
    frame
}
