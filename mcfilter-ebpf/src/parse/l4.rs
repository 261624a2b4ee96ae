//! TCP and UDP: the policy needs only the destination port, which both keep in the same place.

use crate::{cursor::Header, field::Be16};

pub(crate) const IPPROTO_TCP: u8 = 6;
pub(crate) const IPPROTO_UDP: u8 = 17;

/// The first four bytes of a TCP or UDP header.
#[repr(C)]
pub(crate) struct PortsHdr {
    pub source: Be16,
    pub dest: Be16,
}

// SAFETY: fields only.
unsafe impl Header for PortsHdr {}
