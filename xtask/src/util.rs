//! Running commands with their command line echoed, and finding the workspace.

use std::{
    ffi::OsStr,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

/// A command that is echoed before it runs and fails with its exit status.
pub(crate) struct Cmd(Command);

impl Cmd {
    pub(crate) fn new(program: impl AsRef<OsStr>) -> Self {
        let mut command = Command::new(program);
        if let Ok(root) = workspace_root() {
            command.current_dir(root);
        }
        Cmd(command)
    }

    pub(crate) fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.0.args(args);
        self
    }

    pub(crate) fn arg_str(&mut self, arg: &str) -> &mut Self {
        self.0.arg(arg);
        self
    }

    pub(crate) fn env(&mut self, key: &str, value: impl AsRef<OsStr>) -> &mut Self {
        self.0.env(key, value);
        self
    }

    /// Runs with inherited stdio; an unsuccessful exit is an error.
    pub(crate) fn run(&mut self) -> anyhow::Result<()> {
        eprintln!("xtask: $ {}", self.display());
        let status = self
            .0
            .stdin(Stdio::null())
            .status()
            .with_context(|| format!("cannot run {}", self.display()))?;
        if !status.success() {
            bail!("{} failed ({status})", self.display());
        }
        Ok(())
    }

    /// Runs like [`Cmd::run`], echoing stdout line by line and handing each line to `on_line`.
    pub(crate) fn run_tee(&mut self, mut on_line: impl FnMut(&str)) -> anyhow::Result<()> {
        use std::io::{BufRead as _, BufReader};
        eprintln!("xtask: $ {}", self.display());
        let mut child = self
            .0
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {}", self.display()))?;
        let stdout = child.stdout.take().context("child stdout")?;
        for line in BufReader::new(stdout).lines() {
            let line = line.context("reading child output")?;
            println!("{line}");
            on_line(&line);
        }
        let status = child.wait()?;
        if !status.success() {
            bail!("{} failed ({status})", self.display());
        }
        Ok(())
    }

    /// Runs quietly and returns stdout if it succeeded.
    pub(crate) fn output(&mut self) -> Option<String> {
        let out = self
            .0
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn display(&self) -> String {
        std::iter::once(self.0.get_program())
            .chain(self.0.get_args())
            .map(|s| s.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The workspace root (xtask lives one level below it).
pub(crate) fn workspace_root() -> anyhow::Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(PathBuf::from)
        .context("xtask has no parent directory")
}

/// Lets a child handle Ctrl-C (and clean up) while this process keeps waiting for it.
pub(crate) fn ignore_sigint() {
    // SAFETY: installing SIG_IGN has no preconditions.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
}
