//! The preprocessing cache: one safetensors file per (dataset root, technique) holding the u8
//! pixels of every image, with a manifest (source path, size, mtime, outcome) in its metadata.
//! An unchanged file is taken from the cache; a new or changed one is decoded again. Writes are
//! atomic (temporary file, fsync, rename): a killed run leaves the old cache or none.
//!
//! Metadata of format v2 (string keys and values, as safetensors allows):
//! - `format`: `privxray-preprocess-cache-v2` (a v1 cache is rebuilt once);
//! - `technique`: `1` or `2`;
//! - `limits`: JSON [`ImportLimits`] the outcomes were reached under;
//! - `decoding`: `exact` or `reduced` ([`Decoding`]), which changes the pixels; a cache without
//!   it was made before reduced decoding existed, so it is `exact`;
//! - `manifest`: JSON list of entries `{"path", "fingerprint", "outcome"}`, where `path` is a
//!   string when the name is UTF-8 and `{"hex": "..."}` (the raw bytes of the name) otherwise,
//!   so any name the file system allows round-trips;
//! - `checksum`: hex BLAKE2b-256 of the manifest text followed by the pixel bytes. A cache whose
//!   checksum does not match is reported and rebuilt, never used.

use super::{image_len, Decoding, Preprocessed, Technique};
use crate::data::ImportLimits;
use blake2::{digest::consts::U32, Blake2b, Digest};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

const FORMAT: &str = "privxray-preprocess-cache-v2";

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
    #[serde(with = "stored_path")]
    pub path: PathBuf,
    pub fingerprint: Fingerprint,
    pub outcome: Result<usize, String>,
}

/// A path in the manifest: text when it is UTF-8, else the raw bytes of the name in hex.
mod stored_path {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::path::{Path, PathBuf};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Text(String),
        Bytes { hex: String },
    }

    pub fn serialize<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
        match path.to_str() {
            Some(text) => Stored::Text(text.to_string()),
            None => Stored::Bytes {
                hex: hex::encode(super::path_bytes(path)),
            },
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        match Stored::deserialize(d)? {
            Stored::Text(text) => Ok(PathBuf::from(text)),
            Stored::Bytes { hex } => {
                let bytes = hex::decode(hex).map_err(serde::de::Error::custom)?;
                from_raw_bytes(bytes).map_err(serde::de::Error::custom)
            }
        }
    }

    #[cfg(unix)]
    fn from_raw_bytes(bytes: Vec<u8>) -> Result<PathBuf, String> {
        use std::os::unix::ffi::OsStringExt;
        Ok(PathBuf::from(std::ffi::OsString::from_vec(bytes)))
    }

    // Elsewhere a name is stored lossily; it then misses the cache and is decoded again.
    #[cfg(not(unix))]
    fn from_raw_bytes(bytes: Vec<u8>) -> Result<PathBuf, String> {
        String::from_utf8(bytes)
            .map(PathBuf::from)
            .map_err(|e| e.to_string())
    }
}

/// Hex BLAKE2b-256 of the manifest text, then the pixels.
fn checksum(manifest: &str, pixels: &[u8]) -> String {
    let mut h = Blake2b::<U32>::new();
    h.update((manifest.len() as u64).to_le_bytes());
    h.update(manifest.as_bytes());
    h.update(pixels);
    hex::encode(h.finalize())
}

/// A loaded cache.
pub struct Cache {
    by_path: HashMap<PathBuf, (Fingerprint, Result<usize, String>)>,
    pixels: Vec<u8>,
    technique: Technique,
    /// The cached images are valid under the run's limits (they were made under limits no
    /// looser).
    images_valid: bool,
    /// The cached failures are valid: the cache was made under exactly the run's limits.
    failures_valid: bool,
}

/// `DIR/preprocess-t{1,2}-{hash of the root's absolute path}.safetensors`.
pub fn cache_path(dir: &Path, root: &Path, t: Technique) -> PathBuf {
    let abs = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    // FNV-1a: stable across Rust versions, unlike the std hasher.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in path_bytes(&abs) {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    dir.join(format!("preprocess-t{}-{h:016x}.safetensors", t.number()))
}

/// The bytes of a path's name as the file system has them (lossy text where names are not bytes).
fn path_bytes(path: &Path) -> Vec<u8> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        path.as_os_str().as_bytes().to_vec()
    }
    #[cfg(not(unix))]
    {
        path.to_string_lossy().into_owned().into_bytes()
    }
}

impl Cache {
    /// Loads the cache at `file` for a run under `limits`. A missing file is `(None, None)`; an
    /// unusable one (damaged, another format) is `(None, Some(reason))`, and the run rebuilds
    /// it. A cache made under other limits is used for what stays true under the new ones.
    pub fn load(
        file: &Path,
        t: Technique,
        decoding: Decoding,
        limits: &ImportLimits,
    ) -> (Option<Cache>, Option<String>) {
        if !file.exists() {
            return (None, None);
        }
        match Self::try_load(file, t, decoding, limits) {
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

    fn try_load(
        file: &Path,
        t: Technique,
        decoding: Decoding,
        limits: &ImportLimits,
    ) -> Result<Cache, String> {
        let bytes = std::fs::read(file).map_err(|e| e.to_string())?;
        let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| e.to_string())?;
        let info = meta.metadata().as_ref().ok_or("no metadata")?;
        if info.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(format!("not a {FORMAT} file"));
        }
        if info.get("technique") != Some(&t.number().to_string()) {
            return Err("made for another technique".into());
        }
        let made_with = info
            .get("decoding")
            .map(String::as_str)
            .unwrap_or(Decoding::Exact.name());
        if made_with != decoding.name() {
            return Err(format!(
                "made with {made_with} decoding, this run uses {}",
                decoding.name()
            ));
        }
        let made_under: ImportLimits = serde_json::from_str(info.get("limits").ok_or("no limits")?)
            .map_err(|e| format!("bad limits: {e}"))?;
        let manifest = info.get("manifest").ok_or("no manifest")?;
        let tensors = SafeTensors::deserialize(&bytes).map_err(|e| e.to_string())?;
        let view = tensors.tensor("pixels").map_err(|e| e.to_string())?;
        if info.get("checksum") != Some(&checksum(manifest, view.data())) {
            return Err("checksum of its pixels and manifest does not match (damaged)".into());
        }
        let entries: Vec<Entry> =
            serde_json::from_str(manifest).map_err(|e| format!("bad manifest: {e}"))?;
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
            images_valid: made_under.within(limits),
            failures_valid: made_under == *limits,
        })
    }

    /// The cached outcome for `path` if its fingerprint still matches.
    pub fn lookup(&self, path: &Path, fp: &Fingerprint) -> Option<Result<Vec<u8>, String>> {
        let (cached_fp, outcome) = self.by_path.get(path)?;
        if cached_fp != fp
            || !(if outcome.is_ok() {
                self.images_valid
            } else {
                self.failures_valid
            })
        {
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
        self.images_valid
            && self.failures_valid
            && entries.len() == self.by_path.len()
            && entries.iter().all(|e| match self.by_path.get(&e.path) {
                Some((fp, outcome)) => fp == &e.fingerprint && outcome.is_ok() == e.outcome.is_ok(),
                None => false,
            })
    }

    /// Writes a new cache for `set` atomically.
    pub fn write(
        file: &Path,
        t: Technique,
        decoding: Decoding,
        limits: &ImportLimits,
        entries: &[Entry],
        set: &Preprocessed,
    ) -> std::io::Result<()> {
        let io = |e: String| std::io::Error::other(e);
        let manifest = serde_json::to_string(entries).map_err(|e| io(e.to_string()))?;
        let limits = serde_json::to_string(limits).map_err(|e| io(e.to_string()))?;
        let meta: HashMap<String, String> = [
            ("format".to_string(), FORMAT.to_string()),
            ("technique".to_string(), t.number().to_string()),
            ("limits".to_string(), limits),
            ("decoding".to_string(), decoding.name().to_string()),
            ("checksum".to_string(), checksum(&manifest, &set.pixels)),
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
