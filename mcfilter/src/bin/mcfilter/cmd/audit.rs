//! `mcfilter [--json] audit`: findings with severities and fixes; the exit status is the worst.

use std::process::ExitCode;

use mcfilter::{StateDir, audit::Severity};

use crate::output::{self, Align, Table};

pub(super) fn run(state: &StateDir, json: bool) -> anyhow::Result<ExitCode> {
    let report = mcfilter::audit(state)?;
    if json {
        output::print_json(&report)?;
    } else {
        let mut listeners = Table::new(&[
            ("listener", Align::Left),
            ("scope", Align::Left),
            ("processes", Align::Left),
        ]);
        for l in &report.listeners {
            listeners.row(vec![
                format!("{} {}", l.protocol.name(), l.address),
                l.scope.name().to_owned(),
                l.processes.join(", "),
            ]);
        }
        let ports: Vec<String> = report.ports.iter().map(u16::to_string).collect();
        let filtered = if report.filtered_interfaces.is_empty() {
            "mcfilter is not attached".to_owned()
        } else {
            format!(
                "mcfilter attached to {}",
                report.filtered_interfaces.join(", ")
            )
        };
        let mut text = format!(
            "ports {}; {filtered}\n\n{}\n",
            ports.join(","),
            listeners.render()
        );
        for f in &report.findings {
            let label = f.severity.name().to_uppercase();
            text.push_str(&format!(
                "{label:<7} {}\n        fix: {}\n",
                f.finding, f.fix
            ));
        }
        output::print(&text)?;
    }
    // The exit status carries the verdict.
    Ok(ExitCode::from(Severity::exit_code(report.worst)))
}
