//! Removing an XDP program that something else attached through netlink (`ip link set dev X
//! xdp ...`), for `attach --force`. One RTM_SETLINK request with IFLA_XDP_FD = -1 per XDP mode;
//! aya keeps its netlink code private, and this is all mcfilter needs of it.

use std::{
    io,
    mem::size_of,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

const RTM_SETLINK: u16 = 19;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const IFLA_XDP: u16 = 43;
const NLA_F_NESTED: u16 = 0x8000;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_FLAGS: u16 = 3;
/// XDP attach modes (`XDP_FLAGS_*`).
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// The request: nlmsghdr, ifinfomsg, then IFLA_XDP { IFLA_XDP_FD, IFLA_XDP_FLAGS }.
#[repr(C)]
struct Request {
    // struct nlmsghdr
    len: u32,
    kind: u16,
    flags: u16,
    seq: u32,
    pid: u32,
    // struct ifinfomsg
    family: u8,
    _pad: u8,
    if_type: u16,
    index: i32,
    if_flags: u32,
    change: u32,
    // IFLA_XDP (nested)
    xdp_len: u16,
    xdp_kind: u16,
    fd_len: u16,
    fd_kind: u16,
    fd: i32,
    flags_len: u16,
    flags_kind: u16,
    xdp_flags: u32,
}

/// Removes the XDP program attached in `mode` (one of the `XDP_FLAGS_*_MODE`) from `ifindex`.
/// Nothing attached in that mode is not an error.
pub fn detach_xdp(ifindex: u32, mode: u32) -> io::Result<()> {
    // SAFETY: plain socket(2); the fd is owned below.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh, valid descriptor that nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    let request = Request {
        len: size_of::<Request>() as u32,
        kind: RTM_SETLINK,
        flags: NLM_F_REQUEST | NLM_F_ACK,
        seq: 1,
        pid: 0,
        family: libc::AF_UNSPEC as u8,
        _pad: 0,
        if_type: 0,
        index: ifindex as i32,
        if_flags: 0,
        change: 0,
        xdp_len: 4 + 8 + 8,
        xdp_kind: IFLA_XDP | NLA_F_NESTED,
        fd_len: 8,
        fd_kind: IFLA_XDP_FD,
        fd: -1,
        flags_len: 8,
        flags_kind: IFLA_XDP_FLAGS,
        xdp_flags: mode,
    };
    // SAFETY: `request` is plain data of the length given; the socket is open.
    let sent = unsafe {
        libc::send(
            socket.as_raw_fd(),
            (&raw const request).cast(),
            size_of::<Request>(),
            0,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    // The ack: nlmsghdr then, for NLMSG_ERROR, the (negative) errno.
    let mut reply = [0u8; 512];
    // SAFETY: `reply` is writable for its length.
    let got = unsafe {
        libc::recv(
            socket.as_raw_fd(),
            reply.as_mut_ptr().cast(),
            reply.len(),
            0,
        )
    };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    let kind = u16::from_ne_bytes([reply[4], reply[5]]);
    if got >= 20 && kind == NLMSG_ERROR {
        let errno = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
        if errno != 0 {
            return Err(io::Error::from_raw_os_error(-errno));
        }
    }
    Ok(())
}
