//! The packet cursor: the only code that compares a packet position with `data_end`
//! (xdp-tools' `hdr_cursor`). Parsers take headers from it one at a time. Besides the frame's
//! end it keeps a logical limit, the end of the IP datagram by its own length field, so that
//! nothing past the datagram (Ethernet padding, trailing bytes) is ever read as a header. A header
//! that does not fit is [`Reason::Truncated`].

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;
use mcfilter_common::Reason;

/// A header type that may be read straight out of packet memory.
///
/// # Safety
/// Implementors are `#[repr(C)]` and made only of `u8`, `[u8; N]` and the field types of
/// [`crate::field`] (byte arrays themselves): alignment 1, no padding, every bit pattern valid.
pub(crate) unsafe trait Header {}

/// A read position inside the packet: `[pos, limit)`, with `limit <= end` (`data_end`).
pub(crate) struct Cursor {
    pos: usize,
    limit: usize,
    end: usize,
}

impl Cursor {
    #[inline(always)]
    pub(crate) fn new(ctx: &XdpContext) -> Self {
        Cursor {
            pos: ctx.data(),
            limit: ctx.data_end(),
            end: ctx.data_end(),
        }
    }

    /// Takes the next header of type `T` and moves past it.
    #[inline(always)]
    pub(crate) fn next<T: Header>(&mut self) -> Result<&'static T, Reason> {
        let start = self.pos;
        let next = start + size_of::<T>();
        // Both checks: `end` is what the verifier needs to see, `limit` is the datagram's end.
        if next > self.end || next > self.limit {
            return Err(Reason::Truncated);
        }
        self.pos = next;
        // SAFETY: `[start, next)` lies inside the packet (checked against data_end just above);
        // `T: Header` has alignment 1 and accepts every bit pattern. The packet outlives the
        // program run, which is all `'static` means here.
        Ok(unsafe { &*(start as *const T) })
    }

    /// The next header of type `T`, without moving past it (an IP-framed packet's version).
    #[inline(always)]
    pub(crate) fn peek<T: Header>(&self) -> Result<&'static T, Reason> {
        let start = self.pos;
        let next = start + size_of::<T>();
        if next > self.end || next > self.limit {
            return Err(Reason::Truncated);
        }
        // SAFETY: as in `next`: `[start, next)` was checked against data_end just above.
        Ok(unsafe { &*(start as *const T) })
    }

    /// Moves past `len` bytes: the variable tail of a header (IPv4 options, IPv6 extension
    /// header bodies).
    #[inline(always)]
    pub(crate) fn skip(&mut self, len: usize) -> Result<(), Reason> {
        let next = self.pos + bounded(len)?;
        if next > self.end || next > self.limit {
            return Err(Reason::Truncated);
        }
        self.pos = next;
        Ok(())
    }

    /// Ends the readable region `len` bytes after the current position (an IP datagram's own
    /// length, counted from the end of its fixed header). Fails if the frame is shorter.
    #[inline(always)]
    pub(crate) fn limit(&mut self, len: usize) -> Result<(), Reason> {
        let limit = self.pos + bounded(len)?;
        if limit > self.end {
            return Err(Reason::Truncated);
        }
        self.limit = limit;
        Ok(())
    }
}

impl Cursor {
    /// The bytes from the position to the frame's end, at most [`MAX_FIELD_LEN`]: the length of
    /// a datagram whose length field does not say it (see `parse::GRO_MERGED_LEN`). Headers
    /// never reach that far, so the cap changes no verdict.
    #[inline(always)]
    pub(crate) fn remaining(&self) -> usize {
        (self.end - self.pos).min(MAX_FIELD_LEN)
    }
}

/// The largest length a header field gives the cursor: a 16-bit length (IPv4 total length,
/// IPv6 payload length); option and extension-header lengths are far shorter.
const MAX_FIELD_LEN: usize = u16::MAX as usize;

/// `len`, with a bound the verifier can see before it is added to a packet pointer.
///
/// Verifier workaround: Linux 6.12 forgets a register's bounds after a byte swap (`be16`), and
/// 6.1 already after OR-ing two bounded bytes, so `pos + len` would be pointer arithmetic with an
/// unbounded value ("math between pkt pointer and register with unbounded min value"). LLVM knows
/// the length fits 16 bits and would fold an explicit check away; [`opaque`] hides that, so the
/// comparison stays and the verifier learns the bound from it. Cost: one compare.
#[inline(always)]
fn bounded(len: usize) -> Result<usize, Reason> {
    let len = opaque(len);
    if len > MAX_FIELD_LEN {
        return Err(Reason::Truncated);
    }
    Ok(len)
}

/// `value`, unchanged, through a register LLVM cannot see into (Cilium's `barrier_data`). Unlike
/// `core::hint::black_box` it costs no stack slot, which older verifiers would track as one more
/// state to tell apart.
#[inline(always)]
fn opaque(value: usize) -> usize {
    #[cfg(target_arch = "bpf")]
    {
        let mut value = value;
        // SAFETY: an empty instruction sequence; the register is read and written unchanged.
        unsafe { core::arch::asm!("/* {0} */", inout(reg) value, options(pure, nomem, nostack)) };
        value
    }
    #[cfg(not(target_arch = "bpf"))]
    value
}
