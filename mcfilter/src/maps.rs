//! Typed handles on the maps pinned in the state dir. Opening them needs no program: every
//! read command works from the pins alone.

use std::collections::BTreeMap;

use aya::maps::{Array, HashMap, IterableMap as _, Map, MapData, PerCpuArray, PerCpuHashMap};
use mcfilter_common::{
    Config, Counter, FAMILY_V4, FAMILY_V6, Frag4Key, FragKey, IfaceInfo, IfaceMeta, IpKey,
    PendingSource, SourceStats, frag_timeout_slot, map_names,
};

use crate::{
    Error,
    allow::{AllowList, AllowMaps, Recovery, TableMaps},
    map_ops::gone,
    pin::{StateDir, StateLock},
};

/// Typed handles on the pinned maps of a state (see [`Maps::open`]).
pub struct Maps {
    /// The policy the program reads.
    pub config: Array<MapData, Config>,
    /// The allow-list.
    pub allow: AllowList,
    /// The exact totals by reason, per CPU.
    pub stats: PerCpuArray<MapData, Counter>,
    /// Dropped packets by source, per CPU (an LRU).
    pub sources: PerCpuHashMap<MapData, IpKey, SourceStats>,
    /// `sources`' capacity.
    pub sources_capacity: u32,
    /// Each CPU's latest dropped source, not yet added to `sources`.
    pub pending: PerCpuArray<MapData, PendingSource>,
    /// Each CPU's sources seen once, waiting for a second sighting.
    pub recent: PerCpuArray<MapData, PendingSource>,
    /// IPv6 datagrams whose first fragment was dropped.
    pub frags: HashMap<MapData, FragKey, u32>,
    /// IPv4 datagrams whose first fragment was dropped; `None` in a state an older build made
    /// (its program keeps them in `frags`).
    pub frags4: Option<HashMap<MapData, Frag4Key, u32>>,
    /// The two caches' capacity together.
    pub frags_capacity: u32,
    /// The fragment caches' epoch (see [`map_names::FRAG_EPOCH`]); `None` in a state an older
    /// build made.
    pub frag_epoch: Option<Array<MapData, u32>>,
    /// The program running on each attached interface, by ifindex.
    pub ifaces: HashMap<MapData, u32, IfaceInfo>,
    /// An allow-list change an earlier command left unfinished, settled by [`Maps::open`].
    pub recovered: Option<Recovery>,
}

impl Maps {
    /// Opens the pinned maps; [`Error::NotAttached`] when there is no state. Settles an
    /// allow-list change an earlier, killed command left unfinished (see
    /// [`AllowList::recover`]): callers hold the state lock.
    pub fn open(state: &StateDir) -> Result<Self, Error> {
        Self::settled(Self::open_unsettled(state)?)
    }

    /// [`Maps::open`] for an object just loaded (by attach, or by the tests' harness that runs
    /// the program through BPF_PROG_TEST_RUN): the maps are pinned, and no interface need be
    /// linked.
    pub fn open_loaded(state: &StateDir) -> Result<Self, Error> {
        Self::settled(Self::pinned(state)?)
    }

    fn settled(mut maps: Self) -> Result<Self, Error> {
        // A few system calls unless there is something to settle.
        maps.recovered = maps.allow.settle()?;
        Ok(maps)
    }

    /// For commands that only read: the maps under the shared lock (readers never wait for one
    /// another, nor hold up a change longer than they read). A list an earlier command left
    /// unsettled is settled first, under the exclusive lock, which the reader then keeps.
    pub fn open_to_read(state: &StateDir) -> Result<(StateLock, Self), Error> {
        let shared = state.prepare_and_lock_shared()?;
        let maps = Self::open_unsettled(state)?;
        if !maps.allow.unsettled()? {
            return Ok((shared, maps));
        }
        drop(maps);
        drop(shared);
        let exclusive = state.prepare_and_lock()?;
        Ok((exclusive, Self::open(state)?))
    }

    /// The pinned maps as they are, changing nothing; [`Error::NotAttached`] unless an
    /// interface is linked (maps no interface uses are what a killed detach left: the next
    /// attach removes them).
    fn open_unsettled(state: &StateDir) -> Result<Self, Error> {
        if !state.attached().map_err(Error::Io)? {
            return Err(Error::NotAttached {
                dir: state.path().to_owned(),
            });
        }
        Self::pinned(state)
    }

    fn pinned(state: &StateDir) -> Result<Self, Error> {
        let (trie, allow_max_entries) = open(state, map_names::ALLOW)?;
        let (sources, sources_capacity) = open(state, map_names::SOURCES)?;
        let (frags, frags_capacity) = open(state, map_names::FRAGS)?;
        let (frags4, frags4_capacity) = if state.map(map_names::FRAGS4).exists() {
            let (map, capacity) = open(state, map_names::FRAGS4)?;
            (Some(map), capacity)
        } else {
            (None, 0)
        };
        let frag_epoch = if state.map(map_names::FRAG_EPOCH).exists() {
            Some(open(state, map_names::FRAG_EPOCH)?.0)
        } else {
            None
        };
        let allow = AllowList::new(
            AllowMaps {
                trie,
                state: open(state, map_names::ALLOW_STATE)?.0,
                tables: table_maps(state)?,
            },
            allow_max_entries,
        );
        Ok(Maps {
            config: open(state, map_names::CONFIG)?.0,
            allow,
            stats: open(state, map_names::STATS)?.0,
            sources,
            sources_capacity,
            pending: open(state, map_names::PENDING)?.0,
            recent: open(state, map_names::RECENT)?.0,
            frags,
            frags4,
            frags_capacity: frags_capacity + frags4_capacity,
            frag_epoch,
            ifaces: open(state, map_names::IFACES)?.0,
            recovered: None,
        })
    }

    /// The policy.
    pub fn config(&self) -> Result<Config, Error> {
        self.config.get(&0, 0).map_err(map_err(map_names::CONFIG))
    }

    /// Replaces the policy.
    pub fn set_config(&mut self, config: &Config) -> Result<(), Error> {
        self.config
            .set(0, config, 0)
            .map_err(map_err(map_names::CONFIG))
    }

    /// The interfaces `attach` recorded, by ifindex.
    pub fn ifaces(&self) -> Result<Vec<(u32, IfaceInfo)>, Error> {
        let mut ifaces = self
            .ifaces
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err(map_names::IFACES))?;
        ifaces.sort_by_key(|(index, _)| *index);
        Ok(ifaces)
    }

    /// Records the program running on `ifindex` (its name, mode and id).
    pub fn record_iface(&mut self, ifindex: u32, info: IfaceInfo) -> Result<(), Error> {
        self.ifaces
            .insert(ifindex, info, 0)
            .map_err(map_err(map_names::IFACES))
    }

    /// Forgets `ifindex`'s record; one that is not there is no error.
    pub fn forget_iface(&mut self, ifindex: u32) -> Result<(), Error> {
        gone(self.ifaces.remove(&ifindex)).map_err(map_err(map_names::IFACES))
    }

    /// Empties the fragment cache: its entries' time base is the program's, and a replaced
    /// program may have kept time another way. A dropped datagram's later fragments then pass,
    /// to be freed by the kernel's reassembly timeout. The epoch moves on last, so that no
    /// program's CPU keeps a dropped datagram it met before in front of the emptied caches.
    pub fn forget_fragments(&mut self) -> Result<(), Error> {
        forget_all(&mut self.frags, map_names::FRAGS)?;
        if let Some(frags4) = &mut self.frags4 {
            forget_all(frags4, map_names::FRAGS4)?;
        }
        let Some(epoch) = &mut self.frag_epoch else {
            return Ok(());
        };
        let now = epoch.get(&0, 0).map_err(map_err(map_names::FRAG_EPOCH))?;
        epoch
            .set(0, now.wrapping_add(1), 0)
            .map_err(map_err(map_names::FRAG_EPOCH))
    }

    /// How many datagrams the fragment caches remember (both families).
    pub fn fragments(&self) -> Result<usize, Error> {
        let count = |map: &MapData, name| {
            crate::map_ops::count(map).map_err(|err| Error::MapBatch { name, err })
        };
        let v4 = match &self.frags4 {
            Some(frags4) => count(frags4.map(), map_names::FRAGS4)?,
            None => 0,
        };
        Ok(count(self.frags.map(), map_names::FRAGS)? + v4)
    }
}

/// Removes every entry of `map` (pinned as `name`).
fn forget_all<K: aya::Pod>(
    map: &mut HashMap<MapData, K, u32>,
    name: &'static str,
) -> Result<(), Error> {
    let keys = map
        .keys()
        .collect::<Result<Vec<_>, _>>()
        .map_err(map_err(name))?;
    for key in keys {
        gone(map.remove(&key)).map_err(map_err(name))?;
    }
    Ok(())
}

/// The allow-list's lookup tables, `None` in a state an older build made (the next attach
/// loads this build's program, which makes them).
fn table_maps(state: &StateDir) -> Result<Option<TableMaps>, Error> {
    if !state.map(map_names::ALLOW_TABLES).exists() {
        return Ok(None);
    }
    Ok(Some(TableMaps {
        blocks: open(state, map_names::ALLOW_BLOCKS)?.0,
        bloom: open(state, map_names::ALLOW_BLOOM)?.0,
        strides: open(state, map_names::ALLOW_STRIDES)?.0,
        state: open(state, map_names::ALLOW_TABLES)?.0,
    }))
}

/// Each attached interface's metadata (its program's build, whether the service manages it),
/// by ifindex; empty for a state made before it was kept.
pub fn iface_meta(state: &StateDir) -> Result<BTreeMap<u32, IfaceMeta>, Error> {
    if !state.map(map_names::IFACE_META).exists() {
        return Ok(BTreeMap::new());
    }
    let (meta, _): (HashMap<MapData, u32, IfaceMeta>, _) = open(state, map_names::IFACE_META)?;
    meta.iter()
        .collect::<Result<_, _>>()
        .map_err(map_err(map_names::IFACE_META))
}

/// Records `ifindex`'s metadata (the map exists: attach loads the object, which makes it).
pub fn set_iface_meta(state: &StateDir, ifindex: u32, meta: IfaceMeta) -> Result<(), Error> {
    let (mut map, _): (HashMap<MapData, u32, IfaceMeta>, _) = open(state, map_names::IFACE_META)?;
    map.insert(ifindex, meta, 0)
        .map_err(map_err(map_names::IFACE_META))
}

/// Forgets `ifindex`'s metadata (detach).
pub fn forget_iface_meta(state: &StateDir, ifindex: u32) -> Result<(), Error> {
    if !state.map(map_names::IFACE_META).exists() {
        return Ok(());
    }
    let (mut map, _): (HashMap<MapData, u32, IfaceMeta>, _) = open(state, map_names::IFACE_META)?;
    gone(map.remove(&ifindex)).map_err(map_err(map_names::IFACE_META))
}

/// How long the program remembers a dropped datagram, in seconds (IPv4, IPv6); `None` for a
/// state made before these were kept (its program remembers for Linux's default).
pub fn frag_timeouts(state: &StateDir) -> Result<Option<[u32; 2]>, Error> {
    if !state.map(map_names::FRAG_TIMEOUTS).exists() {
        return Ok(None);
    }
    let (timeouts, _): (Array<MapData, u32>, _) = open(state, map_names::FRAG_TIMEOUTS)?;
    let get = |family| {
        timeouts
            .get(&frag_timeout_slot(family), 0)
            .map_err(map_err(map_names::FRAG_TIMEOUTS))
    };
    Ok(Some([get(FAMILY_V4)?, get(FAMILY_V6)?]))
}

/// Sets how long the program remembers a dropped datagram (attach: the kernel's reassembly
/// timeouts, [`crate::kernel::reassembly_timeouts`]).
pub fn set_frag_timeouts(state: &StateDir, secs: [u32; 2]) -> Result<(), Error> {
    let (mut timeouts, _): (Array<MapData, u32>, _) = open(state, map_names::FRAG_TIMEOUTS)?;
    for (family, secs) in [FAMILY_V4, FAMILY_V6].into_iter().zip(secs) {
        timeouts
            .set(frag_timeout_slot(family), secs, 0)
            .map_err(map_err(map_names::FRAG_TIMEOUTS))?;
    }
    Ok(())
}

/// Maps whose capacity the user chooses when the state is made (`--allow-capacity`,
/// `--sources-capacity`): any capacity is this build's layout.
const CHOSEN_CAPACITY: [&str; 3] = [
    map_names::ALLOW,
    map_names::ALLOW_STRIDES,
    map_names::SOURCES,
];

/// Refuses a state whose pinned maps do not have the layout `object` (this build's program)
/// defines: type, key and value sizes, and capacity where the program fixes it. The loader
/// reuses a pinned map by name without looking, so a map an older build made would otherwise
/// meet a program that reads it differently. Maps the state lacks are made by the loader.
pub fn check_layout(state: &StateDir, object: &[u8]) -> Result<(), Error> {
    let object = aya_obj::Object::parse(object).map_err(|err| Error::StateLayout {
        dir: state.path().to_owned(),
        map: "(none)",
        found: "an object that does not parse".into(),
        expected: err.to_string(),
    })?;
    for &name in crate::pin::map_pins() {
        let path = state.map(name);
        if !path.exists() {
            continue;
        }
        let Some(defined) = object.maps.get(name) else {
            continue;
        };
        let info = MapData::from_pin(&path)
            .and_then(|data| data.info())
            .map_err(map_err(name))?;
        let found_type = info.map_type().map_or(u32::MAX, |t| t as u32);
        let capacity_fixed = !CHOSEN_CAPACITY.contains(&name);
        let layout = |map_type: u32, key: u32, value: u32, entries: u32| {
            let entries = if capacity_fixed {
                format!(", {entries} entries")
            } else {
                String::new()
            };
            format!("type {map_type}, key {key} B, value {value} B{entries}")
        };
        let found = layout(
            found_type,
            info.key_size(),
            info.value_size(),
            info.max_entries(),
        );
        let expected = layout(
            defined.map_type(),
            defined.key_size(),
            defined.value_size(),
            defined.max_entries(),
        );
        if found != expected {
            return Err(Error::StateLayout {
                dir: state.path().to_owned(),
                map: name,
                found,
                expected,
            });
        }
    }
    Ok(())
}

pub(crate) fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> Error {
    move |err| Error::Map { name, err }
}

/// Opens pinned map `name` as `T`, with its capacity.
fn open<T>(state: &StateDir, name: &'static str) -> Result<(T, u32), Error>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    let data = MapData::from_pin(state.map(name)).map_err(map_err(name))?;
    let capacity = data.info().map_err(map_err(name))?.max_entries();
    let map = Map::from_map_data(data).map_err(map_err(name))?;
    Ok((T::try_from(map).map_err(map_err(name))?, capacity))
}
