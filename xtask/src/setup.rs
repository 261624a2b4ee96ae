//! `cargo xtask setup`: everything a fresh machine of this kind lacks, installed idempotently
//! with one line per step. A second run changes nothing.
//!
//! Recipe: rust-src for the pinned toolchain (aya-build compiles `core` for
//! bpfel-unknown-none), Debian's LLVM 22 and the libraries bpf-linker links against,
//! bpf-linker 0.13 built for LLVM 22, the tools the tests and the demo use, and bpffs.

use anyhow::{Context as _, bail};

use crate::util::Cmd;

/// The bpf-linker release that links LLVM 22 bitcode.
const BPF_LINKER_VERSION: &str = "0.13";
const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";
/// Debian packages bpf-linker's build needs.
const BUILD_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
];
/// Debian packages the tests and the demo run.
const PACKAGES: &[&str] = &[
    "iproute2",
    "util-linux",
    "memcached",
    "time",
    "curl",
    "systemd",
    // The man page check (`man --warnings`) and the package check (objdump, dpkg-deb).
    "man-db",
    "binutils",
    // The image check (an OCI image assembled offline) and the DaemonSet's pod, run with
    // runc under the manifest's seccomp profile.
    "umoci",
    "runc",
    // The service test's system call filter, the unit's, loaded with libseccomp; and a real
    // systemd (PID 1 of a container) for the unit's own test.
    "python3-seccomp",
    "systemd-container",
    // xdp-filter, the peer the chaining tests put mcfilter in front of.
    "xdp-tools",
    // The kernel-memory test reads `bpftool map show` next to `status`.
    "bpftool",
];
const BPFFS: &str = "/sys/fs/bpf";

/// Debian packages only the benchmark uses: the peer it compares with, and bpftool to pin it.
pub(crate) const BENCH_PACKAGES: &[&str] =
    &["xdp-tools", "bpftool", "ethtool", "nftables", "iptables"];

/// Everything: the build's tools, then what the tests and the demo need, and bpffs.
pub(crate) fn run() -> anyhow::Result<()> {
    build_tools()?;
    debian_packages(PACKAGES)?;
    python_tools()?;
    bpffs()
}

/// What building mcfilter needs and nothing else (the Containerfile's build stage): rust-src
/// for `-Z build-std`, then bpf-linker built against Debian's LLVM 22.
pub(crate) fn build_tools() -> anyhow::Result<()> {
    rust_src()?;
    debian_packages(BUILD_PACKAGES)?;
    bpf_linker()
}

fn step(name: &str, state: &str) {
    eprintln!("setup: {name}: {state}");
}

fn rust_src() -> anyhow::Result<()> {
    // The toolchain rust-toolchain.toml pins, as rustup resolved it for `cargo xtask`.
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").context(
        "RUSTUP_TOOLCHAIN is not set: run `cargo xtask` through rustup, which reads rust-toolchain.toml",
    )?;
    let toolchain = toolchain.as_str();
    let installed = Cmd::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", toolchain])
        .output()
        .context("rustup is needed to add rust-src")?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        step("rust-src", "present");
        return Ok(());
    }
    step("rust-src", "installing");
    Cmd::new("rustup")
        .args(["component", "add", "rust-src", "--toolchain", toolchain])
        .run()
}

pub(crate) fn debian_packages(packages: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|pkg| {
            Cmd::new("dpkg-query")
                .args(["-W", "-f=${Status}", pkg])
                .output()
                .is_none_or(|status| !status.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        step("debian packages", "present");
        return Ok(());
    }
    step(
        "debian packages",
        &format!("installing {}", missing.join(" ")),
    );
    Cmd::new("apt-get").args(["update", "-q"]).run()?;
    Cmd::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()
}

/// kubernetes-validate, from PyPI (its Kubernetes schemas are inside: it validates offline),
/// for the manifest test.
const KUBERNETES_VALIDATE: &str = "1.37.0";

fn python_tools() -> anyhow::Result<()> {
    let version = Cmd::new("python3")
        .args(["-m", "kubernetes_validate", "--version"])
        .output();
    if version
        .as_deref()
        .is_some_and(|v| v.contains(KUBERNETES_VALIDATE))
    {
        step("kubernetes-validate", "present");
        return Ok(());
    }
    step("kubernetes-validate", "installing");
    Cmd::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--root-user-action=ignore",
        ])
        .arg_str(&format!("kubernetes-validate=={KUBERNETES_VALIDATE}"))
        .run()
}

fn bpf_linker() -> anyhow::Result<()> {
    let version = Cmd::new("bpf-linker").args(["--version"]).output();
    if version
        .as_deref()
        .is_some_and(|v| v.contains(&format!(" {BPF_LINKER_VERSION}.")))
    {
        step("bpf-linker", "present");
        return Ok(());
    }
    step(
        "bpf-linker",
        &format!("building {BPF_LINKER_VERSION} against LLVM 22 (about a minute)"),
    );
    let path = format!("{LLVM_BIN}:{}", std::env::var("PATH").unwrap_or_default());
    Cmd::new("cargo")
        .args(["install", "bpf-linker", "--locked", "--version"])
        .arg_str(&format!("~{BPF_LINKER_VERSION}"))
        .args(["--no-default-features", "--features", "llvm-22"])
        .env("PATH", path)
        .run()
}

fn bpffs() -> anyhow::Result<()> {
    if is_bpffs(BPFFS) {
        step("bpffs", "mounted");
        return Ok(());
    }
    step("bpffs", &format!("mounting at {BPFFS}"));
    // Root's only (bpffs defaults to 1777): nobody else may make directories where mcfilter
    // keeps its state.
    Cmd::new("mount")
        .args(["-t", "bpf", "-o", "mode=0700", "bpf", BPFFS])
        .run()?;
    if !is_bpffs(BPFFS) {
        bail!("mounted bpffs, but {BPFFS} is still not a bpf filesystem");
    }
    Ok(())
}

fn is_bpffs(path: &str) -> bool {
    Cmd::new("stat")
        .args(["--file-system", "--format=%T", path])
        .output()
        .is_some_and(|fs_type| fs_type.trim() == "bpf_fs")
}
