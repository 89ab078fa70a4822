//! The secure-computation primitives over replicated shares. All functions are batched: one
//! call on a vector costs the same number of rounds as on one element.
//!
//! Round costs: [`mul`] 1, [`trunc`] 2, [`select`] 2; [`msb`] `2 + ceil(log2(k - 1))` at a
//! width of `k` bits (8 at the full 64, 7 at 24), [`relu`] and [`max`] 2 more (per
//! [`RELU_SLICE`] elements).
//!
//! Imports `super::{bits, context, error, share, transport}` only; never `net` or the party layer.

use super::bits;
use super::context::Party;
use super::error::{MpcError, Result};
use super::share::{zip_map, ArithShare, BitShare, BoolWords, PAR_MIN};
use super::transport::Transport;
use rayon::prelude::*;

/// Turns this party's additive part `z` of a 3-out-of-3 sharing into a replicated share: add a
/// fresh zero-sharing (so the part is uniformly random), pass it to the previous party and
/// receive the next party's part. One round, one word per element sent by every party.
pub fn reshare<T: Transport>(p: &mut Party<T>, z: Vec<u64>) -> Result<ArithShare> {
    let alpha = p.prg().zero_arith(z.len());
    let z = zip_map(&z, &alpha, u64::wrapping_add);
    let next = p.pass_to_prev(&z)?;
    Ok(ArithShare::from_parts(z, next))
}

/// Turns an additive sharing `z = z_1 + z_2` held by parties 1 and 2 alone (party 0 holds
/// nothing) into a replicated share, in one round with two words per element instead of the
/// three of [`reshare`]. `z` is ignored at party 0. See [`from_two`].
pub fn reshare_from_two<T: Transport>(p: &mut Party<T>, z: Vec<u64>) -> Result<ArithShare> {
    let (own, next) = from_two(p, z, u64::wrapping_sub, u64::wrapping_add)?;
    Ok(ArithShare::from_parts(own, next))
}

/// [`reshare_from_two`] for a boolean sharing `z = z_1 ^ z_2`.
fn bool_from_two<T: Transport>(p: &mut Party<T>, z: Vec<u64>) -> Result<BoolWords> {
    let xor = |a: u64, b: u64| a ^ b;
    let (own, next) = from_two(p, z, xor, xor)?;
    Ok(BoolWords { own, next })
}

/// This party's (own, next) components of a replicated sharing of `z_1 (+) z_2`, where `(+)`
/// is `add` and `remove` undoes it. Components `c_0` and `c_1` are drawn from the pairwise
/// streams that party 0 shares with party 2 and with party 1; `c_2 = z - c_0 - c_1` is put
/// together by its two holders, parties 1 and 2: party 1 sends `z_1 - c_1` to party 2 and
/// party 2 sends `z_2 - c_0` to party 1. Each receiver lacks the stream that masks what it
/// receives (party 2 never holds `c_1`'s stream, party 1 never holds `c_0`'s), so both see
/// uniformly random words, and party 0 sees nothing. Each stream is drawn here by exactly its
/// two holders, the same number of words, so the streams stay in step.
fn from_two<T: Transport>(
    p: &mut Party<T>,
    z: Vec<u64>,
    remove: impl Fn(u64, u64) -> u64 + Sync,
    add: impl Fn(u64, u64) -> u64 + Sync,
) -> Result<(Vec<u64>, Vec<u64>)> {
    let id = p.id();
    let n = z.len();
    let parts = match id.index() {
        0 => {
            let c1 = p.prg().common_with_next(n);
            let c0 = p.prg().common_with_prev(n);
            (c0, c1)
        }
        1 => {
            let c1 = p.prg().common_with_prev(n);
            let mine = zip_map(&z, &c1, &remove);
            p.send_words(id.next(), &mine)?;
            let theirs = p.recv_words(id.next(), n)?;
            (c1, zip_map(&mine, &theirs, &add))
        }
        _ => {
            let c0 = p.prg().common_with_next(n);
            let mine = zip_map(&z, &c0, &remove);
            p.send_words(id.prev(), &mine)?;
            let theirs = p.recv_words(id.prev(), n)?;
            (zip_map(&mine, &theirs, &add), c0)
        }
    };
    p.end_round();
    Ok(parts)
}

/// Share of the element-wise ring product `x * y` (no fixed-point truncation): the three local
/// cross terms `x_i y_i + x_i y_{i+1} + x_{i+1} y_i`, then [`reshare`].
pub fn mul<T: Transport>(p: &mut Party<T>, x: &ArithShare, y: &ArithShare) -> Result<ArithShare> {
    if x.len() != y.len() {
        return Err(MpcError::mismatch(
            "multiplication operand length",
            x.len(),
            y.len(),
        ));
    }
    let cross = |e: usize| {
        let (a, an, b, bn) = (x.own()[e], x.next()[e], y.own()[e], y.next()[e]);
        a.wrapping_mul(b)
            .wrapping_add(a.wrapping_mul(bn))
            .wrapping_add(an.wrapping_mul(b))
    };
    reshare(p, collect_par(x.len(), cross))
}

/// Largest truncation [`trunc`] supports: the offset `2^62` must be a multiple of `2^bits`.
pub const MAX_TRUNC_BITS: u32 = 62;

/// The values [`trunc`] is exact on (up to one unit in the last place): `-2^62 <= x < 2^62`.
/// Outside it the result is wrong, so [`crate::mpc::fixed`] keeps every value far inside (the
/// four models stay below `2^41`).
pub const TRUNC_RANGE: (i64, i64) = (-(1i64 << 62), 1i64 << 62);

/// Truncation by `bits` (division by `2^bits`) with no failure probability: for every `x` in
/// [`TRUNC_RANGE`] the result is `floor(x / 2^bits)` or one more (stochastic rounding; the
/// expected result is `(x + 1) / 2^bits`). 2 rounds; party 0 sends the low `bits` bits (rounded
/// up to whole bytes) per element in the first, every party one word in the second (a
/// resharing).
///
/// Why exact: the offset `O = 2^62` makes `x' = x + O` lie in `[0, 2^63)`. Split it as
/// `x' = A + B (mod 2^64)` with `A = x_0 + x_1 + O` (party 0) and `B = x_2` (parties 1 and 2).
/// As integers `A + B = x' + w 2^64` with the wrap bit `w` equal to `msb(A) OR msb(B)`: if both
/// are below `2^63` the sum is below `2^64`, and if either is not, the sum is at least
/// `2^63 > x'`, so it must be `x' + 2^64`. Hence, with integer quotients,
/// `A/2^d + B/2^d - w 2^(64-d) = floor(x' / 2^d) - c` where the carry `c` in {0, 1} comes from
/// the low bits; adding `1 - O/2^d` gives `floor(x / 2^d) + 1 - c`. `w = a + b - ab` with
/// `a = msb(A)` known to party 0 and `b = msb(B)` to parties 1 and 2; the product is one
/// masked word: party 0 sends `a + rho` to party 1 (`rho` drawn with party 2, so party 1 sees a
/// uniformly random word), party 1 keeps `b (a + rho)`, party 2 keeps `-b rho`. Only the
/// product mod `2^d` matters (it is multiplied by `2^(64-d)`). The three additive parts are
/// then reshared with a fresh zero-sharing, so no party sees anything but random words.
///
/// The probabilistic one-round truncation this replaces failed with probability `|x| / 2^64`
/// per element (about one full-width VGG16-2 image in 300); the tests
/// `trunc_is_exact_at_the_range_bounds` and `trunc_never_wraps_near_the_bound` drive values to
/// the bounds.
pub fn trunc<T: Transport>(p: &mut Party<T>, x: &ArithShare, bits: u32) -> Result<ArithShare> {
    if bits > MAX_TRUNC_BITS {
        return Err(MpcError::mismatch(
            "truncation bits",
            format!("at most {MAX_TRUNC_BITS}"),
            bits,
        ));
    }
    if bits == 0 {
        return Ok(x.clone());
    }
    let n = x.len();
    let id = p.id();
    let offset = 1u64 << 62;
    let k = 1u64 << (64 - bits);
    // `O / 2^d - 1`: removes the offset and turns "floor or one less" into "floor or one more".
    let correction = (offset >> bits) - 1;
    // Party 1 multiplies the masked word by `k = 2^(64-d)` in the end, so only its low `d`
    // bits matter: party 0 sends the fewest whole bytes that hold them. Those bits of
    // `a + rho` are uniformly random to party 1 as `rho` is.
    let width = match bits {
        0..=8 => 1,
        9..=16 => 2,
        17..=32 => 4,
        _ => 8,
    };
    let z = match id.index() {
        0 => {
            let rho = p.prg().common_with_prev(n);
            let a_of = |e: usize| x.own()[e].wrapping_add(x.next()[e]).wrapping_add(offset);
            let masked = collect_par(n, |e| (a_of(e) >> 63).wrapping_add(rho[e]));
            p.send_narrow(id.next(), &masked, width)?;
            p.end_round();
            collect_par(n, |e| {
                let a = a_of(e);
                (a >> bits)
                    .wrapping_sub(k.wrapping_mul(a >> 63))
                    .wrapping_sub(correction)
            })
        }
        1 => {
            let masked = p.recv_narrow(id.prev(), n, width)?;
            p.end_round();
            collect_par(n, |e| {
                let b = x.next()[e];
                let t1 = (b >> 63).wrapping_mul(masked[e]);
                (b >> bits)
                    .wrapping_sub(k.wrapping_mul(b >> 63))
                    .wrapping_add(k.wrapping_mul(t1))
            })
        }
        _ => {
            let rho = p.prg().common_with_next(n);
            p.end_round();
            collect_par(n, |e| {
                let t2 = (x.own()[e] >> 63).wrapping_mul(rho[e]).wrapping_neg();
                k.wrapping_mul(t2)
            })
        }
    };
    reshare(p, z)
}

/// Wire `(words, plane)`: plane `plane` (of `ch` words) of a bit-sliced boolean share.
type Wire<'a> = (&'a BoolWords, usize);

/// Boolean AND of pairs of bit planes (64 gates per word), all in one round: local cross terms
/// plus a boolean zero-sharing, then the ring step. Output plane `q` is the AND of pair `q`.
fn and_planes<T: Transport>(
    p: &mut Party<T>,
    ch: usize,
    pairs: &[(Wire<'_>, Wire<'_>)],
) -> Result<BoolWords> {
    let mut z = p.prg().zero_bool(pairs.len() * ch);
    let gate = |(out, ((x, i), (y, j))): (&mut [u64], &(Wire<'_>, Wire<'_>))| {
        let (xo, xn) = x.range(*i * ch..(*i + 1) * ch);
        let (yo, yn) = y.range(*j * ch..(*j + 1) * ch);
        for (c, o) in out.iter_mut().enumerate() {
            *o ^= (xo[c] & yo[c]) ^ (xo[c] & yn[c]) ^ (xn[c] & yo[c]);
        }
    };
    if z.len() < PAR_MIN {
        z.chunks_mut(ch.max(1)).zip(pairs).for_each(gate);
    } else {
        z.par_chunks_mut(ch.max(1)).zip(pairs).for_each(gate);
    }
    let next = p.pass_to_prev(&z)?;
    Ok(BoolWords { own: z, next })
}

/// The ring width a comparison works in. Reducing a share mod `2^k` is local, and for
/// `-2^(k-1) <= x < 2^(k-1)` the sign of `x` is bit `k - 1` of `x mod 2^k`: a `k`-bit adder
/// instead of a 64-bit one, so fewer bit planes to send and fewer AND gates. The width is public
/// (every party must run the same circuit); the model owner derives it per layer from a bound
/// on the layer's inputs (see [`super::bounds`]). Outside its range the sign is wrong, so a width
/// narrower than [`SignBits::FULL`] must come with a proof of the range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SignBits(u32);

impl SignBits {
    /// The whole ring: right for every value.
    pub const FULL: SignBits = SignBits(64);
    pub const MIN: u32 = 2;

    pub fn new(bits: u32) -> Result<Self> {
        if (Self::MIN..=64).contains(&bits) {
            Ok(SignBits(bits))
        } else {
            Err(MpcError::mismatch(
                "comparison width",
                format!("{}..=64 bits", Self::MIN),
                bits,
            ))
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }

    /// Whether the sign of `v` is bit `k - 1` of `v mod 2^k` (`-2^(k-1) <= v < 2^(k-1)`).
    pub fn holds(self, v: i64) -> bool {
        self.0 == 64 || (-(1i64 << (self.0 - 1))..(1i64 << (self.0 - 1))).contains(&v)
    }

    /// The narrowest multiple of 8 bits (at least 8) that holds every value of magnitude at
    /// most `max_abs`: the bound's bit length plus a sign bit, rounded up to 8. That is what the
    /// parties learn of a bound; from a bound of 2^55 on, the width is the full 64.
    pub fn for_magnitude(max_abs: u128) -> SignBits {
        // `|v| <= max_abs < 2^b` needs `b + 1` bits with the sign.
        let b = 128 - max_abs.leading_zeros();
        SignBits((b + 1).div_ceil(8).saturating_mul(8).clamp(8, 64))
    }
}

/// Share of the sign bit of every element: 1 for negative values, computed in the ring of
/// `width` bits (see [`SignBits`]; right when every element is in its range).
///
/// `x = v + w (mod 2^k)` with `v = x_0 + x_1` (known to party 0) and `w = x_2` (known to
/// parties 1 and 2). Party 0 boolean-shares the low `k` bits of `v` (one round), both are
/// bit-sliced, and the sign is `v_(k-1) ^ w_(k-1) ^ carry_(k-1)`, with the carry from a
/// log-depth parallel-prefix tree over the (generate, propagate) pairs of bits `0..k-1`: one
/// round for `g = v & w` (two of the parties hold it between them, see below), then
/// `ceil(log2(k - 1))` AND levels. At full width: 8 rounds and about
/// 64 + 2 * 63 + 3 * 118 bits of traffic per element; at 24 bits, 24 + 2 * 23 + 3 * 39.
pub fn msb<T: Transport>(p: &mut Party<T>, x: &ArithShare, width: SignBits) -> Result<BitShare> {
    let n = x.len();
    let ch = bits::chunks(n);
    let k = width.get() as usize;
    let words = k * ch;
    let id = p.id();
    let (v, w) = match id.index() {
        0 => {
            let sum = zip_map(x.own(), x.next(), u64::wrapping_add);
            let r = p.prg().common_with_next(words);
            let masked = zip_map(&bits::to_planes(&sum, k), &r, |a, b| a ^ b);
            p.send_words(id.prev(), &masked)?;
            (
                BoolWords {
                    own: masked,
                    next: r,
                },
                BoolWords::zeros(words),
            )
        }
        1 => {
            let r = p.prg().common_with_prev(words);
            (
                BoolWords {
                    own: r,
                    next: vec![0; words],
                },
                BoolWords {
                    own: vec![0; words],
                    next: bits::to_planes(x.next(), k),
                },
            )
        }
        _ => {
            let masked = p.recv_words(id.next(), words)?;
            (
                BoolWords {
                    own: vec![0; words],
                    next: masked,
                },
                BoolWords {
                    own: bits::to_planes(x.own(), k),
                    next: vec![0; words],
                },
            )
        }
    };
    p.end_round();

    let plane = |j: usize| j * ch..(j + 1) * ch;
    let propagate = v.xor(&w);
    let (top_o, top_n) = propagate.range(plane(k - 1));
    let (top_o, top_n) = (top_o.to_vec(), top_n.to_vec());
    // `g = v & w` for bits 0..k-2 needs no AND protocol: `v = masked ^ r` and `w` is known to
    // parties 1 and 2, so party 1 computes `r & w`, party 2 `masked & w`, and the two parts
    // are made replicated by `bool_from_two` (two bits per gate instead of three).
    let low = (k - 1) * ch;
    let z = match id.index() {
        0 => vec![0; low],
        1 => v.own[..low]
            .iter()
            .zip(&w.next[..low])
            .map(|(a, b)| a & b)
            .collect(),
        _ => v.next[..low]
            .iter()
            .zip(&w.own[..low])
            .map(|(a, b)| a & b)
            .collect(),
    };
    let mut gs = bool_from_two(p, z)?;
    let mut ps = propagate;
    // Node t of a level covers a contiguous run of bit positions, lowest first. Node 0 always
    // contains bit 0, whose propagate is never needed (nothing carries into bit 0).
    let mut m = k - 1;
    while m > 1 {
        let pairs = m / 2;
        let mut operands = Vec::with_capacity(2 * pairs);
        for t in 0..pairs {
            operands.push(((&ps, 2 * t + 1), (&gs, 2 * t)));
        }
        for t in 1..pairs {
            operands.push(((&ps, 2 * t + 1), (&ps, 2 * t)));
        }
        let prod = and_planes(p, ch, &operands)?;
        let mut ng = BoolWords::default();
        let mut np = BoolWords::default();
        for t in 0..pairs {
            let (ho, hn) = gs.range(plane(2 * t + 1));
            let (po, pn) = prod.range(plane(t));
            ng.own.extend(ho.iter().zip(po).map(|(a, b)| a ^ b));
            ng.next.extend(hn.iter().zip(pn).map(|(a, b)| a ^ b));
            if t == 0 {
                np.extend_from((&vec![0; ch], &vec![0; ch]));
            } else {
                np.extend_from(prod.range(plane(pairs + t - 1)));
            }
        }
        if m % 2 == 1 {
            ng.extend_from(gs.range(plane(m - 1)));
            np.extend_from(ps.range(plane(m - 1)));
        }
        gs = ng;
        ps = np;
        m = pairs + m % 2;
    }
    let own = top_o.iter().zip(&gs.own).map(|(a, b)| a ^ b).collect();
    let next = top_n.iter().zip(&gs.next).map(|(a, b)| a ^ b).collect();
    BitShare::new(own, next, n)
}

/// Share of `x * b` for a shared bit `b` per element (bit-to-arithmetic conversion fused with
/// the product). 2 rounds, 5 words per element: two from party 0 to party 1, then a resharing.
///
/// With `b = b_0 ^ b_1 ^ b_2`, party 0 knows `t = b_0 ^ b_1` and `X = x_0 + x_1`, parties 1
/// and 2 know `b_2` and `x_2`. As integers `b = t + b_2 - 2 t b_2`, so
/// `x b = X t + b_2 X (1 - 2t) + t x_2 (1 - 2b_2) + x_2 b_2`:
/// one term party 0 can compute, one both others can, and two products of a value of party 0
/// (`X (1 - 2t)` and `t`) with a value of parties 1 and 2 (`b_2` and `x_2 (1 - 2b_2)`). Each
/// product costs one masked word, as in [`trunc`]: party 0 sends its value plus `rho`, drawn
/// with party 2, to party 1 (who therefore sees uniformly random words); party 1 multiplies it
/// by its factor, party 2 takes `-rho` times the same factor. The three additive parts are
/// reshared with a fresh zero-sharing.
pub fn select<T: Transport>(p: &mut Party<T>, x: &ArithShare, b: &BitShare) -> Result<ArithShare> {
    let n = x.len();
    if b.len() != n {
        return Err(MpcError::mismatch("selection bits", n, b.len()));
    }
    let id = p.id();
    let z: Vec<u64> = match id.index() {
        0 => {
            let tw: Vec<u64> = b.own().iter().zip(b.next()).map(|(a, c)| a ^ c).collect();
            let t = bits::unpack(&tw, n);
            let big_x = zip_map(x.own(), x.next(), u64::wrapping_add);
            // `rho` for the first product, then for the second.
            let rho = p.prg().common_with_prev(2 * n);
            let mut masked = zip_map(&big_x, &t, |v, t| v.wrapping_mul(1u64.wrapping_sub(2 * t)));
            for (m, r) in masked.iter_mut().zip(&rho[..n]) {
                *m = m.wrapping_add(*r);
            }
            masked.extend(t.iter().zip(&rho[n..]).map(|(t, r)| t.wrapping_add(*r)));
            p.send_words(id.next(), &masked)?;
            p.end_round();
            zip_map(&big_x, &t, u64::wrapping_mul)
        }
        1 => {
            let masked = p.recv_words(id.prev(), 2 * n)?;
            p.end_round();
            let b2 = bits::unpack(b.next(), n);
            let own = zip_map(x.next(), &b2, u64::wrapping_mul);
            zip_map(
                &own,
                &select_products(&b2, x.next(), &masked),
                u64::wrapping_add,
            )
        }
        _ => {
            let rho = p.prg().common_with_next(2 * n);
            p.end_round();
            let b2 = bits::unpack(b.own(), n);
            let mut z = select_products(&b2, x.own(), &rho);
            z.iter_mut().for_each(|v| *v = v.wrapping_neg());
            z
        }
    };
    reshare(p, z)
}

/// Parties 1 and 2's side of [`select`]'s two products: `b_2 v_1 + x_2 (1 - 2b_2) v_2` per
/// element, where `v` is the masked words at party 1 and the masks at party 2 (`v_1` first).
fn select_products(b2: &[u64], x2: &[u64], v: &[u64]) -> Vec<u64> {
    let n = b2.len();
    collect_par(n, |e| {
        let factor = x2[e].wrapping_mul(1u64.wrapping_sub(2 * b2[e]));
        b2[e]
            .wrapping_mul(v[e])
            .wrapping_add(factor.wrapping_mul(v[n + e]))
    })
}

/// `f` at `0..n`, on the calling thread for short vectors and in parallel for long ones.
fn collect_par(n: usize, f: impl Fn(usize) -> u64 + Sync + Send) -> Vec<u64> {
    if n < PAR_MIN {
        (0..n).map(f).collect()
    } else {
        (0..n)
            .into_par_iter()
            .with_min_len(PAR_MIN / 4)
            .map(f)
            .collect()
    }
}

/// Largest number of elements one comparison circuit handles at once. The circuit's working
/// set is about 40 words per element and party; beyond this, slices run one after the other
/// (10 rounds each at full width) so that memory stays bounded and buffers are reused instead of freshly
/// mapped. Every layer of one image of the four models fits in one slice except the first two
/// convolutions of VGG16-2 at 224x224 (64x224x224 = 3.2M elements), which take two.
pub const RELU_SLICE: usize = 1 << 21;

/// Share of `max(x, 0)`: `x * (1 - sign(x))`, the sign taken at `width` (every element must
/// be in its range). 10 rounds per [`RELU_SLICE`] elements at full width, 9 at 24 bits.
pub fn relu<T: Transport>(p: &mut Party<T>, x: &ArithShare, width: SignBits) -> Result<ArithShare> {
    if x.len() <= RELU_SLICE {
        let positive = msb(p, x, width)?.not(p.id());
        return select(p, x, &positive);
    }
    let mut out = ArithShare::zeros(0);
    for start in (0..x.len()).step_by(RELU_SLICE) {
        let part = x.slice(start..(start + RELU_SLICE).min(x.len()));
        let positive = msb(p, &part, width)?.not(p.id());
        out.extend(&select(p, &part, &positive)?);
    }
    Ok(out)
}

/// Share of the element-wise maximum: `b + relu(a - b)`, `width` holding every `a - b`.
/// 10 rounds at full width.
pub fn max<T: Transport>(
    p: &mut Party<T>,
    a: &ArithShare,
    b: &ArithShare,
    width: SignBits,
) -> Result<ArithShare> {
    let d = relu(p, &a.sub(b)?, width)?;
    b.add(&d)
}
