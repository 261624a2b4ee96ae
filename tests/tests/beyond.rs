//! Beyond a firewall: reflection-victim protection, shadow-mode reports and `allow suggest`,
//! with a real memcached reflector and real victim sockets in a lab of namespaces.

use std::{net::UdpSocket, time::Duration};

use mcfilter_tests::{
    cli::Mcfilter,
    lab::{self, Host, IFACE, Lab, pending, receive},
    memcache::Memcached,
    packet::{ETH_P_IP, IPPROTO_TCP, NOT_FRAGMENTED, eth, forged_memcached_request, ipv4, tcp_syn},
    privileged_test,
};

const PORT: u16 = 11211;
const VICTIM_PORT: u16 = 9999;

/// A request to the server's memcached with the victim's address as its source.
fn forged(lab: &Lab, victim: &Host, victim_port: u16, command: &[u8]) -> Vec<u8> {
    forged_memcached_request(victim.v4, victim_port, lab.server.v4, 1, command)
}

#[test]
fn a_reflection_victim_receives_nothing_with_protection_on() {
    privileged_test!();
    let lab = Lab::new("rf");
    let attacker = lab.host("rfx", 66);
    let victim = lab.host("rfv", 99);
    let reflector = lab.host("rfr", 77);
    let _memcached = Memcached::start(&lab.server.ns, true);
    // Without protection the memcached server floods the victim (on another port, so that a
    // late datagram of this reply cannot be mistaken for a leak below).
    let control = victim.udp_listener(VICTIM_PORT - 1);
    attacker.send_frames(&[forged(&lab, &victim, VICTIM_PORT - 1, b"stats\r\n")]);
    let got = receive(&control, 2);
    assert!(
        got.iter().map(Vec::len).sum::<usize>() > 1000,
        "control: amplified reply"
    );

    let socket = victim.udp_listener(VICTIM_PORT);
    let mcf = Mcfilter::new("rfv").in_netns(&victim.ns);
    let out = mcf.ok(&["attach", IFACE, "--drop-reflected"]);
    assert!(out.contains("reflected replies) dropped"), "{out}");
    assert_eq!(mcf.json(&["status", "--json"])["drop_reflected"], true);
    for _ in 0..5 {
        attacker.send_frames(&[forged(&lab, &victim, VICTIM_PORT, b"stats\r\n")]);
    }
    // A fragmented reply: a 4000-byte datagram from port 11211, cut in three by the sender.
    let big = vec![0x5a; 4000];
    reflector.ns.run(|| {
        let from_port = UdpSocket::bind(("0.0.0.0", PORT)).expect("bind 11211");
        from_port
            .send_to(&big, (victim.v4, VICTIM_PORT))
            .expect("send");
    });
    lab::settle();
    std::thread::sleep(Duration::from_millis(200));
    let mut buf = [0u8; 65536];
    let mut leaked = Vec::new();
    while let Ok((n, from)) = mcfilter_tests::uninterrupted(|| socket.recv_from(&mut buf)) {
        leaked.push(format!("{n} bytes from {from}: {:02x?}", &buf[..8]));
    }
    let stats = mcf.json(&["stats", "--json", "--top", "100"]);
    assert!(
        leaked.is_empty(),
        "the victim's socket received {leaked:?}; {stats}"
    );
    let stats = mcf.json(&["stats", "--json", "--top", "100"]);
    assert!(
        stats["reasons"]["reflected"].as_u64().unwrap() >= 6,
        "{stats}"
    );
    assert_eq!(
        stats["reasons"]["fragment_of_dropped"], 2,
        "the reply's later fragments"
    );
    let sources = stats["sources"].as_array().unwrap();
    let reflectors: Vec<&str> = sources
        .iter()
        .filter(|s| s["reason"] == "reflected" || s["reason"] == "fragment_of_dropped")
        .map(|s| s["source"].as_str().unwrap())
        .collect();
    assert!(
        reflectors.contains(&lab.server.v4.to_string().as_str()),
        "{reflectors:?}"
    );
    assert!(
        reflectors.contains(&reflector.v4.to_string().as_str()),
        "{reflectors:?}"
    );
    mcf.ok(&["detach", IFACE]);
}

/// Spoofed SYNs to the protected port from `count` unused addresses 198.18.3.1.. (no host
/// answers the server's SYN-ACKs, so the only packets to the port are these).
fn spoofed_syns(lab: &Lab, count: u8, each: usize) -> Vec<Vec<u8>> {
    (1..=count)
        .flat_map(|i| {
            let packet = ipv4(
                [198, 18, 3, i],
                lab.server.v4.octets(),
                IPPROTO_TCP,
                &[],
                NOT_FRAGMENTED,
                &tcp_syn(40000, PORT),
            );
            std::iter::repeat_n(eth(ETH_P_IP, &[], &packet), each * usize::from(i))
        })
        .collect()
}

#[test]
fn shadow_mode_passes_everything_and_counts_what_enforcing_drops() {
    privileged_test!();
    let lab = Lab::new("sh");
    let attacker = lab.host("shx", 66);
    let protected = lab.server.udp_listener(PORT);
    let mcf = Mcfilter::new("sh").in_netns(&lab.server.ns);
    // Few enough that the socket's receive buffer holds them all.
    const UDP: usize = 100;
    let syns = spoofed_syns(&lab, 3, 10); // 10, 20 and 30 SYNs from three sources
    let traffic = || {
        attacker.send_udp(&[lab.server.v4.into()], PORT, b"stats\r\n", UDP);
        attacker.send_frames(&syns);
        lab::settle();
    };

    mcf.ok(&["attach", IFACE, "--dry-run"]);
    traffic();
    assert_eq!(
        receive(&protected, UDP).len(),
        UDP,
        "dry-run passes everything"
    );
    let shadow = mcf.json(&["stats", "--json", "--top", "100"]);
    assert_eq!(shadow["dropped"]["packets"], 0, "{shadow}");
    assert_eq!(
        shadow["would_drop"]["packets"],
        UDP + syns.len(),
        "{shadow}"
    );
    assert_eq!(shadow["would_drop_reasons"]["udp_port"], UDP);
    assert_eq!(shadow["would_drop_reasons"]["tcp_not_allowed"], syns.len());
    let attacker_row = shadow["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["source"] == attacker.v4.to_string())
        .cloned()
        .expect("the attacker is listed");
    assert_eq!(attacker_row["would_drop_packets"], UDP);

    // `allow suggest`: the sources TCP would have come from, busiest first, as CIDRs.
    let suggested = mcf.json(&["allow", "suggest", "--json"]);
    assert_eq!(
        suggested,
        serde_json::json!(["198.18.3.3/32", "198.18.3.2/32", "198.18.3.1/32"])
    );
    let text = mcf.ok(&["allow", "suggest"]);
    assert!(
        text.starts_with("198.18.3.3/32") && text.contains("# 30 packets dropped, 30 in dry-run"),
        "{text}"
    );
    // Spoofed SYNs never send data: each suggestion says so.
    assert_eq!(
        text.matches("caution: only SYN-sized packets").count(),
        3,
        "{text}"
    );
    // --merge keeps the current list ahead of the suggestions.
    mcf.ok(&["allow", "add", "198.18.0.10"]);
    let merged = mcf.json(&["allow", "suggest", "--merge", "--json"]);
    assert_eq!(
        merged,
        serde_json::json!([
            "198.18.0.10/32",
            "198.18.3.3/32",
            "198.18.3.2/32",
            "198.18.3.1/32"
        ])
    );

    // Enforcing the same traffic drops exactly what dry-run counted.
    mcf.ok(&["detach", IFACE]);
    mcf.ok(&["attach", IFACE]);
    traffic();
    lab::settle();
    assert!(!pending(&protected), "enforcing drops the UDP");
    let enforced = mcf.json(&["stats", "--json"]);
    assert_eq!(
        enforced["dropped"]["packets"], shadow["would_drop"]["packets"],
        "{enforced}"
    );
    for reason in ["udp_port", "tcp_not_allowed"] {
        assert_eq!(
            enforced["reasons"][reason], shadow["would_drop_reasons"][reason],
            "{reason}"
        );
    }
    mcf.ok(&["detach", IFACE]);
}

/// `mcfilter audit --json` in the server's namespace: (exit code, report).
fn audit(mcf: &Mcfilter) -> (i32, serde_json::Value) {
    let out = mcf.run(&["audit", "--json"]);
    let report = serde_json::from_slice(&out.stdout).expect("audit JSON");
    (out.status.code().expect("exit code"), report)
}

fn findings(report: &serde_json::Value, severity: &str) -> Vec<String> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == severity)
        .map(|f| format!("{} | fix: {}", f["finding"], f["fix"]))
        .collect()
}

#[test]
fn audit_finds_the_exposed_memcached_then_reports_clean_once_fixed() {
    privileged_test!();
    let (lab, mcf) = Lab::with_mcfilter("au");

    // memcached as in 2018: UDP on, every address, no filter.
    let exposed = Memcached::start(&lab.server.ns, true);
    let (code, report) = audit(&mcf);
    assert_eq!(code, 4, "a high finding: {report}");
    let high = findings(&report, "high");
    assert!(
        high.iter()
            .any(|f| f.contains("UDP 0.0.0.0:11211") && f.contains("-U 0")),
        "{high:?}"
    );
    assert!(
        high.iter()
            .any(|f| f.contains("TCP") && f.contains("mcfilter attach eth0")),
        "{high:?}"
    );
    assert!(
        report["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["processes"][0]
                .as_str()
                .unwrap_or("")
                .starts_with("memcached")),
        "the owning process is named: {report}"
    );

    // Fixed: UDP off, the filter on eth0 with an allow-list.
    drop(exposed);
    let _fixed = Memcached::start(&lab.server.ns, false);
    mcf.ok(&["attach", IFACE, "--allow", "198.18.0.10"]);
    let (code, report) = audit(&mcf);
    assert_eq!(code, 0, "clean: {report}");
    assert!(
        findings(&report, "high").is_empty() && findings(&report, "medium").is_empty(),
        "{report}"
    );

    // A very broad allow-list entry is a finding of its own.
    mcf.ok(&["allow", "add", "0.0.0.0/0"]);
    let (code, report) = audit(&mcf);
    assert_eq!(code, 4, "{report}");
    assert!(
        findings(&report, "high")
            .iter()
            .any(|f| f.contains("0.0.0.0/0")),
        "{report}"
    );
    mcf.ok(&["detach", IFACE]);
}

/// Interfaces that deliver to memcached without the filter are named wherever the operator
/// looks: a VXLAN device (traffic encapsulated through the filtered NIC comes out of it) by
/// `attach`, `status` and `audit`, with `mcfilter attach` as the fix; a device whose link type
/// mcfilter cannot filter (a TUN device given the `gre` type, as this kernel has no GRE) with
/// the fix that works for it.
#[test]
fn devices_that_deliver_without_the_filter_are_named() {
    privileged_test!();
    const ARPHRD_IPGRE: u16 = 778;
    let lab = Lab::new("ux");
    let ns = &lab.server.ns;
    let _memcached = Memcached::start(ns, false);
    ns.ip(&[
        "link", "add", "vx0", "type", "vxlan", "id", "42", "dstport", "4789", "dev", IFACE,
    ]);
    ns.ip(&["addr", "add", "198.18.9.1/24", "dev", "vx0"]);
    ns.ip(&["link", "set", "vx0", "up"]);
    let gre = mcfilter_tests::tun::Tun::create(ns, "gt0");
    gre.set_link_type(ARPHRD_IPGRE);
    ns.ip(&["addr", "add", "198.18.10.1/24", "dev", "gt0"]);
    ns.ip(&["link", "set", "gt0", "up"]);
    let mcf = Mcfilter::new("ux").in_netns(ns);

    let out = mcf.run(&["attach", IFACE, "--allow", "198.18.0.10"]);
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let vxlan = "TCP 0.0.0.0:11211 is reachable without the filter through gt0, vx0";
    assert!(
        stderr.contains(&format!("mcfilter: warning: {vxlan}")),
        "{stderr}"
    );
    assert!(
        stderr.contains("bind memcached to an address gt0 does not carry (-l ADDR): its link type gre is one mcfilter cannot filter"),
        "{stderr}"
    );
    let status = mcf.json(&["status", "--json"]);
    let warnings = status["warnings"].to_string();
    assert!(warnings.contains(vxlan), "{status}");
    let (code, report) = audit(&mcf);
    assert_eq!(code, 4, "{report}");
    assert!(
        findings(&report, "high")
            .iter()
            .any(|f| f.contains("gt0, vx0") && f.contains("its link type gre")),
        "{report}"
    );

    // The VXLAN device filtered, only the one mcfilter cannot filter is left.
    mcf.ok(&["attach", "vx0"]);
    let status = mcf.json(&["status", "--json"]);
    let warnings = status["warnings"].to_string();
    assert!(
        warnings.contains("reachable without the filter through gt0;") && !warnings.contains("vx0"),
        "{status}"
    );
    let high = findings(&audit(&mcf).1, "high");
    assert!(
        high.iter().all(|f| !f.contains("vx0")) && high.iter().any(|f| f.contains("gt0")),
        "{high:?}"
    );
    mcf.ok(&["detach", "vx0"]);
    mcf.ok(&["detach", IFACE]);
}
