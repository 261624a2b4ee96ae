//! Loading the program and attaching it through a pinned bpf_link, or swapping it in through
//! one (`--replace`); the records of what runs where.

use std::io;

use aya::programs::{
    Xdp,
    links::{FdLink, PinnedLink},
    xdp::XdpLink,
};
use mcfilter_common::{IfaceInfo, IfaceMeta};

use super::{AttachRequest, Attachment, Mode, undone};
use crate::{Error, maps::Maps, netlink, pin::StateDir, sys};

pub(super) fn attach_program(
    ebpf: &mut aya::Ebpf,
    name: &str,
    state: &StateDir,
    maps: &mut Maps,
    req: &AttachRequest,
    ifindex: u32,
) -> Result<(Attachment, Option<String>, u32), Error> {
    let attach_err = |err| req.attach_error(err);
    let program = load_program(ebpf, name, req)?;

    let mut native_error = None;
    let mut made = None;
    for &attachment in req.mode.tries() {
        match program.attach_to_if_index(ifindex, attachment.into()) {
            Ok(link_id) => {
                made = Some((attachment, link_id));
                break;
            }
            Err(err) if matches!(errno(&err), Some(libc::EBUSY | libc::EEXIST)) => {
                if !req.force {
                    return Err(Error::ForeignProgram {
                        iface: req.iface.clone(),
                    });
                }
                remove_foreign(req, ifindex)?;
                match program.attach_to_if_index(ifindex, attachment.into()) {
                    Ok(link_id) => {
                        made = Some((attachment, link_id));
                        break;
                    }
                    Err(err) => return Err(attach_err(err)),
                }
            }
            Err(err) if attachment == Attachment::Native && req.mode == Mode::Auto => {
                native_error = Some(if errno(&err) == Some(libc::EOPNOTSUPP) {
                    "the driver has no native XDP support".to_owned()
                } else {
                    error_chain(&err)
                });
            }
            Err(err)
                if attachment == Attachment::Native && errno(&err) == Some(libc::EOPNOTSUPP) =>
            {
                return Err(Error::NativeUnsupported {
                    iface: req.iface.clone(),
                });
            }
            Err(err) => return Err(attach_err(err)),
        }
    }
    let (attachment, link_id) = made.ok_or_else(|| req.link_error("no XDP mode to try".into()))?;
    crate::fault::step();
    let prog_id = program.info().map_err(attach_err)?.id();
    let link = program.take_link(link_id).map_err(attach_err)?;
    let link_err = |err: String| req.link_error(err);
    let fd_link = FdLink::try_from(link).map_err(|err| {
        link_err(format!(
            "the kernel made no bpf_link ({err}); XDP through a bpf_link needs Linux 5.9"
        ))
    })?;
    // The records first, the link's pin last: until it is pinned, the link lives only as long as
    // this process (a kill detaches the program), and the interface counts as attached only once
    // it is (see `status`). Records left by a failure or a kill are removed by the next attach
    // or detach.
    let info = IfaceInfo {
        name: sys::name_to_bytes(&req.iface),
        mode: attachment.code(),
        prog_id,
    };
    maps.record_iface(ifindex, info)?;
    crate::fault::step();
    crate::maps::set_iface_meta(state, ifindex, this_build(req.service, 0))?;
    crate::fault::step();
    // If pinning fails, dropping the link detaches the program again.
    if let Err(err) = fd_link.pin(state.link(ifindex)) {
        undone(
            &req.iface,
            "forgetting its record",
            maps.forget_iface(ifindex),
        );
        let meta = crate::maps::forget_iface_meta(state, ifindex);
        undone(&req.iface, "forgetting its build record", meta);
        return Err(link_err(format!("pinning: {err}")));
    }
    crate::fault::step();
    Ok((attachment, native_error, prog_id))
}

/// Swaps this build's program in through the pinned link (`bpf_link_update`: atomic, so no
/// packet meets the interface without a program) and records its id.
pub(super) fn replace_program(
    ebpf: &mut aya::Ebpf,
    name: &str,
    state: &StateDir,
    maps: &mut Maps,
    req: &AttachRequest,
    ifindex: u32,
) -> Result<(Attachment, Option<String>, u32), Error> {
    let attach_err = |err| req.attach_error(err);
    let link_err = |err: String| req.link_error(err);
    let program = load_program(ebpf, name, req)?;
    let pinned = PinnedLink::from_pin(state.link(ifindex)).map_err(|e| link_err(e.to_string()))?;
    let link = XdpLink::try_from(FdLink::from(pinned)).map_err(|e| link_err(e.to_string()))?;
    let link_id = program.attach_to_link(link).map_err(attach_err)?;
    crate::fault::step();
    // The link stays pinned where it was; this handle only closes its fd when dropped.
    drop(program.take_link(link_id).map_err(attach_err)?);
    let prog_id = program.info().map_err(attach_err)?.id();
    let info = record_replaced(state, maps, req, ifindex, prog_id)?;
    let attachment = Attachment::from_code(info.mode).unwrap_or_else(|| {
        log::warn!(
            "{}: the state records mode {} for it, which this build does not know; reporting native",
            req.iface,
            info.mode
        );
        Attachment::Native
    });
    Ok((attachment, None, prog_id))
}

/// Records program `prog_id` as the one a replace swapped in on `ifindex`, keeping the rest of
/// the interface's records (its mode, its next program); returns its record.
pub(super) fn record_replaced(
    state: &StateDir,
    maps: &mut Maps,
    req: &AttachRequest,
    ifindex: u32,
    prog_id: u32,
) -> Result<IfaceInfo, Error> {
    let mut info = maps
        .ifaces()?
        .into_iter()
        .find_map(|(index, info)| (index == ifindex).then_some(info))
        .ok_or_else(|| req.link_error("no record of this interface in the state".into()))?;
    info.prog_id = prog_id;
    maps.record_iface(ifindex, info)?;
    crate::fault::step();
    // A service adopting the interface makes it its own; otherwise whoever managed it still does.
    let meta = crate::maps::iface_meta(state)?.get(&ifindex).copied();
    let managed = meta.is_some_and(|meta| meta.service != 0);
    let next = meta.map_or(0, |meta| meta.next);
    crate::maps::set_iface_meta(state, ifindex, this_build(req.service || managed, next))?;
    crate::fault::step();
    Ok(info)
}

/// The record of an interface this build's program now runs on, managed by the service or not,
/// chained to program `next` (0: not chained).
pub(super) fn this_build(service: bool, next: u32) -> IfaceMeta {
    IfaceMeta {
        build: crate::build::this(),
        service: u32::from(service),
        next,
    }
}

/// Program `name` of the loaded object (the one for the interface's framing), loaded into the
/// kernel.
pub(super) fn load_program<'a>(
    ebpf: &'a mut aya::Ebpf,
    name: &str,
    req: &AttachRequest,
) -> Result<&'a mut Xdp, Error> {
    let attach_err = |err| req.attach_error(err);
    let program = loaded(ebpf, name, req)?;
    match program.load() {
        Ok(()) => Ok(program),
        Err(aya::programs::ProgramError::LoadError { verifier_log, .. }) => {
            let log = verifier_log.to_string();
            Err(Error::Rejected {
                release: crate::kernel::release(),
                reason: crate::kernel::verifier_reason(&log),
                log,
            })
        }
        Err(err) => Err(attach_err(err)),
    }
}

/// Program `name` of the object, as an XDP program.
pub(super) fn loaded<'a>(
    ebpf: &'a mut aya::Ebpf,
    name: &str,
    req: &AttachRequest,
) -> Result<&'a mut Xdp, Error> {
    let attach_err = |err| req.attach_error(err);
    ebpf.program_mut(name)
        .ok_or_else(|| attach_err(aya::programs::ProgramError::UnexpectedProgramType))?
        .try_into()
        .map_err(attach_err)
}

/// `--force`: removes whatever XDP program netlink attached to the interface, in either mode.
/// A program held by a bpf_link cannot be removed this way, and is left alone.
pub(super) fn remove_foreign(req: &AttachRequest, ifindex: u32) -> Result<(), Error> {
    for mode in [netlink::XDP_FLAGS_DRV_MODE, netlink::XDP_FLAGS_SKB_MODE] {
        match netlink::detach_xdp(ifindex, mode) {
            Ok(()) => {}
            Err(err) if err.raw_os_error() == Some(libc::EBUSY) => {
                return Err(Error::ForeignLink {
                    iface: req.iface.clone(),
                });
            }
            // A mode the driver does not support holds no program.
            Err(err) if err.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
            Err(err) => {
                return Err(req.link_error(format!("removing the foreign XDP program: {err}")));
            }
        }
    }
    Ok(())
}

/// The errno somewhere in an error's source chain.
fn errno(err: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && let Some(code) = io.raw_os_error()
        {
            return Some(code);
        }
        next = e.source();
    }
    None
}

/// `a: b: c` for an error and its sources.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        text.push_str(": ");
        text.push_str(&e.to_string());
        next = e.source();
    }
    text
}
