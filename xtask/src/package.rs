//! `cargo xtask package`: a Debian package for hosts (Debian 12, Ubuntu 22.04 and later), and
//! the check `cargo xtask test` runs on one: installed into a scratch root, its binary runs, its
//! unit verifies and its config checks.
//!
//! The package holds the binary (the XDP program is inside it) as /usr/bin/mcfilter, the unit
//! (pointing there) in /lib/systemd/system, the documented config and client list as conffiles
//! in /etc/mcfilter, the man pages and the completions where Debian's bash, zsh and fish look.
//! It starts nothing: the example config names an interface the host may not have, so the
//! operator edits it and runs `systemctl enable --now mcfilter`.

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail, ensure};

use crate::util::{Cmd, workspace_root};

/// The newest glibc symbol version the binary may need: Ubuntu 22.04 ships 2.35, Debian 12 2.36.
const GLIBC_AT_MOST: (u32, u32) = (2, 34);
/// Where the package installs the binary (Debian's policy: never /usr/local).
const BINARY: &str = "usr/bin/mcfilter";
const CONFFILES: &[(&str, &str)] = &[
    ("packaging/mcfilter.toml", "etc/mcfilter/mcfilter.toml"),
    ("packaging/clients.txt", "etc/mcfilter/clients.txt"),
];

/// `cargo xtask package`: the release binary, packaged into target/package, then checked.
pub(crate) fn run() -> anyhow::Result<()> {
    Cmd::new("cargo").args(crate::RELEASE_MCFILTER).run()?;
    let root = workspace_root()?;
    let deb = build(
        &root.join("target/release/mcfilter"),
        &root.join("target/package"),
    )?;
    check(&deb, &root.join("target/package/check"))?;
    println!("{}", deb.display());
    Ok(())
}

/// Builds `mcfilter_VERSION_ARCH.deb` in `out` around `binary`; its path.
pub(crate) fn build(binary: &Path, out: &Path) -> anyhow::Result<PathBuf> {
    let root = workspace_root()?;
    let version = env!("CARGO_PKG_VERSION");
    let arch = Cmd::new("dpkg")
        .arg_str("--print-architecture")
        .output()
        .context("dpkg --print-architecture")?
        .trim()
        .to_owned();
    let tree = out.join(format!("mcfilter_{version}_{arch}"));
    let _ = fs::remove_dir_all(&tree);
    let place = |path: &str| -> anyhow::Result<PathBuf> {
        let path = tree.join(path);
        fs::create_dir_all(path.parent().expect("a file in a directory"))?;
        Ok(path)
    };
    fs::copy(binary, place(BINARY)?).context("copying the binary")?;
    let unit = fs::read_to_string(root.join("packaging/mcfilter.service"))?
        .replace("/usr/local/bin/mcfilter", "/usr/bin/mcfilter");
    ensure!(
        !unit.contains("/usr/local"),
        "the unit names /usr/local still"
    );
    fs::write(place("lib/systemd/system/mcfilter.service")?, unit)?;
    for (from, to) in CONFFILES {
        fs::copy(root.join(from), place(to)?)?;
    }
    // Man pages and completions, from the binary itself: they match its command line.
    let man = tree.join("man");
    Cmd::new(binary)
        .arg_str("man")
        .arg_str("--dir")
        .args([&man])
        .run()?;
    for entry in fs::read_dir(&man)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .expect("a file")
            .to_string_lossy()
            .into_owned();
        let section = name.rsplit('.').next().expect("NAME.SECTION");
        let gz = place(&format!("usr/share/man/man{section}/{name}.gz"))?;
        Cmd::new("sh")
            .arg_str("-c")
            .arg_str("gzip -9nc \"$0\" > \"$1\"")
            .args([&path, &gz])
            .run()?;
    }
    fs::remove_dir_all(&man)?;
    for (shell, path) in [
        ("bash", "usr/share/bash-completion/completions/mcfilter"),
        ("zsh", "usr/share/zsh/vendor-completions/_mcfilter"),
        ("fish", "usr/share/fish/vendor_completions.d/mcfilter.fish"),
    ] {
        let script = Command::new(binary)
            .args(["completions", shell])
            .output()
            .context("mcfilter completions")?;
        ensure!(
            script.status.success(),
            "mcfilter completions {shell} failed"
        );
        fs::write(place(path)?, script.stdout)?;
    }
    fs::write(
        place("usr/share/doc/mcfilter/copyright")?,
        format!(
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
             Upstream-Name: mcfilter\nSource: {}\n\nFiles: *\nLicense: MIT or Apache-2.0\n\n\
             Files: mcfilter-ebpf/*\nComment: the XDP program, built into /usr/bin/mcfilter\n\
             License: MIT or GPL-2\n",
            env!("CARGO_PKG_REPOSITORY")
        ),
    )?;
    let (major, minor) = GLIBC_AT_MOST;
    let installed_size = du_kib(&tree)?;
    let mut control = fs::File::create(place("DEBIAN/control")?)?;
    write!(
        control,
        "Package: mcfilter\nVersion: {version}\nArchitecture: {arch}\n\
         Maintainer: mcfilter developers <mcfilter@example.org>\n\
         Depends: libc6 (>= {major}.{minor}), libgcc-s1\nSection: net\nPriority: optional\n\
         Installed-Size: {installed_size}\nHomepage: {}\n\
         Description: XDP filter that protects memcached hosts at line rate\n \
         Drops inbound UDP to the protected ports (11211 by default: the 2018 amplification\n \
         attacks) and TCP to them from sources outside an allow-list, in the NIC's receive\n \
         path, counting every drop by reason and by source.\n",
        env!("CARGO_PKG_REPOSITORY")
    )?;
    let conffiles: String = CONFFILES.iter().map(|(_, to)| format!("/{to}\n")).collect();
    fs::write(place("DEBIAN/conffiles")?, conffiles)?;
    let deb = out.join(format!("mcfilter_{version}_{arch}.deb"));
    Cmd::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .args([&tree, &deb])
        .run()?;
    Ok(deb)
}

/// Installs `deb` into a scratch root under `scratch` and checks what a host would run: the
/// binary (and the glibc it needs), `systemd-analyze verify` on the installed unit, `mcfilter
/// run --check` on the installed config, and every file in its place.
pub(crate) fn check(deb: &Path, scratch: &Path) -> anyhow::Result<()> {
    let _ = fs::remove_dir_all(scratch);
    for dir in ["var/lib/dpkg/updates", "var/lib/dpkg/info"] {
        fs::create_dir_all(scratch.join(dir))?;
    }
    fs::write(scratch.join("var/lib/dpkg/status"), "")?;
    // The scratch root's dpkg database knows no libc: the host's satisfies the dependency.
    Cmd::new("dpkg")
        .arg_str(&format!("--root={}", scratch.display()))
        .args(["--force-depends", "--force-script-chrootless", "--install"])
        .args([deb])
        .run()?;
    let binary = scratch.join(BINARY);
    let version = Command::new(&binary).arg("--version").output()?;
    let line = String::from_utf8_lossy(&version.stdout);
    ensure!(
        version.status.success()
            && line.starts_with(&format!("mcfilter {} (commit ", env!("CARGO_PKG_VERSION"))),
        "the installed binary's --version: {line:?}"
    );
    let glibc = newest_glibc(&binary)?;
    ensure!(
        glibc <= GLIBC_AT_MOST,
        "the binary needs glibc {}.{}, newer than {}.{} (Ubuntu 22.04 has 2.35)",
        glibc.0,
        glibc.1,
        GLIBC_AT_MOST.0,
        GLIBC_AT_MOST.1
    );
    // The installed unit, verified against this host's systemd units (the scratch root has
    // none) with its ExecStart and ExecReload pointing at the installed binary.
    let unit = fs::read_to_string(scratch.join("lib/systemd/system/mcfilter.service"))?;
    ensure!(
        unit.contains("ExecStart=/usr/bin/mcfilter run "),
        "the installed unit does not start /usr/bin/mcfilter"
    );
    let verify_dir = scratch.join("verify");
    fs::create_dir_all(&verify_dir)?;
    fs::write(
        verify_dir.join("mcfilter.service"),
        unit.replace("/usr/bin/mcfilter", &binary.display().to_string()),
    )?;
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(verify_dir.join("mcfilter.service"))
        .output()
        .context("systemd-analyze")?;
    let complaints: Vec<String> = String::from_utf8_lossy(&verify.stderr)
        .lines()
        // Documentation=man:mcfilter(1) is looked up on this host, where it is not installed.
        .filter(|line| !line.contains("Command 'man "))
        .map(str::to_owned)
        .collect();
    ensure!(
        complaints.is_empty(),
        "systemd-analyze verify on the installed unit: {}",
        complaints.join("; ")
    );
    let config = scratch.join("etc/mcfilter/mcfilter.toml");
    let checked = Command::new(&binary)
        .args(["run", "--check", "--config"])
        .arg(&config)
        .output()?;
    ensure!(
        checked.status.success(),
        "mcfilter run --check on the installed config: {}",
        String::from_utf8_lossy(&checked.stderr)
    );
    for path in [
        "usr/share/man/man1/mcfilter.1.gz",
        "usr/share/man/man1/mcfilter-attach.1.gz",
        "usr/share/man/man1/mcfilter-allow-add.1.gz",
        "usr/share/man/man5/mcfilter.toml.5.gz",
        "usr/share/bash-completion/completions/mcfilter",
        "usr/share/zsh/vendor-completions/_mcfilter",
        "usr/share/fish/vendor_completions.d/mcfilter.fish",
        "etc/mcfilter/clients.txt",
    ] {
        ensure!(scratch.join(path).is_file(), "the package has no /{path}");
    }
    let conffiles = fs::read_to_string(scratch.join("var/lib/dpkg/info/mcfilter.conffiles"))?;
    ensure!(
        conffiles
            .lines()
            .any(|l| l == "/etc/mcfilter/mcfilter.toml"),
        "the config is not a conffile: {conffiles:?}"
    );
    Ok(())
}

/// The newest `GLIBC_x.y` symbol version `binary` needs.
fn newest_glibc(binary: &Path) -> anyhow::Result<(u32, u32)> {
    let symbols = Command::new("objdump")
        .arg("-T")
        .arg(binary)
        .output()
        .context("objdump -T")?;
    if !symbols.status.success() {
        bail!("objdump -T {} failed", binary.display());
    }
    String::from_utf8_lossy(&symbols.stdout)
        .split_whitespace()
        .filter_map(|word| {
            word.trim_matches(|c| c == '(' || c == ')')
                .strip_prefix("GLIBC_")
        })
        .filter_map(|version| {
            let (major, minor) = version.split_once('.')?;
            let minor = minor.split('.').next()?;
            Some((major.parse().ok()?, minor.parse().ok()?))
        })
        .max()
        .context("no GLIBC symbol versions")
}

/// The tree's size in KiB, as `Installed-Size` wants it.
fn du_kib(tree: &Path) -> anyhow::Result<u64> {
    fn walk(path: &Path) -> std::io::Result<u64> {
        let meta = fs::symlink_metadata(path)?;
        if !meta.is_dir() {
            return Ok(meta.len());
        }
        fs::read_dir(path)?.try_fold(0, |sum, entry| Ok(sum + walk(&entry?.path())?))
    }
    Ok(walk(tree)?.div_ceil(1024))
}
