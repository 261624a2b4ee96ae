//! Builds the XDP program (`mcfilter-ebpf`) for bpfel-unknown-none with aya-build, the single
//! way the eBPF object is built; `mcfilter::EBPF_OBJECT` embeds the result.

use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    // `-Z build-std=core` is needed for bpfel-unknown-none. On a stable toolchain aya-build
    // passes it when RUSTC_BOOTSTRAP=1; set it for the nested cargo unless the caller chose.
    println!("cargo:rerun-if-env-changed=RUSTC_BOOTSTRAP");
    println!("cargo:rustc-env=MCFILTER_COMMIT={}", commit());
    // The toolchain rust-toolchain.toml pins (its LLVM, 22, matches bpf-linker's), as rustup
    // resolved it for this build: the nested cargo of the eBPF build uses the same.
    println!("cargo:rerun-if-env-changed=RUSTUP_TOOLCHAIN");
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").context(
        "RUSTUP_TOOLCHAIN is not set: build through rustup, which reads rust-toolchain.toml",
    )?;
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
        Toolchain::Custom(&toolchain),
    )
}

/// The commit this is built from, for `mcfilter --version`: `MCFILTER_COMMIT` when set (a
/// build from a source archive), else git's short hash, else `unknown`.
fn commit() -> String {
    println!("cargo:rerun-if-env-changed=MCFILTER_COMMIT");
    if let Ok(commit) = std::env::var("MCFILTER_COMMIT") {
        return commit;
    }
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    // A new commit or checkout changes one of these.
    for path in ["HEAD", "refs/heads", "packed-refs"] {
        if let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", path]) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_owned())
}
