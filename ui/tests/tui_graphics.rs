//! Real pixels for the previews: frames drawn through ratatui's CrosstermBackend into memory
//! carry the kitty APC or the sixel DCS for the chosen protocol and neither for half blocks or
//! NO_COLOR; the start-up detection picks kitty > sixel > iTerm2 > half blocks from canned
//! terminal answers (and from silence, through the real timed reader), the PRIVXRAY_GRAPHICS
//! override wins and NO_COLOR turns graphics off; the binary documents the override and names
//! a bad value.

#[allow(dead_code)]
mod tui_common;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use privxray_ui::tui::event::Event;
use privxray_ui::tui::graphics::{self, Env, TimedFd};
use privxray_ui::tui::theme::{ColorDepth, Graphics, Protocol, Theme};
use std::time::{Duration, Instant};
use tui_common::{captured, harness, Harness};

fn theme(depth: ColorDepth, protocol: Protocol) -> Theme {
    Theme {
        depth,
        graphics: Graphics {
            protocol,
            cell_px: (8, 16),
            tmux: false,
        },
    }
}

fn press(h: &mut Harness, code: KeyCode) {
    h.app
        .handle_event(Event::Key(KeyEvent::new(code, KeyModifiers::NONE)));
}

fn with_previews() -> Harness {
    let mut h = harness();
    press(&mut h, KeyCode::Enter);
    h.finish_preprocessing();
    assert!(
        !h.app.data.previews.is_empty(),
        "the Data tab shows previews"
    );
    h
}

/// Kitty image transmissions (`a=T`, the first chunk of each image).
fn kitty_images(frame: &str) -> usize {
    frame.matches("\x1b_Gq=2,i=").count()
}

/// Sixel images: DCS, numeric parameters, `q`.
fn sixel_images(frame: &str) -> usize {
    frame
        .match_indices("\x1bP")
        .filter(|(i, _)| {
            let rest = &frame[i + 2..];
            let params = rest.find(|c: char| !(c.is_ascii_digit() || c == ';'));
            params.is_some_and(|p| rest[p..].starts_with('q'))
        })
        .count()
}

#[test]
fn data_previews_go_out_in_the_chosen_protocol() {
    let mut h = with_previews();
    let n = h.app.data.previews.len();

    h.app.theme = theme(ColorDepth::TrueColor, Protocol::Kitty);
    let frame = captured(&h);
    assert_eq!(kitty_images(&frame), n, "one kitty image per preview");
    assert!(
        frame.contains("a=T") && frame.contains("\x1b\\"),
        "APC ends"
    );
    assert!(frame.contains('\u{10EEEE}'), "kitty placeholders");
    assert_eq!(sixel_images(&frame), 0);
    assert!(!frame.contains('▀'), "no half blocks under pixels");
    assert!(
        frame.contains("Preview · kitty graphics"),
        "the title says so"
    );

    h.app.theme = theme(ColorDepth::TrueColor, Protocol::Sixel);
    let frame = captured(&h);
    assert_eq!(sixel_images(&frame), n, "one sixel image per preview");
    assert_eq!(kitty_images(&frame), 0);
    assert!(!frame.contains("\x1b_G"));

    h.app.theme = theme(ColorDepth::TrueColor, Protocol::Iterm2);
    let frame = captured(&h);
    assert_eq!(frame.matches("\x1b]1337;File=").count(), n, "iTerm2 images");
    assert_eq!(sixel_images(&frame) + kitty_images(&frame), 0);

    // Half blocks: the 24-bit greys, no graphics.
    h.app.theme = theme(ColorDepth::TrueColor, Protocol::Halfblocks);
    let frame = captured(&h);
    assert!(
        frame.contains('▀') && frame.contains("48;2;"),
        "half blocks"
    );
    assert_eq!(sixel_images(&frame) + kitty_images(&frame), 0);
    assert!(!frame.contains("\x1b_G") && !frame.contains("1337;File"));

    // NO_COLOR: plain text even if a protocol was (wrongly) chosen.
    h.app.theme = theme(ColorDepth::NoColor, Protocol::Kitty);
    let frame = captured(&h);
    assert!(!frame.contains("\x1b_G") && !frame.contains('▀'));
    assert_eq!(sixel_images(&frame), 0);
}

#[test]
fn the_prediction_tab_preview_uses_graphics_too() {
    let mut h = with_previews();
    press(&mut h, KeyCode::Char('4'));
    assert!(h.app.predict.preview.is_some(), "an image is chosen");
    h.app.theme = theme(ColorDepth::Ansi256, Protocol::Sixel);
    assert_eq!(sixel_images(&captured(&h)), 1);
    h.app.theme = theme(ColorDepth::Ansi256, Protocol::Halfblocks);
    let frame = captured(&h);
    assert_eq!(sixel_images(&frame), 0);
    assert!((232..=255).any(|i| frame.contains(&format!("48;5;{i}m"))));
}

fn env(setting: Option<&str>, no_color: Option<&str>, term_program: Option<&str>) -> Env {
    Env {
        setting: setting.map(Into::into),
        no_color: no_color.map(Into::into),
        term: Some("xterm-256color".into()),
        term_program: term_program.map(Into::into),
        ..Env::default()
    }
}

const KITTY_OK: &[u8] = b"\x1b_Gi=31;OK\x1b\\\x1b[?62;22c";
const DA1_SIXEL: &[u8] = b"\x1b[6;20;10t\x1b[?63;1;2;4;6;9;15;22c";
const DA1_PLAIN: &[u8] = b"\x1b[?64;1;2;6;9;15;18;21;22c";

/// What `detect` chooses for `env` given the terminal's `answer`, and what it wrote.
fn detect(env: &Env, answer: &[u8]) -> (Graphics, String) {
    let mut out = Vec::new();
    let mut input = answer;
    let g = graphics::detect(env, &mut out, &mut input, Some((7, 15))).unwrap();
    (g, String::from_utf8(out).unwrap())
}

#[test]
fn canned_answers_choose_kitty_then_sixel_then_half_blocks() {
    let auto = env(None, None, None);
    let (g, asked) = detect(&auto, KITTY_OK);
    assert_eq!(g.protocol, Protocol::Kitty);
    assert!(
        asked.contains("\x1b_G") && asked.ends_with("\x1b[c"),
        "{asked:?}"
    );
    assert_eq!(g.cell_px, (7, 15), "no size in the answer: the ioctl's");

    let (g, _) = detect(&auto, DA1_SIXEL);
    assert_eq!(g.protocol, Protocol::Sixel);
    assert_eq!(g.cell_px, (10, 20), "the size the terminal reported");

    assert_eq!(detect(&auto, DA1_PLAIN).0.protocol, Protocol::Halfblocks);
    // Both: kitty wins.
    let both = [KITTY_OK, DA1_SIXEL].concat();
    assert_eq!(detect(&auto, &both).0.protocol, Protocol::Kitty);
    // iTerm2 says so in the environment only; a kitty or sixel answer still wins.
    let iterm = env(Some("auto"), None, Some("iTerm.app"));
    assert_eq!(detect(&iterm, DA1_PLAIN).0.protocol, Protocol::Iterm2);
    assert_eq!(detect(&iterm, DA1_SIXEL).0.protocol, Protocol::Sixel);
}

#[test]
fn a_silent_terminal_costs_the_timeout_and_gives_half_blocks() {
    let mut fds = [0; 2];
    // SAFETY: a two-element array for pipe(2).
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let wait = Duration::from_millis(200);
    let start = Instant::now();
    let mut input = TimedFd {
        fd: fds[0],
        deadline: start + wait,
    };
    let mut out = Vec::new();
    let g = graphics::detect(&env(None, None, None), &mut out, &mut input, None).unwrap();
    let took = start.elapsed();
    // SAFETY: both ends are ours and closed once.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    assert_eq!(g, Graphics::HALFBLOCKS);
    assert!(!out.is_empty(), "it asked");
    assert!(took >= wait, "waited {took:?}");
    assert!(took < wait + Duration::from_secs(2), "bounded: {took:?}");
}

#[test]
fn the_override_wins_and_no_color_turns_graphics_off() {
    // A fixed protocol asks nothing.
    let (g, asked) = detect(&env(Some("sixel"), None, None), KITTY_OK);
    assert_eq!((g.protocol, asked.as_str()), (Protocol::Sixel, ""));
    let (g, _) = detect(&env(Some("KITTY"), None, None), b"");
    assert_eq!(g.protocol, Protocol::Kitty, "case does not matter");
    let (g, _) = detect(&env(Some("halfblocks"), None, None), KITTY_OK);
    assert_eq!(g.protocol, Protocol::Halfblocks);
    let (g, _) = detect(&env(Some("iterm2"), None, None), DA1_SIXEL);
    assert_eq!(g.protocol, Protocol::Iterm2);
    // NO_COLOR: no graphics, not even asked, whatever the override.
    for setting in [None, Some("kitty")] {
        let (g, asked) = detect(&env(setting, Some("1"), None), KITTY_OK);
        assert_eq!((g.protocol, asked.as_str()), (Protocol::Halfblocks, ""));
    }
    // A bad value is an error naming it.
    let mut out = Vec::new();
    let err =
        graphics::detect(&env(Some("png"), None, None), &mut out, &mut &b""[..], None).unwrap_err();
    assert!(err.to_string().contains("\"png\""), "{err}");
}

#[test]
fn the_binary_documents_the_override_and_names_a_bad_value() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_privxray");
    let help = std::process::Command::new(bin)
        .arg("--help")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("PRIVXRAY_GRAPHICS=auto|kitty|sixel|iterm2|halfblocks"),
        "{help}"
    );
    let out = std::process::Command::new(bin)
        .arg("demo")
        .env("PRIVXRAY_GRAPHICS", "png")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("PRIVXRAY_GRAPHICS=\"png\""), "{err}");
}
