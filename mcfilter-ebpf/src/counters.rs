//! The two things every part of the program stamps its counts with: this CPU's exact totals
//! by slot (`mcfilter_common::stats_slot`) and the coarse clock. A module of its own so that
//! `stats` (per-source counters, which log new sources) and `events` (which count what they
//! suppress) both use it without using each other.

use aya_ebpf::helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns};
use mcfilter_common::Counter;

use crate::maps::{CLOCK, STATS};

/// This CPU's latest read of the coarse clock and the jiffy it was made in.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct ClockRead {
    jiffies: u64,
    ns: u64,
}

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
/// fraction of the cost of bpf_ktime_get_ns, which reads the clocksource. The coarse clock
/// moves once a tick, when jiffies do, so each CPU reads it once a jiffy and keeps the read
/// (`CLOCK`): a flood of new sources, each stamped with the time, then pays a load of jiffies
/// (inlined by the verifier, Linux 5.5) instead of a helper call a packet.
#[inline(always)]
pub(crate) fn now() -> u64 {
    // SAFETY: `bpf_jiffies64` has no preconditions.
    let jiffies = unsafe { bpf_jiffies64() };
    let Some(read) = CLOCK.get_ptr_mut(0) else {
        // Unreachable: index 0 of a one-entry array always exists.
        return coarse_ns();
    };
    // SAFETY: this CPU's value of a per-CPU array; see `bump`.
    let read: &mut ClockRead = unsafe { &mut *read };
    if read.jiffies != jiffies || read.ns == 0 {
        *read = ClockRead {
            jiffies,
            ns: coarse_ns(),
        };
    }
    read.ns
}

#[inline(always)]
fn coarse_ns() -> u64 {
    // SAFETY: `bpf_ktime_get_coarse_ns` has no preconditions.
    unsafe { bpf_ktime_get_coarse_ns() }
}
