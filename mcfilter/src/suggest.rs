//! `allow suggest`: allow-list entries from the sources whose TCP to a protected port was (or, in
//! dry-run, would have been) dropped. Whoever knocks while the filter only counts is a source
//! here, an attacker's spoofed SYNs first among them, so a suggestion that looks like a knock
//! carries a [`Caution`], and `--merge` keeps the current list instead of replacing it.

use std::{collections::BTreeSet, fmt, net::IpAddr};

use ipnet::IpNet;
use mcfilter_common::Reason;

use crate::stats::SourceRow;

/// Fewer packets than this from a source look like a knock: a client whose SYN goes
/// unanswered retries it (Linux: after 1 s and 3 s) before giving up.
pub const FEW_PACKETS: u64 = 3;
/// A source whose packets average this many bytes or fewer sent nothing but SYNs (an IPv6 SYN
/// with 40 bytes of options behind two VLAN tags is 102 bytes): it never sent data.
pub const SYN_SIZED_BYTES: u64 = 102;

/// Why a suggestion should be read before it is allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caution {
    /// Fewer than [`FEW_PACKETS`] packets: a knock, maybe spoofed.
    FewPackets,
    /// Only SYN-sized packets: it never sent data.
    SynSized,
}

impl fmt::Display for Caution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Caution::FewPackets => "fewer than 3 packets: a knock, maybe spoofed",
            Caution::SynSized => "only SYN-sized packets: it never sent data",
        })
    }
}

/// One suggested entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suggestion {
    /// The CIDR to allow (the source as a /32 or /128).
    pub net: IpNet,
    /// Dropped packets from it.
    pub packets: u64,
    /// Of those, the ones dry-run only counted.
    pub would_drop_packets: u64,
    /// Why to read it before allowing it, if there is a reason.
    pub caution: Option<Caution>,
}

/// The `top` busiest sources dropped (or counted) as `tcp_not_allowed`, as host entries, leaving
/// out what `current` already allows. `rows` come busiest first.
pub fn suggestions(rows: &[SourceRow], current: &BTreeSet<IpNet>, top: usize) -> Vec<Suggestion> {
    let allowed = |addr: IpAddr| current.iter().any(|net| net.contains(&addr));
    rows.iter()
        .filter(|row| row.reason == Some(Reason::TcpNotAllowed) && !allowed(row.source))
        .take(top)
        .map(|row| Suggestion {
            net: IpNet::from(row.source),
            packets: row.packets,
            would_drop_packets: row.would_drop_packets,
            caution: caution(row),
        })
        .collect()
}

fn caution(row: &SourceRow) -> Option<Caution> {
    if row.packets < FEW_PACKETS {
        Some(Caution::FewPackets)
    } else if row.bytes / row.packets.max(1) <= SYN_SIZED_BYTES {
        Some(Caution::SynSized)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(source: &str, packets: u64, bytes: u64, reason: Reason) -> SourceRow {
        SourceRow {
            source: source.parse().unwrap(),
            packets,
            bytes,
            would_drop_packets: packets,
            reason: Some(reason),
            dry_run: true,
            last_seen_ms_ago: 0,
        }
    }

    #[test]
    fn knocks_are_marked_and_listed_sources_left_out() {
        let rows = [
            row("198.18.3.3", 30, 30 * 74, Reason::TcpNotAllowed),
            row("198.18.3.4", 500, 500 * 900, Reason::TcpNotAllowed),
            row("198.18.3.5", 1, 74, Reason::TcpNotAllowed),
            row("198.18.3.6", 90, 90 * 60, Reason::UdpPort),
            row("198.18.4.1", 40, 40 * 600, Reason::TcpNotAllowed),
        ];
        let current = BTreeSet::from(["198.18.4.0/24".parse().unwrap()]);
        let got: Vec<(String, Option<Caution>)> = suggestions(&rows, &current, 10)
            .into_iter()
            .map(|s| (s.net.to_string(), s.caution))
            .collect();
        assert_eq!(
            got,
            [
                ("198.18.3.3/32".to_owned(), Some(Caution::SynSized)),
                ("198.18.3.4/32".to_owned(), None),
                ("198.18.3.5/32".to_owned(), Some(Caution::FewPackets)),
            ]
        );
        assert_eq!(suggestions(&rows, &current, 1).len(), 1);
    }
}
