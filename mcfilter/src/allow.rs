//! The allow-list: CIDR parsing and canonical form, the key encoding, and the changes
//! `allow add/del/replace` make, each all-or-nothing. Every entry lives in an LPM trie; while
//! the list is large, its single addresses (/32, /128) are also indexed in a hash map, which the
//! program looks up first.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use aya::maps::{Array, HashMap, IterableMap as _, LpmTrie, MapData, MapError, lpm_trie::Key};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use mcfilter_common::{ALLOW_SLOT_INDEXED, ALLOW_SLOT_SIZE, FAMILY_V4, FAMILY_V6, IpKey};

use crate::{Error, batch};

/// The allow-list (and its journal) as stored in the state dir.
pub type AllowTrie = LpmTrie<MapData, IpKey, u8>;
/// The index of the allow-list's single addresses as stored in the state dir.
pub type AllowHosts = HashMap<MapData, IpKey, u8>;

/// A list longer than this gets its addresses indexed: a client among a thousand entries walks
/// about ten trie nodes, more than one hash lookup costs (README, Performance).
pub const INDEX_ABOVE: usize = 1024;
/// An indexed list shorter than this loses its index again (hysteresis, so that a list around
/// the threshold is not re-indexed with every change).
pub const UNINDEX_BELOW: usize = 512;

/// Parses `198.18.0.0/15`, `2001:db8::/32` or a bare address (a /32 or /128). Host bits are
/// cleared, so `198.18.1.10/24` becomes `198.18.1.0/24`.
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    let parsed = if text.contains('/') {
        text.parse::<IpNet>().ok()
    } else {
        text.parse::<IpAddr>().ok().map(IpNet::from)
    };
    parsed.map(|net| net.trunc()).ok_or_else(|| {
        format!(
            "'{text}' is not an IPv4 or IPv6 CIDR (examples: 198.18.0.0/15, 2001:db8::/32, 198.18.1.10)"
        )
    })
}

/// Parses an allow-list file: one CIDR a line, `#` starts a comment, blank lines are ignored.
/// The first bad line fails the whole file (`line N: ...`).
pub fn parse_list(text: &str) -> Result<BTreeSet<IpNet>, String> {
    let mut nets = BTreeSet::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        nets.insert(parse_cidr(line).map_err(|err| format!("line {}: {err}", index + 1))?);
    }
    Ok(nets)
}

/// The trie key of `net`: family byte, then the prefix.
pub fn to_key(net: &IpNet) -> Key<IpKey> {
    let prefix = u32::from(net.prefix_len()) + IpKey::FAMILY_BITS;
    let data = match net {
        IpNet::V4(v4) => IpKey::v4(v4.network().octets()),
        IpNet::V6(v6) => IpKey::v6(v6.network().octets()),
    };
    Key::new(prefix, data)
}

/// The trie key of the single address `data` stands for (`None` for an unknown family).
fn address_key(data: IpKey) -> Option<Key<IpKey>> {
    let bits = match u8::try_from(data.family).ok()? {
        FAMILY_V4 => 32,
        FAMILY_V6 => 128,
        _ => return None,
    };
    Some(Key::new(IpKey::FAMILY_BITS + bits, data))
}

/// Whether `key` is a single address (/32 or /128): such entries are indexed.
fn is_host(key: &Key<IpKey>) -> bool {
    address_key(key.data()).is_some_and(|address| address.prefix_len() == key.prefix_len())
}

/// The CIDR a trie key stands for (`None` for a key no version of mcfilter writes).
pub fn from_key(key: &Key<IpKey>) -> Option<IpNet> {
    let data = key.data();
    let prefix = u8::try_from(key.prefix_len().checked_sub(IpKey::FAMILY_BITS)?).ok()?;
    let bytes = data.addr_bytes();
    match u8::try_from(data.family).ok()? {
        FAMILY_V4 => {
            let [a, b, c, d, ..] = bytes;
            Ipv4Net::new(Ipv4Addr::new(a, b, c, d), prefix)
                .ok()
                .map(IpNet::V4)
        }
        FAMILY_V6 => Ipv6Net::new(Ipv6Addr::from(bytes), prefix)
            .ok()
            .map(IpNet::V6),
        _ => None,
    }
}

/// The pinned allow-list maps and their capacity.
///
/// The trie holds the list; the index of its addresses is a cache that never holds an address
/// the trie does not (addresses leave the index before the trie, and enter it after), so a
/// kill at any point can cost the index an entry, never the filter its correctness.
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
    hosts: AllowHosts,
    /// The list's size and whether `hosts` indexes it (see `map_names::ALLOW_STATE`).
    state: Array<MapData, u64>,
    capacity: u32,
}

/// What a change did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Change {
    pub added: Vec<IpNet>,
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
    pub fn new(
        trie: AllowTrie,
        hosts: AllowHosts,
        state: Array<MapData, u64>,
        max_entries: u32,
    ) -> Self {
        AllowList {
            trie,
            hosts,
            state,
            capacity: max_entries.saturating_sub(1),
        }
    }

    /// The most entries the list holds.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// How many entries the list has, without walking the trie (one system call). A state dir
    /// whose size was never written (made before it was kept) is counted once, and indexed if
    /// it is large.
    pub fn size(&mut self) -> Result<usize, Error> {
        match self.slot(ALLOW_SLOT_SIZE)? {
            0 => {
                // Also the first command on a state dir made before the index existed, which
                // indexes a large list here.
                let list = self.list()?;
                self.set_slot(ALLOW_SLOT_SIZE, list.len() as u64 + 1)?;
                self.reindex(list.len(), || addresses(list.iter()))?;
                Ok(list.len())
            }
            stored => Ok((stored - 1) as usize),
        }
    }

    /// Whether the list's addresses are indexed (the program looks them up in the hash map).
    pub fn indexed(&self) -> Result<bool, Error> {
        Ok(self.slot(ALLOW_SLOT_INDEXED)? != 0)
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
    /// command left unfinished, or a size never written (a state dir made by an older build).
    /// Reading only: readers under the shared lock ask, and take the exclusive one to settle.
    pub fn unsettled(&self) -> Result<bool, Error> {
        let interrupted = match self.trie.get(&journal_key(), 0) {
            Ok(_) => true,
            Err(MapError::KeyNotFound) => false,
            Err(err) => return Err(Error::allow_map(err)),
        };
        Ok(interrupted || self.slot(ALLOW_SLOT_SIZE)? == 0)
    }

    /// Completes or rolls back a change an earlier command left unfinished.
    pub fn recover(&mut self) -> Result<Option<Recovery>, Error> {
        let phase = match self.trie.get(&journal_key(), 0) {
            Ok(phase) => phase,
            Err(MapError::KeyNotFound) => return Ok(None),
            Err(err) => return Err(Error::allow_map(err)),
        };
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
        if self.indexed()? {
            // The kill may have come before the index had the new addresses.
            self.add_to_index(&addresses(list.iter()))?;
        }
        self.reindex(list.len(), || addresses(list.iter()))?;
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
        let indexed = self.indexed()?;
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
        self.write(&journal_key(), COMMITTED)?;
        // Removed addresses leave the index first (the trie still allows them until the end),
        // so the index never holds more than the new list's addresses.
        for net in removed {
            self.unindex(&to_key(net))?;
        }
        for net in added {
            self.write(&to_key(net), ALLOWED)?;
        }
        if indexed {
            self.add_to_index(&addresses(added.iter()))?;
        }
        for net in removed {
            self.remove_from_trie(&to_key(net))?;
        }
        // `added` holds no entry of the list and `removed` only entries of it.
        let len = current.len() + added.len() - removed.len();
        self.set_slot(ALLOW_SLOT_SIZE, len as u64 + 1)?;
        self.delete(&journal_key())?;
        self.reindex(len, || {
            let removed: BTreeSet<&IpNet> = removed.iter().collect();
            let kept = current.iter().filter(|net| !removed.contains(net));
            addresses(kept.chain(added))
        })
    }

    /// Indexes the list's addresses (`addresses`, asked for only then) when it has grown past
    /// [`INDEX_ABOVE`] entries (`len`), and drops the index when it has shrunk below
    /// [`UNINDEX_BELOW`]. The program uses the index once it is complete, and stops before it is
    /// emptied (an incomplete index would only cost lookups: the trie has every entry).
    fn reindex(&mut self, len: usize, addresses: impl FnOnce() -> Vec<IpKey>) -> Result<(), Error> {
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

    /// Writes an entry into the trie.
    fn write(&mut self, key: &Key<IpKey>, value: u8) -> Result<(), Error> {
        crate::fault::step();
        self.trie
            .insert(key, value, 0)
            .map_err(|err| self.full_or(err))
    }

    /// Puts addresses into the index (after the trie has them), thousands a system call.
    fn add_to_index(&mut self, addresses: &[IpKey]) -> Result<(), Error> {
        let calls =
            batch::insert(self.hosts.map(), addresses, ALLOWED).map_err(|err| Error::MapBatch {
                name: mcfilter_common::map_names::ALLOW_HOSTS,
                err,
            })?;
        (0..calls).for_each(|_| crate::fault::step());
        Ok(())
    }

    /// Takes an address out of the index (before the trie loses it).
    fn unindex(&mut self, key: &Key<IpKey>) -> Result<(), Error> {
        if !is_host(key) {
            return Ok(());
        }
        crate::fault::step();
        gone(self.hosts.remove(&key.data()))
    }

    /// Removes an entry: from the index, then from the trie.
    fn delete(&mut self, key: &Key<IpKey>) -> Result<(), Error> {
        self.unindex(key)?;
        self.remove_from_trie(key)
    }

    /// Removes an entry from the trie (once it has left the index).
    fn remove_from_trie(&mut self, key: &Key<IpKey>) -> Result<(), Error> {
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

/// The index keys of the addresses among `nets`.
fn addresses<'a>(nets: impl Iterator<Item = &'a IpNet>) -> Vec<IpKey> {
    nets.map(to_key)
        .filter(is_host)
        .map(|key| key.data())
        .collect()
}

fn state_err(err: MapError) -> Error {
    Error::Map {
        name: mcfilter_common::map_names::ALLOW_STATE,
        err,
    }
}

/// A removal's result, where "not there" is success.
fn gone(result: Result<(), MapError>) -> Result<(), Error> {
    crate::maps::gone(result).map_err(Error::allow_map)
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

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_are_canonical() {
        assert_eq!(parse_cidr("198.18.1.10/24").unwrap(), net("198.18.1.0/24"));
        assert_eq!(parse_cidr("198.18.1.10").unwrap(), net("198.18.1.10/32"));
        assert_eq!(parse_cidr(" 2001:db8::1 ").unwrap(), net("2001:db8::1/128"));
        assert_eq!(parse_cidr("2001:db8::1/32").unwrap(), net("2001:db8::/32"));
    }

    #[test]
    fn bad_cidrs_say_what_is_expected() {
        for bad in [
            "",
            "198.18.1.0/33",
            "2001:db8::/129",
            "eth0",
            "1.2.3",
            "1.2.3.4/",
        ] {
            let err = parse_cidr(bad).unwrap_err();
            assert!(err.contains("examples"), "{bad}: {err}");
        }
    }

    #[test]
    fn list_files_skip_comments_and_name_the_bad_line() {
        let text = "# clients\n198.18.1.10\n\n2001:db8::/64  # lab\n198.18.1.10/32\n";
        let nets = parse_list(text).unwrap();
        assert_eq!(
            nets.into_iter().collect::<Vec<_>>(),
            vec![net("198.18.1.10/32"), net("2001:db8::/64")]
        );
        let err = parse_list("198.18.1.10\nnot-a-cidr\n").unwrap_err();
        assert!(err.starts_with("line 2: "), "{err}");
    }

    #[test]
    fn keys_round_trip_and_keep_families_apart() {
        for s in [
            "0.0.0.0/0",
            "198.18.0.0/15",
            "198.18.1.10/32",
            "::/0",
            "2001:db8::/32",
        ] {
            let n = net(s);
            assert_eq!(from_key(&to_key(&n)), Some(n), "{s}");
        }
        let v4_all = to_key(&net("0.0.0.0/0"));
        assert!(!is_host(&journal_key()));
        let v6_all = to_key(&net("::/0"));
        assert_eq!(v4_all.prefix_len(), IpKey::FAMILY_BITS);
        assert_ne!(v4_all.data().family, v6_all.data().family);
    }

    #[test]
    fn only_addresses_are_indexed() {
        for (s, host) in [
            ("198.18.1.10/32", true),
            ("2001:db8::1/128", true),
            ("198.18.1.0/31", false),
            ("2001:db8::/127", false),
            ("0.0.0.0/0", false),
            ("::/0", false),
        ] {
            assert_eq!(is_host(&to_key(&net(s))), host, "{s}");
        }
        // The program looks a packet's source up in the hosts map as it is: the key written
        // for an address is the source's key.
        let key = to_key(&net("198.18.1.10/32"));
        assert_eq!(key.data(), IpKey::v4([198, 18, 1, 10]));
    }
}
