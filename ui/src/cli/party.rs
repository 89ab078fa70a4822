//! `party`, `share-model` and `predict --config`: private prediction with three party
//! processes on Noise-encrypted TCP.
//!
//! Imports the engine (`model`, `mpc`, `net`, `party`, `pipeline`) and `super::{common,
//! prediction}`; never `tui` or `backends`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use privxray::model::ClassNames;
use privxray::mpc::range::{CheckError, LogitBound};
use privxray::mpc::FixedPoint;
use privxray::net::{LocalParty, PartiesConfig, PartyId, StaticKeypair};
use privxray::party::{self, PartyError, RemoteClient, ShareFile};

use super::common::load_model_with_classes;
use super::prediction::{print_predictions, ImageResult, Prediction};
use privxray::pipeline::load_input;

#[derive(Debug, Args)]
pub struct PartyArgs {
    /// This party's id: 0, 1 or 2.
    #[arg(long)]
    pub id: u8,
    /// The shared parties.toml.
    #[arg(long)]
    pub config: PathBuf,
    /// This party's private key (from `privxray keygen`). The model share is kept beside it,
    /// in KEY.model-share.
    #[arg(long)]
    pub key: PathBuf,
}

#[derive(Debug, Args)]
pub struct ShareModelArgs {
    /// A checkpoint written by `privxray train`.
    #[arg(long)]
    pub model: PathBuf,
    /// The shared parties.toml (its owner_public_key must be this key's public key).
    #[arg(long)]
    pub config: PathBuf,
    /// The model owner's private key.
    #[arg(long)]
    pub key: PathBuf,
}

fn load_config(path: &Path) -> anyhow::Result<PartiesConfig> {
    Ok(PartiesConfig::load(path)?)
}

fn load_key(path: &Path) -> anyhow::Result<StaticKeypair> {
    StaticKeypair::load(path).with_context(|| format!("loading key {}", path.display()))
}

/// Runs one party until the process is stopped.
pub fn party_cmd(args: PartyArgs) -> anyhow::Result<()> {
    let id = PartyId::new(args.id)
        .with_context(|| format!("--id {} is not a party id: expected 0, 1 or 2", args.id))?;
    let config = load_config(&args.config)?;
    let local = LocalParty::new(config, id, load_key(&args.key)?)?;
    party::serve(local, ShareFile::beside_key(&args.key))?;
    Ok(())
}

/// Secret-shares a trained model to the three parties.
pub fn share_model_cmd(args: ShareModelArgs) -> anyhow::Result<()> {
    let config = load_config(&args.config)?;
    let owner = load_key(&args.key)?;
    // The candle model is only needed for its spec: dropped before the dealing, which holds
    // about two copies of one party's share at a time (2.2 GB each for VGG16-2).
    let (model, classes) = load_model_with_classes(&args.model)?;
    let spec = model.to_spec()?;
    drop(model);
    let shared = party::share_model_remote(
        &config,
        &owner,
        &spec,
        classes.names(),
        FixedPoint::default(),
    )
    .map_err(|e| {
        match e {
            // Connected, then failed at some parties: the others may have taken their share.
            e @ (PartyError::Prediction(_) | PartyError::ModelMismatch(_)) => anyhow::Error::new(e)
                .context(
                    "sharing the model did not finish: parties that took their share now hold \
                     another dealing than the rest and refuse requests until `privxray \
                     share-model` succeeds",
                ),
            e => e.into(),
        }
    })?;
    println!(
        "shared {} (input {:?}, {} fractional bits) with parties 0, 1 and 2",
        shared.name,
        shared.input_shape,
        shared.fixed.frac_bits()
    );
    // What the dealing makes public beyond the architecture (`mpc::bounds`).
    let widths = privxray::mpc::bounds::comparison_widths(&spec, shared.fixed)?;
    println!(
        "comparison widths (public to the parties): {}",
        privxray::mpc::bounds::describe(&widths)
    );
    Ok(())
}

/// The client of `predict --config`: preprocesses each image for the shared model, has the
/// three parties classify it privately and prints the predictions. `timeout` bounds every wait
/// for a party (default: the configuration's `timeouts.io_ms`).
pub fn predict_remote(
    config: &Path,
    images: &[PathBuf],
    json: bool,
    timeout: Option<Duration>,
) -> anyhow::Result<()> {
    let config = load_config(config)?;
    let timeout = timeout.unwrap_or(config.timeouts().io);
    if timeout.is_zero() {
        anyhow::bail!("--timeout-ms must be at least 1");
    }
    let mut client = RemoteClient::connect(&config, timeout)?;
    let model = client.model().clone();
    let technique = model.technique().with_context(|| {
        format!(
            "the shared model takes input {:?}, which no preprocessing technique produces",
            model.input_shape
        )
    })?;
    // The class names travel with the shared model. A share made before they did carries
    // none: two outputs are NORMAL, PNEUMONIA as ever; more are named by their index.
    let classes = if !model.classes.is_empty() {
        ClassNames::new(model.classes.clone())
            .with_context(|| format!("the shared model's class names {:?}", model.classes))?
    } else if model.output_len == 2 {
        ClassNames::binary()
    } else {
        ClassNames::new(
            (0..model.output_len)
                .map(|i| format!("class {i}"))
                .collect(),
        )
        .with_context(|| format!("the shared model has {} outputs", model.output_len))?
    };
    // One result per image: a bad image costs only itself. A failed private prediction leaves
    // the connection to the parties in doubt, so the images after it are not sent (each still
    // gets its entry) rather than each waiting out the timeout.
    let mut results = Vec::with_capacity(images.len());
    let mut broken: Option<String> = None;
    for path in images {
        if let Some(why) = &broken {
            results.push(ImageResult::failed(
                path,
                format!("not sent: an earlier private prediction failed ({why})"),
            ));
            continue;
        }
        let x = match load_input(path, technique) {
            Ok(x) => x,
            Err(e) => {
                results.push(ImageResult::failed(path, e));
                continue;
            }
        };
        // Every request is shared afresh, so a second run has fresh randomness.
        let mut last = None;
        let checked = LogitBound::ceiling().checked(|| {
            client.predict(&x).map(|r| {
                let logits = r.logits.clone();
                last = Some(r);
                logits
            })
        });
        results.push(match checked.map(|c| (c, last.take())) {
            Ok((c, Some(r))) => {
                if c.retried {
                    eprintln!(
                        "{}: the first private answer was out of the model's range; asked again",
                        path.display()
                    );
                }
                let mut p = Prediction::from_logits(path, &c.logits, &classes, r.seconds);
                p.bytes = Some(r.bytes_between_parties);
                p.rounds = Some(r.rounds);
                p.retried = Some(c.retried);
                ImageResult::Predicted(p)
            }
            Ok((_, None)) => ImageResult::failed(path, "no answer"),
            Err(CheckError::Predict(e)) => {
                broken = Some(e.to_string());
                ImageResult::failed(path, format!("private prediction: {e}"))
            }
            Err(e) => ImageResult::failed(path, e),
        });
    }
    print_predictions(&results, json)
}
