//! `status`: where the filter is attached and the policy it enforces, read from the pins.

use aya::programs::links::{FdLink, PinnedLink};

use crate::{Error, filter::Attachment, maps::Maps, pin::StateDir, sys};

/// One attached interface.
#[derive(Debug, serde::Serialize)]
pub struct InterfaceStatus {
    /// The name now (or at attach time, if the interface is gone).
    pub name: String,
    pub ifindex: u32,
    /// `native` or `skb`.
    pub mode: &'static str,
    pub program_id: u32,
    /// The interface still exists.
    pub present: bool,
}

/// `mcfilter status`.
#[derive(Debug, serde::Serialize)]
pub struct Status {
    pub state_dir: String,
    pub interfaces: Vec<InterfaceStatus>,
    pub ports: Vec<u16>,
    pub dry_run: bool,
    pub allow_entries: usize,
    pub allow_capacity: u32,
    pub sources_entries: usize,
    pub sources_capacity: u32,
    /// Datagrams whose first fragment was dropped, remembered to drop their later fragments.
    pub fragments_entries: usize,
    pub fragments_capacity: u32,
}

pub fn status(state: &StateDir) -> Result<Status, Error> {
    let _lock = state.prepare_and_lock()?;
    let maps = Maps::open(state)?;
    let config = maps.config()?;
    let mut interfaces = Vec::new();
    for (ifindex, info) in maps.ifaces()? {
        let current = sys::ifname(ifindex);
        let program_id = PinnedLink::from_pin(state.link(ifindex))
            .ok()
            .and_then(|pinned| FdLink::from(pinned).info().ok())
            .map_or(info.prog_id, |link| link.program_id());
        interfaces.push(InterfaceStatus {
            present: current.is_some(),
            name: current.unwrap_or_else(|| sys::name_from_bytes(&info.name)),
            ifindex,
            mode: Attachment::from_code(info.mode).map_or("unknown", Attachment::name),
            program_id,
        });
    }
    Ok(Status {
        state_dir: state.path().display().to_string(),
        interfaces,
        ports: config.protected_ports().collect(),
        dry_run: config.dry_run != 0,
        allow_entries: maps.allow.list()?.len(),
        allow_capacity: maps.allow.capacity(),
        sources_entries: maps.sources.keys().count(),
        sources_capacity: maps.sources_capacity,
        fragments_entries: maps.frags.keys().count(),
        fragments_capacity: maps.frags_capacity,
    })
}
