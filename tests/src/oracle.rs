//! The expected verdict of any frame under a policy, computed without any of the kernel
//! program's code: headers are read with etherparse's slice parsers, extension-header lengths
//! from the RFCs' definitions, and the allow-list is a plain list of `ipnet` prefixes.
//!
//! The rules it encodes are mcfilter's documented policy (README, "What the filter does").

use std::{collections::BTreeSet, net::IpAddr};

use etherparse::{Ethernet2HeaderSlice, Ipv4HeaderSlice, Ipv6HeaderSlice, SingleVlanHeaderSlice};
use ipnet::IpNet;
use mcfilter_common::Reason;

use crate::packet::{
    ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, IPPROTO_AH, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT,
    IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_TCP, IPPROTO_UDP,
};

/// VLAN tags the policy looks through.
pub const VLAN_TAGS: usize = 2;
/// IPv6 extension headers the policy walks.
pub const EXT_HEADERS: usize = 8;

/// The policy a verdict is computed under.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub ports: BTreeSet<u16>,
    pub allow: Vec<IpNet>,
}

impl Policy {
    fn allows(&self, src: IpAddr) -> bool {
        self.allow.iter().any(|net| net.contains(&src))
    }
}

/// What the filter should do with `frame`, and the source address it should count a drop under.
pub fn expected(frame: &[u8], policy: &Policy) -> (Reason, Option<IpAddr>) {
    let Ok(eth) = Ethernet2HeaderSlice::from_slice(frame) else {
        return (Reason::Malformed, None);
    };
    let mut ether_type = eth.ether_type().0;
    let mut rest = &frame[eth.slice().len()..];
    let mut tags = 0;
    while ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        if tags == VLAN_TAGS {
            return (Reason::VlanLimit, None);
        }
        let Ok(vlan) = SingleVlanHeaderSlice::from_slice(rest) else {
            return (Reason::Malformed, None);
        };
        ether_type = vlan.ether_type().0;
        rest = &rest[vlan.slice().len()..];
        tags += 1;
    }
    let network = match ether_type {
        ETH_P_IP => ipv4(rest),
        ETH_P_IPV6 => ipv6(rest),
        _ => return (Reason::NotIp, None),
    };
    let (src, proto, transport) = match network {
        Ok(found) => found,
        Err(reason) => return (reason, None),
    };
    (transport_verdict(policy, src, proto, transport), Some(src))
}

type Network<'a> = Result<(IpAddr, u8, &'a [u8]), Reason>;

fn ipv4(packet: &[u8]) -> Network<'_> {
    let header = Ipv4HeaderSlice::from_slice(packet).map_err(|_| Reason::Malformed)?;
    let header_len = header.slice().len();
    if usize::from(header.total_len()) < header_len {
        return Err(Reason::Malformed);
    }
    if header.fragments_offset().value() != 0 {
        return Err(Reason::LaterFragment);
    }
    Ok((
        IpAddr::V4(header.source_addr()),
        header.protocol().0,
        &packet[header_len..],
    ))
}

fn ipv6(packet: &[u8]) -> Network<'_> {
    let header = Ipv6HeaderSlice::from_slice(packet).map_err(|_| Reason::Malformed)?;
    let src = IpAddr::V6(header.source_addr());
    let mut next = header.next_header().0;
    let mut rest = &packet[header.slice().len()..];
    let is_extension = |proto| {
        [
            IPPROTO_HOPOPTS,
            IPPROTO_ROUTING,
            IPPROTO_DSTOPTS,
            IPPROTO_FRAGMENT,
            IPPROTO_AH,
        ]
        .contains(&proto)
    };
    for _ in 0..EXT_HEADERS {
        if !is_extension(next) {
            return Ok((src, next, rest));
        }
        let (&[ext_next, ext_len], _) = rest.split_first_chunk::<2>().ok_or(Reason::Malformed)?;
        let len = match next {
            // RFC 8200 4.5: a fixed 8 octets.
            IPPROTO_FRAGMENT => 8,
            // RFC 4302 2.2: payload length in 32-bit words, minus 2.
            IPPROTO_AH => (usize::from(ext_len) + 2) * 4,
            // RFC 8200 4.3-4.6: header extension length in 8-octet units, beyond the first 8.
            _ => (usize::from(ext_len) + 1) * 8,
        };
        if rest.len() < len {
            return Err(Reason::Malformed);
        }
        // RFC 8200 4.5: the fragment offset is the upper 13 bits of octets 2-3.
        if next == IPPROTO_FRAGMENT && u16::from_be_bytes([rest[2], rest[3]]) >> 3 != 0 {
            return Err(Reason::LaterFragment);
        }
        next = ext_next;
        rest = &rest[len..];
    }
    if is_extension(next) {
        Err(Reason::ExtHeaderLimit)
    } else {
        Ok((src, next, rest))
    }
}

fn transport_verdict(policy: &Policy, src: IpAddr, proto: u8, transport: &[u8]) -> Reason {
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return Reason::NotProtected;
    }
    // Both TCP and UDP start with source port, destination port.
    let Some(ports) = transport.get(..4) else {
        return Reason::Malformed;
    };
    let dport = u16::from_be_bytes([ports[2], ports[3]]);
    if !policy.ports.contains(&dport) {
        Reason::NotProtected
    } else if proto == IPPROTO_UDP {
        Reason::UdpPort
    } else if policy.allows(src) {
        Reason::TcpAllowed
    } else {
        Reason::TcpNotAllowed
    }
}
