//! `mcfilter allow add|del|list|suggest|replace`

use std::{collections::BTreeSet, fs, io::Read as _};

use anyhow::Context as _;
use ipnet::IpNet;
use serde::Serialize;

use mcfilter::{
    Maps, StateDir,
    allow::{Change, Recovery},
};

use crate::{cli::AllowCommand, output};

/// `allow add|del|replace --json`: what the change did.
#[derive(Debug, Serialize)]
struct Report {
    added: Vec<String>,
    removed: Vec<String>,
    /// Given, and left as they were: already on the list (add), or not on it (`del
    /// --if-present`).
    unchanged: Vec<String>,
}

impl Report {
    fn new(change: &Change, unchanged: impl IntoIterator<Item = IpNet>) -> Self {
        let strings = |nets: &[IpNet]| nets.iter().map(ToString::to_string).collect();
        Report {
            added: strings(&change.added),
            removed: strings(&change.removed),
            unchanged: unchanged.into_iter().map(|net| net.to_string()).collect(),
        }
    }
}

pub(super) fn run(state: &StateDir, command: AllowCommand, json: bool) -> anyhow::Result<()> {
    let changes = matches!(
        command,
        AllowCommand::Add { .. } | AllowCommand::Del { .. } | AllowCommand::Replace { .. }
    );
    run_command(state, command, json)?;
    if changes {
        super::warn_if_the_service_manages(state, "allow-list");
    }
    Ok(())
}

fn run_command(state: &StateDir, command: AllowCommand, json: bool) -> anyhow::Result<()> {
    // Read and validate the input before touching any state.
    let file_nets = match &command {
        AllowCommand::Replace { file } => Some(read_list(file)?),
        _ => None,
    };
    // Listing and suggesting only read: the shared lock (see `Maps::open_to_read`).
    let reads = matches!(command, AllowCommand::List | AllowCommand::Suggest { .. });
    let (lock, mut maps) = if reads {
        Maps::open_to_read(state)?
    } else {
        let lock = state.prepare_and_lock()?;
        (lock, Maps::open(state)?)
    };
    match maps.recovered {
        Some(Recovery::RolledBack) => {
            eprintln!("mcfilter: note: rolled back an allow-list change that was interrupted");
        }
        Some(Recovery::Completed) => {
            eprintln!("mcfilter: note: completed an allow-list change that was interrupted");
        }
        None => {}
    }
    let allow = &mut maps.allow;
    match command {
        AllowCommand::Add { cidrs } => {
            let nets: BTreeSet<_> = cidrs.into_iter().collect();
            let change = allow.add(&nets)?;
            if json {
                let kept = nets.iter().filter(|net| !change.added.contains(net));
                return Ok(output::print_json(&Report::new(&change, kept.copied()))?);
            }
            super::say(&format!(
                "allow-list +{} ({} already present)",
                change.added.len(),
                nets.len() - change.added.len()
            ))
        }
        AllowCommand::Del { cidrs, if_present } => {
            let mut nets: BTreeSet<_> = cidrs.into_iter().collect();
            let mut absent = BTreeSet::new();
            if if_present {
                let current = allow.list()?;
                (nets, absent) = nets.into_iter().partition(|net| current.contains(net));
            }
            let change = if nets.is_empty() {
                Change::default()
            } else {
                allow.del(&nets)?
            };
            if json {
                return Ok(output::print_json(&Report::new(&change, absent))?);
            }
            let absent = if absent.is_empty() {
                String::new()
            } else {
                format!(" ({} not on the list)", absent.len())
            };
            super::say(&format!("allow-list -{}{absent}", change.removed.len()))
        }
        AllowCommand::List => {
            let nets: Vec<String> = allow.list()?.iter().map(ToString::to_string).collect();
            // Output can block (a pager, a full pipe): never while holding the lock.
            drop(lock);
            if json {
                output::print_json(&nets)?;
            } else {
                output::print(&nets.iter().map(|n| format!("{n}\n")).collect::<String>())?;
            }
            Ok(())
        }
        AllowCommand::Suggest { top, merge } => {
            let current = allow.list()?;
            let stats = mcfilter::read_stats(&maps, usize::MAX)?;
            let suggested = mcfilter::suggest::suggestions(&stats.sources, &current, top);
            drop(lock);
            let kept: Vec<String> = if merge {
                current.iter().map(ToString::to_string).collect()
            } else {
                Vec::new()
            };
            if json {
                let nets = kept
                    .iter()
                    .cloned()
                    .chain(suggested.iter().map(|s| s.net.to_string()));
                output::print_json(&nets.collect::<Vec<_>>())?;
            } else {
                let mut lines: String = kept
                    .iter()
                    .map(|net| format!("{net:<20} # on the allow-list\n"))
                    .collect();
                for s in &suggested {
                    let would = if s.would_drop_packets > 0 {
                        format!(", {} in dry-run", s.would_drop_packets)
                    } else {
                        String::new()
                    };
                    let caution = s
                        .caution
                        .map(|caution| format!("; caution: {caution}"))
                        .unwrap_or_default();
                    lines.push_str(&format!(
                        "{:<20} # {} packets dropped{would}{caution}\n",
                        s.net.to_string(),
                        s.packets
                    ));
                }
                output::print(&lines)?;
            }
            Ok(())
        }
        AllowCommand::Replace { .. } => {
            let nets = file_nets.unwrap_or_default();
            let change = allow.replace(&nets)?;
            if json {
                return Ok(output::print_json(&Report::new(&change, []))?);
            }
            super::say(&format!(
                "allow-list +{} -{} (now {} entries)",
                change.added.len(),
                change.removed.len(),
                nets.len()
            ))
        }
    }
}

fn read_list(file: &std::path::Path) -> anyhow::Result<BTreeSet<ipnet::IpNet>> {
    let text = if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the allow-list from stdin")?;
        text
    } else {
        fs::read_to_string(file)
            .with_context(|| format!("cannot read allow-list file {}", file.display()))?
    };
    mcfilter::allow::parse_list(&text)
        .map_err(|err| anyhow::anyhow!("{}: {err}; nothing was changed", file.display()))
}
