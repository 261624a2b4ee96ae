//! Kernel memory: what the state's maps cost, as the kernel accounts it (the `memlock` line of
//! each map's fdinfo, which `bpftool map show` prints), and the formula behind it, which picks
//! the per-source map's default capacity so an attach stays small on hosts with many CPUs.
//!
//! Per-CPU maps hold a value for every *possible* CPU, so their cost grows with the host. The
//! formulas follow Linux's `htab_map_mem_usage` and `array_map_mem_usage` (6.x), where `r8(n)`
//! is `n` rounded up to 8 and `pow2(n)` up to a power of two:
//!
//! | map | kind | bytes |
//! | --- | --- | --- |
//! | hash, preallocated (LRU included) | `mcf_frags`, `mcf_frags4`, `mcf_ifaces`, `mcf_iface_meta` | `16 pow2(n) + n (48 + r8(key) + r8(value))` |
//! | per-CPU hash, preallocated | `mcf_sources` | `16 pow2(n) + n (56 + r8(key) + r8(value) cpus)` |
//! | hash, not preallocated | `mcf_allow_strides` | `16 pow2(n) + used (56 + r8(key) + r8(value))` |
//! | array | `mcf_allow_blocks` (4 MiB), `mcf_allow_bloom` (1 MiB), `mcf_config`, `mcf_allow_state`, `mcf_allow_tables`, `mcf_frag_timeouts` | `n r8(value)` |
//! | per-CPU array | `mcf_stats`, `if_stats_*`, `mcf_recent`, `mcf_pending`, `mcf_events` | `n (8 + r8(value) cpus)` |
//!
//! plus, for every hash, its lock counters (`32 cpus`), and about 1 KiB of
//! header per map; the LPM trie costs nothing until entries are added.

use std::{
    collections::BTreeMap,
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::maps::MapData;
use mcfilter_common::{DEFAULT_SOURCES_CAPACITY, IpKey, PendingSource, RECENT_SLOTS, SourceStats};

use crate::{Error, pin::StateDir};

/// The per-source map's share of an attach's kernel memory when its capacity is not given:
/// as many entries as fit, up to [`DEFAULT_SOURCES_CAPACITY`], and at least [`MIN_SOURCES`].
pub const SOURCES_BUDGET: u64 = 24 << 20;
/// The smallest default per-source capacity, however many CPUs.
pub const MIN_SOURCES: u32 = 4096;

/// A hash bucket (`struct bucket`).
const BUCKET: u64 = 16;
/// A hash element's header (`struct htab_elem`).
const HTAB_ELEM: u64 = 48;
/// The free-list node a hash that is not preallocated keeps with each element
/// (`LLIST_NODE_SZ`).
const LLIST_NODE: u64 = 8;
/// A pointer: a per-CPU hash element's or array entry's pointer to its per-CPU values.
const POINTER: u64 = 8;
/// Per possible CPU, every hash's `map_locked` counters (`HASHTAB_MAP_LOCK_COUNT` ints): 2 KiB
/// on 64 CPUs, more than the rest of the map's header.
const MAP_LOCKED: u64 = 8 * 4;

/// The possible CPUs (`/sys/devices/system/cpu/possible`): the count per-CPU maps are
/// allocated for, which can exceed the online CPUs. 1 if it cannot be read.
pub fn possible_cpus() -> u32 {
    aya::util::nr_cpus().map_or(1, |cpus| u32::try_from(cpus).unwrap_or(u32::MAX))
}

/// Bytes of a preallocated per-CPU hash of `entries` (the per-source map).
pub fn percpu_hash_bytes(entries: u32, key: usize, value: usize, cpus: u32) -> u64 {
    let entries = u64::from(entries);
    BUCKET * entries.next_power_of_two()
        + MAP_LOCKED * u64::from(cpus)
        + entries * percpu_hash_element_bytes(key, value, cpus)
}

/// Bytes of a preallocated hash of `entries` shared by all CPUs (LRU included: the fragment
/// caches).
pub fn hash_bytes(entries: u32, key: usize, value: usize, cpus: u32) -> u64 {
    let entries = u64::from(entries);
    BUCKET * entries.next_power_of_two()
        + MAP_LOCKED * u64::from(cpus)
        + entries * (HTAB_ELEM + r8(key) + r8(value))
}

/// Bytes of one element of a per-CPU hash, its values included.
fn percpu_hash_element_bytes(key: usize, value: usize, cpus: u32) -> u64 {
    HTAB_ELEM + r8(key) + POINTER + r8(value) * u64::from(cpus)
}

/// Bytes of a hash that is not preallocated (the allow-list's stride table), of capacity
/// `entries`, holding `used` entries: its buckets whatever it holds, then each element with
/// the kernel's free-list node.
pub fn hash_bytes_not_preallocated(
    entries: u32,
    used: u64,
    key: usize,
    value: usize,
    cpus: u32,
) -> u64 {
    BUCKET * u64::from(entries).next_power_of_two()
        + MAP_LOCKED * u64::from(cpus)
        + used * (HTAB_ELEM + LLIST_NODE + r8(key) + r8(value))
}

/// Bytes of an array of `entries` (the allow-list's /24 bitmap: 4 MiB).
pub fn array_bytes(entries: u32, value: usize) -> u64 {
    u64::from(entries) * r8(value)
}

/// Bytes of a per-CPU array of `entries`.
pub fn percpu_array_bytes(entries: u32, value: usize, cpus: u32) -> u64 {
    u64::from(entries) * (POINTER + r8(value) * u64::from(cpus))
}

/// The per-source map's capacity when none is given: what [`SOURCES_BUDGET`] holds with
/// `cpus` possible CPUs, within [`MIN_SOURCES`] and [`DEFAULT_SOURCES_CAPACITY`].
pub fn default_sources_capacity(cpus: u32) -> u32 {
    // An entry and, at worst, two buckets (the bucket count is the capacity rounded up to a
    // power of two).
    let per_entry =
        percpu_hash_element_bytes(size_of::<IpKey>(), size_of::<SourceStats>(), cpus) + 2 * BUCKET;
    let fits = SOURCES_BUDGET / per_entry;
    u32::try_from(fits)
        .unwrap_or(u32::MAX)
        .clamp(MIN_SOURCES, DEFAULT_SOURCES_CAPACITY)
}

/// The default per-source capacity on this host.
pub fn default_sources_capacity_here() -> u32 {
    default_sources_capacity(possible_cpus())
}

/// The kernel memory of the per-CPU maps whose size the CPU count decides, at their default
/// capacities: the per-source map and the table of recent sources. What an attach costs on a
/// host with `cpus` CPUs beyond the maps whose size does not depend on it.
pub fn per_cpu_bytes_at_defaults(cpus: u32) -> u64 {
    percpu_hash_bytes(
        default_sources_capacity(cpus),
        size_of::<IpKey>(),
        size_of::<SourceStats>(),
        cpus,
    ) + percpu_array_bytes(RECENT_SLOTS, size_of::<PendingSource>(), cpus)
}

fn r8(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(8) * 8
}

/// What the state's maps cost the kernel now.
#[derive(Debug, Default, serde::Serialize)]
pub struct KernelMemory {
    /// All of it, in bytes.
    pub total_bytes: u64,
    /// By pin name: the shared maps, the events ring, each interface's own counters and, when
    /// chained, its next program's array.
    pub maps: BTreeMap<String, u64>,
    /// The possible CPUs, which per-CPU maps are sized by.
    pub possible_cpus: u32,
}

/// Reads the kernel's account of every map pinned in `state` (`ifindexes`: the attached
/// interfaces).
pub fn kernel_memory(state: &StateDir, ifindexes: &[u32]) -> Result<KernelMemory, Error> {
    let mut pins: Vec<std::path::PathBuf> = crate::pin::map_pins()
        .iter()
        .map(|name| state.map(name))
        .collect();
    pins.push(state.log_ring());
    for &ifindex in ifindexes {
        pins.push(state.iface_stats(ifindex));
        pins.push(state.next(ifindex));
    }
    let mut memory = KernelMemory {
        possible_cpus: possible_cpus(),
        ..KernelMemory::default()
    };
    for pin in pins.into_iter().filter(|pin| pin.exists()) {
        let name = pin
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let failed =
            |err: String| Error::Io(std::io::Error::other(format!("{}: {err}", pin.display())));
        let map = MapData::from_pin(&pin).map_err(|err| failed(err.to_string()))?;
        let bytes = memlock(&map).map_err(|err| failed(err.to_string()))?;
        memory.total_bytes += bytes;
        memory.maps.insert(name, bytes);
    }
    Ok(memory)
}

/// The `memlock` line of a map's fdinfo: the kernel's account of its memory.
fn memlock(map: &MapData) -> std::io::Result<u64> {
    let fd = map.fd().as_fd().as_raw_fd();
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
    info.lines()
        .find_map(|line| line.strip_prefix("memlock:"))
        .and_then(|value| value.trim().parse().ok())
        .ok_or_else(|| std::io::Error::other("no memlock line in the map's fdinfo"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a 64-CPU host the maps that grow with the CPU count stay within what leaves an attach
    /// under 64 MiB with the allow-list's lookup tables and the rest.
    #[test]
    fn an_attach_on_64_cpus_stays_under_64_mib() {
        // The stride table's buckets for a 1M-entry list (16 MiB), the /24 bitmap (4 MiB), the
        // Bloom filter (1 MiB), then the rest (1.8 MiB measured, the fragment caches most of it;
        // 2 allowed).
        let buckets =
            BUCKET * u64::from(mcfilter_common::DEFAULT_ALLOW_CAPACITY).next_power_of_two();
        let blocks = u64::from(mcfilter_common::BLOCK_WORDS) * 8;
        let bloom = u64::from(mcfilter_common::BLOOM_WORDS) * 8;
        let fixed: u64 = buckets + blocks + bloom + (2 << 20);
        let total = per_cpu_bytes_at_defaults(64) + fixed;
        assert!(total < 64 << 20, "{} MiB", total >> 20);
        // Small hosts keep the full per-source capacity.
        assert_eq!(default_sources_capacity(2), DEFAULT_SOURCES_CAPACITY);
        assert_eq!(default_sources_capacity(4096), MIN_SOURCES);
    }

    /// The formula reproduces the kernel's account measured on Linux 6.18 with 2 CPUs
    /// (`bpftool map show`: 11,535,296 B for 65,536 sources, 557,368 B for the recent table)
    /// and on Debian's 6.12 with 64 possible CPUs (25,128,608 B for the default 9,418
    /// sources), to the map's header.
    #[test]
    fn the_formula_matches_the_kernels_account() {
        let sources = percpu_hash_bytes(65536, size_of::<IpKey>(), size_of::<SourceStats>(), 2);
        assert!(
            (11_535_296 - 2048..=11_535_296).contains(&sources),
            "{sources}"
        );
        assert_eq!(default_sources_capacity(64), 9418);
        let sources = percpu_hash_bytes(9418, size_of::<IpKey>(), size_of::<SourceStats>(), 64);
        assert!(
            (25_128_608 - 2048..=25_128_608).contains(&sources),
            "{sources}"
        );
        let recent = percpu_array_bytes(RECENT_SLOTS, size_of::<PendingSource>(), 2);
        assert!((557_368 - 2048..=557_368).contains(&recent), "{recent}");
    }
}
