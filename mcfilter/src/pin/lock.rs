//! The state lock, and the trust checks every command makes before taking it: bpffs mounted
//! (0700 when mcfilter mounts it), the state dir and every directory above it root's and not
//! writable by others, the lock a directory only root can open, waited for a bounded time.

use std::{
    ffi::CString,
    fs::{self, File},
    io,
    os::{
        fd::AsRawFd as _,
        unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _},
    },
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::Error;

use super::{BPF_FS_MAGIC, BPFFS_ROOT, StateDir};

/// How long a command waits for another to release the state lock before it gives up.
pub const LOCK_WAIT: Duration = Duration::from_secs(10);

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
