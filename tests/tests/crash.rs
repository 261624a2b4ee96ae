//! Attach and detach killed at every step. The binary's fault injection (`fault-injection`
//! feature, see `mcfilter::fault`) aborts a command at its N-th step; each test walks N from 1
//! until the command finishes, and after every kill checks, before any command could repair
//! anything, that each interface either runs the filter with the whole policy and allow-list
//! it was given or runs no program at all; then that `status` lists exactly the interfaces that
//! run it, and that the next commands finish the job and leave nothing behind.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use aya::maps::{Array, HashMap, Map, MapData};
use mcfilter_common::{Config, IfaceInfo, IfaceMeta, map_names};
use mcfilter_tests::{allowed, cli::Mcfilter, netns::NetNs, privileged_test};
use serde_json::Value;

/// The most steps a command may take before the walk gives up.
const MAX_STEPS: usize = 500;

/// A namespace with two veth pairs' worth of interfaces to attach to, and a CLI of its own.
struct Rig {
    ns: NetNs,
    mcf: Mcfilter,
}

const A: &str = "ka";
const B: &str = "kb";

impl Rig {
    fn new(tag: &str) -> Self {
        let ns = NetNs::new(tag);
        for (iface, peer) in [(A, "kap"), (B, "kbp")] {
            ns.ip(&["link", "add", iface, "type", "veth", "peer", "name", peer]);
            ns.ip(&["link", "set", iface, "up"]);
            ns.ip(&["link", "set", peer, "up"]);
        }
        let mcf = Mcfilter::new(tag).in_netns(&ns);
        Rig { ns, mcf }
    }

    /// The id of the XDP program on `iface`, as netlink reports it.
    fn program_on(&self, iface: &str) -> Option<u64> {
        self.ns.xdp_program(iface)
    }

    fn ifindex(&self, iface: &str) -> u64 {
        let out = mcfilter_tests::netns::run(
            self.ns
                .command("ip")
                .args(["-j", "link", "show", "dev", iface]),
        );
        let links: Value = serde_json::from_slice(&out.stdout).expect("ip -j");
        links[0]["ifindex"].as_u64().expect("an ifindex")
    }

    /// Kills `args` at step 1, 2, ... and calls `check` after each kill and after the run that
    /// finished (with whether it was killed); returns how many steps the command has.
    fn walk(&self, args: &[&str], mut check: impl FnMut(usize, bool)) -> usize {
        for step in 1..MAX_STEPS {
            let killed = self.mcf.killed_at(args, step);
            if step == 1 {
                assert!(
                    killed,
                    "{args:?} was not killed at its first step: the binary lacks the fault injection (build it with `--features fault-injection`, as `cargo xtask test` does)"
                );
            }
            check(step, killed);
            if !killed {
                return step;
            }
        }
        panic!("{args:?} took more than {MAX_STEPS} steps");
    }

    fn pinned<M: TryFrom<Map>>(&self, name: &str) -> Option<M> {
        let data = MapData::from_pin(self.mcf.state_dir().join(name)).ok()?;
        let map = Map::from_map_data(data).expect("map");
        Some(M::try_from(map).unwrap_or_else(|_| panic!("{name} is not of the expected type")))
    }

    /// The ports of the pinned policy, read without the CLI (which would recover).
    fn raw_ports(&self) -> Vec<u16> {
        let config: Array<MapData, Config> =
            self.pinned(map_names::CONFIG).expect("the config's pin");
        config
            .get(&0, 0)
            .expect("the config")
            .protected_ports()
            .collect()
    }

    /// Whether the program allows `addr`, read from the pinned maps as it reads them.
    fn raw_allows(&self, addr: Ipv4Addr) -> bool {
        allowed::program_allows(self.mcf.state_dir(), addr.into())
    }

    /// The interfaces `status` lists, with their program ids; `None` when it says the filter is
    /// not attached.
    fn status(&self) -> Option<BTreeMap<String, u64>> {
        let out = self.mcf.run(&["status", "--json"]);
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("not attached"), "status: {stderr}");
            return None;
        }
        let status: Value = serde_json::from_slice(&out.stdout).expect("status --json");
        Some(
            status["interfaces"]
                .as_array()
                .expect("interfaces")
                .iter()
                .map(|iface| {
                    (
                        iface["name"].as_str().expect("name").to_owned(),
                        iface["program_id"].as_u64().expect("program id"),
                    )
                })
                .collect(),
        )
    }

    /// `status` lists exactly the interfaces among `ifaces` that run a program, with its id.
    fn status_is_true(&self, ifaces: &[&str], step: usize) {
        let running: BTreeMap<String, u64> = ifaces
            .iter()
            .filter_map(|&iface| Some((iface.to_owned(), self.program_on(iface)?)))
            .collect();
        let listed = self.status();
        if running.is_empty() {
            assert_eq!(listed, None, "step {step}: status lists what does not run");
        } else {
            assert_eq!(
                listed,
                Some(running),
                "step {step}: status and netlink differ"
            );
        }
    }

    /// Every interface record, metadata record and counters pin in the state belongs to an
    /// interface whose link is pinned.
    fn records_match_links(&self, step: usize) {
        let dir = self.mcf.state_dir();
        let mut linked = BTreeSet::new();
        let mut counted = BTreeSet::new();
        for entry in std::fs::read_dir(dir).expect("the state dir").flatten() {
            let name = entry.file_name().into_string().expect("a pin name");
            if let Some(index) = name.strip_prefix("link_") {
                linked.insert(index.parse::<u32>().expect("an ifindex"));
            } else if let Some(index) = name.strip_prefix("if_stats_") {
                counted.insert(index.parse::<u32>().expect("an ifindex"));
            }
        }
        let records: HashMap<MapData, u32, IfaceInfo> =
            self.pinned(map_names::IFACES).expect("the records");
        let meta: HashMap<MapData, u32, IfaceMeta> =
            self.pinned(map_names::IFACE_META).expect("the metadata");
        let keys = |keys: Vec<Result<u32, _>>| -> BTreeSet<u32> {
            keys.into_iter().map(|key| key.expect("a key")).collect()
        };
        assert_eq!(
            keys(records.keys().collect()),
            linked,
            "step {step}: records"
        );
        assert_eq!(keys(meta.keys().collect()), linked, "step {step}: metadata");
        assert_eq!(counted, linked, "step {step}: counters");
    }

    fn ports(&self) -> Vec<u64> {
        self.mcf.json(&["policy", "--json"])["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .map(|port| port.as_u64().expect("a port"))
            .collect()
    }

    fn allow_list(&self) -> BTreeSet<String> {
        self.mcf
            .json(&["allow", "list", "--json"])
            .as_array()
            .expect("a list")
            .iter()
            .map(|net| net.as_str().expect("a CIDR").to_owned())
            .collect()
    }

    /// Nothing of mcfilter is left: no program on either interface, no state dir.
    fn nothing_left(&self, step: usize) {
        for iface in [A, B] {
            assert_eq!(self.program_on(iface), None, "step {step}: {iface}");
        }
        assert!(
            !self.mcf.state_dir().exists(),
            "step {step}: the state dir is left"
        );
    }
}

const KEPT: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 9);
const ADDED: Ipv4Addr = Ipv4Addr::new(198, 18, 8, 9);

#[test]
fn a_first_attach_killed_at_any_step_filters_completely_or_not_at_all() {
    privileged_test!();
    let rig = Rig::new("cf");
    let attach = [A, "--port", "22122", "--allow", "198.18.7.0/24"];
    let steps = rig.walk(&[&["attach"][..], &attach].concat(), |step, _| {
        let running = rig.program_on(A).is_some();
        if running {
            assert_eq!(rig.raw_ports(), [22122], "step {step}");
            assert!(rig.raw_allows(KEPT), "step {step}");
        }
        rig.status_is_true(&[A], step);
        if running {
            rig.records_match_links(step);
            rig.mcf.ok(&["detach", A]);
        } else {
            // Nothing of the killed attach is adopted: a plain attach gets the defaults.
            rig.mcf.ok(&["attach", A]);
            assert_eq!(rig.ports(), [11211], "step {step}");
            assert!(rig.allow_list().is_empty(), "step {step}");
            rig.records_match_links(step);
            rig.mcf.ok(&["detach", A]);
        }
        rig.nothing_left(step);
    });
    assert!(steps > 8, "attach took only {steps} steps");
}

#[test]
fn a_second_attach_killed_at_any_step_leaves_the_first_filter_and_a_whole_policy() {
    privileged_test!();
    let rig = Rig::new("cs");
    rig.mcf.ok(&["attach", A, "--allow", "198.18.7.0/24"]);
    let (old, new) = (
        BTreeSet::from(["198.18.7.0/24".to_owned()]),
        BTreeSet::from(["198.18.7.0/24".to_owned(), "198.18.8.0/24".to_owned()]),
    );
    let attach_b = ["attach", B, "--port", "22122", "--allow", "198.18.8.0/24"];
    rig.walk(&attach_b, |step, _| {
        assert!(
            rig.program_on(A).is_some(),
            "step {step}: A lost its filter"
        );
        if rig.program_on(B).is_some() {
            assert_eq!(rig.raw_ports(), [22122], "step {step}");
            assert!(rig.raw_allows(ADDED), "step {step}");
        }
        assert!(rig.raw_allows(KEPT), "step {step}");
        rig.status_is_true(&[A, B], step);
        // The policy and the list are each the old or the new one (the policy is one map
        // write; the list's change is journaled and settled by the command above).
        let ports = rig.ports();
        assert!(
            ports == [11211] || ports == [22122],
            "step {step}: {ports:?}"
        );
        let list = rig.allow_list();
        assert!(list == old || list == new, "step {step}: {list:?}");
        if rig.program_on(B).is_none() {
            rig.mcf.ok(&attach_b);
        }
        rig.records_match_links(step);
        assert_eq!(rig.ports(), [22122], "step {step}");
        assert_eq!(rig.allow_list(), new, "step {step}");
        // Back to where the walk started.
        rig.mcf.ok(&["detach", B]);
        rig.mcf.ok(&["policy", "--port", "11211"]);
        rig.mcf.ok(&["allow", "del", "198.18.8.0/24"]);
        rig.records_match_links(step);
    });
    rig.mcf.ok(&["detach", A]);
    rig.nothing_left(0);
}

#[test]
fn a_detach_killed_at_any_step_leaves_the_filter_or_removes_it_without_a_trace() {
    privileged_test!();
    let rig = Rig::new("cd");
    rig.mcf.ok(&["attach", A, "--allow", "198.18.7.0/24"]);
    // Not the last interface: the other keeps its filter, the state stays.
    rig.mcf.ok(&["attach", B]);
    let b = rig.ifindex(B);
    rig.walk(&["detach", B], |step, _| {
        assert!(
            rig.program_on(A).is_some(),
            "step {step}: A lost its filter"
        );
        rig.status_is_true(&[A, B], step);
        if rig.program_on(B).is_some() {
            rig.mcf.ok(&["detach", B]);
        } else {
            let (_, line) = rig.mcf.fails(&["detach", B]);
            assert!(line.contains("not attached to"), "step {step}: {line}");
        }
        assert_eq!(rig.allow_list().len(), 1, "step {step}");
        rig.mcf.ok(&["attach", B]);
        // The attach removed whatever the killed detach left of B, and made B's anew.
        rig.records_match_links(step);
        assert!(rig.mcf.state_dir().join(format!("link_{b}")).exists());
    });
    rig.mcf.ok(&["detach", B]);

    // The last interface: the state goes with it.
    let a = rig.ifindex(A);
    rig.walk(&["detach", A], |step, _| {
        rig.status_is_true(&[A, B], step);
        if rig.program_on(A).is_some() {
            rig.mcf.ok(&["detach", A]);
        }
        // What a killed detach left is never adopted: the next attach starts afresh.
        rig.mcf.ok(&["attach", A]);
        assert!(rig.allow_list().is_empty(), "step {step}");
        rig.records_match_links(step);
        rig.mcf.ok(&["detach", A]);
        rig.nothing_left(step);
        rig.mcf.ok(&["attach", A, "--allow", "198.18.7.0/24"]);
        assert!(rig.mcf.state_dir().join(format!("link_{a}")).exists());
    });
    rig.mcf.ok(&["detach", A]);
    rig.nothing_left(0);
}

#[test]
fn a_replace_killed_at_any_step_never_leaves_the_interface_without_a_filter() {
    privileged_test!();
    let rig = Rig::new("cr");
    rig.mcf.ok(&["attach", A, "--allow", "198.18.7.0/24"]);
    rig.walk(&["attach", A, "--replace"], |step, _| {
        assert!(rig.program_on(A).is_some(), "step {step}: no filter on A");
        rig.status_is_true(&[A], step);
        rig.mcf.ok(&["attach", A, "--replace"]);
        rig.status_is_true(&[A], step);
        rig.records_match_links(step);
        assert_eq!(rig.ports(), [11211], "step {step}");
        assert_eq!(rig.allow_list().len(), 1, "step {step}");
        assert!(rig.raw_allows(KEPT), "step {step}");
    });
    rig.mcf.ok(&["detach", A]);
    rig.nothing_left(0);
}

#[test]
fn a_chained_attach_or_detach_killed_at_any_step_leaves_one_program_or_the_other() {
    privileged_test!();
    let rig = Rig::new("cc");
    let peer = mcfilter_tests::xdp_filter::XdpFilter::new("ccx", &rig.ns);
    peer.ok(&["load", A]);
    let peer_id = rig.program_on(A).expect("xdp-filter's program");
    // Whatever the step: the interface runs xdp-filter's program or mcfilter's (never none),
    // and `status` lists the interface, running or not, exactly while mcfilter's state holds it.
    let check = |step: usize| -> bool {
        let on = rig
            .program_on(A)
            .expect("a program on the interface, at every step");
        let status = rig.mcf.run(&["status", "--json"]);
        if !status.status.success() {
            assert_eq!(
                on, peer_id,
                "step {step}: status lists nothing, so xdp-filter runs"
            );
            return false;
        }
        let status: Value = serde_json::from_slice(&status.stdout).expect("status --json");
        let iface = &status["interfaces"][0];
        let ours = iface["program_id"].as_u64();
        assert_eq!(
            iface["running"],
            ours == Some(on),
            "step {step}: running says whether mcfilter's program is the interface's: {status}"
        );
        if ours != Some(on) {
            assert_eq!(on, peer_id, "step {step}");
        } else {
            assert_eq!(
                iface["next"]["program_id"], peer_id,
                "step {step}: {status}"
            );
        }
        true
    };
    let attach = [
        "attach",
        A,
        "--then",
        "existing",
        "--allow",
        "198.18.7.0/24",
    ];
    rig.walk(&attach, |step, _| {
        if check(step) {
            // Listed: detach hands the interface back (or, if mcfilter never got onto it,
            // leaves xdp-filter there) and removes mcfilter's state.
            rig.mcf.ok(&["detach", A]);
            assert!(!rig.mcf.state_dir().exists(), "step {step}");
        }
        // (Not listed: what the killed attach left, if anything, the next attach removes.)
        assert_eq!(rig.program_on(A), Some(peer_id), "step {step}");
    });
    rig.mcf.ok(&attach);
    rig.walk(&["detach", A], |step, _| {
        if check(step) {
            rig.mcf.ok(&["detach", A]);
            assert!(!rig.mcf.state_dir().exists(), "step {step}");
        }
        assert_eq!(rig.program_on(A), Some(peer_id), "step {step}");
        rig.mcf.ok(&attach);
    });
    rig.mcf.ok(&["detach", A]);
    assert_eq!(rig.program_on(A), Some(peer_id));
}
