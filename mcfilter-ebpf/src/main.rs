//! The mcfilter XDP program: classify the packet, record the verdict, return the action.
//!
//! This is the only exit: parsers and the policy return `Result<_, Reason>`, the entry counts
//! the reason (per CPU, exact) and turns it into XDP_DROP or XDP_PASS. Nothing is logged per
//! packet.
#![no_std]
#![no_main]

mod cursor;
mod maps;
mod parse;
mod stats;
mod verdict;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use mcfilter_common::{Config, IpKey, Reason};

use crate::{cursor::Cursor, maps::CONFIG};

#[xdp]
pub fn mcfilter(ctx: XdpContext) -> u32 {
    let Some(config) = CONFIG.get(0) else {
        // Unreachable: index 0 of a one-entry array always exists.
        return xdp_action::XDP_PASS;
    };
    let (reason, source) = classify(&ctx, config);
    let dry_run = config.dry_run != 0;
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    stats::record(reason, dry_run, bytes, source);
    if reason.is_drop() && !dry_run {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

/// The reason for the packet's verdict, and its source address once the IP header is parsed.
#[inline(always)]
fn classify(ctx: &XdpContext, config: &Config) -> (Reason, Option<IpKey>) {
    let mut cursor = Cursor::new(ctx);
    let l3 = match parse::l3(&mut cursor) {
        Ok(l3) => l3,
        Err(reason) => return (reason, None),
    };
    let (Ok(reason) | Err(reason)) = verdict::judge(&mut cursor, &l3, config);
    (reason, Some(l3.src))
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
