//! Chaining (`attach --then`): mcfilter in front of another XDP program on one interface, with
//! real packets. The peer is Debian's xdp-filter, loaded the way it loads on this kernel (a
//! single program, no dispatcher), with a rule that drops UDP to another port: a datagram to
//! that port that is not delivered while mcfilter is in front proves that mcfilter's tail call
//! reached it.

use std::{
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use mcfilter_tests::{
    cli::Mcfilter,
    lab::{self, Host, IFACE, Lab, pending},
    memcache::{self, Memcached},
    privileged_test,
    xdp_filter::XdpFilter,
};
use serde_json::Value;

const PORT: u16 = 11211;
/// The port xdp-filter's rule drops.
const PEER_PORT: u16 = 9999;
/// A port neither drops.
const OPEN_PORT: u16 = 7777;

/// Runs `swap` while an allowed client uses memcached over TCP and another host sends UDP to
/// the peer's port without pause; returns the client's failed rounds and whether any datagram
/// to the peer's port reached the server (there must be no moment without the peer's rule).
fn swap_under_traffic(
    lab: &Lab,
    client: &Host,
    sender: &Host,
    swap: impl FnOnce(),
) -> (usize, bool) {
    /// Bounds of the traffic: it stops when the swap is done, or at these counts.
    const MAX_DATAGRAMS: usize = 200_000;
    const CLIENT_ROUNDS: usize = 40;
    let peer = lab.server.udp_listener(PEER_PORT);
    let server = SocketAddr::new(lab.server.v4.into(), PORT);
    let done = AtomicBool::new(false);
    let failures = std::thread::scope(|scope| {
        scope.spawn(|| {
            let socket = sender.udp_sender(lab.server.v4.into());
            let to = (IpAddr::from(lab.server.v4), PEER_PORT);
            let mut sent = 0;
            while !done.load(Ordering::Relaxed) && sent < MAX_DATAGRAMS {
                if socket.send_to(b"x", to).is_ok() {
                    sent += 1;
                }
            }
        });
        let rounds = scope.spawn(|| {
            client.ns.run(|| {
                (0..CLIENT_ROUNDS)
                    .filter(|i| {
                        memcache::set_get(server, &format!("c{i}"), b"v", Duration::from_secs(2))
                            .is_err()
                    })
                    .count()
            })
        });
        std::thread::sleep(Duration::from_millis(50));
        swap();
        let failures = rounds.join().expect("the client");
        done.store(true, Ordering::Relaxed);
        failures
    });
    lab::settle();
    (failures, pending(&peer))
}

fn status(mcf: &Mcfilter) -> Value {
    mcf.json(&["status", "--json"])
}

#[test]
fn mcfilter_runs_in_front_of_xdp_filter_and_hands_the_interface_back() {
    privileged_test!();
    let lab = Lab::new("ch");
    let client = lab.host("chc", 10);
    let other = lab.host("cho", 66);
    let _memcached = Memcached::start(&lab.server.ns, false);
    let peer = XdpFilter::new("chx", &lab.server.ns);
    peer.ok(&["load", IFACE]);
    peer.ok(&["port", &PEER_PORT.to_string()]);
    let peer_id = lab
        .server
        .ns
        .xdp_program(IFACE)
        .expect("xdp-filter's program");
    assert_eq!(lab.delivered(&other, PEER_PORT, 3), 0, "xdp-filter's rule");
    assert_eq!(lab.delivered(&other, PORT, 3), 3, "xdp-filter passes 11211");

    let mcf = Mcfilter::new("ch").in_netns(&lab.server.ns);
    let (failures, leaked) = swap_under_traffic(&lab, &client, &other, || {
        mcf.ok(&[
            "attach",
            IFACE,
            "--then",
            "existing",
            "--allow",
            &client.v4.to_string(),
        ]);
    });
    assert_eq!(
        failures, 0,
        "the allowed client saw no error while mcfilter went in front"
    );
    assert!(!leaked, "xdp-filter's rule held through the swap");
    let now = status(&mcf);
    let iface = &now["interfaces"][0];
    assert_eq!(iface["next"]["program_id"], peer_id, "{now}");
    assert_eq!(iface["running"], true, "{now}");
    assert_eq!(
        lab.server.ns.xdp_program(IFACE),
        iface["program_id"].as_u64(),
        "mcfilter is the interface's program"
    );
    assert_eq!(
        lab.delivered(&other, PORT, 5),
        0,
        "mcfilter drops UDP {PORT}"
    );
    assert_eq!(
        lab.delivered(&other, PEER_PORT, 5),
        0,
        "xdp-filter, reached through mcfilter, drops UDP {PEER_PORT}"
    );
    assert_eq!(
        lab.delivered(&other, OPEN_PORT, 5),
        5,
        "other ports pass both"
    );

    // The peer's owner cannot unload it from under mcfilter: xdp-filter finds mcfilter's
    // program on the interface and refuses, and both keep filtering.
    let unload = peer
        .command(&["unload", IFACE])
        .output()
        .expect("xdp-filter");
    assert!(!unload.status.success(), "xdp-filter unload: {unload:?}");
    assert_eq!(lab.delivered(&other, PEER_PORT, 3), 0);
    assert_eq!(lab.delivered(&other, PORT, 3), 0);

    // The upgrade path: another build's program swapped in keeps the chain.
    let before = status(&mcf)["interfaces"][0]["program_id"].clone();
    mcf.ok(&["attach", IFACE, "--replace"]);
    let now = status(&mcf);
    let iface = &now["interfaces"][0];
    assert_ne!(iface["program_id"], before, "{now}");
    assert_eq!(iface["next"]["program_id"], peer_id, "{now}");
    assert_eq!(iface["running"], true, "{now}");
    assert_eq!(
        lab.server.ns.xdp_program(IFACE),
        iface["program_id"].as_u64()
    );
    assert_eq!(lab.delivered(&other, PEER_PORT, 3), 0, "still chained");
    assert_eq!(lab.delivered(&other, PORT, 3), 0);

    let (failures, leaked) = swap_under_traffic(&lab, &client, &other, || {
        let said = mcf.ok(&["detach", IFACE]);
        assert!(said.contains(&format!("program {peer_id}")), "{said}");
    });
    assert_eq!(
        failures, 0,
        "the allowed client saw no error while mcfilter stepped out"
    );
    assert!(!leaked, "xdp-filter's rule held through the hand-back");
    assert_eq!(
        lab.server.ns.xdp_program(IFACE),
        Some(peer_id),
        "xdp-filter is the interface's program again"
    );
    assert!(!mcf.state_dir().exists(), "nothing of mcfilter is left");
    assert_eq!(lab.delivered(&other, PEER_PORT, 3), 0, "its rule applies");
    assert_eq!(lab.delivered(&other, PORT, 3), 3, "mcfilter is gone");
    // xdp-filter's refused unload made it forget the program (README, "Running next to other
    // XDP programs"); netlink removes it.
    lab.server
        .ns
        .ip(&["link", "set", "dev", IFACE, "xdp", "off"]);
}

#[test]
fn a_chained_program_replaced_by_another_tool_is_reported_and_left_alone() {
    privileged_test!();
    let lab = Lab::new("cg");
    let peer = XdpFilter::new("cgx", &lab.server.ns);
    peer.ok(&["load", IFACE, "--mode", "skb"]);
    let mcf = Mcfilter::new("cg").in_netns(&lab.server.ns);
    mcf.ok(&["attach", IFACE, "--then", "existing"]);
    let now = status(&mcf);
    assert_eq!(
        now["interfaces"][0]["mode"], "skb",
        "the peer's mode: {now}"
    );

    // Another tool removes whatever is on the interface (netlink attachments are not
    // protected the way bpf_links are).
    lab.server
        .ns
        .ip(&["link", "set", "dev", IFACE, "xdpgeneric", "off"]);
    let now = status(&mcf);
    assert_eq!(now["interfaces"][0]["running"], false, "{now}");
    let warnings = now["warnings"].to_string();
    assert!(
        warnings.contains("no longer on") && warnings.contains("not filtered"),
        "{now}"
    );
    let audit = mcf.run(&["audit", "--json"]);
    assert!(!audit.status.success(), "audit fails: {audit:?}");
    let said = mcf.ok(&["detach", IFACE]);
    assert!(said.contains("left as it is"), "{said}");
    assert_eq!(lab.server.ns.xdp_program(IFACE), None);
    assert!(!mcf.state_dir().exists());
}

#[test]
fn mcfilter_chains_to_a_program_by_id_and_hands_it_the_interface() {
    privileged_test!();
    let lab = Lab::new("ci");
    let other = lab.host("cio", 66);
    // A loaded XDP program attached nowhere: the benchmarks' XDP_PASS floor.
    let mut floor = aya::Ebpf::load(mcfilter::FLOOR_OBJECT).expect("the floor object");
    let program: &mut aya::programs::Xdp = floor
        .program_mut("floor")
        .expect("the floor program")
        .try_into()
        .expect("XDP");
    program.load().expect("load the floor");
    let floor_id = program.info().expect("info").id();
    let mcf = Mcfilter::new("ci").in_netns(&lab.server.ns);
    mcf.ok(&["attach", IFACE, "--then", &format!("id:{floor_id}")]);
    // The array holds the program now; the test's handle can go.
    drop(floor);
    assert_eq!(
        status(&mcf)["interfaces"][0]["next"]["program_id"],
        floor_id
    );
    assert_eq!(lab.delivered(&other, PORT, 3), 0);
    assert_eq!(lab.delivered(&other, OPEN_PORT, 3), 3);
    mcf.ok(&["detach", IFACE]);
    assert_eq!(
        lab.server.ns.xdp_program(IFACE),
        Some(u64::from(floor_id)),
        "the next program runs on the interface now"
    );
    assert_eq!(lab.delivered(&other, PORT, 3), 3);
    lab.server
        .ns
        .ip(&["link", "set", "dev", IFACE, "xdp", "off"]);
}

/// A socket filter (`r0 = 0; exit`), loaded with bpf(2): a program that is not XDP.
fn socket_filter() -> OwnedFd {
    const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
    load_program(BPF_PROG_TYPE_SOCKET_FILTER, 0, 0)
}

/// An XDP program that passes everything (`r0 = XDP_PASS; exit`) and declares `xdp.frags`
/// support (BPF_F_XDP_HAS_FRAGS), which mcfilter's program does not: the kernel lets neither
/// tail-call the other.
fn xdp_with_frags() -> OwnedFd {
    const BPF_PROG_TYPE_XDP: u32 = 6;
    const BPF_F_XDP_HAS_FRAGS: u32 = 1 << 5;
    const XDP_PASS: u32 = 2;
    load_program(BPF_PROG_TYPE_XDP, BPF_F_XDP_HAS_FRAGS, XDP_PASS)
}

/// Loads `r0 = r0_value; exit` as a program of `prog_type` with `prog_flags`, with bpf(2).
fn load_program(prog_type: u32, prog_flags: u32, r0_value: u32) -> OwnedFd {
    // BPF_ALU64 | BPF_MOV | BPF_K to r0 (the immediate in the upper 32 bits), then BPF_JMP |
    // BPF_EXIT.
    let insns: [u64; 2] = [0xb7 | (u64::from(r0_value) << 32), 0x95];
    const LICENSE: &[u8] = b"GPL\0";
    /// The head of `union bpf_attr` for BPF_PROG_LOAD; the rest stays zero.
    #[repr(C)]
    #[derive(Default)]
    struct ProgLoad {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        prog_name: [u8; 16],
        tail: [u64; 8],
    }
    const BPF_PROG_LOAD: libc::c_long = 5;
    let attr = ProgLoad {
        prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: LICENSE.as_ptr() as u64,
        prog_flags,
        ..ProgLoad::default()
    };
    // SAFETY: bpf(2) reads `attr` (and the instructions and license it points to, which
    // outlive the call) for the size given.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &raw const attr,
            size_of::<ProgLoad>(),
        )
    };
    assert!(
        fd >= 0,
        "load a program of type {prog_type}: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// The id of the program behind `fd`.
fn program_id(fd: &OwnedFd) -> u32 {
    #[repr(C)]
    struct InfoByFd {
        fd: u32,
        info_len: u32,
        info: u64,
    }
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    // `struct bpf_prog_info` starts with type and id.
    let mut info = [0u32; 64];
    let attr = InfoByFd {
        fd: fd.as_raw_fd() as u32,
        info_len: size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: bpf(2) writes at most `info_len` bytes to `info`, which lives past the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &raw const attr,
            size_of::<InfoByFd>(),
        )
    };
    assert_eq!(rc, 0, "program info: {}", std::io::Error::last_os_error());
    info[1]
}

#[test]
fn programs_mcfilter_cannot_run_in_front_of_are_refused_with_one_line() {
    privileged_test!();
    let (lab, mcf) = Lab::with_mcfilter("cr");
    let refused = |args: &[&str], why: &str| {
        let (code, line) = mcf.fails(args);
        assert_eq!(code, 1, "{line}");
        assert!(line.contains(why), "{args:?}: {line}");
        assert!(!mcf.state_dir().exists(), "{args:?} left a state");
    };
    refused(
        &["attach", IFACE, "--then", "existing"],
        "has no XDP program to chain to",
    );
    refused(
        &["attach", IFACE, "--then", "id:4000000000"],
        "no loaded BPF program is id:4000000000",
    );
    let filter = socket_filter();
    refused(
        &[
            "attach",
            IFACE,
            "--then",
            &format!("id:{}", program_id(&filter)),
        ],
        "it is not an XDP program",
    );
    let frags = xdp_with_frags();
    refused(
        &[
            "attach",
            IFACE,
            "--then",
            &format!("id:{}", program_id(&frags)),
        ],
        "cannot tail-call it from mcfilter (its xdp.frags support",
    );
    assert_eq!(
        lab.server.ns.xdp_program(IFACE),
        None,
        "the refused chain left the interface as it was"
    );
    let (code, _) = mcf.fails(&["attach", IFACE, "--then", "everything"]);
    assert_eq!(code, 2, "a usage error");

    let peer = XdpFilter::new("crx", &lab.server.ns);
    peer.ok(&["load", IFACE, "--mode", "skb"]);
    let peer_id = lab
        .server
        .ns
        .xdp_program(IFACE)
        .expect("xdp-filter's program");
    refused(
        &["attach", IFACE, "--then", "existing", "--mode", "native"],
        "another XDP mode",
    );
    refused(
        &["attach", IFACE, "--then", &format!("id:{peer_id}")],
        "`--then existing` chains to that one",
    );
    assert_eq!(
        lab.server.ns.xdp_program(IFACE),
        Some(peer_id),
        "xdp-filter kept the interface"
    );
    peer.ok(&["unload", IFACE]);
}
