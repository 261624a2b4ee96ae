//! Attach and detach: the XDP program on interfaces, one shared policy.
//!
//! `attach` loads the embedded object with its maps pinned by name in the state dir (created by
//! the first attach, reused by the next), attaches the program through a bpf_link and pins the
//! link as `link_<ifindex>`, so the filter outlives the command. `detach` unpins the link (which
//! detaches it) and, with the last interface, removes the state. Both run under the state lock
//! and leave the state as it was when they fail.
//!
//! Kernel facts: XDP bpf_links need Linux 5.9 (aya falls back to netlink attachment before that,
//! which cannot be pinned: attach then fails cleanly). A link refuses an interface that already
//! has an XDP program (EBUSY), and native and generic XDP cannot be mixed on one (EEXIST).

use std::{collections::BTreeSet, io};

use aya::EbpfLoader;
use ipnet::IpNet;
use mcfilter_common::{DEFAULT_ALLOW_CAPACITY, map_names};

mod chain;
mod detach;
mod dispatcher;
mod link;
mod mode;
mod multiprog;
mod policy;

pub use chain::{HandBack, Next, NextError, Unchainable, program_name, running};
pub use detach::{Detached, detach};
pub use dispatcher::Unjoinable;
use link::{attach_program, load_program, loaded, record_replaced, replace_program};
pub use mode::{Attachment, Mode, show_mode};
pub use multiprog::{DEFAULT_PRIORITY, Membership, membership};
pub use policy::{
    Policy, PolicyChange, PortError, change_policy, parse_port, policy, set_allow_list,
};

use crate::{
    EBPF_OBJECT, Error,
    allow::Change,
    maps::Maps,
    pin::{StateDir, StateLock},
    sys,
};

/// What `attach` is asked to do.
#[derive(Clone, Debug)]
pub struct AttachRequest {
    /// The interface to attach to.
    pub iface: String,
    /// The XDP mode to attach in.
    pub mode: Mode,
    /// Replaces the protected ports (shared by all interfaces); `None` keeps them, or protects
    /// [`DEFAULT_PORT`](crate::DEFAULT_PORT) on the first attach.
    pub ports: Option<BTreeSet<u16>>,
    /// Added to the allow-list.
    pub allow: BTreeSet<IpNet>,
    /// Turns dry-run on (count what would be dropped, pass it).
    pub dry_run: bool,
    /// Turns reflection-victim protection on (drop UDP from a protected source port).
    pub drop_reflected: bool,
    /// Capacity of the allow-list when this attach creates the state.
    pub allow_capacity: u32,
    /// Capacity of the per-source map when this attach creates the state.
    pub sources_capacity: u32,
    /// Swap the program on an interface already attached, through its pinned link: atomic,
    /// no gap, maps (allow-list, counters) kept.
    pub replace: bool,
    /// Remove a foreign XDP program (attached through netlink) from the interface first.
    pub force: bool,
    /// `mcfilter run` attaches (or adopts, with `replace`) it: recorded, so a restarted service
    /// knows the interface is its own.
    pub service: bool,
    /// Run in front of this program and hand it every packet mcfilter passes (see `chain`).
    pub then: Option<Next>,
    /// Join (or start) libxdp's dispatcher on the interface as a component with this run
    /// priority (`--multiprog`, see `multiprog`).
    pub multiprog: Option<u32>,
}

impl AttachRequest {
    /// A request with the defaults (mode `auto`, no ports or allow-list changes) for `iface`.
    pub fn new(iface: impl Into<String>) -> Self {
        AttachRequest {
            iface: iface.into(),
            mode: Mode::Auto,
            ports: None,
            allow: BTreeSet::new(),
            dry_run: false,
            drop_reflected: false,
            allow_capacity: DEFAULT_ALLOW_CAPACITY,
            sources_capacity: crate::memory::default_sources_capacity_here(),
            replace: false,
            force: false,
            service: false,
            then: None,
            multiprog: None,
        }
    }

    fn attach_error(&self, err: aya::programs::ProgramError) -> Error {
        Error::Attach {
            iface: self.iface.clone(),
            err,
        }
    }

    /// A failure to pin (or read the pin of) the interface's link or program: `what` was
    /// being done; aya's pin errors are carried as the io error's source.
    fn pin_error(
        &self,
        what: &'static str,
        err: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Error {
        Error::Pin {
            iface: self.iface.clone(),
            what,
            err: io::Error::other(err),
        }
    }

    /// A failed netlink swap of the interface's XDP program.
    fn swap_error(&self, err: io::Error) -> Error {
        Error::ChainSwap {
            iface: self.iface.clone(),
            err,
        }
    }

    /// A failed step of building or swapping libxdp's dispatcher (`--multiprog`).
    fn dispatcher_error(&self, what: &'static str, err: impl Into<io::Error>) -> Error {
        Error::Dispatcher {
            iface: self.iface.clone(),
            what,
            err: err.into(),
        }
    }

    fn netlink_error(&self, err: io::Error) -> Error {
        Error::Netlink {
            iface: self.iface.clone(),
            err,
        }
    }
}

/// What `attach` did.
#[derive(Debug)]
pub struct Attached {
    /// The interface's name.
    pub iface: String,
    /// The interface's index.
    pub ifindex: u32,
    /// The XDP mode the program runs in.
    pub attachment: Attachment,
    /// Why native mode was not used when `auto` fell back to skb.
    pub native_error: Option<String>,
    /// The program's id (see `bpftool prog show`).
    pub prog_id: u32,
    /// This attach created the state (the first interface).
    pub created_state: bool,
    /// The protected ports now (shared by every interface).
    pub ports: Vec<u16>,
    /// Dry-run: drops are counted, not made.
    pub dry_run: bool,
    /// Reflection-victim protection: UDP from a protected source port is dropped.
    pub drop_reflected: bool,
    /// What the attach added to the allow-list.
    pub allow_change: Change,
    /// The program this attach put behind mcfilter (`--then`), by id.
    pub next: Option<u32>,
    /// libxdp's dispatcher that runs mcfilter as a component now (`--multiprog`), by id.
    pub dispatcher: Option<u32>,
}

/// Attaches the filter to `req.iface` (or swaps this build's program in with `--replace`), creating
/// the state on the first interface; nothing is left half-done on failure.
pub fn attach(state: &StateDir, req: &AttachRequest) -> Result<Attached, Error> {
    let ifindex = sys::ifindex(&req.iface)?;
    let framing = sys::framing(&req.iface)?;
    if framing.program().is_none() {
        return Err(Error::UnfilteredLinkType {
            iface: req.iface.clone(),
            link_type: framing.name(),
        });
    }
    crate::kernel::probe()?;
    let _lock: StateLock = state.prepare_and_lock()?;
    // A dispatcher's component is the entry without the tail call, loaded as an extension of
    // its slot.
    let component = req.multiprog.is_some() || (req.replace && state.component(ifindex).exists());
    let program = if component {
        framing.component_program()
    } else {
        framing.program()
    }
    .expect("a filtered framing has both programs");
    match (state.holds(ifindex), req.replace) {
        (true, false) => {
            return Err(Error::AlreadyAttached {
                iface: req.iface.clone(),
            });
        }
        (false, true) => {
            return Err(Error::NothingToReplace {
                iface: req.iface.clone(),
            });
        }
        _ => {}
    }
    // The next program, found and checked before anything changes.
    let next = req
        .then
        .as_ref()
        .map(|next| chain::resolve(next, req, ifindex))
        .transpose()?;
    // Maps no interface is linked to are what a detach killed after unpinning the last link, or
    // a first attach killed before pinning one, left (or a few of them, if a removal was cut
    // short): nothing of them is adopted.
    if state.path().exists() && !state.attached()? {
        state.remove()?;
    }
    let fresh = !state.exists();
    if fresh {
        state.create()?;
        crate::fault::step();
    }
    let result = attach_locked(
        state,
        req,
        ifindex,
        (program, component),
        fresh,
        next.as_ref(),
    );
    if result.is_err() {
        if fresh {
            // Nothing of a failed first attach stays behind.
            undone(&req.iface, "removing the new state", state.remove());
        } else if !state.holds(ifindex) {
            // Nor the counters and the next program's array that loading pinned for an
            // interface that did not get the filter.
            let iface_stats = crate::pin::remove_pin(&state.iface_stats(ifindex));
            undone(&req.iface, "unpinning its counters", iface_stats);
            let next = crate::pin::remove_pin(&state.next(ifindex));
            undone(&req.iface, "unpinning its next program's array", next);
        }
    }
    result
}

fn attach_locked(
    state: &StateDir,
    req: &AttachRequest,
    ifindex: u32,
    (program, component): (&str, bool),
    fresh: bool,
    next: Option<&chain::NextProgram>,
) -> Result<Attached, Error> {
    if !fresh {
        crate::maps::check_layout(state, EBPF_OBJECT)?;
        // Records and counters of interfaces with no link (this one's included) are what a
        // killed attach or detach left.
        detach::forget_unlinked(state, &mut Maps::open(state)?)?;
    }
    // A chained interface's program holds the tail call and its own program array, pinned (a
    // replace keeps the array, and so the next program).
    let chained = next.is_some() || (req.replace && state.program(ifindex).exists());
    let clock = crate::kernel::frag_clock();
    let mut loader = EbpfLoader::new();
    loader.override_global(mcfilter_common::FRAG_HZ_GLOBAL, &clock.hz, true);
    if component {
        loader.extension(program);
    }
    if chained {
        loader
            .override_global(mcfilter_common::CHAINED_GLOBAL, &CHAINED, true)
            .map_pin_path(map_names::NEXT, state.next(ifindex));
    }
    let mut ebpf = loader
        .default_map_pin_directory(state.path())
        // One more than asked for: the allow-list's journal entry (see `AllowList`).
        .map_max_entries(map_names::ALLOW, req.allow_capacity.saturating_add(1))
        .map_max_entries(map_names::ALLOW_STRIDES, req.allow_capacity)
        .map_max_entries(map_names::SOURCES, req.sources_capacity)
        // Pinned by path, so what the service serves needs no program lookup by id (which
        // needs CAP_SYS_ADMIN): the interface's own counters, kept across `--replace`, and the
        // events ring every program of the state shares.
        .map_pin_path(map_names::IFACE_STATS, state.iface_stats(ifindex))
        .map_pin_path(map_names::LOGS, state.log_ring())
        .load(EBPF_OBJECT)
        .map_err(Error::Load)?;
    crate::fault::step();
    let mut maps = Maps::open_loaded(state)?;
    // The kernel's, whatever the policy: dropped datagrams are remembered as long as it waits
    // for their fragments.
    crate::maps::set_frag_timeouts(state, crate::kernel::reassembly_timeouts())?;
    crate::fault::step();

    // Policy first (a fresh program then never runs without it), undone if attaching fails.
    // Attach replaces the ports it names and can switch dry-run and reflection protection on;
    // `mcfilter policy` switches them off.
    // A policy that protects no port is what a first attach killed after pinning the maps and
    // before writing the policy leaves (attach, `mcfilter policy --port` and the service's config
    // all need a port): start it afresh rather than enforce nothing.
    let old_config = maps.config()?;
    let adopted = Policy::from_config(&old_config);
    let current = if fresh || adopted.ports.is_empty() {
        Policy::initial()
    } else {
        adopted
    };
    let policy = current.with(&PolicyChange {
        ports: req.ports.clone(),
        dry_run: req.dry_run.then_some(true),
        drop_reflected: req.drop_reflected.then_some(true),
    });
    maps.set_config(&policy.to_config())?;
    crate::fault::step();
    let allow_change = match maps.allow.add(&req.allow) {
        Ok(change) => change,
        Err(err) => {
            undone(
                &req.iface,
                "restoring the policy",
                maps.set_config(&old_config),
            );
            return Err(err);
        }
    };

    let mut at = Attaching {
        ebpf: &mut ebpf,
        program,
        state,
        maps: &mut maps,
        req,
        ifindex,
    };
    let attached = match (next, req.multiprog) {
        _ if req.replace && component => multiprog::replace_program(&mut at),
        _ if req.replace && chained => chain::replace_program(&mut at),
        _ if req.replace => replace_program(&mut at),
        (Some(next), _) => chain::attach_program(&mut at, next),
        (None, Some(priority)) => multiprog::attach_program(&mut at, priority),
        (None, None) => attach_program(&mut at),
    };
    if attached.is_ok() && req.replace {
        // The program is swapped in already: a cache that cannot be emptied is worth a warning,
        // not a failed attach.
        if let Err(err) = maps.forget_fragments() {
            log::warn!("{}: the fragment cache was not emptied: {err}", req.iface);
        }
    }
    match attached {
        Ok(made) => Ok(Attached {
            iface: req.iface.clone(),
            ifindex,
            attachment: made.attachment,
            native_error: made.native_error,
            prog_id: made.prog_id,
            created_state: fresh,
            ports: policy.ports.iter().copied().collect(),
            dry_run: policy.dry_run,
            drop_reflected: policy.drop_reflected,
            allow_change,
            next: next.map(|next| next.id),
            dispatcher: component
                .then(|| multiprog::membership(ifindex, made.prog_id))
                .flatten()
                .map(|membership| membership.dispatcher_id),
        }),
        Err(err) => {
            undone(
                &req.iface,
                "restoring the allow-list",
                maps.allow.undo(&allow_change),
            );
            undone(
                &req.iface,
                "restoring the policy",
                maps.set_config(&old_config),
            );
            Err(err)
        }
    }
}
/// One interface's attach under way: the loaded object, its program for the interface's
/// framing, and where the records go. What [`link`] and [`chain`] attach and replace with.
struct Attaching<'a> {
    ebpf: &'a mut aya::Ebpf,
    /// The program's name in the object.
    program: &'a str,
    state: &'a StateDir,
    maps: &'a mut Maps,
    req: &'a AttachRequest,
    ifindex: u32,
}

/// What attaching or replacing made.
struct Made {
    attachment: Attachment,
    /// Why native mode was not used when `auto` fell back to skb.
    native_error: Option<String>,
    prog_id: u32,
}

/// A step of undoing a failed attach: a failure is said (it leaves pins or records behind,
/// which the next attach or detach removes), and the attach's own error is still the one
/// returned.
pub(crate) fn undone<E: std::fmt::Display>(iface: &str, step: &str, result: Result<(), E>) {
    if let Err(err) = result {
        log::warn!("{iface}: undoing the failed attach: {step}: {err}");
    }
}

/// The value of the program's `CHAINED` global in a chained program.
static CHAINED: u8 = 1;
