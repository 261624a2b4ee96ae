//! A bounded veth flood for the benchmark: a generator namespace sends one template frame N
//! times (BPF_PROG_TEST_RUN with live frames on an XDP_TX program: the kernel's own packet
//! generator, which needs no tool that works on this kernel) to a receiver namespace, on one
//! CPU. The CPU time that CPU spends, minus the generator's own (measured with the receiver's
//! interface down), is the receiver's cost per packet.

use std::{ffi::CString, time::Duration};

use aya::{
    Ebpf,
    programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
};

use crate::{
    netns::NetNs,
    packet::{ETH_P_IP, IPPROTO_UDP, NOT_FRAGMENTED, eth, ipv4, udp},
};

/// The receiver's interface.
pub const RX: &str = "rx0";
const TX: &str = "tx0";
/// The CPU generator and receiver share.
const CPU: usize = 0;

/// Two namespaces joined by a veth pair, with the generator loaded.
pub struct Flood {
    pub generator: NetNs,
    pub receiver: NetNs,
    tx_ifindex: u32,
    /// The generator programs: `tx` (one source) and `tx_random` (a random source a frame).
    tx: Ebpf,
    /// Reference programs attached to the receiver (trivial drop, or pass for the stack's
    /// own filters), detached on drop.
    attached: Option<Ebpf>,
}

/// `struct xdp_md`, the context BPF_PROG_TEST_RUN takes for live frames.
#[repr(C)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

impl Flood {
    pub fn new() -> Self {
        let generator = NetNs::new("flg");
        let receiver = NetNs::new("flr");
        crate::netns::run(std::process::Command::new("ip").args([
            "link",
            "add",
            TX,
            "address",
            "02:00:00:00:09:01",
            "netns",
            generator.name(),
            "type",
            "veth",
            "peer",
            "name",
            RX,
            "address",
            "02:00:00:00:09:02",
            "netns",
            receiver.name(),
        ]));
        generator.ip(&["addr", "add", "198.18.9.1/24", "dev", TX]);
        receiver.ip(&["addr", "add", "198.18.9.2/24", "dev", RX]);
        generator.ip(&["link", "set", TX, "up"]);
        receiver.ip(&["link", "set", RX, "up"]);
        let tx_ifindex = generator.run(|| {
            let name = CString::new(TX).expect("name");
            // SAFETY: a NUL-terminated name.
            unsafe { libc::if_nametoindex(name.as_ptr()) }
        });
        let mut tx = Ebpf::load(mcfilter::FLOOR_OBJECT).expect("load the reference programs");
        for name in ["tx", "tx_random"] {
            let program: &mut Xdp = tx.program_mut(name).expect("tx").try_into().expect("xdp");
            program.load().expect("load the generator");
        }
        Flood {
            generator,
            receiver,
            tx_ifindex,
            tx,
            attached: None,
        }
    }

    /// Attaches reference program `name` (`drop` or `floor`) to the receiver in native mode.
    pub fn attach_reference(&mut self, name: &str) {
        let mut ebpf = Ebpf::load(mcfilter::FLOOR_OBJECT).expect("load the reference programs");
        let program: &mut Xdp = ebpf
            .program_mut(name)
            .expect("program")
            .try_into()
            .expect("xdp");
        program.load().expect("load");
        self.receiver
            .run(|| program.attach(RX, XdpMode::Driver).expect("attach"));
        self.attached = Some(ebpf);
    }

    pub fn detach_reference(&mut self) {
        self.attached = None;
    }

    /// The frame: UDP to 11211 from the generator's address.
    pub fn frame() -> Vec<u8> {
        let l4 = udp(40000, 11211, b"stats\r\n");
        let mut frame = eth(
            ETH_P_IP,
            &[],
            &ipv4(
                [198, 18, 9, 1],
                [198, 18, 9, 2],
                IPPROTO_UDP,
                &[],
                NOT_FRAGMENTED,
                &l4,
            ),
        );
        frame[..6].copy_from_slice(&[0x02, 0, 0, 0, 9, 2]);
        frame[6..12].copy_from_slice(&[0x02, 0, 0, 0, 9, 1]);
        frame
    }

    /// Sends `packets` frames (from one source, or each from a random 198.18.x.y) and returns
    /// the CPU's busy nanoseconds per packet (generator and receiver together).
    pub fn run(&self, packets: u32, random_sources: bool) -> f64 {
        let frame = Self::frame();
        let name = if random_sources { "tx_random" } else { "tx" };
        let program: &Xdp = self.tx.program(name).expect("tx").try_into().expect("xdp");
        let ctx = XdpMd {
            data: 0,
            data_end: frame.len() as u32,
            data_meta: 0,
            ingress_ifindex: self.tx_ifindex,
            rx_queue_index: 0,
            egress_ifindex: 0,
        };
        // SAFETY: XdpMd is plain data; viewing it as bytes for the syscall.
        let ctx_bytes = unsafe {
            std::slice::from_raw_parts((&raw const ctx).cast::<u8>(), size_of::<XdpMd>())
        };
        self.generator.run(|| {
            crate::pin_to_cpu(CPU);
            let before = cpu_busy_ns(CPU);
            let opts = TestRunOptions {
                data_in: Some(&frame),
                ctx_in: Some(ctx_bytes),
                repeat: packets,
                attrs: TestRunAttrs::new().xdp_live_frames(64),
                ..TestRunOptions::new()
            };
            program
                .test_run(opts)
                .expect("BPF_PROG_TEST_RUN with live frames");
            // Let the receiver's softirq finish on this CPU.
            std::thread::sleep(Duration::from_millis(50));
            let after = cpu_busy_ns(CPU);
            (after - before) as f64 / f64::from(packets)
        })
    }
}

impl Default for Flood {
    fn default() -> Self {
        Self::new()
    }
}

/// Busy time of `cpu` so far (user, nice, system, irq, softirq), in nanoseconds.
fn cpu_busy_ns(cpu: usize) -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let line = stat
        .lines()
        .find(|l| l.starts_with(&format!("cpu{cpu} ")))
        .expect("the CPU's line");
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq: busy = all but idle and iowait.
    let busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6];
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    busy * 1_000_000_000 / hz
}
