//! The Kubernetes DaemonSet's pod, played with runc (see `mcfilter_tests::pod`): the image,
//! under the manifest's capabilities, read-only root, no privilege escalation and seccomp
//! profile, filters a node's interface with the ConfigMap's config, answers its probes, and
//! leaves the filter in place when it stops.

use std::{
    fs,
    net::{SocketAddr, TcpListener},
    time::{Duration, Instant},
};

use mcfilter_tests::{
    lab::{IFACE, LISTED_SOURCE, Lab, connects_from},
    netns::NetNs,
    pod::{Node, Pod},
    privileged_test,
};

const PORT: u16 = 11211;

/// The HTTP status `url` answers with inside `ns` (0: no answer).
fn status(ns: &NetNs, url: &str) -> u16 {
    let out = ns
        .command("curl")
        .args(["--silent", "--max-time", "2", "--output", "/dev/null"])
        .args(["--write-out", "%{http_code}", url])
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

fn body(ns: &NetNs, url: &str) -> String {
    let out = ns
        .command("curl")
        .args(["--silent", "--max-time", "5", url])
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The capabilities in a `CapEff:` mask of /proc/PID/status, by number.
fn capability_numbers(mask: &str) -> Vec<u32> {
    let mask = u64::from_str_radix(mask.trim(), 16).expect("a capability mask");
    (0..64).filter(|bit| mask & (1 << bit) != 0).collect()
}

#[test]
fn the_daemonsets_pod_filters_the_node_under_its_profile_and_leaves_the_filter_when_it_stops() {
    privileged_test!();
    let lab = Lab::new("pod");
    let server = &lab.server;
    // The allow-list holds 198.18.1.0/24: one host there, one outside it.
    let denied = lab.host("pdd", 2);
    let allowed = lab.listed_host("pda", 7);
    let node = Node {
        netns: &server.ns,
        ip: server.v4.into(),
    };
    let mut pod = Pod::start(&node, |_| {});
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(&server.ns, &pod.readiness) != 200 {
        assert!(
            Instant::now() < deadline,
            "the readiness probe did not pass in 30 s: {}",
            pod.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(status(&server.ns, &pod.liveness), 200, "{}", pod.log());

    // The manifest's security context, as the kernel sees the process.
    let proc_status = fs::read_to_string(format!("/proc/{}/status", pod.pid())).unwrap();
    let field = |name: &str| {
        proc_status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {proc_status}"))
            .trim()
            .to_owned()
    };
    assert_eq!(field("Seccomp:"), "2", "a seccomp filter");
    assert_eq!(field("NoNewPrivs:"), "1");
    // CAP_NET_ADMIN 12, CAP_PERFMON 38, CAP_BPF 39.
    assert_eq!(capability_numbers(&field("CapEff:")), [12, 38, 39]);
    assert_eq!(capability_numbers(&field("CapBnd:")), [12, 38, 39]);

    // The node is filtered as the ConfigMap says.
    assert_eq!(lab.delivered(&denied, PORT, 5), 0, "UDP to {PORT}");
    assert_eq!(lab.delivered(&denied, 9999, 3), 3, "UDP elsewhere");
    let listener = server
        .ns
        .run(|| TcpListener::bind(("0.0.0.0", PORT)).unwrap());
    let memcached = SocketAddr::from((server.v4, PORT));
    let within = Duration::from_secs(2);
    assert!(
        !connects_from(&denied.ns, denied.v4.into(), memcached, within),
        "TCP from outside the list"
    );
    assert!(
        connects_from(&allowed.ns, LISTED_SOURCE.into(), memcached, within),
        "TCP from the list"
    );
    let metrics = body(&server.ns, &pod.metrics);
    let series = |reason: &str, action: &str| {
        let series = format!(
            "mcfilter_interface_packets_total{{interface=\"{IFACE}\",reason=\"{reason}\",action=\"{action}\"}} "
        );
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&series))
            .and_then(|value| value.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {series}in the metrics:\n{metrics}"))
    };
    assert_eq!(series("udp_port", "drop"), 5);
    // The denied SYN and its retransmissions; the allowed connection's packets.
    assert!(series("tcp_not_allowed", "drop") >= 1, "{metrics}");
    assert!(series("tcp_allowed", "pass") >= 1, "{metrics}");

    // The ConfigMap changes (the kubelet updates the mounted file): the service applies it,
    // under the same profile; the host outside the list is allowed now.
    let file = pod.config_map_file("mcfilter.toml");
    let config = fs::read_to_string(&file).unwrap();
    let widened = config.replace(
        "allow = [\"198.18.1.0/24\"]",
        "allow = [\"198.18.1.0/24\", \"198.18.0.2\"]",
    );
    assert_ne!(widened, config, "the ConfigMap's allow-list: {config}");
    fs::write(&file, widened).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !connects_from(&denied.ns, denied.v4.into(), memcached, within) {
        assert!(
            Instant::now() < deadline,
            "the ConfigMap's change was not applied in 20 s: {}",
            pod.log()
        );
    }

    // The kubelet's SIGTERM ends it cleanly; the filter stays (detach_on_exit is false), so a
    // rolling update never leaves the node open.
    let program = server.ns.xdp_program(IFACE);
    assert!(program.is_some());
    let exit = pod.stop();
    assert!(
        exit.is_some_and(|status| status.success()),
        "{exit:?}: {}",
        pod.log()
    );
    assert_eq!(server.ns.xdp_program(IFACE), program);
    assert_eq!(lab.delivered(&denied, PORT, 3), 0, "UDP after the pod");
    drop(listener);
    drop(pod);
}

#[test]
fn the_seccomp_profile_is_enforced_a_pod_without_bpf_in_it_cannot_attach() {
    privileged_test!();
    // The same pod with bpf(2) taken out of its profile fails to start, with the reason in
    // its log: the profile is what the process runs under, not a file beside it.
    let lab = Lab::new("pos");
    let node = Node {
        netns: &lab.server.ns,
        ip: lab.server.v4.into(),
    };
    let mut removed = false;
    let mut pod = Pod::start(&node, |profile| {
        for rule in profile["syscalls"].as_array_mut().unwrap() {
            let names = rule["names"].as_array_mut().unwrap();
            let before = names.len();
            names.retain(|name| name != "bpf");
            removed |= names.len() < before;
        }
    });
    assert!(removed, "bpf is in the profile");
    let exit = pod.exited_within(Duration::from_secs(30));
    let log = pod.log();
    assert!(
        exit.is_some_and(|status| !status.success()),
        "{exit:?}: {log}"
    );
    assert!(
        log.contains("loading the XDP program") && log.contains("Operation not permitted"),
        "{log}"
    );
    assert_eq!(lab.server.ns.xdp_program(IFACE), None);
}
