//! A model's weights exported to the framework-free [`NetworkSpec`] (for secure inference),
//! with the same layouts. Imports the model (`super`) and `crate::model`'s spec types.

use super::{Model, NetLayer, POOL_SIZE};
use crate::model::{Layer, NetworkSpec};
use crate::train::error::Result;
use crate::train::ops::PoolKind;
use candle_core::{DType, Tensor};

impl Model {
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
