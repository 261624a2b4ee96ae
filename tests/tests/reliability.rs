//! Reliability: a command killed in the middle of an allow-list change, faults in the
//! environment (interfaces deleted or renamed, the state dir removed, a second filter), and
//! the state dir's permissions.

use std::{
    collections::BTreeSet,
    fs,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::unix::{fs::PermissionsExt as _, process::ExitStatusExt as _},
    process::Command,
    time::Duration,
};

use aya::maps::{Array, HashMap, Map, MapData};
use mcfilter::fault::CRASH_AFTER_ENV;
use mcfilter_common::{
    ALLOW_SLOT_RETIRED_INDEX, ALLOW_SLOT_SIZE, StrideBits, StrideKey, TABLE_SLOT_READY, map_names,
};
use mcfilter_tests::{
    allowed,
    cli::{Mcfilter, binary},
    lab::{self, IFACE, Lab, pending},
    load,
    memcache::{self, Memcached},
    netns::NetNs,
    privileged_test,
};
use serde_json::Value;

const PORT: u16 = 11211;

fn list(mcf: &Mcfilter) -> BTreeSet<String> {
    let value = mcf.json(&["allow", "list", "--json"]);
    value
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v.as_str().expect("string").to_owned())
        .collect()
}

/// The map pinned as `name` in the state dir, typed.
fn pinned<M: TryFrom<Map>>(mcf: &Mcfilter, name: &str) -> M {
    let data = MapData::from_pin(mcf.state_dir().join(name)).expect("open a pin");
    let map = Map::from_map_data(data).expect("map");
    M::try_from(map).unwrap_or_else(|_| panic!("{name} is not of the expected type"))
}

/// The first address of a CIDR written as text.
fn first_address(net: &str) -> IpAddr {
    net.parse::<ipnet::IpNet>().expect("a CIDR").network()
}

#[test]
fn a_killed_allow_change_leaves_the_old_or_the_new_list() {
    privileged_test!();
    killed_changes("kc", 0, 3);
}

/// The same with lists of over a thousand entries (writes of the lookup tables in batches).
#[test]
fn a_killed_change_of_a_large_allow_list_leaves_the_old_or_the_new_list() {
    privileged_test!();
    killed_changes("ki", 1100, 151);
}

/// Replaces an allow-list by another, killed after every `step`-th map write (and finally not
/// killed): each list has 30 IPv4 addresses and `extra` IPv6 ones of its own, a prefix of its
/// own and one address in common.
fn killed_changes(tag: &str, extra: u16, step: usize) {
    let ns = NetNs::new(tag);
    let mcf = Mcfilter::new(tag).in_netns(&ns);
    let common = Ipv4Addr::new(198, 18, 9, 9);
    let set = |third: u8| -> BTreeSet<String> {
        (0..30u8)
            .map(|i| format!("198.18.{third}.{i}/32"))
            .chain((0..extra).map(|i| format!("2001:db8:{third}:1::{i:x}/128")))
            .chain([format!("{common}/32"), format!("2001:db8:{third}::/64")])
            // As `allow list` prints them.
            .map(|net| net.parse::<ipnet::IpNet>().expect("a CIDR").to_string())
            .collect()
    };
    let (old, new) = (set(1), set(2));
    let dir = std::env::temp_dir().join(mcfilter_tests::unique(tag));
    fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, nets: &BTreeSet<String>| {
        let path = dir.join(name);
        fs::write(
            &path,
            nets.iter().map(|n| format!("{n}\n")).collect::<String>(),
        )
        .unwrap();
        path.to_str().unwrap().to_owned()
    };
    let (old_file, new_file) = (write("old", &old), write("new", &new));
    mcf.ok(&["attach", "lo"]);
    mcf.ok(&["allow", "replace", "--file", &old_file]);
    assert!(allowed::tables_ready(mcf.state_dir()));
    // An address of every entry on either list.
    let probes: BTreeSet<IpAddr> = old.union(&new).map(|net| first_address(net)).collect();
    let mut outcomes = BTreeSet::new();
    for crash_after in (1..).step_by(step) {
        assert!(crash_after < 100_000, "the change never finished");
        let out = mcf
            .command(&["allow", "replace", "--file", &new_file])
            .env(CRASH_AFTER_ENV, crash_after.to_string())
            .output()
            .expect("run mcfilter");
        let killed = out.status.signal() == Some(libc::SIGABRT);
        assert!(
            killed || out.status.success(),
            "after {crash_after} writes: {out:?}"
        );
        // Before anyone recovers: the filter is attached and still allows the entry both
        // lists contain, whether the program reads the tables or the trie.
        assert!(
            allowed::program_allows(mcf.state_dir(), common.into()),
            "after {crash_after} writes the common entry is missing"
        );
        let shown = ns
            .command("ip")
            .args(["link", "show", "lo"])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&shown.stdout).contains("xdp"),
            "still attached"
        );
        // The next command settles the change: exactly the old or the new list, its size, and
        // tables on that allow exactly that list.
        let now = list(&mcf);
        assert!(
            now == old || now == new,
            "after {crash_after} writes: {} entries, neither list",
            now.len()
        );
        assert_eq!(
            status(&mcf)["allow_entries"].as_u64(),
            Some(now.len() as u64),
            "after {crash_after} writes"
        );
        assert!(
            allowed::tables_ready(mcf.state_dir()),
            "after {crash_after} writes"
        );
        assert_tables_allow(&mcf, &probes, &now);
        outcomes.insert((killed, now == new));
        mcf.ok(&["allow", "replace", "--file", &old_file]);
        if !killed {
            break;
        }
    }
    // Killed before and after the commit point, and not killed at all.
    assert!(
        outcomes.contains(&(true, false)),
        "some kills rolled back: {outcomes:?}"
    );
    assert!(
        outcomes.contains(&(true, true)),
        "some kills completed: {outcomes:?}"
    );
    // A state dir made before the list's size and the tables were kept: the next command
    // counts the list and builds them.
    let mut state: Array<MapData, u64> = pinned(&mcf, map_names::ALLOW_STATE);
    state.set(ALLOW_SLOT_SIZE, 0, 0).expect("forget the size");
    let mut tables: Array<MapData, u64> = pinned(&mcf, map_names::ALLOW_TABLES);
    tables
        .set(TABLE_SLOT_READY, 0, 0)
        .expect("switch the tables off");
    let mut strides: HashMap<MapData, StrideKey, StrideBits> =
        pinned(&mcf, map_names::ALLOW_STRIDES);
    let keys: Vec<StrideKey> = strides.keys().map(|key| key.expect("key")).collect();
    for key in keys {
        strides.remove(&key).expect("empty the stride table");
    }
    assert_eq!(
        status(&mcf)["allow_entries"].as_u64(),
        Some(old.len() as u64)
    );
    assert!(allowed::tables_ready(mcf.state_dir()));
    assert_tables_allow(&mcf, &probes, &old);
    mcf.ok(&["detach", "lo"]);
    fs::remove_dir_all(dir).unwrap();
}

/// The program allows each of `probes` exactly when `list` contains it.
fn assert_tables_allow(mcf: &Mcfilter, probes: &BTreeSet<IpAddr>, list: &BTreeSet<String>) {
    let list: Vec<ipnet::IpNet> = list
        .iter()
        .map(|net| net.parse().expect("a CIDR"))
        .collect();
    for addr in probes {
        assert_eq!(
            allowed::program_allows(mcf.state_dir(), *addr),
            list.iter().any(|net| net.contains(addr)),
            "{addr}"
        );
    }
}

/// A state an older build made: no lookup tables and no IPv4 fragment cache, but the index of
/// the list's addresses that build kept, switched on. This build serves it (the program there
/// reads the trie), switches that index off (so the older program reads the trie alone, which
/// this build keeps exact), and its detach removes the older build's pin too.
#[test]
fn a_state_an_older_build_made_is_served_exactly_and_removed_whole() {
    privileged_test!();
    let ns = NetNs::new("ob");
    let mcf = Mcfilter::new("ob").in_netns(&ns);
    mcf.ok(&["attach", "lo"]);
    mcf.ok(&["allow", "add", "198.18.1.7", "2001:db8::7"]);
    let dir = mcf.state_dir().to_owned();
    for name in [
        map_names::ALLOW_BLOCKS,
        map_names::ALLOW_BLOOM,
        map_names::ALLOW_STRIDES,
        map_names::ALLOW_TABLES,
        map_names::FRAGS4,
    ] {
        fs::remove_file(dir.join(name)).expect("unpin a map the older build did not have");
    }
    let hosts = dir.join(map_names::RETIRED[0]);
    let made = Command::new("bpftool")
        .args(["map", "create"])
        .arg(&hosts)
        .args(["type", "hash", "key", "20", "value", "1", "entries", "16"])
        .args(["name", "mcf_allow_hosts", "flags", "1"])
        .status()
        .expect("bpftool");
    assert!(made.success(), "bpftool map create");
    let mut state: Array<MapData, u64> = pinned(&mcf, map_names::ALLOW_STATE);
    state
        .set(ALLOW_SLOT_RETIRED_INDEX, 1, 0)
        .expect("switch the older index on");
    mcf.ok(&["allow", "del", "198.18.1.7"]);
    assert_eq!(list(&mcf), BTreeSet::from(["2001:db8::7/128".to_owned()]));
    assert!(!allowed::trie_allows(
        &dir,
        Ipv4Addr::new(198, 18, 1, 7).into()
    ));
    assert_eq!(
        state.get(&ALLOW_SLOT_RETIRED_INDEX, 0).expect("state"),
        0,
        "the older program's index is switched off"
    );
    let status = status(&mcf);
    assert_eq!(status["allow_entries"], 1, "{status}");
    assert_eq!(status["fragments_entries"], 0, "{status}");
    mcf.ok(&["detach", "lo"]);
    assert!(
        !dir.exists(),
        "the state dir is removed, the older build's pin with it"
    );
}

fn status(mcf: &Mcfilter) -> Value {
    mcf.json(&["status", "--json"])
}

#[test]
fn renamed_and_deleted_interfaces_are_tracked_and_detachable() {
    privileged_test!();
    let (lab, mcf) = Lab::with_mcfilter("rn");
    lab.server.ns.ip(&[
        "link", "add", "extra0", "type", "veth", "peer", "name", "extra1",
    ]);
    mcf.ok(&["attach", IFACE]);
    mcf.ok(&["attach", "extra0", "--mode", "skb"]);
    // Renamed: status shows the new name, detach takes either name.
    lab.server.ns.ip(&["link", "set", IFACE, "down"]);
    lab.server.ns.ip(&["link", "set", IFACE, "name", "uplink0"]);
    let names: Vec<Value> = status(&mcf)["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].clone())
        .collect();
    assert!(names.contains(&Value::from("uplink0")), "{names:?}");
    // Deleted: status says it is gone; detach by its old name still cleans up.
    lab.server.ns.ip(&["link", "del", "extra0"]);
    let gone = status(&mcf)["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "extra0")
        .cloned()
        .expect("the deleted interface is still listed");
    assert_eq!(gone["present"], false, "{gone}");
    mcf.ok(&["detach", "extra0"]);
    mcf.ok(&["detach", IFACE]); // the name it was attached under
    assert!(!mcf.state_dir().exists(), "everything removed");
}

#[test]
fn a_second_filter_on_an_interface_is_refused() {
    privileged_test!();
    let lab = Lab::new("tw");
    let first = Mcfilter::new("twa").in_netns(&lab.server.ns);
    let second = Mcfilter::new("twb").in_netns(&lab.server.ns);
    first.ok(&["attach", IFACE]);
    let (code, line) = second.fails(&["attach", IFACE]);
    assert_eq!(code, 1);
    assert!(
        line.contains("already has an XDP program") && line.contains("never replaces"),
        "{line}"
    );
    assert!(
        !second.state_dir().exists(),
        "the refused attach left no state"
    );
    let prog = status(&first)["interfaces"][0]["program_id"].clone();
    assert!(prog.as_u64().unwrap() > 0);
    first.ok(&["detach", IFACE]);
}

#[test]
fn removing_the_state_dir_detaches_and_a_new_attach_works() {
    privileged_test!();
    let (lab, mcf) = Lab::with_mcfilter("rm");
    mcf.ok(&["attach", IFACE]);
    // The pins are the filter's only owner: removing them detaches it.
    mcfilter_tests::remove_pins(mcf.state_dir());
    let out = lab
        .server
        .ns
        .command("ip")
        .args(["link", "show", IFACE])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("xdp"),
        "detached with its pins"
    );
    let (_, line) = mcf.fails(&["status"]);
    assert!(line.contains("not attached"), "{line}");
    mcf.ok(&["attach", IFACE]);
    mcf.ok(&["detach", IFACE]);
}

#[test]
fn state_is_root_only() {
    privileged_test!();
    let (_lab, mcf) = Lab::with_mcfilter("pm");
    mcf.ok(&["attach", IFACE, "--allow", "198.18.0.10"]);
    let mode = |path: &std::path::Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(mcf.state_dir()), 0o700, "state dir");
    for entry in fs::read_dir(mcf.state_dir()).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(
            mode(&path) & 0o077,
            0,
            "{} is readable by others",
            path.display()
        );
    }
    // An unprivileged user can neither read the allow-list nor open a pin.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg("cat")
        .arg(mcf.state_dir().join(map_names::ALLOW))
        .output()
        .unwrap();
    assert!(!out.status.success(), "nobody opened the allow-list pin");
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(binary())
        .args(["allow", "list", "--state-dir"])
        .arg(mcf.state_dir())
        .output()
        .unwrap();
    assert!(!out.status.success(), "nobody listed the allow-list");
    mcf.ok(&["detach", IFACE]);
}

#[test]
fn replace_swaps_the_program_with_no_gap_and_keeps_the_state() {
    privileged_test!();
    let lab = Lab::new("up");
    let allowed = lab.host("upa", 10);
    let attacker = lab.host("upx", 66);
    let _memcached = Memcached::start(&lab.server.ns, false);
    let mcf = Mcfilter::new("up").in_netns(&lab.server.ns);
    mcf.ok(&["attach", IFACE, "--allow", &allowed.v4.to_string()]);
    let protected = lab.server.udp_listener(PORT);
    let before = status(&mcf)["interfaces"][0]["program_id"]
        .as_u64()
        .unwrap();
    const FLOOD: usize = 50_000;
    const CLIENT_ROUNDS: usize = 60;
    let server = SocketAddr::new(lab.server.v4.into(), PORT);
    let (failures, replaced) = std::thread::scope(|scope| {
        let flood =
            scope.spawn(|| attacker.send_udp(&[lab.server.v4.into()], PORT, b"stats\r\n", FLOOD));
        let client = scope.spawn(|| {
            allowed.ns.run(|| {
                (0..CLIENT_ROUNDS)
                    .filter(|i| {
                        memcache::set_get(server, &format!("k{i}"), b"v", Duration::from_secs(2))
                            .is_err()
                    })
                    .count()
            })
        });
        let mut replaced = 0;
        // Swap while traffic flows (at least once, however fast the traffic ends).
        loop {
            mcf.ok(&["attach", IFACE, "--replace"]);
            replaced += 1;
            if flood.is_finished() && client.is_finished() {
                break;
            }
        }
        flood.join().unwrap();
        (client.join().unwrap(), replaced)
    });
    assert!(
        replaced >= 1,
        "the program was swapped while traffic flowed"
    );
    assert_eq!(
        failures, 0,
        "the allowed client saw no failure across {replaced} swaps"
    );
    lab::settle();
    assert!(
        !pending(&protected),
        "no datagram leaked during {replaced} swaps"
    );
    let after = status(&mcf);
    let id = after["interfaces"][0]["program_id"].as_u64().unwrap();
    assert_ne!(id, before, "a new program is attached");
    assert_eq!(after["allow_entries"], 1, "the allow-list was kept");
    let stats = mcf.json(&["stats", "--json"]);
    assert_eq!(
        stats["reasons"]["udp_port"], FLOOD,
        "every datagram counted, none lost in a swap"
    );
    mcf.ok(&["detach", IFACE]);
}

#[test]
fn status_warns_when_the_ephemeral_range_covers_a_protected_port() {
    privileged_test!();
    let ns = NetNs::new("ep");
    let mcf = Mcfilter::new("ep").in_netns(&ns);
    mcf.ok(&["attach", "lo"]);
    let sysctl = |setting: &str| {
        let out = ns
            .command("sysctl")
            .args(["-qw", setting])
            .output()
            .unwrap();
        assert!(out.status.success(), "sysctl {setting}: {out:?}");
    };
    sysctl("net.ipv4.ip_local_port_range=10000 30000");
    let warnings = status(&mcf)["warnings"].clone();
    assert_eq!(warnings.as_array().unwrap().len(), 1, "{warnings}");
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .contains("ip_local_reserved_ports=11211")
    );
    sysctl("net.ipv4.ip_local_reserved_ports=11211");
    assert_eq!(status(&mcf)["warnings"], serde_json::json!([]));
    mcf.ok(&["detach", "lo"]);
}

#[test]
fn bpffs_is_mounted_when_missing() {
    privileged_test!();
    // A private mount namespace without bpffs at /sys/fs/bpf: the CLI mounts it itself, with
    // nothing for group or others (mode 0700; the kernel keeps the sticky bit).
    let ns = NetNs::new("bf");
    let dir = format!("/sys/fs/bpf/{}", mcfilter_tests::unique("bf"));
    let bin = binary().display().to_string();
    let script = format!(
        "umount /sys/fs/bpf 2>/dev/null; ! mountpoint -q /sys/fs/bpf || exit 3; \
         {bin} attach lo --state-dir {dir} && mountpoint -q /sys/fs/bpf && \
         [ $(( 0$(stat -c %a /sys/fs/bpf) & 077 )) -eq 0 ] && \
         {bin} status --json --state-dir {dir} && {bin} detach lo --state-dir {dir}"
    );
    let out = ns
        .command("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("attached to lo") && stdout.contains("\"interfaces\""),
        "{stdout}"
    );
}

#[test]
fn allowed_clients_are_unaffected_by_floods() {
    privileged_test!();
    let lab = Lab::new("ld");
    let allowed = lab.host("lda", 10);
    let attacker = lab.host("ldx", 66);
    let _memcached = Memcached::start(&lab.server.ns, false);
    let mcf = Mcfilter::new("ld").in_netns(&lab.server.ns);
    mcf.ok(&["attach", IFACE, "--allow", &allowed.v4.to_string()]);
    let server = SocketAddr::new(lab.server.v4.into(), PORT);
    let quiet = load::client_loop(&allowed, server, 200);
    let flooded = load::client_loop_under_flood(&lab, &allowed, &attacker, PORT, 200);
    eprintln!("memcached set/get: {quiet:?} quiet, {flooded:?} under floods");
    assert_eq!(
        quiet.errors + flooded.errors,
        0,
        "the allowed client saw errors"
    );
    lab::settle();
    let stats = mcf.json(&["stats", "--json"]);
    let count = |reason: &str| stats["reasons"][reason].as_u64().expect("a counter");
    let (udp, syn) = (count("udp_port"), count("tcp_not_allowed"));
    // Every flood frame that reached the server was dropped and counted; under load the lab's
    // links may drop some before XDP sees them (counted on the links), never more.
    let sent = load::UDP_FLOOD as u64 + u64::from(load::SYN_FLOOD);
    let lost = lab.dropped_on_links(&[&allowed, &attacker]);
    assert!(
        udp <= load::UDP_FLOOD as u64 && syn <= u64::from(load::SYN_FLOOD),
        "more drops than flood frames: {udp} UDP, {syn} SYN"
    );
    assert!(
        udp + syn + lost >= sent,
        "{sent} flood frames, {udp} + {syn} dropped by mcfilter, {lost} lost on the links: some reached the server uncounted"
    );
    mcf.ok(&["detach", IFACE]);
}

#[test]
fn a_foreign_program_is_refused_unless_forced() {
    privileged_test!();
    let (lab, mcf) = Lab::with_mcfilter("fo");
    // Another tool's program, attached through netlink: the benchmark floor, via iproute2.
    let object = std::env::temp_dir().join(mcfilter_tests::unique("fo"));
    fs::write(&object, mcfilter::FLOOR_OBJECT).unwrap();
    let object_path = object.to_str().unwrap();
    lab.server.ns.ip(&[
        "link",
        "set",
        "dev",
        IFACE,
        "xdpgeneric",
        "obj",
        object_path,
        "sec",
        "xdp",
    ]);
    // The name of the program on the interface, from `ip -j link`.
    let xdp = || {
        let out = lab
            .server
            .ns
            .command("ip")
            .args(["-j", "link", "show", IFACE])
            .output()
            .unwrap();
        let link: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        link[0]["xdp"]["prog"]["name"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    let foreign = xdp();
    assert!(
        !foreign.is_empty() && foreign != "mcfilter",
        "a foreign program: {foreign:?}"
    );
    let (_, line) = mcf.fails(&["attach", IFACE]);
    assert!(line.contains("--force"), "{line}");
    assert_eq!(xdp(), foreign, "the foreign program is untouched");
    mcf.ok(&["attach", IFACE, "--force"]);
    assert_eq!(xdp(), "mcfilter", "forced out and replaced");
    // A program held by another bpf_link (here another mcfilter) is never forced out.
    let other = Mcfilter::new("fob").in_netns(&lab.server.ns);
    let (_, line) = other.fails(&["attach", IFACE, "--force"]);
    assert!(line.contains("held by a bpf_link"), "{line}");
    mcf.ok(&["detach", IFACE]);
    fs::remove_file(object).unwrap();
}

#[test]
fn three_capabilities_are_enough_without_root() {
    privileged_test!();
    // The systemd unit's and the DaemonSet's capability set, as an unprivileged user (in a bpffs
    // of its own: the host's may be root's only).
    let script = r#"
        all=+bpf,+perfmon,+net_admin
        d=/sys/fs/bpf/caps
        for args in "attach lo" "status --json" "allow add 198.18.0.1" "detach lo"; do
            err=$(nobody_with $all "$MCF" $args --state-dir $d 2>&1 >/dev/null)
            echo "case $args: rc=$? $err"
        done
        err=$(nobody_with +bpf,+net_admin "$MCF" attach lo --state-dir $d 2>&1 >/dev/null)
        echo "case without perfmon: rc=$? lines=$(printf '%s\n' "$err" | wc -l) $err"
        [ -e $d ] && echo "case left: yes" || echo "case left: no"
    "#;
    let out = NetNs::new("cp").private_bpffs_script(script);
    let cases = mcfilter_tests::netns::script_cases(&out);
    for args in [
        "attach lo",
        "status --json",
        "allow add 198.18.0.1",
        "detach lo",
    ] {
        assert!(
            cases.get(args).is_some_and(|line| line.starts_with("rc=0")),
            "{args} with the three capabilities: {out:?}"
        );
    }
    let line = cases
        .get("without perfmon")
        .expect("a case without CAP_PERFMON");
    assert!(
        !line.starts_with("rc=0") && line.contains("lines=1") && line.contains("CAP_PERFMON"),
        "{line}"
    );
    assert_eq!(cases.get("left").map(String::as_str), Some("no"), "{out:?}");
}

#[test]
fn an_attach_killed_before_its_policy_was_written_is_not_adopted_as_empty() {
    privileged_test!();
    let (lab, mcf) = Lab::with_mcfilter("ha");
    // What a first attach leaves when it is killed after loading the object (its maps pinned)
    // and before writing the policy: the maps, with an all-zero config.
    let state = mcfilter::StateDir::new(mcf.state_dir());
    drop(state.prepare_and_lock().expect("bpffs"));
    state.create().expect("the state dir");
    drop(
        aya::EbpfLoader::new()
            .default_map_pin_directory(mcf.state_dir())
            .load(mcfilter::EBPF_OBJECT)
            .expect("load the object, pinning its maps"),
    );
    assert!(state.exists(), "the half-made state is there");

    mcf.ok(&["attach", IFACE]);
    let policy = mcf.json(&["policy", "--json"]);
    assert_eq!(
        policy["ports"],
        serde_json::json!([PORT]),
        "the next attach protects memcached, not nothing: {policy}"
    );
    // And real traffic is judged by it.
    let client = lab.host("hac", 20);
    let protected = lab.server.udp_listener(PORT);
    client.send_udp(&[lab.server.v4.into()], PORT, b"stats\r\n", 3);
    assert!(
        lab::receive(&protected, 1).is_empty(),
        "UDP {PORT} is dropped"
    );
    mcf.ok(&["detach", IFACE]);
}

#[test]
fn a_detach_killed_after_unpinning_the_last_link_leaves_nothing_to_adopt() {
    privileged_test!();
    let (_lab, mcf) = Lab::with_mcfilter("hd");
    mcf.ok(&[
        "attach",
        IFACE,
        "--allow",
        "198.18.5.0/24",
        "--port",
        "22122",
        "--dry-run",
    ]);
    // What the last detach leaves when it is killed after unpinning the link (which detaches
    // the program) and before removing the maps: the old allow-list, policy and records.
    let state = mcfilter::StateDir::new(mcf.state_dir());
    let ifindex = mcf.json(&["status", "--json"])["interfaces"][0]["ifindex"]
        .as_u64()
        .unwrap() as u32;
    fs::remove_file(state.link(ifindex)).expect("unpin the link");
    assert!(state.exists(), "the maps are left");

    // The next attach starts afresh: nothing of the old filter is adopted.
    mcf.ok(&["attach", IFACE]);
    let policy = mcf.json(&["policy", "--json"]);
    assert_eq!(policy["ports"], serde_json::json!([PORT]), "{policy}");
    assert_eq!(policy["dry_run"], false, "{policy}");
    assert!(list(&mcf).is_empty(), "the old allow-list is gone");
    mcf.ok(&["detach", IFACE]);
    assert!(!state.exists());
}
