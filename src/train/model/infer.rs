//! Evaluation-mode forward pass of one image on the CPU without tensors: the path plaintext
//! prediction takes (`pipeline::predict`, and through it the CLI and the terminal interface).
//! It reads the weights in place (no copy, so it always sees the current ones) and runs the
//! one-image kernels of `ops::infer` between two activation buffers reused across calls; the
//! training forward ([`Model::forward_with`]) builds a tensor per layer and spreads a batch,
//! not a single image, over the threads. Both give the same logits up to float rounding (a
//! test). Weights elsewhere than in CPU f32 memory fall back to the tensor forward.
//!
//! Imports the model (`super`), its walk's fusing rule, the ops and the error type.

use super::walk::epilogue_after;
use super::{Model, NetLayer, POOL_SIZE};
use crate::train::error::{Result, TrainError};
use crate::train::ops::{contiguous_f32, infer, unfold::Geom, Epilogue};
use candle_core::{Device, Storage, Tensor};

/// A tensor's values in place, if it lives in contiguous CPU f32 memory.
fn cpu_f32<'a>(storage: &'a Storage, t: &Tensor) -> Option<&'a [f32]> {
    match storage {
        Storage::Cpu(s) => contiguous_f32(s, t.layout(), "weight").ok(),
        _ => None,
    }
}

impl Model {
    /// Logits (one per class) of one image, `pixels` the `C*H*W` values of
    /// [`Model::input_shape`], evaluation mode (dropout off).
    pub fn infer_one(&self, pixels: &[f32]) -> Result<Vec<f32>> {
        let [c, h, w] = self.input;
        if pixels.len() != c * h * w {
            return Err(TrainError::Data(format!(
                "{}: an image of {} values, expected {c}x{h}x{w} = {}",
                self.kind.name(),
                pixels.len(),
                c * h * w
            )));
        }
        match self.infer_cpu(pixels)? {
            Some(logits) => Ok(logits),
            None => {
                let x = Tensor::from_slice(pixels, (1, c, h, w), &Device::Cpu)?;
                let logits = self.forward_with(&x, None)?.to_vec2::<f32>()?;
                Ok(logits.into_iter().next().unwrap_or_default())
            }
        }
    }

    /// Evaluation-mode logits `(N, classes)` of a batch: [`Model::infer_one`] for a single
    /// CPU image, the tensor forward otherwise. No gradients flow through the result.
    pub fn infer(&self, x: &Tensor) -> Result<Tensor> {
        self.check_input(x)?;
        if x.device().is_cpu() && x.dim(0)? == 1 && x.dtype() == candle_core::DType::F32 {
            let px = x.flatten_all()?.to_vec1::<f32>()?;
            if let Some(logits) = self.infer_cpu(&px)? {
                let n = logits.len();
                return Ok(Tensor::from_vec(logits, (1, n), &Device::Cpu)?);
            }
        }
        Ok(self.forward_with(x, None)?.detach())
    }

    /// The one-image kernels over the layers; `None` when a weight is not in CPU f32 memory.
    fn infer_cpu(&self, pixels: &[f32]) -> Result<Option<Vec<f32>>> {
        infer::with_activations(|src, dst| {
            let [mut c, mut h, mut w] = self.input;
            let mut len = pixels.len();
            src.clear();
            src.extend_from_slice(pixels);
            let mut fused = 0;
            for (i, layer) in self.layers.iter().enumerate() {
                if fused > 0 {
                    fused -= 1;
                    continue;
                }
                match layer {
                    NetLayer::Conv {
                        weight,
                        bias,
                        kernel,
                        padding,
                        ..
                    } => {
                        let (epilogue, n) = epilogue_after(&self.layers, i);
                        fused = n;
                        let g = Geom::new(c, h, w, *kernel, *padding)?;
                        let o = weight.dims()[0];
                        let [oc, oh, ow] = infer::conv_one_out(&g, o, epilogue)?;
                        let out = oc * oh * ow;
                        dst.resize(dst.len().max(out), 0.0);
                        let (ws, _) = weight.storage_and_layout();
                        let (bs, _) = bias.storage_and_layout();
                        let (Some(wv), Some(bv)) = (cpu_f32(&ws, weight), cpu_f32(&bs, bias))
                        else {
                            return Ok(None);
                        };
                        infer::conv_one(&g, o, epilogue, &src[..len], wv, bv, &mut dst[..out])?;
                        [c, h, w] = [oc, oh, ow];
                        len = out;
                    }
                    NetLayer::Dense { weight, bias, .. } => {
                        let relu = matches!(self.layers.get(i + 1), Some(NetLayer::Relu));
                        fused = usize::from(relu);
                        let out = weight.dims()[0];
                        dst.resize(dst.len().max(out), 0.0);
                        let (ws, _) = weight.storage_and_layout();
                        let (bs, _) = bias.storage_and_layout();
                        let (Some(wv), Some(bv)) = (cpu_f32(&ws, weight), cpu_f32(&bs, bias))
                        else {
                            return Ok(None);
                        };
                        infer::dense_one(&src[..len], wv, bv, relu, &mut dst[..out])?;
                        [c, h, w] = [out, 1, 1];
                        len = out;
                    }
                    NetLayer::Pool(kind) => {
                        let e = Epilogue {
                            relu: false,
                            pool: Some((*kind, POOL_SIZE)),
                        };
                        let (ph, pw) = e.out_hw(h, w)?;
                        let out = c * ph * pw;
                        dst.resize(dst.len().max(out), 0.0);
                        for (zc, yc) in src[..len].chunks(h * w).zip(dst[..out].chunks_mut(ph * pw))
                        {
                            infer::pool_rows(zc, w, false, *kind, POOL_SIZE, yc, pw);
                        }
                        [h, w] = [ph, pw];
                        len = out;
                    }
                    NetLayer::Relu => {
                        for v in &mut src[..len] {
                            if *v < 0.0 {
                                *v = 0.0;
                            }
                        }
                        continue;
                    }
                    // Flattening keeps the values' order; dropout is off at evaluation.
                    NetLayer::Flatten | NetLayer::Dropout(_) => continue,
                }
                std::mem::swap(src, dst);
            }
            Ok(Some(src[..len].to_vec()))
        })
    }
}
