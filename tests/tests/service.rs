//! `mcfilter run` end to end: a real service process in the server's namespace, its config
//! file edited and signalled, its metrics scraped over HTTP with curl and compared with
//! `stats --json`.

use std::{
    fs,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use mcfilter_tests::{
    cli::{Mcfilter, binary},
    lab::{self, Host, IFACE, Lab},
    memcache::{self, Memcached},
    netns::NetNs,
    privileged_test, syscall_filter,
};

const PORT: u16 = 11211;
const METRICS: &str = "127.0.0.1:9911";

/// A running `mcfilter run`, killed on drop if the test did not stop it.
struct Service {
    child: Child,
    log: PathBuf,
}

impl Service {
    /// Starts `mcfilter run --config CONFIG` in `ns` with `env` added, its stderr in `log`.
    fn spawn(ns: &NetNs, config: &Path, log: &Path, env: &[(&str, &std::ffi::OsStr)]) -> Self {
        let child = ns
            .command(binary())
            .args(["run", "--config"])
            .arg(config)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(log).expect("log file"))
            .spawn()
            .expect("start mcfilter run");
        Service {
            child,
            log: log.to_owned(),
        }
    }

    /// Starts the service and waits (bounded) until `/healthz` says it is healthy.
    fn start(ns: &NetNs, config: &Path, log: &Path) -> Self {
        let service = Self::spawn(ns, config, log, &[]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while get(ns, "/healthz").0 != 200 {
            assert!(
                Instant::now() < deadline,
                "not healthy in 10 s: {}",
                service.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        service
    }

    fn signal(&self, signal: i32) {
        // SAFETY: a signal to our own child.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) until `needle` occurs `times` times in the log: the service has done
    /// what it logs, however slow the machine is. Panics with the log after 20 s.
    fn wait_log(&self, needle: &str, times: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.log().matches(needle).count() < times {
            assert!(
                Instant::now() < deadline,
                "no {times}x {needle:?} in the log: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit.
    fn stop(mut self) -> String {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "exit status {status}: {}", self.log());
                return self.log();
            }
            assert!(
                Instant::now() < deadline,
                "did not exit on SIGTERM: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The content type `http://METRICS{path}` answers with, inside `ns`.
fn content_type(ns: &NetNs, path: &str) -> String {
    let out = ns
        .command("curl")
        .args([
            "--silent",
            "--max-time",
            "2",
            "--output",
            "/dev/null",
            "--write-out",
            "%{content_type}",
        ])
        .arg(format!("http://{METRICS}{path}"))
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `curl http://METRICS{path}` inside `ns`: (status code, body).
fn get(ns: &NetNs, path: &str) -> (u16, String) {
    let out = ns
        .command("curl")
        .args([
            "--silent",
            "--max-time",
            "2",
            "--write-out",
            "\n%{http_code}",
        ])
        .arg(format!("http://{METRICS}{path}"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

fn metric(body: &str, series: &str) -> u64 {
    body.lines()
        .find(|line| line.starts_with(series))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in the metrics:\n{body}"))
}

fn config(state_dir: &Path, allow: &[String], extra: &str) -> String {
    let allow: Vec<String> = allow.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "state_dir = \"{}\"\nallow = [{}]\n{extra}\n[[interfaces]]\nname = \"{IFACE}\"\n\n[metrics]\naddress = \"{METRICS}\"\n",
        state_dir.display(),
        allow.join(", ")
    )
}

fn connects(host: &Host, server: SocketAddr) -> bool {
    host.ns
        .run(|| TcpStream::connect_timeout(&server, Duration::from_millis(300)).is_ok())
}

/// Whether `host` reaches (`want`) or cannot reach the server within `limit`.
fn becomes(host: &Host, server: SocketAddr, want: bool, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if connects(host, server) == want {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn the_service_applies_reloads_and_serves_metrics() {
    privileged_test!();
    let lab = Lab::new("sv");
    let allowed = lab.host("sva", 10);
    let denied = lab.host("svd", 20);
    let attacker = lab.host("svx", 66);
    let _memcached = Memcached::start(&lab.server.ns, false);
    let mcf = Mcfilter::new("sv").in_netns(&lab.server.ns);
    let dir = std::env::temp_dir().join(mcfilter_tests::unique("sv"));
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mcfilter.toml");
    let log = dir.join("service.log");
    let only_allowed = config(mcf.state_dir(), &[allowed.v4.to_string()], "");
    fs::write(&path, &only_allowed).unwrap();
    let service = Service::start(&lab.server.ns, &path, &log);
    let server = SocketAddr::new(lab.server.v4.into(), PORT);

    allowed
        .ns
        .run(|| memcache::set_get(server, "k", b"v", Duration::from_secs(2)))
        .expect("the allowed client's set/get");
    assert!(!connects(&denied, server), "the denied client is shut out");

    // Edit + SIGHUP: the denied client is let in within a second.
    let both = config(
        mcf.state_dir(),
        &[allowed.v4.to_string(), denied.v4.to_string()],
        "",
    );
    fs::write(&path, &both).unwrap();
    service.signal(libc::SIGHUP);
    service.wait_log("reloaded", 1);
    assert!(
        becomes(&denied, server, true, Duration::from_secs(5)),
        "{}",
        service.log()
    );

    // A broken config is reported and the running policy kept.
    fs::write(&path, "allow = [\"not-a-cidr\"]\n").unwrap();
    service.signal(libc::SIGHUP);
    service.wait_log("keeping the running policy", 1);
    assert!(
        connects(&denied, server) && connects(&allowed, server),
        "old policy still enforced"
    );
    assert_eq!(get(&lab.server.ns, "/healthz").0, 200);

    // A plain edit (no signal) is picked up too.
    fs::write(&path, &only_allowed).unwrap();
    assert!(
        becomes(&denied, server, false, Duration::from_secs(5)),
        "{}",
        service.log()
    );

    // Metrics equal `stats --json` for a known flood (alternating bursts from the attacker's
    // two addresses, so each run of packets ends and the source is recorded and announced).
    for _ in 0..5 {
        attacker.send_udp(&[lab.server.v4.into()], PORT, b"stats\r\n", 50);
        attacker.send_udp(&[lab.server.v6.into()], PORT, b"stats\r\n", 50);
    }
    lab::settle();
    let (code, body) = get(&lab.server.ns, "/metrics");
    assert_eq!(code, 200, "{body}");
    let stats = mcf.json(&["stats", "--json"]);
    assert_eq!(stats["reasons"]["udp_port"], 500);
    let series = "mcfilter_packets_total{reason=\"udp_port\",action=\"drop\"}";
    assert_eq!(metric(&body, series), 500);
    let per_interface = format!(
        "mcfilter_interface_packets_total{{interface=\"{IFACE}\",reason=\"udp_port\",action=\"drop\"}}"
    );
    assert_eq!(
        metric(&body, &per_interface),
        500,
        "one interface: its counters are the totals"
    );
    assert_eq!(
        metric(&body, "mcfilter_outcome_packets_total{outcome=\"dropped\"}"),
        stats["dropped"]["packets"].as_u64().unwrap()
    );
    assert_eq!(metric(&body, "mcfilter_allow_entries"), 1);
    // The busiest sources by prefix: the attacker's and the denied client's IPv4 addresses
    // share a /24.
    let in_prefix = |start: &str| -> u64 {
        stats["sources"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|row| row["source"].as_str().unwrap().starts_with(start))
            .map(|row| row["packets"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(
        metric(
            &body,
            "mcfilter_top_prefix_packets{prefix=\"198.18.0.0/24\"}"
        ),
        in_prefix("198.18.0."),
        "{body}"
    );
    assert_eq!(
        metric(
            &body,
            "mcfilter_top_prefix_packets{prefix=\"2001:db8::/48\"}"
        ),
        in_prefix("2001:db8:"),
        "{body}"
    );

    // Interfaces follow the file: a listed one is attached, one no longer listed detached.
    lab.server.ns.ip(&[
        "link", "add", "extra0", "type", "veth", "peer", "name", "extra1",
    ]);
    let two = format!("{only_allowed}\n[[interfaces]]\nname = \"extra0\"\nmode = \"skb\"\n");
    fs::write(&path, two).unwrap();
    service.signal(libc::SIGHUP);
    let attached = |n: usize| {
        // Attaching loads and verifies the program: seconds on a loaded machine.
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let status = mcf.json(&["status", "--json"]);
            if status["interfaces"].as_array().unwrap().len() == n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    };
    assert!(attached(2), "extra0 attached: {}", service.log());
    fs::write(&path, &only_allowed).unwrap();
    service.signal(libc::SIGHUP);
    assert!(attached(1), "extra0 detached: {}", service.log());

    // SIGTERM: a clean exit, the filter stays attached by default.
    let log_text = service.stop();
    assert!(log_text.contains("stays attached"), "{log_text}");
    assert_eq!(
        mcf.json(&["status", "--json"])["interfaces"][0]["name"],
        IFACE
    );
    assert!(
        !connects(&denied, server),
        "still filtering after the service exited"
    );

    // With detach_on_exit, SIGTERM detaches what the service attached.
    mcf.ok(&["detach", IFACE]);
    fs::write(&path, config(mcf.state_dir(), &[], "detach_on_exit = true")).unwrap();
    let service = Service::start(&lab.server.ns, &path, &log);
    service.stop();
    assert!(!mcf.state_dir().exists(), "detached and removed on exit");
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn stats_watch_prints_rates_from_the_counters() {
    privileged_test!();
    let lab = Lab::new("sw");
    let attacker = lab.host("swx", 66);
    let mcf = Mcfilter::new("sw").in_netns(&lab.server.ns);
    mcf.ok(&["attach", IFACE]);
    let watcher = mcf
        .command(&["stats", "--watch", "0.5", "--json", "--count", "4"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start stats --watch");
    // Bounded: 40 bursts of 100 datagrams, 50 ms apart (about 2 s).
    for _ in 0..40 {
        attacker.send_udp(&[lab.server.v4.into()], PORT, b"stats\r\n", 100);
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = watcher
        .wait_with_output()
        .expect("stats --watch ends after --count");
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
        .collect();
    assert_eq!(lines.len(), 4);
    for line in &lines {
        assert!(line["interval_s"].as_f64().unwrap() >= 0.5, "{line}");
        assert!(line["reasons"]["udp_port"]["pps"].is_f64(), "{line}");
    }
    let peak = lines
        .iter()
        .map(|l| l["dropped"]["pps"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(peak > 100.0, "the flood shows as a drop rate: {peak}");
    assert!(
        lines
            .iter()
            .any(|l| l["sources"][0]["source"] == attacker.v4.to_string())
    );
    mcf.ok(&["detach", IFACE]);
}

#[test]
fn the_service_watches_its_allow_files() {
    privileged_test!();
    let (lab, mcf) = Lab::with_mcfilter("aw");
    let dir = std::env::temp_dir().join(mcfilter_tests::unique("aw"));
    // A Kubernetes ConfigMap's layout: the file is a link through `..data` to a versioned
    // directory, and an update swaps `..data` atomically.
    fs::create_dir_all(dir.join("..v1")).unwrap();
    fs::write(dir.join("..v1/clients.txt"), "198.18.0.10\n").unwrap();
    std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/clients.txt", dir.join("clients.txt")).unwrap();
    fs::write(dir.join("extra.txt"), "198.18.0.20\n").unwrap();
    let path = dir.join("mcfilter.toml");
    let extra = "allow_files = [\"clients.txt\", \"extra.txt\"]";
    fs::write(&path, config(mcf.state_dir(), &[], extra)).unwrap();
    let service = Service::start(&lab.server.ns, &path, &dir.join("service.log"));
    let list = || -> Vec<String> {
        serde_json::from_value(mcf.json(&["allow", "list", "--json"])).expect("CIDRs")
    };
    let becomes_list = |want: &[&str]| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if list() == want {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    };
    assert!(
        becomes_list(&["198.18.0.10/32", "198.18.0.20/32"]),
        "{:?}",
        list()
    );

    // Edited in place.
    fs::write(dir.join("extra.txt"), "198.18.0.21\n").unwrap();
    assert!(
        becomes_list(&["198.18.0.10/32", "198.18.0.21/32"]),
        "an edited allow file applies without SIGHUP: {:?} {}",
        list(),
        service.log()
    );
    // Swapped like a ConfigMap update.
    fs::create_dir_all(dir.join("..v2")).unwrap();
    fs::write(dir.join("..v2/clients.txt"), "198.18.0.11\n").unwrap();
    std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).unwrap();
    fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    assert!(
        becomes_list(&["198.18.0.11/32", "198.18.0.21/32"]),
        "a swapped allow file applies: {:?} {}",
        list(),
        service.log()
    );
    // A broken one keeps the running policy.
    fs::write(dir.join("extra.txt"), "198.18.0.22\nnot-a-cidr\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !service.log().contains("keeping the running policy") {
        assert!(Instant::now() < deadline, "no refusal: {}", service.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(list(), ["198.18.0.11/32", "198.18.0.21/32"]);

    service.stop();
    mcf.ok(&["detach", IFACE]);
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn idle_connections_cannot_starve_the_metrics_server() {
    privileged_test!();
    // 1,000 sockets and the test's own files: more than the default soft limit of 1,024.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit to fill, then to set from what was read.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit), 0);
        limit.rlim_cur = limit.rlim_max.min(65_536);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit), 0);
    }
    let (lab, mcf) = Lab::with_mcfilter("ic");
    let dir = std::env::temp_dir().join(mcfilter_tests::unique("ic"));
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mcfilter.toml");
    fs::write(&path, config(mcf.state_dir(), &["198.18.0.10".into()], "")).unwrap();
    let service = Service::start(&lab.server.ns, &path, &dir.join("service.log"));
    let open_files = || {
        fs::read_dir(format!("/proc/{}/fd", service.child.id()))
            .expect("the service's fds")
            .count()
    };
    let before = open_files();

    // Idle clients: connected, never a byte sent.
    let idle: Vec<TcpStream> = lab.server.ns.run(|| {
        (0..1000)
            .filter_map(|_| TcpStream::connect(METRICS).ok())
            .collect()
    });
    assert!(idle.len() >= 900, "{} idle connections made", idle.len());
    std::thread::sleep(Duration::from_millis(500));
    let during = open_files();
    assert!(
        during <= before + DOCUMENTED_MAX_CONNECTIONS + 8,
        "{during} open files with idle clients, {before} before"
    );
    // Scrapes go through once the idle connections' header timeout has passed.
    let deadline = Instant::now() + Duration::from_secs(15);
    while get(&lab.server.ns, "/metrics").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "no scrape in 15 s: {}",
            service.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // And a reload still applies.
    fs::write(&path, config(mcf.state_dir(), &["198.18.0.11".into()], "")).unwrap();
    service.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while mcf.json(&["allow", "list", "--json"]) != serde_json::json!(["198.18.0.11/32"]) {
        assert!(Instant::now() < deadline, "no reload: {}", service.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(idle);
    service.stop();
    mcf.ok(&["detach", IFACE]);
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_restarted_service_swaps_in_its_program_and_owns_its_interfaces() {
    privileged_test!();
    let (lab, mcf) = Lab::with_mcfilter("rs");
    // A second interface for the service, in the server's namespace.
    const SECOND: &str = "rs1";
    for args in [
        &[
            "link", "add", SECOND, "type", "veth", "peer", "name", "rs1p",
        ][..],
        &["link", "set", SECOND, "up"],
        &["link", "set", "rs1p", "up"],
    ] {
        let out = lab.server.ns.command("ip").args(args).output().unwrap();
        assert!(out.status.success(), "ip {args:?}: {out:?}");
    }
    let dir = std::env::temp_dir().join(mcfilter_tests::unique("rs"));
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mcfilter.toml");
    let status = || mcf.json(&["status", "--json"]);
    let interface = |status: &serde_json::Value, name: &str| {
        status["interfaces"]
            .as_array()
            .and_then(|all| all.iter().find(|i| i["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no {name} in {status}"))
    };
    let build_warnings = |status: &serde_json::Value| {
        status["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w.as_str().unwrap().contains("runs the program of"))
            .count()
    };
    let second = format!("\n[[interfaces]]\nname = \"{SECOND}\"\n");
    fs::write(&path, config(mcf.state_dir(), &[], "") + &second).unwrap();
    let first = Service::start(&lab.server.ns, &path, &dir.join("first.log"));
    let now = status();
    for name in [IFACE, SECOND] {
        let iface = interface(&now, name);
        assert_eq!(iface["service"], true, "{now}");
        assert_eq!(iface["build"], now["build"], "this build's program: {now}");
    }
    assert_eq!(build_warnings(&now), 0, "{now}");
    let before = interface(&now, IFACE)["program_id"].clone();
    // As if an earlier build had attached eth0: its record names another object.
    let state = mcfilter::StateDir::new(mcf.state_dir());
    let ifindex = interface(&now, IFACE)["ifindex"].as_u64().unwrap() as u32;
    let mut meta = mcfilter::maps::iface_meta(&state).unwrap()[&ifindex];
    meta.build.object ^= 1;
    mcfilter::maps::set_iface_meta(&state, ifindex, meta).unwrap();
    let now = status();
    assert_ne!(interface(&now, IFACE)["build"], now["build"], "{now}");
    assert_eq!(build_warnings(&now), 1, "status warns: {now}");
    first.stop();

    // Stopped: the filter stays attached. An upgraded service starts, with a config that no
    // longer lists the second interface.
    assert_eq!(interface(&status(), IFACE)["program_id"], before);
    fs::write(&path, config(mcf.state_dir(), &[], "detach_on_exit = true")).unwrap();
    let restarted = Service::start(&lab.server.ns, &path, &dir.join("second.log"));
    let log = restarted.log();
    assert!(
        log.contains(&format!("{SECOND} is this service's")),
        "the record names it: {log}"
    );
    assert!(
        log.contains(&format!("detached from {SECOND} (no longer listed)")),
        "{log}"
    );
    assert!(
        log.contains("swapped this build's program in on eth0"),
        "{log}"
    );
    let now = status();
    assert_eq!(now["interfaces"].as_array().unwrap().len(), 1, "{now}");
    let eth0 = interface(&now, IFACE);
    assert_ne!(
        eth0["program_id"], before,
        "the restarted service runs its own program"
    );
    assert_eq!(eth0["build"], now["build"], "{now}");
    assert_eq!(build_warnings(&now), 0, "{now}");
    // /healthz and the metrics name the binary's build and the program's.
    let build = now["build"].as_str().unwrap();
    let (code, body) = get(&lab.server.ns, "/healthz");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains(&format!("build {build}\n")) && body.contains(&format!("eth0 {build}\n")),
        "{body}"
    );
    let (_, body) = get(&lab.server.ns, "/metrics");
    assert_eq!(
        metric(&body, &format!("mcfilter_build_info{{build=\"{build}\"}}")),
        1
    );
    assert!(
        body.lines().any(
            |line| line.starts_with("mcfilter_program_info{interface=\"eth0\"")
                && line.contains(&format!("build=\"{build}\""))
        ),
        "{body}"
    );
    // The interface it found attached is its own: detach_on_exit covers it.
    let log = restarted.stop();
    assert!(log.contains("detached from eth0"), "{log}");
    let (_, line) = mcf.fails(&["status"]);
    assert!(line.contains("not attached"), "{line}");
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_service_serves_everything_under_three_capabilities() {
    privileged_test!();
    // The unit's capability set and sandbox (all but what needs systemd itself), its system
    // call filter included, as an unprivileged user in a bpffs of its own: the service
    // attaches to the namespace's loopback, five datagrams from one source to the protected
    // port are dropped, then one from another (sent from one CPU: a source's run of packets
    // enters the per-source map, and is logged, when its CPU sees another source), the program's event about the new source reaches the
    // service's log, and a scrape has every
    // metric family, the interface's own counters included (looking a program up by id, as
    // these once did, needs CAP_SYS_ADMIN).
    let ns = NetNs::new("cr");
    let dir = std::env::temp_dir().join(mcfilter_tests::unique("cr"));
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mcfilter.toml");
    fs::write(
        &path,
        "state_dir = \"/sys/fs/bpf/caprun\"\ndetach_on_exit = true\n\
         [[interfaces]]\nname = \"lo\"\n\n[metrics]\naddress = \"127.0.0.1:9912\"\n",
    )
    .unwrap();
    let log = dir.join("service.log");
    let scrape = dir.join("metrics");
    let script = format!(
        r#"
        ip link set lo up && ip addr add 198.18.0.1/32 dev lo && ip addr add 198.18.0.2/32 dev lo || exit 91
        # The unit's sandbox, as far as a mount namespace plays it: ProtectProc=invisible (a
        # proc of its own), ReadOnlyPaths=/sys /proc/sys (read-only, bpffs not),
        # PrivateDevices (a /dev with the pseudo-devices only), UMask=0077, NoNewPrivileges.
        mount -t proc -o hidepid=invisible proc /proc || exit 92
        mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys || exit 93
        mount -o remount,bind,ro /sys || exit 94
        mount -t tmpfs -o mode=0755,nosuid,noexec tmpfs /dev || exit 95
        for dev in null:3 zero:5 random:8 urandom:9; do
            mknod -m 0666 /dev/${{dev%:*}} c 1 ${{dev#*:}} || exit 96
        done
        umask 0077
        # Not through nobody_with, a function: $! must be the service (timeout forwards the
        # TERM below to it, and ends it in 120 s if nothing else does).
        caps=+bpf,+perfmon,+net_admin
        # SystemCallFilter= and the other settings systemd enforces with seccomp
        # (MemoryDenyWriteExecute, RestrictAddressFamilies, RestrictNamespaces,
        # RestrictSUIDSGID): the filters are loaded right before mcfilter is exec'd.
        timeout 120 setpriv --reuid=65534 --regid=65534 --clear-groups --no-new-privs \
            --inh-caps=$caps --ambient-caps=$caps {filter} "$MCF" run --config {config} >/dev/null 2>{log} &
        pid=$!
        health() {{ curl --silent --max-time 2 --output /dev/null --write-out '%{{http_code}}' http://127.0.0.1:9912/healthz; }}
        i=0; until [ "$(health)" = 200 ] || [ $i -ge 300 ]; do i=$((i+1)); sleep 0.1; done
        echo "case healthy: $(health)"
        service=$(grep -l "^PPid:[[:space:]]*$pid\$" /proc/[0-9]*/status | cut -d/ -f3)
        echo "case filtered: $(cat /proc/$service/comm) $(awk '/^Seccomp(_filters)?:/ {{printf " %s", $2}}' /proc/$service/status)"
        taskset -c 0 bash -c 'for n in 1 2 3 4 5; do printf x > /dev/udp/198.18.0.1/11211; done;
            printf x > /dev/udp/198.18.0.2/11211'
        i=0; until grep -q 'new dropped source 198.18.0.1' {log} || [ $i -ge 200 ]; do i=$((i+1)); sleep 0.1; done
        curl --silent --max-time 5 --output {scrape} http://127.0.0.1:9912/metrics
        echo "case scraped: $?"
        kill -TERM $pid; wait $pid
        echo "case exit: $?"
        "#,
        config = path.display(),
        log = log.display(),
        scrape = scrape.display(),
        filter = syscall_filter::exec_under(&syscall_filter::unit_sandbox(), &dir),
    );
    let out = ns.private_bpffs_script(&script);
    let cases = mcfilter_tests::netns::script_cases(&out);
    let service_log = fs::read_to_string(&log).unwrap_or_default();
    let context = format!("{out:?}\nservice log:\n{service_log}");
    for (case, want) in [
        ("healthy", "200"),
        // Seccomp mode 2 (filtered), two filters: the calls, and the settings' argument checks.
        ("filtered", "mcfilter  2 2"),
        ("scraped", "0"),
        ("exit", "0"),
    ] {
        assert_eq!(
            cases.get(case).map(String::as_str),
            Some(want),
            "{case}: {context}"
        );
    }
    assert!(
        service_log.contains("new dropped source 198.18.0.1"),
        "the program's event in the log: {context}"
    );
    assert!(!service_log.contains("no events"), "{context}");
    let body = fs::read_to_string(&scrape).unwrap_or_default();
    for family in [
        "packets",
        "bytes",
        "interface_packets",
        "interface_bytes",
        "outcome_packets",
        "outcome_bytes",
        "sources_evicted",
        "sources_not_recorded",
        "fragments_not_recorded",
        "allow_entries",
        "allow_capacity",
        "sources_entries",
        "sources_capacity",
        "fragments_entries",
        "fragments_capacity",
        "kernel_memory_bytes",
        "dry_run",
        "program_info",
        "build_info",
        "config_last_reload_successful",
        "config_last_reload_success_timestamp_seconds",
        "top_prefix_packets",
        "top_prefix_would_drop_packets",
        "top_prefix_sources",
    ] {
        assert!(
            body.contains(&format!("# TYPE mcfilter_{family} ")),
            "no family {family} in the scrape:\n{body}\n{context}"
        );
    }
    assert_eq!(
        metric(
            &body,
            "mcfilter_interface_packets_total{interface=\"lo\",reason=\"udp_port\",action=\"drop\"}"
        ),
        6,
        "{body}"
    );
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_service_runs_in_front_of_the_program_its_config_names() {
    privileged_test!();
    let lab = Lab::new("sn");
    let peer = mcfilter_tests::xdp_filter::XdpFilter::new("snx", &lab.server.ns);
    peer.ok(&["load", IFACE]);
    let peer_id = lab
        .server
        .ns
        .xdp_program(IFACE)
        .expect("xdp-filter's program");
    let mcf = Mcfilter::new("sn").in_netns(&lab.server.ns);
    let dir = std::env::temp_dir().join(mcfilter_tests::unique("sn"));
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mcfilter.toml");
    fs::write(
        &path,
        format!(
            "state_dir = \"{}\"\ndetach_on_exit = true\n[[interfaces]]\nname = \"{IFACE}\"\nthen = \"existing\"\n\n[metrics]\naddress = \"{METRICS}\"\n",
            mcf.state_dir().display()
        ),
    )
    .unwrap();
    let service = Service::start(&lab.server.ns, &path, &dir.join("log"));
    let status = mcf.json(&["status", "--json"]);
    let iface = &status["interfaces"][0];
    assert_eq!(iface["next"]["program_id"], peer_id, "{status}");
    assert_eq!(iface["running"], true, "{status}");
    assert_eq!(
        lab.server.ns.xdp_program(IFACE),
        iface["program_id"].as_u64()
    );
    // detach_on_exit hands the interface back to xdp-filter.
    service.stop();
    assert_eq!(lab.server.ns.xdp_program(IFACE), Some(peer_id));
    assert!(!mcf.state_dir().exists());
    peer.ok(&["unload", IFACE]);
    fs::remove_dir_all(dir).unwrap();
}

/// The next datagram the service sent to the test's notify socket.
fn notification(socket: &std::os::unix::net::UnixDatagram, service: &Service) -> String {
    let mut buf = [0u8; 4096];
    match mcfilter_tests::uninterrupted(|| socket.recv(&mut buf)) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(err) => panic!("no notification ({err}): {}", service.log()),
    }
}

#[test]
fn the_service_speaks_systemds_readiness_protocol() {
    privileged_test!();
    let (lab, mcf) = Lab::with_mcfilter("sn");
    let dir = std::env::temp_dir().join(mcfilter_tests::unique("sn"));
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mcfilter.toml");
    // Atomic replacement, as editors and config management write: one change, one reload.
    let replace = |text: &str| {
        let new = dir.join("mcfilter.toml.new");
        fs::write(&new, text).unwrap();
        fs::rename(&new, &path).unwrap();
    };
    replace(&config(mcf.state_dir(), &["198.18.0.10".into()], ""));
    // The socket systemd would listen on (a path: an abstract name would be per namespace).
    let socket_path = dir.join("notify");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let service = Service::spawn(
        &lab.server.ns,
        &path,
        &dir.join("service.log"),
        &[("NOTIFY_SOCKET", socket_path.as_os_str())],
    );
    let one_entry = "STATUS=filtering eth0 (1 interface(s)), ports 11211, 1 allow-list entries";

    // READY=1 once the filter is attached and the metrics answer: `systemctl start` returns
    // then, not before.
    assert_eq!(
        notification(&socket, &service),
        format!("READY=1\n{one_entry}")
    );
    let status = mcf.json(&["status", "--json"]);
    assert_eq!(status["interfaces"][0]["name"], IFACE, "{status}");
    assert_eq!(get(&lab.server.ns, "/healthz").0, 200);
    // A change by hand to the service's state says that the next reload undoes it.
    let by_hand = mcf.run(&["allow", "add", "198.18.0.99"]);
    assert!(by_hand.status.success());
    let stderr = String::from_utf8_lossy(&by_hand.stderr);
    assert!(
        stderr.contains("`mcfilter run` manages this state")
            && stderr.contains("puts its config's allow-list back"),
        "{stderr}"
    );
    mcf.ok(&["allow", "del", "198.18.0.99"]);

    // SIGHUP (what systemd sends for a reload): RELOADING=1 with the time it started, then
    // READY=1 when it is done.
    let before = monotonic_usec();
    service.signal(libc::SIGHUP);
    let reloading = notification(&socket, &service);
    let usec: u64 = reloading
        .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
        .unwrap_or_else(|| panic!("{reloading:?}"))
        .parse()
        .expect("microseconds");
    assert!(
        (before..=monotonic_usec()).contains(&usec),
        "{usec} not between {before} and now"
    );
    assert_eq!(
        notification(&socket, &service),
        format!("READY=1\n{one_entry}")
    );

    // A changed file reloads the same way; at READY=1 the new list is in force.
    replace(&config(
        mcf.state_dir(),
        &["198.18.0.10".into(), "198.18.0.11".into()],
        "",
    ));
    assert!(notification(&socket, &service).starts_with("RELOADING=1\n"));
    assert_eq!(
        notification(&socket, &service),
        "READY=1\nSTATUS=filtering eth0 (1 interface(s)), ports 11211, 2 allow-list entries"
    );
    assert_eq!(
        mcf.json(&["allow", "list", "--json"]),
        serde_json::json!(["198.18.0.10/32", "198.18.0.11/32"])
    );

    // A config that does not validate: the reload is reported as failed and the previous
    // policy stays.
    replace("ports = [0]\n");
    assert!(notification(&socket, &service).starts_with("RELOADING=1\n"));
    let failed = notification(&socket, &service);
    assert!(
        failed.starts_with("READY=1\nSTATUS=reload failed, running the previous config: ")
            && failed.contains("'0' is not a port"),
        "{failed:?}"
    );
    assert_eq!(
        mcf.json(&["allow", "list", "--json"]),
        serde_json::json!(["198.18.0.10/32", "198.18.0.11/32"])
    );

    // And `run --check` (the unit's first ExecReload) fails on the same file, with one line,
    // without privileges.
    let check = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(binary())
        .args(["run", "--check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.lines().count() == 1 && stderr.contains("'0' is not a port"),
        "{stderr}"
    );

    // SIGTERM: STOPPING=1 before the process exits.
    let log = service.stop();
    let mut buf = [0u8; 64];
    let n = mcfilter_tests::uninterrupted(|| socket.recv(&mut buf))
        .unwrap_or_else(|err| panic!("{err}: {log}"));
    assert_eq!(&buf[..n], b"STOPPING=1");
    mcf.ok(&["detach", IFACE]);
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn metrics_are_openmetrics_and_say_what_happened_to_each_packet() {
    privileged_test!();
    let lab = Lab::new("om");
    let attacker = lab.host("omx", 66);
    let mcf = Mcfilter::new("om").in_netns(&lab.server.ns);
    let dir = std::env::temp_dir().join(mcfilter_tests::unique("om"));
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mcfilter.toml");
    let dry_run = config(mcf.state_dir(), &[], "dry_run = true");
    fs::write(&path, &dry_run).unwrap();
    let service = Service::start(&lab.server.ns, &path, &dir.join("service.log"));

    // Dry-run passes what it would drop: the action says so, not the reason's usual verdict.
    attacker.send_udp(&[lab.server.v4.into()], PORT, b"stats\r\n", 50);
    lab::settle();
    assert_eq!(
        content_type(&lab.server.ns, "/metrics"),
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    // Background traffic (neighbour discovery, ARP) passes at any time: the scrape is read
    // between two readings of the exact counters.
    let passed = || {
        mcf.json(&["stats", "--json"])["passed"]["packets"]
            .as_u64()
            .unwrap()
    };
    let passed_before = passed();
    let (code, body) = get(&lab.server.ns, "/metrics");
    let passed_after = passed();
    assert_eq!(code, 200, "{body}");
    assert_eq!(body.lines().last(), Some("# EOF"), "{body}");
    // Kubernetes' probes: alive (the process answers), ready (the filter is attached).
    assert_eq!(get(&lab.server.ns, "/livez"), (200, "ok\n".to_owned()));
    assert_eq!(get(&lab.server.ns, "/readyz").0, 200);
    for (action, want) in [("would_drop", 50), ("drop", 0)] {
        assert_eq!(
            metric(
                &body,
                &format!("mcfilter_packets_total{{reason=\"udp_port\",action=\"{action}\"}}")
            ),
            want,
            "{action}: {body}"
        );
    }
    let passed_for_its_own_reasons = metric(
        &body,
        "mcfilter_packets_total{reason=\"not_protected\",action=\"pass\"}",
    ) + metric(
        &body,
        "mcfilter_packets_total{reason=\"not_ip\",action=\"pass\"}",
    );
    assert!(
        (passed_before - 50..=passed_after - 50).contains(&passed_for_its_own_reasons),
        "what passed for its own reasons: {passed_for_its_own_reasons}, between {} and {}: {body}",
        passed_before - 50,
        passed_after - 50
    );
    // Sources by prefix, without addresses or reasons: bounded under a spoofed flood.
    let prefix = "prefix=\"198.18.0.0/24\"";
    assert_eq!(
        metric(&body, &format!("mcfilter_top_prefix_packets{{{prefix}}}")),
        50
    );
    assert_eq!(
        metric(
            &body,
            &format!("mcfilter_top_prefix_would_drop_packets{{{prefix}}}")
        ),
        50
    );
    assert_eq!(
        metric(&body, &format!("mcfilter_top_prefix_sources{{{prefix}}}")),
        1
    );
    assert!(!body.contains("source=\""), "no per-address series: {body}");
    assert_eq!(metric(&body, "mcfilter_config_last_reload_successful"), 1);
    let applied = metric(
        &body,
        "mcfilter_config_last_reload_success_timestamp_seconds",
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!((now - 60..=now).contains(&applied), "{applied} vs {now}");

    // A reload that fails: 0, and the time of the last good one stays.
    fs::write(&path, "ports = [0]\n").unwrap();
    service.signal(libc::SIGHUP);
    service.wait_log("keeping the running policy", 1);
    let (_, body) = get(&lab.server.ns, "/metrics");
    assert_eq!(metric(&body, "mcfilter_config_last_reload_successful"), 0);
    assert_eq!(
        metric(
            &body,
            "mcfilter_config_last_reload_success_timestamp_seconds"
        ),
        applied
    );

    // Exact per-source series, opted into.
    fs::write(&path, format!("{dry_run}sources = \"exact\"\n")).unwrap();
    service.signal(libc::SIGHUP);
    service.wait_log("reloaded", 1);
    let (_, body) = get(&lab.server.ns, "/metrics");
    assert_eq!(metric(&body, "mcfilter_config_last_reload_successful"), 1);
    assert_eq!(
        metric(
            &body,
            &format!(
                "mcfilter_top_source_packets{{source=\"{}\",reason=\"udp_port\"}}",
                attacker.v4
            )
        ),
        50,
        "{body}"
    );
    assert!(!body.contains("mcfilter_top_prefix"), "{body}");
    service.stop();
    mcf.ok(&["detach", IFACE]);
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_service_logs_levels_journald_keeps_or_json() {
    privileged_test!();
    let (lab, mcf) = Lab::with_mcfilter("lg");
    let dir = std::env::temp_dir().join(mcfilter_tests::unique("lg"));
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mcfilter.toml");
    let log = dir.join("service.log");
    let text = config(mcf.state_dir(), &[], "");

    // Under journald (JOURNAL_STREAM set): each line has the syslog priority of its level.
    fs::write(&path, &text).unwrap();
    let service = Service::spawn(
        &lab.server.ns,
        &path,
        &log,
        &[("JOURNAL_STREAM", std::ffi::OsStr::new("8:1234"))],
    );
    service.wait_log("metrics on", 1);
    fs::write(&path, "ports = [0]\n").unwrap();
    service.signal(libc::SIGHUP);
    service.wait_log("keeping the running policy", 1);
    let lines = service.stop();
    assert!(
        lines
            .lines()
            .any(|l| l.starts_with("<6>mcfilter: info: applied ")),
        "{lines}"
    );
    assert!(
        lines
            .lines()
            .any(|l| l.starts_with("<3>mcfilter: error: ")
                && l.ends_with("keeping the running policy")),
        "{lines}"
    );
    assert!(
        lines.lines().all(|l| l.starts_with('<')),
        "every line has its priority: {lines}"
    );

    // log_format = "json": one object a line.
    fs::write(&path, config(mcf.state_dir(), &[], "log_format = \"json\"")).unwrap();
    let service = Service::spawn(&lab.server.ns, &path, &log, &[]);
    service.wait_log("metrics on", 1);
    let lines = service.stop();
    let records: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert!(
        records.iter().any(|r| r["level"] == "info"
            && r["message"].as_str().unwrap().starts_with("applied ")
            && r["ts"].as_f64().unwrap() > 1.7e9),
        "{lines}"
    );
    mcf.ok(&["detach", IFACE]);
    fs::remove_dir_all(dir).unwrap();
}

/// The metrics server's connection limit, as the README states it ("at most 64 connections").
const DOCUMENTED_MAX_CONNECTIONS: usize = 64;

/// CLOCK_MONOTONIC in microseconds: the clock sd_notify's MONOTONIC_USEC is read from.
fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to write to; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut now) };
    u64::try_from(now.tv_sec).expect("a time after boot") * 1_000_000
        + u64::try_from(now.tv_nsec).expect("nanoseconds") / 1_000
}
