//! The program `attach --then` chains to: named on the command line (`existing`, `id:N`, a
//! pin), found, and checked that mcfilter can tail-call it.

use std::{fmt, path::PathBuf, str::FromStr};

use aya::programs::{ProgramFd, ProgramInfo, loaded_programs};
use aya_obj::generated::bpf_prog_type;

use mcfilter_common::{PROGRAM_NAME, PROGRAM_NAME_IP};

use super::super::{AttachRequest, Mode};
use crate::{
    Error,
    netlink::{self, XdpMode},
};

/// The program `attach --then` puts behind mcfilter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// The program attached to the interface now (by another tool, through netlink).
    Existing,
    /// A loaded program, by id (`id:N`).
    Id(u32),
    /// A program pinned in bpffs, by path.
    Pin(PathBuf),
}

/// Text that names no next program.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NextError {
    /// `id:` followed by something that is not a program id.
    #[error("'{0}' is not a program id (id:N, N > 0)")]
    Id(String),
    /// Neither `existing`, `id:N` nor an absolute path.
    #[error("'{0}' is not `existing`, `id:N` or the absolute path of a pinned program")]
    Unknown(String),
}

impl FromStr for Next {
    type Err = NextError;

    fn from_str(text: &str) -> Result<Self, NextError> {
        if text == "existing" {
            return Ok(Next::Existing);
        }
        if let Some(id) = text.strip_prefix("id:") {
            return match id.parse() {
                Ok(id) if id > 0 => Ok(Next::Id(id)),
                _ => Err(NextError::Id(id.to_owned())),
            };
        }
        if text.starts_with('/') {
            return Ok(Next::Pin(PathBuf::from(text)));
        }
        Err(NextError::Unknown(text.to_owned()))
    }
}

impl fmt::Display for Next {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Next::Existing => f.write_str("existing"),
            Next::Id(id) => write!(f, "id:{id}"),
            Next::Pin(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The program a chained mcfilter hands its passed packets to, found and checked.
pub(in crate::filter) struct NextProgram {
    pub fd: ProgramFd,
    pub id: u32,
    /// The program on the interface now, which mcfilter replaces (`--then existing`), and its
    /// mode; `None` when the interface has no program.
    pub(super) replaces: Option<XdpMode>,
}

/// Why mcfilter cannot run in front of a program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unchainable {
    /// Not an XDP program.
    NotXdp,
    /// Offloaded to a NIC: it cannot be tail-called.
    Offloaded,
    /// One of mcfilter's own programs.
    OwnProgram,
    /// Attached in another XDP mode than the one asked for.
    OtherMode,
    /// The kernel refused it in the program array (JIT or `xdp.frags` mismatch).
    Refused,
    /// The interface has another XDP program; `--then existing` chains to it.
    Occupied,
}

impl Unchainable {
    /// Why, in the words of the one-line refusal.
    pub fn why(self) -> &'static str {
        match self {
            Unchainable::NotXdp => "it is not an XDP program",
            Unchainable::Offloaded => {
                "it is offloaded to the NIC, where mcfilter cannot run in front of it"
            }
            Unchainable::OwnProgram => "it is mcfilter's own program",
            Unchainable::OtherMode => {
                "it runs in another XDP mode than --mode asks for (mcfilter takes the mode of the program it replaces)"
            }
            Unchainable::Refused => {
                "the kernel cannot tail-call it from mcfilter (its xdp.frags support or its JIT differs)"
            }
            Unchainable::Occupied => {
                "the interface has another XDP program already; `--then existing` chains to that one"
            }
        }
    }
}

/// Finds and checks `--then`'s program for interface `ifindex`, before anything changes.
pub(in crate::filter) fn resolve(
    next: &Next,
    req: &AttachRequest,
    ifindex: u32,
) -> Result<NextProgram, Error> {
    let refuse = |why| Error::Unchainable {
        iface: req.iface.clone(),
        next: next.to_string(),
        why,
    };
    let attached = netlink::attached(ifindex).map_err(|err| req.netlink_error(err))?;
    let (info, replaces) = match next {
        Next::Existing => {
            let (id, mode) = attached.ok_or_else(|| Error::NothingToChain {
                iface: req.iface.clone(),
            })?;
            (by_id(id)?, Some(mode))
        }
        Next::Id(id) => (by_id(*id)?, None),
        Next::Pin(path) => (
            ProgramInfo::from_pin(path).map_err(|_| Error::NoSuchProgram {
                next: next.to_string(),
            })?,
            None,
        ),
    };
    if replaces.is_none() && attached.is_some() {
        return Err(refuse(Unchainable::Occupied));
    }
    if info.program_type() != bpf_prog_type::BPF_PROG_TYPE_XDP {
        return Err(refuse(Unchainable::NotXdp));
    }
    if matches!(info.name_as_str(), Some(PROGRAM_NAME | PROGRAM_NAME_IP)) {
        return Err(refuse(Unchainable::OwnProgram));
    }
    match (replaces, req.mode) {
        (Some(XdpMode::Hardware), _) => return Err(refuse(Unchainable::Offloaded)),
        (Some(XdpMode::Driver), Mode::Skb) | (Some(XdpMode::Skb), Mode::Native) => {
            return Err(refuse(Unchainable::OtherMode));
        }
        _ => {}
    }
    Ok(NextProgram {
        fd: info.fd().map_err(|err| req.attach_error(err))?,
        id: info.id(),
        replaces,
    })
}

pub(super) fn by_id(id: u32) -> Result<ProgramInfo, Error> {
    loaded_programs()
        .filter_map(Result::ok)
        .find(|info| info.id() == id)
        .ok_or(Error::NoSuchProgram {
            next: Next::Id(id).to_string(),
        })
}

/// The name of loaded program `id`, if it is loaded and named.
pub fn program_name(id: u32) -> Option<String> {
    by_id(id)
        .ok()
        .and_then(|info| info.name_as_str().map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::Next;

    #[test]
    fn next_programs_are_named_as_on_the_command_line() {
        for (text, next) in [
            ("existing", Next::Existing),
            ("id:7", Next::Id(7)),
            (
                "/sys/fs/bpf/lb/prog",
                Next::Pin("/sys/fs/bpf/lb/prog".into()),
            ),
        ] {
            assert_eq!(text.parse::<Next>(), Ok(next.clone()));
            assert_eq!(next.to_string(), text);
        }
        for bad in [
            "",
            "id:",
            "id:0",
            "id:-1",
            "id:x",
            "relative/path",
            "Existing",
        ] {
            assert!(bad.parse::<Next>().is_err(), "{bad}");
        }
    }
}
