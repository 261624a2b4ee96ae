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
//! and Rust never sees a misaligned reference to a `u16` or `u32`.

/// A 16-bit field in network order.
#[repr(transparent)]
pub(crate) struct Be16([u8; 2]);

/// A 32-bit field in network order; also an IPv4 address.
#[repr(transparent)]
pub(crate) struct Be32([u8; 4]);

/// An IPv6 address: four words.
pub(crate) type Addr6 = [Be32; 4];

impl Be16 {
    /// The field's value.
    #[inline(always)]
    pub(crate) fn get(&self) -> u16 {
        u16::from_be(load_u16(self.0.as_ptr()))
    }
}

impl Be32 {
    /// The field's value.
    #[inline(always)]
    pub(crate) fn get(&self) -> u32 {
        u32::from_be(self.word())
    }

    /// The four bytes as the word that holds them in memory, unswapped: how the maps key an
    /// address (`mcfilter_common::IpKey::addr`).
    #[inline(always)]
    pub(crate) fn word(&self) -> u32 {
        load_u32(self.0.as_ptr())
    }
}

/// An IPv6 address as the four memory-order words the maps key it by.
#[inline(always)]
pub(crate) fn words(addr: &Addr6) -> [u32; 4] {
    [
        addr[0].word(),
        addr[1].word(),
        addr[2].word(),
        addr[3].word(),
    ]
}

/// Loads the two bytes at `ptr` with one instruction.
#[inline(always)]
fn load_u16(ptr: *const u8) -> u16 {
    #[cfg(target_arch = "bpf")]
    {
        let value: u64;
        // SAFETY: `ptr` is a field of a header the cursor has checked lies inside the packet;
        // the instruction reads those two bytes and nothing else.
        unsafe {
            core::arch::asm!(
                "{0} = *(u16 *)({1} + 0)",
                lateout(reg) value,
                in(reg) ptr,
                options(pure, readonly, nostack, preserves_flags),
            )
        };
        value as u16
    }
    #[cfg(not(target_arch = "bpf"))]
    // SAFETY: as above; `read_unaligned` makes no alignment assumption.
    unsafe {
        ptr.cast::<u16>().read_unaligned()
    }
}

/// Loads the four bytes at `ptr` with one instruction.
#[inline(always)]
fn load_u32(ptr: *const u8) -> u32 {
    #[cfg(target_arch = "bpf")]
    {
        let value: u64;
        // SAFETY: as in `load_u16`, for four bytes.
        unsafe {
            core::arch::asm!(
                "{0} = *(u32 *)({1} + 0)",
                lateout(reg) value,
                in(reg) ptr,
                options(pure, readonly, nostack, preserves_flags),
            )
        };
        value as u32
    }
    #[cfg(not(target_arch = "bpf"))]
    // SAFETY: as in `load_u16`.
    unsafe {
        ptr.cast::<u32>().read_unaligned()
    }
}
