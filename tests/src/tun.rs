//! A TUN device in a test namespace, driven by the test itself: a packet written to it is
//! received by the namespace's kernel on that interface (through its XDP program, synchronously,
//! before `write` returns), and what the kernel sends out of the interface is read back. TUN
//! packets start at the IP header, as WireGuard's do.

use std::{
    fs::{File, OpenOptions},
    io::{Read, Write},
    os::{fd::AsRawFd, unix::fs::OpenOptionsExt},
    time::{Duration, Instant},
};

use crate::netns::NetNs;

/// linux/if_tun.h
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETLINK: libc::c_ulong = 0x4004_54cd;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;

/// The device, alive while this value is (it is not persistent).
pub struct Tun {
    file: File,
    pub name: String,
}

impl Tun {
    /// Creates TUN device `name` in `ns` (down, no addresses), packets without the
    /// packet-information prefix, reads non-blocking.
    pub fn create(ns: &NetNs, name: &str) -> Tun {
        // The device is made in the namespace /dev/net/tun is opened from.
        let file = ns.run(|| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open("/dev/net/tun")
                .expect("open /dev/net/tun")
        });
        // SAFETY: ifreq is plain data; zero is a valid starting value.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        assert!(
            name.len() < request.ifr_name.len(),
            "interface name too long"
        );
        for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
            *slot = byte as libc::c_char;
        }
        request.ifr_ifru.ifru_flags = IFF_TUN | IFF_NO_PI;
        // SAFETY: a TUN fd and a filled ifreq that outlives the call.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &raw mut request) };
        assert_eq!(
            rc,
            0,
            "TUNSETIFF {name}: {}",
            std::io::Error::last_os_error()
        );
        Tun {
            file,
            name: name.to_owned(),
        }
    }

    /// Gives the (down) device another link type (`ARPHRD_*`), as TUN allows: how a test makes
    /// an interface of a type this kernel has no driver for.
    pub fn set_link_type(&self, arphrd: u16) {
        // SAFETY: a TUN fd; TUNSETLINK takes the type as the argument itself.
        let rc = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                TUNSETLINK,
                libc::c_ulong::from(arphrd),
            )
        };
        assert_eq!(rc, 0, "TUNSETLINK: {}", std::io::Error::last_os_error());
    }

    /// Hands `packet` (starting at its IP header) to the kernel as received on the device.
    pub fn send(&self, packet: &[u8]) {
        let written = (&self.file).write(packet).expect("write to the TUN device");
        assert_eq!(written, packet.len(), "a whole packet");
    }

    /// Packets the kernel sent out of the device, read until one satisfies `done` or `timeout`
    /// passes; returns all of them.
    pub fn read_until(&self, done: impl Fn(&[u8]) -> bool, timeout: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut packets = Vec::new();
        let mut buf = vec![0u8; 65_536];
        loop {
            match (&self.file).read(&mut buf) {
                Ok(len) => {
                    let packet = buf[..len].to_vec();
                    let finished = done(&packet);
                    packets.push(packet);
                    if finished {
                        return packets;
                    }
                }
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return packets;
                    }
                    let mut poll = libc::pollfd {
                        fd: self.file.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    let wait = i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1);
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&raw mut poll, 1, wait) };
                }
                Err(err) => panic!("read from the TUN device: {err}"),
            }
        }
    }
}
