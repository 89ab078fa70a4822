//! The client's side: sharing an image and reconstructing the logits.
//!
//! Imports `super::{error, fixed, party, prg, share}` only; never the network or the party layer.

use super::bounds::INPUT_RANGE;
use super::error::{volume, MpcError, Result};
use super::fixed::FixedPoint;
use super::party::PartyId;
use super::prg::os_rng;
use super::share::{deal, ArithShare};
use rand::CryptoRng;

/// One party's share of one input image (CHW).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputShare {
    party: PartyId,
    fixed: FixedPoint,
    shape: [usize; 3],
    share: ArithShare,
}

impl InputShare {
    pub fn new(
        party: PartyId,
        fixed: FixedPoint,
        shape: [usize; 3],
        share: ArithShare,
    ) -> Result<Self> {
        let n = volume("input shape", &shape)?;
        if share.len() != n {
            return Err(MpcError::mismatch(
                "input share length",
                format!("{n} (shape {shape:?})"),
                share.len(),
            ));
        }
        Ok(InputShare {
            party,
            fixed,
            shape,
            share,
        })
    }
    pub fn party(&self) -> PartyId {
        self.party
    }
    pub fn fixed(&self) -> FixedPoint {
        self.fixed
    }
    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }
    pub fn share(&self) -> &ArithShare {
        &self.share
    }
}

/// One party's re-randomised additive part of the output of one image: the three parts sum to
/// the logits, and any one or two of them are uniformly random.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputShare {
    party: PartyId,
    fixed: FixedPoint,
    part: Vec<u64>,
}

impl OutputShare {
    pub fn new(party: PartyId, fixed: FixedPoint, part: Vec<u64>) -> Self {
        OutputShare { party, fixed, part }
    }
    pub fn party(&self) -> PartyId {
        self.party
    }
    pub fn fixed(&self) -> FixedPoint {
        self.fixed
    }
    pub fn part(&self) -> &[u64] {
        &self.part
    }
}

/// Encodes `image` (CHW, `shape`, every value in [`INPUT_RANGE`]) in fixed point and splits it
/// into three shares with randomness from `rng` (a cryptographic generator; see
/// [`share_input_os`]).
pub fn share_input<R: CryptoRng + ?Sized>(
    image: &[f32],
    shape: [usize; 3],
    fixed: FixedPoint,
    rng: &mut R,
) -> Result<[InputShare; 3]> {
    let n = volume("input shape", &shape)?;
    if image.len() != n {
        return Err(MpcError::mismatch(
            "image length",
            format!("{n} (shape {shape:?})"),
            image.len(),
        ));
    }
    // The dealing's comparison widths hold for inputs in this range only (`super::bounds`): a
    // value outside it could make a narrow comparison, and so the prediction, silently wrong.
    let (lo, hi) = INPUT_RANGE;
    if let Some((at, v)) = image
        .iter()
        .enumerate()
        .find(|(_, v)| !(lo..=hi).contains(*v))
    {
        return Err(MpcError::mismatch(
            "image value",
            format!("a value in [{lo}, {hi}] (preprocessed pixels)"),
            format!("{v} at index {at}"),
        ));
    }
    let [s0, s1, s2] = deal(&fixed.encode_slice(image)?, rng);
    Ok([
        InputShare::new(PartyId::ALL[0], fixed, shape, s0)?,
        InputShare::new(PartyId::ALL[1], fixed, shape, s1)?,
        InputShare::new(PartyId::ALL[2], fixed, shape, s2)?,
    ])
}

/// [`share_input`] with a fresh ChaCha20 generator seeded from the OS CSPRNG.
pub fn share_input_os(
    image: &[f32],
    shape: [usize; 3],
    fixed: FixedPoint,
) -> Result<[InputShare; 3]> {
    share_input(image, shape, fixed, &mut os_rng()?)
}

/// The client's step: sums the three parties' output parts (one from each party, in any order)
/// and decodes the logits.
pub fn reconstruct(shares: &[OutputShare; 3]) -> Result<Vec<f32>> {
    let mut seen = [false; 3];
    for s in shares {
        if std::mem::replace(&mut seen[s.party.index()], true) {
            return Err(MpcError::mismatch(
                "output shares",
                "one from each of parties 0, 1 and 2",
                format!("two from party {}", s.party),
            ));
        }
    }
    let [a, b, c] = shares;
    if a.part.len() != b.part.len() || a.part.len() != c.part.len() {
        return Err(MpcError::mismatch(
            "output share lengths",
            a.part.len(),
            format!("{} and {}", b.part.len(), c.part.len()),
        ));
    }
    if a.fixed != b.fixed || a.fixed != c.fixed {
        return Err(MpcError::mismatch(
            "output fixed-point formats",
            a.fixed.frac_bits(),
            format!("{} and {}", b.fixed.frac_bits(), c.fixed.frac_bits()),
        ));
    }
    Ok((0..a.part.len())
        .map(|e| {
            let v = a.part[e].wrapping_add(b.part[e]).wrapping_add(c.part[e]);
            a.fixed.decode(v) as f32
        })
        .collect())
}
