//! Checkpoints: one safetensors file holding the model's parameters, the optimizer's state and,
//! in the safetensors `__metadata__` header, a JSON description ([`CheckpointMeta`]).
//!
//! Why one file rather than weights plus a JSON sidecar: a single `write_atomic` (serialise in
//! memory, write a temporary file, fsync, rename) can never pair new metadata with old weights,
//! whatever the crash point. The metadata stay cheap to read without the weights:
//! [`read_meta`] reads only the header.
//!
//! Imports `crate::{atomic, model}` and `super::{accounting, dpsgd, ema, error, model, optim}`;
//! never `mpc`, `net`, `party`, `pipeline` or terminal code.

use super::accounting::DpSegment;
use super::dpsgd::DpConfig;
use super::error::{Result, TrainError};
use super::optim::OptimizerConfig;
use crate::model::ModelKind;
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Key of our JSON inside the safetensors `__metadata__` map.
pub const META_KEY: &str = "privxray.checkpoint";
/// Version of [`CheckpointMeta`]'s layout.
pub const FORMAT: u32 = 1;

/// One finished epoch, kept so a resumed run continues the learning curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    /// Un-noised statistics of the training data: kept in the `-last` resume file (the data
    /// holder's), absent from a release ([`CheckpointMeta::for_release`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_acc: Option<f64>,
    pub val_loss: f64,
    pub val_acc: f64,
    pub seconds: f64,
    pub epsilon: Option<f64>,
}

/// Everything about a checkpoint except tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub format: u32,
    pub model: ModelKind,
    /// Preprocessing technique number (1 or 2).
    pub technique: u8,
    pub width: f32,
    /// The class names, in the order of the model's outputs; absent in checkpoints written
    /// before there were more than two: NORMAL, PNEUMONIA.
    #[serde(default)]
    pub classes: crate::model::ClassNames,
    /// Epochs completed.
    pub epoch: usize,
    pub optimizer: OptimizerConfig,
    pub optimizer_step: u64,
    pub best_val_acc: f64,
    pub epochs_without_improvement: usize,
    /// Seed of data order, dropout and initialisation (not of DP noise).
    pub seed: u64,
    pub dp: Option<DpConfig>,
    /// Privacy spent (DP runs with an accountant): in `-last`, so far; in a release (`-best`),
    /// the whole run's, restamped as the run goes on, since choosing the best epoch depends on
    /// every later iterate.
    pub epsilon: Option<f64>,
    /// DP runs: the neighbouring relation `epsilon` is for ([`super::dpsgd::NEIGHBOURING`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neighbouring: Option<String>,
    /// Every DP release so far with its own parameters, replayed into the accountant on
    /// resume (absent in checkpoints of plain runs).
    #[serde(default)]
    pub privacy_ledger: Vec<DpSegment>,
    pub history: Vec<EpochRecord>,
    /// Layers kept at their initial weights ([`crate::train::Model::freeze`]); absent in
    /// checkpoints written before freezing existed: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frozen: Vec<String>,
    /// Decay of the weight average the run releases ([`crate::train::ema`]); `-best` holds the
    /// average, `-last` the last iterate with the average beside it as `ema.*` tensors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema: Option<crate::train::ema::EmaDecay>,
    /// The training dropout rate when the run set one ([`crate::train::DropoutRate`]);
    /// absent: the model's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropout: Option<crate::train::DropoutRate>,
}

impl CheckpointMeta {
    /// The metadata a published model may carry: weights, architecture, preprocessing, DP
    /// settings, the ledger and epsilon, validation figures; never un-noised statistics of the
    /// training data (train loss and accuracy per epoch).
    pub fn for_release(&self) -> Self {
        let mut m = self.clone();
        for r in &mut m.history {
            r.train_loss = None;
            r.train_acc = None;
        }
        m
    }

    /// "epsilon not valid: ..." when the run used reproducible DP randomness.
    pub fn epsilon_warning(&self) -> Option<String> {
        self.dp.and_then(|d| d.marks().epsilon_warning())
    }
}

/// Rewrites the metadata of the checkpoint at `path` (atomically), keeping its tensors byte
/// for byte: how a release's epsilon follows the run after the release was chosen.
pub fn update_meta(path: &Path, f: impl FnOnce(&mut CheckpointMeta)) -> Result<()> {
    let bytes = read_file(path)?;
    let (st, mut meta) = parse_file(path, &bytes)?;
    f(&mut meta);
    let out = safetensors::serialize(st.tensors(), Some(meta_info(&meta)?))
        .map_err(|e| TrainError::Config(format!("serialising checkpoint: {e}")))?;
    crate::atomic::write_atomic(path, &out).map_err(|source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The tensors and the checked metadata of a checkpoint's bytes.
fn parse_file<'a>(
    path: &Path,
    bytes: &'a [u8],
) -> Result<(safetensors::SafeTensors<'a>, CheckpointMeta)> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| ck_err(path, format!("not a safetensors file: {e}")))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| ck_err(path, format!("header: {e}")))?;
    let meta = parse_meta(path, header.metadata().as_ref())?;
    Ok((st, meta))
}

/// The safetensors `__metadata__` map holding `meta`.
fn meta_info(meta: &CheckpointMeta) -> Result<HashMap<String, String>> {
    let json = serde_json::to_string(meta)
        .map_err(|e| TrainError::Config(format!("checkpoint metadata: {e}")))?;
    Ok(HashMap::from([(META_KEY.to_string(), json)]))
}

fn ck_err(path: &Path, reason: impl Into<String>) -> TrainError {
    TrainError::Checkpoint {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Serialises tensors (f32) and metadata into safetensors bytes.
pub fn to_bytes(meta: &CheckpointMeta, tensors: &[(String, Tensor)]) -> Result<Vec<u8>> {
    let mut raw: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        raw.push((name.clone(), t.dims().to_vec(), bytes));
    }
    let mut views = Vec::with_capacity(raw.len());
    for (name, shape, bytes) in &raw {
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map_err(|e| TrainError::Config(format!("tensor {name}: {e}")))?;
        views.push((name.clone(), view));
    }
    safetensors::serialize(views, Some(meta_info(meta)?))
        .map_err(|e| TrainError::Config(format!("serialising checkpoint: {e}")))
}

/// Writes a checkpoint atomically.
pub fn save(path: &Path, meta: &CheckpointMeta, tensors: &[(String, Tensor)]) -> Result<()> {
    let bytes = to_bytes(meta, tensors)?;
    crate::atomic::write_atomic(path, &bytes).map_err(|source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn parse_meta(path: &Path, info: Option<&HashMap<String, String>>) -> Result<CheckpointMeta> {
    let json = info.and_then(|m| m.get(META_KEY)).ok_or_else(|| {
        ck_err(
            path,
            format!("no {META_KEY:?} metadata: not a privxray checkpoint"),
        )
    })?;
    let meta: CheckpointMeta =
        serde_json::from_str(json).map_err(|e| ck_err(path, format!("metadata: {e}")))?;
    if meta.format != FORMAT {
        return Err(ck_err(
            path,
            format!("format {}, this build reads format {FORMAT}", meta.format),
        ));
    }
    check_meta(&meta).map_err(|reason| ck_err(path, reason))?;
    Ok(meta)
}

/// The most epochs a checkpoint may claim: far beyond any real run, far below overflow.
pub const MAX_EPOCHS: usize = 1_000_000;
/// The most optimizer steps a checkpoint may claim (a million epochs of a million batches).
pub const MAX_OPTIMIZER_STEPS: u64 = 1_000_000_000_000;

/// Checks the metadata against what the model code accepts; the reason names the field.
fn check_meta(m: &CheckpointMeta) -> std::result::Result<(), String> {
    let technique = m.model.technique().number();
    if m.technique != technique {
        return Err(format!(
            "technique {} does not match model {}, which takes technique {technique}",
            m.technique, m.model
        ));
    }
    super::model::check_width(m.width).map_err(|_| {
        format!(
            "width {} is outside the range a model is built at (above 0, at most {})",
            m.width,
            super::model::MAX_WIDTH
        )
    })?;
    if m.epoch > MAX_EPOCHS {
        return Err(format!(
            "epoch {} is implausible (at most {MAX_EPOCHS})",
            m.epoch
        ));
    }
    if m.optimizer_step > MAX_OPTIMIZER_STEPS {
        return Err(format!(
            "optimizer_step {} is implausible (at most {MAX_OPTIMIZER_STEPS})",
            m.optimizer_step
        ));
    }
    if m.epochs_without_improvement > m.epoch {
        return Err(format!(
            "epochs_without_improvement {} exceeds the {} epochs completed",
            m.epochs_without_improvement, m.epoch
        ));
    }
    if m.history.len() > m.epoch {
        return Err(format!(
            "history has {} epochs, more than the {} completed",
            m.history.len(),
            m.epoch
        ));
    }
    if !(0.0..=1.0).contains(&m.best_val_acc) && m.best_val_acc != f64::NEG_INFINITY {
        return Err(format!(
            "best_val_acc {} is not an accuracy (0 to 1)",
            m.best_val_acc
        ));
    }
    if let Some(e) = m.epsilon.filter(|e| e.is_nan() || *e < 0.0) {
        return Err(format!("epsilon {e} is not a privacy cost (>= 0)"));
    }
    Ok(())
}

/// Reads only the metadata (the safetensors header), not the weights.
pub fn read_meta(path: &Path) -> Result<CheckpointMeta> {
    let io = |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(io)?;
    let n = u64::from_le_bytes(len);
    if n > 100_000_000 {
        return Err(ck_err(path, format!("header length {n} is implausible")));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(io)?;
    #[derive(Deserialize)]
    struct Header {
        #[serde(rename = "__metadata__")]
        metadata: Option<HashMap<String, String>>,
    }
    let h: Header =
        serde_json::from_slice(&header).map_err(|e| ck_err(path, format!("header: {e}")))?;
    parse_meta(path, h.metadata.as_ref())
}

/// A loaded checkpoint: metadata and every tensor by name.
#[derive(Debug)]
pub struct Loaded {
    pub path: PathBuf,
    pub meta: CheckpointMeta,
    pub tensors: HashMap<String, Tensor>,
}

/// Reads a checkpoint's metadata and tensors onto `device`.
pub fn load(path: &Path, device: &Device) -> Result<Loaded> {
    let bytes = read_file(path)?;
    let (st, meta) = parse_file(path, &bytes)?;
    // Shapes first: a hostile file is refused before anything the size of a model is built.
    for (name, shape, _) in
        super::model::parameter_shapes(meta.model, meta.width, meta.classes.len())
    {
        let view = st
            .tensor(&name)
            .map_err(|_| ck_err(path, format!("missing tensor {name}")))?;
        if view.shape() != shape.as_slice() {
            return Err(ck_err(
                path,
                format!(
                    "tensor {name} has shape {:?}, {} at width {} needs {shape:?}",
                    view.shape(),
                    meta.model,
                    meta.width
                ),
            ));
        }
    }
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(ck_err(
                path,
                format!("tensor {name} is {:?}, expected F32", view.dtype()),
            ));
        }
        let v: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        // Every tensor, optimizer state included: one NaN would poison every later step.
        if let Some((i, x)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
            return Err(ck_err(
                path,
                format!(
                    "tensor {name} holds {x} at index {i} (of {}): the weights must be finite",
                    v.len()
                ),
            ));
        }
        tensors.insert(name, Tensor::from_vec(v, view.shape(), device)?);
    }
    Ok(Loaded {
        path: path.to_path_buf(),
        meta,
        tensors,
    })
}

impl Loaded {
    /// Copies the model parameters into `vars` (name -> variable), checking that every
    /// variable is present with its shape.
    pub fn restore_vars(&self, vars: &[(String, candle_core::Var)]) -> Result<()> {
        for (name, var) in vars {
            let t = self
                .tensors
                .get(name)
                .ok_or_else(|| ck_err(&self.path, format!("missing tensor {name}")))?;
            if t.dims() != var.dims() {
                return Err(ck_err(
                    &self.path,
                    format!(
                        "tensor {name} has shape {:?}, the model needs {:?}",
                        t.dims(),
                        var.dims()
                    ),
                ));
            }
            var.set(t)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
