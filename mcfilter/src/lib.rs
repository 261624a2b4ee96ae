//! mcfilter's library: the XDP filter's state and the operations on it. The `mcfilter` binary
//! (its command line in `src/bin/mcfilter/`, and the service `mcfilter run`) and the tests are
//! built on it.
//!
//! Start at the facade re-exported here, one function per operation, each on a [`StateDir`]:
//! [`attach`] and [`detach`]; [`policy`], [`change_policy`] and [`set_allow_list`]; the
//! allow-list's [`AllowList::add`], [`AllowList::del`] and [`AllowList::replace`] through
//! [`Maps::open`]; [`read_stats`]; [`status`]; [`audit`]. Behind it, one module per concept:
//!
//! - [`pin`]: the state dir on bpffs, its lock and cleanup;
//! - [`maps`]: typed handles on the pinned maps;
//! - [`filter`]: attach, detach, the policy, chaining and the XDP mode;
//! - [`allow`]: CIDRs, the allow-list, its journal and its index;
//! - [`stats`]: counters by reason and by source;
//! - [`status`], [`audit`], [`exposure`], [`suggest`]: what is attached, what is exposed, what to
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

/// The port protected when the first `attach` names none: memcached.
pub const DEFAULT_PORT: u16 = 11211;

/// Errors of the library. Each message names the object and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("interface '{name}' does not exist in this network namespace (see `ip link`)")]
    UnknownInterface { name: String },
    #[error(
        "mcfilter is not attached (no state in {}); run `mcfilter attach IFACE` first",
        dir.display()
    )]
    NotAttached { dir: PathBuf },
    #[error("mcfilter is not attached to {iface}; `mcfilter status` shows where it is")]
    NotAttachedTo { iface: String },
    #[error(
        "mcfilter is already attached to {iface}; run `mcfilter detach {iface}` first, or `mcfilter attach {iface} --replace` to swap in this build's program"
    )]
    AlreadyAttached { iface: String },
    #[error(
        "mcfilter is not attached to {iface}, so there is nothing to replace; attach without --replace"
    )]
    NothingToReplace { iface: String },
    #[error(
        "{iface}'s XDP program is held by a bpf_link, which only its owner can remove (see `bpftool link`); mcfilter did not touch it"
    )]
    ForeignLink { iface: String },
    #[error(
        "{iface} already has an XDP program that mcfilter did not attach; mcfilter never replaces it unless told to: `mcfilter attach {iface} --force` removes it first"
    )]
    ForeignProgram { iface: String },
    #[error(
        "the allow-list is full (its capacity is {capacity} entries); nothing was changed: remove entries, or detach everywhere and attach again with a larger --allow-capacity"
    )]
    AllowListFull { capacity: u32 },
    #[error("{net} is not on the allow-list; nothing was changed (see `mcfilter allow list`)")]
    NotAllowListed { net: IpNet },
    #[error(
        "permission denied: mcfilter needs root, or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN; run it with sudo"
    )]
    NotPrivileged,
    #[error(
        "{} is not on a bpf filesystem; mount one there (`mount -t bpf bpf {}`) or choose another --state-dir",
        path.display(), path.display()
    )]
    NotBpffs { path: PathBuf },
    #[error("could not mount bpffs at {}: {err}", path.display())]
    MountBpffs { path: PathBuf, err: io::Error },
    #[error("state dir {}: {err}", path.display())]
    StateDir { path: PathBuf, err: io::Error },
    #[error(
        "refusing the state dir: {} {why}, so someone other than root could switch the filter off; make it root's and not group- or world-writable (`chown root: {}; chmod go-w {}`), or remove it and let mcfilter create it",
        path.display(), path.display(), path.display()
    )]
    UntrustedStateDir { path: PathBuf, why: String },
    #[error(
        "another process has held the state lock on {} for {waited} s; `fuser -v {}` shows which, and nothing was changed",
        path.display(), path.display()
    )]
    Locked { path: PathBuf, waited: u64 },
    #[error(
        "{iface} has link type {link_type}, whose frames mcfilter cannot read, so it refuses rather than pass them unjudged (README, \"Link types\")"
    )]
    UnfilteredLinkType {
        iface: String,
        link_type: &'static str,
    },
    #[error(
        "{iface}'s driver has no native XDP support; attach with `--mode skb` (or `--mode auto`)"
    )]
    NativeUnsupported { iface: String },
    #[error(
        "the state in {} was made by another build: its map {map} has {found}, this build's has {expected}; save the allow-list (`mcfilter allow list > clients.txt`), detach every interface and attach again",
        dir.display()
    )]
    StateLayout {
        dir: PathBuf,
        map: &'static str,
        found: String,
        expected: String,
    },
    #[error("map {name}")]
    Map {
        name: &'static str,
        #[source]
        err: aya::maps::MapError,
    },
    #[error("map {name}: a batched operation")]
    MapBatch {
        name: &'static str,
        #[source]
        err: io::Error,
    },
    #[error("loading the XDP program")]
    Load(#[source] aya::EbpfError),
    #[error(
        "this kernel ({release}) lacks {feature}, which mcfilter needs (Linux {since} or later has it; README, \"Supported kernels\")"
    )]
    MissingFeature {
        feature: &'static str,
        since: &'static str,
        release: String,
    },
    #[error(
        "the kernel ({release}) refused the XDP program: {reason} (--verbose prints the verifier's whole log)"
    )]
    Rejected {
        release: String,
        /// The verifier's last message ([`kernel::verifier_reason`]).
        reason: String,
        /// The verifier's whole log.
        log: String,
    },
    #[error("attaching to {iface}")]
    Attach {
        iface: String,
        #[source]
        err: aya::programs::ProgramError,
    },
    #[error("{iface}: {what}")]
    Pin {
        iface: String,
        what: &'static str,
        #[source]
        err: io::Error,
    },
    #[error("{iface}: unpinning mcfilter's link")]
    Unpin {
        iface: String,
        #[source]
        err: io::Error,
    },
    #[error("{iface}: reading its XDP program through netlink")]
    Netlink {
        iface: String,
        #[source]
        err: io::Error,
    },
    #[error("{iface}: removing the XDP program another tool attached")]
    RemoveForeign {
        iface: String,
        #[source]
        err: io::Error,
    },
    #[error("{iface}: mcfilter's pinned program")]
    PinnedProgram {
        iface: String,
        #[source]
        err: aya::programs::ProgramError,
    },
    #[error("mcfilter cannot run in front of {next} on {iface}: {}; nothing was changed", why.why())]
    Unchainable {
        iface: String,
        next: String,
        why: filter::Unchainable,
    },
    #[error(
        "{iface} has no XDP program to chain to; attach without --then, or name the next program (--then id:N or --then PIN)"
    )]
    NothingToChain { iface: String },
    #[error("no loaded BPF program is {next} (see `bpftool prog show`); nothing was changed")]
    NoSuchProgram { next: String },
    #[error("swapping the XDP programs on {iface}: {}", chain_swap_why(err))]
    ChainSwap { iface: String, err: io::Error },
    #[error(
        "mcfilter's program is no longer on {iface} (another tool replaced or removed it); `mcfilter detach {iface}` removes mcfilter's state for it, then attach again"
    )]
    ChainBroken { iface: String },
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
