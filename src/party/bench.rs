//! The cost of the network and of encryption: the same secure inference run both ways, by three
//! threads over the in-memory transport ([`crate::mpc::Simulation`]) and by three threads
//! over real TCP on loopback with Noise channels ([`NoiseTransport`]), with fresh keys.
//!
//! The two ways alternate, run after run, and the report gives the median of the per-run
//! ratios: on a shared machine the load changes within seconds, and a ratio of two runs taken
//! side by side is far steadier than two separate timings.
//!
//! Imports `crate::{model, mpc, net, stats}` and the parent's `PartyError`; never `pipeline` or
//! terminal code.

use std::fmt;
use std::time::Instant;

use super::PartyError;
use crate::model::NetworkSpec;
use crate::mpc::{
    infer, reconstruct, share_input_os, FixedPoint, InputShare, OutputShare, Party, Simulation,
};
use crate::net::bench::loopback_parties;
use crate::net::{Mesh, NetError, NoiseTransport};
use crate::stats::median;

/// One batch size measured both ways.
#[derive(Clone, Debug)]
pub struct LoopbackRow {
    pub batch: usize,
    /// Median seconds of the in-memory runs.
    pub simulated_seconds: f64,
    /// Median seconds of the loopback runs.
    pub noise_seconds: f64,
    /// Loopback seconds over in-memory seconds of each pair of alternating runs, in run order.
    pub ratios: Vec<f64>,
    /// Engine payload bytes between the parties (identical in both runs).
    pub bytes_between_parties: u64,
    /// Application bytes on the Noise channels, message framing included.
    pub wire_bytes: u64,
    pub rounds: u64,
    /// Largest difference between the two runs' logits (both are exact up to fixed point).
    pub max_logit_difference: f32,
}

impl LoopbackRow {
    /// The median of the per-run ratios (the figure compared with the goal).
    pub fn median_ratio(&self) -> f64 {
        median(&self.ratios)
    }
}

/// Secure inference in process against over loopback Noise TCP.
#[derive(Clone, Debug)]
pub struct LoopbackReport {
    pub model: String,
    pub mesh_seconds: f64,
    pub rows: Vec<LoopbackRow>,
}

impl fmt::Display for LoopbackReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "secure inference of {}: in-memory threads vs three parties on Noise TCP loopback \
             (mesh formed in {:.1} ms)",
            self.model,
            self.mesh_seconds * 1e3
        )?;
        writeln!(
            f,
            "{:>5} {:>5} {:>10} {:>10} {:>7} {:>13} {:>11} {:>11} {:>7}",
            "batch",
            "runs",
            "in-mem s",
            "noise s",
            "ratio",
            "ratio range",
            "MB payload",
            "MB on wire",
            "rounds"
        )?;
        for r in &self.rows {
            let (lo, hi) = r
                .ratios
                .iter()
                .fold((f64::INFINITY, 0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
            writeln!(
                f,
                "{:>5} {:>5} {:>10.3} {:>10.3} {:>6.2}x {:>6.2}-{:<5.2}x {:>11.2} {:>11.2} {:>7}",
                r.batch,
                r.ratios.len(),
                r.simulated_seconds,
                r.noise_seconds,
                r.median_ratio(),
                lo,
                hi,
                r.bytes_between_parties as f64 / 1e6,
                r.wire_bytes as f64 / 1e6,
                r.rounds
            )?;
        }
        writeln!(
            f,
            "seconds are medians; ratio: median of loopback / in-memory over alternating runs"
        )
    }
}

/// Three parties with fresh keys on loopback port-0 listeners, meshed by the one mesh builder
/// ([`Mesh::establish`]).
fn loopback_mesh() -> Result<(Vec<NoiseTransport>, f64), PartyError> {
    let (locals, listeners) = loopback_parties()?;
    let started = Instant::now();
    let meshes: Vec<Result<NoiseTransport, NetError>> = std::thread::scope(|s| {
        let handles: Vec<_> = locals
            .iter()
            .zip(&listeners)
            .map(|(local, listener)| {
                s.spawn(move || NoiseTransport::from_mesh(Mesh::establish(local, listener)?))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(NetError::Mesh("a party thread panicked".into())))
            })
            .collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    Ok((meshes.into_iter().collect::<Result<_, _>>()?, seconds))
}

/// Output shares, bytes sent, rounds, the transport (for the next batch) and seconds.
type PartyRun = (Vec<OutputShare>, u64, u64, NoiseTransport, f64);

fn run_party(
    t: NoiseTransport,
    model: &crate::mpc::PartyModel,
    inputs: &[InputShare],
) -> Result<PartyRun, PartyError> {
    let id = t.me();
    let mut party = Party::setup(id, t)?;
    let before = party.stats();
    let started = Instant::now();
    let out = infer(&mut party, model, inputs)?;
    let seconds = started.elapsed().as_secs_f64();
    let spent = party.stats().since(&before);
    Ok((
        out,
        spent.bytes_sent,
        spent.rounds,
        party.into_transport(),
        seconds,
    ))
}

/// Runs `spec` on one batch of each size both ways, `runs` times each, alternating (images from
/// a fixed seed: benchmark data, not secrets), and reports time, bytes and rounds side by side.
pub fn loopback_report(
    spec: &NetworkSpec,
    batch_sizes: &[usize],
    runs: usize,
) -> Result<LoopbackReport, PartyError> {
    use rand::{Rng, SeedableRng};
    if runs == 0 {
        return Err(PartyError::Prediction(
            "the loopback benchmark needs at least one run".into(),
        ));
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x10ab);
    let fixed = FixedPoint::default();
    let (mut transports, mesh_seconds) = loopback_mesh()?;
    // One dealing for both ways, every run and every batch: a full-width VGG16-2 share is 2.2 GB.
    let sim = Simulation::new(spec, fixed)?;
    let models = sim.models();
    let mut rows = Vec::new();
    for &batch in batch_sizes {
        let images: Vec<Vec<f32>> = (0..batch.max(1))
            .map(|_| (0..spec.input_len()).map(|_| rng.random::<f32>()).collect())
            .collect();
        let mut inputs: [Vec<InputShare>; 3] = Default::default();
        for image in &images {
            for (list, s) in inputs
                .iter_mut()
                .zip(share_input_os(image, spec.input, fixed)?)
            {
                list.push(s);
            }
        }
        let (mut sim_times, mut noise_times, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        let mut last = None;
        for _ in 0..runs {
            let simulated = sim.run(&images, images.len())?;
            let run = run_over_loopback(&mut transports, models, &inputs)?;
            sim_times.push(simulated.seconds);
            noise_times.push(run.seconds);
            ratios.push(run.seconds / simulated.seconds);
            last = Some((simulated, run));
        }
        let Some((simulated, run)) = last else {
            unreachable!("runs is at least one")
        };
        let mut worst = 0f32;
        for (i, want) in simulated.logits.iter().enumerate() {
            let shares: [OutputShare; 3] = std::array::from_fn(|p| run.outputs[p][i].clone());
            for (g, w) in reconstruct(&shares)?.iter().zip(want) {
                worst = worst.max((g - w).abs());
            }
        }
        rows.push(LoopbackRow {
            batch: images.len(),
            simulated_seconds: median(&sim_times),
            noise_seconds: median(&noise_times),
            ratios,
            bytes_between_parties: run.bytes,
            wire_bytes: run.wire_bytes,
            rounds: run.rounds,
            max_logit_difference: worst,
        });
    }
    Ok(LoopbackReport {
        model: spec.name.clone(),
        mesh_seconds,
        rows,
    })
}

/// One secure inference of a batch by the three parties over their loopback transports.
struct LoopbackRun {
    outputs: Vec<Vec<OutputShare>>,
    seconds: f64,
    bytes: u64,
    wire_bytes: u64,
    rounds: u64,
}

fn run_over_loopback(
    transports: &mut Vec<NoiseTransport>,
    models: &[crate::mpc::PartyModel],
    inputs: &[Vec<InputShare>; 3],
) -> Result<LoopbackRun, PartyError> {
    let wire_before: u64 = transports.iter().map(|t| t.wire_traffic().0).sum();
    let results: Vec<Result<PartyRun, PartyError>> = std::thread::scope(|s| {
        let handles: Vec<_> = transports
            .drain(..)
            .zip(models.iter().zip(inputs))
            .map(|(t, (m, inp))| s.spawn(move || run_party(t, m, inp)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(PartyError::Prediction("a party thread panicked".into()))
                })
            })
            .collect()
    });
    let mut outputs = Vec::with_capacity(3);
    let (mut bytes, mut rounds, mut seconds) = (0u64, 0u64, 0f64);
    for r in results {
        let (o, b, rd, t, secs) = r?;
        outputs.push(o);
        bytes += b;
        rounds = rounds.max(rd);
        seconds = seconds.max(secs);
        transports.push(t);
    }
    let wire_after: u64 = transports.iter().map(|t| t.wire_traffic().0).sum();
    Ok(LoopbackRun {
        outputs,
        seconds,
        bytes,
        wire_bytes: wire_after - wire_before,
        rounds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::arch::random_spec;
    use crate::model::ModelKind;
    use crate::mpc::simulate_with;

    #[test]
    fn zero_runs_is_an_error() {
        let spec = random_spec(ModelKind::Vgg16_1, 1.0 / 32.0, 9);
        assert!(loopback_report(&spec, &[1], 0).is_err());
    }

    #[test]
    fn loopback_run_agrees_with_the_simulation_and_counts_the_same_bytes() {
        let spec = random_spec(ModelKind::Vgg16_1, 1.0 / 32.0, 9);
        let r = loopback_report(&spec, &[1, 2], 2).unwrap();
        for row in &r.rows {
            let sim = simulate_with(
                &spec,
                &vec![vec![0.5; spec.input_len()]; row.batch],
                row.batch,
                FixedPoint::default(),
                Default::default(),
            )
            .unwrap();
            // Same protocol, same traffic: the transport must not change what is sent.
            assert_eq!(row.bytes_between_parties, sim.bytes_between_parties);
            assert_eq!(row.rounds, sim.rounds);
            assert!(row.wire_bytes > row.bytes_between_parties);
            assert!(row.max_logit_difference < 5e-2, "{row:?}");
            assert_eq!(row.ratios.len(), 2);
            assert!(row.median_ratio() > 0.0, "{row:?}");
        }
    }
}

/// Figures for the report: `cargo test --release -p privxray --lib party::bench -- --ignored
/// --nocapture` (dnn-max with random weights, batches of 1 and 4).
#[cfg(test)]
mod figures {
    use super::*;
    use crate::model::arch::random_spec;
    use crate::model::ModelKind;

    #[test]
    #[ignore = "benchmark: prints figures, takes a few seconds"]
    fn dnn_max_over_noise_loopback() {
        let spec = random_spec(ModelKind::DnnMax, 1.0, 1);
        println!("{}", loopback_report(&spec, &[1, 4], 3).unwrap());
    }
}
