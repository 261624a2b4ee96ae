//! `cargo xtask image`: the container image for the DaemonSet, assembled offline (base images
//! cannot be pulled on the build machines) as an OCI layout with umoci: one layer holding the
//! binary (the XDP program is inside it), the shared libraries it loads, a minimal /etc and the
//! example config. Nothing else: no shell, no package manager.
//!
//! `packaging/Containerfile` builds the same image in two stages for `podman build` or
//! `docker build` where a Rust base image can be pulled: its build stage runs `cargo xtask image
//! --rootfs /rootfs` ([`rootfs`]), its final stage is that root filesystem alone.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, ensure};

use crate::util::{Cmd, workspace_root};

/// Where the binary lives in the image (the DaemonSet's command).
const BINARY: &str = "usr/local/bin/mcfilter";

/// `cargo xtask image`: the release binary's image in target/image/oci, tag VERSION, checked;
/// with `rootfs_only`, only the image's root filesystem, in that directory (the
/// Containerfile's build stage).
pub(crate) fn run(rootfs_only: Option<&Path>) -> anyhow::Result<()> {
    crate::setup::build_tools()?;
    Cmd::new("cargo").args(crate::RELEASE_MCFILTER).run()?;
    let root = workspace_root()?;
    let binary = root.join("target/release/mcfilter");
    if let Some(dir) = rootfs_only {
        return rootfs(&binary, dir);
    }
    crate::setup::debian_packages(&["umoci"])?;
    let layout = build(&binary, &root.join("target/image"))?;
    check(&layout, &root.join("target/image/check"))?;
    let image = reference(&layout);
    println!(
        "{image} (load it with `skopeo copy oci:{image} docker-daemon:mcfilter:{}` or push it with skopeo)",
        env!("CARGO_PKG_VERSION"),
    );
    Ok(())
}

/// The image in `layout` as umoci and skopeo name it (`LAYOUT:VERSION`).
pub(crate) fn reference(layout: &Path) -> String {
    format!("{}:{}", layout.display(), env!("CARGO_PKG_VERSION"))
}

/// The image's root filesystem in `dir` (made anew): `binary`, the shared libraries it loads,
/// a minimal /etc and the example config.
pub(crate) fn rootfs(binary: &Path, dir: &Path) -> anyhow::Result<()> {
    let root = workspace_root()?;
    let _ = fs::remove_dir_all(dir);
    let place = |path: &str| -> anyhow::Result<PathBuf> {
        let path = dir.join(path.trim_start_matches('/'));
        fs::create_dir_all(path.parent().expect("a file in a directory"))?;
        Ok(path)
    };
    fs::copy(binary, place(BINARY)?).context("copying the binary")?;
    for library in shared_libraries(binary)? {
        let text = library.display().to_string();
        fs::copy(&library, place(&text)?).with_context(|| format!("copying {text}"))?;
    }
    fs::copy(
        root.join("packaging/mcfilter.toml"),
        place("etc/mcfilter/mcfilter.toml")?,
    )?;
    fs::copy(
        root.join("packaging/clients.txt"),
        place("etc/mcfilter/clients.txt")?,
    )?;
    // What libc reads for names; the service runs as root.
    fs::write(place("etc/passwd")?, "root:x:0:0:root:/:/sbin/nologin\n")?;
    fs::write(place("etc/group")?, "root:x:0:\n")?;
    fs::create_dir_all(dir.join("sys/fs/bpf"))?;
    fs::create_dir_all(dir.join("tmp"))?;
    Ok(())
}

/// The image of `binary` as an OCI layout in `out/oci` (tag VERSION), from its root
/// filesystem in `out/rootfs`.
pub(crate) fn build(binary: &Path, out: &Path) -> anyhow::Result<PathBuf> {
    let _ = fs::remove_dir_all(out);
    let rootfs_dir = out.join("rootfs");
    rootfs(binary, &rootfs_dir)?;
    let layout = out.join("oci");
    let tag = reference(&layout);
    let bundle = out.join("bundle");
    Cmd::new("umoci")
        .args(["init", "--layout"])
        .args([&layout])
        .run()?;
    Cmd::new("umoci")
        .args(["new", "--image"])
        .arg_str(&tag)
        .run()?;
    Cmd::new("umoci")
        .args(["unpack", "--image"])
        .arg_str(&tag)
        .args([&bundle])
        .run()?;
    // The bundle's root filesystem becomes the one prepared above.
    let bundle_rootfs = bundle.join("rootfs");
    fs::remove_dir_all(&bundle_rootfs)?;
    Cmd::new("cp")
        .args(["-a"])
        .args([&rootfs_dir, &bundle_rootfs])
        .run()?;
    Cmd::new("umoci")
        .args(["repack", "--image"])
        .arg_str(&tag)
        .args([&bundle])
        .run()?;
    Cmd::new("umoci")
        .args(["config", "--image"])
        .arg_str(&tag)
        .args(["--config.entrypoint", &format!("/{BINARY}")])
        .args(["--config.cmd", "run", "--config.cmd", "--config"])
        .args(["--config.cmd", "/etc/mcfilter/mcfilter.toml"])
        .args(["--config.label", "org.opencontainers.image.title=mcfilter"])
        .args([
            "--config.label",
            concat!(
                "org.opencontainers.image.version=",
                env!("CARGO_PKG_VERSION")
            ),
        ])
        .args([
            "--config.label",
            concat!(
                "org.opencontainers.image.source=",
                env!("CARGO_PKG_REPOSITORY")
            ),
        ])
        .run()?;
    Cmd::new("umoci")
        .args(["gc", "--layout"])
        .args([&layout])
        .run()?;
    fs::remove_dir_all(&bundle)?;
    Ok(layout)
}

/// Unpacks the image in `layout` under `scratch` and runs what the DaemonSet would, inside its
/// root filesystem: `mcfilter --version` and `mcfilter run --check` on the config it holds;
/// and checks that the image holds nothing but the binary, its libraries and its /etc.
pub(crate) fn check(layout: &Path, scratch: &Path) -> anyhow::Result<()> {
    let _ = fs::remove_dir_all(scratch);
    let tag = reference(layout);
    Cmd::new("umoci")
        .args(["unpack", "--image"])
        .arg_str(&tag)
        .args([scratch])
        .run()?;
    let rootfs = scratch.join("rootfs");
    let config: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(scratch.join("config.json"))?)?;
    let args: Vec<&str> = config["process"]["args"]
        .as_array()
        .context("the image's process args")?
        .iter()
        .filter_map(|arg| arg.as_str())
        .collect();
    ensure!(
        args == [
            "/usr/local/bin/mcfilter",
            "run",
            "--config",
            "/etc/mcfilter/mcfilter.toml"
        ],
        "the image runs {args:?}"
    );
    let in_image = |args: &[&str]| -> anyhow::Result<String> {
        let out = Command::new("chroot")
            .arg(&rootfs)
            .arg(format!("/{BINARY}"))
            .args(args)
            .output()
            .context("chroot")?;
        ensure!(
            out.status.success(),
            "mcfilter {args:?} in the image: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let version = in_image(&["--version"])?;
    ensure!(
        version.starts_with(concat!("mcfilter ", env!("CARGO_PKG_VERSION"), " (commit ")),
        "--version in the image: {version:?}"
    );
    in_image(&["run", "--check", "--config", "/etc/mcfilter/mcfilter.toml"])?;
    containerfile_agrees(&args)?;
    let mut files = Vec::new();
    list(&rootfs, &rootfs, &mut files)?;
    let unexpected: Vec<&String> = files
        .iter()
        .filter(|path| {
            !(path.as_str() == BINARY
                || path.starts_with("etc/")
                || path.starts_with("lib")
                || path.starts_with("usr/lib"))
        })
        .collect();
    ensure!(
        unexpected.is_empty(),
        "the image holds more than mcfilter needs: {unexpected:?}"
    );
    Ok(())
}

/// Whether `packaging/Containerfile` describes the image `cargo xtask image` assembles: its
/// final stage is `FROM scratch` with nothing but the root filesystem its build stage makes with
/// `cargo xtask image --rootfs` ([`rootfs`], as here) and the same command (`args`).
fn containerfile_agrees(args: &[&str]) -> anyhow::Result<()> {
    let text = fs::read_to_string(workspace_root()?.join("packaging/Containerfile"))?;
    let instructions: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    let last_from = instructions
        .iter()
        .rposition(|line| line.starts_with("FROM "))
        .context("no FROM in the Containerfile")?;
    let (build, last) = instructions.split_at(last_from);
    ensure!(
        last[0] == "FROM scratch",
        "the final stage starts {:?}",
        last[0]
    );
    let stage = build
        .iter()
        .rev()
        .find_map(|line| line.strip_prefix("FROM ")?.split_once(" AS "))
        .map(|(_, name)| name)
        .context("no named build stage")?;
    let run = build
        .iter()
        .find_map(|line| line.strip_prefix("RUN cargo xtask image --rootfs "))
        .context("the build stage does not run `cargo xtask image --rootfs DIR`")?;
    let json = |instruction: &str| -> anyhow::Result<Vec<String>> {
        let line = last
            .iter()
            .find_map(|line| line.strip_prefix(instruction))
            .with_context(|| format!("no {instruction}in the final stage"))?;
        Ok(serde_json::from_str(line)?)
    };
    let mut command = json("ENTRYPOINT ")?;
    command.extend(json("CMD ")?);
    ensure!(
        command == args,
        "the Containerfile runs {command:?}, the image {args:?}"
    );
    let copy = format!("COPY --from={stage} {}/ /", run.trim_end_matches('/'));
    ensure!(
        last[1..].iter().all(|line| *line == copy
            || line.starts_with("ENTRYPOINT ")
            || line.starts_with("CMD ")),
        "the final stage holds more than {copy:?}, ENTRYPOINT and CMD: {last:?}"
    );
    Ok(())
}

/// The files under `dir`, relative to `root`.
fn list(root: &Path, dir: &Path, files: &mut Vec<String>) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() && !path.is_symlink() {
            list(root, &path, files)?;
        } else {
            let relative = path.strip_prefix(root).expect("under the root");
            files.push(relative.display().to_string());
        }
    }
    Ok(())
}

/// The shared libraries `binary` loads, the dynamic loader included, by their paths on this
/// machine (`ldd`).
fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(binary).output().context("ldd")?;
    ensure!(out.status.success(), "ldd {} failed", binary.display());
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or
            // `/lib64/ld-linux-x86-64.so.2 (0x...)`; linux-vdso has no file.
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}
