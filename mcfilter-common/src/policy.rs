//! The policy and what the loader tells the program: protected ports, dry-run and reflection
//! (`Config`), the entry points, the globals it sets, and the maps' capacities.

/// The global the loader sets to 1 in a program that chains to the next one (`attach --then`):
/// read-only data, so the verifier drops the tail call from programs that do not chain.
pub const CHAINED_GLOBAL: &str = "CHAINED";

/// The XDP program for Ethernet-framed interfaces: its function name in the object.
pub const PROGRAM_NAME: &str = "mcfilter";
/// The XDP program for interfaces whose packets start at the IP header (link type `none`: TUN,
/// WireGuard): the same verdict path, entered at the IP header.
pub const PROGRAM_NAME_IP: &str = "mcfilter_ip";
/// The Ethernet program as a component of libxdp's dispatcher (`attach --multiprog`): the same
/// verdict path without the tail call of chaining, which an extension of a dispatcher's slot
/// may not hold (Linux 6.12.y and 6.14+ count a tail call as changing packet data, and the
/// slot's own function does not).
pub const PROGRAM_NAME_COMPONENT: &str = "mcfilter_mp";
/// The IP-framed program as a component of libxdp's dispatcher.
pub const PROGRAM_NAME_IP_COMPONENT: &str = "mcfilter_ip_mp";
/// Every program of the object that filters: how mcfilter recognises its own program on an
/// interface.
pub const PROGRAM_NAMES: [&str; 4] = [
    PROGRAM_NAME,
    PROGRAM_NAME_IP,
    PROGRAM_NAME_COMPONENT,
    PROGRAM_NAME_IP_COMPONENT,
];

/// `mcf_allow_state` slot: the allow-list's size plus one (0: not known yet), so that `status`
/// and metrics need not walk the trie.
pub const ALLOW_SLOT_SIZE: u32 = 0;
/// `mcf_allow_state` slot, retired: non-zero told an older build's program to look in its index
/// of single addresses (`mcf_allow_hosts`) first. This build keeps no such index, so it writes 0
/// here whenever it settles a state, and such a program reads the trie alone.
pub const ALLOW_SLOT_RETIRED_INDEX: u32 = 1;
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
