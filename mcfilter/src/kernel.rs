//! The running kernel: its release, the features mcfilter needs of it (probed before the program
//! is loaded, so a kernel that lacks one is refused with one line naming it), and the verifier's
//! own word when it refuses the program.
//!
//! Kernel facts (the release that brought each feature): LRU hash maps 4.10, LPM tries 4.11,
//! batched map operations 5.6, the BPF ring buffer (aya-log's events) 5.8, XDP through a
//! bpf_link 5.9, `bpf_ktime_get_coarse_ns` 5.11. The oldest kernel the test matrix boots is
//! Debian 12's 6.1 (README, "Supported kernels").

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{BpfHelper, is_helper_supported, is_map_supported},
};

/// The running kernel's release (`uname -r`).
pub fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map_or_else(
        |_| "unknown".to_owned(),
        |release| release.trim().to_owned(),
    )
}

/// The kernel's IP reassembly timeouts in the calling process's network namespace, in seconds:
/// IPv4 (`net.ipv4.ipfrag_time`), IPv6 (`net.ipv6.ip6frag_time`). The program remembers a
/// dropped datagram this long ([`mcfilter_common::map_names::FRAG_TIMEOUTS`]); a timeout that
/// cannot be read (IPv6 disabled) is Linux's default.
pub fn reassembly_timeouts() -> [u32; 2] {
    ["net/ipv4/ipfrag_time", "net/ipv6/ip6frag_time"].map(|name| {
        std::fs::read_to_string(format!("/proc/sys/{name}"))
            .ok()
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(mcfilter_common::DEFAULT_FRAG_TIMEOUT_SECS)
    })
}

/// How this kernel's jiffies count time, for the fragment cache: from the resolution of its
/// coarse clocks (one tick, Linux's TICK_NSEC); Debian's 250 HZ if that cannot be read.
pub fn frag_clock() -> mcfilter_common::FragClock {
    let mut res = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `res` is a valid timespec for the call to write.
    let ok = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &raw mut res) } == 0;
    let nanos = u64::try_from(res.tv_sec)
        .ok()
        .zip(u64::try_from(res.tv_nsec).ok())
        .map(|(secs, nanos)| secs * 1_000_000_000 + nanos);
    match nanos {
        Some(nanos) if ok && nanos > 0 => mcfilter_common::FragClock::from_tick_nanos(nanos),
        _ => mcfilter_common::FragClock::DEFAULT,
    }
}

/// A kernel feature the program or the CLI uses.
#[derive(Clone, Copy, Debug)]
pub struct Feature {
    /// What it is, as the refusal names it.
    pub name: &'static str,
    /// The first Linux release that has it.
    pub since: &'static str,
    probe: Probe,
}

#[derive(Clone, Copy, Debug)]
enum Probe {
    Map(MapType),
    XdpHelper(BpfHelper),
}

/// Everything [`probe`] checks, oldest first.
pub const FEATURES: &[Feature] = &[
    Feature {
        name: "per-CPU LRU hash maps",
        since: "4.10",
        probe: Probe::Map(MapType::LruPerCpuHash),
    },
    Feature {
        name: "LPM trie maps",
        since: "4.11",
        probe: Probe::Map(MapType::LpmTrie),
    },
    Feature {
        name: "the bpf_jiffies64 helper in XDP",
        since: "5.5",
        probe: Probe::XdpHelper(BpfHelper::BPF_FUNC_jiffies64),
    },
    Feature {
        name: "the BPF ring buffer",
        since: "5.8",
        probe: Probe::Map(MapType::RingBuf),
    },
    Feature {
        name: "the bpf_ktime_get_coarse_ns helper in XDP",
        since: "5.11",
        probe: Probe::XdpHelper(BpfHelper::BPF_FUNC_ktime_get_coarse_ns),
    },
];

/// Probes every feature in [`FEATURES`]; the first one missing is the error. A probe that cannot
/// tell (its own system call failed) counts as present: loading the program will then say more.
pub fn probe() -> Result<(), crate::Error> {
    for feature in FEATURES {
        let present = match feature.probe {
            Probe::Map(map_type) => is_map_supported(map_type).unwrap_or(true),
            Probe::XdpHelper(helper) => {
                is_helper_supported(ProgramType::Xdp, helper).unwrap_or(true)
            }
        };
        if !present {
            return Err(crate::Error::MissingFeature {
                feature: feature.name,
                since: feature.since,
                release: release(),
            });
        }
    }
    Ok(())
}

/// The verifier's own reason for refusing a program: the last line of its log that is not a
/// statistic (a program too complex for it says so with the count it reached).
pub fn verifier_reason(log: &str) -> String {
    let is_statistic = |line: &str| {
        ["processed ", "verification time", "stack depth"]
            .iter()
            .any(|prefix| line.starts_with(prefix))
    };
    log.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .rev()
        .find(|line| !is_statistic(line))
        .unwrap_or("no verifier output")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_is_the_last_line_before_the_statistics() {
        let log = "0: R1=ctx() R10=fp0\n\
                   41: (0f) r4 += r3\n\
                   math between pkt pointer and register with unbounded min value is not allowed\n\
                   processed 141 insns (limit 1000000) max_states_per_insn 0 total_states 8 \
                   peak_states 8 mark_read 5\n";
        assert_eq!(
            verifier_reason(log),
            "math between pkt pointer and register with unbounded min value is not allowed"
        );
    }

    #[test]
    fn a_program_too_complex_keeps_the_count() {
        let log = "1234: (05) goto pc+1\n\
                   BPF program is too large. Processed 1000001 insn\n\
                   processed 1000001 insns (limit 1000000) max_states_per_insn 33 \
                   total_states 58330 peak_states 4500 mark_read 12\n";
        assert_eq!(
            verifier_reason(log),
            "BPF program is too large. Processed 1000001 insn"
        );
    }

    #[test]
    fn an_empty_log_says_so() {
        assert_eq!(verifier_reason(""), "no verifier output");
    }

    /// The HZ read from the coarse clock's resolution is one Linux offers.
    #[test]
    fn the_kernels_hz_is_read_from_its_tick() {
        let hz = frag_clock().hz;
        assert!([100, 250, 300, 1000].contains(&hz), "HZ {hz}");
    }

    #[test]
    fn every_feature_names_a_release() {
        for feature in FEATURES {
            let (major, minor) = feature.since.split_once('.').expect("major.minor");
            assert!(major.parse::<u32>().is_ok() && minor.parse::<u32>().is_ok());
        }
    }
}
