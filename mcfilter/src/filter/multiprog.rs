//! Sharing the interface through libxdp's dispatcher (`attach --multiprog`), the way xdp-loader
//! and xdp-filter share one where the kernel runs extension programs.
//!
//! mcfilter's program is loaded as an extension (BPF_PROG_TYPE_EXT) of one of the dispatcher's
//! slots, with a run priority and libxdp's chain actions: the next component runs after
//! XDP_PASS, so mcfilter's drops are final and what it passes goes on. Joining, leaving and
//! upgrading are one move, libxdp's own ([`dispatcher`]): a new dispatcher is loaded for the
//! new set of components, each component is linked into its slot and pinned where libxdp looks,
//! one atomic netlink replace that expects the old dispatcher puts the new one on the interface,
//! and the old one's pins go. All of it under libxdp's lock, so xdp-loader and xdp-filter wait
//! for mcfilter and it for them, and each finds the others' components when it rebuilds.
//!
//! mcfilter's state pins its own program as `component_<ifindex>`; it runs while the
//! interface's dispatcher has it in a slot (another tool's rebuild keeps it there; `xdp-loader
//! unload --all` does not, and `status` and `audit` then say the interface is unfiltered).
//!
//! Kernel facts: extension programs need BTF and, to be linked to a second dispatcher, Linux
//! 5.10. Some kernels refuse to load them at all (EPERM: this project's CI kernel does), which
//! is how `--multiprog` finds out it cannot run: the attach fails with one line and leaves
//! nothing behind.

use std::{
    fs, io,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use aya::programs::{Extension, ProgramError, ProgramInfo};
use mcfilter_common::PROGRAM_NAMES;

use super::{
    Attaching, Attachment, HandBack, Made,
    chain::{attach_fresh, attachment},
    dispatcher::{self, CHAIN_ON_PASS, Component, Config, Current, Found, New, Unjoinable},
    link::{NetlinkRecords, record_replaced},
    undone,
};
use crate::{
    Error,
    netlink::{self, XDP_FLAGS_REPLACE, XdpMode},
    pin::StateDir,
};

/// libxdp's default run priority, which `--priority` defaults to.
pub const DEFAULT_PRIORITY: u32 = dispatcher::DEFAULT_PRIORITY;

/// Joins (or starts) the dispatcher on the interface as a component with run priority
/// `priority`. The records and the program's pin come before the swap; a failure undoes them,
/// and the interface keeps the dispatcher (or the nothing) it had.
pub(super) fn attach_program(at: &mut Attaching<'_>, priority: u32) -> Result<Made, Error> {
    let object = object(&at.req.iface)?;
    let ext = extension(at.ebpf, at.program, &at.req.iface)?;
    let ours = load_extension(
        ext,
        &object,
        Component {
            name: at.program.to_owned(),
            priority,
            chain_actions: CHAIN_ON_PASS,
            flags: 0,
        },
        &at.req.iface,
    )?;
    let prog_id = ours.id;
    let bpffs = dispatcher::bpffs();
    let _lock = lock(&bpffs, &at.req.iface)?;
    let mut old = on_interface(&bpffs, &at.req.iface, at.ifindex)?;
    sweep(&bpffs, &at.req.iface, at.ifindex, old.as_ref());
    if let Some(old) = &old
        && !at.req.mode.tries().contains(&attachment(old.mode))
    {
        // A dispatcher runs its components in its own mode.
        return Err(Error::Unjoinable {
            iface: at.req.iface.clone(),
            why: Unjoinable::OtherMode(attachment(old.mode).name()),
        });
    }
    let mut members: Vec<Found> = old
        .as_mut()
        .map(|old| old.current.components.drain(..).collect())
        .unwrap_or_default();
    members.push(ours);
    let mut prepared = prepare(&bpffs, &at.req.iface, at.ifindex, &object, members)?;
    crate::fault::step();
    let planned = old
        .as_ref()
        .map_or(at.req.mode.first(), |old| attachment(old.mode));
    let mut records = NetlinkRecords {
        state: at.state,
        maps: at.maps,
        req: at.req,
        ifindex: at.ifindex,
        prog_id,
        next: 0,
        pin: at.state.component(at.ifindex),
    };
    if let Err(err) = records.write(planned) {
        let pins = dispatcher::unpin_all(&prepared.dir);
        undone(&at.req.iface, "unpinning the new dispatcher", pins);
        return Err(err);
    }
    let pinned = ext
        .pin(&records.pin)
        .map_err(|err| at.req.pin_error("pinning its program", err));
    let swapped = pinned.and_then(|()| {
        crate::fault::step();
        match &old {
            Some(old) => swap(&mut prepared, old, &at.req.iface, at.ifindex),
            None => prepared
                .new
                .fd()
                .map_err(|err| at.req.dispatcher_error("reading the new dispatcher", err))
                .and_then(|new| attach_fresh(new.as_fd(), at.req, at.ifindex))
                .map(attachment),
        }
    });
    let made = match swapped {
        Ok(made) => made,
        Err(err) => {
            let pins = dispatcher::unpin_all(&prepared.dir);
            undone(&at.req.iface, "unpinning the new dispatcher", pins);
            return Err(records.undo(err));
        }
    };
    crate::fault::step();
    if let Some(old) = &old {
        undone(
            &at.req.iface,
            "unpinning the old dispatcher",
            dispatcher::unpin_all(&old.current.dir),
        );
    }
    records.finish(planned, made)
}

/// Swaps this build's program in for mcfilter's component (`--replace`), at the same priority:
/// a new dispatcher with the same components, swapped in atomically, then the new program's
/// pin takes the old one's place by a rename.
pub(super) fn replace_program(at: &mut Attaching<'_>) -> Result<Made, Error> {
    let object = object(&at.req.iface)?;
    let bpffs = dispatcher::bpffs();
    let _lock = lock(&bpffs, &at.req.iface)?;
    let broken = || Error::ChainBroken {
        iface: at.req.iface.clone(),
    };
    let pinned = ProgramInfo::from_pin(at.state.component(at.ifindex))
        .ok()
        .map(|info| info.id());
    let mut old = on_interface(&bpffs, &at.req.iface, at.ifindex)
        .ok()
        .flatten()
        .ok_or_else(broken)?;
    sweep(&bpffs, &at.req.iface, at.ifindex, Some(&old));
    // mcfilter's component: the pinned program, or (a replace killed between its swap and its
    // rename leaves the new one running and the old one pinned) the one with mcfilter's name.
    let slot = old
        .current
        .components
        .iter()
        .position(|found| Some(found.id) == pinned)
        .or_else(|| {
            old.current
                .components
                .iter()
                .position(|found| PROGRAM_NAMES.contains(&found.component.name.as_str()))
        })
        .ok_or_else(broken)?;
    let mine = old.current.components.remove(slot).component;
    let ext = extension(at.ebpf, at.program, &at.req.iface)?;
    let ours = load_extension(
        ext,
        &object,
        Component {
            name: at.program.to_owned(),
            ..mine
        },
        &at.req.iface,
    )?;
    let prog_id = ours.id;
    let mut members: Vec<Found> = old.current.components.drain(..).collect();
    members.push(ours);
    let mut prepared = prepare(&bpffs, &at.req.iface, at.ifindex, &object, members)?;
    // bpffs names cannot hold a dot.
    let fresh_pin = at
        .state
        .path()
        .join(format!("component_new_{}", at.ifindex));
    let pinned = crate::pin::remove_pin(&fresh_pin).and_then(|()| {
        ext.pin(&fresh_pin)
            .map_err(|err| at.req.pin_error("pinning its program", err))
    });
    if let Err(err) = pinned {
        undone(
            &at.req.iface,
            "unpinning the new dispatcher",
            dispatcher::unpin_all(&prepared.dir),
        );
        return Err(err);
    }
    crate::fault::step();
    let made = match swap(&mut prepared, &old, &at.req.iface, at.ifindex) {
        Ok(made) => made,
        Err(err) => {
            let pins = dispatcher::unpin_all(&prepared.dir);
            undone(&at.req.iface, "unpinning the new dispatcher", pins);
            let fresh = crate::pin::remove_pin(&fresh_pin);
            undone(&at.req.iface, "unpinning the new program", fresh);
            return Err(err);
        }
    };
    crate::fault::step();
    undone(
        &at.req.iface,
        "unpinning the old dispatcher",
        dispatcher::unpin_all(&old.current.dir),
    );
    fs::rename(&fresh_pin, at.state.component(at.ifindex))
        .map_err(|err| at.req.pin_error("pinning its program", err))?;
    crate::fault::step();
    record_replaced(at.state, at.maps, at.req, at.ifindex, prog_id)?;
    Ok(Made {
        attachment: made,
        native_error: None,
        prog_id,
    })
}

/// Takes mcfilter's component out of the interface's dispatcher: the other components go on in
/// a new one, swapped in atomically, or, with none left, the dispatcher is removed (atomically
/// too: only if it is still the one on the interface). A dispatcher that no longer runs
/// mcfilter is left as it is.
pub(super) fn leave(state: &StateDir, iface: &str, ifindex: u32) -> Result<HandBack, Error> {
    let ours = ProgramInfo::from_pin(state.component(ifindex))
        .map_err(|err| Error::PinnedProgram {
            iface: iface.to_owned(),
            err,
        })?
        .id();
    let bpffs = dispatcher::bpffs();
    let _lock = lock(&bpffs, iface)?;
    // Another program than a dispatcher, or one that cannot be read: not mcfilter's to touch.
    let Ok(on) = on_interface(&bpffs, iface, ifindex) else {
        return Ok(HandBack::LeftAlone);
    };
    sweep(&bpffs, iface, ifindex, on.as_ref());
    let Some(mut old) = on else {
        return Ok(HandBack::LeftAlone);
    };
    let before = old.current.components.len();
    old.current.components.retain(|found| found.id != ours);
    if old.current.components.len() == before {
        return Ok(HandBack::LeftAlone);
    }
    if old.current.components.is_empty() {
        netlink::detach_xdp_expected(ifindex, old.flag, old.current.program.as_fd())
            .map_err(|err| swap_error(iface, err))?;
        crate::fault::step();
        undone(
            iface,
            "unpinning the dispatcher",
            dispatcher::unpin_all(&old.current.dir),
        );
        return Ok(HandBack::Nothing);
    }
    let object = object(iface)?;
    let members = old.current.components.drain(..).collect();
    let mut prepared = prepare(&bpffs, iface, ifindex, &object, members)?;
    crate::fault::step();
    if let Err(err) = swap(&mut prepared, &old, iface, ifindex) {
        undone(
            iface,
            "unpinning the new dispatcher",
            dispatcher::unpin_all(&prepared.dir),
        );
        return Err(err);
    }
    crate::fault::step();
    undone(
        iface,
        "unpinning the old dispatcher",
        dispatcher::unpin_all(&old.current.dir),
    );
    Ok(HandBack::Dispatcher(prepared.id))
}

/// libxdp's dispatcher running a program in one of its slots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    /// The dispatcher's program id.
    pub dispatcher_id: u32,
    /// Its components' program ids and names, in the order they run.
    pub components: Vec<(u32, String)>,
}

/// The dispatcher on `ifindex`, if it runs program `prog_id` in a slot (read from libxdp's
/// pins).
pub fn membership(ifindex: u32, prog_id: u32) -> Option<Membership> {
    let (dispatcher_id, _) = netlink::attached(ifindex).ok().flatten()?;
    let dir = dispatcher::pin_dir(&dispatcher::bpffs(), ifindex, dispatcher_id);
    let components = dispatcher::slot_programs(&dir);
    components
        .iter()
        .any(|(id, _)| *id == prog_id)
        .then_some(Membership {
            dispatcher_id,
            components,
        })
}

/// The dispatcher on an interface, and the mode flag it was attached with.
struct OnInterface {
    /// The dispatcher's program id.
    id: u32,
    current: Current,
    mode: XdpMode,
    flag: u32,
}

/// A new dispatcher with its components linked and pinned, not yet on the interface.
struct Prepared {
    new: New,
    id: u32,
    dir: PathBuf,
}

/// libxdp's dispatcher object, read from where libxdp installs it.
fn object(iface: &str) -> Result<Vec<u8>, Error> {
    let path = dispatcher::find_object().ok_or(Error::NoDispatcher)?;
    fs::read(path).map_err(|err| Error::Dispatcher {
        iface: iface.to_owned(),
        what: "reading its object",
        err,
    })
}

/// Removes what killed changes left in libxdp's pins for `ifindex`: every dispatcher's but
/// `old`, the one on the interface as [`on_interface`] read it (`None`: no XDP program). A
/// failure is worth a warning: the pins hold a little memory, not the filter.
fn sweep(bpffs: &Path, iface: &str, ifindex: u32, old: Option<&OnInterface>) {
    let keep = old.map(|old| old.id);
    let swept = dispatcher::sweep(bpffs, ifindex, keep);
    if let Err(err) = swept {
        log::warn!("{iface}: removing pins of libxdp's dispatchers no longer attached: {err}");
    }
}

fn lock(bpffs: &Path, iface: &str) -> Result<dispatcher::Lock, Error> {
    dispatcher::Lock::acquire(bpffs).map_err(|err| Error::Dispatcher {
        iface: iface.to_owned(),
        what: "taking libxdp's lock",
        err,
    })
}

/// The dispatcher on the interface now; `None` if there is no XDP program, and [`Unjoinable`]
/// for a program that is not a dispatcher mcfilter can join.
fn on_interface(bpffs: &Path, iface: &str, ifindex: u32) -> Result<Option<OnInterface>, Error> {
    let unjoinable = |why| Error::Unjoinable {
        iface: iface.to_owned(),
        why,
    };
    let attached = netlink::attached(ifindex).map_err(|err| Error::Netlink {
        iface: iface.to_owned(),
        err,
    })?;
    let Some((id, mode)) = attached else {
        return Ok(None);
    };
    let current = dispatcher::current(bpffs, ifindex, id).map_err(unjoinable)?;
    let flag = mode.flag().ok_or(unjoinable(Unjoinable::Offloaded))?;
    Ok(Some(OnInterface {
        id,
        current,
        mode,
        flag,
    }))
}

/// Loads a dispatcher for `members` (in libxdp's run order), links each into its slot and
/// pins them in the new dispatcher's dir. Nothing of it stays if a step fails.
fn prepare(
    bpffs: &Path,
    iface: &str,
    ifindex: u32,
    object: &[u8],
    mut members: Vec<Found>,
) -> Result<Prepared, Error> {
    let failed = |what| {
        move |err| Error::Dispatcher {
            iface: iface.to_owned(),
            what,
            err,
        }
    };
    members.sort_by(|a, b| a.component.run_order(&b.component));
    let components: Vec<Component> = members.iter().map(|m| m.component.clone()).collect();
    let config = Config::running(&components).map_err(|why| Error::Unjoinable {
        iface: iface.to_owned(),
        why,
    })?;
    let mut new = New::load(object, &config).map_err(failed("loading a new one"))?;
    let id = new
        .program()
        .info()
        .map_err(|err| failed("reading the new one")(io::Error::other(err)))?
        .id();
    let dir = dispatcher::pin_dir(bpffs, ifindex, id);
    fs::create_dir_all(&dir).map_err(failed("making its pin dir"))?;
    let linked = members.iter().enumerate().try_for_each(|(slot, member)| {
        new.link_foreign(slot, member.program.as_fd(), &dir)
            .map_err(failed("linking a component into the new one"))
    });
    if let Err(err) = linked {
        undone(
            iface,
            "unpinning the new dispatcher",
            dispatcher::unpin_all(&dir),
        );
        return Err(err);
    }
    Ok(Prepared { new, id, dir })
}

/// Loads mcfilter's program as an extension of a dispatcher's slot: of a dispatcher loaded
/// for the purpose and never attached, so that a kernel that refuses extensions is found out
/// before anything else is read or changed. Linking it into the real dispatcher's slot is
/// then what libxdp does with every component (Linux 5.10).
fn load_extension(
    ext: &mut Extension,
    object: &[u8],
    component: Component,
    iface: &str,
) -> Result<Found, Error> {
    let failed = |what| {
        move |err| Error::Dispatcher {
            iface: iface.to_owned(),
            what,
            err,
        }
    };
    let attach_err = |err| Error::Attach {
        iface: iface.to_owned(),
        err,
    };
    let config = Config::running(std::slice::from_ref(&component)).expect("one component fits");
    let mut probe = New::load(object, &config).map_err(failed("loading one"))?;
    let target = probe.fd().map_err(failed("loading one"))?;
    ext.load(target, &dispatcher::slot_function(0))
        .map_err(|err| load_error(err, iface))?;
    let fd = ext.fd().map_err(attach_err)?;
    Ok(Found {
        component,
        id: ext.info().map_err(attach_err)?.id(),
        program: fd
            .as_fd()
            .try_clone_to_owned()
            .map_err(failed("reading mcfilter's program"))?,
    })
}

/// Puts the prepared dispatcher on the interface in `old`'s place: one netlink replace that
/// expects `old`, in its mode.
fn swap(
    prepared: &mut Prepared,
    old: &OnInterface,
    iface: &str,
    ifindex: u32,
) -> Result<Attachment, Error> {
    let new = prepared.new.fd().map_err(|err| Error::Dispatcher {
        iface: iface.to_owned(),
        what: "reading the new one",
        err,
    })?;
    netlink::attach_xdp(
        ifindex,
        new.as_fd(),
        old.flag | XDP_FLAGS_REPLACE,
        Some(old.current.program.as_fd()),
    )
    .map_err(|err| swap_error(iface, err))?;
    Ok(attachment(old.mode))
}

fn swap_error(iface: &str, err: io::Error) -> Error {
    Error::ChainSwap {
        iface: iface.to_owned(),
        err,
    }
}

/// mcfilter's program of the loaded object, to be loaded as an extension.
fn extension<'a>(
    ebpf: &'a mut aya::Ebpf,
    name: &str,
    iface: &str,
) -> Result<&'a mut Extension, Error> {
    let attach_err = |err| Error::Attach {
        iface: iface.to_owned(),
        err,
    };
    ebpf.program_mut(name)
        .ok_or(attach_err(ProgramError::UnexpectedProgramType))?
        .try_into()
        .map_err(attach_err)
}

/// A failed load of mcfilter's extension: EPERM is a kernel that refuses extensions.
fn load_error(err: ProgramError, iface: &str) -> Error {
    match err {
        ProgramError::LoadError { io_error, .. }
            if io_error.raw_os_error() == Some(libc::EPERM) =>
        {
            Error::MultiprogUnsupported {
                release: crate::kernel::release(),
            }
        }
        ProgramError::LoadError { verifier_log, .. } => {
            let log = verifier_log.to_string();
            Error::Rejected {
                release: crate::kernel::release(),
                reason: crate::kernel::verifier_reason(&log),
                log,
            }
        }
        err => Error::Attach {
            iface: iface.to_owned(),
            err,
        },
    }
}
