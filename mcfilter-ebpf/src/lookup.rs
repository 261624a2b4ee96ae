//! A benchmark's reference program, not part of the filter: `lookup` passes every packet after
//! one lookup in a map of the IPv4 fragment cache's kind, which finds its entry. Measured next
//! to the floor (`floor.rs`), it prices "one small-key lookup" in the same run. An object of its
//! own, since the floor's is also loaded by iproute2, whose libbpf refuses aya's map
//! definitions.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::LruHashMap,
    programs::XdpContext,
};
use mcfilter_common::Frag4Key;

/// A map like the IPv4 fragment cache (`mcf_frags4`), holding the one key `lookup` asks for
/// (the bench writes it before timing).
#[map(name = "ref_lookup")]
static REFERENCE: LruHashMap<Frag4Key, u32> = LruHashMap::with_max_entries(1, 0);

/// The key `lookup` asks for, in the object's global data, so that no copy of it is built.
static KEY: Frag4Key = Frag4Key {
    src: 0,
    dst: 0,
    id: 0,
    proto: 0,
    _pad: 0,
};

/// The floor plus one lookup that finds its entry: passes when it does.
#[xdp]
pub(crate) fn lookup(_ctx: XdpContext) -> u32 {
    // SAFETY: the value is only looked at for being there.
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "by value, the key would be copied to the stack first"
    )]
    let found = unsafe { REFERENCE.get(&KEY) };
    match found {
        Some(_) => xdp_action::XDP_PASS,
        None => xdp_action::XDP_ABORTED,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
