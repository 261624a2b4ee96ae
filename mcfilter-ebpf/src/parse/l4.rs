//! TCP and UDP: the policy needs only the destination port, which both keep in the same place.

use crate::cursor::Header;

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// The first four bytes of a TCP or UDP header.
#[repr(C)]
pub struct PortsHdr {
    pub source: [u8; 2],
    pub dest: [u8; 2],
}

// SAFETY: byte arrays only.
unsafe impl Header for PortsHdr {}
