//! The systemd unit under a real systemd (252, PID 1 of a container: see
//! `mcfilter_tests::container`), with every setting of `packaging/mcfilter.service` as
//! shipped: `systemctl start` returns once the filter is attached, `systemctl reload` fails on
//! a bad config and keeps the running policy, applies a good one, the service logs with levels
//! journald keeps, and `systemctl stop` leaves the filter in place.

use std::{
    fs,
    net::{SocketAddr, TcpListener},
    process::Output,
    time::{Duration, Instant},
};

use mcfilter_tests::{
    cli::binary,
    container::SystemdContainer,
    lab::{IFACE, LISTED_SOURCE, Lab, connects_from},
    privileged_test,
};

const PORT: u16 = 11211;

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn config(allow: &str) -> String {
    format!(
        "ports = [{PORT}]\nallow = [{allow}]\n[[interfaces]]\nname = \"{IFACE}\"\n\
         [metrics]\naddress = \"127.0.0.1:9911\"\n"
    )
}

#[test]
fn the_unit_under_systemd_starts_ready_reloads_safely_and_stops_leaving_the_filter() {
    privileged_test!();
    let lab = Lab::new("sdu");
    let server = &lab.server;
    // The allow-list holds 198.18.1.0/24: one host there, one outside it.
    let denied = lab.host("sdd", 2);
    let allowed = lab.listed_host("sda", 7);
    // What the unit expects where it expects it: the binary in /usr/local/bin, the config in
    // /etc/mcfilter (a directory, so the test's edits show through the read-only bind).
    let dir = std::env::temp_dir().join(mcfilter_tests::unique("sdu"));
    let bin = dir.join("bin");
    let etc = dir.join("etc");
    fs::create_dir_all(&bin).unwrap();
    fs::create_dir_all(&etc).unwrap();
    if fs::hard_link(binary(), bin.join("mcfilter")).is_err() {
        fs::copy(binary(), bin.join("mcfilter")).unwrap();
    }
    let toml = etc.join("mcfilter.toml");
    fs::write(&toml, config("\"198.18.1.0/24\"")).unwrap();
    let unit = mcfilter_tests::packaging("mcfilter.service");
    let container = SystemdContainer::boot(
        &server.ns,
        &[
            (&bin, "/usr/local/bin"),
            (&etc, "/etc/mcfilter"),
            (&unit, "/etc/systemd/system/mcfilter.service"),
        ],
    );
    let systemctl = |args: &[&str]| {
        let mut all = vec!["systemctl"];
        all.extend(args);
        container.exec(&all)
    };
    let journal = |priority: &str| {
        text(&container.exec(&[
            "journalctl",
            "--unit",
            "mcfilter",
            "--priority",
            priority,
            "--no-pager",
        ]))
    };
    let context = || {
        format!(
            "journal:\n{}\nconsole:\n{}",
            journal("debug"),
            container.console()
        )
    };
    // journald reads a service's stream on its own time: a line written before a command
    // returned may reach the journal a little later.
    let journaled = |priority: &str, line: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if journal(priority).contains(line) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    // Type=notify: start returns once the config is applied, so the filter is already there.
    let started = systemctl(&["start", "mcfilter"]);
    assert!(
        started.status.success(),
        "{}\n{}",
        text(&started),
        context()
    );
    let program = server.ns.xdp_program(IFACE);
    assert!(
        program.is_some(),
        "attached when start returned: {}",
        context()
    );
    let status = text(&systemctl(&[
        "show",
        "--property",
        "StatusText",
        "--value",
        "mcfilter",
    ]));
    assert!(status.contains(IFACE), "STATUS= {status:?}");
    assert_eq!(lab.delivered(&denied, PORT, 5), 0, "UDP to {PORT}");
    let listener = server
        .ns
        .run(|| TcpListener::bind(("0.0.0.0", PORT)).unwrap());
    let memcached = SocketAddr::from((server.v4, PORT));
    let within = Duration::from_secs(2);
    assert!(connects_from(
        &allowed.ns,
        LISTED_SOURCE.into(),
        memcached,
        within
    ));
    assert!(!connects_from(
        &denied.ns,
        denied.v4.into(),
        memcached,
        within
    ));

    // A bad config: the reload fails (ExecReload checks first), the service and its policy
    // stay, and the error reaches the journal at priority err.
    fs::write(&toml, "ports = [\n").unwrap();
    let reload = systemctl(&["reload", "mcfilter"]);
    assert!(!reload.status.success(), "{}", text(&reload));
    let active = text(&systemctl(&["is-active", "mcfilter"]));
    assert_eq!(active.trim(), "active", "{}", context());
    assert_eq!(server.ns.xdp_program(IFACE), program);
    assert_eq!(
        lab.delivered(&denied, PORT, 3),
        0,
        "UDP after a failed reload"
    );
    assert!(journaled("err", "mcfilter.toml"), "{}", context());

    // A good one: applied (the reload returns once the signal is sent; the service applies it
    // then), the denied host is allowed now.
    fs::write(&toml, config("\"198.18.1.0/24\", \"198.18.0.2\"")).unwrap();
    let reload = systemctl(&["reload", "mcfilter"]);
    assert!(reload.status.success(), "{}\n{}", text(&reload), context());
    assert!(
        connects_from(
            &denied.ns,
            denied.v4.into(),
            memcached,
            Duration::from_secs(10)
        ),
        "{}",
        context()
    );

    // Stop: the process ends, the filter stays (detach_on_exit = false).
    let stopped = systemctl(&["stop", "mcfilter"]);
    assert!(stopped.status.success(), "{}", text(&stopped));
    assert_eq!(server.ns.xdp_program(IFACE), program, "{}", context());
    assert_eq!(lab.delivered(&denied, PORT, 3), 0, "UDP after stop");
    assert!(
        journaled("info", "the filter stays attached"),
        "{}",
        context()
    );
    drop(listener);
    drop(container);
    fs::remove_dir_all(dir).unwrap();
}
