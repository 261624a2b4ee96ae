//! A lab of network namespaces on one bridge: a server with the filter, and any number of
//! hosts. Addresses come from 198.18.0.0/24 and 2001:db8::/64 only; all traffic stays in the
//! lab's namespaces, which are removed on drop.

use std::{
    ffi::CString,
    io::{self, ErrorKind},
    mem::size_of,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    os::fd::{AsFd, AsRawFd as _},
    time::{Duration, Instant},
};

use crate::netns::NetNs;

/// The server's interface (the one the filter is attached to) and every host's.
pub const IFACE: &str = "eth0";

/// A namespace on the lab's bridge with one IPv4 and one IPv6 address.
pub struct Host {
    pub ns: NetNs,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
    pub mac: [u8; 6],
}

/// The switch (a bridge in its own namespace) and the server.
pub struct Lab {
    switch: NetNs,
    pub server: Host,
}

impl Lab {
    /// The setup most end-to-end tests start from: a lab, and the CLI run in its server's
    /// namespace with a state dir of its own (both named by `tag`).
    pub fn with_mcfilter(tag: &str) -> (Self, crate::cli::Mcfilter) {
        let lab = Lab::new(tag);
        let mcf = crate::cli::Mcfilter::new(tag).in_netns(&lab.server.ns);
        (lab, mcf)
    }

    /// A switch and a server at 198.18.0.1 / 2001:db8::1. `tag` (at most 4 characters) names
    /// the namespaces.
    pub fn new(tag: &str) -> Self {
        let switch = NetNs::new(&format!("{tag}w"));
        switch.ip(&["link", "add", "br0", "type", "bridge"]);
        switch.ip(&["link", "set", "br0", "up"]);
        let server = connect(&switch, &format!("{tag}s"), 1);
        Lab { switch, server }
    }

    /// Adds a host at 198.18.0.`last` / 2001:db8::`last` (the same digits, read as hex).
    pub fn host(&self, tag: &str, last: u8) -> Host {
        connect(&self.switch, tag, last)
    }

    /// Frames dropped on the lab's links before they reached a socket or the server's XDP
    /// program: a full backlog or XDP ring on a veth counts them as `tx_dropped` on the sending
    /// end or `rx_dropped` on the receiving one. Summed over every link of the switch, the server
    /// and `hosts`, so a count of what mcfilter dropped can be held against what reached it
    /// rather than against what a generator meant to send.
    pub fn dropped_on_links(&self, hosts: &[&Host]) -> u64 {
        let namespaces = [&self.switch, &self.server.ns]
            .into_iter()
            .chain(hosts.iter().map(|host| &host.ns));
        namespaces.map(dropped_in).sum()
    }

    /// Adds a host linked straight to the server's [`DIRECT_IFACE`] (no bridge: a bridge moves
    /// a frame's outer VLAN tag into packet metadata, which XDP on the far veth never sees), on
    /// 198.19.0.0/24 and 2001:db8:1::/64; the server is .1 / ::1 there.
    pub fn direct_host(&self, tag: &str, last: u8) -> Host {
        let ns = NetNs::new(tag);
        let mac = [0x02, 0, 0, 0, 1, last];
        crate::netns::run(std::process::Command::new("ip").args([
            "link",
            "add",
            DIRECT_IFACE,
            "address",
            "02:00:00:00:00:01",
            "netns",
            self.server.ns.name(),
            "type",
            "veth",
            "peer",
            "name",
            IFACE,
            "address",
            &format!("02:00:00:00:01:{last:02x}"),
            "netns",
            ns.name(),
        ]));
        let server = &self.server.ns;
        server.ip(&["addr", "add", "198.19.0.1/24", "dev", DIRECT_IFACE]);
        server.ip(&[
            "addr",
            "add",
            "2001:db8:1::1/64",
            "dev",
            DIRECT_IFACE,
            "nodad",
        ]);
        server.ip(&["link", "set", DIRECT_IFACE, "up"]);
        let v4 = Ipv4Addr::new(198, 19, 0, last);
        let v6: Ipv6Addr = format!("2001:db8:1::{last}").parse().expect("ipv6");
        ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", IFACE]);
        ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", IFACE, "nodad"]);
        ns.ip(&["link", "set", IFACE, "up"]);
        Host { ns, v4, v6, mac }
    }
}

/// The server's interface to a [`Lab::direct_host`].
pub const DIRECT_IFACE: &str = "eth1";
/// The server's IPv4 address on [`DIRECT_IFACE`].
pub const DIRECT_SERVER_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);

/// rx and tx drops of every link in `ns` (`ip -s -j link`).
fn dropped_in(ns: &NetNs) -> u64 {
    let out = crate::netns::run(
        std::process::Command::new("ip")
            .args(["-n", ns.name()])
            .args(["-s", "-j", "link", "show"]),
    );
    let links: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j link");
    links
        .as_array()
        .expect("an array of links")
        .iter()
        .flat_map(|link| ["rx", "tx"].map(|dir| link["stats64"][dir]["dropped"].as_u64()))
        .map(|dropped| dropped.expect("ip -s reports drops"))
        .sum()
}

/// Makes namespace `tag...`, joins it to the switch's bridge and gives it its addresses.
fn connect(switch: &NetNs, tag: &str, last: u8) -> Host {
    let ns = NetNs::new(tag);
    let mac = [0x02, 0, 0, 0, 0, last];
    let mac_text = format!("02:00:00:00:00:{last:02x}");
    let port = format!("p{last}");
    crate::netns::run(std::process::Command::new("ip").args([
        "link",
        "add",
        IFACE,
        "address",
        &mac_text,
        "netns",
        ns.name(),
        "type",
        "veth",
        "peer",
        "name",
        &port,
        "netns",
        switch.name(),
    ]));
    switch.ip(&["link", "set", &port, "master", "br0", "up"]);
    let v4 = Ipv4Addr::new(198, 18, 0, last);
    let v6: Ipv6Addr = format!("2001:db8::{last}").parse().expect("ipv6");
    ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", IFACE]);
    ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", IFACE, "nodad"]);
    ns.ip(&["link", "set", IFACE, "up"]);
    Host { ns, v4, v6, mac }
}

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

/// What a watcher's socket may hold: hundreds of the largest packets.
const WATCHER_BUFFER: usize = 64 << 20;

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

/// The largest packet interface `iface` of `ns` received while it was watched: a packet socket
/// sees what the stack gets, after XDP (and after GRO in skb mode).
pub struct LargestReceived {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    so_far: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    thread: std::thread::JoinHandle<Largest>,
}

/// What a [`LargestReceived`] saw.
#[derive(Debug, Clone, Copy)]
pub struct Largest {
    /// The largest received packet's length.
    pub bytes: usize,
    /// Packets the watcher's socket had no room for.
    pub missed: u32,
}

impl LargestReceived {
    pub fn watch(ns: &NetNs, iface: &str) -> Self {
        use std::os::fd::{FromRawFd, OwnedFd};
        let iface = CString::new(iface).expect("name");
        let fd = ns.run(|| {
            // SAFETY: a NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(iface.as_ptr()) };
            assert_ne!(ifindex, 0, "{iface:?}: {}", io::Error::last_os_error());
            let all = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: plain socket(2); the fd is owned below.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(all)) };
            assert!(fd >= 0, "packet socket: {}", io::Error::last_os_error());
            // SAFETY: a fresh fd, ours alone.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: sockaddr_ll is plain data; zero is a valid starting value.
            let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = all;
            addr.sll_ifindex = ifindex as i32;
            // SAFETY: `addr` is a valid sockaddr_ll for the length given.
            let rc = unsafe {
                libc::bind(
                    std::os::fd::AsRawFd::as_raw_fd(&fd),
                    (&raw const addr).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(rc, 0, "bind: {}", io::Error::last_os_error());
            let timeout = libc::timeval {
                tv_sec: 0,
                tv_usec: 100_000,
            };
            // SAFETY: timeval is plain data; the bytes are read as what they are.
            let timeout = unsafe {
                std::slice::from_raw_parts(
                    (&raw const timeout).cast::<u8>(),
                    size_of::<libc::timeval>(),
                )
            };
            set_option(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, timeout);
            // A packet socket takes a packet only while what it holds is under its buffer's
            // size: one 185 KB packet nearly fills the default. A watcher that falls behind
            // (a busy machine) must not miss the packets it is there to see.
            force_buffer(&fd, libc::SO_RCVBUFFORCE, WATCHER_BUFFER);
            fd
        });
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let so_far = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let largest_so_far = so_far.clone();
        let thread = std::thread::spawn(move || {
            let mut largest = 0;
            let mut buf = [0u8; 64];
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                // SAFETY: sockaddr_ll is plain data; zero is a valid starting value.
                let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                let mut from_len = size_of::<libc::sockaddr_ll>() as u32;
                // SAFETY: `buf` and `from` are valid for the lengths given; MSG_TRUNC makes
                // the call return the packet's real length, however little of it is copied.
                let len = unsafe {
                    libc::recvfrom(
                        std::os::fd::AsRawFd::as_raw_fd(&fd),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_TRUNC,
                        (&raw mut from).cast(),
                        &raw mut from_len,
                    )
                };
                if len > 0 && from.sll_pkttype != libc::PACKET_OUTGOING {
                    largest = largest.max(len as usize);
                    largest_so_far.fetch_max(largest, std::sync::atomic::Ordering::Relaxed);
                }
            }
            // SAFETY: tpacket_stats is plain data; zero is a valid starting value.
            let mut stats: libc::tpacket_stats = unsafe { std::mem::zeroed() };
            let mut stats_len = size_of::<libc::tpacket_stats>() as u32;
            // SAFETY: `stats` is valid for the length given.
            let rc = unsafe {
                libc::getsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(&fd),
                    libc::SOL_PACKET,
                    libc::PACKET_STATISTICS,
                    (&raw mut stats).cast(),
                    &raw mut stats_len,
                )
            };
            assert_eq!(rc, 0, "PACKET_STATISTICS: {}", io::Error::last_os_error());
            Largest {
                bytes: largest,
                missed: stats.tp_drops,
            }
        });
        LargestReceived {
            stop,
            so_far,
            thread,
        }
    }

    /// The largest packet's length so far.
    pub fn so_far(&self) -> usize {
        self.so_far.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops watching; the largest packet's length, and how many packets the watcher missed.
    pub fn largest(self) -> Largest {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("the watcher")
    }
}
