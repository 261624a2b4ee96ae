//! A watcher of the largest packet an interface received.

use std::{ffi::CString, io, mem::size_of};

use super::{force_buffer, set_option};
use crate::netns::NetNs;

/// What a watcher's socket may hold: hundreds of the largest packets.
const WATCHER_BUFFER: usize = 64 << 20;

/// The largest packet interface `iface` of `ns` received while it was watched: a packet socket
/// sees what the stack gets, after XDP (and after GRO in skb mode).
pub struct LargestReceived {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    so_far: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    thread: std::thread::JoinHandle<Largest>,
}

/// What a [`LargestReceived`] saw.
#[derive(Debug, Clone, Copy)]
pub struct Largest {
    /// The largest received packet's length.
    pub bytes: usize,
    /// Packets the watcher's socket had no room for.
    pub missed: u32,
}

impl LargestReceived {
    pub fn watch(ns: &NetNs, iface: &str) -> Self {
        use std::os::fd::{FromRawFd, OwnedFd};
        let iface = CString::new(iface).expect("name");
        let fd = ns.run(|| {
            // SAFETY: a NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(iface.as_ptr()) };
            assert_ne!(ifindex, 0, "{iface:?}: {}", io::Error::last_os_error());
            let all = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: plain socket(2); the fd is owned below.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(all)) };
            assert!(fd >= 0, "packet socket: {}", io::Error::last_os_error());
            // SAFETY: a fresh fd, ours alone.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: sockaddr_ll is plain data; zero is a valid starting value.
            let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = all;
            addr.sll_ifindex = ifindex as i32;
            // SAFETY: `addr` is a valid sockaddr_ll for the length given.
            let rc = unsafe {
                libc::bind(
                    std::os::fd::AsRawFd::as_raw_fd(&fd),
                    (&raw const addr).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(rc, 0, "bind: {}", io::Error::last_os_error());
            let timeout = libc::timeval {
                tv_sec: 0,
                tv_usec: 100_000,
            };
            // SAFETY: timeval is plain data; the bytes are read as what they are.
            let timeout = unsafe {
                std::slice::from_raw_parts(
                    (&raw const timeout).cast::<u8>(),
                    size_of::<libc::timeval>(),
                )
            };
            set_option(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, timeout);
            // A packet socket takes a packet only while what it holds is under its buffer's
            // size: one 185 KB packet nearly fills the default. A watcher that falls behind
            // (a busy machine) must not miss the packets it is there to see.
            force_buffer(&fd, libc::SO_RCVBUFFORCE, WATCHER_BUFFER);
            fd
        });
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let so_far = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let largest_so_far = so_far.clone();
        let thread = std::thread::spawn(move || {
            let mut largest = 0;
            let mut buf = [0u8; 64];
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                // SAFETY: sockaddr_ll is plain data; zero is a valid starting value.
                let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                let mut from_len = size_of::<libc::sockaddr_ll>() as u32;
                // SAFETY: `buf` and `from` are valid for the lengths given; MSG_TRUNC makes
                // the call return the packet's real length, however little of it is copied.
                let len = unsafe {
                    libc::recvfrom(
                        std::os::fd::AsRawFd::as_raw_fd(&fd),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_TRUNC,
                        (&raw mut from).cast(),
                        &raw mut from_len,
                    )
                };
                if len > 0 && from.sll_pkttype != libc::PACKET_OUTGOING {
                    largest = largest.max(len as usize);
                    largest_so_far.fetch_max(largest, std::sync::atomic::Ordering::Relaxed);
                }
            }
            // SAFETY: tpacket_stats is plain data; zero is a valid starting value.
            let mut stats: libc::tpacket_stats = unsafe { std::mem::zeroed() };
            let mut stats_len = size_of::<libc::tpacket_stats>() as u32;
            // SAFETY: `stats` is valid for the length given.
            let rc = unsafe {
                libc::getsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(&fd),
                    libc::SOL_PACKET,
                    libc::PACKET_STATISTICS,
                    (&raw mut stats).cast(),
                    &raw mut stats_len,
                )
            };
            assert_eq!(rc, 0, "PACKET_STATISTICS: {}", io::Error::last_os_error());
            Largest {
                bytes: largest,
                missed: stats.tp_drops,
            }
        });
        LargestReceived {
            stop,
            so_far,
            thread,
        }
    }

    /// The largest packet's length so far.
    pub fn so_far(&self) -> usize {
        self.so_far.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops watching; the largest packet's length, and how many packets the watcher missed.
    pub fn largest(self) -> Largest {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("the watcher")
    }
}
