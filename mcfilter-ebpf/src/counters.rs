//! The two things every part of the program stamps its counts with: this CPU's exact totals
//! by slot (`mcfilter_common::stats_slot`) and the coarse clock. A module of its own so that
//! `stats` (per-source counters, which log new sources) and `events` (which count what they
//! suppress) both use it without using each other.

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use mcfilter_common::Counter;

use crate::maps::STATS;

/// Adds `packets` and `bytes` to stats slot `slot` of this CPU.
#[inline(always)]
pub(crate) fn bump(slot: u32, packets: u64, bytes: u64) {
    if let Some(counter) = STATS.get_ptr_mut(slot) {
        // SAFETY: a per-CPU array value of this CPU; XDP runs with preemption off, so nothing
        // else writes it concurrently.
        let counter: &mut Counter = unsafe { &mut *counter };
        counter.packets += packets;
        counter.bytes += bytes;
    }
}

/// The coarse monotonic clock (jiffies resolution, Linux 5.11): enough for "last seen", and a
/// fraction of the cost of bpf_ktime_get_ns, which reads the clocksource.
#[inline(always)]
pub(crate) fn now() -> u64 {
    // SAFETY: `bpf_ktime_get_coarse_ns` has no preconditions.
    unsafe { bpf_ktime_get_coarse_ns() }
}
