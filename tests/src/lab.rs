//! A lab of network namespaces on one bridge: a server with the filter, and any number of
//! hosts. Addresses come from 198.18.0.0/24 and 2001:db8::/64 only; all traffic stays in the
//! lab's namespaces, which are removed on drop.

use std::{
    ffi::CString,
    io,
    mem::size_of,
    net::{Ipv4Addr, Ipv6Addr},
    time::Duration,
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
