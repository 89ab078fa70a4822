//! The paper's two preprocessing techniques, run in parallel over a dataset with a progress
//! callback and an on-disk cache.
//!
//! - Technique 1: greyscale, resize to width 125 x height 150 (bilinear), scale to [0, 1]:
//!   f32 1x150x125.
//! - Technique 2: resize to 224x224 with bicubic interpolation, 3 channels (a grey source is
//!   replicated), scale to [0, 1]: f32 3x224x224. The paper does not say how technique 2 is
//!   scaled; dividing by 255 keeps both techniques on one scale.
//!
//! Decoding is exact (every pixel), reduced or draft ([`Decoding`]): a big JPEG decoded at 1/2,
//! 1/4 or 1/8 scale (each 8x8 block reduced to the means of its cells, from its DCT
//! coefficients), staying at least twice the target size (reduced) or the target size (draft),
//! before the same resampling. [`DEFAULT_DECODING`] (exact) is what the pipeline and the cache
//! use.
//!
//! Resampling follows Pillow's convention (a separable convolution whose filter support
//! widens with the downscale factor, i.e. antialiased), with the triangle filter for bilinear and
//! Catmull-Rom (a = -0.5) for bicubic, through the SIMD resizer `fast_image_resize`. Results are
//! kept as u8 (0..=255) and turned into f32 by [`to_unit`] when used: the cache stays a quarter
//! of the size and the values are exactly what an 8-bit pipeline produces.
//!
//! Imports its children, `data` and `model` (`cache` adds `atomic`, `bench` adds `synth`); never `train`, `mpc`, `net`,
//! `party`, `pipeline` or terminal code.

pub mod bench;
pub mod cache;
mod resize;

pub use crate::model::Technique;
pub use resize::{resize_plane, Filter};

pub use crate::data::ImportLimits;
use crate::data::{
    self, decode_file_reduced, decode_file_with, ClassNames, DataError, Decoded, Item, Label,
    Labelling, Reduce, Skipped, Split,
};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// Converts 8-bit pixels to the f32 values the models see.
pub fn to_unit(pixels: &[u8]) -> Vec<f32> {
    pixels.iter().map(|&v| v as f32 / 255.0).collect()
}

/// Number of u8 values one preprocessed image holds.
pub fn image_len(t: Technique) -> usize {
    t.input_shape().iter().product()
}

/// Applies technique `t` to a decoded image, returning CHW u8 pixels.
pub fn apply(img: &Decoded, t: Technique) -> Result<Vec<u8>, resize::ResizeError> {
    let [_, h, w] = t.input_shape();
    match t {
        Technique::T1 => {
            let grey = img.to_grey();
            resize_plane(
                &grey,
                img.width,
                img.height,
                w as u32,
                h as u32,
                Filter::Bilinear,
            )
        }
        Technique::T2 => {
            if img.channels == 1 {
                // Resizing a grey plane once and replicating it equals resizing three copies.
                let plane = resize_plane(
                    &img.pixels,
                    img.width,
                    img.height,
                    w as u32,
                    h as u32,
                    Filter::Bicubic,
                )?;
                let mut out = Vec::with_capacity(plane.len() * 3);
                for _ in 0..3 {
                    out.extend_from_slice(&plane);
                }
                Ok(out)
            } else {
                let rgb = resize::resize_rgb(
                    &img.pixels,
                    img.width,
                    img.height,
                    w as u32,
                    h as u32,
                    Filter::Bicubic,
                )?;
                // Interleaved RGB to planar CHW.
                let n = w * h;
                let mut out = vec![0u8; 3 * n];
                for (i, px) in rgb.chunks_exact(3).enumerate() {
                    out[i] = px[0];
                    out[n + i] = px[1];
                    out[2 * n + i] = px[2];
                }
                Ok(out)
            }
        }
    }
}

/// How files are decoded before the resampling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decoding {
    /// Every pixel at full size (the reference).
    Exact,
    /// A JPEG at least four times the target in both dimensions decoded at 1/2, 1/4 or 1/8 scale
    /// (block means computed from the DCT coefficients, no inverse DCT), keeping at least twice
    /// the target ([`REDUCING_GAP`]), as Pillow's `draft` with `thumbnail`'s reducing gap does.
    /// Not within 2/255 of exact after resampling (up to 11/255 on the real samples), so opt-in.
    Reduced,
    /// As `Reduced`, but keeping only the target size ([`DRAFT_GAP`]): the reduction libjpeg's
    /// scaled decoding and Pillow's `draft` make when asked for the target size. More of the
    /// downscale is the cells' box means, less the resampling filter, so further from exact
    /// (see the README); the fastest, and opt-in.
    Draft,
}

/// `Reduced` keeps the decoded image at least this many times the target size in both
/// dimensions.
pub const REDUCING_GAP: f64 = 2.0;

/// `Draft` keeps it at least the target size.
pub const DRAFT_GAP: f64 = 1.0;

/// The decoding the pipeline (and so the cache) uses.
pub const DEFAULT_DECODING: Decoding = Decoding::Exact;

impl Decoding {
    pub fn name(self) -> &'static str {
        match self {
            Decoding::Exact => "exact",
            Decoding::Reduced => "reduced",
            Decoding::Draft => "draft",
        }
    }

    /// How many times the target the decoded image stays at least (`None`: every pixel).
    pub fn gap(self) -> Option<f64> {
        match self {
            Decoding::Exact => None,
            Decoding::Reduced => Some(REDUCING_GAP),
            Decoding::Draft => Some(DRAFT_GAP),
        }
    }
}

impl std::str::FromStr for Decoding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "exact" => Ok(Decoding::Exact),
            "reduced" => Ok(Decoding::Reduced),
            "draft" => Ok(Decoding::Draft),
            other => Err(format!(
                "unknown decoding {other:?}: exact, reduced or draft"
            )),
        }
    }
}

/// Decodes and preprocesses one file under the default [`ImportLimits`].
pub fn load_image(path: &Path, t: Technique) -> Result<Vec<u8>, String> {
    load_image_with(path, t, &ImportLimits::default())
}

/// Decodes and preprocesses one file, refusing it if it breaks `limits`.
pub fn load_image_with(
    path: &Path,
    t: Technique,
    limits: &ImportLimits,
) -> Result<Vec<u8>, String> {
    load_image_using(path, t, limits, DEFAULT_DECODING)
}

/// Decodes (as `decoding` says) and preprocesses one file, refusing it if it breaks `limits`.
pub fn load_image_using(
    path: &Path,
    t: Technique,
    limits: &ImportLimits,
    decoding: Decoding,
) -> Result<Vec<u8>, String> {
    let img = match decoding.gap() {
        None => decode_file_with(path, limits),
        Some(gap) => {
            let [_, h, w] = t.input_shape();
            let reduce = Reduce {
                at_least: (w as u32, h as u32),
                gap,
                grey: t == Technique::T1,
            };
            decode_file_reduced(path, limits, reduce)
        }
    }
    .map_err(|e| e.to_string())?;
    apply(&img, t).map_err(|e| e.to_string())
}

/// Progress of a preprocessing run, reported after every image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub done: usize,
    pub total: usize,
    /// Images taken from the cache rather than decoded.
    pub cached: usize,
}

/// A preprocessed dataset: items in scan order and their pixels, `image_len(technique)` u8
/// values each.
#[derive(Debug, Clone)]
pub struct Preprocessed {
    pub root: PathBuf,
    pub technique: Technique,
    /// The names of the items' labels.
    pub classes: ClassNames,
    pub items: Vec<Item>,
    pub pixels: Vec<u8>,
    pub skipped: Vec<Skipped>,
}

impl Preprocessed {
    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    /// CHW u8 pixels of item `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = image_len(self.technique);
        &self.pixels[i * n..(i + 1) * n]
    }
    /// Indices of items in the given splits.
    pub fn indices(&self, keep: impl Fn(Split) -> bool) -> Vec<usize> {
        (0..self.items.len())
            .filter(|&i| keep(self.items[i].split))
            .collect()
    }
    /// The paper's evaluation set: test and val merged (or a single unsplit folder).
    pub fn evaluation_indices(&self) -> Vec<usize> {
        self.indices(Split::is_evaluation)
    }
    /// A deterministic, class-stratified split of the training items into (train, validation)
    /// for early stopping: `fraction` of each class goes to validation, chosen by `seed`.
    pub fn train_validation_split(&self, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let (mut train, mut val) = (Vec::new(), Vec::new());
        for label in self.classes.labels() {
            let mut idx: Vec<usize> = self
                .indices(|s| s == Split::Train || s == Split::Single)
                .into_iter()
                .filter(|&i| self.items[i].label == label)
                .collect();
            idx.shuffle(&mut rng);
            let n_val = ((idx.len() as f64) * fraction).round() as usize;
            val.extend_from_slice(&idx[..n_val]);
            train.extend_from_slice(&idx[n_val..]);
        }
        train.sort_unstable();
        val.sort_unstable();
        (train, val)
    }
    /// Counts per split and class.
    pub fn counts(&self) -> BTreeMap<(Split, Label), usize> {
        let mut m = BTreeMap::new();
        for it in &self.items {
            *m.entry((it.split, it.label)).or_insert(0) += 1;
        }
        m
    }
    /// Appends `other` (another folder of the same dataset): items, pixels and skipped files
    /// after this one's. Classes are merged by name (sorted when they differ), labels renumbered.
    pub fn append(&mut self, other: Preprocessed) {
        if other.classes != self.classes {
            let mut names: Vec<String> = self.classes.names().to_vec();
            names.extend(other.classes.names().iter().cloned());
            // Both sets are valid, so their union is too.
            let merged = ClassNames::sorted(names).expect("a union of class sets");
            let remap = |classes: &ClassNames, l: Label| {
                merged.label_of(classes.name(l)).expect("a merged name")
            };
            for it in &mut self.items {
                it.label = remap(&self.classes, it.label);
            }
            let mut theirs = other.items;
            for it in &mut theirs {
                it.label = remap(&other.classes, it.label);
            }
            self.items.extend(theirs);
            self.classes = merged;
        } else {
            self.items.extend(other.items);
        }
        self.pixels.extend_from_slice(&other.pixels);
        self.skipped.extend(other.skipped);
    }
}

/// What a run did, for the `preprocess` summary.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    #[serde(serialize_with = "data::serialize_path_lossy")]
    pub root: PathBuf,
    pub technique: u8,
    pub images: usize,
    /// The class names, in label order.
    pub classes: Vec<String>,
    pub from_cache: usize,
    pub decoded: usize,
    pub skipped: Vec<Skipped>,
    pub counts: Vec<SplitCount>,
    pub seconds: f64,
    pub images_per_second: f64,
    /// The caps the files were held to.
    pub limits: ImportLimits,
    #[serde(serialize_with = "data::serialize_option_path_lossy")]
    pub cache_file: Option<PathBuf>,
    /// Why an existing cache could not be used, when that happened.
    pub cache_note: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SplitCount {
    pub split: String,
    /// NORMAL and PNEUMONIA images, present when those are the two classes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normal: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pneumonia: Option<usize>,
    /// Images of each class, in label order.
    pub per_class: Vec<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("writing the cache {path}: {source}")]
    CacheWrite {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("every image under {root} failed to load ({skipped} skipped); see the report")]
    NothingLoaded { root: PathBuf, skipped: usize },
}

/// [`run_with`] under the default [`ImportLimits`].
pub fn run(
    root: &Path,
    t: Technique,
    cache_dir: Option<&Path>,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<(Preprocessed, Summary), PreprocessError> {
    run_with(
        root,
        t,
        &Labelling::Folders,
        cache_dir,
        &ImportLimits::default(),
        progress,
    )
}

/// Scans `root` labelled by `labelling`, preprocesses every image with technique `t` in
/// parallel, reusing and updating the cache in `cache_dir` when given. Files that fail to
/// decode, or break `limits`, become report lines. The cache holds pixels by file, never
/// labels: a run under another labelling reuses it and still labels from its own scan.
pub fn run_with(
    root: &Path,
    t: Technique,
    labelling: &Labelling,
    cache_dir: Option<&Path>,
    limits: &ImportLimits,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<(Preprocessed, Summary), PreprocessError> {
    run_using(
        root,
        t,
        labelling,
        cache_dir,
        limits,
        DEFAULT_DECODING,
        progress,
    )
}

/// [`run_with`] decoding as `decoding` says (the cache records it: one made with another
/// decoding is rebuilt, not reused).
pub fn run_using(
    root: &Path,
    t: Technique,
    labelling: &Labelling,
    cache_dir: Option<&Path>,
    limits: &ImportLimits,
    decoding: Decoding,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<(Preprocessed, Summary), PreprocessError> {
    let start = Instant::now();
    let index = data::scan_with(root, labelling)?;
    let total = index.items.len();
    let (cache, cache_file, cache_note) = match cache_dir {
        Some(dir) => {
            let file = cache::cache_path(dir, root, t);
            let (loaded, note) = cache::Cache::load(&file, t, decoding, limits);
            (loaded, Some(file), note)
        }
        None => (None, None, None),
    };
    let fingerprints: Vec<Option<cache::Fingerprint>> = index
        .items
        .iter()
        .map(|it| cache::Fingerprint::of(&it.path))
        .collect();

    let done = AtomicUsize::new(0);
    let cached = AtomicUsize::new(0);
    let report = |from_cache: bool| {
        if from_cache {
            cached.fetch_add(1, Ordering::Relaxed);
        }
        let d = done.fetch_add(1, Ordering::Relaxed) + 1;
        progress(Progress {
            done: d,
            total,
            cached: cached.load(Ordering::Relaxed),
        });
    };
    let results: Vec<(Result<Vec<u8>, String>, bool)> = index
        .items
        .par_iter()
        .zip(fingerprints.par_iter())
        .map(|(item, fp)| {
            let hit = fp
                .as_ref()
                .and_then(|fp| cache.as_ref().and_then(|c| c.lookup(&item.path, fp)));
            let (res, from_cache) = match hit {
                Some(r) => (r, true),
                None => (load_image_using(&item.path, t, limits, decoding), false),
            };
            report(from_cache);
            (res, from_cache)
        })
        .collect();

    let n = image_len(t);
    let mut out = Preprocessed {
        root: root.to_path_buf(),
        technique: t,
        classes: index.classes.clone(),
        items: Vec::with_capacity(total),
        pixels: Vec::with_capacity(total * n),
        skipped: index.skipped.clone(),
    };
    let mut entries = Vec::with_capacity(total);
    let mut from_cache = 0;
    for ((item, fp), (res, hit)) in index.items.into_iter().zip(fingerprints).zip(results) {
        from_cache += hit as usize;
        let outcome = match res {
            Ok(px) => {
                out.pixels.extend_from_slice(&px);
                out.items.push(item.clone());
                Ok(out.items.len() - 1)
            }
            Err(reason) => {
                out.skipped.push(Skipped {
                    path: item.path.clone(),
                    reason: reason.clone(),
                });
                Err(reason)
            }
        };
        if let Some(fingerprint) = fp {
            entries.push(cache::Entry {
                path: item.path,
                fingerprint,
                outcome,
            });
        }
    }
    let decoded = total - from_cache;
    if let Some(file) = &cache_file {
        let stale = cache.as_ref().map(|c| !c.matches(&entries)).unwrap_or(true);
        if stale {
            cache::Cache::write(file, t, decoding, limits, &entries, &out).map_err(|source| {
                PreprocessError::CacheWrite {
                    path: file.clone(),
                    source,
                }
            })?;
        }
    }
    if out.items.is_empty() {
        return Err(PreprocessError::NothingLoaded {
            root: root.to_path_buf(),
            skipped: out.skipped.len(),
        });
    }
    let seconds = start.elapsed().as_secs_f64();
    let counts = out.counts();
    let mut splits: Vec<Split> = counts.keys().map(|(s, _)| *s).collect();
    splits.dedup();
    let summary = Summary {
        root: root.to_path_buf(),
        technique: t.number(),
        images: out.items.len(),
        classes: out.classes.names().to_vec(),
        from_cache,
        decoded,
        skipped: out.skipped.clone(),
        counts: splits
            .into_iter()
            .map(|s| {
                let per_class: Vec<usize> = out
                    .classes
                    .labels()
                    .map(|l| counts.get(&(s, l)).copied().unwrap_or(0))
                    .collect();
                let binary = out.classes == ClassNames::binary();
                SplitCount {
                    split: s.to_string(),
                    normal: binary.then_some(per_class[0]),
                    pneumonia: binary.then_some(per_class[1]),
                    per_class,
                }
            })
            .collect(),
        seconds,
        images_per_second: total as f64 / seconds.max(1e-9),
        limits: *limits,
        cache_file,
        cache_note,
    };
    Ok((out, summary))
}

#[cfg(test)]
mod tests;
