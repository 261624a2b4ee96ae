//! No way around the filter, end to end: VLAN tags, IPv4 options, IPv6 extension headers and
//! fragments, sent for real through a lab of namespaces. Delivery is read on real sockets;
//! what the stack cannot deliver is judged by mcfilter's own counters.

use std::net::IpAddr;

use mcfilter_tests::{
    cli::Mcfilter,
    lab::{self, DIRECT_IFACE, DIRECT_SERVER_V4, Host, IFACE, Lab, pending, receive, set_option},
    packet::{
        ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, IPPROTO_UDP, NOT_FRAGMENTED, eth_tagged, fragments,
        ipv4, udp, udp_checksummed,
    },
    privileged_test,
};
use serde_json::Value;

const PORT: u16 = 11211;
const OTHER_PORT: u16 = 11212;

/// A lab with the filter attached to the server, and a client.
struct Setup {
    lab: Lab,
    client: Host,
    mcf: Mcfilter,
}

fn setup(tag: &str) -> Setup {
    let lab = Lab::new(tag);
    let client = lab.host(&format!("{tag}c"), 30);
    let mcf = Mcfilter::new(tag).in_netns(&lab.server.ns);
    mcf.ok(&["attach", IFACE, "--mode", "native"]);
    Setup { lab, client, mcf }
}

impl Setup {
    fn reasons(&self) -> Value {
        self.mcf.json(&["stats", "--json"])["reasons"].clone()
    }

    fn server_addrs(&self) -> [IpAddr; 2] {
        [self.lab.server.v4.into(), self.lab.server.v6.into()]
    }
}

fn delta(after: &Value, before: &Value, reason: &str) -> u64 {
    after[reason].as_u64().expect("counter") - before[reason].as_u64().expect("counter")
}

#[test]
fn vlan_tagged_frames_are_judged_by_the_packet_inside() {
    privileged_test!();
    let s = setup("vl");
    // Straight to the server: through a bridge the outer tag would travel as metadata.
    let direct = s.lab.direct_host("vld", 30);
    s.mcf.ok(&["attach", DIRECT_IFACE, "--mode", "native"]);
    let protected = s.lab.server.udp_listener(PORT);
    let other = s.lab.server.udp_listener(OTHER_PORT);
    let frame = |tags: &[(u16, u16)], port: u16| {
        let l4 = udp(40000, port, b"stats\r\n");
        let (src, dst) = (direct.v4.octets(), DIRECT_SERVER_V4.octets());
        eth_tagged(
            ETH_P_IP,
            tags,
            &ipv4(src, dst, IPPROTO_UDP, &[], NOT_FRAGMENTED, &l4),
        )
    };
    let before = s.reasons();
    // Priority tags (VLAN id 0) are delivered by the stack as if untagged.
    let priority = [(ETH_P_8021Q, 0)];
    direct.send_frames(&[frame(&priority, PORT), frame(&priority, OTHER_PORT)]);
    assert_eq!(
        receive(&other, 1).len(),
        1,
        "a priority-tagged datagram to another port arrives"
    );
    // Other tags have no VLAN device here: the counters say what the program decided.
    let tagged = [
        frame(&[(ETH_P_8021Q, 100)], PORT),
        frame(&[(ETH_P_8021AD, 200), (ETH_P_8021Q, 100)], PORT),
        frame(&[(ETH_P_8021Q, 100), (ETH_P_8021Q, 101)], OTHER_PORT),
        frame(
            &[(ETH_P_8021Q, 1), (ETH_P_8021Q, 2), (ETH_P_8021Q, 3)],
            OTHER_PORT,
        ),
    ];
    direct.send_frames(&tagged);
    lab::settle();
    assert!(
        !pending(&protected),
        "no tagged datagram to {PORT} was delivered"
    );
    let after = s.reasons();
    assert_eq!(
        delta(&after, &before, "udp_port"),
        3,
        "priority, 802.1Q and QinQ to {PORT}"
    );
    assert_eq!(delta(&after, &before, "vlan_limit"), 1, "three tags");
    assert!(
        delta(&after, &before, "not_protected") >= 2,
        "the frames to another port passed"
    );
    s.mcf.ok(&["detach", DIRECT_IFACE]);
    s.mcf.ok(&["detach", IFACE]);
}

#[test]
fn ip_options_and_extension_headers_do_not_hide_the_port() {
    privileged_test!();
    let s = setup("eh");
    let protected = s.lab.server.udp_listener(PORT);
    let other = s.lab.server.udp_listener(OTHER_PORT);
    let [v4, v6] = s.server_addrs();
    // IPv4 with 40 bytes of options (IHL 15): NOPs, then end of list.
    let mut options = vec![1u8; 39];
    options.push(0);
    // IPv6 hop-by-hop and destination options headers, each with a PadN option.
    let ext_header = [0u8, 0, 1, 4, 0, 0, 0, 0];
    let senders = [
        (v4, libc::IPPROTO_IP, libc::IP_OPTIONS, options.as_slice()),
        (v6, libc::IPPROTO_IPV6, libc::IPV6_HOPOPTS, &ext_header[..]),
        (v6, libc::IPPROTO_IPV6, libc::IPV6_DSTOPTS, &ext_header[..]),
    ];
    let before = s.reasons();
    for (dst, level, name, value) in senders {
        let socket = s.client.udp_sender(dst);
        set_option(&socket, level, name, value);
        for port in [PORT, PORT, OTHER_PORT] {
            socket.send_to(b"stats\r\n", (dst, port)).expect("send");
        }
    }
    assert_eq!(
        receive(&other, 3).len(),
        3,
        "datagrams with options to another port arrive"
    );
    lab::settle();
    assert!(
        !pending(&protected),
        "no datagram with options reached {PORT}"
    );
    assert_eq!(delta(&s.reasons(), &before, "udp_port"), 6);
    s.mcf.ok(&["detach", IFACE]);
}

#[test]
fn fragmented_udp_never_reaches_the_port_and_other_ports_get_it_whole() {
    privileged_test!();
    let s = setup("fr");
    let protected = s.lab.server.udp_listener(PORT);
    let other = s.lab.server.udp_listener(OTHER_PORT);
    // 4000 bytes on a 1500-byte link: the sender's kernel cuts each datagram in three.
    let big: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
    let addrs = s.server_addrs();
    let before = s.reasons();
    s.client.send_udp(&addrs, PORT, &big, 2);
    s.client.send_udp(&addrs, OTHER_PORT, &big, 1);
    let got = receive(&other, 2);
    assert_eq!(got.len(), 2, "fragmented datagrams to another port arrive");
    assert!(got.iter().all(|d| *d == big), "whole and intact");
    lab::settle();
    assert!(
        !pending(&protected),
        "no byte of a fragmented datagram reached {PORT}"
    );
    let after = s.reasons();
    assert_eq!(
        delta(&after, &before, "udp_port"),
        4,
        "each first fragment to {PORT}"
    );
    assert_eq!(
        delta(&after, &before, "fragment_of_dropped"),
        8,
        "two later fragments each"
    );

    // Out of order: the last fragment first. Other ports still get the datagram whole; to the
    // protected port the later fragments pass unjudged (no ports in them), then the first is
    // dropped, so the datagram never completes.
    let client4: IpAddr = s.client.v4.into();
    let client6: IpAddr = s.client.v6.into();
    for (id, (src, dst)) in [(client4, addrs[0]), (client6, addrs[1])]
        .into_iter()
        .enumerate()
    {
        for port in [OTHER_PORT, PORT] {
            let l4 = udp_checksummed(src, dst, 40000, port, &big);
            let mut frames = fragments(
                src,
                dst,
                IPPROTO_UDP,
                700 + id as u16 * 2 + u16::from(port == PORT),
                &l4,
                1448,
            );
            frames.reverse();
            s.client.send_frames(&frames);
        }
    }
    let got = receive(&other, 2);
    assert_eq!(
        got.len(),
        2,
        "reversed fragments to another port are reassembled"
    );
    assert!(got.iter().all(|d| *d == big), "whole and intact");
    lab::settle();
    assert!(
        !pending(&protected),
        "reversed fragments to {PORT} never complete"
    );
    s.mcf.ok(&["detach", IFACE]);
}

/// A dropped datagram is remembered as long as the kernel waits for its fragments (its
/// reassembly timeout, read at attach in the server's namespace), then forgotten: a later
/// datagram of the same flow reusing the IP id is not judged by an old verdict.
#[test]
fn the_fragment_cache_forgets_a_datagram_after_the_reassembly_timeout() {
    privileged_test!();
    /// Seconds; the program keeps time in units of 2^30 ns, so an entry lives at most this long
    /// and less than one unit (about 1.07 s) less.
    const TIMEOUT: u64 = 2;
    let lab = Lab::new("fx");
    let client = lab.host("fxc", 31);
    let sysctl = lab
        .server
        .ns
        .command("sysctl")
        .args([
            "-qw",
            &format!("net.ipv4.ipfrag_time={TIMEOUT}"),
            &format!("net.ipv6.ip6frag_time={TIMEOUT}"),
        ])
        .status()
        .expect("sysctl");
    assert!(sysctl.success());
    let mcf = Mcfilter::new("fx").in_netns(&lab.server.ns);
    mcf.ok(&["attach", IFACE, "--mode", "native"]);
    let status = mcf.json(&["status", "--json"]);
    assert_eq!(
        status["fragments_timeouts_secs"],
        serde_json::json!([TIMEOUT, TIMEOUT])
    );
    let reasons = || mcf.json(&["stats", "--json"])["reasons"].clone();
    let big: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
    let pairs = [
        (IpAddr::from(client.v4), IpAddr::from(lab.server.v4)),
        (IpAddr::from(client.v6), IpAddr::from(lab.server.v6)),
    ];
    let mut thirds = Vec::new();
    let before = reasons();
    for (src, dst) in pairs {
        let l4 = udp_checksummed(src, dst, 40000, PORT, &big);
        let frames = fragments(src, dst, IPPROTO_UDP, 901, &l4, 1448);
        assert_eq!(frames.len(), 3);
        client.send_frames(&frames[..2]);
        thirds.push(frames[2].clone());
    }
    lab::settle();
    let remembered = reasons();
    assert_eq!(
        delta(&remembered, &before, "udp_port"),
        2,
        "first fragments"
    );
    assert_eq!(
        delta(&remembered, &before, "fragment_of_dropped"),
        2,
        "second fragments, while remembered"
    );
    std::thread::sleep(std::time::Duration::from_secs(TIMEOUT + 1));
    client.send_frames(&thirds);
    lab::settle();
    let forgotten = reasons();
    assert_eq!(
        delta(&forgotten, &remembered, "later_fragment"),
        2,
        "third fragments, after the timeout: {forgotten}"
    );
    assert_eq!(delta(&forgotten, &remembered, "fragment_of_dropped"), 0);
    mcf.ok(&["detach", IFACE]);
}

/// A program swapped in by `attach --replace` (an upgrade) starts with an empty fragment cache:
/// entries keep the time of the program that wrote them, and another build may keep time
/// another way. The later fragments of a datagram dropped before the swap then pass, to be
/// freed by the kernel's reassembly timeout; they never complete a datagram.
#[test]
fn a_replaced_program_starts_with_an_empty_fragment_cache() {
    privileged_test!();
    let s = setup("fr");
    let protected = s.lab.server.udp_listener(PORT);
    let big: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
    let mut rests = Vec::new();
    let before = s.reasons();
    for (src, dst) in [
        (IpAddr::from(s.client.v4), s.server_addrs()[0]),
        (IpAddr::from(s.client.v6), s.server_addrs()[1]),
    ] {
        let l4 = udp_checksummed(src, dst, 40001, PORT, &big);
        let frames = fragments(src, dst, IPPROTO_UDP, 903, &l4, 1448);
        assert_eq!(frames.len(), 3);
        s.client.send_frames(&frames[..1]);
        rests.extend_from_slice(&frames[1..]);
    }
    lab::settle();
    let entries = || s.mcf.json(&["status", "--json"])["fragments_entries"].clone();
    assert_eq!(
        delta(&s.reasons(), &before, "udp_port"),
        2,
        "first fragments"
    );
    assert_eq!(entries(), 2, "both datagrams remembered");
    s.mcf.ok(&["attach", IFACE, "--replace"]);
    assert_eq!(entries(), 0, "the replaced program's entries are gone");
    let swapped = s.reasons();
    s.client.send_frames(&rests);
    lab::settle();
    let after = s.reasons();
    assert_eq!(delta(&after, &swapped, "later_fragment"), 4, "{after}");
    assert_eq!(delta(&after, &swapped, "fragment_of_dropped"), 0);
    assert!(
        !pending(&protected),
        "no datagram completes without its first fragment"
    );
    s.mcf.ok(&["detach", IFACE]);
}
