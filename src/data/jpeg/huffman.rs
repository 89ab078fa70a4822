//! Huffman tables: a lookup on the next [`FAST_BITS`] bits for short codes (for AC tables the
//! entry also holds the zero run and the signed value when code and magnitude fit, as
//! stb_image's "fast AC"), a lookup on the next [`PAIR_BITS`] bits that decodes up to two AC
//! coefficients (and an end of block) at once, and the canonical decode for the rest.
//!
//! Imports `super::bits` and `super::JpegError` only.

use super::bits::{extend, Bits};
use super::JpegError;

pub const FAST_BITS: u32 = 10;

/// The window of the two-coefficient lookup: 2^11 entries of 8 bytes, 16 KB, which stays in
/// the L1 cache; at 4-6 bits per coefficient (code and magnitude) on smooth radiographs, most
/// windows hold two.
pub const PAIR_BITS: u32 = 11;

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
    /// For AC tables: [`Pair`] entries on the next PAIR_BITS bits; `None` for DC tables.
    pairs: Option<Box<[u64; 1 << PAIR_BITS]>>,
}

/// One entry of the pair lookup: the coefficients (zero, one or two) whose codes and
/// magnitudes lie wholly in the window, and whether an end of block follows them there. Packed
/// so that the decoding loop does little arithmetic per lookup:
/// - bits 0-7: the bits the entry consumes (0: not in the lookup);
/// - bits 8-15: its reach, the zigzag positions it advances plus one for an end of block (255
///   when not in the lookup, so one comparison both rejects it and bounds it by the block);
/// - bits 16-23: the positions it advances (each coefficient's zero run plus one);
/// - bits 24-27: the first coefficient's zero run; bits 28-29: the count; bit 30: end of block;
/// - bits 32-47 and 48-63: the two values.
///
/// A window that starts with a long code, a big magnitude or a run of sixteen zeros is not in
/// the lookup and is left to [`Table::decode_ac`].
#[derive(Clone, Copy)]
pub struct Pair(pub u64);

const PAIR_EOB: u64 = 1 << 30;
const NOT_IN_LOOKUP: u64 = 0xFF << 8;

impl Pair {
    fn pack(len: u32, eob: bool, coefs: &[(u32, i32)]) -> u64 {
        let adv: u64 = coefs.iter().map(|&(run, _)| run as u64 + 1).sum();
        let mut e = len as u64 | (adv + eob as u64) << 8 | adv << 16 | (coefs.len() as u64) << 28;
        if eob {
            e |= PAIR_EOB;
        }
        if let Some(&(run, v)) = coefs.first() {
            e |= (run as u64) << 24 | (v as u16 as u64) << 32;
        }
        if let Some(&(_, v)) = coefs.get(1) {
            e |= (v as u16 as u64) << 48;
        }
        e
    }

    /// Bits the whole entry consumes; 0: not in the lookup.
    #[inline(always)]
    pub fn len(self) -> u32 {
        (self.0 & 0xFF) as u32
    }
    /// Positions advanced, plus one for an end of block; 255 when not in the lookup.
    #[inline(always)]
    pub fn reach(self) -> usize {
        ((self.0 >> 8) & 0xFF) as usize
    }
    /// Positions advanced.
    #[inline(always)]
    pub fn advance(self) -> usize {
        ((self.0 >> 16) & 0xFF) as usize
    }
    /// The first coefficient's zero run (its offset from the current position).
    #[inline(always)]
    pub fn first_run(self) -> usize {
        ((self.0 >> 24) & 15) as usize
    }
    /// Coefficients decoded (0, 1 or 2).
    #[inline(always)]
    pub fn count(self) -> usize {
        ((self.0 >> 28) & 3) as usize
    }
    #[inline(always)]
    pub fn end_of_block(self) -> bool {
        self.0 & PAIR_EOB != 0
    }
    /// Zigzag positions each coefficient advances (its zero run plus one; 0 when absent).
    #[cfg(test)]
    fn steps(self) -> (usize, usize) {
        let first = if self.count() > 0 {
            self.first_run() + 1
        } else {
            0
        };
        (first, self.advance() - first)
    }
    #[inline(always)]
    pub fn values(self) -> (i16, i16) {
        ((self.0 >> 32) as i16, (self.0 >> 48) as i16)
    }
}

/// One AC symbol decoded from the top of a window of `avail` bits (held in the low bits of
/// `word`), when code and magnitude fit in it: (bits, zero run, value), or `Err(bits)` for an
/// end of block. `None`: a long code, a magnitude past the window, or a run of sixteen zeros.
fn ac_in_window(
    fast: &[u16; 1 << FAST_BITS],
    word: u32,
    avail: u32,
) -> Option<Result<(u32, u32, i32), u32>> {
    if avail == 0 {
        return None;
    }
    let top = if avail >= FAST_BITS {
        word >> (avail - FAST_BITS)
    } else {
        word << (FAST_BITS - avail)
    } & ((1 << FAST_BITS) - 1);
    let f = fast[top as usize];
    let len = (f & 0xFF) as u32;
    if f == 0 || len > avail {
        return None;
    }
    let (run, size) = ((f >> 12) as u32, ((f >> 8) & 15) as u32);
    if size == 0 {
        // Baseline: any run with size 0 other than fifteen (sixteen zeros) ends the block.
        return if run == 15 { None } else { Some(Err(len)) };
    }
    if len + size > avail {
        return None;
    }
    let bits = (word >> (avail - len - size)) & ((1 << size) - 1);
    Some(Ok((len + size, run, extend(bits as i32, size))))
}

/// The pair lookup of an AC table (see [`Pair`]).
fn pair_entries(fast: &[u16; 1 << FAST_BITS]) -> Box<[u64; 1 << PAIR_BITS]> {
    let mask = |n: u32| (1u32 << n) - 1;
    let mut out = Box::new([0u64; 1 << PAIR_BITS]);
    for (w, e) in (0u32..).zip(out.iter_mut()) {
        *e = match ac_in_window(fast, w, PAIR_BITS) {
            None => NOT_IN_LOOKUP,
            Some(Err(len)) => Pair::pack(len, true, &[]),
            Some(Ok((len, run, v))) => {
                let rest = PAIR_BITS - len;
                match ac_in_window(fast, w & mask(rest), rest) {
                    None => Pair::pack(len, false, &[(run, v)]),
                    Some(Err(len2)) => Pair::pack(len + len2, true, &[(run, v)]),
                    Some(Ok((len2, run2, v2))) => {
                        Pair::pack(len + len2, false, &[(run, v), (run2, v2)])
                    }
                }
            }
        };
    }
    out
}

impl Table {
    /// Builds a table from the 16 counts of codes per length and the symbols (a DHT segment).
    /// `ac`: an AC table, which gets the pair lookup.
    pub fn new(counts: &[u8; 16], values: &[u8], ac_class: bool) -> Result<Table, JpegError> {
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
        for (i, (&f, a)) in (0u32..).zip(fast.iter().zip(ac.iter_mut())) {
            if f == 0 {
                continue;
            }
            // The same one-symbol decode the pair lookup is built from, on a window of
            // FAST_BITS; what it leaves out (a magnitude past the window, sixteen zeros) keeps
            // its symbol for `decode_ac` to finish.
            *a = match ac_in_window(&fast, i, FAST_BITS) {
                Some(Err(len)) => END | COMPLETE | len,
                Some(Ok((len, run, value))) => {
                    ((value as u16 as u32) << 16) | run << 8 | COMPLETE | len
                }
                None => f as u32,
            };
        }
        let pairs = ac_class.then(|| pair_entries(&fast));
        Ok(Table {
            fast,
            ac,
            maxcode,
            offset,
            values: values.to_vec(),
            pairs,
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

    /// The pair lookup (see [`Pair`]); `None` for a DC table.
    pub fn pairs(&self) -> Option<&[u64; 1 << PAIR_BITS]> {
        self.pairs.as_deref()
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};

    /// An AC table with the code lengths of the standard luminance table (ITU T.81 K.5) over
    /// every baseline AC symbol, in a shuffled order, so codes of every length carry symbols of
    /// every kind.
    fn shuffled_table(seed: u64) -> (Table, rand_chacha::ChaCha8Rng) {
        let counts = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 125];
        let mut symbols = vec![0x00u8, 0xF0];
        for run in 0..16u8 {
            for size in 1..=10u8 {
                symbols.push(run << 4 | size);
            }
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        symbols.shuffle(&mut rng);
        (Table::new(&counts, &symbols, true).unwrap(), rng)
    }

    /// Bytes of the bit string `window` (PAIR_BITS bits) followed by random bits, with the
    /// stuffing a JPEG writer puts after each 0xFF.
    fn stream(window: u32, rng: &mut impl Rng) -> Vec<u8> {
        let mut raw = vec![0u8; 12];
        rng.fill(&mut raw[..]);
        let head = (window << (32 - PAIR_BITS))
            | (u32::from_be_bytes(raw[..4].try_into().unwrap()) >> PAIR_BITS);
        raw[..4].copy_from_slice(&head.to_be_bytes());
        let mut out = Vec::new();
        for b in raw {
            out.push(b);
            if b == 0xFF {
                out.push(0);
            }
        }
        out
    }

    #[test]
    fn each_pair_entry_is_what_decoding_its_symbols_one_by_one_gives() {
        let mut with_two = 0;
        for seed in 0..4 {
            let (table, mut rng) = shuffled_table(seed);
            for window in 0..1u32 << PAIR_BITS {
                let data = stream(window, &mut rng);
                let mut bits = Bits::new(&data, 0);
                bits.refill();
                let e = Pair(table.pairs().unwrap()[bits.peek(PAIR_BITS) as usize]);
                // One by one, as many symbols as lie wholly in the window (two at most, or
                // one and the end of block), stopping at sixteen zeros, which the lookup leaves
                // to the one-symbol decode.
                let mut one = bits;
                let (mut got, mut end, mut used) = (Vec::new(), false, 0);
                while got.len() < 2 && !end {
                    let before = one.count();
                    let r = table.decode_ac(&mut one);
                    let len = before - one.count();
                    if used + len > PAIR_BITS {
                        break;
                    }
                    match r {
                        Ok(None) => end = true,
                        Ok(Some((15, 0))) | Err(_) => break,
                        Ok(Some(rv)) => got.push(rv),
                    }
                    used += len;
                }
                if e.len() == 0 {
                    // Not in the lookup: its reach must fail every bound check.
                    assert_eq!(e.reach(), 255, "window {window:011b}");
                }
                if got.is_empty() && !end {
                    assert_eq!(e.len(), 0, "window {window:011b}");
                    continue;
                }
                if e.len() == 0 {
                    // Only a code longer than the short-code lookup may be left out.
                    assert_eq!(
                        table.fast[bits.peek(FAST_BITS) as usize],
                        0,
                        "window {window:011b}"
                    );
                    continue;
                }
                assert_eq!(e.count(), got.len(), "window {window:011b}");
                assert_eq!(e.end_of_block(), end, "window {window:011b}");
                assert_eq!(e.len(), used, "window {window:011b}");
                let (s1, s2) = e.steps();
                let (v1, v2) = e.values();
                let mine: Vec<(u32, i32)> = [(s1, v1), (s2, v2)][..got.len()]
                    .iter()
                    .map(|&(s, v)| (s as u32 - 1, v as i32))
                    .collect();
                assert_eq!(mine, got, "window {window:011b}");
                assert_eq!(e.reach(), s1 + s2 + end as usize, "window {window:011b}");
                with_two += (got.len() == 2) as usize;
            }
        }
        assert!(with_two > 0, "no window held two coefficients");
    }
}
