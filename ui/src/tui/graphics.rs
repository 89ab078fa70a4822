//! Which graphics protocol the terminal speaks, found once at start-up: the
//! `PRIVXRAY_GRAPHICS` override, NO_COLOR, then the terminal's answers to a kitty graphics query
//! and to the primary device attributes (DA1, whose parameter 4 means sixel), then iTerm2's
//! environment variables; kitty > sixel > iTerm2 > half blocks. The query is generic over a
//! reader and a writer so tests feed it canned answers; [`TimedFd`] is the real, bounded reader.
//! Imports the theme only (its `Graphics` and `Protocol`).

use crate::tui::theme::{Graphics, Protocol};
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

/// A one-pixel kitty graphics query: a kitty terminal answers `ESC _ G i=31;OK ESC \`.
pub const KITTY_QUERY: &str = "\x1b_Gi=31,s=1,v=1,a=q,t=d,f=24;AAAA\x1b\\";
/// The cell size in pixels (answer `ESC [ 6 ; height ; width t`).
pub const CELL_QUERY: &str = "\x1b[16t";
/// Primary device attributes: every terminal answers, and answers last, so it ends the wait.
pub const DA1_QUERY: &str = "\x1b[c";

/// How long start-up waits for a terminal that does not answer.
pub const QUERY_TIMEOUT: Duration = Duration::from_millis(500);

/// The `PRIVXRAY_GRAPHICS` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Setting {
    /// Ask the terminal.
    #[default]
    Auto,
    /// Use this protocol without asking (for tmux, or terminals that answer wrongly).
    Fixed(Protocol),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("PRIVXRAY_GRAPHICS={0:?} is not one of auto, kitty, sixel, iterm2, halfblocks")]
pub struct SettingError(pub String);

impl Setting {
    /// The setting from the variable's value; empty or absent means `auto`.
    pub fn parse(value: Option<&str>) -> Result<Self, SettingError> {
        let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(Setting::Auto);
        };
        Ok(match v.to_ascii_lowercase().as_str() {
            "auto" => Setting::Auto,
            "kitty" => Setting::Fixed(Protocol::Kitty),
            "sixel" => Setting::Fixed(Protocol::Sixel),
            "iterm2" | "iterm" => Setting::Fixed(Protocol::Iterm2),
            "halfblocks" | "halfblock" | "none" => Setting::Fixed(Protocol::Halfblocks),
            _ => return Err(SettingError(v.to_string())),
        })
    }
}

/// What the terminal said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Answer {
    pub kitty: bool,
    pub sixel: bool,
    /// Cell width and height in pixels, if reported.
    pub cell_px: Option<(u16, u16)>,
    /// Whether the DA1 reply arrived (the end of the answers).
    pub complete: bool,
}

impl Answer {
    /// Reads the replies out of whatever bytes came back (other input may be mixed in).
    pub fn parse(bytes: &[u8]) -> Self {
        let text = String::from_utf8_lossy(bytes);
        let mut a = Answer {
            kitty: text.contains("\x1b_Gi=31;OK"),
            ..Answer::default()
        };
        for (i, _) in text.match_indices("\x1b[") {
            let rest = &text[i + 2..];
            let end = rest.find(|c: char| !(c.is_ascii_digit() || c == ';' || c == '?'));
            let Some(end) = end else { continue };
            let (params, last) = (&rest[..end], rest[end..].chars().next());
            match (params.strip_prefix('?'), last) {
                (Some(p), Some('c')) => {
                    a.complete = true;
                    a.sixel |= p.split(';').any(|v| v == "4");
                }
                (None, Some('t')) => {
                    let n: Vec<u16> = params.split(';').filter_map(|v| v.parse().ok()).collect();
                    if let [6, h, w] = n[..] {
                        a.cell_px = (w > 0 && h > 0).then_some((w, h));
                    }
                }
                _ => {}
            }
        }
        a
    }
}

/// The kitty query wrapped in tmux's passthrough, for the outer terminal (answered only with
/// `allow-passthrough on`); tmux itself answers the other two.
pub fn tmux_kitty_query() -> String {
    format!(
        "\x1bPtmux;{}\x1b\\",
        KITTY_QUERY.replace('\x1b', "\x1b\x1b")
    )
}

/// Writes the three queries, then reads until the DA1 reply or until `input` reports the end
/// (`Ok(0)`: for [`TimedFd`], the deadline passed). What came back, parsed.
pub fn query(out: &mut impl Write, input: &mut impl Read, tmux: bool) -> io::Result<Answer> {
    let kitty = if tmux {
        tmux_kitty_query()
    } else {
        KITTY_QUERY.to_string()
    };
    write!(out, "{kitty}{CELL_QUERY}{DA1_QUERY}")?;
    out.flush()?;
    let mut got = Vec::new();
    let mut chunk = [0u8; 256];
    loop {
        let n = match input.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(Answer::parse(&got));
        }
        got.extend_from_slice(&chunk[..n]);
        let a = Answer::parse(&got);
        if a.complete {
            return Ok(a);
        }
    }
}

/// A file descriptor read with a deadline: `read` waits (poll) at most until then and returns
/// `Ok(0)` once it has passed, so a terminal that never answers costs the timeout, no more.
pub struct TimedFd {
    pub fd: std::os::fd::RawFd,
    pub deadline: Instant,
}

impl Read for TimedFd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || buf.is_empty() {
                return Ok(0);
            }
            let mut pfd = libc::pollfd {
                fd: self.fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // Rounded up: a poll that ends a little early waits again, never returns early.
            let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd, its count 1.
            let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
            if ready < 0 {
                return Err(io::Error::last_os_error());
            }
            if ready > 0 {
                break;
            }
        }
        // SAFETY: buf is valid for buf.len() bytes.
        let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

/// The environment variables that decide, read once.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub setting: Option<String>,
    pub no_color: Option<String>,
    pub term: Option<String>,
    pub term_program: Option<String>,
    pub lc_terminal: Option<String>,
    pub tmux: Option<String>,
}

impl Env {
    pub fn from_process() -> Self {
        let var = |k: &str| std::env::var_os(k).map(|v| v.to_string_lossy().into_owned());
        Env {
            setting: var("PRIVXRAY_GRAPHICS"),
            no_color: var("NO_COLOR"),
            term: var("TERM"),
            term_program: var("TERM_PROGRAM"),
            lc_terminal: var("LC_TERMINAL"),
            tmux: var("TMUX"),
        }
    }
    fn no_color(&self) -> bool {
        self.no_color.as_deref().is_some_and(|v| !v.is_empty())
    }
    fn in_tmux(&self) -> bool {
        self.tmux.as_deref().is_some_and(|v| !v.is_empty())
            || self.term.as_deref().is_some_and(|t| t.starts_with("tmux"))
            || self.term_program.as_deref() == Some("tmux")
    }
    /// iTerm2 and the terminals that speak its protocol say so only in the environment.
    fn iterm2(&self) -> bool {
        let p = self.term_program.as_deref().unwrap_or("");
        ["iTerm", "WezTerm", "mintty"].iter().any(|t| p.contains(t))
            || self
                .lc_terminal
                .as_deref()
                .is_some_and(|t| t.contains("iTerm"))
    }
}

/// Whether the terminal must be asked: only for `auto`, and never under NO_COLOR.
pub fn needs_query(env: &Env) -> Result<bool, SettingError> {
    Ok(!env.no_color() && Setting::parse(env.setting.as_deref())? == Setting::Auto)
}

/// The choice from the environment and the terminal's answer (`None`: not asked).
pub fn choose(env: &Env, answer: Option<&Answer>) -> Result<Protocol, SettingError> {
    let setting = Setting::parse(env.setting.as_deref())?;
    if env.no_color() {
        return Ok(Protocol::Halfblocks);
    }
    let a = answer.copied().unwrap_or_default();
    Ok(match setting {
        Setting::Fixed(p) => p,
        Setting::Auto if a.kitty => Protocol::Kitty,
        Setting::Auto if a.sixel => Protocol::Sixel,
        Setting::Auto if env.iterm2() => Protocol::Iterm2,
        Setting::Auto => Protocol::Halfblocks,
    })
}

/// The graphics for this terminal: asks it (writing to `out`, reading `input`) when the
/// setting is `auto`. The cell size comes from the answer, else `winsize_px` (the ioctl's
/// pixels per cell), else 10x20.
pub fn detect(
    env: &Env,
    out: &mut impl Write,
    input: &mut impl Read,
    winsize_px: Option<(u16, u16)>,
) -> Result<Graphics, SettingError> {
    let answer = if needs_query(env)? {
        // A failed write or read is a terminal that cannot be asked: half blocks.
        query(out, input, env.in_tmux()).ok()
    } else {
        None
    };
    let protocol = choose(env, answer.as_ref())?;
    let cell_px = answer
        .and_then(|a| a.cell_px)
        .or(winsize_px)
        .unwrap_or(Graphics::HALFBLOCKS.cell_px);
    Ok(Graphics {
        protocol,
        cell_px,
        tmux: env.in_tmux(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_with_other_bytes_around() {
        let a = Answer::parse(b"x\x1b_Gi=31;OK\x1b\\\x1b[6;18;9t\x1b[?62;4;22cy");
        assert_eq!(
            a,
            Answer {
                kitty: true,
                sixel: true,
                cell_px: Some((9, 18)),
                complete: true
            }
        );
        let a = Answer::parse(b"\x1b_Gi=31;ENOENT:no\x1b\\\x1b[?64;1;2;6;9;15;22c");
        assert!(!a.kitty && !a.sixel && a.complete && a.cell_px.is_none());
        // 14 is not 4; an incomplete reply is not complete.
        assert!(!Answer::parse(b"\x1b[?62;14c").sixel);
        assert!(!Answer::parse(b"\x1b[?62;4").complete);
    }

    #[test]
    fn settings_parse_and_a_bad_one_is_named() {
        assert_eq!(Setting::parse(None), Ok(Setting::Auto));
        assert_eq!(Setting::parse(Some(" ")), Ok(Setting::Auto));
        assert_eq!(
            Setting::parse(Some("Sixel")),
            Ok(Setting::Fixed(Protocol::Sixel))
        );
        let err = Setting::parse(Some("png")).unwrap_err();
        assert!(err.to_string().contains("\"png\""), "{err}");
    }

    #[test]
    fn the_query_stops_at_the_da1_reply() {
        let mut out = Vec::new();
        // Bytes after the DA1 reply are user input: never read.
        let mut input: &[u8] = b"\x1b[?62;4c";
        let a = query(&mut out, &mut input, false).unwrap();
        assert!(a.sixel && a.complete);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("{KITTY_QUERY}{CELL_QUERY}{DA1_QUERY}")
        );
    }

    #[test]
    fn under_tmux_the_kitty_query_goes_through_the_passthrough() {
        assert_eq!(
            tmux_kitty_query(),
            "\x1bPtmux;\x1b\x1b_Gi=31,s=1,v=1,a=q,t=d,f=24;AAAA\x1b\x1b\\\x1b\\"
        );
        let env = Env {
            tmux: Some("/tmp/tmux-0/default,1,0".into()),
            ..Env::default()
        };
        let mut out = Vec::new();
        let g = detect(
            &env,
            &mut out,
            &mut &b"\x1b_Gi=31;OK\x1b\\\x1b[?1;2c"[..],
            None,
        )
        .unwrap();
        assert_eq!((g.protocol, g.tmux), (Protocol::Kitty, true));
        assert!(String::from_utf8(out).unwrap().starts_with("\x1bPtmux;"));
    }
}
