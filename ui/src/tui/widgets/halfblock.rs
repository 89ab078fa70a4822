//! Greyscale images drawn with the upper half block: each cell shows two pixels, the top one as
//! the foreground colour and the bottom one as the background, in as many greys as the colour
//! depth it is handed allows (256 in true colour, 30 in the xterm palette, four with the named
//! colours); without colour a density ramp of ASCII characters stands in. Only draws: the depth
//! comes from the caller, never from the environment.
//! Imports `grey` and the theme's `ColorDepth` only; never the tabs or the app.

use super::grey::grey;
use crate::tui::theme::ColorDepth;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::widgets::Widget;

/// An 8-bit greyscale image, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GreyImage {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {width}x{height} image needs {} pixels, got {got}", width * height)]
pub struct ImageSizeError {
    pub width: usize,
    pub height: usize,
    pub got: usize,
}

impl GreyImage {
    pub fn new(width: usize, height: usize, pixels: Vec<u8>) -> Result<Self, ImageSizeError> {
        if width == 0 || height == 0 || pixels.len() != width * height {
            return Err(ImageSizeError {
                width,
                height,
                got: pixels.len(),
            });
        }
        Ok(GreyImage {
            width,
            height,
            pixels,
        })
    }
    pub fn width(&self) -> usize {
        self.width
    }
    pub fn height(&self) -> usize {
        self.height
    }
    /// The pixels, row-major.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }
    fn at(&self, x: usize, y: usize) -> u8 {
        self.pixels[y * self.width + x]
    }
    /// Mean of the source pixels covering output pixel (ox, oy) of an ow x oh resample.
    fn box_mean(&self, ox: usize, oy: usize, ow: usize, oh: usize) -> u8 {
        let x0 = ox * self.width / ow;
        let x1 = ((ox + 1) * self.width).div_ceil(ow).max(x0 + 1);
        let y0 = oy * self.height / oh;
        let y1 = ((oy + 1) * self.height).div_ceil(oh).max(y0 + 1);
        let (mut sum, mut n) = (0u32, 0u32);
        for y in y0..y1.min(self.height) {
            for x in x0..x1.min(self.width) {
                sum += self.at(x, y) as u32;
                n += 1;
            }
        }
        (sum / n.max(1)) as u8
    }
}

const RAMP: &[u8] = b" .:-=+*#%@";

/// The density character for a grey level when colour is off.
pub fn grey_char(v: u8) -> char {
    RAMP[v as usize * (RAMP.len() - 1) / 255] as char
}

/// Draws an image scaled to fit the area, aspect ratio kept (square pixels), centred.
pub struct HalfBlockImage<'a> {
    pub image: &'a GreyImage,
    pub depth: ColorDepth,
}

impl HalfBlockImage<'_> {
    /// Output size in pixels (width, height) for an area of `cols` x `rows` cells.
    pub fn fitted_size(image: &GreyImage, cols: u16, rows: u16) -> (usize, usize) {
        let (cw, ch) = (cols as usize, rows as usize * 2);
        if cw == 0 || ch == 0 {
            return (0, 0);
        }
        // Scale = min(cw / w, ch / h) in integer arithmetic.
        if cw * image.height <= ch * image.width {
            (cw, (image.height * cw / image.width).max(1))
        } else {
            ((image.width * ch / image.height).max(1), ch)
        }
    }
}

impl Widget for HalfBlockImage<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let (ow, oh) = Self::fitted_size(self.image, area.width, area.height);
        if ow == 0 || oh == 0 {
            return;
        }
        let rows = oh.div_ceil(2);
        let x_off = (area.width as usize - ow) / 2;
        let y_off = (area.height as usize - rows) / 2;
        for row in 0..rows {
            for col in 0..ow {
                let top = self.image.box_mean(col, 2 * row, ow, oh);
                let bottom = if 2 * row + 1 < oh {
                    self.image.box_mean(col, 2 * row + 1, ow, oh)
                } else {
                    top
                };
                let x = area.x + (x_off + col) as u16;
                let y = area.y + (y_off + row) as u16;
                let Some(cell) = buf.cell_mut((x, y)) else {
                    continue;
                };
                match (grey(top, self.depth), grey(bottom, self.depth)) {
                    (Some(fg), Some(bg)) => {
                        cell.set_char('▀').set_style(Style::new().fg(fg).bg(bg));
                    }
                    _ => {
                        let mean = ((top as u16 + bottom as u16) / 2) as u8;
                        cell.set_char(grey_char(mean)).set_style(Style::new());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::style::Color;

    #[test]
    fn rejects_wrong_pixel_count() {
        let err = GreyImage::new(3, 2, vec![0; 5]).unwrap_err();
        assert_eq!(err.to_string(), "a 3x2 image needs 6 pixels, got 5");
    }

    #[test]
    fn two_by_two_maps_top_to_fg_and_bottom_to_bg() {
        // Top row black/white, bottom row grey/dark grey: one cell per column.
        let img = GreyImage::new(2, 2, vec![0, 255, 150, 100]).unwrap();
        let mut buf = Buffer::empty(Rect::new(0, 0, 2, 1));
        HalfBlockImage {
            image: &img,
            depth: ColorDepth::Ansi16,
        }
        .render(buf.area, &mut buf);
        let c0 = &buf[(0, 0)];
        let c1 = &buf[(1, 0)];
        assert_eq!(
            (c0.symbol(), c0.fg, c0.bg),
            ("▀", Color::Black, Color::Gray)
        );
        assert_eq!(
            (c1.symbol(), c1.fg, c1.bg),
            ("▀", Color::White, Color::DarkGray)
        );
    }

    #[test]
    fn true_colour_and_the_palette_draw_the_exact_and_the_nearest_grey() {
        let img = GreyImage::new(1, 2, vec![37, 200]).unwrap();
        let cell = |depth| {
            let mut buf = Buffer::empty(Rect::new(0, 0, 1, 1));
            HalfBlockImage { image: &img, depth }.render(buf.area, &mut buf);
            let c = &buf[(0, 0)];
            (c.fg, c.bg)
        };
        assert_eq!(
            cell(ColorDepth::TrueColor),
            (Color::Rgb(37, 37, 37), Color::Rgb(200, 200, 200))
        );
        // 37 -> ramp level 38 (index 235); 200 -> ramp level 198 (index 251).
        assert_eq!(
            cell(ColorDepth::Ansi256),
            (Color::Indexed(235), Color::Indexed(251))
        );
    }

    #[test]
    fn downscale_averages_blocks_and_keeps_aspect() {
        // 4x4: left half 0, right half 255; into 4 columns x 1 row => 2x2 pixels, centred.
        let mut px = vec![0u8; 16];
        for y in 0..4 {
            px[y * 4 + 2] = 255;
            px[y * 4 + 3] = 255;
        }
        let img = GreyImage::new(4, 4, px).unwrap();
        assert_eq!(HalfBlockImage::fitted_size(&img, 4, 1), (2, 2));
        let mut buf = Buffer::empty(Rect::new(0, 0, 4, 1));
        HalfBlockImage {
            image: &img,
            depth: ColorDepth::NoColor,
        }
        .render(buf.area, &mut buf);
        assert_eq!(buf, Buffer::with_lines(["  @ "]));
    }
}
