//! Header parsers, outermost first. Each takes its header from the [`Cursor`], validates the
//! fields the policy depends on and returns what the next layer needs; `Err(reason)` is an early
//! verdict (not IP, malformed, truncated...). Both IP families fill the same [`Ip`], so the
//! verdict code has one path for IPv4 and IPv6.

pub(crate) mod eth;
pub(crate) mod ipv4;
pub(crate) mod ipv6;
pub(crate) mod l4;

use mcfilter_common::{FAMILY_V6, Frag4Key, FragKey, IpKey, Reason};

use crate::{cursor::Cursor, field::field, frag::Datagram};

/// Where a packet stands in IP fragmentation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fragment {
    /// Not a fragment (IPv6 atomic fragments included).
    Whole,
    /// Offset 0, more to come: carries the upper-layer header.
    First,
    /// Offset above 0: carries no upper-layer header.
    Later,
}

/// What the network layer tells the policy, the same for both families.
pub(crate) struct Ip {
    /// Family-tagged source address, ready for the allow-list and per-source maps.
    pub src: IpKey,
    pub frag: Fragment,
    /// The IPv6 datagram's id, from its fragment header (else 0; IPv4's key reads its header's
    /// id). A field of its own rather than data of [`Fragment`]'s variants: LLVM copies a variant's missing data
    /// from a stack slot never written, and Linux 6.1's verifier refuses that read.
    pub frag_id: u32,
    /// The header after the fixed IP header: IPv4's protocol, IPv6's first next header.
    pub next: u8,
    /// What the extension-header walk still needs.
    pub family: Family,
}

/// The family, with the fixed header the fragment key is taken from.
pub(crate) enum Family {
    /// IPv4: options are skipped with the header, fragmentation is known.
    V4(&'static ipv4::Ipv4Hdr),
    /// IPv6: the extension-header chain is still to walk.
    V6(&'static ipv6::Ipv6Hdr),
}

impl Ip {
    /// The datagram as the kernel's reassembly keys it (see [`Datagram`]). Built only for
    /// fragments, off the common path.
    #[inline(always)]
    pub(crate) fn datagram(&self) -> Datagram {
        match self.family {
            Family::V4(hdr) => Datagram::V4(Frag4Key {
                src: self.src.addr[0],
                dst: field!(hdr, ipv4::Ipv4Hdr, daddr),
                id: field!(hdr, ipv4::Ipv4Hdr, id),
                proto: hdr.protocol,
                _pad: 0,
            }),
            Family::V6(hdr) => Datagram::V6(FragKey {
                src: self.src.addr,
                dst: field!(hdr, ipv6::Ipv6Hdr, daddr),
                id: self.frag_id,
                family: FAMILY_V6,
                // Linux keys IPv6 reassembly by addresses and id, not by next header.
                proto: 0,
                _pad: [0; 2],
            }),
        }
    }
}

/// Where the packets an interface hands the program begin (the interface's link type decides,
/// at attach). Each has an entry point of its own; the rest of the path is shared.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// An Ethernet header, then VLAN tags: Ethernet NICs, veth, bridges, bonds, VXLAN, loopback.
    Ethernet,
    /// The IP header itself: link type `none` (TUN, WireGuard). The IP version says the family.
    Ip,
}

const IP_VERSION_4: u8 = 4;
const IP_VERSION_6: u8 = 6;

/// The length field (IPv4 total length, IPv6 payload length) of a packet that GRO merged past
/// 64 KiB (BIG TCP: IPv6 since Linux 5.19, IPv4 since 6.3, with no jumbo option). Generic XDP
/// runs after GRO and sees such packets; the datagram then ends where the frame does. No frame
/// from the wire has this length and a host stack drops one that claims it, so judging it by the
/// frame's length opens nothing.
pub(crate) const GRO_MERGED_LEN: usize = 0;

/// Parses the link layer, if the framing has one, and the fixed IPv4 or IPv6 header, leaving
/// the cursor after it, limited to the datagram's own length.
#[inline(always)]
pub(crate) fn ip(c: &mut Cursor, framing: Framing) -> Result<Ip, Reason> {
    match framing {
        Framing::Ethernet => match eth::parse(c)? {
            eth::ETH_P_IP => ipv4::parse(c),
            eth::ETH_P_IPV6 => ipv6::parse(c),
            _ => Err(Reason::NotIp),
        },
        // The version is the first nibble of either header. It is read from the shorter one
        // (IPv4's 20 bytes): no IP packet is shorter, and a one-byte read would not do, as LLVM
        // turns its bounds check into `pos >= end`, from which the verifier learns nothing.
        Framing::Ip => match c.peek::<ipv4::Ipv4Hdr>()?.version_ihl >> 4 {
            IP_VERSION_4 => ipv4::parse(c),
            IP_VERSION_6 => ipv6::parse(c),
            _ => Err(Reason::NotIp),
        },
    }
}

/// Moves past IPv4 options or the IPv6 extension-header chain; returns the upper-layer
/// protocol. Learns IPv6 fragmentation on the way.
#[inline(always)]
pub(crate) fn upper_layer(c: &mut Cursor, ip: &mut Ip) -> Result<u8, Reason> {
    match ip.family {
        Family::V4(_) => Ok(ip.next),
        Family::V6(_) => ipv6::extension_headers(c, ip),
    }
}
