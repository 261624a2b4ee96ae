//! The guest's side of the kernel matrix: `cargo xtask kernel-guest` prepares the guest (bpffs,
//! the NICs' driver) and runs the plan the host wrote, logging each step.

use std::{fs, io::Write as _, path::Path, process::Command, time::Instant};

use anyhow::{Context as _, ensure};

use super::GUEST_PACKETS;

/// `cargo xtask kernel-guest`, inside the guest: prepare, run the plan, record the outcome.
pub(crate) fn guest(out: &Path, mcfilter: &Path, possible_cpus: u32) -> anyhow::Result<()> {
    let mut log = fs::File::create(out.join("log"))?;
    let result = guest_plan(out, mcfilter, possible_cpus, &mut log);
    if let Err(err) = &result {
        writeln!(log, "kernel-guest: {err:#}")?;
    }
    fs::write(out.join("rc"), if result.is_ok() { "0" } else { "1" })?;
    result
}

fn guest_plan(
    out: &Path,
    mcfilter: &Path,
    possible_cpus: u32,
    log: &mut fs::File,
) -> anyhow::Result<()> {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease")?;
    let cpus = |list: &str| -> anyhow::Result<u32> {
        let path = format!("/sys/devices/system/cpu/{list}");
        let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        count_cpus(&text).with_context(|| format!("{path} says {text:?}"))
    };
    let (possible, online) = (cpus("possible")?, cpus("online")?);
    writeln!(
        log,
        "kernel-guest: Linux {}, {possible} possible CPUs, {online} online",
        release.trim()
    )?;
    // The kernel memory check means the CPUs the boot asked for, not whatever the guest got.
    ensure!(
        possible == possible_cpus,
        "the guest has {possible} possible CPUs, the boot asked for {possible_cpus}"
    );
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

/// The CPUs in a kernel CPU list such as `0-63` or `0-1,4` (`/sys/devices/system/cpu/possible`).
fn count_cpus(list: &str) -> anyhow::Result<u32> {
    let mut count = 0;
    for range in list.trim().split(',') {
        let (first, last) = range.split_once('-').unwrap_or((range, range));
        let (first, last): (u32, u32) = (first.parse()?, last.parse()?);
        ensure!(first <= last, "the range {range} runs backwards");
        count += last - first + 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::count_cpus;

    #[test]
    fn cpu_lists_count_their_cpus() {
        assert_eq!(count_cpus("0-63\n").unwrap(), 64);
        assert_eq!(count_cpus("0").unwrap(), 1);
        assert_eq!(count_cpus("0-1,4,6-7").unwrap(), 5);
        assert!(count_cpus("").is_err());
        assert!(count_cpus("3-1").is_err());
        assert!(count_cpus("0-x").is_err());
    }
}
