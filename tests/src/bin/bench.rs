//! `cargo xtask bench`: the per-packet cost of the real program through BPF_PROG_TEST_RUN,
//! class by class, next to a trivial XDP_PASS program (the floor) on the same frames in the same
//! run, as nanoseconds and as a ratio to the floor; then control-plane timings of the real CLI
//! (`allow replace`, `stats --json`) with their peak RSS. Writes Markdown to stdout and JSON to
//! the path given by `--json` (default target/bench/results.json).
//!
//! Usage: mcfilter-bench [--repeat N] [--runs N] [--json PATH] [--only per-packet|flood|control|load]

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    process::Command,
    time::{Duration, Instant},
};

use aya::maps::PerCpuValues;
use ipnet::IpNet;
use mcfilter_common::{IpKey, SourceStats};
use mcfilter_tests::{
    fixtures::*,
    netns::NetNs,
    oracle::{Oracle, Policy},
    packet::*,
    program::{Floor, Harness, Pinned},
};
use serde_json::json;

struct Options {
    repeat: u32,
    runs: usize,
    json: std::path::PathBuf,
    /// Run one section only: per-packet, flood, control, load.
    only: Option<String>,
}

fn options() -> Options {
    let mut opts = Options {
        repeat: 1_000_000,
        runs: 5,
        json: "target/bench/results.json".into(),
        only: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--repeat" => opts.repeat = value().parse().expect("--repeat N"),
            "--runs" => opts.runs = value().parse().expect("--runs N"),
            "--json" => opts.json = value().into(),
            "--only" => opts.only = Some(value()),
            _ => panic!(
                "unknown argument {arg}; usage: mcfilter-bench [--repeat N] [--runs N] [--json PATH]"
            ),
        }
    }
    opts
}

/// An allow-list of `n` entries: mostly /32 and /128, some /24 and /64, always including the
/// allowed fixtures' prefixes.
fn allow_list(n: usize) -> Vec<IpNet> {
    let mut nets: BTreeSet<IpNet> = policy().allow.into_iter().collect();
    let mut i: u32 = 0;
    while nets.len() < n {
        let v4 = Ipv4Addr::from(0x0a00_0000u32.wrapping_add(i.wrapping_mul(2_654_435_761) >> 4));
        let net = match i % 10 {
            0 => IpNet::new(v4.into(), 24),
            1 | 2 => IpNet::new(
                std::net::Ipv6Addr::from((0x2001_0db8u128 << 96) | u128::from(i) << 64).into(),
                64,
            ),
            3 => IpNet::new(
                std::net::Ipv6Addr::from((0x2001_0db8u128 << 96) | u128::from(i)).into(),
                128,
            ),
            _ => IpNet::new(v4.into(), 32),
        }
        .expect("prefix")
        .trunc();
        nets.insert(net);
        i += 1;
    }
    nets.into_iter().collect()
}

/// xdp-filter (xdp-tools, Debian) with its default features, dropping UDP and TCP to 11211,
/// loaded on a veth in a namespace of its own without libxdp's dispatcher and pinned so that
/// the same frames can be run through it. Removed on drop.
struct XdpFilter {
    ns: NetNs,
    pin: std::path::PathBuf,
    program: Pinned,
}

impl XdpFilter {
    fn load() -> Self {
        let ns = NetNs::new("xdpf");
        ns.ip(&["link", "add", "xf0", "type", "veth", "peer", "name", "xf1"]);
        ns.ip(&["link", "set", "xf0", "up"]);
        let run = |args: &[&str]| {
            let out = ns
                .command("xdp-filter")
                .args(args)
                .env("LIBXDP_SKIP_DISPATCHER", "1")
                .output()
                .expect("run xdp-filter (Debian package xdp-tools)");
            assert!(out.status.success(), "xdp-filter {args:?}: {out:?}");
        };
        run(&["load", "xf0", "--mode", "skb"]);
        run(&["port", "11211", "--proto", "udp", "--mode", "dst"]);
        run(&["port", "11211", "--proto", "tcp", "--mode", "dst"]);
        let link = ns
            .command("ip")
            .args(["-j", "link", "show", "xf0"])
            .output()
            .expect("ip");
        let link: serde_json::Value = serde_json::from_slice(&link.stdout).expect("ip -j");
        let id = link[0]["xdp"]["prog"]["id"]
            .as_u64()
            .expect("xdp-filter's program id");
        let pin = std::path::PathBuf::from("/sys/fs/bpf").join(mcfilter_tests::unique("xdpf"));
        let out = Command::new("bpftool")
            .args(["prog", "pin", "id", &id.to_string()])
            .arg(&pin)
            .output()
            .expect("run bpftool");
        assert!(out.status.success(), "bpftool prog pin: {out:?}");
        let program = Pinned::open(&pin);
        XdpFilter { ns, pin, program }
    }
}

impl Drop for XdpFilter {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.pin);
        let _ = self
            .ns
            .command("xdp-filter")
            .args(["unload", "xf0"])
            .output();
    }
}

/// Prints one table row and returns it as JSON.
fn row(
    name: &str,
    reason: &str,
    allow_entries: usize,
    ours: u64,
    base: u64,
    theirs: u64,
) -> serde_json::Value {
    let ratio = ours as f64 / base.max(1) as f64;
    // How much of xdp-filter's cost over the floor mcfilter's is (target: at most 0.5).
    let versus = ours.saturating_sub(base) as f64 / theirs.saturating_sub(base).max(1) as f64;
    println!("| {name} | {reason} | {ours} | {base} | {ratio:.2} | {theirs} | {versus:.2} |");
    let round = |x: f64| (x * 100.0).round() / 100.0;
    json!({"class": name, "reason": reason, "allow_entries": allow_entries, "mcfilter_ns": ours,
        "floor_ns": base, "ratio": round(ratio), "xdp_filter_ns": theirs,
        "over_floor_vs_xdp_filter": round(versus)})
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    let opts = options();
    let wanted = |section: &str| opts.only.as_deref().is_none_or(|only| only == section);
    let none = || serde_json::Value::Null;
    let classes = if wanted("per-packet") {
        per_packet(&opts)
    } else {
        none()
    };
    let flood = if wanted("flood") { flood() } else { none() };
    let control = if wanted("control") {
        control_plane()
    } else {
        none()
    };
    let load = if wanted("load") { load() } else { none() };
    let report = json!({"repeat": opts.repeat, "runs": opts.runs, "classes": classes,
        "flood": flood, "control_plane": control, "load": load});
    if let Some(dir) = opts.json.parent() {
        std::fs::create_dir_all(dir).expect("create the JSON's directory");
    }
    std::fs::write(
        &opts.json,
        serde_json::to_string_pretty(&report).expect("json"),
    )
    .expect("write the JSON report");
    eprintln!("\nJSON: {}", opts.json.display());
}

/// Per-packet cost by class: mcfilter, the floor and xdp-filter on the same frames.
fn per_packet(opts: &Options) -> serde_json::Value {
    let floor = Floor::load();
    let xdp_filter = XdpFilter::load();
    let stats = udp(40000, 11211, &memcached_udp_request(1, b"stats\r\n"));
    let syn = tcp_syn(40000, 11211);
    let (q, qinq) = (ETH_P_8021Q, ETH_P_8021AD);
    let hbh_dst_rt = [Ext::HopByHop, Ext::DestOpts, Ext::Routing];
    let classes: Vec<(&str, Vec<u8>, usize)> = vec![
        (
            "udp4 other port",
            v4(DENIED_V4, IPPROTO_UDP, &udp(1, 53, &[0; 32])),
            10,
        ),
        (
            "udp6 other port",
            v6(DENIED_V6, IPPROTO_UDP, &udp(1, 53, &[0; 32])),
            10,
        ),
        (
            "tcp4 other port",
            v4(DENIED_V4, IPPROTO_TCP, &tcp_syn(1, 80)),
            10,
        ),
        (
            "tcp6 other port",
            v6(DENIED_V6, IPPROTO_TCP, &tcp_syn(1, 80)),
            10,
        ),
        ("arp", arp(DENIED_V4, SERVER_V4), 10),
        ("udp4 11211", v4(DENIED_V4, IPPROTO_UDP, &stats), 10),
        ("udp6 11211", v6(DENIED_V6, IPPROTO_UDP, &stats), 10),
        (
            "udp4 11211, QinQ",
            v4_with(
                &[qinq, q],
                DENIED_V4,
                &[],
                NOT_FRAGMENTED,
                IPPROTO_UDP,
                &stats,
            ),
            10,
        ),
        (
            "udp4 11211, 40 B options",
            v4_with(
                &[],
                DENIED_V4,
                &[1; 40],
                NOT_FRAGMENTED,
                IPPROTO_UDP,
                &stats,
            ),
            10,
        ),
        (
            "udp6 11211, 3 ext headers",
            v6_with(&[], DENIED_V6, &hbh_dst_rt, IPPROTO_UDP, &stats),
            10,
        ),
        (
            "tcp4 allowed, 10 entries",
            v4(ALLOWED_V4, IPPROTO_TCP, &syn),
            10,
        ),
        (
            "tcp4 denied, 10 entries",
            v4(DENIED_V4, IPPROTO_TCP, &syn),
            10,
        ),
        (
            "tcp6 allowed, 10 entries",
            v6(ALLOWED_V6, IPPROTO_TCP, &syn),
            10,
        ),
        (
            "tcp4 allowed, 10k entries",
            v4(ALLOWED_V4, IPPROTO_TCP, &syn),
            10_000,
        ),
        (
            "tcp4 denied, 10k entries",
            v4(DENIED_V4, IPPROTO_TCP, &syn),
            10_000,
        ),
        (
            "tcp4 allowed, 1M entries",
            v4(ALLOWED_V4, IPPROTO_TCP, &syn),
            1_000_000,
        ),
        (
            "tcp4 denied, 1M entries",
            v4(DENIED_V4, IPPROTO_TCP, &syn),
            1_000_000,
        ),
        (
            "tcp6 allowed, 1M entries",
            v6(ALLOWED_V6, IPPROTO_TCP, &syn),
            1_000_000,
        ),
        (
            "udp4 11211 first fragment",
            v4_with(&[], DENIED_V4, &[], Frag::first(9), IPPROTO_UDP, &stats),
            10,
        ),
        (
            "udp4 later fragment",
            v4_with(
                &[],
                DENIED_V4,
                &[],
                Frag::later(9, 185, false),
                IPPROTO_UDP,
                &[0; 64],
            ),
            10,
        ),
        (
            "udp6 later fragment",
            v6_with(
                &[],
                DENIED_V6,
                &[Ext::Fragment {
                    offset: 185,
                    more: false,
                    id: 9,
                }],
                IPPROTO_UDP,
                &[0; 64],
            ),
            10,
        ),
    ];
    println!(
        "Per-packet cost through BPF_PROG_TEST_RUN ({} repeats, median of {} runs)\n",
        opts.repeat, opts.runs
    );
    println!(
        "| class | verdict | mcfilter ns | floor ns | ratio | xdp-filter ns | over floor: mcfilter / xdp-filter |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: |");
    let mut rows = Vec::new();
    let mut loaded: Option<(usize, Harness, Oracle)> = None;
    for (name, frame, allow_entries) in classes {
        if loaded.as_ref().map(|(n, _, _)| *n) != Some(allow_entries) {
            let policy = Policy {
                ports: BTreeSet::from([11211, 22122]),
                allow: allow_list(allow_entries),
                drop_reflected: true,
            };
            loaded = Some((allow_entries, Harness::new(&policy), Oracle::new(policy)));
        }
        let (_, harness, oracle) = loaded.as_mut().expect("loaded");
        let (reason, _) = oracle.judge(&frame);
        // The first fragment goes first so the later ones meet a remembered datagram.
        harness.run(&frame);
        let ours = median(
            (0..opts.runs)
                .map(|_| harness.time(&frame, opts.repeat))
                .collect(),
        );
        let base = median(
            (0..opts.runs)
                .map(|_| floor.time(&frame, opts.repeat))
                .collect(),
        );
        let theirs = median(
            (0..opts.runs)
                .map(|_| xdp_filter.program.time(&frame, opts.repeat))
                .collect(),
        );
        rows.push(row(name, reason.name(), allow_entries, ours, base, theirs));
    }
    // A fresh source for every packet: each drop merges the previous source into the LRU map
    // (an insert). Single runs, so the kernel's per-run time is measured for both programs.
    {
        let policy = policy();
        let harness = Harness::new(&policy);
        let frames: Vec<Vec<u8>> = (0..20_000u32)
            .map(|i| {
                let [_, _, c, d] = i.to_be_bytes();
                v4([198, 18 + (c >> 7), c & 0x7f, d], IPPROTO_UDP, &stats)
            })
            .collect();
        let ours = median(frames.iter().map(|f| harness.time(f, 1)).collect());
        let base = median(frames.iter().map(|f| floor.time(f, 1)).collect());
        let theirs = median(
            frames
                .iter()
                .map(|f| xdp_filter.program.time(f, 1))
                .collect(),
        );
        let name = "udp4 11211, new source each packet (single runs)";
        rows.push(row(name, "udp_port", 2, ours, base, theirs));
    }

    serde_json::Value::Array(rows)
}

/// Runs the CLI with `args` on the harness's state dir; returns its wall time and its own peak
/// RSS in KiB. GNU time measures the RSS: a child forked from this (large) process would
/// inherit its high-water mark in `wait4`'s rusage.
fn cli(harness: &Harness, args: &[&str]) -> (Duration, i64) {
    let rss_file = std::env::temp_dir().join(mcfilter_tests::unique("mcfr"));
    let started = Instant::now();
    let status = Command::new("/usr/bin/time")
        .args(["--format=%M", "--output"])
        .arg(&rss_file)
        .arg(mcfilter_tests::cli::binary())
        .args(args)
        .arg("--state-dir")
        .arg(harness.maps_dir())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run mcfilter under /usr/bin/time (Debian package `time`)");
    let elapsed = started.elapsed();
    assert!(status.success(), "mcfilter {args:?} failed");
    let rss = std::fs::read_to_string(&rss_file).expect("time's output");
    std::fs::remove_file(&rss_file).expect("remove time's output");
    (elapsed, rss.trim().parse().expect("peak RSS in KiB"))
}

/// Control-plane timings of the real CLI: `allow replace` of 100,000 and 1,000,000 entries, and
/// `stats --json` with 64k and 1M live per-source entries.
fn control_plane() -> serde_json::Value {
    println!("\nControl plane (the real CLI, release build; wall time and its own peak RSS)\n");
    println!("| operation | seconds | peak RSS MiB |");
    println!("| --- | ---: | ---: |");
    let mut out = Vec::new();
    let mut row = |name: String, (elapsed, rss): (Duration, i64)| {
        let secs = elapsed.as_secs_f64();
        println!("| {name} | {secs:.2} | {:.0} |", rss as f64 / 1024.0);
        out.push(json!({"operation": name, "seconds": (secs * 100.0).round() / 100.0, "peak_rss_kib": rss}));
    };
    let dir = std::env::temp_dir().join(mcfilter_tests::unique("mcfb"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let empty = Policy {
        ports: BTreeSet::from([11211]),
        allow: Vec::new(),
        drop_reflected: false,
    };
    let harness = Harness::new(&empty);
    row("status (baseline)".into(), cli(&harness, &["status"]));
    for n in [100_000, 1_000_000] {
        let file = dir.join(format!("allow-{n}.txt"));
        let text: String = allow_list(n).iter().map(|net| format!("{net}\n")).collect();
        std::fs::write(&file, text).expect("write allow-list file");
        let file = file.to_str().expect("utf-8 path").to_owned();
        row(
            format!("allow replace, empty -> {n} entries"),
            cli(&harness, &["allow", "replace", "--file", &file]),
        );
    }
    drop(harness);
    for n in [65_536u32, 1_000_000] {
        let mut harness = Harness::with_sources_capacity(&empty, n);
        fill_sources(&mut harness, n);
        row(
            format!("stats --json, {n} live sources"),
            cli(&harness, &["stats", "--json"]),
        );
    }
    std::fs::remove_dir_all(dir).expect("remove temp dir");
    serde_json::Value::Array(out)
}

/// Puts `n` sources into the per-source map, as the program would have.
fn fill_sources(harness: &mut Harness, n: u32) {
    let cpus = aya::util::nr_cpus().expect("cpu count");
    let stats = SourceStats {
        packets: 1,
        bytes: 64,
        last_seen_ns: 0,
        dry_run_packets: 0,
        last_reason: 3,
        last_dry_run: 0,
    };
    let sources = &mut harness.maps_mut().sources;
    for i in 0..n {
        let [a, b, c, d] = (0x0a00_0000 + i).to_be_bytes();
        let values = PerCpuValues::try_from(vec![stats; cpus]).expect("per-CPU values");
        sources
            .insert(IpKey::v4([a, b, c, d]), values, 0)
            .expect("insert source");
    }
}

/// An allowed client's memcached set/get latency, quiet and while UDP and SYN floods hit the
/// server through mcfilter (a lab of namespaces).
fn load() -> serde_json::Value {
    use mcfilter_tests::{
        lab::{IFACE, Lab},
        load,
        memcache::Memcached,
    };
    const ROUNDS: usize = 1000;
    let lab = Lab::new("bl");
    let client = lab.host("blc", 10);
    let attacker = lab.host("blx", 66);
    let _memcached = Memcached::start(&lab.server.ns, false);
    let mcf = mcfilter_tests::cli::Mcfilter::new("bl").in_netns(&lab.server.ns);
    mcf.ok(&["attach", IFACE, "--allow", &client.v4.to_string()]);
    let server = std::net::SocketAddr::new(lab.server.v4.into(), 11211);
    let quiet = load::client_loop(&client, server, ROUNDS);
    let flooded = load::client_loop_under_flood(&lab, &client, &attacker, 11211, ROUNDS);
    mcf.ok(&["detach", IFACE]);
    println!(
        "\nLoad: an allowed client's memcached set/get ({ROUNDS} rounds), quiet and while {} UDP \
         datagrams and {} forged SYNs hit port 11211\n",
        load::UDP_FLOOD,
        load::SYN_FLOOD
    );
    println!("| client | errors | median us | p99 us |");
    println!("| --- | ---: | ---: | ---: |");
    let mut out = Vec::new();
    for (name, run) in [("quiet", quiet), ("under floods", flooded)] {
        let (median, p99) = (run.median.as_micros(), run.p99.as_micros());
        println!("| {name} | {} | {median} | {p99} |", run.errors);
        out.push(json!({"client": name, "errors": run.errors, "median_us": median, "p99_us": p99}));
    }
    serde_json::Value::Array(out)
}

/// The veth flood: UDP to 11211 from one source, generator and receiver on one CPU, for each
/// receiver; receiver-only nanoseconds per packet (total minus the generator's own).
fn flood() -> serde_json::Value {
    use mcfilter_tests::flood::{Flood, RX};
    const PACKETS: u32 = 2_000_000;
    const RUNS: usize = 3;
    let mut flood = Flood::new();
    let run = |flood: &Flood| {
        median(
            (0..RUNS)
                .map(|_| flood.run(PACKETS, false) as u64)
                .collect(),
        )
    };
    let run_random =
        |flood: &Flood| median((0..RUNS).map(|_| flood.run(PACKETS, true) as u64).collect());
    let ethtool = |flood: &Flood, on: &str| {
        let out = flood
            .receiver
            .command("ethtool")
            .args(["-K", RX, "gro", on])
            .output()
            .expect("ethtool");
        assert!(out.status.success(), "ethtool -K {RX} gro {on}: {out:?}");
    };
    // The generator alone: the receiving interface down, so every frame stops at the veth.
    flood.receiver.ip(&["link", "set", RX, "down"]);
    let generator = run(&flood);
    let generator_random = run_random(&flood);
    flood.receiver.ip(&["link", "set", RX, "up"]);

    let mut results: Vec<(&str, u64)> = Vec::new();
    flood.attach_reference("drop");
    results.push(("trivial XDP_DROP (native)", run(&flood)));
    let drop_random = run_random(&flood).saturating_sub(generator_random);
    flood.detach_reference();

    let mcf = mcfilter_tests::cli::Mcfilter::new("flm").in_netns(&flood.receiver);
    mcf.ok(&["attach", RX, "--mode", "native"]);
    results.push(("mcfilter native", run(&flood)));
    mcf.ok(&["detach", RX]);
    // Random spoofed sources: every drop is a new source for the per-source map.
    mcf.ok(&["attach", RX, "--mode", "native"]);
    let mcfilter_random = run_random(&flood).saturating_sub(generator_random);
    mcf.ok(&["detach", RX]);

    // The stack's own hooks need the veth's GRO path to receive XDP_TX frames.
    ethtool(&flood, "on");
    mcf.ok(&["attach", RX, "--mode", "skb"]);
    results.push(("mcfilter skb (generic XDP)", run(&flood)));
    mcf.ok(&["detach", RX]);

    let nft = |args: &str| {
        let out = flood
            .receiver
            .command("nft")
            .arg(args)
            .output()
            .expect("nft");
        assert!(out.status.success(), "nft {args}: {out:?}");
    };
    nft(&format!(
        "table netdev mcf {{ chain ingress {{ type filter hook ingress device {RX} priority 0; udp dport 11211 drop; }}; }}"
    ));
    results.push(("nftables netdev ingress", run(&flood)));
    nft("delete table netdev mcf");

    let iptables = |action: &str| {
        let out = flood
            .receiver
            .command("iptables")
            .args([
                "-t",
                "raw",
                action,
                "PREROUTING",
                "-p",
                "udp",
                "--dport",
                "11211",
                "-j",
                "DROP",
            ])
            .output()
            .expect("iptables");
        assert!(out.status.success(), "iptables {action}: {out:?}");
    };
    iptables("-A");
    results.push(("iptables raw PREROUTING", run(&flood)));
    iptables("-D");
    ethtool(&flood, "off");

    let xdp_filter = flood
        .receiver
        .command("xdp-filter")
        .args(["load", RX, "--mode", "native"])
        .env("LIBXDP_SKIP_DISPATCHER", "1")
        .output()
        .expect("xdp-filter");
    assert!(xdp_filter.status.success(), "{xdp_filter:?}");
    let port = flood
        .receiver
        .command("xdp-filter")
        .args(["port", "11211", "--proto", "udp", "--mode", "dst"])
        .output()
        .expect("xdp-filter port");
    assert!(port.status.success(), "{port:?}");
    results.push(("xdp-filter (native)", run(&flood)));
    let _ = flood
        .receiver
        .command("xdp-filter")
        .args(["unload", RX])
        .output();

    println!(
        "\nFlood: {PACKETS} frames of UDP to 11211 from one source over a veth, generator and \
         receiver on one CPU, median of {RUNS}; receiver-only ns/packet = CPU time minus the \
         generator's own ({generator} ns/packet)\n"
    );
    println!("| receiver | receiver ns/packet | vs trivial XDP_DROP | Mpps on one core |");
    println!("| --- | ---: | ---: | ---: |");
    let drop_cost = results[0].1.saturating_sub(generator).max(1);
    let mut out = Vec::new();
    for (name, total) in results {
        let receiver = total.saturating_sub(generator);
        let versus = receiver as f64 / drop_cost as f64;
        let mpps = 1000.0 / receiver.max(1) as f64;
        println!("| {name} | {receiver} | {versus:.2} | {mpps:.1} |");
        out.push(
            json!({"receiver": name, "receiver_ns": receiver, "total_ns": total,
            "vs_xdp_drop": (versus * 100.0).round() / 100.0}),
        );
    }
    let versus = mcfilter_random as f64 / drop_random.max(1) as f64;
    println!(
        "\nRandom spoofed sources (a new 198.18.x.y a frame): trivial XDP_DROP {drop_random} ns/packet, \
         mcfilter native {mcfilter_random} ns/packet ({versus:.2}x)"
    );
    json!({"packets": PACKETS, "generator_ns": generator, "receivers": out,
        "random_sources": {"xdp_drop_ns": drop_random, "mcfilter_native_ns": mcfilter_random,
            "vs_xdp_drop": (versus * 100.0).round() / 100.0}})
}
