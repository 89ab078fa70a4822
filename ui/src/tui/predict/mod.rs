//! The Private prediction tab: the three parties' status, the shared model and its classes, an
//! image picker, and each private prediction beside the plaintext one, every class's
//! probability included. This module holds the tab's state; `keys` what a key does to it,
//! `view` the drawing.
//! Imports `tui::backend`, the Data tab's plain types (`data::source`) and `widgets`; never the
//! app or the other tabs.

pub mod keys;
pub mod view;

pub use view::PredictView;

use crate::tui::backend::{
    party_label, ClassNames, ClassProbs, PartyId, PartyState, PartyStatus, PartyUpdate,
    PredictRequest,
};
use crate::tui::data::source::DataReady;
use crate::tui::widgets::GreyImage;
use std::sync::Arc;

/// Images offered for prediction (from the evaluation split).
pub const MAX_IMAGES: usize = 24;

#[derive(Debug, Clone)]
pub struct Candidate {
    /// Index into the preprocessed data.
    pub index: usize,
    pub caption: String,
    /// The image's class name in the data.
    pub truth: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PredictionRow {
    pub id: u64,
    pub caption: String,
    pub truth: String,
    pub private: ClassProbs,
    pub plaintext: Option<ClassProbs>,
    pub seconds: f64,
    pub bytes: u64,
}

#[derive(Default)]
pub struct PredictTab {
    pub parties: [PartyStatus; 3],
    pub selected_party: usize,
    pub model: Option<String>,
    /// The shared model's class names (its checkpoint's), in the order of its outputs.
    pub classes: Option<ClassNames>,
    pub data: Option<Arc<DataReady>>,
    pub candidates: Vec<Candidate>,
    pub selected_image: usize,
    pub preview: Option<GreyImage>,
    pub next_id: u64,
    pub pending: Vec<(u64, Candidate)>,
    pub results: Vec<PredictionRow>,
    pub message: Option<(String, bool)>,
}

impl PredictTab {
    /// The shared model's name for output `k`; "class k" when no model's names are known.
    pub fn class_name(&self, k: usize) -> String {
        self.classes
            .as_ref()
            .and_then(|c| c.names().get(k).cloned())
            .unwrap_or_else(|| format!("class {k}"))
    }

    /// Offers images from a finished preprocessing job: evaluation items, every class.
    pub fn set_data(&mut self, ready: Arc<DataReady>) {
        let d = &ready.data;
        let mut eval = d.evaluation_indices();
        if eval.is_empty() {
            eval = (0..d.items.len()).collect();
        }
        // The classes in turn, so that each shows near the top.
        let mut by_class: Vec<std::collections::VecDeque<usize>> =
            vec![Default::default(); d.classes.len()];
        for i in eval {
            if let Some(q) = by_class.get_mut(usize::from(d.items[i].label.0)) {
                q.push_back(i);
            }
        }
        let mut picked = Vec::new();
        while picked.len() < MAX_IMAGES && by_class.iter().any(|q| !q.is_empty()) {
            picked.extend(by_class.iter_mut().filter_map(|q| q.pop_front()));
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
                    truth: d.classes.name(it.label).to_string(),
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
            PartyUpdate::ModelShared { model, classes } => {
                self.message = Some((format!("model {model} shared among the parties"), false));
                self.model = Some(model);
                self.classes = Some(classes);
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
