#![warn(missing_docs)]
//! mcfilter's library: the XDP filter's state and the operations on it. The `mcfilter` binary
//! (its command line in `src/bin/mcfilter/`, and the service `mcfilter run`) and the tests are
//! built on it.
//!
//! Start at the facade re-exported here, one function per operation, each on a [`StateDir`]:
//! [`attach`] and [`detach`]; [`policy`], [`change_policy`] and [`set_allow_list`]; the
//! allow-list's [`AllowList::add`], [`AllowList::del`] and [`AllowList::replace`] through
//! [`Maps::open`]; [`read_stats`]; [`status()`]; [`audit()`]. Behind it, one module per concept:
//!
//! - [`pin`]: the state dir on bpffs, its lock and cleanup;
//! - [`maps`]: typed handles on the pinned maps;
//! - [`filter`]: attach, detach, the policy, chaining and the XDP mode;
//! - [`allow`]: CIDRs, the allow-list, its journal and its lookup tables;
//! - [`stats`]: counters by reason and by source;
//! - [`status`](mod@status), [`audit`](mod@audit), [`exposure`], [`suggest`]: what is attached, what is exposed, what to
//!   allow;
//! - [`kernel`], [`memory`], [`sys`]: the running kernel's features, its memory, privileges;
//! - [`build`]: this build's version line; [`fault`]: the crash tests' fault injection;
//! - [`EBPF_OBJECT`]: the XDP program, built by build.rs.

pub mod allow;
pub mod audit;
pub mod build;
pub mod exposure;
pub mod fault;
pub mod filter;
pub mod kernel;
mod map_ops;
pub mod maps;
pub mod memory;
mod netlink;
pub mod pin;
pub mod stats;
pub mod status;
pub mod suggest;
pub mod sys;

pub use crate::{
    allow::{AllowList, Change, parse_cidr, parse_list},
    audit::{Audit, audit},
    filter::{
        AttachRequest, Attached, Detached, Mode, Next, Policy, PolicyChange, attach, change_policy,
        detach, policy, set_allow_list,
    },
    maps::Maps,
    pin::StateDir,
    stats::{Stats, read as read_stats},
    status::{Status, status},
};

use std::{io, path::PathBuf};

use ipnet::IpNet;

/// The compiled XDP program (mcfilter-ebpf, built for bpfel-unknown-none by build.rs).
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mcfilter"));

/// A trivial XDP program that passes everything: the floor benchmarks measure mcfilter against
/// (and its siblings: drop, transmit). Only in builds with the `bench-programs` feature, which
/// the tests and benchmarks enable and release builds do not.
#[cfg(feature = "bench-programs")]
pub static FLOOR_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mcfilter-floor"));

/// The benchmarks' reference programs with maps: one small-key lookup, a source's counts
/// added per-CPU and shared, an address probed in a set in an array
/// (`mcfilter-ebpf/src/reference.rs`). Only with `bench-programs`.
#[cfg(feature = "bench-programs")]
pub static REFERENCE_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mcfilter-reference"));

/// The port protected when the first `attach` names none: memcached.
pub const DEFAULT_PORT: u16 = 11211;

/// Errors of the library. Each message names the object and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No interface of that name in this network namespace.
    #[error("interface '{name}' does not exist in this network namespace (see `ip link`)")]
    UnknownInterface {
        /// The name given.
        name: String,
    },
    /// The state dir holds no state: nothing is attached.
    #[error(
        "mcfilter is not attached (no state in {}); run `mcfilter attach IFACE` first",
        dir.display()
    )]
    NotAttached {
        /// The state dir.
        dir: PathBuf,
    },
    /// mcfilter is not attached to this interface.
    #[error("mcfilter is not attached to {iface}; `mcfilter status` shows where it is")]
    NotAttachedTo {
        /// The interface's name.
        iface: String,
    },
    /// An attach (without `--replace`) to an interface mcfilter is attached to.
    #[error(
        "mcfilter is already attached to {iface}; run `mcfilter detach {iface}` first, or `mcfilter attach {iface} --replace` to swap in this build's program"
    )]
    AlreadyAttached {
        /// The interface's name.
        iface: String,
    },
    /// `--replace` on an interface mcfilter is not attached to.
    #[error(
        "mcfilter is not attached to {iface}, so there is nothing to replace; attach without --replace"
    )]
    NothingToReplace {
        /// The interface's name.
        iface: String,
    },
    /// Another tool holds the interface through a bpf_link, which only its owner can remove.
    #[error(
        "{iface}'s XDP program is held by a bpf_link, which only its owner can remove (see `bpftool link`); mcfilter did not touch it"
    )]
    ForeignLink {
        /// The interface's name.
        iface: String,
    },
    /// Another tool attached an XDP program to the interface, and `--force` was not given.
    #[error(
        "{iface} already has an XDP program that mcfilter did not attach; mcfilter never replaces it unless told to: `mcfilter attach {iface} --force` removes it first"
    )]
    ForeignProgram {
        /// The interface's name.
        iface: String,
    },
    /// An allow-list change would go past the list's capacity; nothing was changed.
    #[error(
        "the allow-list is full (its capacity is {capacity} entries); nothing was changed: remove entries, or detach everywhere and attach again with a larger --allow-capacity"
    )]
    AllowListFull {
        /// The list's capacity.
        capacity: u32,
    },
    /// `allow del` of a CIDR that is not on the list; nothing was changed.
    #[error("{net} is not on the allow-list; nothing was changed (see `mcfilter allow list`)")]
    NotAllowListed {
        /// The CIDR given.
        net: IpNet,
    },
    /// The caller lacks root or the capabilities mcfilter needs.
    #[error(
        "permission denied: mcfilter needs root, or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN; run it with sudo"
    )]
    NotPrivileged,
    /// The state dir is not on a bpf filesystem.
    #[error(
        "{} is not on a bpf filesystem; mount one there (`mount -t bpf bpf {}`) or choose another --state-dir",
        path.display(), path.display()
    )]
    NotBpffs {
        /// The state dir.
        path: PathBuf,
    },
    /// Mounting bpffs at the state dir failed.
    #[error("could not mount bpffs at {}: {err}", path.display())]
    MountBpffs {
        /// The state dir.
        path: PathBuf,
        /// What the kernel or the system said.
        err: io::Error,
    },
    /// Creating or reading the state dir failed.
    #[error("state dir {}: {err}", path.display())]
    StateDir {
        /// The state dir.
        path: PathBuf,
        /// What the kernel or the system said.
        err: io::Error,
    },
    /// The state dir (or a directory above it) could be changed by someone other than root.
    #[error(
        "refusing the state dir: {} {why}, so someone other than root could switch the filter off; make it root's and not group- or world-writable (`chown root: {}; chmod go-w {}`), or remove it and let mcfilter create it",
        path.display(), path.display(), path.display()
    )]
    UntrustedStateDir {
        /// The state dir.
        path: PathBuf,
        /// What makes it untrusted.
        why: String,
    },
    /// Another process held the state lock for longer than mcfilter waits.
    #[error(
        "another process has held the state lock on {} for {waited} s; `fuser -v {}` shows which, and nothing was changed",
        path.display(), path.display()
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// How long mcfilter waited, in seconds.
        waited: u64,
    },
    /// The interface's frames are of a link type the program cannot read.
    #[error(
        "{iface} has link type {link_type}, whose frames mcfilter cannot read, so it refuses rather than pass them unjudged (README, \"Link types\")"
    )]
    UnfilteredLinkType {
        /// The interface's name.
        iface: String,
        /// The link type's name (`ipip`, `ppp`, ...).
        link_type: &'static str,
    },
    /// `--mode native` on an interface whose driver has no native XDP.
    #[error(
        "{iface}'s driver has no native XDP support; attach with `--mode skb` (or `--mode auto`)"
    )]
    NativeUnsupported {
        /// The interface's name.
        iface: String,
    },
    /// The pinned state was made by a build whose maps differ from this one's.
    #[error(
        "the state in {} was made by another build: its map {map} has {found}, this build's has {expected}; save the allow-list (`mcfilter allow list > clients.txt`), detach every interface and attach again",
        dir.display()
    )]
    StateLayout {
        /// The state dir.
        dir: PathBuf,
        /// The map whose layout differs.
        map: &'static str,
        /// The pinned map's layout.
        found: String,
        /// This build's layout of it.
        expected: String,
    },
    /// An operation on a pinned map failed.
    #[error("map {name}")]
    Map {
        /// The map's name.
        name: &'static str,
        /// What the kernel or the system said.
        #[source]
        err: aya::maps::MapError,
    },
    /// A batched operation on a pinned map failed.
    #[error("map {name}: a batched operation")]
    MapBatch {
        /// The map's name.
        name: &'static str,
        /// What the kernel or the system said.
        #[source]
        err: io::Error,
    },
    /// Loading the object (maps and programs) failed.
    #[error("loading the XDP program")]
    Load(#[source] aya::EbpfError),
    /// The running kernel lacks a feature mcfilter needs.
    #[error(
        "this kernel ({release}) lacks {feature}, which mcfilter needs (Linux {since} or later has it; README, \"Supported kernels\")"
    )]
    MissingFeature {
        /// What the kernel lacks.
        feature: &'static str,
        /// The Linux release that has it.
        since: &'static str,
        /// The running kernel's release.
        release: String,
    },
    /// The verifier refused the program.
    #[error(
        "the kernel ({release}) refused the XDP program: {reason} (--verbose prints the verifier's whole log)"
    )]
    Rejected {
        /// The running kernel's release.
        release: String,
        /// The verifier's last message ([`kernel::verifier_reason`]).
        reason: String,
        /// The verifier's whole log.
        log: String,
    },
    /// Loading or attaching the program to the interface failed.
    #[error("attaching to {iface}")]
    Attach {
        /// The interface's name.
        iface: String,
        /// What the kernel or the system said.
        #[source]
        err: aya::programs::ProgramError,
    },
    /// Pinning (or reading the pin of) the interface's link or program failed.
    #[error("{iface}: {what}")]
    Pin {
        /// The interface's name.
        iface: String,
        /// What was being done.
        what: &'static str,
        /// What the kernel or the system said.
        #[source]
        err: io::Error,
    },
    /// Unpinning the interface's link (which detaches the program) failed.
    #[error("{iface}: unpinning mcfilter's link")]
    Unpin {
        /// The interface's name.
        iface: String,
        /// What the kernel or the system said.
        #[source]
        err: io::Error,
    },
    /// Reading the interface's XDP program through netlink failed.
    #[error("{iface}: reading its XDP program through netlink")]
    Netlink {
        /// The interface's name.
        iface: String,
        /// What the kernel or the system said.
        #[source]
        err: io::Error,
    },
    /// `--force` could not remove the XDP program another tool attached.
    #[error("{iface}: removing the XDP program another tool attached")]
    RemoveForeign {
        /// The interface's name.
        iface: String,
        /// What the kernel or the system said.
        #[source]
        err: io::Error,
    },
    /// mcfilter's program pinned for a chained interface could not be read.
    #[error("{iface}: mcfilter's pinned program")]
    PinnedProgram {
        /// The interface's name.
        iface: String,
        /// What the kernel or the system said.
        #[source]
        err: aya::programs::ProgramError,
    },
    /// `--then` names a program mcfilter cannot run in front of; nothing was changed.
    #[error("mcfilter cannot run in front of {next} on {iface}: {}; nothing was changed", why.why())]
    Unchainable {
        /// The interface's name.
        iface: String,
        /// The next program as given (`existing`, `id:N`, a path).
        next: String,
        /// Why it cannot be chained to.
        why: filter::Unchainable,
    },
    /// `--then existing` on an interface with no XDP program.
    #[error(
        "{iface} has no XDP program to chain to; attach without --then, or name the next program (--then id:N or --then PIN)"
    )]
    NothingToChain {
        /// The interface's name.
        iface: String,
    },
    /// `--then` names no loaded program.
    #[error("no loaded BPF program is {next} (see `bpftool prog show`); nothing was changed")]
    NoSuchProgram {
        /// The next program as given (`existing`, `id:N`, a path).
        next: String,
    },
    /// The atomic netlink swap between mcfilter and the next program failed.
    #[error("swapping the XDP programs on {iface}: {}", chain_swap_why(err))]
    ChainSwap {
        /// The interface's name.
        iface: String,
        /// What the kernel or the system said.
        err: io::Error,
    },
    /// Another tool replaced or removed mcfilter's chained program.
    #[error(
        "mcfilter's program is no longer on {iface} (another tool replaced or removed it); `mcfilter detach {iface}` removes mcfilter's state for it, then attach again"
    )]
    ChainBroken {
        /// The interface's name.
        iface: String,
    },
    /// `attach --multiprog` on a kernel that refuses extension (freplace) programs.
    #[error(
        "this kernel ({release}) refuses freplace (BPF_PROG_TYPE_EXT) programs, which libxdp's dispatcher runs, so --multiprog cannot work here; nothing was changed: attach without it, or in front of the program there with --then existing"
    )]
    MultiprogUnsupported {
        /// The running kernel's release.
        release: String,
    },
    /// `attach --multiprog` without libxdp's dispatcher object installed.
    #[error(
        "--multiprog loads libxdp's dispatcher, and xdp-dispatcher.o is not installed (Debian: libxdp1; or set LIBXDP_OBJECT_PATH); nothing was changed"
    )]
    NoDispatcher,
    /// `attach --multiprog` on an interface whose XDP program is not a dispatcher it can join.
    #[error(
        "mcfilter cannot join the XDP program on {iface} as a component of libxdp's dispatcher: {why}; nothing was changed (--then existing runs in front of any XDP program)"
    )]
    Unjoinable {
        /// The interface's name.
        iface: String,
        /// Why.
        why: filter::Unjoinable,
    },
    /// A step of building, linking or swapping libxdp's dispatcher failed.
    #[error("{iface}: libxdp's dispatcher: {what}")]
    Dispatcher {
        /// The interface's name.
        iface: String,
        /// What was being done.
        what: &'static str,
        /// What the kernel or the system said.
        #[source]
        err: io::Error,
    },
    /// Any other system error.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// What a failed netlink swap means.
fn chain_swap_why(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(libc::EEXIST) => {
            "the program there changed meanwhile (the swap names the one it expects); nothing was changed, try again".to_owned()
        }
        Some(libc::EBUSY) => {
            "the program there is held by a bpf_link, which netlink cannot replace atomically (see `bpftool link`); nothing was changed".to_owned()
        }
        _ => err.to_string(),
    }
}

impl Error {
    pub(crate) fn allow_map(err: aya::maps::MapError) -> Self {
        Error::Map {
            name: mcfilter_common::map_names::ALLOW,
            err,
        }
    }
}
