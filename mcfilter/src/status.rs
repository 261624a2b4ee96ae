//! `status`: where the filter is attached and the policy it enforces, read from the pins.

use std::collections::BTreeMap;

use aya::maps::IterableMap;
use aya::programs::{
    ProgramInfo,
    links::{FdLink, PinnedLink},
};
use mcfilter_common::IfaceInfo;

use crate::{
    Error,
    filter::{self, Attachment},
    maps::Maps,
    pin::StateDir,
    sys,
};

/// One attached interface.
#[derive(Debug, serde::Serialize)]
pub struct InterfaceStatus {
    /// The name now (or at attach time, if the interface is gone).
    pub name: String,
    /// The interface's index.
    pub ifindex: u32,
    /// `native` or `skb`; `unknown` for a link whose record an earlier build did not write.
    #[serde(serialize_with = "mode_name")]
    pub mode: Option<Attachment>,
    /// Where its packets begin, which decides the program: `ethernet` (`mcfilter`) or `ip`
    /// (`mcfilter_ip`); `unknown` once the interface is gone.
    pub framing: &'static str,
    /// mcfilter's program's id on it.
    pub program_id: u32,
    /// The build that attached (or last swapped in) its program; `null` when an earlier build
    /// did, which kept no record of it.
    pub build: Option<String>,
    /// `mcfilter run` manages it.
    pub service: bool,
    /// The program mcfilter hands every packet it passes to (`attach --then`), if chained.
    pub next: Option<NextStatus>,
    /// libxdp's dispatcher that runs mcfilter as one of its components (`attach
    /// --multiprog`), while it does.
    pub dispatcher: Option<DispatcherStatus>,
    /// mcfilter's program is the one on the interface (or, `--multiprog`, one of its
    /// dispatcher's components). Always so for a program held by a link; a chained one and a
    /// dispatcher are attached through netlink, which another tool can change.
    pub running: bool,
    /// The interface still exists.
    pub present: bool,
}

/// The program a chained interface hands its passed packets to.
#[derive(Debug, serde::Serialize)]
pub struct NextStatus {
    /// The next program's id.
    pub program_id: u32,
    /// Its name, when it is still loaded and named.
    pub name: Option<String>,
}

/// libxdp's dispatcher running mcfilter as a component.
#[derive(Debug, serde::Serialize)]
pub struct DispatcherStatus {
    /// The dispatcher's program id.
    pub program_id: u32,
    /// Its components, in the order they run (mcfilter's among them).
    pub components: Vec<NextStatus>,
}

/// `mcfilter status`.
#[derive(Debug, serde::Serialize)]
pub struct Status {
    /// The state dir.
    pub state_dir: String,
    /// This binary's build (version + object hash), to compare with each interface's.
    pub build: String,
    /// The interfaces mcfilter is attached to.
    pub interfaces: Vec<InterfaceStatus>,
    /// The protected ports.
    pub ports: Vec<u16>,
    /// Dry-run: drops are counted, not made.
    pub dry_run: bool,
    /// Reflection-victim protection: UDP from a protected source port is dropped.
    pub drop_reflected: bool,
    /// Entries on the allow-list.
    pub allow_entries: usize,
    /// The allow-list's capacity.
    pub allow_capacity: u32,
    /// Sources the per-source map holds.
    pub sources_entries: usize,
    /// The per-source map's capacity.
    pub sources_capacity: u32,
    /// Datagrams whose first fragment was dropped, remembered to drop their later fragments.
    pub fragments_entries: usize,
    /// The fragment cache's capacity.
    pub fragments_capacity: u32,
    /// How long a dropped datagram is remembered, in seconds: the kernel's reassembly timeouts
    /// (IPv4, IPv6) when the last attach read them; `null` for a state made by an older build.
    pub fragments_timeouts_secs: Option<[u32; 2]>,
    /// What the state's maps cost the kernel (see [`crate::memory`]).
    pub kernel_memory: crate::memory::KernelMemory,
    /// Configuration problems worth fixing, one sentence each with the fix.
    pub warnings: Vec<String>,
}

fn mode_name<S: serde::Serializer>(mode: &Option<Attachment>, out: S) -> Result<S::Ok, S::Error> {
    out.serialize_str(filter::show_mode(*mode))
}

/// Where mcfilter is attached, with what policy and what its maps hold; read under the shared lock.
pub fn status(state: &StateDir) -> Result<Status, Error> {
    let (_lock, mut maps) = Maps::open_to_read(state)?;
    let config = maps.config()?;
    let meta = crate::maps::iface_meta(state)?;
    let this = crate::build::this();
    let mut warnings = Vec::new();
    let mut interfaces = Vec::new();
    // An interface is attached while its link is pinned (attach pins it last, detach unpins it
    // first); the records only describe it. A record without a link is what a killed attach or
    // detach left, and the next one removes it.
    let records: BTreeMap<u32, IfaceInfo> = maps.ifaces()?.into_iter().collect();
    for ifindex in state.attached_ifindexes().map_err(Error::Io)? {
        let info = records.get(&ifindex);
        let current = sys::ifname(ifindex);
        let chained = state.program(ifindex).exists();
        let component = state.component(ifindex).exists();
        let program_id = if chained || component {
            let pin = if chained {
                state.program(ifindex)
            } else {
                state.component(ifindex)
            };
            ProgramInfo::from_pin(pin).ok().map(|program| program.id())
        } else {
            PinnedLink::from_pin(state.link(ifindex))
                .ok()
                .and_then(|pinned| FdLink::from(pinned).info().ok())
                .map(|link| link.program_id())
        }
        .or(info.map(|info| info.prog_id))
        .unwrap_or_default();
        let membership = component
            .then(|| filter::membership(ifindex, program_id))
            .flatten();
        let running = if component {
            membership.is_some()
        } else {
            !chained || filter::running(ifindex) == Some(program_id)
        };
        let dispatcher = membership.map(|membership| DispatcherStatus {
            program_id: membership.dispatcher_id,
            components: membership
                .components
                .into_iter()
                .map(|(program_id, name)| NextStatus {
                    program_id,
                    name: Some(name),
                })
                .collect(),
        });
        let framing = current
            .as_deref()
            .and_then(|name| sys::framing(name).ok())
            .map_or("unknown", sys::Framing::name);
        let name = current
            .clone()
            .or_else(|| info.map(|info| sys::name_from_bytes(&info.name)))
            .unwrap_or_else(|| format!("ifindex {ifindex}"));
        let own = meta.get(&ifindex);
        let next = own
            .filter(|meta| chained && meta.next != 0)
            .map(|meta| NextStatus {
                program_id: meta.next,
                name: filter::program_name(meta.next),
            });
        if !running {
            warnings.push(format!(
                "mcfilter's program is no longer on {name} (another tool replaced or removed it), so {name} is not filtered: `mcfilter detach {name}` removes mcfilter's state for it, then attach again"
            ));
        }
        let build = own.map(|meta| meta.build);
        if build != Some(this) {
            warnings.push(format!(
                "{name} runs the program of {}, not this binary's ({}): `mcfilter attach {name} --replace` swaps this build's in with no gap (a restarted `mcfilter run` does it for the interfaces it lists)",
                build.map_or_else(|| "an earlier build".to_owned(), |b| format!("build {}", crate::build::show(b))),
                crate::build::show(this),
            ));
        }
        interfaces.push(InterfaceStatus {
            present: current.is_some(),
            framing,
            name,
            ifindex,
            mode: info.and_then(|info| Attachment::from_code(info.mode)),
            program_id,
            build: build.map(crate::build::show),
            service: own.is_some_and(|meta| meta.service != 0),
            next,
            dispatcher,
            running,
        });
    }
    let ifindexes: Vec<u32> = interfaces.iter().map(|iface| iface.ifindex).collect();
    let kernel_memory = crate::memory::kernel_memory(state, &ifindexes)?;
    warnings.extend(
        ephemeral_port_warnings(
            &config.protected_ports().collect::<Vec<_>>(),
            read_sysctl("net/ipv4/ip_local_port_range").as_deref(),
            read_sysctl("net/ipv4/ip_local_reserved_ports").as_deref(),
        )
        .iter()
        .map(ToString::to_string),
    );
    Ok(Status {
        state_dir: state.path().display().to_string(),
        build: crate::build::show(this),
        interfaces,
        ports: config.protected_ports().collect(),
        dry_run: config.dry_run != 0,
        drop_reflected: config.drop_reflected != 0,
        allow_entries: maps.allow.size()?,
        allow_capacity: maps.allow.capacity(),
        sources_entries: crate::map_ops::count(IterableMap::map(&maps.sources))
            .map_err(Error::Io)?,
        sources_capacity: maps.sources_capacity,
        fragments_entries: maps.fragments()?,
        fragments_capacity: maps.frags_capacity,
        fragments_timeouts_secs: crate::maps::frag_timeouts(state)?,
        kernel_memory,
        warnings,
    })
}

fn read_sysctl(name: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/sys/{name}")).ok()
}

/// A protected port inside the local ephemeral port range, not reserved: a connection this host
/// opens may get it as its source port, and the filter then judges the replies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EphemeralPort {
    /// The ephemeral range's first port (`net.ipv4.ip_local_port_range`).
    pub low: u16,
    /// Its last port.
    pub high: u16,
    /// The protected port inside it.
    pub port: u16,
}

impl EphemeralPort {
    /// What is wrong, in a sentence.
    pub fn finding(&self) -> String {
        let EphemeralPort { low, high, port } = self;
        format!(
            "the local ephemeral port range {low}-{high} includes protected port {port}: a connection this host opens from it would have its replies judged by the filter"
        )
    }

    /// The command that fixes it.
    pub fn fix(&self) -> String {
        format!("`sysctl -w net.ipv4.ip_local_reserved_ports={}`", self.port)
    }
}

impl std::fmt::Display for EphemeralPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}; reserve it with {}", self.finding(), self.fix())
    }
}

/// Protected ports the kernel may pick as a local ephemeral port (and so as the source port of
/// an outgoing connection, whose replies the filter would then judge): those in
/// `ip_local_port_range` and not in `ip_local_reserved_ports`.
pub fn ephemeral_port_warnings(
    ports: &[u16],
    range: Option<&str>,
    reserved: Option<&str>,
) -> Vec<EphemeralPort> {
    let Some((low, high)) = range.and_then(|r| {
        let mut bounds = r.split_whitespace().map(|n| n.parse::<u16>().ok());
        Some((bounds.next()??, bounds.next()??))
    }) else {
        return Vec::new();
    };
    let reserved_port = |port: u16| {
        reserved.unwrap_or_default().trim().split(',').any(|item| {
            let item = item.trim();
            match item.split_once('-') {
                Some((a, b)) => matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if (a..=b).contains(&port)),
                None => item.parse::<u16>() == Ok(port),
            }
        })
    };
    ports
        .iter()
        .filter(|&&port| (low..=high).contains(&port) && !reserved_port(port))
        .map(|&port| EphemeralPort { low, high, port })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::ephemeral_port_warnings;

    #[test]
    fn ephemeral_range_warnings_respect_reserved_ports() {
        let warn =
            |range, reserved| ephemeral_port_warnings(&[11211, 22122], Some(range), reserved);
        assert!(warn("32768\t60999\n", None).is_empty());
        let found = warn("10000 30000", Some(""));
        assert_eq!(found.len(), 2);
        let line = found[0].to_string();
        assert!(
            line.contains("protected port 11211") && line.contains("ip_local_reserved_ports=11211"),
            "{line}"
        );
        assert!(found[0].fix().contains("ip_local_reserved_ports=11211"));
        assert_eq!(warn("10000 30000", Some("11211\n")).len(), 1);
        assert!(warn("10000 30000", Some("11000-11300,22122")).is_empty());
        assert!(ephemeral_port_warnings(&[11211], None, None).is_empty());
    }
}
