//! `cargo xtask bench`: the per-packet cost of the real program through BPF_PROG_TEST_RUN,
//! class by class, next to a trivial XDP_PASS program (the floor) on the same frames in the same
//! run, as nanoseconds and as a ratio to the floor; then control-plane timings of the real CLI
//! (`allow replace`, `stats --json`) with their peak RSS; last, the performance targets, each
//! checked against the run's own figures (`targets.rs`). Writes Markdown to stdout and JSON to
//! the path given by `--json` (default target/bench/results.json).
//!
//! Usage: mcfilter-bench [--repeat N] [--runs N] [--json PATH] [--only per-packet|flood|control|load]
//!                       [--baseline OBJECT]
//!        mcfilter-bench --targets-of PATH   (the targets of an earlier run's JSON, measuring nothing)
//!
//! `--baseline OBJECT` times another build of the XDP program (`cargo xtask bench --baseline
//! REV` builds it from a commit) on the same frames in the same run, next to this one.

mod control;
mod flood;
mod load;
mod per_packet;
mod targets;

use serde_json::json;

pub(crate) struct Options {
    pub(crate) repeat: u32,
    pub(crate) runs: usize,
    json: std::path::PathBuf,
    /// Run one section only: per-packet, flood, control, load.
    only: Option<String>,
    /// Another build's eBPF object, timed next to this one per class.
    pub(crate) baseline: Option<Vec<u8>>,
    /// An earlier run's JSON, whose targets to print instead of measuring.
    targets_of: Option<std::path::PathBuf>,
}

fn options() -> Options {
    let mut opts = Options {
        repeat: 1_000_000,
        runs: 5,
        json: "target/bench/results.json".into(),
        only: None,
        baseline: None,
        targets_of: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--repeat" => opts.repeat = value().parse().expect("--repeat N"),
            "--runs" => opts.runs = value().parse().expect("--runs N"),
            "--json" => opts.json = value().into(),
            "--only" => opts.only = Some(value()),
            "--targets-of" => opts.targets_of = Some(value().into()),
            "--baseline" => {
                let path = value();
                let object =
                    std::fs::read(&path).unwrap_or_else(|err| panic!("--baseline {path}: {err}"));
                opts.baseline = Some(object);
            }
            _ => panic!(
                "unknown argument {arg}; usage: mcfilter-bench [--repeat N] [--runs N] [--json PATH] [--only SECTION] [--baseline OBJECT] | --targets-of PATH"
            ),
        }
    }
    opts
}

pub(crate) fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// A figure's runs: the median, and the spread (min-max) that says how far to trust it.
/// For thousands of single runs, whose extremes are interrupts, the spread is the 5th to the
/// 95th percentile instead.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Spread {
    pub(crate) median: u64,
    pub(crate) min: u64,
    pub(crate) max: u64,
    percentiles: bool,
}

impl Spread {
    pub(crate) fn of(runs: Vec<u64>) -> Self {
        let (min, max) = (
            runs.iter().copied().min().unwrap_or_default(),
            runs.iter().copied().max().unwrap_or_default(),
        );
        Spread {
            median: median(runs),
            min,
            max,
            percentiles: false,
        }
    }

    /// The median and the 5th-95th percentiles of single runs.
    pub(crate) fn of_single_runs(mut runs: Vec<u64>) -> Self {
        runs.sort_unstable();
        let at = |share: usize| runs[(runs.len() - 1) * share / 100];
        Spread {
            median: at(50),
            min: at(5),
            max: at(95),
            percentiles: true,
        }
    }

    pub(crate) fn json(self) -> serde_json::Value {
        let (low, high) = if self.percentiles {
            ("p5", "p95")
        } else {
            ("min", "max")
        };
        json!({"median": self.median, low: self.min, high: self.max})
    }
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let label = if self.percentiles { "p5-p95 " } else { "" };
        write!(f, "{} ({label}{}-{})", self.median, self.min, self.max)
    }
}

/// The machine the figures are of: per-packet costs, and even the ranking of classes, change
/// with the CPU, so a run names it and is compared only with itself.
fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or("unknown", |(_, model)| model.trim())
        .to_owned();
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    json!({"cpu": model, "cpus": cpus, "kernel": mcfilter::kernel::release()})
}

fn main() {
    let opts = options();
    if let Some(path) = &opts.targets_of {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|err| panic!("--targets-of {}: {err}", path.display()));
        let report: serde_json::Value = serde_json::from_str(&text).expect("a run's JSON");
        targets::targets(&report);
        return;
    }
    let machine = machine();
    println!(
        "Machine: {}, {} CPUs, Linux {} (figures and rankings change with the CPU: compare within one run)\n",
        machine["cpu"].as_str().unwrap_or_default(),
        machine["cpus"],
        machine["kernel"].as_str().unwrap_or_default()
    );
    let wanted = |section: &str| opts.only.as_deref().is_none_or(|only| only == section);
    let none = || serde_json::Value::Null;
    let per_packet = if wanted("per-packet") {
        per_packet::per_packet(&opts)
    } else {
        none()
    };
    let flood = if wanted("flood") {
        flood::flood()
    } else {
        none()
    };
    let control = if wanted("control") {
        control::control_plane()
    } else {
        none()
    };
    let load = if wanted("load") { load::load() } else { none() };
    let mut report = json!({"machine": machine, "repeat": opts.repeat, "runs": opts.runs,
        "per_packet": per_packet, "flood": flood, "control_plane": control, "load": load});
    report["targets"] = targets::targets(&report);
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
