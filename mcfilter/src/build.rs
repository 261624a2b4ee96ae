//! Which build of mcfilter this is, and which one attached an interface's program: the version
//! and a hash of the XDP object, so that an upgraded binary can tell that a program it did not
//! build still runs (`status` warns; the service swaps its own in).

use std::fmt;

use mcfilter_common::Build;

/// This binary's build (the object is hashed once per process).
pub fn this() -> Build {
    static THIS: std::sync::OnceLock<Build> = std::sync::OnceLock::new();
    *THIS.get_or_init(|| {
        let mut version = [0u8; 16];
        let text = env!("CARGO_PKG_VERSION").as_bytes();
        let len = text.len().min(version.len());
        version[..len].copy_from_slice(&text[..len]);
        Build {
            version,
            object: fnv1a(crate::EBPF_OBJECT),
        }
    })
}

/// 64-bit FNV-1a: a stable fingerprint of the object (not a security measure).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A build as people read it: `0.1.0+3f2a9c1b4d5e6f70`.
pub struct Shown(pub Build);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = self
            .0
            .version
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(self.0.version.len());
        let version = String::from_utf8_lossy(&self.0.version[..end]);
        write!(f, "{version}+{:016x}", self.0.object)
    }
}

/// `mcfilter --version`'s line: the version, the commit built from, and the XDP object's hash
/// (the `+` part of a build, as `status` shows it).
pub fn version_line() -> String {
    format!(
        "{} (commit {}, XDP program {:016x})",
        env!("CARGO_PKG_VERSION"),
        env!("MCFILTER_COMMIT"),
        this().object
    )
}

/// `build` as text.
pub fn show(build: Build) -> String {
    Shown(build).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_show_their_version_and_object() {
        let build = this();
        let shown = show(build);
        assert!(
            shown.starts_with(concat!(env!("CARGO_PKG_VERSION"), "+")),
            "{shown}"
        );
        assert_eq!(shown.len(), env!("CARGO_PKG_VERSION").len() + 1 + 16);
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(this().object, fnv1a(b"another object"));
    }
}
