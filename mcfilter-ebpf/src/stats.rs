//! Counters, never logs: exact per-CPU totals by reason, and per-source counters of dropped
//! packets in an LRU map whose failed inserts are themselves counted.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use mcfilter_common::{Counter, IpKey, Reason, SLOT_SOURCE_INSERT_FAILED, SourceStats, stats_slot};

use crate::maps::{SOURCES, STATS};

#[inline(always)]
pub fn bump(slot: u32, bytes: u64) {
    if let Some(counter) = STATS.get_ptr_mut(slot) {
        // SAFETY: a per-CPU array value of this CPU; XDP runs with preemption off, so nothing
        // else writes it concurrently.
        let counter: &mut Counter = unsafe { &mut *counter };
        counter.packets += 1;
        counter.bytes += bytes;
    }
}

/// Counts one packet of `bytes` under `reason`, and under its source when it is (or, in dry-run,
/// would be) dropped.
#[inline(always)]
pub fn record(reason: Reason, dry_run: bool, bytes: u64, source: Option<IpKey>) {
    bump(stats_slot(reason, dry_run), bytes);
    let Some(key) = source else { return };
    if !reason.is_drop() {
        return;
    }
    // SAFETY: `bpf_ktime_get_ns` has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    match SOURCES.get_ptr_mut(key) {
        Some(stats) => {
            // SAFETY: this CPU's slot of a per-CPU map value; see `bump`.
            let stats: &mut SourceStats = unsafe { &mut *stats };
            stats.packets += 1;
            stats.bytes += bytes;
            stats.last_seen_ns = now;
            stats.last_reason = reason as u32;
            stats.last_dry_run = u32::from(dry_run);
        }
        None => {
            let stats = SourceStats {
                packets: 1,
                bytes,
                last_seen_ns: now,
                last_reason: reason as u32,
                last_dry_run: u32::from(dry_run),
            };
            if SOURCES.insert(key, stats, 0).is_err() {
                bump(SLOT_SOURCE_INSERT_FAILED, bytes);
            }
        }
    }
}
