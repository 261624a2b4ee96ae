//! `cargo xtask bench`: the per-packet cost of the real program through BPF_PROG_TEST_RUN,
//! class by class, next to a trivial XDP_PASS program (the floor) on the same frames in the same
//! run, as nanoseconds and as a ratio to the floor. Writes Markdown to stdout and JSON to the
//! path given by `--json` (default target/bench/per-packet.json).
//!
//! Usage: mcfilter-bench [--repeat N] [--runs N] [--json PATH]

use std::{collections::BTreeSet, net::Ipv4Addr};

use ipnet::IpNet;
use mcfilter_tests::{
    fixtures::*,
    oracle::{Oracle, Policy},
    packet::*,
    program::{Floor, Harness},
};
use serde_json::json;

struct Options {
    repeat: u32,
    runs: usize,
    json: std::path::PathBuf,
}

fn options() -> Options {
    let mut opts = Options {
        repeat: 1_000_000,
        runs: 5,
        json: "target/bench/per-packet.json".into(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--repeat" => opts.repeat = value().parse().expect("--repeat N"),
            "--runs" => opts.runs = value().parse().expect("--runs N"),
            "--json" => opts.json = value().into(),
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

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    let opts = options();
    let floor = Floor::load();
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
    println!("| class | verdict | mcfilter ns | floor ns | ratio | over floor ns |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    let mut rows = Vec::new();
    let mut loaded: Option<(usize, Harness, Oracle)> = None;
    for (name, frame, allow_entries) in classes {
        if loaded.as_ref().map(|(n, _, _)| *n) != Some(allow_entries) {
            let policy = Policy {
                ports: BTreeSet::from([11211, 22122]),
                allow: allow_list(allow_entries),
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
        let ratio = ours as f64 / base.max(1) as f64;
        println!(
            "| {name} | {} | {ours} | {base} | {ratio:.2} | {} |",
            reason.name(),
            ours.saturating_sub(base)
        );
        rows.push(
            json!({"class": name, "reason": reason.name(), "allow_entries": allow_entries,
            "mcfilter_ns": ours, "floor_ns": base, "ratio": (ratio * 100.0).round() / 100.0}),
        );
    }
    let report = json!({"repeat": opts.repeat, "runs": opts.runs, "classes": rows});
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
