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
    privileged,
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
    if privileged("udp_to_protected_port_is_never_delivered_native") {
        udp_to_protected_port_is_never_delivered("native", "un");
    }
}

#[test]
fn udp_to_protected_port_is_never_delivered_skb() {
    if privileged("udp_to_protected_port_is_never_delivered_skb") {
        udp_to_protected_port_is_never_delivered("skb", "us");
    }
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
    if !privileged("allowed_clients_use_memcached_and_the_allow_list_changes_live") {
        return;
    }
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
    if !privileged("stats_count_exactly_the_packets_a_source_sent") {
        return;
    }
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
    if !privileged("detach_leaves_no_pins_and_no_program") {
        return;
    }
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
    if !privileged("policy_changes_apply_live_to_real_traffic") {
        return;
    }
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
