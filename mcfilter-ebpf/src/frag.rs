//! The fragment verdict cache: datagrams whose first fragment was dropped, so their later
//! fragments are dropped too and never cost the host reassembly memory. Later fragments of
//! other datagrams pass (they carry no ports), in whatever order they arrive.
//!
//! An entry lives as long as the kernel would wait for the datagram's fragments (its reassembly
//! timeout, per family, which attach writes to `FRAG_TIMEOUTS`): afterwards the IPv4 id may be
//! reused by a later datagram of the same flow, whose fragments must not be judged by an old
//! verdict. Time is kept in units of 2^30 ns (about 1.07 s) of the coarse monotonic clock, so
//! an entry may expire up to one unit early.

use mcfilter_common::{
    DEFAULT_FRAG_TIMEOUT_SECS, FragKey, Reason, SLOT_FRAG_INSERT_FAILED, frag_timeout_slot,
};

use aya_ebpf::{helpers::bpf_jiffies64, programs::XdpContext};

use crate::{
    events,
    maps::{FRAG_CLOCK, FRAG_TIMEOUTS, FRAGS, FragClock},
    stats,
};

const NANOS_PER_SEC: u64 = 1_000_000_000;
/// The cache's time unit, 2^30 ns: a timestamp is one shift of the clock. (Whole seconds would
/// take a 64-bit division per fragment: BPF has no multiply-high to divide by a constant with,
/// and the division cost about 20 ns a fragment.)
const UNIT_SHIFT: u32 = 30;

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
        if !live && FRAGS.insert(key, now_units(), 0).is_err() {
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
    let secs = match FRAG_TIMEOUTS.get(frag_timeout_slot(key.family)) {
        Some(&secs) if secs != 0 => secs,
        _ => DEFAULT_FRAG_TIMEOUT_SECS,
    };
    // The timeout in units, rounded up: an entry then lives at least one unit less than the
    // timeout, and at most as long.
    let timeout = (u64::from(secs) * NANOS_PER_SEC).div_ceil(1 << UNIT_SHIFT) as u32;
    now_units().wrapping_sub(dropped_at) >= timeout
}

/// The coarse monotonic clock in units of 2^30 ns (wraps after 146 years of uptime).
///
/// Reading that clock costs about 20 ns a call on this project's machines (more than the rest
/// of a fragment's path), but it only moves on a timer tick, when jiffies do: each CPU keeps
/// the value it read for the current jiffy, and a burst of fragments pays one cheap jiffies
/// read each (Linux 5.5). A fragment that arrives after a quiet spell finds a new jiffy and
/// reads the clock, so it is never judged by a stale time.
#[inline(always)]
fn now_units() -> u32 {
    // SAFETY: `bpf_jiffies64` has no preconditions.
    let jiffies = unsafe { bpf_jiffies64() };
    let Some(cached) = FRAG_CLOCK.get_ptr_mut(0) else {
        // Unreachable: index 0 of a one-entry array always exists.
        return (stats::now() >> UNIT_SHIFT) as u32;
    };
    // SAFETY: this CPU's slot of a per-CPU array, which nothing else touches while this
    // program runs on this CPU (XDP runs with preemption off).
    let cached: &mut FragClock = unsafe { &mut *cached };
    if cached.jiffies != jiffies {
        cached.jiffies = jiffies;
        cached.units = stats::now() >> UNIT_SHIFT;
    }
    cached.units as u32
}
