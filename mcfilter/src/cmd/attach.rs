//! `mcfilter attach IFACE [--mode] [--port]... [--allow]... [--dry-run]`

use crate::{
    cli::AttachArgs,
    filter::{self, AttachRequest},
    pin::StateDir,
};

pub fn run(state: &StateDir, args: AttachArgs) -> anyhow::Result<()> {
    let request = AttachRequest {
        iface: args.iface,
        mode: args.mode.into(),
        ports: (!args.ports.is_empty()).then(|| args.ports.into_iter().collect()),
        allow: args.allow.into_iter().collect(),
        dry_run: args.dry_run,
        drop_reflected: args.drop_reflected,
        allow_capacity: args.allow_capacity,
        sources_capacity: args.sources_capacity,
        replace: args.replace,
        force: args.force,
        service: false,
        then: args.then,
    };
    let attached = filter::attach(state, &request)?;
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
    // Other ways in: interfaces that deliver to a protected listener without the filter.
    if let Ok(status) = crate::status::status(state) {
        for warning in super::exposure_warnings(&status) {
            eprintln!("mcfilter: warning: {warning}");
        }
    }
    said
}
