//! Statistics: exact totals by reason (summed over CPUs) and the busiest dropped sources.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use aya::maps::PerCpuValues;
use mcfilter_common::{
    Counter, FAMILY_V4, IpKey, MAX_REASONS, Reason, SLOT_FRAG_INSERT_FAILED,
    SLOT_SOURCE_INSERT_FAILED, SourceStats, map_names, stats_slot,
};
use serde::Serialize;

use crate::{
    Error,
    maps::{Maps, map_err},
    sys,
};

/// A packet and byte total.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Total {
    pub packets: u64,
    pub bytes: u64,
}

impl Total {
    fn add(&mut self, counter: Counter) {
        self.packets += counter.packets;
        self.bytes += counter.bytes;
    }
}

/// One source's drops, summed over CPUs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SourceRow {
    pub source: IpAddr,
    pub packets: u64,
    pub bytes: u64,
    /// Reason of the last packet.
    pub reason: &'static str,
    /// The last packet was only counted (dry-run).
    pub dry_run: bool,
    pub last_seen_ms_ago: u64,
}

/// `mcfilter stats`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Packets the program dropped.
    pub dropped: Total,
    /// Packets the program passed (including dry-run's would-be drops).
    pub passed: Total,
    /// Packets dry-run passed that enforcing would have dropped.
    pub would_drop: Total,
    /// Packets by reason (enforced and dry-run).
    pub reasons: BTreeMap<&'static str, u64>,
    /// Dropped packets the per-source map could not record (map full or busy).
    pub sources_not_recorded: u64,
    /// Dropped first fragments the fragment cache could not remember (their later fragments
    /// then pass, and cost the host reassembly memory until the kernel's timeout).
    pub fragments_not_recorded: u64,
    /// The busiest sources by packets, descending.
    pub sources: Vec<SourceRow>,
}

/// Totals from the stats slots (each already summed over CPUs).
pub fn totals(slots: &[Counter]) -> Stats {
    let slot = |index: u32| slots.get(index as usize).copied().unwrap_or_default();
    let mut stats = Stats {
        dropped: Total::default(),
        passed: Total::default(),
        would_drop: Total::default(),
        reasons: BTreeMap::new(),
        sources_not_recorded: slot(SLOT_SOURCE_INSERT_FAILED).packets,
        fragments_not_recorded: slot(SLOT_FRAG_INSERT_FAILED).packets,
        sources: Vec::new(),
    };
    for reason in Reason::ALL {
        let enforced = slot(stats_slot(reason, false));
        let dry_run = slot(stats_slot(reason, true));
        if reason.is_drop() {
            stats.dropped.add(enforced);
            stats.would_drop.add(dry_run);
        } else {
            stats.passed.add(enforced);
        }
        // Dry-run passes everything, would-be drops included.
        stats.passed.add(dry_run);
        stats
            .reasons
            .insert(reason.name(), enforced.packets + dry_run.packets);
    }
    stats
}

/// Sums per-CPU counters.
fn sum(values: &PerCpuValues<Counter>) -> Counter {
    values.iter().fold(Counter::default(), |acc, c| Counter {
        packets: acc.packets + c.packets,
        bytes: acc.bytes + c.bytes,
    })
}

/// Folds one source's per-CPU values: totals summed, "last" taken from the latest CPU.
pub fn fold_source(key: &IpKey, values: &[SourceStats], now_ns: u64) -> SourceRow {
    let mut packets = 0;
    let mut bytes = 0;
    let mut last = SourceStats::default();
    for v in values {
        packets += v.packets;
        bytes += v.bytes;
        if v.packets > 0 && v.last_seen_ns >= last.last_seen_ns {
            last = *v;
        }
    }
    SourceRow {
        source: source_addr(key),
        packets,
        bytes,
        reason: Reason::from_code(last.last_reason).map_or("unknown", Reason::name),
        dry_run: last.last_dry_run != 0,
        last_seen_ms_ago: now_ns.saturating_sub(last.last_seen_ns) / 1_000_000,
    }
}

/// The address of a per-source key.
pub fn source_addr(key: &IpKey) -> IpAddr {
    let bytes = key.addr_bytes();
    if key.family == u32::from(FAMILY_V4) {
        let [a, b, c, d, ..] = bytes;
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    } else {
        IpAddr::V6(Ipv6Addr::from(bytes))
    }
}

/// Reads every counter; `top` limits the sources listed.
pub fn read(maps: &Maps, top: usize) -> Result<Stats, Error> {
    let mut slots = Vec::new();
    for values in maps.stats.iter() {
        slots.push(sum(&values.map_err(map_err(map_names::STATS))?));
    }
    debug_assert!(slots.len() as u32 > 2 * MAX_REASONS);
    let mut stats = totals(&slots);
    let now = sys::monotonic_ns();
    let mut by_source: HashMap<IpKey, Vec<SourceStats>> = HashMap::new();
    for entry in maps.sources.iter() {
        let (key, values) = match entry {
            Ok(entry) => entry,
            // An LRU entry evicted between listing its key and reading it.
            Err(aya::maps::MapError::KeyNotFound) => continue,
            Err(err) => return Err(map_err(map_names::SOURCES)(err)),
        };
        by_source.insert(key, values.iter().copied().collect());
    }
    // Each CPU's write-combined latest source is not in the LRU map yet.
    let pending = maps
        .pending
        .get(&0, 0)
        .map_err(map_err(map_names::PENDING))?;
    for cpu in pending.iter().filter(|p| p.stats.packets != 0) {
        by_source.entry(cpu.key).or_default().push(cpu.stats);
    }
    let mut sources: Vec<SourceRow> = by_source
        .iter()
        .map(|(key, values)| fold_source(key, values, now))
        .collect();
    sources.sort_by(|a, b| b.packets.cmp(&a.packets).then(a.source.cmp(&b.source)));
    sources.truncate(top);
    stats.sources = sources;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(packets: u64, bytes: u64) -> Counter {
        Counter { packets, bytes }
    }

    #[test]
    fn totals_split_drops_passes_and_dry_run() {
        let mut slots = vec![Counter::default(); mcfilter_common::STATS_SLOTS as usize];
        slots[stats_slot(Reason::UdpPort, false) as usize] = counter(3, 300);
        slots[stats_slot(Reason::NotProtected, false) as usize] = counter(10, 1000);
        slots[stats_slot(Reason::TcpNotAllowed, true) as usize] = counter(2, 120);
        slots[stats_slot(Reason::TcpAllowed, true) as usize] = counter(1, 60);
        slots[SLOT_SOURCE_INSERT_FAILED as usize] = counter(4, 400);
        let stats = totals(&slots);
        assert_eq!(
            stats.dropped,
            Total {
                packets: 3,
                bytes: 300
            }
        );
        assert_eq!(
            stats.passed,
            Total {
                packets: 13,
                bytes: 1180
            }
        );
        assert_eq!(
            stats.would_drop,
            Total {
                packets: 2,
                bytes: 120
            }
        );
        assert_eq!(stats.reasons["udp_port"], 3);
        assert_eq!(stats.reasons["tcp_not_allowed"], 2);
        assert_eq!(stats.reasons["tcp_allowed"], 1);
        assert_eq!(stats.reasons.len(), Reason::ALL.len());
        assert_eq!(stats.sources_not_recorded, 4);
    }

    #[test]
    fn sources_fold_over_cpus_and_keep_the_latest_reason() {
        let key = IpKey::v4([198, 18, 2, 66]);
        let cpu0 = SourceStats {
            packets: 2,
            bytes: 200,
            last_seen_ns: 5_000_000,
            last_reason: Reason::UdpPort as u32,
            last_dry_run: 0,
        };
        let cpu1 = SourceStats {
            packets: 1,
            bytes: 60,
            last_seen_ns: 9_000_000,
            last_reason: Reason::TcpNotAllowed as u32,
            last_dry_run: 0,
        };
        let row = fold_source(&key, &[cpu0, SourceStats::default(), cpu1], 10_000_000);
        assert_eq!(row.source, "198.18.2.66".parse::<IpAddr>().unwrap());
        assert_eq!((row.packets, row.bytes), (3, 260));
        assert_eq!(row.reason, "tcp_not_allowed");
        assert_eq!(row.last_seen_ms_ago, 1);
        let v6 = IpKey::v6("2001:db8::66".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(source_addr(&v6).to_string(), "2001:db8::66");
    }
}
