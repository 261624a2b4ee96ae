//! Reference programs timed against the floor in the same run: the price of one small-key
//! lookup (which the fragment target is stated in), against it an address found in a set
//! kept in an array (what an allowed /32 could cost), and the speed side of the per-source map's
//! memory trade, a per-CPU map with plain adds (the filter) against one shared map with
//! atomic adds, on one CPU and on two CPUs counting the same source at once.

use mcfilter::memory;
use mcfilter_common::{IpKey, SourceStats};
use mcfilter_tests::program::{Floor, Reference, References};
use serde_json::json;

use crate::{Options, median};

/// The median, over `opts.runs` paired runs, of `reference`'s time minus the floor's on
/// `frame`.
fn over_floor(
    references: &References,
    reference: Reference,
    floor: &Floor,
    frame: &[u8],
    opts: &Options,
) -> i64 {
    let mut changes: Vec<i64> = (0..opts.runs)
        .map(|_| {
            references.time(reference, frame, opts.repeat) as i64
                - floor.time(frame, opts.repeat) as i64
        })
        .collect();
    changes.sort_unstable();
    changes[changes.len() / 2]
}

/// `reference` and the floor, each run on CPUs 0 and 1 at once, `opts.runs` times: the median
/// of the two CPUs' mean time per run, the reference's minus the floor's.
fn on_two_cpus(
    references: &References,
    reference: Reference,
    floor: &Floor,
    frame: &[u8],
    opts: &Options,
) -> i64 {
    let both = |time: &(dyn Fn() -> u64 + Sync)| -> u64 {
        let runs = (0..opts.runs)
            .map(|_| {
                std::thread::scope(|scope| {
                    let threads: Vec<_> = (0..2)
                        .map(|cpu| {
                            scope.spawn(move || {
                                mcfilter_tests::pin_to_cpu(cpu);
                                time()
                            })
                        })
                        .collect();
                    threads
                        .into_iter()
                        .map(|thread| thread.join().expect("a timing thread"))
                        .sum::<u64>()
                        / 2
                })
            })
            .collect();
        median(runs)
    };
    both(&|| references.time(reference, frame, opts.repeat)) as i64
        - both(&|| floor.time(frame, opts.repeat)) as i64
}

/// Times the references and prints them; returns them as JSON.
pub(crate) fn references(floor: &Floor, frame: &[u8], opts: &Options) -> serde_json::Value {
    let references = References::load();
    let lookup = over_floor(&references, Reference::Lookup, floor, frame, opts);
    println!(
        "\nOne lookup of a 12-byte key in an LRU hash that finds its entry (the IPv4 fragment cache's kind): {lookup:+} ns over the floor (median of {} paired runs)",
        opts.runs
    );
    let probe = over_floor(&references, Reference::ProbeSet, floor, frame, opts);
    println!(
        "One IPv4 address found in a set in an array, two buckets of four (inlined array lookups, 8 MiB): {probe:+} ns over the floor (median of {} paired runs)",
        opts.runs
    );
    let two_cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get) >= 2;
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    const SOURCES: u32 = 65_536;
    let (key, value) = (size_of::<IpKey>(), size_of::<SourceStats>());
    println!(
        "\nAdding a source's counts to the per-source map (when a CPU's run of one source's packets ends), \
         ns over the floor (median of {} paired runs), and the map's kernel memory for {SOURCES} sources by \
         the formula (`mcfilter::memory`)\n",
        opts.runs
    );
    println!("| per-source map | one CPU | two CPUs, one source | 2 CPUs MiB | 64 CPUs MiB |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    let mut rows = Vec::new();
    for (reference, name, bytes) in [
        (
            Reference::AdmitPerCpu,
            "per-CPU LRU hash, plain adds (the filter)",
            &(|cpus| memory::percpu_hash_bytes(SOURCES, key, value, cpus)) as &dyn Fn(u32) -> u64,
        ),
        (
            Reference::AdmitShared,
            "shared LRU hash, atomic adds",
            &|cpus| memory::hash_bytes(SOURCES, key, value, cpus),
        ),
    ] {
        let one = over_floor(&references, reference, floor, frame, opts);
        let two = two_cpus.then(|| on_two_cpus(&references, reference, floor, frame, opts));
        println!(
            "| {name} | {one:+} | {} | {:.1} | {:.1} |",
            two.map_or("n/a".to_owned(), |ns| format!("{ns:+}")),
            mib(bytes(2)),
            mib(bytes(64)),
        );
        rows.push(
            json!({"map": name, "one_cpu_ns": one, "two_cpus_one_source_ns": two,
            "bytes_2_cpus": bytes(2), "bytes_64_cpus": bytes(64)}),
        );
    }
    json!({"small_key_lookup_ns": lookup, "array_set_probe_ns": probe, "admission": rows})
}
