//! Drawing of the Private prediction tab: the parties' table, the image picker and preview,
//! and the latest results with every class's probability. Reads [`PredictTab`] only; may not
//! import the app or the event queue.

use super::{PredictTab, PredictionRow};
use crate::tui::backend::{party_label, ClassProbs, PartyId, PartyState};
use crate::tui::format::bytes;
use crate::tui::theme::Theme;
use crate::tui::widgets::Preview;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, List, ListItem, ListState, Paragraph, Row, StatefulWidget, Table, Widget, Wrap,
};

pub struct PredictView<'a> {
    pub tab: &'a PredictTab,
    pub theme: Theme,
}

impl Widget for PredictView<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let [parties_area, bottom] =
            Layout::vertical([Constraint::Length(6), Constraint::Min(5)]).areas(area);
        self.parties(parties_area, buf);
        let [list_area, img_area, result_area] = Layout::horizontal([
            Constraint::Length(30),
            Constraint::Length(24),
            Constraint::Min(20),
        ])
        .areas(bottom);
        self.picker(list_area, img_area, buf);
        self.results(result_area, buf);
    }
}

impl PredictView<'_> {
    /// The three parties: state, address, peers, handshakes, model, requests and traffic.
    fn parties(&self, area: Rect, buf: &mut Buffer) {
        let (t, theme) = (self.tab, self.theme);
        let rows: Vec<Row> = PartyId::ALL
            .iter()
            .zip(&t.parties)
            .map(|(id, s)| {
                let (state, style) = match &s.state {
                    PartyState::Stopped => ("stopped".to_string(), theme.dim()),
                    PartyState::Starting => ("starting".to_string(), theme.warn()),
                    PartyState::Listening => ("listening".to_string(), theme.warn()),
                    PartyState::Ready => ("ready".to_string(), theme.ok()),
                    PartyState::Exited(w) => (format!("exited: {w}"), theme.warn()),
                    PartyState::Failed(w) => (format!("failed: {w}"), theme.error()),
                };
                let row = Row::new(vec![
                    Line::raw(party_label(*id)),
                    Line::styled(state, style),
                    Line::raw(s.address.clone().unwrap_or("-".into())),
                    Line::raw(format!("{}/2", s.peers_connected)),
                    Line::raw(format!("{}/2", s.handshakes_done)),
                    Line::raw(if s.model_loaded { "yes" } else { "no" }),
                    Line::raw(s.requests_served.to_string()),
                    Line::raw(bytes(s.bytes_in)),
                    Line::raw(bytes(s.bytes_out)),
                ]);
                if id.index() == t.selected_party {
                    row.style(theme.bold())
                } else {
                    row
                }
            })
            .collect();
        let parties = Table::new(
            rows,
            [
                Constraint::Length(3),
                Constraint::Min(10),
                Constraint::Length(16),
                Constraint::Length(6),
                Constraint::Length(10),
                Constraint::Length(6),
                Constraint::Length(7),
                Constraint::Length(9),
                Constraint::Length(9),
            ],
        )
        .header(
            Row::new([
                "",
                "state",
                "address",
                "peers",
                "handshake",
                "model",
                "served",
                "in",
                "out",
            ])
            .style(theme.bold()),
        )
        .block(Block::bordered().title(format!(
            " Parties · selected {} · model {} ",
            party_label(t.selected_party_id()),
            t.model.as_deref().unwrap_or("none")
        )));
        Widget::render(parties, area, buf);
    }

    /// The images to choose from, and the chosen one's preview.
    fn picker(&self, list_area: Rect, img_area: Rect, buf: &mut Buffer) {
        let (t, theme) = (self.tab, self.theme);
        let items: Vec<ListItem> = t
            .candidates
            .iter()
            .map(|c| ListItem::new(format!("{:<9} {}", c.truth, c.caption)))
            .collect();
        let empty = items.is_empty();
        let list = List::new(items)
            .highlight_style(theme.selected())
            .block(Block::bordered().title(" Image "));
        let mut state = ListState::default().with_selected((!empty).then_some(t.selected_image));
        StatefulWidget::render(list, list_area, buf, &mut state);
        if empty {
            let inner = Block::bordered().inner(list_area);
            Paragraph::new("preprocess data on the Data tab first")
                .style(theme.dim())
                .wrap(Wrap { trim: true })
                .render(inner, buf);
        }
        let block = Block::bordered().title(theme.preview_title());
        let inner = block.inner(img_area);
        block.render(img_area, buf);
        if let Some(img) = &t.preview {
            Preview { image: img, theme }.render(inner, buf);
        }
    }

    /// The latest prediction beside the plaintext one, requests in flight, and earlier ones.
    fn results(&self, area: Rect, buf: &mut Buffer) {
        let (t, theme) = (self.tab, self.theme);
        let mut lines: Vec<Line> = Vec::new();
        if let Some(r) = t.results.last() {
            let verdict = |p: &ClassProbs| {
                format!(
                    "{} {:.1}%",
                    t.class_name(p.class()),
                    p.probability() * 100.0
                )
            };
            lines.push(Line::from(vec![
                Span::raw("private    "),
                Span::styled(verdict(&r.private), theme.bold()),
                Span::raw(format!(" · {:.2} s · {}", r.seconds, bytes(r.bytes))),
            ]));
            let plain = r.plaintext.as_ref().map(verdict).unwrap_or("-".into());
            let agree = match &r.plaintext {
                Some(p) if p.class() == r.private.class() => Span::styled(" (agrees)", theme.ok()),
                Some(_) => Span::styled(" (DISAGREES)", theme.error()),
                None => Span::raw(""),
            };
            lines.push(Line::from(vec![
                Span::raw("plaintext  "),
                Span::raw(plain),
                agree,
            ]));
            lines.push(Line::raw(format!("truth      {} ({})", r.truth, r.caption)));
            lines.push(Line::raw(""));
            lines.extend(self.probabilities(r));
            lines.push(Line::raw(""));
        } else {
            lines.push(Line::styled(
                "no prediction yet: L launches the parties, m shares the model, Enter predicts",
                theme.dim(),
            ));
        }
        if !t.pending.is_empty() {
            lines.push(Line::styled(
                format!("{} request(s) in flight…", t.pending.len()),
                theme.warn(),
            ));
        }
        if let Some((m, err)) = &t.message {
            lines.push(Line::styled(
                m.clone(),
                if *err { theme.error() } else { theme.dim() },
            ));
        }
        for r in t.results.iter().rev().skip(1).take(8) {
            lines.push(Line::styled(
                format!(
                    "#{} {} → {} {:.2} s",
                    r.id,
                    r.truth,
                    t.class_name(r.private.class()),
                    r.seconds
                ),
                theme.dim(),
            ));
        }
        Paragraph::new(lines)
            .wrap(Wrap { trim: true })
            .block(Block::bordered().title(" Result "))
            .render(area, buf);
    }

    /// Every class's probability, private beside plaintext, with a bar of the private one;
    /// the predicted class in bold.
    fn probabilities(&self, r: &PredictionRow) -> Vec<Line<'static>> {
        const BAR: usize = 10;
        let (t, theme) = (self.tab, self.theme);
        let n = r.private.0.len();
        let names: Vec<String> = (0..n).map(|k| t.class_name(k)).collect();
        let w = names
            .iter()
            .map(|s| s.chars().count())
            .max()
            .unwrap_or(5)
            .max(5);
        let mut lines = vec![Line::styled(
            format!("{:<w$}  private  plaintext", "class"),
            theme.bold(),
        )];
        let pct = |p: Option<f64>| p.map_or("-".into(), |p| format!("{:.1}%", p * 100.0));
        for (k, name) in names.iter().enumerate() {
            let p = r.private.0[k];
            let plain = r.plaintext.as_ref().and_then(|q| q.0.get(k).copied());
            let filled = (p.clamp(0.0, 1.0) * BAR as f64).round() as usize;
            let style = if k == r.private.class() {
                theme.bold()
            } else {
                Style::new()
            };
            lines.push(Line::from(vec![
                Span::styled(
                    format!("{name:<w$}  {:>7}  {:>9}  ", pct(Some(p)), pct(plain)),
                    style,
                ),
                Span::styled("█".repeat(filled), theme.accent()),
                Span::styled("·".repeat(BAR - filled), theme.dim()),
            ]));
        }
        lines
    }
}
