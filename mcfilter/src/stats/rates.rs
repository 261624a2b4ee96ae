//! Rates between two readings of the exact counters, for `stats --watch`.

use std::{collections::BTreeMap, net::IpAddr};

use mcfilter_common::Reason;
use serde::Serialize;

use super::{Stats, Total, by_name, reason_name};

/// A packet and bit rate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Rate {
    /// Packets a second.
    pub pps: f64,
    /// Bits a second.
    pub bps: f64,
}

/// Rates between two readings `secs` apart, for `stats --watch`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rates {
    /// Seconds between the two readings.
    pub interval_s: f64,
    /// Packets the program dropped.
    pub dropped: Rate,
    /// Packets the program passed.
    pub passed: Rate,
    /// Packets dry-run passed that enforcing would have dropped.
    pub would_drop: Rate,
    /// By reason.
    #[serde(serialize_with = "by_name")]
    pub reasons: BTreeMap<Reason, Rate>,
    /// The busiest sources now, with their packet rate over the interval.
    pub sources: Vec<SourceRate>,
}

/// One of the busiest sources, with its rate over a `stats --watch` interval.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SourceRate {
    /// The source address.
    pub source: IpAddr,
    /// Its dropped packets a second.
    pub pps: f64,
    /// Its dropped packets so far.
    pub packets: u64,
    /// The reason of its last packet.
    #[serde(serialize_with = "reason_name")]
    pub reason: Option<Reason>,
}

/// Rates from two readings of the exact counters.
pub fn rates(before: &Stats, after: &Stats, secs: f64) -> Rates {
    let secs = secs.max(f64::EPSILON);
    let per_sec = |packets: u64, bytes: u64| Rate {
        pps: packets as f64 / secs,
        bps: bytes as f64 * 8.0 / secs,
    };
    let delta = |a: Total, b: Total| {
        per_sec(
            a.packets.saturating_sub(b.packets),
            a.bytes.saturating_sub(b.bytes),
        )
    };
    let reasons = after
        .reasons
        .iter()
        .map(|(reason, packets)| {
            let old_packets = before.reasons.get(reason).copied().unwrap_or(0);
            let bytes = after.reason_bytes.get(reason).copied().unwrap_or(0);
            let old_bytes = before.reason_bytes.get(reason).copied().unwrap_or(0);
            (
                *reason,
                per_sec(
                    packets.saturating_sub(old_packets),
                    bytes.saturating_sub(old_bytes),
                ),
            )
        })
        .collect();
    let sources = after
        .sources
        .iter()
        .map(|row| {
            let old = before
                .sources
                .iter()
                .find(|b| b.source == row.source)
                .map_or(0, |b| b.packets);
            SourceRate {
                source: row.source,
                pps: row.packets.saturating_sub(old) as f64 / secs,
                packets: row.packets,
                reason: row.reason,
            }
        })
        .collect();
    Rates {
        interval_s: secs,
        dropped: delta(after.dropped, before.dropped),
        passed: delta(after.passed, before.passed),
        would_drop: delta(after.would_drop, before.would_drop),
        reasons,
        sources,
    }
}
