//! Chaining (`attach --then`): mcfilter in front of another XDP program, which gets every packet
//! mcfilter passes through a tail call. The next program sits in slot 0 of the loaded object's
//! one-slot program array (`mcf_next`, one per interface, pinned as `next_<ifindex>`), and the
//! loader sets the program's `CHAINED` global so only a chained program holds the tail call.
//!
//! An interface has one XDP slot, and the other tool attached its program there through netlink
//! (a bpf_link cannot replace a netlink attachment). So a chained mcfilter is attached through
//! netlink too, its program pinned as `prog_<ifindex>`, and every swap is one atomic netlink
//! replace that names the program it expects (XDP_FLAGS_REPLACE, Linux 5.7): putting mcfilter
//! in front, upgrading it (`--replace`), and handing the interface back to the next program on
//! `detach`, in the same mode. There is no moment with neither program, and a swap that finds
//! another program than it expects changes nothing.
//!
//! Kernel facts: a program array takes only programs the kernel can tail-call from the programs
//! using it: the same type (XDP), both JITed or both not, and the same `xdp.frags` support
//! (Linux 5.18); a failed tail call falls through, and mcfilter then passes the packet.

use std::os::fd::{AsFd as _, BorrowedFd};

use aya::{
    maps::{MapData, ProgramArray},
    programs::{ProgramInfo, Xdp},
};
use mcfilter_common::{PROGRAM_NAME, PROGRAM_NAME_IP, map_names};

mod next;

use next::by_id;
pub use next::{Next, NextError, Unchainable, program_name};
pub(super) use next::{NextProgram, resolve};

use super::{
    AttachRequest, Attaching, Attachment, Made, link::NetlinkRecords, load_program, loaded,
    record_replaced,
};
use crate::{
    Error,
    netlink::{self, XDP_FLAGS_REPLACE, XDP_FLAGS_UPDATE_IF_NOEXIST, XdpMode},
    pin::StateDir,
};
/// Attaches a program that chains to `next`: through netlink, with its program pinned (netlink
/// holds no link). The records and the program's pin come first, the swap on the interface
/// last; a failure undoes them, and the interface keeps the program it had.
pub(super) fn attach_program(at: &mut Attaching<'_>, next: &NextProgram) -> Result<Made, Error> {
    let attach_err = |err| at.req.attach_error(err);
    load_program(at.ebpf, at.program, at.req)?;
    set_next(at.ebpf, next, at.req)?;
    crate::fault::step();
    let program = loaded(at.ebpf, at.program, at.req)?;
    let prog_id = program.info().map_err(attach_err)?.id();
    let planned = next.replaces.map_or(at.req.mode.first(), attachment);
    let mut records = NetlinkRecords {
        state: at.state,
        maps: at.maps,
        req: at.req,
        ifindex: at.ifindex,
        prog_id,
        next: next.id,
        pin: at.state.program(at.ifindex),
    };
    records.write(planned)?;
    if let Err(err) = program.pin(&records.pin) {
        return Err(records.undo(at.req.pin_error("pinning its program", err)));
    }
    crate::fault::step();
    match attach(program, next, at.req, at.ifindex) {
        Ok(made) => records.finish(planned, made),
        Err(err) => Err(records.undo(err)),
    }
}

/// Swaps this build's program in on a chained interface (`--replace`): one netlink replace that
/// expects mcfilter's program there, then the new program's pin takes the old one's place by a
/// rename, so the state never lacks a pinned program for the interface.
pub(super) fn replace_program(at: &mut Attaching<'_>) -> Result<Made, Error> {
    let attach_err = |err| at.req.attach_error(err);
    let program = load_program(at.ebpf, at.program, at.req)?;
    let prog_id = program.info().map_err(attach_err)?.id();
    let made = replace(at.state, program, at.req, at.ifindex)?;
    crate::fault::step();
    // bpffs names cannot hold a dot.
    let fresh_pin = at.state.path().join(format!("prog_new_{}", at.ifindex));
    crate::pin::remove_pin(&fresh_pin)?;
    program
        .pin(&fresh_pin)
        .map_err(|err| at.req.pin_error("pinning its program", err))?;
    crate::fault::step();
    std::fs::rename(&fresh_pin, at.state.program(at.ifindex))
        .map_err(|err| at.req.pin_error("pinning its program", err))?;
    crate::fault::step();
    record_replaced(at.state, at.maps, at.req, at.ifindex, prog_id)?;
    Ok(Made {
        attachment: made,
        native_error: None,
        prog_id,
    })
}

/// Puts `next` into the loaded object's program array: the kernel refuses a program it could
/// not tail-call.
fn set_next(ebpf: &mut aya::Ebpf, next: &NextProgram, req: &AttachRequest) -> Result<(), Error> {
    let map = ebpf
        .map_mut(map_names::NEXT)
        .expect("mcfilter's object has the next program's array");
    let mut array: ProgramArray<&mut MapData> =
        ProgramArray::try_from(map).map_err(|err| Error::Map {
            name: map_names::NEXT,
            err,
        })?;
    array.set(0, &next.fd, 0).map_err(|_| Error::Unchainable {
        iface: req.iface.clone(),
        next: format!("id:{}", next.id),
        why: Unchainable::Refused,
    })
}

/// Attaches `program` in front of `next` through netlink: one atomic replace of the program
/// there now, or, on an interface with none, an attach that fails if one appeared meanwhile.
fn attach(
    program: &Xdp,
    next: &NextProgram,
    req: &AttachRequest,
    ifindex: u32,
) -> Result<Attachment, Error> {
    let ours = program.fd().map_err(|err| req.attach_error(err))?;
    if let Some(mode) = next.replaces {
        let flag = mode.flag().ok_or_else(|| Error::Unchainable {
            iface: req.iface.clone(),
            next: Next::Existing.to_string(),
            why: Unchainable::Offloaded,
        })?;
        netlink::attach_xdp(
            ifindex,
            ours.as_fd(),
            flag | XDP_FLAGS_REPLACE,
            Some(next.fd.as_fd()),
        )
        .map_err(|err| req.swap_error(err))?;
        return Ok(attachment(mode));
    }
    attach_fresh(ours.as_fd(), req, ifindex).map(attachment)
}

/// Attaches `program` through netlink to an interface with no XDP program, in the first of the
/// request's modes the driver supports; fails if a program appeared meanwhile.
pub(super) fn attach_fresh(
    program: BorrowedFd<'_>,
    req: &AttachRequest,
    ifindex: u32,
) -> Result<XdpMode, Error> {
    for mode in req.mode.tries().iter().map(|&mode| XdpMode::from(mode)) {
        let flag = mode.flag().unwrap_or_default();
        match netlink::attach_xdp(ifindex, program, flag | XDP_FLAGS_UPDATE_IF_NOEXIST, None) {
            Ok(()) => return Ok(mode),
            Err(err) if err.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
            Err(err) => return Err(req.swap_error(err)),
        }
    }
    // Every mode tried said the driver does not support it.
    Err(Error::NativeUnsupported {
        iface: req.iface.clone(),
    })
}

/// Swaps `program` in for the chained program on `ifindex` (`attach --replace`): the one
/// pinned in the state, or whichever of mcfilter's programs netlink reports there (a replace
/// killed between the swap and the pin leaves the new one there and the old one pinned).
fn replace(
    state: &StateDir,
    program: &Xdp,
    req: &AttachRequest,
    ifindex: u32,
) -> Result<Attachment, Error> {
    let swap_err = |err| req.swap_error(err);
    let (id, mode) = netlink::attached(ifindex)
        .map_err(swap_err)?
        .ok_or_else(|| Error::ChainBroken {
            iface: req.iface.clone(),
        })?;
    let running = by_id(id).map_err(|_| Error::ChainBroken {
        iface: req.iface.clone(),
    })?;
    let pinned = ProgramInfo::from_pin(state.program(ifindex)).ok();
    let ours = pinned.as_ref().is_some_and(|pinned| pinned.id() == id)
        || matches!(running.name_as_str(), Some(PROGRAM_NAME | PROGRAM_NAME_IP));
    let flag = mode
        .flag()
        .filter(|_| ours)
        .ok_or_else(|| Error::ChainBroken {
            iface: req.iface.clone(),
        })?;
    let expected = running.fd().map_err(|err| req.attach_error(err))?;
    let new = program.fd().map_err(|err| req.attach_error(err))?;
    netlink::attach_xdp(
        ifindex,
        new.as_fd(),
        flag | XDP_FLAGS_REPLACE,
        Some(expected.as_fd()),
    )
    .map_err(swap_err)?;
    Ok(attachment(mode))
}

/// What `detach` left running on the interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandBack {
    /// No XDP program (mcfilter's link is gone).
    Nothing,
    /// The program mcfilter chained to (this id), in mcfilter's place.
    Next(u32),
    /// Whatever another tool put in place of mcfilter's chained program: left as it is.
    LeftAlone,
    /// libxdp's dispatcher (this id), running the other components without mcfilter
    /// (`attach --multiprog`).
    Dispatcher(u32),
}

/// Hands a chained interface back to its next program: one atomic netlink replace that expects
/// mcfilter's program, in the same mode. `next` is the next program's id (recorded at attach).
pub(super) fn hand_back(
    state: &StateDir,
    iface: &str,
    ifindex: u32,
    next: u32,
) -> Result<HandBack, Error> {
    let swap_err = |err| Error::ChainSwap {
        iface: iface.to_owned(),
        err,
    };
    let pinned_err = |err| Error::PinnedProgram {
        iface: iface.to_owned(),
        err,
    };
    let ours = ProgramInfo::from_pin(state.program(ifindex)).map_err(pinned_err)?;
    let Some((id, mode)) = netlink::attached(ifindex).map_err(swap_err)? else {
        return Ok(HandBack::LeftAlone);
    };
    if id != ours.id() {
        return Ok(HandBack::LeftAlone);
    }
    let flag = mode.flag().unwrap_or_default() | XDP_FLAGS_REPLACE;
    let ours_fd = ours.fd().map_err(pinned_err)?;
    // The next program lives as long as the program array holds it, so it is there to find.
    let next_fd = by_id(next).and_then(|info| {
        info.fd().map_err(|_| Error::NoSuchProgram {
            next: format!("id:{next}"),
        })
    })?;
    netlink::attach_xdp(ifindex, next_fd.as_fd(), flag, Some(ours_fd.as_fd())).map_err(swap_err)?;
    Ok(HandBack::Next(next))
}

/// The id of the program netlink reports on `ifindex` now, if any.
pub fn running(ifindex: u32) -> Option<u32> {
    netlink::attached(ifindex).ok().flatten().map(|(id, _)| id)
}

pub(super) fn attachment(mode: XdpMode) -> Attachment {
    match mode {
        XdpMode::Skb => Attachment::Skb,
        XdpMode::Driver | XdpMode::Hardware => Attachment::Native,
    }
}
