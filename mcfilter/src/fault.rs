//! The crash tests' fault injection: the points between the steps of a change that writes state
//! (map writes, pins made or removed, a program attached) are counted, and with the
//! `fault-injection` feature a command dies like `kill -9` at the point [`CRASH_AFTER_ENV`]
//! names. The tests walk that
//! number through every step of attach, detach and allow-list changes and check that the next
//! command finds the old state or the new one. Release builds leave the feature out: then
//! [`step`] does nothing.

/// Environment variable naming the point at which the command aborts (counted from 1).
pub const CRASH_AFTER_ENV: &str = "MCFILTER_TEST_CRASH_AFTER_STEPS";

/// A point between two steps that change state: abort here if it is the one the crash test
/// names.
#[cfg(feature = "fault-injection")]
pub fn step() {
    use std::sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    };
    static CRASH_AFTER: OnceLock<Option<u64>> = OnceLock::new();
    static STEPS: AtomicU64 = AtomicU64::new(0);
    let crash_after = *CRASH_AFTER.get_or_init(|| {
        std::env::var(CRASH_AFTER_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
    });
    let done = STEPS.fetch_add(1, Ordering::Relaxed) + 1;
    if crash_after == Some(done) {
        std::process::abort();
    }
}

/// A point between two steps that change state (no fault injection in this build).
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn step() {}
