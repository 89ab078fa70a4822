//! 2-out-of-3 replicated secret sharing.
//!
//! A secret `x` is split into components `x_0 + x_1 + x_2 = x` (arithmetic, mod 2^64) or
//! `x_0 ^ x_1 ^ x_2 = x` (boolean); party `i` holds `(x_i, x_{i+1})`, called `own` and `next`.
//! Any two parties can reconstruct; any single party's pair is uniformly random.
//!
//! Imports `super::{error, party}` only; never the network or the party layer.

use super::error::{MpcError, Result};
use super::party::PartyId;
use rand::{CryptoRng, Rng};
use rayon::prelude::*;

/// One party's replicated share of a vector of ring elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArithShare {
    own: Vec<u64>,
    next: Vec<u64>,
}

impl ArithShare {
    /// Pairs the two components; they must have the same length.
    pub fn new(own: Vec<u64>, next: Vec<u64>) -> Result<Self> {
        if own.len() != next.len() {
            return Err(MpcError::mismatch(
                "share components",
                format!("equal lengths ({})", own.len()),
                next.len(),
            ));
        }
        Ok(ArithShare { own, next })
    }

    /// A share of the zero vector that needs no randomness (all components zero).
    pub fn zeros(len: usize) -> Self {
        ArithShare {
            own: vec![0; len],
            next: vec![0; len],
        }
    }

    pub fn len(&self) -> usize {
        self.own.len()
    }

    pub fn is_empty(&self) -> bool {
        self.own.is_empty()
    }

    /// Component `i` (held by this party and the previous one).
    pub fn own(&self) -> &[u64] {
        &self.own
    }

    /// Component `i + 1` (held by this party and the next one).
    pub fn next(&self) -> &[u64] {
        &self.next
    }

    pub fn into_parts(self) -> (Vec<u64>, Vec<u64>) {
        (self.own, self.next)
    }

    /// Crate-internal constructor for already length-checked parts.
    pub(crate) fn from_parts(own: Vec<u64>, next: Vec<u64>) -> Self {
        debug_assert_eq!(own.len(), next.len());
        ArithShare { own, next }
    }

    pub(crate) fn parts_mut(&mut self) -> (&mut [u64], &mut [u64]) {
        (&mut self.own, &mut self.next)
    }

    /// Elements `range` of the shared vector.
    pub fn slice(&self, range: std::ops::Range<usize>) -> ArithShare {
        ArithShare {
            own: self.own[range.clone()].to_vec(),
            next: self.next[range].to_vec(),
        }
    }

    /// Appends the elements of `other`.
    pub fn extend(&mut self, other: &ArithShare) {
        self.own.extend_from_slice(&other.own);
        self.next.extend_from_slice(&other.next);
    }

    /// Concatenation of shares of several vectors.
    pub fn concat<'a>(parts: impl IntoIterator<Item = &'a ArithShare>) -> ArithShare {
        let mut out = ArithShare::zeros(0);
        for p in parts {
            out.own.extend_from_slice(&p.own);
            out.next.extend_from_slice(&p.next);
        }
        out
    }

    fn zip_with(
        &self,
        other: &ArithShare,
        f: impl Fn(u64, u64) -> u64 + Sync,
    ) -> Result<ArithShare> {
        if self.len() != other.len() {
            return Err(MpcError::mismatch(
                "operand length",
                self.len(),
                other.len(),
            ));
        }
        Ok(ArithShare {
            own: zip_map(&self.own, &other.own, &f),
            next: zip_map(&self.next, &other.next, &f),
        })
    }

    /// Share of `x + y` (local).
    pub fn add(&self, other: &ArithShare) -> Result<ArithShare> {
        self.zip_with(other, u64::wrapping_add)
    }

    /// Share of `x - y` (local).
    pub fn sub(&self, other: &ArithShare) -> Result<ArithShare> {
        self.zip_with(other, u64::wrapping_sub)
    }

    /// Share of `c * x` for a public integer `c` (local; no truncation).
    pub fn mul_public(&self, c: u64) -> ArithShare {
        ArithShare {
            own: self.own.iter().map(|a| a.wrapping_mul(c)).collect(),
            next: self.next.iter().map(|a| a.wrapping_mul(c)).collect(),
        }
    }

    /// Share of `x + c` for a public vector `c` (same length): component 0 absorbs it, so
    /// only party 0 (as `own`) and party 2 (as `next`) change anything.
    pub fn add_public(&mut self, party: PartyId, c: &[u64]) -> Result<()> {
        if c.len() != self.len() {
            return Err(MpcError::mismatch(
                "public operand length",
                self.len(),
                c.len(),
            ));
        }
        let target = match party.index() {
            0 => &mut self.own,
            2 => &mut self.next,
            _ => return Ok(()),
        };
        for (t, v) in target.iter_mut().zip(c) {
            *t = t.wrapping_add(*v);
        }
        Ok(())
    }
}

/// One party's replicated boolean share of a packed bit vector: bit `e` is bit `e % 64` of
/// word `e / 64`; the unused high bits of the last word carry no meaning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BitShare {
    own: Vec<u64>,
    next: Vec<u64>,
    len: usize,
}

impl BitShare {
    pub fn new(own: Vec<u64>, next: Vec<u64>, len: usize) -> Result<Self> {
        let words = len.div_ceil(64);
        if own.len() != words || next.len() != words {
            return Err(MpcError::mismatch(
                "packed bit share words",
                words,
                format!("{} and {}", own.len(), next.len()),
            ));
        }
        Ok(BitShare { own, next, len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn own(&self) -> &[u64] {
        &self.own
    }

    pub fn next(&self) -> &[u64] {
        &self.next
    }

    /// Share of the complement of every bit: XOR with 1 lands in component 0.
    pub fn not(mut self, party: PartyId) -> BitShare {
        let target = match party.index() {
            0 => &mut self.own,
            2 => &mut self.next,
            _ => return self,
        };
        for w in target.iter_mut() {
            *w = !*w;
        }
        self
    }
}

/// Boolean replicated share of a vector of 64-bit words (crate-internal circuit wires).
#[derive(Clone, Debug, Default)]
pub(crate) struct BoolWords {
    pub own: Vec<u64>,
    pub next: Vec<u64>,
}

impl BoolWords {
    pub fn zeros(len: usize) -> Self {
        BoolWords {
            own: vec![0; len],
            next: vec![0; len],
        }
    }

    pub fn range(&self, r: std::ops::Range<usize>) -> (&[u64], &[u64]) {
        (&self.own[r.clone()], &self.next[r])
    }

    pub fn extend_from(&mut self, (own, next): (&[u64], &[u64])) {
        self.own.extend_from_slice(own);
        self.next.extend_from_slice(next);
    }

    pub fn xor(&self, other: &BoolWords) -> BoolWords {
        BoolWords {
            own: zip_map(&self.own, &other.own, |a, b| a ^ b),
            next: zip_map(&self.next, &other.next, |a, b| a ^ b),
        }
    }
}

/// Below this many elements, element-wise work stays on the calling thread.
pub(crate) const PAR_MIN: usize = 1 << 14;

/// `f` applied element-wise to two equally long slices, in parallel for long ones (one party
/// alone is often busy while the others wait, so its loops should use every core).
pub(crate) fn zip_map(a: &[u64], b: &[u64], f: impl Fn(u64, u64) -> u64 + Sync) -> Vec<u64> {
    debug_assert_eq!(a.len(), b.len());
    if a.len() < PAR_MIN {
        a.iter().zip(b).map(|(x, y)| f(*x, *y)).collect()
    } else {
        a.par_iter()
            .with_min_len(PAR_MIN / 4)
            .zip(b)
            .map(|(x, y)| f(*x, *y))
            .collect()
    }
}

/// Splits `values` into three replicated shares with randomness from `rng` (a dealer: the
/// model owner or the client). `rng` must be a cryptographic generator seeded from the OS.
pub fn deal<R: CryptoRng + ?Sized>(values: &[u64], rng: &mut R) -> [ArithShare; 3] {
    let n = values.len();
    let mut c0 = vec![0u64; n];
    let mut c1 = vec![0u64; n];
    rng.fill(&mut c0[..]);
    rng.fill(&mut c1[..]);
    let c2: Vec<u64> = values
        .iter()
        .zip(c0.iter().zip(&c1))
        .map(|(v, (a, b))| v.wrapping_sub(*a).wrapping_sub(*b))
        .collect();
    [
        ArithShare::from_parts(c0.clone(), c1.clone()),
        ArithShare::from_parts(c1, c2.clone()),
        ArithShare::from_parts(c2, c0),
    ]
}

/// Reconstructs a secret from all three shares, checking that the replicated components agree
/// (party `i`'s `next` must equal party `i + 1`'s `own`). For the client and for tests: parties
/// never call it.
pub fn open(shares: &[ArithShare; 3]) -> Result<Vec<u64>> {
    for i in 0..3 {
        let j = (i + 1) % 3;
        if shares[i].len() != shares[j].len() {
            return Err(MpcError::mismatch(
                "share length",
                shares[i].len(),
                shares[j].len(),
            ));
        }
        if shares[i].next != shares[j].own {
            return Err(MpcError::mismatch(
                "replicated components",
                format!("party {i}'s second component equal to party {j}'s first"),
                "different values",
            ));
        }
    }
    Ok((0..shares[0].len())
        .map(|e| {
            shares[0].own[e]
                .wrapping_add(shares[1].own[e])
                .wrapping_add(shares[2].own[e])
        })
        .collect())
}

/// Reconstructs packed bits from all three boolean shares (for tests).
pub fn open_bits(shares: &[BitShare; 3]) -> Result<Vec<bool>> {
    let len = shares[0].len;
    for i in 0..3 {
        let j = (i + 1) % 3;
        if shares[i].len != shares[j].len || shares[i].next != shares[j].own {
            return Err(MpcError::mismatch(
                "replicated bit components",
                "consistent shares",
                "different values",
            ));
        }
    }
    Ok((0..len)
        .map(|e| {
            let w = shares[0].own[e / 64] ^ shares[1].own[e / 64] ^ shares[2].own[e / 64];
            (w >> (e % 64)) & 1 == 1
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn deal_then_open_returns_the_secret() {
        let mut rng = ChaCha20Rng::seed_from_u64(1); // test-only seed
        let v: Vec<u64> = (0..100)
            .map(|i| (i as u64).wrapping_mul(0x9e37_79b9))
            .collect();
        let shares = deal(&v, &mut rng);
        assert_eq!(open(&shares).unwrap(), v);
        // Any two parties hold all three components.
        let pair = shares[0].own[5]
            .wrapping_add(shares[0].next[5])
            .wrapping_add(shares[1].next[5]);
        assert_eq!(pair, v[5]);
    }

    #[test]
    fn inconsistent_shares_are_rejected() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let mut shares = deal(&[1, 2, 3], &mut rng);
        shares[1].own[0] ^= 1;
        assert!(open(&shares).is_err());
    }

    #[test]
    fn local_linear_operations() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let a: Vec<u64> = vec![5, u64::MAX, 7];
        let b: Vec<u64> = vec![3, 2, 1 << 40];
        let sa = deal(&a, &mut rng);
        let sb = deal(&b, &mut rng);
        let sum: [ArithShare; 3] = std::array::from_fn(|i| sa[i].add(&sb[i]).unwrap());
        let diff: [ArithShare; 3] = std::array::from_fn(|i| sa[i].sub(&sb[i]).unwrap());
        let mut plus_c: [ArithShare; 3] = std::array::from_fn(|i| sa[i].mul_public(3));
        for (i, s) in plus_c.iter_mut().enumerate() {
            s.add_public(PartyId::ALL[i], &[1, 1, 1]).unwrap();
        }
        let want = |f: &dyn Fn(u64, u64) -> u64| -> Vec<u64> {
            a.iter().zip(&b).map(|(x, y)| f(*x, *y)).collect()
        };
        assert_eq!(open(&sum).unwrap(), want(&|x, y| x.wrapping_add(y)));
        assert_eq!(open(&diff).unwrap(), want(&|x, y| x.wrapping_sub(y)));
        assert_eq!(
            open(&plus_c).unwrap(),
            want(&|x, _| x.wrapping_mul(3).wrapping_add(1))
        );
        assert!(sa[0].add(&ArithShare::zeros(2)).is_err());
    }
}
