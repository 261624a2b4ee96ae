//! Whether the program allows a source, read from a state dir's pinned maps as the program
//! reads them (`mcfilter_common::table`'s layout while the lookup tables are on, the trie
//! otherwise), without running a command, which would settle an unfinished change first. For
//! tests that look between a killed command and the next; the verdict tests prove the program
//! reads the maps this way.

use std::{net::IpAddr, path::Path};

use aya::maps::{Array, HashMap, LpmTrie, Map, MapData, lpm_trie::Key};
use mcfilter_common::{
    BLOCK_LONGER, BLOCK_WHOLE, IpKey, StrideBits, StrideKey, TABLE_SLOT_READY,
    TABLE_SLOT_V6_STRIDES, V4_LONGER_STRIDE, V6_STRIDES, block_position, map_names,
};

/// The map pinned as `name` in `state_dir`, typed.
fn pinned<M: TryFrom<Map>>(state_dir: &Path, name: &str) -> M {
    let data = MapData::from_pin(state_dir.join(name)).expect("open a pin");
    let map = Map::from_map_data(data).expect("map");
    M::try_from(map).unwrap_or_else(|_| panic!("{name} is not of the expected type"))
}

fn ip_key(addr: IpAddr) -> IpKey {
    match addr {
        IpAddr::V4(v4) => IpKey::v4(v4.octets()),
        IpAddr::V6(v6) => IpKey::v6(v6.octets()),
    }
}

/// Whether the pinned trie, the list's record, holds an entry that contains `addr`.
pub fn trie_allows(state_dir: &Path, addr: IpAddr) -> bool {
    let trie: LpmTrie<MapData, IpKey, u8> = pinned(state_dir, map_names::ALLOW);
    trie.get(&Key::new(IpKey::FULL_PREFIX, ip_key(addr)), 0)
        .is_ok()
}

/// Whether the lookup tables are on.
pub fn tables_ready(state_dir: &Path) -> bool {
    let tables: Array<MapData, u64> = pinned(state_dir, map_names::ALLOW_TABLES);
    tables.get(&TABLE_SLOT_READY, 0).expect("tables") != 0
}

/// Whether the program allows `addr` now.
pub fn program_allows(state_dir: &Path, addr: IpAddr) -> bool {
    if !tables_ready(state_dir) {
        return trie_allows(state_dir, addr);
    }
    let blocks: Array<MapData, u64> = pinned(state_dir, map_names::ALLOW_BLOCKS);
    let strides: HashMap<MapData, StrideKey, StrideBits> =
        pinned(state_dir, map_names::ALLOW_STRIDES);
    let tables: Array<MapData, u64> = pinned(state_dir, map_names::ALLOW_TABLES);
    let key = ip_key(addr);
    let bloom: Array<MapData, u64> = pinned(state_dir, map_names::ALLOW_BLOOM);
    let in_stride = |stride| {
        let (key, next) = StrideKey::of(&key, stride);
        let (word, bit) = key.bloom_bit();
        bloom.get(&word, 0).expect("Bloom filter word") & (1 << bit) != 0
            && strides.get(&key, 0).is_ok_and(|bits| bits.has(next))
    };
    match addr {
        IpAddr::V4(v4) => {
            let (word, shift) = block_position(u32::from(v4) >> 8);
            let block = blocks.get(&word, 0).expect("block word") >> shift;
            block & BLOCK_WHOLE != 0 || (block & BLOCK_LONGER != 0 && in_stride(V4_LONGER_STRIDE))
        }
        IpAddr::V6(_) => {
            let used = tables.get(&TABLE_SLOT_V6_STRIDES, 0).expect("strides");
            (0..V6_STRIDES).any(|stride| used & (1 << stride) != 0 && in_stride(stride))
        }
    }
}
