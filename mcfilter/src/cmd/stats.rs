//! `mcfilter stats [--json] [--top N]`

use mcfilter_common::Reason;

use crate::{
    cli::StatsArgs,
    maps::Maps,
    output::{self, Align, Table},
    pin::StateDir,
    stats,
};

pub fn run(state: &StateDir, args: StatsArgs) -> anyhow::Result<()> {
    let stats = {
        let _lock = state.prepare_and_lock()?;
        stats::read(&Maps::open(state)?, args.top)?
    };
    if args.json {
        output::print_json(&stats)?;
        return Ok(());
    }
    let mut totals = Table::new(&[
        ("", Align::Left),
        ("packets", Align::Right),
        ("bytes", Align::Right),
    ]);
    for (name, total) in [
        ("dropped", stats.dropped),
        ("passed", stats.passed),
        ("would drop (dry-run)", stats.would_drop),
    ] {
        totals.row(vec![
            name.into(),
            total.packets.to_string(),
            total.bytes.to_string(),
        ]);
    }
    let mut reasons = Table::new(&[
        ("reason", Align::Left),
        ("verdict", Align::Left),
        ("packets", Align::Right),
    ]);
    for reason in Reason::ALL {
        let packets = stats.reasons.get(reason.name()).copied().unwrap_or(0);
        let verdict = if reason.is_drop() { "drop" } else { "pass" };
        reasons.row(vec![
            reason.name().into(),
            verdict.into(),
            packets.to_string(),
        ]);
    }
    let mut sources = Table::new(&[
        ("source", Align::Left),
        ("packets", Align::Right),
        ("bytes", Align::Right),
        ("last reason", Align::Left),
        ("last seen", Align::Right),
    ]);
    for row in &stats.sources {
        sources.row(vec![
            row.source.to_string(),
            row.packets.to_string(),
            output::human_count(row.bytes),
            format!(
                "{}{}",
                row.reason,
                if row.dry_run { " (dry-run)" } else { "" }
            ),
            output::ago(row.last_seen_ms_ago),
        ]);
    }
    let mut text = format!("{}\n{}\n", totals.render(), reasons.render());
    if stats.sources.is_empty() {
        text.push_str("no dropped sources recorded\n");
    } else {
        text.push_str(&sources.render());
    }
    if stats.sources_not_recorded > 0 {
        text.push_str(&format!(
            "{} dropped packets could not be recorded by source (per-source map full)\n",
            stats.sources_not_recorded
        ));
    }
    output::print(&text)?;
    Ok(())
}
