//! `mcfilter policy [--json] [--dry-run on|off] [--reflection drop|pass] [--port PORT]...`

use mcfilter::{
    StateDir,
    filter::{Policy, PolicyChange},
};

use crate::{
    cli::{OnOff, PolicyArgs, Reflection},
    output,
};

pub(super) fn run(state: &StateDir, args: PolicyArgs, json: bool) -> anyhow::Result<()> {
    let change = PolicyChange {
        ports: (!args.ports.is_empty()).then(|| args.ports.into_iter().collect()),
        dry_run: args.dry_run.map(|switch| switch == OnOff::On),
        drop_reflected: args
            .reflection
            .map(|reflection| reflection == Reflection::Drop),
    };
    let (policy, changed) = if change == PolicyChange::default() {
        (mcfilter::policy(state)?, None)
    } else {
        let (old, new) = mcfilter::change_policy(state, &change)?;
        let changed = old != new;
        (new, Some(changed))
    };
    if changed.is_some() {
        super::warn_if_the_service_manages(state, "policy");
    }
    if json {
        output::print_json(&policy)?;
        return Ok(());
    }
    let prefix = match changed {
        Some(true) => "policy changed: ",
        Some(false) => "policy unchanged: ",
        None => "",
    };
    super::say(&format!("{prefix}{}", describe(&policy)))
}

/// One line: the ports, enforcement and reflection protection.
fn describe(policy: &Policy) -> String {
    let ports: Vec<String> = policy.ports.iter().map(u16::to_string).collect();
    format!(
        "ports {}; {}; UDP from protected ports {}",
        ports.join(","),
        if policy.dry_run {
            "dry-run (counting, not dropping)"
        } else {
            "enforced"
        },
        if policy.drop_reflected {
            "dropped"
        } else {
            "passed"
        }
    )
}
