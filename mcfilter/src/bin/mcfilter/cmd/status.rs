//! `mcfilter [--json] status`

use mcfilter::StateDir;

use crate::output::{self, Align, Table};

pub(super) fn run(state: &StateDir, json: bool) -> anyhow::Result<()> {
    let mut status = mcfilter::status(state)?;
    status.warnings.extend(super::exposure_warnings(&status));
    if json {
        output::print_json(&status)?;
        return Ok(());
    }
    let ports: Vec<String> = status.ports.iter().map(u16::to_string).collect();
    let mut summary = Table::without_header(&[Align::Left, Align::Left]);
    for (key, value) in [
        ("state dir", status.state_dir.clone()),
        ("build", status.build.clone()),
        ("ports", ports.join(",")),
        (
            "policy",
            if status.dry_run {
                "dry-run (counting, not dropping)"
            } else {
                "enforced"
            }
            .into(),
        ),
        (
            "reflection",
            if status.drop_reflected {
                "dropped (UDP from a protected port)"
            } else {
                "passed"
            }
            .into(),
        ),
        (
            "allow-list",
            format!(
                "{} of {} entries",
                status.allow_entries, status.allow_capacity
            ),
        ),
        (
            "sources",
            format!(
                "{} of {} entries",
                status.sources_entries, status.sources_capacity
            ),
        ),
        (
            "fragments",
            match status.fragments_timeouts_secs {
                Some([v4, v6]) => format!(
                    "{} of {} dropped datagrams remembered, for {v4} s (IPv4) and {v6} s (IPv6)",
                    status.fragments_entries, status.fragments_capacity
                ),
                None => format!(
                    "{} of {} dropped datagrams remembered",
                    status.fragments_entries, status.fragments_capacity
                ),
            },
        ),
        ("kernel memory", kernel_memory(&status.kernel_memory)),
    ] {
        summary.row(vec![key.into(), value]);
    }
    let mut ifaces = Table::new(&[
        ("interface", Align::Left),
        ("ifindex", Align::Right),
        ("mode", Align::Left),
        ("framing", Align::Left),
        ("program id", Align::Right),
        ("build", Align::Left),
        ("managed by", Align::Left),
        ("then", Align::Left),
    ]);
    for iface in &status.interfaces {
        let name = if iface.present {
            iface.name.clone()
        } else {
            format!("{} (gone)", iface.name)
        };
        ifaces.row(vec![
            name,
            iface.ifindex.to_string(),
            mcfilter::filter::show_mode(iface.mode).into(),
            iface.framing.into(),
            iface.program_id.to_string(),
            iface.build.clone().unwrap_or_else(|| "earlier".into()),
            if iface.service { "service" } else { "cli" }.into(),
            match (&iface.next, &iface.dispatcher) {
                (Some(next), _) => match &next.name {
                    Some(name) => format!("{} ({name})", next.program_id),
                    None => next.program_id.to_string(),
                },
                // `--multiprog`: the dispatcher and its components in run order.
                (None, Some(dispatcher)) => format!(
                    "dispatcher {}: {}",
                    dispatcher.program_id,
                    dispatcher
                        .components
                        .iter()
                        .map(|c| c.name.as_deref().unwrap_or("?"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                (None, None) => "-".into(),
            },
        ]);
    }
    let summary = summary.render();
    let warnings: String = status
        .warnings
        .iter()
        .map(|w| format!("warning: {w}\n"))
        .collect();
    output::print(&format!("{summary}\n{}{warnings}", ifaces.render()))?;
    Ok(())
}

/// The kernel memory line: the total and the three largest maps.
fn kernel_memory(memory: &mcfilter::memory::KernelMemory) -> String {
    let mib = |bytes: u64| format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20));
    let mut maps: Vec<(&String, &u64)> = memory.maps.iter().collect();
    maps.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let largest: Vec<String> = maps
        .iter()
        .take(3)
        .map(|(name, bytes)| format!("{name} {}", mib(**bytes)))
        .collect();
    format!(
        "{} for {} possible CPUs ({}, ...)",
        mib(memory.total_bytes),
        memory.possible_cpus,
        largest.join(", ")
    )
}
