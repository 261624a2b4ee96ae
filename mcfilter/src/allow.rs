//! The allow-list: CIDR parsing and canonical form, the trie key encoding, and the changes
//! `allow add/del/replace` make, each all-or-nothing.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use aya::maps::{LpmTrie, MapData, MapError, lpm_trie::Key};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use mcfilter_common::{FAMILY_V4, FAMILY_V6, IpKey};

use crate::Error;

/// The allow-list trie as stored in the state dir.
pub type AllowTrie = LpmTrie<MapData, IpKey, u8>;

/// Value stored with every allow-list entry (the program only tests for presence).
const ALLOWED: u8 = 1;

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

/// The pinned allow-list trie and its capacity.
pub struct AllowList {
    trie: AllowTrie,
    capacity: u32,
}

/// What a change did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Change {
    pub added: Vec<IpNet>,
    pub removed: Vec<IpNet>,
}

impl AllowList {
    pub fn new(trie: AllowTrie, capacity: u32) -> Self {
        AllowList { trie, capacity }
    }

    /// The most entries the trie holds.
    pub fn capacity(&self) -> u32 {
        self.capacity
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

    /// Adds `nets` (those already present are left alone). All or nothing: if the trie fills
    /// up, the entries this call inserted are removed again and [`Error::AllowListFull`] is
    /// returned.
    pub fn add(&mut self, nets: &BTreeSet<IpNet>) -> Result<Change, Error> {
        let current = self.list()?;
        let added: Vec<IpNet> = nets.difference(&current).copied().collect();
        self.insert_all(&added)?;
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
        self.remove_all(&removed)?;
        Ok(Change {
            added: Vec::new(),
            removed,
        })
    }

    /// Makes the list exactly `nets` by applying the difference: new entries are inserted
    /// first, then old ones removed, so an entry on both lists is never missing, even for a
    /// moment.
    pub fn replace(&mut self, nets: &BTreeSet<IpNet>) -> Result<Change, Error> {
        let current = self.list()?;
        let added: Vec<IpNet> = nets.difference(&current).copied().collect();
        let removed: Vec<IpNet> = current.difference(nets).copied().collect();
        self.insert_all(&added)?;
        self.remove_all(&removed)?;
        Ok(Change { added, removed })
    }

    /// Removes the entries of a change that `add` or `replace` made (used to undo an attach).
    pub fn undo(&mut self, change: &Change) -> Result<(), Error> {
        self.remove_all(&change.added)?;
        self.insert_all(&change.removed)
    }

    fn insert_all(&mut self, nets: &[IpNet]) -> Result<(), Error> {
        for (done, net) in nets.iter().enumerate() {
            if let Err(err) = self.trie.insert(&to_key(net), ALLOWED, 0) {
                // Undo this call's inserts: none of these entries was there before it.
                for inserted in &nets[..done] {
                    let _ = self.trie.remove(&to_key(inserted));
                }
                return Err(if is_full(&err) {
                    Error::AllowListFull {
                        capacity: self.capacity,
                    }
                } else {
                    Error::allow_map(err)
                });
            }
        }
        Ok(())
    }

    fn remove_all(&mut self, nets: &[IpNet]) -> Result<(), Error> {
        for net in nets {
            match self.trie.remove(&to_key(net)) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(err) => return Err(Error::allow_map(err)),
            }
        }
        Ok(())
    }
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
        let v6_all = to_key(&net("::/0"));
        assert_eq!(v4_all.prefix_len(), IpKey::FAMILY_BITS);
        assert_ne!(v4_all.data().family, v6_all.data().family);
    }
}
