//! `mcfilter audit`: the exposure check the 2018 advisories asked operators to do by hand
//! (`netstat -plunt`, bind to a private address, `-U 0`, allow known clients), done for them.
//! It reads the sockets of the calling network namespace (procfs), the processes that own them,
//! the interfaces' addresses and the filter's state, and reports findings with a severity and
//! a one-line fix. The exit status is the worst severity, so it can gate a deploy.

use std::collections::BTreeSet;

use ipnet::IpNet;
use serde::Serialize;

pub use crate::exposure::{Listener, Protocol, Scope, scope};
use crate::{
    DEFAULT_PORT, Error,
    exposure::{self, listeners, unfiltered_carriers},
    maps::Maps,
    pin::StateDir,
    status, sys,
};

/// How bad a finding is. The order is the ranking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; nothing to fix (a loopback listener, UDP that is dropped).
    Info,
    /// Nothing is exposed, but something does not work as meant (an empty allow-list).
    Low,
    /// Protection is partial: dry-run, a protected port in the ephemeral range, a listener
    /// reachable without the filter from private networks.
    Medium,
    /// A protected port is open to the world: a public listener without the filter, a filter
    /// another tool removed, an allow-list that lets nearly everyone in.
    High,
}

impl Severity {
    /// The name the output gives it (JSON: lowercase; text: uppercase).
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }

    /// The exit status for a worst finding of this severity: 0, 3 (low, medium), 4 (high).
    pub fn exit_code(worst: Option<Severity>) -> u8 {
        match worst {
            None | Some(Severity::Info) => 0,
            Some(Severity::Low | Severity::Medium) => 3,
            Some(Severity::High) => 4,
        }
    }
}

/// One finding, with the fix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How much it matters.
    pub severity: Severity,
    /// The protected port it concerns, if one.
    pub port: Option<u16>,
    /// What was found, in one sentence.
    pub finding: String,
    /// What to do about it.
    pub fix: String,
}

/// `mcfilter audit`.
#[derive(Clone, Debug, Serialize)]
pub struct Audit {
    /// The protected ports.
    pub ports: Vec<u16>,
    /// The interfaces the filter runs on.
    pub filtered_interfaces: Vec<String>,
    /// The sockets listening on a protected port.
    pub listeners: Vec<Listener>,
    /// What the audit found, the worst first.
    pub findings: Vec<Finding>,
    /// The worst finding's severity (`None`: nothing found).
    pub worst: Option<Severity>,
}

/// Whether an allow-list entry admits a large part of the internet.
pub fn is_broad(net: &IpNet) -> bool {
    match net {
        IpNet::V4(v4) => v4.prefix_len() < 8,
        IpNet::V6(v6) => v6.prefix_len() < 16,
    }
}

/// What the audit knows of the filter.
struct FilterState {
    ports: BTreeSet<u16>,
    interfaces: BTreeSet<String>,
    /// Interfaces mcfilter chained on whose program another tool has replaced since.
    broken_chains: Vec<String>,
    allow: BTreeSet<IpNet>,
    dry_run: bool,
    attached: bool,
}

fn filter_state(state: &StateDir) -> Result<FilterState, Error> {
    match status::status(state) {
        Ok(status) => {
            let allow = {
                let (_lock, maps) = Maps::open_to_read(state)?;
                maps.allow.list()?
            };
            Ok(FilterState {
                ports: status.ports.iter().copied().collect(),
                interfaces: status
                    .interfaces
                    .iter()
                    .filter(|i| i.present && i.running)
                    .map(|i| i.name.clone())
                    .collect(),
                broken_chains: status
                    .interfaces
                    .iter()
                    .filter(|i| i.present && !i.running)
                    .map(|i| i.name.clone())
                    .collect(),
                allow,
                dry_run: status.dry_run,
                attached: true,
            })
        }
        Err(Error::NotAttached { .. }) => Ok(FilterState {
            ports: BTreeSet::from([DEFAULT_PORT]),
            interfaces: BTreeSet::new(),
            broken_chains: Vec::new(),
            allow: BTreeSet::new(),
            dry_run: false,
            attached: false,
        }),
        Err(err) => Err(err),
    }
}

/// Runs the audit for the filter in `state` and the calling network namespace.
pub fn audit(state: &StateDir) -> Result<Audit, Error> {
    let filter = filter_state(state)?;
    let mut found: Vec<Listener> = listeners(&filter.ports)?
        .into_iter()
        .map(|(l, _)| l)
        .collect();
    found.sort_by(|a, b| {
        (a.address.port(), a.protocol, a.address).cmp(&(b.address.port(), b.protocol, b.address))
    });
    found.dedup();
    let addresses = sys::interface_addresses()?;
    let mut findings = Vec::new();

    for listener in &found {
        let port = listener.address.port();
        let who = if listener.processes.is_empty() {
            "a process".to_owned()
        } else {
            listener.processes.join(", ")
        };
        let at = format!("{} {}", listener.protocol.upper(), listener.address);
        if listener.scope == Scope::Loopback {
            findings.push(Finding {
                severity: Severity::Info,
                port: Some(port),
                finding: format!("{who} listens on {at}: loopback only"),
                fix: "nothing to do".into(),
            });
            continue;
        }
        let unfiltered = unfiltered_carriers(listener, &addresses, &filter.interfaces);
        let exposed_severity = match listener.scope {
            Scope::Public | Scope::Any => Severity::High,
            _ => Severity::Medium,
        };
        match (listener.protocol, unfiltered.is_empty()) {
            (Protocol::Udp, false) => findings.push(Finding {
                severity: exposed_severity,
                port: Some(port),
                finding: format!(
                    "{who} listens on {at}, reachable without mcfilter on {}: an amplification reflector",
                    unfiltered.join(", ")
                ),
                fix: exposure::fix(
                    &unfiltered[0],
                    &format!("run memcached with -U 0, or `mcfilter attach {}`", unfiltered[0]),
                ),
            }),
            (Protocol::Udp, true) => findings.push(Finding {
                severity: Severity::Info,
                port: Some(port),
                finding: format!("{who} listens on {at}; mcfilter drops UDP to it on every interface that reaches it"),
                fix: "run memcached with -U 0 anyway: UDP is not needed".into(),
            }),
            (_, false) => findings.push(Finding {
                severity: exposed_severity,
                port: Some(port),
                finding: format!(
                    "{who} listens on {at}, open to any client on {}",
                    unfiltered.join(", ")
                ),
                fix: exposure::fix(
                    &unfiltered[0],
                    &format!(
                        "bind memcached to a private address (-l), or `mcfilter attach {} --allow CLIENTS`",
                        unfiltered[0]
                    ),
                ),
            }),
            (_, true) => {}
        }
    }

    for iface in &filter.broken_chains {
        findings.push(Finding {
            severity: Severity::High,
            port: None,
            finding: format!(
                "mcfilter's program is no longer on {iface} (another tool replaced or removed it): {iface} is not filtered"
            ),
            fix: format!("`mcfilter detach {iface}`, then `mcfilter attach {iface} --then existing`"),
        });
    }

    if filter.attached {
        let broad: Vec<String> = filter
            .allow
            .iter()
            .filter(|n| is_broad(n))
            .map(ToString::to_string)
            .collect();
        if !broad.is_empty() {
            findings.push(Finding {
                severity: Severity::High,
                port: None,
                finding: format!(
                    "the allow-list contains {}, which lets nearly every source in",
                    broad.join(", ")
                ),
                fix: format!(
                    "`mcfilter allow del {}` and allow your clients' prefixes instead",
                    broad.join(" ")
                ),
            });
        }
        if filter.allow.is_empty()
            && found
                .iter()
                .any(|l| l.protocol == Protocol::Tcp && l.scope != Scope::Loopback)
        {
            findings.push(Finding {
                severity: Severity::Low,
                port: None,
                finding: "the allow-list is empty: no client can reach the protected ports over TCP".into(),
                fix: "`mcfilter allow add CLIENTS` (or `mcfilter allow suggest` from dry-run traffic)".into(),
            });
        }
        if filter.dry_run {
            findings.push(Finding {
                severity: Severity::Medium,
                port: None,
                finding: "mcfilter is in dry-run: it counts what it would drop, and drops nothing".into(),
                fix: "`mcfilter policy --dry-run off` (or `dry_run = false` in the config) once the allow-list is right".into(),
            });
        }
    }
    let ports: Vec<u16> = filter.ports.iter().copied().collect();
    for warning in status::ephemeral_port_warnings(
        &ports,
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .as_deref(),
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_reserved_ports")
            .ok()
            .as_deref(),
    ) {
        findings.push(Finding {
            severity: Severity::Medium,
            port: None,
            finding: warning.finding(),
            fix: format!("reserve it with {}", warning.fix()),
        });
    }
    for port in &ports {
        if !found.iter().any(|l| l.address.port() == *port) {
            findings.push(Finding {
                severity: Severity::Info,
                port: Some(*port),
                finding: format!("nothing listens on port {port}"),
                fix: "nothing to do".into(),
            });
        }
    }
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    let worst = findings.iter().map(|f| f.severity).max();
    Ok(Audit {
        ports,
        filtered_interfaces: filter.interfaces.into_iter().collect(),
        listeners: found,
        findings,
        worst,
    })
}

#[cfg(test)]
mod tests {
    /// The text output's label and the JSON's name are one.
    #[test]
    fn a_severity_has_one_name() {
        use super::Severity;
        for severity in [
            Severity::Info,
            Severity::Low,
            Severity::Medium,
            Severity::High,
        ] {
            assert_eq!(serde_json::to_value(severity).unwrap(), severity.name());
        }
    }

    use super::*;

    #[test]
    fn scopes_and_broad_prefixes() {
        let s = |a: &str| scope(a.parse().unwrap());
        assert_eq!(s("0.0.0.0"), Scope::Any);
        assert_eq!(s("::"), Scope::Any);
        assert_eq!(s("127.0.0.1"), Scope::Loopback);
        assert_eq!(s("10.1.2.3"), Scope::Private);
        assert_eq!(s("198.18.0.1"), Scope::Private);
        assert_eq!(s("fd00::1"), Scope::Private);
        assert_eq!(s("8.8.8.8"), Scope::Public);
        assert_eq!(s("2001:4860::1"), Scope::Public);
        assert!(is_broad(&"0.0.0.0/0".parse().unwrap()));
        assert!(is_broad(&"::/0".parse().unwrap()));
        assert!(!is_broad(&"198.18.0.0/15".parse().unwrap()));
        assert_eq!(Severity::exit_code(None), 0);
        assert_eq!(Severity::exit_code(Some(Severity::Medium)), 3);
        assert_eq!(Severity::exit_code(Some(Severity::High)), 4);
    }
}
