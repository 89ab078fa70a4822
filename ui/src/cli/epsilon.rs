//! `epsilon`: the accountant from the command line, for planned settings or over the ledger a
//! checkpoint records.
//!
//! Imports the engine (`privacy`, `train`) and `super::common` only; never `tui` or `backends`.

use super::common::epsilon_text;
use anyhow::bail;
use clap::Args;
use privxray::privacy::{self, AccountantKind, Delta, NoiseMultiplier};
use privxray::train;
use privxray::train::dpsgd::NEIGHBOURING;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct EpsilonArgs {
    #[arg(long, required_unless_present = "checkpoint")]
    pub dataset_size: Option<u64>,
    #[arg(long, required_unless_present = "checkpoint")]
    pub batch_size: Option<u64>,
    /// Noise multiplier sigma (leave out with --target-epsilon).
    #[arg(
        long,
        required_unless_present_any = ["target_epsilon", "checkpoint"],
        conflicts_with = "target_epsilon"
    )]
    pub noise_multiplier: Option<f64>,
    #[arg(long, required_unless_present = "checkpoint")]
    pub epochs: Option<u64>,
    /// Recompute epsilon over the privacy ledger a checkpoint records (every release of the
    /// run with its own sampling rate and noise multiplier), at --delta.
    #[arg(long, conflicts_with_all = ["dataset_size", "batch_size", "noise_multiplier", "epochs", "target_epsilon"])]
    pub checkpoint: Option<PathBuf>,
    #[arg(long, default_value_t = 1e-5)]
    pub delta: f64,
    /// rdp (Renyi DP, Balle et al. 2020 conversion) or pld (privacy loss distributions, tighter).
    #[arg(long, default_value = "rdp")]
    pub accountant: AccountantKind,
    /// Find the smallest noise multiplier that reaches this epsilon (at most 1000: beyond it
    /// the guarantee says nothing).
    #[arg(long)]
    pub target_epsilon: Option<f64>,
    #[arg(long)]
    pub json: bool,
}

fn checkpoint_epsilon(path: &Path, delta: f64, json: bool) -> anyhow::Result<()> {
    let meta = train::checkpoint::read_meta(path)?;
    if meta.dp.is_none() {
        bail!(
            "{} was trained without DP-SGD: its epsilon is infinite",
            path.display()
        );
    }
    let epsilon = train::accounting::epsilon_of(&meta.privacy_ledger, Delta::new(delta)?);
    let warning = meta.epsilon_warning();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "epsilon": epsilon,
                "delta": delta,
                "accountant": AccountantKind::Rdp,
                "neighbouring": NEIGHBOURING,
                "steps": meta.privacy_ledger.iter().map(|s| s.steps).sum::<u64>(),
                "ledger": meta.privacy_ledger,
                "epsilon_valid": warning.is_none(),
            })
        );
    } else {
        println!(
            "{} at delta {delta} over the ledger of {} (rdp accountant)",
            epsilon_text(epsilon, warning),
            path.display()
        );
    }
    Ok(())
}

/// The largest `--target-epsilon` searched for: e^1000 bounds no odds anyone cares about, and
/// far larger targets only print an absurd epsilon (1e300 printed 300 digits).
pub const MAX_TARGET_EPSILON: f64 = 1000.0;

pub fn epsilon_cmd(args: EpsilonArgs) -> anyhow::Result<()> {
    if let Some(p) = &args.checkpoint {
        return checkpoint_epsilon(p, args.delta, args.json);
    }
    let (Some(n), Some(batch), Some(epochs)) = (args.dataset_size, args.batch_size, args.epochs)
    else {
        bail!("--dataset-size, --batch-size and --epochs are needed without --checkpoint");
    };
    let q = privacy::sample_rate(batch, n)?;
    let steps = privacy::steps_for(n, batch, epochs)?;
    let delta = Delta::new(args.delta)?;
    if let Some(target) = args.target_epsilon {
        if target > MAX_TARGET_EPSILON {
            bail!(
                "--target-epsilon {target:e}: above {MAX_TARGET_EPSILON} an epsilon bounds nothing \
                 (e^epsilon is the bound on how much one person's data may change the odds of \
                 any outcome), so no noise multiplier is worth searching for; ask for at most \
                 {MAX_TARGET_EPSILON}"
            );
        }
        let sigma = privacy::noise_multiplier_for_target(target, q, steps, delta, args.accountant)?;
        let achieved = privacy::epsilon(args.accountant, q, sigma, steps, delta)?;
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "noise_multiplier": sigma.get(),
                    "epsilon": achieved.epsilon,
                    "target_epsilon": target,
                    "accountant": args.accountant,
                    "steps": steps,
                    "neighbouring": NEIGHBOURING,
                })
            );
        } else {
            println!(
                "noise multiplier {:.4} reaches epsilon {:.4} <= {target} ({} accountant, {steps} steps, delta {})",
                sigma.get(),
                achieved.epsilon,
                args.accountant,
                args.delta
            );
        }
        return Ok(());
    }
    let sigma = NoiseMultiplier::new(args.noise_multiplier.unwrap_or(0.0))?;
    let r = privacy::epsilon(args.accountant, q, sigma, steps, delta)?;
    if args.json {
        let mut v = serde_json::to_value(r)?;
        v["neighbouring"] = NEIGHBOURING.into();
        println!("{v}");
    } else {
        println!(
            "epsilon {:.4} at delta {} ({} accountant{}, {steps} steps, q = {:.6}, add-remove neighbours)",
            r.epsilon,
            args.delta,
            r.accountant,
            r.best_order
                .map(|o| format!(", best order {o}"))
                .unwrap_or_default(),
            q.get()
        );
    }
    Ok(())
}
