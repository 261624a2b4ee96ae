//! Every map of the program, in one place. Names match `mcfilter_common::map_names`; all maps
//! are pinned by name under the state dir so the CLI holds no state of its own.
//!
//! Kernel facts: LPM tries need Linux 4.11 (and BPF_F_NO_PREALLOC: entries are allocated on
//! insert, so a large capacity costs nothing until used); per-CPU LRU hashes 4.10. Lookups in the
//! one-entry config array are inlined by the verifier into a pointer computation.

use crate::{counters::ClockRead, frag::Seen};
use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray, ProgramArray},
};
use mcfilter_common::{
    ALLOW_STATE_SLOTS, BLOCK_WORDS, BLOOM_WORDS, Config, Counter, DEFAULT_ALLOW_CAPACITY,
    DEFAULT_SOURCES_CAPACITY, EventBudget, FRAG_CACHE_CAPACITY, FRAG_TIMEOUT_SLOTS, Frag4Key,
    FragKey, IfaceInfo, IfaceMeta, IpKey, MAX_IFACES, PendingSource, RECENT_SLOTS, STATS_SLOTS,
    SourceStats, StrideBits, StrideKey, TABLE_SLOTS,
};

/// The policy: protected ports and dry-run (one entry).
#[map(name = "mcf_config")]
pub(crate) static CONFIG: Array<Config> = Array::pinned(1, 0);

/// The program a chained filter hands every packet it passes to (`attach --then`): slot 0. Not
/// pinned by name: one per loaded program, so one per interface (attach pins it as
/// `next_<ifindex>`). Used only where the loader set `CHAINED`.
#[map(name = "mcf_next")]
pub(crate) static NEXT: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// The allow-list: family-tagged IPv4 and IPv6 networks (see `IpKey`), and the journal of
/// its changes. Looked up only while the tables below are not whole.
#[map(name = "mcf_allow")]
pub(crate) static ALLOW: LpmTrie<IpKey, u8> = LpmTrie::pinned(DEFAULT_ALLOW_CAPACITY, 0);

/// The allow-list's IPv4 /24 bitmap (see `mcfilter_common::table`): preallocated, 4 MiB.
#[map(name = "mcf_allow_blocks")]
pub(crate) static ALLOW_BLOCKS: Array<u64> = Array::pinned(BLOCK_WORDS, 0);

/// The allow-list's entries by stride (IPv6, and IPv4 longer than /24). Not preallocated: like
/// the trie, a large capacity costs nothing but its buckets until used.
#[map(name = "mcf_allow_strides")]
pub(crate) static ALLOW_STRIDES: HashMap<StrideKey, StrideBits> =
    HashMap::pinned(DEFAULT_ALLOW_CAPACITY, BPF_F_NO_PREALLOC);

/// The stride table's Bloom filter: a bit per entry (see `mcfilter_common::table`), 1 MiB.
#[map(name = "mcf_allow_bloom")]
pub(crate) static ALLOW_BLOOM: Array<u64> = Array::pinned(BLOOM_WORDS, 0);

/// Whether the tables above are whole, and the IPv6 strides in use.
#[map(name = "mcf_allow_tables")]
pub(crate) static ALLOW_TABLES: Array<u64> = Array::pinned(TABLE_SLOTS, 0);

/// Exact totals by reason, per CPU (see `mcfilter_common::stats_slot`).
#[map(name = "mcf_stats")]
pub(crate) static STATS: PerCpuArray<Counter> = PerCpuArray::pinned(STATS_SLOTS, 0);

/// This program's own counters, like `STATS` but not pinned: one per loaded program, so one
/// per interface.
#[map(name = "mcf_if_stats")]
pub(crate) static IFACE_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(STATS_SLOTS, 0);

/// Per-source counters of dropped packets. LRU: stays bounded under floods of spoofed sources.
#[map(name = "mcf_sources")]
pub(crate) static SOURCES: LruPerCpuHashMap<IpKey, SourceStats> =
    LruPerCpuHashMap::pinned(DEFAULT_SOURCES_CAPACITY, 0);

/// Each CPU's latest dropped source, not yet added to `SOURCES` (write combining).
#[map(name = "mcf_pending")]
pub(crate) static PENDING: PerCpuArray<PendingSource> = PerCpuArray::pinned(1, 0);

/// Each CPU's sources seen once (admission to `SOURCES` on the second sighting).
#[map(name = "mcf_recent")]
pub(crate) static RECENT: PerCpuArray<PendingSource> = PerCpuArray::pinned(RECENT_SLOTS, 0);

/// Each CPU's latest read of the coarse clock, by jiffy (see `counters::now`). Not pinned: a
/// cache each program keeps for itself.
#[map(name = "mcf_clock")]
pub(crate) static CLOCK: PerCpuArray<ClockRead> = PerCpuArray::with_max_entries(1, 0);

/// Each CPU's budget of logged events (rate limit).
#[map(name = "mcf_events")]
pub(crate) static EVENTS: PerCpuArray<EventBudget> = PerCpuArray::pinned(1, 0);

/// The allow-list's size (see `map_names::ALLOW_STATE`).
#[map(name = "mcf_allow_state")]
pub(crate) static ALLOW_STATE: Array<u64> = Array::pinned(ALLOW_STATE_SLOTS, 0);

/// Interfaces `attach` has made links for. Written and read by userspace only; it lives in the
/// object so that it is created and pinned with the others.
#[map(name = "mcf_ifaces")]
pub(crate) static IFACES: HashMap<u32, IfaceInfo> = HashMap::pinned(MAX_IFACES, 0);

/// Which build attached each interface, and whether the service manages it. Userspace only,
/// like `IFACES`.
#[map(name = "mcf_iface_meta")]
pub(crate) static IFACE_META: HashMap<u32, IfaceMeta> = HashMap::pinned(MAX_IFACES, 0);

/// IPv6 datagrams whose first fragment was dropped (value: when the entry expires, see
/// `frag`). Shared by all CPUs, since the fragments of one datagram may arrive on different
/// ones; LRU, so it stays bounded.
#[map(name = "mcf_frags")]
pub(crate) static FRAGS: LruHashMap<FragKey, u32> = LruHashMap::pinned(FRAG_CACHE_CAPACITY, 0);

/// IPv4 datagrams whose first fragment was dropped, like `FRAGS`, under a 12-byte key.
#[map(name = "mcf_frags4")]
pub(crate) static FRAGS4: LruHashMap<Frag4Key, u32> = LruHashMap::pinned(FRAG_CACHE_CAPACITY, 0);

/// Each CPU's latest dropped IPv6 datagram, in front of `FRAGS` (see `frag`). Not pinned: a
/// cache each program keeps for itself.
#[map(name = "mcf_frags_seen")]
pub(crate) static FRAGS_SEEN: PerCpuArray<Seen<FragKey>> = PerCpuArray::with_max_entries(1, 0);

/// Each CPU's latest dropped IPv4 datagram, in front of `FRAGS4`.
#[map(name = "mcf_frags4_seen")]
pub(crate) static FRAGS4_SEEN: PerCpuArray<Seen<Frag4Key>> = PerCpuArray::with_max_entries(1, 0);

/// The fragment caches' epoch: moved on whenever a datagram leaves `FRAGS` or `FRAGS4` because
/// a first fragment with its key passed, which voids every CPU's `FRAGS_SEEN` and `FRAGS4_SEEN`
/// entry made before. Shared by every program of the state, like the caches.
#[map(name = "mcf_frag_epoch")]
pub(crate) static FRAG_EPOCH: Array<u32> = Array::pinned(1, 0);

/// How long `FRAGS` remembers a datagram, per family, in seconds (the kernel's reassembly
/// timeouts, written by attach).
#[map(name = "mcf_frag_timeouts")]
pub(crate) static FRAG_TIMEOUTS: Array<u32> = Array::pinned(FRAG_TIMEOUT_SLOTS, 0);
