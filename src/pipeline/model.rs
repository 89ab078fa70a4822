//! A checkpoint loaded for use on the CPU (evaluation, the audit, plaintext prediction), its
//! failure naming the file. Imports the pipeline's error only.

use super::error::{PipelineError, Result};
use crate::train::checkpoint::CheckpointMeta;
use crate::train::engine::model_from_checkpoint;
use crate::train::Model;
use std::path::Path;

/// The model in the checkpoint at `path`, on the CPU, with what the checkpoint says of itself.
pub fn load_checkpoint(path: &Path) -> Result<(Model, CheckpointMeta)> {
    let (model, _, meta) =
        model_from_checkpoint(path, &candle_core::Device::Cpu).map_err(|source| {
            PipelineError::LoadCheckpoint {
                path: path.to_path_buf(),
                source,
            }
        })?;
    Ok((model, meta))
}
