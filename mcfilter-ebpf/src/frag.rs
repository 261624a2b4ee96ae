//! The fragment verdict cache: datagrams whose first fragment was dropped, so their later
//! fragments are dropped too and never cost the host reassembly memory. Later fragments of
//! other datagrams pass (they carry no ports), in whatever order they arrive.

use mcfilter_common::{FragKey, Reason, SLOT_FRAG_INSERT_FAILED};

use aya_ebpf::programs::XdpContext;

use crate::{events, maps::FRAGS, stats};

/// The verdict for a later fragment.
#[inline(always)]
pub fn later(key: &FragKey) -> Reason {
    // SAFETY: the value is a plain u32 only ever written whole by `remember`.
    if unsafe { FRAGS.get(key) }.is_some() {
        Reason::FragmentOfDropped
    } else {
        Reason::LaterFragment
    }
}

/// Records a first fragment's verdict: dropped datagrams are remembered; a passed one forgets
/// any stale entry under the same key (ids are reused).
#[inline(always)]
pub fn remember(ctx: &XdpContext, key: &FragKey, reason: Reason, bytes: u64) {
    // A lookup first: an LRU update allocates a new element even when the key exists, and
    // a retransmitted or duplicated first fragment needs no write.
    // SAFETY: the value is a plain u32 only ever written whole here.
    let known = unsafe { FRAGS.get(key) }.is_some();
    if reason.is_drop() {
        if !known && FRAGS.insert(key, reason as u32, 0).is_err() {
            stats::bump(SLOT_FRAG_INSERT_FAILED, 1, bytes);
            events::fragment_cache_full(ctx, stats::now());
        }
    } else if known {
        let _ = FRAGS.remove(key);
    }
}
