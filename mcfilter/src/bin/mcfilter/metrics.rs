//! OpenMetrics text, read from the maps at scrape time (prometheus-client encodes). Counters
//! come from the program's own exact per-CPU counters, so they equal `stats --json`. The
//! busiest sources are bounded: the top N (config `metrics.top_sources`) prefixes by default,
//! or the top N addresses (`metrics.sources = "exact"`).

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use std::time::SystemTime;

use mcfilter::{Error, Maps, StateDir, stats};

use crate::config::{Config, SourceSeries};

type Labels = Vec<(&'static str, String)>;

/// The media type of what [`render`] writes.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How the service's config reloads went.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reloads {
    /// The last reload (or the start) applied its config.
    pub(crate) last_successful: bool,
    /// When a config was last applied.
    pub(crate) last_success: SystemTime,
}

/// The metrics for the filter `config` describes, as OpenMetrics text.
pub(crate) fn render(config: &Config, reloads: Reloads) -> Result<String, Error> {
    let state = StateDir::new(&config.state_dir);
    let status = mcfilter::status(&state)?;
    let (stats, prefixes) = {
        let (_lock, maps) = Maps::open_to_read(&state)?;
        match config.source_series {
            SourceSeries::Prefixes => stats::read_by_prefix(&maps, config.top_sources)?,
            SourceSeries::Exact => (mcfilter::read_stats(&maps, config.top_sources)?, Vec::new()),
        }
    };
    let mut registry = Registry::with_prefix("mcfilter");

    // By reason and action: all interfaces (the pinned totals), then each interface's program.
    let by_reason = |stats: &stats::Stats,
                     interface: Option<&str>,
                     packets: &Family<Labels, Counter>,
                     bytes: &Family<Labels, Counter>| {
        for (reason, action, total) in &stats.actions {
            let mut labels: Labels = vec![
                ("reason", reason.name().to_string()),
                ("action", action.name().to_string()),
            ];
            if let Some(interface) = interface {
                labels.insert(0, ("interface", interface.to_string()));
            }
            packets.get_or_create(&labels).inc_by(total.packets);
            bytes.get_or_create(&labels).inc_by(total.bytes);
        }
    };
    let packets = Family::<Labels, Counter>::default();
    let bytes = Family::<Labels, Counter>::default();
    by_reason(&stats, None, &packets, &bytes);
    registry.register(
        "packets",
        "Packets by reason and action (drop, pass, would_drop: passed by dry-run), all interfaces",
        packets,
    );
    registry.register("bytes", "Bytes by reason and action, all interfaces", bytes);
    let if_packets = Family::<Labels, Counter>::default();
    let if_bytes = Family::<Labels, Counter>::default();
    for iface in &status.interfaces {
        if let Some(own) = stats::iface_totals(&state, iface.ifindex)? {
            by_reason(&own, Some(&iface.name), &if_packets, &if_bytes);
        }
    }
    registry.register(
        "interface_packets",
        "Packets by interface, reason and action (since the interface was attached)",
        if_packets,
    );
    registry.register(
        "interface_bytes",
        "Bytes by interface, reason and action (since the interface was attached)",
        if_bytes,
    );

    let outcome = Family::<Labels, Counter>::default();
    let outcome_bytes = Family::<Labels, Counter>::default();
    for (name, total) in [
        ("dropped", stats.dropped),
        ("passed", stats.passed),
        ("would_drop", stats.would_drop),
    ] {
        outcome
            .get_or_create(&vec![("outcome", name.into())])
            .inc_by(total.packets);
        outcome_bytes
            .get_or_create(&vec![("outcome", name.into())])
            .inc_by(total.bytes);
    }
    registry.register(
        "outcome_packets",
        "Packets dropped, passed and (dry-run) would-drop",
        outcome,
    );
    registry.register(
        "outcome_bytes",
        "Bytes dropped, passed and (dry-run) would-drop",
        outcome_bytes,
    );

    let counter = |registry: &mut Registry, name: &str, help: &str, value: u64| {
        let metric = Counter::<u64>::default();
        metric.inc_by(value);
        registry.register(name, help, metric);
    };
    counter(
        &mut registry,
        "sources_evicted",
        "Sources the per-source LRU map evicted",
        stats.sources_evicted,
    );
    counter(
        &mut registry,
        "sources_not_recorded",
        "Drops the per-source map could not record",
        stats.sources_not_recorded,
    );
    counter(
        &mut registry,
        "fragments_not_recorded",
        "Dropped first fragments the fragment cache could not remember",
        stats.fragments_not_recorded,
    );

    let gauge = |registry: &mut Registry, name: &str, help: &str, value: i64| {
        let metric = Gauge::<i64>::default();
        metric.set(value);
        registry.register(name, help, metric);
    };
    gauge(
        &mut registry,
        "allow_entries",
        "Allow-list entries",
        status.allow_entries as i64,
    );
    gauge(
        &mut registry,
        "allow_capacity",
        "Allow-list capacity",
        i64::from(status.allow_capacity),
    );
    gauge(
        &mut registry,
        "sources_entries",
        "Per-source map entries",
        status.sources_entries as i64,
    );
    gauge(
        &mut registry,
        "sources_capacity",
        "Per-source map capacity",
        i64::from(status.sources_capacity),
    );
    gauge(
        &mut registry,
        "fragments_entries",
        "Dropped datagrams remembered",
        status.fragments_entries as i64,
    );
    gauge(
        &mut registry,
        "fragments_capacity",
        "Fragment cache capacity",
        i64::from(status.fragments_capacity),
    );
    gauge(
        &mut registry,
        "kernel_memory_bytes",
        "Kernel memory of the maps pinned in the state (memlock)",
        i64::try_from(status.kernel_memory.total_bytes).unwrap_or(i64::MAX),
    );
    gauge(
        &mut registry,
        "dry_run",
        "1 when dropping is off (shadow mode)",
        i64::from(status.dry_run),
    );

    let info = Family::<Labels, Gauge>::default();
    for iface in &status.interfaces {
        info.get_or_create(&vec![
            ("interface", iface.name.clone()),
            ("mode", mcfilter::filter::show_mode(iface.mode).into()),
            ("program_id", iface.program_id.to_string()),
            (
                "build",
                iface.build.clone().unwrap_or_else(|| "earlier".into()),
            ),
            ("present", iface.present.to_string()),
        ])
        .set(1);
    }
    registry.register(
        "program_info",
        "Attached interfaces: mode, program id, the build of its program, whether the interface exists",
        info,
    );
    let build = Family::<Labels, Gauge>::default();
    build
        .get_or_create(&vec![("build", status.build.clone())])
        .set(1);
    registry.register("build_info", "This binary's build", build);
    gauge(
        &mut registry,
        "config_last_reload_successful",
        "1 when the last reload (or the start) applied the config, 0 when it kept the previous one",
        i64::from(reloads.last_successful),
    );
    gauge(
        &mut registry,
        "config_last_reload_success_timestamp_seconds",
        "When a config was last applied, in seconds since the epoch",
        reloads
            .last_success
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs() as i64),
    );

    match config.source_series {
        SourceSeries::Prefixes => {
            let gauges = |value: fn(&stats::PrefixRow) -> u64| {
                let family = Family::<Labels, Gauge>::default();
                for row in &prefixes {
                    family
                        .get_or_create(&vec![("prefix", row.prefix.to_string())])
                        .set(value(row) as i64);
                }
                family
            };
            registry.register(
                "top_prefix_packets",
                "Packets dropped from the busiest /24 and /48 prefixes",
                gauges(|row| row.packets),
            );
            registry.register(
                "top_prefix_would_drop_packets",
                "Of the busiest prefixes' packets, those dry-run only counted",
                gauges(|row| row.would_drop_packets),
            );
            registry.register(
                "top_prefix_sources",
                "Distinct dropped sources in each of the busiest prefixes",
                gauges(|row| row.sources),
            );
        }
        SourceSeries::Exact => {
            let top = Family::<Labels, Gauge>::default();
            let top_would = Family::<Labels, Gauge>::default();
            for row in &stats.sources {
                top.get_or_create(&vec![
                    ("source", row.source.to_string()),
                    ("reason", mcfilter::stats::show_reason(row.reason).into()),
                ])
                .set(row.packets as i64);
                top_would
                    .get_or_create(&vec![("source", row.source.to_string())])
                    .set(row.would_drop_packets as i64);
            }
            registry.register(
                "top_source_packets",
                "Packets dropped from the busiest sources",
                top,
            );
            registry.register(
                "top_source_would_drop_packets",
                "Of the busiest sources' packets, those dry-run only counted",
                top_would,
            );
        }
    }

    let mut text = String::new();
    encode(&mut text, &registry).expect("writing to a String cannot fail");
    Ok(text)
}
