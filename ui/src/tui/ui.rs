//! Drawing of the whole screen: tab bar, the active tab, demo caption, footer with keys, help
//! overlay, and the too-small message. Reads state only.
//! Imports the app (to read it) and each tab's view; the app and the tabs never import it.

use super::app::{App, TabId};
use super::data::DataView;
use super::predict::PredictView;
use super::privacy::PrivacyView;
use super::train::TrainView;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Tabs, Widget, Wrap};

pub const MIN_WIDTH: u16 = 80;
pub const MIN_HEIGHT: u16 = 24;

/// Keys of each tab, shown in the footer and in help.
pub fn tab_keys(tab: TabId) -> &'static [(&'static str, &'static str)] {
    match tab {
        TabId::Data => &[
            ("↑/↓", "source"),
            ("t ←/→", "technique"),
            ("c", "labels"),
            ("e", "folder"),
            ("Enter", "preprocess"),
            ("PgUp/Dn", "skipped"),
        ],
        TabId::Train => &[
            ("j/k", "field"),
            ("h/l -/+", "change"),
            ("space", "DP on/off"),
            ("s", "start"),
            ("p", "pause/resume"),
            ("x", "stop"),
            ("e", "export PNG"),
        ],
        TabId::Privacy => &[
            ("j/k", "run"),
            ("a", "audit"),
            ("e", "edit σ list"),
            ("s", "sweep σ"),
            ("x", "stop sweep"),
        ],
        TabId::Predict => &[
            ("L", "launch"),
            ("m", "share model"),
            ("j/k", "image"),
            ("Enter", "predict"),
            ("h/l", "party"),
            ("S", "stop"),
            ("K", "kill"),
        ],
    }
}

const GLOBAL_KEYS: [(&str, &str); 5] = [
    ("1-4 Tab", "switch tab"),
    ("?", "help"),
    ("Esc", "back"),
    ("q", "quit"),
    ("Ctrl-C", "quit"),
];

impl Widget for &App {
    fn render(self, area: Rect, buf: &mut Buffer) {
        if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
            render_too_small(area, buf);
            return;
        }
        let caption_h = if self.demo.is_some() { 2 } else { 0 };
        let [tabs_area, body, caption_area, footer] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Min(10),
            Constraint::Length(caption_h),
            Constraint::Length(1),
        ])
        .areas(area);

        let theme = self.theme;
        let titles: Vec<Line> = TabId::ALL
            .iter()
            .map(|t| Line::raw(format!("{} {}", t.index() + 1, t.title())))
            .collect();
        let [tabs_left, brand] =
            Layout::horizontal([Constraint::Min(40), Constraint::Length(30)]).areas(tabs_area);
        Tabs::new(titles)
            .select(self.tab.index())
            .highlight_style(theme.selected())
            .divider("│")
            .render(tabs_left, buf);
        Line::styled("privxray · chest X-ray privacy", theme.dim())
            .right_aligned()
            .render(brand, buf);

        match self.tab {
            TabId::Data => DataView {
                tab: &self.data,
                theme,
            }
            .render(body, buf),
            TabId::Train => TrainView {
                tab: &self.train,
                theme,
            }
            .render(body, buf),
            TabId::Privacy => PrivacyView {
                tab: &self.privacy,
                theme,
            }
            .render(body, buf),
            TabId::Predict => PredictView {
                tab: &self.predict,
                theme,
            }
            .render(body, buf),
        }

        if let Some(caption) = self.demo.as_ref().and_then(|d| d.caption()) {
            Paragraph::new(Line::styled(
                format!("DEMO ▶ {caption}"),
                theme.warn().patch(theme.bold()),
            ))
            .wrap(Wrap { trim: true })
            .render(caption_area, buf);
        }

        let mut spans = Vec::new();
        let keys: Vec<(&str, &str)> = if self.data.editing || self.privacy.sweep.editing() {
            vec![("Enter", "done"), ("Esc", "cancel")]
        } else {
            tab_keys(self.tab)
                .iter()
                .chain(&[("?", "help"), ("q", "quit")])
                .copied()
                .collect()
        };
        for (k, what) in keys {
            spans.push(Span::styled(
                format!(" {k}"),
                theme.accent().patch(theme.bold()),
            ));
            spans.push(Span::raw(format!(" {what} ")));
        }
        Line::from(spans).render(footer, buf);

        if self.help {
            render_help(self, body, buf);
        }
    }
}

fn render_too_small(area: Rect, buf: &mut Buffer) {
    let msg = format!(
        "Terminal too small: {}x{}, privxray needs at least {MIN_WIDTH}x{MIN_HEIGHT}. Enlarge the window, or press q to quit.",
        area.width, area.height
    );
    let h = 4.min(area.height);
    let y = area.y + area.height.saturating_sub(h) / 2;
    Paragraph::new(msg)
        .wrap(Wrap { trim: true })
        .centered()
        .render(
            Rect {
                y,
                height: h,
                ..area
            },
            buf,
        );
}

fn render_help(app: &App, body: Rect, buf: &mut Buffer) {
    let w = 64.min(body.width);
    let mut lines = vec![Line::styled("Everywhere", app.theme.bold())];
    let row = |k: &str, v: &str| Line::raw(format!("  {k:<12} {v}"));
    lines.extend(GLOBAL_KEYS.iter().map(|(k, v)| row(k, v)));
    lines.push(Line::raw("  j/k = ↓/↑  h/l = ←/→"));
    lines.push(Line::styled(
        format!("{} tab", app.tab.title()),
        app.theme.bold(),
    ));
    lines.extend(tab_keys(app.tab).iter().map(|(k, v)| row(k, v)));
    lines.push(Line::raw(""));
    lines.push(Line::styled("? or Esc closes this help", app.theme.dim()));
    let h = (lines.len() as u16 + 2).min(body.height);
    let area = Rect {
        x: body.x + (body.width - w) / 2,
        y: body.y + (body.height - h) / 2,
        width: w,
        height: h,
    };
    Clear.render(area, buf);
    Paragraph::new(lines)
        .block(Block::bordered().title(" Help "))
        .render(area, buf);
}
