//! Renders a terminal capture with ANSI colours (`tmux capture-pane -e -p`) to a PNG, for the
//! screenshots in screenshots/. Text is drawn with DejaVu Sans Mono (assets/fonts); block
//! elements, box-drawing lines and braille dots are drawn as shapes so they join across cells
//! exactly as in a terminal.
//!
//! Usage: cargo run --release --example ansi_png -- CAPTURE.ans OUT.png [COLUMNS ROWS]

use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use image::{Rgb, RgbImage};
use std::path::Path;

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSansMono.ttf");

const DEFAULT_FG: [u8; 3] = [0xd0, 0xd0, 0xd0];
const DEFAULT_BG: [u8; 3] = [0x14, 0x16, 0x1c];
const FONT_PX: f32 = 16.0;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Colour {
    Default,
    Rgb([u8; 3]),
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Style {
    fg: Colour,
    bg: Colour,
    bold: bool,
    dim: bool,
    reverse: bool,
    underline: bool,
}

impl Default for Style {
    fn default() -> Self {
        Style {
            fg: Colour::Default,
            bg: Colour::Default,
            bold: false,
            dim: false,
            reverse: false,
            underline: false,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Cell {
    ch: char,
    style: Style,
}

/// xterm's 256-colour palette.
fn palette(i: u8) -> [u8; 3] {
    const BASE: [[u8; 3]; 16] = [
        [0x00, 0x00, 0x00],
        [0xcd, 0x31, 0x31],
        [0x0d, 0xbc, 0x79],
        [0xe5, 0xe5, 0x10],
        [0x24, 0x72, 0xc8],
        [0xbc, 0x3f, 0xbc],
        [0x11, 0xa8, 0xcd],
        [0xe5, 0xe5, 0xe5],
        [0x66, 0x66, 0x66],
        [0xf1, 0x4c, 0x4c],
        [0x23, 0xd1, 0x8b],
        [0xf5, 0xf5, 0x43],
        [0x3b, 0x8e, 0xea],
        [0xd6, 0x70, 0xd6],
        [0x29, 0xb8, 0xdb],
        [0xff, 0xff, 0xff],
    ];
    match i {
        0..=15 => BASE[i as usize],
        16..=231 => {
            let i = i - 16;
            let level = |v: u8| if v == 0 { 0 } else { 55 + v * 40 };
            [level(i / 36), level((i / 6) % 6), level(i % 6)]
        }
        _ => {
            let g = 8 + (i - 232) * 10;
            [g, g, g]
        }
    }
}

/// Applies one SGR sequence's parameters to `style`.
fn apply_sgr(style: &mut Style, params: &[u16]) {
    if params.is_empty() {
        *style = Style::default();
        return;
    }
    let mut i = 0;
    while i < params.len() {
        let p = params[i];
        let extended = |i: &mut usize| -> Option<Colour> {
            match params.get(*i + 1) {
                Some(5) => {
                    let c = params.get(*i + 2).copied()?;
                    *i += 2;
                    Some(Colour::Rgb(palette(c.min(255) as u8)))
                }
                Some(2) => {
                    let rgb = params.get(*i + 2..*i + 5)?;
                    *i += 4;
                    Some(Colour::Rgb([
                        rgb[0].min(255) as u8,
                        rgb[1].min(255) as u8,
                        rgb[2].min(255) as u8,
                    ]))
                }
                _ => None,
            }
        };
        match p {
            0 => *style = Style::default(),
            1 => style.bold = true,
            2 => style.dim = true,
            4 => style.underline = true,
            7 => style.reverse = true,
            22 => {
                style.bold = false;
                style.dim = false;
            }
            24 => style.underline = false,
            27 => style.reverse = false,
            30..=37 => style.fg = Colour::Rgb(palette((p - 30) as u8)),
            90..=97 => style.fg = Colour::Rgb(palette((p - 90 + 8) as u8)),
            40..=47 => style.bg = Colour::Rgb(palette((p - 40) as u8)),
            100..=107 => style.bg = Colour::Rgb(palette((p - 100 + 8) as u8)),
            38 => {
                if let Some(c) = extended(&mut i) {
                    style.fg = c;
                }
            }
            48 => {
                if let Some(c) = extended(&mut i) {
                    style.bg = c;
                }
            }
            39 => style.fg = Colour::Default,
            49 => style.bg = Colour::Default,
            _ => {}
        }
        i += 1;
    }
}

/// Parses a capture into rows of cells; other escape sequences are skipped.
fn parse(text: &str) -> Vec<Vec<Cell>> {
    let mut rows = vec![Vec::new()];
    let mut style = Style::default();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.peek() != Some(&'[') {
                    chars.next();
                    continue;
                }
                chars.next();
                let mut body = String::new();
                let mut end = None;
                for d in chars.by_ref() {
                    if ('\x40'..='\x7e').contains(&d) {
                        end = Some(d);
                        break;
                    }
                    body.push(d);
                }
                if end == Some('m') {
                    let params: Vec<u16> = body
                        .split([';', ':'])
                        .map(|p| p.parse().unwrap_or(0))
                        .collect();
                    apply_sgr(&mut style, if body.is_empty() { &[] } else { &params });
                }
            }
            '\n' => rows.push(Vec::new()),
            '\r' => {}
            c => {
                if let Some(row) = rows.last_mut() {
                    row.push(Cell { ch: c, style });
                }
            }
        }
    }
    rows
}

fn resolve(style: &Style) -> ([u8; 3], [u8; 3]) {
    let mut fg = match style.fg {
        Colour::Default => DEFAULT_FG,
        Colour::Rgb(c) => c,
    };
    let mut bg = match style.bg {
        Colour::Default => DEFAULT_BG,
        Colour::Rgb(c) => c,
    };
    if style.reverse {
        std::mem::swap(&mut fg, &mut bg);
    }
    if style.dim {
        fg = [0, 1, 2].map(|i| ((fg[i] as u16 + bg[i] as u16) / 2) as u8);
    }
    (fg, bg)
}

struct Canvas {
    img: RgbImage,
    cw: u32,
    ch: u32,
}

impl Canvas {
    fn fill(&mut self, x0: u32, y0: u32, w: u32, h: u32, c: [u8; 3]) {
        let (iw, ih) = self.img.dimensions();
        for y in y0..(y0 + h).min(ih) {
            for x in x0..(x0 + w).min(iw) {
                self.img.put_pixel(x, y, Rgb(c));
            }
        }
    }

    fn blend(&mut self, x: i32, y: i32, c: [u8; 3], a: f32) {
        let (iw, ih) = self.img.dimensions();
        if x < 0 || y < 0 || x as u32 >= iw || y as u32 >= ih || a <= 0.0 {
            return;
        }
        let p = self.img.get_pixel_mut(x as u32, y as u32);
        let a = a.min(1.0);
        for (dst, &src) in p.0.iter_mut().zip(&c) {
            *dst = (*dst as f32 * (1.0 - a) + src as f32 * a).round() as u8;
        }
    }

    /// Block elements, box-drawing lines and braille as shapes; returns false for other chars.
    fn shape(&mut self, c: char, x0: u32, y0: u32, fg: [u8; 3]) -> bool {
        let (w, h) = (self.cw, self.ch);
        match c {
            '█' => self.fill(x0, y0, w, h, fg),
            '▀' => self.fill(x0, y0, w, h / 2, fg),
            '▄' => self.fill(x0, y0 + h / 2, w, h - h / 2, fg),
            '▌' => self.fill(x0, y0, w / 2, h, fg),
            '▐' => self.fill(x0 + w / 2, y0, w - w / 2, h, fg),
            '\u{2800}'..='\u{28ff}' => {
                let bits = c as u32 - 0x2800;
                // Dot order of the braille block: columns of 1,2,3,7 and 4,5,6,8.
                const DOTS: [(u32, u32); 8] = [
                    (0, 0),
                    (0, 1),
                    (0, 2),
                    (1, 0),
                    (1, 1),
                    (1, 2),
                    (0, 3),
                    (1, 3),
                ];
                let r = (w / 3).max(2);
                for (bit, (dx, dy)) in DOTS.iter().enumerate() {
                    if bits & (1 << bit) != 0 {
                        let cx = x0 + w / 4 + dx * (w / 2);
                        let cy = y0 + h / 8 + dy * (h / 4);
                        self.fill(cx.saturating_sub(r / 2), cy.saturating_sub(r / 2), r, r, fg);
                    }
                }
            }
            _ => {
                // (left, right, up, down, heavy)
                let (l, r, u, d, heavy) = match c {
                    '─' => (true, true, false, false, false),
                    '━' => (true, true, false, false, true),
                    '│' => (false, false, true, true, false),
                    '┃' => (false, false, true, true, true),
                    '┌' => (false, true, false, true, false),
                    '┐' => (true, false, false, true, false),
                    '└' => (false, true, true, false, false),
                    '┘' => (true, false, true, false, false),
                    '├' => (false, true, true, true, false),
                    '┤' => (true, false, true, true, false),
                    '┬' => (true, true, false, true, false),
                    '┴' => (true, true, true, false, false),
                    '┼' => (true, true, true, true, false),
                    _ => return false,
                };
                let t = if heavy { 3 } else { 1 };
                let (mx, my) = (x0 + w / 2, y0 + h / 2);
                let (hx, hy) = (mx - t / 2, my - t / 2);
                if l {
                    self.fill(x0, hy, mx - x0 + t, t, fg);
                }
                if r {
                    self.fill(hx, hy, x0 + w - hx, t, fg);
                }
                if u {
                    self.fill(hx, y0, t, my - y0 + t, fg);
                }
                if d {
                    self.fill(hx, hy, t, y0 + h - hy, fg);
                }
            }
        }
        true
    }
}

fn render(rows: &[Vec<Cell>], cols: usize, nrows: usize) -> RgbImage {
    let font = FontRef::try_from_slice(FONT).expect("the bundled font parses");
    let scale = PxScale::from(FONT_PX);
    let scaled = font.as_scaled(scale);
    let cw = scaled.h_advance(font.glyph_id('M')).ceil() as u32;
    let ch = (scaled.ascent() - scaled.descent()).ceil() as u32 + 2;
    let mut canvas = Canvas {
        img: RgbImage::from_pixel(cw * cols as u32, ch * nrows as u32, Rgb(DEFAULT_BG)),
        cw,
        ch,
    };
    for (y, row) in rows.iter().take(nrows).enumerate() {
        for (x, cell) in row.iter().take(cols).enumerate() {
            let (fg, bg) = resolve(&cell.style);
            let (x0, y0) = (x as u32 * cw, y as u32 * ch);
            canvas.fill(x0, y0, cw, ch, bg);
            if cell.ch == ' ' || canvas.shape(cell.ch, x0, y0, fg) {
                continue;
            }
            let id = font.glyph_id(cell.ch);
            if id.0 == 0 {
                continue;
            }
            let baseline = y0 as f32 + 1.0 + scaled.ascent();
            let glyph = id.with_scale_and_position(scale, ab_glyph::point(x0 as f32, baseline));
            if let Some(outline) = font.outline_glyph(glyph) {
                let b = outline.px_bounds();
                let passes = if cell.style.bold { 2 } else { 1 };
                for pass in 0..passes {
                    outline.draw(|gx, gy, a| {
                        canvas.blend(
                            b.min.x as i32 + gx as i32 + pass,
                            b.min.y as i32 + gy as i32,
                            fg,
                            a,
                        );
                    });
                }
            }
            if cell.style.underline {
                canvas.fill(x0, y0 + ch - 2, cw, 1, fg);
            }
        }
    }
    canvas.img
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 && args.len() != 5 {
        return Err("usage: ansi_png CAPTURE.ans OUT.png [COLUMNS ROWS]".into());
    }
    let text = std::fs::read_to_string(&args[1])
        .map_err(|e| format!("reading capture {}: {e}", args[1]))?;
    let rows = parse(&text);
    let (cols, nrows) = if args.len() == 5 {
        (args[3].parse()?, args[4].parse()?)
    } else {
        let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
        let used = rows.len() - rows.iter().rev().take_while(|r| r.is_empty()).count();
        (cols, used)
    };
    if cols == 0 || nrows == 0 {
        return Err(format!("{} holds no text", args[1]).into());
    }
    render(&rows, cols, nrows)
        .save(Path::new(&args[2]))
        .map_err(|e| format!("writing {}: {e}", args[2]))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sgr_colours_and_resets() {
        let rows = parse("a\x1b[1;38;5;196;48;2;1;2;3mb\x1b[0mc\nd");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0][0].style, Style::default());
        let s = rows[0][1].style;
        assert!(s.bold);
        assert_eq!(s.fg, Colour::Rgb([255, 0, 0]));
        assert_eq!(s.bg, Colour::Rgb([1, 2, 3]));
        assert_eq!(rows[0][2].style, Style::default());
        assert_eq!(rows[1][0].ch, 'd');
    }

    #[test]
    fn palette_matches_xterm() {
        assert_eq!(palette(16), [0, 0, 0]);
        assert_eq!(palette(231), [255, 255, 255]);
        assert_eq!(palette(244), [128, 128, 128]);
    }
}
