//! The real XDP object through BPF_PROG_TEST_RUN: load it with its maps pinned in a private
//! state dir, set a policy through the mcfilter library, run frames and read the verdict and
//! the reason counter it bumped.

use std::{collections::BTreeSet, path::PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    maps::ProgramArray,
    programs::{ProgramFd, TestRun as _, TestRunOptions, Xdp},
};
use mcfilter::{Maps, StateDir};
use mcfilter_common::{
    Counter, Frag4Key, IpKey, PROGRAM_NAME, PROGRAM_NAME_IP, Reason, SourceStats, stats_slot,
};

use crate::oracle::Policy;

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

/// The loaded program and its maps.
pub struct Harness {
    ebpf: Ebpf,
    /// The entry point under test: `mcfilter` (Ethernet frames) or `mcfilter_ip`.
    program: &'static str,
    maps: Maps,
    dir: PathBuf,
}

impl Harness {
    /// Loads the program under `policy` (enforcing).
    pub fn new(policy: &Policy) -> Self {
        Self::with_dry_run(policy, false)
    }

    pub fn with_dry_run(policy: &Policy, dry_run: bool) -> Self {
        Self::build(
            mcfilter::EBPF_OBJECT,
            PROGRAM_NAME,
            policy,
            dry_run,
            mcfilter_common::DEFAULT_SOURCES_CAPACITY,
            None,
        )
    }

    /// The entry point for interfaces whose packets start at the IP header (TUN, WireGuard),
    /// under `policy` (enforcing).
    pub fn ip_framed(policy: &Policy) -> Self {
        Self::build(
            mcfilter::EBPF_OBJECT,
            PROGRAM_NAME_IP,
            policy,
            false,
            mcfilter_common::DEFAULT_SOURCES_CAPACITY,
            None,
        )
    }

    /// A harness whose per-source map holds `sources` entries.
    pub fn with_sources_capacity(policy: &Policy, sources: u32) -> Self {
        Self::build(
            mcfilter::EBPF_OBJECT,
            PROGRAM_NAME,
            policy,
            false,
            sources,
            None,
        )
    }

    /// The program as `attach --then` loads it: chained to `next`, which gets every packet it
    /// passes (a tail call).
    pub fn chained(policy: &Policy, next: &ProgramFd) -> Self {
        Self::build(
            mcfilter::EBPF_OBJECT,
            PROGRAM_NAME,
            policy,
            false,
            mcfilter_common::DEFAULT_SOURCES_CAPACITY,
            Some(next),
        )
    }

    /// Another build of the program (the benchmark's baseline), whose maps and policy have the
    /// layout of this one's.
    pub fn with_object(object: &[u8], policy: &Policy) -> Self {
        Self::build(
            object,
            PROGRAM_NAME,
            policy,
            false,
            mcfilter_common::DEFAULT_SOURCES_CAPACITY,
            None,
        )
    }

    fn build(
        object: &[u8],
        program: &'static str,
        policy: &Policy,
        dry_run: bool,
        sources_capacity: u32,
        next: Option<&ProgramFd>,
    ) -> Self {
        let dir = PathBuf::from("/sys/fs/bpf").join(crate::unique("mcfh"));
        let state = StateDir::new(&dir);
        drop(state.prepare_and_lock().expect("bpffs"));
        state.create().expect("create state dir");
        // Removes the pins if anything below panics (the harness's own Drop covers the rest).
        let cleanup = PinsGuard(dir.clone());
        let mut loader = EbpfLoader::new();
        // Time as attach reads it (not required: a baseline build may predate it).
        let clock = mcfilter::kernel::frag_clock();
        loader.override_global(mcfilter_common::FRAG_HZ_GLOBAL, &clock.hz, false);
        if next.is_some() {
            loader.override_global(mcfilter_common::CHAINED_GLOBAL, &1u8, true);
        }
        let mut ebpf = loader
            .default_map_pin_directory(&dir)
            .map_max_entries(mcfilter_common::map_names::SOURCES, sources_capacity)
            .load(object)
            .expect("load the eBPF object");
        let xdp: &mut Xdp = ebpf
            .program_mut(program)
            .expect("program in object")
            .try_into()
            .expect("an XDP program");
        xdp.load().expect("the verifier accepts the program");
        if let Some(next) = next {
            let map = ebpf
                .map_mut(mcfilter_common::map_names::NEXT)
                .expect("the next program's array");
            let mut array = ProgramArray::try_from(map).expect("a program array");
            array.set(0, next, 0).expect("the next program");
        }
        let mut maps = Maps::open_loaded(&state).expect("open pinned maps");
        let config = mcfilter::Policy {
            ports: policy.ports.clone(),
            dry_run,
            drop_reflected: policy.drop_reflected,
        }
        .to_config();
        maps.set_config(&config).expect("write config");
        let allow: BTreeSet<_> = policy.allow.iter().copied().collect();
        maps.allow.add(&allow).expect("write allow-list");
        std::mem::forget(cleanup);
        Harness {
            ebpf,
            program,
            maps,
            dir,
        }
    }

    /// The loaded program as the kernel reports it (sizes, the verifier's instruction count).
    pub fn info(&self) -> aya::programs::ProgramInfo {
        let program: &Xdp = self
            .ebpf
            .program(self.program)
            .expect("program in object")
            .try_into()
            .expect("an XDP program");
        program.info().expect("the program's info")
    }

    /// Runs `frame` once; returns the XDP action.
    pub fn run(&self, frame: &[u8]) -> u32 {
        test_run(&self.ebpf, self.program, frame, 1).return_value
    }

    /// Runs `frame` `repeat` times in the kernel; returns the average nanoseconds per run.
    pub fn time(&self, frame: &[u8], repeat: u32) -> u64 {
        test_run(&self.ebpf, self.program, frame, repeat)
            .duration
            .as_nanos() as u64
    }

    /// The stats counter of `reason` (summed over CPUs).
    pub fn counter(&self, reason: Reason, dry_run: bool) -> Counter {
        let values = self
            .maps
            .stats
            .get(&stats_slot(reason, dry_run), 0)
            .expect("read stats");
        values.iter().fold(Counter::default(), |acc, c| Counter {
            packets: acc.packets + c.packets,
            bytes: acc.bytes + c.bytes,
        })
    }

    /// Every reason counter in enforce mode, in `Reason::ALL` order.
    pub fn counters(&self) -> Vec<Counter> {
        Reason::ALL
            .iter()
            .map(|&r| self.counter(r, false))
            .collect()
    }

    /// Runs `frame` and returns the action and the one reason whose counter it bumped
    /// (panics if it bumped none or several).
    pub fn verdict(&self, frame: &[u8]) -> (u32, Reason) {
        let before = self.counters();
        let action = self.run(frame);
        let after = self.counters();
        let bumped: Vec<Reason> = Reason::ALL
            .iter()
            .zip(before.iter().zip(&after))
            .filter(|(_, (b, a))| a.packets != b.packets)
            .map(|(r, _)| *r)
            .collect();
        assert_eq!(
            bumped.len(),
            1,
            "one reason counted per packet, got {bumped:?}"
        );
        (action, bumped[0])
    }

    /// Packets counted under source `addr` (0 for `None` or unseen), as `stats` reports them.
    pub fn source_packets(&self, addr: Option<std::net::IpAddr>) -> u64 {
        let Some(addr) = addr else { return 0 };
        let stats = mcfilter::read_stats(&self.maps, usize::MAX).expect("read stats");
        stats
            .sources
            .iter()
            .find(|row| row.source == addr)
            .map_or(0, |row| row.packets)
    }

    /// Forgets every remembered dropped datagram (the generated test does this periodically so
    /// the kernel's LRU never has to evict, which the oracle's plain set does not model).
    pub fn clear_fragment_cache(&mut self) {
        self.maps
            .forget_fragments()
            .expect("empty the fragment caches");
    }

    /// How many instructions the verifier processed to accept the program (Linux 5.16+).
    pub fn verified_instructions(&self) -> Option<u32> {
        self.info().verified_instruction_count()
    }

    /// The loaded object, for what the harness does not wrap (its events' ring buffer).
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    pub fn maps(&self) -> &Maps {
        &self.maps
    }

    pub fn maps_mut(&mut self) -> &mut Maps {
        &mut self.maps
    }

    /// The private state dir the maps are pinned in.
    pub fn maps_dir(&self) -> &std::path::Path {
        &self.dir
    }
}

/// Removes a state dir's pins when dropped.
struct PinsGuard(PathBuf);

impl Drop for PinsGuard {
    fn drop(&mut self) {
        crate::remove_pins(&self.0);
    }
}

/// BPF_PROG_TEST_RUN of program `name` in `ebpf` (the kernel reports the average duration).
fn test_run(ebpf: &Ebpf, name: &str, frame: &[u8], repeat: u32) -> aya::programs::TestRunResult {
    let program: &Xdp = ebpf
        .program(name)
        .expect("program in object")
        .try_into()
        .expect("an XDP program");
    let opts = TestRunOptions {
        data_in: Some(frame),
        repeat,
        ..TestRunOptions::new()
    };
    program
        .test_run(opts)
        .unwrap_or_else(|err| panic!("BPF_PROG_TEST_RUN of {} bytes: {err}", frame.len()))
}

/// Another tool's XDP program, pinned at `path` (the benchmarks pin xdp-filter's there).
pub struct Pinned {
    program: Xdp,
}

impl Pinned {
    pub fn open(path: &std::path::Path) -> Self {
        let program = Xdp::from_pin(path, aya_obj::programs::XdpAttachType::Interface)
            .unwrap_or_else(|err| panic!("open the program pinned at {}: {err}", path.display()));
        Pinned { program }
    }

    /// Average nanoseconds per run of `frame`, repeated `repeat` times.
    pub fn time(&self, frame: &[u8], repeat: u32) -> u64 {
        let opts = TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::new()
        };
        self.program
            .test_run(opts)
            .expect("BPF_PROG_TEST_RUN")
            .duration
            .as_nanos() as u64
    }
}

/// The benchmark floor: an XDP program that only returns XDP_PASS.
pub struct Floor {
    ebpf: Ebpf,
}

impl Floor {
    pub fn load() -> Self {
        let mut ebpf = Ebpf::load(mcfilter::FLOOR_OBJECT).expect("load the floor object");
        let program: &mut Xdp = ebpf
            .program_mut("floor")
            .expect("floor program")
            .try_into()
            .expect("an XDP program");
        program.load().expect("load the floor program");
        Floor { ebpf }
    }

    /// The floor program, for a program to chain to.
    pub fn program_fd(&self) -> &ProgramFd {
        let program: &Xdp = self
            .ebpf
            .program("floor")
            .expect("floor program")
            .try_into()
            .expect("an XDP program");
        program.fd().expect("loaded")
    }

    /// Average nanoseconds per run of `frame`, repeated `repeat` times.
    pub fn time(&self, frame: &[u8], repeat: u32) -> u64 {
        test_run(&self.ebpf, "floor", frame, repeat)
            .duration
            .as_nanos() as u64
    }
}

/// A reference program: the floor plus one map operation (`mcfilter-ebpf/src/reference.rs`).
#[derive(Clone, Copy, Debug)]
pub enum Reference {
    /// One lookup of a 12-byte key in an LRU hash that finds its entry, as the IPv4 fragment
    /// cache's lookups do.
    Lookup,
    /// A source's counts added to its entry in a per-CPU LRU hash, as the filter does.
    AdmitPerCpu,
    /// The same in a shared LRU hash, with atomic adds.
    AdmitShared,
    /// An IPv4 address found in a set in an array: two buckets of four addresses, each an
    /// inlined array lookup (what an allowed /32 could cost without a hash map lookup).
    ProbeSet,
}

impl Reference {
    fn name(self) -> &'static str {
        match self {
            Reference::Lookup => "lookup",
            Reference::AdmitPerCpu => "admit_percpu",
            Reference::AdmitShared => "admit_shared",
            Reference::ProbeSet => "probe_set",
        }
    }
}

/// The reference programs, loaded, with the entry each one's map operation finds.
pub struct References {
    ebpf: Ebpf,
}

impl References {
    pub fn load() -> Self {
        let mut ebpf = Ebpf::load(mcfilter::REFERENCE_OBJECT).expect("load the reference object");
        for reference in [
            Reference::Lookup,
            Reference::AdmitPerCpu,
            Reference::AdmitShared,
            Reference::ProbeSet,
        ] {
            let name = reference.name();
            let program: &mut Xdp = ebpf
                .program_mut(name)
                .unwrap_or_else(|| panic!("{name} program"))
                .try_into()
                .expect("an XDP program");
            program
                .load()
                .unwrap_or_else(|err| panic!("load the {name} program: {err}"));
        }
        let map = |ebpf: &mut Ebpf, name: &str| {
            ebpf.take_map(name)
                .unwrap_or_else(|| panic!("the map {name}"))
        };
        let mut lookup: aya::maps::HashMap<_, Frag4Key, u32> = map(&mut ebpf, "ref_lookup")
            .try_into()
            .expect("an LRU hash");
        let frag_key = Frag4Key {
            src: 0,
            dst: 0,
            id: 0,
            proto: 0,
            _pad: 0,
        };
        lookup
            .insert(frag_key, 1, 0)
            .expect("write the lookup's entry");
        let source = IpKey {
            family: 0,
            addr: [0; 4],
        };
        let zero = SourceStats {
            packets: 0,
            bytes: 0,
            last_seen_ns: 0,
            dry_run_packets: 0,
            last_reason: 0,
            last_dry_run: 0,
        };
        let mut percpu: aya::maps::PerCpuHashMap<_, IpKey, SourceStats> =
            map(&mut ebpf, "ref_percpu")
                .try_into()
                .expect("a per-CPU LRU hash");
        let cpus = aya::util::nr_cpus().expect("the possible CPUs");
        let values = aya::maps::PerCpuValues::try_from(vec![zero; cpus]).expect("per-CPU values");
        percpu
            .insert(source, values, 0)
            .expect("write the per-CPU source");
        let mut shared: aya::maps::HashMap<_, IpKey, SourceStats> = map(&mut ebpf, "ref_shared")
            .try_into()
            .expect("an LRU hash");
        shared
            .insert(source, zero, 0)
            .expect("write the shared source");
        // The address probe_set asks for, in every bucket's last slot.
        let probe = u32::from(std::net::Ipv4Addr::new(198, 18, 0, 1)).to_be();
        let mut set: aya::maps::Array<_, [u32; 4]> =
            map(&mut ebpf, "ref_set").try_into().expect("an array");
        for bucket in 0..set.len() {
            set.set(bucket, [0, 0, 0, probe], 0)
                .expect("write a bucket of the set");
        }
        References { ebpf }
    }

    /// Average nanoseconds per run of `frame` through `reference`, repeated `repeat` times; on
    /// the calling thread's CPU.
    pub fn time(&self, reference: Reference, frame: &[u8], repeat: u32) -> u64 {
        let run = test_run(&self.ebpf, reference.name(), frame, repeat);
        assert_eq!(run.return_value, XDP_PASS, "{reference:?} found its entry");
        run.duration.as_nanos() as u64
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // Whatever the test left behind.
        crate::remove_pins(&self.dir);
    }
}
