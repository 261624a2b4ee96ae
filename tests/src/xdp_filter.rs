//! xdp-filter (Debian's xdp-tools), the peer the chaining tests put mcfilter in front of, run in
//! a mount namespace of its own whose /sys/fs/bpf is a private bpffs and /run a private tmpfs:
//! xdp-filter pins its maps and keeps its lock file at fixed paths there, so tests running side
//! by side (and whatever the host runs) each get their own. mcfilter itself keeps using the host's bpffs: chaining only needs the program's
//! id. Removed on drop, also when the test panics.

use std::{
    fs,
    path::PathBuf,
    process::{Command, Output},
};

use crate::netns::{NetNs, run};

pub struct XdpFilter {
    /// A private bind mount holding `mnt`, which keeps the mount namespace alive.
    dir: PathBuf,
    netns: PathBuf,
}

impl XdpFilter {
    /// A private bpffs for xdp-filter, which runs in `ns`.
    pub fn new(tag: &str, ns: &NetNs) -> Self {
        let dir = PathBuf::from("/run").join(crate::unique(tag));
        fs::create_dir_all(&dir).expect("a dir for the mount namespace");
        let this = XdpFilter {
            dir,
            netns: ns.path(),
        };
        let dir = this.dir.to_str().expect("a UTF-8 path");
        run(Command::new("mount").args(["--bind", dir, dir]));
        run(Command::new("mount").args(["--make-private", dir]));
        fs::write(this.mnt(), b"").expect("the mount namespace's file");
        // Its lock file (/run/xdp-filter.lck) too: xdp-filter refuses to run while another
        // one's lock file exists.
        run(Command::new("unshare")
            .arg(format!("--mount={}", this.mnt().display()))
            .args(["--propagation", "private", "--", "sh", "-ec"])
            .arg(
                "mount -t bpf -o mode=0700 bpf /sys/fs/bpf; mount -t tmpfs -o mode=0755 tmpfs /run",
            ));
        this
    }

    fn mnt(&self) -> PathBuf {
        self.dir.join("mnt")
    }

    /// The mount namespace (its bind-mounted file), to run mcfilter in next to xdp-filter:
    /// libxdp's dispatcher keeps its state in the bpffs both see.
    pub fn mount_ns(&self) -> PathBuf {
        self.mnt()
    }

    /// `xdp-filter ARGS` in its mount namespace and the test's network namespace.
    pub fn command(&self, args: &[&str]) -> Command {
        self.tool("xdp-filter", args)
    }

    /// `PROGRAM ARGS` (xdp-loader, bpftool) in xdp-filter's mount namespace and the test's
    /// network namespace.
    pub fn tool(&self, program: &str, args: &[&str]) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--mount={}", self.mnt().display()))
            .arg(format!("--net={}", self.netns.display()))
            .args(["--", program])
            .args(args);
        command
    }

    /// Runs `xdp-filter ARGS`, which must succeed.
    pub fn ok(&self, args: &[&str]) -> Output {
        run(&mut self.command(args))
    }
}

impl Drop for XdpFilter {
    fn drop(&mut self) {
        // The programs go with the test's interfaces; the pins with the bpffs.
        let _ = Command::new("umount").arg(self.mnt()).status();
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
