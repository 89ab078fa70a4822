//! A one-line slider: `label [━━━━●─────] value`.
//! Imports ratatui only; never the tabs or the app.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::Widget;

pub struct Slider<'a> {
    pub label: &'a str,
    pub value: f64,
    pub min: f64,
    pub max: f64,
    /// The value as shown (precision chosen by the caller).
    pub text: String,
    pub label_width: u16,
    pub style: Style,
    pub knob: Style,
}

impl Slider<'_> {
    /// Position of the knob in a track of `width` cells, 0..width-1.
    pub fn knob_position(value: f64, min: f64, max: f64, width: usize) -> usize {
        if width == 0 || max <= min || !value.is_finite() {
            return 0;
        }
        let t = ((value - min) / (max - min)).clamp(0.0, 1.0);
        (t * (width - 1) as f64).round() as usize
    }
}

impl Widget for Slider<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let text_w = self.text.chars().count() as u16 + 1;
        let track_w = area
            .width
            .saturating_sub(self.label_width + text_w + 2)
            .max(1) as usize;
        let knob = Self::knob_position(self.value, self.min, self.max, track_w);
        let mut spans = vec![
            Span::styled(
                format!("{:<w$}", self.label, w = self.label_width as usize),
                self.style,
            ),
            Span::styled("[", self.style),
        ];
        spans.push(Span::styled("━".repeat(knob), self.style));
        spans.push(Span::styled("●", self.knob));
        spans.push(Span::styled("─".repeat(track_w - knob - 1), self.style));
        spans.push(Span::styled("] ", self.style));
        spans.push(Span::styled(self.text, self.style));
        Line::from(spans).render(area, buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knob_at_ends_and_middle() {
        assert_eq!(Slider::knob_position(0.0, 0.0, 1.0, 11), 0);
        assert_eq!(Slider::knob_position(1.0, 0.0, 1.0, 11), 10);
        assert_eq!(Slider::knob_position(0.5, 0.0, 1.0, 11), 5);
        assert_eq!(Slider::knob_position(7.0, 0.0, 1.0, 11), 10);
        assert_eq!(Slider::knob_position(f64::NAN, 0.0, 1.0, 11), 0);
    }

    #[test]
    fn renders_exact_line() {
        let mut buf = Buffer::empty(Rect::new(0, 0, 20, 1));
        Slider {
            label: "σ",
            value: 0.5,
            min: 0.0,
            max: 1.0,
            text: "0.50".into(),
            label_width: 2,
            style: Style::new(),
            knob: Style::new(),
        }
        .render(buf.area, &mut buf);
        // 20 - 2 (label) - 5 (text + space) - 2 (brackets) = 11 cells of track, knob at 5.
        assert_eq!(buf, Buffer::with_lines(["σ [━━━━━●─────] 0.50"]));
    }
}
