//! Network namespaces as RAII guards: made with a unique name, removed on drop (also when the
//! test panics), and a way to run code or commands inside one.

use std::{
    fs::File,
    os::fd::AsRawFd as _,
    path::PathBuf,
    process::{Command, Output},
};

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates `<tag><unique>` with loopback up.
    pub fn new(tag: &str) -> Self {
        let name = crate::unique(tag);
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace file, for `nsenter --net=` and setns.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip -n <ns> <args>`, panicking with ip's message if it fails.
    pub fn ip(&self, args: &[&str]) {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args));
    }

    /// The id of the XDP program on `iface` here, as netlink reports it (`ip -j link`).
    pub fn xdp_program(&self, iface: &str) -> Option<u64> {
        let out = run(self
            .command("ip")
            .args(["-j", "link", "show", "dev", iface]));
        let links: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j");
        links[0]["xdp"]["prog"]["id"].as_u64()
    }

    /// A command that runs `program` inside the namespace (nsenter keeps the host's /sys and
    /// bpffs, unlike `ip netns exec`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program);
        command
    }

    /// Runs `script` with `sh` here, in a private mount namespace whose /sys/fs/bpf is a bpffs
    /// of its own, mounted world-writable and sticky (1777, as bpffs mounts without a mode), so
    /// unprivileged users can be played without touching the host's bpffs. `$MCF` is the mcfilter
    /// binary; `nobody CMD...` runs a command as uid 65534 without capabilities, and `nobody_with
    /// CAPS CMD...` with those (setpriv's `+bpf,...` form) as ambient capabilities.
    pub fn private_bpffs_script(&self, script: &str) -> Output {
        let prelude = format!(
            "set -u; mount -t bpf -o mode=1777 bpf /sys/fs/bpf || exit 90; MCF={}; \
             nobody() {{ setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all \"$@\"; }}; \
             nobody_with() {{ c=$1; shift; setpriv --reuid=65534 --regid=65534 --clear-groups \
               --inh-caps=$c --ambient-caps=$c \"$@\"; }}; ",
            crate::cli::binary().display()
        );
        self.command("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(prelude + script)
            .output()
            .expect("run unshare")
    }

    /// Runs `f` on a thread that has entered the namespace: sockets it makes live there.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = File::open(self.path()).expect("open netns file");
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // SAFETY: a valid namespace fd; setns changes only this thread.
                    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                    f()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Runs a command to completion, panicking with its stderr if it fails.
pub fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    output
}

/// The `case NAME: TEXT` lines a script printed, by name (see
/// [`NetNs::private_bpffs_script`]).
pub fn script_cases(out: &Output) -> std::collections::BTreeMap<String, String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.strip_prefix("case "))
        .filter_map(|line| line.split_once(": "))
        .map(|(name, text)| (name.to_owned(), text.trim().to_owned()))
        .collect()
}
