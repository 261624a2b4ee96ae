//! libxdp's multi-program dispatcher, the protocol `xdp-loader` and `xdp-filter` follow
//! (xdp-tools' `lib/libxdp/protocol.org`), as `attach --multiprog` speaks it (see
//! [`multiprog`](super::multiprog) for what mcfilter does with it).
//!
//! A dispatcher is an XDP program (libxdp's own object, `xdp-dispatcher.o`, installed by Debian's
//! libxdp1) with ten empty global functions `prog0`..`prog9`; each component is a
//! BPF_PROG_TYPE_EXT program linked over one of them (freplace). The dispatcher calls the enabled
//! slots in order and goes on to the next one only when a component returns an action set in its
//! `chain_call_actions`. Its read-only `conf` says how many slots run, with which priorities and
//! chain actions. libxdp's state is the pins of each slot's link and program under
//! `/sys/fs/bpf/xdp/dispatch-IFINDEX-DISPATCHERID/`, changed under an exclusive `flock` of
//! `/sys/fs/bpf/xdp`. A change (a component joins or leaves) is a new dispatcher: the components'
//! EXT programs are linked to it too, the interface swaps dispatchers through netlink, and the
//! old pins go.
//!
//! Kernel facts: EXT programs need BTF on both sides and Linux 5.10 to be linked to a second
//! target; some kernels refuse EXT loads altogether (EPERM; this project's CI kernel does), which
//! is how `--multiprog` finds out it cannot run.

use std::{
    fs::File,
    io,
    mem::size_of,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
};

/// `XDP_DISPATCHER_MAGIC`.
pub(crate) const MAGIC: u8 = 236;
/// The dispatcher version whose `conf` layout [`Config`] is (libxdp 1.3+).
pub(crate) const VERSION: u8 = 2;
/// Slots in a dispatcher (`MAX_DISPATCHER_ACTIONS`).
pub(crate) const SLOTS: usize = 10;
/// The chain-call actions libxdp gives a component: go on to the next one after XDP_PASS
/// (`1 << XDP_PASS`), and after `XDP_DISPATCHER_RETVAL` (31), which an empty slot's function
/// returns (xdp-filter's component reads back as `0x8000_0004` in a guest).
pub(crate) const CHAIN_ON_PASS: u32 = (1 << 2) | (1 << 31);
/// libxdp's default run priority (`XDP_DEFAULT_RUN_PRIO`).
pub(crate) const DEFAULT_PRIORITY: u32 = 50;
/// Where libxdp installs its BPF objects on Debian and elsewhere (its `BPF_OBJECT_PATH`s);
/// `LIBXDP_OBJECT_PATH` comes first, as for libxdp.
const OBJECT_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/bpf",
    "/usr/lib/aarch64-linux-gnu/bpf",
    "/usr/lib64/bpf",
    "/usr/lib/bpf",
    "/usr/local/lib/bpf",
];
/// The dispatcher's object file.
const OBJECT: &str = "xdp-dispatcher.o";

/// The dispatcher's `conf` (`struct xdp_dispatcher_config`, version 2), set before it loads.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Config {
    pub(crate) magic: u8,
    pub(crate) dispatcher_version: u8,
    pub(crate) num_progs_enabled: u8,
    /// Non-zero when every component supports `xdp.frags`.
    pub(crate) is_xdp_frags: u8,
    pub(crate) chain_call_actions: [u32; SLOTS],
    pub(crate) run_prios: [u32; SLOTS],
    pub(crate) program_flags: [u32; SLOTS],
}

const _: () = assert!(size_of::<Config>() == 124);

// SAFETY: `#[repr(C)]`, plain integers, no padding (4 bytes, then u32 arrays).
unsafe impl aya::Pod for Config {}

/// One component of a dispatcher, as its `conf` and its pins describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Component {
    /// The program's name (the tie-break of the run order).
    pub(crate) name: String,
    /// Lower runs first.
    pub(crate) priority: u32,
    /// The actions after which the next component runs.
    pub(crate) chain_actions: u32,
    /// libxdp's per-program flags (`xdp.frags` support).
    pub(crate) flags: u32,
}

impl Config {
    /// The `conf` that runs `components` in their order.
    pub(crate) fn running(components: &[Component]) -> Result<Self, Unjoinable> {
        if components.len() > SLOTS {
            return Err(Unjoinable::Full);
        }
        let mut config = Config {
            magic: MAGIC,
            dispatcher_version: VERSION,
            num_progs_enabled: u8::try_from(components.len()).expect("at most ten"),
            is_xdp_frags: 0,
            chain_call_actions: [0; SLOTS],
            run_prios: [0; SLOTS],
            program_flags: [0; SLOTS],
        };
        for (slot, component) in components.iter().enumerate() {
            config.chain_call_actions[slot] = component.chain_actions;
            config.run_prios[slot] = component.priority;
            config.program_flags[slot] = component.flags;
        }
        Ok(config)
    }

    /// Whether this is a `conf` this code can read (libxdp's magic and version 2).
    pub(crate) fn is_known(&self) -> bool {
        self.magic == MAGIC
            && self.dispatcher_version == VERSION
            && usize::from(self.num_progs_enabled) <= SLOTS
    }
}

impl Component {
    /// libxdp's run order: by priority (lower first), then by name.
    pub(crate) fn run_order(&self, other: &Self) -> std::cmp::Ordering {
        (self.priority, &self.name).cmp(&(other.priority, &other.name))
    }
}

/// The bpffs libxdp keeps its state in: `LIBXDP_BPFFS`, as for libxdp, else /sys/fs/bpf.
pub(crate) fn bpffs() -> PathBuf {
    std::env::var_os("LIBXDP_BPFFS").map_or_else(|| PathBuf::from("/sys/fs/bpf"), PathBuf::from)
}

/// Removes a dispatcher's pins and their dir, as libxdp does with the old dispatcher once the
/// new one runs: the links go with their pins, the dispatcher with its last link and netlink's
/// hold. A dir already gone is fine.
pub(crate) fn unpin_all(dir: &Path) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
    };
    for entry in entries {
        std::fs::remove_file(entry?.path())?;
    }
    std::fs::remove_dir(dir)
}

/// Removes the pin dirs of dispatchers on `ifindex` other than `keep` (the one attached, if
/// any): what a change killed between making a new dispatcher's pins and swapping it in, or
/// between the swap and removing the old one's pins, left. Under libxdp's lock every such dir
/// is garbage: libxdp too makes a dispatcher's pins and swaps it in under the lock.
pub(crate) fn sweep(bpffs: &Path, ifindex: u32, keep: Option<u32>) -> io::Result<()> {
    let prefix = format!("dispatch-{ifindex}-");
    let entries = match std::fs::read_dir(bpffs.join("xdp")) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|name| name.strip_prefix(&prefix))
            .and_then(|id| id.parse::<u32>().ok())
        else {
            continue;
        };
        if Some(id) != keep {
            unpin_all(&entry.path())?;
        }
    }
    Ok(())
}

/// The ids of the programs pinned in a dispatcher's slots, in slot order (read from libxdp's
/// pins alone, which is enough to tell whether a program runs there).
pub(crate) fn slot_programs(dir: &Path) -> Vec<(u32, String)> {
    (0..SLOTS)
        .map_while(|slot| aya::programs::ProgramInfo::from_pin(program_pin(dir, slot)).ok())
        .map(|info| (info.id(), info.name_as_str().unwrap_or_default().to_owned()))
        .collect()
}

/// Where libxdp pins the state of dispatcher `dispatcher_id` on interface `ifindex`.
pub(crate) fn pin_dir(bpffs: &Path, ifindex: u32, dispatcher_id: u32) -> PathBuf {
    bpffs
        .join("xdp")
        .join(format!("dispatch-{ifindex}-{dispatcher_id}"))
}

/// The pin of slot `slot`'s link in a dispatcher's pin dir.
pub(crate) fn link_pin(dir: &Path, slot: usize) -> PathBuf {
    dir.join(format!("prog{slot}-link"))
}

/// The pin of slot `slot`'s program in a dispatcher's pin dir.
pub(crate) fn program_pin(dir: &Path, slot: usize) -> PathBuf {
    dir.join(format!("prog{slot}-prog"))
}

/// The function a component in slot `slot` replaces.
pub(crate) fn slot_function(slot: usize) -> String {
    format!("prog{slot}")
}

/// libxdp's dispatcher object: in `LIBXDP_OBJECT_PATH`, else where libxdp installs it.
pub(crate) fn find_object() -> Option<PathBuf> {
    let from_env = std::env::var_os("LIBXDP_OBJECT_PATH").map(PathBuf::from);
    from_env
        .into_iter()
        .chain(OBJECT_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(OBJECT))
        .find(|path| path.is_file())
}

/// The BTF id of the function slot `slot` runs, in the dispatcher object: what linking a
/// component to a dispatcher loaded from it names (the loaded BTF keeps the object's ids).
pub(crate) fn slot_btf_id(object: &[u8], slot: usize) -> io::Result<u32> {
    let parsed = aya_obj::Object::parse(object).map_err(io::Error::other)?;
    let btf = parsed
        .btf
        .ok_or_else(|| io::Error::other("the dispatcher object has no BTF"))?;
    btf.id_by_type_name_kind(&slot_function(slot), aya_obj::btf::BtfKind::Func)
        .map_err(io::Error::other)
}

/// libxdp's lock: an exclusive `flock` of `BPFFS/xdp`, held until dropped.
pub(crate) struct Lock {
    /// Closing it releases the lock.
    _held: File,
}

impl Lock {
    /// Waits for libxdp's lock (creating its directory if this is the first dispatcher).
    pub(crate) fn acquire(bpffs: &Path) -> io::Result<Self> {
        let dir = bpffs.join("xdp");
        std::fs::create_dir_all(&dir)?;
        let file = File::open(&dir)?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Lock { _held: file })
    }
}

/// `BPF_OBJ_GET` from `enum bpf_cmd`.
const BPF_OBJ_GET: libc::c_long = 7;
/// `BPF_LINK_CREATE` from `enum bpf_cmd`.
const BPF_LINK_CREATE: libc::c_long = 28;

/// The `obj_get` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// The `link_create` member of `union bpf_attr`, as far as a freplace link reads it.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    target_btf_id: u32,
    _pad: u32,
}

/// `bpf(cmd, attr)` returning a new descriptor.
///
/// # Safety
/// Every pointer in `attr` must be valid for what `cmd` reads through it.
unsafe fn bpf_fd<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<OwnedFd> {
    // SAFETY: the caller vouches for the pointers; `attr` is a live `union bpf_attr` prefix of
    // the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            size_of::<T>() as u32,
        )
    };
    let fd = i32::try_from(rc).map_err(|_| io::Error::other("bpf(2) returned no descriptor"))?;
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens a pinned BPF object (a component's program).
pub(crate) fn open_pinned(path: &Path) -> io::Result<OwnedFd> {
    let path =
        std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    let mut attr = ObjGetAttr {
        pathname: path.as_ptr() as u64,
        ..ObjGetAttr::default()
    };
    // SAFETY: `pathname` points at a NUL-terminated string that outlives the call.
    unsafe { bpf_fd(BPF_OBJ_GET, &mut attr) }
}

/// Links a component (an EXT program already loaded for some dispatcher) over the function
/// `btf_id` of `dispatcher` (Linux 5.10 links an EXT program to a second target). The kernel
/// ignores the attach type of an EXT program's link.
pub(crate) fn link_component(
    component: BorrowedFd<'_>,
    dispatcher: BorrowedFd<'_>,
    btf_id: u32,
) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: u32::try_from(component.as_raw_fd()).map_err(io::Error::other)?,
        target_fd: u32::try_from(dispatcher.as_raw_fd()).map_err(io::Error::other)?,
        target_btf_id: btf_id,
        ..LinkCreateAttr::default()
    };
    // SAFETY: the attribute holds descriptors and an id, no pointers.
    unsafe { bpf_fd(BPF_LINK_CREATE, &mut attr) }
}

/// Why the XDP program on an interface cannot be joined as libxdp's dispatcher.
#[derive(Debug, thiserror::Error)]
pub enum Unjoinable {
    /// Another XDP program (mcfilter joins only libxdp's dispatcher).
    #[error("the XDP program there (id {0}) is not libxdp's dispatcher")]
    NotADispatcher(u32),
    /// A dispatcher whose pins are not in this bpffs.
    #[error("libxdp's dispatcher there (id {0}) has no state in {1} (made with another bpffs?)")]
    NoState(u32, PathBuf),
    /// A dispatcher of a version this build does not speak.
    #[error("libxdp's dispatcher there (id {0}) has a configuration this build cannot read")]
    UnknownConfig(u32),
    /// A dispatcher in another mode than `--mode` asks for.
    #[error("libxdp's dispatcher there runs in {0} mode, and its components with it")]
    OtherMode(&'static str),
    /// A dispatcher offloaded to the NIC.
    #[error("the XDP program there is offloaded to the NIC")]
    Offloaded,
    /// Every slot is taken.
    #[error("libxdp's dispatcher there runs {SLOTS} programs already, as many as it can")]
    Full,
    /// Reading the dispatcher failed.
    #[error("reading libxdp's dispatcher there: {0}")]
    Read(#[source] io::Error),
}

/// A component found in a dispatcher: what its `conf` says, and its program.
pub(crate) struct Found {
    pub(crate) component: Component,
    /// The program's id.
    pub(crate) id: u32,
    pub(crate) program: OwnedFd,
}

/// The dispatcher running on an interface, as libxdp left it.
pub(crate) struct Current {
    /// The dispatcher program.
    pub(crate) program: aya::programs::ProgramFd,
    /// Its pin dir.
    pub(crate) dir: PathBuf,
    /// Its components, in slot order.
    pub(crate) components: Vec<Found>,
}

/// The name libxdp's dispatcher program has.
const DISPATCHER_NAME: &str = "xdp_dispatcher";

/// Reads dispatcher `id` (the program netlink reports on `ifindex`): its `conf` from its
/// read-only data map, and each slot's program from libxdp's pins.
pub(crate) fn current(bpffs: &Path, ifindex: u32, id: u32) -> Result<Current, Unjoinable> {
    use aya::{
        maps::{Array, Map, MapData, MapInfo},
        programs::loaded_programs,
    };
    let read = |err: &dyn std::fmt::Display| Unjoinable::Read(io::Error::other(err.to_string()));
    let info = loaded_programs()
        .filter_map(Result::ok)
        .find(|info| info.id() == id)
        .ok_or_else(|| read(&format!("no program {id}")))?;
    if info.name_as_str() != Some(DISPATCHER_NAME) {
        return Err(Unjoinable::NotADispatcher(id));
    }
    let dir = pin_dir(bpffs, ifindex, id);
    if !dir.is_dir() {
        return Err(Unjoinable::NoState(id, dir));
    }
    let map_ids = info
        .map_ids()
        .map_err(|err| read(&err))?
        .unwrap_or_default();
    let config_map = map_ids
        .into_iter()
        .filter_map(|map_id| MapInfo::from_id(map_id).ok().map(|map| (map_id, map)))
        .find(|(_, map)| {
            map.value_size() as usize == size_of::<Config>()
                && map
                    .name_as_str()
                    .is_some_and(|name| name.ends_with(".rodata"))
        })
        .ok_or(Unjoinable::UnknownConfig(id))?;
    let data = MapData::from_id(config_map.0).map_err(|err| read(&err))?;
    let array: Array<MapData, Config> =
        Array::try_from(Map::Array(data)).map_err(|err| read(&err))?;
    let config = array.get(&0, 0).map_err(|err| read(&err))?;
    if !config.is_known() {
        return Err(Unjoinable::UnknownConfig(id));
    }
    let components = (0..usize::from(config.num_progs_enabled))
        .map(|slot| {
            let pin = program_pin(&dir, slot);
            let info = aya::programs::ProgramInfo::from_pin(&pin).map_err(|err| read(&err))?;
            let name = info.name_as_str().unwrap_or_default().to_owned();
            Ok(Found {
                id: info.id(),
                component: Component {
                    name,
                    priority: config.run_prios[slot],
                    chain_actions: config.chain_call_actions[slot],
                    flags: config.program_flags[slot],
                },
                program: open_pinned(&pin).map_err(Unjoinable::Read)?,
            })
        })
        .collect::<Result<_, Unjoinable>>()?;
    Ok(Current {
        program: info.fd().map_err(|err| read(&err))?,
        dir,
        components,
    })
}

/// A new dispatcher, loaded with its `conf`: components are linked into its slots, then it
/// replaces the old one on the interface.
pub(crate) struct New {
    /// The loaded object (it holds the dispatcher program).
    pub(crate) ebpf: aya::Ebpf,
    /// Each slot's BTF id in this dispatcher.
    pub(crate) slot_ids: Vec<u32>,
}

impl New {
    /// Loads libxdp's dispatcher `object` configured to run `config`'s components.
    pub(crate) fn load(object: &[u8], config: &Config) -> io::Result<Self> {
        let mut ebpf = aya::EbpfLoader::new()
            .override_global("conf", config, true)
            .load(object)
            .map_err(io::Error::other)?;
        let program: &mut aya::programs::Xdp = ebpf
            .program_mut(DISPATCHER_NAME)
            .ok_or_else(|| io::Error::other("the dispatcher object has no xdp_dispatcher"))?
            .try_into()
            .map_err(io::Error::other)?;
        program.load().map_err(io::Error::other)?;
        let slot_ids = (0..usize::from(config.num_progs_enabled))
            .map(|slot| slot_btf_id(object, slot))
            .collect::<io::Result<_>>()?;
        Ok(New { ebpf, slot_ids })
    }

    /// The dispatcher program's descriptor.
    pub(crate) fn fd(&mut self) -> io::Result<aya::programs::ProgramFd> {
        self.program().fd().map_err(io::Error::other)?.try_clone()
    }

    /// The dispatcher program.
    pub(crate) fn program(&mut self) -> &mut aya::programs::Xdp {
        self.ebpf
            .program_mut(DISPATCHER_NAME)
            .and_then(|program| program.try_into().ok())
            .expect("loaded by New::load")
    }

    /// Links another tool's component (already an EXT program) into slot `slot`, and pins the
    /// link and the program where libxdp will look for them in `dir`.
    pub(crate) fn link_foreign(
        &mut self,
        slot: usize,
        component: BorrowedFd<'_>,
        dir: &Path,
    ) -> io::Result<()> {
        let fd = self.fd()?;
        let link = link_component(component, fd.as_fd(), self.slot_ids[slot])?;
        pin_fd(link.as_raw_fd(), &link_pin(dir, slot))?;
        pin_fd(component.as_raw_fd(), &program_pin(dir, slot))
    }
}

/// `BPF_OBJ_PIN` from `enum bpf_cmd`.
const BPF_OBJ_PIN: libc::c_long = 6;

/// Pins BPF object `fd` at `path`.
pub(crate) fn pin_fd(fd: i32, path: &Path) -> io::Result<()> {
    let path =
        std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    let mut attr = ObjGetAttr {
        pathname: path.as_ptr() as u64,
        bpf_fd: u32::try_from(fd).map_err(io::Error::other)?,
        file_flags: 0,
    };
    // SAFETY: `pathname` points at a NUL-terminated string that outlives the call. BPF_OBJ_PIN
    // returns 0, not a descriptor: the OwnedFd below is never made for it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_PIN,
            std::ptr::from_mut(&mut attr),
            size_of::<ObjGetAttr>() as u32,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component(name: &str, priority: u32) -> Component {
        Component {
            name: name.into(),
            priority,
            chain_actions: CHAIN_ON_PASS,
            flags: 0,
        }
    }

    #[test]
    fn a_config_runs_its_components_in_their_slots() {
        let config =
            Config::running(&[component("xdpfilt_alw_all", 10), component("mcfilter", 50)])
                .unwrap();
        assert!(config.is_known());
        assert_eq!(config.num_progs_enabled, 2);
        assert_eq!(config.run_prios[..3], [10, 50, 0]);
        assert_eq!(
            config.chain_call_actions[..3],
            [CHAIN_ON_PASS, CHAIN_ON_PASS, 0]
        );
        let eleven: Vec<_> = (0..11).map(|i| component("p", i)).collect();
        assert!(Config::running(&eleven).is_err());
    }

    #[test]
    fn components_run_by_priority_then_name() {
        let mut components = [
            component("mcfilter", 50),
            component("b", 10),
            component("a", 10),
        ];
        components.sort_by(Component::run_order);
        let names: Vec<_> = components.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "mcfilter"]);
    }

    #[test]
    fn pins_are_where_libxdp_looks() {
        let dir = pin_dir(Path::new("/sys/fs/bpf"), 3, 41);
        assert_eq!(dir, Path::new("/sys/fs/bpf/xdp/dispatch-3-41"));
        assert_eq!(link_pin(&dir, 1), dir.join("prog1-link"));
        assert_eq!(program_pin(&dir, 0), dir.join("prog0-prog"));
    }

    /// The installed dispatcher (xdp-tools' libxdp1, which `cargo xtask test` installs) names
    /// every slot's function in its BTF.
    #[test]
    fn the_installed_dispatcher_has_every_slot() {
        let path = find_object().expect("libxdp's xdp-dispatcher.o (Debian package libxdp1)");
        let object = std::fs::read(path).unwrap();
        let ids: Vec<u32> = (0..SLOTS)
            .map(|slot| slot_btf_id(&object, slot).unwrap())
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    }
}
