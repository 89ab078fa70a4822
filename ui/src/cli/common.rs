//! Helpers the training, evaluation and audit commands share: loading a dataset or a model,
//! and printing metrics and epsilon. Imports only `data` among the command modules.

use super::data::{progress_printer, LimitArgs};
use anyhow::Context;
use privxray::data::Labelling;
use privxray::model::Technique;
use privxray::preprocess::{self, Preprocessed};
use privxray::train::engine::model_from_checkpoint;
use privxray::train::{Metrics, Model};
use std::path::Path;

/// Loads and preprocesses a dataset for `technique`, with the cache in data/cache.
pub fn load_dataset(
    root: &Path,
    technique: Technique,
    limits: &LimitArgs,
    labelling: &Labelling,
) -> anyhow::Result<Preprocessed> {
    let (set, summary) = preprocess::run_with(
        root,
        technique,
        labelling,
        Some(Path::new("data/cache")),
        &limits.limits(),
        &progress_printer("preprocessing"),
    )?;
    let synthetic = set.items.iter().all(|i| {
        i.path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("SYNTH"))
    });
    eprintln!(
        "data: {} ({} images, {}; classes {}; {} skipped)",
        root.display(),
        summary.images,
        if synthetic { "SYNTHETIC" } else { "real files" },
        set.classes,
        summary.skipped.len()
    );
    Ok(set)
}

pub fn load_model(path: &Path) -> anyhow::Result<Model> {
    let (model, _, _) = model_from_checkpoint(path, &candle_core::Device::Cpu)
        .with_context(|| format!("loading model {}", path.display()))?;
    Ok(model)
}

/// "epsilon E (add-remove neighbours)", with the warning of a run that is not private.
pub fn epsilon_text(epsilon: f64, warning: Option<String>) -> String {
    match warning {
        Some(w) => format!("epsilon {epsilon:.3} ({w})"),
        None => format!(
            "epsilon {epsilon:.3} ({} neighbours)",
            privxray::train::dpsgd::NEIGHBOURING
        ),
    }
}

pub fn print_metrics(m: &Metrics, json: bool, claim: Option<String>) {
    if json {
        println!("{}", serde_json::to_string_pretty(m).unwrap_or_default());
        return;
    }
    println!(
        "test (test + val merged, {} images): accuracy {:.4}, loss {:.4}, precision {:.4}, recall/sensitivity {:.4}, specificity {:.4}, F1 {:.4}, ROC-AUC {}",
        m.images,
        m.accuracy,
        m.loss,
        m.precision,
        m.recall,
        m.specificity,
        m.f1,
        m.roc_auc.map(|v| format!("{v:.4}")).unwrap_or_else(|| "n/a".into())
    );
    let [[tn, fp], [fn_, tp]] = m.confusion;
    println!("confusion: [[tn {tn}, fp {fp}], [fn {fn_}, tp {tp}]]");
    if let Some(c) = claim {
        println!("privacy: {c}");
    }
}
