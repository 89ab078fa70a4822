//! The preprocessing cache: one safetensors file per (dataset root, technique) holding the u8
//! pixels of every image, with a manifest (source path, size, mtime, outcome) in its metadata.
//! An unchanged file is taken from the cache; a new or changed one is decoded again. Writes are
//! atomic (temporary file, fsync, rename): a killed run leaves the old cache or none.

use super::{image_len, Preprocessed, Technique};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

const FORMAT: &str = "privxray-preprocess-cache-v1";

/// What identifies a source file's content cheaply: its size and modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub size: u64,
    pub mtime_ns: u128,
}

impl Fingerprint {
    pub fn of(path: &Path) -> Option<Fingerprint> {
        let m = std::fs::metadata(path).ok()?;
        let mtime_ns = m
            .modified()
            .ok()?
            .duration_since(UNIX_EPOCH)
            .ok()?
            .as_nanos();
        Some(Fingerprint {
            size: m.len(),
            mtime_ns,
        })
    }
}

/// One source file as the cache records it: where its pixels are (`Ok(row)`), or why it failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub path: PathBuf,
    pub fingerprint: Fingerprint,
    pub outcome: Result<usize, String>,
}

/// A loaded cache.
pub struct Cache {
    by_path: HashMap<PathBuf, (Fingerprint, Result<usize, String>)>,
    pixels: Vec<u8>,
    technique: Technique,
}

/// `DIR/preprocess-t{1,2}-{hash of the root's absolute path}.safetensors`.
pub fn cache_path(dir: &Path, root: &Path, t: Technique) -> PathBuf {
    let abs = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    // FNV-1a: stable across Rust versions, unlike the std hasher.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in abs.to_string_lossy().bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    dir.join(format!("preprocess-t{}-{h:016x}.safetensors", t.number()))
}

impl Cache {
    /// Loads the cache at `file`. A missing file is `(None, None)`; an unusable one is
    /// `(None, Some(reason))`, and the run rebuilds it.
    pub fn load(file: &Path, t: Technique) -> (Option<Cache>, Option<String>) {
        if !file.exists() {
            return (None, None);
        }
        match Self::try_load(file, t) {
            Ok(c) => (Some(c), None),
            Err(reason) => (
                None,
                Some(format!(
                    "ignored unusable cache {}: {reason}; rebuilding",
                    file.display()
                )),
            ),
        }
    }

    fn try_load(file: &Path, t: Technique) -> Result<Cache, String> {
        let bytes = std::fs::read(file).map_err(|e| e.to_string())?;
        let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| e.to_string())?;
        let info = meta.metadata().as_ref().ok_or("no metadata")?;
        if info.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(format!("not a {FORMAT} file"));
        }
        if info.get("technique") != Some(&t.number().to_string()) {
            return Err("made for another technique".into());
        }
        let entries: Vec<Entry> = serde_json::from_str(info.get("manifest").ok_or("no manifest")?)
            .map_err(|e| format!("bad manifest: {e}"))?;
        let tensors = SafeTensors::deserialize(&bytes).map_err(|e| e.to_string())?;
        let view = tensors.tensor("pixels").map_err(|e| e.to_string())?;
        let n = image_len(t);
        let rows = view.data().len() / n;
        if view.dtype() != Dtype::U8 || view.data().len() % n != 0 {
            return Err("pixel tensor has the wrong type or size".into());
        }
        let mut by_path = HashMap::with_capacity(entries.len());
        for e in entries {
            if let Ok(row) = e.outcome {
                if row >= rows {
                    return Err(format!("manifest row {row} beyond {rows} images"));
                }
            }
            by_path.insert(e.path, (e.fingerprint, e.outcome));
        }
        Ok(Cache {
            by_path,
            pixels: view.data().to_vec(),
            technique: t,
        })
    }

    /// The cached outcome for `path` if its fingerprint still matches.
    pub fn lookup(&self, path: &Path, fp: &Fingerprint) -> Option<Result<Vec<u8>, String>> {
        let (cached_fp, outcome) = self.by_path.get(path)?;
        if cached_fp != fp {
            return None;
        }
        let n = image_len(self.technique);
        Some(match outcome {
            Ok(row) => Ok(self.pixels[row * n..(row + 1) * n].to_vec()),
            Err(reason) => Err(reason.clone()),
        })
    }

    /// Whether the cache describes exactly these files with these outcomes (nothing to write).
    pub fn matches(&self, entries: &[Entry]) -> bool {
        entries.len() == self.by_path.len()
            && entries.iter().all(|e| match self.by_path.get(&e.path) {
                Some((fp, outcome)) => fp == &e.fingerprint && outcome.is_ok() == e.outcome.is_ok(),
                None => false,
            })
    }

    /// Writes a new cache for `set` atomically.
    pub fn write(
        file: &Path,
        t: Technique,
        entries: &[Entry],
        set: &Preprocessed,
    ) -> std::io::Result<()> {
        let io = |e: String| std::io::Error::other(e);
        let manifest = serde_json::to_string(entries).map_err(|e| io(e.to_string()))?;
        let meta: HashMap<String, String> = [
            ("format".to_string(), FORMAT.to_string()),
            ("technique".to_string(), t.number().to_string()),
            ("manifest".to_string(), manifest),
        ]
        .into();
        let [c, h, w] = t.input_shape();
        let view = TensorView::new(Dtype::U8, vec![set.len(), c, h, w], &set.pixels)
            .map_err(|e| io(e.to_string()))?;
        let bytes = safetensors::tensor::serialize([("pixels", view)], Some(meta))
            .map_err(|e| io(e.to_string()))?;
        crate::atomic::write_atomic(file, &bytes)
    }
}
