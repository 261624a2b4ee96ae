//! The allow-list's lookup tables (the layout is `mcfilter_common::table`'s), computed from
//! the list, and the ordered writes that take the kernel's tables from one list to another
//! without ever refusing a source both lists allow (`install` makes them).
//!
//! The program looks a source up stride by stride, longest first, and the first stride entry
//! on its path decides. So an entry's bits say what the list allows at that prefix through
//! entries of its stride *or shorter* (a shorter entry that contains the prefix sets all 256
//! bits): a source then costs at most one hash lookup that finds something.
//!
//! A change goes through the union of both lists' tables and then to the new one's, in an
//! order that keeps every source both lists allow allowed after every single write (proved
//! write by write in the tests): first the Bloom filter's and the strides' new bits, then the
//! new entries, longest stride first (an entry becomes visible only after the longer ones on
//! its paths); once the trie's journal has committed, the entries' new values, then the
//! deletions, shortest stride first, and only then the bits they leave clear. A command killed
//! on the way leaves tables its successor cannot trust: that command switches them off (the
//! program then uses the trie), rebuilds them from the settled list and switches them on.

use std::collections::{BTreeMap, HashSet};

use ipnet::{IpNet, Ipv6Net};
use mcfilter_common::{
    BLOCK_LONGER, BLOCK_WHOLE, BLOCK_WORDS, BLOOM_WORDS, IpKey, STRIDE_BITS, StrideBits, StrideKey,
    V4_LONGER_STRIDE, block_position, stride_of,
};

/// The tables of one list, as userspace computes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Tables {
    /// The /24 bitmap, every word.
    blocks: Vec<u64>,
    /// The stride table's Bloom filter, every word.
    bloom: Vec<u64>,
    /// The stride table.
    strides: BTreeMap<StrideKey, StrideBits>,
    /// The IPv6 strides in use.
    v6_strides: u64,
}

/// One write into the kernel's tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Write {
    /// A word of the Bloom filter.
    Bloom(u32, u64),
    /// The IPv6 strides in use.
    V6Strides(u64),
    /// A stride entry, inserted or replaced.
    Stride(StrideKey, StrideBits),
    /// A stride entry removed.
    Unstride(StrideKey),
    /// A word of the /24 bitmap.
    Block(u32, u64),
}

impl Tables {
    /// The tables of an empty list, in which nothing changes (for a state without tables).
    pub(super) fn empty() -> Self {
        Tables {
            blocks: Vec::new(),
            bloom: Vec::new(),
            strides: BTreeMap::new(),
            v6_strides: 0,
        }
    }

    /// The tables that allow exactly `nets`.
    pub(super) fn of<'a>(nets: impl IntoIterator<Item = &'a IpNet>) -> Self {
        let mut tables = Tables {
            blocks: vec![0; BLOCK_WORDS as usize],
            bloom: vec![0; BLOOM_WORDS as usize],
            strides: BTreeMap::new(),
            v6_strides: 0,
        };
        let nets: Vec<IpNet> = nets.into_iter().map(IpNet::trunc).collect();
        for net in &nets {
            tables.add(net);
        }
        tables.fold_shorter(&nets);
        for key in tables.strides.keys() {
            let (word, bit) = key.bloom_bit();
            tables.bloom[word as usize] |= 1 << bit;
        }
        tables
    }

    fn add(&mut self, net: &IpNet) {
        let len = net.prefix_len();
        let key = ip_key(&net.network());
        match net {
            IpNet::V4(v4) if len <= 24 => {
                let first = u32::from(v4.network()) >> 8;
                for block in first..first + (1 << (24 - len)) {
                    let (word, shift) = block_position(block);
                    self.blocks[word as usize] |= BLOCK_WHOLE << shift;
                }
            }
            IpNet::V4(v4) => {
                let (word, shift) = block_position(u32::from(v4.network()) >> 8);
                self.blocks[word as usize] |= BLOCK_LONGER << shift;
                self.set_stride(&key, V4_LONGER_STRIDE, 32 - u32::from(len));
            }
            IpNet::V6(_) => {
                let stride = stride_of(len);
                self.v6_strides |= 1 << stride;
                let end = (stride as u32 + 1) * STRIDE_BITS;
                self.set_stride(&key, stride, end - u32::from(len));
            }
        }
    }

    /// Allows, at `stride`, the `2^host_bits` byte values from `key`'s own.
    fn set_stride(&mut self, key: &IpKey, stride: usize, host_bits: u32) {
        let (key, first) = StrideKey::of(key, stride);
        self.strides
            .entry(key)
            .or_default()
            .set_range(first, 1 << host_bits);
    }

    /// Sets every bit of the IPv6 stride entries whose prefix a shorter entry contains (IPv4's
    /// one stride needs none: its /24 is whole in the bitmap, looked at first).
    fn fold_shorter(&mut self, nets: &[IpNet]) {
        let v6: HashSet<Ipv6Net> = nets
            .iter()
            .filter_map(|net| match net {
                IpNet::V6(v6) => Some(*v6),
                IpNet::V4(_) => None,
            })
            .collect();
        let lengths: std::collections::BTreeSet<u8> = v6.iter().map(Ipv6Net::prefix_len).collect();
        for (key, bits) in &mut self.strides {
            if key.family() != mcfilter_common::FAMILY_V6 {
                continue;
            }
            let bytes = IpKey {
                family: u32::from(mcfilter_common::FAMILY_V6),
                addr: key.addr,
            }
            .addr_bytes();
            let prefix = std::net::Ipv6Addr::from(bytes);
            let stride_bits = (key.stride() as u32 * STRIDE_BITS) as u8;
            let covered = lengths
                .range(..=stride_bits)
                .any(|&len| Ipv6Net::new(prefix, len).is_ok_and(|net| v6.contains(&net.trunc())));
            if covered {
                bits.set_range(0, 256);
            }
        }
    }

    /// Whether these tables allow `addr`, the way the program reads them (for tests).
    #[cfg(test)]
    pub(super) fn allows(&self, addr: std::net::IpAddr) -> bool {
        // `Some(verdict)` where the stride holds an entry on the path.
        let at = |key: &IpKey, stride| {
            let (key, next) = StrideKey::of(key, stride);
            let (word, bit) = key.bloom_bit();
            if self.bloom[word as usize] & (1 << bit) == 0 {
                return None;
            }
            self.strides.get(&key).map(|bits| bits.has(next))
        };
        let key = ip_key(&addr);
        match addr {
            std::net::IpAddr::V4(v4) => {
                let (word, shift) = block_position(u32::from(v4) >> 8);
                let block = self.blocks[word as usize] >> shift;
                block & BLOCK_WHOLE != 0
                    || (block & BLOCK_LONGER != 0 && at(&key, V4_LONGER_STRIDE) == Some(true))
            }
            std::net::IpAddr::V6(_) => (0..mcfilter_common::V6_STRIDES)
                .rev()
                .filter(|stride| self.v6_strides & (1 << stride) != 0)
                .find_map(|stride| at(&key, stride))
                .unwrap_or(false),
        }
    }

    /// The first phase, from `old` (what the kernel holds) to both: bits up, then the entries
    /// the new list adds or changes, longest stride first.
    pub(super) fn grow(old: &Self, new: &Self) -> Vec<Write> {
        let mut writes = Vec::new();
        for (index, (&was, &will)) in old.bloom.iter().zip(&new.bloom).enumerate() {
            if was | will != was {
                writes.push(Write::Bloom(index as u32, was | will));
            }
        }
        if old.v6_strides | new.v6_strides != old.v6_strides {
            writes.push(Write::V6Strides(old.v6_strides | new.v6_strides));
        }
        let mut entries: Vec<(StrideKey, StrideBits)> = new
            .strides
            .iter()
            .filter_map(|(key, bits)| {
                let was = old.strides.get(key);
                let union = was.map_or(*bits, |was| was.union(bits));
                (was != Some(&union)).then_some((*key, union))
            })
            .collect();
        entries.sort_by_key(|(key, _)| std::cmp::Reverse(key.stride()));
        writes.extend(
            entries
                .into_iter()
                .map(|(key, bits)| Write::Stride(key, bits)),
        );
        for (index, (&was, &will)) in old.blocks.iter().zip(&new.blocks).enumerate() {
            if was | will != was {
                writes.push(Write::Block(index as u32, was | will));
            }
        }
        writes
    }

    /// The second phase, from both to `new`: the entries' new values, the old list's own
    /// entries removed shortest stride first, then the bits down.
    pub(super) fn shrink(old: &Self, new: &Self) -> Vec<Write> {
        let mut writes: Vec<Write> = new
            .strides
            .iter()
            .filter(|(key, bits)| {
                old.strides
                    .get(key)
                    .is_some_and(|was| was.union(bits) != **bits)
            })
            .map(|(key, bits)| Write::Stride(*key, *bits))
            .collect();
        let mut gone: Vec<StrideKey> = old
            .strides
            .keys()
            .filter(|key| !new.strides.contains_key(key))
            .copied()
            .collect();
        gone.sort_by_key(StrideKey::stride);
        writes.extend(gone.into_iter().map(Write::Unstride));
        for (index, (&was, &will)) in old.bloom.iter().zip(&new.bloom).enumerate() {
            if was | will != will {
                writes.push(Write::Bloom(index as u32, will));
            }
        }
        if old.v6_strides | new.v6_strides != new.v6_strides {
            writes.push(Write::V6Strides(new.v6_strides));
        }
        for (index, (&was, &will)) in old.blocks.iter().zip(&new.blocks).enumerate() {
            if was | will != will {
                writes.push(Write::Block(index as u32, will));
            }
        }
        writes
    }

    /// Everything, to write into empty tables (switched off).
    pub(super) fn whole(&self) -> Vec<Write> {
        let bloom = self.bloom.iter().enumerate();
        let blocks = self.blocks.iter().enumerate();
        bloom
            .map(|(index, &word)| Write::Bloom(index as u32, word))
            .chain([Write::V6Strides(self.v6_strides)])
            .chain(
                self.strides
                    .iter()
                    .map(|(key, bits)| Write::Stride(*key, *bits)),
            )
            .chain(blocks.map(|(index, &word)| Write::Block(index as u32, word)))
            .collect()
    }

    /// Applies `write` as the kernel would (for tests).
    #[cfg(test)]
    fn apply(&mut self, write: Write) {
        match write {
            Write::Bloom(word, value) => self.bloom[word as usize] = value,
            Write::V6Strides(strides) => self.v6_strides = strides,
            Write::Stride(key, bits) => {
                self.strides.insert(key, bits);
            }
            Write::Unstride(key) => {
                self.strides.remove(&key);
            }
            Write::Block(word, value) => self.blocks[word as usize] = value,
        }
    }
}

fn ip_key(addr: &std::net::IpAddr) -> IpKey {
    match addr {
        std::net::IpAddr::V4(v4) => IpKey::v4(v4.octets()),
        std::net::IpAddr::V6(v6) => IpKey::v6(v6.octets()),
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeSet, net::IpAddr};

    use super::*;

    fn nets(list: &[&str]) -> BTreeSet<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    /// A deterministic sequence of addresses near and inside the list's entries.
    fn probes(nets: &BTreeSet<IpNet>) -> Vec<IpAddr> {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut probes = Vec::new();
        for net in nets {
            for _ in 0..64 {
                let noise = u128::from(next()) << 64 | u128::from(next());
                // Keep a random number of the network's leading bits.
                let keep = u32::from(net.prefix_len()).saturating_sub((next() % 12) as u32);
                probes.push(match net {
                    IpNet::V4(v4) => {
                        let mask = u32::MAX.checked_shl(32 - keep).unwrap_or(0);
                        let base = u32::from(v4.network());
                        IpAddr::from(std::net::Ipv4Addr::from(
                            (base & mask) | (noise as u32 & !mask),
                        ))
                    }
                    IpNet::V6(v6) => {
                        let mask = u128::MAX.checked_shl(128 - keep).unwrap_or(0);
                        let base = u128::from(v6.network());
                        IpAddr::from(std::net::Ipv6Addr::from((base & mask) | (noise & !mask)))
                    }
                });
            }
        }
        probes
    }

    const LIST: &[&str] = &[
        "198.18.0.0/15",
        "198.51.100.7/32",
        "198.51.100.128/25",
        "198.51.100.64/27",
        "203.0.113.0/24",
        "100.64.0.0/10",
        "10.1.2.3/31",
        "2001:db8::/32",
        "2001:db8:1:2::/64",
        "2001:db8:1:2:3::/80",
        "2001:db8:ffff::1/128",
        "2001:db9:8000::/33",
        "2001:db9:8000:1::7/128",
        "2001:dba::/47",
        "2001:dba:0:1::/64",
        "2001:dbb::/32",
        "2001:dbb:0:1::/64",
        "2001:dbb:0:1:2::5/128",
        "2001:dbb:0:2::/64",
        "fd00::/7",
    ];

    /// The tables allow exactly what some entry contains (`ipnet` is the oracle).
    #[test]
    fn the_tables_allow_what_the_list_contains() {
        let list = nets(LIST);
        let tables = Tables::of(&list);
        let probes = probes(&list);
        assert!(probes.len() > 500);
        let mut allowed = 0;
        for addr in probes {
            let want = list.iter().any(|net| net.contains(&addr));
            assert_eq!(tables.allows(addr), want, "{addr}");
            allowed += usize::from(want);
        }
        // Both outcomes are exercised.
        assert!(allowed > 100, "{allowed}");
        for (list, addr) in [
            (&["0.0.0.0/0"][..], "255.255.255.255"),
            (&["::/0"], "ffff::1"),
            (&["::/0", "2001:db8::1/128"], "2001:db8::2"),
            (&["255.255.255.255/32"], "255.255.255.255"),
        ] {
            assert!(Tables::of(&nets(list)).allows(addr.parse().unwrap()));
        }
        assert!(!Tables::of(&nets(&[])).allows("198.18.0.1".parse().unwrap()));
    }

    /// Every change between parts of the list, write by write: after each single write the
    /// tables allow every probe both lists allow, and the last write leaves exactly the new
    /// list's tables.
    #[test]
    fn every_write_of_a_change_keeps_what_both_lists_allow() {
        let all = nets(LIST);
        let probes = probes(&all);
        let parts: Vec<BTreeSet<IpNet>> = (0..6)
            .map(|part| {
                all.iter()
                    .enumerate()
                    .filter(|(i, _)| (i * 7 + part * 3) % 5 < 3)
                    .map(|(_, net)| *net)
                    .collect()
            })
            .chain([BTreeSet::new(), all.clone()])
            // An address both allow, through a short entry in one and a long one in the other,
            // where the other also has an entry beside it (the same first 7 bytes): the order
            // of the writes matters.
            .chain([
                nets(&["2001:dbb::/32"]),
                nets(&["2001:dbb:0:1:2::5/128", "2001:dbb:0:2::/64"]),
            ])
            .collect();
        for old in &parts {
            for new in &parts {
                let (before, after) = (Tables::of(old), Tables::of(new));
                let both: Vec<IpAddr> = probes
                    .iter()
                    .copied()
                    .filter(|addr| {
                        old.iter().any(|net| net.contains(addr))
                            && new.iter().any(|net| net.contains(addr))
                    })
                    .collect();
                let mut kernel = before.clone();
                let writes = Tables::grow(&before, &after)
                    .into_iter()
                    .chain(Tables::shrink(&before, &after));
                for (step, write) in writes.enumerate() {
                    kernel.apply(write);
                    for addr in &both {
                        assert!(kernel.allows(*addr), "{addr} refused after write {step}");
                    }
                }
                assert_eq!(kernel, after);
            }
        }
        let mut empty = Tables::of(&[]);
        let whole = Tables::of(&all);
        for write in whole.whole() {
            empty.apply(write);
        }
        assert_eq!(empty, whole);
    }
}
