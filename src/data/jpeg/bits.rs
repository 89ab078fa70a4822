//! The entropy-coded segment as a bit stream: a 64-bit buffer refilled eight bytes at a time
//! while no 0xFF byte (stuffing or a marker) is in sight, byte by byte otherwise.
//!
//! Imports `super::JpegError` only.

use super::JpegError;

/// Reads the bits of one scan. Passed by value to its slow path, so that the hot loop keeps it
/// in registers (a `&mut` to a non-inlined call would pin it in memory). Never moves past a marker: at a marker (or the end of the data)
/// it feeds zero bits and counts them, so a scan that ends early is caught by [`Bits::check`].
#[derive(Clone, Copy)]
pub struct Bits<'a> {
    data: &'a [u8],
    /// The next byte not yet in the buffer.
    pos: usize,
    /// Valid bits, most significant first; the bits below them are either zero or the correct
    /// next bits of the stream (the fast refill loads a little ahead).
    buf: u64,
    /// How many of the top bits of `buf` are valid.
    count: u32,
    /// Zero bits fed in after a marker or the end of the data.
    padding: u32,
    /// Whether a marker (or the end) has been reached.
    stopped: bool,
}

/// Whether any byte of `w` is 0xFF (the classic "has a zero byte" test on the complement).
#[inline(always)]
fn has_ff(w: u64) -> bool {
    let v = !w;
    (v.wrapping_sub(0x0101_0101_0101_0101) & !v & 0x8080_8080_8080_8080) != 0
}

impl<'a> Bits<'a> {
    pub fn new(data: &'a [u8], pos: usize) -> Bits<'a> {
        Bits {
            data,
            pos,
            buf: 0,
            count: 0,
            padding: 0,
            stopped: false,
        }
    }

    /// Tops the buffer up to at least 57 valid bits.
    #[inline(always)]
    pub fn refill(&mut self) {
        if !self.stopped && self.pos + 8 <= self.data.len() {
            let bytes: [u8; 8] = self.data[self.pos..self.pos + 8]
                .try_into()
                .expect("eight bytes");
            let w = u64::from_be_bytes(bytes);
            if !has_ff(w) {
                // Giesen's branchless refill: the bytes past the count are loaded too, and are
                // the same bits the next refill puts there.
                self.buf |= w >> self.count;
                self.pos += ((63 - self.count) >> 3) as usize;
                self.count |= 56;
                return;
            }
        }
        *self = self.refill_slow();
    }

    #[cold]
    #[inline(never)]
    fn refill_slow(mut self) -> Self {
        while self.count <= 56 {
            let mut byte = 0u8;
            if !self.stopped {
                match self.data.get(self.pos) {
                    Some(&0xFF) => match self.data.get(self.pos + 1) {
                        Some(0x00) => {
                            byte = 0xFF;
                            self.pos += 2;
                        }
                        _ => self.stopped = true,
                    },
                    Some(&b) => {
                        byte = b;
                        self.pos += 1;
                    }
                    None => self.stopped = true,
                }
            }
            if self.stopped {
                self.padding = self.padding.saturating_add(8);
            }
            // Clear whatever was loaded ahead below the count before placing the byte.
            self.buf &= !(u64::MAX >> self.count);
            self.buf |= (byte as u64) << (56 - self.count);
            self.count += 8;
        }
        self
    }

    /// The next `n` (1..=32) bits without consuming them.
    #[inline(always)]
    pub fn peek(&self, n: u32) -> u32 {
        (self.buf >> (64 - n)) as u32
    }

    #[inline(always)]
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Consumes `n` (at most `count`) bits.
    #[inline(always)]
    pub fn skip(&mut self, n: u32) {
        self.buf <<= n;
        self.count -= n;
    }

    /// Reads `n` (0..=16) bits as a JPEG magnitude of category `n` (the EXTEND of the standard).
    #[inline(always)]
    pub fn receive_extend(&mut self, n: u32) -> i32 {
        if n == 0 {
            return 0;
        }
        let v = self.peek(n) as i32;
        self.skip(n);
        extend(v, n)
    }

    /// Errs if the bits consumed so far ran past the data into the zeros fed after it.
    pub fn check(&self) -> Result<(), JpegError> {
        if self.padding > self.count {
            Err(JpegError::Truncated)
        } else {
            Ok(())
        }
    }

    /// The byte offset from which to look for the marker that ends this stretch of data.
    pub fn position(&self) -> usize {
        self.pos
    }
}

/// The signed value of the `n`-bit magnitude `v`: codes with a leading 0 are negative.
#[inline(always)]
pub fn extend(v: i32, n: u32) -> i32 {
    if v < (1 << (n - 1)) {
        v - (1 << n) + 1
    } else {
        v
    }
}

/// The offset of the next marker (0xFF then neither 0x00 nor 0xFF) at or after `from`, and its
/// code.
pub fn next_marker(data: &[u8], from: usize) -> Option<(usize, u8)> {
    let mut i = from;
    while i + 1 < data.len() {
        if data[i] == 0xFF {
            let m = data[i + 1];
            if m != 0x00 && m != 0xFF {
                return Some((i, m));
            }
        }
        i += 1;
    }
    None
}
