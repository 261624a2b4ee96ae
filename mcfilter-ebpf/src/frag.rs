//! The fragment verdict cache: datagrams whose first fragment was dropped, so their later
//! fragments are dropped too and never cost the host reassembly memory. Later fragments of
//! other datagrams pass (they carry no ports), in whatever order they arrive.
//!
//! An entry lives as long as the kernel would wait for the datagram's fragments (its reassembly
//! timeout, per family, which attach writes to `FRAG_TIMEOUTS`): afterwards the IPv4 id may be
//! reused by a later datagram of the same flow, whose fragments must not be judged by an old
//! verdict. Time is kept in whole seconds of the coarse monotonic clock, so an entry may expire
//! up to a second early.

use mcfilter_common::{
    DEFAULT_FRAG_TIMEOUT_SECS, FragKey, Reason, SLOT_FRAG_INSERT_FAILED, frag_timeout_slot,
};

use aya_ebpf::programs::XdpContext;

use crate::{
    events,
    maps::{FRAG_TIMEOUTS, FRAGS},
    stats,
};

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// The verdict for a later fragment.
#[inline(always)]
pub fn later(key: &FragKey) -> Reason {
    // SAFETY: the value is a plain u32 only ever written whole by `remember`.
    match unsafe { FRAGS.get(key) } {
        Some(&dropped_at) if !expired(key, dropped_at) => Reason::FragmentOfDropped,
        _ => Reason::LaterFragment,
    }
}

/// Records a first fragment's verdict: dropped datagrams are remembered; a passed one forgets
/// any stale entry under the same key (ids are reused).
#[inline(always)]
pub fn remember(ctx: &XdpContext, key: &FragKey, reason: Reason, bytes: u64) {
    // A lookup first: an LRU update allocates a new element even when the key exists, and
    // a retransmitted or duplicated first fragment needs no write.
    // SAFETY: the value is a plain u32 only ever written whole here.
    let known = unsafe { FRAGS.get(key) }.copied();
    if reason.is_drop() {
        let live = known.is_some_and(|dropped_at| !expired(key, dropped_at));
        if !live && FRAGS.insert(key, now_secs(), 0).is_err() {
            stats::bump(SLOT_FRAG_INSERT_FAILED, 1, bytes);
            events::fragment_cache_full(ctx, stats::now());
        }
    } else if known.is_some() {
        let _ = FRAGS.remove(key);
    }
}

/// Whether an entry written at `dropped_at` has outlived its family's reassembly timeout.
#[inline(always)]
fn expired(key: &FragKey, dropped_at: u32) -> bool {
    let timeout = match FRAG_TIMEOUTS.get(frag_timeout_slot(key.family)) {
        Some(&secs) if secs != 0 => secs,
        _ => DEFAULT_FRAG_TIMEOUT_SECS,
    };
    now_secs().wrapping_sub(dropped_at) >= timeout
}

/// Whole seconds of the coarse monotonic clock (wraps after 136 years of uptime).
#[inline(always)]
fn now_secs() -> u32 {
    (stats::now() / NANOS_PER_SEC) as u32
}
