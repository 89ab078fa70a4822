//! The preprocessing benchmark: images/s of each technique and decoding on one folder of images,
//! with a pool of exactly the stated threads, as the median of timed runs after a warm-up run.
//! Also generates the two benchmark sets: real-like smooth radiographs and noisy ones.
//!
//! Imports its parent, `data` (image listing, limits), `synth` (the generated images) and
//! `stats` (the median).

use super::{load_image_using, Decoding, ImportLimits, Technique};
use crate::data::{decode_file, is_image_extension};
use crate::stats::median;
use crate::synth::{self, SynthError, SynthOptions};
use rayon::prelude::*;
use serde::Serialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A generated benchmark set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ImageSet {
    /// Like the Kermany radiographs: 1000-2000 px wide, smooth (the synthetic images drawn at a
    /// third of the size and upscaled, so the sensor noise is low-pass), quality 85: about
    /// 200 KB on average (the Kermany files are 60-260 KB).
    Smooth,
    /// 1300x1000 with per-pixel sensor noise (sigma 3-9 grey levels), quality 90, about 330 KB:
    /// more entropy-coded data per pixel than the smooth set.
    Noisy,
}

impl ImageSet {
    pub fn name(self) -> &'static str {
        match self {
            ImageSet::Smooth => "smooth",
            ImageSet::Noisy => "noisy",
        }
    }
}

impl std::str::FromStr for ImageSet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "smooth" => Ok(ImageSet::Smooth),
            "noisy" => Ok(ImageSet::Noisy),
            other => Err(format!("unknown image set {other:?}: smooth or noisy")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Synth(#[from] SynthError),
    #[error("reading {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("no JPEG, PNG or DICOM files under {0}")]
    NoImages(PathBuf),
    #[error("{path}: {reason}")]
    Image { path: PathBuf, reason: String },
    #[error("--threads must be at least 1")]
    NoThreads,
    #[error("--runs must be at least 1")]
    NoRuns,
    #[error("building a pool of {threads} threads: {reason}")]
    Pool { threads: usize, reason: String },
}

/// The upscaling factor of the smooth set: images drawn 360-730 px wide become 1000-2000 px.
const SMOOTH_UPSCALE: f64 = 2.75;

/// JPEG quality of the smooth set: its files come out about the size of the Kermany ones.
const SMOOTH_QUALITY: u8 = 85;

/// Writes `count` images of `set` under `dir` (in the Kermany layout) and returns their paths.
pub fn generate(dir: &Path, set: ImageSet, count: usize) -> Result<Vec<PathBuf>, BenchError> {
    let mut opts = SynthOptions::new(count, 42);
    match set {
        ImageSet::Noisy => {
            opts.width_range = (1300, 1300);
            opts.aspect_range = (1000.0 / 1300.0, 1000.0 / 1300.0);
        }
        ImageSet::Smooth => {
            opts.width_range = (364, 727);
            opts.aspect_range = (0.6, 0.85);
        }
    }
    let written = synth::generate(dir, &opts)?;
    let paths: Vec<PathBuf> = written.into_iter().map(|w| w.path).collect();
    if set == ImageSet::Smooth {
        paths.par_iter().try_for_each(|p| upscale(p))?;
    }
    Ok(paths)
}

/// Rewrites the JPEG at `path` [`SMOOTH_UPSCALE`] times larger (bicubic), at [`SMOOTH_QUALITY`].
fn upscale(path: &Path) -> Result<(), BenchError> {
    let err = |reason: String| BenchError::Image {
        path: path.to_path_buf(),
        reason,
    };
    let img = decode_file(path).map_err(|e| err(e.to_string()))?;
    let w = (img.width as f64 * SMOOTH_UPSCALE).round() as u32;
    let h = (img.height as f64 * SMOOTH_UPSCALE).round() as u32;
    let big = super::resize_plane(
        &img.to_grey(),
        img.width,
        img.height,
        w,
        h,
        super::Filter::Bicubic,
    )
    .map_err(|e| err(e.to_string()))?;
    synth::write_jpeg(path, &big, w, h, SMOOTH_QUALITY)?;
    Ok(())
}

/// Every image file under `dir`, recursively, sorted by path.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>, BenchError> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), BenchError> {
        let read = |e: std::io::Error| BenchError::Read {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        };
        for entry in std::fs::read_dir(dir).map_err(read)? {
            let path = entry.map_err(read)?.path();
            if path.is_dir() {
                walk(&path, out)?;
            } else if is_image_extension(&path) {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, &mut out)?;
    if out.is_empty() {
        return Err(BenchError::NoImages(dir.to_path_buf()));
    }
    out.sort();
    Ok(out)
}

/// One measured configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub technique: u8,
    pub decoding: Decoding,
    pub threads: usize,
    pub images: usize,
    /// Seconds of each timed run, in order (after one untimed warm-up run).
    pub seconds: Vec<f64>,
    /// Images divided by the median run's seconds.
    pub images_per_second: f64,
}

impl fmt::Display for Measurement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sorted = self.seconds.clone();
        sorted.sort_by(f64::total_cmp);
        write!(
            f,
            "technique {}, {} decoding, {} thread{}: {:.1} images/s (median of {} runs over {} \
             images; runs {:.3}-{:.3} s)",
            self.technique,
            self.decoding.name(),
            self.threads,
            if self.threads == 1 { "" } else { "s" },
            self.images_per_second,
            self.seconds.len(),
            self.images,
            sorted[0],
            sorted[sorted.len() - 1],
        )
    }
}

/// Decodes and preprocesses every file of `files` with technique `t` on a pool of exactly
/// `threads` threads: one warm-up run, then `runs` timed runs. No cache; a file that fails
/// stops the benchmark with its name.
pub fn measure(
    files: &[PathBuf],
    t: Technique,
    decoding: Decoding,
    threads: usize,
    runs: usize,
) -> Result<Measurement, BenchError> {
    if threads == 0 {
        return Err(BenchError::NoThreads);
    }
    if runs == 0 {
        return Err(BenchError::NoRuns);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| BenchError::Pool {
            threads,
            reason: e.to_string(),
        })?;
    let limits = ImportLimits::default();
    let once = || -> Result<f64, BenchError> {
        let t0 = Instant::now();
        pool.install(|| {
            files.par_iter().try_for_each(|path| {
                load_image_using(path, t, &limits, decoding)
                    .map(drop)
                    .map_err(|reason| BenchError::Image {
                        path: path.clone(),
                        reason,
                    })
            })
        })?;
        Ok(t0.elapsed().as_secs_f64())
    };
    once()?;
    let seconds = (0..runs).map(|_| once()).collect::<Result<Vec<_>, _>>()?;
    Ok(Measurement {
        technique: t.number(),
        decoding,
        threads,
        images: files.len(),
        images_per_second: files.len() as f64 / median(&seconds).max(1e-9),
        seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_set_is_real_like_in_size_and_measured_on_one_thread() {
        let dir = tempfile::tempdir().unwrap();
        let files = generate(dir.path(), ImageSet::Smooth, 3).unwrap();
        assert_eq!(list_images(dir.path()).unwrap(), {
            let mut f = files.clone();
            f.sort();
            f
        });
        for f in &files {
            let img = decode_file(f).unwrap();
            assert!(
                (1000..=2000).contains(&img.width),
                "{}: width {}",
                f.display(),
                img.width
            );
        }
        let m = measure(&files, Technique::T1, Decoding::Reduced, 1, 2).unwrap();
        assert_eq!((m.threads, m.images, m.seconds.len()), (1, 3, 2));
        assert!(m.images_per_second > 0.0);
    }

    #[test]
    fn a_broken_file_stops_the_benchmark_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.jpeg");
        std::fs::write(&bad, b"\xFF\xD8 not a jpeg").unwrap();
        let err = measure(&[bad], Technique::T2, Decoding::Reduced, 1, 1).unwrap_err();
        assert!(err.to_string().contains("bad.jpeg"), "{err}");
    }
}
