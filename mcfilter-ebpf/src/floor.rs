//! The benchmarks' reference programs, not part of the filter: `floor` passes every packet and
//! does nothing else (measured next to mcfilter on the same frames, it shows what the test loop
//! itself costs); `drop` is the trivial XDP_DROP a flood is compared with; `tx` sends its frame
//! back out (XDP_TX), the flood generator.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

#[xdp]
pub(crate) fn floor(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[xdp]
pub(crate) fn drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

#[xdp]
pub(crate) fn tx(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_TX
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

/// Where the IPv4 source address's last two bytes and the header checksum sit in the flood's
/// template frame (untagged Ethernet, IPv4 without options): the generator's own frame, so
/// fixed offsets are right here, unlike in the filter.
const SRC_LOW: usize = 14 + 14;
const IP_CHECKSUM: usize = 14 + 10;

/// `tx` with a random source in 198.18.x.y for every frame (the header checksum updated
/// incrementally, RFC 1624): a spoofed-source flood.
#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "aya's #[xdp] entry point takes its context by value"
)]
pub(crate) fn tx_random(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + SRC_LOW + 2 > end {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: bounds checked against data_end above; both fields are inside the IPv4 header.
    unsafe {
        let src = (start + SRC_LOW) as *mut [u8; 2];
        let check = (start + IP_CHECKSUM) as *mut [u8; 2];
        let old = u16::from_be_bytes(*src);
        let new = aya_ebpf::helpers::bpf_get_prandom_u32() as u16;
        *src = new.to_be_bytes();
        // HC' = ~(~HC + ~m + m')
        let mut sum = u32::from(!u16::from_be_bytes(*check)) + u32::from(!old) + u32::from(new);
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        *check = (!(sum as u16)).to_be_bytes();
    }
    xdp_action::XDP_TX
}
