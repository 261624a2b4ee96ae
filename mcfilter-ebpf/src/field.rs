//! Header fields wider than a byte, each read with one load of its width.
//!
//! Headers lie in the packet at whatever alignment the frame gives them (the IP header after a
//! 14-byte Ethernet header is two bytes off a word), so their multi-byte fields are byte arrays,
//! of alignment 1. A Rust read of such a field is a read of bytes, and LLVM's BPF backend, which
//! may not assume that a misaligned load works, makes it one load a byte, shifted together: a
//! port took two loads, a shift and an OR, an IPv6 address 16 loads, 12 shifts and 12 ORs. The
//! verifier does accept a misaligned load from a packet (it checks a packet's alignment only under
//! `BPF_F_STRICT_ALIGNMENT`, or on architectures without efficient unaligned access), so each
//! field here is read with one load of its width, written as inline asm: LLVM cannot split it,
//! and Rust never sees a misaligned reference to a `u16` or `u32`. The load takes the field's
//! offset from the header's start as its own offset, so reading a field costs that one
//! instruction (a byte swap more for a number).
//!
//! A field is read with [`field!`]`(header, Type, name)`, which ties the offset to the field's
//! declared type ([`Be16`], [`Be32`], [`Addr4`], [`Addr6`]), and so to the width of the load.

use core::mem::size_of;

use crate::cursor::Header;

/// A 16-bit number in network order.
#[repr(transparent)]
pub(crate) struct Be16([u8; 2]);

/// A 32-bit number in network order.
#[repr(transparent)]
pub(crate) struct Be32([u8; 4]);

/// An IPv4 address, read as the word that holds its bytes in memory order, unswapped: how the
/// maps key an address (`mcfilter_common::IpKey::addr`).
#[repr(transparent)]
pub(crate) struct Addr4([u8; 4]);

/// An IPv6 address, read as four memory-order words (see [`Addr4`]).
#[repr(transparent)]
pub(crate) struct Addr6([u8; 16]);

/// One load of `$width` ("u16" or "u32") at `$base + $off`, a constant; the loaded value in a
/// 64-bit register, zero-extended.
macro_rules! load {
    ($width:literal, $base:expr, $off:expr) => {{
        #[cfg(target_arch = "bpf")]
        {
            let value: u64;
            // One instruction, which reads the bytes it names and nothing else.
            core::arch::asm!(
                concat!("{0} = *(", $width, " *)({1} + {2})"),
                lateout(reg) value,
                in(reg) $base,
                const $off,
                options(pure, readonly, nostack, preserves_flags),
            );
            value
        }
        #[cfg(not(target_arch = "bpf"))]
        {
            // The host build (lints, unit tests): the same bytes, as a native-order number.
            let bytes = $base.add($off);
            match $width {
                "u16" => u64::from(bytes.cast::<u16>().read_unaligned()),
                _ => u64::from(bytes.cast::<u32>().read_unaligned()),
            }
        }
    }};
}

/// A field type: what it reads as, and how, at byte `OFF` of a header that starts at `base`.
pub(crate) trait Field {
    type Value;

    /// # Safety
    /// `[base + OFF, base + OFF + size_of::<Self>())` lies inside the packet.
    unsafe fn load<const OFF: usize>(base: *const u8) -> Self::Value;
}

impl Field for Be16 {
    type Value = u16;

    #[inline(always)]
    unsafe fn load<const OFF: usize>(base: *const u8) -> u16 {
        // SAFETY: the caller's.
        u16::from_be(unsafe { load!("u16", base, OFF) } as u16)
    }
}

impl Field for Be32 {
    type Value = u32;

    #[inline(always)]
    unsafe fn load<const OFF: usize>(base: *const u8) -> u32 {
        // SAFETY: the caller's.
        u32::from_be(unsafe { load!("u32", base, OFF) } as u32)
    }
}

impl Field for Addr4 {
    type Value = u32;

    #[inline(always)]
    unsafe fn load<const OFF: usize>(base: *const u8) -> u32 {
        // SAFETY: the caller's.
        unsafe { load!("u32", base, OFF) as u32 }
    }
}

impl Field for Addr6 {
    type Value = [u32; 4];

    #[inline(always)]
    unsafe fn load<const OFF: usize>(base: *const u8) -> [u32; 4] {
        // SAFETY: the caller's: the four words are the address's 16 bytes.
        unsafe {
            [
                load!("u32", base, OFF) as u32,
                load!("u32", base, OFF + 4) as u32,
                load!("u32", base, OFF + 8) as u32,
                load!("u32", base, OFF + 12) as u32,
            ]
        }
    }
}

/// Reads the field of type `F` at byte `OFF` of `header` (use [`field!`], which finds both).
#[inline(always)]
pub(crate) fn read<H: Header, F: Field, const OFF: usize>(header: &H, _field: &F) -> F::Value {
    const { assert!(OFF + size_of::<F>() <= size_of::<H>()) };
    // SAFETY: `header` came from the cursor, which checked that its `size_of::<H>()` bytes lie
    // inside the packet; the field's bytes are among them (asserted above).
    unsafe { F::load::<OFF>((header as *const H).cast()) }
}

/// `field!(header, Type, name)`: header `header`'s (a `&Type`) field `name`, read with one load
/// a word. The field's own reference only tells its type; nothing is read through it.
macro_rules! field {
    ($header:expr, $type:ty, $name:ident) => {{
        let header: &$type = $header;
        $crate::field::read::<_, _, { core::mem::offset_of!($type, $name) }>(header, &header.$name)
    }};
}
pub(crate) use field;
