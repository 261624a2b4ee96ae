//! The command line, as clap types. The contract (names, flags, JSON keys) is documented in the
//! README; add to it, change none of it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;
use mcfilter_common::DEFAULT_ALLOW_CAPACITY;

use mcfilter::{
    allow,
    filter::{Mode, parse_port},
    pin::DEFAULT_STATE_DIR,
};

/// Protects memcached hosts at line rate: an XDP filter that drops UDP to the protected ports
/// and TCP from sources outside the allow-list.
#[derive(Debug, Parser)]
#[command(name = "mcfilter", version, propagate_version = true)]
pub(crate) struct Cli {
    /// Where the pinned program links and maps live (on bpffs)
    #[arg(
        long,
        global = true,
        env = "MCFILTER_STATE_DIR",
        default_value = DEFAULT_STATE_DIR,
        value_name = "DIR"
    )]
    pub(crate) state_dir: PathBuf,

    /// When the kernel refuses the XDP program, print the verifier's whole log to stderr
    #[arg(long, global = true, env = "MCFILTER_VERBOSE")]
    pub(crate) verbose: bool,

    /// One JSON object on stdout instead of text: what a command shows, what a change did,
    /// or `{"error": ...}` when it fails
    #[arg(long, global = true)]
    pub(crate) json: bool,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Attach the filter to an interface (the first attach creates the shared policy)
    Attach(AttachArgs),
    /// Detach the filter from an interface (the last detach removes all state)
    Detach(DetachArgs),
    /// Show or change the allow-list of TCP sources, live
    #[command(subcommand)]
    Allow(AllowCommand),
    /// Show the shared policy, or change it live for every interface (ports, dry-run,
    /// reflection protection)
    Policy(PolicyArgs),
    /// Show counters by reason and the busiest dropped sources
    Stats(StatsArgs),
    /// Show where the filter is attached and its policy
    Status,
    /// Check this host's exposure: what listens on the protected ports, where, whether the
    /// filter covers it; exit status 0 (clean), 3 (warnings) or 4 (a high finding)
    Audit,
    /// Print shell completions (bash, zsh, fish, elvish, powershell) to stdout
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout, or write every page (one per subcommand, and
    /// mcfilter.toml(5)) into a directory
    Man {
        /// Write all the pages here instead
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Run as a service: apply a config file, serve metrics, reload on SIGHUP or change
    Run {
        /// The config file (TOML; see packaging/mcfilter.toml)
        #[arg(long, value_name = "PATH", default_value = crate::config::DEFAULT_CONFIG)]
        config: PathBuf,
        /// Only check the config (and its allow files): exit 0 and say what it would do, or
        /// exit 1 with the first problem; touches no state and needs no privileges
        #[arg(long)]
        check: bool,
    },
}

#[derive(Debug, Args)]
pub(crate) struct AttachArgs {
    /// Interface in this network namespace
    pub(crate) iface: String,
    /// XDP mode: auto tries native, then falls back to skb and says so
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    pub(crate) mode: Mode,
    /// Protected destination port (repeat for several; default 11211 on the first attach);
    /// replaces the port set shared by every interface
    #[arg(long = "port", value_name = "PORT", value_parser = parse_port)]
    pub(crate) ports: Vec<u16>,
    /// CIDR or address allowed to reach the protected ports over TCP (repeatable)
    #[arg(long = "allow", value_name = "CIDR", value_parser = allow::parse_cidr)]
    pub(crate) allow: Vec<IpNet>,
    /// Count what would be dropped, but pass it (shadow mode)
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Reflection-victim protection: drop UDP whose source port is protected (amplified
    /// replies aimed at this host), and their later fragments
    #[arg(long)]
    pub(crate) drop_reflected: bool,
    /// Allow-list capacity, used when this attach creates the state
    #[arg(long, value_name = "ENTRIES", default_value_t = DEFAULT_ALLOW_CAPACITY,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) allow_capacity: u32,
    /// Swap this build's program in on an interface already attached, atomically (no gap),
    /// keeping the allow-list and counters: the upgrade path
    #[arg(long, conflicts_with = "force")]
    pub(crate) replace: bool,
    /// Remove an XDP program something else attached to the interface (through netlink)
    /// instead of refusing
    #[arg(long)]
    pub(crate) force: bool,
    /// Run in front of another XDP program and hand it every packet mcfilter passes:
    /// `existing` (the one on the interface now, swapped atomically), `id:N`, or a pinned
    /// program's path; `detach` puts it back
    #[arg(long, value_name = "NEXT", conflicts_with_all = ["replace", "force"],
          value_parser = |text: &str| text.parse::<mcfilter::filter::Next>())]
    pub(crate) then: Option<mcfilter::filter::Next>,
    /// Share the interface through libxdp's dispatcher (as xdp-loader and xdp-filter do):
    /// join the one there, or start one, as a component that hands on what it passes; needs a
    /// kernel that runs freplace programs and Debian's libxdp1; `detach` leaves the others
    /// running
    #[arg(long, conflicts_with_all = ["replace", "force", "then"])]
    pub(crate) multiprog: bool,
    /// The component's run priority in the dispatcher (lower runs first; ties by name)
    #[arg(long, value_name = "N", requires = "multiprog",
          default_value_t = mcfilter::filter::DEFAULT_PRIORITY)]
    pub(crate) priority: u32,
    /// Per-source counter capacity (LRU), used when this attach creates the state [default:
    /// what 24 MiB holds with this host's possible CPUs, at most 65536]
    #[arg(long, value_name = "ENTRIES", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) sources_capacity: Option<u32>,
}

#[derive(Debug, Args)]
pub(crate) struct DetachArgs {
    /// Interface name, as given to attach
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub(crate) iface: Option<String>,
    /// Every interface the filter is attached to (none attached is not an error)
    #[arg(long)]
    pub(crate) all: bool,
    /// Succeed, doing nothing, when the interface is not attached
    #[arg(long)]
    pub(crate) if_attached: bool,
}

#[derive(Debug, Args)]
pub(crate) struct PolicyArgs {
    /// Dry-run (count what would be dropped, pass it) on, or off to enforce
    #[arg(long, value_enum, value_name = "on|off")]
    pub(crate) dry_run: Option<OnOff>,
    /// UDP from a protected source port (reflected replies): drop, or pass
    #[arg(long, value_enum, value_name = "drop|pass")]
    pub(crate) reflection: Option<Reflection>,
    /// The protected destination ports, replacing the set (repeat for several)
    #[arg(long = "port", value_name = "PORT", value_parser = parse_port)]
    pub(crate) ports: Vec<u16>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum OnOff {
    On,
    Off,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Reflection {
    Drop,
    Pass,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AllowCommand {
    /// Allow CIDRs (takes effect at once)
    Add {
        #[arg(required = true, value_name = "CIDR", value_parser = allow::parse_cidr)]
        cidrs: Vec<IpNet>,
    },
    /// Remove CIDRs (all must be on the list, else nothing changes)
    #[command(visible_aliases = ["delete", "rm"])]
    Del {
        #[arg(required = true, value_name = "CIDR", value_parser = allow::parse_cidr)]
        cidrs: Vec<IpNet>,
        /// Remove those on the list, ignore the others
        #[arg(long)]
        if_present: bool,
    },
    /// List the allow-list, canonical and sorted
    #[command(visible_alias = "ls")]
    List,
    /// Suggest allow-list entries: sources whose TCP to a protected port was (or, in dry-run,
    /// would have been) dropped, busiest first, as CIDRs ready for `allow add` or a file
    Suggest {
        /// How many sources at most
        #[arg(long, value_name = "N", default_value_t = 50)]
        top: usize,
        /// The current allow-list first, then the suggestions: ready for `allow replace`
        /// without losing an entry
        #[arg(long)]
        merge: bool,
    },
    /// Make the list exactly FILE's (one CIDR a line, # comments; - for stdin), applying the
    /// difference so entries on both lists are never missing
    Replace {
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
pub(crate) struct StatsArgs {
    /// How many of the busiest sources to list
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub(crate) top: usize,
    /// Redraw rates (pps, bps) by reason and the busiest sources every SECS seconds (default
    /// 1); with --json, print one JSON object a line
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "1",
          value_parser = parse_interval)]
    pub(crate) watch: Option<f64>,
    /// With --watch: stop after N readings (default: until interrupted)
    #[arg(long, value_name = "N", requires = "watch")]
    pub(crate) count: Option<u64>,
}

/// A watch interval: 0.1 to 3600 seconds.
pub(crate) fn parse_interval(text: &str) -> Result<f64, IntervalError> {
    match text.trim().parse::<f64>() {
        Ok(secs) if (0.1..=3600.0).contains(&secs) => Ok(secs),
        _ => Err(IntervalError {
            text: text.to_owned(),
        }),
    }
}

/// Text that is not a `--watch` interval.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("'{text}' is not an interval; use 0.1 to 3600 seconds")]
pub(crate) struct IntervalError {
    pub(crate) text: String,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_cli_model_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn state_dir_is_global() {
        let before = Cli::try_parse_from(["mcfilter", "--state-dir", "/x", "status"]).unwrap();
        let after = Cli::try_parse_from(["mcfilter", "status", "--state-dir", "/x"]).unwrap();
        assert_eq!(before.state_dir, PathBuf::from("/x"));
        assert_eq!(after.state_dir, PathBuf::from("/x"));
    }
}
