//! Per-packet cost by class through BPF_PROG_TEST_RUN: mcfilter, the floor and xdp-filter. The
//! classes are in `classes.rs`, xdp-filter's loading in `xdp_filter.rs`.

use std::collections::BTreeSet;

use mcfilter_tests::{
    fixtures::*,
    insns,
    oracle::{Oracle, Policy},
    packet::*,
    program::{Floor, Harness},
};
use serde_json::json;

use crate::{Options, Spread, median};

mod classes;
mod references;
mod xdp_filter;

pub(crate) use classes::allow_list;
use xdp_filter::XdpFilter;

/// One class's runs: mcfilter, the floor, xdp-filter and, with `--baseline`, the baseline
/// build of mcfilter.
struct Timing {
    ours: Spread,
    base: Spread,
    theirs: Spread,
    before: Option<Baseline>,
}

/// The baseline build's median, and the median of the paired differences (this build minus the
/// baseline, run by run).
#[derive(Clone, Copy)]
struct Baseline {
    ns: u64,
    change: i64,
}

impl Baseline {
    fn of(pairs: &[(u64, u64)]) -> Self {
        let mut changes: Vec<i64> = pairs.iter().map(|&(o, b)| o as i64 - b as i64).collect();
        changes.sort_unstable();
        Baseline {
            ns: median(pairs.iter().map(|p| p.1).collect()),
            change: changes[changes.len() / 2],
        }
    }
}

/// Prints one table row and returns it as JSON.
fn row(name: &str, reason: &str, allow_entries: usize, t: &Timing) -> serde_json::Value {
    let Timing {
        ours,
        base,
        theirs,
        before,
    } = *t;
    let ratio = ours.median as f64 / base.median.max(1) as f64;
    // How much of xdp-filter's cost over the floor mcfilter's is (target: at most 0.5).
    let versus = ours.median.saturating_sub(base.median) as f64
        / theirs.median.saturating_sub(base.median).max(1) as f64;
    let baseline_columns = match before {
        Some(Baseline { ns, change }) => format!(" {ns} | {change:+} |"),
        None => String::new(),
    };
    println!(
        "| {name} | {reason} | {ours} | {base} | {ratio:.2} | {theirs} | {versus:.2} |{baseline_columns}"
    );
    let round = |x: f64| (x * 100.0).round() / 100.0;
    json!({"class": name, "reason": reason, "allow_entries": allow_entries,
        "mcfilter_ns": ours.median, "mcfilter_spread_ns": ours.json(),
        "floor_ns": base.median, "floor_spread_ns": base.json(), "ratio": round(ratio),
        "xdp_filter_ns": theirs.median, "xdp_filter_spread_ns": theirs.json(),
        "over_floor_vs_xdp_filter": round(versus), "baseline_ns": before.map(|b| b.ns),
        "change_ns": before.map(|b| b.change)})
}

/// The references' runs on `frame`: the floor's and xdp-filter's.
fn references(
    floor: &Floor,
    xdp_filter: &XdpFilter,
    frame: &[u8],
    opts: &Options,
) -> (Spread, Spread) {
    let runs = |time: &dyn Fn() -> u64| Spread::of((0..opts.runs).map(|_| time()).collect());
    (
        runs(&|| floor.time(frame, opts.repeat)),
        runs(&|| xdp_filter.program.time(frame, opts.repeat)),
    )
}

/// Per-packet cost by class: mcfilter, the floor and xdp-filter on the same frames; then the
/// reference programs (`references.rs`).
pub(crate) fn per_packet(opts: &Options) -> serde_json::Value {
    let floor = Floor::load();
    let xdp_filter = XdpFilter::load();
    let stats = udp(40000, 11211, &memcached_udp_request(1, b"stats\r\n"));
    let classes = classes::classes();
    println!(
        "Per-packet cost through BPF_PROG_TEST_RUN ({} repeats; each figure the median of {} runs and their spread, min-max)\n",
        opts.repeat, opts.runs
    );
    let baseline = opts.baseline.as_deref();
    let (baseline_head, baseline_rule) = match baseline {
        Some(_) => (" baseline ns | change ns |", " ---: | ---: |"),
        None => ("", ""),
    };
    println!(
        "| class | verdict | mcfilter ns | floor ns | ratio | xdp-filter ns | over floor: mcfilter / xdp-filter |{baseline_head}"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: |{baseline_rule}");
    let mut rows = Vec::new();
    let mut loaded: Option<(usize, Harness, Option<Harness>, Oracle)> = None;
    for (name, frame, allow_entries) in classes {
        if loaded.as_ref().map(|(n, ..)| *n) != Some(allow_entries) {
            // The previous harnesses go first: two 1M-entry lists at once are not needed.
            drop(loaded.take());
            let policy = Policy {
                ports: BTreeSet::from([11211, 22122]),
                allow: allow_list(allow_entries),
                drop_reflected: true,
            };
            loaded = Some((
                allow_entries,
                Harness::new(&policy),
                baseline.map(|object| Harness::with_object(object, &policy)),
                Oracle::new(policy),
            ));
        }
        let (_, harness, before, oracle) = loaded.as_mut().expect("loaded");
        let (reason, _) = oracle.judge(&frame);
        // The first fragment goes first so the later ones meet a remembered datagram.
        harness.run(&frame);
        let (ours, before) = match before {
            None => {
                let runs = (0..opts.runs).map(|_| harness.time(&frame, opts.repeat));
                (Spread::of(runs.collect()), None)
            }
            Some(before) => {
                before.run(&frame);
                // Interleaved, so that the machine's drift meets both builds alike; the change is
                // the median of the runs' paired differences.
                let pairs: Vec<(u64, u64)> = (0..opts.runs)
                    .map(|_| {
                        (
                            harness.time(&frame, opts.repeat),
                            before.time(&frame, opts.repeat),
                        )
                    })
                    .collect();
                (
                    Spread::of(pairs.iter().map(|p| p.0).collect()),
                    Some(Baseline::of(&pairs)),
                )
            }
        };
        let (base, theirs) = references(&floor, &xdp_filter, &frame, opts);
        let timing = Timing {
            ours,
            base,
            theirs,
            before,
        };
        rows.push(row(name, reason.name(), allow_entries, &timing));
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
        // Each build has maps of its own, so each frame is a new source to both: the two run
        // frame by frame, interleaved.
        let (ours, before) = match baseline {
            None => (
                Spread::of_single_runs(frames.iter().map(|f| harness.time(f, 1)).collect()),
                None,
            ),
            Some(object) => {
                let before = Harness::with_object(object, &policy);
                let pairs: Vec<(u64, u64)> = frames
                    .iter()
                    .map(|f| (harness.time(f, 1), before.time(f, 1)))
                    .collect();
                (
                    Spread::of_single_runs(pairs.iter().map(|p| p.0).collect()),
                    Some(Baseline::of(&pairs)),
                )
            }
        };
        let base = Spread::of_single_runs(frames.iter().map(|f| floor.time(f, 1)).collect());
        let theirs = Spread::of_single_runs(
            frames
                .iter()
                .map(|f| xdp_filter.program.time(f, 1))
                .collect(),
        );
        let name = "udp4 11211, new source each packet (single runs)";
        let timing = Timing {
            ours,
            base,
            theirs,
            before,
        };
        rows.push(row(name, "udp_port", 2, &timing));
    }

    // The tail call of `attach --then`: a passed packet in a program chained to the XDP_PASS
    // floor, against the same program unchained, run for run.
    {
        let policy = policy();
        let unchained = Harness::new(&policy);
        let chained = Harness::chained(&policy, floor.program_fd());
        let frame = v4(DENIED_V4, IPPROTO_UDP, &udp(1, 53, &[0; 32]));
        let pairs: Vec<(u64, u64)> = (0..opts.runs)
            .map(|_| {
                (
                    chained.time(&frame, opts.repeat),
                    unchained.time(&frame, opts.repeat),
                )
            })
            .collect();
        let tail_call = Baseline::of(&pairs);
        let (base, theirs) = references(&floor, &xdp_filter, &frame, opts);
        let timing = Timing {
            ours: Spread::of(pairs.iter().map(|p| p.0).collect()),
            base,
            theirs,
            before: None,
        };
        let name = "udp4 other port, chained to an XDP_PASS program";
        let mut chained_row = row(name, "not_protected", 10, &timing);
        println!(
            "\nThe tail call to the next program (`attach --then`): {:+} ns per passed packet (median of {} paired runs: chained {} ns, unchained {} ns; the chained time includes the next program's own run)",
            tail_call.change,
            opts.runs,
            median(pairs.iter().map(|p| p.0).collect()),
            tail_call.ns
        );
        chained_row["unchained_ns"] = json!(tail_call.ns);
        chained_row["tail_call_ns"] = json!(tail_call.change);
        rows.push(chained_row);
    }

    let references = references::references(&floor, &v4(DENIED_V4, IPPROTO_UDP, &stats), opts);
    json!({"classes": rows, "small_key_lookup_ns": references["small_key_lookup_ns"],
        "array_set_probe_ns": references["array_set_probe_ns"],
        "admission": references["admission"], "header_loads": header_loads()})
}

/// How the loaded program reads header fields wider than a byte: the byte loads its translated
/// instructions shift into a wider value (none when every field is read with one load).
fn header_loads() -> serde_json::Value {
    let harness = Harness::new(&policy());
    let insns = insns::xlated(harness.info().id());
    let assembled = insns::assembled_from_bytes(&insns);
    let count = |code| insns.iter().filter(|insn| insn.code == code).count();
    println!(
        "\nHeader fields: {} byte loads shifted into a wider value; {} 16-bit and {} 32-bit loads, {} byte loads in all ({} instructions)",
        assembled.len(),
        count(insns::LDX_HALF),
        count(insns::LDX_WORD),
        count(insns::LDX_BYTE),
        insns.len()
    );
    json!({"bytes_assembled": assembled.len(), "byte_loads": count(insns::LDX_BYTE),
        "half_loads": count(insns::LDX_HALF), "word_loads": count(insns::LDX_WORD),
        "instructions": insns.len()})
}
