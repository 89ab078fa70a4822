//! A scratch folder for a benchmark's generated files, removed when dropped (the benchmarks
//! write hundreds of megabytes of JPEGs that nobody should have to clean up). Imports only std
//! and anyhow.

use anyhow::Context;
use std::path::{Path, PathBuf};

/// `<temp dir>/privxray-<what>-<pid>`, created on [`Scratch::new`], removed on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(what: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("privxray-{what}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Scratch(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
