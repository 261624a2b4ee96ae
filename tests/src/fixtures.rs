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

/// IPv4 `frame` with IPv4 options, fragment position and VLAN tags of choice.
pub fn v4_with(
    vlans: &[u16],
    src: [u8; 4],
    options: &[u8],
    frag: Frag,
    proto: u8,
    l4: &[u8],
) -> Vec<u8> {
    eth(
        ETH_P_IP,
        vlans,
        &ipv4(src, SERVER_V4, proto, options, frag, l4),
    )
}

/// IPv6 frame with an extension-header chain and VLAN tags of choice.
pub fn v6_with(vlans: &[u16], src: [u8; 16], exts: &[Ext], proto: u8, l4: &[u8]) -> Vec<u8> {
    eth(ETH_P_IPV6, vlans, &ipv6(src, SERVER_V6, exts, proto, l4))
}

/// The named fixture rows: (name, frame, expected reason). One row per line, so no rustfmt.
#[rustfmt::skip]
pub fn table() -> Vec<(&'static str, Vec<u8>, Reason)> {
    use Reason::*;
    let stats = udp(40000, 11211, &memcached_udp_request(1, b"stats\r\n"));
    let syn = tcp_syn(40000, 11211);
    const UDP: u8 = IPPROTO_UDP;
    const TCP: u8 = IPPROTO_TCP;
    let (q, qinq) = (ETH_P_8021Q, ETH_P_8021AD);
    let (whole, first) = (NOT_FRAGMENTED, Frag { offset: 0, more: true });
    let later = Frag { offset: 185, more: false };
    let frag6 = |offset| Ext::Fragment { offset, more: offset == 0 };
    vec![
        ("udp4 11211 from allowed",        v4(ALLOWED_V4, UDP, &stats), UdpPort),
        ("udp4 11211 from denied",         v4(DENIED_V4, UDP, &stats), UdpPort),
        ("udp6 11211 from allowed",        v6(ALLOWED_V6, UDP, &stats), UdpPort),
        ("udp6 11211 from denied",         v6(DENIED_V6, UDP, &stats), UdpPort),
        ("udp4 second port 22122",         v4(DENIED_V4, UDP, &udp(1, 22122, b"x")), UdpPort),
        ("tcp4 syn from allowed",          v4(ALLOWED_V4, TCP, &syn), TcpAllowed),
        ("tcp4 syn from denied",           v4(DENIED_V4, TCP, &syn), TcpNotAllowed),
        ("tcp6 syn from allowed /48",      v6(ALLOWED_V6, TCP, &syn), TcpAllowed),
        ("tcp6 syn from denied",           v6(DENIED_V6, TCP, &syn), TcpNotAllowed),
        ("tcp6 from v4-mapped allowed",    v6(MAPPED_ALLOWED, TCP, &syn), TcpNotAllowed),
        ("tcp4 other port",                v4(DENIED_V4, TCP, &tcp_syn(40000, 22)), NotProtected),
        ("udp4 other port",                v4(DENIED_V4, UDP, &udp(53, 53, b"q")), NotProtected),
        ("udp4 from 11211 to other",       v4(DENIED_V4, UDP, &udp(11211, 40000, b"r")), NotProtected),
        ("udp6 other port",                v6(DENIED_V6, UDP, &udp(53, 53, b"q")), NotProtected),
        ("icmp4 echo",                     v4(DENIED_V4, IPPROTO_ICMP, &icmp(8, &[0, 1, 0, 1])), NotProtected),
        ("icmp6 neighbour solicitation",   v6(DENIED_V6, IPPROTO_ICMPV6, &icmp(135, &[0; 20])), NotProtected),
        ("arp request",                    arp(DENIED_V4, SERVER_V4), NotIp),
        ("lldp",                           eth(ETH_P_LLDP, &[], &[0; 32]), NotIp),
        ("802.1Q udp4 11211",              v4_with(&[q], DENIED_V4, &[], whole, UDP, &stats), UdpPort),
        ("QinQ udp6 11211",                v6_with(&[qinq, q], DENIED_V6, &[], UDP, &stats), UdpPort),
        ("QinQ tcp4 allowed",              v4_with(&[qinq, q], ALLOWED_V4, &[], whole, TCP, &syn), TcpAllowed),
        ("three VLAN tags",                v4_with(&[q, q, q], DENIED_V4, &[], whole, UDP, &stats), VlanLimit),
        ("ipv4 options udp 11211",         v4_with(&[], DENIED_V4, &[1; 40], whole, UDP, &stats), UdpPort),
        ("ipv4 options tcp allowed",       v4_with(&[], ALLOWED_V4, &[1, 1, 1, 0], whole, TCP, &syn), TcpAllowed),
        ("ipv6 hbh+dstopts udp 11211",     v6_with(&[], DENIED_V6, &[Ext::HopByHop, Ext::DestOpts], UDP, &stats), UdpPort),
        ("ipv6 routing+ah tcp denied",     v6_with(&[], DENIED_V6, &[Ext::Routing, Ext::Auth { words: 2 }], TCP, &syn), TcpNotAllowed),
        ("ipv6 8 ext headers, udp 11211",  v6_with(&[], DENIED_V6, &[Ext::DestOpts; 8], UDP, &stats), UdpPort),
        ("ipv6 9 ext headers",             v6_with(&[], DENIED_V6, &[Ext::DestOpts; 9], UDP, &stats), ExtHeaderLimit),
        ("ipv6 no next header",            v6_with(&[], DENIED_V6, &[Ext::HopByHop], IPPROTO_NONE, &[]), NotProtected),
        ("ipv4 first fragment udp 11211",  v4_with(&[], DENIED_V4, &[], first, UDP, &stats), UdpPort),
        ("ipv4 later fragment",            v4_with(&[], DENIED_V4, &[], later, UDP, &[0; 64]), LaterFragment),
        ("ipv6 first fragment udp 11211",  v6_with(&[], DENIED_V6, &[frag6(0)], UDP, &stats), UdpPort),
        ("ipv6 later fragment",            v6_with(&[], DENIED_V6, &[frag6(185)], UDP, &[0; 64]), LaterFragment),
        ("udp4 header cut short",          truncate(v4(DENIED_V4, UDP, &stats), 14 + 20 + 3), Malformed),
        ("ipv4 header cut short",          truncate(v4(DENIED_V4, UDP, &stats), 14 + 19), Malformed),
        ("ipv4 ihl 4",                     patch(v4(DENIED_V4, UDP, &stats), 14, 0x44), Malformed),
        ("ipv4 total length < header",     patch(patch(v4(DENIED_V4, UDP, &stats), 16, 0), 17, 19), Malformed),
        ("ipv4 version 6 in v4 frame",     patch(v4(DENIED_V4, UDP, &stats), 14, 0x65), Malformed),
        ("ipv6 header cut short",          truncate(v6(DENIED_V6, UDP, &stats), 14 + 39), Malformed),
        ("ipv6 ext header cut short",      truncate(v6_with(&[], DENIED_V6, &[Ext::HopByHop], UDP, &stats), 14 + 40 + 6), Malformed),
        ("vlan tag cut short",             truncate(eth(ETH_P_IP, &[q], &[]), 16), Malformed),
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
