//! `privxray plot --metrics FILE --out DIR`: accuracy and loss curves as PNGs.
//!
//! Imports the engine's `plot` only; no sibling, never `tui` or `backends`.

use anyhow::{bail, Context};
use clap::Args;
use privxray::plot::{training_charts, write_png, EpochPoint};
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// Training event stream (JSON lines, as `train --metrics` writes).
    #[arg(long)]
    pub metrics: PathBuf,
    /// Folder for accuracy.png and loss.png.
    #[arg(long)]
    pub out: PathBuf,
}

/// Reads the `epoch` events of a JSON-lines training stream. A resumed run appends to the same
/// file, so a later record for an epoch replaces an earlier one.
pub fn read_epochs(path: &Path) -> anyhow::Result<(String, Vec<EpochPoint>)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading metrics file {}", path.display()))?;
    let mut model = String::from("model");
    let mut epochs: Vec<EpochPoint> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).with_context(|| {
            format!(
                "{} line {}: not a JSON training event",
                path.display(),
                n + 1
            )
        })?;
        match v["event"].as_str() {
            Some("started") => {
                if let Some(m) = v["model"].as_str() {
                    model = m.to_string();
                }
            }
            Some("epoch") => {
                let num = |k: &str| {
                    v[k].as_f64().with_context(|| {
                        format!("{} line {}: epoch event lacks {k}", path.display(), n + 1)
                    })
                };
                let p = EpochPoint {
                    epoch: num("epoch")? as usize,
                    train_loss: num("train_loss")?,
                    train_accuracy: num("train_acc")?,
                    val_loss: num("val_loss")?,
                    val_accuracy: num("val_acc")?,
                };
                epochs.retain(|e| e.epoch != p.epoch);
                epochs.push(p);
            }
            _ => {}
        }
    }
    epochs.sort_by_key(|e| e.epoch);
    if epochs.is_empty() {
        bail!(
            "{} holds no epoch events: expected JSON lines like {{\"event\":\"epoch\",\"epoch\":1,...}}",
            path.display()
        );
    }
    Ok((model, epochs))
}

pub fn run(args: PlotArgs) -> anyhow::Result<()> {
    let (model, epochs) = read_epochs(&args.metrics)?;
    let [acc, loss] = training_charts(&model, &epochs);
    for (chart, name) in [(acc, "accuracy.png"), (loss, "loss.png")] {
        let path = args.out.join(name);
        write_png(&chart, &path, 900, 560)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
