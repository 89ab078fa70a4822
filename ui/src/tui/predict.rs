//! The Private prediction tab: the three parties' status, the shared model, an image picker,
//! and each private prediction beside the plaintext one.

use super::backend::{
    party_label, ClassProb, PartyId, PartyState, PartyStatus, PartyUpdate, PredictRequest,
};
use super::data::DataReady;
use super::theme::Theme;
use super::widgets::{GreyImage, HalfBlockImage};
use privxray::data::Class;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, List, ListItem, ListState, Paragraph, Row, StatefulWidget, Table, Widget, Wrap,
};
use std::sync::Arc;

/// Images offered for prediction (from the evaluation split).
pub const MAX_IMAGES: usize = 24;

#[derive(Debug, Clone)]
pub struct Candidate {
    /// Index into the preprocessed data.
    pub index: usize,
    pub caption: String,
    pub truth: Class,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PredictionRow {
    pub id: u64,
    pub caption: String,
    pub truth: Class,
    pub private: ClassProb,
    pub plaintext: Option<ClassProb>,
    pub seconds: f64,
    pub bytes: u64,
}

#[derive(Default)]
pub struct PredictTab {
    pub parties: [PartyStatus; 3],
    pub selected_party: usize,
    pub model: Option<String>,
    pub data: Option<Arc<DataReady>>,
    pub candidates: Vec<Candidate>,
    pub selected_image: usize,
    pub preview: Option<GreyImage>,
    pub next_id: u64,
    pub pending: Vec<(u64, Candidate)>,
    pub results: Vec<PredictionRow>,
    pub message: Option<(String, bool)>,
}

pub fn class_name(c: u8) -> &'static str {
    Class::from_label(c).map(|c| c.folder()).unwrap_or("?")
}

fn bytes(n: u64) -> String {
    match n {
        0..1_000 => format!("{n} B"),
        1_000..1_000_000 => format!("{:.1} kB", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", n as f64 / 1e6),
        _ => format!("{:.2} GB", n as f64 / 1e9),
    }
}

impl PredictTab {
    /// Offers images from a finished preprocessing job: evaluation items, both classes.
    pub fn set_data(&mut self, ready: Arc<DataReady>) {
        let d = &ready.data;
        let mut eval = d.evaluation_indices();
        if eval.is_empty() {
            eval = (0..d.items.len()).collect();
        }
        // Alternate classes so both show near the top.
        let (mut n, mut p): (Vec<usize>, Vec<usize>) = eval
            .into_iter()
            .partition(|&i| d.items[i].class == Class::Normal);
        n.reverse();
        p.reverse();
        let mut picked = Vec::new();
        while picked.len() < MAX_IMAGES && (!n.is_empty() || !p.is_empty()) {
            if let Some(i) = n.pop() {
                picked.push(i);
            }
            if let Some(i) = p.pop() {
                picked.push(i);
            }
        }
        picked.truncate(MAX_IMAGES);
        self.candidates = picked
            .into_iter()
            .map(|i| {
                let it = &d.items[i];
                let name = it
                    .path
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let synthetic = ready.synthetic.get(i).copied().unwrap_or(false);
                Candidate {
                    index: i,
                    caption: format!("{name}{}", if synthetic { " (SYNTHETIC)" } else { "" }),
                    truth: it.class,
                }
            })
            .collect();
        self.data = Some(ready);
        self.selected_image = 0;
        self.refresh_preview();
    }

    fn refresh_preview(&mut self) {
        self.preview = None;
        let (Some(d), Some(c)) = (&self.data, self.candidates.get(self.selected_image)) else {
            return;
        };
        let [_, h, w] = d.data.technique.input_shape();
        self.preview = GreyImage::new(w, h, d.data.image(c.index)[..h * w].to_vec()).ok();
    }

    pub fn move_image(&mut self, down: bool) {
        if self.candidates.is_empty() {
            return;
        }
        self.selected_image = if down {
            (self.selected_image + 1).min(self.candidates.len() - 1)
        } else {
            self.selected_image.saturating_sub(1)
        };
        self.refresh_preview();
    }

    pub fn move_party(&mut self, right: bool) {
        self.selected_party = if right {
            (self.selected_party + 1) % 3
        } else {
            (self.selected_party + 2) % 3
        };
    }

    pub fn selected_party_id(&self) -> PartyId {
        PartyId::ALL[self.selected_party % 3]
    }

    pub fn all_ready(&self) -> bool {
        self.parties.iter().all(|p| p.state == PartyState::Ready)
    }

    /// The request for the selected image, recorded as pending.
    pub fn request(&mut self) -> Result<PredictRequest, String> {
        if !self.all_ready() {
            return Err("launch the parties first (L) and wait until all are ready".into());
        }
        if self.model.is_none() {
            return Err("share a trained model first (m)".into());
        }
        let d = self
            .data
            .as_ref()
            .ok_or("preprocess data on the Data tab first")?;
        let c = self
            .candidates
            .get(self.selected_image)
            .ok_or("no image selected")?
            .clone();
        let id = self.next_id;
        self.next_id += 1;
        let req = PredictRequest {
            id,
            image: d.data.image(c.index).to_vec(),
            shape: d.data.technique.input_shape(),
        };
        self.pending.push((id, c));
        Ok(req)
    }

    pub fn apply(&mut self, update: PartyUpdate) {
        match update {
            PartyUpdate::Status { party, status } => {
                if let PartyState::Failed(why) = &status.state {
                    self.message = Some((format!("{} failed: {why}", party_label(party)), true));
                }
                self.parties[party.index()] = status;
            }
            PartyUpdate::ModelShared { model } => {
                self.message = Some((format!("model {model} shared among the parties"), false));
                self.model = Some(model);
            }
            PartyUpdate::Prediction {
                id,
                private,
                plaintext,
                seconds,
                bytes,
            } => {
                let Some(pos) = self.pending.iter().position(|(p, _)| *p == id) else {
                    self.message = Some((format!("result for unknown request {id}"), true));
                    return;
                };
                let (_, c) = self.pending.remove(pos);
                self.results.push(PredictionRow {
                    id,
                    caption: c.caption,
                    truth: c.truth,
                    private,
                    plaintext,
                    seconds,
                    bytes,
                });
            }
            PartyUpdate::Failed(reason) => {
                self.pending.clear();
                self.message = Some((reason, true));
            }
        }
    }
}

pub struct PredictView<'a> {
    pub tab: &'a PredictTab,
    pub theme: Theme,
}

impl Widget for PredictView<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let (t, theme) = (self.tab, self.theme);
        let [parties_area, bottom] =
            Layout::vertical([Constraint::Length(6), Constraint::Min(5)]).areas(area);
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
        Widget::render(parties, parties_area, buf);

        let [list_area, img_area, result_area] = Layout::horizontal([
            Constraint::Length(30),
            Constraint::Length(24),
            Constraint::Min(20),
        ])
        .areas(bottom);
        let items: Vec<ListItem> = t
            .candidates
            .iter()
            .map(|c| ListItem::new(format!("{:<9} {}", c.truth.folder(), c.caption)))
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
        let block = Block::bordered().title(" Preview ");
        let inner = block.inner(img_area);
        block.render(img_area, buf);
        if let Some(img) = &t.preview {
            HalfBlockImage {
                image: img,
                color: theme.color,
            }
            .render(inner, buf);
        }

        let mut lines: Vec<Line> = Vec::new();
        if let Some(r) = t.results.last() {
            let verdict =
                |p: &ClassProb| format!("{} {:.1}%", class_name(p.class), p.probability * 100.0);
            lines.push(Line::from(vec![
                Span::raw("private    "),
                Span::styled(verdict(&r.private), theme.bold()),
                Span::raw(format!(" · {:.2} s · {}", r.seconds, bytes(r.bytes))),
            ]));
            let plain = r.plaintext.as_ref().map(verdict).unwrap_or("-".into());
            let agree = match &r.plaintext {
                Some(p) if p.class == r.private.class => Span::styled(" (agrees)", theme.ok()),
                Some(_) => Span::styled(" (DISAGREES)", theme.error()),
                None => Span::raw(""),
            };
            lines.push(Line::from(vec![
                Span::raw("plaintext  "),
                Span::raw(plain),
                agree,
            ]));
            lines.push(Line::raw(format!(
                "truth      {} ({})",
                r.truth.folder(),
                r.caption
            )));
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
                    r.truth.folder(),
                    class_name(r.private.class),
                    r.seconds
                ),
                theme.dim(),
            ));
        }
        Paragraph::new(lines)
            .wrap(Wrap { trim: true })
            .block(Block::bordered().title(" Result "))
            .render(result_area, buf);
    }
}
