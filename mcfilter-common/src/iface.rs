//! What `attach` records per interface: its name, mode, program and build (the program never
//! reads these).

/// Interface name buffer size (Linux IFNAMSIZ).
pub const IFNAMSIZ: usize = 16;

/// XDP attach modes as stored in [`IfaceInfo::mode`].
pub mod xdp_mode {
    /// The driver's own XDP hook.
    pub const NATIVE: u32 = 1;
    /// Generic XDP in the kernel stack.
    pub const SKB: u32 = 2;
}

/// Value of the interface bookkeeping map, written by `attach` (the program never reads it).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IfaceInfo {
    /// NUL-padded interface name at attach time.
    pub name: [u8; IFNAMSIZ],
    /// One of [`xdp_mode`].
    pub mode: u32,
    /// Kernel id of the attached program.
    pub prog_id: u32,
}

/// Value of the interface metadata map, written by `attach` and the service (the program never
/// reads it).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IfaceMeta {
    /// The build whose program was attached (or swapped in) last.
    pub build: Build,
    /// 1 when `mcfilter run` manages the interface: a restarted service adopts it, detaches it
    /// when its config no longer lists it and covers it with `detach_on_exit`.
    pub service: u32,
    /// The id of the program a chained interface hands its passed packets to (`attach --then`),
    /// which `detach` puts back; 0 when it is not chained.
    pub next: u32,
}

/// What identifies a build of mcfilter: its version and a hash of its XDP object (two builds
/// of one version with different datapaths differ in the hash).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Build {
    /// NUL-padded `CARGO_PKG_VERSION`.
    pub version: [u8; 16],
    /// FNV-1a (64-bit) of the XDP object's bytes.
    pub object: u64,
}
