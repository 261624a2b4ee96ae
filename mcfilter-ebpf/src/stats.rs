//! Counters, never logs: exact per-CPU totals by reason, and per-source counters of dropped
//! packets in an LRU map (bounded under spoofed floods) whose failed inserts are themselves
//! counted.

use aya_ebpf::programs::XdpContext;
use mcfilter_common::{
    Counter, IpKey, PendingSource, Reason, SLOT_SOURCE_INSERT_FAILED, SLOT_SOURCE_INSERTED,
    SourceStats, recent_slot, stats_slot,
};

use crate::{
    counters::{bump, now},
    events,
    maps::{IFACE_STATS, PENDING, RECENT, SOURCES},
};

/// Counts one packet of `bytes` under `reason`, and under its source when it is (or, in dry-run,
/// would be) dropped. Per-source counts are write-combined: each CPU keeps its latest source in
/// `PENDING` and adds it to the LRU map only when a different source arrives, so a flood from
/// one source costs a compare per packet instead of a hash lookup. Readers add `PENDING` in, so
/// the counts stay exact.
#[inline(always)]
pub(crate) fn record(
    ctx: &XdpContext,
    reason: Reason,
    dry_run: bool,
    bytes: u64,
    source: Option<IpKey>,
) {
    let slot = stats_slot(reason, dry_run);
    bump(slot, 1, bytes);
    if let Some(counter) = IFACE_STATS.get_ptr_mut(slot) {
        // SAFETY: as in `counters::bump`.
        let counter: &mut Counter = unsafe { &mut *counter };
        counter.packets += 1;
        counter.bytes += bytes;
    }
    let Some(key) = source else { return };
    if !reason.is_drop() {
        return;
    }
    let Some(pending) = PENDING.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot of a per-CPU array; see `counters::bump`.
    let pending: &mut PendingSource = unsafe { &mut *pending };
    let stats = &mut pending.stats;
    let dry = u64::from(dry_run);
    if stats.packets != 0 && pending.key == key {
        stats.packets += 1;
        stats.bytes += bytes;
        stats.dry_run_packets += dry;
        // "Last seen" in a run of one source's packets is refreshed every CLOCK_EVERY packets:
        // a flood moves it on within microseconds, and the clock is most of the run's cost.
        if stats.packets & (CLOCK_EVERY - 1) == 0 {
            stats.last_seen_ns = now();
        }
    } else {
        if stats.packets != 0 {
            merge(ctx, &pending.key, stats);
        }
        pending.key = key;
        stats.packets = 1;
        stats.bytes = bytes;
        stats.dry_run_packets = dry;
        stats.last_seen_ns = now();
    }
    stats.last_reason = reason as u32;
    stats.last_dry_run = u32::from(dry_run);
}

/// Packets of one source between two clock reads in a run (a power of two).
const CLOCK_EVERY: u64 = 64;

/// Takes a CPU's pending counts for `key` (a run of its packets ended): a source that sent
/// more than one packet, or was seen before on this CPU, goes into the LRU map; a one-off waits
/// in its slot of the per-CPU table of recent sources, so one-off spoofed sources cost no LRU
/// insert. A one-off whose slot another takes is counted as not recorded.
#[inline(always)]
fn merge(ctx: &XdpContext, key: &IpKey, add: &SourceStats) {
    let Some(slot) = RECENT.get_ptr_mut(recent_slot(key)) else {
        return;
    };
    // SAFETY: this CPU's slot of a per-CPU array; see `counters::bump`.
    let slot: &mut PendingSource = unsafe { &mut *slot };
    if slot.stats.packets != 0 && slot.key == *key {
        let mut total = *add;
        total.packets += slot.stats.packets;
        total.bytes += slot.stats.bytes;
        total.dry_run_packets += slot.stats.dry_run_packets;
        slot.stats.packets = 0;
        admit(ctx, key, &total);
    } else if add.packets > 1 {
        admit(ctx, key, add);
    } else {
        if slot.stats.packets != 0 {
            bump(
                SLOT_SOURCE_INSERT_FAILED,
                slot.stats.packets,
                slot.stats.bytes,
            );
        }
        slot.key = *key;
        slot.stats = *add;
    }
}

/// Adds counts for `key` to the LRU map, inserting it if it is new there.
#[inline(always)]
fn admit(ctx: &XdpContext, key: &IpKey, add: &SourceStats) {
    match SOURCES.get_ptr_mut(key) {
        Some(stats) => {
            // SAFETY: this CPU's slot of a per-CPU map value; see `counters::bump`.
            let stats: &mut SourceStats = unsafe { &mut *stats };
            stats.packets += add.packets;
            stats.bytes += add.bytes;
            stats.dry_run_packets += add.dry_run_packets;
            stats.last_seen_ns = add.last_seen_ns;
            stats.last_reason = add.last_reason;
            stats.last_dry_run = add.last_dry_run;
        }
        None => match SOURCES.insert(key, add, 0) {
            Ok(()) => {
                // One more source; the packets are counted under their reason already.
                bump(SLOT_SOURCE_INSERTED, 1, 0);
                events::new_source(ctx, key, add.last_reason, add.last_seen_ns);
            }
            Err(_) => bump(SLOT_SOURCE_INSERT_FAILED, add.packets, add.bytes),
        },
    }
}
