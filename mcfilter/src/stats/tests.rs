//! The arithmetic of `stats`: totals, rates, folding, ranking.

use super::*;

fn counter(packets: u64, bytes: u64) -> Counter {
    Counter { packets, bytes }
}

#[test]
fn totals_split_drops_passes_and_dry_run() {
    let mut slots = vec![Counter::default(); mcfilter_common::STATS_SLOTS as usize];
    slots[stats_slot(Reason::UdpPort, false) as usize] = counter(3, 300);
    slots[stats_slot(Reason::NotProtected, false) as usize] = counter(10, 1000);
    slots[stats_slot(Reason::TcpNotAllowed, true) as usize] = counter(2, 120);
    slots[stats_slot(Reason::TcpAllowed, true) as usize] = counter(1, 60);
    slots[SLOT_SOURCE_INSERT_FAILED as usize] = counter(4, 400);
    let stats = totals(&slots);
    assert_eq!(
        stats.dropped,
        Total {
            packets: 3,
            bytes: 300
        }
    );
    assert_eq!(
        stats.passed,
        Total {
            packets: 13,
            bytes: 1180
        }
    );
    assert_eq!(
        stats.would_drop,
        Total {
            packets: 2,
            bytes: 120
        }
    );
    assert_eq!(stats.reasons[&Reason::UdpPort], 3);
    assert_eq!(stats.reasons[&Reason::TcpNotAllowed], 2);
    assert_eq!(stats.reasons[&Reason::TcpAllowed], 1);
    assert_eq!(stats.reasons.len(), Reason::ALL.len());
    assert_eq!(stats.sources_not_recorded, 4);
}

#[test]
fn rates_come_from_deltas() {
    let mut slots = vec![Counter::default(); mcfilter_common::STATS_SLOTS as usize];
    slots[stats_slot(Reason::UdpPort, false) as usize] = counter(10, 1000);
    let before = totals(&slots);
    slots[stats_slot(Reason::UdpPort, false) as usize] = counter(30, 3000);
    let after = totals(&slots);
    let r = rates(&before, &after, 2.0);
    assert_eq!(
        r.dropped,
        Rate {
            pps: 10.0,
            bps: 8000.0
        }
    );
    assert_eq!(
        r.reasons[&Reason::UdpPort],
        Rate {
            pps: 10.0,
            bps: 8000.0
        }
    );
    assert_eq!(r.reasons[&Reason::TcpAllowed], Rate::default());
}

#[test]
fn top_n_keeps_the_busiest_sorted() {
    let row = |last: u8, packets: u64| SourceRow {
        source: IpAddr::from([198, 18, 0, last]),
        packets,
        bytes: 0,
        would_drop_packets: 0,
        reason: Some(Reason::UdpPort),
        dry_run: false,
        last_seen_ms_ago: 0,
    };
    let mut top = TopN::new(3);
    for (last, packets) in [(1, 5), (2, 50), (3, 7), (4, 50), (5, 1), (6, 9)] {
        top.push(row(last, packets));
    }
    let kept: Vec<(IpAddr, u64)> = top
        .into_sorted()
        .iter()
        .map(|r| (r.source, r.packets))
        .collect();
    let want = [(2, 50), (4, 50), (6, 9)].map(|(l, p)| (IpAddr::from([198, 18, 0, l]), p));
    assert_eq!(kept, want);
    let mut none = TopN::new(0);
    none.push(row(1, 1));
    assert!(none.into_sorted().is_empty());
}

#[test]
fn sources_fold_over_cpus_and_keep_the_latest_reason() {
    let key = IpKey::v4([198, 18, 2, 66]);
    let cpu0 = SourceStats {
        packets: 2,
        bytes: 200,
        last_seen_ns: 5_000_000,
        dry_run_packets: 2,
        last_reason: Reason::UdpPort as u32,
        last_dry_run: 1,
    };
    let cpu1 = SourceStats {
        packets: 1,
        bytes: 60,
        last_seen_ns: 9_000_000,
        dry_run_packets: 0,
        last_reason: Reason::TcpNotAllowed as u32,
        last_dry_run: 0,
    };
    let row = fold_source(&key, &[cpu0, SourceStats::default(), cpu1], 10_000_000);
    assert_eq!(row.source, "198.18.2.66".parse::<IpAddr>().unwrap());
    assert_eq!(
        (row.packets, row.bytes, row.would_drop_packets),
        (3, 260, 2)
    );
    assert_eq!(row.reason, Some(Reason::TcpNotAllowed));
    assert_eq!(row.last_seen_ms_ago, 1);
    let v6 = IpKey::v6("2001:db8::66".parse::<Ipv6Addr>().unwrap().octets());
    assert_eq!(source_addr(&v6).to_string(), "2001:db8::66");
}
