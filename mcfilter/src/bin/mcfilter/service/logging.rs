//! The service's log: levels journald keeps or JSON lines, and the programs' events.

use std::{os::unix::fs::MetadataExt as _, path::Path, time::SystemTime};

use aya_log::EbpfLogger;
use mcfilter_common::map_names;

use mcfilter::StateDir;

use crate::config::LogFormat;

pub(super) fn info(message: &str) {
    log::info!("{message}");
}

pub(super) fn error(message: &str) {
    log::error!("{message}");
}

/// Log lines on stderr: `mcfilter: <level>: <message>` (journald adds the time), with the
/// priority prefix journald reads (`<3>` error ... `<7>` debug) when stderr is its stream
/// (`JOURNAL_STREAM`), or one JSON object a line (`log_format = "json"`).
pub(super) fn init_logging(level: log::LevelFilter, format: LogFormat) {
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
pub(super) fn journal_priority(level: log::Level) -> u8 {
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
pub(super) struct Events {
    /// The ring's pin (its inode: a state made again after the last detach has a new ring) and
    /// its reader.
    reader: Option<(u64, EbpfLogger<&'static dyn log::Log>)>,
}

impl Events {
    /// Follows the state's ring: opens it when it is new, drops it when it is gone.
    pub(super) fn refresh(&mut self, state_dir: &Path) {
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

    pub(super) fn flush(&mut self) {
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
pub(super) fn events_reader(
    state: &StateDir,
) -> anyhow::Result<Option<EbpfLogger<&'static dyn log::Log>>> {
    // Held while loading: no detach removes the state meanwhile.
    let _lock = state.prepare_and_lock_shared()?;
    if !mcfilter::pin::map_pins()
        .iter()
        .all(|name| state.map(name).exists())
        || !state.log_ring().exists()
    {
        return Ok(None);
    }
    let mut object = aya::EbpfLoader::new()
        .default_map_pin_directory(state.path())
        .map_pin_path(map_names::LOGS, state.log_ring())
        .load(mcfilter::EBPF_OBJECT)?;
    Ok(Some(EbpfLogger::init(&mut object)?))
}
