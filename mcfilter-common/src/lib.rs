//! The ABI shared by the mcfilter XDP program and its userspace: map names, the `#[repr(C)]` keys
//! and values stored in those maps, and the reason codes every verdict is counted under.
//!
//! Everything here is plain old data: `#[repr(C)]`, `Copy`, no `bool` or `Option`, explicit `_pad`
//! fields and a compile-time size check, so the kernel and userspace agree on every byte.
//! Reason codes are append-only: a code, once released, keeps its number and meaning.
#![cfg_attr(not(test), no_std)]

/// Names of the maps in the eBPF object; also the file names of their pins in the state dir.
pub mod map_names {
    /// `Array<Config>` with one entry: the policy shared by every attached interface.
    pub const CONFIG: &str = "mcf_config";
    /// `LpmTrie<IpKey, u8>`: the allow-list, every entry, and its journal. The key's first word
    /// is the family, so one trie and one lookup serve IPv4 and IPv6 and the two can never
    /// match each other's entries.
    pub const ALLOW: &str = "mcf_allow";
    /// `HashMap<IpKey, u8>`: an index of the allow-list's single addresses (/32 and /128), kept
    /// while the list is large ([`ALLOW_SLOT_INDEXED`](super::ALLOW_SLOT_INDEXED)): one hash
    /// lookup instead of a walk down a trie as deep as the list is long. Never holds an address
    /// the trie does not.
    pub const ALLOW_HOSTS: &str = "mcf_allow_hosts";
    /// `Array<u64>` indexed by [`ALLOW_SLOT_SIZE`](super::ALLOW_SLOT_SIZE) and
    /// [`ALLOW_SLOT_INDEXED`](super::ALLOW_SLOT_INDEXED): the allow-list's state, written by
    /// userspace with every change.
    pub const ALLOW_STATE: &str = "mcf_allow_state";
    /// `PerCpuArray<Counter>` indexed by [`stats_slot`]: exact totals by reason.
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
    /// `PerCpuArray<PendingSource>` ([`RECENT_SLOTS`] entries): each CPU's sources seen once,
    /// by a hash of the address. A source enters `mcf_sources` when it is seen again, so a
    /// flood of one-off spoofed sources costs no LRU insert; a source whose slot another takes
    /// first is counted as not recorded. Readers add the slots in.
    pub const RECENT: &str = "mcf_recent";
    /// `PerCpuArray<EventBudget>` (1 entry): each CPU's rate limit for logged events.
    pub const EVENTS: &str = "mcf_events";
    /// `LruHashMap<FragKey, u32>`: datagrams whose first fragment was dropped, with the time
    /// (the coarse monotonic clock in units of 2^30 ns) it was dropped at.
    pub const FRAGS: &str = "mcf_frags";
    /// `Array<u32>` indexed by [`frag_timeout_slot`](super::frag_timeout_slot): how many
    /// seconds `mcf_frags` remembers a dropped datagram, the kernel's reassembly timeouts
    /// (`net.ipv4.ipfrag_time`, `net.ipv6.ip6frag_time`) as the last attach read them; 0 means
    /// [`DEFAULT_FRAG_TIMEOUT_SECS`](super::DEFAULT_FRAG_TIMEOUT_SECS).
    pub const FRAG_TIMEOUTS: &str = "mcf_frag_timeouts";
}

/// Entries of `mcf_frag_timeouts`: one per family.
pub const FRAG_TIMEOUT_SLOTS: u32 = 2;

/// Linux's default reassembly timeout (`ipfrag_time`, `ip6frag_time`), in seconds.
pub const DEFAULT_FRAG_TIMEOUT_SECS: u32 = 30;

/// The `mcf_frag_timeouts` slot of a [`FragKey::family`]: 0 for IPv4, 1 for IPv6.
#[inline(always)]
pub const fn frag_timeout_slot(family: u8) -> u32 {
    (family == FAMILY_V6) as u32
}

/// The global the loader sets to the kernel's jiffies per second ([`FragClock::hz`]): read-only
/// data, read only when a fragment-cache entry is written.
pub const FRAG_HZ_GLOBAL: &str = "FRAG_HZ";

/// The fragment cache keeps time in units of `2^FRAG_UNIT_SHIFT` jiffies: 64 ms at 1000 HZ,
/// 256 ms at Debian's 250, 640 ms at 100. An entry lives at most its timeout and less than a
/// unit less; its 32-bit expiry wraps after 2^31 units (4.4 years at 1000 HZ) without a
/// fragment of its key. A constant, so the program's comparison is a load and a shift.
pub const FRAG_UNIT_SHIFT: u32 = 6;

/// How this kernel counts jiffies, for the fragment cache, which reads time as jiffies: one
/// load of a kernel variable, where the nanosecond clocks cost a helper call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragClock {
    /// Jiffies per second: the kernel's `CONFIG_HZ`.
    pub hz: u32,
}

impl FragClock {
    /// Debian's `CONFIG_HZ`: what a program loaded without the global set assumes.
    pub const DEFAULT: Self = Self { hz: 250 };

    /// The clock of a kernel whose coarse clocks tick every `tick_nanos` ns (the resolution
    /// `clock_getres(CLOCK_MONOTONIC_COARSE)` reports: Linux's TICK_NSEC, `1e9 / HZ` rounded).
    pub const fn from_tick_nanos(tick_nanos: u64) -> Self {
        let tick = if tick_nanos == 0 { 1 } else { tick_nanos };
        Self {
            hz: ((1_000_000_000 + tick / 2) / tick) as u32,
        }
    }
}

/// The global the loader sets to 1 in a program that chains to the next one (`attach --then`):
/// read-only data, so the verifier drops the tail call from programs that do not chain.
pub const CHAINED_GLOBAL: &str = "CHAINED";

/// The XDP program for Ethernet-framed interfaces: its function name in the object.
pub const PROGRAM_NAME: &str = "mcfilter";
/// The XDP program for interfaces whose packets start at the IP header (link type `none`: TUN,
/// WireGuard): the same verdict path, entered at the IP header.
pub const PROGRAM_NAME_IP: &str = "mcfilter_ip";

/// `mcf_allow_state` slot: the allow-list's size plus one (0: not known yet), so that `status`
/// and metrics need not walk the trie.
pub const ALLOW_SLOT_SIZE: u32 = 0;
/// `mcf_allow_state` slot: non-zero while the list's addresses are indexed in
/// `mcf_allow_hosts` (complete once any interrupted change is settled), so the program looks
/// there first.
pub const ALLOW_SLOT_INDEXED: u32 = 1;
/// Slots of `mcf_allow_state`.
pub const ALLOW_STATE_SLOTS: u32 = 2;

/// Default capacity of the allow-list (entries; allocated on insert, not up front).
pub const DEFAULT_ALLOW_CAPACITY: u32 = 1 << 20;
/// Default capacity of the per-source LRU map (entries; preallocated per CPU).
pub const DEFAULT_SOURCES_CAPACITY: u32 = 1 << 16;
/// Capacity of the fragment verdict cache (datagrams whose first fragment was dropped).
pub const FRAG_CACHE_CAPACITY: u32 = 8192;
/// Capacity of the interface bookkeeping map.
pub const MAX_IFACES: u32 = 256;

/// Number of 64-bit words in the protected-port bitmap (one bit per port).
pub const PORT_WORDS: usize = 65536 / 64;

/// The policy, one entry of the `mcf_config` array.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Config {
    /// Non-zero: count what would be dropped but pass it.
    pub dry_run: u32,
    /// Non-zero: drop UDP whose *source* port is protected (amplified replies aimed at this
    /// host: reflection-victim protection).
    pub drop_reflected: u32,
    /// Protected destination ports, one bit each: port `p` is bit `p % 64` of word `p / 64`.
    pub ports: [u64; PORT_WORDS],
}

impl Config {
    /// A policy that protects no port and enforces.
    pub const fn empty() -> Self {
        Config {
            dry_run: 0,
            drop_reflected: 0,
            ports: [0; PORT_WORDS],
        }
    }

    /// Whether `port` (host byte order) is protected.
    #[inline(always)]
    pub fn is_protected(&self, port: u16) -> bool {
        // `port / 64` is at most 1023 < PORT_WORDS, so the index is always in bounds.
        let word = self.ports[usize::from(port >> 6) & (PORT_WORDS - 1)];
        word & (1u64 << (port & 63)) != 0
    }

    /// Adds `port` (host byte order) to the protected set.
    pub fn protect(&mut self, port: u16) {
        self.ports[usize::from(port >> 6)] |= 1u64 << (port & 63);
    }

    /// The protected ports in ascending order.
    pub fn protected_ports(&self) -> impl Iterator<Item = u16> + '_ {
        (0..=u16::MAX).filter(|&p| self.is_protected(p))
    }
}

/// Generates [`Reason`], its list and its two views (name, verdict) from one table, so a reason
/// is added in one place: `Variant = code, "name", drop|pass;` with its doc comment.
macro_rules! reasons {
    ($( $(#[$doc:meta])* $variant:ident = $code:literal, $name:literal, $verdict:ident; )*) => {
        /// Why a packet got its verdict. The value is the index into the stats array; append
        /// only.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Reason {
            $( $(#[$doc])* $variant = $code, )*
        }

        impl Reason {
            /// Every reason, in code order.
            pub const ALL: [Reason; [$($code),*].len()] = [$(Reason::$variant),*];

            /// Whether the policy drops packets with this reason (in dry-run they are passed).
            pub const fn is_drop(self) -> bool {
                reasons!(@is_drop self [] $($variant $verdict)*)
            }

            /// The stable snake_case name used in `stats` output and metrics.
            pub const fn name(self) -> &'static str {
                match self {
                    $( Reason::$variant => $name, )*
                }
            }
        }
    };
    // `is_drop`: a `matches!` of the variants marked `drop`, collected one by one.
    (@is_drop $self:ident [$($drop:ident)*]) => { matches!($self, $(Reason::$drop)|*) };
    (@is_drop $self:ident [$($drop:ident)*] $variant:ident drop $($rest:tt)*) => {
        reasons!(@is_drop $self [$($drop)* $variant] $($rest)*)
    };
    (@is_drop $self:ident [$($drop:ident)*] $variant:ident pass $($rest:tt)*) => {
        reasons!(@is_drop $self [$($drop)*] $($rest)*)
    };
}

reasons! {
    /// Not IPv4 or IPv6 (ARP, LLDP, ...): passed untouched.
    NotIp = 0, "not_ip", pass;
    /// IP, but not TCP or UDP to a protected port (ICMP, neighbour discovery, other ports).
    NotProtected = 1, "not_protected", pass;
    /// TCP to a protected port from an allow-listed source.
    TcpAllowed = 2, "tcp_allowed", pass;
    /// UDP to a protected port: dropped whatever the source.
    UdpPort = 3, "udp_port", drop;
    /// TCP to a protected port from a source outside the allow-list.
    TcpNotAllowed = 4, "tcp_not_allowed", drop;
    /// A header field is invalid (IP version, IPv4 IHL below 5, total length shorter than the
    /// header): dropped.
    Malformed = 5, "malformed", drop;
    /// IPv4 or IPv6 fragment after the first, of a datagram not known to be dropped: it carries
    /// no ports, passed.
    LaterFragment = 6, "later_fragment", pass;
    /// IPv6 extension-header chain longer than the program walks: dropped (fail closed).
    ExtHeaderLimit = 7, "ext_header_limit", drop;
    /// More stacked VLAN tags than the program looks through: dropped (fail closed).
    VlanLimit = 8, "vlan_limit", drop;
    /// A header the program must read does not fit in the frame, or in the IP datagram's own
    /// length (which must fit in the frame): dropped.
    Truncated = 9, "truncated", drop;
    /// A first fragment too short to hold the TCP/UDP ports: dropped (and its later fragments).
    ShortFirstFragment = 10, "short_first_fragment", drop;
    /// A later fragment of a datagram whose first fragment was dropped: dropped.
    FragmentOfDropped = 11, "fragment_of_dropped", drop;
    /// An IPv6 extension header the program cannot look past (Mobility, HIP, Shim6,
    /// experimental): dropped (fail closed).
    ExtHeaderUnknown = 12, "ext_header_unknown", drop;
    /// UDP from a protected source port (an amplified reply aimed at this host), with
    /// reflection-victim protection on: dropped.
    Reflected = 13, "reflected", drop;
}

impl Reason {
    /// The reason with code `code`, if there is one.
    pub fn from_code(code: u32) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| *r as u32 == code)
    }
}

/// Room for reason codes in the stats array (the enum may grow up to this).
pub const MAX_REASONS: u32 = 32;

/// Extra slot in the stats array: per-source counter inserts that failed (map full or busy).
pub const SLOT_SOURCE_INSERT_FAILED: u32 = 2 * MAX_REASONS;
/// Extra slot in the stats array: fragment verdict cache inserts that failed.
pub const SLOT_FRAG_INSERT_FAILED: u32 = 2 * MAX_REASONS + 1;

/// Extra slot in the stats array: sources inserted into the per-source map (so readers know how
/// many the LRU evicted: inserted minus present).
pub const SLOT_SOURCE_INSERTED: u32 = 2 * MAX_REASONS + 2;

/// Extra slot in the stats array: events (for the service's log) over the per-CPU budget.
pub const SLOT_EVENTS_SUPPRESSED: u32 = 2 * MAX_REASONS + 3;

/// Number of entries in the stats array.
pub const STATS_SLOTS: u32 = 2 * MAX_REASONS + 4;

/// Slots of the per-CPU table of sources seen once (a power of two).
pub const RECENT_SLOTS: u32 = 4096;

/// The slot of `key` in the table of sources seen once: a multiplicative hash of its words.
#[inline(always)]
pub fn recent_slot(key: &IpKey) -> u32 {
    let [a, b, c, d] = key.addr;
    let mixed = key.family ^ a ^ b.rotate_left(7) ^ c.rotate_left(13) ^ d.rotate_left(19);
    mixed.wrapping_mul(0x9e37_79b1) >> (32 - RECENT_SLOTS.trailing_zeros())
}

/// Events each CPU may log per second (aya-log); the rest are counted, not logged.
pub const EVENTS_PER_SECOND: u64 = 10;

/// One CPU's event budget (`map_names::EVENTS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventBudget {
    /// `bpf_ktime_get_coarse_ns` when the current one-second window began.
    pub window_start_ns: u64,
    /// Events logged in the window.
    pub logged: u64,
}

/// Index into the stats array for a verdict: reasons are counted separately in enforce and
/// dry-run mode, so "dropped" is exact even when dry-run is switched while traffic flows.
#[inline(always)]
pub const fn stats_slot(reason: Reason, dry_run: bool) -> u32 {
    reason as u32 + if dry_run { MAX_REASONS } else { 0 }
}

/// A packet and byte counter (one per CPU in per-CPU maps).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// [`IpKey::family`] of an IPv4 address.
pub const FAMILY_V4: u8 = 4;
/// [`IpKey::family`] of an IPv6 address.
pub const FAMILY_V6: u8 = 6;

/// An address tagged with its family: the data of allow-list trie keys (whose prefix length
/// counts the family word: [`IpKey::FAMILY_BITS`] + the CIDR's prefix) and the key of the
/// per-source map. Made of `u32` words: 20 bytes, 4-aligned, so the kernel hashes it with jhash2
/// and the compiler copies it in words (byte arrays of odd sizes become memcpy loops in BPF).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpKey {
    /// [`FAMILY_V4`] or [`FAMILY_V6`] (native byte order).
    pub family: u32,
    /// The address's bytes in network order, four to a word (`u32::from_ne_bytes`); IPv4 uses
    /// the first word, the rest are zero.
    pub addr: [u32; 4],
}

/// Four address bytes as the word that holds them in memory order.
#[inline(always)]
pub const fn word(b: [u8; 4]) -> u32 {
    u32::from_ne_bytes(b)
}

/// 16 address bytes as four memory-order words.
#[inline(always)]
pub const fn words(b: [u8; 16]) -> [u32; 4] {
    [
        word([b[0], b[1], b[2], b[3]]),
        word([b[4], b[5], b[6], b[7]]),
        word([b[8], b[9], b[10], b[11]]),
        word([b[12], b[13], b[14], b[15]]),
    ]
}

impl IpKey {
    /// Bits of the family word in front of the address in a trie key.
    pub const FAMILY_BITS: u32 = 32;
    /// Trie prefix length that matches a whole key (family word + 128 address bits).
    pub const FULL_PREFIX: u32 = Self::FAMILY_BITS + 128;

    #[inline(always)]
    pub const fn v4(addr: [u8; 4]) -> Self {
        IpKey {
            family: FAMILY_V4 as u32,
            addr: [word(addr), 0, 0, 0],
        }
    }

    #[inline(always)]
    pub const fn v6(addr: [u8; 16]) -> Self {
        IpKey {
            family: FAMILY_V6 as u32,
            addr: words(addr),
        }
    }

    /// The address bytes in network order.
    pub fn addr_bytes(&self) -> [u8; 16] {
        let mut bytes = [0u8; 16];
        for (chunk, w) in bytes.chunks_exact_mut(4).zip(self.addr) {
            chunk.copy_from_slice(&w.to_ne_bytes());
        }
        bytes
    }
}

/// Value of the per-source map (one per CPU).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct SourceStats {
    pub packets: u64,
    pub bytes: u64,
    /// `bpf_ktime_get_coarse_ns()` (CLOCK_MONOTONIC_COARSE) of the last packet.
    pub last_seen_ns: u64,
    /// Of `packets`, those only counted (dry-run): what enforcing would have dropped.
    pub dry_run_packets: u64,
    /// [`Reason`] code of the last packet.
    pub last_reason: u32,
    /// Non-zero when the last packet was only counted (dry-run), not dropped.
    pub last_dry_run: u32,
}

/// Key of the fragment verdict cache: what the kernel's reassembly keys a datagram by. IPv4:
/// addresses, protocol and the 16-bit id; IPv6: addresses and the 32-bit id (`proto` 0, since
/// Linux does not key IPv6 reassembly by the fragment header's next header). Addresses as in
/// [`IpKey::addr`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub id: u32,
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    pub proto: u8,
    pub _pad: [u8; 2],
}

/// One CPU's not yet merged per-source counts (see `map_names::PENDING`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingSource {
    pub key: IpKey,
    pub _pad: u32,
    /// `packets == 0`: nothing pending.
    pub stats: SourceStats,
}

/// Interface name buffer size (Linux IFNAMSIZ).
pub const IFNAMSIZ: usize = 16;

/// XDP attach modes as stored in [`IfaceInfo::mode`].
pub mod xdp_mode {
    pub const NATIVE: u32 = 1;
    pub const SKB: u32 = 2;
}

/// Value of the interface bookkeeping map, written by `attach` (the program never reads it).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IfaceInfo {
    /// NUL-padded interface name at attach time.
    pub name: [u8; IFNAMSIZ],
    /// One of [`xdp_mode`].
    pub mode: u32,
    /// Kernel id of the attached program.
    pub prog_id: u32,
}

/// Value of the interface metadata map, written by `attach` and the service (the program never
/// reads it).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IfaceMeta {
    /// The build whose program was attached (or swapped in) last.
    pub build: Build,
    /// 1 when `mcfilter run` manages the interface: a restarted service adopts it, detaches it
    /// when its config no longer lists it and covers it with `detach_on_exit`.
    pub service: u32,
    /// The id of the program a chained interface hands its passed packets to (`attach --then`),
    /// which `detach` puts back; 0 when it is not chained.
    pub next: u32,
}

/// What identifies a build of mcfilter: its version and a hash of its XDP object (two builds
/// of one version with different datapaths differ in the hash).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Build {
    /// NUL-padded `CARGO_PKG_VERSION`.
    pub version: [u8; 16],
    /// FNV-1a (64-bit) of the XDP object's bytes.
    pub object: u64,
}

const _: () = {
    assert!(core::mem::size_of::<IfaceMeta>() == 32);
    assert!(core::mem::size_of::<Config>() == 8 + 8 * PORT_WORDS);
    assert!(core::mem::size_of::<Counter>() == 16);
    assert!(core::mem::size_of::<IpKey>() == 20);
    assert!(core::mem::size_of::<SourceStats>() == 40);
    assert!(core::mem::size_of::<IfaceInfo>() == 24);
    assert!(core::mem::size_of::<FragKey>() == 40);
    assert!(core::mem::size_of::<PendingSource>() == 64);
    assert!(core::mem::size_of::<EventBudget>() == 16);
    assert!(Reason::ALL.len() as u32 <= MAX_REASONS);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)], Copy, made only of integers and have no padding
    // (checked by the size assertions above), so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::Counter {}
    unsafe impl aya::Pod for super::IpKey {}
    unsafe impl aya::Pod for super::SourceStats {}
    unsafe impl aya::Pod for super::IfaceInfo {}
    unsafe impl aya::Pod for super::IfaceMeta {}
    unsafe impl aya::Pod for super::FragKey {}
    unsafe impl aya::Pod for super::PendingSource {}
    unsafe impl aya::Pod for super::EventBudget {}
}

#[cfg(test)]
mod tests {
    use super::{FragClock, MAX_REASONS, Reason};

    /// Codes are the list's positions, names are distinct snake_case, and the stats array has
    /// room for every code.
    #[test]
    fn the_reason_table_is_consistent() {
        for (index, reason) in Reason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, index);
            assert_eq!(Reason::from_code(index as u32), Some(*reason));
            let name = reason.name();
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name}"
            );
            assert_eq!(Reason::ALL.iter().filter(|r| r.name() == name).count(), 1);
        }
        assert!(Reason::ALL.len() as u32 <= MAX_REASONS);
        assert!(Reason::UdpPort.is_drop() && !Reason::TcpAllowed.is_drop());
    }

    /// Linux's TICK_NSEC for each HZ it offers gives that HZ back.
    #[test]
    fn the_tick_names_the_hz() {
        for hz in [100u64, 250, 300, 1000] {
            let tick_nsec = (1_000_000_000 + hz / 2) / hz;
            assert_eq!(u64::from(FragClock::from_tick_nanos(tick_nsec).hz), hz);
        }
        assert_eq!(FragClock::from_tick_nanos(0).hz, 1_000_000_000);
    }
}
