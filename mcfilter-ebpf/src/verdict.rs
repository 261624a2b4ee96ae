//! The policy, one path for both IP families: protected destination port, then UDP is dropped
//! and TCP passes only from an allow-listed source; optionally, UDP from a protected source
//! port (a reflected reply) is dropped too.

use aya_ebpf::maps::lpm_trie::Key;
use mcfilter_common::{ALLOW_SLOT_INDEXED, Config, IpKey, Reason};

use crate::{
    cursor::Cursor,
    maps::{ALLOW, ALLOW_HOSTS, ALLOW_STATE},
    parse::l4::{IPPROTO_TCP, IPPROTO_UDP, PortsHdr},
};

/// Judges the upper-layer header at the cursor: protocol `proto`, from `src`.
#[inline(always)]
pub(crate) fn judge(
    c: &mut Cursor,
    proto: u8,
    src: &IpKey,
    config: &Config,
) -> Result<Reason, Reason> {
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

/// Whether the family-tagged source is on the allow-list: a prefix match in the trie, which
/// holds every entry. A large list's trie is deep, so while userspace keeps its addresses
/// indexed in a hash map, an exact match there comes first: a listed client then pays one hash
/// lookup, not a walk down the trie. Any entry allows (there are no deny entries), and the index
/// never holds an address the trie does not, so the index only decides the cost.
#[inline(always)]
fn is_allowed(src: &IpKey) -> bool {
    let indexed = ALLOW_STATE
        .get(ALLOW_SLOT_INDEXED)
        .is_some_and(|indexed| *indexed != 0);
    // SAFETY: the value is a plain u8, only tested for presence.
    (indexed && unsafe { ALLOW_HOSTS.get(src) }.is_some())
        || ALLOW.get(Key::new(IpKey::FULL_PREFIX, *src)).is_some()
}
