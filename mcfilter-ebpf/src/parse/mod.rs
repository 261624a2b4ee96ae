//! Header parsers, outermost first. Each takes its header from the [`Cursor`], validates the
//! fields the policy depends on and returns what the next layer needs; `Err(reason)` is an early
//! verdict (not IP, malformed, a later fragment...). Both IP families fill the same [`L3`], so
//! the verdict code has one path for IPv4 and IPv6.

pub mod eth;
pub mod ipv4;
pub mod ipv6;
pub mod l4;

use mcfilter_common::{IpKey, Reason};

use crate::cursor::Cursor;

/// What the network layer tells the policy, the same for both families.
pub struct L3 {
    /// Family-tagged source address, ready for the allow-list and per-source maps.
    pub src: IpKey,
    /// The upper-layer protocol (IPPROTO_*), after any IPv6 extension headers.
    pub proto: u8,
}

/// Parses Ethernet (with VLAN tags) and the IPv4 or IPv6 header with its options or extension
/// headers, leaving the cursor at the upper-layer header.
#[inline(always)]
pub fn l3(c: &mut Cursor) -> Result<L3, Reason> {
    match eth::parse(c)? {
        eth::ETH_P_IP => ipv4::parse(c),
        eth::ETH_P_IPV6 => ipv6::parse(c),
        _ => Err(Reason::NotIp),
    }
}
