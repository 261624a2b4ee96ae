//! The guest's side of the kernel matrix: `cargo xtask kernel-guest` prepares the guest (bpffs,
//! the NICs' driver) and runs the plan the host wrote, logging each step.

use std::{fs, io::Write as _, path::Path, process::Command, time::Instant};

use anyhow::{Context as _, ensure};

use super::GUEST_PACKETS;

/// `cargo xtask kernel-guest`, inside the guest: prepare, run the plan, record the outcome.
pub(crate) fn guest(out: &Path, mcfilter: &Path) -> anyhow::Result<()> {
    let mut log = fs::File::create(out.join("log"))?;
    let result = guest_plan(out, mcfilter, &mut log);
    if let Err(err) = &result {
        writeln!(log, "kernel-guest: {err:#}")?;
    }
    fs::write(out.join("rc"), if result.is_ok() { "0" } else { "1" })?;
    result
}

fn guest_plan(out: &Path, mcfilter: &Path, log: &mut fs::File) -> anyhow::Result<()> {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease")?;
    writeln!(log, "kernel-guest: Linux {}", release.trim())?;
    let mounted = Command::new("mount")
        .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
        .status()?;
    ensure!(mounted.success(), "cannot mount bpffs in the guest");
    // The looped NICs' driver, and TUN for the IP-framed end-to-end test.
    for module in ["virtio_net", "tun"] {
        let loaded = Command::new("modprobe").arg(module).status()?;
        ensure!(loaded.success(), "cannot load {module} in the guest");
    }
    // The looped NICs come up as eth0 and eth1, the names the tests' labs give their veths; a
    // 6.12 kernel refuses a veth created into another namespace under a name this one holds.
    for (index, nic) in ["eth0", "eth1"].iter().enumerate() {
        let renamed = Command::new("ip")
            .args(["link", "set", "dev", nic, "name", &format!("vloop{index}")])
            .status()?;
        ensure!(renamed.success(), "cannot rename the guest's {nic}");
    }
    let plan = fs::read_to_string(out.join("plan"))?;
    let mut failed = Vec::new();
    for line in plan.lines() {
        let mut fields = line.split('\t').filter(|f| !f.is_empty());
        let exe = fields.next().context("an empty plan line")?;
        let args: Vec<&str> = fields.collect();
        writeln!(log, "kernel-guest: $ {exe} {}", args.join(" "))?;
        let started = Instant::now();
        let output = Command::new(exe)
            .args(&args)
            .args(["--test-threads", "1"])
            .env("MCFILTER_BIN", mcfilter)
            .env("MCFILTER_PACKETS", GUEST_PACKETS)
            .env("CI", "true")
            .output()
            .with_context(|| format!("running {exe}"))?;
        log.write_all(&output.stdout)?;
        log.write_all(&output.stderr)?;
        writeln!(
            log,
            "kernel-guest: {} in {:.0} s",
            output.status,
            started.elapsed().as_secs_f64()
        )?;
        if !output.status.success() {
            failed.push(exe.to_owned());
        }
    }
    ensure!(failed.is_empty(), "failed: {}", failed.join(", "));
    Ok(())
}
