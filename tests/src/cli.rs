//! Runs the real `mcfilter` binary, inside a namespace and with a state dir of its own, and
//! cleans that state dir up afterwards whatever the test did.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::OnceLock,
};

use crate::netns::NetNs;

/// The `mcfilter` binary: `MCFILTER_BIN` (set by `cargo xtask test`), else built with cargo.
pub fn binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os("MCFILTER_BIN") {
            return PathBuf::from(path);
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let output = Command::new(cargo)
            .args(["build", "--package", "mcfilter", "--bin", "mcfilter"])
            // The crash tests' fault injection, as `cargo xtask test` builds it.
            .args(["--features", "fault-injection"])
            .args(["--message-format=json-render-diagnostics"])
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo build");
        assert!(
            output.status.success(),
            "cargo build --package mcfilter failed"
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|msg| msg["target"]["name"] == "mcfilter")
            .find_map(|msg| msg["executable"].as_str().map(PathBuf::from))
            .expect("cargo build reported the mcfilter executable")
    })
}

/// The CLI with a state dir of its own, optionally run inside a namespace.
pub struct Mcfilter {
    state_dir: PathBuf,
    netns: Option<PathBuf>,
    mount_ns: Option<PathBuf>,
}

impl Mcfilter {
    /// A fresh state dir under /sys/fs/bpf, named after `tag`.
    pub fn new(tag: &str) -> Self {
        Mcfilter {
            state_dir: PathBuf::from("/sys/fs/bpf").join(crate::unique(tag)),
            netns: None,
            mount_ns: None,
        }
    }

    /// Runs the CLI inside `ns` (interface names resolve there).
    pub fn in_netns(mut self, ns: &NetNs) -> Self {
        self.netns = Some(ns.path());
        self
    }

    /// Runs the CLI inside the mount namespace `mnt` too (its bpffs, not the host's; the state
    /// dir goes with that bpffs).
    pub fn in_mount_ns(mut self, mnt: PathBuf) -> Self {
        self.mount_ns = Some(mnt);
        self
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The command for `args`, with `--state-dir` appended.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = if self.netns.is_some() || self.mount_ns.is_some() {
            let mut c = Command::new("nsenter");
            if let Some(ns) = &self.netns {
                c.arg(format!("--net={}", ns.display()));
            }
            if let Some(mnt) = &self.mount_ns {
                c.arg(format!("--mount={}", mnt.display()));
            }
            c.arg("--").arg(binary());
            c
        } else {
            Command::new(binary())
        };
        command
            .args(args)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .stdin(Stdio::null());
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run mcfilter")
    }

    /// Runs `args`, which must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "mcfilter {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8 output")
    }

    /// Runs `args` with the fault injection set to abort at step `step` (a binary built with
    /// the `fault-injection` feature): whether it was killed (otherwise it finished, and
    /// successfully).
    pub fn killed_at(&self, args: &[&str], step: usize) -> bool {
        use std::os::unix::process::ExitStatusExt as _;
        let out = self
            .command(args)
            .env(mcfilter::fault::CRASH_AFTER_ENV, step.to_string())
            .output()
            .expect("run mcfilter");
        let killed = out.status.signal() == Some(libc::SIGABRT);
        assert!(
            killed || out.status.success(),
            "{args:?} at step {step}: {out:?}"
        );
        killed
    }

    /// Runs `args` (which must print JSON) and parses stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|err| panic!("{args:?}: bad JSON {out:?}: {err}"))
    }

    /// Runs `args`, which must fail with one line on stderr (and, with `--json`, that line as a
    /// JSON error on stdout); returns (exit code, that line).
    pub fn fails(&self, args: &[&str]) -> (i32, String) {
        let output = self.run(args);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(!output.status.success(), "mcfilter {args:?} should fail");
        assert_eq!(
            stderr.lines().count(),
            1,
            "one line on stderr, got {stderr:?}"
        );
        if args.contains(&"--json") {
            // The same line, as `{"error": ...}` for scripts.
            let error: serde_json::Value =
                serde_json::from_slice(&output.stdout).expect("a JSON error on stdout");
            assert_eq!(
                error["error"].as_str().map(|e| format!("mcfilter: {e}")),
                Some(stderr.trim_end().to_owned())
            );
        } else {
            assert!(output.stdout.is_empty(), "nothing on stdout on failure");
        }
        (
            output.status.code().unwrap_or(-1),
            stderr.trim_end().to_owned(),
        )
    }
}

impl Drop for Mcfilter {
    fn drop(&mut self) {
        // Whatever the test left behind, the lock dir next to the state dir included.
        crate::remove_pins(&self.state_dir);
        let _ = std::fs::remove_dir(mcfilter::StateDir::new(&self.state_dir).lock_dir());
    }
}
