//! The index of the allow-list's single addresses (/32, /128): a hash map the program looks
//! up first while the list is large, kept a subset of the trie (addresses enter it after the
//! trie has them and leave it before), so a kill can cost it an entry, never the filter its
//! correctness.

use std::collections::BTreeSet;

use aya::maps::{IterableMap as _, lpm_trie::Key};
use ipnet::IpNet;
use mcfilter_common::{ALLOW_SLOT_INDEXED, IpKey};

use super::{
    ALLOWED, AllowList,
    cidr::{address_key, from_key, is_host, to_key},
    gone,
};
use crate::{Error, map_ops};

/// A list longer than this gets its addresses indexed: a client among a thousand entries walks
/// about ten trie nodes, more than one hash lookup costs (README, Performance).
pub const INDEX_ABOVE: usize = 1024;
/// An indexed list shorter than this loses its index again (hysteresis, so that a list around
/// the threshold is not re-indexed with every change).
pub const UNINDEX_BELOW: usize = 512;

impl AllowList {
    /// The addresses in the index, for checks.
    pub fn index(&self) -> Result<BTreeSet<IpNet>, Error> {
        let mut nets = BTreeSet::new();
        for data in self.hosts.keys() {
            let data = data.map_err(Error::allow_map)?;
            if let Some(net) = address_key(data).as_ref().and_then(from_key) {
                nets.insert(net);
            }
        }
        Ok(nets)
    }

    /// Indexes the list's addresses (`addresses`, asked for only then) when it has grown past
    /// [`INDEX_ABOVE`] entries (`len`), and drops the index when it has shrunk below
    /// [`UNINDEX_BELOW`]. The program uses the index once it is complete, and stops before it is
    /// emptied (an incomplete index would only cost lookups: the trie has every entry).
    pub(super) fn reindex(
        &mut self,
        len: usize,
        addresses: impl FnOnce() -> Vec<IpKey>,
    ) -> Result<(), Error> {
        let indexed = self.indexed()?;
        if !indexed && len > INDEX_ABOVE {
            self.add_to_index(&addresses())?;
            self.set_slot(ALLOW_SLOT_INDEXED, 1)?;
        } else if indexed && len < UNINDEX_BELOW {
            self.set_slot(ALLOW_SLOT_INDEXED, 0)?;
        }
        if !self.indexed()? {
            // Not trusted: empty it (a kill may have left addresses in it).
            let stale: Vec<IpKey> = self
                .hosts
                .keys()
                .collect::<Result<_, _>>()
                .map_err(Error::allow_map)?;
            for data in stale {
                crate::fault::step();
                gone(self.hosts.remove(&data))?;
            }
        }
        Ok(())
    }

    /// Puts addresses into the index (after the trie has them), thousands a system call.
    pub(super) fn add_to_index(&mut self, addresses: &[IpKey]) -> Result<(), Error> {
        let calls = map_ops::insert(self.hosts.map(), addresses, ALLOWED).map_err(|err| {
            Error::MapBatch {
                name: mcfilter_common::map_names::ALLOW_HOSTS,
                err,
            }
        })?;
        (0..calls).for_each(|_| crate::fault::step());
        Ok(())
    }

    /// Takes an address out of the index (before the trie loses it).
    pub(super) fn unindex(&mut self, key: &Key<IpKey>) -> Result<(), Error> {
        if !is_host(key) {
            return Ok(());
        }
        crate::fault::step();
        gone(self.hosts.remove(&key.data()))
    }
}

/// The index keys of the addresses among `nets`.
pub(super) fn addresses<'a>(nets: impl Iterator<Item = &'a IpNet>) -> Vec<IpKey> {
    nets.map(to_key)
        .filter(is_host)
        .map(|key| key.data())
        .collect()
}
