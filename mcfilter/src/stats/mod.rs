//! Statistics: exact totals by reason (summed over CPUs) and the busiest dropped sources.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::IpNet;
use mcfilter_common::{
    Counter, FAMILY_V4, IpKey, Reason, SLOT_FRAG_INSERT_FAILED, SLOT_SOURCE_INSERT_FAILED,
    SLOT_SOURCE_INSERTED, SourceStats, stats_slot,
};
use serde::Serialize;

mod rates;
mod read;

pub use rates::{Rate, Rates, SourceRate, rates};
pub use read::{iface_totals, read, read_by_prefix};

/// A packet and byte total.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Total {
    /// Packets.
    pub packets: u64,
    /// Their bytes (frame lengths).
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
    /// The source address.
    pub source: IpAddr,
    /// Its dropped (or would-be dropped) packets.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Of `packets`, those dry-run only counted: what enforcing would have dropped.
    pub would_drop_packets: u64,
    /// Reason of the last packet (`None`: a code this build does not know, from a newer
    /// program; shown as `unknown`).
    #[serde(serialize_with = "reason_name")]
    pub reason: Option<Reason>,
    /// The last packet was only counted (dry-run).
    pub dry_run: bool,
    /// When its last packet was dropped, in milliseconds before the reading.
    pub last_seen_ms_ago: u64,
}

/// A reason as the output names it.
pub fn reason_name<S: serde::Serializer>(
    reason: &Option<Reason>,
    out: S,
) -> Result<S::Ok, S::Error> {
    out.serialize_str(show_reason(*reason))
}

/// A map by reason as the output writes it: keyed by the reasons' names, in code order.
fn by_name<V: Serialize, S: serde::Serializer>(
    map: &BTreeMap<Reason, V>,
    out: S,
) -> Result<S::Ok, S::Error> {
    out.collect_map(map.iter().map(|(reason, value)| (reason.name(), value)))
}

/// A source row's reason as the output names it.
pub fn show_reason(reason: Option<Reason>) -> &'static str {
    reason.map_or("unknown", Reason::name)
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
    #[serde(serialize_with = "by_name")]
    pub reasons: BTreeMap<Reason, u64>,
    /// Bytes by reason (enforced and dry-run).
    #[serde(serialize_with = "by_name")]
    pub reason_bytes: BTreeMap<Reason, u64>,
    /// Packets dry-run passed that enforcing would have dropped, by reason (the reasons that
    /// drop).
    #[serde(serialize_with = "by_name")]
    pub would_drop_reasons: BTreeMap<Reason, u64>,
    /// Dropped packets whose per-source counts were given up: a source seen once whose slot in
    /// the table of recent sources another took (spoofed floods), or a full map.
    pub sources_not_recorded: u64,
    /// Distinct sources the per-source map has held, and how many of them the LRU has since
    /// evicted to make room (their counts are gone; the totals above still have them).
    pub sources_seen: u64,
    /// Of `sources_seen`, those the LRU has evicted.
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
    /// Dropped.
    Drop,
    /// Passed.
    Pass,
    /// Passed by dry-run; enforcing would have dropped them.
    WouldDrop,
}

impl Action {
    /// The `action` label's value.
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
    /// The /24 or /48.
    pub prefix: IpNet,
    /// Dropped packets from its sources.
    pub packets: u64,
    /// Their bytes.
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
            stats.would_drop_reasons.insert(reason, dry_run.packets);
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
            .insert(reason, enforced.packets + dry_run.packets);
        stats
            .reason_bytes
            .insert(reason, enforced.bytes + dry_run.bytes);
    }
    stats
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
        reason: Reason::from_code(last.last_reason),
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
mod tests;
