//! Ethernet II and up to [`MAX_VLAN_DEPTH`] VLAN tags (802.1Q and 802.1ad, any order).

use mcfilter_common::Reason;

use crate::{
    cursor::{Cursor, Header},
    field::{Be16, field},
};

pub(crate) const ETH_P_IP: u16 = 0x0800;
pub(crate) const ETH_P_IPV6: u16 = 0x86DD;
pub(crate) const ETH_P_8021Q: u16 = 0x8100;
pub(crate) const ETH_P_8021AD: u16 = 0x88A8;

/// Stacked VLAN tags looked through (QinQ). A frame with more is [`Reason::VlanLimit`].
pub(crate) const MAX_VLAN_DEPTH: usize = 2;

#[repr(C)]
pub(crate) struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ether_type: Be16,
}

#[repr(C)]
pub(crate) struct VlanHdr {
    pub tci: Be16,
    pub ether_type: Be16,
}

// SAFETY: byte arrays and fields only.
unsafe impl Header for EthHdr {}
// SAFETY: fields only.
unsafe impl Header for VlanHdr {}

#[inline(always)]
fn is_vlan(ether_type: u16) -> bool {
    ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD
}

/// Returns the EtherType of the payload after the Ethernet header and any VLAN tags.
#[inline(always)]
pub(crate) fn parse(c: &mut Cursor) -> Result<u16, Reason> {
    let mut ether_type = field!(c.next::<EthHdr>()?, EthHdr, ether_type);
    // Bounded by MAX_VLAN_DEPTH: one tag per iteration.
    for _ in 0..MAX_VLAN_DEPTH {
        if !is_vlan(ether_type) {
            return Ok(ether_type);
        }
        ether_type = field!(c.next::<VlanHdr>()?, VlanHdr, ether_type);
    }
    if is_vlan(ether_type) {
        return Err(Reason::VlanLimit);
    }
    Ok(ether_type)
}
