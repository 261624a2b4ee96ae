//! The kernel matrix of `cargo xtask test`: the suites that touch the kernel, run again inside
//! Debian's own kernels booted under qemu (TCG: this machine kind has no KVM) with virtme-ng.
//!
//! Each kernel is a Debian package, fetched once with `apt-get download` and unpacked under
//! `target/kernels/` (the guest links its modules from there: a cache under /var is hidden from
//! it). The guest sees this machine's root filesystem read-only, so
//! it runs the test executables the host built; `cargo xtask kernel-guest` (this binary, inside
//! the guest) mounts bpffs, loads virtio_net for the two looped NICs and runs the plan, writing
//! its log and exit status into a directory the host shares read-write. Emulation is about ten
//! times slower than the host, so the plan is a chosen subset (see [`plan`]).

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use crate::{
    setup,
    tally::Tally,
    util::{Cmd, workspace_root},
};

mod guest;

pub(crate) use guest::guest;

/// A kernel of the matrix.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Kernel {
    /// The name `--kernel` takes.
    pub name: &'static str,
    /// The Debian package, pinned so the README's table says exactly what was tested.
    pub package: &'static str,
    /// Where it comes from, for the README and the messages.
    pub distro: &'static str,
}

/// Debian 12's kernel and Debian 13's (also bookworm-backports'), as Debian's archive has them.
pub(crate) const KERNELS: &[Kernel] = &[
    Kernel {
        name: "6.1",
        package: "linux-image-6.1.0-50-amd64",
        distro: "Debian 12 bookworm",
    },
    Kernel {
        name: "6.12",
        package: "linux-image-6.12.101+deb12-amd64",
        distro: "Debian 13 trixie, bookworm-backports",
    },
];

/// What the guest needs on this machine: qemu, and kmod for virtme-ng's module handling.
const PACKAGES: &[&str] = &["qemu-system-x86", "kmod", "busybox-static"];
/// The virtme-ng release the matrix was built with (PyPI).
const VIRTME_NG: &str = "virtme-ng==1.42";
/// Where unpacked kernels are kept between runs, below the workspace.
const CACHE: &str = "target/kernels/packages";
/// One kernel's boot and plan may take this long under emulation before the run fails.
const GUEST_TIMEOUT: Duration = Duration::from_secs(25 * 60);
/// Generated frames through the program and the oracle, inside a guest.
const GUEST_PACKETS: &str = "100000";

/// The kernels `--kernel` names: `host`, `all`, or a comma-separated list of `host` and
/// [`KERNELS`]' names (`6.1,6.12` runs both guests without the host's suites).
pub(crate) fn select(names: &str) -> anyhow::Result<(bool, Vec<Kernel>)> {
    if names == "all" {
        return Ok((true, KERNELS.to_vec()));
    }
    let mut on_host = false;
    let mut guests: Vec<Kernel> = Vec::new();
    for name in names.split(',') {
        if name == "host" {
            on_host = true;
            continue;
        }
        let kernel = KERNELS.iter().find(|k| k.name == name).with_context(|| {
            let names: Vec<&str> = KERNELS.iter().map(|k| k.name).collect();
            format!(
                "no kernel '{name}' in the matrix; choose host, all or a comma-separated list of host, {}",
                names.join(", ")
            )
        })?;
        if !guests.iter().any(|k| k.name == kernel.name) {
            guests.push(*kernel);
        }
    }
    Ok((on_host, guests))
}

/// One test executable of the plan, with the libtest arguments that choose its tests.
struct Step {
    exe: PathBuf,
    args: Vec<String>,
}

/// The kernel that also runs `--multiprog` killed at every step (a program load per step,
/// about four minutes under emulation): Debian 12's, the oldest that shares through libxdp's
/// dispatcher.
const KILLS_KERNEL: &str = "6.1";

/// What runs inside each kernel, chosen to keep the two guests under 15 minutes of CI: the
/// verdict table, the generated-frame comparison (with fewer frames) and the IP-framed one, and
/// the per-CPU counters through BPF_PROG_TEST_RUN; the namespace end-to-end tests of the
/// datapath (native and skb mode, allowed and denied clients with live allow-list changes,
/// exact per-source stats); chaining to another XDP program by id (the program array, the tail
/// call and the atomic netlink swaps, whose rules differ between kernels); sharing the interface
/// through libxdp's dispatcher next to xdp-filter (`--multiprog`, which needs the extension
/// programs these kernels run and the host's refuses; killed at every step in
/// [`KILLS_KERNEL`]); and the kernel suite
/// (native XDP on virtio_net, the full allow-list trie, batched map operations, the events
/// ring, the verifier's headroom). The rest (the table with an indexed list, dry-run, policy
/// toggles, detach, TUN devices, BIG TCP, chaining to xdp-filter, which on 6.1 would load
/// libxdp's dispatcher) exercises mcfilter's own code more than the kernel's and runs on the
/// host.
fn plan(executables: &[(String, PathBuf)], kernel: &Kernel) -> anyhow::Result<Vec<Step>> {
    let exe = |name: &str| executable(executables, name);
    let tests = |names: &[&str]| names.iter().map(std::string::ToString::to_string).collect();
    Ok(vec![
        Step {
            exe: exe("verdicts")?,
            args: tests(&[
                "verdict_table_matches_the_oracle_and_the_fixtures",
                "generated_frames_match_the_oracle",
                "ip_framed_packets_match_the_oracle",
                "drops_are_counted_by_source_with_bytes",
            ]),
        },
        Step {
            exe: exe("e2e")?,
            args: tests(&[
                // Native and skb.
                "udp_to_protected_port_is_never_delivered",
                "allowed_clients_use_memcached_and_the_allow_list_changes_live",
                "stats_count_exactly_the_packets_a_source_sent",
            ]),
        },
        Step {
            exe: exe("chain")?,
            args: tests(&["mcfilter_chains_to_a_program_by_id_and_hands_it_the_interface"]),
        },
        Step {
            // libxdp's dispatcher, which these kernels run and the host's does not.
            exe: exe("multiprog")?,
            args: tests(if kernel.name == KILLS_KERNEL {
                &[
                    "multiprog_shares_the_interface_with_xdp_filter_in_both_orders_or_is_refused",
                    "a_multiprog_attach_or_detach_killed_at_any_step_leaves_the_other_component_running",
                ]
            } else {
                &["multiprog_shares_the_interface_with_xdp_filter_in_both_orders_or_is_refused"]
            }),
        },
        Step {
            exe: exe("kernels")?,
            // The suite's virtio_net test needs the guest's looped NICs, so it is ignored on the
            // host and run here.
            args: vec!["--include-ignored".into(), "--show-output".into()],
        },
    ])
}

/// The kernel that also boots with as many CPUs as a big edge host has, for the kernel memory
/// check: 64 CPUs of which `maxcpus=1` brings up one, so per-CPU maps are sized for 64
/// possible CPUs and the guest boots as fast as a small one. 6.12, as `bpftool map show` reports
/// the kernel's own account there (`htab_map_mem_usage`, 6.4 and later), which the formula
/// follows; 6.1 reports an older approximation.
///
/// One online CPU, not two: with 64 possible CPUs and two online, the guest panicked in 2 of
/// 15 boots (2026-12-04) as it patched a static key at boot ("sched_clock: Marking stable",
/// then an int3 oops in `sched_clock_cpu` on the other CPU): QEMU's TCG does not retire a
/// stale translation on one vCPU while another patches the code. With one CPU online there
/// is no other CPU (15 of 15 boots passed); the two-CPU guests booted 30 of 30 times.
const WIDE_KERNEL: &str = "6.12";
const WIDE_CPUS: u32 = 64;
/// The CPUs the wide boot brings up (`maxcpus=`).
const WIDE_ONLINE: u32 = 1;
/// The CPUs a guest runs on.
const GUEST_CPUS: u32 = 2;

/// One boot of a kernel: its plan, where it runs (its name in the log and its run directory),
/// its CPUs and what it adds to the kernel's command line.
struct Boot<'a> {
    kernel: &'a Kernel,
    name: String,
    cpus: u32,
    append: Option<String>,
    plan: Vec<Step>,
}

/// The boots of `kernels`: each with its [`plan`], and [`WIDE_KERNEL`] once more with
/// [`WIDE_CPUS`] possible CPUs for `status`'s kernel memory against the formula and bpftool
/// (and an attach's total under 64 MiB).
fn boots<'a>(
    kernels: &'a [Kernel],
    executables: &[(String, PathBuf)],
) -> anyhow::Result<Vec<Boot<'a>>> {
    let mut boots = Vec::new();
    for kernel in kernels {
        boots.push(Boot {
            kernel,
            name: kernel.name.to_owned(),
            cpus: GUEST_CPUS,
            append: None,
            plan: plan(executables, kernel)?,
        });
        if kernel.name == WIDE_KERNEL {
            boots.push(Boot {
                kernel,
                name: format!("{}-{WIDE_CPUS}cpus", kernel.name),
                cpus: WIDE_CPUS,
                append: Some(format!("maxcpus={WIDE_ONLINE}")),
                plan: vec![Step {
                    exe: executable(executables, "cli")?,
                    args: vec!["status_shows_the_kernel_memory_the_formula_predicts".into()],
                }],
            });
        }
    }
    Ok(boots)
}

/// The test executable `name` of mcfilter-tests.
fn executable(executables: &[(String, PathBuf)], name: &str) -> anyhow::Result<PathBuf> {
    executables
        .iter()
        .find_map(|(n, path)| (n == name).then(|| path.clone()))
        .with_context(|| format!("cargo built no test executable '{name}'"))
}

/// Builds what the guests run, then boots each kernel in turn and runs the plan inside. Every
/// guest's log is printed and its summary lines go into `tally`; a kernel that cannot be
/// fetched or booted fails. (The guests do not run side by side: the end-to-end tests keep
/// both of a guest's CPUs busy, so two guests on this machine's two CPUs took as long as one
/// after the other, each twice as slow.)
pub(crate) fn run(kernels: &[Kernel], mcfilter: &Path, tally: &mut Tally) -> anyhow::Result<()> {
    if kernels.is_empty() {
        return Ok(());
    }
    install()?;
    let executables = test_executables()?;
    let mut failed = Vec::new();
    for boot_of in boots(kernels, &executables)? {
        let kernel = boot_of.kernel;
        let dir = fetch(kernel)?;
        eprintln!(
            "xtask: booting {} on {} CPUs{} under qemu (TCG); the guest's log follows when it is done",
            kernel.package,
            boot_of.cpus,
            boot_of
                .append
                .as_deref()
                .map(|append| format!(" ({append})"))
                .unwrap_or_default()
        );
        let started = Instant::now();
        let result = boot(&boot_of, &dir, mcfilter);
        let log = run_dir(&boot_of.name)
            .and_then(|out| Ok(fs::read_to_string(out.join("log"))?))
            .unwrap_or_default();
        for line in log.lines() {
            println!("[{}] {line}", boot_of.name);
            tally.read(line);
        }
        eprintln!(
            "xtask: kernel {} ({}): {} in {:.0} s",
            boot_of.name,
            kernel.package,
            if result.is_ok() { "passed" } else { "FAILED" },
            started.elapsed().as_secs_f64()
        );
        if let Err(err) = result {
            eprintln!("xtask: kernel {}: {err:#}", boot_of.name);
            failed.push(boot_of.name);
        }
    }
    ensure!(
        failed.is_empty(),
        "the suites failed inside kernel {}",
        failed.join(", ")
    );
    Ok(())
}

/// Where a boot's guest writes its plan, log and exit status (shared read-write with it).
fn run_dir(boot: &str) -> anyhow::Result<PathBuf> {
    Ok(workspace_root()?.join("target/kernels/runs").join(boot))
}

fn install() -> anyhow::Result<()> {
    setup::debian_packages(PACKAGES)?;
    if Cmd::new("vng").args(["--version"]).output().is_some() {
        eprintln!("setup: virtme-ng: present");
        return Ok(());
    }
    eprintln!("setup: virtme-ng: installing {VIRTME_NG}");
    Cmd::new("pip")
        .args(["install", "--quiet", "--root-user-action=ignore", VIRTME_NG])
        .run()
}

/// Unpacks `kernel`'s package into the cache (once) and returns its directory.
fn fetch(kernel: &Kernel) -> anyhow::Result<PathBuf> {
    let cache = workspace_root()?.join(CACHE);
    let dir = cache.join(kernel.package);
    let done = dir.join(".unpacked");
    if done.exists() {
        return Ok(dir);
    }
    eprintln!("xtask: fetching {} ({})", kernel.package, kernel.distro);
    let download = cache.join("download");
    let _ = fs::remove_dir_all(&download);
    fs::create_dir_all(&download).with_context(|| format!("creating {}", download.display()))?;
    let fetched = || {
        Command::new("apt-get")
            .args(["download", "-q", kernel.package])
            .current_dir(&download)
            .status()
            .is_ok_and(|status| status.success())
    };
    // A fresh machine's package lists may not know the package yet.
    if !fetched() {
        Cmd::new("apt-get").args(["update", "-q"]).run()?;
        if !fetched() {
            bail!(
                "cannot fetch the kernel package {} ({}) with apt-get download; the matrix needs it (`cargo xtask test --kernel host` runs the host's kernel only)",
                kernel.package,
                kernel.distro
            );
        }
    }
    let deb = fs::read_dir(&download)?
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .context("apt-get download left no .deb")?;
    let _ = fs::remove_dir_all(&dir);
    Cmd::new("dpkg-deb")
        .arg_str("-x")
        .args([&deb, &dir])
        .run()?;
    fs::write(&done, "")?;
    let _ = fs::remove_dir_all(&download);
    Ok(dir)
}

/// The test executables of mcfilter-tests, built for the guests, by target name.
fn test_executables() -> anyhow::Result<Vec<(String, PathBuf)>> {
    let output = Command::new("cargo")
        .args(["test", "--package", "mcfilter-tests", "--no-run"])
        .args(crate::TEST_FEATURES)
        .args(["--message-format", "json"])
        .current_dir(workspace_root()?)
        .output()
        .context("cargo test --no-run")?;
    ensure!(
        output.status.success(),
        "building the test executables failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut executables = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(name), Some(exe)) = (
            message["target"]["name"].as_str(),
            message["executable"].as_str(),
        ) else {
            continue;
        };
        if message["target"]["kind"][0] == "test" {
            executables.push((name.to_owned(), PathBuf::from(exe)));
        }
    }
    Ok(executables)
}

/// Boots `boot`'s kernel (with its additions to the command line) with two looped virtio_net
/// NICs and runs its plan inside; the guest's log is left in [`run_dir`].
fn boot(boot: &Boot<'_>, dir: &Path, mcfilter: &Path) -> anyhow::Result<()> {
    let (kernel, plan) = (boot.kernel, &boot.plan);
    let vmlinuz = fs::read_dir(dir.join("boot"))
        .with_context(|| format!("{} has no boot/", dir.display()))?
        .flatten()
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("vmlinuz-"))
        })
        .with_context(|| format!("{} has no vmlinuz", kernel.package))?;
    let out = run_dir(&boot.name)?;
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out)?;
    let mut plan_file = fs::File::create(out.join("plan"))?;
    for step in plan {
        writeln!(
            plan_file,
            "{}\t{}",
            step.exe.display(),
            step.args.join("\t")
        )?;
    }
    drop(plan_file);
    let xtask = std::env::current_exe().context("this xtask binary")?;
    let guest = format!(
        "{} kernel-guest --out {} --mcfilter {} --possible-cpus {}",
        xtask.display(),
        out.display(),
        mcfilter.display(),
        boot.cpus
    );
    let status = Command::new("timeout")
        .arg(GUEST_TIMEOUT.as_secs().to_string())
        .arg("vng")
        .arg("--run")
        .arg(&vmlinuz)
        .args([
            "--disable-kvm",
            "--force-9p",
            "--memory",
            "2G",
            "--cpus",
            &boot.cpus.to_string(),
            // The guest's console, on vng's stderr (vng.err): a guest that panics says why there.
            "--verbose",
        ])
        .args(["--network", "loop"])
        .args(boot.append.iter().flat_map(|append| ["--append", append]))
        .arg("--rwdir")
        .arg(&out)
        .arg("--exec")
        .arg(&guest)
        .stdin(std::process::Stdio::null())
        .stdout(fs::File::create(out.join("vng.log"))?)
        .stderr(fs::File::create(out.join("vng.err"))?)
        .status()
        .context("running vng")?;
    let rc = fs::read_to_string(out.join("rc")).ok();
    match rc.as_deref().map(str::trim) {
        Some("0") => Ok(()),
        Some(rc) => bail!("the plan exited with status {rc} inside the guest"),
        None => bail!(
            "the guest wrote no exit status (vng: {status}; a timeout after {} s says 124); its console is in {}",
            GUEST_TIMEOUT.as_secs(),
            out.join("vng.err").display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::select;

    fn names((host, guests): (bool, Vec<super::Kernel>)) -> (bool, Vec<&'static str>) {
        (host, guests.into_iter().map(|k| k.name).collect())
    }

    #[test]
    fn kernel_lists_choose_the_host_and_guests() {
        assert_eq!(names(select("all").unwrap()), (true, vec!["6.1", "6.12"]));
        assert_eq!(names(select("host").unwrap()), (true, vec![]));
        assert_eq!(names(select("6.12").unwrap()), (false, vec!["6.12"]));
        assert_eq!(
            names(select("6.1,6.12,6.1").unwrap()),
            (false, vec!["6.1", "6.12"])
        );
        assert_eq!(names(select("host,6.1").unwrap()), (true, vec!["6.1"]));
        let err = select("6.1,5.10").unwrap_err().to_string();
        assert!(err.contains("no kernel '5.10'"), "{err}");
    }
}
