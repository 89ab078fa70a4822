//! Reading one import file as a hostile user might have prepared it. Only regular files are
//! read: the type is checked before opening (a FIFO would block `open` forever; a symlink to
//! `/dev/zero` never ends), following symlinks, and again on the opened file. The size is
//! checked from the metadata before anything is read, and the read itself stops one byte past
//! the cap, so a file that grows (or lies about its size) costs at most the cap. The pixel
//! count is checked from the image header by the decoders, before any pixel is decoded.

use serde::{Deserialize, Serialize};
use std::fs::{self, File, FileType};
use std::io::Read;
use std::path::Path;

/// The default file-size cap: 256 MiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 256 << 20;
/// The default pixel-count cap: 100 megapixels.
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;

/// The caps one import applies to every file. A file over either is refused with a report line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportLimits {
    /// Largest file read, in bytes.
    pub max_file_bytes: u64,
    /// Largest image decoded, in pixels (width x height, from the header).
    pub max_pixels: u64,
}

impl Default for ImportLimits {
    fn default() -> Self {
        ImportLimits {
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

impl ImportLimits {
    /// The caps in the units the settings use: MiB and megapixels (10^6 pixels).
    pub fn new(max_file_mib: u64, max_megapixels: u64) -> ImportLimits {
        ImportLimits {
            max_file_bytes: max_file_mib.saturating_mul(1 << 20),
            max_pixels: max_megapixels.saturating_mul(1_000_000),
        }
    }

    /// Whether every file these limits accept is accepted by `other` too.
    pub fn within(&self, other: &ImportLimits) -> bool {
        self.max_file_bytes <= other.max_file_bytes && self.max_pixels <= other.max_pixels
    }

    /// Refuses a `width` x `height` image over the pixel cap.
    pub fn check_pixels(&self, width: u32, height: u32) -> Result<(), Refusal> {
        let pixels = width as u64 * height as u64;
        if pixels > self.max_pixels {
            return Err(Refusal::TooManyPixels {
                width,
                height,
                max_pixels: self.max_pixels,
            });
        }
        Ok(())
    }

    fn check_size(&self, bytes: u64) -> Result<(), Refusal> {
        if bytes > self.max_file_bytes {
            return Err(Refusal::TooLarge {
                bytes,
                max_bytes: self.max_file_bytes,
            });
        }
        Ok(())
    }
}

/// Why a file was refused before decoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not a regular file ({kind}{}); only regular files are imported",
        if *.through_symlink { ", through a symlink" } else { "" })]
    NotRegular {
        kind: &'static str,
        through_symlink: bool,
    },
    #[error("file is {} MiB, over the {} MiB file-size cap", mib(*.bytes), mib(*.max_bytes))]
    TooLarge { bytes: u64, max_bytes: u64 },
    #[error("{width}x{height} is {} megapixels, over the {} megapixel cap",
        megapixels(*.width as u64 * *.height as u64), megapixels(*.max_pixels))]
    TooManyPixels {
        width: u32,
        height: u32,
        max_pixels: u64,
    },
}

fn mib(bytes: u64) -> String {
    trim(bytes as f64 / (1u64 << 20) as f64)
}

fn megapixels(pixels: u64) -> String {
    trim(pixels as f64 / 1e6)
}

/// At most three decimals, without trailing zeros: 400, 1.001, 0.5.
fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn kind_of(t: &FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_dir() {
        "a folder"
    } else {
        "not a plain file"
    }
}

fn check_regular(path: &Path, t: &FileType) -> Result<(), Refusal> {
    if t.is_file() {
        return Ok(());
    }
    let through_symlink = fs::symlink_metadata(path)
        .map(|m| m.file_type().is_symlink())
        .unwrap_or(false);
    Err(Refusal::NotRegular {
        kind: kind_of(t),
        through_symlink,
    })
}

/// Why [`read_capped`] gave no bytes: an I/O error, or a refusal.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("unreadable: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Refused(#[from] Refusal),
}

/// Reads the regular file at `path` whole, refusing anything else or anything over
/// `limits.max_file_bytes` without reading it.
pub fn read_capped(path: &Path, limits: &ImportLimits) -> Result<Vec<u8>, OpenError> {
    // Before opening: `open` on a FIFO with no writer blocks, and a device never ends.
    let meta = fs::metadata(path)?;
    check_regular(path, &meta.file_type())?;
    limits.check_size(meta.len())?;
    let file = File::open(path)?;
    // The file actually opened (the path may have been replaced in between).
    let meta = file.metadata()?;
    check_regular(path, &meta.file_type())?;
    limits.check_size(meta.len())?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limits.max_file_bytes.saturating_add(1))
        .read_to_end(&mut bytes)?;
    limits.check_size(bytes.len() as u64)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_say_what_and_how_much() {
        let r = Refusal::TooLarge {
            bytes: 4 << 30,
            max_bytes: DEFAULT_MAX_FILE_BYTES,
        };
        assert_eq!(
            r.to_string(),
            "file is 4096 MiB, over the 256 MiB file-size cap"
        );
        let r = ImportLimits::default()
            .check_pixels(20000, 20000)
            .unwrap_err();
        assert_eq!(
            r.to_string(),
            "20000x20000 is 400 megapixels, over the 100 megapixel cap"
        );
        assert!(ImportLimits::default().check_pixels(10000, 10000).is_ok());
        assert!(ImportLimits::default().check_pixels(10001, 10000).is_err());
    }

    #[test]
    fn settings_are_in_mib_and_megapixels() {
        assert_eq!(ImportLimits::new(256, 100), ImportLimits::default());
        assert!(ImportLimits::new(1, 1).within(&ImportLimits::default()));
        assert!(!ImportLimits::new(1, 1000).within(&ImportLimits::default()));
    }

    #[test]
    fn a_file_over_the_cap_is_refused_and_one_at_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.png");
        fs::write(&p, vec![7u8; 2 << 20]).unwrap();
        let small = ImportLimits::new(1, 100);
        let err = read_capped(&p, &small).unwrap_err();
        assert!(
            matches!(err, OpenError::Refused(Refusal::TooLarge { .. })),
            "{err}"
        );
        assert_eq!(
            read_capped(&p, &ImportLimits::new(2, 100)).unwrap().len(),
            2 << 20
        );
    }

    #[cfg(unix)]
    #[test]
    fn devices_and_folders_are_refused_through_symlinks_too() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("zero.jpeg");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let err = read_capped(&link, &ImportLimits::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "not a regular file (a character device, through a symlink); only regular files are \
             imported"
        );
        let err = read_capped(dir.path(), &ImportLimits::default()).unwrap_err();
        assert!(err.to_string().contains("a folder"), "{err}");
    }
}
