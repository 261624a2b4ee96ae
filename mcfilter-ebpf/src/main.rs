//! The mcfilter XDP program: classify the packet, record the verdict, return the action.
//!
//! This is the only exit: parsers and the policy return `Result<_, Reason>`, the entry counts
//! the reason (per CPU, exact) and turns it into XDP_DROP or XDP_PASS. Nothing is logged per
//! packet.
#![no_std]
#![no_main]
// The register barrier of `cursor::opaque` (inline asm is unstable for BPF; the build already
// runs with RUSTC_BOOTSTRAP=1 for `-Z build-std`).
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]
// The BPF target has no compare-and-swap, so core's atomic types offer no `fetch_add`; the
// intrinsic lowers to BPF's atomic add, as C's `__sync_fetch_and_add` does.
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "atomic_xadd, for the fragment caches' epoch"
)]

mod counters;
mod cursor;
mod events;
mod field;
mod frag;
mod maps;
mod parse;
mod stats;
mod verdict;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use mcfilter_common::{Config, IpKey, Reason};

use crate::{
    cursor::Cursor,
    maps::{CONFIG, NEXT},
    parse::{Fragment, Framing},
};

/// The entry for Ethernet-framed interfaces.
#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "aya's #[xdp] entry point takes its context by value"
)]
pub(crate) fn mcfilter(ctx: XdpContext) -> u32 {
    filter::<CHAINABLE>(&ctx, Framing::Ethernet)
}

/// The entry for interfaces whose packets start at the IP header (TUN, WireGuard).
#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "aya's #[xdp] entry point takes its context by value"
)]
pub(crate) fn mcfilter_ip(ctx: XdpContext) -> u32 {
    filter::<CHAINABLE>(&ctx, Framing::Ip)
}

/// The entry for Ethernet-framed interfaces as a component of libxdp's dispatcher (`attach
/// --multiprog`, loaded as an extension of a slot): no tail call, which the kernel's check of
/// an extension against the slot's function refuses (Linux 6.12.y and 6.14+ count a tail call
/// as changing packet data, and the slot's function does not). The dispatcher, not a tail
/// call, runs the next component.
#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "aya's #[xdp] entry point takes its context by value"
)]
pub(crate) fn mcfilter_mp(ctx: XdpContext) -> u32 {
    filter::<COMPONENT>(&ctx, Framing::Ethernet)
}

/// The IP-framed entry as a component of libxdp's dispatcher.
#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "aya's #[xdp] entry point takes its context by value"
)]
pub(crate) fn mcfilter_ip_mp(ctx: XdpContext) -> u32 {
    filter::<COMPONENT>(&ctx, Framing::Ip)
}

/// `filter`'s `CHAIN` for the interface's own programs: they hold the tail call, taken when
/// the loader sets `CHAINED`.
const CHAINABLE: bool = true;
/// `filter`'s `CHAIN` for a dispatcher's components: no tail call in the program at all.
const COMPONENT: bool = false;

/// Every entry: `framing` and `CHAIN` are constants in each, so each program holds one parser,
/// and only the programs that may chain hold the tail call.
#[inline(always)]
fn filter<const CHAIN: bool>(ctx: &XdpContext, framing: Framing) -> u32 {
    let Some(config) = CONFIG.get(0) else {
        // Unreachable: index 0 of a one-entry array always exists.
        return xdp_action::XDP_PASS;
    };
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    let (reason, source) = classify(ctx, framing, config, bytes);
    let dry_run = config.dry_run != 0;
    stats::record(ctx, reason, dry_run, bytes, source);
    if reason.is_drop() && !dry_run {
        xdp_action::XDP_DROP
    } else if CHAIN {
        pass(ctx)
    } else {
        xdp_action::XDP_PASS
    }
}

/// Set to 1 by the loader in a program chained to another (`attach --then`). Read-only data:
/// the verifier knows its value and drops the tail call from programs that do not chain, so
/// they pay nothing for it.
#[unsafe(no_mangle)]
static CHAINED: u8 = 0;

/// A passed packet: handed to the next program when chained, else XDP_PASS.
#[inline(always)]
fn pass(ctx: &XdpContext) -> u32 {
    // SAFETY: a plain read of a static; volatile so the compiler keeps the load whose value the
    // loader sets.
    if unsafe { core::ptr::read_volatile(&raw const CHAINED) } != 0 {
        // SAFETY: a tail call does not return when it succeeds; it fails (and the packet
        // passes) when the slot is empty or the chain is too long.
        unsafe { NEXT.tail_call(ctx, 0) };
    }
    xdp_action::XDP_PASS
}

/// The reason for the packet's verdict, and its source address once the IP header is parsed.
#[inline(always)]
fn classify(
    ctx: &XdpContext,
    framing: Framing,
    config: &Config,
    bytes: u64,
) -> (Reason, Option<IpKey>) {
    let mut cursor = Cursor::new(ctx);
    let mut ip = match parse::ip(&mut cursor, framing) {
        Ok(ip) => ip,
        Err(reason) => return (reason, None),
    };
    let upper = parse::upper_layer(&mut cursor, &mut ip);
    let reason = match (upper, ip.frag) {
        (Err(reason), _) => reason,
        (Ok(_), Fragment::Later) => ip.datagram().later(),
        (Ok(proto), _) => match verdict::judge(&mut cursor, proto, &ip.src, config) {
            Ok(reason) | Err(reason) => reason,
        },
    };
    if ip.frag == Fragment::First {
        // A first fragment that cannot show its ports is dropped under a reason of its own.
        let reason = match reason {
            Reason::Truncated => Reason::ShortFirstFragment,
            reason => reason,
        };
        ip.datagram().remember(ctx, reason, bytes);
        return (reason, Some(ip.src));
    }
    (reason, Some(ip.src))
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
