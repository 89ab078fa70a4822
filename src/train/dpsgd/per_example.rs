//! Per-example gradients: one forward/backward pass that captures each unit's gradient, clips
//! it and sums the clipped gradients over the batch ([`clipped_gradient_sums`]), the memory
//! budgets that size a physical chunk of a batch, and the clip's per-step statistics. No noise
//! here: that is added by the step (`step`).
//!
//! The forward half is the model's own layer walk ([`Model::walk`]) with a hook of its own
//! ([`Capture`]) at the layers with weights. Imports the settings, the model, loss and ops;
//! never the noise, the step or the training loop.

use super::settings::Clipping;
use crate::privacy::params::ClipNorm;
use crate::train::error::{Result, TrainError};
use crate::train::loss::{self, ClassWeights};
use crate::train::model::{ConvLayer, DenseLayer, Forward, LayerHook, Model, NetLayer};
use crate::train::ops;
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use rand::RngCore;

/// Per-step statistics of the units' gradient norms before clipping (flat L2 over all layers).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClipStats {
    /// Share of units whose norm exceeded C (and so were scaled down).
    pub clipped_fraction: f64,
    /// Median unit norm.
    pub median_norm: f64,
}

impl ClipStats {
    /// Statistics of `norms` against the bound `clip`; `None` when there are no units.
    pub fn of(norms: &[f32], clip: f64) -> Option<Self> {
        if norms.is_empty() {
            return None;
        }
        let mut v: Vec<f64> = norms.iter().map(|&x| f64::from(x)).collect();
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median_norm = if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        };
        let clipped = v.iter().filter(|&&x| x > clip).count();
        Some(ClipStats {
            clipped_fraction: clipped as f64 / v.len() as f64,
            median_norm,
        })
    }
}

/// Clipped per-unit gradients summed over a batch, before noise.
#[derive(Debug)]
pub struct ClippedSums {
    /// Sum over units (examples or microbatches) of `min(1, C/|g_u|) (w_u / w_max) g_u`, per
    /// parameter, where `g_u` is the unit's unweighted gradient and `w_u` its class weight
    /// (1 without class weights).
    pub sums: Vec<Tensor>,
    /// `|g_u|` (whole-model L2 norm) of each unit before clipping.
    pub unit_norms: Vec<f32>,
    /// Sum over examples of the class-weighted loss `w_y * nll`.
    pub weighted_loss_sum: f64,
    pub weight_sum: f64,
    pub logits: Tensor,
}

/// Bound on the floats of per-example conv gradients held at once (~256 MiB); larger batches
/// are processed in chunks.
pub const PER_EXAMPLE_BUDGET: usize = 64 << 20;

/// Bound on the floats of forward activations held at once (1 GiB; the backward pass needs
/// about as much again). Without it DP-SGD at batch 2048 on dnn-max held 13 GB and batch 4096
/// 18 GB: more than the 24 GB machines the project targets can hold twice.
pub const ACTIVATION_BUDGET: usize = 256 << 20;

/// Examples per physical chunk of a logical batch: `physical`, if given, else what fits both
/// budgets; a multiple of the microbatch size `m`, at least `m`.
pub fn physical_chunk(model: &Model, physical: Option<usize>, m: usize) -> usize {
    let limit = physical.unwrap_or_else(|| {
        let conv_params: usize = model
            .layers()
            .iter()
            .map(|l| match l {
                NetLayer::Conv {
                    name, weight, bias, ..
                } if !model.is_frozen(name) => weight.elem_count() + bias.elem_count(),
                _ => 0,
            })
            .sum();
        (PER_EXAMPLE_BUDGET / conv_params.max(1))
            .min(ACTIVATION_BUDGET / model.activation_floats_per_example().max(1))
    });
    (limit / m * m).max(m)
}

/// What the backward pass is read from, per trained layer.
enum Captured {
    /// Per-example (or per-microbatch after grouping) weight/bias variables of a convolution.
    Conv { w: Var, b: Var },
    /// A dense layer's input and a zero probe added to its output (its gradient is the
    /// gradient w.r.t. the output).
    Dense { input: Tensor, probe: Var },
}

/// The per-example pass's [`LayerHook`]: convolutions run with a per-example copy of their
/// weights, dense layers get a zero probe on their output, frozen layers run as in the plain
/// forward pass with their weights detached.
struct Capture {
    /// Examples in the batch.
    n: usize,
    caps: Vec<Captured>,
    /// Per parameterised layer, in order: its index in `caps`, or None when frozen.
    slots: Vec<Option<usize>>,
}

impl Capture {
    fn new(n: usize) -> Self {
        Self {
            n,
            caps: Vec::new(),
            slots: Vec::new(),
        }
    }
    fn push(&mut self, cap: Captured) {
        self.slots.push(Some(self.caps.len()));
        self.caps.push(cap);
    }
}

impl LayerHook for Capture {
    fn conv(&mut self, l: &ConvLayer<'_>, h: &Tensor) -> Result<Tensor> {
        if l.frozen {
            // No per-example copy: nothing of this layer is trained, only its input
            // gradient flows on to the layers before it.
            self.slots.push(None);
            return Forward { detach: true }.conv(l, h);
        }
        let n = self.n;
        let (o, c, k, _) = l.weight.dims4()?;
        let w = Var::from_tensor(
            &l.weight
                .detach()
                .reshape((1, o, c * k * k))?
                .broadcast_as((n, o, c * k * k))?
                .contiguous()?,
        )?;
        let b = Var::from_tensor(
            &l.bias
                .detach()
                .reshape((1, o, 1))?
                .broadcast_as((n, o, 1))?
                .contiguous()?,
        )?;
        let y = ops::conv2d_per_example(h, &w, &b, l.kernel, l.padding, l.epilogue)?;
        self.push(Captured::Conv { w, b });
        Ok(y)
    }
    fn dense(&mut self, l: &DenseLayer<'_>, h: &Tensor) -> Result<Tensor> {
        let z = Forward { detach: true }.dense(l, h)?;
        if l.frozen {
            self.slots.push(None);
            return Ok(z);
        }
        let input = h.detach();
        let probe = Var::zeros(z.shape(), DType::F32, z.device())?;
        let z = z.add(probe.as_tensor())?;
        self.push(Captured::Dense { input, probe });
        Ok(z)
    }
}

/// Per-unit gradients of one trained layer (or, for dense layers with m = 1, the factors of
/// their norms).
enum UnitGrads {
    Full(Tensor, Tensor),
    DenseFactored { g: Tensor, a: Tensor },
}

/// Per-example gradients of one batch, clipped per unit of `microbatch` examples and summed.
///
/// Opacus-style: one forward/backward of the summed per-example losses. Convolutions run
/// with a per-example copy of their weights (`conv2d_per_example`), so the gradient of that
/// copy *is* the per-example gradient, at the cost of the ordinary weight-gradient GEMMs. Dense
/// layers get a zero probe on their output; with per-example clipping their gradient norm is
/// `|g| * sqrt(|a|^2 + 1)` (weight and bias) and the clipped sum is `(c*g)^T a`, never forming
/// per-example matrices. Frozen layers ([`Model::freeze`]) run as in the plain forward pass and
/// count towards neither the norms nor the sums (theirs are zeros).
#[allow(clippy::too_many_arguments)]
pub fn clipped_gradient_sums(
    model: &Model,
    x: &Tensor,
    labels: &Tensor,
    class_weights: Option<&ClassWeights>,
    clip: ClipNorm,
    clipping: Clipping,
    microbatch: usize,
    dropout_rng: Option<&mut dyn RngCore>,
) -> Result<ClippedSums> {
    model.check_input(x)?;
    let n = x.dim(0)?;
    let m = microbatch.max(1);
    if n == 0 || n % m != 0 {
        return Err(TrainError::Config(format!(
            "batch of {n} examples does not split into microbatches of {m}"
        )));
    }
    let units = n / m;
    let mut capture = Capture::new(n);
    let logits = model.walk(x, dropout_rng, &mut capture)?;
    let nll = loss::per_example_nll(&logits, labels)?;
    let w = loss::example_weights(labels, class_weights)?;
    let per_example = nll.mul(&w)?;
    // Class weights act after the clip, not inside the loss: when (as usual under DP) every
    // gradient is clipped, a weight inside the loss is normalised away and the 3:1 majority
    // wins every step. Each unit's clipped gradient is instead scaled by its weight over the
    // largest weight (at most 1), so no unit contributes more than C and the sensitivity holds.
    // TF Privacy's microbatch loss is the microbatch mean; per-example (m = 1) is the same.
    let objective = (nll.sum_all()? / m as f64)?;
    let grads = objective.backward()?;
    let (per_layer, layer_sq) = unit_gradients(&capture.caps, &grads, units, m)?;
    let mut sq = Tensor::zeros(units, DType::F32, x.device())?;
    for l in &layer_sq {
        sq = (sq + l)?;
    }
    let norms = sq.sqrt()?;
    // The class weight of each unit over the largest weight.
    let unit_w = match class_weights {
        None => None,
        Some(cw) => {
            let w_max = f64::from(cw.get()[0].max(cw.get()[1]));
            Some((w.reshape((units, m))?.mean(1)? / w_max)?)
        }
    };
    let factors = clip_factors(&norms, &layer_sq, clip, clipping, unit_w.as_ref())?;
    let trained = clipped_layer_sums(&per_layer, &factors, units)?;
    Ok(ClippedSums {
        sums: in_parameter_order(model, &capture.slots, &trained)?,
        unit_norms: norms.to_vec1::<f32>()?,
        weighted_loss_sum: f64::from(per_example.sum_all()?.to_scalar::<f32>()?),
        weight_sum: f64::from(w.sum_all()?.to_scalar::<f32>()?),
        logits,
    })
}

/// Each captured layer's per-unit gradients and their squared norms per unit.
fn unit_gradients(
    caps: &[Captured],
    grads: &GradStore,
    units: usize,
    m: usize,
) -> Result<(Vec<UnitGrads>, Vec<Tensor>)> {
    let mut per_layer = Vec::with_capacity(caps.len());
    let mut layer_sq = Vec::with_capacity(caps.len());
    let grad_of = |v: &Var| -> Result<Tensor> {
        match grads.get(v.as_tensor()) {
            Some(g) => Ok(g.clone()),
            None => Ok(v.as_tensor().zeros_like()?),
        }
    };
    for cap in caps {
        let ug = match cap {
            Captured::Conv { w, b } => {
                let gw = grad_of(w)?;
                let gb = grad_of(b)?;
                let (_, o, r) = gw.dims3()?;
                // Sum the m examples of each microbatch (the 1/m is already in the objective).
                let gw = gw.reshape((units, m, o, r))?.sum(1)?;
                let gb = gb.reshape((units, m, o))?.sum(1)?;
                UnitGrads::Full(gw, gb)
            }
            Captured::Dense { input, probe } => {
                let g = grad_of(probe)?;
                if m == 1 {
                    UnitGrads::DenseFactored {
                        g,
                        a: input.clone(),
                    }
                } else {
                    let (_, out) = g.dims2()?;
                    let inp = input.dim(1)?;
                    let gm = g.reshape((units, m, out))?;
                    let am = input.reshape((units, m, inp))?;
                    let gw = gm.transpose(1, 2)?.contiguous()?.matmul(&am)?;
                    UnitGrads::Full(gw, gm.sum(1)?)
                }
            }
        };
        layer_sq.push(match &ug {
            UnitGrads::Full(gw, gb) => {
                (gw.sqr()?.flatten_from(1)?.sum(1)? + gb.sqr()?.flatten_from(1)?.sum(1)?)?
            }
            UnitGrads::DenseFactored { g, a } => {
                let ga = g.sqr()?.sum(1)?;
                let aa = (a.sqr()?.sum(1)? + 1.0)?;
                ga.mul(&aa)?
            }
        });
        per_layer.push(ug);
    }
    Ok((per_layer, layer_sq))
}

/// Per trained layer, each unit's factor `min(1, bound / |g|)` times its class weight over the
/// largest weight (`unit_w`): one bound C on the whole gradient (flat), or C/sqrt(L) on each
/// of the L layers.
fn clip_factors(
    norms: &Tensor,
    layer_sq: &[Tensor],
    clip: ClipNorm,
    clipping: Clipping,
    unit_w: Option<&Tensor>,
) -> Result<Vec<Tensor>> {
    let factors = |norm: &Tensor, bound: f64| -> Result<Tensor> {
        let f = (norm + 1e-12)?
            .recip()?
            .affine(bound, 0.0)?
            .clamp(0f32, 1f32)?;
        Ok(match unit_w {
            None => f,
            Some(uw) => f.mul(uw)?,
        })
    };
    Ok(match clipping {
        Clipping::Flat => {
            let f = factors(norms, clip.get())?;
            vec![f; layer_sq.len()]
        }
        Clipping::PerLayer => {
            let bound = clip.get() / (layer_sq.len().max(1) as f64).sqrt();
            layer_sq
                .iter()
                .map(|l| factors(&l.sqrt()?, bound))
                .collect::<Result<_>>()?
        }
    })
}

/// Per trained layer, the weight and bias gradients of its units scaled by their factors and
/// summed over the units.
fn clipped_layer_sums(
    per_layer: &[UnitGrads],
    layer_factors: &[Tensor],
    units: usize,
) -> Result<Vec<Vec<Tensor>>> {
    let mut trained = Vec::with_capacity(per_layer.len());
    for (ug, factors) in per_layer.iter().zip(layer_factors) {
        let mut sums = Vec::with_capacity(2);
        match ug {
            UnitGrads::Full(gw, gb) => {
                let fw = factors.reshape((units, 1, 1))?;
                sums.push(gw.broadcast_mul(&fw)?.sum(0)?);
                let fb = factors.reshape((units, 1))?;
                sums.push(gb.broadcast_mul(&fb)?.sum(0)?);
            }
            UnitGrads::DenseFactored { g, a } => {
                let cg = g.broadcast_mul(&factors.unsqueeze(1)?)?;
                sums.push(cg.t()?.matmul(a)?);
                sums.push(cg.sum(0)?);
            }
        }
        trained.push(sums);
    }
    Ok(trained)
}

/// The trained layers' sums in parameter order and shapes; a frozen layer's sums are zeros.
fn in_parameter_order(
    model: &Model,
    slots: &[Option<usize>],
    trained: &[Vec<Tensor>],
) -> Result<Vec<Tensor>> {
    let params = model.named_parameters();
    let mut sums = Vec::with_capacity(params.len());
    for (layer, slot) in slots.iter().enumerate() {
        for part in 0..2 {
            let p = &params[2 * layer + part].1;
            sums.push(match slot {
                Some(c) => trained[*c][part].reshape(p.shape())?,
                None => p.zeros_like()?,
            });
        }
    }
    Ok(sums)
}
