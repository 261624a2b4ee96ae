//! Builds the XDP program (`mcfilter-ebpf`) for bpfel-unknown-none with aya-build, the single
//! way the eBPF object is built; `mcfilter::EBPF_OBJECT` embeds the result.

use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

/// The toolchain pinned in rust-toolchain.toml: its LLVM (22) matches bpf-linker's.
const TOOLCHAIN: &str = "1.95.0";

fn main() -> anyhow::Result<()> {
    // `-Z build-std=core` is needed for bpfel-unknown-none. On a stable toolchain aya-build
    // passes it when RUSTC_BOOTSTRAP=1; set it for the nested cargo unless the caller chose.
    println!("cargo:rerun-if-env-changed=RUSTC_BOOTSTRAP");
    if std::env::var_os("RUSTC_BOOTSTRAP").is_none() {
        // SAFETY: build scripts are single-threaded at this point.
        unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    }
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "mcfilter-ebpf")
        .ok_or_else(|| anyhow!("mcfilter-ebpf package not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::Custom(TOOLCHAIN),
    )
}
