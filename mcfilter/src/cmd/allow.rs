//! `mcfilter allow add|del|list|replace`

use std::{collections::BTreeSet, fs, io::Read as _};

use anyhow::Context as _;

use crate::{allow::Recovery, cli::AllowCommand, maps::Maps, output, pin::StateDir};

pub fn run(state: &StateDir, command: AllowCommand) -> anyhow::Result<()> {
    // Read and validate the input before touching any state.
    let file_nets = match &command {
        AllowCommand::Replace { file } => Some(read_list(file)?),
        _ => None,
    };
    // Listing and suggesting only read: the shared lock (see `Maps::open_to_read`).
    let reads = matches!(
        command,
        AllowCommand::List(_) | AllowCommand::Suggest { .. }
    );
    let (lock, mut maps) = if reads {
        Maps::open_to_read(state)?
    } else {
        let lock = state.prepare_and_lock()?;
        (lock, Maps::open(state)?)
    };
    match maps.recovered {
        Some(Recovery::RolledBack) => {
            eprintln!("mcfilter: note: rolled back an allow-list change that was interrupted")
        }
        Some(Recovery::Completed) => {
            eprintln!("mcfilter: note: completed an allow-list change that was interrupted")
        }
        None => {}
    }
    let allow = &mut maps.allow;
    match command {
        AllowCommand::Add { cidrs } => {
            let nets: BTreeSet<_> = cidrs.into_iter().collect();
            let change = allow.add(&nets)?;
            super::say(&format!(
                "allow-list +{} ({} already present)",
                change.added.len(),
                nets.len() - change.added.len()
            ))
        }
        AllowCommand::Del { cidrs } => {
            let change = allow.del(&cidrs.into_iter().collect())?;
            super::say(&format!("allow-list -{}", change.removed.len()))
        }
        AllowCommand::List(args) => {
            let nets: Vec<String> = allow.list()?.iter().map(ToString::to_string).collect();
            // Output can block (a pager, a full pipe): never while holding the lock.
            drop(lock);
            if args.json {
                output::print_json(&nets)?;
            } else {
                output::print(&nets.iter().map(|n| format!("{n}\n")).collect::<String>())?;
            }
            Ok(())
        }
        AllowCommand::Suggest { json, top, merge } => {
            let current = allow.list()?;
            let stats = crate::stats::read(&maps, usize::MAX)?;
            let suggested = crate::suggest::suggestions(&stats.sources, &current, top);
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
    crate::allow::parse_list(&text)
        .map_err(|err| anyhow::anyhow!("{}: {err}; nothing was changed", file.display()))
}
