//! Reduced-scale JPEG decoding: a baseline (sequential, Huffman, 8-bit) decoder that outputs
//! each 8x8 block as 1x1, 2x2 or 4x4 pixels, the means of the block's inverse DCT, computed
//! from its coefficients without an IDCT. Greyscale or YCbCr, any sampling whose ratios are
//! powers of two, restart intervals, interleaved or one scan per component. Anything else
//! (progressive, arithmetic, 12-bit, CMYK, Adobe RGB) gives `Ok(None)`, for the full decoder.
//!
//! Imports `super::pixels::Decoded` only; children `bits`, `huffman`, `means`, `header`, `scan`.

mod bits;
mod header;
mod huffman;
mod means;
mod scan;

use super::pixels::Decoded;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JpegError {
    #[error("truncated")]
    Truncated,
    #[error("{0}")]
    Corrupt(&'static str),
    #[error("{width}x{height} pixels is over the cap of {max}")]
    TooBig { width: u32, height: u32, max: u64 },
}

/// The frame of a JPEG this decoder handles: `Ok(None)` for one it leaves to the full decoder.
pub fn dimensions(bytes: &[u8]) -> Result<Option<(u32, u32)>, JpegError> {
    Ok(header::read_frame(bytes)?.map(|f| (f.width, f.height)))
}

/// Decodes a JPEG with each 8x8 block reduced to `s` x `s` pixels (`s` 1, 2 or 4): an image
/// `ceil(width * s / 8)` x `ceil(height * s / 8)`, as libjpeg's scaled decoding sizes it.
/// `grey` asks for the luma plane only of a colour image. `Ok(None)`: a JPEG this decoder does
/// not handle. A frame over `max_pixels` is refused before any pixel is allocated.
pub fn decode_reduced(
    bytes: &[u8],
    s: u32,
    grey: bool,
    max_pixels: u64,
) -> Result<Option<Decoded>, JpegError> {
    if !matches!(s, 1 | 2 | 4) {
        return Ok(None);
    }
    scan::decode(bytes, s as usize, grey, max_pixels)
}

#[cfg(test)]
mod tests;
