//! `mcfilter`: parse the command line, run it, report an error once.
//!
//! Exit status: 0 on success (and when stdout is a closed pipe), 1 when the command fails, 2 for
//! a usage error. Every error is one line on stderr: `mcfilter: ...`; with `--json`, also one
//! JSON object on stdout: `{"error": "..."}`.

mod cli;
mod cmd;
mod config;
mod man;
mod metrics;
mod notify;
mod output;
mod service;

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _, error::ErrorKind};

use crate::cli::Cli;

fn main() -> ExitCode {
    // The version line is known at run time: it names the embedded program's hash.
    let version: &'static str = Box::leak(mcfilter::build::version_line().into_boxed_str());
    let parsed = Cli::command()
        .version(version)
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(err) => return usage_error(&err),
    };
    let verbose = cli.verbose;
    let json = cli.json;
    match cmd::run(cli) {
        Ok(code) => code,
        Err(err) if cmd::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            if verbose && let Some(log) = cmd::verifier_log(&err) {
                eprintln!("{log}");
            }
            report_error(&one_line(&format!("{err:#}")), json);
            ExitCode::FAILURE
        }
    }
}

/// An error's one line on stderr, and as JSON on stdout when the command line asked for JSON.
fn report_error(message: &str, json: bool) {
    eprintln!("mcfilter: {message}");
    if json {
        let _ = crate::output::print_json(&serde_json::json!({ "error": message }));
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
fn usage_error(err: &clap::Error) -> ExitCode {
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
    // The command line did not parse, so `--json` is looked for among its words.
    let json = std::env::args()
        .skip(1)
        .take_while(|arg| arg != "--")
        .any(|arg| arg == "--json");
    report_error(
        &format!(
            "{message} (see `{} --help`)",
            subcommand_path(std::env::args().skip(1))
        ),
        json,
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
