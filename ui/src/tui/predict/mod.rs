//! The Private prediction tab: the three parties' status, the shared model, an image picker,
//! and each private prediction beside the plaintext one. This module holds the tab's state;
//! `keys` what a key does to it, `view` the drawing.
//! Imports `tui::backend`, the Data tab's plain types (`data::source`) and `widgets`; never the
//! app or the other tabs.

pub mod keys;
pub mod view;

pub use view::PredictView;

use crate::tui::backend::{
    party_label, ClassProb, PartyId, PartyState, PartyStatus, PartyUpdate, PredictRequest,
};
use crate::tui::data::source::DataReady;
use crate::tui::widgets::GreyImage;
use privxray::data::Class;
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
            .partition(|&i| d.items[i].label.0 == Class::Normal.label());
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
                    // The tab shows the binary task: any label but the first reads as PNEUMONIA.
                    truth: Class::from_label(it.label.0).unwrap_or(Class::Pneumonia),
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
