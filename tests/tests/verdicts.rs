//! The real XDP object through BPF_PROG_TEST_RUN: a table of named frames, each judged by the
//! kernel program and by the independent oracle, plus seeded generated frames.

use std::{collections::BTreeSet, net::IpAddr};

use aya::maps::{Array, Map, MapData};
use mcfilter_common::{
    FRAG_CACHE_CAPACITY, Reason, SLOT_FRAG_INSERT_FAILED, TABLE_SLOT_READY, map_names,
};
use mcfilter_tests::{
    Rng,
    fixtures::*,
    generate::{mutate, random_frame},
    oracle::{Framing, Oracle, Policy},
    packet::*,
    pin_to_cpu, privileged_test,
    program::{Harness, XDP_DROP, XDP_PASS},
    usable_cpus,
};

#[test]
fn verdict_table_matches_the_oracle_and_the_fixtures() {
    privileged_test!();
    let harness = Harness::new(&policy());
    assert!(harness.maps().allow.tables_ready().unwrap());
    check_table(&harness, policy());
}

#[test]
fn verdict_table_holds_with_a_large_allow_list() {
    privileged_test!();
    // The table again with a thousand more entries, in the strides the fixtures' sources are
    // looked up in: the fixtures' sources keep their verdicts.
    let mut large = policy();
    let addresses = (0..=1024u128)
        .map(|i| IpAddr::from(std::net::Ipv6Addr::from((0x2001_0db8_ffffu128 << 80) | i)));
    large.allow.extend(addresses.map(ipnet::IpNet::from));
    check_table(&Harness::new(&large), large);
}

#[test]
fn verdict_table_holds_with_the_lookup_tables_off() {
    privileged_test!();
    // The program's other way to the list, taken while userspace rebuilds the tables: the trie.
    let harness = Harness::new(&policy());
    let mut tables: Array<MapData, u64> = Array::try_from(
        Map::from_map_data(
            MapData::from_pin(harness.maps_dir().join(map_names::ALLOW_TABLES)).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    tables.set(TABLE_SLOT_READY, 0, 0).unwrap();
    assert!(!harness.maps().allow.tables_ready().unwrap());
    check_table(&harness, policy());
}

/// Every fixture row through the program and the oracle under `policy`.
fn check_table(harness: &Harness, policy: Policy) {
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
/// lists, IPv4 or IPv6, is allowed by every single run of the program, while the lookup tables
/// pass through both lists.
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
    let (small, large) = (256, 1124);
    let policy = Policy {
        ports: BTreeSet::from([11211]),
        allow: list(100, small).into_iter().collect(),
        drop_reflected: false,
    };
    let harness = Harness::new(&policy);
    let syn = v4(ALLOWED_V4, IPPROTO_TCP, &tcp_syn(40000, 11211));
    // Inside the common /48, next to each list's own /128s.
    let syn6 = v6(
        "2001:db8:1::99"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
        IPPROTO_TCP,
        &tcp_syn(40000, 11211),
    );
    let state = mcfilter::StateDir::new(harness.maps_dir());
    let done = std::sync::atomic::AtomicBool::new(false);
    let runs = std::thread::scope(|scope| {
        let prober = scope.spawn(|| {
            let mut runs = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) || runs == 0 {
                for frame in [&syn, &syn6] {
                    assert_eq!(
                        harness.run(frame),
                        XDP_PASS,
                        "run {runs}: allowed source dropped"
                    );
                }
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
        for (group, n) in [(101, large), (102, large), (103, small), (104, large)] {
            let change = maps.allow.replace(&list(group, n)).expect("replace");
            assert_eq!(
                (change.added.len(), change.removed.len()),
                (usize::from(n), usize::from(before))
            );
            before = n;
            let allow = &mut maps.allow;
            assert!(allow.tables_ready().unwrap(), "{n} entries");
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

/// The lookup tables against the oracle on lists of every shape: IPv4 entries from /18 to /32
/// (whole /24s and the addresses of partly listed ones), IPv6 entries from /40 to /128, and
/// sources drawn near and inside them, each judged by the program and the oracle; then the
/// same after `allow replace` swaps the list for another.
#[test]
fn the_lookup_tables_allow_exactly_the_listed_sources() {
    privileged_test!();
    let mut rng = Rng::new(0x7ab1e5);
    let random_list = |rng: &mut Rng| -> Vec<ipnet::IpNet> {
        (0..300)
            .map(|_| {
                // Mostly long entries, some short ones; short ones rare enough not to cover
                // the probes of the others.
                let short = rng.chance(20);
                if rng.chance(50) {
                    let len = if short {
                        18 + rng.below(7)
                    } else {
                        25 + rng.below(8)
                    };
                    // Inside 100.64.0.0/10.
                    let addr = 0x6440_0000 | (rng.next_u64() as u32 & 0x003f_ffff);
                    ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(addr), len as u8)
                        .unwrap()
                        .trunc()
                        .into()
                } else {
                    let len = if short {
                        40 + rng.below(24)
                    } else {
                        64 + rng.below(65)
                    };
                    // 2001:db8:X:Y::/64 with Y below 4, so long entries meet in their /64s.
                    let addr = (0x2001_0db8u128 << 96)
                        | u128::from(rng.next_u64() as u16) << 80
                        | (rng.below(4) as u128) << 64
                        | u128::from(rng.next_u64());
                    ipnet::Ipv6Net::new(std::net::Ipv6Addr::from(addr), len as u8)
                        .unwrap()
                        .trunc()
                        .into()
                }
            })
            .collect()
    };
    let first = random_list(&mut rng);
    let policy = Policy {
        ports: BTreeSet::from([11211]),
        allow: first.clone(),
        drop_reflected: false,
    };
    let harness = Harness::new(&policy);
    let check = |allow: Vec<ipnet::IpNet>, rng: &mut Rng| {
        let mut oracle = Oracle::new(Policy {
            ports: BTreeSet::from([11211]),
            allow: allow.clone(),
            drop_reflected: false,
        });
        let mut verdicts = [0usize; 2];
        for net in &allow {
            for _ in 0..20 {
                // Keep a random number of the entry's leading bits, randomise the rest.
                let keep = u32::from(net.prefix_len()).saturating_sub(rng.below(10) as u32);
                let noise = u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64());
                let frame = match net {
                    ipnet::IpNet::V4(net) => {
                        let mask = u32::MAX.checked_shl(32 - keep).unwrap_or(0);
                        let addr = (u32::from(net.network()) & mask) | (noise as u32 & !mask);
                        v4(addr.to_be_bytes(), IPPROTO_TCP, &tcp_syn(40000, 11211))
                    }
                    ipnet::IpNet::V6(net) => {
                        let mask = u128::MAX.checked_shl(128 - keep).unwrap_or(0);
                        let addr = (u128::from(net.network()) & mask) | (noise & !mask);
                        v6(addr.to_be_bytes(), IPPROTO_TCP, &tcp_syn(40000, 11211))
                    }
                };
                let (want, _) = oracle.judge(&frame);
                let (_, reason) = harness.verdict(&frame);
                assert_eq!(reason, want, "{}", hex(&frame));
                verdicts[usize::from(reason == Reason::TcpAllowed)] += 1;
            }
        }
        // Both verdicts are exercised, many times.
        assert!(verdicts.iter().all(|&n| n > 500), "{verdicts:?}");
    };
    check(first, &mut rng);
    let second = random_list(&mut rng);
    let mut maps =
        mcfilter::Maps::open_loaded(&mcfilter::StateDir::new(harness.maps_dir())).expect("maps");
    maps.allow
        .replace(&second.iter().copied().collect())
        .expect("replace");
    check(second, &mut rng);
}

/// Each CPU keeps the dropped datagram it met last in front of the shared fragment cache. A
/// first fragment that passes, on another CPU, removes its datagram (an id reused) from the
/// cache and voids every CPU's copy: the CPU that dropped the old datagram then passes the new
/// one's later fragments, and the old key dropped again is remembered again. On a host with
/// one CPU both sides run on it.
#[test]
fn a_passed_first_fragment_voids_every_cpus_latest_dropped_datagram() {
    privileged_test!();
    let harness = Harness::new(&policy());
    let cpus = usable_cpus();
    let (first, other) = (cpus[0], *cpus.get(1).unwrap_or(&cpus[0]));
    let stats = udp(40000, 11211, &memcached_udp_request(1, b"stats\r\n"));
    let dns = udp(40000, 53, &[0; 32]);
    let v6_frag = |offset, more| Ext::Fragment {
        offset,
        more,
        id: 9,
    };
    let cases = [
        (
            "IPv4",
            v4_with(&[], DENIED_V4, &[], Frag::first(9), IPPROTO_UDP, &stats),
            v4_with(&[], DENIED_V4, &[], Frag::first(9), IPPROTO_UDP, &dns),
            v4_with(
                &[],
                DENIED_V4,
                &[],
                Frag::later(9, 185, false),
                IPPROTO_UDP,
                &[0; 64],
            ),
        ),
        (
            "IPv6",
            v6_with(&[], DENIED_V6, &[v6_frag(0, true)], IPPROTO_UDP, &stats),
            v6_with(&[], DENIED_V6, &[v6_frag(0, true)], IPPROTO_UDP, &dns),
            v6_with(
                &[],
                DENIED_V6,
                &[v6_frag(185, false)],
                IPPROTO_UDP,
                &[0; 64],
            ),
        ),
    ];
    for (family, dropped, passed, later) in cases {
        pin_to_cpu(first);
        assert_eq!(
            harness.verdict(&dropped),
            (XDP_DROP, Reason::UdpPort),
            "{family}"
        );
        assert_eq!(
            harness.verdict(&later),
            (XDP_DROP, Reason::FragmentOfDropped),
            "{family}: a later fragment of the dropped datagram, on the CPU that dropped it"
        );
        pin_to_cpu(other);
        assert_eq!(
            harness.verdict(&passed),
            (XDP_PASS, Reason::NotProtected),
            "{family}: a new datagram under the same key, on CPU {other}"
        );
        pin_to_cpu(first);
        assert_eq!(
            harness.verdict(&later),
            (XDP_PASS, Reason::LaterFragment),
            "{family}: the new datagram's later fragment on CPU {first}, which met the old one last"
        );
        assert_eq!(
            harness.verdict(&dropped),
            (XDP_DROP, Reason::UdpPort),
            "{family}"
        );
        pin_to_cpu(other);
        assert_eq!(
            harness.verdict(&later),
            (XDP_DROP, Reason::FragmentOfDropped),
            "{family}: dropped again, remembered again, on CPU {other}"
        );
    }
}

/// A flood of spoofed first fragments to the port, three times the IPv4 cache's capacity: the
/// cache stays bounded (its LRU evicts; no insert fails), the datagram dropped last still has
/// its later fragments dropped on every CPU, and a fragmented datagram to another port still
/// passes whole.
#[test]
fn a_flood_of_spoofed_first_fragments_keeps_the_fragment_cache_bounded_and_working() {
    privileged_test!();
    let harness = Harness::new(&policy());
    let cpus = usable_cpus();
    let (first, other) = (cpus[0], *cpus.get(1).unwrap_or(&cpus[0]));
    let stats = udp(40000, 11211, &memcached_udp_request(1, b"stats\r\n"));
    // 198.18.0.0 to 198.18.95.255, each with its own id.
    let spoofed = |i: u32| [198, 18, (i >> 8) as u8, i as u8];
    let later = |src, id| {
        v4_with(
            &[],
            src,
            &[],
            Frag::later(id, 185, false),
            IPPROTO_UDP,
            &[0; 64],
        )
    };
    let flood = 3 * FRAG_CACHE_CAPACITY;
    pin_to_cpu(first);
    for i in 0..flood {
        let frame = v4_with(
            &[],
            spoofed(i),
            &[],
            Frag::first(i as u16),
            IPPROTO_UDP,
            &stats,
        );
        assert_eq!(harness.run(&frame), XDP_DROP, "spoofed first fragment {i}");
    }
    let remembered = harness
        .maps()
        .fragments()
        .expect("count the fragment caches");
    assert!(
        remembered > 0 && remembered <= FRAG_CACHE_CAPACITY as usize,
        "{remembered} datagrams remembered after {flood} dropped first fragments"
    );
    let failed: u64 = harness
        .maps()
        .stats
        .get(&SLOT_FRAG_INSERT_FAILED, 0)
        .expect("read stats")
        .iter()
        .map(|counter| counter.packets)
        .sum();
    assert_eq!(failed, 0, "fragment-cache inserts that failed");
    let last = flood - 1;
    let (outside, id) = ([198, 19, 255, 1], 9);
    for cpu in [first, other] {
        pin_to_cpu(cpu);
        assert_eq!(
            harness.verdict(&later(spoofed(last), last as u16)),
            (XDP_DROP, Reason::FragmentOfDropped),
            "the last dropped datagram's later fragment, on CPU {cpu}"
        );
        let dns = udp(40000, 53, &[0; 32]);
        let dns_first = v4_with(&[], outside, &[], Frag::first(id), IPPROTO_UDP, &dns);
        assert_eq!(
            harness.verdict(&dns_first),
            (XDP_PASS, Reason::NotProtected),
            "a first fragment to another port, on CPU {cpu}"
        );
        assert_eq!(
            harness.verdict(&later(outside, id)),
            (XDP_PASS, Reason::LaterFragment),
            "its later fragment, on CPU {cpu}"
        );
    }
}

fn hex(frame: &[u8]) -> String {
    frame.iter().map(|b| format!("{b:02x}")).collect()
}
