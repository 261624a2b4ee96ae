//! Small wrappers over the operating system: interface names, privileges, the monotonic clock.

use std::{ffi::CString, fs, io};

use crate::Error;

/// The index of interface `name` in the calling process's network namespace.
pub fn ifindex(name: &str) -> Result<u32, Error> {
    let unknown = || Error::UnknownInterface {
        name: name.to_owned(),
    };
    if name.is_empty() || name.len() >= mcfilter_common::IFNAMSIZ {
        return Err(unknown());
    }
    let c_name = CString::new(name).map_err(|_| unknown())?;
    // SAFETY: `c_name` is a valid NUL-terminated string for the duration of the call.
    match unsafe { libc::if_nametoindex(c_name.as_ptr()) } {
        0 => Err(unknown()),
        index => Ok(index),
    }
}

/// How an interface frames what it receives, as its link type (`ARPHRD_*`) says, and so which
/// of the object's programs filters it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Frames start with an Ethernet header: Ethernet NICs, veth, bridges, bonds, VXLAN,
    /// loopback.
    Ethernet,
    /// Packets start at the IP header: link type `none`, which TUN devices, WireGuard and
    /// external-mode (collect_md) GRE devices have.
    Ip,
    /// Anything else, by its link type's name. IP tunnels (`ipip`, `sit`, `gre`, `ip6tnl`,
    /// `ip6gre`) hand XDP the tunnel's outer headers before the packet (ip_gre.c pops the MAC
    /// header back to the outer IP header), PPP and InfiniBand have headers of their own: attach
    /// refuses them rather than pass what it cannot read.
    Unfiltered(&'static str),
}

impl Framing {
    /// The framing of link type `arphrd` (linux/if_arp.h).
    pub fn of(arphrd: u16) -> Self {
        match arphrd {
            1 | 772 => Framing::Ethernet,
            65534 => Framing::Ip,
            768 => Framing::Unfiltered("ipip"),
            769 => Framing::Unfiltered("ip6tnl"),
            776 => Framing::Unfiltered("sit"),
            778 => Framing::Unfiltered("gre"),
            823 => Framing::Unfiltered("ip6gre"),
            512 => Framing::Unfiltered("ppp"),
            32 => Framing::Unfiltered("infiniband"),
            _ => Framing::Unfiltered("another non-Ethernet type"),
        }
    }

    /// The program (function name in the object) that filters this framing.
    pub fn program(self) -> Option<&'static str> {
        match self {
            Framing::Ethernet => Some(mcfilter_common::PROGRAM_NAME),
            Framing::Ip => Some(mcfilter_common::PROGRAM_NAME_IP),
            Framing::Unfiltered(_) => None,
        }
    }

    /// The program that filters this framing as a component of libxdp's dispatcher (`attach
    /// --multiprog`).
    pub fn component_program(self) -> Option<&'static str> {
        match self {
            Framing::Ethernet => Some(mcfilter_common::PROGRAM_NAME_COMPONENT),
            Framing::Ip => Some(mcfilter_common::PROGRAM_NAME_IP_COMPONENT),
            Framing::Unfiltered(_) => None,
        }
    }

    /// Its name in `status` and `--json`: `ethernet`, `ip`, or the refused link type.
    pub fn name(self) -> &'static str {
        match self {
            Framing::Ethernet => "ethernet",
            Framing::Ip => "ip",
            Framing::Unfiltered(link_type) => link_type,
        }
    }
}

/// Interface `name`'s framing, from its link type (SIOCGIFHWADDR on a socket of the calling
/// process's network namespace, so it is right under `nsenter --net`, where /sys is not).
pub fn framing(name: &str) -> Result<Framing, Error> {
    // SAFETY: plain socket(2); the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::Io(io::Error::last_os_error()));
    }
    // SAFETY: ifreq is plain data; zero is a valid starting value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *slot = byte as libc::c_char;
    }
    // SAFETY: `request` names the interface (NUL-terminated: the name is shorter than
    // IFNAMSIZ, checked by `ifindex`) and has room for the answer.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR, &raw mut request) };
    let err = io::Error::last_os_error();
    // SAFETY: our fd.
    unsafe { libc::close(fd) };
    if rc != 0 {
        return Err(Error::Io(err));
    }
    // SAFETY: SIOCGIFHWADDR filled the hardware-address member of the union.
    let arphrd = unsafe { request.ifr_ifru.ifru_hwaddr.sa_family };
    Ok(Framing::of(arphrd))
}

/// The current name of interface `index`, if it still exists.
pub fn ifname(index: u32) -> Option<String> {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes if_indextoname may write.
    let ptr = unsafe { libc::if_indextoname(index, buf.as_mut_ptr().cast()) };
    if ptr.is_null() {
        return None;
    }
    Some(name_from_bytes(&buf))
}

/// A NUL-padded name buffer as a string.
pub fn name_from_bytes(bytes: &[u8]) -> String {
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..len]).into_owned()
}

/// `name` as a NUL-padded [`mcfilter_common::IFNAMSIZ`] buffer (names are checked by [`ifindex`]).
pub fn name_to_bytes(name: &str) -> [u8; mcfilter_common::IFNAMSIZ] {
    let mut buf = [0u8; mcfilter_common::IFNAMSIZ];
    let len = name.len().min(buf.len() - 1);
    buf[..len].copy_from_slice(&name.as_bytes()[..len]);
    buf
}

/// CLOCK_MONOTONIC_COARSE in nanoseconds: the clock of `bpf_ktime_get_coarse_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to; CLOCK_MONOTONIC_COARSE always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &raw mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Whether an effective capability set (the `CapEff:` hex of /proc/self/status) allows loading
/// and attaching XDP programs and using pinned maps: CAP_BPF and CAP_PERFMON (the verifier
/// needs it for the parser's packet-pointer comparisons), or CAP_SYS_ADMIN for both; and
/// CAP_NET_ADMIN.
pub fn caps_sufficient(cap_eff: u64) -> bool {
    let has = |cap: u32| cap_eff & (1u64 << cap) != 0;
    (has(CAP_BPF) || has(CAP_SYS_ADMIN))
        && (has(CAP_PERFMON) || has(CAP_SYS_ADMIN))
        && has(CAP_NET_ADMIN)
}

/// Fails with [`Error::NotPrivileged`] unless the process may use BPF and change interfaces.
pub fn require_privileges() -> Result<(), Error> {
    let status = fs::read_to_string("/proc/self/status").map_err(Error::Io)?;
    let cap_eff = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .ok_or_else(|| Error::Io(io::Error::other("no CapEff in /proc/self/status")))?;
    if caps_sufficient(cap_eff) {
        Ok(())
    } else {
        Err(Error::NotPrivileged)
    }
}

/// Every interface address in the calling process's network namespace: (interface, address).
pub fn interface_addresses() -> std::io::Result<Vec<(String, std::net::IpAddr)>> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&raw mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut found = Vec::new();
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: a node of the list getifaddrs returned, valid until freeifaddrs.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        if entry.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string.
        let name = unsafe { std::ffi::CStr::from_ptr(entry.ifa_name) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: ifa_addr is non-null and its family says which sockaddr it is.
        let addr = unsafe {
            match i32::from((*entry.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*entry.ifa_addr.cast::<libc::sockaddr_in>();
                    IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
                }
                libc::AF_INET6 => {
                    let sin6 = &*entry.ifa_addr.cast::<libc::sockaddr_in6>();
                    IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))
                }
                _ => continue,
            }
        };
        found.push((name, addr));
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(found)
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_link_type_gets_the_program_for_its_framing_or_none() {
        use super::Framing;
        use mcfilter_common::{PROGRAM_NAME, PROGRAM_NAME_IP};
        // ether, loopback: Ethernet headers.
        for ethernet in [1, 772] {
            assert_eq!(Framing::of(ethernet).program(), Some(PROGRAM_NAME));
        }
        // none: TUN, WireGuard.
        assert_eq!(Framing::of(65534).program(), Some(PROGRAM_NAME_IP));
        // ipip, ip6tnl, sit, gre, ip6gre, ppp, infiniband, ieee802.11: refused, by name.
        let refused = [768, 769, 776, 778, 823, 512, 32, 801].map(|t| Framing::of(t).name());
        assert_eq!(
            refused,
            [
                "ipip",
                "ip6tnl",
                "sit",
                "gre",
                "ip6gre",
                "ppp",
                "infiniband",
                "another non-Ethernet type"
            ]
        );
        assert!(
            [768, 778, 801]
                .iter()
                .all(|&t| Framing::of(t).program().is_none())
        );
    }

    use super::*;

    #[test]
    fn root_caps_are_enough_and_none_are_not() {
        assert!(caps_sufficient(0x000001ffffffffff));
        assert!(!caps_sufficient(0));
        assert!(!caps_sufficient(1 << CAP_NET_ADMIN));
        assert!(!caps_sufficient((1 << CAP_NET_ADMIN) | (1 << CAP_BPF)));
        assert!(caps_sufficient(
            (1 << CAP_NET_ADMIN) | (1 << CAP_BPF) | (1 << CAP_PERFMON)
        ));
        assert!(caps_sufficient((1 << CAP_NET_ADMIN) | (1 << CAP_SYS_ADMIN)));
    }

    #[test]
    fn names_round_trip_through_buffers() {
        assert_eq!(name_from_bytes(&name_to_bytes("veth0")), "veth0");
        assert_eq!(name_from_bytes(b"eth0\0\0\0"), "eth0");
    }

    #[test]
    fn bad_interface_names_are_unknown() {
        assert!(matches!(ifindex(""), Err(Error::UnknownInterface { .. })));
        assert!(matches!(
            ifindex("a-name-that-is-far-too-long"),
            Err(Error::UnknownInterface { .. })
        ));
        assert!(matches!(
            ifindex("mcf-nonexistent"),
            Err(Error::UnknownInterface { .. })
        ));
    }
}
