//! Writing the lookup tables into the kernel's maps: the ordered writes `tables` computes, in
//! batches that keep their order (BPF_MAP_UPDATE_BATCH and BPF_MAP_DELETE_BATCH write one
//! element after another), and the switch between the tables and the trie.

use aya::maps::{Array, IterableMap as _, MapData};
use mcfilter_common::{StrideBits, StrideKey, TABLE_SLOT_READY, TABLE_SLOT_V6_STRIDES, map_names};

use super::{
    AllowList,
    tables::{Tables, Write},
};
use crate::{Error, map_ops};

/// The stride table as stored in the state dir.
pub type AllowStrides = aya::maps::HashMap<MapData, StrideKey, StrideBits>;

/// The lookup tables' pinned maps.
pub struct TableMaps {
    /// `mcf_allow_blocks`.
    pub blocks: Array<MapData, u64>,
    /// `mcf_allow_bloom`.
    pub bloom: Array<MapData, u64>,
    /// `mcf_allow_strides`.
    pub strides: AllowStrides,
    /// `mcf_allow_tables`.
    pub state: Array<MapData, u64>,
}

impl AllowList {
    /// Whether the tables hold the list (the program uses them, not the trie); never in a
    /// state without them.
    pub fn tables_ready(&self) -> Result<bool, Error> {
        Ok(self.tables.is_some() && self.table_slot(TABLE_SLOT_READY)? != 0)
    }

    /// Makes the kernel's tables, which allow the list `old`, allow `old` and `new` as well.
    pub(super) fn grow_tables(&mut self, old: &Tables, new: &Tables) -> Result<(), Error> {
        self.write_tables(&Tables::grow(old, new))
    }

    /// Makes the kernel's tables, which allow `old` and `new`, allow exactly `new`.
    pub(super) fn shrink_tables(&mut self, old: &Tables, new: &Tables) -> Result<(), Error> {
        self.write_tables(&Tables::shrink(old, new))
    }

    /// Switches the tables off: the program uses the trie.
    pub(super) fn switch_tables_off(&mut self) -> Result<(), Error> {
        if self.tables.is_none() {
            return Ok(());
        }
        self.set_table_slot(TABLE_SLOT_READY, 0)
    }

    /// Rebuilds the tables from `list`: switched off (the program uses the trie, which holds
    /// the list), emptied, written whole, switched on.
    pub(super) fn rebuild_tables(&mut self, list: &Tables) -> Result<(), Error> {
        let Some(tables) = &self.tables else {
            return Ok(());
        };
        let stale: Vec<StrideKey> =
            map_ops::keys(tables.strides.map()).map_err(strides_batch_err)?;
        self.switch_tables_off()?;
        // Stale entries go first: the map then has room for the list's.
        self.write_tables(&stale.into_iter().map(Write::Unstride).collect::<Vec<_>>())?;
        self.write_tables(&list.whole())?;
        self.set_table_slot(TABLE_SLOT_READY, 1)
    }

    /// Makes `writes` in their order, each run of one kind in batches: one step for a crash
    /// test to stop at per run (a kill inside a run is a kill between two of its writes).
    fn write_tables(&mut self, writes: &[Write]) -> Result<(), Error> {
        let capacity = self.capacity;
        let Some(tables) = &mut self.tables else {
            return Ok(());
        };
        for run in writes.chunk_by(|a, b| std::mem::discriminant(a) == std::mem::discriminant(b)) {
            crate::fault::step();
            match run[0] {
                Write::Bloom(..) | Write::Block(..) => {
                    let (name, map) = if matches!(run[0], Write::Bloom(..)) {
                        (map_names::ALLOW_BLOOM, &tables.bloom)
                    } else {
                        (map_names::ALLOW_BLOCKS, &tables.blocks)
                    };
                    let (words, values): (Vec<u32>, Vec<u64>) = run
                        .iter()
                        .filter_map(|write| match *write {
                            Write::Bloom(word, value) | Write::Block(word, value) => {
                                Some((word, value))
                            }
                            _ => None,
                        })
                        .unzip();
                    map_ops::update(map.map(), &words, &values)
                        .map_err(|err| Error::MapBatch { name, err })?;
                }
                Write::V6Strides(_) => {
                    for write in run {
                        if let Write::V6Strides(strides) = *write {
                            set_slot(&mut tables.state, TABLE_SLOT_V6_STRIDES, strides)?;
                        }
                    }
                }
                Write::Stride(..) => {
                    let (keys, bits): (Vec<StrideKey>, Vec<StrideBits>) = run
                        .iter()
                        .filter_map(|write| match *write {
                            Write::Stride(key, bits) => Some((key, bits)),
                            _ => None,
                        })
                        .unzip();
                    map_ops::update(tables.strides.map(), &keys, &bits)
                        .map_err(|err| strides_full_or(err, capacity))?;
                }
                Write::Unstride(_) => {
                    let keys: Vec<StrideKey> = run
                        .iter()
                        .filter_map(|write| match *write {
                            Write::Unstride(key) => Some(key),
                            _ => None,
                        })
                        .collect();
                    map_ops::delete(tables.strides.map(), &keys).map_err(strides_batch_err)?;
                }
            }
        }
        Ok(())
    }

    fn table_slot(&self, slot: u32) -> Result<u64, Error> {
        let Some(tables) = &self.tables else {
            return Ok(0);
        };
        tables.state.get(&slot, 0).map_err(|err| Error::Map {
            name: map_names::ALLOW_TABLES,
            err,
        })
    }

    fn set_table_slot(&mut self, slot: u32, value: u64) -> Result<(), Error> {
        match &mut self.tables {
            Some(tables) => set_slot(&mut tables.state, slot, value),
            None => Ok(()),
        }
    }
}

fn set_slot(state: &mut Array<MapData, u64>, slot: u32, value: u64) -> Result<(), Error> {
    crate::fault::step();
    state.set(slot, value, 0).map_err(|err| Error::Map {
        name: map_names::ALLOW_TABLES,
        err,
    })
}

fn strides_full_or(err: std::io::Error, capacity: u32) -> Error {
    if matches!(err.raw_os_error(), Some(libc::ENOSPC | libc::E2BIG)) {
        Error::AllowListFull { capacity }
    } else {
        strides_batch_err(err)
    }
}

fn strides_batch_err(err: std::io::Error) -> Error {
    Error::MapBatch {
        name: map_names::ALLOW_STRIDES,
        err,
    }
}
