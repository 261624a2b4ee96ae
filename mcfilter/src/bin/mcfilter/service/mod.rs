//! `mcfilter run`: the filter as a long-running service. It applies the config file (attach
//! the listed interfaces, set ports, dry-run and the allow-list, detach what it attached and is
//! no longer listed), serves Prometheus metrics and `/healthz`, re-applies the file on SIGHUP and
//! when it changes, and keeps the running policy when a new file does not validate. Exits
//! cleanly on SIGTERM/SIGINT, leaving the filter attached unless `detach_on_exit` says
//! otherwise. It logs (at `log_level`) its own actions and the program's rare events, read
//! from the aya-log ring buffer the programs share (pinned in the state dir).

use std::{
    collections::BTreeSet,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use axum::{Router, routing::get};
use tokio::signal::unix::{SignalKind, signal};

mod apply;
mod http;
mod logging;

pub(crate) use apply::apply;
use apply::upgrade;
use http::{serve_health, serve_http, serve_live, serve_metrics};
use logging::{Events, error, info, init_logging};

use mcfilter::StateDir;

use crate::{config::Config, metrics, notify::Notifier};

/// How often the config file's modification time is checked.
const POLL: Duration = Duration::from_secs(1);
/// A changed file is re-read once it has been quiet this long (editors write in steps).
const DEBOUNCE: Duration = Duration::from_millis(300);
/// How often the programs' event buffers are read.
const EVENTS_DRAIN: Duration = Duration::from_millis(200);

/// What the HTTP handlers need.
struct Shared {
    config: Mutex<Config>,
    /// How the last reload went (the metrics show it).
    reloads: Mutex<metrics::Reloads>,
    /// One scrape at a time: a burst of scrapes queues instead of reading the maps in parallel.
    scrape: tokio::sync::Mutex<()>,
}

/// Runs the service until SIGTERM or SIGINT.
pub(crate) fn run(config_path: &Path) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    init_logging(config.log_level, config.log_format);
    let mut owned = BTreeSet::new();
    upgrade(&config, &mut owned).context("swapping in this build's program")?;
    apply(&config, &mut owned).context("applying the config")?;
    info(&format!(
        "applied {}: {}",
        config_path.display(),
        summary(&config)
    ));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(serve(config_path.to_owned(), config, owned))
}

/// What a config makes the service do, in a line (the log and systemd's STATUS).
fn summary(config: &Config) -> String {
    let names: Vec<&str> = config.interfaces.iter().map(|i| i.name.as_str()).collect();
    format!(
        "filtering {} ({} interface(s)), ports {}, {} allow-list entries{}",
        if names.is_empty() {
            "nothing".to_owned()
        } else {
            names.join(",")
        },
        names.len(),
        config
            .ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(","),
        config.allow.len(),
        if config.dry_run { ", dry-run" } else { "" }
    )
}

/// `mcfilter run --check`: whether `path` is a config the service would apply (its allow files
/// included), touching no state; the summary of what it would do.
pub(crate) fn check(path: &Path) -> anyhow::Result<String> {
    let config = Config::load(path)?;
    anyhow::ensure!(
        config.allow.len() <= config.allow_capacity as usize,
        "config {}: {} allow-list entries do not fit maps.allow_capacity = {}",
        path.display(),
        config.allow.len(),
        config.allow_capacity
    );
    Ok(summary(&config))
}

async fn serve(path: PathBuf, config: Config, mut owned: BTreeSet<String>) -> anyhow::Result<()> {
    // The handlers first: from READY=1 on (and the log line a supervisor may wait for), a
    // SIGHUP is a reload, never the default action that ends the process.
    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let listener = tokio::net::TcpListener::bind(config.metrics_addr)
        .await
        .with_context(|| format!("listening for metrics on {}", config.metrics_addr))?;
    info(&format!(
        "metrics on http://{}/metrics",
        config.metrics_addr
    ));
    let notifier = Notifier::from_env();
    notifier.ready(&summary(&config));
    let shared = Arc::new(Shared {
        config: Mutex::new(config),
        reloads: Mutex::new(metrics::Reloads {
            last_successful: true,
            last_success: SystemTime::now(),
        }),
        scrape: tokio::sync::Mutex::new(()),
    });
    let router = Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(serve_health))
        .route("/readyz", get(serve_health))
        .route("/livez", get(serve_live))
        .with_state(shared.clone());
    let server = tokio::spawn(serve_http(listener, router));

    let mut poll = tokio::time::interval(POLL);
    let mut seen = watched(&path, &shared);
    let state_dir = shared.config.lock().expect("config lock").state_dir.clone();
    let mut events = Events::default();
    events.refresh(&state_dir);
    let mut drain = tokio::time::interval(EVENTS_DRAIN);
    loop {
        tokio::select! {
            _ = drain.tick() => events.flush(),
            _ = hangup.recv() => {
                notifier.reloading();
                notifier.ready(&reload(&path, &shared, &mut owned, "SIGHUP"));
                events.refresh(&state_dir);
            }
            _ = poll.tick() => {
                if watched(&path, &shared) != seen {
                    // Debounce: wait until the files have stopped changing.
                    tokio::time::sleep(DEBOUNCE).await;
                    notifier.reloading();
                    notifier.ready(&reload(&path, &shared, &mut owned, "file change"));
                    seen = watched(&path, &shared);
                    events.refresh(&state_dir);
                }
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    notifier.stopping();
    server.abort();
    events.flush();
    let config = shared.config.lock().expect("config lock").clone();
    if config.detach_on_exit {
        let state = StateDir::new(&config.state_dir);
        for iface in &owned {
            match mcfilter::detach(&state, iface) {
                Ok(_) => info(&format!("detached from {iface}")),
                Err(err) => error(&format!("detaching {iface}: {err}")),
            }
        }
    } else {
        info("exiting; the filter stays attached (detach_on_exit = false)");
    }
    Ok(())
}

/// What the service watches: the config file and the allow files the running config names,
/// each by modification time, inode and size, with symbolic links followed (a Kubernetes
/// ConfigMap update swaps a link to a new file).
fn watched(config: &Path, shared: &Shared) -> Vec<Option<(SystemTime, u64, u64)>> {
    let allow_files = shared
        .config
        .lock()
        .expect("config lock")
        .allow_files
        .clone();
    std::iter::once(config.to_owned())
        .chain(allow_files)
        .map(|path| {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.modified().ok()?, meta.ino(), meta.len()))
        })
        .collect()
}

/// Re-reads and applies the config; a config that does not validate or apply leaves the
/// running policy in place. Returns how the service stands now (systemd's STATUS).
fn reload(path: &Path, shared: &Shared, owned: &mut BTreeSet<String>, why: &str) -> String {
    let new = match Config::load(path) {
        Ok(new) => new,
        Err(err) => {
            error(&format!("{err}; keeping the running policy"));
            shared.reloads.lock().expect("reloads lock").last_successful = false;
            return format!("reload failed, running the previous config: {err}");
        }
    };
    let old = shared.config.lock().expect("config lock").clone();
    if new.metrics_addr != old.metrics_addr || new.state_dir != old.state_dir {
        error("metrics.address and state_dir change only on restart; keeping the old ones");
    }
    let new = Config {
        metrics_addr: old.metrics_addr,
        state_dir: old.state_dir.clone(),
        ..new
    };
    match apply(&new, owned) {
        Ok(()) => {
            let summary = summary(&new);
            info(&format!("reloaded {} ({why}): {summary}", path.display()));
            *shared.config.lock().expect("config lock") = new;
            *shared.reloads.lock().expect("reloads lock") = metrics::Reloads {
                last_successful: true,
                last_success: SystemTime::now(),
            };
            summary
        }
        Err(err) => {
            shared.reloads.lock().expect("reloads lock").last_successful = false;
            error(&format!(
                "applying {}: {err:#}; keeping the running policy",
                path.display()
            ));
            format!(
                "reload failed, running the previous config: applying {}: {err:#}",
                path.display()
            )
        }
    }
}
