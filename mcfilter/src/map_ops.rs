//! Map operations aya does not have: removals where a key that is not there is success
//! ([`gone`]), and batched operations (Linux 5.6): reads of hash maps (BPF_MAP_LOOKUP_BATCH), so `stats`
//! stays fast with a million live sources and `status` counts a map in a few calls, and writes
//! and removals (BPF_MAP_UPDATE_BATCH, BPF_MAP_DELETE_BATCH), so the allow-list's lookup tables
//! take no system call per entry. Thousands of entries per call instead of one or two calls per
//! entry. aya 0.14 has no batch API; these are the raw `bpf(2)` calls in mcfilter.

use std::{
    io,
    mem::size_of,
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::{
    Pod,
    maps::{IterableMap, MapData, MapError, MapType},
};

/// `BPF_MAP_LOOKUP_BATCH` from `enum bpf_cmd`.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// `BPF_MAP_UPDATE_BATCH` from `enum bpf_cmd`.
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
/// `BPF_MAP_DELETE_BATCH` from `enum bpf_cmd`.
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
/// Entries asked for per call.
const BATCH: u32 = 4096;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// `bpf(cmd, attr)`.
///
/// # Safety
/// Every pointer in `attr` must be valid for what `cmd` reads and writes through it.
unsafe fn bpf(cmd: libc::c_long, attr: &mut BatchAttr) -> io::Result<()> {
    // SAFETY: the caller vouches for the pointers; `attr` itself is a live `union bpf_attr`
    // prefix of the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BatchAttr,
            size_of::<BatchAttr>() as u32,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Calls `each(key, per_cpu_values)` for every entry of a per-CPU hash map.
pub(crate) fn for_each_percpu<K, V, M>(map: &M, mut each: impl FnMut(K, &[V])) -> io::Result<()>
where
    K: Pod,
    V: Pod,
    M: IterableMap<K, aya::maps::PerCpuValues<V>>,
{
    let cpus = aya::util::nr_cpus().map_err(|(_, err)| err)?;
    // The kernel lays each CPU's value out at an 8-byte stride.
    let stride = size_of::<V>().next_multiple_of(8);
    let mut per_cpu: Vec<V> = Vec::with_capacity(cpus);
    lookup_batches(map.map(), size_of::<K>(), stride * cpus, |key, value| {
        // SAFETY: the kernel wrote a whole key and `cpus` values at `stride`; Pod types accept
        // any bytes; unaligned reads because the buffers are byte vectors.
        let key: K = unsafe { key.as_ptr().cast::<K>().read_unaligned() };
        per_cpu.clear();
        for cpu in 0..cpus {
            // SAFETY: as above.
            per_cpu.push(unsafe {
                value
                    .as_ptr()
                    .add(cpu * stride)
                    .cast::<V>()
                    .read_unaligned()
            });
        }
        each(key, &per_cpu);
    })
}

/// How many entries a hash map (per-CPU or not, LRU or not) holds, counted [`BATCH`] entries
/// a system call rather than one `get_next_key` call per key.
pub(crate) fn count(map: &MapData) -> io::Result<usize> {
    let info = map.info().map_err(io::Error::other)?;
    let per_cpu = matches!(
        info.map_type(),
        Ok(MapType::PerCpuHash | MapType::LruPerCpuHash)
    );
    let value_len = if per_cpu {
        let cpus = aya::util::nr_cpus().map_err(|(_, err)| err)?;
        (info.value_size() as usize).next_multiple_of(8) * cpus
    } else {
        info.value_size() as usize
    };
    let mut entries = 0;
    lookup_batches(map, info.key_size() as usize, value_len, |_, _| {
        entries += 1;
    })?;
    Ok(entries)
}

/// Walks a hash map with BPF_MAP_LOOKUP_BATCH, calling `each(key_bytes, value_bytes)` for every
/// entry; `value_len` is the kernel's layout of one value (per-CPU values included).
fn lookup_batches(
    map: &MapData,
    key_len: usize,
    value_len: usize,
    mut each: impl FnMut(&[u8], &[u8]),
) -> io::Result<()> {
    let mut keys = vec![0u8; key_len * BATCH as usize];
    let mut values = vec![0u8; value_len * BATCH as usize];
    // Hash maps' batch token is a bucket index (u32).
    let mut token_in = 0u32;
    let mut token_out = 0u32;
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                (&raw const token_in) as u64
            },
            out_batch: (&raw mut token_out) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: BATCH,
            map_fd: map.fd().as_fd().as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` points at buffers sized for `count` keys and values and at the two
        // tokens, all alive for the call.
        let err = unsafe { bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) }.err();
        // ENOENT: the last batch (its entries are still returned in `count`).
        if let Some(err) = &err
            && err.raw_os_error() != Some(libc::ENOENT)
        {
            return Err(io::Error::new(
                err.kind(),
                format!("BPF_MAP_LOOKUP_BATCH: {err}"),
            ));
        }
        for i in 0..attr.count as usize {
            each(
                &keys[i * key_len..(i + 1) * key_len],
                &values[i * value_len..(i + 1) * value_len],
            );
        }
        if err.is_some() {
            return Ok(());
        }
        token_in = token_out;
        first = false;
    }
}

/// Writes `values[i]` under `keys[i]` into a hash map or an array, [`BATCH`] entries a system
/// call, in order.
pub(crate) fn update<K: Pod, V: Pod>(map: &MapData, keys: &[K], values: &[V]) -> io::Result<()> {
    assert_eq!(keys.len(), values.len(), "a value for every key");
    write_batches(
        BPF_MAP_UPDATE_BATCH,
        "BPF_MAP_UPDATE_BATCH",
        map,
        keys,
        Some(values),
    )
}

/// Removes `keys` from a hash map, [`BATCH`] a system call, in order; every key must be there.
pub(crate) fn delete<K: Pod>(map: &MapData, keys: &[K]) -> io::Result<()> {
    write_batches::<K, u8>(
        BPF_MAP_DELETE_BATCH,
        "BPF_MAP_DELETE_BATCH",
        map,
        keys,
        None,
    )
}

/// `cmd` on `keys` (and `values`, as many), [`BATCH`] a call.
fn write_batches<K: Pod, V: Pod>(
    cmd: libc::c_long,
    name: &str,
    map: &MapData,
    keys: &[K],
    values: Option<&[V]>,
) -> io::Result<()> {
    for (chunk, keys) in keys.chunks(BATCH as usize).enumerate() {
        let values = values.map_or(std::ptr::null(), |values| {
            values[chunk * BATCH as usize..].as_ptr()
        });
        let mut attr = BatchAttr {
            keys: keys.as_ptr() as u64,
            values: values as u64,
            count: keys.len() as u32,
            map_fd: map.fd().as_fd().as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` points at `count` keys and, for updates, `count` values (the values of
        // a map that is not per-CPU are laid out back to back), alive for the call.
        unsafe { bpf(cmd, &mut attr) }
            .map_err(|err| io::Error::new(err.kind(), format!("{name}: {err}")))?;
    }
    Ok(())
}

/// Every key of a hash map that is not per-CPU, [`BATCH`] a system call.
pub(crate) fn keys<K: Pod>(map: &MapData) -> io::Result<Vec<K>> {
    let info = map.info().map_err(io::Error::other)?;
    let mut keys = Vec::new();
    lookup_batches(map, size_of::<K>(), info.value_size() as usize, |key, _| {
        // SAFETY: the kernel wrote a whole key; Pod types accept any bytes; unaligned read
        // because the buffer is a byte vector.
        keys.push(unsafe { key.as_ptr().cast::<K>().read_unaligned() });
    })?;
    Ok(keys)
}

/// A removal's result, where a key that is not there is success (the kernel says ENOENT).
pub(crate) fn gone(result: Result<(), MapError>) -> Result<(), MapError> {
    match result {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}
