//! Names of the maps in the eBPF object; also the file names of their pins in the state dir.

/// `Array<Config>` with one entry: the policy shared by every attached interface.
pub const CONFIG: &str = "mcf_config";
/// `LpmTrie<IpKey, u8>`: the allow-list, every entry, and its journal. The key's first word
/// is the family, so one trie and one lookup serve IPv4 and IPv6 and the two can never
/// match each other's entries.
pub const ALLOW: &str = "mcf_allow";
/// `Array<u64>` of [`BLOCK_WORDS`](crate::BLOCK_WORDS) words: two bits per IPv4 /24, "wholly
/// allowed" and "has longer entries" (see [`BLOCK_WHOLE`](crate::BLOCK_WHOLE)). Derived
/// from the list by userspace; one lookup the verifier inlines.
pub const ALLOW_BLOCKS: &str = "mcf_allow_blocks";
/// `HashMap<StrideKey, StrideBits>`: the list's IPv6 entries, and its IPv4 entries longer
/// than /24, by stride (see [`StrideKey`](crate::StrideKey)). Derived from the list by
/// userspace; not preallocated.
pub const ALLOW_STRIDES: &str = "mcf_allow_strides";
/// `Array<u64>` of [`BLOOM_WORDS`](crate::BLOOM_WORDS) words: one bit per stride entry
/// ([`StrideKey::bloom_bit`](crate::StrideKey::bloom_bit)), clear where the stride table
/// holds no entry, so most strides a source is looked up in cost no hash map lookup.
pub const ALLOW_BLOOM: &str = "mcf_allow_bloom";
/// `Array<u64>` indexed by [`TABLE_SLOT_READY`](crate::TABLE_SLOT_READY) and
/// [`TABLE_SLOT_V6_STRIDES`](crate::TABLE_SLOT_V6_STRIDES): whether the two tables above
/// hold the list (the program uses the trie until they do) and which IPv6 strides are in use.
pub const ALLOW_TABLES: &str = "mcf_allow_tables";
/// Pins older builds made that this one no longer uses, removed with the state:
/// `mcf_allow_hosts`, the index of the allow-list's addresses that the lookup tables replaced
/// (see [`ALLOW_SLOT_RETIRED_INDEX`](crate::ALLOW_SLOT_RETIRED_INDEX)).
pub const RETIRED: [&str; 1] = ["mcf_allow_hosts"];
/// `Array<u64>` indexed by [`ALLOW_SLOT_SIZE`](crate::ALLOW_SLOT_SIZE): the allow-list's
/// size, written by userspace with every change.
pub const ALLOW_STATE: &str = "mcf_allow_state";
/// `PerCpuArray<Counter>` indexed by [`stats_slot`](crate::stats_slot): exact totals by reason.
pub const STATS: &str = "mcf_stats";
/// `LruPerCpuHashMap<IpKey, SourceStats>`: per-source counters of dropped packets.
pub const SOURCES: &str = "mcf_sources";
/// `HashMap<u32, IfaceInfo>` keyed by ifindex: what `attach` made (userspace bookkeeping).
pub const IFACES: &str = "mcf_ifaces";
/// `HashMap<u32, IfaceMeta>` keyed by ifindex: the build whose program runs there, and
/// whether `mcfilter run` manages the interface (userspace bookkeeping, kept apart from
/// `mcf_ifaces` so that states made before it keep their layout).
pub const IFACE_META: &str = "mcf_iface_meta";
/// `PerCpuArray<PendingSource>` (1 entry): each CPU's latest dropped source, whose counts
/// are added to `mcf_sources` only when another source comes along (write combining: a
/// flood from one source costs no hash lookup per packet). Readers add it in.
pub const PENDING: &str = "mcf_pending";
/// `PerCpuArray<Counter>` indexed like `mcf_stats`, but one per interface, so counters can
/// be told apart by interface: not pinned by name, attach pins it as `if_stats_<ifindex>`
/// (read by path, it needs no CAP_SYS_ADMIN), and a replacing program takes it over.
pub const IFACE_STATS: &str = "mcf_if_stats";
/// aya-log-ebpf's ring buffer of the program's events (its name, not ours). Every program
/// of a state shares one, pinned as `mcf_logs` at attach.
pub const LOGS: &str = "AYA_LOGS";
/// A chained program's next program (a one-slot program array; one per program).
pub const NEXT: &str = "mcf_next";
/// `PerCpuArray<PendingSource>` ([`RECENT_SLOTS`](crate::RECENT_SLOTS) entries): each CPU's sources seen once,
/// by a hash of the address. A source enters `mcf_sources` when it is seen again, so a
/// flood of one-off spoofed sources costs no LRU insert; a source whose slot another takes
/// first is counted as not recorded. Readers add the slots in.
pub const RECENT: &str = "mcf_recent";
/// `PerCpuArray<EventBudget>` (1 entry): each CPU's rate limit for logged events.
pub const EVENTS: &str = "mcf_events";
/// `LruHashMap<FragKey, u32>`: IPv6 datagrams whose first fragment was dropped, with when the
/// entry expires (jiffies in units of 2^`FRAG_UNIT_SHIFT`). (States made before
/// [`FRAGS4`] kept IPv4 datagrams here too; the program no longer looks for them here.)
pub const FRAGS: &str = "mcf_frags";
/// `LruHashMap<Frag4Key, u32>`: IPv4 datagrams whose first fragment was dropped, as
/// [`FRAGS`], under a 12-byte key.
pub const FRAGS4: &str = "mcf_frags4";
/// `Array<u32>` (1 entry): the fragment caches' epoch, moved on by the program whenever a
/// passed first fragment removes a datagram from `mcf_frags` or `mcf_frags4`. Each program
/// keeps, per CPU, the dropped datagram it met last in front of those caches (not pinned:
/// `mcf_frags_seen`, `mcf_frags4_seen`), valid only in the epoch it was made in.
pub const FRAG_EPOCH: &str = "mcf_frag_epoch";
/// `Array<u32>` indexed by [`frag_timeout_slot`](crate::frag_timeout_slot): how many
/// seconds `mcf_frags` remembers a dropped datagram, the kernel's reassembly timeouts
/// (`net.ipv4.ipfrag_time`, `net.ipv6.ip6frag_time`) as the last attach read them; 0 means
/// [`DEFAULT_FRAG_TIMEOUT_SECS`](crate::DEFAULT_FRAG_TIMEOUT_SECS).
pub const FRAG_TIMEOUTS: &str = "mcf_frag_timeouts";
