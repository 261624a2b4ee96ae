//! One module per subcommand; each turns parsed arguments into library calls and output.

mod allow;
mod attach;
mod audit;
mod detach;
mod policy;
mod stats;
mod status;

use std::io;
use std::process::ExitCode;

use mcfilter::{StateDir, sys};

use crate::cli::{Cli, Command};

/// Runs a parsed command line; the exit status is success unless the command's outcome is a
/// status of its own (`audit`'s findings).
pub(crate) fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    run_command(cli).map(Option::unwrap_or_default)
}

/// A command's run: `Some` status when the outcome is one.
fn run_command(cli: Cli) -> anyhow::Result<Option<ExitCode>> {
    let state = StateDir::new(&cli.state_dir);
    let json = cli.json;
    // Generated documentation needs no privileges.
    match cli.command {
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut command, "mcfilter", &mut out);
            return say_raw(&out).map(|()| None);
        }
        Command::Run {
            ref config,
            check: true,
        } => {
            let summary = crate::service::check(config)?;
            if json {
                crate::output::print_json(
                    &serde_json::json!({ "config": config, "ok": true, "summary": summary }),
                )?;
            } else {
                say(&format!("{}: ok: {summary}", config.display()))?;
            }
            return Ok(None);
        }
        Command::Man { dir: None } => return say_raw(&crate::man::main_page()?).map(|()| None),
        Command::Man { dir: Some(dir) } => {
            let names = crate::man::write_pages(&dir)?;
            return say(&format!("wrote {} pages to {}", names.len(), dir.display()))
                .map(|()| None);
        }
        _ => {}
    }
    sys::require_privileges()?;
    if !matches!(cli.command, Command::Run { .. }) {
        cli_logging();
    }
    let done = match cli.command {
        Command::Attach(args) => attach::run(&state, args, json),
        Command::Detach(args) => detach::run(&state, &args, json),
        Command::Allow(command) => allow::run(&state, command, json),
        Command::Policy(args) => policy::run(&state, args, json),
        Command::Stats(args) => stats::run(&state, &args, json),
        Command::Status => status::run(&state, json),
        Command::Run { config, .. } => crate::service::run(&config),
        Command::Audit => return audit::run(&state, json).map(Some),
        Command::Completions { .. } | Command::Man { .. } => unreachable!("handled above"),
    };
    done.map(|()| None)
}

/// The library's warnings (an undo step of a failed attach that failed too, a cache a
/// replace could not empty) on stderr like the CLI's own: `mcfilter: warning: ...`. Only
/// mcfilter's: aya's debugging lines stay out. `run` sets up the service's logging instead.
fn cli_logging() {
    use std::io::Write as _;
    let logger = env_logger::Builder::new()
        .filter_level(log::LevelFilter::Off)
        .filter_module("mcfilter", log::LevelFilter::Warn)
        .format(|out, record| {
            let level = record.level().as_str().to_lowercase();
            writeln!(out, "mcfilter: {level}: {}", record.args())
        })
        .try_init();
    // Set once per process; a second call (none today) keeps the first.
    drop(logger);
}

/// What `status` and `attach` warn about beyond the state: protected listeners that an
/// interface without the filter delivers to (see [`mcfilter::exposure`]).
fn exposure_warnings(status: &mcfilter::status::Status) -> Vec<String> {
    let ports = status.ports.iter().copied().collect();
    let filtered = status
        .interfaces
        .iter()
        .filter(|iface| iface.present)
        .map(|iface| iface.name.clone())
        .collect();
    mcfilter::exposure::warnings(&ports, &filtered)
        .unwrap_or_else(|err| vec![format!("the listeners could not be checked: {err}")])
}

/// A change made by hand to a state the service manages lasts until its next reload, which
/// applies its config again: say so (on stderr) after `allow` and `policy` changes.
fn warn_if_the_service_manages(state: &StateDir, what: &str) {
    let managed = mcfilter::status(state)
        .is_ok_and(|status| status.interfaces.iter().any(|iface| iface.service));
    if managed {
        eprintln!(
            "mcfilter: warning: `mcfilter run` manages this state: its next reload (SIGHUP, or a change to its config or allow files) puts its config's {what} back; change the config to keep this"
        );
    }
}

fn say(line: &str) -> anyhow::Result<()> {
    crate::output::print(&format!("{line}\n"))?;
    Ok(())
}

fn say_raw(bytes: &[u8]) -> anyhow::Result<()> {
    crate::output::print(&String::from_utf8_lossy(bytes))?;
    Ok(())
}

/// Whether an error is a write to a closed pipe (`mcfilter stats | head`): not a failure.
pub(crate) fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// The verifier's whole log, when the error is the kernel refusing the program.
pub(crate) fn verifier_log(err: &anyhow::Error) -> Option<&str> {
    err.chain()
        .find_map(|cause| match cause.downcast_ref::<mcfilter::Error>() {
            Some(mcfilter::Error::Rejected { log, .. }) => Some(log.as_str()),
            _ => None,
        })
}
