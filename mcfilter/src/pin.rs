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
    ffi::CString,
    fs::{self, File},
    io,
    os::{
        fd::AsRawFd as _,
        unix::fs::{
            DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
        },
    },
    path::{Path, PathBuf},
    sync::OnceLock,
    time::{Duration, Instant},
};

use mcfilter_common::map_names;

use crate::Error;

/// The default state dir.
pub const DEFAULT_STATE_DIR: &str = "/sys/fs/bpf/mcfilter";
/// Where bpffs is conventionally mounted; mounted on demand.
const BPFFS_ROOT: &str = "/sys/fs/bpf";
/// `statfs.f_type` of a bpf filesystem.
const BPF_FS_MAGIC: i64 = 0xcafe4a11;
const LINK_PREFIX: &str = "link_";
/// A chained interface's program (attached through netlink, which holds no link to pin).
const PROGRAM_PREFIX: &str = "prog_";
/// A chained interface's next program, in a one-slot program array.
const NEXT_PREFIX: &str = "next_";
/// Each interface's own counters (`mcf_if_stats` of its program), pinned at attach.
const IFACE_STATS_PREFIX: &str = "if_stats_";
/// The ring buffer of the programs' events (aya-log's `AYA_LOGS`), one for every program of
/// the state, pinned at attach.
const LOG_RING: &str = "mcf_logs";
/// How long a command waits for another to release the state lock before it gives up.
pub const LOCK_WAIT: Duration = Duration::from_secs(10);

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

/// Held while a command reads or changes the state; released on drop.
pub struct StateLock {
    /// Holds the flock; closed (and so released) last, after the lock dir is removed.
    _file: File,
    dir: PathBuf,
    state: PathBuf,
}

impl Drop for StateLock {
    fn drop(&mut self) {
        // No state to guard (the last detach, or a command that found none): the lock dir
        // goes too, still locked, so nothing of mcfilter stays behind. A command waiting on it
        // notices and takes the new one (see `StateDir::lock`).
        if !self.state.exists() {
            let _ = fs::remove_dir(&self.dir);
        }
    }
}

impl StateDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StateDir { dir: dir.into() }
    }

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

    /// The pin of the program array that holds a chained interface's next program.
    pub fn next(&self, ifindex: u32) -> PathBuf {
        self.dir.join(format!("{NEXT_PREFIX}{ifindex}"))
    }

    /// Whether interface `ifindex` is attached here: its link is pinned, or (chained) its
    /// program.
    pub fn holds(&self, ifindex: u32) -> bool {
        self.link(ifindex).exists() || self.program(ifindex).exists()
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
    /// is.
    pub fn attached_ifindexes(&self) -> io::Result<Vec<u32>> {
        let mut indexes = self.ifindexes_pinned_as(LINK_PREFIX)?;
        indexes.extend(self.ifindexes_pinned_as(PROGRAM_PREFIX)?);
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

    /// Mounts bpffs at /sys/fs/bpf when the state dir lives there and it is not mounted, makes
    /// sure the state dir's parent exists, and takes the lock, exclusively: for commands that
    /// change the state.
    pub fn prepare_and_lock(&self) -> Result<StateLock, Error> {
        self.prepare()?;
        self.lock(libc::LOCK_EX)
    }

    /// [`StateDir::prepare_and_lock`], but the lock is shared: for commands that only read
    /// (status, stats, the metrics, `allow list`), which then never wait for one another, and
    /// which a change waits for only while they read.
    pub fn prepare_and_lock_shared(&self) -> Result<StateLock, Error> {
        self.prepare()?;
        self.lock(libc::LOCK_SH)
    }

    fn prepare(&self) -> Result<(), Error> {
        if self.dir.starts_with(BPFFS_ROOT) && !is_bpffs(Path::new(BPFFS_ROOT))? {
            mount_bpffs(Path::new(BPFFS_ROOT))?;
        }
        let parent = self.parent();
        fs::create_dir_all(&parent).map_err(|err| Error::StateDir {
            path: parent.clone(),
            err,
        })?;
        if !is_bpffs(&parent)? {
            return Err(Error::NotBpffs { path: parent });
        }
        self.check_trust()
    }

    /// Refuses a state dir that someone other than root (or this process's user) could change:
    /// the state dir if it exists, and every directory above it up to the bpffs mount, checked
    /// without following symbolic links.
    fn check_trust(&self) -> Result<(), Error> {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        let mut dir = if fs::symlink_metadata(&self.dir).is_ok() {
            self.dir.clone()
        } else {
            self.parent()
        };
        loop {
            let meta = fs::symlink_metadata(&dir).map_err(|err| Error::StateDir {
                path: dir.clone(),
                err,
            })?;
            let above = dir.parent().map(Path::to_path_buf);
            let is_mount_root = match &above {
                Some(above) => !is_bpffs(above)?,
                None => true,
            };
            let why = untrusted(&meta, euid).or_else(|| {
                (meta.mode() & 0o022 != 0 && !(is_mount_root && meta.mode() & 0o1000 != 0))
                    .then(|| "is writable by group or others".to_owned())
            });
            if let Some(why) = why {
                return Err(Error::UntrustedStateDir { path: dir, why });
            }
            match above {
                Some(above) if !is_mount_root => dir = above,
                _ => return Ok(()),
            }
        }
    }

    /// The lock's directory, next to the state dir: `<state-dir>_lock` (bpffs refuses names with
    /// a dot).
    pub fn lock_dir(&self) -> PathBuf {
        let mut name = self.dir.file_name().unwrap_or_default().to_os_string();
        name.push("_lock");
        self.parent().join(name)
    }

    /// Serialises commands on this state dir: a flock (`mode`: exclusive or shared) on
    /// [`StateDir::lock_dir`], a directory only root (or the user mcfilter runs as) can open, so
    /// no other user can hold the lock. It lives next to the state dir, which comes and goes with
    /// attach and detach, and is removed, locked, by the command that leaves no state (see
    /// [`StateLock`]); a command that waited on a removed one takes the lock anew.
    fn lock(&self, mode: libc::c_int) -> Result<StateLock, Error> {
        let dir = self.lock_dir();
        let started = Instant::now();
        loop {
            let file = self.open_lock_dir(&dir)?;
            loop {
                // SAFETY: a valid open file descriptor; flock has no memory-safety preconditions.
                if unsafe { libc::flock(file.as_raw_fd(), mode | libc::LOCK_NB) } == 0 {
                    break;
                }
                let err = io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                    return Err(Error::StateDir { path: dir, err });
                }
                if started.elapsed() >= LOCK_WAIT {
                    return Err(Error::Locked {
                        path: dir,
                        waited: LOCK_WAIT.as_secs(),
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // Still the lock dir at that path (not one a finished command removed)?
            let held = file.metadata().map_err(|err| Error::StateDir {
                path: dir.clone(),
                err,
            })?;
            match fs::symlink_metadata(&dir) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                    return Ok(StateLock {
                        _file: file,
                        dir,
                        state: self.dir.clone(),
                    });
                }
                _ => continue,
            }
        }
    }

    /// Opens the lock dir, made root's and 0700 if missing; refuses one that another user owns
    /// or could open.
    fn open_lock_dir(&self, dir: &Path) -> Result<File, Error> {
        let err = |err| Error::StateDir {
            path: dir.to_owned(),
            err,
        };
        match fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(err(e)),
        }
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(dir)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) || e.raw_os_error() == Some(libc::ENOTDIR)
                {
                    Error::UntrustedStateDir {
                        path: dir.to_owned(),
                        why: "is not a directory of its own".into(),
                    }
                } else {
                    err(e)
                }
            })?;
        let meta = file.metadata().map_err(err)?;
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        let why = untrusted(&meta, euid).or_else(|| {
            (meta.mode() & 0o077 != 0).then(|| "can be opened by group or others".to_owned())
        });
        match why {
            Some(why) => Err(Error::UntrustedStateDir {
                path: dir.to_owned(),
                why,
            }),
            None => Ok(file),
        }
    }

    fn parent(&self) -> PathBuf {
        match self.dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        }
    }

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

/// Why a directory of the state (not followed if a symbolic link) could be changed by someone
/// other than root or `euid`, as far as its type and owner tell.
fn untrusted(meta: &fs::Metadata, euid: u32) -> Option<String> {
    if meta.file_type().is_symlink() {
        Some("is a symbolic link".to_owned())
    } else if !meta.is_dir() {
        Some("is not a directory".to_owned())
    } else if meta.uid() != 0 && meta.uid() != euid {
        Some(format!("is owned by uid {}", meta.uid()))
    } else {
        None
    }
}

/// Whether `path` is on a bpf filesystem.
fn is_bpffs(path: &Path) -> Result<bool, Error> {
    let c_path = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::NotBpffs { path: path.into() })?;
    // SAFETY: zeroed statfs is a valid buffer for statfs(2) to fill.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is NUL-terminated and `st` is writable.
    if unsafe { libc::statfs(c_path.as_ptr(), &raw mut st) } != 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::NotFound {
            return Ok(false);
        }
        return Err(Error::StateDir {
            path: path.into(),
            err,
        });
    }
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

fn mount_bpffs(path: &Path) -> Result<(), Error> {
    let c_path = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::NotBpffs { path: path.into() })?;
    // SAFETY: all strings are NUL-terminated and live for the call; no data argument.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            c_path.as_ptr(),
            c"bpf".as_ptr(),
            0,
            // Root's only: nobody else may make directories where a state dir will be.
            c"mode=0700".as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(Error::MountBpffs {
            path: path.into(),
            err: io::Error::last_os_error(),
        });
    }
    Ok(())
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
            map_names::ALLOW_HOSTS,
            map_names::ALLOW_STATE,
            map_names::STATS,
            map_names::SOURCES,
            map_names::PENDING,
            map_names::RECENT,
            map_names::EVENTS,
            map_names::FRAGS,
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
