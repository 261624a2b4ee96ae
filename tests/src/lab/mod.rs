//! A lab of network namespaces on one bridge: a server with the filter, and any number of
//! hosts. Addresses come from 198.18.0.0/24 and 2001:db8::/64 only; all traffic stays in the
//! lab's namespaces, which are removed on drop. Its sockets (raw frames, UDP, socket options) are
//! in `sockets.rs`, the watcher of the largest received packet in `watch.rs`.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::netns::NetNs;

mod sockets;
mod watch;

pub use sockets::{connects_from, force_buffer, pending, receive, set_option, settle};
pub use watch::{Largest, LargestReceived};

/// The server's interface (the one the filter is attached to) and every host's.
pub const IFACE: &str = "eth0";
/// The second address of [`Lab::listed_host`].
pub const LISTED_SOURCE: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 7);

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

    /// How many of `count` datagrams `from` sends to the server's UDP `port` reach a socket
    /// there.
    pub fn delivered(&self, from: &Host, port: u16, count: usize) -> usize {
        let listener = self.server.udp_listener(port);
        from.send_udp(&[self.server.v4.into()], port, b"stats\r\n", count);
        receive(&listener, count).len()
    }

    /// Adds a host at 198.18.0.`last` / 2001:db8::`last` (the same digits, read as hex).
    pub fn host(&self, tag: &str, last: u8) -> Host {
        connect(&self.switch, tag, last)
    }

    /// Adds a host at 198.18.0.`last` that also holds [`LISTED_SOURCE`], in the allow-list
    /// of the packaged examples (198.18.1.0/24, the DaemonSet's ConfigMap); the server routes
    /// that network to it. [`connects_from`] picks the source.
    pub fn listed_host(&self, tag: &str, last: u8) -> Host {
        let host = self.host(tag, last);
        host.ns
            .ip(&["addr", "add", &format!("{LISTED_SOURCE}/24"), "dev", IFACE]);
        self.server
            .ns
            .ip(&["route", "add", "198.18.1.0/24", "dev", IFACE]);
        host
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
