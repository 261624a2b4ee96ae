//! The expected verdict of any frame under a policy, computed without any of the kernel
//! program's code: Ethernet, VLAN, IPv4 and IPv6 headers are read with etherparse's slice
//! parsers, extension-header lengths from the RFCs' definitions, the allow-list is a plain list
//! of `ipnet` prefixes and the fragment cache a plain map.
//!
//! The rules it encodes are mcfilter's documented policy (README, "What the filter does").

use std::{
    collections::{BTreeSet, HashSet},
    net::IpAddr,
};

use etherparse::{
    Ethernet2HeaderSlice, Ipv4HeaderSlice, Ipv6HeaderSlice, SingleVlanHeaderSlice,
    err::{ipv4::HeaderSliceError as V4Error, ipv6::HeaderSliceError as V6Error},
};
use ipnet::IpNet;
use mcfilter_common::Reason;

use crate::packet::{
    ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, IPPROTO_AH, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT,
    IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_TCP, IPPROTO_UDP,
};

/// VLAN tags the policy looks through.
pub const VLAN_TAGS: usize = 2;
/// IPv6 extension headers the policy walks.
pub const EXT_HEADERS: usize = 4;
/// IPv6 extension headers (IANA) the policy cannot look past.
pub const UNWALKED: [u8; 5] = [135, 139, 140, 253, 254];

/// The policy a verdict is computed under.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub ports: BTreeSet<u16>,
    pub allow: Vec<IpNet>,
    /// Reflection-victim protection: UDP from a protected source port is dropped.
    pub drop_reflected: bool,
}

/// A datagram as the kernel's reassembly knows it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct Datagram {
    src: IpAddr,
    dst: IpAddr,
    /// IPv4's protocol; none for IPv6 (Linux keys IPv6 reassembly by addresses and id).
    proto: Option<u8>,
    id: u32,
}

#[derive(Clone, Copy, Debug)]
enum Frag {
    Whole,
    First(Datagram),
    Later(Datagram),
}

/// The oracle: a policy, and the datagrams whose first fragment it dropped.
#[derive(Debug)]
pub struct Oracle {
    policy: Policy,
    dropped: HashSet<Datagram>,
}

/// A packet once its fixed IP header is valid: source, fragmentation, and the bytes after the
/// fixed header up to the datagram's own length.
struct Network<'a> {
    src: IpAddr,
    dst: IpAddr,
    frag: Frag,
    next: u8,
    payload: &'a [u8],
    v6: bool,
}

impl Oracle {
    pub fn new(policy: Policy) -> Self {
        Oracle {
            policy,
            dropped: HashSet::new(),
        }
    }

    /// The reason for `frame`, and the source address it is counted under; remembers dropped
    /// first fragments like the program does.
    pub fn judge(&mut self, frame: &[u8]) -> (Reason, Option<IpAddr>) {
        self.judge_framed(frame, Framing::Ethernet)
    }

    /// [`Oracle::judge`] for a packet framed as `framing` says.
    pub fn judge_framed(&mut self, frame: &[u8], framing: Framing) -> (Reason, Option<IpAddr>) {
        let network = match framing {
            Framing::Ethernet => network(frame),
            Framing::Ip => ip_framed(frame),
        };
        let mut net = match network {
            Ok(net) => net,
            Err(reason) => return (reason, None),
        };
        let upper = if net.v6 {
            walk_ipv6(&mut net)
        } else {
            Ok(net.next)
        };
        let reason = match (upper, net.frag) {
            (Err(reason), _) => reason,
            (Ok(_), Frag::Later(datagram)) => {
                if self.dropped.contains(&datagram) {
                    Reason::FragmentOfDropped
                } else {
                    Reason::LaterFragment
                }
            }
            (Ok(proto), _) => self.transport(net.src, proto, net.payload),
        };
        if let Frag::First(datagram) = net.frag {
            let reason = if reason == Reason::Truncated {
                Reason::ShortFirstFragment
            } else {
                reason
            };
            if reason.is_drop() {
                self.dropped.insert(datagram);
            } else {
                self.dropped.remove(&datagram);
            }
            return (reason, Some(net.src));
        }
        (reason, Some(net.src))
    }

    /// Forgets every remembered dropped datagram (see the harness's `clear_fragment_cache`).
    pub fn clear_fragment_cache(&mut self) {
        self.dropped.clear();
    }

    fn transport(&self, src: IpAddr, proto: u8, payload: &[u8]) -> Reason {
        if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
            return Reason::NotProtected;
        }
        // Both TCP and UDP start with source port, destination port.
        let Some(ports) = payload.get(..4) else {
            return Reason::Truncated;
        };
        let sport = u16::from_be_bytes([ports[0], ports[1]]);
        let dport = u16::from_be_bytes([ports[2], ports[3]]);
        if !self.policy.ports.contains(&dport) {
            if proto == IPPROTO_UDP
                && self.policy.drop_reflected
                && self.policy.ports.contains(&sport)
            {
                Reason::Reflected
            } else {
                Reason::NotProtected
            }
        } else if proto == IPPROTO_UDP {
            Reason::UdpPort
        } else if self.policy.allow.iter().any(|net| net.contains(&src)) {
            Reason::TcpAllowed
        } else {
            Reason::TcpNotAllowed
        }
    }
}

/// Where a frame begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// An Ethernet header (then VLAN tags).
    Ethernet,
    /// The IP header (TUN, WireGuard): its version nibble says the family.
    Ip,
}

/// The shortest IP header (IPv4's): an IP-framed packet shorter than this is truncated.
const SHORTEST_IP_HEADER: usize = 20;

/// The fixed IP header of a packet with no link-layer header.
fn ip_framed(packet: &[u8]) -> Result<Network<'_>, Reason> {
    if packet.len() < SHORTEST_IP_HEADER {
        return Err(Reason::Truncated);
    }
    match packet[0] >> 4 {
        4 => ipv4(packet),
        6 => ipv6(packet),
        _ => Err(Reason::NotIp),
    }
}

/// A length field of 0 (IPv4 total length, IPv6 payload length): the datagram ends where the
/// packet does (GRO merged it past 64 KiB; README, "What the filter does").
const TO_THE_END: u16 = 0;

/// Ethernet, VLAN tags and the fixed IP header.
fn network(frame: &[u8]) -> Result<Network<'_>, Reason> {
    let eth = Ethernet2HeaderSlice::from_slice(frame).map_err(|_| Reason::Truncated)?;
    let mut ether_type = eth.ether_type().0;
    let mut rest = &frame[eth.slice().len()..];
    let mut tags = 0;
    while ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        if tags == VLAN_TAGS {
            return Err(Reason::VlanLimit);
        }
        let vlan = SingleVlanHeaderSlice::from_slice(rest).map_err(|_| Reason::Truncated)?;
        ether_type = vlan.ether_type().0;
        rest = &rest[vlan.slice().len()..];
        tags += 1;
    }
    match ether_type {
        ETH_P_IP => ipv4(rest),
        ETH_P_IPV6 => ipv6(rest),
        _ => Err(Reason::NotIp),
    }
}

fn ipv4(packet: &[u8]) -> Result<Network<'_>, Reason> {
    // etherparse refuses a total length below the header's; at 0 the packet's own length is
    // what counts, so the oracle reads a copy that states it.
    let mut patched;
    let mut view = packet;
    if packet.len() >= 4 && u16::from_be_bytes([packet[2], packet[3]]) == TO_THE_END {
        let len = u16::try_from(packet.len()).expect("test frames are shorter than 64 KiB");
        patched = packet.to_vec();
        patched[2..4].copy_from_slice(&len.to_be_bytes());
        view = &patched;
    }
    let header = Ipv4HeaderSlice::from_slice(view).map_err(|err| match err {
        V4Error::Len(_) => Reason::Truncated,
        V4Error::Content(_) => Reason::Malformed,
    })?;
    let header_len = header.slice().len();
    let total_len = usize::from(header.total_len());
    if total_len < header_len {
        return Err(Reason::Malformed);
    }
    let datagram = packet.get(..total_len).ok_or(Reason::Truncated)?;
    let src = IpAddr::V4(header.source_addr());
    let dst = IpAddr::V4(header.destination_addr());
    let key = Datagram {
        src,
        dst,
        proto: Some(header.protocol().0),
        id: u32::from(header.identification()),
    };
    let frag = if header.fragments_offset().value() != 0 {
        Frag::Later(key)
    } else if header.more_fragments() {
        Frag::First(key)
    } else {
        Frag::Whole
    };
    Ok(Network {
        src,
        dst,
        frag,
        next: header.protocol().0,
        payload: &datagram[header_len..],
        v6: false,
    })
}

fn ipv6(packet: &[u8]) -> Result<Network<'_>, Reason> {
    let header = Ipv6HeaderSlice::from_slice(packet).map_err(|err| match err {
        V6Error::Len(_) => Reason::Truncated,
        V6Error::Content(_) => Reason::Malformed,
    })?;
    let fixed = header.slice().len();
    let datagram = match header.payload_length() {
        TO_THE_END => packet,
        len => packet
            .get(..fixed + usize::from(len))
            .ok_or(Reason::Truncated)?,
    };
    Ok(Network {
        src: IpAddr::V6(header.source_addr()),
        dst: IpAddr::V6(header.destination_addr()),
        frag: Frag::Whole,
        next: header.next_header().0,
        payload: &datagram[fixed..],
        v6: true,
    })
}

/// Walks the IPv6 extension headers in `net.payload`; returns the upper-layer protocol.
fn walk_ipv6(net: &mut Network<'_>) -> Result<u8, Reason> {
    let walked = [
        IPPROTO_HOPOPTS,
        IPPROTO_ROUTING,
        IPPROTO_DSTOPTS,
        IPPROTO_FRAGMENT,
        IPPROTO_AH,
    ];
    let upper = |proto: u8| {
        if UNWALKED.contains(&proto) {
            Err(Reason::ExtHeaderUnknown)
        } else {
            Ok(proto)
        }
    };
    for _ in 0..EXT_HEADERS {
        if !walked.contains(&net.next) {
            return upper(net.next);
        }
        let rest = net.payload;
        let (&[ext_next, ext_len], _) = rest.split_first_chunk::<2>().ok_or(Reason::Truncated)?;
        let len = match net.next {
            // RFC 8200 4.5: a fixed 8 octets.
            IPPROTO_FRAGMENT => 8,
            // RFC 4302 2.2: payload length in 32-bit words, minus 2.
            IPPROTO_AH => (usize::from(ext_len) + 2) * 4,
            // RFC 8200 4.3-4.6: header extension length in 8-octet units, beyond the first 8.
            _ => (usize::from(ext_len) + 1) * 8,
        };
        let header = rest.get(..len).ok_or(Reason::Truncated)?;
        if net.next == IPPROTO_FRAGMENT {
            // RFC 8200 4.5: offset in the upper 13 bits of octets 2-3, M flag in the lowest bit.
            let field = u16::from_be_bytes([header[2], header[3]]);
            let key = Datagram {
                src: net.src,
                dst: net.dst,
                proto: None,
                id: u32::from_be_bytes([header[4], header[5], header[6], header[7]]),
            };
            if field >> 3 != 0 {
                net.frag = Frag::Later(key);
                return Ok(ext_next);
            }
            if field & 1 != 0 {
                net.frag = Frag::First(key);
            }
        }
        net.next = ext_next;
        net.payload = &rest[len..];
    }
    if walked.contains(&net.next) {
        Err(Reason::ExtHeaderLimit)
    } else {
        upper(net.next)
    }
}
