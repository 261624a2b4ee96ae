//! The systemd unit's system call sandbox, played without systemd as PID 1. What systemd
//! implements with seccomp filters is loaded with libseccomp (Debian's python3-seccomp) just
//! before the service is exec'd, each as systemd 252 builds it:
//! - `SystemCallFilter=`: the unit's lines expanded with `systemd-analyze syscall-filter` (the
//!   group definitions of the systemd that would apply them), EPERM for every other call
//!   (`SystemCallErrorNumber=EPERM`), native architecture only;
//! - `MemoryDenyWriteExecute=yes`: no mapping both writable and executable, no protection
//!   change to executable;
//! - `RestrictAddressFamilies=`: sockets of the listed families only (EAFNOSUPPORT);
//! - `RestrictNamespaces=yes`: no unshare, clone or setns into a namespace (clone3 ENOSYS, so
//!   libc falls back to clone, whose flags a filter can read);
//! - `RestrictSUIDSGID=yes`: no chmod that sets the setuid or setgid bit.

use std::{collections::BTreeSet, fs, path::Path, process::Command};

use serde::Serialize;

use crate::netns::run;

/// `packaging/mcfilter.service`.
fn unit() -> String {
    fs::read_to_string(crate::packaging("mcfilter.service")).expect("the unit")
}

/// The system calls in `name` (a call, or a `@group` expanded with systemd-analyze).
fn expand(name: &str, into: &mut BTreeSet<String>) {
    let Some(group) = name.strip_prefix('@') else {
        into.insert(name.to_owned());
        return;
    };
    let out = run(Command::new("systemd-analyze").args(["syscall-filter", &format!("@{group}")]));
    // The group's name, then its members indented: calls, nested groups, # comments.
    for member in String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
    {
        expand(member, into);
    }
}

/// What the unit's seccomp-implemented settings amount to, for the script.
#[derive(Serialize)]
pub struct UnitSandbox {
    /// `SystemCallFilter=`: the allow-list lines, less the `~` lines.
    allow: BTreeSet<String>,
    /// `RestrictAddressFamilies=`, as numbers.
    address_families: Vec<u32>,
}

/// The unit's sandbox, checked to hold the settings this plays (with the values it plays).
pub fn unit_sandbox() -> UnitSandbox {
    let text = unit();
    let setting = |name: &str| -> Vec<&str> {
        text.lines()
            .filter_map(|line| line.strip_prefix(name)?.strip_prefix('='))
            .collect()
    };
    for (name, value) in [
        ("SystemCallErrorNumber", "EPERM"),
        ("SystemCallArchitectures", "native"),
        ("MemoryDenyWriteExecute", "yes"),
        ("RestrictNamespaces", "yes"),
        ("RestrictSUIDSGID", "yes"),
    ] {
        assert_eq!(setting(name), [value], "the unit's {name}=");
    }
    let address_families = setting("RestrictAddressFamilies")
        .iter()
        .flat_map(|line| line.split_whitespace())
        .map(|family| match family {
            "AF_UNIX" => libc::AF_UNIX,
            "AF_INET" => libc::AF_INET,
            "AF_INET6" => libc::AF_INET6,
            "AF_NETLINK" => libc::AF_NETLINK,
            other => panic!("an address family this does not know: {other}"),
        })
        .map(|family| u32::try_from(family).expect("a family number"))
        .collect();
    let mut allow = BTreeSet::new();
    let lines = setting("SystemCallFilter");
    assert!(
        lines.first().is_some_and(|line| !line.starts_with('~')),
        "the unit's filter starts with an allow-list: {lines:?}"
    );
    for line in lines {
        match line.strip_prefix('~') {
            Some(denied) => {
                let mut removed = BTreeSet::new();
                for name in denied.split_whitespace() {
                    expand(name, &mut removed);
                }
                allow.retain(|call| !removed.contains(call));
            }
            None => {
                for name in line.split_whitespace() {
                    expand(name, &mut allow);
                }
            }
        }
    }
    UnitSandbox {
        allow,
        address_families,
    }
}

/// A command prefix (`python3 SCRIPT SANDBOX`, the script and the sandbox as JSON written in
/// `dir`) that loads `sandbox`'s filters (a call name this architecture lacks is skipped, as
/// systemd skips it), then execs the rest of its arguments. It needs no_new_privs (or
/// CAP_SYS_ADMIN) to load them.
pub fn exec_under(sandbox: &UnitSandbox, dir: &Path) -> String {
    let script = dir.join("sandbox.py");
    let json = dir.join("sandbox.json");
    fs::write(&script, SCRIPT).expect("write the sandbox script");
    fs::write(&json, serde_json::to_string(sandbox).expect("json")).expect("write the sandbox");
    // Debian's python, where python3-seccomp lives.
    format!("/usr/bin/python3 {} {}", script.display(), json.display())
}

const SCRIPT: &str = r#"import errno, json, os, sys, seccomp
from seccomp import Arg, MASKED_EQ, EQ, GE, ERRNO
sandbox, argv = json.load(open(sys.argv[1])), sys.argv[2:]

calls = seccomp.SyscallFilter(defaction=ERRNO(errno.EPERM))
for call in sandbox["allow"]:
    try:
        calls.add_rule(seccomp.ALLOW, call)
    except RuntimeError:
        pass

rest = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
def deny(err, call, *args):
    rest.add_rule(ERRNO(err), call, *args)
# MemoryDenyWriteExecute
PROT_WRITE, PROT_EXEC, SHM_EXEC = 2, 4, 0o100000
deny(errno.EPERM, "mmap", Arg(2, MASKED_EQ, PROT_WRITE | PROT_EXEC, PROT_WRITE | PROT_EXEC))
deny(errno.EPERM, "mprotect", Arg(2, MASKED_EQ, PROT_EXEC, PROT_EXEC))
deny(errno.EPERM, "pkey_mprotect", Arg(2, MASKED_EQ, PROT_EXEC, PROT_EXEC))
deny(errno.EPERM, "shmat", Arg(2, MASKED_EQ, SHM_EXEC, SHM_EXEC))
# RestrictAddressFamilies
AF_MAX = 46
for family in range(AF_MAX):
    if family not in sandbox["address_families"]:
        deny(errno.EAFNOSUPPORT, "socket", Arg(0, EQ, family))
deny(errno.EAFNOSUPPORT, "socket", Arg(0, GE, AF_MAX))
# RestrictNamespaces
for flag in (0x20000, 0x80, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000):
    deny(errno.EPERM, "unshare", Arg(0, MASKED_EQ, flag, flag))
    deny(errno.EPERM, "clone", Arg(0, MASKED_EQ, flag, flag))
deny(errno.EPERM, "setns")
deny(errno.ENOSYS, "clone3")
# RestrictSUIDSGID
for bit in (0o4000, 0o2000):
    deny(errno.EPERM, "chmod", Arg(1, MASKED_EQ, bit, bit))
    deny(errno.EPERM, "fchmod", Arg(1, MASKED_EQ, bit, bit))
    deny(errno.EPERM, "fchmodat", Arg(2, MASKED_EQ, bit, bit))

# The allow-list last: it refuses seccomp(2) itself.
rest.load()
calls.load()
os.execv(argv[0], argv)
"#;
