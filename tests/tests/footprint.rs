//! The program's footprint as the kernel sees it, guarded: for each way it is loaded, the
//! verifier's processed-instruction count and the translated (xlated) and JIT-compiled sizes
//! may not grow by more than 10% over what `tests/footprint.json` records for this kernel
//! release. Unlike timings these are deterministic, so CI can hold them. A change that grows
//! the program on purpose records the new figures in the same commit and says why:
//!
//!     MCFILTER_RECORD_FOOTPRINT=1 cargo xtask test -- --exact footprint::...
//!
//! (or `cargo test -p mcfilter-tests --test footprint` as root with that variable set).

use std::{collections::BTreeMap, path::PathBuf};

use mcfilter_tests::{
    insns,
    oracle::Policy,
    privileged_test,
    program::{Floor, Harness, XDP_PASS},
};
use serde::{Deserialize, Serialize};

/// How much a figure may grow over the record before the guard fails.
const GROWTH_ALLOWED: f64 = 0.10;

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
struct Footprint {
    verified_insns: u32,
    xlated_bytes: u32,
    jited_bytes: u32,
}

/// `tests/footprint.json`: kernel release (major.minor) → load → footprint.
type Record = BTreeMap<String, BTreeMap<String, Footprint>>;

fn record_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("footprint.json")
}

/// The running kernel's major.minor: the verifier's count depends on it.
fn kernel() -> String {
    let release = mcfilter::kernel::release();
    let mut parts = release.split(['.', '-']);
    format!(
        "{}.{}",
        parts.next().unwrap_or("?"),
        parts.next().unwrap_or("?")
    )
}

fn footprint(harness: &Harness) -> Footprint {
    let info = harness.info();
    Footprint {
        verified_insns: info
            .verified_instruction_count()
            .expect("the kernel reports the verifier's count (Linux 5.16)"),
        xlated_bytes: info
            .size_translated()
            .expect("the kernel reports xlated size"),
        jited_bytes: info.size_jitted(),
    }
}

#[test]
fn the_programs_footprint_grows_only_on_record() {
    privileged_test!();
    let policy = Policy::default();
    // Chained as `attach --then` chains: to a program that passes everything.
    let floor = Floor::load();
    let measured: BTreeMap<String, Footprint> = [
        ("mcfilter", footprint(&Harness::new(&policy))),
        ("mcfilter_ip", footprint(&Harness::ip_framed(&policy))),
        (
            "mcfilter chained",
            footprint(&Harness::chained(&policy, floor.program_fd())),
        ),
    ]
    .into_iter()
    .map(|(name, footprint)| (name.to_owned(), footprint))
    .collect();
    // The figures are of programs that run: each loaded one answers a frame.
    let frame = [0u8; 60];
    assert_eq!(Harness::new(&policy).run(&frame), XDP_PASS);

    let path = record_path();
    let mut record: Record = std::fs::read(&path)
        .map(|bytes| serde_json::from_slice(&bytes).expect("tests/footprint.json parses"))
        .unwrap_or_default();
    let kernel = kernel();
    if std::env::var_os("MCFILTER_RECORD_FOOTPRINT").is_some() {
        record.insert(kernel.clone(), measured.clone());
        let text = serde_json::to_string_pretty(&record).expect("json") + "\n";
        std::fs::write(&path, text).expect("write tests/footprint.json");
        eprintln!("recorded Linux {kernel}'s footprint in {}", path.display());
    }
    let Some(recorded) = record.get(&kernel) else {
        panic!(
            "tests/footprint.json has no footprint for Linux {kernel}: record one with MCFILTER_RECORD_FOOTPRINT=1 (measured: {measured:?})"
        );
    };
    let mut grown = Vec::new();
    for (load, now) in &measured {
        let then = recorded
            .get(load)
            .unwrap_or_else(|| panic!("tests/footprint.json has no {load} for Linux {kernel}"));
        for (figure, now, then) in [
            (
                "verified instructions",
                now.verified_insns,
                then.verified_insns,
            ),
            ("xlated bytes", now.xlated_bytes, then.xlated_bytes),
            ("jited bytes", now.jited_bytes, then.jited_bytes),
        ] {
            eprintln!("{load}: {figure}: {now} (recorded {then})");
            if f64::from(now) > f64::from(then) * (1.0 + GROWTH_ALLOWED) {
                grown.push(format!("{load}: {figure} {then} -> {now}"));
            }
        }
    }
    assert!(
        grown.is_empty(),
        "the program grew by more than {}% over tests/footprint.json (record the new figures with MCFILTER_RECORD_FOOTPRINT=1 and say why in the commit): {}",
        GROWTH_ALLOWED * 100.0,
        grown.join("; ")
    );
}

/// Issue #13: a header field wider than a byte is read with one load, not assembled from byte
/// loads (see `mcfilter-ebpf/src/field.rs`), in every entry point as the kernel translated it.
#[test]
fn header_fields_are_read_with_one_load() {
    privileged_test!();
    let policy = Policy::default();
    for (load, harness) in [
        ("mcfilter", Harness::new(&policy)),
        ("mcfilter_ip", Harness::ip_framed(&policy)),
    ] {
        let insns = insns::xlated(harness.info().id());
        let wide = insns
            .iter()
            .filter(|insn| insn.code == insns::LDX_HALF)
            .count();
        assert!(
            wide > 0,
            "{load}: no 16-bit load at all, so the ports are not read whole"
        );
        let assembled = insns::assembled_from_bytes(&insns);
        assert!(
            assembled.is_empty(),
            "{load}: {} byte loads shifted into a wider value (first: {:?})",
            assembled.len(),
            assembled.first()
        );
    }
}
