//! The policy, one path for both IP families: protected destination port, then UDP is dropped
//! and TCP passes only from an allow-listed source.

use aya_ebpf::maps::lpm_trie::Key;
use mcfilter_common::{Config, IpKey, Reason};

use crate::{
    cursor::Cursor,
    maps::ALLOW,
    parse::{
        L3,
        l4::{IPPROTO_TCP, IPPROTO_UDP, PortsHdr},
    },
};

/// Judges the upper-layer packet at the cursor.
#[inline(always)]
pub fn judge(c: &mut Cursor, l3: &L3, config: &Config) -> Result<Reason, Reason> {
    if l3.proto != IPPROTO_TCP && l3.proto != IPPROTO_UDP {
        return Ok(Reason::NotProtected);
    }
    let dport = u16::from_be_bytes(c.next::<PortsHdr>()?.dest);
    if !config.is_protected(dport) {
        return Ok(Reason::NotProtected);
    }
    if l3.proto == IPPROTO_UDP {
        return Ok(Reason::UdpPort);
    }
    Ok(if is_allowed(l3) {
        Reason::TcpAllowed
    } else {
        Reason::TcpNotAllowed
    })
}

/// Longest-prefix match of the family-tagged source against the allow-list.
#[inline(always)]
fn is_allowed(l3: &L3) -> bool {
    ALLOW.get(Key::new(IpKey::FULL_PREFIX, l3.src)).is_some()
}
