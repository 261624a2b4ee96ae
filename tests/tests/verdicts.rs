//! The real XDP object through BPF_PROG_TEST_RUN: a table of named frames, each judged by the
//! kernel program and by the independent oracle, plus seeded generated frames.

use std::{collections::BTreeSet, net::IpAddr};

use mcfilter_common::Reason;
use mcfilter_tests::{
    Rng,
    oracle::{self, Policy},
    packet::*,
    privileged,
    program::{Harness, XDP_DROP, XDP_PASS},
};

const ALLOWED_V4: [u8; 4] = [198, 18, 1, 10];
const DENIED_V4: [u8; 4] = [198, 18, 2, 66];
const SERVER_V4: [u8; 4] = [198, 18, 0, 1];
const ALLOWED_V6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
const DENIED_V6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x66,
];
const SERVER_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
/// `::ffff:198.18.1.10`: an IPv6 source that must not match the IPv4 allow-list entry.
const MAPPED_ALLOWED: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 1, 10];

fn policy() -> Policy {
    Policy {
        ports: BTreeSet::from([11211, 22122]),
        allow: vec![
            "198.18.1.10/32".parse().unwrap(),
            "2001:db8:1::/48".parse().unwrap(),
        ],
    }
}

fn v4(src: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
    eth(
        ETH_P_IP,
        &[],
        &ipv4(src, SERVER_V4, proto, &[], NOT_FRAGMENTED, l4),
    )
}

fn v6(src: [u8; 16], proto: u8, l4: &[u8]) -> Vec<u8> {
    eth(ETH_P_IPV6, &[], &ipv6(src, SERVER_V6, &[], proto, l4))
}

/// The named fixture rows: (name, frame, expected reason).
fn table() -> Vec<(&'static str, Vec<u8>, Reason)> {
    let stats = udp(40000, 11211, &memcached_udp_request(1, b"stats\r\n"));
    let syn = tcp_syn(40000, 11211);
    let hbh_dst = [Ext::HopByHop, Ext::DestOpts];
    let first_frag = Frag {
        offset: 0,
        more: true,
    };
    let later_frag = Frag {
        offset: 185,
        more: false,
    };
    vec![
        (
            "udp4 11211 from allowed",
            v4(ALLOWED_V4, IPPROTO_UDP, &stats),
            Reason::UdpPort,
        ),
        (
            "udp4 11211 from denied",
            v4(DENIED_V4, IPPROTO_UDP, &stats),
            Reason::UdpPort,
        ),
        (
            "udp6 11211 from allowed",
            v6(ALLOWED_V6, IPPROTO_UDP, &stats),
            Reason::UdpPort,
        ),
        (
            "udp6 11211 from denied",
            v6(DENIED_V6, IPPROTO_UDP, &stats),
            Reason::UdpPort,
        ),
        (
            "udp4 second port 22122",
            v4(DENIED_V4, IPPROTO_UDP, &udp(1, 22122, b"x")),
            Reason::UdpPort,
        ),
        (
            "tcp4 syn from allowed",
            v4(ALLOWED_V4, IPPROTO_TCP, &syn),
            Reason::TcpAllowed,
        ),
        (
            "tcp4 syn from denied",
            v4(DENIED_V4, IPPROTO_TCP, &syn),
            Reason::TcpNotAllowed,
        ),
        (
            "tcp6 syn from allowed /48",
            v6(ALLOWED_V6, IPPROTO_TCP, &syn),
            Reason::TcpAllowed,
        ),
        (
            "tcp6 syn from denied",
            v6(DENIED_V6, IPPROTO_TCP, &syn),
            Reason::TcpNotAllowed,
        ),
        (
            "tcp6 from v4-mapped allowed",
            v6(MAPPED_ALLOWED, IPPROTO_TCP, &syn),
            Reason::TcpNotAllowed,
        ),
        (
            "tcp4 other port",
            v4(DENIED_V4, IPPROTO_TCP, &tcp_syn(40000, 22)),
            Reason::NotProtected,
        ),
        (
            "udp4 other port",
            v4(DENIED_V4, IPPROTO_UDP, &udp(53, 53, b"q")),
            Reason::NotProtected,
        ),
        (
            "udp4 from 11211 to other",
            v4(DENIED_V4, IPPROTO_UDP, &udp(11211, 40000, b"r")),
            Reason::NotProtected,
        ),
        (
            "udp6 other port",
            v6(DENIED_V6, IPPROTO_UDP, &udp(53, 53, b"q")),
            Reason::NotProtected,
        ),
        (
            "icmp4 echo",
            v4(DENIED_V4, IPPROTO_ICMP, &icmp(8, &[0, 1, 0, 1])),
            Reason::NotProtected,
        ),
        (
            "icmp6 neighbour solicitation",
            v6(DENIED_V6, IPPROTO_ICMPV6, &icmp(135, &[0; 20])),
            Reason::NotProtected,
        ),
        ("arp request", arp(DENIED_V4, SERVER_V4), Reason::NotIp),
        ("lldp", eth(ETH_P_LLDP, &[], &[0; 32]), Reason::NotIp),
        (
            "802.1Q udp4 11211",
            eth(
                ETH_P_IP,
                &[ETH_P_8021Q],
                &ipv4(
                    DENIED_V4,
                    SERVER_V4,
                    IPPROTO_UDP,
                    &[],
                    NOT_FRAGMENTED,
                    &stats,
                ),
            ),
            Reason::UdpPort,
        ),
        (
            "QinQ udp6 11211",
            eth(
                ETH_P_IPV6,
                &[ETH_P_8021AD, ETH_P_8021Q],
                &ipv6(DENIED_V6, SERVER_V6, &[], IPPROTO_UDP, &stats),
            ),
            Reason::UdpPort,
        ),
        (
            "QinQ tcp4 allowed",
            eth(
                ETH_P_IP,
                &[ETH_P_8021AD, ETH_P_8021Q],
                &ipv4(
                    ALLOWED_V4,
                    SERVER_V4,
                    IPPROTO_TCP,
                    &[],
                    NOT_FRAGMENTED,
                    &syn,
                ),
            ),
            Reason::TcpAllowed,
        ),
        (
            "three VLAN tags",
            eth(
                ETH_P_IP,
                &[ETH_P_8021Q, ETH_P_8021Q, ETH_P_8021Q],
                &ipv4(
                    DENIED_V4,
                    SERVER_V4,
                    IPPROTO_UDP,
                    &[],
                    NOT_FRAGMENTED,
                    &stats,
                ),
            ),
            Reason::VlanLimit,
        ),
        (
            "ipv4 options udp 11211",
            eth(
                ETH_P_IP,
                &[],
                &ipv4(
                    DENIED_V4,
                    SERVER_V4,
                    IPPROTO_UDP,
                    &[1; 40],
                    NOT_FRAGMENTED,
                    &stats,
                ),
            ),
            Reason::UdpPort,
        ),
        (
            "ipv4 options tcp allowed",
            eth(
                ETH_P_IP,
                &[],
                &ipv4(
                    ALLOWED_V4,
                    SERVER_V4,
                    IPPROTO_TCP,
                    &[1, 1, 1, 0],
                    NOT_FRAGMENTED,
                    &syn,
                ),
            ),
            Reason::TcpAllowed,
        ),
        (
            "ipv6 hbh+dstopts udp 11211",
            eth(
                ETH_P_IPV6,
                &[],
                &ipv6(DENIED_V6, SERVER_V6, &hbh_dst, IPPROTO_UDP, &stats),
            ),
            Reason::UdpPort,
        ),
        (
            "ipv6 routing+ah tcp denied",
            eth(
                ETH_P_IPV6,
                &[],
                &ipv6(
                    DENIED_V6,
                    SERVER_V6,
                    &[Ext::Routing, Ext::Auth { words: 2 }],
                    IPPROTO_TCP,
                    &syn,
                ),
            ),
            Reason::TcpNotAllowed,
        ),
        (
            "ipv6 8 ext headers then udp 11211",
            eth(
                ETH_P_IPV6,
                &[],
                &ipv6(
                    DENIED_V6,
                    SERVER_V6,
                    &[Ext::DestOpts; 8],
                    IPPROTO_UDP,
                    &stats,
                ),
            ),
            Reason::UdpPort,
        ),
        (
            "ipv6 9 ext headers",
            eth(
                ETH_P_IPV6,
                &[],
                &ipv6(
                    DENIED_V6,
                    SERVER_V6,
                    &[Ext::DestOpts; 9],
                    IPPROTO_UDP,
                    &stats,
                ),
            ),
            Reason::ExtHeaderLimit,
        ),
        (
            "ipv6 no next header",
            eth(
                ETH_P_IPV6,
                &[],
                &ipv6(DENIED_V6, SERVER_V6, &[Ext::HopByHop], IPPROTO_NONE, &[]),
            ),
            Reason::NotProtected,
        ),
        (
            "ipv4 first fragment udp 11211",
            eth(
                ETH_P_IP,
                &[],
                &ipv4(DENIED_V4, SERVER_V4, IPPROTO_UDP, &[], first_frag, &stats),
            ),
            Reason::UdpPort,
        ),
        (
            "ipv4 later fragment",
            eth(
                ETH_P_IP,
                &[],
                &ipv4(DENIED_V4, SERVER_V4, IPPROTO_UDP, &[], later_frag, &[0; 64]),
            ),
            Reason::LaterFragment,
        ),
        (
            "ipv6 first fragment udp 11211",
            eth(
                ETH_P_IPV6,
                &[],
                &ipv6(
                    DENIED_V6,
                    SERVER_V6,
                    &[Ext::Fragment {
                        offset: 0,
                        more: true,
                    }],
                    IPPROTO_UDP,
                    &stats,
                ),
            ),
            Reason::UdpPort,
        ),
        (
            "ipv6 later fragment",
            eth(
                ETH_P_IPV6,
                &[],
                &ipv6(
                    DENIED_V6,
                    SERVER_V6,
                    &[Ext::Fragment {
                        offset: 185,
                        more: false,
                    }],
                    IPPROTO_UDP,
                    &[0; 64],
                ),
            ),
            Reason::LaterFragment,
        ),
        (
            "udp4 header cut short",
            truncate(v4(DENIED_V4, IPPROTO_UDP, &stats), 14 + 20 + 3),
            Reason::Malformed,
        ),
        (
            "ipv4 header cut short",
            truncate(v4(DENIED_V4, IPPROTO_UDP, &stats), 14 + 19),
            Reason::Malformed,
        ),
        (
            "ipv4 ihl 4",
            patch(v4(DENIED_V4, IPPROTO_UDP, &stats), 14, 0x44),
            Reason::Malformed,
        ),
        (
            "ipv4 total length < header",
            patch(patch(v4(DENIED_V4, IPPROTO_UDP, &stats), 16, 0), 17, 19),
            Reason::Malformed,
        ),
        (
            "ipv4 version 6 in v4 frame",
            patch(v4(DENIED_V4, IPPROTO_UDP, &stats), 14, 0x65),
            Reason::Malformed,
        ),
        (
            "ipv6 header cut short",
            truncate(v6(DENIED_V6, IPPROTO_UDP, &stats), 14 + 39),
            Reason::Malformed,
        ),
        (
            "ipv6 ext header cut short",
            truncate(
                eth(
                    ETH_P_IPV6,
                    &[],
                    &ipv6(DENIED_V6, SERVER_V6, &[Ext::HopByHop], IPPROTO_UDP, &stats),
                ),
                14 + 40 + 6,
            ),
            Reason::Malformed,
        ),
        (
            "vlan tag cut short",
            truncate(eth(ETH_P_IP, &[ETH_P_8021Q], &[]), 16),
            Reason::Malformed,
        ),
    ]
}

fn truncate(mut frame: Vec<u8>, len: usize) -> Vec<u8> {
    frame.truncate(len);
    frame
}

fn patch(mut frame: Vec<u8>, offset: usize, byte: u8) -> Vec<u8> {
    frame[offset] = byte;
    frame
}

#[test]
fn verdict_table_matches_the_oracle_and_the_fixtures() {
    if !privileged("verdict_table_matches_the_oracle_and_the_fixtures") {
        return;
    }
    let policy = policy();
    let harness = Harness::new(&policy);
    let rows = table();
    for (name, frame, want) in &rows {
        let (oracle_reason, _) = oracle::expected(frame, &policy);
        assert_eq!(
            oracle_reason, *want,
            "{name}: the oracle disagrees with the fixture"
        );
        let (action, reason) = harness.verdict(frame);
        assert_eq!(reason, *want, "{name}: kernel reason");
        let want_action = if want.is_drop() { XDP_DROP } else { XDP_PASS };
        assert_eq!(action, want_action, "{name}: kernel action");
    }
    // Every reason the foundation defines is exercised by some row.
    let covered: BTreeSet<u32> = rows.iter().map(|(_, _, r)| *r as u32).collect();
    assert_eq!(covered.len(), Reason::ALL.len(), "rows cover every reason");
}

#[test]
fn drops_are_counted_by_source_with_bytes() {
    if !privileged("drops_are_counted_by_source_with_bytes") {
        return;
    }
    let harness = Harness::new(&policy());
    let frame = v4(DENIED_V4, IPPROTO_UDP, &udp(1, 11211, b"stats\r\n"));
    for _ in 0..7 {
        assert_eq!(harness.run(&frame), XDP_DROP);
    }
    // Passed packets are not counted by source.
    harness.run(&v4(ALLOWED_V4, IPPROTO_TCP, &tcp_syn(1, 11211)));
    let stats = mcfilter::stats::read(harness.maps(), 10).expect("read stats");
    assert_eq!(stats.sources.len(), 1, "{stats:?}");
    let row = &stats.sources[0];
    assert_eq!(row.source, IpAddr::from(DENIED_V4));
    assert_eq!((row.packets, row.bytes), (7, 7 * frame.len() as u64));
    assert_eq!(row.reason, "udp_port");
    assert_eq!(stats.dropped.packets, 7);
    assert_eq!(stats.dropped.bytes, 7 * frame.len() as u64);
    assert_eq!(stats.passed.packets, 1);
}

#[test]
fn dry_run_passes_but_counts_what_it_would_drop() {
    if !privileged("dry_run_passes_but_counts_what_it_would_drop") {
        return;
    }
    let harness = Harness::with_dry_run(&policy(), true);
    let frame = v6(DENIED_V6, IPPROTO_UDP, &udp(1, 11211, b"x"));
    assert_eq!(harness.run(&frame), XDP_PASS);
    assert_eq!(harness.counter(Reason::UdpPort, true).packets, 1);
    assert_eq!(harness.counter(Reason::UdpPort, false).packets, 0);
    let stats = mcfilter::stats::read(harness.maps(), 10).expect("read stats");
    assert_eq!((stats.dropped.packets, stats.would_drop.packets), (0, 1));
    assert!(stats.sources[0].dry_run);
}

/// Structure-aware random frames and byte mutations of the table's frames, judged by kernel and
/// oracle. Seed from MCFILTER_SEED (default fixed), count from MCFILTER_PACKETS.
#[test]
fn generated_frames_match_the_oracle() {
    if !privileged("generated_frames_match_the_oracle") {
        return;
    }
    let seed: u64 = env_or("MCFILTER_SEED", 0x6d63_6669_6c74_6572);
    let count: usize = env_or("MCFILTER_PACKETS", 20_000);
    let policy = policy();
    let harness = Harness::new(&policy);
    let corpus: Vec<Vec<u8>> = table().into_iter().map(|(_, frame, _)| frame).collect();
    let mut rng = Rng::new(seed);
    let mut expected = vec![0u64; Reason::ALL.len()];
    for i in 0..count {
        let frame = if rng.chance(50) {
            random_frame(&mut rng)
        } else {
            let base = rng.pick(&corpus).clone();
            mutate(&mut rng, base)
        };
        if frame.len() < 14 {
            continue; // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header.
        }
        let (want, _) = oracle::expected(&frame, &policy);
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
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A frame assembled from random but well-formed layers.
fn random_frame(rng: &mut Rng) -> Vec<u8> {
    let ports = [11211, 22122, 11212, 80, 53, 0];
    let dport = *rng.pick(&ports);
    let l4proto = *rng.pick(&[IPPROTO_UDP, IPPROTO_TCP, IPPROTO_ICMP, IPPROTO_ICMPV6, 99]);
    let l4 = match l4proto {
        IPPROTO_UDP => udp(rng.below(65536) as u16, dport, &[0; 8]),
        IPPROTO_TCP => tcp_syn(rng.below(65536) as u16, dport),
        _ => icmp(8, &[0; 8]),
    };
    let vlans: Vec<u16> = (0..rng.below(4))
        .map(|_| *rng.pick(&[ETH_P_8021Q, ETH_P_8021AD]))
        .collect();
    if rng.chance(50) {
        let src = *rng.pick(&[ALLOWED_V4, DENIED_V4, [198, 18, 1, 11], [0; 4]]);
        let options = vec![1u8; 4 * rng.below(11)];
        let frag = Frag {
            offset: if rng.chance(20) {
                rng.below(8192) as u16
            } else {
                0
            },
            more: rng.chance(20),
        };
        eth(
            ETH_P_IP,
            &vlans,
            &ipv4(src, SERVER_V4, l4proto, &options, frag, &l4),
        )
    } else {
        let src = *rng.pick(&[ALLOWED_V6, DENIED_V6, MAPPED_ALLOWED]);
        let kinds = [
            Ext::HopByHop,
            Ext::Routing,
            Ext::DestOpts,
            Ext::Auth { words: 1 },
            Ext::Fragment {
                offset: 0,
                more: true,
            },
            Ext::Fragment {
                offset: 7,
                more: false,
            },
        ];
        let exts: Vec<Ext> = (0..rng.below(11)).map(|_| *rng.pick(&kinds)).collect();
        eth(
            ETH_P_IPV6,
            &vlans,
            &ipv6(src, SERVER_V6, &exts, l4proto, &l4),
        )
    }
}

/// Byte-level mutations: flips, truncation, growth.
fn mutate(rng: &mut Rng, mut frame: Vec<u8>) -> Vec<u8> {
    for _ in 0..=rng.below(4) {
        match rng.below(4) {
            0 | 1 if !frame.is_empty() => {
                let i = rng.below(frame.len());
                frame[i] = rng.next_u64() as u8;
            }
            2 if !frame.is_empty() => frame.truncate(rng.below(frame.len() + 1)),
            _ => frame.extend((0..rng.below(16)).map(|_| rng.next_u64() as u8)),
        }
    }
    frame
}

/// `allow replace` applies the difference: while it swaps hundreds of entries, a source on both
/// lists is allowed by every single run of the program.
#[test]
fn replace_never_drops_an_entry_on_both_lists() {
    if !privileged("replace_never_drops_an_entry_on_both_lists") {
        return;
    }
    let common: ipnet::IpNet = "198.18.1.10/32".parse().unwrap();
    let list = |third: u8| -> BTreeSet<ipnet::IpNet> {
        (0..=255u8)
            .map(|i| format!("198.18.{third}.{i}/32").parse().unwrap())
            .chain([common, "2001:db8:1::/48".parse().unwrap()])
            .collect()
    };
    let policy = Policy {
        ports: BTreeSet::from([11211]),
        allow: list(100).into_iter().collect(),
    };
    let harness = Harness::new(&policy);
    let syn = v4(ALLOWED_V4, IPPROTO_TCP, &tcp_syn(40000, 11211));
    let state = mcfilter::pin::StateDir::new(harness.maps_dir());
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
        let mut maps = mcfilter::maps::Maps::open(&state).expect("maps");
        for third in [101, 102, 103, 104] {
            let change = maps.allow.replace(&list(third)).expect("replace");
            assert_eq!((change.added.len(), change.removed.len()), (256, 256));
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        prober.join().unwrap()
    });
    assert!(runs > 0);
    assert_eq!(harness.counter(Reason::TcpNotAllowed, false).packets, 0);
}
