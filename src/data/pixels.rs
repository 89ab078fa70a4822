//! [`Decoded`]: an image's 8-bit pixels, what every decoder (`decode`, `jpeg`) produces.
//! A leaf of `data`, so the decoders can share it without importing each other.
//! Imports the `image` crate only.

use image::DynamicImage;

/// Decoded 8-bit pixels, row-major, `channels` interleaved (1 grey, 3 RGB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub width: u32,
    pub height: u32,
    pub channels: u8,
    pub pixels: Vec<u8>,
}

impl Decoded {
    pub(crate) fn from_dynamic(img: DynamicImage) -> Decoded {
        let (width, height) = (img.width(), img.height());
        // Greyscale (8 or 16 bit, with or without alpha) stays one channel; anything with colour
        // (RGB, and CMYK which the JPEG decoder converts to RGB) becomes RGB.
        let grey = matches!(
            img,
            DynamicImage::ImageLuma8(_)
                | DynamicImage::ImageLuma16(_)
                | DynamicImage::ImageLumaA8(_)
                | DynamicImage::ImageLumaA16(_)
        );
        if grey {
            let pixels = match img {
                DynamicImage::ImageLuma8(b) => b.into_raw(),
                other => other.to_luma8().into_raw(),
            };
            Decoded {
                width,
                height,
                channels: 1,
                pixels,
            }
        } else {
            Decoded {
                width,
                height,
                channels: 3,
                pixels: img.to_rgb8().into_raw(),
            }
        }
    }

    /// Luma (ITU-R 601, as Pillow's `convert("L")`) of an RGB image; a grey image as is.
    pub fn to_grey(&self) -> Vec<u8> {
        if self.channels == 1 {
            return self.pixels.clone();
        }
        self.pixels
            .chunks_exact(3)
            .map(|p| {
                let y = (299 * p[0] as u32 + 587 * p[1] as u32 + 114 * p[2] as u32 + 500) / 1000;
                y as u8
            })
            .collect()
    }

    /// Three interleaved channels: RGB as is, grey replicated.
    pub fn to_rgb(&self) -> Vec<u8> {
        if self.channels == 3 {
            return self.pixels.clone();
        }
        self.pixels.iter().flat_map(|&v| [v, v, v]).collect()
    }
}
