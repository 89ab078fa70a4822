//! Work the interface asks for: keys become [`Action`]s, which the app hands to the backends.
//! Plain data; may not import the app, the tabs' state or the views.

use super::backend::{ClipNorm, Labelling, NoiseMultiplier, PartyId, TrainConfig};
use super::data::source::DataSource;
use privxray::model::Technique;

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Quit,
    Preprocess {
        source: DataSource,
        technique: Technique,
        labelling: Labelling,
    },
    StartTraining(TrainConfig),
    PauseTraining,
    ResumeTraining,
    StopTraining,
    SetDp(NoiseMultiplier, ClipNorm),
    ExportCurves,
    Audit(usize),
    /// The Privacy tab's noise sweep, with the Train tab's other settings.
    StartSweep,
    LaunchParties,
    ShareModel,
    Predict,
    StopParty(PartyId),
    KillParty(PartyId),
}
