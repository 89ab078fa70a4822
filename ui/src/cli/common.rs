//! Helpers the training, evaluation and audit commands share: loading a dataset or a model,
//! and printing metrics and epsilon. Imports only `data` among the command modules.

use super::data::{progress_printer, LimitArgs};
use anyhow::Context;
use privxray::data::{ClassNames, Labelling};
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

/// The model of a checkpoint and the class names it records (NORMAL, PNEUMONIA for a
/// checkpoint written before names were recorded).
pub fn load_model_with_classes(path: &Path) -> anyhow::Result<(Model, ClassNames)> {
    let (model, _, meta) = model_from_checkpoint(path, &candle_core::Device::Cpu)
        .with_context(|| format!("loading model {}", path.display()))?;
    Ok((model, meta.classes))
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
    if m.classes.len() > 2 {
        print_class_metrics(m);
    } else {
        print_binary_metrics(m);
    }
    if let Some(c) = claim {
        println!("privacy: {c}");
    }
}

/// Accuracy, macro F1, one line per class and the confusion matrix.
fn print_class_metrics(m: &Metrics) {
    println!(
        "test (test + val merged, {} images): accuracy {:.4}, loss {:.4}, macro F1 {:.4}",
        m.images, m.accuracy, m.loss, m.macro_f1
    );
    for c in &m.per_class {
        println!(
            "  {:<12} precision {:.4}, recall {:.4}, specificity {:.4}, F1 {:.4}, ROC-AUC {}",
            c.class,
            c.precision,
            c.recall,
            c.specificity,
            c.f1,
            c.roc_auc
                .map(|v| format!("{v:.4}"))
                .unwrap_or_else(|| "n/a".into())
        );
    }
    println!(
        "confusion (rows true, columns predicted: {}):",
        m.classes.join(", ")
    );
    for (name, row) in m.classes.iter().zip(&m.confusion) {
        println!("  {name:<12} {row:?}");
    }
}

fn print_binary_metrics(m: &Metrics) {
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
    if let [a, b] = m.confusion.as_slice() {
        let ([tn, fp], [fn_, tp]) = (
            a[..2].try_into().unwrap_or([0; 2]),
            b[..2].try_into().unwrap_or([0; 2]),
        );
        println!("confusion: [[tn {tn}, fp {fp}], [fn {fn_}, tp {tp}]]");
    }
}
