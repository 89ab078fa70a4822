//! Resampling through fast_image_resize (SIMD, Pillow-convention convolution filters).
//!
//! Imports `fast_image_resize` and `std` only; no sibling and no other engine module.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use std::cell::RefCell;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Triangle filter (Pillow BILINEAR).
    Bilinear,
    /// Catmull-Rom cubic, a = -0.5 (Pillow BICUBIC).
    Bicubic,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "cannot resize a {width}x{height} image with {channels} channel(s) to {to_w}x{to_h}: {reason}"
)]
pub struct ResizeError {
    width: u32,
    height: u32,
    channels: u8,
    to_w: u32,
    to_h: u32,
    reason: String,
}

thread_local! {
    // A resizer keeps scratch buffers; one per worker thread avoids reallocating per image.
    static RESIZER: RefCell<Resizer> = RefCell::new(Resizer::new());
}

fn resize(
    src: &[u8],
    (width, height): (u32, u32),
    (to_w, to_h): (u32, u32),
    filter: Filter,
    pixel_type: PixelType,
    channels: u8,
) -> Result<Vec<u8>, ResizeError> {
    let err = |reason: String| ResizeError {
        width,
        height,
        channels,
        to_w,
        to_h,
        reason,
    };
    let needed = width as usize * height as usize * channels as usize;
    if src.len() != needed {
        return Err(err(format!(
            "buffer holds {} bytes, expected {needed}",
            src.len()
        )));
    }
    if width == 0 || height == 0 {
        return Err(err("empty image".into()));
    }
    let src_img = ImageRef::new(width, height, src, pixel_type).map_err(|e| err(e.to_string()))?;
    let mut dst = Image::new(to_w, to_h, pixel_type);
    let alg = ResizeAlg::Convolution(match filter {
        Filter::Bilinear => FilterType::Bilinear,
        Filter::Bicubic => FilterType::CatmullRom,
    });
    RESIZER.with(|r| {
        r.borrow_mut()
            .resize(&src_img, &mut dst, &ResizeOptions::new().resize_alg(alg))
            .map_err(|e| err(e.to_string()))
    })?;
    Ok(dst.into_vec())
}

/// Resizes one 8-bit plane.
pub fn resize_plane(
    src: &[u8],
    width: u32,
    height: u32,
    to_w: u32,
    to_h: u32,
    filter: Filter,
) -> Result<Vec<u8>, ResizeError> {
    resize(src, (width, height), (to_w, to_h), filter, PixelType::U8, 1)
}

/// Resizes interleaved 8-bit RGB.
pub fn resize_rgb(
    src: &[u8],
    width: u32,
    height: u32,
    to_w: u32,
    to_h: u32,
    filter: Filter,
) -> Result<Vec<u8>, ResizeError> {
    resize(
        src,
        (width, height),
        (to_w, to_h),
        filter,
        PixelType::U8x3,
        3,
    )
}
