//! The previews' colours as a terminal receives them: a frame drawn through ratatui's
//! CrosstermBackend into memory, its escape codes read back. True colour gives 24-bit greys
//! (`38;2;` / `48;2;`), the 256-colour palette its greys, 16 colours and NO_COLOR neither.

#[allow(dead_code)]
mod tui_common;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use privxray_ui::tui::event::Event;
use privxray_ui::tui::theme::{ColorDepth, Theme};
use std::collections::BTreeSet;
use tui_common::{captured, harness};

/// The (r, g, b) of every 24-bit colour code (`38;2;r;g;b` or `48;2;r;g;b`) in `frame`.
fn rgb_codes(frame: &str) -> Vec<(u8, u8, u8)> {
    let mut found = Vec::new();
    for intro in ["38;2;", "48;2;"] {
        for (i, _) in frame.match_indices(intro) {
            let rest = &frame[i + intro.len()..];
            let end = rest.find(|c: char| !(c.is_ascii_digit() || c == ';'));
            let n: Vec<u8> = rest[..end.unwrap_or(rest.len())]
                .split(';')
                .take(3)
                .filter_map(|v| v.parse().ok())
                .collect();
            if let [r, g, b] = n[..] {
                found.push((r, g, b));
            }
        }
    }
    found
}

#[test]
fn previews_carry_the_greys_the_colour_depth_allows() {
    let mut h = harness();
    h.app.handle_event(Event::Key(KeyEvent::new(
        KeyCode::Enter,
        KeyModifiers::NONE,
    )));
    h.finish_preprocessing();
    assert!(
        !h.app.data.previews.is_empty(),
        "the Data tab shows previews"
    );

    h.app.theme = Theme {
        depth: ColorDepth::TrueColor,
        ..Theme::default()
    };
    let frame = captured(&h);
    assert!(
        frame.contains("\x1b[38;2;") || frame.contains(";38;2;"),
        "24-bit foreground"
    );
    assert!(frame.contains("48;2;"), "24-bit background");
    let greys: BTreeSet<u8> = rgb_codes(&frame)
        .into_iter()
        .filter(|&(r, g, b)| r == g && g == b)
        .map(|(r, _, _)| r)
        .collect();
    // More levels than the 30 of the 256-colour palette: the radiographs' own greys.
    assert!(greys.len() > 30, "{} grey levels: {greys:?}", greys.len());

    h.app.theme = Theme {
        depth: ColorDepth::Ansi256,
        ..Theme::default()
    };
    let frame = captured(&h);
    assert!(
        rgb_codes(&frame).is_empty(),
        "no 24-bit codes under 256 colours"
    );
    assert!(
        (232..=255).any(|i| frame.contains(&format!("48;5;{i}m"))),
        "the palette's grey ramp"
    );

    for theme in [Theme::ANSI16, Theme::PLAIN] {
        h.app.theme = theme;
        let frame = captured(&h);
        assert!(
            !frame.contains("38;2;") && !frame.contains("48;2;"),
            "{theme:?}"
        );
        assert!(
            !(232..=255).any(|i| frame.contains(&format!("5;{i}m"))),
            "{theme:?}: no palette greys"
        );
    }
    // NO_COLOR: the previews become the ASCII density ramp, with no colour codes at all.
    h.app.theme = Theme::PLAIN;
    let frame = captured(&h);
    assert!(!frame.contains('▀'), "no half blocks without colour");
    assert!(
        !frame.contains("38;5;") && !frame.contains("48;5;"),
        "no colours"
    );
}
