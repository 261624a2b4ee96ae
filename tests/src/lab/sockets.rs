//! The lab's sockets: raw Ethernet frames out of a host, UDP senders and listeners, receiving
//! with a deadline, and socket options.

use std::{
    ffi::CString,
    io::{self, ErrorKind},
    mem::size_of,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket},
    os::fd::{AsFd, AsRawFd as _},
    time::{Duration, Instant},
};

use super::{Host, IFACE};
use crate::netns::NetNs;

impl Host {
    /// Sends raw Ethernet frames out of this host's interface (forged sources, VLAN tags:
    /// whatever the frames say). Returns how many were sent.
    pub fn send_frames(&self, frames: &[Vec<u8>]) -> usize {
        self.ns
            .run(|| send_frames(frames).expect("send raw frames"))
    }
}

/// Gives frames in flight time to arrive (the lab's queues are short and local).
pub fn settle() {
    std::thread::sleep(Duration::from_millis(100));
}

fn send_frames(frames: &[Vec<u8>]) -> io::Result<usize> {
    let name = CString::new(IFACE).expect("name");
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: plain socket(2) call; the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: sockaddr_ll is plain data; zero is a valid starting value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = ifindex as i32;
    let mut sent = 0;
    let mut result = Ok(());
    for frame in frames {
        // SAFETY: `frame` and `addr` are valid for the lengths given.
        let rc = unsafe {
            libc::sendto(
                fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc < 0 {
            result = Err(io::Error::last_os_error());
            break;
        }
        sent += 1;
    }
    // SAFETY: `fd` is ours and open.
    unsafe { libc::close(fd) };
    result.map(|()| sent)
}

impl Host {
    /// A nonblocking dual-stack UDP socket bound to `port` in this host's namespace.
    pub fn udp_listener(&self, port: u16) -> UdpSocket {
        let socket = self
            .ns
            .run(|| UdpSocket::bind(("::", port)).expect("bind udp"));
        socket.set_nonblocking(true).expect("nonblocking");
        socket
    }

    /// A UDP socket in this host's namespace for sending to `dst`'s family.
    pub fn udp_sender(&self, dst: IpAddr) -> UdpSocket {
        let bind: SocketAddr = match dst {
            IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        self.ns.run(|| UdpSocket::bind(bind).expect("bind sender"))
    }

    /// Sends `count` datagrams of `payload` from this host to each of `dsts` on `port`.
    pub fn send_udp(&self, dsts: &[IpAddr], port: u16, payload: &[u8], count: usize) {
        for &dst in dsts {
            let socket = self.udp_sender(dst);
            for _ in 0..count {
                socket.send_to(payload, (dst, port)).expect("send");
            }
        }
    }
}

/// Receives until `count` datagrams arrived or 3 s passed; returns what arrived.
pub fn receive(socket: &UdpSocket, count: usize) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    while got.len() < count && Instant::now() < deadline {
        match socket.recv_from(&mut buf) {
            Ok((n, _)) => got.push(buf[..n].to_vec()),
            Err(err) if err.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            // A signal handler ran (see `crate::uninterrupted`): try again.
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => panic!("recv: {err}"),
        }
    }
    got
}

/// Whether any datagram is waiting on a nonblocking socket.
pub fn pending(socket: &UdpSocket) -> bool {
    let mut buf = [0u8; 2048];
    !matches!(
        crate::uninterrupted(|| socket.recv_from(&mut buf)),
        Err(e) if e.kind() == ErrorKind::WouldBlock
    )
}

/// setsockopt with a byte-string value.
pub fn set_option(socket: &impl AsFd, level: i32, name: i32, value: &[u8]) {
    // SAFETY: a valid socket and a buffer of the given length.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            level,
            name,
            value.as_ptr().cast(),
            value.len() as u32,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt({level}, {name}): {}",
        io::Error::last_os_error()
    );
}

/// Sets a socket's send or receive buffer (`SO_SNDBUFFORCE`, `SO_RCVBUFFORCE`: root may go past
/// `net.core.wmem_max` and `rmem_max`) to `bytes`, and stops the kernel from tuning it.
pub fn force_buffer(socket: &impl AsFd, option: i32, bytes: usize) {
    let bytes = i32::try_from(bytes).expect("a buffer size under 2 GiB");
    set_option(socket, libc::SOL_SOCKET, option, &bytes.to_ne_bytes());
}

/// Whether a TCP connection from `ns`, with `from` as its source address, reaches `server`
/// within `within`. The source is chosen by the route to the lab's 198.18.0.0/24 (`ip route
/// ... src`), so plain std sockets do.
pub fn connects_from(ns: &NetNs, from: IpAddr, server: SocketAddr, within: Duration) -> bool {
    ns.ip(&[
        "route",
        "replace",
        "198.18.0.0/24",
        "dev",
        IFACE,
        "src",
        &from.to_string(),
    ]);
    ns.run(|| {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&server, Duration::from_millis(200)).is_ok() {
                return true;
            }
        }
        false
    })
}
