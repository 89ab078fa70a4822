//! Grey levels as terminal colours at each colour depth: 24-bit RGB, the nearest of the xterm
//! palette's 30 greys, or the nearest of the four named greys. Pure functions; imports only the
//! theme's `ColorDepth`.

use crate::tui::theme::ColorDepth;
use ratatui::style::Color;

/// The greys of the xterm 6x6x6 colour cube (r = g = b): indices 16, 59, 102, 145, 188, 231.
const CUBE_GREYS: [(u8, u8); 6] = [
    (16, 0),
    (59, 95),
    (102, 135),
    (145, 175),
    (188, 215),
    (231, 255),
];

/// The grey level xterm shows for a palette index, if the index is a grey: the 24-step ramp
/// (232..=255, levels 8 to 238) or a cube grey.
pub fn xterm_grey_level(index: u8) -> Option<u8> {
    match index {
        232..=255 => Some(8 + 10 * (index - 232)),
        _ => CUBE_GREYS
            .iter()
            .find(|&&(i, _)| i == index)
            .map(|&(_, v)| v),
    }
}

/// The xterm palette index whose grey is nearest `v`: 30 levels, at most 9 apart from `v`.
pub fn xterm_grey(v: u8) -> u8 {
    let ramp = (232..=255u8).map(|i| (i, 8 + 10 * (i - 232)));
    ramp.chain(CUBE_GREYS)
        .min_by_key(|&(_, level)| level.abs_diff(v))
        .map_or(16, |(i, _)| i)
}

/// The named colour nearest a grey level (four levels).
pub fn named_grey(v: u8) -> Color {
    match v {
        0..=63 => Color::Black,
        64..=127 => Color::DarkGray,
        128..=191 => Color::Gray,
        _ => Color::White,
    }
}

/// The colour a grey level is drawn in at `depth`; `None` without colour.
pub fn grey(v: u8, depth: ColorDepth) -> Option<Color> {
    match depth {
        ColorDepth::NoColor => None,
        ColorDepth::Ansi16 => Some(named_grey(v)),
        ColorDepth::Ansi256 => Some(Color::Indexed(xterm_grey(v))),
        ColorDepth::TrueColor => Some(Color::Rgb(v, v, v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn true_colour_keeps_all_256_levels() {
        for v in 0..=255u8 {
            assert_eq!(grey(v, ColorDepth::TrueColor), Some(Color::Rgb(v, v, v)));
        }
    }

    #[test]
    fn palette_greys_are_the_nearest_of_thirty_and_keep_the_order() {
        assert_eq!(xterm_grey(0), 16);
        assert_eq!(xterm_grey(8), 232);
        assert_eq!(xterm_grey(95), 59);
        assert_eq!(xterm_grey(238), 255);
        assert_eq!(xterm_grey(255), 231);
        let mut last = 0;
        let mut used = BTreeSet::new();
        for v in 0..=255u8 {
            let Some(Color::Indexed(i)) = grey(v, ColorDepth::Ansi256) else {
                panic!("{v}: not an indexed colour");
            };
            let level = xterm_grey_level(i).expect("a grey of the palette");
            assert!(level.abs_diff(v) <= 9, "{v} -> {i} ({level})");
            assert!(level >= last, "darker input, darker grey: {v}");
            last = level;
            used.insert(i);
        }
        assert_eq!(used.len(), 30, "every grey of the palette is used");
        assert_eq!(xterm_grey_level(17), None, "a blue is not a grey");
    }

    #[test]
    fn sixteen_colours_give_four_greys_and_no_colour_none() {
        let named: BTreeSet<String> = (0..=255u8)
            .map(|v| format!("{:?}", grey(v, ColorDepth::Ansi16).unwrap()))
            .collect();
        assert_eq!(named.len(), 4);
        assert_eq!(grey(200, ColorDepth::NoColor), None);
    }
}
