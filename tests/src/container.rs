//! A real systemd as PID 1, for the unit's tests: systemd-nspawn boots this machine's own
//! systemd (252 on Debian 12) in a container whose root is a throwaway tmpfs with the host's
//! /usr (`--volatile=yes`), on a network namespace of the test's and a bpffs of its own, with
//! the files the test binds in. Commands run inside through nsenter; the container is powered
//! off and its bpffs unmounted on drop.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::netns::{NetNs, run};

/// How long a boot may take (two emulated CPUs under load: about 20 s seen).
const BOOT: Duration = Duration::from_secs(120);

/// A booted systemd container, powered off on drop.
pub struct SystemdContainer {
    nspawn: Child,
    init: u32,
    dir: PathBuf,
    bpffs: PathBuf,
}

impl SystemdContainer {
    /// Boots a container on `netns`, with a bpffs of its own at /sys/fs/bpf, the capabilities
    /// the unit grants (nspawn's own set holds neither CAP_BPF nor CAP_PERFMON) and bpf(2)
    /// allowed by nspawn's filter, and `binds` (host path, container path), read-only. The
    /// default target is basic.target: none of the host's services start with it.
    pub fn boot(netns: &NetNs, binds: &[(&Path, &str)]) -> Self {
        let dir = std::env::temp_dir().join(crate::unique("nspawn"));
        let bpffs = dir.join("bpffs");
        fs::create_dir_all(&bpffs).expect("bpffs dir");
        run(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&bpffs));
        let mut command = Command::new("systemd-nspawn");
        command
            .args(["--quiet", "--register=no", "--keep-unit", "--directory=/"])
            .args(["--volatile=yes", "--console=passive"])
            .arg(format!(
                "--network-namespace-path={}",
                netns.path().display()
            ))
            .args(["--capability=CAP_BPF,CAP_PERFMON,CAP_NET_ADMIN"])
            .args(["--system-call-filter=bpf"])
            .arg(format!("--bind={}:/sys/fs/bpf", bpffs.display()));
        for (host, inside) in binds {
            command.arg(format!("--bind-ro={}:{inside}", host.display()));
        }
        let log = fs::File::create(dir.join("console")).expect("console log");
        let nspawn = command
            .args([
                "--boot",
                "systemd.firstboot=off",
                "systemd.unit=basic.target",
            ])
            // The presets enable it on the throwaway root; it would hold network-online.target
            // (which the unit wants) for its two-minute timeout, as nothing configures the
            // test's namespace through networkd.
            .arg("systemd.mask=systemd-networkd-wait-online.service")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("systemd-nspawn");
        let mut container = SystemdContainer {
            init: 0,
            nspawn,
            dir,
            bpffs,
        };
        let deadline = Instant::now() + BOOT;
        while container.init == 0 {
            assert!(
                Instant::now() < deadline,
                "no systemd in the container: {}",
                container.console()
            );
            container.init = init_of(container.nspawn.id()).unwrap_or(0);
            std::thread::sleep(Duration::from_millis(100));
        }
        // Until boot is done: "running", or "degraded" if a unit the container cannot run
        // failed (systemctl answers only once systemd listens).
        loop {
            let out = container.exec(&["systemctl", "is-system-running"]);
            let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if state == "running" || state == "degraded" {
                return container;
            }
            assert!(
                Instant::now() < deadline,
                "the container's systemd is {state:?} ({}): {}",
                String::from_utf8_lossy(&out.stderr).trim(),
                container.console()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The bpffs the container sees at /sys/fs/bpf, on the host.
    pub fn bpffs(&self) -> &Path {
        &self.bpffs
    }

    /// Runs `args` inside (every namespace of the container's PID 1).
    pub fn exec(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .args(["--target", &self.init.to_string(), "--all", "--"])
            .args(args)
            .output()
            .expect("nsenter")
    }

    /// What systemd and nspawn printed on the console.
    pub fn console(&self) -> String {
        fs::read_to_string(self.dir.join("console")).unwrap_or_default()
    }
}

impl Drop for SystemdContainer {
    fn drop(&mut self) {
        // A clean power-off, then nspawn is killed if it did not end in 30 s.
        let _ = self.exec(&["systemctl", "poweroff", "--no-block"]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if matches!(self.nspawn.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
        let _ = Command::new("umount").arg(&self.bpffs).status();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The container's init: the child of nspawn named systemd.
fn init_of(nspawn: u32) -> Option<u32> {
    fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let status = fs::read_to_string(entry.path().join("status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .map(str::trim)
        };
        (field("PPid:")? == nspawn.to_string() && field("Name:")? == "systemd").then_some(pid)
    })
}
