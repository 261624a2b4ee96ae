//! Rare events for the service's log, through aya-log: a source dropped for the first time (as
//! it enters the per-source map) and a full fragment cache. Never per packet: each CPU may log
//! [`EVENTS_PER_SECOND`] events a second; the rest are counted (`SLOT_EVENTS_SUPPRESSED`).

use aya_ebpf::programs::XdpContext;
use aya_log_ebpf::{info, warn};
use mcfilter_common::{EVENTS_PER_SECOND, FAMILY_V4, IpKey, SLOT_EVENTS_SUPPRESSED};

use crate::{counters, maps::EVENTS};

const SECOND_NS: u64 = 1_000_000_000;

/// Whether this CPU may log one more event now.
#[inline(always)]
fn budget(now: u64) -> bool {
    let Some(budget) = EVENTS.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's slot of a per-CPU array; XDP runs with preemption off.
    let budget = unsafe { &mut *budget };
    if now.wrapping_sub(budget.window_start_ns) >= SECOND_NS {
        budget.window_start_ns = now;
        budget.logged = 0;
    }
    if budget.logged < EVENTS_PER_SECOND {
        budget.logged += 1;
        true
    } else {
        counters::bump(SLOT_EVENTS_SUPPRESSED, 1, 0);
        false
    }
}

/// A source entered the per-source map: the first drop recorded for it.
#[inline(always)]
pub(crate) fn new_source(ctx: &XdpContext, key: &IpKey, reason: u32, now: u64) {
    if !budget(now) {
        return;
    }
    if key.family == u32::from(FAMILY_V4) {
        // The word holds the address bytes in memory order; {:i} wants the number.
        info!(
            ctx,
            "new dropped source {:i} (reason {})",
            u32::from_be(key.addr[0]),
            reason
        );
    } else {
        let [a, b, c, d] = key.addr;
        let [a, b, c, d] = [
            a.to_ne_bytes(),
            b.to_ne_bytes(),
            c.to_ne_bytes(),
            d.to_ne_bytes(),
        ];
        let bytes = [
            a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1],
            d[2], d[3],
        ];
        info!(ctx, "new dropped source {:i} (reason {})", bytes, reason);
    }
}

/// The fragment cache could not remember a dropped datagram.
#[inline(always)]
pub(crate) fn fragment_cache_full(ctx: &XdpContext, now: u64) {
    if budget(now) {
        warn!(
            ctx,
            "fragment cache full: later fragments of a dropped datagram will pass"
        );
    }
}
