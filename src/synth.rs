//! Synthetic chest radiographs in the Kermany folder layout, for tests and the demo.
//!
//! Each image is greyscale and chest-like: a body outline, a bright spine, curved ribs, two dark
//! lung fields, a heart shadow, sensor noise and a varying size, exposure and position.
//! PNEUMONIA images add opacities inside the lungs, in the two patterns the pneumonia subtype
//! names ([`Finding`]): bacterial files get a lobar consolidation (one or two large, dense,
//! homogeneous patches, all in one lung), viral files an interstitial pattern over both lungs (a
//! ground-glass lift under a reticular net, densest near the hilum, with small patches in each
//! lung). Contrast varies and some are faint, so a small CNN learns the tasks well but not
//! trivially. Everything written
//! here is SYNTHETIC: file names start with `SYNTH`, and nothing should claim accuracy on real
//! radiographs from it.
//!
//! Imports `crate::atomic` and `crate::data` only; never `preprocess`, `train` or anything above.

use crate::data::{Class, Split};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthOptions {
    pub count: usize,
    pub seed: u64,
    /// Share of NORMAL images; the real set is about 1:3 NORMAL:PNEUMONIA.
    pub normal_fraction: f64,
    /// Image width range in pixels (height follows with a random aspect ratio).
    pub width_range: (u32, u32),
    /// Height as a fraction of width, drawn uniformly from this range.
    pub aspect_range: (f64, f64),
    /// JPEG quality, 1-100.
    pub quality: u8,
    /// How strong the signs of pneumonia are against the confounders.
    pub difficulty: Difficulty,
}

/// How hard the generated classification task is. Both are SYNTHETIC; neither says anything
/// about accuracy on real radiographs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Difficulty {
    /// Opacities at 1.6 times their standard contrast, exposure varying +-5% instead of
    /// -20..+15%, half the vessel markings: a small CNN learns it in a few hundred steps, and
    /// DP-SGD in a few minutes on two cores (the interface's default set).
    Easy,
    /// Faint opacities among exposure changes and vessel markings: learnable, not trivially.
    #[default]
    Standard,
}

impl Difficulty {
    pub fn name(self) -> &'static str {
        match self {
            Difficulty::Easy => "easy",
            Difficulty::Standard => "standard",
        }
    }

    /// Multiplier of every opacity's contrast.
    fn opacity_gain(self) -> f32 {
        match self {
            Difficulty::Easy => 1.6,
            Difficulty::Standard => 1.0,
        }
    }

    /// Range of the exposure factor.
    fn exposure(self) -> (f32, f32) {
        match self {
            Difficulty::Easy => (0.95, 1.05),
            Difficulty::Standard => (0.8, 1.15),
        }
    }

    /// Range of the number of small vessel markings in every lung.
    fn vessels(self) -> (usize, usize) {
        match self {
            Difficulty::Easy => (1, 3),
            Difficulty::Standard => (2, 6),
        }
    }
}

impl std::str::FromStr for Difficulty {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "easy" => Ok(Difficulty::Easy),
            "standard" => Ok(Difficulty::Standard),
            _ => Err(format!(
                "unknown difficulty {s:?}: expected easy or standard"
            )),
        }
    }
}

impl SynthOptions {
    pub fn new(count: usize, seed: u64) -> Self {
        SynthOptions {
            count,
            seed,
            normal_fraction: 0.27,
            width_range: (360, 720),
            aspect_range: (0.72, 1.0),
            quality: 90,
            difficulty: Difficulty::Standard,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("--count must be at least 1, got {0}")]
    Count(usize),
    #[error("the width range {0}..={1} is invalid: expected 64 <= min <= max <= 4096")]
    Width(u32, u32),
    #[error("normal fraction {0} is outside 0..=1")]
    Fraction(f64),
    #[error("writing {path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

/// One generated file.
#[derive(Debug, Clone)]
pub struct SynthImage {
    pub path: PathBuf,
    pub split: Split,
    pub class: Class,
}

/// The split of image `i` of `n`: about 80% train, 15% test, 5% val, interleaved so every split
/// gets both classes.
fn split_of(i: usize) -> Split {
    match i % 20 {
        0..=15 => Split::Train,
        16..=18 => Split::Test,
        _ => Split::Val,
    }
}

/// Writes `opts.count` images under `out` in the real layout and returns what it wrote.
/// Generation is deterministic in `opts.seed` (each image has its own derived seed, so the
/// output does not depend on thread scheduling).
pub fn generate(out: &Path, opts: &SynthOptions) -> Result<Vec<SynthImage>, SynthError> {
    if opts.count == 0 {
        return Err(SynthError::Count(0));
    }
    let (lo, hi) = opts.width_range;
    if lo < 64 || lo > hi || hi > 4096 {
        return Err(SynthError::Width(lo, hi));
    }
    if !(0.0..=1.0).contains(&opts.normal_fraction) {
        return Err(SynthError::Fraction(opts.normal_fraction));
    }
    for split in Split::FOLDERS {
        for class in Class::ALL {
            let dir = out.join(split.folder()).join(class.folder());
            std::fs::create_dir_all(&dir).map_err(|e| SynthError::Write {
                path: dir.clone(),
                reason: e.to_string(),
            })?;
        }
    }
    (0..opts.count)
        .into_par_iter()
        .map(|i| {
            let mut rng = ChaCha8Rng::seed_from_u64(
                opts.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            let normal = rng.random_bool(opts.normal_fraction);
            // About the real set's share of viral among pneumonia files.
            let viral = rng.random_bool(0.35);
            let finding = match (normal, viral) {
                (true, _) => Finding::Normal,
                (false, false) => Finding::Bacterial,
                (false, true) => Finding::Viral,
            };
            let class = finding.class();
            let width = rng.random_range(lo..=hi);
            let (a0, a1) = opts.aspect_range;
            let aspect = if a1 > a0 {
                rng.random_range(a0..a1)
            } else {
                a0
            };
            let height = ((width as f64) * aspect).round().max(1.0) as u32;
            let pixels = render(&mut rng, width, height, finding, opts.difficulty);
            let split = split_of(i);
            let name = match class {
                Class::Normal => format!("SYNTH-NORMAL-{i:06}.jpeg"),
                Class::Pneumonia => format!(
                    "SYNTH-person{i}_{}_{}.jpeg",
                    if viral { "virus" } else { "bacteria" },
                    i % 7
                ),
            };
            let path = out.join(split.folder()).join(class.folder()).join(name);
            write_jpeg(&path, &pixels, width, height, opts.quality)?;
            Ok(SynthImage { path, split, class })
        })
        .collect()
}

/// Encodes greyscale pixels as a JPEG, written atomically.
pub fn write_jpeg(
    path: &Path,
    pixels: &[u8],
    width: u32,
    height: u32,
    quality: u8,
) -> Result<(), SynthError> {
    let err = |reason: String| SynthError::Write {
        path: path.to_path_buf(),
        reason,
    };
    let mut buf = Vec::new();
    let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, quality.clamp(1, 100));
    image::ImageEncoder::write_image(enc, pixels, width, height, image::ExtendedColorType::L8)
        .map_err(|e| err(e.to_string()))?;
    crate::atomic::write_atomic(path, &buf).map_err(|e| err(e.to_string()))
}

/// An ellipse test in normalised coordinates.
fn in_ellipse(x: f32, y: f32, cx: f32, cy: f32, rx: f32, ry: f32) -> f32 {
    let dx = (x - cx) / rx;
    let dy = (y - cy) / ry;
    dx * dx + dy * dy
}

/// Smooth 0..1 edge: 1 inside (d < 1), fading out over `soft`.
fn soft_inside(d: f32, soft: f32) -> f32 {
    ((1.0 - d) / soft).clamp(0.0, 1.0)
}

/// What an image shows: the class and, for pneumonia, the subtype its file name carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finding {
    Normal,
    /// Lobar consolidation: large, dense, homogeneous patches in one lung.
    Bacterial,
    /// Interstitial pattern: fine reticular haze over both lungs, a few small patches.
    Viral,
}

impl Finding {
    pub fn class(self) -> Class {
        match self {
            Finding::Normal => Class::Normal,
            Finding::Bacterial | Finding::Viral => Class::Pneumonia,
        }
    }
}

/// The viral pattern: a reticular haze over both lungs.
struct Haze {
    /// Peak brightness added, per lung (left, right of the image).
    strength: [f32; 2],
    /// Uniform ground-glass lift under the net, per lung.
    glass: [f32; 2],
    /// Spatial frequency of the reticulation (radians per image width).
    freq: f32,
    phase: (f32, f32),
}

impl Haze {
    /// Brightness added at (x, y) in lung `side`, whose centre is (lx, ly): a net of thin
    /// bright lines, densest towards the hilum (the lung's medial edge).
    fn at(&self, side: usize, x: f32, y: f32, lx: f32, hilum_x: f32) -> f32 {
        let a = ((x * self.freq + self.phase.0).sin() * (y * self.freq * 1.3 + self.phase.1).sin())
            .abs();
        // High-contrast net; the uniform part of the lift is `glass`.
        let net = 0.1 + 0.9 * a;
        let span = (hilum_x - lx).abs().max(1e-3);
        let medial = (1.0 - 0.5 * ((x - hilum_x).abs() / (2.0 * span)).min(1.0)).max(0.5);
        (self.glass[side] + self.strength[side] * net) * medial
    }
}

struct Blob {
    cx: f32,
    cy: f32,
    rx: f32,
    ry: f32,
    strength: f32,
}

/// Renders one radiograph. Coordinates are normalised: x, y in 0..1.
pub fn render(
    rng: &mut ChaCha8Rng,
    width: u32,
    height: u32,
    finding: Finding,
    difficulty: Difficulty,
) -> Vec<u8> {
    let (w, h) = (width as usize, height as usize);
    // Patient placement and exposure.
    let cx = 0.5 + rng.random_range(-0.04..0.04);
    let cy = 0.52 + rng.random_range(-0.04..0.04);
    let scale = rng.random_range(0.88..1.08);
    let (e0, e1) = difficulty.exposure();
    let exposure = rng.random_range(e0..e1);
    let tissue = rng.random_range(120.0..160.0);
    let lung_level = rng.random_range(35.0..60.0);
    let rib_phase = rng.random_range(0.0..std::f32::consts::TAU);
    let rib_freq = rng.random_range(38.0..48.0);
    let lung_rx = 0.16 * scale;
    let lung_ry = 0.30 * scale;
    let lungs = [
        (cx - 0.17 * scale, cy - 0.03),
        (cx + 0.17 * scale, cy - 0.03),
    ];
    // Opacities, placed inside a lung.
    let mut blobs: Vec<Blob> = Vec::new();
    let gain = difficulty.opacity_gain();
    let place = |rng: &mut ChaCha8Rng, side: usize, size: (f32, f32), strength: (f32, f32)| {
        let (lx, ly) = lungs[side];
        let r = rng.random_range(size.0..size.1) * scale;
        Blob {
            cx: lx + rng.random_range(-0.6..0.6) * lung_rx,
            cy: ly + rng.random_range(-0.1..0.7) * lung_ry,
            rx: r * rng.random_range(0.8..1.3),
            ry: r * rng.random_range(0.8..1.3),
            strength: rng.random_range(strength.0..strength.1),
        }
    };
    // Normal lungs have small vessel markings: confounders a model must learn to ignore.
    let (v0, v1) = difficulty.vessels();
    for _ in 0..rng.random_range(v0..v1) {
        let side = rng.random_range(0..2);
        blobs.push(place(rng, side, (0.008, 0.02), (10.0, 25.0)));
    }
    let mut haze = None;
    match finding {
        Finding::Normal => {}
        Finding::Bacterial => {
            // Lobar consolidation: one or two large, dense patches, in one lung only.
            let side = rng.random_range(0..2);
            for _ in 0..rng.random_range(1..3) {
                blobs.push(place(rng, side, (0.10, 0.20), (40.0 * gain, 85.0 * gain)));
            }
        }
        Finding::Viral => {
            // Interstitial: ground glass and a reticular net over both lungs, small patches in
            // each lung, no large one.
            let base = rng.random_range(24.0 * gain..42.0 * gain);
            haze = Some(Haze {
                strength: [
                    base * rng.random_range(0.8..1.0),
                    base * rng.random_range(0.8..1.0),
                ],
                glass: [
                    rng.random_range(12.0 * gain..22.0 * gain),
                    rng.random_range(12.0 * gain..22.0 * gain),
                ],
                // A mesh cell of about 9-13 pixels at the model's 125-pixel width.
                freq: rng.random_range(30.0..45.0),
                phase: (
                    rng.random_range(0.0..std::f32::consts::TAU),
                    rng.random_range(0.0..std::f32::consts::TAU),
                ),
            });
            // Patches in both lungs, alternating sides.
            let first = rng.random_range(0..2);
            for i in 0..rng.random_range(3..7) {
                let side = (first + i) % 2;
                blobs.push(place(rng, side, (0.03, 0.06), (18.0 * gain, 35.0 * gain)));
            }
        }
    }
    let noise = Normal::new(0.0f32, rng.random_range(3.0..9.0)).expect("valid std");
    let mut out = Vec::with_capacity(w * h);
    for yi in 0..h {
        let y = (yi as f32 + 0.5) / h as f32;
        for xi in 0..w {
            let x = (xi as f32 + 0.5) / w as f32;
            let mut v = 18.0;
            // Body outline.
            let body = soft_inside(
                in_ellipse(x, y, cx, cy + 0.08, 0.42 * scale, 0.55 * scale),
                0.08,
            );
            v += body * tissue;
            // Lungs: dark fields with ribs crossing them.
            let inside =
                lungs.map(|(lx, ly)| soft_inside(in_ellipse(x, y, lx, ly, lung_rx, lung_ry), 0.12));
            let lung = inside[0].max(inside[1]);
            let rib = (((y - cy) * rib_freq + (x - cx).abs() * 9.0 + rib_phase).sin()).max(0.0);
            v -= lung * (tissue - lung_level);
            v += lung * rib.powi(4) * 30.0;
            // Heart shadow on the patient's left (image right).
            let heart = soft_inside(
                in_ellipse(
                    x,
                    y,
                    cx + 0.06 * scale,
                    cy + 0.16,
                    0.12 * scale,
                    0.11 * scale,
                ),
                0.3,
            );
            v += heart * 70.0;
            // Spine.
            let spine = (1.0 - ((x - cx) / (0.03 * scale)).abs()).clamp(0.0, 1.0) * body;
            v += spine * 80.0;
            // Opacities count only inside the lungs.
            let mut opacity = 0.0f32;
            for b in &blobs {
                let d = in_ellipse(x, y, b.cx, b.cy, b.rx, b.ry);
                if d < 2.5 {
                    opacity += b.strength * (-1.6 * d).exp();
                }
            }
            v += lung * opacity;
            if let Some(haze) = &haze {
                for (side, &(lx, _)) in lungs.iter().enumerate() {
                    if inside[side] > 0.0 {
                        v += inside[side] * haze.at(side, x, y, lx, cx);
                    }
                }
            }
            v = v * exposure + noise.sample(rng);
            out.push(v.clamp(0.0, 255.0) as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_counts_and_determinism() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let mut opts = SynthOptions::new(40, 7);
        opts.width_range = (96, 128);
        let wa = generate(a.path(), &opts).unwrap();
        let wb = generate(b.path(), &opts).unwrap();
        assert_eq!(wa.len(), 40);
        let train = wa.iter().filter(|s| s.split == Split::Train).count();
        assert_eq!(train, 32);
        for (x, y) in wa.iter().zip(&wb) {
            let rel = x.path.strip_prefix(a.path()).unwrap();
            assert_eq!(rel, y.path.strip_prefix(b.path()).unwrap());
            assert_eq!(
                std::fs::read(&x.path).unwrap(),
                std::fs::read(&y.path).unwrap()
            );
        }
        let normals = wa.iter().filter(|s| s.class == Class::Normal).count();
        assert!((3..=22).contains(&normals), "{normals} normals of 40");
    }

    #[test]
    fn pneumonia_lungs_are_brighter_on_average() {
        // The opacity signal is real: mean lung-field brightness is higher with pneumonia.
        let mean_lung = |finding| {
            let mut total = 0.0;
            for s in 0..30u64 {
                let mut rng = ChaCha8Rng::seed_from_u64(s);
                let px = render(&mut rng, 120, 100, finding, Difficulty::Standard);
                let mut sum = 0.0;
                let mut n = 0.0;
                for y in 30..80 {
                    for x in (20..45).chain(75..100) {
                        sum += px[y * 120 + x] as f64;
                        n += 1.0;
                    }
                }
                total += sum / n;
            }
            total / 30.0
        };
        let normal = mean_lung(Finding::Normal);
        for finding in [Finding::Bacterial, Finding::Viral] {
            let pneumonia = mean_lung(finding);
            assert!(
                pneumonia > normal + 3.0,
                "normal {normal:.1} {finding:?} {pneumonia:.1}"
            );
        }
    }

    /// Mean brightness of the left and right lung fields of a 120x100 render.
    fn lung_means(finding: Finding, seed: u64) -> (f64, f64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let px = render(&mut rng, 120, 100, finding, Difficulty::Standard);
        let mean = |xs: std::ops::Range<usize>| {
            let n = (30..80).len() * xs.len();
            let sum: f64 = (30..80)
                .flat_map(|y| xs.clone().map(move |x| (y, x)))
                .map(|(y, x)| px[y * 120 + x] as f64)
                .sum();
            sum / n as f64
        };
        (mean(25..45), mean(75..95))
    }

    #[test]
    fn bacterial_is_one_sided_and_viral_is_bilateral() {
        // What separates the subtypes: a bacterial consolidation brightens one lung far more
        // than the other; viral haze brightens both, so the brighter lung's excess over a
        // normal lung is shared by the dimmer one.
        let seeds = 0..40u64;
        let n = 40.0;
        let asym = |f: Finding| {
            seeds
                .clone()
                .map(|s| {
                    let (l, r) = lung_means(f, s);
                    (l - r).abs()
                })
                .sum::<f64>()
                / n
        };
        let dimmer_excess = |f: Finding| {
            seeds
                .clone()
                .map(|s| {
                    let (l, r) = lung_means(f, s);
                    let (nl, nr) = lung_means(Finding::Normal, s);
                    l.min(r) - nl.min(nr)
                })
                .sum::<f64>()
                / n
        };
        let (bac, vir) = (asym(Finding::Bacterial), asym(Finding::Viral));
        assert!(
            bac > 2.0 * vir,
            "asymmetry: bacterial {bac:.1}, viral {vir:.1}"
        );
        let (bac, vir) = (
            dimmer_excess(Finding::Bacterial),
            dimmer_excess(Finding::Viral),
        );
        eprintln!("dimmer lung's excess over normal: bacterial {bac:.1}, viral {vir:.1}");
        // The viral ground glass lifts the dimmer lung by about 20 grey levels (20.7 measured);
        // the finer, fainter haze before it gave 8.6, too close to a normal lung at a brighter
        // exposure for dnn-max to separate in 10 epochs.
        assert!(
            vir > bac + 10.0,
            "dimmer lung's excess: bacterial {bac:.1}, viral {vir:.1}"
        );
    }

    #[test]
    fn bad_options_are_errors() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(
            generate(d.path(), &SynthOptions::new(0, 1)),
            Err(SynthError::Count(0))
        ));
        let mut o = SynthOptions::new(1, 1);
        o.width_range = (500, 100);
        assert!(matches!(generate(d.path(), &o), Err(SynthError::Width(..))));
    }
}
