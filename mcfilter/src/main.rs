//! `mcfilter`: parse the command line, run it, report an error once.
//!
//! Exit status: 0 on success (and when stdout is a closed pipe), 1 when the command fails, 2 for
//! a usage error. Every error is one line on stderr: `mcfilter: ...`.

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser as _, error::ErrorKind};
use mcfilter::{cli::Cli, cmd};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(err),
    };
    let verbose = cli.verbose;
    match cmd::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if cmd::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            if verbose && let Some(log) = cmd::verifier_log(&err) {
                eprintln!("{log}");
            }
            eprintln!("mcfilter: {}", one_line(&format!("{err:#}")));
            ExitCode::FAILURE
        }
    }
}

/// Errors are one line: a multi-line cause (a verifier log) keeps its first and last lines.
fn one_line(message: &str) -> String {
    let mut lines = message.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or_default().to_owned();
    match lines.next_back() {
        Some(last) => format!("{first} ... {last}"),
        None => first,
    }
}

/// Help and version go out as clap renders them; a usage error becomes one line.
fn usage_error(err: clap::Error) -> ExitCode {
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = err.print();
        return ExitCode::from(err.exit_code() as u8);
    }
    let rendered = err.render().to_string();
    // The message is the first paragraph (a list of missing arguments continues on the next
    // lines), folded into one line.
    let message = rendered
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    let message = message.trim_start_matches("error: ");
    eprintln!(
        "mcfilter: {message} (see `{} --help`)",
        subcommand_path(std::env::args().skip(1))
    );
    ExitCode::from(2)
}

/// `mcfilter allow add` for `mcfilter --state-dir x allow add ...`: the subcommands named on the
/// command line, as far as they are valid.
fn subcommand_path(args: impl Iterator<Item = String>) -> String {
    let mut command = Cli::command();
    let mut path = vec![command.get_name().to_owned()];
    for arg in args {
        let Some(sub) = command.find_subcommand(&arg).cloned() else {
            continue;
        };
        path.push(sub.get_name().to_owned());
        command = sub;
    }
    path.join(" ")
}
