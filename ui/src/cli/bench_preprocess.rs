//! `privxray bench preprocess`: images/s of both techniques, exact, reduced and draft decoding, on a
//! folder of images or a generated set, with a pool of exactly `--threads` threads. The Python
//! side of the comparison is `scripts/preprocess_reference.py` on the same folder.
//!
//! Imports the engine's `preprocess::bench` and the `scratch` sibling.

use super::scratch::Scratch;
use anyhow::Context;
use clap::Args;
use privxray::model::Technique;
use privxray::preprocess::bench::{self, ImageSet, Measurement};
use privxray::preprocess::Decoding;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Args)]
pub struct PreprocessBench {
    /// An existing folder of JPEG, PNG or DICOM files to read, recursively (only read, never
    /// written). Without it a set is generated (see --generate).
    #[arg(long, conflicts_with_all = ["generate", "out"])]
    pub dir: Option<PathBuf>,
    /// The set to generate when --dir is absent: smooth (like the Kermany radiographs: 1000-2000
    /// px wide, about 200 KB) or noisy (1300x1000 with per-pixel sensor noise, about 330 KB).
    #[arg(long, default_value = "smooth")]
    pub generate: ImageSet,
    /// Keep the generated set in this folder (created; it must not hold images yet), e.g. to run
    /// scripts/preprocess_reference.py on the same files. Default: a temporary folder, removed.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Number of images: generated, or the first K (by path) of --dir (default: all of --dir,
    /// 200 generated).
    #[arg(long)]
    pub count: Option<usize>,
    /// Threads of the pool the images are decoded and resized on (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Timed runs per configuration, after one warm-up run; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// exact (every pixel decoded), reduced (big JPEGs decoded at 1/2-1/8 scale in the DCT
    /// domain, at least twice the target size), draft (the same, at least the target size),
    /// both (exact and reduced) or all three.
    #[arg(long, default_value = "all")]
    pub decoding: DecodingChoice,
    /// Print the measurements as JSON (every run's seconds) instead of lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DecodingChoice {
    Exact,
    Reduced,
    Draft,
    Both,
    All,
}

impl DecodingChoice {
    fn decodings(self) -> Vec<Decoding> {
        match self {
            DecodingChoice::Exact => vec![Decoding::Exact],
            DecodingChoice::Reduced => vec![Decoding::Reduced],
            DecodingChoice::Draft => vec![Decoding::Draft],
            DecodingChoice::Both => vec![Decoding::Exact, Decoding::Reduced],
            DecodingChoice::All => vec![Decoding::Exact, Decoding::Reduced, Decoding::Draft],
        }
    }
}

pub fn preprocess_bench(b: PreprocessBench) -> anyhow::Result<()> {
    let threads = b.threads.unwrap_or_else(rayon::current_num_threads);
    let scratch;
    let (files, source) = match &b.dir {
        Some(dir) => {
            let mut files = bench::list_images(dir)?;
            if let Some(k) = b.count {
                files.truncate(k);
            }
            (files, format!("{}", dir.display()))
        }
        None => {
            let count = b.count.unwrap_or(200);
            let dir = match &b.out {
                Some(out) => {
                    std::fs::create_dir_all(out)
                        .with_context(|| format!("creating {}", out.display()))?;
                    if bench::list_images(out).is_ok() {
                        anyhow::bail!(
                            "{} already holds images; --out needs a folder without any",
                            out.display()
                        );
                    }
                    out.clone()
                }
                None => {
                    scratch = Scratch::new("bench")?;
                    scratch.path().to_path_buf()
                }
            };
            let t0 = Instant::now();
            let files = bench::generate(&dir, b.generate, count)?;
            eprintln!(
                "generated {count} {} JPEGs in {:.1} s under {}",
                b.generate.name(),
                t0.elapsed().as_secs_f64(),
                dir.display()
            );
            (
                files,
                format!("{} generated {} JPEGs", count, b.generate.name()),
            )
        }
    };
    let bytes: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    if !b.json {
        println!(
            "{} images from {source} ({:.0} KB on average), {threads} thread{}, median of {} \
             runs after a warm-up, no cache",
            files.len(),
            bytes as f64 / files.len().max(1) as f64 / 1024.0,
            if threads == 1 { "" } else { "s" },
            b.runs
        );
    }
    let mut all: Vec<Measurement> = Vec::new();
    for technique in [Technique::T1, Technique::T2] {
        for decoding in b.decoding.decodings() {
            let m = bench::measure(&files, technique, decoding, threads, b.runs)?;
            if !b.json {
                println!("{m}");
            }
            all.push(m);
        }
    }
    if b.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    }
    Ok(())
}
