//! Greyscale images as real pixels through a terminal graphics protocol (kitty, sixel, iTerm2),
//! encoded by `ratatui-image`: the escape sequence rides in the first cell's symbol and the
//! other cells are skipped or hold kitty's placeholders. Encoding is dear (and kitty transmits
//! an image once, then only points at it), so each image is encoded once per size and kept in a
//! small per-thread cache while the screen redraws. Only draws; the protocol comes from the
//! caller. Imports the theme's `Graphics` and `halfblock`'s `GreyImage` only.

use super::halfblock::GreyImage;
use crate::tui::theme::{Graphics, Protocol};
use image::{DynamicImage, GrayImage, Rgba};
use ratatui::buffer::Buffer;
use ratatui::layout::{Rect, Size};
use ratatui::widgets::Widget;
use ratatui_image::protocol::{iterm2::Iterm2, kitty::Kitty, sixel::Sixel, Protocol as Encoded};
use ratatui_image::{FilterType, FontSize, Image, Resize};
use std::cell::RefCell;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};

/// Images kept encoded: the Data tab shows a handful at once.
const CACHE_LEN: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    pixels: u64,
    area: (u16, u16),
    graphics: Graphics,
}

thread_local! {
    static CACHE: RefCell<Vec<(Key, Rc<Encoded>)>> = const { RefCell::new(Vec::new()) };
}

/// A kitty image id no other image of this process has, and unlikely to be another program's.
fn kitty_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    (std::process::id().wrapping_mul(0x9E37_79B1).wrapping_add(n) & 0x00FF_FFFF).max(1)
}

fn fingerprint(image: &GreyImage) -> u64 {
    let mut h = DefaultHasher::new();
    (image.width(), image.height(), image.pixels()).hash(&mut h);
    h.finish()
}

/// The image scaled to fit `area` (aspect kept, whole cells, padded with black), encoded.
/// `None` for half blocks, an empty area or an encoding error: the caller draws half blocks.
fn encode(image: &GreyImage, graphics: Graphics, area: Size) -> Option<Encoded> {
    let (cw, ch) = graphics.cell_px;
    if cw == 0 || ch == 0 || area.width == 0 || area.height == 0 {
        return None;
    }
    let grey = GrayImage::from_raw(
        image.width() as u32,
        image.height() as u32,
        image.pixels().to_vec(),
    )?;
    let img = DynamicImage::ImageLuma8(grey);
    let font = FontSize::new(cw, ch);
    let resize = Resize::Scale(Some(FilterType::Triangle));
    let cells = resize.size_for(&img, font, area);
    if cells.width == 0 || cells.height == 0 {
        return None;
    }
    let img = resize.resize(&img, font, cells, Some(Rgba([0, 0, 0, 255])));
    // Under tmux kitty and iTerm2 sequences go through its passthrough to the outer terminal;
    // sixel does not: a tmux that answered DA1 with 4 draws sixel itself.
    let tmux = graphics.tmux && graphics.protocol != Protocol::Sixel;
    match graphics.protocol {
        Protocol::Halfblocks => None,
        Protocol::Kitty => Kitty::new(img, cells, kitty_id(), tmux, false)
            .ok()
            .map(Encoded::Kitty),
        Protocol::Sixel => Sixel::new(img, cells, tmux).ok().map(Encoded::Sixel),
        Protocol::Iterm2 => Iterm2::new(img, cells, tmux).ok().map(Encoded::ITerm2),
    }
}

/// The encoded image for `key`, from the cache or made now.
fn cached(image: &GreyImage, key: Key) -> Option<Rc<Encoded>> {
    CACHE.with_borrow_mut(|cache| {
        if let Some(i) = cache.iter().position(|(k, _)| *k == key) {
            // Most recently used last.
            let hit = cache.remove(i);
            let enc = hit.1.clone();
            cache.push(hit);
            return Some(enc);
        }
        let enc = Rc::new(encode(
            image,
            key.graphics,
            Size::new(key.area.0, key.area.1),
        )?);
        if cache.len() >= CACHE_LEN {
            cache.remove(0);
        }
        cache.push((key, enc.clone()));
        Some(enc)
    })
}

/// Draws the image in pixels, centred in `area`. False when it could not (half blocks chosen,
/// an area too small, an encoding error), so the caller falls back.
pub fn draw(image: &GreyImage, graphics: Graphics, area: Rect, buf: &mut Buffer) -> bool {
    if graphics.protocol == Protocol::Halfblocks {
        return false;
    }
    let key = Key {
        pixels: fingerprint(image),
        area: (area.width, area.height),
        graphics,
    };
    let Some(enc) = cached(image, key) else {
        return false;
    };
    let size = enc.size();
    let at = Rect::new(
        area.x + (area.width.saturating_sub(size.width)) / 2,
        area.y + (area.height.saturating_sub(size.height)) / 2,
        size.width.min(area.width),
        size.height.min(area.height),
    );
    Image::new(&enc).render(at, buf);
    true
}

/// Forgets every encoded image of this thread (a new screen: kitty must be sent them again).
pub fn forget() {
    CACHE.with_borrow_mut(Vec::clear);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::theme::Graphics;

    fn graphics(protocol: Protocol) -> Graphics {
        Graphics {
            protocol,
            cell_px: (8, 16),
            tmux: false,
        }
    }

    fn symbols(buf: &Buffer) -> String {
        buf.content().iter().map(|c| c.symbol()).collect()
    }

    fn gradient() -> GreyImage {
        GreyImage::new(32, 32, (0..1024).map(|i| (i % 256) as u8).collect()).unwrap()
    }

    #[test]
    fn each_protocol_puts_its_own_sequence_in_the_cells() {
        let img = gradient();
        let area = Rect::new(0, 0, 20, 10);
        let cases = [
            (Protocol::Kitty, "\x1b_G"),
            (Protocol::Sixel, "\x1bP"),
            (Protocol::Iterm2, "\x1b]1337;File="),
        ];
        for (p, intro) in cases {
            let mut buf = Buffer::empty(area);
            assert!(draw(&img, graphics(p), area, &mut buf), "{p:?}");
            let s = symbols(&buf);
            assert!(s.contains(intro), "{p:?}: no {intro:?}");
            for (_, other) in cases.iter().filter(|(q, _)| *q != p) {
                assert!(!s.contains(other), "{p:?} also has {other:?}");
            }
        }
        let mut buf = Buffer::empty(area);
        assert!(!draw(&img, graphics(Protocol::Halfblocks), area, &mut buf));
        assert_eq!(buf, Buffer::empty(area), "half blocks: nothing drawn here");
    }

    #[test]
    fn the_image_keeps_its_aspect_in_whole_cells_and_is_centred() {
        // Square image, 8x16 cells, 20x10 area: 160x160 pixels = 20 cols x 10 rows... the
        // height limits: 10 rows = 160 px, so 160 px wide = 20 cols.
        let img = gradient();
        let g = graphics(Protocol::Sixel);
        let enc = encode(&img, g, Size::new(40, 10)).unwrap();
        assert_eq!(enc.size(), Size::new(20, 10));
        let mut buf = Buffer::empty(Rect::new(0, 0, 40, 10));
        draw(&img, g, buf.area, &mut buf);
        // Centred: the sequence starts in column 10 of row 0.
        assert!(buf[(10, 0)].symbol().starts_with("\x1b"), "centred");
        assert_eq!(buf[(9, 0)].symbol(), " ");
    }

    #[test]
    fn under_tmux_kitty_goes_through_the_passthrough_and_sixel_does_not() {
        let img = gradient();
        let area = Rect::new(0, 0, 20, 10);
        let tmux = |protocol| {
            let mut buf = Buffer::empty(area);
            let g = Graphics {
                tmux: true,
                ..graphics(protocol)
            };
            draw(&img, g, area, &mut buf);
            symbols(&buf)
        };
        assert!(tmux(Protocol::Kitty).contains("\x1bPtmux;\x1b\x1b_G"));
        let sixel = tmux(Protocol::Sixel);
        assert!(!sixel.contains("tmux;") && sixel.contains("\x1bP"));
    }

    #[test]
    fn kitty_sends_an_image_once_then_points_at_it() {
        forget();
        let img = gradient();
        let area = Rect::new(0, 0, 20, 10);
        let g = graphics(Protocol::Kitty);
        let mut first = Buffer::empty(area);
        draw(&img, g, area, &mut first);
        let mut second = Buffer::empty(area);
        draw(&img, g, area, &mut second);
        assert!(symbols(&first).contains("a=T"), "transmitted");
        assert!(!symbols(&second).contains("\x1b_G"), "not again");
        assert!(symbols(&second).contains('\u{10EEEE}'), "placeholders");
        // A new image is sent.
        let other = GreyImage::new(2, 2, vec![0, 50, 100, 150]).unwrap();
        let mut third = Buffer::empty(area);
        draw(&other, g, area, &mut third);
        assert!(symbols(&third).contains("a=T"));
    }
}
