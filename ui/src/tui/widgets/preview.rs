//! A radiograph preview: real pixels when a graphics protocol was chosen and colour is on,
//! half blocks in the colour depth's greys otherwise (and whenever pixels cannot be drawn).
//! Imports the theme and its sibling widgets `halfblock` and `pixels` only.

use super::halfblock::{GreyImage, HalfBlockImage};
use super::pixels;
use crate::tui::theme::Theme;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::widgets::Widget;

pub struct Preview<'a> {
    pub image: &'a GreyImage,
    pub theme: Theme,
}

impl Widget for Preview<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        // NO_COLOR: plain text, never graphics.
        if self.theme.color() && pixels::draw(self.image, self.theme.graphics, area, buf) {
            return;
        }
        HalfBlockImage {
            image: self.image,
            depth: self.theme.depth,
        }
        .render(area, buf);
    }
}
