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
use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    routing::get,
};
use aya_log::EbpfLogger;
use mcfilter_common::map_names;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    Error,
    config::{Config, LogFormat},
    filter::{self, AttachRequest},
    metrics,
    notify::Notifier,
    pin::StateDir,
    status, sys,
};

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

/// Connections the metrics server holds at once; one more is closed as it is accepted, so idle
/// clients cannot use up the service's file descriptors.
pub const MAX_CONNECTIONS: usize = 64;
/// A request's headers must have arrived this long after the connection opened.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection serves one request (no keep-alive) and lives this long at the most.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

fn info(message: &str) {
    log::info!("{message}");
}

fn error(message: &str) {
    log::error!("{message}");
}

/// Log lines on stderr: `mcfilter: <level>: <message>` (journald adds the time), with the
/// priority prefix journald reads (`<3>` error ... `<7>` debug) when stderr is its stream
/// (`JOURNAL_STREAM`), or one JSON object a line (`log_format = "json"`).
fn init_logging(level: log::LevelFilter, format: LogFormat) {
    use std::io::Write as _;
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let _ = env_logger::Builder::new()
        .filter_level(level)
        .format(move |out, record| match format {
            LogFormat::Json => {
                let ts = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0.0, |since| since.as_secs_f64());
                let line = serde_json::json!({
                    "ts": (ts * 1000.0).round() / 1000.0,
                    "level": record.level().as_str().to_lowercase(),
                    "message": record.args().to_string(),
                });
                writeln!(out, "{line}")
            }
            LogFormat::Text => {
                let priority = if journal {
                    format!("<{}>", journal_priority(record.level()))
                } else {
                    String::new()
                };
                writeln!(
                    out,
                    "{priority}mcfilter: {}: {}",
                    record.level().as_str().to_lowercase(),
                    record.args()
                )
            }
        })
        .try_init();
}

/// syslog's priority for a log level, as journald reads it from a `<N>` prefix.
fn journal_priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// The programs' events (aya-log records), read from the ring buffer every program of the
/// state shares, pinned at attach: opened by path, so the unit's three capabilities suffice.
#[derive(Default)]
struct Events {
    /// The ring's pin (its inode: a state made again after the last detach has a new ring) and
    /// its reader.
    reader: Option<(u64, EbpfLogger<&'static dyn log::Log>)>,
}

impl Events {
    /// Follows the state's ring: opens it when it is new, drops it when it is gone.
    fn refresh(&mut self, state_dir: &Path) {
        let state = StateDir::new(state_dir);
        let ring = std::fs::metadata(state.log_ring())
            .ok()
            .map(|meta| meta.ino());
        if self.reader.as_ref().map(|(ino, _)| *ino) == ring {
            return;
        }
        self.flush();
        self.reader = None;
        let Some(ino) = ring else {
            return;
        };
        match events_reader(&state) {
            Ok(Some(reader)) => self.reader = Some((ino, reader)),
            Ok(None) => {}
            Err(err) => log::warn!("no events from the programs: {err:#}"),
        }
    }

    fn flush(&mut self) {
        if let Some((_, reader)) = &mut self.reader {
            reader.flush();
        }
    }
}

/// A reader of `state`'s events ring, or `None` when the state is not all there (the ring is
/// opened through the object, whose other maps must then all be pinned already: reading never
/// creates a pin). aya-log reads a ring only from a loaded object or a program id, and the
/// latter needs CAP_SYS_ADMIN; loading the object creates no program, and only the small
/// per-CPU maps that are never pinned.
fn events_reader(state: &StateDir) -> anyhow::Result<Option<EbpfLogger<&'static dyn log::Log>>> {
    // Held while loading: no detach removes the state meanwhile.
    let _lock = state.prepare_and_lock_shared()?;
    if !crate::pin::map_pins()
        .iter()
        .all(|name| state.map(name).exists())
        || !state.log_ring().exists()
    {
        return Ok(None);
    }
    let mut object = aya::EbpfLoader::new()
        .default_map_pin_directory(state.path())
        .map_pin_path(map_names::LOGS, state.log_ring())
        .load(crate::EBPF_OBJECT)?;
    Ok(Some(EbpfLogger::init(&mut object)?))
}

/// Runs the service until SIGTERM or SIGINT.
pub fn run(config_path: &Path) -> anyhow::Result<()> {
    let config = Config::load(config_path).map_err(anyhow::Error::msg)?;
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
pub fn check(path: &Path) -> anyhow::Result<String> {
    let config = Config::load(path).map_err(anyhow::Error::msg)?;
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

    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
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
            match filter::detach(&state, iface) {
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

/// At start: the interfaces an earlier run of the service managed (recorded in the state) are
/// its own again, so one the config no longer lists is detached by [`apply`] and
/// `detach_on_exit` covers them all. Every listed interface that is attached already (the
/// filter stays attached across a restart) gets this build's program, swapped in through its
/// pinned link (the `--replace` path: atomic, no gap), so an upgraded service runs its own
/// datapath; and the service owns it from now on.
fn upgrade(config: &Config, owned: &mut BTreeSet<String>) -> Result<(), Error> {
    let state = StateDir::new(&config.state_dir);
    if !state.attached().map_err(Error::Io)? {
        return Ok(());
    }
    let interfaces = status::status(&state)?.interfaces;
    for iface in interfaces.iter().filter(|iface| iface.service) {
        info(&format!(
            "{} is this service's (recorded by an earlier run)",
            iface.name
        ));
        owned.insert(iface.name.clone());
    }
    let attached: BTreeSet<&str> = interfaces
        .iter()
        .filter(|iface| iface.present)
        .map(|iface| iface.name.as_str())
        .collect();
    for iface in config
        .interfaces
        .iter()
        .filter(|i| attached.contains(i.name.as_str()))
    {
        let request = AttachRequest {
            replace: true,
            service: true,
            then: None,
            ..AttachRequest::new(&iface.name)
        };
        let swapped = filter::attach(&state, &request)?;
        info(&format!(
            "swapped this build's program in on {} (program id {}); the filter stayed attached",
            swapped.iface, swapped.prog_id
        ));
        owned.insert(iface.name.clone());
    }
    Ok(())
}

/// Makes the filter match `config`. Checks every interface exists before changing anything,
/// then sets the allow-list (as a difference), ports and dry-run, attaches what is listed and
/// detaches what this service attached and is no longer listed.
pub fn apply(config: &Config, owned: &mut BTreeSet<String>) -> Result<(), Error> {
    for iface in &config.interfaces {
        sys::ifindex(&iface.name)?;
    }
    let state = StateDir::new(&config.state_dir);
    for iface in &config.interfaces {
        let request = AttachRequest {
            mode: iface.mode,
            ports: Some(config.ports.clone()),
            allow: config.allow.clone(),
            dry_run: config.dry_run,
            drop_reflected: config.drop_reflected,
            allow_capacity: config.allow_capacity,
            sources_capacity: config.sources_capacity,
            service: true,
            then: iface.then.clone(),
            ..AttachRequest::new(&iface.name)
        };
        match filter::attach(&state, &request) {
            Ok(attached) => {
                info(&format!(
                    "attached to {} ({} mode, program id {})",
                    attached.iface,
                    attached.attachment.name(),
                    attached.prog_id
                ));
                owned.insert(iface.name.clone());
            }
            Err(Error::AlreadyAttached { .. }) => {}
            Err(err) => return Err(err),
        }
    }
    if !config.interfaces.is_empty() || state.attached().map_err(Error::Io)? {
        filter::set_allow_list(&state, &config.allow)?;
        filter::change_policy(
            &state,
            &filter::PolicyChange::exactly(filter::Policy {
                ports: config.ports.clone(),
                dry_run: config.dry_run,
                drop_reflected: config.drop_reflected,
            }),
        )?;
    }
    let listed: BTreeSet<&str> = config.interfaces.iter().map(|i| i.name.as_str()).collect();
    let gone: Vec<String> = owned
        .iter()
        .filter(|name| !listed.contains(name.as_str()))
        .cloned()
        .collect();
    for name in gone {
        filter::detach(&state, &name)?;
        info(&format!("detached from {name} (no longer listed)"));
        owned.remove(&name);
    }
    Ok(())
}

/// The metrics server's accept loop: at most [`MAX_CONNECTIONS`] connections, each bounded in
/// time ([`HEADER_TIMEOUT`], [`CONNECTION_TIMEOUT`]) and serving one request.
async fn serve_http(listener: tokio::net::TcpListener, router: Router) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of file descriptors, or a connection reset while queued: try again soon.
                log::debug!("metrics: accept: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
            drop(permit);
        });
    }
}

async fn serve_metrics(
    State(shared): State<Arc<Shared>>,
) -> (StatusCode, [(header::HeaderName, &'static str); 1], String) {
    let _one_at_a_time = shared.scrape.lock().await;
    let config = shared.config.lock().expect("config lock").clone();
    let reloads = *shared.reloads.lock().expect("reloads lock");
    let rendered = tokio::task::spawn_blocking(move || metrics::render(&config, reloads)).await;
    let text = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    match rendered {
        Ok(Ok(body)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
            body,
        ),
        Ok(Err(err)) => (StatusCode::SERVICE_UNAVAILABLE, text, format!("{err}\n")),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, text, format!("{err}\n")),
    }
}

/// `/livez`: the process answers (Kubernetes' liveness: restart it when it does not).
async fn serve_live() -> &'static str {
    "ok\n"
}

/// `/healthz` and `/readyz`: every configured interface has the filter (Kubernetes' readiness).
async fn serve_health(State(shared): State<Arc<Shared>>) -> (StatusCode, String) {
    let config = shared.config.lock().expect("config lock").clone();
    let checked = tokio::task::spawn_blocking(move || health(&config)).await;
    match checked {
        Ok(Ok(text)) => (StatusCode::OK, text),
        Ok(Err(why)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")),
    }
}

/// Healthy when the program is attached on every configured interface; the answer names this
/// binary's build and each interface's program's.
fn health(config: &Config) -> Result<String, String> {
    let status = status::status(&StateDir::new(&config.state_dir)).map_err(|e| e.to_string())?;
    let missing: Vec<&str> = config
        .interfaces
        .iter()
        .map(|i| i.name.as_str())
        .filter(|name| {
            !status
                .interfaces
                .iter()
                .any(|s| s.present && s.name == *name)
        })
        .collect();
    if missing.is_empty() {
        let mut text = format!("ok\nbuild {}\n", status.build);
        for iface in &status.interfaces {
            text += &format!(
                "{} {}\n",
                iface.name,
                iface.build.as_deref().unwrap_or("earlier")
            );
        }
        Ok(text)
    } else {
        Err(format!("not attached: {}", missing.join(", ")))
    }
}
