//! Canaries for auditing one training run (Steinke, Nasr and Jagielski 2023): m synthetic
//! examples, each added to the training set with probability 1/2 from the OS CSPRNG, and
//! afterwards scored with the trained model to guess which were in (the statistics are in
//! [`crate::privacy::canary`]).
//!
//! A canary is a `u64` seed and a label. Its image is uniform noise of the model's input shape,
//! pixel j (in C, H, W order) being `(splitmix64(seed + (j + 1) * 0x9E3779B97F4A7C15) >> 40) /
//! 2^24` in [0, 1): SplitMix64's stream from `seed`, 24 bits per pixel. Noise images are far from
//! every radiograph and from one another, so a model fits an included canary's (random) label
//! only by memorising it, which is what the audit measures.
//!
//! The canary file is JSON, written atomically with mode 0600 (it is private: the inclusion
//! choices are exactly the secret the audit tests, so the file never goes into a checkpoint or a
//! release):
//!
//! ```text
//! {"format": "privxray-canaries", "version": 1, "input_shape": [1, 150, 125],
//!  "image": "splitmix64-uniform",
//!  "canaries": [{"seed": 123, "label": 1, "included": true}, ...]}
//! ```
//!
//! Imports `crate::{atomic, privacy}` and `super::{data, error, loss, model}`; never `mpc`, `net`,
//! `party`, `pipeline` or terminal code.

use super::data::{TrainData, PNEUMONIA};
use super::error::{Result, TrainError};
use super::loss::per_example_nll;
use super::model::Model;
use crate::privacy::canary::{audit_canaries, CanaryAuditReport};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The `format` field of a canary file.
pub const FORMAT: &str = "privxray-canaries";
/// The `version` this code writes and reads.
pub const VERSION: u32 = 1;
/// The `image` field: how a seed becomes pixels (see the module documentation).
pub const IMAGE_KIND: &str = "splitmix64-uniform";
/// The name the terminal interface looks for beside a checkpoint (`<dir>/canaries.json`) to
/// show a run's canary lower bound. The folder then holds a private file: never ship it whole.
pub const FILE_NAME: &str = "canaries.json";
/// Most values one canary image may have (a 3x224x224 image has 150,528).
const MAX_IMAGE_VALUES: usize = 1 << 24;

/// One canary: its image seed, its label (0 NORMAL, 1 PNEUMONIA) and whether this run trained
/// on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Canary {
    pub seed: u64,
    pub label: u8,
    pub included: bool,
}

/// A run's canaries and their inclusion choices. Construct with [`CanarySet::draw`] (or
/// [`CanarySet::draw_with`] in tests) or [`CanarySet::load`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanarySet {
    format: String,
    version: u32,
    input_shape: [usize; 3],
    image: String,
    canaries: Vec<Canary>,
}

impl CanarySet {
    /// `count` canaries of images shaped `input_shape`, seeds, labels and inclusion coins drawn
    /// from ChaCha20 seeded by the OS CSPRNG.
    pub fn draw(count: usize, input_shape: [usize; 3]) -> Result<Self> {
        let mut rng = ChaCha20Rng::try_from_os_rng()
            .map_err(|e| TrainError::Canary(format!("the OS random generator failed: {e}")))?;
        Self::draw_with(count, input_shape, &mut rng)
    }

    /// As [`CanarySet::draw`], from a given generator (reproducible; for tests only: the
    /// inclusion coins must be secret and unpredictable for the audit to mean anything).
    pub fn draw_with(count: usize, input_shape: [usize; 3], rng: &mut dyn RngCore) -> Result<Self> {
        check_shape(input_shape).map_err(TrainError::Canary)?;
        let canaries = (0..count)
            .map(|_| Canary {
                seed: rng.next_u64(),
                label: u8::from(rng.random::<bool>()),
                included: rng.random::<bool>(),
            })
            .collect();
        Ok(Self {
            format: FORMAT.into(),
            version: VERSION,
            input_shape,
            image: IMAGE_KIND.into(),
            canaries,
        })
    }

    pub fn canaries(&self) -> &[Canary] {
        &self.canaries
    }
    pub fn len(&self) -> usize {
        self.canaries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.canaries.is_empty()
    }
    pub fn input_shape(&self) -> [usize; 3] {
        self.input_shape
    }
    /// Each canary's inclusion choice, in canary order.
    pub fn included(&self) -> Vec<bool> {
        self.canaries.iter().map(|c| c.included).collect()
    }
    /// How many canaries are in the training set.
    pub fn included_count(&self) -> usize {
        self.canaries.iter().filter(|c| c.included).count()
    }

    /// The canaries `which` selects, as training data.
    fn data(&self, which: impl Fn(&Canary) -> bool) -> Result<TrainData> {
        let chosen: Vec<&Canary> = self.canaries.iter().filter(|c| which(c)).collect();
        let per: usize = self.input_shape.iter().product();
        let mut images = Vec::with_capacity(chosen.len() * per);
        for c in &chosen {
            images.extend(canary_image(c.seed, self.input_shape));
        }
        let labels = chosen.iter().map(|c| c.label).collect();
        TrainData::new(self.input_shape, images, labels)
    }

    /// `data` with the included canaries appended (after its own examples, in canary order).
    pub fn attach(&self, data: &TrainData) -> Result<TrainData> {
        self.check_against(data.shape(), "training data")?;
        let extra = self.data(|c| c.included)?;
        let mut images = data.images().to_vec();
        images.extend_from_slice(extra.images());
        let mut labels = data.labels().to_vec();
        labels.extend_from_slice(extra.labels());
        // Canary labels are 0 or 1: valid under any set of two or more classes.
        TrainData::with_classes(data.shape(), images, labels, data.classes().clone())
    }

    /// Each canary's membership score under `model`: minus the loss of its label (higher: the
    /// model fits it better, so more likely trained on). Evaluation mode, no dropout.
    pub fn scores(&self, model: &Model) -> Result<Vec<f64>> {
        self.check_against(model.input_shape(), "the model's input")?;
        let all = self.data(|_| true)?;
        let device = candle_core::Device::Cpu;
        let mut out = Vec::with_capacity(all.len());
        let idx: Vec<usize> = (0..all.len()).collect();
        for chunk in idx.chunks(64) {
            let (x, y) = all.batch(chunk, &device)?;
            let logits = model.forward_with(&x, None)?;
            let nll = per_example_nll(&logits, &y)?.to_vec1::<f32>()?;
            out.extend(nll.into_iter().map(|l| -f64::from(l)));
        }
        Ok(out)
    }

    /// Scores the canaries with `model` and bounds epsilon from below
    /// ([`crate::privacy::canary::audit_canaries`]); `delta` is the run's (0 for no DP).
    pub fn audit(&self, model: &Model, delta: f64) -> Result<CanaryAuditReport> {
        Ok(audit_canaries(
            &self.scores(model)?,
            &self.included(),
            delta,
        )?)
    }

    fn check_against(&self, shape: [usize; 3], what: &str) -> Result<()> {
        if shape == self.input_shape {
            Ok(())
        } else {
            Err(TrainError::Canary(format!(
                "the canaries' images are {:?}, {what} is {shape:?}",
                self.input_shape
            )))
        }
    }

    /// Serialised as the canary file's JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self)
            .map_err(|e| TrainError::Canary(format!("serialising canaries: {e}")))
    }

    /// Writes the canary file atomically, readable by its owner only.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::atomic::write_atomic_with_mode(path, self.to_json()?.as_bytes(), Some(0o600))
            .map_err(|source| TrainError::Io {
                path: path.to_path_buf(),
                source,
            })
    }

    /// Reads and validates a canary file; errors name the file and what was expected.
    pub fn load(path: &Path) -> Result<Self> {
        let bad = |reason: String| TrainError::CanaryFile {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let set: CanarySet = serde_json::from_str(&text).map_err(|e| {
            bad(format!(
                "expected a JSON canary file (format, version, input_shape, image, canaries: \
                 [{{seed, label, included}}]): {e}"
            ))
        })?;
        set.validate().map_err(bad)?;
        Ok(set)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.format != FORMAT {
            return Err(format!("format {:?}: expected {FORMAT:?}", self.format));
        }
        if self.version != VERSION {
            return Err(format!("version {}: expected {VERSION}", self.version));
        }
        if self.image != IMAGE_KIND {
            return Err(format!(
                "image kind {:?}: expected {IMAGE_KIND:?}",
                self.image
            ));
        }
        check_shape(self.input_shape)?;
        if let Some((i, c)) = self
            .canaries
            .iter()
            .enumerate()
            .find(|(_, c)| c.label > PNEUMONIA)
        {
            return Err(format!(
                "canary #{i} has label {}: expected 0 (NORMAL) or 1 (PNEUMONIA)",
                c.label
            ));
        }
        Ok(())
    }
}

fn check_shape(shape: [usize; 3]) -> std::result::Result<(), String> {
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .unwrap_or(usize::MAX);
    if n == 0 || n > MAX_IMAGE_VALUES {
        Err(format!(
            "input shape {shape:?}: expected three positive dimensions with at most \
             {MAX_IMAGE_VALUES} values"
        ))
    } else {
        Ok(())
    }
}

/// The canary file beside `checkpoint` ([`FILE_NAME`] in its folder), if there is one.
pub fn file_beside(checkpoint: &Path) -> Option<std::path::PathBuf> {
    Some(checkpoint.with_file_name(FILE_NAME)).filter(|p| p.is_file())
}

/// SplitMix64's output function.
fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The image of the canary with `seed`: uniform noise in [0, 1), `shape` (C, H, W) values.
pub fn canary_image(seed: u64, shape: [usize; 3]) -> Vec<f32> {
    const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
    let n: usize = shape.iter().product();
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(GOLDEN);
            (splitmix64(state) >> 40) as f32 / (1u32 << 24) as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: [usize; 3] = [1, 6, 5];

    fn set(count: usize, seed: u64) -> CanarySet {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        CanarySet::draw_with(count, SHAPE, &mut rng).unwrap()
    }

    #[test]
    fn images_are_deterministic_uniform_noise() {
        let a = canary_image(42, SHAPE);
        assert_eq!(a, canary_image(42, SHAPE));
        assert_ne!(a, canary_image(43, SHAPE));
        assert_eq!(a.len(), 30);
        assert!(a.iter().all(|v| (0.0..1.0).contains(v)));
        // SplitMix64 from 0: the first output is 0xE220A8397B1DCDAF (Vigna's reference).
        let first = canary_image(0, [1, 1, 1])[0];
        assert_eq!(
            first,
            (0xE220_A839_7B1D_CDAFu64 >> 40) as f32 / 16_777_216.0
        );
        let big = canary_image(7, [1, 100, 100]);
        let mean = big.iter().map(|&v| f64::from(v)).sum::<f64>() / 1e4;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }

    #[test]
    fn draws_are_balanced_coins() {
        let s = set(2000, 1);
        let inc = s.included_count();
        let pneumonia = s.canaries().iter().filter(|c| c.label == 1).count();
        // 2000 fair coins: 1000 +- 3.5 sd (22) each.
        assert!((923..=1077).contains(&inc), "{inc}");
        assert!((923..=1077).contains(&pneumonia), "{pneumonia}");
        // The OS-seeded draw differs from run to run.
        let a = CanarySet::draw(64, SHAPE).unwrap();
        let b = CanarySet::draw(64, SHAPE).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn attach_appends_exactly_the_included_canaries() {
        let s = set(50, 2);
        let base = TrainData::new(SHAPE, vec![0.25; 60], vec![0, 1]).unwrap();
        let d = s.attach(&base).unwrap();
        assert_eq!(d.len(), 2 + s.included_count());
        assert_eq!(d.image(0).unwrap(), base.image(0).unwrap());
        let inc: Vec<&Canary> = s.canaries().iter().filter(|c| c.included).collect();
        for (k, c) in inc.iter().enumerate() {
            assert_eq!(
                d.image(2 + k).unwrap(),
                canary_image(c.seed, SHAPE).as_slice()
            );
            assert_eq!(d.labels()[2 + k], c.label);
        }
        let wrong = TrainData::new([1, 5, 6], vec![0.0; 30], vec![0]).unwrap();
        assert!(matches!(s.attach(&wrong), Err(TrainError::Canary(_))));
    }

    #[test]
    fn scores_are_minus_each_canarys_loss_under_the_model() {
        use crate::model::ModelKind;
        let device = candle_core::Device::Cpu;
        let (model, _) = Model::init(ModelKind::DnnMax, 1.0, 5, &device).unwrap();
        let shape = model.input_shape();
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let s = CanarySet::draw_with(3, shape, &mut rng).unwrap();
        let scores = s.scores(&model).unwrap();
        assert_eq!(scores.len(), 3);
        for (c, score) in s.canaries().iter().zip(&scores) {
            let x = candle_core::Tensor::from_vec(
                canary_image(c.seed, shape),
                (1, 1, 150, 125),
                &device,
            )
            .unwrap();
            let logits = model
                .forward_with(&x, None)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            let [a, b] = [logits[0][0], logits[0][1]];
            let (own, other) = if c.label == 0 { (a, b) } else { (b, a) };
            // -nll = own - logsumexp(own, other)
            let want = own - (own.max(other) + (-(own - other).abs()).exp().ln_1p());
            assert!((score - f64::from(want)).abs() < 1e-5, "{score} vs {want}");
        }
        // A canary file for another input shape is refused, not scored.
        let other = set(3, 4);
        assert!(matches!(other.scores(&model), Err(TrainError::Canary(_))));
    }

    #[test]
    fn file_round_trips_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("canaries.json");
        let s = set(10, 3);
        s.save(&path).unwrap();
        assert_eq!(CanarySet::load(&path).unwrap(), s);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let cases = [
            ("not json", "expected a JSON canary file".to_string()),
            (
                r#"{"format":"privxray-canaries","version":1}"#,
                "missing field".into(),
            ),
            (
                &text.replace("\"version\": 1", "\"version\": 9"),
                "version 9".into(),
            ),
            (
                &text.replace("privxray-canaries", "other"),
                "format \"other\"".into(),
            ),
            (
                &text.replacen("\"label\": 0", "\"label\": 7", 1).replacen(
                    "\"label\": 1",
                    "\"label\": 7",
                    1,
                ),
                "has label 7".into(),
            ),
            (
                &text.replacen("\"seed\": ", "\"seed\": -", 1),
                "expected a JSON canary file".into(),
            ),
            (
                &text.replacen("\n    6,", "\n    0,", 1),
                "input shape".into(),
            ),
        ];
        for (body, want) in cases {
            std::fs::write(&path, body).unwrap();
            let e = CanarySet::load(&path).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains("canaries.json") && msg.contains(&want),
                "{msg}"
            );
        }
        let missing = CanarySet::load(&dir.path().join("none.json")).unwrap_err();
        assert!(missing.to_string().contains("none.json"));
    }
}
