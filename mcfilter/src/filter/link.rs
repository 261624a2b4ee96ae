//! Loading the program and attaching it through a pinned bpf_link, or swapping it in through
//! one (`--replace`); the records of what runs where.

use std::io;

use aya::programs::{
    Xdp,
    links::{FdLink, PinnedLink},
    xdp::{XdpLink, XdpLinkId},
};
use mcfilter_common::{IfaceInfo, IfaceMeta};

use super::{AttachRequest, Attaching, Attachment, Made, undone};
use crate::{Error, maps::Maps, netlink, pin::StateDir, sys};

pub(super) fn attach_program(at: &mut Attaching<'_>) -> Result<Made, Error> {
    let attach_err = |err| at.req.attach_error(err);
    let program = load_program(at.ebpf, at.program, at.req)?;
    let (attachment, link_id, native_error) = attach_first(program, at.req, at.ifindex)?;
    crate::fault::step();
    let prog_id = program.info().map_err(attach_err)?.id();
    let link = program.take_link(link_id).map_err(attach_err)?;
    let fd_link = FdLink::try_from(link).map_err(|_| Error::MissingFeature {
        feature: "XDP through a bpf_link",
        since: "5.9",
        release: crate::kernel::release(),
    })?;
    // The records first, the link's pin last: until it is pinned, the link lives only as long as
    // this process (a kill detaches the program), and the interface counts as attached only once
    // it is (see `status`). Records left by a failure or a kill are removed by the next attach
    // or detach.
    let info = IfaceInfo {
        name: sys::name_to_bytes(&at.req.iface),
        mode: attachment.code(),
        prog_id,
    };
    at.maps.record_iface(at.ifindex, info)?;
    crate::fault::step();
    crate::maps::set_iface_meta(at.state, at.ifindex, this_build(at.req.service, 0))?;
    crate::fault::step();
    // If pinning fails, dropping the link detaches the program again.
    if let Err(err) = fd_link.pin(at.state.link(at.ifindex)) {
        undone(
            &at.req.iface,
            "forgetting its record",
            at.maps.forget_iface(at.ifindex),
        );
        let meta = crate::maps::forget_iface_meta(at.state, at.ifindex);
        undone(&at.req.iface, "forgetting its build record", meta);
        return Err(at.req.pin_error("pinning its link", err));
    }
    crate::fault::step();
    Ok(Made {
        attachment,
        native_error,
        prog_id,
    })
}

/// Attaches `program` in the first of the request's modes that takes it (removing another
/// tool's program first with `--force`); with `auto`, says why native mode did not.
fn attach_first(
    program: &mut Xdp,
    req: &AttachRequest,
    ifindex: u32,
) -> Result<(Attachment, XdpLinkId, Option<String>), Error> {
    let attach_err = |err| req.attach_error(err);
    let mut native_error = None;
    let mut tries = req.mode.tries().iter().peekable();
    while let Some(&attachment) = tries.next() {
        let err = match program.attach_to_if_index(ifindex, attachment.into()) {
            Ok(link_id) => return Ok((attachment, link_id, native_error)),
            Err(err) => err,
        };
        if matches!(errno(&err), Some(libc::EBUSY | libc::EEXIST)) {
            if !req.force {
                return Err(Error::ForeignProgram {
                    iface: req.iface.clone(),
                });
            }
            remove_foreign(req, ifindex)?;
            return program
                .attach_to_if_index(ifindex, attachment.into())
                .map(|link_id| (attachment, link_id, native_error))
                .map_err(attach_err);
        }
        let unsupported = errno(&err) == Some(libc::EOPNOTSUPP);
        if attachment == Attachment::Native && tries.peek().is_some() {
            // `auto`: skb mode next.
            native_error = Some(if unsupported {
                "the driver has no native XDP support".to_owned()
            } else {
                error_chain(&err)
            });
        } else if attachment == Attachment::Native && unsupported {
            return Err(Error::NativeUnsupported {
                iface: req.iface.clone(),
            });
        } else {
            return Err(attach_err(err));
        }
    }
    unreachable!("every mode has a first try")
}

/// Swaps this build's program in through the pinned link (`bpf_link_update`: atomic, so no
/// packet meets the interface without a program) and records its id.
pub(super) fn replace_program(at: &mut Attaching<'_>) -> Result<Made, Error> {
    let attach_err = |err| at.req.attach_error(err);
    let program = load_program(at.ebpf, at.program, at.req)?;
    let pinned = PinnedLink::from_pin(at.state.link(at.ifindex))
        .map_err(|err| at.req.pin_error("reading its pinned link", err))?;
    let link = XdpLink::try_from(FdLink::from(pinned))
        .map_err(|err| at.req.pin_error("reading its pinned link", err))?;
    let link_id = program.attach_to_link(link).map_err(attach_err)?;
    crate::fault::step();
    // The link stays pinned where it was; this handle only closes its fd when dropped.
    drop(program.take_link(link_id).map_err(attach_err)?);
    let prog_id = program.info().map_err(attach_err)?.id();
    let info = record_replaced(at.state, at.maps, at.req, at.ifindex, prog_id)?;
    let attachment = Attachment::from_code(info.mode).unwrap_or_else(|| {
        log::warn!(
            "{}: the at.state records mode {} for it, which this build does not know; reporting native",
            at.req.iface,
            info.mode
        );
        Attachment::Native
    });
    Ok(Made {
        attachment,
        native_error: None,
        prog_id,
    })
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
        .ok_or_else(|| Error::NotAttachedTo {
            iface: req.iface.clone(),
        })?;
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

/// The records of a program attached through netlink (`--then`, `--multiprog`), which holds no
/// link: they and the program's pin in the state come before the swap that puts it on the
/// interface, and a failure of any step undoes them, so the interface keeps what it had and the
/// state does not hold it. Its fields are the attach's (see [`Attaching`]).
pub(super) struct NetlinkRecords<'a> {
    pub(super) state: &'a StateDir,
    pub(super) maps: &'a mut Maps,
    pub(super) req: &'a AttachRequest,
    pub(super) ifindex: u32,
    pub(super) prog_id: u32,
    /// The program it chains to (`--then`), 0 for none.
    pub(super) next: u32,
    /// Where its program is pinned in the state dir.
    pub(super) pin: std::path::PathBuf,
}

impl NetlinkRecords<'_> {
    /// Writes the interface's record, in the mode the swap is expected to get, and its build
    /// record; undone if either fails.
    pub(super) fn write(&mut self, planned: Attachment) -> Result<(), Error> {
        let written = self.record(planned).and_then(|()| {
            crate::fault::step();
            let meta = this_build(self.req.service, self.next);
            crate::maps::set_iface_meta(self.state, self.ifindex, meta)
        });
        match written {
            Ok(()) => {
                crate::fault::step();
                Ok(())
            }
            Err(err) => Err(self.undo(err)),
        }
    }

    /// Undoes the records and the program's pin after a failed step; returns that step's error.
    pub(super) fn undo(&mut self, err: Error) -> Error {
        let iface = &self.req.iface;
        undone(
            iface,
            "unpinning its program",
            crate::pin::remove_pin(&self.pin),
        );
        undone(
            iface,
            "forgetting its record",
            self.maps.forget_iface(self.ifindex),
        );
        let meta = crate::maps::forget_iface_meta(self.state, self.ifindex);
        undone(iface, "forgetting its build record", meta);
        err
    }

    /// The swap got mode `made`: the record follows it if it was not the one planned.
    pub(super) fn finish(mut self, planned: Attachment, made: Attachment) -> Result<Made, Error> {
        crate::fault::step();
        if made != planned {
            self.record(made)?;
        }
        Ok(Made {
            attachment: made,
            native_error: None,
            prog_id: self.prog_id,
        })
    }

    fn record(&mut self, mode: Attachment) -> Result<(), Error> {
        let info = IfaceInfo {
            name: sys::name_to_bytes(&self.req.iface),
            mode: mode.code(),
            prog_id: self.prog_id,
        };
        self.maps.record_iface(self.ifindex, info)
    }
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
                return Err(Error::RemoveForeign {
                    iface: req.iface.clone(),
                    err,
                });
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
