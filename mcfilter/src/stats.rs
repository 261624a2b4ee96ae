//! Statistics: exact totals by reason (summed over CPUs) and the busiest dropped sources.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use aya::maps::PerCpuValues;
use ipnet::IpNet;
use mcfilter_common::{
    Counter, FAMILY_V4, IpKey, MAX_REASONS, Reason, SLOT_FRAG_INSERT_FAILED,
    SLOT_SOURCE_INSERT_FAILED, SLOT_SOURCE_INSERTED, SourceStats, map_names, stats_slot,
};
use serde::Serialize;

use crate::{
    Error, batch,
    maps::{Maps, map_err},
    pin::StateDir,
    sys,
};

/// A packet and byte total.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Total {
    pub packets: u64,
    pub bytes: u64,
}

impl From<Counter> for Total {
    fn from(counter: Counter) -> Self {
        Total {
            packets: counter.packets,
            bytes: counter.bytes,
        }
    }
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
    /// Of `packets`, those dry-run only counted: what enforcing would have dropped.
    pub would_drop_packets: u64,
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
    /// Bytes by reason (enforced and dry-run).
    pub reason_bytes: BTreeMap<&'static str, u64>,
    /// Packets dry-run passed that enforcing would have dropped, by reason.
    pub would_drop_reasons: BTreeMap<&'static str, u64>,
    /// Dropped packets whose per-source counts were given up: a source seen once whose slot in
    /// the table of recent sources another took (spoofed floods), or a full map.
    pub sources_not_recorded: u64,
    /// Distinct sources the per-source map has held, and how many of them the LRU has since
    /// evicted to make room (their counts are gone; the totals above still have them).
    pub sources_seen: u64,
    pub sources_evicted: u64,
    /// Dropped first fragments the fragment cache could not remember (their later fragments
    /// then pass, and cost the host reassembly memory until the kernel's timeout).
    pub fragments_not_recorded: u64,
    /// The busiest sources by packets, descending.
    pub sources: Vec<SourceRow>,
    /// Packets and bytes by reason and what happened to them (the metrics' `action` label).
    #[serde(skip)]
    pub actions: Vec<(Reason, Action, Total)>,
}

/// What happened to the packets of a reason: dropped, passed, or passed by dry-run that
/// enforcing would have dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Drop,
    Pass,
    WouldDrop,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Drop => "drop",
            Action::Pass => "pass",
            Action::WouldDrop => "would_drop",
        }
    }
}

/// The sources of one prefix (a /24 or a /48), summed: the metrics' default view of the
/// busiest sources, whose number stays bounded when a flood's sources are spoofed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefixRow {
    pub prefix: IpNet,
    pub packets: u64,
    pub bytes: u64,
    /// Of `packets`, those dry-run only counted.
    pub would_drop_packets: u64,
    /// Distinct sources seen in the prefix.
    pub sources: u64,
}

/// The prefix a source is aggregated into: its /24 (IPv4) or /48 (IPv6).
pub fn aggregate_prefix(source: IpAddr) -> IpNet {
    let len = match source {
        IpAddr::V4(_) => 24,
        IpAddr::V6(_) => 48,
    };
    IpNet::new(source, len)
        .expect("24 and 48 are valid prefix lengths")
        .trunc()
}

/// Totals from the stats slots (each already summed over CPUs).
pub fn totals(slots: &[Counter]) -> Stats {
    let slot = |index: u32| slots.get(index as usize).copied().unwrap_or_default();
    let mut stats = Stats {
        dropped: Total::default(),
        passed: Total::default(),
        would_drop: Total::default(),
        reasons: BTreeMap::new(),
        reason_bytes: BTreeMap::new(),
        would_drop_reasons: BTreeMap::new(),
        sources_not_recorded: slot(SLOT_SOURCE_INSERT_FAILED).packets,
        fragments_not_recorded: slot(SLOT_FRAG_INSERT_FAILED).packets,
        sources_seen: slot(SLOT_SOURCE_INSERTED).packets,
        sources_evicted: 0,
        sources: Vec::new(),
        actions: Vec::new(),
    };
    for reason in Reason::ALL {
        let enforced = slot(stats_slot(reason, false));
        let dry_run = slot(stats_slot(reason, true));
        if reason.is_drop() {
            stats.dropped.add(enforced);
            stats.would_drop.add(dry_run);
            stats
                .would_drop_reasons
                .insert(reason.name(), dry_run.packets);
            stats
                .actions
                .push((reason, Action::Drop, Total::from(enforced)));
            stats
                .actions
                .push((reason, Action::WouldDrop, Total::from(dry_run)));
        } else {
            stats.passed.add(enforced);
            let mut passed = Total::from(enforced);
            passed.add(dry_run);
            stats.actions.push((reason, Action::Pass, passed));
        }
        // Dry-run passes everything, would-be drops included.
        stats.passed.add(dry_run);
        stats
            .reasons
            .insert(reason.name(), enforced.packets + dry_run.packets);
        stats
            .reason_bytes
            .insert(reason.name(), enforced.bytes + dry_run.bytes);
    }
    stats
}

/// The counters of one interface: its program's own stats array, pinned at attach (see
/// [`StateDir::iface_stats`]), so reading them needs no program lookup by id. Zero-based at the
/// interface's attach (a `--replace` keeps them), unlike the pinned totals. `None` for an
/// interface an older build attached, which pinned no counters of its own.
pub fn iface_totals(state: &StateDir, ifindex: u32) -> Result<Option<Stats>, Error> {
    use aya::maps::{Map, MapData, PerCpuArray};
    let pin = state.iface_stats(ifindex);
    if !pin.exists() {
        return Ok(None);
    }
    let array: PerCpuArray<MapData, Counter> = match MapData::from_pin(&pin)
        .map(Map::PerCpuArray)
        .and_then(PerCpuArray::try_from)
    {
        Ok(array) => array,
        // Detached since the caller looked.
        Err(_) if !pin.exists() => return Ok(None),
        Err(err) => return Err(map_err(map_names::IFACE_STATS)(err)),
    };
    let mut slots = Vec::new();
    for values in array.iter() {
        slots.push(sum(&values.map_err(map_err(map_names::IFACE_STATS))?));
    }
    Ok(Some(totals(&slots)))
}

/// A packet and bit rate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Rate {
    pub pps: f64,
    pub bps: f64,
}

/// Rates between two readings `secs` apart, for `stats --watch`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rates {
    pub interval_s: f64,
    pub dropped: Rate,
    pub passed: Rate,
    pub would_drop: Rate,
    pub reasons: BTreeMap<&'static str, Rate>,
    /// The busiest sources now, with their packet rate over the interval.
    pub sources: Vec<SourceRate>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SourceRate {
    pub source: IpAddr,
    pub pps: f64,
    pub packets: u64,
    pub reason: &'static str,
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
        .map(|(name, packets)| {
            let old_packets = before.reasons.get(name).copied().unwrap_or(0);
            let bytes = after.reason_bytes.get(name).copied().unwrap_or(0);
            let old_bytes = before.reason_bytes.get(name).copied().unwrap_or(0);
            (
                *name,
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
    let mut would_drop_packets = 0;
    let mut last = SourceStats::default();
    for v in values {
        packets += v.packets;
        bytes += v.bytes;
        would_drop_packets += v.dry_run_packets;
        if v.packets > 0 && v.last_seen_ns >= last.last_seen_ns {
            last = *v;
        }
    }
    SourceRow {
        source: source_addr(key),
        packets,
        bytes,
        would_drop_packets,
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
    let mut busiest = TopN::new(top);
    let mut stats = read_each_source(maps, |row| busiest.push(row))?;
    stats.sources = busiest.into_sorted();
    Ok(stats)
}

/// The totals, and the `top` busiest prefixes ([`aggregate_prefix`]) by packets, descending
/// (`stats.sources` stays empty).
pub fn read_by_prefix(maps: &Maps, top: usize) -> Result<(Stats, Vec<PrefixRow>), Error> {
    let mut prefixes: HashMap<IpNet, PrefixRow> = HashMap::new();
    let stats = read_each_source(maps, |row| {
        let prefix = aggregate_prefix(row.source);
        let entry = prefixes.entry(prefix).or_insert(PrefixRow {
            prefix,
            packets: 0,
            bytes: 0,
            would_drop_packets: 0,
            sources: 0,
        });
        entry.packets += row.packets;
        entry.bytes += row.bytes;
        entry.would_drop_packets += row.would_drop_packets;
        entry.sources += 1;
    })?;
    let mut rows: Vec<PrefixRow> = prefixes.into_values().collect();
    rows.sort_by(|a, b| b.packets.cmp(&a.packets).then(a.prefix.cmp(&b.prefix)));
    rows.truncate(top);
    Ok((stats, rows))
}

/// The totals; every source's row goes to `each` (a source a CPU has not handed to the
/// per-source map yet is folded into its row).
fn read_each_source(maps: &Maps, mut each: impl FnMut(SourceRow)) -> Result<Stats, Error> {
    let mut slots = Vec::new();
    for values in maps.stats.iter() {
        slots.push(sum(&values.map_err(map_err(map_names::STATS))?));
    }
    debug_assert!(slots.len() as u32 > 2 * MAX_REASONS);
    let mut stats = totals(&slots);
    let now = sys::monotonic_ns();
    // Each CPU's write-combined latest source is not in the LRU map yet: add it to its entry.
    let mut pending: HashMap<IpKey, Vec<SourceStats>> = HashMap::new();
    let pending_cpus = maps
        .pending
        .get(&0, 0)
        .map_err(map_err(map_names::PENDING))?;
    for cpu in pending_cpus.iter().filter(|p| p.stats.packets != 0) {
        pending.entry(cpu.key).or_default().push(cpu.stats);
    }
    // And each CPU's sources seen once, not admitted to the LRU map yet.
    for slot in maps.recent.iter() {
        let slot = slot.map_err(map_err(map_names::RECENT))?;
        for cpu in slot.iter().filter(|p| p.stats.packets != 0) {
            pending.entry(cpu.key).or_default().push(cpu.stats);
        }
    }
    // Stream the LRU map in batches.
    let mut values = Vec::new();
    let mut present = 0u64;
    batch::for_each_percpu(&maps.sources, |key: IpKey, per_cpu: &[SourceStats]| {
        present += 1;
        values.clear();
        values.extend_from_slice(per_cpu);
        if let Some(more) = pending.remove(&key) {
            values.extend(more);
        }
        each(fold_source(&key, &values, now));
    })
    .map_err(|err| Error::Map {
        name: map_names::SOURCES,
        err: aya::maps::MapError::IoError(err),
    })?;
    for (key, values) in &pending {
        each(fold_source(key, values, now));
    }
    stats.sources_evicted = stats.sources_seen.saturating_sub(present);
    Ok(stats)
}

/// The `n` rows with the most packets (ties: lower address first), without keeping the rest.
struct TopN {
    n: usize,
    heap: BinaryHeap<Reverse<Ranked>>,
}

/// A row ordered by packets, then by address reversed (so the lower address ranks higher).
#[derive(PartialEq, Eq)]
struct Ranked(SourceRow);

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0
            .packets
            .cmp(&other.0.packets)
            .then_with(|| other.0.source.cmp(&self.0.source))
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl TopN {
    fn new(n: usize) -> Self {
        TopN {
            n,
            heap: BinaryHeap::new(),
        }
    }

    fn push(&mut self, row: SourceRow) {
        if self.n == 0 {
            return;
        }
        self.heap.push(Reverse(Ranked(row)));
        if self.heap.len() > self.n {
            self.heap.pop();
        }
    }

    /// Busiest first.
    fn into_sorted(self) -> Vec<SourceRow> {
        let mut rows: Vec<SourceRow> = self.heap.into_iter().map(|Reverse(Ranked(r))| r).collect();
        rows.sort_by(|a, b| b.packets.cmp(&a.packets).then(a.source.cmp(&b.source)));
        rows
    }
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
    fn rates_come_from_deltas() {
        let mut slots = vec![Counter::default(); mcfilter_common::STATS_SLOTS as usize];
        slots[stats_slot(Reason::UdpPort, false) as usize] = counter(10, 1000);
        let before = totals(&slots);
        slots[stats_slot(Reason::UdpPort, false) as usize] = counter(30, 3000);
        let after = totals(&slots);
        let r = rates(&before, &after, 2.0);
        assert_eq!(
            r.dropped,
            Rate {
                pps: 10.0,
                bps: 8000.0
            }
        );
        assert_eq!(
            r.reasons["udp_port"],
            Rate {
                pps: 10.0,
                bps: 8000.0
            }
        );
        assert_eq!(r.reasons["tcp_allowed"], Rate::default());
    }

    #[test]
    fn top_n_keeps_the_busiest_sorted() {
        let row = |last: u8, packets: u64| SourceRow {
            source: IpAddr::from([198, 18, 0, last]),
            packets,
            bytes: 0,
            would_drop_packets: 0,
            reason: "udp_port",
            dry_run: false,
            last_seen_ms_ago: 0,
        };
        let mut top = TopN::new(3);
        for (last, packets) in [(1, 5), (2, 50), (3, 7), (4, 50), (5, 1), (6, 9)] {
            top.push(row(last, packets));
        }
        let kept: Vec<(IpAddr, u64)> = top
            .into_sorted()
            .iter()
            .map(|r| (r.source, r.packets))
            .collect();
        let want = [(2, 50), (4, 50), (6, 9)].map(|(l, p)| (IpAddr::from([198, 18, 0, l]), p));
        assert_eq!(kept, want);
        let mut none = TopN::new(0);
        none.push(row(1, 1));
        assert!(none.into_sorted().is_empty());
    }

    #[test]
    fn sources_fold_over_cpus_and_keep_the_latest_reason() {
        let key = IpKey::v4([198, 18, 2, 66]);
        let cpu0 = SourceStats {
            packets: 2,
            bytes: 200,
            last_seen_ns: 5_000_000,
            dry_run_packets: 2,
            last_reason: Reason::UdpPort as u32,
            last_dry_run: 1,
        };
        let cpu1 = SourceStats {
            packets: 1,
            bytes: 60,
            last_seen_ns: 9_000_000,
            dry_run_packets: 0,
            last_reason: Reason::TcpNotAllowed as u32,
            last_dry_run: 0,
        };
        let row = fold_source(&key, &[cpu0, SourceStats::default(), cpu1], 10_000_000);
        assert_eq!(row.source, "198.18.2.66".parse::<IpAddr>().unwrap());
        assert_eq!(
            (row.packets, row.bytes, row.would_drop_packets),
            (3, 260, 2)
        );
        assert_eq!(row.reason, "tcp_not_allowed");
        assert_eq!(row.last_seen_ms_ago, 1);
        let v6 = IpKey::v6("2001:db8::66".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(source_addr(&v6).to_string(), "2001:db8::66");
    }
}
