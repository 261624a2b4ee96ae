//! A loaded program's instructions as the kernel translated them (`bpftool prog dump xlated`),
//! and the one question asked of them: is a header field wider than a byte read with one load,
//! or assembled from byte loads? LLVM's BPF backend assembles a field it may not load misaligned:
//! a byte load, then the byte shifted into place by 8, 16 or 24 bits and OR-ed with the next.
//! That shape is what [`assembled_from_bytes`] finds, by following each register from its byte
//! load to its next write.

use std::process::Command;

/// One `struct bpf_insn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

const BPF_LD_IMM64: u8 = 0x18;
const BPF_CLASS_MASK: u8 = 0x07;
const BPF_LDX: u8 = 0x01;
const BPF_ST: u8 = 0x02;
const BPF_STX: u8 = 0x03;
const BPF_ALU: u8 = 0x04;
const BPF_JMP: u8 = 0x05;
const BPF_JMP32: u8 = 0x06;
const BPF_ALU64: u8 = 0x07;
const BPF_OP_MASK: u8 = 0xf0;
const BPF_LSH: u8 = 0x60;
const BPF_MOV: u8 = 0xb0;
const BPF_CALL: u8 = 0x80;
/// `BPF_LDX | BPF_MEM | BPF_B`: a one-byte load.
pub const LDX_BYTE: u8 = 0x71;
/// `BPF_LDX | BPF_MEM | BPF_H`: a 16-bit load.
pub const LDX_HALF: u8 = 0x69;
/// `BPF_LDX | BPF_MEM | BPF_W`: a 32-bit load.
pub const LDX_WORD: u8 = 0x61;
/// `BPF_X`: the operation's source is a register.
const BPF_X: u8 = 0x08;
/// Registers a helper call clobbers (r0 its result, r1-r5 its arguments).
const CALL_CLOBBERED: std::ops::RangeInclusive<u8> = 0..=5;

/// A byte load whose value is shifted by a whole number of bytes: one byte of a wider field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteAssembly {
    /// Index of the byte load.
    pub load: usize,
    /// Index of the shift.
    pub shift: usize,
    /// Bits shifted (8, 16 or 24).
    pub bits: i32,
}

/// Decodes raw `struct bpf_insn`s (little-endian, as this machine's kernel writes them).
pub fn decode(raw: &[u8]) -> Vec<Insn> {
    assert_eq!(raw.len() % 8, 0, "instructions are 8 bytes each");
    raw.chunks_exact(8)
        .map(|b| Insn {
            code: b[0],
            dst: b[1] & 0x0f,
            src: b[1] >> 4,
            off: i16::from_le_bytes([b[2], b[3]]),
            imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        })
        .collect()
}

/// The loaded program `id`'s translated instructions.
pub fn xlated(id: u32) -> Vec<Insn> {
    let path = std::env::temp_dir().join(format!("mcfilter-{}-{id}", crate::unique("xl")));
    let out = Command::new("bpftool")
        .args(["prog", "dump", "xlated", "id", &id.to_string(), "file"])
        .arg(&path)
        .output()
        .expect("run bpftool");
    let raw = std::fs::read(&path);
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "bpftool prog dump xlated: {out:?}");
    decode(&raw.expect("bpftool wrote the instructions"))
}

/// Every byte load in `insns` whose register is next shifted left by 8, 16 or 24 bits before
/// anything else writes it (a copy carries the byte along). A straight-line reading: a jump
/// target may join paths, which can only make a byte look assembled when one path shifts it,
/// never hide an assembly.
pub fn assembled_from_bytes(insns: &[Insn]) -> Vec<ByteAssembly> {
    // For each register, the byte load its value came from, if any.
    let mut byte_of: [Option<usize>; 16] = [None; 16];
    let mut found = Vec::new();
    let mut i = 0;
    while i < insns.len() {
        let insn = insns[i];
        let dst = usize::from(insn.dst);
        let class = insn.code & BPF_CLASS_MASK;
        match class {
            _ if insn.code == BPF_LD_IMM64 => {
                byte_of[dst] = None;
                i += 1; // The second half of the 16-byte instruction.
            }
            BPF_LDX if insn.code == LDX_BYTE => byte_of[dst] = Some(i),
            BPF_LDX => byte_of[dst] = None,
            BPF_ALU | BPF_ALU64 => {
                let op = insn.code & BPF_OP_MASK;
                let by_register = insn.code & BPF_X != 0;
                match (op, by_register) {
                    (BPF_LSH, false) if matches!(insn.imm, 8 | 16 | 24) => {
                        if let Some(load) = byte_of[dst] {
                            found.push(ByteAssembly {
                                load,
                                shift: i,
                                bits: insn.imm,
                            });
                        }
                        byte_of[dst] = None;
                    }
                    (BPF_MOV, true) => byte_of[dst] = byte_of[usize::from(insn.src)],
                    _ => byte_of[dst] = None,
                }
            }
            BPF_JMP | BPF_JMP32 if insn.code & BPF_OP_MASK == BPF_CALL => {
                for reg in CALL_CLOBBERED {
                    byte_of[usize::from(reg)] = None;
                }
            }
            BPF_ST | BPF_STX | BPF_JMP | BPF_JMP32 => {}
            _ => byte_of[dst] = None,
        }
        i += 1;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            dst,
            src,
            off,
            imm,
        }
    }

    /// What LLVM made of `u16::from_be_bytes(hdr.ether_type)` before the fields were loaded
    /// whole: two byte loads, a shift, an OR.
    #[test]
    fn a_field_assembled_from_bytes_is_found() {
        let insns = [
            insn(LDX_BYTE, 4, 2, 12, 0),                // w4 = *(u8 *)(r2 + 12)
            insn(LDX_BYTE, 3, 2, 13, 0),                // w3 = *(u8 *)(r2 + 13)
            insn(BPF_ALU64 | BPF_LSH, 3, 0, 0, 8),      // r3 <<= 8
            insn(BPF_ALU64 | 0x40 | BPF_X, 3, 4, 0, 0), // r3 |= r4
        ];
        assert_eq!(
            assembled_from_bytes(&insns),
            [ByteAssembly {
                load: 1,
                shift: 2,
                bits: 8
            }]
        );
    }

    #[test]
    fn a_copied_byte_is_followed_and_an_overwritten_one_forgotten() {
        let insns = [
            insn(LDX_BYTE, 3, 7, 9, 0),                    // w3 = *(u8 *)(r7 + 9)
            insn(BPF_ALU64 | BPF_MOV | BPF_X, 5, 3, 0, 0), // r5 = r3
            insn(BPF_ALU64 | BPF_LSH, 5, 0, 0, 16),        // r5 <<= 16
            insn(LDX_BYTE, 6, 7, 0, 0),                    // w6 = *(u8 *)(r7 + 0)
            insn(BPF_ALU64 | 0x50, 6, 0, 0, 0xf0),         // r6 &= 0xf0
            insn(BPF_ALU64 | BPF_LSH, 6, 0, 0, 8),         // r6 <<= 8: no longer a loaded byte
            insn(LDX_BYTE, 1, 7, 1, 0),                    // w1 = *(u8 *)(r7 + 1)
            insn(BPF_ALU64 | BPF_LSH, 1, 0, 0, 2),         // r1 <<= 2: a length, not a byte's place
        ];
        assert_eq!(
            assembled_from_bytes(&insns),
            [ByteAssembly {
                load: 0,
                shift: 2,
                bits: 16
            }]
        );
    }

    #[test]
    fn raw_instructions_decode() {
        // r3 = *(u16 *)(r7 + 2); r0 = 0x12345678
        let raw = [
            0x69, 0x73, 0x02, 0x00, 0, 0, 0, 0, //
            0xb7, 0x00, 0x00, 0x00, 0x78, 0x56, 0x34, 0x12,
        ];
        assert_eq!(
            decode(&raw),
            [
                insn(LDX_HALF, 3, 7, 2, 0),
                insn(BPF_ALU64 | BPF_MOV, 0, 0, 0, 0x1234_5678)
            ]
        );
    }
}
