//! The benchmarks' reference programs with maps, not part of the filter (an object of its own:
//! the floor's is also loaded by iproute2, whose libbpf refuses aya's map definitions). Each
//! passes every packet after one map operation on an entry the bench writes first, and is
//! timed against the floor in the same run:
//! - `lookup`: one lookup in a map of the IPv4 fragment cache's kind, the price of "one
//!   small-key lookup";
//! - `admit_percpu`, `admit_shared`: a source's counts added to the per-source map as the
//!   filter does it (a per-CPU LRU hash, plain adds to this CPU's value), and as a shared LRU
//!   hash with atomic adds would: the speed side of that memory trade;
//! - `probe_set`: an IPv4 address looked up in a set kept in an array, two buckets of four
//!   addresses, each bucket chosen by a multiplicative hash of the address: what an allowed
//!   /32 would cost if it were found without a hash map lookup (the array's lookups are
//!   inlined by the verifier, as the /24 bitmap's are).
#![no_std]
#![no_main]
// The BPF target has no compare-and-swap, so core's atomic types offer no `fetch_add`; the
// intrinsic lowers to BPF's atomic add, as C's `__sync_fetch_and_add` does.
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "atomic_xadd, for the shared map's atomic adds"
)]

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, LruHashMap, LruPerCpuHashMap},
    programs::XdpContext,
};
use mcfilter_common::{Frag4Key, IpKey, SourceStats};

/// A map like the IPv4 fragment cache (`mcf_frags4`), holding the one key `lookup` asks for.
#[map(name = "ref_lookup")]
static LOOKUP: LruHashMap<Frag4Key, u32> = LruHashMap::with_max_entries(1, 0);

/// A map like the per-source map (`mcf_sources`), holding the one source `admit_percpu` counts.
#[map(name = "ref_percpu")]
static PERCPU: LruPerCpuHashMap<IpKey, SourceStats> = LruPerCpuHashMap::with_max_entries(1, 0);

/// The per-source map as one value for all CPUs, holding the one source `admit_shared` counts.
#[map(name = "ref_shared")]
static SHARED: LruHashMap<IpKey, SourceStats> = LruHashMap::with_max_entries(1, 0);

/// log2 of the buckets of `ref_set`: 2^19 buckets of four addresses, 8 MiB, a million
/// addresses at half load.
const SET_BUCKETS_LOG2: u32 = 19;
/// The multipliers of the set's two bucket choices (odd; Fibonacci hashing's and murmur3's).
const SET_MULTIPLIERS: [u32; 2] = [0x9e37_79b1, 0x85eb_ca77];

/// A set of IPv4 addresses (network order) in buckets of four. The bench writes the address
/// `probe_set` asks for into every bucket's last slot, so the probe reads both of its buckets
/// to the end.
#[map(name = "ref_set")]
static SET: Array<[u32; 4]> = Array::with_max_entries(1 << SET_BUCKETS_LOG2, 0);

/// The address `probe_set` looks for, 198.18.0.1 (the bench writes the same), read at run time
/// so that the buckets are not computed at build time.
static PROBE: u32 = 0xc612_0001_u32.to_be();

/// The keys, in the object's global data, so that no copy of them is built (the bench writes
/// the maps' entries under the all-zero keys).
static FRAG_KEY: Frag4Key = Frag4Key {
    src: 0,
    dst: 0,
    id: 0,
    proto: 0,
    _pad: 0,
};
static SOURCE: IpKey = IpKey {
    family: 0,
    addr: [0; 4],
};

/// The counts one admission adds, as the filter's `stats::admit` gets them.
const ADD: SourceStats = SourceStats {
    packets: 2,
    bytes: 128,
    last_seen_ns: 1,
    dry_run_packets: 1,
    last_reason: 3,
    last_dry_run: 0,
};

/// The floor plus one lookup that finds its entry: passes when it does.
#[xdp]
pub(crate) fn lookup(_ctx: XdpContext) -> u32 {
    // SAFETY: the value is only looked at for being there.
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "by value, the key would be copied to the stack first"
    )]
    let found = unsafe { LOOKUP.get(&FRAG_KEY) };
    pass_if(found.is_some())
}

/// The filter's admission of a source's counts: this CPU's value, plain adds.
#[xdp]
pub(crate) fn admit_percpu(_ctx: XdpContext) -> u32 {
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "by value, the key would be copied to the stack first"
    )]
    let Some(stats) = PERCPU.get_ptr_mut(&SOURCE) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: this CPU's value of a per-CPU map, which only this program on this CPU writes.
    let stats: &mut SourceStats = unsafe { &mut *stats };
    stats.packets += ADD.packets;
    stats.bytes += ADD.bytes;
    stats.dry_run_packets += ADD.dry_run_packets;
    stats.last_seen_ns = ADD.last_seen_ns;
    stats.last_reason = ADD.last_reason;
    stats.last_dry_run = ADD.last_dry_run;
    xdp_action::XDP_PASS
}

/// The same into one value all CPUs share: the totals with atomic adds, the rest stored.
#[xdp]
pub(crate) fn admit_shared(_ctx: XdpContext) -> u32 {
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "by value, the key would be copied to the stack first"
    )]
    let Some(stats) = SHARED.get_ptr_mut(&SOURCE) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: a map value that lives as long as the program runs (RCU); the counters are
    // 8-aligned u64s, added to atomically, the other fields written whole.
    unsafe {
        let add = |field: *mut u64, value: u64| {
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(field, value);
        };
        add(&raw mut (*stats).packets, ADD.packets);
        add(&raw mut (*stats).bytes, ADD.bytes);
        add(&raw mut (*stats).dry_run_packets, ADD.dry_run_packets);
        (*stats).last_seen_ns = ADD.last_seen_ns;
        (*stats).last_reason = ADD.last_reason;
        (*stats).last_dry_run = ADD.last_dry_run;
    }
    xdp_action::XDP_PASS
}

/// The floor plus the set's probe: two inlined array lookups and eight compares; passes when
/// it finds the address.
#[xdp]
pub(crate) fn probe_set(_ctx: XdpContext) -> u32 {
    // SAFETY: a plain read of a static; volatile so that the probe is not computed at build time.
    let addr = unsafe { core::ptr::read_volatile(&raw const PROBE) };
    let mut found = false;
    for multiplier in SET_MULTIPLIERS {
        let bucket = addr.wrapping_mul(multiplier) >> (32 - SET_BUCKETS_LOG2);
        if let Some(slots) = SET.get(bucket) {
            found |= slots.contains(&addr);
        }
    }
    pass_if(found)
}

#[inline(always)]
fn pass_if(ok: bool) -> u32 {
    if ok {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_ABORTED
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
