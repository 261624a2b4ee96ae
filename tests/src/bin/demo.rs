//! `cargo xtask demo`: the 2018 memcached amplification attack in a lab of network namespaces,
//! first without mcfilter, then with it; the allow-list at work and changed live; the counters.
//! Everything the demo makes is removed at the end, on failure and on Ctrl-C.

use std::{
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use mcfilter_tests::{
    cli::Mcfilter,
    lab::{Host, IFACE, Lab},
    memcache::{self, Memcached},
    packet::{forged_memcached_request, memcached_udp_request},
};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Stops the demo (and so cleans up) once Ctrl-C was pressed.
fn checkpoint() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

const VICTIM_PORT: u16 = 9999;
const BIG_VALUE: usize = 100 * 1024;

fn main() -> std::process::ExitCode {
    // SAFETY: the handler only stores to an atomic.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("mcfilter-demo: run as root (it makes network namespaces and loads XDP)");
        return std::process::ExitCode::FAILURE;
    }
    let result = run();
    // The lab was dropped inside run(): namespaces, memcached, pins are gone.
    match result {
        Ok(()) => {
            println!("\nlab removed. That was mcfilter.");
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("\nmcfilter-demo: {err:#} (lab removed)");
            std::process::ExitCode::FAILURE
        }
    }
}

fn section(title: &str) {
    println!("\n== {title}");
}

fn run() -> anyhow::Result<()> {
    println!(
        "mcfilter demo: a memcached server, an allowed client, a denied client, an attacker and a"
    );
    println!(
        "victim, each in its own network namespace on one bridge (198.18.0.0/24, 2001:db8::/64)."
    );
    println!("Nothing leaves this machine.");
    let lab = Lab::new("mcd");
    let allowed = lab.host("mcda", 10);
    let denied = lab.host("mcdd", 20);
    let attacker = lab.host("mcdx", 66);
    let victim = lab.host("mcdv", 99);
    let _memcached = Memcached::start(&lab.server.ns, true);
    let mcf = Mcfilter::new("mcdemo").in_netns(&lab.server.ns);
    println!(
        "server {} / {} runs memcached with UDP on (`memcached -U 11211`); state in {}",
        lab.server.v4,
        lab.server.v6,
        mcf.state_dir().display()
    );
    let server4 = SocketAddr::new(lab.server.v4.into(), memcache::PORT);
    allowed
        .ns
        .run(|| {
            memcache::set_get(
                server4,
                "big",
                &vec![b'x'; BIG_VALUE],
                Duration::from_secs(2),
            )
        })
        .context("storing a 100 kB value")?;
    checkpoint()?;

    section("0. The exposure, as `mcfilter audit` sees it (exit status 4: high findings)");
    show_status(&mcf, &["audit"], 4)?;
    checkpoint()?;

    section("1. Without mcfilter: forged UDP requests make memcached flood the victim");
    let unfiltered = amplify(&lab, &attacker, &victim)?;
    ensure!(
        unfiltered > 0,
        "memcached did not answer the forged request; nothing to show"
    );
    checkpoint()?;

    section("2. Attach mcfilter to the server's eth0, allowing one client");
    let allow4 = allowed.v4.to_string();
    let allow6 = allowed.v6.to_string();
    show(
        &mcf,
        &["attach", IFACE, "--allow", &allow4, "--allow", &allow6],
    )?;
    let filtered = amplify(&lab, &attacker, &victim)?;
    ensure!(filtered == 0, "the victim still received {filtered} bytes");
    println!("   the amplification is gone: UDP to 11211 is dropped before memcached sees it");
    checkpoint()?;

    section("3. TCP: the allowed client works, the denied client cannot connect");
    for server in servers(&lab) {
        tcp_check(&allowed, "allowed", server, true)?;
        tcp_check(&denied, "denied", server, false)?;
    }
    checkpoint()?;

    section("4. Change the allow-list live (no re-attach)");
    show(
        &mcf,
        &[
            "allow",
            "add",
            &denied.v4.to_string(),
            &denied.v6.to_string(),
        ],
    )?;
    for server in servers(&lab) {
        tcp_check(&denied, "denied", server, true)?;
    }
    show(
        &mcf,
        &[
            "allow",
            "del",
            &denied.v4.to_string(),
            &denied.v6.to_string(),
        ],
    )?;
    for server in servers(&lab) {
        tcp_check(&denied, "denied", server, false)?;
    }
    show(&mcf, &["allow", "list"])?;
    checkpoint()?;

    section("5. What mcfilter counted, and the audit again (exit status 0: clean)");
    show(&mcf, &["stats"])?;
    show(&mcf, &["status"])?;
    show_status(&mcf, &["audit"], 0)?;

    section("6. Detach");
    show(&mcf, &["detach", IFACE])?;
    Ok(())
}

fn servers(lab: &Lab) -> [SocketAddr; 2] {
    [
        SocketAddr::new(lab.server.v4.into(), memcache::PORT),
        SocketAddr::new(lab.server.v6.into(), memcache::PORT),
    ]
}

/// Runs the CLI, echoing the command and its output.
fn show(mcf: &Mcfilter, args: &[&str]) -> anyhow::Result<()> {
    show_status(mcf, args, 0)
}

/// Like [`show`], for a command whose exit status carries a verdict (`audit`).
fn show_status(mcf: &Mcfilter, args: &[&str], expected: i32) -> anyhow::Result<()> {
    println!("   $ mcfilter {}", args.join(" "));
    let out = mcf.run(args);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("     {line}");
    }
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        println!("     {line}");
    }
    ensure!(
        out.status.code() == Some(expected),
        "mcfilter {} exited with {:?}, expected {expected}",
        args.join(" "),
        out.status.code()
    );
    Ok(())
}

/// The attacker forges requests from the victim's address; returns the bytes the victim got.
fn amplify(lab: &Lab, attacker: &Host, victim: &Host) -> anyhow::Result<usize> {
    let socket = victim
        .ns
        .run(|| UdpSocket::bind(("0.0.0.0", VICTIM_PORT)))
        .context("victim socket")?;
    socket.set_read_timeout(Some(Duration::from_millis(300)))?;
    let mut total = 0;
    for (id, command) in [(1u16, &b"stats\r\n"[..]), (2, &b"get big\r\n"[..])] {
        let request = memcached_udp_request(id, command);
        let frame = forged_memcached_request(victim.v4, VICTIM_PORT, lab.server.v4, id, command);
        attacker.send_frames(&[frame]);
        let received = drain(&socket);
        total += received;
        println!(
            "   attacker {} -> {}:11211/udp `{}` ({} bytes, source forged as {}): victim got {} bytes{}",
            attacker.v4,
            lab.server.v4,
            String::from_utf8_lossy(command).trim_end(),
            request.len(),
            victim.v4,
            received,
            if received > 0 {
                format!(", amplification x{}", received / request.len())
            } else {
                String::new()
            }
        );
    }
    Ok(total)
}

/// Reads until the socket is quiet for the read timeout (bounded to 3 s).
fn drain(socket: &UdpSocket) -> usize {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut buf = [0u8; 65536];
    let mut total = 0;
    while Instant::now() < deadline {
        match socket.recv(&mut buf) {
            Ok(n) => total += n,
            Err(_) => break,
        }
    }
    total
}

fn tcp_check(host: &Host, who: &str, server: SocketAddr, should_work: bool) -> anyhow::Result<()> {
    let src: IpAddr = if server.is_ipv4() {
        host.v4.into()
    } else {
        host.v6.into()
    };
    let result = host.ns.run(|| {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let attempt = memcache::set_get(server, "demo", b"hello", Duration::from_millis(300));
            if attempt.is_ok() == should_work || Instant::now() >= deadline {
                return attempt;
            }
        }
    });
    let outcome = match &result {
        Ok(()) => "set/get OK".to_owned(),
        Err(err) => format!("failed ({err})"),
    };
    println!("   {who} client {src} -> {server}: {outcome}");
    ensure!(
        result.is_ok() == should_work,
        "unexpected outcome for the {who} client"
    );
    // The denied client's failure is a dropped SYN: make sure nothing lingers.
    drop(TcpStream::connect_timeout(
        &server,
        Duration::from_millis(1),
    ));
    Ok(())
}
