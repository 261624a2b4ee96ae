//! XDP through netlink (RTM_GETLINK, RTM_SETLINK with IFLA_XDP): what another tool attached to
//! an interface, removing it (`attach --force`), and the atomic swaps of chaining (`attach
//! --then`, and `detach` handing the interface back): IFLA_XDP_EXPECTED_FD with
//! XDP_FLAGS_REPLACE makes the kernel swap only if the program it expects is still there
//! (Linux 5.7). mcfilter's own programs are otherwise held by bpf_links (aya's), which netlink
//! cannot replace.

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{LinkAttribute, LinkMessage, LinkXdp, XdpAttached},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// XDP attach modes and flags (`XDP_FLAGS_*`, linux/if_link.h).
pub(crate) const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1 << 0;
pub(crate) const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
pub(crate) const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
pub(crate) const XDP_FLAGS_REPLACE: u32 = 1 << 4;

/// Where an XDP program runs on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum XdpMode {
    /// In the driver (native).
    Driver,
    /// In the generic path (skb).
    Skb,
    /// Offloaded to the NIC.
    Hardware,
}

impl XdpMode {
    /// The `XDP_FLAGS_*_MODE` that selects this mode, `None` for offload (which mcfilter never
    /// uses).
    pub(crate) fn flag(self) -> Option<u32> {
        match self {
            XdpMode::Driver => Some(XDP_FLAGS_DRV_MODE),
            XdpMode::Skb => Some(XDP_FLAGS_SKB_MODE),
            XdpMode::Hardware => None,
        }
    }
}

/// The XDP program attached to an interface through netlink or a bpf_link, as netlink reports
/// it: `None` when there is none, and an error for several at once (one per mode), which
/// mcfilter does not chain to.
pub(crate) fn attached(ifindex: u32) -> io::Result<Option<(u32, XdpMode)>> {
    let mut message = LinkMessage::default();
    message.header.index = ifindex;
    let replies = request(RouteNetlinkMessage::GetLink(message))?;
    let xdp = replies
        .into_iter()
        .find_map(|reply| match reply {
            RouteNetlinkMessage::NewLink(link) => Some(link.attributes),
            _ => None,
        })
        .ok_or_else(|| io::Error::other("the kernel described no such interface"))?
        .into_iter()
        .find_map(|attribute| match attribute {
            LinkAttribute::Xdp(xdp) => Some(xdp),
            _ => None,
        })
        .unwrap_or_default();
    let mode = xdp.iter().find_map(|nla| match nla {
        LinkXdp::Attached(mode) => Some(*mode),
        _ => None,
    });
    let mode = match mode {
        None | Some(XdpAttached::None) => return Ok(None),
        Some(XdpAttached::Driver) => XdpMode::Driver,
        Some(XdpAttached::SocketBuffer) => XdpMode::Skb,
        Some(XdpAttached::Hardware) => XdpMode::Hardware,
        Some(_) => {
            return Err(io::Error::other(
                "several XDP programs are attached (one per mode)",
            ));
        }
    };
    let id = xdp
        .iter()
        .find_map(|nla| match nla {
            LinkXdp::ProgId(id) => Some(*id),
            _ => None,
        })
        .ok_or_else(|| io::Error::other("the kernel named no program id"))?;
    Ok(Some((id, mode)))
}

/// Removes the XDP program attached through netlink in `mode` (one of the `XDP_FLAGS_*_MODE`)
/// from `ifindex`. Nothing attached in that mode is not an error; a program held by a bpf_link
/// is refused with EBUSY.
pub(crate) fn detach_xdp(ifindex: u32, mode: u32) -> io::Result<()> {
    set_xdp(ifindex, -1, mode, None)
}

/// Removes `expected` from `ifindex` (attached through netlink in the mode `flags` names),
/// atomically: the kernel refuses (EEXIST) if another program is there now.
pub(crate) fn detach_xdp_expected(
    ifindex: u32,
    flags: u32,
    expected: BorrowedFd<'_>,
) -> io::Result<()> {
    set_xdp(ifindex, -1, flags | XDP_FLAGS_REPLACE, Some(expected))
}

/// Attaches `program` to `ifindex` through netlink with `flags` (a mode and
/// XDP_FLAGS_UPDATE_IF_NOEXIST, or XDP_FLAGS_REPLACE with `expected`: then the kernel swaps
/// atomically, and only if `expected` is the program attached).
pub(crate) fn attach_xdp(
    ifindex: u32,
    program: BorrowedFd<'_>,
    flags: u32,
    expected: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    set_xdp(ifindex, program.as_raw_fd(), flags, expected)
}

fn set_xdp(ifindex: u32, fd: i32, flags: u32, expected: Option<BorrowedFd<'_>>) -> io::Result<()> {
    let mut message = LinkMessage::default();
    message.header.index = ifindex;
    let mut xdp = vec![LinkXdp::Fd(fd), LinkXdp::Flags(flags)];
    if let Some(expected) = expected {
        xdp.push(LinkXdp::ExpectedFd(expected.as_raw_fd() as u32));
    }
    message.attributes.push(LinkAttribute::Xdp(xdp));
    request(RouteNetlinkMessage::SetLink(message)).map(drop)
}

/// Sends one request and returns the messages that answer it, up to the kernel's ack.
fn request(message: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK;
    header.sequence_number = 1;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
    packet.finalize();
    let mut buffer = vec![0; packet.header.length as usize];
    packet.serialize(&mut buffer);
    socket.send(&buffer, 0)?;
    let mut replies = Vec::new();
    loop {
        let (data, _) = socket.recv_from_full()?;
        let mut offset = 0;
        while offset < data.len() {
            let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[offset..])
                .map_err(io::Error::other)?;
            let length = reply.header.length as usize;
            match reply.payload {
                NetlinkPayload::Error(error) => {
                    return match error.code {
                        None => Ok(replies),
                        Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                    };
                }
                NetlinkPayload::Done(_) => return Ok(replies),
                NetlinkPayload::InnerMessage(inner) => replies.push(inner),
                _ => {}
            }
            if length == 0 {
                return Err(io::Error::other("a netlink message of length 0"));
            }
            offset += length;
        }
    }
}
