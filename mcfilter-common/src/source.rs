//! Sources: the family-tagged address key (allow-list and per-source map), per-source counts,
//! the per-CPU table of sources seen once, and the events budget.

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

    /// The key of IPv4 address `addr`.
    #[inline(always)]
    pub const fn v4(addr: [u8; 4]) -> Self {
        Self::v4_word(word(addr))
    }

    /// The key of the IPv4 address held by the memory-order word `addr` (as [`word`] makes it;
    /// the XDP program loads it from the packet whole).
    #[inline(always)]
    pub const fn v4_word(addr: u32) -> Self {
        IpKey {
            family: FAMILY_V4 as u32,
            addr: [addr, 0, 0, 0],
        }
    }

    /// The key of IPv6 address `addr`.
    #[inline(always)]
    pub const fn v6(addr: [u8; 16]) -> Self {
        Self::v6_words(words(addr))
    }

    /// The key of the IPv6 address held by the memory-order words `addr` (as [`words`] makes
    /// them).
    #[inline(always)]
    pub const fn v6_words(addr: [u32; 4]) -> Self {
        IpKey {
            family: FAMILY_V6 as u32,
            addr,
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
    /// Dropped (or, in dry-run, counted) packets.
    pub packets: u64,
    /// Their bytes (frame lengths).
    pub bytes: u64,
    /// `bpf_ktime_get_coarse_ns()` (CLOCK_MONOTONIC_COARSE) of the last packet.
    pub last_seen_ns: u64,
    /// Of `packets`, those only counted (dry-run): what enforcing would have dropped.
    pub dry_run_packets: u64,
    /// [`Reason`](crate::Reason) code of the last packet.
    pub last_reason: u32,
    /// Non-zero when the last packet was only counted (dry-run), not dropped.
    pub last_dry_run: u32,
}

/// One CPU's not yet merged per-source counts (see `map_names::PENDING`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingSource {
    /// The source.
    pub key: IpKey,
    /// Zero.
    pub _pad: u32,
    /// `packets == 0`: nothing pending.
    pub stats: SourceStats,
}

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
