//! All three parties (and the owner and client steps) in one process: threads connected by the
//! in-memory transport. For tests, demonstrations and the benchmark.
//!
//! Imports `crate::model` and its `mpc` siblings (`client`, `consistency`, `context`, `dealing`,
//! `network`, `transport`, ...); never `net`, `party` or `pipeline`.

use super::client::{reconstruct, share_input_os, InputShare, OutputShare};
use super::consistency::{compare_input_copies, inconsistent_input};
use super::context::{CommStats, Party};
use super::dealing::ModelDealing;
use super::error::{MpcError, Result};
use super::fixed::FixedPoint;
use super::model::PartyModel;
use super::network::infer;
use super::party::PartyId;
use super::transport::{InMemoryTransport, Transport};
use crate::model::NetworkSpec;
use std::fmt;
use std::time::{Duration, Instant};

/// What a simulated private prediction produced and cost.
#[derive(Debug, Clone)]
pub struct SimulationReport {
    /// Logits of every image, reconstructed by the client.
    pub logits: Vec<Vec<f32>>,
    /// Wall-clock seconds of the secure inference of all images (the slowest party, from its
    /// first to its last message; model sharing and key setup excluded).
    pub seconds: f64,
    /// Bytes sent between the parties during inference, all three together.
    pub bytes_between_parties: u64,
    /// Communication rounds per party during inference (all batches).
    pub rounds: u64,
    /// Inference traffic of each party.
    pub per_party: [CommStats; 3],
    /// Bytes of input shares the client sent plus output shares it received.
    pub client_bytes: u64,
    pub batch: usize,
}

/// [`simulate_with`] with the default fixed point and no added latency.
pub fn simulate(spec: &NetworkSpec, images: &[Vec<f32>], batch: usize) -> Result<SimulationReport> {
    simulate_with(spec, images, batch, FixedPoint::default(), Duration::ZERO)
}

/// Shares `spec` and every image (fresh OS randomness), runs the three parties on threads over
/// [`InMemoryTransport`] in batches of `batch` images (the last batch may be smaller), and
/// reconstructs the logits. `latency` delays every message, to model a network.
pub fn simulate_with(
    spec: &NetworkSpec,
    images: &[Vec<f32>],
    batch: usize,
    fixed: FixedPoint,
    latency: Duration,
) -> Result<SimulationReport> {
    if batch == 0 {
        return Err(MpcError::mismatch("batch size", "at least 1", 0));
    }
    Simulation::new(spec, fixed)?
        .with_latency(latency)
        .run(images, batch)
}

/// The three parties' shares of one model, dealt once and kept for any number of runs: a
/// full-width VGG16-2 share is 2.2 GB, so dealing it again per request would cost seconds and
/// memory for nothing.
pub struct Simulation {
    input: [usize; 3],
    fixed: FixedPoint,
    models: [PartyModel; 3],
    latency: Duration,
}

impl Simulation {
    /// Deals `spec` with fresh OS randomness, one share after another. The shares are handed to
    /// the party threads as they are, not through their byte format: a full-width VGG16-2
    /// share is 2.2 GB, and an encoded copy beside it would raise the peak by as much (the
    /// codec has its own round-trip tests; input and output shares still go through bytes).
    pub fn new(spec: &NetworkSpec, fixed: FixedPoint) -> Result<Self> {
        let dealing = ModelDealing::new_os(spec, fixed)?;
        let models = [
            dealing.share(PartyId::ALL[0])?,
            dealing.share(PartyId::ALL[1])?,
            dealing.share(PartyId::ALL[2])?,
        ];
        Ok(Simulation {
            input: spec.input,
            fixed,
            models,
            latency: Duration::ZERO,
        })
    }

    /// Delays every message by `latency` in later runs, to model a network.
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// The three model shares (for runs over other transports).
    pub fn models(&self) -> &[PartyModel; 3] {
        &self.models
    }

    /// Shares every image (fresh OS randomness), runs the three parties on threads over
    /// [`InMemoryTransport`] in batches of `batch` images (the last batch may be smaller), and
    /// reconstructs the logits.
    pub fn run(&self, images: &[Vec<f32>], batch: usize) -> Result<SimulationReport> {
        if batch == 0 {
            return Err(MpcError::mismatch("batch size", "at least 1", 0));
        }
        let fixed = self.fixed;
        let mut client_bytes = 0u64;
        let mut inputs: [Vec<InputShare>; 3] = Default::default();
        for image in images {
            for (list, share) in inputs
                .iter_mut()
                .zip(share_input_os(image, self.input, fixed)?)
            {
                let bytes = share.to_bytes();
                client_bytes += bytes.len() as u64;
                list.push(InputShare::from_bytes(&bytes)?);
            }
        }
        let transports = InMemoryTransport::triple_with_latency(self.latency);
        type PartyResult = Result<(Vec<OutputShare>, CommStats, Duration)>;
        let results: Vec<PartyResult> = std::thread::scope(|s| {
            let handles: Vec<_> = transports
                .into_iter()
                .zip(self.models.iter().zip(&inputs))
                .enumerate()
                .map(|(i, (t, (model, inp)))| {
                    s.spawn(move || run_party(PartyId::ALL[i], t, model, inp, batch))
                })
                .collect();
            handles
                .into_iter()
                .enumerate()
                .map(|(i, h)| {
                    h.join().unwrap_or_else(|_| {
                        Err(MpcError::PartyFailed {
                            party: PartyId::ALL[i],
                            reason: "its thread panicked".into(),
                        })
                    })
                })
                .collect()
        });
        // Report the root cause: a party's own failure rather than a peer's "hung up".
        if results.iter().any(|r| r.is_err()) {
            let mut errs: Vec<MpcError> = results.into_iter().filter_map(|r| r.err()).collect();
            let root = errs
                .iter()
                .position(|e| !matches!(e, MpcError::Transport { .. }))
                .unwrap_or(0);
            return Err(errs.swap_remove(root));
        }
        let mut outs: Vec<Vec<OutputShare>> = Vec::with_capacity(3);
        let mut per_party = [CommStats::default(); 3];
        let mut seconds = 0f64;
        for (i, r) in results.into_iter().enumerate() {
            let (o, stats, t) = r?;
            per_party[i] = stats;
            seconds = seconds.max(t.as_secs_f64());
            outs.push(o);
        }
        let mut logits = Vec::with_capacity(images.len());
        let [o0, o1, o2] = <[Vec<OutputShare>; 3]>::try_from(outs)
            .map_err(|_| MpcError::mismatch("party results", 3, "fewer"))?;
        for ((a, b), c) in o0.into_iter().zip(o1).zip(o2) {
            let shares = [a, b, c];
            for s in &shares {
                client_bytes += s.to_bytes().len() as u64;
            }
            logits.push(reconstruct(&shares)?);
        }
        Ok(SimulationReport {
            logits,
            seconds,
            bytes_between_parties: per_party.iter().map(|s| s.bytes_sent).sum(),
            rounds: per_party.iter().map(|s| s.rounds).max().unwrap_or(0),
            per_party,
            client_bytes,
            batch,
        })
    }
}

fn run_party<T: Transport>(
    id: PartyId,
    mut transport: T,
    model: &PartyModel,
    inputs: &[InputShare],
    batch: usize,
) -> Result<(Vec<OutputShare>, CommStats, Duration)> {
    // The inputs came through their byte format as from a client: check the copies before
    // computing (untimed, like the key setup). A party that finds a difference stops; the one
    // that cannot see it then finds its peers gone, and the caller reports the root cause.
    let found = compare_input_copies(&mut transport, id, Some(inputs))?;
    if !found.is_empty() {
        return Err(inconsistent_input(&found));
    }
    let mut party = Party::setup(id, transport)?;
    let before = party.stats();
    let start = Instant::now();
    let mut out = Vec::with_capacity(inputs.len());
    for chunk in inputs.chunks(batch) {
        out.extend(infer(&mut party, model, chunk)?);
    }
    Ok((out, party.stats().since(&before), start.elapsed()))
}

/// One line of [`BenchReport`].
#[derive(Debug, Clone)]
pub struct BenchRow {
    pub batch: usize,
    pub seconds: f64,
    pub bytes_between_parties: u64,
    pub rounds: u64,
    /// Mean plaintext f32 forward time per image ([`NetworkSpec::forward`]).
    pub plaintext_seconds_per_image: f64,
}

impl BenchRow {
    pub fn predictions_per_second(&self) -> f64 {
        self.batch as f64 / self.seconds
    }
    pub fn bytes_per_image(&self) -> f64 {
        self.bytes_between_parties as f64 / self.batch as f64
    }
}

/// Secure-inference cost of one model at several batch sizes.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub model: String,
    /// Each comparison op's width ([`super::bounds::describe`]).
    pub widths: String,
    pub latency: Duration,
    pub threads: usize,
    pub rows: Vec<BenchRow>,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "secure inference of {} (3 parties in one process, {} rayon threads, added one-way latency {:?}; after one untimed warm-up run)",
            self.model, self.threads, self.latency
        )?;
        writeln!(
            f,
            "comparison widths (public to the parties): {}",
            self.widths
        )?;
        writeln!(
            f,
            "{:>5} {:>9} {:>9} {:>10} {:>12} {:>7} {:>12}",
            "batch", "seconds", "s/image", "pred/s", "MB/image", "rounds", "plain s/img"
        )?;
        for r in &self.rows {
            writeln!(
                f,
                "{:>5} {:>9.3} {:>9.3} {:>10.2} {:>12.1} {:>7} {:>12.4}",
                r.batch,
                r.seconds,
                r.seconds / r.batch as f64,
                r.predictions_per_second(),
                r.bytes_per_image() / 1e6,
                r.rounds,
                r.plaintext_seconds_per_image
            )?;
        }
        if let (Some(first), Some(last), true) =
            (self.rows.first(), self.rows.last(), self.rows.len() > 1)
        {
            writeln!(
                f,
                "throughput of batch {} vs batch {}: {:.2}x",
                last.batch,
                first.batch,
                last.predictions_per_second() / first.predictions_per_second()
            )?;
        }
        Ok(())
    }
}

/// Runs `spec` securely on batches of the given sizes (one batch each, images in [0, 1] from a
/// fixed seed: benchmark data, not secrets) and times the plaintext forward pass beside it. The
/// model is dealt once for all batches.
pub fn bench_report(
    spec: &NetworkSpec,
    batch_sizes: &[usize],
    latency: Duration,
) -> Result<BenchReport> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0xbe9c);
    let mut batch_of = |batch: usize| -> Vec<Vec<f32>> {
        (0..batch)
            .map(|_| (0..spec.input_len()).map(|_| rng.random::<f32>()).collect())
            .collect()
    };
    let sim = Simulation::new(spec, FixedPoint::default())?;
    // One untimed run at the largest batch first, as a party process that has served a request
    // would be: otherwise the first row also pays for the kernel zeroing the pages the
    // allocator maps for the first time (batch 1 measured 2.3x slower cold than warm).
    let warm_up = batch_sizes.iter().copied().max().unwrap_or(0);
    if warm_up > 0 {
        sim.run(&batch_of(warm_up), warm_up)?;
    }
    let sim = sim.with_latency(latency);
    let mut rows = Vec::new();
    for &batch in batch_sizes {
        let images = batch_of(batch);
        let start = Instant::now();
        for im in &images {
            spec.forward(im)?;
        }
        let plaintext_seconds_per_image = start.elapsed().as_secs_f64() / batch.max(1) as f64;
        let rep = sim.run(&images, batch)?;
        rows.push(BenchRow {
            batch,
            seconds: rep.seconds,
            bytes_between_parties: rep.bytes_between_parties,
            rounds: rep.rounds,
            plaintext_seconds_per_image,
        });
    }
    Ok(BenchReport {
        model: spec.name.clone(),
        widths: super::bounds::describe(&super::bounds::comparison_widths(
            spec,
            FixedPoint::default(),
        )?),
        latency,
        threads: rayon::current_num_threads(),
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::arch::random_spec;
    use crate::model::ModelKind;
    use crate::mpc::share::ArithShare;
    use crate::mpc::share_model_os;

    #[test]
    fn inconsistent_input_copies_stop_every_party_before_computing() {
        let spec = random_spec(ModelKind::DnnAv, 1.0, 7);
        let fixed = FixedPoint::default();
        let models = share_model_os(&spec, fixed).unwrap();
        let image = vec![0.25f32; spec.input_len()];
        let mut inputs = share_input_os(&image, spec.input, fixed).unwrap();
        // Party 2's copy of component 0 (its `next`) differs from party 0's.
        let (own, mut next) = inputs[2].share().clone().into_parts();
        next[3] ^= 1;
        inputs[2] = InputShare::new(
            PartyId::ALL[2],
            fixed,
            spec.input,
            ArithShare::new(own, next).unwrap(),
        )
        .unwrap();
        let transports = InMemoryTransport::triple();
        let results: Vec<Result<_>> = std::thread::scope(|s| {
            let hs: Vec<_> = transports
                .into_iter()
                .enumerate()
                .map(|(i, t)| {
                    let (m, inp) = (&models[i], std::slice::from_ref(&inputs[i]));
                    s.spawn(move || run_party(PartyId::ALL[i], t, m, inp, 1))
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        // Parties 0 and 2 hold component 0 and say why; party 1 finds them gone instead of
        // waiting forever.
        for i in [0, 2] {
            let err = results[i].as_ref().expect_err("refused").to_string();
            assert!(
                err.contains("component 0 of the input share differs"),
                "{err}"
            );
        }
        assert!(matches!(results[1], Err(MpcError::Transport { .. })));
    }
}
