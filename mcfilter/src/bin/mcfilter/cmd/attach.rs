//! `mcfilter attach IFACE [--mode] [--port]... [--allow]... [--dry-run]`

use serde::Serialize;

use mcfilter::{
    StateDir,
    filter::{self, AttachRequest},
    status::NextStatus,
};

use crate::{cli::AttachArgs, output};

/// `attach --json`: what the attach did and the policy it left.
#[derive(Debug, Serialize)]
struct Report {
    /// `attached`, or `replaced` (`--replace`).
    action: &'static str,
    iface: String,
    /// `native` or `skb`.
    mode: &'static str,
    program_id: u32,
    /// This attach created the state (the first interface).
    created_state: bool,
    ports: Vec<u16>,
    dry_run: bool,
    drop_reflected: bool,
    /// Allow-list entries this attach added.
    allow_added: Vec<String>,
    /// The program mcfilter runs in front of (`--then`).
    next: Option<NextStatus>,
    /// libxdp's dispatcher that runs mcfilter as a component (`--multiprog`), by program id.
    dispatcher_id: Option<u32>,
    /// Why `--mode auto` fell back to skb mode.
    native_error: Option<String>,
    /// Interfaces that deliver to a protected listener without the filter.
    warnings: Vec<String>,
}

pub(super) fn run(state: &StateDir, args: AttachArgs, json: bool) -> anyhow::Result<()> {
    let request = AttachRequest {
        iface: args.iface,
        mode: args.mode,
        ports: (!args.ports.is_empty()).then(|| args.ports.into_iter().collect()),
        allow: args.allow.into_iter().collect(),
        dry_run: args.dry_run,
        drop_reflected: args.drop_reflected,
        allow_capacity: args.allow_capacity,
        sources_capacity: args
            .sources_capacity
            .unwrap_or_else(mcfilter::memory::default_sources_capacity_here),
        replace: args.replace,
        force: args.force,
        service: false,
        then: args.then,
        multiprog: args.multiprog.then_some(args.priority),
    };
    let attached = mcfilter::attach(state, &request)?;
    // Other ways in: interfaces that deliver to a protected listener without the filter.
    let warnings = mcfilter::status(state)
        .map(|status| super::exposure_warnings(&status))
        .unwrap_or_default();
    if json {
        let report = Report {
            action: if request.replace {
                "replaced"
            } else {
                "attached"
            },
            mode: attached.attachment.name(),
            program_id: attached.prog_id,
            created_state: attached.created_state,
            dry_run: attached.dry_run,
            drop_reflected: attached.drop_reflected,
            allow_added: attached
                .allow_change
                .added
                .iter()
                .map(ToString::to_string)
                .collect(),
            next: attached.next.map(|program_id| NextStatus {
                program_id,
                name: filter::program_name(program_id),
            }),
            dispatcher_id: attached.dispatcher,
            native_error: attached.native_error,
            warnings,
            ports: attached.ports,
            iface: attached.iface,
        };
        output::print_json(&report)?;
        return Ok(());
    }
    if let Some(reason) = &attached.native_error {
        eprintln!(
            "mcfilter: note: native XDP is not available on {} ({reason}); attached in skb (generic) mode",
            attached.iface
        );
    }
    let ports: Vec<String> = attached.ports.iter().map(u16::to_string).collect();
    let added = attached.allow_change.added.len();
    let reflection = if attached.drop_reflected {
        "; UDP from protected ports (reflected replies) dropped"
    } else {
        ""
    };
    let said = super::say(&format!(
        "{} {} ({} mode, program id {}); ports {} {}; allow-list +{added}{reflection}",
        if request.replace {
            "replaced the program on"
        } else {
            "attached to"
        },
        attached.iface,
        attached.attachment.name(),
        attached.prog_id,
        ports.join(","),
        if attached.dry_run {
            "in dry-run (counting, not dropping)"
        } else {
            "enforced"
        },
    ));
    if let Some(next) = attached.next {
        eprintln!(
            "mcfilter: {} hands every packet it passes to program {next}{}; `mcfilter detach {}` puts that program back",
            attached.iface,
            filter::program_name(next).map_or_else(String::new, |name| format!(" ({name})")),
            attached.iface,
        );
    }
    if let Some(dispatcher) = attached.dispatcher {
        eprintln!(
            "mcfilter: {} runs mcfilter as a component of libxdp's dispatcher (program {dispatcher}; `xdp-loader status {}` lists them all); `mcfilter detach {}` leaves the others running",
            attached.iface, attached.iface, attached.iface,
        );
    }
    for warning in warnings {
        eprintln!("mcfilter: warning: {warning}");
    }
    said
}
