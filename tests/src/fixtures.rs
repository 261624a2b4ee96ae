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
        drop_reflected: true,
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

/// A frame's IPv4 total length or IPv6 payload length set to `len`, the frame unchanged.
pub fn ip_len(mut frame: Vec<u8>, l3_offset: usize, len: u16) -> Vec<u8> {
    let at = if frame[l3_offset] >> 4 == 4 {
        l3_offset + 2
    } else {
        l3_offset + 4
    };
    frame[at..at + 2].copy_from_slice(&len.to_be_bytes());
    frame
}

/// The named fixture rows: (name, frame, expected reason), judged in this order (the fragment
/// rows depend on the first fragments before them). One row per line, so no rustfmt.
#[rustfmt::skip]
pub fn table() -> Vec<(&'static str, Vec<u8>, Reason)> {
    use Reason::*;
    let stats = udp(40000, 11211, &memcached_udp_request(1, b"stats\r\n"));
    let syn = tcp_syn(40000, 11211);
    const UDP: u8 = IPPROTO_UDP;
    const TCP: u8 = IPPROTO_TCP;
    let (q, qinq) = (ETH_P_8021Q, ETH_P_8021AD);
    let whole = NOT_FRAGMENTED;
    let rest = [0u8; 64];
    let f6 = |offset, more, id| [Ext::Fragment { offset, more, id }];
    let l3 = 14; // where the IP header starts in an untagged frame
    vec![
        // The policy, both families.
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
        ("udp4 from 11211 to other",       v4(DENIED_V4, UDP, &udp(11211, 40000, b"r")), Reflected),
        ("udp6 from 22122, QinQ",          v6_with(&[qinq, q], DENIED_V6, &[], UDP, &udp(22122, 40000, b"r")), Reflected),
        ("tcp4 from 11211 to other",       v4(DENIED_V4, TCP, &tcp_syn(11211, 40000)), NotProtected),
        ("reflected first frag #9",        v4_with(&[], DENIED_V4, &[], Frag::first(9), UDP, &udp(11211, 40000, &[0; 32])), Reflected),
        ("later frag of reflected #9",     v4_with(&[], DENIED_V4, &[], Frag::later(9, 5, false), UDP, &rest), FragmentOfDropped),
        ("udp6 other port",                v6(DENIED_V6, UDP, &udp(53, 53, b"q")), NotProtected),
        ("icmp4 echo",                     v4(DENIED_V4, IPPROTO_ICMP, &icmp(8, &[0, 1, 0, 1])), NotProtected),
        ("icmp6 neighbour solicitation",   v6(DENIED_V6, IPPROTO_ICMPV6, &icmp(135, &[0; 20])), NotProtected),
        ("esp6 (encrypted, no ports)",     v6(DENIED_V6, IPPROTO_ESP, &[0; 32]), NotProtected),
        ("arp request",                    arp(DENIED_V4, SERVER_V4), NotIp),
        ("lldp",                           eth(ETH_P_LLDP, &[], &[0; 32]), NotIp),
        // VLAN tags.
        ("802.1Q udp4 11211",              v4_with(&[q], DENIED_V4, &[], whole, UDP, &stats), UdpPort),
        ("802.1ad udp4 other port",        v4_with(&[qinq], DENIED_V4, &[], whole, UDP, &udp(1, 53, b"q")), NotProtected),
        ("QinQ udp6 11211",                v6_with(&[qinq, q], DENIED_V6, &[], UDP, &stats), UdpPort),
        ("QinQ tcp4 allowed",              v4_with(&[qinq, q], ALLOWED_V4, &[], whole, TCP, &syn), TcpAllowed),
        ("QinQ tcp6 denied",               v6_with(&[q, q], DENIED_V6, &[], TCP, &syn), TcpNotAllowed),
        ("three VLAN tags",                v4_with(&[q, q, q], DENIED_V4, &[], whole, UDP, &stats), VlanLimit),
        // IPv4 options (IHL 6..15).
        ("ipv4 ihl 15 udp 11211",          v4_with(&[], DENIED_V4, &[1; 40], whole, UDP, &stats), UdpPort),
        ("ipv4 ihl 6 tcp allowed",         v4_with(&[], ALLOWED_V4, &[1, 1, 1, 0], whole, TCP, &syn), TcpAllowed),
        ("ipv4 ihl 10 tcp denied, QinQ",   v4_with(&[qinq, q], DENIED_V4, &[1; 20], whole, TCP, &syn), TcpNotAllowed),
        ("ipv4 ihl 8 udp other port",      v4_with(&[], DENIED_V4, &[1; 12], whole, UDP, &udp(1, 53, b"q")), NotProtected),
        // IPv6 extension headers.
        ("ipv6 hbh+dstopts udp 11211",     v6_with(&[], DENIED_V6, &[Ext::HopByHop, Ext::DestOpts], UDP, &stats), UdpPort),
        ("ipv6 routing+ah tcp denied",     v6_with(&[], DENIED_V6, &[Ext::Routing, Ext::Auth { words: 2 }], TCP, &syn), TcpNotAllowed),
        ("ipv6 hbh tcp allowed, 802.1Q",   v6_with(&[q], ALLOWED_V6, &[Ext::HopByHop], TCP, &syn), TcpAllowed),
        ("ipv6 4 ext headers, udp 11211",  v6_with(&[], DENIED_V6, &[Ext::DestOpts; 4], UDP, &stats), UdpPort),
        ("ipv6 5 ext headers",             v6_with(&[], DENIED_V6, &[Ext::DestOpts; 5], UDP, &stats), ExtHeaderLimit),
        ("ipv6 chain ends in mobility",    v6_with(&[], DENIED_V6, &[Ext::HopByHop], IPPROTO_MOBILITY, &stats), ExtHeaderUnknown),
        ("ipv6 no next header",            v6_with(&[], DENIED_V6, &[Ext::HopByHop], IPPROTO_NONE, &[]), NotProtected),
        // IPv4 fragments: the first is judged, later ones follow its verdict.
        ("ipv4 first frag udp 11211 #1",   v4_with(&[], DENIED_V4, &[], Frag::first(1), UDP, &stats), UdpPort),
        ("ipv4 later frag of #1",          v4_with(&[], DENIED_V4, &[], Frag::later(1, 185, true), UDP, &rest), FragmentOfDropped),
        ("ipv4 last frag of #1, 802.1Q",   v4_with(&[q], DENIED_V4, &[], Frag::later(1, 370, false), UDP, &rest), FragmentOfDropped),
        ("ipv4 later frag, other proto",   v4_with(&[], DENIED_V4, &[], Frag::later(1, 185, true), TCP, &rest), LaterFragment),
        ("ipv4 later frag of unseen #2",   v4_with(&[], DENIED_V4, &[], Frag::later(2, 185, false), UDP, &rest), LaterFragment),
        ("ipv4 first frag other port #3",  v4_with(&[], DENIED_V4, &[], Frag::first(3), UDP, &udp(1, 53, &rest)), NotProtected),
        ("ipv4 later frag of #3",          v4_with(&[], DENIED_V4, &[], Frag::later(3, 9, false), UDP, &rest), LaterFragment),
        ("ipv4 first frag tcp allowed #4", v4_with(&[], ALLOWED_V4, &[1, 1, 1, 0], Frag::first(4), TCP, &syn), TcpAllowed),
        ("ipv4 later frag of #4",          v4_with(&[], ALLOWED_V4, &[], Frag::later(4, 5, false), TCP, &rest), LaterFragment),
        ("ipv4 first frag tcp denied #5",  v4_with(&[qinq, q], DENIED_V4, &[], Frag::first(5), TCP, &syn), TcpNotAllowed),
        ("ipv4 later frag of #5",          v4_with(&[], DENIED_V4, &[], Frag::later(5, 5, false), TCP, &rest), FragmentOfDropped),
        ("ipv4 short first frag #6",       v4_with(&[], DENIED_V4, &[], Frag::first(6), UDP, &[0x9c, 0x40]), ShortFirstFragment),
        ("ipv4 later frag of #6",          v4_with(&[], DENIED_V4, &[], Frag::later(6, 1, false), UDP, &rest), FragmentOfDropped),
        ("ipv4 #1 reused, other port",     v4_with(&[], DENIED_V4, &[], Frag::first(1), UDP, &udp(1, 53, &rest)), NotProtected),
        ("ipv4 later frag of reused #1",   v4_with(&[], DENIED_V4, &[], Frag::later(1, 9, false), UDP, &rest), LaterFragment),
        // IPv6 fragments, the fragment header anywhere in the chain.
        ("ipv6 first frag udp 11211 #1",   v6_with(&[], DENIED_V6, &f6(0, true, 1), UDP, &stats), UdpPort),
        ("ipv6 later frag of #1",          v6_with(&[], DENIED_V6, &f6(185, false, 1), UDP, &rest), FragmentOfDropped),
        ("ipv6 later frag #1, other nh",   v6_with(&[], DENIED_V6, &f6(185, false, 1), TCP, &rest), FragmentOfDropped),
        ("ipv6 later frag of unseen #2",   v6_with(&[], DENIED_V6, &f6(185, false, 2), UDP, &rest), LaterFragment),
        ("ipv6 hbh, first frag tcp #3",    v6_with(&[], ALLOWED_V6, &[Ext::HopByHop, Ext::Fragment { offset: 0, more: true, id: 3 }], TCP, &syn), TcpAllowed),
        ("ipv6 hbh, later frag of #3",     v6_with(&[q], ALLOWED_V6, &[Ext::HopByHop, Ext::Fragment { offset: 3, more: false, id: 3 }], TCP, &rest), LaterFragment),
        ("ipv6 first frag, dstopts, #4",   v6_with(&[], DENIED_V6, &[Ext::Fragment { offset: 0, more: true, id: 4 }, Ext::DestOpts], UDP, &stats), UdpPort),
        ("ipv6 later frag of #4",          v6_with(&[], DENIED_V6, &f6(9, false, 4), IPPROTO_DSTOPTS, &rest), FragmentOfDropped),
        ("ipv6 short first frag #5",       v6_with(&[], DENIED_V6, &f6(0, true, 5), UDP, &[0x9c, 0x40]), ShortFirstFragment),
        ("ipv6 later frag of #5",          v6_with(&[], DENIED_V6, &f6(1, false, 5), UDP, &rest), FragmentOfDropped),
        ("ipv6 first frag, chain cut #6",  ip_len(v6_with(&[], DENIED_V6, &[Ext::Fragment { offset: 0, more: true, id: 6 }, Ext::HopByHop], UDP, &stats), l3, 12), ShortFirstFragment),
        ("ipv6 later frag of #6",          v6_with(&[], DENIED_V6, &f6(2, false, 6), UDP, &rest), FragmentOfDropped),
        ("ipv6 atomic frag udp 11211",     v6_with(&[], DENIED_V6, &f6(0, false, 7), UDP, &stats), UdpPort),
        ("ipv6 later frag of atomic #7",   v6_with(&[], DENIED_V6, &f6(9, false, 7), UDP, &rest), LaterFragment),
        // GRO merged past 64 KiB (BIG TCP, skb mode): length 0, the datagram ends with the frame.
        ("tcp4 allowed, gro-merged len 0", ip_len(v4(ALLOWED_V4, TCP, &syn), l3, 0), TcpAllowed),
        ("tcp4 denied, gro-merged len 0",  ip_len(v4(DENIED_V4, TCP, &syn), l3, 0), TcpNotAllowed),
        ("udp4 11211, len 0",              ip_len(v4(DENIED_V4, UDP, &stats), l3, 0), UdpPort),
        ("tcp6 allowed, gro-merged len 0", ip_len(v6(ALLOWED_V6, TCP, &syn), l3, 0), TcpAllowed),
        ("udp6 11211, len 0, hop-by-hop",  ip_len(v6_with(&[], DENIED_V6, &[Ext::HopByHop], UDP, &stats), l3, 0), UdpPort),
        // Truncated and invalid headers.
        ("udp4 header cut short",          truncate(v4(DENIED_V4, UDP, &stats), l3 + 20 + 3), Truncated),
        ("udp4 ports in padding only",     ip_len(pad(v4(DENIED_V4, UDP, &[0x9c, 0x40]), 60), l3, 22), Truncated),
        ("ipv4 header cut short",          truncate(v4(DENIED_V4, UDP, &stats), l3 + 19), Truncated),
        ("ipv4 options cut short",         truncate(v4_with(&[], DENIED_V4, &[1; 40], whole, UDP, &stats), l3 + 40), Truncated),
        ("ipv4 total length beyond frame", ip_len(v4(DENIED_V4, UDP, &stats), l3, 1500), Truncated),
        ("ipv4 ihl 4",                     patch(v4(DENIED_V4, UDP, &stats), l3, 0x44), Malformed),
        ("ipv4 total length < header",     ip_len(v4(DENIED_V4, UDP, &stats), l3, 19), Malformed),
        ("ipv4 version 6 in v4 frame",     patch(v4(DENIED_V4, UDP, &stats), l3, 0x65), Malformed),
        ("ipv6 version 4 in v6 frame",     patch(v6(DENIED_V6, UDP, &stats), l3, 0x45), Malformed),
        ("ipv6 header cut short",          truncate(v6(DENIED_V6, UDP, &stats), l3 + 39), Truncated),
        ("ipv6 payload length beyond frame", ip_len(v6(DENIED_V6, UDP, &stats), l3, 1000), Truncated),
        ("ipv6 ext header cut short",      truncate(v6_with(&[], DENIED_V6, &[Ext::HopByHop], UDP, &stats), l3 + 40 + 6), Truncated),
        ("ipv6 udp ports beyond payload",  ip_len(v6_with(&[], DENIED_V6, &[Ext::HopByHop], UDP, &stats), l3, 10), Truncated),
        ("vlan tag cut short",             truncate(eth(ETH_P_IP, &[q], &[]), 16), Truncated),
    ]
}

/// `frame` padded with zeros to `len` bytes (like Ethernet's minimum frame).
pub fn pad(mut frame: Vec<u8>, len: usize) -> Vec<u8> {
    frame.resize(len.max(frame.len()), 0);
    frame
}

pub fn truncate(mut frame: Vec<u8>, len: usize) -> Vec<u8> {
    frame.truncate(len);
    frame
}

pub fn patch(mut frame: Vec<u8>, offset: usize, byte: u8) -> Vec<u8> {
    frame[offset] = byte;
    frame
}
