//! Augmentation multiplicity for DP-SGD (De et al. 2022, "Unlocking high-accuracy
//! differentially private image classification through scale"): each example's gradient is
//! averaged over several randomly augmented copies of it *before* the clip.
//!
//! Why it helps: DP-SGD clips each example's gradient to C whatever its size, so what an
//! example contributes is its gradient's direction. Averaging over augmented copies keeps the
//! part of that direction that holds across small shifts and flips (the opacity, not where the
//! pixels happen to fall) and cancels the rest, so more of each clipped C carries signal. The
//! privacy is unchanged: the copies are one example's, averaged into one unit that the clip
//! bounds by C, and the noise is the same. It costs `copies` times the compute of a step.
//!
//! Imports `super::error` and candle only; never `mpc`, `net`, `party`, `pipeline` or terminal
//! code.

use super::error::{Result, TrainError};
use candle_core::{Device, Tensor};
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

/// The largest number of copies: beyond this the step costs more than any reported gain.
pub const MAX_COPIES: usize = 64;

/// How each example is multiplied. Copy 0 is always the example itself; the others are
/// shifted by up to `max_shift` pixels in each direction (edge pixels repeat into the gap)
/// and, if `flip`, mirrored left-right with probability 1/2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Augmentation {
    pub copies: usize,
    pub max_shift: usize,
    pub flip: bool,
}

impl Default for Augmentation {
    /// One copy: no augmentation.
    fn default() -> Self {
        Augmentation {
            copies: 1,
            max_shift: 0,
            flip: false,
        }
    }
}

impl Augmentation {
    /// `copies` per example with the default transforms: shifts of up to 8 pixels (about 6% of
    /// the 1x150x125 input, 4% of 224x224) and left-right flips, which keep a chest
    /// radiograph's label (opacities occur in either lung).
    /// One copy is no augmentation: the transforms would never be drawn.
    pub fn copies(copies: usize) -> Result<Self> {
        if copies == 1 {
            return Ok(Self::default());
        }
        let a = Augmentation {
            copies,
            max_shift: 8,
            flip: true,
        };
        a.validate()?;
        Ok(a)
    }

    pub fn is_off(&self) -> bool {
        self.copies == 1
    }

    pub fn validate(&self) -> Result<()> {
        if self.copies == 0 || self.copies > MAX_COPIES {
            return Err(TrainError::Config(format!(
                "augmentation copies {}: expected 1 (off) to {MAX_COPIES}",
                self.copies
            )));
        }
        Ok(())
    }

    /// `[n, c, h, w]` to `[n * copies, c, h, w]`, each example's copies consecutive, copy 0
    /// unchanged. Transforms are drawn from `rng` (they need no secrecy: the privacy argument
    /// holds for any per-example transform).
    pub fn expand(&self, x: &Tensor, rng: &mut dyn RngCore) -> Result<Tensor> {
        self.validate()?;
        if self.is_off() {
            return Ok(x.clone());
        }
        let (n, c, h, w) = x.dims4()?;
        let device = x.device().clone();
        let src: Vec<f32> = x.to_device(&Device::Cpu)?.flatten_all()?.to_vec1()?;
        let img = c * h * w;
        let k = self.copies;
        let mut out = vec![0f32; n * k * img];
        let s = self.max_shift as i64;
        for e in 0..n {
            let from = &src[e * img..(e + 1) * img];
            for j in 0..k {
                let to = &mut out[(e * k + j) * img..(e * k + j + 1) * img];
                if j == 0 {
                    to.copy_from_slice(from);
                    continue;
                }
                let dy = if s > 0 { rng.random_range(-s..=s) } else { 0 };
                let dx = if s > 0 { rng.random_range(-s..=s) } else { 0 };
                let flip = self.flip && rng.random_bool(0.5);
                transform(from, to, c, h, w, dy, dx, flip);
            }
        }
        Ok(Tensor::from_vec(out, (n * k, c, h, w), &device)?)
    }
}

/// Writes `to[y][x] = from[y - dy][x' - dx]`, where `x'` is `x` mirrored when `flip`, with
/// coordinates clamped to the image (edge pixels repeat).
#[allow(clippy::too_many_arguments)]
fn transform(
    from: &[f32],
    to: &mut [f32],
    c: usize,
    h: usize,
    w: usize,
    dy: i64,
    dx: i64,
    flip: bool,
) {
    let clamp = |v: i64, n: usize| v.clamp(0, n as i64 - 1) as usize;
    for ch in 0..c {
        let plane = ch * h * w;
        for y in 0..h {
            let sy = clamp(y as i64 - dy, h);
            for x in 0..w {
                let xm = if flip { w - 1 - x } else { x };
                let sx = clamp(xm as i64 - dx, w);
                to[plane + y * w + x] = from[plane + sy * w + sx];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn ramp(n: usize, c: usize, h: usize, w: usize) -> Tensor {
        let v: Vec<f32> = (0..n * c * h * w).map(|i| i as f32).collect();
        Tensor::from_vec(v, (n, c, h, w), &Device::Cpu).unwrap()
    }

    /// Row `r` of a batch, flattened.
    fn pixels(t: &Tensor, r: usize) -> Vec<f32> {
        t.get(r).unwrap().flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn copies_are_validated() {
        assert!(Augmentation::copies(0).is_err());
        assert!(Augmentation::copies(MAX_COPIES + 1).is_err());
        assert!(Augmentation::copies(4).is_ok());
    }

    #[test]
    fn copy_zero_is_the_example_and_copies_stay_together() {
        let x = ramp(3, 2, 5, 6);
        let a = Augmentation::copies(4).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let y = a.expand(&x, &mut rng).unwrap();
        assert_eq!(y.dims4().unwrap(), (12, 2, 5, 6));
        for e in 0..3 {
            let orig = pixels(&x, e);
            assert_eq!(orig, pixels(&y, e * 4), "copy 0 of example {e}");
            // Every copy holds only values of its own example (shifts and flips move pixels
            // within an image, never across examples).
            let (lo, hi) = (orig[0], orig[orig.len() - 1]);
            for j in 1..4 {
                let v = pixels(&y, e * 4 + j);
                assert!(
                    v.iter().all(|&p| p >= lo && p <= hi),
                    "example {e} copy {j}"
                );
            }
        }
    }

    #[test]
    fn a_shift_moves_pixels_and_repeats_the_edge() {
        let (h, w) = (4, 5);
        let from: Vec<f32> = (0..h * w).map(|i| i as f32).collect();
        let mut to = vec![0f32; h * w];
        transform(&from, &mut to, 1, h, w, 1, 2, false);
        // Row 0 repeats source row 0; columns 0-1 repeat source column 0.
        assert_eq!(&to[0..5], &[0.0, 0.0, 0.0, 1.0, 2.0]);
        assert_eq!(&to[5..10], &[0.0, 0.0, 0.0, 1.0, 2.0]);
        assert_eq!(&to[10..15], &[5.0, 5.0, 5.0, 6.0, 7.0]);
        transform(&from, &mut to, 1, h, w, 0, 0, true);
        assert_eq!(&to[0..5], &[4.0, 3.0, 2.0, 1.0, 0.0]);
    }

    #[test]
    fn without_shift_or_flip_every_copy_is_the_example() {
        let x = ramp(2, 1, 3, 3);
        let a = Augmentation {
            copies: 3,
            max_shift: 0,
            flip: false,
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let y = a.expand(&x, &mut rng).unwrap();
        let pixels = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for r in 0..6 {
            assert_eq!(
                pixels(y.get(r).unwrap()),
                pixels(x.get(r / 3).unwrap()),
                "row {r}"
            );
        }
    }
}
