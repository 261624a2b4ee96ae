//! IPv6 and its extension-header chain, walked up to [`MAX_EXT_HEADERS`] headers so that no
//! chain hides the upper-layer header from the policy.

use core::mem::size_of;

use mcfilter_common::{IpKey, Reason};

use super::L3;
use crate::cursor::{Cursor, Header};

pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_ROUTING: u8 = 43;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_AH: u8 = 51;
pub const IPPROTO_DSTOPTS: u8 = 60;

/// Extension headers walked before the program gives up with [`Reason::ExtHeaderLimit`].
pub const MAX_EXT_HEADERS: usize = 8;

/// Fragment offset bits of the fragment header's `frag_off` (the low 3 bits are flags).
const IP6_OFFSET_MASK: u16 = 0xfff8;

#[repr(C)]
pub struct Ipv6Hdr {
    /// Version (4 bits), traffic class (8) and flow label (20).
    pub vtc_flow: [u8; 4],
    pub payload_len: [u8; 2],
    pub next_hdr: u8,
    pub hop_limit: u8,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// The two bytes every length-carrying extension header starts with (hop-by-hop, routing,
/// destination options, AH).
#[repr(C)]
pub struct ExtHdr {
    pub next_hdr: u8,
    pub hdr_len: u8,
}

#[repr(C)]
pub struct FragHdr {
    pub next_hdr: u8,
    pub reserved: u8,
    pub frag_off: [u8; 2],
    pub identification: [u8; 4],
}

// SAFETY: u8 and byte arrays only.
unsafe impl Header for Ipv6Hdr {}
// SAFETY: u8 only.
unsafe impl Header for ExtHdr {}
// SAFETY: u8 and byte arrays only.
unsafe impl Header for FragHdr {}

#[inline(always)]
pub fn parse(c: &mut Cursor) -> Result<L3, Reason> {
    let ip = c.next::<Ipv6Hdr>()?;
    if ip.vtc_flow[0] >> 4 != 6 {
        return Err(Reason::Malformed);
    }
    let mut next = ip.next_hdr;
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
                if u16::from_be_bytes(frag.frag_off) & IP6_OFFSET_MASK != 0 {
                    return Err(Reason::LaterFragment);
                }
                next = frag.next_hdr;
            }
            proto => return Ok(upper_layer(ip, proto)),
        }
    }
    if is_extension_header(next) {
        return Err(Reason::ExtHeaderLimit);
    }
    Ok(upper_layer(ip, next))
}

#[inline(always)]
fn is_extension_header(next_hdr: u8) -> bool {
    matches!(
        next_hdr,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH | IPPROTO_FRAGMENT
    )
}

#[inline(always)]
fn upper_layer(ip: &Ipv6Hdr, proto: u8) -> L3 {
    L3 {
        src: IpKey::v6(ip.saddr),
        proto,
    }
}
