//! IPv4: the header length comes from IHL (options are skipped, never assumed absent), the
//! datagram ends where its total length says (at length 0, where the frame does), and the
//! fragment fields say which part this is.

use core::mem::size_of;

use mcfilter_common::{IpKey, Reason};

use super::{Family, Fragment, GRO_MERGED_LEN, Ip};
use crate::{
    cursor::{Cursor, Header},
    field::{Addr4, Be16, field},
};

/// Fragment offset bits of `frag_off` (the low 13; the top 3 are flags).
const IP_OFFSET_MASK: u16 = 0x1fff;
/// The "more fragments" flag of `frag_off`.
const IP_MF: u16 = 0x2000;

#[repr(C)]
pub(crate) struct Ipv4Hdr {
    /// Version (high nibble) and IHL, the header length in 32-bit words (low nibble).
    pub version_ihl: u8,
    pub tos: u8,
    pub tot_len: Be16,
    pub id: Be16,
    pub frag_off: Be16,
    pub ttl: u8,
    pub protocol: u8,
    pub check: Be16,
    pub saddr: Addr4,
    pub daddr: Addr4,
}

// SAFETY: u8 and fields only.
unsafe impl Header for Ipv4Hdr {}

#[inline(always)]
pub(crate) fn parse(c: &mut Cursor) -> Result<Ip, Reason> {
    let ip = c.next::<Ipv4Hdr>()?;
    if ip.version_ihl >> 4 != 4 {
        return Err(Reason::Malformed);
    }
    let header_len = usize::from(ip.version_ihl & 0x0f) * 4;
    if header_len < size_of::<Ipv4Hdr>() {
        return Err(Reason::Malformed);
    }
    c.skip(header_len - size_of::<Ipv4Hdr>())?;
    let total_len = usize::from(field!(ip, Ipv4Hdr, tot_len));
    // One limit for both cases (a scalar chosen, not two cursors): Linux 6.1's verifier refused
    // the program when the limit was set on one path only.
    let payload_len = if total_len == GRO_MERGED_LEN {
        c.remaining()
    } else if total_len < header_len {
        return Err(Reason::Malformed);
    } else {
        total_len - header_len
    };
    c.limit(payload_len)?;
    let frag_off = field!(ip, Ipv4Hdr, frag_off);
    let frag = if frag_off & IP_OFFSET_MASK != 0 {
        Fragment::Later
    } else if frag_off & IP_MF != 0 {
        Fragment::First
    } else {
        Fragment::Whole
    };
    Ok(Ip {
        src: IpKey::v4_word(field!(ip, Ipv4Hdr, saddr)),
        frag,
        frag_id: 0,
        next: ip.protocol,
        family: Family::V4(ip),
    })
}
