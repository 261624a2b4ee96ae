//! The shared policy: protected ports, dry-run and reflection protection. [`Policy`] is its one
//! owner: attach, the `policy` command, the service and the test harness all read it, change it
//! with a [`PolicyChange`] and write it as the program's [`Config`] through here. A change is one
//! write of the one-entry config array, which the program reads whole per packet: a kill leaves
//! the old policy or the new one, never a mix, so it needs no journal.

use std::collections::BTreeSet;

use ipnet::IpNet;
use mcfilter_common::Config;

use crate::{DEFAULT_PORT, Error, maps::Maps, pin::StateDir};

/// The policy every attached interface shares.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Policy {
    /// Destination ports whose UDP is dropped and whose TCP passes only from the allow-list.
    pub ports: BTreeSet<u16>,
    /// Count what would be dropped, but pass it.
    pub dry_run: bool,
    /// Drop UDP *from* a protected port (amplified replies aimed at this host).
    pub drop_reflected: bool,
}

/// What to change of a [`Policy`]; `None` keeps a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyChange {
    /// The protected ports, replacing the current ones.
    pub ports: Option<BTreeSet<u16>>,
    /// Dry-run on or off.
    pub dry_run: Option<bool>,
    /// Reflection-victim protection on or off.
    pub drop_reflected: Option<bool>,
}

impl Policy {
    /// The policy of a first attach that names no ports: memcached's, enforcing.
    pub fn initial() -> Self {
        Policy {
            ports: BTreeSet::from([DEFAULT_PORT]),
            dry_run: false,
            drop_reflected: false,
        }
    }

    /// The policy a program's config holds.
    pub fn from_config(config: &Config) -> Self {
        Policy {
            ports: config.protected_ports().collect(),
            dry_run: config.dry_run != 0,
            drop_reflected: config.drop_reflected != 0,
        }
    }

    /// The config the program reads for this policy.
    pub fn to_config(&self) -> Config {
        let mut config = Config::empty();
        self.ports.iter().for_each(|&port| config.protect(port));
        config.dry_run = u32::from(self.dry_run);
        config.drop_reflected = u32::from(self.drop_reflected);
        config
    }

    /// This policy with `change` applied.
    pub fn with(&self, change: &PolicyChange) -> Self {
        Policy {
            ports: change.ports.clone().unwrap_or_else(|| self.ports.clone()),
            dry_run: change.dry_run.unwrap_or(self.dry_run),
            drop_reflected: change.drop_reflected.unwrap_or(self.drop_reflected),
        }
    }
}

impl PolicyChange {
    /// Every field set: the policy becomes exactly `policy` (the service's config).
    pub fn exactly(policy: Policy) -> Self {
        PolicyChange {
            ports: Some(policy.ports),
            dry_run: Some(policy.dry_run),
            drop_reflected: Some(policy.drop_reflected),
        }
    }
}

/// The shared policy as it is.
pub fn policy(state: &StateDir) -> Result<Policy, Error> {
    let (_lock, maps) = Maps::open_to_read(state)?;
    Ok(Policy::from_config(&maps.config()?))
}

/// Applies `change` to the shared policy, live for every interface; returns the policy before
/// and after.
pub fn change_policy(state: &StateDir, change: &PolicyChange) -> Result<(Policy, Policy), Error> {
    let _lock = state.prepare_and_lock()?;
    let mut maps = Maps::open(state)?;
    let old = Policy::from_config(&maps.config()?);
    let new = old.with(change);
    if new != old {
        maps.set_config(&new.to_config())?;
    }
    Ok((old, new))
}

/// Makes the allow-list exactly `nets` (journaled, applied as a difference).
pub fn set_allow_list(
    state: &StateDir,
    nets: &BTreeSet<IpNet>,
) -> Result<crate::allow::Change, Error> {
    let _lock = state.prepare_and_lock()?;
    Maps::open(state)?.allow.replace(nets)
}

/// A protected port: 1 to 65535, as the command line and the config give it.
pub fn parse_port(text: &str) -> Result<u16, PortError> {
    match text.trim().parse::<u32>() {
        Ok(port @ 1..=65535) => Ok(port as u16),
        _ => Err(PortError {
            text: text.to_owned(),
        }),
    }
}

/// Text that is not a port.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("'{text}' is not a port; use 1 to 65535")]
pub struct PortError {
    /// The text as given.
    pub text: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_1_to_65535() {
        assert_eq!(parse_port("11211"), Ok(11211));
        assert_eq!(parse_port("65535"), Ok(65535));
        for bad in ["0", "65536", "-1", "memcache", ""] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_policy_survives_the_config_round_trip() {
        let policy = Policy {
            ports: BTreeSet::from([1, 11211, 22122, 65535]),
            dry_run: true,
            drop_reflected: true,
        };
        assert_eq!(Policy::from_config(&policy.to_config()), policy);
    }

    #[test]
    fn a_change_touches_only_what_it_names() {
        let before = Policy::initial();
        let after = before.with(&PolicyChange {
            dry_run: Some(true),
            ..PolicyChange::default()
        });
        assert_eq!(after.ports, before.ports);
        assert!(after.dry_run && !after.drop_reflected);
        assert_eq!(after.with(&PolicyChange::default()), after);
        let exact = Policy {
            ports: BTreeSet::from([80]),
            dry_run: false,
            drop_reflected: true,
        };
        assert_eq!(after.with(&PolicyChange::exactly(exact.clone())), exact);
    }
}
