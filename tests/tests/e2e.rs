//! End to end: the CLI attaches the real program to a veth in a lab of namespaces; real sockets
//! and a real memcached prove what is delivered, and mcfilter's own counters agree.

use std::{
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use mcfilter_tests::{
    cli::Mcfilter,
    lab::{self, Host, IFACE, Lab, pending, receive},
    memcache::{self, Memcached},
    packet::{ETH_P_8021Q, ETH_P_IP, IPPROTO_UDP, NOT_FRAGMENTED, eth, ipv4, udp},
    privileged_test,
};

const PORT: u16 = 11211;
const OTHER_PORT: u16 = 11212;
const TIMEOUT: Duration = Duration::from_millis(400);

/// A lab whose server runs the CLI in its namespace.
fn mcfilter(lab: &Lab, tag: &str) -> Mcfilter {
    Mcfilter::new(tag).in_netns(&lab.server.ns)
}

fn server_addrs(lab: &Lab) -> [IpAddr; 2] {
    [lab.server.v4.into(), lab.server.v6.into()]
}

fn udp_to_protected_port_is_never_delivered(mode: &str, tag: &str) {
    let lab = Lab::new(tag);
    let allowed = lab.host(&format!("{tag}a"), 10);
    let denied = lab.host(&format!("{tag}d"), 20);
    let mcf = mcfilter(&lab, tag);
    let protected = lab.server.udp_listener(PORT);
    let other = lab.server.udp_listener(OTHER_PORT);
    let dsts = server_addrs(&lab);

    // Without the filter the datagrams arrive: the test can see a leak.
    denied.send_udp(&dsts, PORT, b"stats\r\n", 1);
    assert_eq!(
        receive(&protected, 2).len(),
        2,
        "control: UDP {PORT} reaches the server unfiltered"
    );

    mcf.ok(&[
        "attach",
        IFACE,
        "--mode",
        mode,
        "--allow",
        &allowed.v4.to_string(),
    ]);
    for host in [&allowed, &denied] {
        host.send_udp(&dsts, PORT, b"stats\r\n", 5);
        host.send_udp(&dsts, OTHER_PORT, b"stats\r\n", 1);
    }
    // Forged sources, and a VLAN priority tag (VID 0, which the stack delivers untagged).
    let forged: Vec<Vec<u8>> = (0..20u8)
        .map(|i| {
            let payload = udp(40000, PORT, b"stats\r\n");
            let packet = ipv4(
                [198, 18, 1, i],
                lab.server.v4.octets(),
                IPPROTO_UDP,
                &[],
                NOT_FRAGMENTED,
                &payload,
            );
            let tags: &[u16] = if i % 2 == 0 { &[] } else { &[ETH_P_8021Q] };
            eth(ETH_P_IP, tags, &packet)
        })
        .collect();
    assert_eq!(denied.send_frames(&forged), forged.len());
    // The later datagrams to another port arrive, so the earlier ones had their chance.
    assert_eq!(
        receive(&other, 4).len(),
        4,
        "other UDP ports are unaffected"
    );
    lab::settle();
    assert!(
        !pending(&protected),
        "no UDP datagram to {PORT} was delivered ({mode})"
    );

    let stats = mcf.json(&["stats", "--json", "--top", "100"]);
    assert_eq!(stats["reasons"]["udp_port"], 2 * 2 * 5 + 20, "{stats}");
    assert_eq!(stats["dropped"]["packets"], 2 * 2 * 5 + 20, "{stats}");
    mcf.ok(&["detach", IFACE]);
}

#[test]
fn udp_to_protected_port_is_never_delivered_native() {
    privileged_test!();
    udp_to_protected_port_is_never_delivered("native", "un");
}

#[test]
fn udp_to_protected_port_is_never_delivered_skb() {
    privileged_test!();
    udp_to_protected_port_is_never_delivered("skb", "us");
}

fn connects(host: &Host, server: SocketAddr) -> bool {
    host.ns
        .run(|| TcpStream::connect_timeout(&server, TIMEOUT).is_ok())
}

/// Retries a connection for up to a second.
fn connects_within_a_second(host: &Host, server: SocketAddr) -> bool {
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        if host
            .ns
            .run(|| TcpStream::connect_timeout(&server, Duration::from_millis(100)).is_ok())
        {
            return true;
        }
    }
    false
}

#[test]
fn allowed_clients_use_memcached_and_the_allow_list_changes_live() {
    privileged_test!();
    let lab = Lab::new("tc");
    let allowed = lab.host("tca", 10);
    let denied = lab.host("tcd", 20);
    let _memcached = Memcached::start(&lab.server.ns, false);
    let web = lab
        .server
        .ns
        .run(|| TcpListener::bind(("::", 8080)).expect("bind 8080"));
    let mcf = mcfilter(&lab, "tc");
    mcf.ok(&[
        "attach",
        IFACE,
        "--mode",
        "native",
        "--allow",
        &allowed.v4.to_string(),
        "--allow",
        &format!("{}/128", allowed.v6),
    ]);
    let servers: Vec<SocketAddr> = server_addrs(&lab)
        .iter()
        .map(|&ip| SocketAddr::new(ip, PORT))
        .collect();
    for &server in &servers {
        allowed
            .ns
            .run(|| memcache::set_get(server, "k", b"hello mcfilter", Duration::from_secs(2)))
            .unwrap_or_else(|err| panic!("allowed client's set/get to {server}: {err}"));
        assert!(
            !connects(&denied, server),
            "denied client must not connect to {server}"
        );
        let web_addr = SocketAddr::new(server.ip(), 8080);
        assert!(
            connects(&denied, web_addr),
            "other ports are unaffected ({web_addr})"
        );
    }
    drop(web);

    // Live changes, no re-attach: the denied client gets in, then is shut out again.
    let denied_cidrs = [denied.v4.to_string(), denied.v6.to_string()];
    let prog_before = mcf.json(&["status", "--json"])["interfaces"][0]["program_id"].clone();
    mcf.ok(&["allow", "add", &denied_cidrs[0], &denied_cidrs[1]]);
    for &server in &servers {
        assert!(
            connects_within_a_second(&denied, server),
            "allow add lets {server} in"
        );
        denied
            .ns
            .run(|| memcache::set_get(server, "d", b"now allowed", Duration::from_secs(2)))
            .expect("set/get once allowed");
    }
    mcf.ok(&["allow", "del", &denied_cidrs[0], &denied_cidrs[1]]);
    for &server in &servers {
        assert!(!connects(&denied, server), "allow del shuts {server} again");
    }
    let prog_after = mcf.json(&["status", "--json"])["interfaces"][0]["program_id"].clone();
    assert_eq!(
        prog_before, prog_after,
        "the allow-list changed without a re-attach"
    );
    mcf.ok(&["detach", IFACE]);
}

#[test]
fn stats_count_exactly_the_packets_a_source_sent() {
    privileged_test!();
    let lab = Lab::new("st");
    let attacker = lab.host("sta", 66);
    let mcf = mcfilter(&lab, "st");
    mcf.ok(&["attach", IFACE]);
    let source_packets = |addr: IpAddr| -> u64 {
        let stats = mcf.json(&["stats", "--json", "--top", "1000"]);
        let sources = stats["sources"].as_array().expect("sources array");
        sources
            .iter()
            .find(|s| s["source"] == addr.to_string())
            .map_or(0, |s| {
                assert_eq!(s["reason"], "udp_port");
                s["packets"].as_u64().expect("integer")
            })
    };
    for (i, addr) in [IpAddr::from(attacker.v4), IpAddr::from(attacker.v6)]
        .into_iter()
        .enumerate()
    {
        let before = source_packets(addr);
        let n = 37 + i;
        let dst = if addr.is_ipv4() {
            lab.server.v4.into()
        } else {
            IpAddr::from(lab.server.v6)
        };
        attacker.send_udp(&[dst], PORT, b"stats\r\n", n);
        lab::settle();
        assert_eq!(
            source_packets(addr) - before,
            n as u64,
            "exactly {n} more from {addr}"
        );
    }
    let stats = mcf.json(&["stats", "--json"]);
    let sources = stats["sources"].as_array().expect("sources");
    let packets: Vec<u64> = sources
        .iter()
        .map(|s| s["packets"].as_u64().unwrap())
        .collect();
    assert!(
        packets.windows(2).all(|w| w[0] >= w[1]),
        "sorted by packets: {packets:?}"
    );
    mcf.ok(&["detach", IFACE]);
}

#[test]
fn detach_leaves_no_pins_and_no_program() {
    privileged_test!();
    let lab = Lab::new("dt");
    let mcf = mcfilter(&lab, "dt");
    for mode in ["native", "skb"] {
        mcf.ok(&["attach", IFACE, "--mode", mode]);
        let status = mcf.json(&["status", "--json"]);
        assert_eq!(status["interfaces"][0]["mode"], mode, "{status}");
        let prog_id = status["interfaces"][0]["program_id"].as_u64().expect("id") as u32;
        assert!(
            xdp_on_server(&lab),
            "ip link shows the program after attach"
        );
        mcf.ok(&["detach", IFACE]);
        assert!(!mcf.state_dir().exists(), "the state dir is gone");
        assert!(!xdp_on_server(&lab), "no XDP program on the interface");
        let loaded = aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .any(|p| p.id() == prog_id);
        assert!(!loaded, "program {prog_id} was unloaded");
    }
}

fn xdp_on_server(lab: &Lab) -> bool {
    let out = lab
        .server
        .ns
        .command("ip")
        .args(["link", "show", IFACE])
        .output()
        .expect("ip");
    String::from_utf8_lossy(&out.stdout).contains("xdp")
}

#[test]
fn policy_changes_apply_live_to_real_traffic() {
    privileged_test!();
    let lab = Lab::new("pc");
    let client = lab.host("pcc", 20);
    let mcf = mcfilter(&lab, "pc");
    let (_, line) = mcf.fails(&["policy"]);
    assert!(line.contains("not attached"), "{line}");
    mcf.ok(&["attach", IFACE, "--dry-run"]);
    let policy = mcf.json(&["policy", "--json"]);
    assert_eq!(policy["dry_run"], true, "{policy}");
    assert_eq!(policy["ports"], serde_json::json!([PORT]), "{policy}");

    let server: IpAddr = lab.server.v4.into();
    let protected = lab.server.udp_listener(PORT);
    let other = lab.server.udp_listener(OTHER_PORT);
    let delivered = |socket: &std::net::UdpSocket, port: u16| {
        client.send_udp(&[server], port, b"stats\r\n", 3);
        !receive(socket, 3).is_empty()
    };
    assert!(delivered(&protected, PORT), "dry-run passes UDP {PORT}");
    let out = mcf.ok(&["policy", "--dry-run", "off"]);
    assert!(
        out.starts_with("policy changed: ports 11211; enforced"),
        "{out}"
    );
    assert!(
        !delivered(&protected, PORT),
        "enforced at once, no re-attach"
    );
    let out = mcf.ok(&["policy", "--dry-run", "off"]);
    assert!(out.starts_with("policy unchanged"), "{out}");

    mcf.ok(&["policy", "--port", &OTHER_PORT.to_string()]);
    assert!(!delivered(&other, OTHER_PORT), "the new port is protected");
    assert!(delivered(&protected, PORT), "the old one is not any more");

    // Reflection protection: UDP *from* the protected port, to any port.
    let reply_port = 5000;
    let victim = lab.server.udp_listener(reply_port);
    let reflector = client
        .ns
        .run(|| std::net::UdpSocket::bind(("0.0.0.0", OTHER_PORT)).expect("bind reflector"));
    let reflected = || {
        for _ in 0..3 {
            reflector
                .send_to(b"VALUE", (server, reply_port))
                .expect("send");
        }
        !receive(&victim, 3).is_empty()
    };
    assert!(reflected(), "reflection protection is off by default");
    mcf.ok(&["policy", "--reflection", "drop"]);
    assert!(!reflected(), "reflected replies dropped");
    mcf.ok(&["policy", "--reflection", "pass"]);
    assert!(reflected(), "and passed again");

    for (args, code) in [
        (&["policy", "--dry-run", "maybe"][..], 2),
        (&["policy", "--port", "0"], 2),
        (&["policy", "--reflection", "block"], 2),
    ] {
        let (got, line) = mcf.fails(args);
        assert_eq!(got, code, "{args:?}: {line}");
    }
    let policy = mcf.json(&["policy", "--json"]);
    assert_eq!(
        policy,
        serde_json::json!({"ports": [OTHER_PORT], "dry_run": false, "drop_reflected": false}),
        "refused changes left the policy as it was"
    );
    mcf.ok(&["detach", IFACE]);
}

/// A TUN device (framed like WireGuard: packets start at the IP header) gets the IP-framed
/// program, in both modes: UDP to the protected port and SYNs from outside the allow-list never
/// reach the stack (no socket receives, no reply comes back), everything else does, and the
/// counters hold exactly what was written.
#[test]
fn tun_devices_are_filtered_from_the_ip_header() {
    privileged_test!();
    // TUN has no native XDP (only TAP does): auto falls back to skb mode, and says so.
    for mode in ["skb", "auto"] {
        tun_filtered(mode);
    }
}

fn tun_filtered(mode: &str) {
    use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
    use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};

    const SERVER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 1);
    const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 7, 0, 0, 0, 0, 1);
    const ALLOWED: [IpAddr; 2] = [
        IpAddr::V4(Ipv4Addr::new(198, 18, 7, 2)),
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 7, 0, 0, 0, 0, 2)),
    ];
    const DENIED: [IpAddr; 2] = [
        IpAddr::V4(Ipv4Addr::new(198, 18, 7, 3)),
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 7, 0, 0, 0, 0, 3)),
    ];
    const DATAGRAMS: u64 = 5;

    let ns = mcfilter_tests::netns::NetNs::new("tu");
    let tun = mcfilter_tests::tun::Tun::create(&ns, "tun0");
    ns.ip(&["addr", "add", "198.18.7.1/24", "dev", "tun0"]);
    ns.ip(&["addr", "add", "2001:db8:7::1/64", "dev", "tun0", "nodad"]);
    ns.ip(&["link", "set", "tun0", "up"]);
    let mcf = Mcfilter::new("tu").in_netns(&ns);
    let (_, line) = mcf.fails(&["attach", "tun0", "--mode", "native"]);
    assert!(line.contains("no native XDP support"), "{line}");
    mcf.ok(&["attach", "tun0", "--mode", mode]);
    mcf.ok(&["allow", "add", "198.18.7.2", "2001:db8:7::2"]);
    let status = mcf.json(&["status", "--json"]);
    assert_eq!(status["interfaces"][0]["framing"], "ip", "{status}");
    assert_eq!(status["interfaces"][0]["mode"], "skb", "{status}");

    let server = |family: &IpAddr| -> IpAddr {
        if family.is_ipv4() {
            SERVER_V4.into()
        } else {
            SERVER_V6.into()
        }
    };
    let bind = |port: u16| {
        ns.run(|| {
            [SERVER_V4.into(), SERVER_V6.into()].map(|addr: IpAddr| {
                let socket = UdpSocket::bind((addr, port)).expect("bind in the namespace");
                socket.set_nonblocking(true).unwrap();
                socket
            })
        })
    };
    let protected = bind(PORT);
    let other = bind(OTHER_PORT);
    let packet = |src: IpAddr, dst: IpAddr| match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
        _ => unreachable!("one family"),
    };
    let udp = |src: IpAddr, port: u16| {
        let builder = packet(src, server(&src)).udp(40000, port);
        let mut bytes = Vec::new();
        builder.write(&mut bytes, b"stats\r\n").unwrap();
        bytes
    };
    let syn = |src: IpAddr| {
        let builder = packet(src, server(&src)).tcp(40001, PORT, 1, 64240).syn();
        let mut bytes = Vec::new();
        builder.write(&mut bytes, &[]).unwrap();
        bytes
    };
    // The kernel's TCP answer (SYN-ACK, or RST without a listener) to `client`, if any.
    let tcp_reply_to = |packet: &[u8], client: IpAddr| {
        let Ok(sliced) = SlicedPacket::from_ip(packet) else {
            return false;
        };
        let to = match sliced.net {
            Some(NetSlice::Ipv4(ip)) => IpAddr::from(ip.header().destination_addr()),
            Some(NetSlice::Ipv6(ip)) => IpAddr::from(ip.header().destination_addr()),
            _ => return false,
        };
        matches!(sliced.transport, Some(TransportSlice::Tcp(_))) && to == client
    };

    for (allowed, denied) in ALLOWED.into_iter().zip(DENIED) {
        for _ in 0..DATAGRAMS {
            tun.send(&udp(denied, PORT));
            tun.send(&udp(allowed, PORT));
        }
        tun.send(&udp(denied, OTHER_PORT));
        // The denied SYN first: its answer, if the stack saw it, comes before the allowed one's.
        tun.send(&syn(denied));
        tun.send(&syn(allowed));
        let sent_back = tun.read_until(|p| tcp_reply_to(p, allowed), Duration::from_secs(5));
        assert!(
            sent_back.iter().any(|p| tcp_reply_to(p, allowed)),
            "{mode}: the allowed client's SYN was answered"
        );
        assert!(
            !sent_back.iter().any(|p| tcp_reply_to(p, denied)),
            "{mode}: the SYN from {denied} reached TCP"
        );
    }
    let mut buf = [0u8; 64];
    for socket in &protected {
        let got = mcfilter_tests::uninterrupted(|| socket.recv(&mut buf));
        assert!(
            got.is_err(),
            "{mode}: a datagram to {PORT} was delivered: {got:?}"
        );
    }
    for socket in &other {
        assert!(
            mcfilter_tests::uninterrupted(|| socket.recv(&mut buf)).is_ok(),
            "{mode}: port {OTHER_PORT}"
        );
    }
    let stats = mcf.json(&["stats", "--json"]);
    assert_eq!(
        stats["reasons"]["udp_port"],
        2 * 2 * DATAGRAMS,
        "{mode}: {stats}"
    );
    assert_eq!(stats["reasons"]["tcp_not_allowed"], 2, "{mode}: {stats}");
    assert_eq!(stats["reasons"]["tcp_allowed"], 2, "{mode}: {stats}");
    assert_eq!(stats["reasons"]["not_protected"], 2, "{mode}: {stats}");
    mcf.ok(&["detach", "tun0"]);
}

/// In skb mode the program runs after GRO, where TCP over IPv6 (BIG TCP: `gso_max_size` and
/// `gro_max_size` above 64 KiB) arrives in packets larger than an IP length field can say, whose
/// payload length is 0. An allowed client's transfer goes through whole and none of its packets
/// is dropped; a packet socket on the interface shows packets larger than 64 KiB went through. (IPv4 BIG TCP
/// works the same way but needs `gso_ipv4_max_size`, iproute2 6.3 and Linux 6.3; this machine's
/// iproute2 is 6.1.)
#[test]
fn big_tcp_packets_from_allowed_clients_pass_in_skb_mode() {
    privileged_test!();
    use std::io::{Read, Write};
    /// Larger than 64 KiB, as in the kernel's BIG TCP tests.
    const BIG: &str = "185000";
    /// What the client sends at a time.
    const CHUNK: usize = 8 << 20;
    /// What the client sends at most: TCP builds its largest packets once its windows are
    /// open, which on a busy machine may take more than a chunk.
    const MOST: usize = 8 * CHUNK;
    /// The largest packet an IP length field can describe, plus the Ethernet header.
    const LARGEST_UNMERGED: usize = 65_535 + 40 + 14;

    let lab = Lab::new("bt");
    let client = lab.direct_host("btc", 2);
    for (ns, dev) in [(&lab.server.ns, lab::DIRECT_IFACE), (&client.ns, IFACE)] {
        ns.ip(&[
            "link",
            "set",
            "dev",
            dev,
            "gso_max_size",
            BIG,
            "gro_max_size",
            BIG,
        ]);
    }
    // TCP sizes its segments from its pacing rate: on a slow machine (an emulated guest) it
    // would rarely reach 64 KiB. At least 128 segments (185 KB) a packet, once the congestion
    // window allows, makes the large packets certain.
    let sysctl = client
        .ns
        .command("sysctl")
        .args(["-qw", "net.ipv4.tcp_min_tso_segs=128"])
        .status()
        .expect("sysctl");
    assert!(sysctl.success());
    let mcf = mcfilter(&lab, "bt");
    mcf.ok(&["attach", lab::DIRECT_IFACE, "--mode", "skb"]);
    mcf.ok(&["allow", "add", &client.v6.to_string()]);
    let watcher = lab::LargestReceived::watch(&lab.server.ns, lab::DIRECT_IFACE);
    let server: SocketAddr = "[2001:db8:1::1]:11211".parse().unwrap();
    let listener = lab
        .server
        .ns
        .run(|| TcpListener::bind(server).expect("listen"));
    // A receive buffer of two chunks: a busy receiver's window stays open.
    lab::force_buffer(&listener, libc::SO_RCVBUFFORCE, 2 * CHUNK);
    let receiver = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut received = 0;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match conn.read(&mut buf).expect("read before the timeout") {
                0 => return received,
                n => received += n,
            }
        }
    });
    // Chunks until the server has received a packet GRO merged past 64 KiB (the condition under
    // test), or `MOST` bytes, whichever comes first; the assertions below cover every chunk.
    let sent = client.ns.run(|| {
        let mut conn =
            TcpStream::connect_timeout(&server, Duration::from_secs(5)).expect("connect");
        conn.set_write_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let chunk = vec![0x5a; CHUNK];
        let mut sent = 0;
        while sent < MOST && watcher.so_far() <= LARGEST_UNMERGED {
            conn.write_all(&chunk).expect("send before the timeout");
            sent += CHUNK;
        }
        sent
    });
    assert_eq!(
        receiver.join().expect("receiver"),
        sent,
        "all of it arrived"
    );
    let largest = watcher.largest();
    let stats = mcf.json(&["stats", "--json"]);
    assert_eq!(stats["dropped"]["packets"], 0, "{stats}");
    eprintln!(
        "BIG TCP: {} chunks of {CHUNK} bytes, the largest packet received: {largest:?}",
        sent / CHUNK
    );
    assert!(
        largest.bytes > LARGEST_UNMERGED,
        "no packet was merged past 64 KiB ({largest:?}), so this test proved nothing"
    );
    mcf.ok(&["detach", lab::DIRECT_IFACE]);
}
