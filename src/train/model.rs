//! The four CNNs as candle modules built from their [`ModelKind::plan`], and their export to
//! the framework-free [`NetworkSpec`].
//!
//! Parameter names (in checkpoints and `VarBuilder` scopes): the i-th convolution of the plan
//! is `conv{i}` and the i-th dense layer `fc{i}` (1-based), each with `weight` and `bias`;
//! layouts are candle/PyTorch (`[O, C, K, K]`, `[out, in]`), the same as `NetworkSpec`.

use super::error::{Result, TrainError};
use super::ops::{self, PoolKind};
use crate::model::arch::LayerNames;
use crate::model::{Layer, ModelKind, NetworkSpec, PlanLayer, Pool};
use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, RngCore, SeedableRng};
use std::path::Path;

/// One layer of a built model.
#[derive(Debug, Clone)]
pub enum NetLayer {
    Conv {
        name: String,
        /// `[O, C, K, K]`
        weight: Tensor,
        /// `[O]`
        bias: Tensor,
        kernel: usize,
        padding: usize,
    },
    Relu,
    Pool(PoolKind),
    Flatten,
    Dense {
        name: String,
        /// `[out, in]`
        weight: Tensor,
        /// `[out]`
        bias: Tensor,
    },
    Dropout(f32),
}

/// A sequential CNN following a model plan.
#[derive(Debug, Clone)]
pub struct Model {
    kind: ModelKind,
    width: f32,
    input: [usize; 3],
    layers: Vec<NetLayer>,
    /// Names of the parameterised layers kept at their initial (or loaded) weights.
    frozen: Vec<String>,
}

/// Pooling windows are 2x2 in every plan.
pub const POOL_SIZE: usize = 2;

/// The widest multiplier a model is built at: VGG16 at width 4 already holds about two
/// billion parameters (8 GB of f32); anything wider is a mistake or a hostile file.
pub const MAX_WIDTH: f32 = 4.0;

/// `width` if a model can be built at it: finite, above 0 and at most [`MAX_WIDTH`].
pub fn check_width(width: f32) -> Result<f32> {
    if width.is_finite() && width > 0.0 && width <= MAX_WIDTH {
        Ok(width)
    } else {
        Err(TrainError::Config(format!(
            "width {width}: expected a multiplier above 0 and at most {MAX_WIDTH}"
        )))
    }
}

fn pool_kind(p: Pool) -> PoolKind {
    match p {
        Pool::Max => PoolKind::Max,
        Pool::Avg => PoolKind::Avg,
    }
}

/// Names and shapes of every parameter of `kind` at `width`, in plan order, with the fan-in
/// used for initialisation.
pub fn parameter_shapes(kind: ModelKind, width: f32) -> Vec<(String, Vec<usize>, usize)> {
    let mut out = Vec::new();
    let mut names = LayerNames::default();
    for p in kind.plan(width) {
        let Some(name) = names.next(&p) else {
            continue;
        };
        match p {
            PlanLayer::Conv {
                in_channels,
                out_channels,
                kernel,
                ..
            } => {
                let fan_in = in_channels * kernel * kernel;
                out.push((
                    format!("{name}.weight"),
                    vec![out_channels, in_channels, kernel, kernel],
                    fan_in,
                ));
                out.push((format!("{name}.bias"), vec![out_channels], fan_in));
            }
            PlanLayer::Dense {
                in_features,
                out_features,
            } => {
                out.push((
                    format!("{name}.weight"),
                    vec![out_features, in_features],
                    in_features,
                ));
                out.push((format!("{name}.bias"), vec![out_features], in_features));
            }
            _ => {}
        }
    }
    out
}

/// A `VarMap` holding freshly initialised parameters of `kind`: Keras's defaults, as the paper
/// used (Glorot-uniform weights, zero biases), drawn from a ChaCha RNG seeded with `seed` so
/// runs are reproducible. (PyTorch's defaults, uniform in `±1/sqrt(fan_in)` for weights and
/// biases, shrink the signal through the layers; with Adam and the 3:1 class imbalance the
/// 14144-input dense layer's units then died within the first steps and DNN-Max never left
/// the majority class.)
pub fn init_varmap(kind: ModelKind, width: f32, seed: u64, device: &Device) -> Result<VarMap> {
    check_width(width)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let varmap = VarMap::new();
    {
        let mut data = varmap
            .data()
            .lock()
            .map_err(|_| TrainError::Config("variable map lock poisoned".into()))?;
        for (name, shape, fan_in) in parameter_shapes(kind, width) {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = if name.ends_with(".bias") {
                vec![0.0; n]
            } else {
                // fan_out: output channels x kernel area (conv) or output features (dense).
                let fan_out = shape[0] * shape.iter().skip(2).product::<usize>();
                let bound = (6.0 / (fan_in + fan_out) as f32).sqrt();
                (0..n).map(|_| rng.random_range(-bound..bound)).collect()
            };
            let t = Tensor::from_vec(v, shape, device)?;
            data.insert(name, Var::from_tensor(&t)?);
        }
    }
    Ok(varmap)
}

impl Model {
    /// Builds `kind` at `width` from a `VarBuilder` (scopes `conv{i}` / `fc{i}`).
    pub fn new(vb: VarBuilder, kind: ModelKind, width: f32) -> Result<Self> {
        check_width(width)?;
        let mut layers = Vec::new();
        let mut names = LayerNames::default();
        for p in kind.plan(width) {
            // Empty for the layers without weights, which have no name.
            let name = names.next(&p).unwrap_or_default();
            layers.push(match p {
                PlanLayer::Conv {
                    in_channels,
                    out_channels,
                    kernel,
                    padding,
                } => {
                    let s = vb.pp(&name);
                    NetLayer::Conv {
                        weight: s.get((out_channels, in_channels, kernel, kernel), "weight")?,
                        bias: s.get(out_channels, "bias")?,
                        name,
                        kernel,
                        padding,
                    }
                }
                PlanLayer::Dense {
                    in_features,
                    out_features,
                } => {
                    let s = vb.pp(&name);
                    NetLayer::Dense {
                        weight: s.get((out_features, in_features), "weight")?,
                        bias: s.get(out_features, "bias")?,
                        name,
                    }
                }
                PlanLayer::Relu => NetLayer::Relu,
                PlanLayer::Pool(p) => NetLayer::Pool(pool_kind(p)),
                PlanLayer::Flatten => NetLayer::Flatten,
                PlanLayer::Dropout(p) => NetLayer::Dropout(p),
            });
        }
        Ok(Self {
            kind,
            width,
            input: kind.technique().input_shape(),
            layers,
            frozen: Vec::new(),
        })
    }

    /// Names of the parameterised layers (`conv1`..., `fc1`...), in order.
    pub fn layer_names(&self) -> Vec<&str> {
        self.layers
            .iter()
            .filter_map(|l| match l {
                NetLayer::Conv { name, .. } | NetLayer::Dense { name, .. } => Some(name.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Keeps the named layers at their current weights: training leaves them alone, and DP-SGD
    /// neither clips nor noises them. Their weights are then data-independent (a seeded random
    /// initialisation or public pretrained weights), so they cost no privacy, and the noise
    /// falls only on what is trained. Replaces any earlier choice.
    pub fn freeze(&mut self, names: &[String]) -> Result<()> {
        let known = self.layer_names();
        for n in names {
            if !known.contains(&n.as_str()) {
                return Err(TrainError::Config(format!(
                    "cannot freeze {n:?}: {} has layers {}",
                    self.kind,
                    known.join(", ")
                )));
            }
        }
        if known.iter().all(|k| names.iter().any(|n| n == k)) {
            return Err(TrainError::Config(format!(
                "freezing every layer of {} leaves nothing to train",
                self.kind
            )));
        }
        self.frozen = known
            .into_iter()
            .filter(|k| names.iter().any(|n| n == k))
            .map(String::from)
            .collect();
        Ok(())
    }

    /// Sets the training-time rate of every dropout layer (the plan's own rate until then).
    pub fn set_dropout(&mut self, rate: DropoutRate) {
        for l in &mut self.layers {
            if let NetLayer::Dropout(p) = l {
                *p = rate.get();
            }
        }
    }

    /// The training-time rate of the dropout layers, `None` for a model without any.
    pub fn dropout(&self) -> Option<f32> {
        self.layers.iter().find_map(|l| match l {
            NetLayer::Dropout(p) => Some(*p),
            _ => None,
        })
    }

    /// The frozen layers' names, in layer order.
    pub fn frozen(&self) -> &[String] {
        &self.frozen
    }

    pub fn is_frozen(&self, layer: &str) -> bool {
        self.frozen.iter().any(|f| f == layer)
    }

    /// Per entry of [`Model::named_parameters`]: whether training updates it.
    pub fn trainable_mask(&self) -> Vec<bool> {
        // Weight and bias of each parameterised layer, as `named_parameters` lists them.
        self.layer_names()
            .into_iter()
            .flat_map(|n| [!self.is_frozen(n); 2])
            .collect()
    }

    /// A freshly initialised model and the `VarMap` that owns its trainable variables.
    pub fn init(kind: ModelKind, width: f32, seed: u64, device: &Device) -> Result<(Self, VarMap)> {
        let varmap = init_varmap(kind, width, seed, device)?;
        let model = Self::new(
            VarBuilder::from_varmap(&varmap, DType::F32, device),
            kind,
            width,
        )?;
        Ok((model, varmap))
    }

    pub fn kind(&self) -> ModelKind {
        self.kind
    }
    pub fn width(&self) -> f32 {
        self.width
    }
    pub fn input_shape(&self) -> [usize; 3] {
        self.input
    }
    pub fn layers(&self) -> &[NetLayer] {
        &self.layers
    }

    /// Floats of one example's forward pass: the input, every layer's output and each
    /// convolution's im2col columns. What a batch costs in memory beyond the weights (the
    /// backward pass needs about as much again); DP-SGD sizes its physical chunks with it.
    pub fn activation_floats_per_example(&self) -> usize {
        let [mut c, mut h, mut w] = self.input;
        let mut size = c * h * w;
        let mut total = size;
        for l in &self.layers {
            match l {
                NetLayer::Conv {
                    weight,
                    kernel,
                    padding,
                    ..
                } => {
                    let out = weight.dims()[0];
                    h = (h + 2 * padding + 1).saturating_sub(*kernel);
                    w = (w + 2 * padding + 1).saturating_sub(*kernel);
                    total += c * kernel * kernel * h * w;
                    c = out;
                    size = c * h * w;
                }
                NetLayer::Pool(_) => {
                    h /= POOL_SIZE;
                    w /= POOL_SIZE;
                    size = c * h * w;
                }
                NetLayer::Dense { weight, .. } => size = weight.dims()[0],
                NetLayer::Relu | NetLayer::Dropout(_) | NetLayer::Flatten => {}
            }
            total += size;
        }
        total
    }

    /// Checks a batch's image shape against the model's input.
    pub fn check_input(&self, x: &Tensor) -> Result<()> {
        let d = x.dims();
        let got = match *d {
            [_, c, h, w] => [c, h, w],
            _ => [0, 0, 0],
        };
        if got != self.input {
            return Err(TrainError::InputShape {
                model: self.kind.name().into(),
                expected: self.input,
                got,
            });
        }
        Ok(())
    }

    /// Forward pass. `dropout_rng`: `Some` in training (masks drawn from it, inverted dropout
    /// as in PyTorch/Keras), `None` at evaluation.
    pub fn forward_with(
        &self,
        x: &Tensor,
        mut dropout_rng: Option<&mut dyn RngCore>,
    ) -> Result<Tensor> {
        self.check_input(x)?;
        let mut x = x.clone();
        let mut fused = 0;
        for (i, layer) in self.layers.iter().enumerate() {
            if fused > 0 {
                fused -= 1;
                continue;
            }
            x = match layer {
                NetLayer::Conv {
                    weight,
                    bias,
                    padding,
                    ..
                } => {
                    let (epilogue, n) = self.epilogue_after(i);
                    fused = n;
                    ops::conv2d_fused(&x, weight, bias, *padding, epilogue)?
                }
                NetLayer::Relu => x.relu()?,
                NetLayer::Pool(kind) => ops::pool2d(&x, *kind, POOL_SIZE)?,
                NetLayer::Flatten => x.flatten_from(1)?,
                NetLayer::Dense { weight, bias, .. } => {
                    x.matmul(&weight.t()?)?.broadcast_add(bias)?
                }
                NetLayer::Dropout(p) => match dropout_rng.as_deref_mut() {
                    Some(rng) => apply_dropout(&x, *p, rng)?,
                    None => x,
                },
            };
        }
        Ok(x)
    }

    /// The ReLU and pooling right after layer `i` (fused into the convolution at `i`), and how
    /// many layers that covers.
    pub(crate) fn epilogue_after(&self, i: usize) -> (ops::Epilogue, usize) {
        let mut e = ops::Epilogue::NONE;
        let mut next = i + 1;
        if matches!(self.layers.get(next), Some(NetLayer::Relu)) {
            e.relu = true;
            next += 1;
        }
        if let Some(NetLayer::Pool(kind)) = self.layers.get(next) {
            e.pool = Some((*kind, POOL_SIZE));
            next += 1;
        }
        (e, next - i - 1)
    }

    /// Every trainable tensor by name, in plan order.
    pub fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for l in &self.layers {
            match l {
                NetLayer::Conv {
                    name, weight, bias, ..
                }
                | NetLayer::Dense {
                    name, weight, bias, ..
                } => {
                    out.push((format!("{name}.weight"), weight.clone()));
                    out.push((format!("{name}.bias"), bias.clone()));
                }
                _ => {}
            }
        }
        out
    }

    /// Exports the weights to a [`NetworkSpec`] with the same layouts (for secure inference).
    pub fn to_spec(&self) -> Result<NetworkSpec> {
        let vec = |t: &Tensor| -> Result<Vec<f32>> {
            Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
        };
        let mut layers = Vec::with_capacity(self.layers.len());
        for l in &self.layers {
            layers.push(match l {
                NetLayer::Conv {
                    weight,
                    bias,
                    kernel,
                    padding,
                    ..
                } => {
                    let (o, c, _, _) = weight.dims4()?;
                    Layer::Conv2d {
                        in_channels: c,
                        out_channels: o,
                        kernel: *kernel,
                        padding: *padding,
                        weight: vec(weight)?,
                        bias: vec(bias)?,
                    }
                }
                NetLayer::Relu => Layer::Relu,
                NetLayer::Pool(PoolKind::Max) => Layer::MaxPool2d { size: POOL_SIZE },
                NetLayer::Pool(PoolKind::Avg) => Layer::AvgPool2d { size: POOL_SIZE },
                NetLayer::Flatten => Layer::Flatten,
                NetLayer::Dense { weight, bias, .. } => {
                    let (o, i) = weight.dims2()?;
                    Layer::Dense {
                        in_features: i,
                        out_features: o,
                        weight: vec(weight)?,
                        bias: vec(bias)?,
                    }
                }
                NetLayer::Dropout(p) => Layer::Dropout { p: *p },
            });
        }
        let spec = NetworkSpec {
            name: self.kind.name().into(),
            input: self.input,
            layers,
        };
        spec.shapes()?;
        Ok(spec)
    }
}

/// The training-time probability of dropping a unit, in `[0, 1)`; 0 turns dropout off.
///
/// Why a run may change the model's own rate (0.5 in all four plans): under DP-SGD each
/// example's gradient is clipped as a whole, and a dropout mask makes that gradient flow
/// through a random half of the hidden units, so the per-example gradient carries the mask's
/// randomness on top of the noise. Dropout only acts in training; the trained model, its
/// export and its predictions are the same network either way.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "f32", into = "f32")]
pub struct DropoutRate(f32);

impl DropoutRate {
    pub fn new(p: f32) -> Result<Self> {
        if p.is_finite() && (0.0..1.0).contains(&p) {
            Ok(DropoutRate(p))
        } else {
            Err(TrainError::Config(format!(
                "dropout rate must be in [0, 1) (0 turns dropout off), got {p}"
            )))
        }
    }
    pub fn get(self) -> f32 {
        self.0
    }
}

impl TryFrom<f32> for DropoutRate {
    type Error = TrainError;
    fn try_from(p: f32) -> Result<Self> {
        DropoutRate::new(p)
    }
}

impl From<DropoutRate> for f32 {
    fn from(p: DropoutRate) -> f32 {
        p.0
    }
}

/// Inverted dropout with a mask drawn from `rng`: kept values are scaled by `1/(1-p)`.
pub fn apply_dropout(x: &Tensor, p: f32, rng: &mut dyn RngCore) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    let keep = 1.0 - p;
    let scale = 1.0 / keep;
    let n = x.elem_count();
    let mask: Vec<f32> = (0..n)
        .map(|_| {
            if rng.random::<f32>() < keep {
                scale
            } else {
                0.0
            }
        })
        .collect();
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?;
    Ok(x.mul(&mask)?)
}

/// Evaluation-mode forward (dropout off). candle's blanket `ModuleT` impl then ignores its
/// train flag; training calls [`Model::forward_with`] with a dropout RNG.
impl Module for Model {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_with(xs, None)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }
}

/// Torchvision's VGG16 `features` indices of the 13 convolutions, for loading ImageNet weights.
const TORCHVISION_VGG16_CONVS: [usize; 13] = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28];

/// Loads ImageNet VGG16 convolution weights from a local safetensors file into a VGG model's
/// variables. Accepted names for the i-th convolution (1-based): torchvision's
/// `features.{idx}.weight` / `features.{idx}.bias` (idx 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24,
/// 26, 28) or ours, `conv{i}.weight` / `conv{i}.bias`. Shapes must match the model at
/// width 1.0, except that a 1-channel first convolution (vgg16-1) takes the sum of the RGB
/// filters. Dense layers keep their initialisation (their sizes differ from ImageNet's).
/// Returns the number of tensors loaded.
pub fn load_vgg16_imagenet(varmap: &VarMap, kind: ModelKind, path: &Path) -> Result<usize> {
    let err = |reason: String| TrainError::InitWeights {
        path: path.to_path_buf(),
        reason,
    };
    if !matches!(kind, ModelKind::Vgg16_1 | ModelKind::Vgg16_2) {
        return Err(err(format!(
            "ImageNet VGG16 weights apply to vgg16-1 and vgg16-2, not {kind}"
        )));
    }
    let data = varmap
        .data()
        .lock()
        .map_err(|_| err("variable map lock poisoned".into()))?;
    let device = data
        .values()
        .next()
        .map(|v| v.device().clone())
        .unwrap_or(Device::Cpu);
    let file = candle_core::safetensors::load(path, &device).map_err(|e| err(e.to_string()))?;
    let mut loaded = 0;
    for (i, tv_idx) in TORCHVISION_VGG16_CONVS.iter().enumerate() {
        for part in ["weight", "bias"] {
            let ours = format!("conv{}.{part}", i + 1);
            let theirs = format!("features.{tv_idx}.{part}");
            let var = data
                .get(&ours)
                .ok_or_else(|| err(format!("model has no parameter {ours}")))?;
            let src = file
                .get(&theirs)
                .or_else(|| file.get(&ours))
                .ok_or_else(|| {
                    err(format!(
                        "missing tensor {theirs:?} (or {ours:?}); the file has {} tensors",
                        file.len()
                    ))
                })?;
            let mut src = src.to_dtype(DType::F32)?;
            let want = var.dims().to_vec();
            if i == 0
                && part == "weight"
                && want.get(1) == Some(&1)
                && src.dims().get(1) == Some(&3)
            {
                // Greyscale input: an RGB filter applied to a grey image (R=G=B) is the sum of
                // its three channel filters.
                src = src.sum_keepdim(1)?;
            }
            if src.dims() != want.as_slice() {
                return Err(err(format!(
                    "tensor {theirs:?} has shape {:?}, the model's {ours} needs {want:?} \
                     (ImageNet weights need width 1.0)",
                    src.dims()
                )));
            }
            var.set(&src)?;
            loaded += 1;
        }
    }
    Ok(loaded)
}
