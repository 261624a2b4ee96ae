//! Why a packet got its verdict, and the exact totals counted under it: reasons, stats slots,
//! counters.

/// Generates [`Reason`], its list and its two views (name, verdict) from one table, so a reason
/// is added in one place: `Variant = code, "name", drop|pass;` with its doc comment.
macro_rules! reasons {
    ($( $(#[$doc:meta])* $variant:ident = $code:literal, $name:literal, $verdict:ident; )*) => {
        /// Why a packet got its verdict. The value is the index into the stats array; append
        /// only.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
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
    /// Packets.
    pub packets: u64,
    /// Their bytes (frame lengths).
    pub bytes: u64,
}
