//! The state dir: where the pinned maps and links live, the lock that serialises commands, and
//! cleanup. Layout (all bpffs pins):
//!
//! ```text
//! <state-dir>/mcf_*            the maps the program pins by name (`map_pins`): policy, allow-list
//!                              and its index, counters, sources, fragments, interface records
//! <state-dir>/mcf_logs         the events ring every program of the state shares
//! <state-dir>/link_<ifindex>   one XDP link per interface
//! <state-dir>/if_stats_<ifindex>                 each interface's own counters
//! <state-dir>/prog_<ifindex>, next_<ifindex>     a chained interface's program and its next one
//! <state-dir>/component_<ifindex>                its program as a component of libxdp's
//!                                                dispatcher (libxdp's pins, in BPFFS/xdp/, link it)
//! <state-dir>_lock/            the lock (a directory: bpffs holds no files)
//! ```
//!
//! The CLI holds no state of its own: every command finds everything here.
//!
//! Whoever can change the state dir can switch the filter off (unpinning a link detaches it), so
//! every command first checks that only root (or the user mcfilter runs as, for the
//! capability-only service) can: the state dir and each directory between it and the bpffs
//! mount are refused if they are symbolic links, owned by another user, or writable by group or
//! others (the mount itself may be world-writable if it is sticky, as /tmp). bpffs is mounted
//! 0700 when mcfilter mounts it. The lock is a directory only root can open, so no other user
//! can hold it, and it is waited for [`LOCK_WAIT`] at the most.

use std::{
    fs, io,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use mcfilter_common::map_names;

use crate::Error;

mod lock;

pub use lock::{LOCK_WAIT, StateLock};

/// The default state dir.
pub const DEFAULT_STATE_DIR: &str = "/sys/fs/bpf/mcfilter";
/// Where bpffs is conventionally mounted; mounted on demand.
const BPFFS_ROOT: &str = "/sys/fs/bpf";
/// `statfs.f_type` of a bpf filesystem.
const BPF_FS_MAGIC: i64 = 0xcafe4a11;
const LINK_PREFIX: &str = "link_";
/// A chained interface's program (attached through netlink, which holds no link to pin).
const PROGRAM_PREFIX: &str = "prog_";
/// An interface's program when it runs as a component of libxdp's dispatcher (`attach
/// --multiprog`): an extension program, which libxdp's own pins link into the dispatcher.
const COMPONENT_PREFIX: &str = "component_";
/// A chained interface's next program, in a one-slot program array.
const NEXT_PREFIX: &str = "next_";
/// Each interface's own counters (`mcf_if_stats` of its program), pinned at attach.
const IFACE_STATS_PREFIX: &str = "if_stats_";
/// The ring buffer of the programs' events (aya-log's `AYA_LOGS`), one for every program of
/// the state, pinned at attach.
const LOG_RING: &str = "mcf_logs";
/// Every map pinned in the state dir: the maps this build's program pins by name, read from
/// its object once, so the list and the program cannot disagree. Sorted by name.
pub fn map_pins() -> &'static [&'static str] {
    static PINS: OnceLock<Vec<&'static str>> = OnceLock::new();
    PINS.get_or_init(|| {
        // The object is this binary's own, built with it: it parses, or nothing would work.
        let object = aya_obj::Object::parse(crate::EBPF_OBJECT).expect("this build's object");
        let mut names: Vec<&'static str> = object
            .maps
            .iter()
            .filter(|(_, map)| map.pinning() == aya_obj::maps::PinningType::ByName)
            .map(|(name, _)| &*Box::leak(name.clone().into_boxed_str()))
            .collect();
        names.sort_unstable();
        names
    })
}

/// A state dir on bpffs.
#[derive(Clone, Debug)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// The state dir at `dir` (nothing is created until an attach).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StateDir { dir: dir.into() }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The pin of map `name`.
    pub fn map(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The pin of the XDP link on interface `ifindex`.
    pub fn link(&self, ifindex: u32) -> PathBuf {
        self.dir.join(format!("{LINK_PREFIX}{ifindex}"))
    }

    /// The pin of the program on interface `ifindex` when it chains to another (`attach
    /// --then`): netlink attached it, and it holds no link.
    pub fn program(&self, ifindex: u32) -> PathBuf {
        self.dir.join(format!("{PROGRAM_PREFIX}{ifindex}"))
    }

    /// The pin of the program on interface `ifindex` when it runs as a component of libxdp's
    /// dispatcher (`attach --multiprog`): libxdp's pins hold its link.
    pub fn component(&self, ifindex: u32) -> PathBuf {
        self.dir.join(format!("{COMPONENT_PREFIX}{ifindex}"))
    }

    /// The pin of the program array that holds a chained interface's next program.
    pub fn next(&self, ifindex: u32) -> PathBuf {
        self.dir.join(format!("{NEXT_PREFIX}{ifindex}"))
    }

    /// Whether interface `ifindex` is attached here: its link is pinned, or (chained) its
    /// program, or (a dispatcher's component) its extension program.
    pub fn holds(&self, ifindex: u32) -> bool {
        self.link(ifindex).exists()
            || self.program(ifindex).exists()
            || self.component(ifindex).exists()
    }

    /// The pin of interface `ifindex`'s own counters. Pinned, they can be read without looking
    /// the program up by id (which needs CAP_SYS_ADMIN), and they outlive `attach --replace`.
    pub fn iface_stats(&self, ifindex: u32) -> PathBuf {
        self.dir.join(format!("{IFACE_STATS_PREFIX}{ifindex}"))
    }

    /// The pin of the ring buffer every program of this state logs its events into.
    pub fn log_ring(&self) -> PathBuf {
        self.dir.join(LOG_RING)
    }

    /// Whether a filter's state (its maps) is here.
    pub fn exists(&self) -> bool {
        self.map(map_names::CONFIG).exists()
    }

    /// Whether the filter is attached here: a state with at least one interface attached.
    pub fn attached(&self) -> io::Result<bool> {
        Ok(self.exists() && !self.attached_ifindexes()?.is_empty())
    }

    /// The ifindexes attached here: those with a link pinned, and those whose chained program
    /// or dispatcher component is.
    pub fn attached_ifindexes(&self) -> io::Result<Vec<u32>> {
        let mut indexes = self.ifindexes_pinned_as(LINK_PREFIX)?;
        indexes.extend(self.ifindexes_pinned_as(PROGRAM_PREFIX)?);
        indexes.extend(self.ifindexes_pinned_as(COMPONENT_PREFIX)?);
        indexes.sort_unstable();
        indexes.dedup();
        Ok(indexes)
    }

    /// The ifindexes with a next program's array pinned here.
    pub fn chained_ifindexes(&self) -> io::Result<Vec<u32>> {
        self.ifindexes_pinned_as(NEXT_PREFIX)
    }

    /// The ifindexes that have counters pinned here.
    pub fn counted_ifindexes(&self) -> io::Result<Vec<u32>> {
        self.ifindexes_pinned_as(IFACE_STATS_PREFIX)
    }

    /// The ifindexes in the names of the pins that start with `prefix`.
    fn ifindexes_pinned_as(&self, prefix: &str) -> io::Result<Vec<u32>> {
        let mut indexes = Vec::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(indexes),
            Err(err) => return Err(err),
        };
        for entry in entries {
            let name = entry?.file_name();
            if let Some(index) = name
                .to_str()
                .and_then(|n| n.strip_prefix(prefix))
                .and_then(|n| n.parse().ok())
            {
                indexes.push(index);
            }
        }
        indexes.sort_unstable();
        Ok(indexes)
    }
}

impl StateDir {
    /// Creates the state dir, readable by root only (0700).
    pub fn create(&self) -> Result<(), Error> {
        let err = |err| Error::StateDir {
            path: self.dir.clone(),
            err,
        };
        match fs::create_dir(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(err(e)),
        }
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700)).map_err(err)
    }

    /// Removes every map pin and the state dir itself (links and chained programs must be gone
    /// already). The config's
    /// pin, which says a state is here ([`StateDir::exists`]), goes last: a removal cut short
    /// leaves a state the next attach recognises and removes, never a few maps that it would
    /// adopt as a fresh state's.
    pub fn remove(&self) -> Result<(), Error> {
        let err = |err| Error::StateDir {
            path: self.dir.clone(),
            err,
        };
        let mut pins: Vec<PathBuf> = self
            .counted_ifindexes()
            .map_err(err)?
            .into_iter()
            .map(|ifindex| self.iface_stats(ifindex))
            .collect();
        pins.extend(
            self.chained_ifindexes()
                .map_err(err)?
                .into_iter()
                .map(|ifindex| self.next(ifindex)),
        );
        pins.push(self.log_ring());
        pins.extend(map_names::RETIRED.iter().map(|name| self.map(name)));
        pins.extend(
            map_pins()
                .iter()
                .filter(|&&name| name != map_names::CONFIG)
                .map(|name| self.map(name)),
        );
        pins.push(self.map(map_names::CONFIG));
        for pin in pins {
            remove_pin(&pin)?;
            crate::fault::step();
        }
        match fs::remove_dir(&self.dir) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(Error::StateDir {
                path: self.dir.clone(),
                err,
            }),
        }
    }
}

/// Removes one pin; one that is not there is fine.
pub fn remove_pin(pin: &Path) -> Result<(), Error> {
    match fs::remove_file(pin) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(Error::StateDir {
            path: pin.to_owned(),
            err,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The program pins exactly the shared maps; each interface's own maps and the events ring
    /// are pinned by path at attach.
    #[test]
    fn the_pinned_maps_are_read_from_the_program() {
        let mut expected = vec![
            map_names::CONFIG,
            map_names::ALLOW,
            map_names::ALLOW_BLOCKS,
            map_names::ALLOW_BLOOM,
            map_names::ALLOW_STRIDES,
            map_names::ALLOW_TABLES,
            map_names::ALLOW_STATE,
            map_names::STATS,
            map_names::SOURCES,
            map_names::PENDING,
            map_names::RECENT,
            map_names::EVENTS,
            map_names::FRAGS,
            map_names::FRAGS4,
            map_names::FRAG_EPOCH,
            map_names::FRAG_TIMEOUTS,
            map_names::IFACES,
            map_names::IFACE_META,
        ];
        expected.sort_unstable();
        assert_eq!(map_pins(), expected.as_slice());
        for unpinned in [map_names::NEXT, map_names::IFACE_STATS, map_names::LOGS] {
            assert!(!map_pins().contains(&unpinned), "{unpinned}");
        }
    }
}
