//! Reading the counters from the pinned maps: the totals, one interface's own counters, and
//! every source (streamed in batches, with what each CPU has not handed to the per-source map
//! yet). The arithmetic on what is read is the parent module's.

use std::collections::HashMap;

use aya::maps::PerCpuValues;
use ipnet::IpNet;
use mcfilter_common::{Counter, IpKey, MAX_REASONS, SourceStats, map_names};

use super::{PrefixRow, SourceRow, Stats, TopN, aggregate_prefix, fold_source, totals};
use crate::{
    Error, map_ops,
    maps::{Maps, map_err},
    pin::StateDir,
    sys,
};

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
    map_ops::for_each_percpu(&maps.sources, |key: IpKey, per_cpu: &[SourceStats]| {
        present += 1;
        values.clear();
        values.extend_from_slice(per_cpu);
        if let Some(more) = pending.remove(&key) {
            values.extend(more);
        }
        each(fold_source(&key, &values, now));
    })
    .map_err(|err| Error::MapBatch {
        name: map_names::SOURCES,
        err,
    })?;
    for (key, values) in &pending {
        each(fold_source(key, values, now));
    }
    stats.sources_evicted = stats.sources_seen.saturating_sub(present);
    Ok(stats)
}

/// Sums per-CPU counters.
fn sum(values: &PerCpuValues<Counter>) -> Counter {
    values.iter().fold(Counter::default(), |acc, c| Counter {
        packets: acc.packets + c.packets,
        bytes: acc.bytes + c.bytes,
    })
}
