//! The model owner's dealing: every parameter of a compiled spec ([`super::compile`]) is encoded
//! in fixed point and secret-shared, so no party ever holds a whole weight. The dealing
//! ([`ModelDealing`]) produces one party's share at a time from two secret keys, so the owner
//! never holds all three shares of a large model. The three shares of one dealing carry the
//! same random [`DealingId`], which the parties compare before serving, so shares of two
//! dealings are never mixed.
//!
//! Owns the keys and the key streams; imports the compiled ops and the shared model types,
//! never the codec or the network.

use super::bounds::sign_widths;
use super::compile::{compile, Plain, PlainOp};
use super::error::Result;
use super::fixed::FixedPoint;
use super::model::{DealingId, PartyModel, SecureOp};
use super::party::PartyId;
use super::prg::os_rng;
use super::protocol::SignBits;
use super::share::ArithShare;
use crate::model::NetworkSpec;
use rand::{CryptoRng, Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;

/// Words per parallel dealing task.
const DEAL_CHUNK: usize = 1 << 16;

/// The model owner's dealing of one network: every parameter `x` is split as
/// `x = c0 + c1 + c2`, where `c0` and `c1` are ChaCha20 streams of two secret keys from the
/// OS CSPRNG (one stream per parameter tensor) and `c2 = x - c0 - c1`; party `i` gets
/// `(c_i, c_{i+1})`, as [`deal`](super::share::deal) would give it. Because `c0` and `c1` can be regenerated from
/// the keys, each party's share is produced on its own, so the owner of a full-width VGG16-2
/// (2.2 GB per share) never holds more than one share at a time.
pub struct ModelDealing<'a> {
    id: DealingId,
    name: String,
    classes: Vec<String>,
    input: [usize; 3],
    fixed: FixedPoint,
    plain: Vec<PlainOp<'a>>,
    /// Each op's comparison width, from the owner's bound ([`super::bounds`]).
    widths: Vec<SignBits>,
    keys: [[u8; 32]; 2],
}

// The keys determine the shares: they never appear in logs.
impl std::fmt::Debug for ModelDealing<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ModelDealing({}, {} ops, keys ..)",
            self.name,
            self.plain.len()
        )
    }
}

impl<'a> ModelDealing<'a> {
    /// Compiles `spec` and draws the two keys from `rng`, which must be a cryptographic
    /// generator seeded from the OS (see [`ModelDealing::new_os`]).
    pub fn new<R: CryptoRng + ?Sized>(
        spec: &'a NetworkSpec,
        fixed: FixedPoint,
        rng: &mut R,
    ) -> Result<Self> {
        let plain = compile(spec)?;
        // Every value must encode before any share is dealt: party 0's share never reads them
        // (it is two key streams), so a bad weight found later could leave it installed alone.
        for op in &plain {
            for (values, fx) in op.params(fixed) {
                (0..values.len())
                    .into_par_iter()
                    .try_for_each(|e| values.encode(fx, e).map(drop))?;
            }
        }
        let widths = sign_widths(&plain, fixed)?;
        let id = DealingId::from_bytes(rng.random());
        let mut keys = [[0u8; 32]; 2];
        for k in &mut keys {
            rng.fill_bytes(k);
        }
        Ok(ModelDealing {
            id,
            name: spec.name.clone(),
            classes: Vec::new(),
            input: spec.input,
            fixed,
            plain,
            widths,
            keys,
        })
    }

    /// [`ModelDealing::new`] with keys from the OS CSPRNG.
    pub fn new_os(spec: &'a NetworkSpec, fixed: FixedPoint) -> Result<Self> {
        Self::new(spec, fixed, &mut os_rng()?)
    }

    /// Names the model's outputs (public, as the name): every share carries them, so the
    /// parties can tell a client what each logit means. One name per output.
    pub fn with_classes(mut self, classes: Vec<String>) -> Self {
        self.classes = classes;
        self
    }

    /// The id all three shares of this dealing carry.
    pub fn id(&self) -> DealingId {
        self.id
    }

    /// Party `party`'s share of the model.
    pub fn share(&self, party: PartyId) -> Result<PartyModel> {
        let fixed = self.fixed;
        let mut ops = Vec::with_capacity(self.plain.len());
        for (index, op) in self.plain.iter().enumerate() {
            // Two streams per op: weights (or scale) and biases (or shift).
            let deal = |tensor: u64, values: Plain<'_>, fx: FixedPoint| {
                self.deal(party, ((index as u64) << 1) | tensor, values, fx)
            };
            ops.push(match op {
                PlainOp::Conv { geom, weight, bias } => SecureOp::Conv {
                    geom: *geom,
                    weight: deal(0, Plain::F64(weight), fixed.weights())?,
                    bias: deal(1, Plain::F64(bias), fixed)?,
                },
                PlainOp::Dense {
                    in_features,
                    out_features,
                    weight,
                    bias,
                } => SecureOp::Dense {
                    in_features: *in_features,
                    out_features: *out_features,
                    weight: deal(0, Plain::F32(weight), fixed.weights())?,
                    bias: deal(1, Plain::F32(bias), fixed)?,
                },
                PlainOp::Affine { dims, scale, shift } => SecureOp::ChannelAffine {
                    dims: *dims,
                    scale: deal(0, Plain::F64(scale), fixed)?,
                    shift: deal(1, Plain::F64(shift), fixed)?,
                },
                PlainOp::Relu => SecureOp::Relu {
                    sign: self.widths[index],
                },
                PlainOp::MaxPool { dims, size, relu } => SecureOp::MaxPool {
                    dims: *dims,
                    size: *size,
                    relu: *relu,
                    sign: self.widths[index],
                },
                PlainOp::AvgPool { dims, size } => SecureOp::AvgPool {
                    dims: *dims,
                    size: *size,
                },
            });
        }
        PartyModel::new(party, self.id, fixed, self.name.clone(), self.input, ops)?
            .with_classes(self.classes.clone())
    }

    /// `party`'s two components of one parameter tensor: `c_i` and `c_{i+1}`, each either a
    /// key stream or `x - c0 - c1`. Two vectors of the tensor's length are allocated, no more.
    fn deal(
        &self,
        party: PartyId,
        stream: u64,
        values: Plain<'_>,
        fixed: FixedPoint,
    ) -> Result<ArithShare> {
        let n = values.len();
        let c0 = key_stream(&self.keys[0], stream, n);
        let mut c1 = key_stream(&self.keys[1], stream, n);
        match party.index() {
            0 => ArithShare::new(c0, c1),
            1 => {
                let mut c2 = c0;
                fill_last(&mut c2, &c1, values, fixed)?;
                ArithShare::new(c1, c2)
            }
            _ => {
                fill_last(&mut c1, &c0, values, fixed)?;
                ArithShare::new(c1, c0)
            }
        }
    }
}

/// `n` words of the ChaCha20 stream `stream` of `key`, generated in parallel chunks (each seeks
/// to its own position, so the words do not depend on the number of threads).
fn key_stream(key: &[u8; 32], stream: u64, n: usize) -> Vec<u64> {
    let mut base = ChaCha20Rng::from_seed(*key);
    base.set_stream(stream);
    let mut out = vec![0u64; n];
    out.par_chunks_mut(DEAL_CHUNK)
        .enumerate()
        .for_each(|(i, chunk)| {
            let mut r = base.clone();
            // Word positions count 32-bit words.
            r.set_word_pos(2 * (i * DEAL_CHUNK) as u128);
            r.fill(chunk);
        });
    out
}

/// Turns `acc` (one key stream) into the last component `x - acc - other`.
fn fill_last(acc: &mut [u64], other: &[u64], values: Plain<'_>, fixed: FixedPoint) -> Result<()> {
    acc.par_chunks_mut(DEAL_CHUNK)
        .zip(other.par_chunks(DEAL_CHUNK))
        .enumerate()
        .try_for_each(|(i, (a, o))| {
            for (j, (a, o)) in a.iter_mut().zip(o).enumerate() {
                let x = values.encode(fixed, i * DEAL_CHUNK + j)?;
                *a = x.wrapping_sub(*a).wrapping_sub(*o);
            }
            Ok(())
        })
}

/// The model owner's step: compiles `spec` and secret-shares every parameter with randomness
/// from `rng`, which must be a cryptographic generator seeded from the OS (see
/// [`share_model_os`]); the dealing id comes from it too. Returns the shares for parties 0, 1
/// and 2. A caller that sends the shares away one at a time should use [`ModelDealing`], which
/// holds none of them.
pub fn share_model<R: CryptoRng + ?Sized>(
    spec: &NetworkSpec,
    fixed: FixedPoint,
    rng: &mut R,
) -> Result<[PartyModel; 3]> {
    let dealing = ModelDealing::new(spec, fixed, rng)?;
    Ok([
        dealing.share(PartyId::ALL[0])?,
        dealing.share(PartyId::ALL[1])?,
        dealing.share(PartyId::ALL[2])?,
    ])
}

/// [`share_model`] with a ChaCha20 generator seeded from the OS CSPRNG.
pub fn share_model_os(spec: &NetworkSpec, fixed: FixedPoint) -> Result<[PartyModel; 3]> {
    share_model(spec, fixed, &mut os_rng()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::arch::random_spec;
    use crate::model::{Layer, ModelKind};
    use crate::mpc::share::open;

    fn shares_of(op: &SecureOp) -> Vec<&ArithShare> {
        match op {
            SecureOp::Conv { weight, bias, .. } | SecureOp::Dense { weight, bias, .. } => {
                vec![weight, bias]
            }
            SecureOp::ChannelAffine { scale, shift, .. } => vec![scale, shift],
            _ => vec![],
        }
    }

    #[test]
    fn shares_dealt_one_at_a_time_open_to_the_encoded_weights() {
        let spec = random_spec(ModelKind::DnnAv, 1.0, 5);
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let dealing = ModelDealing::new(&spec, FixedPoint::default(), &mut rng).unwrap();
        // Dealt in an order other than 0, 1, 2, each on its own.
        let [s2, s0, s1] = [2, 0, 1].map(|i| dealing.share(PartyId::ALL[i]).unwrap());
        assert_eq!(
            dealing.share(PartyId::ALL[1]).unwrap(),
            s1,
            "not reproducible"
        );
        let fixed = FixedPoint::default();
        let dense: Vec<&Layer> = spec
            .layers
            .iter()
            .filter(|l| matches!(l, Layer::Conv2d { .. } | Layer::Dense { .. }))
            .collect();
        let ops = |m: &PartyModel| -> Vec<Vec<ArithShare>> {
            m.ops()
                .iter()
                .map(|o| shares_of(o).into_iter().cloned().collect::<Vec<_>>())
                .filter(|v: &Vec<ArithShare>| !v.is_empty())
                .collect()
        };
        let (o0, o1, o2) = (ops(&s0), ops(&s1), ops(&s2));
        assert_eq!(o0.len(), dense.len());
        for (i, layer) in dense.iter().enumerate() {
            let (w, b) = match layer {
                Layer::Conv2d { weight, bias, .. } | Layer::Dense { weight, bias, .. } => {
                    (weight, bias)
                }
                _ => unreachable!(),
            };
            for (t, (values, fx)) in [(w, fixed.weights()), (b, fixed)].into_iter().enumerate() {
                // open() also checks that the replicated components agree between neighbours.
                let got = open(&[o0[i][t].clone(), o1[i][t].clone(), o2[i][t].clone()]).unwrap();
                assert_eq!(
                    got,
                    fx.encode_slice(values).unwrap(),
                    "layer {i} tensor {t}"
                );
                // No party's pair is the plaintext or constant.
                assert_ne!(o0[i][t].own(), got.as_slice());
            }
        }
        // Fresh keys give other shares of the same weights.
        let other = ModelDealing::new(&spec, fixed, &mut rng).unwrap();
        assert_ne!(other.share(PartyId::ALL[0]).unwrap(), s0);
    }

    #[test]
    fn key_streams_are_one_sequential_stream_per_tensor() {
        // The parallel chunks must tile one ChaCha20 stream exactly: a chunk that reused
        // another's position would repeat mask words.
        let key = [7u8; 32];
        let n = 3 * DEAL_CHUNK + 1234;
        let mut rng = ChaCha20Rng::from_seed(key);
        rng.set_stream(9);
        let mut want = vec![0u64; n];
        rng.fill(&mut want[..]);
        assert_eq!(key_stream(&key, 9, n), want);
        assert_ne!(key_stream(&key, 8, 64), want[..64]);
    }

    #[test]
    fn an_unencodable_weight_is_an_error_naming_the_value() {
        let mut spec = random_spec(ModelKind::DnnMax, 1.0, 5);
        if let Some(Layer::Dense { weight, .. }) = spec.layers.last_mut() {
            weight[3] = f32::INFINITY;
        }
        // Refused before any share exists: party 0's share never reads the values, so a check
        // at dealing time could let it be sent alone.
        let err = ModelDealing::new_os(&spec, FixedPoint::default()).unwrap_err();
        assert!(err.to_string().contains("inf"), "{err}");
    }
}
