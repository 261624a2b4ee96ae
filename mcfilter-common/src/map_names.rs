//! Names of the maps in the eBPF object; also the file names of their pins in the state dir.

/// `Array<Config>` with one entry: the policy shared by every attached interface.
pub const CONFIG: &str = "mcf_config";
/// `LpmTrie<IpKey, u8>`: the allow-list, every entry, and its journal. The key's first word
/// is the family, so one trie and one lookup serve IPv4 and IPv6 and the two can never
/// match each other's entries.
pub const ALLOW: &str = "mcf_allow";
/// `HashMap<IpKey, u8>`: an index of the allow-list's single addresses (/32 and /128), kept
/// while the list is large ([`ALLOW_SLOT_INDEXED`](crate::ALLOW_SLOT_INDEXED)): one hash
/// lookup instead of a walk down a trie as deep as the list is long. Never holds an address
/// the trie does not.
pub const ALLOW_HOSTS: &str = "mcf_allow_hosts";
/// `Array<u64>` indexed by [`ALLOW_SLOT_SIZE`](crate::ALLOW_SLOT_SIZE) and
/// [`ALLOW_SLOT_INDEXED`](crate::ALLOW_SLOT_INDEXED): the allow-list's state, written by
/// userspace with every change.
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
/// `LruHashMap<FragKey, u32>`: datagrams whose first fragment was dropped, with the time
/// (the coarse monotonic clock in units of 2^30 ns) it was dropped at.
pub const FRAGS: &str = "mcf_frags";
/// `Array<u32>` indexed by [`frag_timeout_slot`](crate::frag_timeout_slot): how many
/// seconds `mcf_frags` remembers a dropped datagram, the kernel's reassembly timeouts
/// (`net.ipv4.ipfrag_time`, `net.ipv6.ip6frag_time`) as the last attach read them; 0 means
/// [`DEFAULT_FRAG_TIMEOUT_SECS`](crate::DEFAULT_FRAG_TIMEOUT_SECS).
pub const FRAG_TIMEOUTS: &str = "mcf_frag_timeouts";
