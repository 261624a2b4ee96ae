//! The packet cursor: the only code that compares a packet position with `data_end`
//! (xdp-tools' `hdr_cursor`). Parsers take headers from it one at a time; a header that does not
//! fit in the packet is [`Reason::Malformed`].

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;
use mcfilter_common::Reason;

/// A header type that may be read straight out of packet memory.
///
/// # Safety
/// Implementors are `#[repr(C)]` and made only of `u8` and `[u8; N]` fields: alignment 1, no
/// padding, every bit pattern valid. Multi-byte fields are decoded explicitly (network order).
pub unsafe trait Header {}

/// A read position inside the packet `[pos, end)`.
pub struct Cursor {
    pos: usize,
    end: usize,
}

impl Cursor {
    #[inline(always)]
    pub fn new(ctx: &XdpContext) -> Self {
        Cursor {
            pos: ctx.data(),
            end: ctx.data_end(),
        }
    }

    /// Takes the next header of type `T` and moves past it.
    #[inline(always)]
    pub fn next<T: Header>(&mut self) -> Result<&'static T, Reason> {
        let start = self.pos;
        if start + size_of::<T>() > self.end {
            return Err(Reason::Malformed);
        }
        self.pos = start + size_of::<T>();
        // SAFETY: `[start, start + size_of::<T>())` lies inside the packet (checked against
        // data_end just above); `T: Header` has alignment 1 and accepts every bit pattern. The
        // packet outlives the program run, which is all `'static` means here.
        Ok(unsafe { &*(start as *const T) })
    }

    /// Moves past `len` bytes: the variable tail of a header (IPv4 options, IPv6 extension
    /// header bodies). Fails if the packet ends before that.
    #[inline(always)]
    pub fn skip(&mut self, len: usize) -> Result<(), Reason> {
        if self.pos + len > self.end {
            return Err(Reason::Malformed);
        }
        self.pos += len;
        Ok(())
    }
}
