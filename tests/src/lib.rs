//! Test support for mcfilter: network namespaces and veth labs, the CLI runner, the
//! BPF_PROG_TEST_RUN harness, a packet builder, an independent verdict oracle and a memcached
//! client. The tests themselves live in `tests/`; `src/bin/demo.rs` is `cargo xtask demo`.

pub mod allowed;
pub mod cli;
pub mod container;
pub mod fixtures;
pub mod flood;
pub mod generate;
pub mod insns;
pub mod lab;
pub mod load;
pub mod memcache;
pub mod netns;
pub mod oracle;
pub mod packet;
pub mod pod;
pub mod program;
pub mod syscall_filter;
pub mod tun;
pub mod xdp_filter;

use std::sync::atomic::{AtomicU32, Ordering};

/// `path` under `packaging/` in the source tree (the unit, the manifests, the examples).
pub fn packaging(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging")
        .join(path)
}

/// Pins the calling thread to `cpu`: BPF_PROG_TEST_RUN runs the program on the caller's CPU,
/// so per-CPU state is reached through this.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET and sched_setaffinity get a valid
    // set of the right size, for this thread (pid 0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let rc = libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set);
        assert_eq!(
            rc,
            0,
            "pin a thread to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The CPUs this process may run on (its affinity mask), in order.
pub fn usable_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is the empty set; sched_getaffinity fills one of the size it
    // is given, for this thread (pid 0), and CPU_ISSET reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let rc = libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &raw mut set);
        assert_eq!(
            rc,
            0,
            "sched_getaffinity: {}",
            std::io::Error::last_os_error()
        );
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

/// Whether this process may run privileged tests. Without root it prints why the test cannot
/// run; under CI (`CI` set) that is a failure, never a silent pass.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test} needs root (CAP_BPF, CAP_NET_ADMIN) and CI must run it");
    }
    eprintln!("{test}: not run: needs root (run `cargo xtask test` as root)");
    false
}

/// The first line of a test that needs root: returns from the test (after [`privileged`] said
/// why) when it cannot run, and fails under CI. The test's name comes from the function it is
/// in, so it is never copied wrong.
#[macro_export]
macro_rules! privileged_test {
    () => {{
        fn here() {}
        let path = ::std::any::type_name_of_val(&here);
        let path = path.strip_suffix("::here").unwrap_or(path);
        let test = path.rsplit("::").next().unwrap_or(path);
        if !$crate::privileged(test) {
            return;
        }
    }};
}

/// A blocking call that a signal does not cut short. Linux fails a receive that has a timeout
/// (SO_RCVTIMEO) with EINTR whenever a signal handler runs in the process, whatever SA_RESTART
/// says (signal(7)); a test must not read that as "nothing arrived".
pub fn uninterrupted<T>(mut call: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    loop {
        match call() {
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// A name unique to this process and call: `<tag><pid><n>`, at most 15 characters so it also
/// fits interface names.
pub fn unique(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = format!("{tag}{}x{n}", std::process::id() % 1_000_000);
    assert!(name.len() <= 15, "name {name} too long; use a shorter tag");
    name
}

/// Removes a state dir and everything pinned in it (unpinning a link detaches it). Used by the
/// guards' `Drop`, so it never panics.
pub fn remove_pins(dir: &std::path::Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// A small, seeded, reproducible random generator (xorshift64*) for generated test inputs.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}
