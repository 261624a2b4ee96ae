//! The fragment verdict cache: its key, its timeouts and the clock it keeps time with.

use crate::FAMILY_V6;

/// Entries of `mcf_frag_timeouts`: one per family.
pub const FRAG_TIMEOUT_SLOTS: u32 = 2;

/// Linux's default reassembly timeout (`ipfrag_time`, `ip6frag_time`), in seconds.
pub const DEFAULT_FRAG_TIMEOUT_SECS: u32 = 30;

/// The `mcf_frag_timeouts` slot of a family: 0 for IPv4, 1 for IPv6.
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

/// Key of the IPv4 fragment verdict cache (`mcf_frags4`): what the kernel's reassembly keys an
/// IPv4 datagram by, the addresses, the protocol and the 16-bit id, in 12 bytes (a third of
/// [`FragKey`]: the hash and the compare of a lookup cost less). Addresses as in
/// [`IpKey::addr`](crate::IpKey::addr).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Frag4Key {
    /// The source address.
    pub src: u32,
    /// The destination address.
    pub dst: u32,
    /// The fragment id.
    pub id: u16,
    /// The protocol.
    pub proto: u8,
    /// Zero.
    pub _pad: u8,
}

/// Key of the IPv6 fragment verdict cache (`mcf_frags`): what the kernel's reassembly keys an
/// IPv6 datagram by, the addresses and the 32-bit id (`proto` 0, since Linux does not key IPv6
/// reassembly by the fragment header's next header). The layout is the one the cache had when
/// it held both families (`family`, `proto`), so states made before keep their map. Addresses
/// as in [`IpKey::addr`](crate::IpKey::addr).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FragKey {
    /// The source address.
    pub src: [u32; 4],
    /// The destination address.
    pub dst: [u32; 4],
    /// The fragment id.
    pub id: u32,
    /// [`FAMILY_V4`](crate::FAMILY_V4) or [`FAMILY_V6`](crate::FAMILY_V6).
    pub family: u8,
    /// The IPv4 protocol (0 for IPv6).
    pub proto: u8,
    /// Zero.
    pub _pad: [u8; 2],
}
