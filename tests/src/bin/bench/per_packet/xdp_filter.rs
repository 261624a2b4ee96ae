//! xdp-filter, the reference the per-packet classes are measured against.

use std::process::Command;

use mcfilter_tests::{netns::NetNs, program::Pinned};

/// xdp-filter (xdp-tools, Debian) with its default features, dropping UDP and TCP to 11211,
/// loaded on a veth in a namespace of its own without libxdp's dispatcher and pinned so that
/// the same frames can be run through it. Removed on drop.
pub(super) struct XdpFilter {
    ns: NetNs,
    pin: std::path::PathBuf,
    pub(super) program: Pinned,
}

impl XdpFilter {
    pub(super) fn load() -> Self {
        let ns = NetNs::new("xdpf");
        ns.ip(&["link", "add", "xf0", "type", "veth", "peer", "name", "xf1"]);
        ns.ip(&["link", "set", "xf0", "up"]);
        let run = |args: &[&str]| {
            let out = ns
                .command("xdp-filter")
                .args(args)
                .env("LIBXDP_SKIP_DISPATCHER", "1")
                .output()
                .expect("run xdp-filter (Debian package xdp-tools)");
            assert!(out.status.success(), "xdp-filter {args:?}: {out:?}");
        };
        run(&["load", "xf0", "--mode", "skb"]);
        run(&["port", "11211", "--proto", "udp", "--mode", "dst"]);
        run(&["port", "11211", "--proto", "tcp", "--mode", "dst"]);
        let link = ns
            .command("ip")
            .args(["-j", "link", "show", "xf0"])
            .output()
            .expect("ip");
        let link: serde_json::Value = serde_json::from_slice(&link.stdout).expect("ip -j");
        let id = link[0]["xdp"]["prog"]["id"]
            .as_u64()
            .expect("xdp-filter's program id");
        let pin = std::path::PathBuf::from("/sys/fs/bpf").join(mcfilter_tests::unique("xdpf"));
        let out = Command::new("bpftool")
            .args(["prog", "pin", "id", &id.to_string()])
            .arg(&pin)
            .output()
            .expect("run bpftool");
        assert!(out.status.success(), "bpftool prog pin: {out:?}");
        let program = Pinned::open(&pin);
        XdpFilter { ns, pin, program }
    }
}

impl Drop for XdpFilter {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.pin);
        let _ = self
            .ns
            .command("xdp-filter")
            .args(["unload", "xf0"])
            .output();
    }
}
