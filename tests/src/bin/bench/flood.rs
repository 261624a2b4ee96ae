//! The veth flood through each receiver, from one source and from random spoofed ones.

use serde_json::json;

use crate::median;

/// The veth flood: UDP to 11211 from one source, generator and receiver on one CPU, for each
/// receiver; receiver-only nanoseconds per packet (total minus the generator's own).
pub(crate) fn flood() -> serde_json::Value {
    use mcfilter_tests::flood::{Flood, RX};
    const PACKETS: u32 = 2_000_000;
    const RUNS: usize = 5;
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

    // The trivial drop and mcfilter in pairs, run by run (each attached for its run), so that
    // the machine's drift meets both alike; each figure is the median of its runs, each ratio
    // the median of the pairs' ratios.
    let mcf = mcfilter_tests::cli::Mcfilter::new("flm").in_netns(&flood.receiver);
    let mut paired = |random: bool| {
        let generator = if random { generator_random } else { generator };
        let (mut drop, mut ours, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..RUNS {
            flood.attach_reference("drop");
            let d = (flood.run(PACKETS, random) as u64).saturating_sub(generator);
            flood.detach_reference();
            mcf.ok(&["attach", RX, "--mode", "native"]);
            let m = (flood.run(PACKETS, random) as u64).saturating_sub(generator);
            mcf.ok(&["detach", RX]);
            drop.push(d);
            ours.push(m);
            ratios.push(m as f64 / d.max(1) as f64);
        }
        ratios.sort_by(f64::total_cmp);
        (median(drop), median(ours), ratios[ratios.len() / 2])
    };
    let (drop_one, mcfilter_one, one_source) = paired(false);
    let (drop_random, mcfilter_random, versus_random) = paired(true);
    let mut results: Vec<(&str, u64)> = vec![
        ("trivial XDP_DROP (native)", drop_one + generator),
        ("mcfilter native", mcfilter_one + generator),
    ];

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
         generator's own ({generator} ns/packet); mcfilter's ratio is the median of {RUNS} runs \
         paired with the trivial drop's\n"
    );
    println!("| receiver | receiver ns/packet | vs trivial XDP_DROP | Mpps on one core |");
    println!("| --- | ---: | ---: | ---: |");
    let drop_cost = results[0].1.saturating_sub(generator).max(1);
    let mut out = Vec::new();
    for (name, total) in results {
        let receiver = total.saturating_sub(generator);
        // mcfilter's against the drop it was paired with; the others' against the drop's median.
        let versus = if name == "mcfilter native" {
            one_source
        } else {
            receiver as f64 / drop_cost as f64
        };
        let mpps = 1000.0 / receiver.max(1) as f64;
        println!("| {name} | {receiver} | {versus:.2} | {mpps:.1} |");
        out.push(
            json!({"receiver": name, "receiver_ns": receiver, "total_ns": total,
            "vs_xdp_drop": (versus * 100.0).round() / 100.0}),
        );
    }
    println!(
        "\nRandom spoofed sources (a new 198.18.x.y a frame): trivial XDP_DROP {drop_random} ns/packet, \
         mcfilter native {mcfilter_random} ns/packet ({versus_random:.2}x, the median of {RUNS} paired runs)"
    );
    json!({"packets": PACKETS, "generator_ns": generator, "receivers": out,
        "random_sources": {"xdp_drop_ns": drop_random, "mcfilter_native_ns": mcfilter_random,
            "vs_xdp_drop": (versus_random * 100.0).round() / 100.0}})
}
