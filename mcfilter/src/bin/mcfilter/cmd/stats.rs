//! `mcfilter [--json] stats [--top N] [--watch [SECS]] [--count N]`

use mcfilter_common::Reason;

use mcfilter::{Maps, StateDir, stats};

use crate::{
    cli::StatsArgs,
    output::{self, Align, Table},
};

fn read(state: &StateDir, top: usize) -> anyhow::Result<stats::Stats> {
    let (_lock, maps) = Maps::open_to_read(state)?;
    Ok(mcfilter::read_stats(&maps, top)?)
}

pub(super) fn run(state: &StateDir, args: &StatsArgs, json: bool) -> anyhow::Result<()> {
    if let Some(secs) = args.watch {
        return watch(state, args, secs, json);
    }
    let stats = read(state, args.top)?;
    if json {
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
        ("would drop (dry-run)", Align::Right),
    ]);
    for reason in Reason::ALL {
        let packets = stats.reasons.get(&reason).copied().unwrap_or(0);
        let verdict = if reason.is_drop() { "drop" } else { "pass" };
        let would = stats
            .would_drop_reasons
            .get(&reason)
            .map_or("-".into(), u64::to_string);
        reasons.row(vec![
            reason.name().into(),
            verdict.into(),
            packets.to_string(),
            would,
        ]);
    }
    let mut sources = Table::new(&[
        ("source", Align::Left),
        ("packets", Align::Right),
        ("would drop", Align::Right),
        ("bytes", Align::Right),
        ("last reason", Align::Left),
        ("last seen", Align::Right),
    ]);
    for row in &stats.sources {
        sources.row(vec![
            row.source.to_string(),
            row.packets.to_string(),
            row.would_drop_packets.to_string(),
            output::human_count(row.bytes),
            format!(
                "{}{}",
                mcfilter::stats::show_reason(row.reason),
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

/// `stats --watch`: rates from deltas of the exact counters every `secs` seconds, until
/// interrupted or `--count` readings: redrawn on a terminal, appended as plain text elsewhere
/// (`| tee`, a log file), one JSON line each with `--json`.
fn watch(state: &StateDir, args: &StatsArgs, secs: f64, json: bool) -> anyhow::Result<()> {
    let interval = std::time::Duration::from_secs_f64(secs);
    let mut before = read(state, args.top)?;
    let mut taken = std::time::Instant::now();
    let started = taken;
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut readings = 0u64;
    while args.count.is_none_or(|count| readings < count) {
        std::thread::sleep(interval);
        let after = read(state, args.top)?;
        let now = std::time::Instant::now();
        let rates = stats::rates(&before, &after, now.duration_since(taken).as_secs_f64());
        readings += 1;
        if json {
            output::print_json(&rates)?;
        } else if terminal {
            output::print(&format!("\x1b[H\x1b[2J{}", render_rates(&rates)))?;
        } else {
            // A pipe or a file: readings one after another, no escape codes.
            output::print(&format!(
                "# reading {readings}, {:.1} s\n{}\n",
                now.duration_since(started).as_secs_f64(),
                render_rates(&rates)
            ))?;
        }
        (before, taken) = (after, now);
    }
    Ok(())
}

fn render_rates(rates: &stats::Rates) -> String {
    let rate = |r: stats::Rate| [format!("{:.0}", r.pps), human_bits(r.bps)];
    let mut totals = Table::new(&[
        ("", Align::Left),
        ("pps", Align::Right),
        ("bps", Align::Right),
    ]);
    for (name, r) in [
        ("dropped", rates.dropped),
        ("passed", rates.passed),
        ("would drop (dry-run)", rates.would_drop),
    ] {
        let [pps, bps] = rate(r);
        totals.row(vec![name.into(), pps, bps]);
    }
    let mut reasons = Table::new(&[
        ("reason", Align::Left),
        ("pps", Align::Right),
        ("bps", Align::Right),
    ]);
    for reason in Reason::ALL {
        let [pps, bps] = rate(rates.reasons.get(&reason).copied().unwrap_or_default());
        reasons.row(vec![reason.name().into(), pps, bps]);
    }
    let mut sources = Table::new(&[
        ("source", Align::Left),
        ("pps", Align::Right),
        ("packets", Align::Right),
        ("last reason", Align::Left),
    ]);
    for s in &rates.sources {
        sources.row(vec![
            s.source.to_string(),
            format!("{:.0}", s.pps),
            s.packets.to_string(),
            mcfilter::stats::show_reason(s.reason).into(),
        ]);
    }
    format!(
        "mcfilter stats, every {:.1}s (Ctrl-C to stop)\n\n{}\n{}\n{}",
        rates.interval_s,
        totals.render(),
        reasons.render(),
        sources.render()
    )
}

/// Bits per second as `12.3 Mb/s`-style text.
fn human_bits(bps: f64) -> String {
    const UNITS: [(f64, &str); 3] = [(1e9, "Gb/s"), (1e6, "Mb/s"), (1e3, "kb/s")];
    for (scale, unit) in UNITS {
        if bps >= scale {
            return format!("{:.1} {unit}", bps / scale);
        }
    }
    format!("{bps:.0} b/s")
}
