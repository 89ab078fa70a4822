//! Decoding one file into 8-bit pixels: JPEG (greyscale, RGB or CMYK), PNG (8 or 16 bit) and
//! DICOM (MONOCHROME1/2, 12-16 bit values windowed to 8 bits).
//!
//! Imports `super::open` (capped reads and limits), `super::pixels` (the decoded image),
//! `super::jpeg` (reduced-scale JPEG decoding) and the image decoders only; never
//! `preprocess`, `train` or anything above.

use super::open::{read_capped, ImportLimits, OpenError, Refusal};
pub use super::pixels::Decoded;
use dicom_pixeldata::PixelDecoder;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unreadable: {0}")]
    Io(#[from] std::io::Error),
    /// Not a regular file, or over a cap of the [`ImportLimits`].
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("corrupt or unsupported image: {}", .0.to_string().trim())]
    Image(#[from] image::ImageError),
    #[error("corrupt JPEG: {0}")]
    Jpeg(#[from] super::jpeg::JpegError),
    #[error("corrupt or unsupported DICOM: {0}")]
    Dicom(String),
    #[error("corrupt image: truncated JPEG (no end-of-image marker)")]
    Truncated,
    #[error("corrupt JPEG: decoded to {bytes} bytes, short of {width}x{height} pixels")]
    Short {
        bytes: usize,
        width: u32,
        height: u32,
    },
    #[error("image has no pixels ({width}x{height})")]
    Empty { width: u32, height: u32 },
}

impl From<OpenError> for DecodeError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Io(e) => DecodeError::Io(e),
            OpenError::Refused(r) => DecodeError::Refused(r),
        }
    }
}

fn is_dicom(path: &Path, bytes: &[u8]) -> bool {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.eq_ignore_ascii_case("dcm"))
        .unwrap_or(false);
    ext || (bytes.len() > 132 && &bytes[128..132] == b"DICM")
}

/// Decodes the file at `path` under the default [`ImportLimits`].
pub fn decode_file(path: &Path) -> Result<Decoded, DecodeError> {
    decode_file_with(path, &ImportLimits::default())
}

/// Decodes the file at `path`, choosing the decoder from its content (DICOM by extension or
/// its `DICM` preamble). Only a regular file within `limits.max_file_bytes` is read, and only
/// an image whose header says at most `limits.max_pixels` is decoded.
pub fn decode_file_with(path: &Path, limits: &ImportLimits) -> Result<Decoded, DecodeError> {
    let bytes = read_capped(path, limits)?;
    let decoded = if is_dicom(path, &bytes) {
        decode_dicom(&bytes, limits)?
    } else {
        decode_bytes_with(&bytes, limits)?
    };
    if decoded.width == 0 || decoded.height == 0 {
        return Err(DecodeError::Empty {
            width: decoded.width,
            height: decoded.height,
        });
    }
    Ok(decoded)
}

/// Decodes the file at `path` as [`decode_file_with`] does, except that a JPEG larger than
/// `reduce.at_least` times `reduce.gap` in both dimensions is decoded at 1/2, 1/4 or 1/8 of its
/// size (the largest reduction that keeps both dimensions at least that big), as libjpeg's
/// scaled decoding and Pillow's `draft` do: each 8x8 block becomes the means of its 4x4, 2x2 or
/// whole cells, computed from its DCT coefficients (`super::jpeg`), so no inverse DCT and no
/// full-size pixel is ever made. Other formats, and JPEGs that decoder leaves alone
/// (progressive, arithmetic, 12-bit, CMYK), are decoded at full size.
pub fn decode_file_reduced(
    path: &Path,
    limits: &ImportLimits,
    reduce: Reduce,
) -> Result<Decoded, DecodeError> {
    let bytes = read_capped(path, limits)?;
    let decoded = if is_dicom(path, &bytes) {
        decode_dicom(&bytes, limits)?
    } else if bytes.starts_with(&[0xFF, 0xD8]) {
        match decode_jpeg_reduced(&bytes, limits, reduce)? {
            Some(d) => d,
            None => decode_bytes_with(&bytes, limits)?,
        }
    } else {
        decode_bytes_with(&bytes, limits)?
    };
    if decoded.width == 0 || decoded.height == 0 {
        return Err(DecodeError::Empty {
            width: decoded.width,
            height: decoded.height,
        });
    }
    Ok(decoded)
}

/// How far [`decode_file_reduced`] may reduce a JPEG while decoding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reduce {
    /// The size the caller will resample to (width, height).
    pub at_least: (u32, u32),
    /// The decoded image stays at least `gap` times `at_least` in both dimensions, so the exact
    /// resampling that follows still sees `gap` decoded pixels per output pixel (Pillow's
    /// `reducing_gap`, 2.0 in its `thumbnail`).
    pub gap: f64,
    /// Only the luma of a colour JPEG is needed: its chroma is entropy-decoded but not output.
    pub grey: bool,
}

impl Reduce {
    /// The IDCT size (1, 2, 4 or 8 of 8) for a `width` x `height` JPEG: the smallest that keeps
    /// both dimensions at least `gap * at_least`.
    pub fn idct_size(&self, width: u32, height: u32) -> u32 {
        let need_w = (self.at_least.0 as f64 * self.gap).ceil() as u64;
        let need_h = (self.at_least.1 as f64 * self.gap).ceil() as u64;
        [1u32, 2, 4]
            .into_iter()
            .find(|&s| {
                scaled_len(width, s) as u64 >= need_w && scaled_len(height, s) as u64 >= need_h
            })
            .unwrap_or(8)
    }
}

/// A dimension of `len` pixels decoded with an IDCT of `s` of 8 (rounded up, as libjpeg).
fn scaled_len(len: u32, s: u32) -> u32 {
    (len * s).div_ceil(8)
}

/// Decodes a JPEG at reduced scale, or `None` when it should be decoded at full size: no
/// reduction applies, or the image is one the reduced decoder does not handle (progressive,
/// arithmetic-coded, 12-bit, CMYK).
fn decode_jpeg_reduced(
    bytes: &[u8],
    limits: &ImportLimits,
    reduce: Reduce,
) -> Result<Option<Decoded>, DecodeError> {
    // The header only (up to the frame header): nothing allocated for pixels.
    let Some((width, height)) = super::jpeg::dimensions(bytes)? else {
        return Ok(None);
    };
    limits.check_pixels(width, height)?;
    let s = reduce.idct_size(width, height);
    if s == 8 {
        return Ok(None);
    }
    if !has_jpeg_end(bytes) {
        return Err(DecodeError::Truncated);
    }
    Ok(super::jpeg::decode_reduced(
        bytes,
        s,
        reduce.grey,
        limits.max_pixels,
    )?)
}

/// Decodes JPEG or PNG bytes under the default [`ImportLimits`].
pub fn decode_bytes(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    decode_bytes_with(bytes, &ImportLimits::default())
}

/// Decodes JPEG or PNG bytes, refusing an image whose header says more than
/// `limits.max_pixels` before decoding any pixel.
pub fn decode_bytes_with(bytes: &[u8], limits: &ImportLimits) -> Result<Decoded, DecodeError> {
    let reader = || image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format();
    // The header only: a few hundred bytes read, nothing allocated for pixels.
    let (width, height) = reader()?.into_dimensions()?;
    limits.check_pixels(width, height)?;
    // The JPEG decoder fills a truncated scan with grey instead of failing; a file cut short
    // (an interrupted download) must be reported, not trained on.
    if bytes.starts_with(&[0xFF, 0xD8]) && !has_jpeg_end(bytes) {
        return Err(DecodeError::Truncated);
    }
    Ok(Decoded::from_dynamic(reader()?.decode()?))
}

/// Whether a JPEG's end-of-image marker is present (trailing padding after it is tolerated).
fn has_jpeg_end(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(4096)..];
    tail.windows(2).any(|w| w == [0xFF, 0xD9])
}

fn decode_dicom(bytes: &[u8], limits: &ImportLimits) -> Result<Decoded, DecodeError> {
    use dicom_dictionary_std::tags;
    let err = |e: &dyn std::fmt::Display| DecodeError::Dicom(e.to_string());
    // From the bytes already read (within the size cap); the preamble is detected.
    let obj = dicom_object::OpenFileOptions::new()
        .from_reader(bytes)
        .map_err(|e| err(&e))?;
    // Rows and columns before any pixel is decoded; only the first frame is decoded.
    let dimension = |tag, name: &str| -> Result<u32, DecodeError> {
        obj.element(tag)
            .map_err(|e| err(&e))?
            .to_int::<u32>()
            .map_err(|e| DecodeError::Dicom(format!("bad {name}: {e}")))
    };
    limits.check_pixels(
        dimension(tags::COLUMNS, "columns")?,
        dimension(tags::ROWS, "rows")?,
    )?;
    let data = obj.decode_pixel_data_frame(0).map_err(|e| err(&e))?;
    let (width, height) = (data.columns(), data.rows());
    if data.samples_per_pixel() != 1 {
        return Err(DecodeError::Dicom(format!(
            "{} samples per pixel ({}); radiographs are expected to be MONOCHROME1 or MONOCHROME2",
            data.samples_per_pixel(),
            data.photometric_interpretation().as_str()
        )));
    }
    // Modality values (rescale slope/intercept applied), first frame only.
    let values: Vec<f32> = data.to_vec_frame(0).map_err(|e| err(&e))?;
    if values.len() != width as usize * height as usize {
        return Err(DecodeError::Dicom(format!(
            "pixel data holds {} values, expected {width}x{height}",
            values.len()
        )));
    }
    let window = data
        .window()
        .ok()
        .flatten()
        .and_then(|w| w.first().copied())
        .map(|w| (w.center as f32, w.width as f32))
        .filter(|(_, w)| *w > 1.0);
    let (lo, hi) = match window {
        Some((c, w)) => (c - w / 2.0, c + w / 2.0),
        None => robust_range(&values),
    };
    let span = (hi - lo).max(f32::EPSILON);
    // MONOCHROME1 means bright is low attenuation: invert so lungs come out dark as in JPEGs.
    let invert = data.photometric_interpretation().as_str() == "MONOCHROME1";
    let pixels = values
        .iter()
        .map(|&v| {
            let t = ((v - lo) / span).clamp(0.0, 1.0);
            let t = if invert { 1.0 - t } else { t };
            (t * 255.0).round() as u8
        })
        .collect();
    Ok(Decoded {
        width,
        height,
        channels: 1,
        pixels,
    })
}

/// The 0.5th to 99.5th percentile of the values: a window that ignores a few extreme pixels
/// (labels, collimator edges) when the file carries no window of its own.
fn robust_range(values: &[f32]) -> (f32, f32) {
    let mut sorted: Vec<f32> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return (0.0, 1.0);
    }
    sorted.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    (at(0.005), at(0.995))
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
