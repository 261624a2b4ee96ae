//! Only root can undo the filter: a state dir another user could change is refused, and a lock
//! another user holds never makes a command wait forever. Each test plays the unprivileged user
//! (`setpriv` as nobody) in a private mount namespace with a bpffs of its own, mounted
//! world-writable and sticky as earlier versions of mcfilter and `cargo xtask setup` mounted it,
//! so nothing here touches the host's /sys/fs/bpf.

use std::process::Output;

use mcfilter_tests::{
    netns::{NetNs, script_cases as cases},
    privileged_test,
};

fn in_private_bpffs(tag: &str, script: &str) -> Output {
    NetNs::new(tag).private_bpffs_script(script)
}

#[test]
fn a_state_dir_another_user_could_change_is_refused() {
    privileged_test!();
    // Each case: what nobody (or a careless root) prepared, then root's attach to it. The
    // attach must fail with one line, and leave nothing attached.
    let script = r#"
        nobody mkdir /sys/fs/bpf/squat
        nobody mkdir /sys/fs/bpf/nest
        mkdir /sys/fs/bpf/real && nobody ln -s /sys/fs/bpf/real /sys/fs/bpf/link
        mkdir -m 0777 /sys/fs/bpf/open
        for d in squat nest/state link open; do
            err=$("$MCF" attach lo --state-dir /sys/fs/bpf/$d 2>&1 >/dev/null)
            echo "case $d: rc=$? lines=$(printf '%s\n' "$err" | wc -l) $err"
        done
        echo "case xdp: $(ip -j link show lo)"
        "$MCF" attach lo --state-dir /sys/fs/bpf/good >/dev/null && \
            "$MCF" detach lo --state-dir /sys/fs/bpf/good >/dev/null
        echo "case good: rc=$?"
    "#;
    let out = in_private_bpffs("tr", script);
    let cases = cases(&out);
    let expect = [
        ("squat", "/sys/fs/bpf/squat is owned by uid 65534"),
        ("nest/state", "/sys/fs/bpf/nest is owned by uid 65534"),
        ("link", "/sys/fs/bpf/link is a symbolic link"),
        ("open", "/sys/fs/bpf/open is writable by group or others"),
    ];
    for (case, why) in expect {
        let line = cases
            .get(case)
            .unwrap_or_else(|| panic!("no case {case}: {out:?}"));
        assert!(
            line.starts_with("rc=1 lines=1 mcfilter: refusing the state dir") && line.contains(why),
            "{case}: {line}"
        );
    }
    assert!(
        !cases
            .get("xdp")
            .is_some_and(|link| link.contains("\"xdp\"")),
        "a refused attach left a program on lo: {:?}",
        cases.get("xdp")
    );
    assert_eq!(
        cases.get("good").map(String::as_str),
        Some("rc=0"),
        "root's own state dir works: {out:?}"
    );
}

#[test]
fn only_root_can_hold_the_lock_and_waits_for_it_are_bounded() {
    privileged_test!();
    // nobody flocks the (world-readable) bpffs root, which earlier versions locked: no command
    // waits on it. The lock dir itself nobody cannot open, nor plant before root uses it. A
    // lock another root process holds (a stuck command) fails a command after its wait.
    let script = r#"
        "$MCF" attach lo --state-dir /sys/fs/bpf/mcfilter >/dev/null
        nobody flock -o /sys/fs/bpf sleep 20 >/dev/null 2>&1 &
        holder=$!
        sleep 1
        start=$(date +%s)
        "$MCF" status --state-dir /sys/fs/bpf/mcfilter >/dev/null 2>&1
        echo "case parent: rc=$? after=$(( $(date +%s) - start ))"
        pkill -P $holder; kill $holder
        if nobody flock -o /sys/fs/bpf/mcfilter_lock true 2>/dev/null; then opened=yes; else opened=no; fi
        echo "case nobody: opened=$opened mode=$(stat -c %a /sys/fs/bpf/mcfilter_lock)"
        nobody mkdir /sys/fs/bpf/planted_lock
        err=$("$MCF" attach lo --state-dir /sys/fs/bpf/planted 2>&1 >/dev/null)
        echo "case planted: rc=$? $err"
        flock -o /sys/fs/bpf/mcfilter_lock sleep 20 >/dev/null 2>&1 &
        holder=$!
        sleep 1
        start=$(date +%s)
        err=$("$MCF" status --state-dir /sys/fs/bpf/mcfilter 2>&1 >/dev/null)
        rc=$?
        echo "case held: rc=$rc after=$(( $(date +%s) - start )) $err"
        pkill -P $holder; kill $holder
        "$MCF" detach lo --state-dir /sys/fs/bpf/mcfilter >/dev/null
        echo "case left: $(ls /sys/fs/bpf | grep mcfilter | tr '\n' ' ')"
    "#;
    let out = in_private_bpffs("lk", script);
    let cases = cases(&out);
    let case = |name: &str| {
        cases
            .get(name)
            .unwrap_or_else(|| panic!("no case {name}: {out:?}"))
            .clone()
    };
    let after = |line: &str| -> u64 {
        line.split_whitespace()
            .find_map(|word| word.strip_prefix("after="))
            .and_then(|secs| secs.parse().ok())
            .unwrap_or_else(|| panic!("{line}"))
    };
    let parent = case("parent");
    assert!(
        parent.starts_with("rc=0") && after(&parent) < 3,
        "a lock on the bpffs root held by nobody delayed status: {parent}"
    );
    assert_eq!(
        case("nobody"),
        "opened=no mode=700",
        "nobody cannot open the lock"
    );
    let planted = case("planted");
    assert!(
        planted.starts_with(
            "rc=1 mcfilter: refusing the state dir: /sys/fs/bpf/planted_lock is owned by uid 65534"
        ),
        "{planted}"
    );
    let held = case("held");
    assert!(
        held.starts_with("rc=1") && held.contains("another process has held the state lock"),
        "{held}"
    );
    let wait = mcfilter::pin::LOCK_WAIT.as_secs();
    assert!(
        (wait..wait + 5).contains(&after(&held)),
        "gave up after {} s, not about {wait} s: {held}",
        after(&held)
    );
    assert_eq!(
        case("left"),
        "",
        "the last detach leaves no state and no lock dir"
    );
}
