//! `cargo xtask`: the project's automation. `setup` installs what building and testing need
//! (idempotently), `test` runs every test tier, `demo` runs the embedded lab, `lint` runs
//! rustfmt and clippy on every crate.

mod image;
mod kernels;
mod package;
mod setup;
mod tally;
mod util;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::{
    tally::Tally,
    util::{Cmd, workspace_root},
};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the toolchain pieces, Debian packages and bpf-linker; mount bpffs
    Setup,
    /// rustfmt --check and clippy -D warnings on every crate, the eBPF one included
    Lint,
    /// Setup, lint, then host unit tests and the privileged tests (verdicts, namespaces, CLI),
    /// then the kernel suites inside Debian's 6.1 and 6.12 kernels (booted under qemu)
    Test {
        /// Which kernels: all, or a comma-separated list of host (this machine's) and the
        /// matrix's 6.1 and 6.12 (e.g. host, 6.1 or 6.1,6.12)
        #[arg(long, default_value = "all")]
        kernel: String,
        /// Extra arguments for the privileged test run (e.g. a test name filter)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Setup, build, and run the lab: amplification without the filter, then with it
    Demo,
    /// Per-packet cost by class through BPF_PROG_TEST_RUN, next to a trivial XDP_PASS program
    Bench {
        /// Time the XDP program of this commit (or any git revision) next to the current one,
        /// per class, in the same run
        #[arg(long, value_name = "REV")]
        baseline: Option<String>,
        /// Arguments for mcfilter-bench (--repeat N, --runs N, --json PATH)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build a Debian package (target/package/mcfilter_VERSION_ARCH.deb) from the release
    /// binary, and check it in a scratch root
    Package,
    /// Build the container image (an OCI layout in target/image/oci) from the release binary,
    /// offline, and check it
    Image {
        /// Only build the image's root filesystem, in DIR (packaging/Containerfile's build
        /// stage)
        #[arg(long, value_name = "DIR")]
        rootfs: Option<std::path::PathBuf>,
    },
    /// Inside a kernel-matrix guest: mount bpffs, load virtio_net, run the plan in OUT
    #[command(hide = true)]
    KernelGuest {
        #[arg(long)]
        out: std::path::PathBuf,
        #[arg(long)]
        mcfilter: std::path::PathBuf,
        /// The possible CPUs the boot gave the guest (checked)
        #[arg(long)]
        possible_cpus: u32,
    },
    /// Differential fuzzing: N generated frames through the real program and the oracle
    Fuzz {
        /// How many frames
        #[arg(long, default_value_t = 10_000_000)]
        packets: u64,
        /// The generator's seed (a failure prints the one to reproduce it with)
        #[arg(long, default_value_t = 0x6d63_6669_6c74_6572)]
        seed: u64,
    },
}

/// `cargo` arguments that build the release binary (without the test-only features).
const RELEASE_MCFILTER: &[&str] = &[
    "build",
    "--release",
    "--package",
    "mcfilter",
    "--bin",
    "mcfilter",
];

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::run(),
        Command::Lint => lint(),
        Command::Test { kernel, args } => test(&kernel, &args),
        Command::KernelGuest {
            out,
            mcfilter,
            possible_cpus,
        } => kernels::guest(&out, &mcfilter, possible_cpus),
        Command::Demo => demo(),
        Command::Fuzz { packets, seed } => fuzz(packets, seed),
        Command::Bench { baseline, args } => bench(baseline.as_deref(), &args),
        Command::Package => package::run(),
        Command::Image { rootfs } => image::run(rootfs.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The features every build of `cargo xtask test` enables (one set, so cargo builds each crate and
/// the eBPF object once): the crash tests' fault injection, which release builds leave out.
pub const TEST_FEATURES: [&str; 2] = ["--features", "mcfilter/fault-injection"];

fn lint() -> anyhow::Result<()> {
    Cmd::new("cargo")
        .args(["fmt", "--all", "--", "--check"])
        .run()?;
    Cmd::new("cargo")
        .args([
            "clippy",
            "--workspace",
            "--exclude",
            "mcfilter-ebpf",
            "--all-targets",
        ])
        .args(TEST_FEATURES)
        .args(["--", "-D", "warnings"])
        .run()?;
    // The libraries' documentation: every public item documented (`missing_docs`), every
    // intra-doc link resolved.
    Cmd::new("cargo")
        .args([
            "doc",
            "--no-deps",
            "--package",
            "mcfilter",
            "--package",
            "mcfilter-common",
        ])
        .env("RUSTDOCFLAGS", "-D warnings")
        .run()?;
    // The eBPF crate is no_std: lint it for the host with panic=abort, which needs -Z (and a
    // target dir of its own, so the flags do not invalidate the main build).
    Cmd::new("cargo")
        .args(["clippy", "--package", "mcfilter-ebpf", "--all-targets"])
        .args(["--target-dir", "target/clippy-ebpf"])
        .args([
            "--",
            "-D",
            "warnings",
            "-C",
            "panic=abort",
            "-Zpanic_abort_tests",
        ])
        .env("RUSTC_BOOTSTRAP", "1")
        .run()
}

/// Builds the `mcfilter` binary (with `features`) and returns its path.
fn build_mcfilter(extra_bins: &[&str], features: &[&str]) -> anyhow::Result<std::path::PathBuf> {
    let mut cmd = Cmd::new("cargo");
    cmd.args(["build", "--package", "mcfilter", "--bin", "mcfilter"]);
    cmd.args(features);
    for bin in extra_bins {
        cmd.args(["--package", "mcfilter-tests", "--bin", bin]);
    }
    cmd.run()?;
    let bin = workspace_root()?.join("target/debug/mcfilter");
    anyhow::ensure!(bin.exists(), "cargo built no {}", bin.display());
    Ok(bin)
}

fn test(kernel: &str, args: &[String]) -> anyhow::Result<()> {
    let (on_host, guests) = kernels::select(kernel)?;
    setup::run()?;
    lint()?;
    let mut tally = Tally::default();
    if !on_host {
        let bin = build_mcfilter(&[], &TEST_FEATURES)?;
        let result = kernels::run(&guests, &bin, &mut tally);
        println!("tests: {} passed, {} failed", tally.passed, tally.failed);
        return result;
    }
    // Tier 1: host unit tests, no root needed.
    Cmd::new("cargo")
        .args([
            "test",
            "--package",
            "mcfilter",
            "--package",
            "mcfilter-common",
            "--package",
            "xtask",
        ])
        .args(TEST_FEATURES)
        .run_tee(|line| tally.read(line))?;
    // Tiers 2-4: the real program through BPF_PROG_TEST_RUN, in namespaces, and the CLI;
    // the pod tests run the container image built around the same binary.
    let bin = build_mcfilter(&[], &TEST_FEATURES)?;
    let out = workspace_root()?.join("target/tmp");
    let layout = image::build(&bin, &out.join("image"))?;
    let result = Cmd::new("cargo")
        .args(["test", "--package", "mcfilter-tests"])
        .args(TEST_FEATURES)
        .arg_str("--")
        .args(args)
        .env("MCFILTER_BIN", &bin)
        .env("MCFILTER_IMAGE", image::reference(&layout))
        .run_tee(|line| tally.read(line))
        .context("privileged tests failed")
        .and_then(|()| packaging_checks(&bin, &layout, &out, &mut tally))
        .and_then(|()| kernels::run(&guests, &bin, &mut tally));
    println!("tests: {} passed, {} failed", tally.passed, tally.failed);
    result
}

/// Tier 5: the Debian package and the container image (`layout`), built around the binary
/// under test in `out` and checked (see [`package::check`], [`image::check`]); reported like
/// tests.
fn packaging_checks(
    bin: &std::path::Path,
    layout: &std::path::Path,
    out: &std::path::Path,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let package = package::build(bin, &out.join("package"))
        .and_then(|deb| package::check(&deb, &out.join("package/root")));
    let image = image::check(layout, &out.join("image/check"));
    let mut failed = Vec::new();
    for (name, result) in [
        (
            "package::the_deb_installs_into_a_scratch_root_runs_and_verifies",
            package,
        ),
        (
            "image::the_image_holds_only_what_mcfilter_needs_and_runs_it",
            image,
        ),
    ] {
        let (verdict, passed, failures) = match result {
            Ok(()) => ("ok", 1, 0),
            Err(err) => {
                eprintln!("xtask: {name}: {err:#}");
                failed.push(name);
                ("FAILED", 0, 1)
            }
        };
        println!("test {name} ... {verdict}");
        let summary =
            format!("test result: {verdict}. {passed} passed; {failures} failed; 0 ignored");
        println!("{summary}");
        tally.read(&summary);
    }
    anyhow::ensure!(failed.is_empty(), "failed: {}", failed.join(", "));
    Ok(())
}

fn bench(baseline: Option<&str>, args: &[String]) -> anyhow::Result<()> {
    setup::run()?;
    setup::debian_packages(setup::BENCH_PACKAGES)?;
    let baseline = baseline.map(baseline_object).transpose()?;
    Cmd::new("cargo")
        .args(RELEASE_MCFILTER)
        .args(["--package", "mcfilter-tests", "--bin", "mcfilter-bench"])
        .run()?;
    let release = workspace_root()?.join("target/release");
    let mut bench = Cmd::new(release.join("mcfilter-bench"));
    if let Some(object) = &baseline {
        bench.arg_str("--baseline").args([object]);
    }
    bench
        .args(args)
        .env("MCFILTER_BIN", release.join("mcfilter"))
        .run()
}

fn fuzz(packets: u64, seed: u64) -> anyhow::Result<()> {
    setup::run()?;
    Cmd::new("cargo")
        .args([
            "test",
            "--release",
            "--package",
            "mcfilter-tests",
            "--test",
            "verdicts",
        ])
        .args([
            "generated_frames_match_the_oracle",
            "--",
            "--exact",
            "--nocapture",
        ])
        .env("MCFILTER_PACKETS", packets.to_string())
        .env("MCFILTER_SEED", seed.to_string())
        .run()
}

fn demo() -> anyhow::Result<()> {
    setup::run()?;
    let bin = build_mcfilter(&["mcfilter-demo"], &[])?;
    let demo = workspace_root()?.join("target/debug/mcfilter-demo");
    // Ctrl-C reaches the demo too; it cleans its lab up, so wait for it rather than die first.
    util::ignore_sigint();
    Cmd::new(demo).env("MCFILTER_BIN", &bin).run()
}

/// Builds the XDP program as it was at git revision `rev` (in a worktree under target/bench) and
/// copies its object to target/bench/baseline-REV.o.
fn baseline_object(rev: &str) -> anyhow::Result<std::path::PathBuf> {
    let root = workspace_root()?;
    let worktree = root.join("target/bench/baseline-tree");
    let _ = Cmd::new("git")
        .args(["worktree", "remove", "--force"])
        .args([&worktree])
        .output();
    Cmd::new("git")
        .args(["worktree", "add", "--detach"])
        .args([&worktree])
        .arg_str(rev)
        .run()?;
    let built = std::process::Command::new("cargo")
        .args(RELEASE_MCFILTER)
        .args(["--message-format", "json"])
        // A target dir of its own: cargo gives a workspace package the same build dirs wherever
        // its sources are, so in the main target dir the baseline's build script would write
        // its object where this build's is, and this build, finding its build script's run
        // fresh, would embed the baseline's program and compare it with itself.
        .env(
            "CARGO_TARGET_DIR",
            root.join("target/bench/baseline-target"),
        )
        .current_dir(&worktree)
        .output()
        .context("building the baseline")?;
    let _ = Cmd::new("git")
        .args(["worktree", "remove", "--force"])
        .args([&worktree])
        .output();
    anyhow::ensure!(
        built.status.success(),
        "building mcfilter at {rev} failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    // The build script that ran in the worktree's mcfilter package left the object in its
    // OUT_DIR.
    let package = format!("path+file://{}/mcfilter#", worktree.display());
    let out_dir = String::from_utf8_lossy(&built.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "build-script-executed")
        .filter(|msg| {
            msg["package_id"]
                .as_str()
                .is_some_and(|id| id.starts_with(&package))
        })
        .find_map(|msg| msg["out_dir"].as_str().map(std::path::PathBuf::from))
        .with_context(|| format!("no build script output for mcfilter at {rev}"))?;
    let object = root.join(format!("target/bench/baseline-{}.o", rev.replace('/', "-")));
    std::fs::copy(out_dir.join("mcfilter"), &object)
        .with_context(|| format!("copying the baseline object from {}", out_dir.display()))?;
    eprintln!("xtask: baseline {rev}: {}", object.display());
    Ok(object)
}
