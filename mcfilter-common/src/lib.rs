//! The ABI shared by the mcfilter XDP program and its userspace: map names, the `#[repr(C)]` keys
//! and values stored in those maps, and the reason codes every verdict is counted under.
//!
//! Everything here is plain old data: `#[repr(C)]`, `Copy`, no `bool` or `Option`, explicit `_pad`
//! fields and a compile-time size check, so the kernel and userspace agree on every byte.
//! Reason codes are append-only: a code, once released, keeps its number and meaning.
#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]

mod frag;
mod iface;
pub mod map_names;
mod policy;
mod reason;
mod source;
mod table;

pub use frag::*;
pub use iface::*;
pub use policy::*;
pub use reason::*;
pub use source::*;
pub use table::*;

const _: () = {
    assert!(core::mem::size_of::<IfaceMeta>() == 32);
    assert!(core::mem::size_of::<Config>() == 8 + 8 * PORT_WORDS);
    assert!(core::mem::size_of::<Counter>() == 16);
    assert!(core::mem::size_of::<IpKey>() == 20);
    assert!(core::mem::size_of::<SourceStats>() == 40);
    assert!(core::mem::size_of::<IfaceInfo>() == 24);
    assert!(core::mem::size_of::<FragKey>() == 40);
    assert!(core::mem::size_of::<Frag4Key>() == 12);
    assert!(core::mem::size_of::<PendingSource>() == 64);
    assert!(core::mem::size_of::<EventBudget>() == 16);
    assert!(core::mem::size_of::<StrideKey>() == 20);
    assert!(core::mem::size_of::<StrideBits>() == 32);
    assert!(Reason::ALL.len() as u32 <= MAX_REASONS);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)], Copy, made only of integers and have no padding
    // (checked by the size assertions above), so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::Counter {}
    unsafe impl aya::Pod for super::IpKey {}
    unsafe impl aya::Pod for super::SourceStats {}
    unsafe impl aya::Pod for super::IfaceInfo {}
    unsafe impl aya::Pod for super::IfaceMeta {}
    unsafe impl aya::Pod for super::FragKey {}
    unsafe impl aya::Pod for super::Frag4Key {}
    unsafe impl aya::Pod for super::PendingSource {}
    unsafe impl aya::Pod for super::EventBudget {}
    unsafe impl aya::Pod for super::StrideKey {}
    unsafe impl aya::Pod for super::StrideBits {}
}

#[cfg(test)]
mod tests {
    use super::{FragClock, MAX_REASONS, Reason};

    /// Codes are the list's positions, names are distinct snake_case, and the stats array has
    /// room for every code.
    #[test]
    fn the_reason_table_is_consistent() {
        for (index, reason) in Reason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, index);
            assert_eq!(Reason::from_code(index as u32), Some(*reason));
            let name = reason.name();
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name}"
            );
            assert_eq!(Reason::ALL.iter().filter(|r| r.name() == name).count(), 1);
        }
        assert!(Reason::ALL.len() as u32 <= MAX_REASONS);
        assert!(Reason::UdpPort.is_drop() && !Reason::TcpAllowed.is_drop());
    }

    /// Linux's TICK_NSEC for each HZ it offers gives that HZ back.
    #[test]
    fn the_tick_names_the_hz() {
        for hz in [100u64, 250, 300, 1000] {
            let tick_nsec = (1_000_000_000 + hz / 2) / hz;
            assert_eq!(u64::from(FragClock::from_tick_nanos(tick_nsec).hz), hz);
        }
        assert_eq!(FragClock::from_tick_nanos(0).hz, 1_000_000_000);
    }
}
