//! Load next to floods: an allowed client's memcached set/get loop, quiet and while a UDP flood
//! and a SYN flood from forged sources hit the server. Used by the reliability test (zero errors)
//! and by the benchmark (latency figures).

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use crate::{
    lab::{Host, Lab},
    memcache,
    packet::{ETH_P_IP, IPPROTO_TCP, NOT_FRAGMENTED, eth, ipv4, tcp_syn},
};

/// Datagrams in the UDP flood.
pub const UDP_FLOOD: usize = 100_000;
/// Forged SYNs in the SYN flood.
pub const SYN_FLOOD: u32 = 20_000;

/// What one client loop saw.
#[derive(Debug)]
pub struct ClientRun {
    pub errors: usize,
    pub median: Duration,
    pub p99: Duration,
}

/// `rounds` set/gets from `client` to memcached on `server`, timed one by one.
pub fn client_loop(client: &Host, server: SocketAddr, rounds: usize) -> ClientRun {
    client.ns.run(|| {
        let mut latencies = Vec::with_capacity(rounds);
        let mut errors = 0;
        for i in 0..rounds {
            let started = Instant::now();
            match memcache::set_get(server, &format!("k{i}"), b"value", Duration::from_secs(2)) {
                Ok(()) => latencies.push(started.elapsed()),
                Err(_) => errors += 1,
            }
        }
        latencies.sort();
        let at = |q: usize| {
            latencies
                .get(latencies.len() * q / 100)
                .copied()
                .unwrap_or_default()
        };
        ClientRun {
            errors,
            median: at(50),
            p99: at(99),
        }
    })
}

/// The client loop while `attacker` floods the server with UDP to `port` and with SYNs to `port`
/// from forged sources in 198.18.1.0-198.18.200.255.
pub fn client_loop_under_flood(
    lab: &Lab,
    client: &Host,
    attacker: &Host,
    port: u16,
    rounds: usize,
) -> ClientRun {
    let server = SocketAddr::new(lab.server.v4.into(), port);
    let syns: Vec<Vec<u8>> = (0..SYN_FLOOD)
        .map(|i| {
            let [_, _, c, d] = i.to_be_bytes();
            let l4 = tcp_syn(40000 + (i % 1000) as u16, port);
            let src = [198, 18, 1 + (c % 200), d];
            eth(
                ETH_P_IP,
                &[],
                &ipv4(
                    src,
                    lab.server.v4.octets(),
                    IPPROTO_TCP,
                    &[],
                    NOT_FRAGMENTED,
                    &l4,
                ),
            )
        })
        .collect();
    std::thread::scope(|scope| {
        let udp = scope
            .spawn(|| attacker.send_udp(&[lab.server.v4.into()], port, b"stats\r\n", UDP_FLOOD));
        let syn = scope.spawn(|| attacker.send_frames(&syns));
        let run = client_loop(client, server, rounds);
        udp.join().expect("udp flood");
        syn.join().expect("syn flood");
        run
    })
}
