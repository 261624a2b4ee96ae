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
/// Implementors are `#[repr(C)]` and made only of `u8` and `[u8; N]` fields: alignment 1, no
/// padding, every bit pattern valid. Multi-byte fields are decoded explicitly (network order).
pub unsafe trait Header {}

/// A read position inside the packet: `[pos, limit)`, with `limit <= end` (`data_end`).
pub struct Cursor {
    pos: usize,
    limit: usize,
    end: usize,
}

impl Cursor {
    #[inline(always)]
    pub fn new(ctx: &XdpContext) -> Self {
        Cursor {
            pos: ctx.data(),
            limit: ctx.data_end(),
            end: ctx.data_end(),
        }
    }

    /// Takes the next header of type `T` and moves past it.
    #[inline(always)]
    pub fn next<T: Header>(&mut self) -> Result<&'static T, Reason> {
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

    /// Moves past `len` bytes: the variable tail of a header (IPv4 options, IPv6 extension
    /// header bodies).
    #[inline(always)]
    pub fn skip(&mut self, len: usize) -> Result<(), Reason> {
        let next = self.pos + len;
        if next > self.end || next > self.limit {
            return Err(Reason::Truncated);
        }
        self.pos = next;
        Ok(())
    }

    /// Ends the readable region `len` bytes after the current position (an IP datagram's own
    /// length, counted from the end of its fixed header). Fails if the frame is shorter.
    #[inline(always)]
    pub fn limit(&mut self, len: usize) -> Result<(), Reason> {
        let limit = self.pos + len;
        if limit > self.end {
            return Err(Reason::Truncated);
        }
        self.limit = limit;
        Ok(())
    }
}
