//! The policy, one path for both IP families: protected destination port, then UDP is dropped
//! and TCP passes only from an allow-listed source; optionally, UDP from a protected source
//! port (a reflected reply) is dropped too.

use aya_ebpf::maps::lpm_trie::Key;
use mcfilter_common::{Config, IpKey, Reason};

use crate::{
    cursor::Cursor,
    maps::{ALLOW, ALLOW_HOSTS},
    parse::l4::{IPPROTO_TCP, IPPROTO_UDP, PortsHdr},
};

/// Judges the upper-layer header at the cursor: protocol `proto`, from `src`.
#[inline(always)]
pub fn judge(c: &mut Cursor, proto: u8, src: &IpKey, config: &Config) -> Result<Reason, Reason> {
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return Ok(Reason::NotProtected);
    }
    let ports = c.next::<PortsHdr>()?;
    if !config.is_protected(u16::from_be_bytes(ports.dest)) {
        // Reflection-victim protection: UDP *from* a protected port is an amplified reply.
        let reflected = proto == IPPROTO_UDP
            && config.drop_reflected != 0
            && config.is_protected(u16::from_be_bytes(ports.source));
        return Ok(if reflected {
            Reason::Reflected
        } else {
            Reason::NotProtected
        });
    }
    if proto == IPPROTO_UDP {
        return Ok(Reason::UdpPort);
    }
    Ok(if is_allowed(src) {
        Reason::TcpAllowed
    } else {
        Reason::TcpNotAllowed
    })
}

/// Whether the family-tagged source is on the allow-list: an exact match among its addresses,
/// else a prefix match in the trie. Any entry allows (there are no deny entries), so the order
/// of the two only decides the cost: a listed client pays one hash lookup, not a trie walk.
#[inline(always)]
fn is_allowed(src: &IpKey) -> bool {
    // SAFETY: the value is a plain u8, only tested for presence.
    unsafe { ALLOW_HOSTS.get(src) }.is_some()
        || ALLOW.get(Key::new(IpKey::FULL_PREFIX, *src)).is_some()
}
