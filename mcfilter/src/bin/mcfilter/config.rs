//! The service's config file (TOML): one validated model shared with the CLI flags. Every
//! value goes through the same parsers as the flags (`filter::parse_port`, `allow::parse_cidr`),
//! unknown keys are errors that name the key, and loading reads the allow-list files too, so
//! a config that loads is a config that applies. `packaging/mcfilter.toml` documents every key.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use ipnet::IpNet;
use mcfilter_common::DEFAULT_ALLOW_CAPACITY;
use serde::Deserialize;

use mcfilter::{DEFAULT_PORT, allow, filter::Mode, pin::DEFAULT_STATE_DIR};

/// Where `mcfilter run` looks without `--config`.
pub(crate) const DEFAULT_CONFIG: &str = "/etc/mcfilter/mcfilter.toml";
/// The metrics listener's default address: loopback only.
pub(crate) const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9911";

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    state_dir: Option<PathBuf>,
    #[serde(default)]
    interfaces: Vec<FileInterface>,
    ports: Option<Vec<i64>>,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    allow_files: Vec<PathBuf>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    detach_on_exit: bool,
    log_level: Option<String>,
    log_format: Option<String>,
    reflection: Option<String>,
    #[serde(default)]
    maps: FileMaps,
    #[serde(default)]
    metrics: FileMetrics,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileInterface {
    name: String,
    #[serde(default)]
    mode: Option<String>,
    then: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMaps {
    allow_capacity: Option<u32>,
    sources_capacity: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMetrics {
    address: Option<String>,
    top_sources: Option<usize>,
    sources: Option<String>,
}

/// How the service writes its log lines (to stderr).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// `mcfilter: info: ...`; under journald, with the priority prefix it reads (`<6>`).
    Text,
    /// One JSON object a line (`{"ts":..,"level":"info","message":".."}`), for log pipelines.
    Json,
}

/// How the metrics show the busiest dropped sources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SourceSeries {
    /// Aggregated into /24 and /48 prefixes, without a reason: a spoofed flood cannot grow
    /// the series past `top_sources` (the default).
    Prefixes,
    /// One series per source address and reason (opt-in).
    Exact,
}

/// One interface to filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Interface {
    pub(crate) name: String,
    pub(crate) mode: Mode,
    /// Run in front of this program (`attach --then`) when attaching the interface.
    pub(crate) then: Option<mcfilter::filter::Next>,
}

/// The environment variable that replaces `metrics.address`: a DaemonSet binds each node's
/// metrics to that node's address (`$(HOST_IP):9911`), which one ConfigMap cannot name.
pub(crate) const METRICS_ADDRESS_ENV: &str = "MCFILTER_METRICS_ADDRESS";

/// The validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Config {
    pub(crate) state_dir: PathBuf,
    pub(crate) interfaces: Vec<Interface>,
    pub(crate) ports: BTreeSet<u16>,
    /// Inline entries and the contents of every allow file.
    pub(crate) allow: BTreeSet<IpNet>,
    /// The allow files, resolved against the config's directory (the service watches them).
    pub(crate) allow_files: Vec<PathBuf>,
    pub(crate) dry_run: bool,
    /// `reflection = "drop"`: drop UDP from a protected source port.
    pub(crate) drop_reflected: bool,
    pub(crate) detach_on_exit: bool,
    pub(crate) allow_capacity: u32,
    pub(crate) sources_capacity: u32,
    pub(crate) metrics_addr: SocketAddr,
    pub(crate) top_sources: usize,
    pub(crate) source_series: SourceSeries,
    /// The service's log level, for its own messages and the program's events.
    pub(crate) log_level: log::LevelFilter,
    pub(crate) log_format: LogFormat,
}

/// A config that cannot be used, as `run` and `run --check` report it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("cannot read config {}: {err}", path.display())]
    Read { path: PathBuf, err: std::io::Error },
    #[error("config {}: {problem}", path.display())]
    Invalid { path: PathBuf, problem: Problem },
    #[error("{METRICS_ADDRESS_ENV} '{address}' is not an address:port")]
    MetricsAddressEnv { address: String },
}

/// What is wrong in a config's text, one line each.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Problem {
    /// toml's own diagnostic (an unknown key, a wrong type), folded into one line.
    #[error("{0}")]
    Toml(String),
    #[error("interface name '{0}' is not valid")]
    InterfaceName(String),
    #[error("interface {0} is listed twice")]
    InterfaceTwice(String),
    #[error("interface {iface}: mode '{mode}' is not auto, native or skb")]
    Mode { iface: String, mode: String },
    #[error("interface {iface}: then: {err}")]
    Then {
        iface: String,
        err: mcfilter::filter::NextError,
    },
    #[error("ports must not be empty")]
    NoPorts,
    #[error("ports: {0}")]
    Port(mcfilter::filter::PortError),
    #[error("allow: {0}")]
    Allow(allow::CidrError),
    #[error("cannot read allow file {}: {err}", path.display())]
    ReadAllowFile { path: PathBuf, err: std::io::Error },
    #[error("{}: {err}", path.display())]
    AllowFile {
        path: PathBuf,
        err: allow::ListError,
    },
    #[error("maps.{0} must be at least 1")]
    ZeroCapacity(&'static str),
    #[error("reflection '{0}' is not pass or drop")]
    Reflection(String),
    #[error("log_level '{0}' is not off, error, warn, info, debug or trace")]
    LogLevel(String),
    #[error("metrics.address '{0}' is not an address:port")]
    MetricsAddress(String),
    #[error("metrics.sources '{0}' is not prefixes or exact")]
    MetricsSources(String),
    #[error("log_format '{0}' is not text or json")]
    LogFormat(String),
}

impl Config {
    /// Reads and validates `path`; allow files are read relative to the config's directory.
    /// [`METRICS_ADDRESS_ENV`], when set, replaces `metrics.address`.
    pub(crate) fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError::Read {
            path: path.to_owned(),
            err,
        })?;
        let mut config =
            Self::parse(&text, path.parent().unwrap_or(Path::new("."))).map_err(|problem| {
                ConfigError::Invalid {
                    path: path.to_owned(),
                    problem,
                }
            })?;
        if let Some(address) = std::env::var_os(METRICS_ADDRESS_ENV) {
            let address = address.to_string_lossy();
            config.metrics_addr = address
                .parse()
                .map_err(|_| ConfigError::MetricsAddressEnv {
                    address: address.into_owned(),
                })?;
        }
        Ok(config)
    }

    /// Validates config text; `base` resolves relative allow-file paths.
    pub(crate) fn parse(text: &str, base: &Path) -> Result<Self, Problem> {
        let file: File =
            toml::from_str(text).map_err(|err| Problem::Toml(one_line(&err.to_string())))?;
        let mut interfaces = Vec::new();
        for iface in file.interfaces {
            if iface.name.is_empty() || iface.name.len() >= mcfilter_common::IFNAMSIZ {
                return Err(Problem::InterfaceName(iface.name));
            }
            if interfaces.iter().any(|i: &Interface| i.name == iface.name) {
                return Err(Problem::InterfaceTwice(iface.name));
            }
            // The command line's names for the modes (`--mode`), case and all.
            let mode = match iface.mode.as_deref() {
                None => Mode::Auto,
                Some(name) => {
                    <Mode as clap::ValueEnum>::from_str(name, false).map_err(|_| Problem::Mode {
                        iface: iface.name.clone(),
                        mode: name.to_owned(),
                    })?
                }
            };
            let then = iface
                .then
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|err| Problem::Then {
                    iface: iface.name.clone(),
                    err,
                })?;
            interfaces.push(Interface {
                name: iface.name,
                mode,
                then,
            });
        }
        let ports = match file.ports {
            None => BTreeSet::from([DEFAULT_PORT]),
            Some(ports) if ports.is_empty() => return Err(Problem::NoPorts),
            Some(ports) => ports
                .iter()
                .map(|p| mcfilter::filter::parse_port(&p.to_string()).map_err(Problem::Port))
                .collect::<Result<_, _>>()?,
        };
        let mut allow = BTreeSet::new();
        for cidr in &file.allow {
            allow.insert(allow::parse_cidr(cidr).map_err(Problem::Allow)?);
        }
        let allow_files: Vec<PathBuf> = file.allow_files.iter().map(|f| base.join(f)).collect();
        for path in &allow_files {
            let text = std::fs::read_to_string(path).map_err(|err| Problem::ReadAllowFile {
                path: path.clone(),
                err,
            })?;
            allow.extend(allow::parse_list(&text).map_err(|err| Problem::AllowFile {
                path: path.clone(),
                err,
            })?);
        }
        let positive = |name: &'static str, value: Option<u32>, default: u32| match value {
            Some(0) => Err(Problem::ZeroCapacity(name)),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        let drop_reflected = match file.reflection.as_deref().unwrap_or("pass") {
            "pass" => false,
            "drop" => true,
            other => return Err(Problem::Reflection(other.to_owned())),
        };
        let log_level = match file.log_level.as_deref().unwrap_or("info") {
            "off" => log::LevelFilter::Off,
            "error" => log::LevelFilter::Error,
            "warn" => log::LevelFilter::Warn,
            "info" => log::LevelFilter::Info,
            "debug" => log::LevelFilter::Debug,
            "trace" => log::LevelFilter::Trace,
            other => return Err(Problem::LogLevel(other.to_owned())),
        };
        let address = file
            .metrics
            .address
            .as_deref()
            .unwrap_or(DEFAULT_METRICS_ADDR);
        Ok(Config {
            state_dir: file.state_dir.unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
            interfaces,
            ports,
            allow,
            allow_files,
            dry_run: file.dry_run,
            drop_reflected,
            detach_on_exit: file.detach_on_exit,
            allow_capacity: positive(
                "allow_capacity",
                file.maps.allow_capacity,
                DEFAULT_ALLOW_CAPACITY,
            )?,
            sources_capacity: positive(
                "sources_capacity",
                file.maps.sources_capacity,
                mcfilter::memory::default_sources_capacity_here(),
            )?,
            metrics_addr: address
                .parse()
                .map_err(|_| Problem::MetricsAddress(address.to_owned()))?,
            top_sources: file.metrics.top_sources.unwrap_or(20),
            source_series: match file.metrics.sources.as_deref().unwrap_or("prefixes") {
                "prefixes" => SourceSeries::Prefixes,
                "exact" => SourceSeries::Exact,
                other => return Err(Problem::MetricsSources(other.to_owned())),
            },
            log_level,
            log_format: match file.log_format.as_deref().unwrap_or("text") {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => return Err(Problem::LogFormat(other.to_owned())),
            },
        })
    }
}

/// toml's multi-line diagnostics as one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.chars().all(|c| "|^ ".contains(c)))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("/nonexistent")).map_err(|problem| problem.to_string())
    }

    #[test]
    fn the_example_config_is_valid() {
        let text = include_str!("../../../../packaging/mcfilter.toml");
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging");
        let config = Config::parse(text, &base).expect("example config");
        assert_eq!(config.interfaces[0].name, "eth0");
        assert!(config.ports.contains(&11211));
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let config = parse("[[interfaces]]\nname = \"eth0\"\n").unwrap();
        assert_eq!(config.ports, BTreeSet::from([11211]));
        assert_eq!(config.interfaces[0].mode, Mode::Auto);
        assert_eq!(config.metrics_addr, DEFAULT_METRICS_ADDR.parse().unwrap());
        assert_eq!(config.top_sources, 20);
        assert!(!config.detach_on_exit && !config.dry_run);
    }

    #[test]
    fn an_interface_names_the_program_it_runs_in_front_of() {
        use mcfilter::filter::Next;
        let config = parse(
            "[[interfaces]]\nname = \"eth0\"\nthen = \"existing\"\n[[interfaces]]\nname = \"eth1\"\nthen = \"id:42\"\n[[interfaces]]\nname = \"eth2\"\n",
        )
        .unwrap();
        let then: Vec<_> = config.interfaces.iter().map(|i| i.then.clone()).collect();
        assert_eq!(then, [Some(Next::Existing), Some(Next::Id(42)), None]);
        let err = parse("[[interfaces]]\nname = \"eth0\"\nthen = \"whatever\"\n").unwrap_err();
        assert!(err.starts_with("interface eth0: then:"), "{err}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = parse("portz = [1]\n").unwrap_err();
        assert!(err.contains("portz"), "{err}");
        let err = parse("[metrics]\nadress = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(err.contains("adress"), "{err}");
        assert_eq!(err.lines().count(), 1);
    }

    #[test]
    fn values_are_validated_like_the_flags() {
        for (text, needle) in [
            ("ports = [0]", "1 to 65535"),
            ("ports = [70000]", "1 to 65535"),
            ("ports = []", "must not be empty"),
            ("allow = [\"198.18.0.0/33\"]", "not an IPv4 or IPv6 CIDR"),
            (
                "[[interfaces]]\nname = \"eth0\"\nmode = \"turbo\"",
                "not auto, native or skb",
            ),
            ("[maps]\nallow_capacity = 0", "at least 1"),
            ("[metrics]\naddress = \"nowhere\"", "not an address:port"),
            ("log_level = \"loud\"", "not off, error"),
            ("reflection = \"maybe\"", "not pass or drop"),
            ("allow_files = [\"missing.txt\"]", "cannot read allow file"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
