//! IPv6 and its extension-header chain, walked up to [`MAX_EXT_HEADERS`] headers so that no
//! chain hides the upper-layer header from the policy. The datagram ends where the payload
//! length says (or, at length 0, where the frame does).

use core::mem::size_of;

use mcfilter_common::{IpKey, Reason};

use super::{Family, Fragment, GRO_MERGED_LEN, Ip};
use crate::{
    cursor::{Cursor, Header},
    field::{Addr6, Be16, Be32, field},
};

pub(crate) const IPPROTO_HOPOPTS: u8 = 0;
pub(crate) const IPPROTO_ROUTING: u8 = 43;
pub(crate) const IPPROTO_FRAGMENT: u8 = 44;
pub(crate) const IPPROTO_AH: u8 = 51;
pub(crate) const IPPROTO_DSTOPTS: u8 = 60;
/// Extension headers (IANA registry) the program cannot look past: Mobility, HIP, Shim6 and
/// the two experimental values.
pub(crate) const UNWALKED_EXT_HEADERS: [u8; 5] = [135, 139, 140, 253, 254];

/// Extension headers walked before the program gives up with [`Reason::ExtHeaderLimit`].
///
/// Four, as Cilium's `IPV6_MAX_HEADERS`: every header of the chain multiplies the paths the
/// verifier explores, and Linux 6.1's verifier, which prunes fewer of them than later ones, gives
/// up on eight (`BPF program is too large`). With four it processes about 731,000 of its
/// 1,000,000 instructions (README, "Supported kernels"). Longer chains are dropped, the safe side:
/// no host stack needs them to reach memcached.
pub(crate) const MAX_EXT_HEADERS: usize = 4;

/// Fragment offset bits of the fragment header's `frag_off` (the low 3 bits are flags).
const IP6_OFFSET_MASK: u16 = 0xfff8;
/// The "more fragments" flag of the fragment header's `frag_off`.
const IP6_MF: u16 = 0x0001;

#[repr(C)]
pub(crate) struct Ipv6Hdr {
    /// Version (4 bits), traffic class (8) and flow label (20).
    pub vtc_flow: [u8; 4],
    pub payload_len: Be16,
    pub next_hdr: u8,
    pub hop_limit: u8,
    pub saddr: Addr6,
    pub daddr: Addr6,
}

/// The two bytes every length-carrying extension header starts with (hop-by-hop, routing,
/// destination options, AH).
#[repr(C)]
pub(crate) struct ExtHdr {
    pub next_hdr: u8,
    pub hdr_len: u8,
}

#[repr(C)]
pub(crate) struct FragHdr {
    pub next_hdr: u8,
    pub reserved: u8,
    pub frag_off: Be16,
    pub identification: Be32,
}

// SAFETY: u8, byte arrays and fields only.
unsafe impl Header for Ipv6Hdr {}
// SAFETY: u8 only.
unsafe impl Header for ExtHdr {}
// SAFETY: u8 and fields only.
unsafe impl Header for FragHdr {}

/// The fixed header; the cursor is then limited to the payload length.
#[inline(always)]
pub(crate) fn parse(c: &mut Cursor) -> Result<Ip, Reason> {
    let ip = c.next::<Ipv6Hdr>()?;
    if ip.vtc_flow[0] >> 4 != 6 {
        return Err(Reason::Malformed);
    }
    let payload_len = match usize::from(field!(ip, Ipv6Hdr, payload_len)) {
        GRO_MERGED_LEN => c.remaining(),
        len => len,
    };
    c.limit(payload_len)?;
    Ok(Ip {
        src: IpKey::v6_words(field!(ip, Ipv6Hdr, saddr)),
        frag: Fragment::Whole,
        frag_id: 0,
        next: ip.next_hdr,
        family: Family::V6(ip),
    })
}

/// Walks the extension-header chain; returns the upper-layer protocol. A fragment header sets
/// `ip.frag`; after a later fragment's header there are no more headers to read.
#[inline(always)]
pub(crate) fn extension_headers(c: &mut Cursor, ip: &mut Ip) -> Result<u8, Reason> {
    let mut next = ip.next;
    // Bounded by MAX_EXT_HEADERS: one extension header per iteration.
    for _ in 0..MAX_EXT_HEADERS {
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                let ext = c.next::<ExtHdr>()?;
                next = ext.next_hdr;
                // RFC 8200: length in 8-octet units, not counting the first 8 octets.
                c.skip((usize::from(ext.hdr_len) + 1) * 8 - size_of::<ExtHdr>())?;
            }
            IPPROTO_AH => {
                let ext = c.next::<ExtHdr>()?;
                next = ext.next_hdr;
                // RFC 4302: length in 4-octet units, minus 2.
                c.skip((usize::from(ext.hdr_len) + 2) * 4 - size_of::<ExtHdr>())?;
            }
            IPPROTO_FRAGMENT => {
                let frag = c.next::<FragHdr>()?;
                let frag_off = field!(frag, FragHdr, frag_off);
                let id = field!(frag, FragHdr, identification);
                if frag_off & IP6_OFFSET_MASK != 0 {
                    ip.frag = Fragment::Later;
                    ip.frag_id = id;
                    return Ok(frag.next_hdr);
                }
                if frag_off & IP6_MF != 0 {
                    ip.frag = Fragment::First;
                    ip.frag_id = id;
                }
                next = frag.next_hdr;
            }
            proto => return upper_layer(proto),
        }
    }
    if is_walked(next) {
        return Err(Reason::ExtHeaderLimit);
    }
    upper_layer(next)
}

#[inline(always)]
fn is_walked(next_hdr: u8) -> bool {
    matches!(
        next_hdr,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH | IPPROTO_FRAGMENT
    )
}

/// `proto` as the upper layer, unless it is an extension header the program cannot look past.
#[inline(always)]
fn upper_layer(proto: u8) -> Result<u8, Reason> {
    if UNWALKED_EXT_HEADERS.contains(&proto) {
        return Err(Reason::ExtHeaderUnknown);
    }
    Ok(proto)
}
