//! The shared policy set wholesale (the service's config is authoritative): ports, dry-run,
//! reflection protection and the allow-list.

use std::collections::BTreeSet;

use ipnet::IpNet;
use mcfilter_common::Config;

use crate::{Error, maps::Maps, pin::StateDir};

/// Sets the shared policy's ports, dry-run and reflection protection exactly (the service's
/// config is authoritative, both ways); returns whether anything changed.
pub fn set_policy(
    state: &StateDir,
    ports: &BTreeSet<u16>,
    dry_run: bool,
    drop_reflected: bool,
) -> Result<bool, Error> {
    let _lock = state.prepare_and_lock()?;
    let mut maps = Maps::open(state)?;
    let old = maps.config()?;
    let mut config = Config::empty();
    ports.iter().for_each(|&port| config.protect(port));
    config.dry_run = u32::from(dry_run);
    config.drop_reflected = u32::from(drop_reflected);
    if config.ports == old.ports
        && config.dry_run == old.dry_run
        && config.drop_reflected == old.drop_reflected
    {
        return Ok(false);
    }
    maps.set_config(&config)?;
    Ok(true)
}

/// Makes the allow-list exactly `nets` (journaled, applied as a difference).
pub fn set_allow_list(
    state: &StateDir,
    nets: &BTreeSet<IpNet>,
) -> Result<crate::allow::Change, Error> {
    let _lock = state.prepare_and_lock()?;
    Maps::open(state)?.allow.replace(nets)
}
