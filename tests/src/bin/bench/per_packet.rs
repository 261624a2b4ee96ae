//! Per-packet cost by class through BPF_PROG_TEST_RUN: mcfilter, the floor and xdp-filter.

use std::{collections::BTreeSet, net::Ipv4Addr, process::Command};

use ipnet::IpNet;
use mcfilter_tests::{
    fixtures::*,
    netns::NetNs,
    oracle::{Oracle, Policy},
    packet::*,
    program::{Floor, Harness, Pinned},
};
use serde_json::json;

use crate::{Options, Spread, median};

/// `2001:db8::3`, a /128 entry of every [`allow_list`] (its fourth generated entry).
const LISTED_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3];

/// The IPv4 address of generated entry `i` (a /32 unless `i % 10` says otherwise).
fn generated_v4(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000u32.wrapping_add(i.wrapping_mul(2_654_435_761) >> 4))
}

/// An allow-list of `n` entries: mostly /32 and /128, some /24 and /64, always including the
/// allowed fixtures' prefixes (`198.18.1.10/32`, `2001:db8:1::/48`) and [`LISTED_V6`].
pub(crate) fn allow_list(n: usize) -> Vec<IpNet> {
    let mut nets: BTreeSet<IpNet> = policy().allow.into_iter().collect();
    let mut i: u32 = 0;
    while nets.len() < n {
        let v4 = generated_v4(i);
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

/// Per-packet cost by class: mcfilter, the floor and xdp-filter on the same frames.
pub(crate) fn per_packet(opts: &Options) -> serde_json::Value {
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
            "tcp4 allowed address, 10 entries",
            v4(ALLOWED_V4, IPPROTO_TCP, &syn),
            10,
        ),
        (
            "tcp4 denied, 10 entries",
            v4(DENIED_V4, IPPROTO_TCP, &syn),
            10,
        ),
        (
            "tcp6 allowed address, 10 entries",
            v6(LISTED_V6, IPPROTO_TCP, &syn),
            10,
        ),
        (
            "tcp6 allowed by a /48, 10 entries",
            v6(ALLOWED_V6, IPPROTO_TCP, &syn),
            10,
        ),
        (
            "tcp4 allowed address, 10k entries",
            v4(ALLOWED_V4, IPPROTO_TCP, &syn),
            10_000,
        ),
        (
            "tcp4 allowed address among the generated ones, 10k entries",
            v4(generated_v4(4).octets(), IPPROTO_TCP, &syn),
            10_000,
        ),
        (
            "tcp4 denied, 10k entries",
            v4(DENIED_V4, IPPROTO_TCP, &syn),
            10_000,
        ),
        (
            "tcp4 allowed address, 1M entries",
            v4(ALLOWED_V4, IPPROTO_TCP, &syn),
            1_000_000,
        ),
        (
            "tcp4 allowed address among the generated ones, 1M entries",
            v4(generated_v4(4).octets(), IPPROTO_TCP, &syn),
            1_000_000,
        ),
        (
            "tcp4 denied, 1M entries",
            v4(DENIED_V4, IPPROTO_TCP, &syn),
            1_000_000,
        ),
        (
            "tcp6 allowed address, 1M entries",
            v6(LISTED_V6, IPPROTO_TCP, &syn),
            1_000_000,
        ),
        (
            "tcp6 allowed by a /48, 1M entries",
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
        let base = Spread::of(
            (0..opts.runs)
                .map(|_| floor.time(&frame, opts.repeat))
                .collect(),
        );
        let theirs = Spread::of(
            (0..opts.runs)
                .map(|_| xdp_filter.program.time(&frame, opts.repeat))
                .collect(),
        );
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
        let base = Spread::of(
            (0..opts.runs)
                .map(|_| floor.time(&frame, opts.repeat))
                .collect(),
        );
        let theirs = Spread::of(
            (0..opts.runs)
                .map(|_| xdp_filter.program.time(&frame, opts.repeat))
                .collect(),
        );
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

    serde_json::Value::Array(rows)
}
