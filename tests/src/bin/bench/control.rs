//! Control-plane timings of the real CLI, with each run's own peak RSS.

use std::{
    collections::BTreeSet,
    process::Command,
    time::{Duration, Instant},
};

use aya::maps::PerCpuValues;
use mcfilter_common::{IpKey, SourceStats};
use mcfilter_tests::{oracle::Policy, program::Harness};
use serde_json::json;

use crate::per_packet::allow_list;

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
pub fn control_plane() -> serde_json::Value {
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
