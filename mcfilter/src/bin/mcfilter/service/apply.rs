//! Applying a config to the state: the interfaces, the policy and the allow-list, and swapping
//! this build's program in where another runs.

use std::collections::BTreeSet;

use super::logging::info;
use mcfilter::{
    Error, StateDir,
    filter::{self, AttachRequest},
    sys,
};

use crate::config::Config;

/// At start: the interfaces an earlier run of the service managed (recorded in the state) are
/// its own again, so one the config no longer lists is detached by [`apply`] and
/// `detach_on_exit` covers them all. Every listed interface that is attached already (the
/// filter stays attached across a restart) gets this build's program, swapped in through its
/// pinned link (the `--replace` path: atomic, no gap), so an upgraded service runs its own
/// datapath; and the service owns it from now on.
pub(super) fn upgrade(config: &Config, owned: &mut BTreeSet<String>) -> Result<(), Error> {
    let state = StateDir::new(&config.state_dir);
    if !state.attached().map_err(Error::Io)? {
        return Ok(());
    }
    let interfaces = mcfilter::status(&state)?.interfaces;
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
        let swapped = mcfilter::attach(&state, &request)?;
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
pub(crate) fn apply(config: &Config, owned: &mut BTreeSet<String>) -> Result<(), Error> {
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
        match mcfilter::attach(&state, &request) {
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
        mcfilter::set_allow_list(&state, &config.allow)?;
        mcfilter::change_policy(
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
        mcfilter::detach(&state, &name)?;
        info(&format!("detached from {name} (no longer listed)"));
        owned.remove(&name);
    }
    Ok(())
}
