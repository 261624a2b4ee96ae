//! Control-plane timings of the real CLI, with each run's own peak RSS.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use aya::maps::PerCpuValues;
use mcfilter_common::{IpKey, SourceStats};
use mcfilter_tests::{cli::Mcfilter, netns::NetNs};
use serde_json::json;

use crate::per_packet::allow_list;

/// Runs `command` (the CLI); returns its wall time and its own peak RSS in KiB. GNU time
/// measures the RSS: a child forked from this (large) process would inherit its high-water
/// mark in `wait4`'s rusage.
fn timed(command: &Command) -> (Duration, i64) {
    let rss_file = std::env::temp_dir().join(mcfilter_tests::unique("mcfr"));
    let started = Instant::now();
    let status = Command::new("/usr/bin/time")
        .args(["--format=%M", "--output"])
        .arg(&rss_file)
        .arg(command.get_program())
        .args(command.get_args())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run mcfilter under /usr/bin/time (Debian package `time`)");
    let elapsed = started.elapsed();
    assert!(status.success(), "{command:?} failed");
    let rss = std::fs::read_to_string(&rss_file).expect("time's output");
    std::fs::remove_file(&rss_file).expect("remove time's output");
    (elapsed, rss.trim().parse().expect("peak RSS in KiB"))
}

/// mcfilter attached to the loopback of a namespace of its own (`attach` options `extra`), so
/// that every command finds a filter; detached when dropped (the namespace goes with it).
struct Attached {
    mcf: Mcfilter,
    _ns: NetNs,
}

impl Attached {
    fn new(tag: &str, extra: &[&str]) -> Self {
        let ns = NetNs::new(tag);
        let mcf = Mcfilter::new(tag).in_netns(&ns);
        mcf.ok(&[&["attach", "lo"][..], extra].concat());
        Attached { mcf, _ns: ns }
    }

    fn timed(&self, args: &[&str]) -> (Duration, i64) {
        timed(&self.mcf.command(args))
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let _ = self.mcf.run(&["detach", "lo"]);
    }
}

/// Control-plane timings of the real CLI: `allow replace` of 100,000 and 1,000,000 entries, and
/// `stats --json` with 64k and 1M live per-source entries; then the service's own peak RSS.
pub(crate) fn control_plane() -> serde_json::Value {
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
    let mut memory_at_1m = serde_json::Value::Null;
    let attached = Attached::new("mcfb", &[]);
    row("status (baseline)".into(), attached.timed(&["status"]));
    let attach_memory = attach_memory(&attached.mcf);
    for n in [100_000, 1_000_000] {
        let file = dir.join(format!("allow-{n}.txt"));
        let text: String = allow_list(n).iter().map(|net| format!("{net}\n")).collect();
        std::fs::write(&file, text).expect("write allow-list file");
        let file = file.to_str().expect("utf-8 path").to_owned();
        row(
            format!("allow replace, empty -> {n} entries"),
            attached.timed(&["allow", "replace", "--file", &file]),
        );
        if n == 1_000_000 {
            let status: serde_json::Value =
                serde_json::from_str(&attached.mcf.ok(&["status", "--json"])).expect("status");
            let memory = &status["kernel_memory"]["maps"];
            println!(
                "\n(kernel memory with {n} entries, MiB: the trie {:.1}, the stride table {:.1}, the /24 bitmap {:.1}, its Bloom filter {:.1})\n",
                mib(&memory["mcf_allow"]),
                mib(&memory["mcf_allow_strides"]),
                mib(&memory["mcf_allow_blocks"]),
                mib(&memory["mcf_allow_bloom"]),
            );
            memory_at_1m = memory.clone();
        }
    }
    drop(attached);
    let (healthy, scrape, peak) = service(&dir, &dir.join("allow-1000000.txt"));
    row(
        "run (service): start, apply a 1,000,000-entry allow file".into(),
        (healthy, peak),
    );
    row(
        "run (service): one /metrics scrape, 1,000,000 allow entries".into(),
        (scrape, peak),
    );
    for n in [65_536u32, 1_000_000] {
        let attached = Attached::new("mcfs", &["--sources-capacity", &n.to_string()]);
        fill_sources(attached.mcf.state_dir(), n);
        row(
            format!("stats --json, {n} live sources"),
            attached.timed(&["stats", "--json"]),
        );
    }
    std::fs::remove_dir_all(dir).expect("remove temp dir");
    out.push(json!({"operation": "kernel memory, 1,000,000 allow entries", "maps": memory_at_1m}));
    out.push(attach_memory);
    serde_json::Value::Array(out)
}

/// The kernel memory of an attach with an empty allow-list: what `status` says, what `bpftool
/// map show` says of the same pinned maps, and what the formula (`mcfilter::memory`) gives on
/// a 64-CPU host: the maps whose size the CPU count decides are taken out at this host's CPUs
/// and put back at 64; the counter arrays (under 0.1 MiB on 64 CPUs) stay at this host's.
fn attach_memory(mcf: &Mcfilter) -> serde_json::Value {
    use mcfilter::memory;
    let status: serde_json::Value =
        serde_json::from_str(&mcf.ok(&["status", "--json"])).expect("status");
    let memory = &status["kernel_memory"];
    let here = memory["total_bytes"].as_u64().expect("total_bytes");
    let cpus = memory["possible_cpus"]
        .as_u64()
        .and_then(|cpus| u32::try_from(cpus).ok())
        .expect("possible_cpus");
    let mut bpftool = 0;
    for map in memory["maps"].as_object().expect("maps").keys() {
        bpftool += bpftool_bytes(mcf.state_dir(), map);
    }
    let on_64 =
        here - memory::per_cpu_bytes_at_defaults(cpus) + memory::per_cpu_bytes_at_defaults(64);
    println!(
        "\n(kernel memory of an attach, empty allow-list: {:.1} MiB on this host's {cpus} possible CPUs \
         (`bpftool map show` of the same maps: {:.1} MiB); by the formula on 64 CPUs: {:.1} MiB)\n",
        here as f64 / f64::from(1 << 20),
        bpftool as f64 / f64::from(1 << 20),
        on_64 as f64 / f64::from(1 << 20),
    );
    json!({"operation": "kernel memory, attach", "possible_cpus": cpus, "bytes": here,
        "bpftool_bytes": bpftool, "formula_bytes_on_64_cpus": on_64})
}

/// `bpftool map show`'s memlock of the map pinned as `name` somewhere under `dir`.
fn bpftool_bytes(dir: &std::path::Path, name: &str) -> u64 {
    let pin = walk(dir)
        .into_iter()
        .find(|path| path.file_name().is_some_and(|file| file == name))
        .unwrap_or_else(|| panic!("no pin {name} under {}", dir.display()));
    let out = Command::new("bpftool")
        .args(["-j", "map", "show", "pinned"])
        .arg(&pin)
        .output()
        .expect("run bpftool");
    assert!(
        out.status.success(),
        "bpftool map show pinned {pin:?}: {out:?}"
    );
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool's JSON");
    shown["bytes_memlock"].as_u64().expect("bytes_memlock")
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read the state dir") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn mib(bytes: &serde_json::Value) -> f64 {
    bytes.as_u64().unwrap_or_default() as f64 / f64::from(1 << 20)
}

/// Puts `n` sources into the per-source map of the state in `state_dir`, as the program would
/// have.
fn fill_sources(state_dir: &std::path::Path, n: u32) {
    let cpus = aya::util::nr_cpus().expect("cpu count");
    let stats = SourceStats {
        packets: 1,
        bytes: 64,
        last_seen_ns: 0,
        dry_run_packets: 0,
        last_reason: 3,
        last_dry_run: 0,
    };
    let mut maps = mcfilter::Maps::open(&mcfilter::StateDir::new(state_dir)).expect("the maps");
    for i in 0..n {
        let [a, b, c, d] = (0x0a00_0000 + i).to_be_bytes();
        let values = PerCpuValues::try_from(vec![stats; cpus]).expect("per-CPU values");
        maps.sources
            .insert(IpKey::v4([a, b, c, d]), values, 0)
            .expect("insert source");
    }
}

/// `mcfilter run` on a veth of a namespace of its own, with a 1,000,000-entry allow file: the
/// time until `/healthz` answers (the config applied), the median time of 10 scrapes of
/// `/metrics`, and the service's peak RSS (its VmHWM, read before SIGTERM; it detaches on exit).
fn service(dir: &std::path::Path, allow_file: &std::path::Path) -> (Duration, Duration, i64) {
    const METRICS: &str = "127.0.0.1:9915";
    let ns = NetNs::new("mcfs");
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
    ]);
    ns.ip(&["link", "set", "eth0", "up"]);
    ns.ip(&["link", "set", "eth1", "up"]);
    ns.ip(&["link", "set", "lo", "up"]);
    let state_dir = std::path::Path::new("/sys/fs/bpf").join(mcfilter_tests::unique("mcfs"));
    let config = dir.join("service.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\nallow_files = [\"{}\"]\ndetach_on_exit = true\nlog_level = \"warn\"\n\
             [[interfaces]]\nname = \"eth0\"\n\n[metrics]\naddress = \"{METRICS}\"\n",
            state_dir.display(),
            allow_file.display()
        ),
    )
    .expect("write the service config");
    let get = |path: &str| {
        ns.command("curl")
            .args([
                "--silent",
                "--fail",
                "--max-time",
                "10",
                "--output",
                "/dev/null",
            ])
            .arg(format!("http://{METRICS}{path}"))
            .status()
            .expect("run curl")
            .success()
    };
    /// Kills the service if the measurement fails half way.
    struct Service(std::process::Child);
    impl Drop for Service {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let started = Instant::now();
    let mut service = Service(
        ns.command(mcfilter_tests::cli::binary())
            .args(["run", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start mcfilter run"),
    );
    let child = &mut service.0;
    let deadline = started + Duration::from_secs(120);
    while !get("/healthz") {
        assert!(
            Instant::now() < deadline && child.try_wait().expect("wait").is_none(),
            "the service did not become healthy"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let elapsed = started.elapsed();
    let mut scrapes: Vec<Duration> = (0..10)
        .map(|_| {
            let started = Instant::now();
            assert!(get("/metrics"), "a metrics scrape failed");
            started.elapsed()
        })
        .collect();
    scrapes.sort_unstable();
    // nsenter execs the program: the child is the service itself.
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
        .expect("the service's /proc status");
    let peak = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "the service did not exit on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_dir_all(&state_dir);
    (elapsed, scrapes[scrapes.len() / 2], peak)
}
