//! Where a protected port can be reached: the sockets bound to the protected ports (procfs),
//! the processes that own them, and the interfaces that carry their addresses without the
//! filter, which may be interfaces mcfilter cannot filter (their link type). `audit` turns this
//! into findings with a severity; `status` and `attach` warn with it.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
};

use serde::Serialize;

use crate::{Error, sys};

/// Where a socket's address can be reached from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Reachable only from this host.
    Loopback,
    /// Reachable from private networks: RFC 1918, link-local, 198.18.0.0/15, ULA.
    Private,
    /// Reachable from anywhere: a public address.
    Public,
    /// The wildcard address: every interface.
    Any,
}

impl Scope {
    /// The scope as the output names it (as in JSON).
    pub fn name(self) -> &'static str {
        match self {
            Scope::Loopback => "loopback",
            Scope::Private => "private",
            Scope::Public => "public",
            Scope::Any => "any",
        }
    }
}

/// A listening socket's transport protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// A TCP socket in LISTEN.
    Tcp,
    /// A bound UDP socket not connected to a peer (it receives from anyone).
    Udp,
}

impl Protocol {
    /// `tcp` or `udp`, as output names it (as in JSON).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    /// `TCP` or `UDP`, as a sentence names it.
    pub fn upper(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

/// A socket bound to a protected port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Listener {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The address and port it listens on.
    pub address: SocketAddr,
    /// Who can reach it.
    pub scope: Scope,
    /// `name[pid]` of the owning processes (empty if unknown).
    pub processes: Vec<String>,
}

/// The scope of an address.
pub fn scope(addr: IpAddr) -> Scope {
    if addr.is_unspecified() {
        return Scope::Any;
    }
    if addr.is_loopback() {
        return Scope::Loopback;
    }
    let private = match addr {
        IpAddr::V4(v4) => v4.is_private() || v4.is_link_local() || is_benchmarking(v4),
        // Unique local (fc00::/7) and link-local (fe80::/10).
        IpAddr::V6(v6) => {
            (v6.segments()[0] & 0xfe00) == 0xfc00 || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    };
    if private {
        Scope::Private
    } else {
        Scope::Public
    }
}

/// 198.18.0.0/15 (RFC 2544): not routed on the internet.
fn is_benchmarking(v4: std::net::Ipv4Addr) -> bool {
    let [a, b, ..] = v4.octets();
    a == 198 && (b & 0xfe) == 18
}

/// Sockets bound to `ports`, with their owners.
pub fn listeners(ports: &BTreeSet<u16>) -> Result<Vec<(Listener, u64)>, Error> {
    let io = |err: procfs::ProcError| Error::Io(std::io::Error::other(err.to_string()));
    let mut found = Vec::new();
    let tcp = procfs::net::tcp()
        .map_err(io)?
        .into_iter()
        .chain(procfs::net::tcp6().map_err(io)?);
    for entry in tcp {
        if entry.state == procfs::net::TcpState::Listen
            && ports.contains(&entry.local_address.port())
        {
            found.push((Protocol::Tcp, entry.local_address, entry.inode));
        }
    }
    let udp = procfs::net::udp()
        .map_err(io)?
        .into_iter()
        .chain(procfs::net::udp6().map_err(io)?);
    for entry in udp {
        // A bound UDP socket that is not connected to a peer receives from anyone.
        if ports.contains(&entry.local_address.port()) && entry.remote_address.port() == 0 {
            found.push((Protocol::Udp, entry.local_address, entry.inode));
        }
    }
    let owners = socket_owners();
    Ok(found
        .into_iter()
        .map(|(protocol, address, inode)| {
            let listener = Listener {
                protocol,
                address,
                scope: scope(address.ip()),
                processes: owners.get(&inode).cloned().unwrap_or_default(),
            };
            (listener, inode)
        })
        .collect())
}

/// Socket inode -> `name[pid]` of the processes holding it (what this process may read).
fn socket_owners() -> BTreeMap<u64, Vec<String>> {
    let mut owners: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let Ok(processes) = procfs::process::all_processes() else {
        return owners;
    };
    for process in processes.flatten() {
        let Ok(fds) = process.fd() else { continue };
        let name = process.stat().map(|s| s.comm).unwrap_or_default();
        for fd in fds.flatten() {
            if let procfs::process::FDTarget::Socket(inode) = fd.target {
                let owner = format!("{name}[{}]", process.pid);
                let list = owners.entry(inode).or_default();
                if !list.contains(&owner) {
                    list.push(owner);
                }
            }
        }
    }
    owners
}

/// The interfaces (not loopback) that carry `listener`'s address and are not in `filtered`.
/// A wildcard IPv6 socket is dual-stack: it is reached through every address.
pub fn unfiltered_carriers(
    listener: &Listener,
    addresses: &[(String, IpAddr)],
    filtered: &BTreeSet<String>,
) -> Vec<String> {
    let carries = |addr: &IpAddr| match listener.scope {
        Scope::Any => listener.address.is_ipv6() || addr.is_ipv4(),
        _ => *addr == listener.address.ip(),
    };
    let carriers: BTreeSet<String> = addresses
        .iter()
        .filter(|(_, addr)| !addr.is_loopback() && carries(addr))
        .map(|(name, _)| name.clone())
        .collect();
    carriers.difference(filtered).cloned().collect()
}

/// The fix for a listener reachable through `unfiltered`: attach there, or, when mcfilter
/// cannot filter that link type, keep memcached's address off it.
pub fn fix(unfiltered: &str, attach: &str) -> String {
    match sys::framing(unfiltered) {
        Ok(framing @ sys::Framing::Unfiltered(_)) => format!(
            "bind memcached to an address {unfiltered} does not carry (-l ADDR): its link type {} is one mcfilter cannot filter",
            framing.name()
        ),
        _ => attach.to_owned(),
    }
}

/// One warning per protected listener that an interface without the filter delivers to, for
/// `status` and `attach`.
pub fn warnings(ports: &BTreeSet<u16>, filtered: &BTreeSet<String>) -> Result<Vec<String>, Error> {
    let addresses = sys::interface_addresses()?;
    let mut warnings: Vec<String> = listeners(ports)?
        .into_iter()
        .map(|(listener, _)| listener)
        .filter(|listener| listener.scope != Scope::Loopback)
        .filter_map(|listener| {
            let unfiltered = unfiltered_carriers(&listener, &addresses, filtered);
            let first = unfiltered.first()?;
            let at = format!("{} {}", listener.protocol.upper(), listener.address);
            let fix = fix(first, &format!("`mcfilter attach {first}`"));
            Some(format!(
                "{at} is reachable without the filter through {}; {fix}",
                unfiltered.join(", ")
            ))
        })
        .collect();
    warnings.sort();
    warnings.dedup();
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::{Protocol, Scope};

    #[test]
    fn a_scope_has_one_name() {
        for scope in [Scope::Loopback, Scope::Private, Scope::Public, Scope::Any] {
            assert_eq!(serde_json::to_value(scope).unwrap(), scope.name());
        }
    }

    #[test]
    fn a_protocol_has_one_name() {
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            assert_eq!(serde_json::to_value(protocol).unwrap(), protocol.name());
            assert_eq!(protocol.upper(), protocol.name().to_uppercase());
        }
    }
}
