//! TCP and UDP: the policy needs only the destination port, which both keep in the same place.

use crate::cursor::Header;

pub(crate) const IPPROTO_TCP: u8 = 6;
pub(crate) const IPPROTO_UDP: u8 = 17;

/// The first four bytes of a TCP or UDP header.
#[repr(C)]
pub(crate) struct PortsHdr {
    pub source: [u8; 2],
    pub dest: [u8; 2],
}

// SAFETY: byte arrays only.
unsafe impl Header for PortsHdr {}
