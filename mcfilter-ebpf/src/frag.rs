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
//! In front of each family's LRU cache, each CPU keeps the dropped datagram it met last
//! (`FRAGS_SEEN`, `FRAGS4_SEEN`): a datagram's fragments arrive back to back, and on the same
//! CPU (receive-side scaling hashes a fragment by its addresses, having no ports to hash), so
//! the fragments after the first cost a per-CPU array lookup and a compare, not a hash lookup.
//! It holds only what the LRU cache held or was given, with the same expiry. When a first
//! fragment that passes removes a datagram from the LRU cache, it also moves the shared epoch
//! (`FRAG_EPOCH`) on, and every CPU's entry made under an older epoch is void: no CPU drops the
//! later fragments of a datagram the cache has forgotten that way. A datagram the full cache
//! evicted can outlive the eviction as a CPU's latest (no first fragment finds it to remove);
//! that CPU then drops the later fragments of a new datagram reusing its key until a later drop
//! replaces it or it expires: a lost datagram, never a passed one.
//!
//! The clock is jiffies (one load of a kernel variable; the nanosecond clocks cost a helper
//! call, about 20 ns), in units of `2^FRAG_UNIT_SHIFT` jiffies (see
//! `mcfilter_common::FRAG_UNIT_SHIFT`): an entry expires up to one unit early, never late.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use mcfilter_common::{
    DEFAULT_FRAG_TIMEOUT_SECS, FAMILY_V4, FAMILY_V6, FRAG_UNIT_SHIFT, Frag4Key, FragClock, FragKey,
    Reason, SLOT_FRAG_INSERT_FAILED, frag_timeout_slot,
};

use aya_ebpf::{
    helpers::bpf_jiffies64,
    maps::{LruHashMap, PerCpuArray},
    programs::XdpContext,
};

use crate::{
    counters, events,
    maps::{FRAG_EPOCH, FRAG_TIMEOUTS, FRAGS, FRAGS_SEEN, FRAGS4, FRAGS4_SEEN},
};

/// A CPU's latest dropped datagram of one family (see the module's docs): its key, when its
/// LRU cache entry expires, and the epoch it was looked up or written under. A CPU's first is
/// all zero: expired, like a cleared one.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Seen<K> {
    key: K,
    expires_at: u32,
    epoch: u32,
}

/// A datagram's family: its LRU cache and its CPUs' latest dropped datagram.
struct Family<K: 'static> {
    cache: &'static LruHashMap<K, u32>,
    seen: &'static PerCpuArray<Seen<K>>,
    family: u8,
}

/// A datagram as the kernel's reassembly keys it, in its family's cache: the same code for
/// both, each cache with a key of its family's size.
pub(crate) enum Datagram {
    V4(Frag4Key),
    V6(FragKey),
}

/// IPv4 datagrams, under the 12-byte key.
const V4: Family<Frag4Key> = Family {
    cache: &FRAGS4,
    seen: &FRAGS4_SEEN,
    family: FAMILY_V4,
};
/// IPv6 datagrams.
const V6: Family<FragKey> = Family {
    cache: &FRAGS,
    seen: &FRAGS_SEEN,
    family: FAMILY_V6,
};

impl Datagram {
    /// The verdict for a later fragment of this datagram.
    #[inline(always)]
    pub(crate) fn later(&self) -> Reason {
        match self {
            Datagram::V4(key) => V4.later(key),
            Datagram::V6(key) => V6.later(key),
        }
    }

    /// Records this datagram's first fragment's verdict (see [`Family::remember`]).
    #[inline(always)]
    pub(crate) fn remember(&self, ctx: &XdpContext, reason: Reason, bytes: u64) {
        match self {
            Datagram::V4(key) => V4.remember(ctx, key, reason, bytes),
            Datagram::V6(key) => V6.remember(ctx, key, reason, bytes),
        }
    }
}

impl<K: PartialEq + Copy> Family<K> {
    /// The verdict for a later fragment of the datagram `key`.
    #[inline(always)]
    fn later(&self, key: &K) -> Reason {
        let (now, epoch) = (now(), epoch());
        if self.seen_live(key, now, epoch) {
            return Reason::FragmentOfDropped;
        }
        // SAFETY: the value is a plain u32 only ever written whole by `remember`.
        match unsafe { self.cache.get(key) } {
            Some(&expires_at) if live(expires_at, now) => {
                self.see(key, expires_at, epoch);
                Reason::FragmentOfDropped
            }
            _ => Reason::LaterFragment,
        }
    }

    /// Records a first fragment's verdict: a dropped datagram is remembered; a passed one
    /// forgets any stale entry under the same key (ids are reused).
    #[inline(always)]
    fn remember(&self, ctx: &XdpContext, key: &K, reason: Reason, bytes: u64) {
        let (now, epoch) = (now(), epoch());
        if reason.is_drop() {
            // A retransmitted or duplicated first fragment needs no write.
            if self.seen_live(key, now, epoch) {
                return;
            }
            // A lookup first: an LRU update allocates a new element even when the key exists.
            // SAFETY: the value is a plain u32 only ever written whole here.
            let expires_at = match unsafe { self.cache.get(key) } {
                Some(&expires_at) if live(expires_at, now) => expires_at,
                _ => {
                    let expires_at = expiry(self.family);
                    if self.cache.insert(key, expires_at, 0).is_err() {
                        counters::bump(SLOT_FRAG_INSERT_FAILED, 1, bytes);
                        events::fragment_cache_full(ctx, counters::now());
                        return;
                    }
                    expires_at
                }
            };
            self.see(key, expires_at, epoch);
            return;
        }
        if let Some(seen) = self.seen.get_ptr_mut(0) {
            // SAFETY: this CPU's value of a per-CPU array; XDP runs with preemption off, so
            // nothing else writes it concurrently.
            let seen = unsafe { &mut *seen };
            if seen.key == *key {
                // Expired now: void, as an LRU cache entry is once its time has come.
                seen.expires_at = now;
            }
        }
        // SAFETY: the value is only looked at for being there.
        if unsafe { self.cache.get(key) }.is_some() {
            // The entry goes first, then the epoch moves: a CPU that read the old epoch before
            // looking the entry up holds it under an epoch that is now void.
            let _ = self.cache.remove(key);
            if let Some(epoch) = FRAG_EPOCH.get_ptr_mut(0) {
                // SAFETY: a map value that lives as long as the program runs; an aligned u32,
                // added to atomically, since every CPU may move it.
                unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(epoch, 1) };
            }
        }
    }

    /// Whether this CPU's latest dropped datagram is `key`'s, still live at `now`, and made in
    /// `epoch`.
    #[inline(always)]
    fn seen_live(&self, key: &K, now: u32, epoch: u32) -> bool {
        self.seen.get(0).is_some_and(|seen| {
            seen.epoch == epoch && live(seen.expires_at, now) && seen.key == *key
        })
    }

    /// Makes `key`'s datagram, whose LRU cache entry expires at `expires_at` and was looked up
    /// or written in `epoch`, this CPU's latest dropped one.
    #[inline(always)]
    fn see(&self, key: &K, expires_at: u32, epoch: u32) {
        if let Some(seen) = self.seen.get_ptr_mut(0) {
            // SAFETY: this CPU's value of a per-CPU array; see `remember`.
            unsafe {
                *seen = Seen {
                    key: *key,
                    expires_at,
                    epoch,
                }
            };
        }
    }
}

/// The kernel's jiffies per second, set by the loader (`FRAG_HZ_GLOBAL`).
#[unsafe(no_mangle)]
static FRAG_HZ: u32 = FragClock::DEFAULT.hz;

/// The epoch of the fragment caches now (see the module's docs).
#[inline(always)]
fn epoch() -> u32 {
    FRAG_EPOCH.get(0).copied().unwrap_or_default()
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
