//! The CLI contract end to end: JSON shapes, the state dir's two spellings, allow-list files,
//! and bad input that must fail with one clear line and change nothing.

use std::{
    fs,
    process::{Command, Stdio},
};

use mcfilter_tests::{
    cli::{Mcfilter, binary},
    lab::{self, IFACE, Lab},
    netns::NetNs,
    privileged_test,
};
use serde_json::Value;

/// Everything a user can observe of the state: policy, interfaces and the allow-list.
fn snapshot(mcf: &Mcfilter) -> (Value, Value) {
    (
        mcf.json(&["status", "--json"]),
        mcf.json(&["allow", "list", "--json"]),
    )
}

#[test]
fn bad_input_fails_with_one_line_and_changes_nothing() {
    privileged_test!();
    let (_lab, mcf) = Lab::with_mcfilter("bi");
    mcf.ok(&[
        "attach",
        IFACE,
        "--allow",
        "198.18.0.10",
        "--allow-capacity",
        "3",
    ]);
    let before = snapshot(&mcf);
    let dir = std::env::temp_dir().join(mcfilter_tests::unique("bi"));
    fs::create_dir_all(&dir).unwrap();
    let bad_file = dir.join("bad.txt");
    fs::write(&bad_file, "198.18.0.11\nnot-a-cidr\n").unwrap();
    let bad_file = bad_file.to_str().unwrap().to_owned();
    let missing_file = dir.join("missing.txt").to_str().unwrap().to_owned();

    let cases: &[(&[&str], i32, &str)] = &[
        (&["attach", "nosuch0"], 1, "does not exist"),
        (&["attach", IFACE], 1, "already attached to eth0"),
        (&["attach", IFACE, "--port", "0"], 2, "use 1 to 65535"),
        (&["attach", IFACE, "--port", "65536"], 2, "use 1 to 65535"),
        (&["attach", IFACE, "--mode", "turbo"], 2, "invalid value"),
        (
            &["allow", "add", "198.18.0.0/33"],
            2,
            "not an IPv4 or IPv6 CIDR",
        ),
        (
            &["allow", "add", "198.18.0.11", "198.18.0.300"],
            2,
            "not an IPv4 or IPv6 CIDR",
        ),
        (
            &["allow", "add", "198.18.0.11", "198.18.0.12", "198.18.0.13"],
            1,
            "allow-list is full (its capacity is 3 entries)",
        ),
        (
            &["allow", "del", "198.18.0.10", "198.18.9.9"],
            1,
            "198.18.9.9/32 is not on the allow-list",
        ),
        (&["allow", "replace", "--file", &bad_file], 1, "line 2"),
        (
            &["allow", "replace", "--file", &missing_file],
            1,
            "cannot read allow-list file",
        ),
        (&["detach", "nosuch0"], 1, "does not exist"),
    ];
    for (args, code, needle) in cases {
        let (got, line) = mcf.fails(args);
        assert_eq!(got, *code, "{args:?}: exit code ({line})");
        assert!(
            line.starts_with("mcfilter: ") && line.contains(needle),
            "{args:?}: {line}"
        );
        assert_eq!(snapshot(&mcf), before, "{args:?} changed the state");
    }

    // Not root: refused before anything is touched.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(binary())
        .args(["allow", "add", "198.18.0.99", "--state-dir"])
        .arg(mcf.state_dir())
        .output()
        .expect("run setpriv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("needs root") && stderr.lines().count() == 1,
        "{stderr}"
    );
    assert_eq!(
        snapshot(&mcf),
        before,
        "an unprivileged run changed the state"
    );

    mcf.ok(&["detach", IFACE]);
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn commands_without_state_say_how_to_attach() {
    privileged_test!();
    let ns = NetNs::new("ns");
    let mcf = Mcfilter::new("ns").in_netns(&ns);
    for args in [
        &["stats"][..],
        &["status", "--json"],
        &["allow", "list"],
        &["allow", "add", "198.18.0.1"],
        &["detach", "lo"],
    ] {
        let (code, line) = mcf.fails(args);
        assert_eq!(code, 1, "{args:?}");
        assert!(
            line.contains("run `mcfilter attach IFACE` first"),
            "{args:?}: {line}"
        );
    }
    assert!(!mcf.state_dir().exists(), "read commands create no state");
}

#[test]
fn json_output_keeps_its_contract() {
    privileged_test!();
    let (_lab, mcf) = Lab::with_mcfilter("js");
    mcf.ok(&[
        "attach",
        IFACE,
        "--port",
        "11211",
        "--port",
        "22122",
        "--dry-run",
    ]);
    mcf.ok(&[
        "allow",
        "add",
        "2001:db8::/64",
        "198.18.1.10",
        "2001:db8::1/64",
    ]);
    assert_eq!(
        mcf.json(&["allow", "list", "--json"]),
        serde_json::json!(["198.18.1.10/32", "2001:db8::/64"])
    );
    let status = mcf.json(&["status", "--json"]);
    assert_eq!(status["ports"], serde_json::json!([11211, 22122]));
    assert_eq!(status["dry_run"], true);
    assert_eq!(status["allow_entries"], 2);
    assert!(status["allow_capacity"].as_u64().unwrap() >= 2);
    assert!(status["sources_capacity"].as_u64().unwrap() > 0);
    assert_eq!(status["interfaces"][0]["name"], IFACE);
    assert!(status["interfaces"][0]["program_id"].as_u64().unwrap() > 0);
    let stats = mcf.json(&["stats", "--json"]);
    for key in ["dropped", "passed", "would_drop"] {
        assert!(
            stats[key]["packets"].is_u64() && stats[key]["bytes"].is_u64(),
            "{key}: {stats}"
        );
    }
    for reason in [
        "udp_port",
        "tcp_not_allowed",
        "tcp_allowed",
        "not_ip",
        "not_protected",
        "malformed",
    ] {
        assert!(
            stats["reasons"][reason].is_u64(),
            "reasons.{reason}: {stats}"
        );
    }
    assert!(stats["sources"].is_array());
    // Human output is an aligned table.
    let table = mcf.ok(&["stats"]);
    assert!(table.lines().any(|l| l.starts_with("dropped")), "{table}");
    mcf.ok(&["detach", IFACE]);
}

/// `status` shows what the state's maps cost the kernel (fdinfo's `memlock`, what `bpftool map
/// show` prints), and the per-CPU maps cost what `mcfilter::memory`'s formula says for this
/// host's possible CPUs: the formula that sizes the per-source map by default, so that an
/// attach on a 64-CPU host stays under 64 MiB.
#[test]
fn status_shows_the_kernel_memory_the_formula_predicts() {
    privileged_test!();
    use mcfilter::memory;
    use mcfilter_common::{
        BLOCK_WORDS, BLOOM_WORDS, DEFAULT_ALLOW_CAPACITY, FRAG_CACHE_CAPACITY, Frag4Key, IpKey,
        PendingSource, RECENT_SLOTS, SourceStats, StrideBits, StrideKey,
    };
    let (_lab, mcf) = Lab::with_mcfilter("km");
    mcf.ok(&["attach", IFACE]);
    // Two entries, each an entry of the stride table (an IPv6 /128, an IPv4 /32).
    mcf.ok(&["allow", "add", "2001:db8::7", "198.18.1.7"]);
    let status = mcf.json(&["status", "--json"]);
    let cpus = memory::possible_cpus();
    let memory = &status["kernel_memory"];
    assert_eq!(memory["possible_cpus"], cpus);
    let capacity = memory::default_sources_capacity(cpus);
    assert_eq!(
        status["sources_capacity"], capacity,
        "the default is derived"
    );
    let bpftool = |pin: &str| -> u64 {
        let shown = Command::new("bpftool")
            .args(["-j", "map", "show", "pinned", pin])
            .output()
            .expect("bpftool");
        let shown: Value = serde_json::from_slice(&shown.stdout).expect("bpftool's JSON");
        shown["bytes_memlock"].as_u64().expect("bytes_memlock")
    };
    let state = mcf.state_dir();
    for (map, predicted) in [
        (
            "mcf_sources",
            memory::percpu_hash_bytes(capacity, size_of::<IpKey>(), size_of::<SourceStats>(), cpus),
        ),
        (
            "mcf_recent",
            memory::percpu_array_bytes(RECENT_SLOTS, size_of::<PendingSource>(), cpus),
        ),
        (
            "mcf_allow_strides",
            memory::hash_bytes_not_preallocated(
                DEFAULT_ALLOW_CAPACITY,
                2,
                size_of::<StrideKey>(),
                size_of::<StrideBits>(),
                cpus,
            ),
        ),
        (
            "mcf_frags4",
            memory::hash_bytes(FRAG_CACHE_CAPACITY, size_of::<Frag4Key>(), 4, cpus),
        ),
        ("mcf_allow_blocks", memory::array_bytes(BLOCK_WORDS, 8)),
        ("mcf_allow_bloom", memory::array_bytes(BLOOM_WORDS, 8)),
    ] {
        let shown = memory["maps"][map].as_u64().expect("a map's bytes");
        assert_eq!(
            shown,
            bpftool(&format!("{}/{map}", state.display())),
            "{map}"
        );
        // The formula leaves out the map's header (under 2 KiB).
        assert!(
            (shown - 2048..=shown).contains(&predicted),
            "{map}: the kernel says {shown} B, the formula {predicted} B"
        );
    }
    let total: u64 = memory["maps"]
        .as_object()
        .expect("maps")
        .values()
        .map(|bytes| bytes.as_u64().expect("bytes"))
        .sum();
    assert_eq!(memory["total_bytes"], total);
    // The defaults keep an attach under 64 MiB up to 64 CPUs (the 6.12 guest boots with 64
    // possible CPUs to measure it there).
    assert!(
        cpus > 64 || total < 64 << 20,
        "an attach takes {total} B on {cpus} CPUs"
    );
    let text = mcf.ok(&["status"]);
    assert!(
        text.lines().any(|line| line.starts_with("kernel memory")
            && line.contains(&format!("{cpus} possible CPUs"))),
        "{text}"
    );
    mcf.ok(&["detach", IFACE]);
}

#[test]
fn state_dir_comes_from_the_flag_in_either_position_or_the_environment() {
    privileged_test!();
    let (lab, mcf) = Lab::with_mcfilter("sd");
    let dir = mcf.state_dir().to_str().unwrap().to_owned();
    mcf.ok(&["attach", IFACE]);
    // `--state-dir` before the subcommand, and from MCFILTER_STATE_DIR.
    let before = lab
        .server
        .ns
        .command(binary())
        .args(["--state-dir", &dir, "status", "--json"])
        .output()
        .unwrap();
    assert!(
        before.status.success(),
        "{}",
        String::from_utf8_lossy(&before.stderr)
    );
    let env = lab
        .server
        .ns
        .command(binary())
        .args(["status", "--json"])
        .env("MCFILTER_STATE_DIR", &dir)
        .output()
        .unwrap();
    assert!(
        env.status.success(),
        "{}",
        String::from_utf8_lossy(&env.stderr)
    );
    assert_eq!(before.stdout, env.stdout);
    mcf.ok(&["detach", IFACE]);
}

#[test]
fn allow_replace_makes_the_list_exactly_the_file() {
    privileged_test!();
    let (_lab, mcf) = Lab::with_mcfilter("rp");
    mcf.ok(&[
        "attach",
        IFACE,
        "--allow",
        "198.18.0.10",
        "--allow",
        "198.18.0.11",
    ]);
    let file = std::env::temp_dir().join(mcfilter_tests::unique("rp"));
    fs::write(
        &file,
        "# new clients\n198.18.0.11   # stays\n2001:db8::/64\n\n198.18.4.0/22\n",
    )
    .unwrap();
    let out = mcf.ok(&["allow", "replace", "--file", file.to_str().unwrap()]);
    assert_eq!(out.trim(), "allow-list +2 -1 (now 3 entries)");
    assert_eq!(
        mcf.json(&["allow", "list", "--json"]),
        serde_json::json!(["198.18.0.11/32", "198.18.4.0/22", "2001:db8::/64"])
    );
    fs::remove_file(file).unwrap();
    mcf.ok(&["detach", IFACE]);
}

#[test]
fn auto_mode_falls_back_to_skb_and_native_mode_says_why_not() {
    privileged_test!();
    // Loopback has no native XDP support.
    let ns = NetNs::new("fb");
    let mcf = Mcfilter::new("fb").in_netns(&ns);
    let (code, line) = mcf.fails(&["attach", "lo", "--mode", "native"]);
    assert_eq!(code, 1);
    assert!(
        line.contains("no native XDP support") && line.contains("--mode skb"),
        "{line}"
    );
    assert!(
        !mcf.state_dir().exists(),
        "a failed first attach leaves no state"
    );

    let out = mcf.run(&["attach", "lo"]);
    assert!(out.status.success());
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(
        note.contains("attached in skb (generic) mode"),
        "auto says so: {note}"
    );
    assert_eq!(
        mcf.json(&["status", "--json"])["interfaces"][0]["mode"],
        "skb"
    );
    mcf.ok(&["detach", "lo"]);
}

#[test]
fn a_first_attach_that_fails_leaves_no_state() {
    privileged_test!();
    let ns = NetNs::new("ff");
    let mcf = Mcfilter::new("ff").in_netns(&ns);
    let (_, line) = mcf.fails(&[
        "attach",
        "lo",
        "--allow",
        "198.18.0.1",
        "--allow",
        "198.18.0.2",
        "--allow-capacity",
        "1",
    ]);
    assert!(line.contains("allow-list is full"), "{line}");
    assert!(
        !mcf.state_dir().exists(),
        "nothing pinned after a failed first attach"
    );
    let out = ns
        .command("ip")
        .args(["link", "show", "lo"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("xdp"),
        "no program attached"
    );
}

#[test]
fn concurrent_allow_changes_lose_no_update() {
    privileged_test!();
    let ns = NetNs::new("cc");
    let mcf = Mcfilter::new("cc").in_netns(&ns);
    let old: Vec<String> = (0..16u8).map(|i| format!("198.18.100.{i}/32")).collect();
    let new: Vec<String> = (1..=16u8).map(|i| format!("2001:db8:{i:x}::/64")).collect();
    let mut attach = vec!["attach", "lo"];
    old.iter().for_each(|cidr| attach.extend(["--allow", cidr]));
    mcf.ok(&attach);
    // Every process adds one entry and deletes another, all at once.
    let children: Vec<_> = old
        .iter()
        .zip(&new)
        .flat_map(|(gone, added)| {
            [
                mcf.command(&["allow", "del", gone]),
                mcf.command(&["allow", "add", added]),
            ]
        })
        .map(|mut command| command.stdout(Stdio::null()).spawn().expect("spawn"))
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let list = mcf.json(&["allow", "list", "--json"]);
    let mut want = new.clone();
    want.sort();
    let mut got: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    got.sort();
    assert_eq!(got, want, "the serial result");
    mcf.ok(&["detach", "lo"]);
}

#[test]
fn completions_and_the_man_pages_come_from_the_cli_model() {
    // No privileges needed: these only print.
    let run = |args: &[&str]| {
        let out = Command::new(binary())
            .args(args)
            .output()
            .expect("run mcfilter");
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let man = run(&["man"]);
    assert!(
        man.contains(".TH mcfilter 1") && man.contains("attach"),
        "{man}"
    );
    // Every page: one per subcommand and mcfilter.toml(5), each with its exit status, and
    // each one man renders without a warning.
    let dir = std::env::temp_dir().join(mcfilter_tests::unique("mp"));
    run(&["man", "--dir", dir.to_str().unwrap()]);
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for page in [
        "mcfilter.1",
        "mcfilter-attach.1",
        "mcfilter-detach.1",
        "mcfilter-allow.1",
        "mcfilter-allow-add.1",
        "mcfilter-allow-del.1",
        "mcfilter-policy.1",
        "mcfilter-stats.1",
        "mcfilter-status.1",
        "mcfilter-audit.1",
        "mcfilter-run.1",
        "mcfilter.toml.5",
    ] {
        assert!(names.iter().any(|n| n == page), "no {page} in {names:?}");
    }
    for name in &names {
        let path = dir.join(name);
        let text = fs::read_to_string(&path).unwrap();
        if name.ends_with(".1") {
            assert!(text.contains(".SH \"EXIT STATUS\""), "{name}");
        }
        let rendered = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(&path)
            .env("MANWIDTH", "80")
            .output()
            .expect("man (man-db) is installed by cargo xtask setup");
        assert!(
            rendered.status.success() && rendered.stderr.is_empty(),
            "{name}: {}",
            String::from_utf8_lossy(&rendered.stderr)
        );
    }
    let audit = fs::read_to_string(dir.join("mcfilter-audit.1")).unwrap();
    assert!(audit.contains("high finding"), "audit's exit status 4");
    let config = fs::read_to_string(dir.join("mcfilter.toml.5")).unwrap();
    assert!(
        config.contains("allow_capacity") && config.contains("log_format"),
        "the config page has every key"
    );
    fs::remove_dir_all(dir).unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let script = run(&["completions", shell]);
        assert!(
            script.contains("allow") && script.contains("state-dir"),
            "{shell}: {script}"
        );
    }
}

#[test]
fn the_systemd_unit_verifies_is_hardened_and_grants_exactly_three_capabilities() {
    let unit = include_str!("../../packaging/mcfilter.service");
    for line in [
        "CapabilityBoundingSet=CAP_BPF CAP_PERFMON CAP_NET_ADMIN",
        "AmbientCapabilities=CAP_BPF CAP_PERFMON CAP_NET_ADMIN",
        "Type=notify",
        "NotifyAccess=main",
        "ExecReload=/usr/local/bin/mcfilter run --check --config /etc/mcfilter/mcfilter.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit has {line}");
    }
    let Ok(analyze) = which_systemd_analyze() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is needed in CI"
        );
        eprintln!("not run: no systemd-analyze");
        return;
    };
    // Verify a copy that starts the binary just built (and needs no man page installed).
    let dir = std::env::temp_dir().join(mcfilter_tests::unique("su"));
    fs::create_dir_all(&dir).unwrap();
    let copy: String = unit
        .lines()
        .filter(|l| !l.starts_with("Documentation="))
        .map(|l| l.replace("/usr/local/bin/mcfilter", &binary().display().to_string()) + "\n")
        .collect();
    let path = dir.join("mcfilter.service");
    fs::write(&path, copy).unwrap();
    let out = Command::new(&analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    // Hardened as far as the service can live with: exposure 3.0 or lower.
    let out = Command::new(&analyze)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = text
        .lines()
        .find_map(|line| {
            line.split("Overall exposure level for mcfilter.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|level| level.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in {out:?}"));
    assert!(exposure <= 3.0, "exposure {exposure}:\n{text}");
    fs::remove_dir_all(dir).unwrap();
}

fn which_systemd_analyze() -> Result<std::path::PathBuf, ()> {
    ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
        .ok_or(())
}

#[test]
fn a_reader_blocked_on_its_output_never_holds_the_lock() {
    privileged_test!();
    let ns = NetNs::new("bl");
    let mcf = Mcfilter::new("bl").in_netns(&ns);
    mcf.ok(&["attach", "lo"]);
    // More than a pipe holds (64 KiB), so `allow list` blocks writing until it is read.
    let entries: Vec<String> = (0..6000u32)
        .map(|i| std::net::Ipv4Addr::from(0xc612_0000 + i).to_string())
        .collect();
    let dir = std::env::temp_dir().join(mcfilter_tests::unique("bl"));
    fs::create_dir_all(&dir).unwrap();
    let file = dir.join("clients.txt");
    fs::write(&file, entries.join("\n")).unwrap();
    mcf.ok(&["allow", "replace", "--file", file.to_str().unwrap()]);

    let mut reader = mcf
        .command(&["allow", "list"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn allow list");
    // The first line out means the list is read whole (it prints only after the lock is let go);
    // the rest stays in the reader, blocked on the full pipe.
    let mut out = std::io::BufReader::new(reader.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut out, &mut first).expect("first line of allow list");
    // `allow list | less`, left open: a change still goes through at once.
    let started = std::time::Instant::now();
    mcf.ok(&["allow", "add", "198.19.0.1"]);
    let waited = started.elapsed();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).expect("rest of allow list");
    assert!(reader.wait().expect("allow list").success());
    assert_eq!(
        1 + rest.lines().count(),
        6000,
        "the list as it was when read"
    );
    assert!(
        waited < mcfilter::pin::LOCK_WAIT / 2,
        "a change waited {waited:?} behind a blocked reader"
    );
    mcf.ok(&["detach", "lo"]);
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_link_type_mcfilter_cannot_read_is_refused() {
    privileged_test!();
    // An IP tunnel's link type, given to a TUN device (this kernel has no tunnel drivers): the
    // kernel hands XDP such a device's outer headers first, which neither program reads.
    const ARPHRD_IPGRE: u16 = 778;
    let ns = NetNs::new("tn");
    let tun = mcfilter_tests::tun::Tun::create(&ns, "tun0");
    tun.set_link_type(ARPHRD_IPGRE);
    ns.ip(&["link", "set", "tun0", "up"]);
    let mcf = Mcfilter::new("tn").in_netns(&ns);
    for mode in ["auto", "skb", "native"] {
        let (code, line) = mcf.fails(&["attach", "tun0", "--mode", mode]);
        assert_eq!(code, 1, "{line}");
        assert!(line.contains("tun0 has link type gre"), "{line}");
    }
    assert!(
        !mcf.state_dir().exists(),
        "a refused attach leaves no state"
    );
    let out = ns
        .command("ip")
        .args(["link", "show", "tun0"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("xdp"),
        "no program on tun0"
    );
    // Interfaces mcfilter can read in the same namespace still attach.
    mcf.ok(&["attach", "lo"]);
    mcf.ok(&["detach", "lo"]);
}

#[test]
fn readers_share_the_lock() {
    privileged_test!();
    // Another reader holds the lock (a scrape, a `status` in a loop): every read command still
    // answers at once, while the reader goes on holding it.
    let ns = NetNs::new("rs");
    let mcf = Mcfilter::new("rs").in_netns(&ns);
    mcf.ok(&["attach", "lo"]);
    let lock_dir = mcfilter::StateDir::new(mcf.state_dir()).lock_dir();
    let mut reader = Command::new("flock")
        .args(["--shared", "--no-fork"])
        .arg(&lock_dir)
        .args(["sh", "-c", "echo locked; exec sleep 30"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("flock");
    let mut locked = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(reader.stdout.as_mut().unwrap()),
        &mut locked,
    )
    .expect("the reader's word");
    assert_eq!(locked, "locked\n", "the other reader holds the lock");
    for args in [
        &["status"][..],
        &["stats", "--json"],
        &["allow", "list"],
        &["policy"],
    ] {
        mcf.ok(args);
        assert!(
            reader.try_wait().expect("the reader").is_none(),
            "{args:?} answered only after the other reader let go"
        );
    }
    reader.kill().expect("stop the reader");
    reader.wait().expect("the reader");
    mcf.ok(&["detach", "lo"]);
}

#[test]
fn a_state_another_build_made_with_another_layout_is_refused() {
    privileged_test!();
    // A map as an older build might have left it: the fragment timeouts with 8-byte values. The
    // loader would reuse it by name without looking.
    let ns = NetNs::new("ly");
    let mcf = Mcfilter::new("ly").in_netns(&ns);
    mcf.ok(&["attach", "lo"]);
    let pin = mcf
        .state_dir()
        .join(mcfilter_common::map_names::FRAG_TIMEOUTS);
    fs::remove_file(&pin).unwrap();
    let older = aya_obj::Map::Legacy(aya_obj::maps::LegacyMap {
        def: aya_obj::maps::bpf_map_def {
            map_type: aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_ARRAY as u32,
            key_size: 4,
            value_size: 8,
            max_entries: 2,
            ..Default::default()
        },
        inner_def: None,
        section_index: 0,
        section_kind: aya_obj::EbpfSectionKind::Maps,
        symbol_index: None,
        data: Vec::new(),
    });
    let map = aya::maps::MapData::create(older, "mcf_frag_timeo", None).expect("create a map");
    map.pin(&pin).expect("pin it");
    let (code, line) = mcf.fails(&["attach", "lo", "--replace"]);
    assert_eq!(code, 1, "{line}");
    assert!(
        line.contains("was made by another build: its map mcf_frag_timeouts has type 2, key 4 B, value 8 B, 2 entries, this build's has type 2, key 4 B, value 4 B, 2 entries"),
        "{line}"
    );
    // Refused before anything changed: the program attached before is still there, and
    // detach clears the state.
    let status = mcf.json(&["allow", "list", "--json"]);
    assert_eq!(status, serde_json::json!([]));
    mcf.ok(&["detach", "lo"]);
    assert!(!mcf.state_dir().exists());
}

#[test]
fn every_command_speaks_json_and_scripts_can_repeat_themselves() {
    privileged_test!();
    let (lab, mcf) = Lab::with_mcfilter("jz");
    // The flag before the subcommand, as bpftool and nft take it.
    let attached = mcf.json(&["--json", "attach", IFACE, "--allow", "198.18.0.10"]);
    assert_eq!(attached["action"], "attached", "{attached}");
    assert_eq!(attached["iface"], IFACE);
    assert_eq!(attached["created_state"], true);
    assert_eq!(attached["ports"], serde_json::json!([11211]));
    assert_eq!(
        attached["allow_added"],
        serde_json::json!(["198.18.0.10/32"])
    );
    assert!(attached["program_id"].as_u64().unwrap() > 0);
    assert!(matches!(attached["mode"].as_str(), Some("native" | "skb")));

    // Changes say what they did.
    let added = mcf.json(&["allow", "add", "198.18.0.10", "2001:db8::/64", "--json"]);
    assert_eq!(
        added,
        serde_json::json!({"added": ["2001:db8::/64"], "removed": [], "unchanged": ["198.18.0.10/32"]})
    );
    // No service manages this state: a change by hand warns of nothing.
    let quiet = mcf.run(&["allow", "add", "198.18.0.10"]);
    assert!(
        quiet.status.success() && quiet.stderr.is_empty(),
        "{quiet:?}"
    );
    // Aliases from nft, ufw and bpftool.
    assert_eq!(
        mcf.json(&["allow", "ls", "--json"]),
        serde_json::json!(["198.18.0.10/32", "2001:db8::/64"])
    );
    assert_eq!(mcf.ok(&["allow", "rm", "2001:db8::/64"]), "allow-list -1\n");
    mcf.ok(&["allow", "add", "2001:db8::/64"]);
    assert_eq!(
        mcf.json(&["--json", "allow", "delete", "2001:db8::/64"]),
        serde_json::json!({"added": [], "removed": ["2001:db8::/64"], "unchanged": []})
    );
    // Idempotent forms: what is already done is not an error.
    assert_eq!(
        mcf.json(&[
            "--json",
            "allow",
            "del",
            "--if-present",
            "2001:db8::/64",
            "198.18.0.10"
        ]),
        serde_json::json!({"added": [], "removed": ["198.18.0.10/32"], "unchanged": ["2001:db8::/64"]})
    );
    assert_eq!(
        mcf.ok(&["allow", "del", "--if-present", "198.18.0.10"]),
        "allow-list -0 (1 not on the list)\n"
    );
    assert_eq!(
        mcf.json(&["--json", "detach", "--if-attached", "lo"]),
        serde_json::json!({"detached": [], "state_removed": false})
    );
    assert_eq!(
        mcf.ok(&["detach", "--if-attached", "nosuch0"]),
        "nothing to detach: mcfilter is not attached there\n"
    );

    // Errors: one line on stderr as always, and one JSON object on stdout.
    let out = mcf.run(&["--json", "allow", "del", "198.18.9.9"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let error: Value = serde_json::from_slice(&out.stdout).expect("a JSON error");
    assert_eq!(
        error["error"].as_str().map(|e| format!("mcfilter: {e}\n")),
        Some(stderr.clone().into_owned())
    );
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("not on the allow-list")
    );
    let usage = mcf.run(&["allow", "add", "not-a-cidr", "--json"]);
    assert_eq!(usage.status.code(), Some(2));
    let error: Value = serde_json::from_slice(&usage.stdout).expect("a JSON usage error");
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("not an IPv4 or IPv6 CIDR"),
        "{error}"
    );

    // Two interfaces, then `detach --all` twice: everything, then nothing.
    let _direct = lab.direct_host("jzd", 2);
    mcf.ok(&["attach", lab::DIRECT_IFACE]);
    let detached = mcf.json(&["--json", "detach", "--all"]);
    let mut names: Vec<&str> = detached["detached"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|d| d["iface"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, [IFACE, lab::DIRECT_IFACE], "{detached}");
    assert_eq!(detached["state_removed"], true);
    assert!(!mcf.state_dir().exists());
    assert_eq!(
        mcf.json(&["--json", "detach", "--all"]),
        serde_json::json!({"detached": [], "state_removed": false})
    );
}

#[test]
fn stats_watch_redraws_only_on_a_terminal() {
    privileged_test!();
    let (_lab, mcf) = Lab::with_mcfilter("sw");
    mcf.ok(&["attach", IFACE]);
    // stdout is a pipe here, as under `| tee` or in a log file.
    let out = mcf.ok(&["stats", "--watch", "0.1", "--count", "2"]);
    assert!(!out.contains('\x1b'), "escape codes in {out:?}");
    let readings: Vec<&str> = out.lines().filter(|l| l.starts_with("# reading")).collect();
    assert_eq!(readings.len(), 2, "{out}");
    assert!(readings[1].starts_with("# reading 2, "), "{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("dropped")).count(),
        2,
        "each reading has its table: {out}"
    );
    mcf.ok(&["detach", IFACE]);
}

#[test]
fn the_version_names_the_commit_and_the_program() {
    let out = Command::new(binary())
        .arg("--version")
        .output()
        .expect("run mcfilter");
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let expected_commit = commit.unwrap_or_else(|| "unknown".to_owned());
    assert!(
        line.starts_with(&format!(
            "mcfilter {} (commit {expected_commit}, XDP program ",
            env!("CARGO_PKG_VERSION")
        )),
        "{line}"
    );
    // The program's part is the `+` part of the build that `status` shows.
    let hash = line
        .trim_end()
        .trim_end_matches(')')
        .rsplit(' ')
        .next()
        .unwrap();
    assert_eq!(hash.len(), 16, "{line}");
    assert!(hash.chars().all(|c| c.is_ascii_hexdigit()), "{line}");
}

#[test]
fn the_kubernetes_manifests_validate_and_their_config_checks() {
    // No privileges needed. Every manifest against the Kubernetes schemas (offline, strict:
    // an unknown field fails), on the oldest and the newest version the schemas cover here.
    let dir = mcfilter_tests::packaging("kubernetes");
    let manifests: Vec<std::path::PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    assert!(!manifests.is_empty());
    for version in ["1.29.0", "1.37.0"] {
        let out = Command::new("python3")
            .args(["-m", "kubernetes_validate", "--strict", "-k", version])
            .args(&manifests)
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "kubernetes-validate (cargo xtask setup installs it) against {version}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The ConfigMap's config is one the service accepts, with the metrics address the
    // DaemonSet sets per node; a bad address is refused in one line.
    let daemonset = fs::read_to_string(dir.join("daemonset.yaml")).unwrap();
    let toml: String = daemonset
        .lines()
        .skip_while(|line| line.trim() != "mcfilter.toml: |")
        .skip(1)
        .take_while(|line| line.starts_with("    "))
        .map(|line| format!("{}\n", &line[4..]))
        .collect();
    assert!(toml.contains("[[interfaces]]"), "{toml}");
    let config = std::env::temp_dir()
        .join(mcfilter_tests::unique("k8"))
        .with_extension("toml");
    fs::write(&config, toml).unwrap();
    let check = |address: &str| {
        Command::new(binary())
            .args(["--json", "run", "--check", "--config"])
            .arg(&config)
            .env("MCFILTER_METRICS_ADDRESS", address)
            .output()
            .expect("run mcfilter")
    };
    let good = check("198.18.0.1:9911");
    assert!(good.status.success(), "{good:?}");
    let bad = check("$(HOST_IP):9911");
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.lines().count() == 1 && stderr.contains("MCFILTER_METRICS_ADDRESS"),
        "{stderr}"
    );
    fs::remove_file(config).unwrap();
}
