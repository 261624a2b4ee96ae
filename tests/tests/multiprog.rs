//! Sharing the interface through libxdp's dispatcher (`attach --multiprog`), with Debian's
//! xdp-filter as the other component and real packets. Where the kernel runs extension
//! programs (Debian's 6.1 and 6.12, in the guests of `cargo xtask test`), mcfilter joins
//! xdp-filter's dispatcher and xdp-filter joins mcfilter's, in both orders; where it does not
//! (this project's host kernel), `--multiprog` is refused with one line and changes nothing.
//! Which of the two the kernel is, libxdp itself says: `xdp-filter load` attaches through its
//! dispatcher only where its compatibility check (an extension program) passed.
//!
//! xdp-filter and mcfilter share a private bpffs (xdp-filter's mount namespace): libxdp's state
//! is there, at fixed paths.

use std::process::Command;

use mcfilter_common::PROGRAM_NAME_COMPONENT as COMPONENT;
use mcfilter_tests::{
    cli::Mcfilter,
    lab::{Host, IFACE, Lab},
    privileged_test,
    xdp_filter::XdpFilter,
};
use serde_json::Value;

const PORT: u16 = 11211;
/// The port xdp-filter's rule drops.
const PEER_PORT: u16 = 9999;
/// A port neither drops.
const OPEN_PORT: u16 = 7777;
/// The name of libxdp's dispatcher program.
const DISPATCHER: &str = "xdp_dispatcher";

/// The name of the XDP program on the server's interface (`bpftool`), if there is one.
fn program_on_iface(lab: &Lab, peer: &XdpFilter) -> Option<String> {
    let id = lab.server.ns.xdp_program(IFACE)?;
    let out = run(peer.tool(
        "bpftool",
        &["prog", "show", "id", &id.to_string(), "--json"],
    ));
    let program: Value = serde_json::from_slice(&out.stdout).expect("bpftool --json");
    program["name"].as_str().map(str::to_owned)
}

/// The components `xdp-loader status` lists on the server's interface, by program name, in
/// the order it lists them (the run order).
fn components(peer: &XdpFilter) -> Vec<String> {
    let out = run(peer.tool("xdp-loader", &["status", IFACE]));
    let text = String::from_utf8_lossy(&out.stdout);
    println!("$ xdp-loader status {IFACE}\n{text}");
    // Lines below the interface's: ` =>  50  xdpfilt_alw_all  41  ...`.
    text.lines()
        .filter_map(|line| line.trim_start().strip_prefix("=>"))
        .filter_map(|rest| rest.split_whitespace().nth(1).map(str::to_owned))
        .collect()
}

fn run(mut command: Command) -> std::process::Output {
    let out = command.output().expect("run the tool");
    assert!(out.status.success(), "{command:?}: {out:?}");
    out
}

fn status(mcf: &Mcfilter) -> Value {
    mcf.json(&["status", "--json"])
}

/// xdp-filter with its rule, loaded through its dispatcher where the kernel runs one.
fn load_peer(peer: &XdpFilter) {
    peer.ok(&["load", IFACE]);
    peer.ok(&["port", &PEER_PORT.to_string()]);
}

#[test]
fn multiprog_shares_the_interface_with_xdp_filter_in_both_orders_or_is_refused() {
    privileged_test!();
    let lab = Lab::new("mp");
    let client = lab.host("mpc", 10);
    let other = lab.host("mpo", 66);
    let peer = XdpFilter::new("mpx", &lab.server.ns);
    let mcf = Mcfilter::new("mp")
        .in_netns(&lab.server.ns)
        .in_mount_ns(peer.mount_ns());
    load_peer(&peer);
    let attach = [
        "attach",
        IFACE,
        "--multiprog",
        "--allow",
        &client.v4.to_string(),
    ];
    let loaded = program_on_iface(&lab, &peer);
    println!("xdp-filter's program on {IFACE}: {loaded:?}");
    if loaded.as_deref() != Some(DISPATCHER) {
        // libxdp could not run its dispatcher here: neither can mcfilter, and it says so.
        let before = lab.server.ns.xdp_program(IFACE);
        let (_, line) = mcf.fails(&attach);
        assert!(line.contains("refuses freplace"), "{line}");
        let (_, line) = mcf.fails(&[&attach[..], &["--json"]].concat());
        assert!(line.contains("--then existing"), "{line}");
        assert_eq!(lab.server.ns.xdp_program(IFACE), before, "nothing changed");
        assert!(!mcf.state_dir().exists(), "no state was left");
        assert_eq!(lab.delivered(&other, PEER_PORT, 3), 0, "xdp-filter's rule");
        assert_eq!(lab.delivered(&other, PORT, 3), 3, "mcfilter is not there");
        peer.ok(&["unload", IFACE]);
        let (_, line) = mcf.fails(&attach);
        assert!(line.contains("refuses freplace"), "{line}");
        assert_eq!(lab.server.ns.xdp_program(IFACE), None, "nothing changed");
        assert!(!mcf.state_dir().exists(), "no state was left");
        return;
    }

    // xdp-filter first: mcfilter joins its dispatcher, and leaves it running xdp-filter alone.
    // A dispatcher runs every component in its own mode (native here).
    let (_, line) = mcf.fails(&[&attach[..], &["--mode", "skb"]].concat());
    assert!(line.contains("runs in native mode"), "{line}");
    assert!(!mcf.state_dir().exists(), "no state was left");
    mcf.ok(&attach);
    let listed = components(&peer);
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().any(|name| name == COMPONENT), "{listed:?}");
    let now = status(&mcf);
    let iface = &now["interfaces"][0];
    assert_eq!(iface["running"], true, "{now}");
    assert_eq!(
        iface["dispatcher"]["program_id"].as_u64(),
        lab.server.ns.xdp_program(IFACE),
        "{now}"
    );
    let in_status: Vec<&str> = iface["dispatcher"]["components"]
        .as_array()
        .expect("the dispatcher's components")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(in_status, listed, "status lists what xdp-loader lists");
    assert_filtered_by_both(&lab, &other);
    let said = mcf.ok(&["detach", IFACE]);
    assert!(said.contains(DISPATCHER), "{said}");
    assert_eq!(
        program_on_iface(&lab, &peer).as_deref(),
        Some(DISPATCHER),
        "xdp-filter's dispatcher is still there"
    );
    assert_eq!(components(&peer).len(), 1, "only xdp-filter runs");
    assert!(!mcf.state_dir().exists(), "nothing of mcfilter is left");
    assert_eq!(lab.delivered(&other, PEER_PORT, 3), 0, "its rule applies");
    assert_eq!(lab.delivered(&other, PORT, 3), 3, "mcfilter is gone");
    peer.ok(&["unload", IFACE]);
    assert_eq!(lab.server.ns.xdp_program(IFACE), None);

    // mcfilter first, at a priority that runs it before anything libxdp loads by default: it
    // starts a dispatcher, which xdp-filter joins and leaves again.
    let said = mcf.run(&[&attach[..], &["--priority", "1"]].concat());
    assert!(said.status.success(), "{said:?}");
    println!(
        "$ mcfilter attach --multiprog\n{}{}",
        String::from_utf8_lossy(&said.stdout),
        String::from_utf8_lossy(&said.stderr)
    );
    assert_eq!(program_on_iface(&lab, &peer).as_deref(), Some(DISPATCHER));
    assert_eq!(components(&peer), [COMPONENT]);
    assert_eq!(
        lab.delivered(&other, PORT, 3),
        0,
        "mcfilter drops UDP {PORT}"
    );
    assert_eq!(
        lab.delivered(&other, OPEN_PORT, 3),
        3,
        "and passes the rest"
    );
    load_peer(&peer);
    let listed = components(&peer);
    assert_eq!(listed.len(), 2, "xdp-filter joined: {listed:?}");
    assert_eq!(listed[0], COMPONENT, "priority 1 runs first: {listed:?}");
    assert_eq!(status(&mcf)["interfaces"][0]["running"], true);
    assert_filtered_by_both(&lab, &other);

    // The upgrade path: this build's program swapped in, at the same place.
    let before = status(&mcf)["interfaces"][0]["program_id"].clone();
    mcf.ok(&["attach", IFACE, "--replace"]);
    let now = status(&mcf);
    assert_ne!(now["interfaces"][0]["program_id"], before, "{now}");
    assert_eq!(now["interfaces"][0]["running"], true, "{now}");
    assert_eq!(components(&peer), listed, "at the same place");
    assert_filtered_by_both(&lab, &other);

    // xdp-filter leaves: libxdp rebuilds the dispatcher with mcfilter alone.
    peer.ok(&["unload", IFACE]);
    assert_eq!(components(&peer), [COMPONENT]);
    let now = status(&mcf);
    assert_eq!(now["interfaces"][0]["running"], true, "{now}");
    assert_eq!(lab.delivered(&other, PORT, 3), 0, "mcfilter still drops");
    assert_eq!(lab.delivered(&other, PEER_PORT, 3), 3, "xdp-filter is gone");

    // Another tool unloading every component: mcfilter says the interface is unfiltered.
    run(peer.tool("xdp-loader", &["unload", IFACE, "--all"]));
    let now = status(&mcf);
    assert_eq!(now["interfaces"][0]["running"], false, "{now}");
    assert!(
        now["warnings"].to_string().contains("not filtered"),
        "{now}"
    );
    let said = mcf.ok(&["detach", IFACE]);
    assert!(said.contains("left as it is"), "{said}");
    assert_eq!(lab.server.ns.xdp_program(IFACE), None);
    assert!(!mcf.state_dir().exists(), "nothing of mcfilter is left");
}

/// mcfilter drops UDP to its port, xdp-filter (reached through the dispatcher) drops UDP to
/// its own, and other traffic passes both.
fn assert_filtered_by_both(lab: &Lab, other: &Host) {
    assert_eq!(
        lab.delivered(other, PORT, 5),
        0,
        "mcfilter drops UDP {PORT}"
    );
    assert_eq!(
        lab.delivered(other, PEER_PORT, 5),
        0,
        "xdp-filter drops UDP {PEER_PORT}"
    );
    assert_eq!(
        lab.delivered(other, OPEN_PORT, 5),
        5,
        "other ports pass both"
    );
}

/// The most steps a command may take before the walk gives up.
const MAX_STEPS: usize = 200;

/// libxdp's pin dirs in the shared bpffs (one per dispatcher it or mcfilter made and did not
/// remove).
fn dispatcher_dirs(peer: &XdpFilter) -> Vec<String> {
    let out = run(peer.tool("ls", &["/sys/fs/bpf/xdp"]));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|name| name.starts_with("dispatch-"))
        .map(str::to_owned)
        .collect()
}

/// `attach --multiprog` and `detach` killed at every step, next to xdp-filter's dispatcher:
/// the interface always runs a dispatcher with xdp-filter's component (never nothing, never
/// without xdp-filter); `status` says mcfilter runs exactly when its component is in that
/// dispatcher; and the next command finishes the job, leaving libxdp one dispatcher's pins.
#[test]
fn a_multiprog_attach_or_detach_killed_at_any_step_leaves_the_other_component_running() {
    privileged_test!();
    let lab = Lab::new("mk");
    let other = lab.host("mko", 66);
    let peer = XdpFilter::new("mkx", &lab.server.ns);
    let mcf = Mcfilter::new("mk")
        .in_netns(&lab.server.ns)
        .in_mount_ns(peer.mount_ns());
    load_peer(&peer);
    if program_on_iface(&lab, &peer).as_deref() != Some(DISPATCHER) {
        // No dispatcher on this kernel: the refusal changes nothing at any step (the other
        // test checks it); nothing to walk.
        assert!(mcf.run(&["attach", IFACE, "--multiprog"]).status.code() == Some(1));
        assert!(!mcf.state_dir().exists());
        return;
    }
    let alone = components(&peer);
    assert_eq!(alone.len(), 1, "xdp-filter's component: {alone:?}");
    // Whatever the step: a dispatcher with xdp-filter's component, and mcfilter's or not;
    // `status` (when it lists the interface) says which. Returns whether it lists it.
    let check = |step: usize| -> bool {
        assert_eq!(
            program_on_iface(&lab, &peer).as_deref(),
            Some(DISPATCHER),
            "step {step}"
        );
        let listed = components(&peer);
        assert!(listed.contains(&alone[0]), "step {step}: {listed:?}");
        let ours = listed.iter().any(|name| name == COMPONENT);
        assert_eq!(
            listed.len(),
            1 + usize::from(ours),
            "step {step}: {listed:?}"
        );
        let status = mcf.run(&["status", "--json"]);
        if !status.status.success() {
            let stderr = String::from_utf8_lossy(&status.stderr);
            assert!(stderr.contains("not attached"), "step {step}: {stderr}");
            assert!(
                !ours,
                "step {step}: mcfilter runs, and status does not say so"
            );
            return false;
        }
        let status: Value = serde_json::from_slice(&status.stdout).expect("status --json");
        assert_eq!(
            status["interfaces"][0]["running"], ours,
            "step {step}: {status}"
        );
        true
    };
    let finish = |step: usize| {
        mcf.ok(&["detach", IFACE, "--if-attached"]);
        assert_eq!(components(&peer), alone, "step {step}");
        assert!(!mcf.state_dir().exists(), "step {step}");
    };
    let attach = ["attach", IFACE, "--multiprog"];
    for step in 1..MAX_STEPS {
        let killed = mcf.killed_at(&attach, step);
        let listed = check(step);
        if !killed {
            break;
        }
        finish(step);
        if listed {
            // The detach left libxdp the pins of the one dispatcher (what a killed attach did
            // not list, the next one's sweep removes).
            assert_eq!(dispatcher_dirs(&peer).len(), 1, "step {step}");
        }
        assert!(
            step + 1 < MAX_STEPS,
            "attach took more than {MAX_STEPS} steps"
        );
    }
    assert_eq!(components(&peer).len(), 2);
    for step in 1..MAX_STEPS {
        let killed = mcf.killed_at(&["detach", IFACE], step);
        check(step);
        finish(step);
        assert_eq!(dispatcher_dirs(&peer).len(), 1, "step {step}");
        if !killed {
            break;
        }
        mcf.ok(&attach);
        assert!(
            step + 1 < MAX_STEPS,
            "detach took more than {MAX_STEPS} steps"
        );
    }
    assert_eq!(lab.delivered(&other, PEER_PORT, 3), 0, "xdp-filter's rule");
    assert_eq!(lab.delivered(&other, PORT, 3), 3, "mcfilter is gone");
}
