//! While the interface owns the terminal, anything written to stderr (library log lines such
//! as the network layer's "connected to party ..." notes) would land in the middle of the
//! screen. [`StderrToFile`] points file descriptor 2 at a log file and puts it back on drop.
//!
//! Imports `std` and `anyhow` only; no sibling and nothing of the engine.

use anyhow::Context;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

pub struct StderrToFile {
    saved: OwnedFd,
    path: PathBuf,
}

impl StderrToFile {
    pub fn new(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let file = File::options()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening log file {}", path.display()))?;
        // SAFETY: dup on fd 2 has no memory-safety preconditions; a negative result is checked.
        let saved = unsafe { libc::dup(2) };
        if saved < 0 {
            anyhow::bail!("duplicating stderr: {}", std::io::Error::last_os_error());
        }
        // SAFETY: `saved` is a fresh descriptor that nothing else owns.
        let saved = unsafe { OwnedFd::from_raw_fd(saved) };
        // SAFETY: both descriptors are open for the duration of the call.
        if unsafe { libc::dup2(file.as_raw_fd(), 2) } < 0 {
            anyhow::bail!("redirecting stderr: {}", std::io::Error::last_os_error());
        }
        Ok(StderrToFile {
            saved,
            path: path.to_path_buf(),
        })
    }
}

impl Drop for StderrToFile {
    fn drop(&mut self) {
        // SAFETY: both descriptors are open; fd 2 gets the original stderr back.
        unsafe {
            libc::dup2(self.saved.as_raw_fd(), 2);
        }
        if std::thread::panicking() {
            eprintln!(
                "privxray: the interface panicked; the message is in {}",
                self.path.display()
            );
        }
    }
}
