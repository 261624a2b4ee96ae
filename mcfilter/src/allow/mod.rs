//! The allow-list: the changes `allow add/del/replace` make, each all-or-nothing through a
//! journal (here). Every entry lives in an LPM trie, the list's record; the program looks
//! sources up in lookup tables derived from it (`tables`), whose cost does not depend on the
//! list's size. CIDR parsing, canonical form and the key encoding are `cidr`'s.

use std::collections::BTreeSet;

use aya::maps::{Array, LpmTrie, MapData, MapError, lpm_trie::Key};
use ipnet::IpNet;
use mcfilter_common::{ALLOW_SLOT_RETIRED_INDEX, ALLOW_SLOT_SIZE, IpKey};

use crate::Error;

mod cidr;
mod install;
mod tables;

pub use cidr::{CidrError, ListError, from_key, parse_cidr, parse_list, to_key};
pub use install::{AllowStrides, TableMaps};
use tables::Tables;

/// The allow-list (and its journal) as stored in the state dir.
pub type AllowTrie = LpmTrie<MapData, IpKey, u8>;
/// The pinned allow-list maps and their capacity.
///
/// The trie holds the list; the lookup tables the program reads are derived from it, written
/// with every change so that they allow both lists while it is under way (see `tables`), and
/// rebuilt after a kill.
///
/// Every change goes through a journal kept in the trie, so that a command killed half
/// way (`kill -9`, a crash) never leaves a half-applied list: entries are inserted as `ADDING`
/// and entries to drop are marked `REMOVING` while the journal says "preparing"; then the journal
/// says "committed" and the marks are settled. The next command finishes the job: a preparing
/// change is rolled back, a committed one completed, so the list is exactly the old or the new
/// one. The program only tests for presence, so every marked entry still allows its sources:
/// an entry on both lists is never missing, even while a change is under way.
pub struct AllowList {
    trie: AllowTrie,
    /// The list's size (see `map_names::ALLOW_STATE`).
    state: Array<MapData, u64>,
    /// The lookup tables; `None` in a state an older build made, whose program reads the trie.
    tables: Option<TableMaps>,
    capacity: u32,
}

/// The pinned maps an [`AllowList`] is made of.
pub struct AllowMaps {
    /// `mcf_allow`.
    pub trie: AllowTrie,
    /// `mcf_allow_state`.
    pub state: Array<MapData, u64>,
    /// The lookup tables' maps; `None` where the state lacks them (an older build made it:
    /// its program reads the trie, and the next attach makes them).
    pub tables: Option<TableMaps>,
}

/// What a change did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// Entries the change put on the list.
    pub added: Vec<IpNet>,
    /// Entries the change took off the list.
    pub removed: Vec<IpNet>,
}

/// What [`AllowList::recover`] did with a change an earlier command left unfinished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// It had not committed: the list is the old one again.
    RolledBack,
    /// It had committed: the list is the new one.
    Completed,
}

/// Entry values. The program allows on presence, whatever the value.
const ALLOWED: u8 = 1;
const ADDING: u8 = 2;
const REMOVING: u8 = 3;
/// Journal values.
const PREPARING: u8 = 1;
const COMMITTED: u8 = 2;
/// The journal's key family: no packet's key has it, so it never matches.
const JOURNAL_FAMILY: u32 = 0xff;

fn journal_key() -> Key<IpKey> {
    Key::new(
        IpKey::FULL_PREFIX,
        IpKey {
            family: JOURNAL_FAMILY,
            addr: [0; 4],
        },
    )
}

impl AllowList {
    /// `max_entries` is the trie's size: one entry is kept for the journal.
    pub fn new(maps: AllowMaps, max_entries: u32) -> Self {
        AllowList {
            trie: maps.trie,
            state: maps.state,
            tables: maps.tables,
            capacity: max_entries.saturating_sub(1),
        }
    }

    /// The most entries the list holds.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// How many entries the list has, without walking the trie (one system call). A state dir
    /// whose size was never written (made before it was kept) is counted once.
    pub fn size(&mut self) -> Result<usize, Error> {
        match self.slot(ALLOW_SLOT_SIZE)? {
            0 => {
                let list = self.list()?;
                self.set_slot(ALLOW_SLOT_SIZE, list.len() as u64 + 1)?;
                Ok(list.len())
            }
            stored => Ok((stored - 1) as usize),
        }
    }

    /// Settles the list for a command: completes or rolls back a change an earlier command left
    /// unfinished, counts a list whose size was never written and builds the lookup tables
    /// where they are not whole (a state made by an older build, or a rebuild cut short).
    pub fn settle(&mut self) -> Result<Option<Recovery>, Error> {
        let recovered = self.recover()?;
        self.size()?;
        if self.tables.is_some() && !self.tables_ready()? {
            self.rebuild_tables(&Tables::of(&self.list()?))?;
        }
        // An older build's program looks in its address index first while this slot says so;
        // this build does not keep that index, so the trie alone must answer that program.
        if self.slot(ALLOW_SLOT_RETIRED_INDEX)? != 0 {
            self.set_slot(ALLOW_SLOT_RETIRED_INDEX, 0)?;
        }
        Ok(recovered)
    }

    fn slot(&self, slot: u32) -> Result<u64, Error> {
        self.state.get(&slot, 0).map_err(state_err)
    }

    fn set_slot(&mut self, slot: u32, value: u64) -> Result<(), Error> {
        self.state.set(slot, value, 0).map_err(state_err)
    }

    /// Every entry, sorted (IPv4 first).
    pub fn list(&self) -> Result<BTreeSet<IpNet>, Error> {
        let mut nets = BTreeSet::new();
        for key in self.trie.keys() {
            let key = key.map_err(Error::allow_map)?;
            if let Some(net) = from_key(&key) {
                nets.insert(net);
            }
        }
        Ok(nets)
    }

    /// Adds `nets` (those already present are left alone). All or nothing: if a map fills up,
    /// nothing is added and [`Error::AllowListFull`] is returned.
    pub fn add(&mut self, nets: &BTreeSet<IpNet>) -> Result<Change, Error> {
        let current = self.list()?;
        let added: Vec<IpNet> = nets.difference(&current).copied().collect();
        self.apply(&current, &added, &[])?;
        Ok(Change {
            added,
            removed: Vec::new(),
        })
    }

    /// Removes `nets`. All or nothing: if one of them is not on the list, nothing is removed.
    pub fn del(&mut self, nets: &BTreeSet<IpNet>) -> Result<Change, Error> {
        let current = self.list()?;
        if let Some(missing) = nets.iter().find(|net| !current.contains(net)) {
            return Err(Error::NotAllowListed { net: *missing });
        }
        let removed: Vec<IpNet> = nets.iter().copied().collect();
        self.apply(&current, &[], &removed)?;
        Ok(Change {
            added: Vec::new(),
            removed,
        })
    }

    /// Makes the list exactly `nets` by applying the difference: new entries are inserted
    /// first, old ones removed last, so an entry on both lists is never missing.
    pub fn replace(&mut self, nets: &BTreeSet<IpNet>) -> Result<Change, Error> {
        let current = self.list()?;
        let added: Vec<IpNet> = nets.difference(&current).copied().collect();
        let removed: Vec<IpNet> = current.difference(nets).copied().collect();
        self.apply(&current, &added, &removed)?;
        Ok(Change { added, removed })
    }

    /// Reverts a change that `add` or `replace` made (used to undo a failed attach).
    pub fn undo(&mut self, change: &Change) -> Result<(), Error> {
        let current = self.list()?;
        self.apply(&current, &change.removed, &change.added)
    }

    /// Whether a command must settle the list before it can be read: a change an earlier
    /// command left unfinished, a size never written or tables not whole (a state dir made by
    /// an older build, or a rebuild cut short).
    /// Reading only: readers under the shared lock ask, and take the exclusive one to settle.
    pub fn unsettled(&self) -> Result<bool, Error> {
        let interrupted = match self.trie.get(&journal_key(), 0) {
            Ok(_) => true,
            Err(MapError::KeyNotFound) => false,
            Err(err) => return Err(Error::allow_map(err)),
        };
        let tables_off = self.tables.is_some() && !self.tables_ready()?;
        Ok(interrupted
            || tables_off
            || self.slot(ALLOW_SLOT_SIZE)? == 0
            || self.slot(ALLOW_SLOT_RETIRED_INDEX)? != 0)
    }

    /// Completes or rolls back a change an earlier command left unfinished, and rebuilds the
    /// lookup tables, which allow more than the settled list until then. They are switched off
    /// first, so a kill here leaves them off (the next command rebuilds them), never stale.
    pub fn recover(&mut self) -> Result<Option<Recovery>, Error> {
        let phase = match self.trie.get(&journal_key(), 0) {
            Ok(phase) => phase,
            Err(MapError::KeyNotFound) => return Ok(None),
            Err(err) => return Err(Error::allow_map(err)),
        };
        self.switch_tables_off()?;
        let entries: Vec<(Key<IpKey>, u8)> = self
            .trie
            .iter()
            .collect::<Result<_, _>>()
            .map_err(Error::allow_map)?;
        let marked = |mark: u8| {
            entries
                .iter()
                .filter(move |(key, value)| *value == mark && key.data().family != JOURNAL_FAMILY)
                .map(|(key, _)| *key)
        };
        let (settle, drop, recovery) = if phase == COMMITTED {
            (
                marked(ADDING).collect::<Vec<_>>(),
                marked(REMOVING).collect::<Vec<_>>(),
                Recovery::Completed,
            )
        } else {
            (
                marked(REMOVING).collect(),
                marked(ADDING).collect(),
                Recovery::RolledBack,
            )
        };
        for key in &settle {
            self.write(key, ALLOWED)?;
        }
        for key in &drop {
            self.delete(key)?;
        }
        let list = self.list()?;
        self.set_slot(ALLOW_SLOT_SIZE, list.len() as u64 + 1)?;
        self.delete(&journal_key())?;
        self.rebuild_tables(&Tables::of(&list))?;
        Ok(Some(recovery))
    }

    /// Journaled change: see the type's documentation. The normal path knows which entries it
    /// marked and settles exactly those; only [`AllowList::recover`] (after a kill) has to scan.
    /// `current` is the list before the change.
    fn apply(
        &mut self,
        current: &BTreeSet<IpNet>,
        added: &[IpNet],
        removed: &[IpNet],
    ) -> Result<(), Error> {
        if added.is_empty() && removed.is_empty() {
            return Ok(());
        }
        self.write(&journal_key(), PREPARING)?;
        for (done, net) in added.iter().enumerate() {
            if let Err(err) = self.write(&to_key(net), ADDING) {
                // Not committed: take back what this call inserted, then the journal.
                for inserted in &added[..done] {
                    self.delete(&to_key(inserted))?;
                }
                self.delete(&journal_key())?;
                return Err(err);
            }
        }
        for net in removed {
            self.write(&to_key(net), REMOVING)?;
        }
        // The tables allow both lists before the commit, exactly the new one after it.
        let (old, new) = if self.tables.is_some() {
            let removed: BTreeSet<&IpNet> = removed.iter().collect();
            let kept = current.iter().filter(|net| !removed.contains(net));
            (Tables::of(current), Tables::of(kept.chain(added)))
        } else {
            (Tables::empty(), Tables::empty())
        };
        self.grow_tables(&old, &new)?;
        self.write(&journal_key(), COMMITTED)?;
        for net in added {
            self.write(&to_key(net), ALLOWED)?;
        }
        self.shrink_tables(&old, &new)?;
        for net in removed {
            self.delete(&to_key(net))?;
        }
        // `added` holds no entry of the list and `removed` only entries of it.
        let len = current.len() + added.len() - removed.len();
        self.set_slot(ALLOW_SLOT_SIZE, len as u64 + 1)?;
        self.delete(&journal_key())
    }

    /// Writes an entry into the trie.
    fn write(&mut self, key: &Key<IpKey>, value: u8) -> Result<(), Error> {
        crate::fault::step();
        self.trie
            .insert(key, value, 0)
            .map_err(|err| self.full_or(err))
    }

    /// Removes an entry from the trie.
    fn delete(&mut self, key: &Key<IpKey>) -> Result<(), Error> {
        crate::fault::step();
        gone(self.trie.remove(key))
    }

    fn full_or(&self, err: MapError) -> Error {
        if is_full(&err) {
            Error::AllowListFull {
                capacity: self.capacity,
            }
        } else {
            Error::allow_map(err)
        }
    }
}

fn state_err(err: MapError) -> Error {
    Error::Map {
        name: mcfilter_common::map_names::ALLOW_STATE,
        err,
    }
}

/// A removal's result, where "not there" is success.
fn gone(result: Result<(), MapError>) -> Result<(), Error> {
    crate::map_ops::gone(result).map_err(Error::allow_map)
}

fn is_full(err: &MapError) -> bool {
    match err {
        MapError::SyscallError(e) => {
            matches!(e.io_error.raw_os_error(), Some(libc::ENOSPC | libc::E2BIG))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_is_no_entry() {
        assert_eq!(from_key(&journal_key()), None);
    }
}
