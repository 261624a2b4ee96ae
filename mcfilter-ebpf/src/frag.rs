//! The fragment verdict cache: datagrams whose first fragment was dropped, so their later
//! fragments are dropped too and never cost the host reassembly memory. Later fragments of
//! other datagrams pass (they carry no ports), in whatever order they arrive.
//!
//! An entry lives as long as the kernel would wait for the datagram's fragments (its reassembly
//! timeout, per family, which attach writes to `FRAG_TIMEOUTS`): afterwards the IPv4 id may be
//! reused by a later datagram of the same flow, whose fragments must not be judged by an old
//! verdict. An entry holds the time it expires at, so a fragment that finds one compares it
//! with the clock and reads nothing else; the timeout is read only when an entry is written.
//!
//! The clock is jiffies (one load of a kernel variable; the nanosecond clocks cost a helper
//! call, about 20 ns), in units of `2^FRAG_UNIT_SHIFT` jiffies (see
//! `mcfilter_common::FRAG_UNIT_SHIFT`): an entry expires up to one unit early, never late.

use mcfilter_common::{
    DEFAULT_FRAG_TIMEOUT_SECS, FAMILY_V4, FAMILY_V6, FRAG_UNIT_SHIFT, Frag4Key, FragClock, FragKey,
    Reason, SLOT_FRAG_INSERT_FAILED, frag_timeout_slot,
};

use aya_ebpf::{helpers::bpf_jiffies64, maps::LruHashMap, programs::XdpContext};

use crate::{
    counters, events,
    maps::{FRAG_TIMEOUTS, FRAGS, FRAGS4},
};

/// A datagram as the kernel's reassembly keys it, in its family's cache: the same code for
/// both, each cache with a key of its family's size.
pub(crate) enum Datagram {
    V4(Frag4Key),
    V6(FragKey),
}

impl Datagram {
    /// The verdict for a later fragment of this datagram.
    #[inline(always)]
    pub(crate) fn later(&self) -> Reason {
        match self {
            Datagram::V4(key) => later(&FRAGS4, key),
            Datagram::V6(key) => later(&FRAGS, key),
        }
    }

    /// Records this datagram's first fragment's verdict (see [`remember`]).
    #[inline(always)]
    pub(crate) fn remember(&self, ctx: &XdpContext, reason: Reason, bytes: u64) {
        match self {
            Datagram::V4(key) => remember(ctx, &FRAGS4, key, FAMILY_V4, reason, bytes),
            Datagram::V6(key) => remember(ctx, &FRAGS, key, FAMILY_V6, reason, bytes),
        }
    }
}

/// The kernel's jiffies per second, set by the loader (`FRAG_HZ_GLOBAL`).
#[unsafe(no_mangle)]
static FRAG_HZ: u32 = FragClock::DEFAULT.hz;

/// The verdict for a later fragment of the datagram `key` in `cache`.
#[inline(always)]
fn later<K>(cache: &LruHashMap<K, u32>, key: &K) -> Reason {
    // SAFETY: the value is a plain u32 only ever written whole by `remember`.
    match unsafe { cache.get(key) } {
        Some(&expires_at) if live(expires_at, now()) => Reason::FragmentOfDropped,
        _ => Reason::LaterFragment,
    }
}

/// Records a first fragment's verdict in `cache` (of `family`'s datagrams): dropped datagrams
/// are remembered; a passed one forgets any stale entry under the same key (ids are reused).
#[inline(always)]
fn remember<K>(
    ctx: &XdpContext,
    cache: &LruHashMap<K, u32>,
    key: &K,
    family: u8,
    reason: Reason,
    bytes: u64,
) {
    // A lookup first: an LRU update allocates a new element even when the key exists, and
    // a retransmitted or duplicated first fragment needs no write.
    // SAFETY: the value is a plain u32 only ever written whole here.
    let known = unsafe { cache.get(key) }.copied();
    if reason.is_drop() {
        if !known.is_some_and(|expires_at| live(expires_at, now()))
            && cache.insert(key, expiry(family), 0).is_err()
        {
            counters::bump(SLOT_FRAG_INSERT_FAILED, 1, bytes);
            events::fragment_cache_full(ctx, counters::now());
        }
    } else if known.is_some() {
        let _ = cache.remove(key);
    }
}

/// Whether an entry that expires at `expires_at` still holds at `now` (both in units).
#[inline(always)]
fn live(expires_at: u32, now: u32) -> bool {
    // Wrapping, like the clock: the two are less than 2^31 units apart either way.
    (expires_at.wrapping_sub(now) as i32) > 0
}

/// When an entry written now expires, in units: after `family`'s reassembly timeout, rounded
/// down to a unit, so the entry lives at most as long as the kernel waits and less than one
/// unit less.
#[inline(always)]
fn expiry(family: u8) -> u32 {
    let secs = match FRAG_TIMEOUTS.get(frag_timeout_slot(family)) {
        Some(&secs) if secs != 0 => secs,
        _ => DEFAULT_FRAG_TIMEOUT_SECS,
    };
    // SAFETY: a plain read of a static; volatile so the compiler keeps the load whose value
    // the loader sets.
    let hz = unsafe { core::ptr::read_volatile(&raw const FRAG_HZ) };
    (jiffies().wrapping_add(u64::from(secs) * u64::from(hz)) >> FRAG_UNIT_SHIFT) as u32
}

/// The clock now, in units.
#[inline(always)]
fn now() -> u32 {
    (jiffies() >> FRAG_UNIT_SHIFT) as u32
}

/// Jiffies since boot (Linux 5.5; inlined by the verifier into a load).
#[inline(always)]
fn jiffies() -> u64 {
    // SAFETY: `bpf_jiffies64` has no preconditions.
    unsafe { bpf_jiffies64() }
}
