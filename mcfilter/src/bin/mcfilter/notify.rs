//! systemd's readiness protocol (sd_notify): `KEY=VALUE` lines in one datagram to the socket
//! systemd names in `NOTIFY_SOCKET`, for `Type=notify` and `Type=notify-reload` units. Without
//! that variable (a shell, a container) every call does nothing.
//!
//! The service says `READY=1` once its first config is applied and its metrics listen;
//! `RELOADING=1` with `MONOTONIC_USEC` when a reload starts and `READY=1` when it is done (a
//! failed one with a `STATUS=` saying so: the previous policy stays); `STOPPING=1` on the way out.

use std::{
    os::{linux::net::SocketAddrExt as _, unix::net::UnixDatagram},
    path::Path,
};

/// Where to send, when systemd asked for notifications.
pub(crate) struct Notifier {
    target: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` asks for: a path, or `@name` in the abstract namespace.
    pub(crate) fn from_env() -> Self {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|name| {
            let name = name.to_string_lossy().into_owned();
            let address = match name.strip_prefix('@') {
                Some(abstract_name) => {
                    std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)
                }
                None => std::os::unix::net::SocketAddr::from_pathname(Path::new(&name)),
            };
            match (UnixDatagram::unbound(), address) {
                (Ok(socket), Ok(address)) => Some((socket, address)),
                (Err(err), _) | (_, Err(err)) => {
                    log::warn!("NOTIFY_SOCKET={name}: {err}; systemd will not hear from mcfilter");
                    None
                }
            }
        });
        Notifier { target }
    }

    /// Ready: the first config is applied, or a reload is done; `status` says how it stands.
    pub(crate) fn ready(&self, status: &str) {
        self.send(&["READY=1".to_owned(), format!("STATUS={status}")]);
    }

    /// A reload starts, at this monotonic time (systemd matches it with the SIGHUP it sent).
    pub(crate) fn reloading(&self) {
        self.send(&[
            "RELOADING=1".to_owned(),
            format!("MONOTONIC_USEC={}", monotonic_usec()),
        ]);
    }

    /// The service is on its way out.
    pub(crate) fn stopping(&self) {
        self.send(&["STOPPING=1".to_owned()]);
    }

    fn send(&self, lines: &[String]) {
        let Some((socket, address)) = &self.target else {
            return;
        };
        // One line per key: a status never spans lines.
        let message: Vec<String> = lines.iter().map(|line| line.replace('\n', " ")).collect();
        if let Err(err) = socket.send_to_addr(message.join("\n").as_bytes(), address) {
            log::warn!("telling systemd {}: {err}", message.join(", "));
        }
    }
}

/// CLOCK_MONOTONIC in microseconds, as systemd reads it.
pub(crate) fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to write to; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut now) };
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notifier_sends_one_datagram_of_lines_to_the_named_socket() {
        let dir = std::env::temp_dir().join(format!("mcfilter-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            target: Some((
                UnixDatagram::unbound().unwrap(),
                std::os::unix::net::SocketAddr::from_pathname(&path).unwrap(),
            )),
        };
        let mut buf = [0u8; 512];
        notifier.ready("filtering eth0\nsecond line");
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(
            std::str::from_utf8(&buf[..n]).unwrap(),
            "READY=1\nSTATUS=filtering eth0 second line"
        );
        let before = monotonic_usec();
        notifier.reloading();
        let n = listener.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        let usec: u64 = text
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .expect(text)
            .parse()
            .unwrap();
        assert!(usec >= before && usec <= monotonic_usec(), "{text}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
