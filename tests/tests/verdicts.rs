//! The real XDP object through BPF_PROG_TEST_RUN: a table of named frames, each judged by the
//! kernel program and by the independent oracle, plus seeded generated frames.

use std::{collections::BTreeSet, net::IpAddr};

use mcfilter_common::Reason;
use mcfilter_tests::{
    Rng,
    fixtures::*,
    generate::{mutate, random_frame},
    oracle::{Framing, Oracle, Policy},
    packet::*,
    privileged_test,
    program::{Harness, XDP_DROP, XDP_PASS},
};

#[test]
fn verdict_table_matches_the_oracle_and_the_fixtures() {
    privileged_test!();
    check_table(policy());
}

#[test]
fn verdict_table_holds_with_an_indexed_allow_list() {
    privileged_test!();
    // The table again with a list large enough for its addresses to be indexed (looked up in
    // the hash map before the trie): the fixtures' sources keep their verdicts.
    let mut large = policy();
    let addresses = (0..=mcfilter::allow::INDEX_ABOVE as u128)
        .map(|i| IpAddr::from(std::net::Ipv6Addr::from((0x2001_0db8_ffffu128 << 80) | i)));
    large.allow.extend(addresses.map(ipnet::IpNet::from));
    check_table(large);
}

/// Every fixture row through the program and the oracle under `policy`.
fn check_table(policy: Policy) {
    let harness = Harness::new(&policy);
    assert_eq!(
        harness.maps().allow.indexed().unwrap(),
        policy.allow.len() > mcfilter::allow::INDEX_ABOVE
    );
    let mut oracle = Oracle::new(policy);
    let rows = table();
    for (name, frame, want) in &rows {
        let (oracle_reason, source) = oracle.judge(frame);
        assert_eq!(
            oracle_reason, *want,
            "{name}: the oracle disagrees with the fixture"
        );
        let sources_before = harness.source_packets(source);
        let (action, reason) = harness.verdict(frame);
        assert_eq!(reason, *want, "{name}: kernel reason");
        let want_action = if want.is_drop() { XDP_DROP } else { XDP_PASS };
        assert_eq!(action, want_action, "{name}: kernel action");
        // Drops are counted under the source the oracle names (none before the IP header).
        let counted = harness.source_packets(source) - sources_before;
        assert_eq!(
            counted,
            u64::from(want.is_drop() && source.is_some()),
            "{name}: per-source count"
        );
    }
    // Every reason is exercised by some row.
    let covered: BTreeSet<u32> = rows.iter().map(|(_, _, r)| *r as u32).collect();
    assert_eq!(covered.len(), Reason::ALL.len(), "rows cover every reason");
}

#[test]
fn drops_are_counted_by_source_with_bytes() {
    privileged_test!();
    let harness = Harness::new(&policy());
    let frame = v4(DENIED_V4, IPPROTO_UDP, &udp(1, 11211, b"stats\r\n"));
    for _ in 0..7 {
        assert_eq!(harness.run(&frame), XDP_DROP);
    }
    // Passed packets are not counted by source.
    harness.run(&v4(ALLOWED_V4, IPPROTO_TCP, &tcp_syn(1, 11211)));
    let stats = mcfilter::read_stats(harness.maps(), 10).expect("read stats");
    assert_eq!(stats.sources.len(), 1, "{stats:?}");
    let row = &stats.sources[0];
    assert_eq!(row.source, IpAddr::from(DENIED_V4));
    assert_eq!((row.packets, row.bytes), (7, 7 * frame.len() as u64));
    assert_eq!(row.reason, Some(Reason::UdpPort));
    assert_eq!(stats.dropped.packets, 7);
    assert_eq!(stats.dropped.bytes, 7 * frame.len() as u64);
    assert_eq!(stats.passed.packets, 1);
}

#[test]
fn dry_run_passes_but_counts_what_it_would_drop() {
    privileged_test!();
    let harness = Harness::with_dry_run(&policy(), true);
    let frame = v6(DENIED_V6, IPPROTO_UDP, &udp(1, 11211, b"x"));
    assert_eq!(harness.run(&frame), XDP_PASS);
    assert_eq!(harness.counter(Reason::UdpPort, true).packets, 1);
    assert_eq!(harness.counter(Reason::UdpPort, false).packets, 0);
    let stats = mcfilter::read_stats(harness.maps(), 10).expect("read stats");
    assert_eq!((stats.dropped.packets, stats.would_drop.packets), (0, 1));
    assert!(stats.sources[0].dry_run);
}

/// Structure-aware random frames and byte mutations of the table's frames, judged by kernel and
/// oracle. Seed from MCFILTER_SEED (default fixed), count from MCFILTER_PACKETS.
#[test]
fn generated_frames_match_the_oracle() {
    privileged_test!();
    let seed: u64 = env_or("MCFILTER_SEED", 0x6d63_6669_6c74_6572);
    let count: usize = env_or("MCFILTER_PACKETS", 200_000);
    let policy = policy();
    let mut harness = Harness::new(&policy);
    let mut oracle = Oracle::new(policy);
    let corpus: Vec<Vec<u8>> = table().into_iter().map(|(_, frame, _)| frame).collect();
    let mut rng = Rng::new(seed);
    let mut expected = vec![0u64; Reason::ALL.len()];
    let mut i = 0;
    while i < count {
        let frame = match rng.below(3) {
            0 => random_frame(&mut rng),
            1 => {
                let base = random_frame(&mut rng);
                mutate(&mut rng, base)
            }
            _ => {
                let base = rng.pick(&corpus).clone();
                mutate(&mut rng, base)
            }
        };
        if frame.len() < 14 {
            continue; // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header.
        }
        i += 1;
        if i % FRAGMENT_CACHE_WINDOW == 0 {
            harness.clear_fragment_cache();
            oracle.clear_fragment_cache();
        }
        let (want, _) = oracle.judge(&frame);
        expected[want as usize] += 1;
        let action = harness.run(&frame);
        let want_action = if want.is_drop() { XDP_DROP } else { XDP_PASS };
        let counted = harness.counter(want, false).packets;
        assert!(
            action == want_action && counted == expected[want as usize],
            "frame {i} (seed {seed:#x}): kernel action {action}, oracle {want:?}; frame {frame:02x?}"
        );
    }
    // Each frame bumped its expected counter; the totals prove it bumped no other.
    let totals: Vec<u64> = harness.counters().iter().map(|c| c.packets).collect();
    assert_eq!(totals, expected, "seed {seed:#x}");
    let by_reason: Vec<String> = Reason::ALL
        .iter()
        .zip(&totals)
        .map(|(r, n)| format!("{}={n}", r.name()))
        .collect();
    eprintln!(
        "{count} generated frames (seed {seed:#x}), zero mismatches: {}",
        by_reason.join(" ")
    );
}

/// The entry for interfaces whose packets start at the IP header (TUN, WireGuard): the table's
/// frames and generated ones with their Ethernet header cut off, judged by the kernel program
/// and by the oracle reading them as IP-framed. Every reason but the VLAN one occurs.
#[test]
fn ip_framed_packets_match_the_oracle() {
    privileged_test!();
    let seed: u64 = env_or("MCFILTER_SEED", 0x6d63_6669_6c74_6572);
    let generated: usize = env_or("MCFILTER_PACKETS", 200_000) / 4;
    let policy = policy();
    let mut harness = Harness::ip_framed(&policy);
    let mut oracle = Oracle::new(policy);
    let mut rng = Rng::new(seed);
    let strip = |frame: &[u8]| frame.get(ETH_HLEN..).unwrap_or_default().to_vec();
    let table: Vec<Vec<u8>> = table().iter().map(|(_, frame, _)| strip(frame)).collect();
    let random = (0..generated).map(|i| {
        let base = random_frame(&mut rng);
        if i % 2 == 0 {
            strip(&base)
        } else {
            strip(&mutate(&mut rng, base))
        }
    });
    let mut expected = vec![0u64; Reason::ALL.len()];
    let mut judged = 0;
    for (i, packet) in table.clone().into_iter().chain(random).enumerate() {
        if packet.len() < ETH_HLEN {
            continue; // BPF_PROG_TEST_RUN refuses shorter packets.
        }
        if i >= table.len() && i % FRAGMENT_CACHE_WINDOW == 0 {
            harness.clear_fragment_cache();
            oracle.clear_fragment_cache();
        }
        let (want, _) = oracle.judge_framed(&packet, Framing::Ip);
        expected[want as usize] += 1;
        let action = harness.run(&packet);
        let want_action = if want.is_drop() { XDP_DROP } else { XDP_PASS };
        let counted = harness.counter(want, false).packets;
        assert!(
            action == want_action && counted == expected[want as usize],
            "packet {i} (seed {seed:#x}): kernel action {action}, oracle {want:?}; {packet:02x?}"
        );
        judged += 1;
    }
    // Each packet bumped its expected counter; the totals prove it bumped no other.
    let totals: Vec<u64> = harness.counters().iter().map(|c| c.packets).collect();
    assert_eq!(totals, expected, "seed {seed:#x}");
    let unseen: Vec<&str> = Reason::ALL
        .iter()
        .zip(&totals)
        .filter(|(_, n)| **n == 0)
        .map(|(r, _)| r.name())
        .collect();
    assert_eq!(unseen, ["vlan_limit"], "reasons no IP-framed packet met");
    eprintln!("{judged} IP-framed packets (seed {seed:#x}), zero mismatches");
}

/// BPF_PROG_TEST_RUN's shortest XDP input, and the Ethernet header the IP-framed test cuts off.
const ETH_HLEN: usize = 14;

/// Frames between two resets of the fragment caches: few enough distinct dropped datagrams that
/// the kernel's LRU never evicts (its capacity is 8192), so kernel and oracle stay exact.
const FRAGMENT_CACHE_WINDOW: usize = 2048;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `allow replace` applies the difference: while it swaps hundreds of entries, a source on both
/// lists is allowed by every single run of the program, also while the list grows past the
/// size where its addresses are indexed and shrinks back.
#[test]
fn replace_never_drops_an_entry_on_both_lists() {
    privileged_test!();
    let common: ipnet::IpNet = "198.18.1.10/32".parse().unwrap();
    // `n` addresses of their own (/128s), the common one and a prefix.
    let list = |group: u16, n: u16| -> BTreeSet<ipnet::IpNet> {
        (0..n)
            .map(|i| format!("2001:db8:{group:x}::{i:x}/128").parse().unwrap())
            .chain([common, "2001:db8:1::/48".parse().unwrap()])
            .collect()
    };
    let (small, large) = (256, mcfilter::allow::INDEX_ABOVE as u16 + 100);
    let policy = Policy {
        ports: BTreeSet::from([11211]),
        allow: list(100, small).into_iter().collect(),
        drop_reflected: false,
    };
    let harness = Harness::new(&policy);
    let syn = v4(ALLOWED_V4, IPPROTO_TCP, &tcp_syn(40000, 11211));
    let state = mcfilter::StateDir::new(harness.maps_dir());
    let done = std::sync::atomic::AtomicBool::new(false);
    let runs = std::thread::scope(|scope| {
        let prober = scope.spawn(|| {
            let mut runs = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) || runs == 0 {
                assert_eq!(
                    harness.run(&syn),
                    XDP_PASS,
                    "run {runs}: allowed source dropped"
                );
                runs += 1;
            }
            runs
        });
        // The prober stops however this thread ends, a failed assertion included.
        struct Done<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let stop = Done(&done);
        let mut maps = mcfilter::Maps::open_loaded(&state).expect("maps");
        let mut before = small;
        for (group, n, indexed) in [
            (101, large, true),
            (102, large, true),
            (103, small, false),
            (104, large, true),
        ] {
            let change = maps.allow.replace(&list(group, n)).expect("replace");
            assert_eq!(
                (change.added.len(), change.removed.len()),
                (usize::from(n), usize::from(before))
            );
            before = n;
            let allow = &mut maps.allow;
            assert_eq!(allow.indexed().unwrap(), indexed, "{n} entries");
            let addresses: BTreeSet<_> = list(group, n)
                .into_iter()
                .filter(|net| net.prefix_len() == net.max_prefix_len())
                .collect();
            let index = allow.index().unwrap();
            assert_eq!(index, if indexed { addresses } else { BTreeSet::new() });
            assert_eq!(allow.size().unwrap(), usize::from(n) + 2);
        }
        drop(stop);
        prober.join().unwrap()
    });
    assert!(runs > 0);
    assert_eq!(harness.counter(Reason::TcpNotAllowed, false).packets, 0);
}

/// A flood from a million distinct spoofed sources: the per-source map stays within its
/// capacity (LRU), the totals stay exact, the evictions are counted, and an allowed client's
/// packets still pass.
#[test]
fn a_million_spoofed_sources_keep_the_map_bounded_and_the_totals_exact() {
    privileged_test!();
    const SOURCES: u32 = 1_000_000;
    let harness = Harness::new(&policy());
    let capacity = harness.maps().sources_capacity;
    let allowed = v4(ALLOWED_V4, IPPROTO_TCP, &tcp_syn(40000, 11211));
    for i in 0..SOURCES {
        let [_, b, c, d] = i.to_be_bytes();
        let frame = v4(
            [100, 64 | (b & 0x3f), c, d],
            IPPROTO_UDP,
            &udp(1, 11211, b"x"),
        );
        assert_eq!(harness.run(&frame), XDP_DROP);
        if i % 100_000 == 0 {
            assert_eq!(
                harness.run(&allowed),
                XDP_PASS,
                "the allowed client passes mid-flood"
            );
        }
    }
    let stats = mcfilter::read_stats(harness.maps(), usize::MAX).expect("read stats");
    assert_eq!(
        stats.reasons[&Reason::UdpPort],
        u64::from(SOURCES),
        "exact totals"
    );
    assert_eq!(stats.reasons[&Reason::TcpAllowed], 10);
    assert!(
        stats.sources.len() as u32 <= capacity + 2,
        "bounded: {} sources",
        stats.sources.len()
    );
    // Every source sent one packet: listed, evicted from the LRU map, or given up when another
    // source took its slot among the sources seen once: all of them are accounted for.
    let listed: u64 = stats.sources.iter().map(|s| s.packets).sum();
    assert_eq!(
        listed + stats.sources_evicted + stats.sources_not_recorded,
        u64::from(SOURCES),
        "{} evicted, {} not recorded",
        stats.sources_evicted,
        stats.sources_not_recorded
    );
    assert!(
        stats.sources_not_recorded > 0,
        "one-off sources were given up, not inserted"
    );
}
