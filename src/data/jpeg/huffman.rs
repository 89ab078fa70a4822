//! Huffman tables: a lookup on the next [`FAST_BITS`] bits for short codes (for AC tables the
//! entry also holds the zero run and the signed value when code and magnitude fit, as
//! stb_image's "fast AC"), and the canonical decode for the rest.
//!
//! Imports `super::bits` and `super::JpegError` only.

use super::bits::{extend, Bits};
use super::JpegError;

pub const FAST_BITS: u32 = 10;

/// An entry of the AC lookup: bits 0-4 the bits to consume (0: not in the lookup), bit 5 set
/// when the entry is complete (run and value decoded), bit 6 set for end-of-block; bits 8-15
/// the run (complete) or the symbol (incomplete); bits 16-31 the signed value.
const COMPLETE: u32 = 1 << 5;
const END: u32 = 1 << 6;

pub struct Table {
    /// Symbol and code length (symbol << 8 | length) of codes up to FAST_BITS; 0 if longer.
    fast: Box<[u16; 1 << FAST_BITS]>,
    /// For AC tables: the combined entries described above.
    ac: Box<[u32; 1 << FAST_BITS]>,
    /// The largest code of each length (1-16), -1 if none; index 17 is a sentinel.
    maxcode: [i32; 18],
    /// What to add to a code of each length to index `values`.
    offset: [i32; 17],
    values: Vec<u8>,
}

impl Table {
    /// Builds a table from the 16 counts of codes per length and the symbols (a DHT segment).
    pub fn new(counts: &[u8; 16], values: &[u8]) -> Result<Table, JpegError> {
        let total: usize = counts.iter().map(|&c| c as usize).sum();
        if total == 0 || total > 256 || total != values.len() {
            return Err(JpegError::Corrupt("bad Huffman table"));
        }
        let mut fast = Box::new([0u16; 1 << FAST_BITS]);
        let mut maxcode = [-1i32; 18];
        let mut offset = [0i32; 17];
        let mut code: u32 = 0;
        let mut k = 0usize;
        for len in 1..=16u32 {
            let n = counts[len as usize - 1] as u32;
            offset[len as usize] = k as i32 - code as i32;
            if n > 0 {
                if code + n > (1 << len) {
                    return Err(JpegError::Corrupt(
                        "bad Huffman table (overfull code space)",
                    ));
                }
                for _ in 0..n {
                    if len <= FAST_BITS {
                        let shift = FAST_BITS - len;
                        let first = (code << shift) as usize;
                        for e in &mut fast[first..first + (1 << shift)] {
                            *e = (values[k] as u16) << 8 | len as u16;
                        }
                    }
                    code += 1;
                    k += 1;
                }
                maxcode[len as usize] = code as i32 - 1;
            }
            code <<= 1;
        }
        maxcode[17] = i32::MAX;
        let mut ac = Box::new([0u32; 1 << FAST_BITS]);
        for (i, (&f, a)) in fast.iter().zip(ac.iter_mut()).enumerate() {
            if f == 0 {
                continue;
            }
            let (symbol, len) = ((f >> 8) as u32, (f & 0xFF) as u32);
            let (run, size) = (symbol >> 4, symbol & 15);
            *a = if size == 0 && run != 15 {
                // End of block (any run with size 0 other than ZRL is one in baseline).
                END | COMPLETE | len
            } else if len + size <= FAST_BITS {
                let bits = (i as u32 >> (FAST_BITS - len - size)) & ((1 << size) - 1);
                let value = if size == 0 {
                    0
                } else {
                    extend(bits as i32, size)
                };
                ((value as u16 as u32) << 16) | run << 8 | COMPLETE | (len + size)
            } else {
                symbol << 8 | len
            };
        }
        Ok(Table {
            fast,
            ac,
            maxcode,
            offset,
            values: values.to_vec(),
        })
    }

    /// Decodes one symbol; the reader must hold at least 16 bits.
    #[inline(always)]
    pub fn decode(&self, bits: &mut Bits) -> Result<u8, JpegError> {
        let e = self.fast[bits.peek(FAST_BITS) as usize];
        if e != 0 {
            bits.skip((e & 0xFF) as u32);
            return Ok((e >> 8) as u8);
        }
        let (symbol, len) = self.decode_slow(bits.peek(16))?;
        bits.skip(len);
        Ok(symbol)
    }

    /// The symbol and code length of a code longer than FAST_BITS at the top of `word`, the next
    /// 16 bits (the reader is not passed, so that it can stay in registers).
    #[cold]
    #[inline(never)]
    fn decode_slow(&self, word: u32) -> Result<(u8, u32), JpegError> {
        let word = word as i32;
        let mut len = FAST_BITS + 1;
        while len <= 16 {
            let code = word >> (16 - len);
            if code <= self.maxcode[len as usize] {
                let i = code + self.offset[len as usize];
                let symbol = *self
                    .values
                    .get(i as usize)
                    .ok_or(JpegError::Corrupt("bad Huffman code"))?;
                return Ok((symbol, len));
            }
            len += 1;
        }
        Err(JpegError::Corrupt("bad Huffman code"))
    }

    /// Decodes one AC (run, value) pair: `Ok(None)` at end of block. The reader must hold at
    /// least 32 bits.
    #[inline(always)]
    pub fn decode_ac(&self, bits: &mut Bits) -> Result<Option<(u32, i32)>, JpegError> {
        let e = self.ac[bits.peek(FAST_BITS) as usize];
        if e & COMPLETE != 0 {
            bits.skip(e & 31);
            if e & END != 0 {
                return Ok(None);
            }
            return Ok(Some(((e >> 8) & 0xFF, (e as i32) >> 16)));
        }
        let symbol = if e != 0 {
            bits.skip(e & 31);
            (e >> 8) as u8
        } else {
            let (symbol, len) = self.decode_slow(bits.peek(16))?;
            bits.skip(len);
            symbol
        };
        let (run, size) = ((symbol >> 4) as u32, (symbol & 15) as u32);
        if size == 0 {
            if run == 15 {
                return Ok(Some((15, 0)));
            }
            return Ok(None);
        }
        Ok(Some((run, bits.receive_extend(size))))
    }
}
