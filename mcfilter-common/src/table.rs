//! The allow-list's lookup tables: what the program consults per packet, at a cost that does
//! not depend on the list's size. There are no deny entries (any match allows), so no
//! longest-prefix match is needed, only "is any entry's prefix a prefix of this address":
//!
//! - IPv4 networks of /24 or shorter set a bit per /24 in a direct-indexed bitmap
//!   (`mcf_allow_blocks`, [`BLOCK_WHOLE`]); a /24 holding longer entries has its second bit set
//!   ([`BLOCK_LONGER`]), and those entries are bits in a 256-bit map of the /24's addresses in
//!   the stride table. One array lookup answers for a denied source or a listed /24, a second
//!   (hash) lookup for a source in a /24 with longer entries.
//! - IPv6 networks are kept by stride: an entry of length `L` lives under the first
//!   `8 * stride` bits of its prefix ([`stride_of`]), as the bits of the next byte it covers.
//!   A source is looked up once per stride in use ([`TABLE_SLOT_V6_STRIDES`]): at most
//!   [`V6_STRIDES`] hash lookups however long the list.
//!
//! Both families' stride entries share one hash map keyed by [`StrideKey`], looked up by the
//! same code, behind a Bloom filter of one hash (`mcf_allow_bloom`, [`StrideKey::bloom_bit`]):
//! a stride whose bit is clear holds no entry for the source, so it costs a hash of the key
//! and an array lookup, not a hash map lookup. A source that no entry allows then costs no
//! hash map lookup at all (but for the filter's rare false positives), and one that an entry
//! allows about one. The trie (`mcf_allow`) keeps the list itself; the tables are derived from it by
//! userspace and used while [`TABLE_SLOT_READY`] says they are whole.

use crate::{FAMILY_V4, IpKey};

/// /24s in the IPv4 space: the blocks of the bitmap.
pub const V4_BLOCKS: u32 = 1 << 24;
/// Bits the bitmap keeps per /24.
pub const BLOCK_BITS: u32 = 2;
/// /24s per 64-bit word of the bitmap.
pub const BLOCKS_PER_WORD: u32 = 64 / BLOCK_BITS;
/// Words of the bitmap (`mcf_allow_blocks`): 4 MiB.
pub const BLOCK_WORDS: u32 = V4_BLOCKS / BLOCKS_PER_WORD;
/// A /24's bit: the whole /24 is allowed (an entry of /24 or shorter covers it).
pub const BLOCK_WHOLE: u64 = 0b01;
/// A /24's bit: some of its addresses are allowed by longer entries (/25 to /32), kept in the
/// stride table under [`StrideKey::V4_LONGER`].
pub const BLOCK_LONGER: u64 = 0b10;

/// Bits of a stride: an entry's prefix beyond its stride's bytes is one byte.
pub const STRIDE_BITS: u32 = 8;
/// IPv6 strides: 128 bits in bytes.
pub const V6_STRIDES: usize = 16;
/// The IPv4 stride of entries longer than /24.
pub const V4_LONGER_STRIDE: usize = 3;

/// log2 of the bits of the stride table's Bloom filter (`mcf_allow_bloom`): 2^23 bits, 1 MiB, so a
/// million stride entries set about one bit in nine.
pub const BLOOM_BITS_LOG2: u32 = 23;
/// Words of the stride table's Bloom filter.
pub const BLOOM_WORDS: u32 = 1 << (BLOOM_BITS_LOG2 - 6);

/// `mcf_allow_tables` slot: non-zero while the tables hold exactly the list (or, during a
/// change, both lists); the program uses the trie otherwise.
pub const TABLE_SLOT_READY: u32 = 0;
/// `mcf_allow_tables` slot: the IPv6 strides in use, bit `s` for stride `s`.
pub const TABLE_SLOT_V6_STRIDES: u32 = 1;
/// Slots of `mcf_allow_tables`.
pub const TABLE_SLOTS: u32 = 2;

/// The bitmap word and shift of the /24 `block` (an IPv4 address shifted right by 8).
#[inline(always)]
pub const fn block_position(block: u32) -> (u32, u32) {
    (
        block / BLOCKS_PER_WORD,
        (block % BLOCKS_PER_WORD) * BLOCK_BITS,
    )
}

/// The stride of a prefix length: the whole bytes in front of the byte the entry ends in
/// (a /0 and a /1 to /8 both have stride 0).
#[inline(always)]
pub const fn stride_of(prefix_len: u8) -> usize {
    (prefix_len.saturating_sub(1) / STRIDE_BITS as u8) as usize
}

/// A key of the stride table: a family, a stride and the source's first `stride` bytes.
/// 20 bytes in words, like [`IpKey`], so the kernel hashes it with jhash2.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StrideKey {
    /// `family << 8 | stride`.
    pub tag: u32,
    /// The address's first `stride` bytes in memory order (as [`IpKey::addr`]), the rest zero.
    pub addr: [u32; 4],
}

/// A value of the stride table: bit `b` (word `b / 64`, bit `b % 64`) is set when the
/// addresses whose byte after the stride is `b` are allowed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StrideBits {
    /// 256 bits.
    pub words: [u64; 4],
}

impl StrideBits {
    /// Whether byte value `b` is allowed.
    #[inline(always)]
    pub const fn has(&self, b: u8) -> bool {
        self.words[(b >> 6) as usize] & (1 << (b & 63)) != 0
    }

    /// Allows byte values `first..first + count`.
    pub fn set_range(&mut self, first: u8, count: u32) {
        for b in u32::from(first)..u32::from(first) + count {
            self.words[(b >> 6) as usize] |= 1 << (b & 63);
        }
    }

    /// The bits of both.
    #[must_use]
    pub fn union(&self, other: &Self) -> Self {
        let mut words = self.words;
        for (w, o) in words.iter_mut().zip(other.words) {
            *w |= o;
        }
        StrideBits { words }
    }
}

impl StrideKey {
    /// The key of IPv4 /24s with longer entries.
    pub const V4_LONGER: u32 = (FAMILY_V4 as u32) << 8 | V4_LONGER_STRIDE as u32;

    /// The key under which `src`'s stride `stride` is kept, and the byte after the stride.
    /// `stride` is a constant where the program calls it, so the masks fold away.
    #[inline(always)]
    pub const fn of(src: &IpKey, stride: usize) -> (Self, u8) {
        let mut addr = [0u32; 4];
        let mut word = 0;
        while word < 4 {
            addr[word] = src.addr[word] & kept_bytes_mask(stride, word);
            word += 1;
        }
        let next = src.addr[stride / 4].to_ne_bytes()[stride % 4];
        (
            StrideKey {
                tag: src.family << 8 | stride as u32,
                addr,
            },
            next,
        )
    }

    /// The word and bit of this key in the stride table's Bloom filter: a multiplicative hash of
    /// its words, the same in the program and in userspace.
    #[inline(always)]
    pub const fn bloom_bit(&self) -> (u32, u32) {
        let mut hash = self.tag as u64;
        let mut word = 0;
        while word < 4 {
            hash = (hash ^ self.addr[word] as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            hash ^= hash >> 29;
            word += 1;
        }
        let bit = (hash >> (64 - BLOOM_BITS_LOG2)) as u32;
        (bit / 64, bit % 64)
    }

    /// The family this key belongs to.
    pub const fn family(&self) -> u8 {
        (self.tag >> 8) as u8
    }

    /// The key's stride.
    pub const fn stride(&self) -> usize {
        (self.tag & 0xff) as usize
    }
}

/// The mask of word `word` of an address (memory order) that keeps its first `bytes` bytes.
const fn kept_bytes_mask(bytes: usize, word: usize) -> u32 {
    let mut mask = [0u8; 4];
    let mut i = 0;
    while i < 4 {
        if word * 4 + i < bytes {
            mask[i] = 0xff;
        }
        i += 1;
    }
    u32::from_ne_bytes(mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FAMILY_V6;

    #[test]
    fn strides_cover_their_lengths() {
        assert_eq!(stride_of(0), 0);
        assert_eq!(stride_of(8), 0);
        assert_eq!(stride_of(9), 1);
        assert_eq!(stride_of(32), 3);
        assert_eq!(stride_of(48), 5);
        assert_eq!(stride_of(128), 15);
    }

    #[test]
    fn a_key_keeps_the_strides_bytes_and_names_the_next() {
        let src = IpKey::v6([
            0x20, 0x01, 0x0d, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
        ]);
        let (key, next) = StrideKey::of(&src, 5);
        assert_eq!(next, 2);
        assert_eq!(key.family(), FAMILY_V6);
        assert_eq!(key.stride(), 5);
        let kept = IpKey::v6([0x20, 0x01, 0x0d, 0xb8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(key.addr, kept.addr);
        let (key, next) = StrideKey::of(&IpKey::v4([198, 18, 7, 9]), V4_LONGER_STRIDE);
        assert_eq!((key.tag, next), (StrideKey::V4_LONGER, 9));
        assert_eq!(key.addr, IpKey::v4([198, 18, 7, 0]).addr);
    }

    #[test]
    fn the_bloom_filter_spreads_keys() {
        let mut words = [0u32; 64];
        for i in 0..64 * 64u32 {
            let (key, _) = StrideKey::of(&IpKey::v4((i << 8).to_be_bytes()), V4_LONGER_STRIDE);
            let (word, bit) = key.bloom_bit();
            assert!(word < BLOOM_WORDS && bit < 64);
            words[(word % 64) as usize] += 1;
        }
        // 4096 /24s over 64 groups of words: none empty, none with three times its share.
        assert!(words.iter().all(|&n| n > 0 && n < 192), "{words:?}");
    }

    #[test]
    fn stride_bits_set_and_test() {
        let mut bits = StrideBits::default();
        bits.set_range(62, 4);
        assert!(!bits.has(61) && bits.has(62) && bits.has(65) && !bits.has(66));
        let mut all = StrideBits::default();
        all.set_range(0, 256);
        assert!(all.has(0) && all.has(255));
        assert_eq!(bits.union(&all), all);
    }
}
