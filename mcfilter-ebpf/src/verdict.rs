//! The policy, one path for both IP families: protected destination port, then UDP is dropped
//! and TCP passes only from an allow-listed source; optionally, UDP from a protected source
//! port (a reflected reply) is dropped too.

use aya_ebpf::maps::lpm_trie::Key;
use mcfilter_common::{
    BLOCK_LONGER, BLOCK_WHOLE, Config, FAMILY_V4, IpKey, Reason, StrideKey, TABLE_SLOT_READY,
    TABLE_SLOT_V6_STRIDES, V4_LONGER_STRIDE, block_position,
};

use crate::{
    cursor::Cursor,
    field::field,
    maps::{ALLOW, ALLOW_BLOCKS, ALLOW_BLOOM, ALLOW_STRIDES, ALLOW_TABLES},
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
    if !config.is_protected(field!(ports, PortsHdr, dest)) {
        // Reflection-victim protection: UDP *from* a protected port is an amplified reply.
        let reflected = proto == IPPROTO_UDP
            && config.drop_reflected != 0
            && config.is_protected(field!(ports, PortsHdr, source));
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

/// Whether the family-tagged source is on the allow-list. While the lookup tables are whole
/// (see `mcfilter_common::table`), they answer at a cost that does not depend on the list's
/// size: an IPv4 source costs one array lookup, and a hash lookup if its /24 holds entries
/// longer than /24; an IPv6 source an array lookup (the Bloom filter) per stride in use, and
/// hash lookups where the filter does not rule the stride out, the first that finds an entry
/// the last. Otherwise (userspace rebuilding
/// them after a killed change, or a state an older build made) the trie, which holds every
/// entry, does.
#[inline(always)]
fn is_allowed(src: &IpKey) -> bool {
    if ALLOW_TABLES
        .get(TABLE_SLOT_READY)
        .is_none_or(|ready| *ready == 0)
    {
        return ALLOW.get(Key::new(IpKey::FULL_PREFIX, *src)).is_some();
    }
    if src.family == u32::from(FAMILY_V4) {
        // The address in host order, shifted to its /24.
        let (word, shift) = block_position(u32::from_be(src.addr[0]) >> 8);
        let Some(word) = ALLOW_BLOCKS.get(word) else {
            // Unreachable: the bitmap has a word for every /24.
            return false;
        };
        let block = *word >> shift;
        return block & BLOCK_WHOLE != 0
            || (block & BLOCK_LONGER != 0 && at_stride::<V4_LONGER_STRIDE>(src) == Some(true));
    }
    let strides = ALLOW_TABLES
        .get(TABLE_SLOT_V6_STRIDES)
        .map_or(0, |strides| *strides);
    // The strides in use, longest first, each a constant (the masks fold away); the first
    // entry on the source's path decides, since its bits count the shorter entries in. Long
    // keys are specific, so a Bloom bit that is set mostly means an entry on the path.
    macro_rules! first_entry_on_path {
        ($($stride:literal)*) => {
            $(
                if strides & (1 << $stride) != 0
                    && let Some(allowed) = at_stride::<$stride>(src)
                {
                    return allowed;
                }
            )*
        };
    }
    first_entry_on_path!(15 14 13 12 11 10 9 8 7 6 5 4 3 2 1 0);
    false
}

/// The stride table's entry on `src`'s path at stride `STRIDE`, if there is one: whether it
/// allows `src`. Its Bloom filter first, which rules most strides out with an array lookup.
#[inline(always)]
fn at_stride<const STRIDE: usize>(src: &IpKey) -> Option<bool> {
    let (key, next) = StrideKey::of(src, STRIDE);
    let (word, bit) = key.bloom_bit();
    if ALLOW_BLOOM
        .get(word)
        .is_none_or(|word| *word & (1 << bit) == 0)
    {
        return None;
    }
    // SAFETY: the value is plain integers, read at once (a concurrent update replaces the
    // element whole: RCU).
    unsafe { ALLOW_STRIDES.get(key) }.map(|bits| bits.has(next))
}
