//! SGD with momentum and Adam over named candle variables, with state that can be saved in a
//! checkpoint so a resumed run continues exactly. (candle-nn's `SGD` has no momentum, and its
//! optimisers do not expose their state.)
//!
//! Imports `super::error` and candle only; nothing outside `train`.

use super::error::{Result, TrainError};
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OptimizerConfig {
    /// PyTorch's SGD: `v = momentum * v + g; p -= lr * v`.
    Sgd { lr: f64, momentum: f64 },
    /// Adam (Kingma & Ba) with bias correction.
    Adam {
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
    },
}

impl OptimizerConfig {
    pub fn sgd(lr: f64, momentum: f64) -> Self {
        Self::Sgd { lr, momentum }
    }
    pub fn adam(lr: f64) -> Self {
        Self::Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
    pub fn lr(&self) -> f64 {
        match *self {
            Self::Sgd { lr, .. } | Self::Adam { lr, .. } => lr,
        }
    }
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, v: f64| {
            Err(TrainError::Config(format!(
                "optimizer {what} = {v}: out of range"
            )))
        };
        match *self {
            Self::Sgd { lr, momentum } => {
                if !(lr.is_finite() && lr > 0.0) {
                    return bad("lr", lr);
                }
                if !(0.0..1.0).contains(&momentum) {
                    return bad("momentum (expected [0, 1))", momentum);
                }
            }
            Self::Adam {
                lr,
                beta1,
                beta2,
                eps,
            } => {
                if !(lr.is_finite() && lr > 0.0) {
                    return bad("lr", lr);
                }
                for (n, b) in [("beta1", beta1), ("beta2", beta2)] {
                    if !(0.0..1.0).contains(&b) {
                        return bad(n, b);
                    }
                }
                if !(eps.is_finite() && eps > 0.0) {
                    return bad("eps", eps);
                }
            }
        }
        Ok(())
    }
}

pub struct Optimizer {
    config: OptimizerConfig,
    step: u64,
    vars: Vec<(String, Var)>,
    /// Momentum (SGD) or first moment (Adam).
    m: Vec<Option<Tensor>>,
    /// Second moment (Adam).
    v: Vec<Option<Tensor>>,
    /// Variables the optimizer never updates (frozen layers).
    frozen: Vec<bool>,
}

impl Optimizer {
    pub fn new(config: OptimizerConfig, vars: Vec<(String, Var)>) -> Result<Self> {
        config.validate()?;
        let n = vars.len();
        Ok(Self {
            config,
            step: 0,
            vars,
            m: vec![None; n],
            v: vec![None; n],
            frozen: vec![false; n],
        })
    }

    /// Marks which variables stay fixed (`trainable[i]` false): their gradients are ignored and
    /// they keep no state.
    pub fn set_trainable(&mut self, trainable: &[bool]) -> Result<()> {
        if trainable.len() != self.vars.len() {
            return Err(TrainError::Config(format!(
                "trainable mask of {} entries for {} variables",
                trainable.len(),
                self.vars.len()
            )));
        }
        self.frozen = trainable.iter().map(|t| !t).collect();
        Ok(())
    }

    pub fn config(&self) -> OptimizerConfig {
        self.config
    }
    pub fn steps(&self) -> u64 {
        self.step
    }
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// One update with `grads[i]` the gradient of `vars[i]`.
    pub fn step(&mut self, grads: &[Tensor]) -> Result<()> {
        if grads.len() != self.vars.len() {
            return Err(TrainError::Config(format!(
                "optimizer got {} gradients for {} variables",
                grads.len(),
                self.vars.len()
            )));
        }
        self.step += 1;
        let t = self.step as i32;
        for (i, ((_, var), g)) in self.vars.iter().zip(grads).enumerate() {
            if self.frozen[i] {
                continue;
            }
            // candle's gradients of variables still carry the op graph of the step that made
            // them (a dense layer's weight gradient references the layer's input activation).
            // Kept in the momentum state, that graph would chain every step's activations
            // together: on CUDA, about one step's worth of memory leaked per step until the GPU
            // ran out. Detached, the state holds values only.
            let g = &g.detach();
            match self.config {
                OptimizerConfig::Sgd { lr, momentum } => {
                    let upd = if momentum > 0.0 {
                        let v = match &self.m[i] {
                            Some(v) => ((v * momentum)? + g)?,
                            None => g.clone(),
                        };
                        self.m[i] = Some(v.clone());
                        v
                    } else {
                        g.clone()
                    };
                    var.set(&var.as_tensor().sub(&(upd * lr)?)?)?;
                }
                OptimizerConfig::Adam {
                    lr,
                    beta1,
                    beta2,
                    eps,
                } => {
                    let m = match &self.m[i] {
                        Some(m) => ((m * beta1)? + (g * (1.0 - beta1))?)?,
                        None => (g * (1.0 - beta1))?,
                    };
                    let g2 = g.sqr()?;
                    let v = match &self.v[i] {
                        Some(v) => ((v * beta2)? + (g2 * (1.0 - beta2))?)?,
                        None => (g2 * (1.0 - beta2))?,
                    };
                    let mhat = (&m / (1.0 - beta1.powi(t)))?;
                    let vhat = (&v / (1.0 - beta2.powi(t)))?;
                    let upd = (mhat / (vhat.sqrt()? + eps)?)?;
                    var.set(&var.as_tensor().sub(&(upd * lr)?)?)?;
                    self.m[i] = Some(m);
                    self.v[i] = Some(v);
                }
            }
        }
        Ok(())
    }

    /// The optimizer's state tensors, named `optim.m.{var}` / `optim.v.{var}`.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, (name, _)) in self.vars.iter().enumerate() {
            if let Some(m) = &self.m[i] {
                out.push((format!("optim.m.{name}"), m.clone()));
            }
            if let Some(v) = &self.v[i] {
                out.push((format!("optim.v.{name}"), v.clone()));
            }
        }
        out
    }

    /// Restores state written by [`Optimizer::state_tensors`] and the step counter.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, step: u64) -> Result<()> {
        for (i, (name, var)) in self.vars.iter().enumerate() {
            for (slot, key) in [
                (&mut self.m[i], format!("optim.m.{name}")),
                (&mut self.v[i], format!("optim.v.{name}")),
            ] {
                *slot = match tensors.get(&key) {
                    Some(t) if t.dims() == var.dims() => Some(t.to_device(var.device())?),
                    Some(t) => {
                        return Err(TrainError::Config(format!(
                            "optimizer state {key} has shape {:?}, expected {:?}",
                            t.dims(),
                            var.dims()
                        )))
                    }
                    None => None,
                };
            }
        }
        self.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The optimizer's state must hold values, never the op graph of the step that produced
    /// the gradients: kept, that graph chains every step's activations together (on CUDA, where
    /// candle's own conv2d backward gives weight gradients that reference the layer's input,
    /// this ran the GPU out of memory within 20 VGG16 steps).
    #[test]
    fn optimizer_state_keeps_no_graph() {
        let d = Device::Cpu;
        for config in [OptimizerConfig::adam(1e-3), OptimizerConfig::sgd(1e-2, 0.9)] {
            let w = Var::from_tensor(&Tensor::new(&[0.5f32, -0.25, 1.0], &d).unwrap()).unwrap();
            let x0 = Var::from_tensor(&Tensor::new(&[1f32, 2., 3.], &d).unwrap()).unwrap();
            let mut opt = Optimizer::new(config, vec![("w".into(), w.clone())]).unwrap();
            for _ in 0..3 {
                // An "activation" with a graph behind it, multiplied by the weight.
                let act = x0.as_tensor().affine(2.0, 1.0).unwrap().relu().unwrap();
                let l = act.mul(w.as_tensor()).unwrap().sum_all().unwrap();
                let g = l.backward().unwrap().get(w.as_tensor()).unwrap().clone();
                // The premise: candle's raw weight gradient references the activation's graph.
                assert!(g.track_op(), "premise changed in candle");
                opt.step(&[g]).unwrap();
            }
            let state = opt.state_tensors();
            assert!(!state.is_empty());
            for (name, t) in state {
                assert!(
                    !t.track_op(),
                    "{name} keeps the op graph of a training step"
                );
            }
        }
    }

    fn scalar_var(x: f32) -> Var {
        Var::from_tensor(&Tensor::new(&[x], &Device::Cpu).unwrap()).unwrap()
    }
    fn value(v: &Var) -> f32 {
        v.as_tensor().to_vec1::<f32>().unwrap()[0]
    }

    #[test]
    fn sgd_momentum_matches_recurrence() {
        let var = scalar_var(1.0);
        let mut opt = Optimizer::new(
            OptimizerConfig::sgd(0.1, 0.9),
            vec![("p".into(), var.clone())],
        )
        .unwrap();
        let (mut p, mut v) = (1.0f32, 0.0f32);
        for k in 0..5 {
            let g = 2.0 * p + k as f32; // arbitrary gradients
            opt.step(&[Tensor::new(&[g], &Device::Cpu).unwrap()])
                .unwrap();
            v = if k == 0 { g } else { 0.9 * v + g };
            p -= 0.1 * v;
            assert!((value(&var) - p).abs() < 1e-6);
        }
    }

    #[test]
    fn adam_matches_recurrence() {
        let var = scalar_var(0.5);
        let mut opt =
            Optimizer::new(OptimizerConfig::adam(0.01), vec![("p".into(), var.clone())]).unwrap();
        let (mut p, mut m, mut v) = (0.5f64, 0.0f64, 0.0f64);
        for k in 1..=4 {
            let g = p * 3.0 - 1.0;
            opt.step(&[Tensor::new(&[g as f32], &Device::Cpu).unwrap()])
                .unwrap();
            m = 0.9 * m + 0.1 * g;
            v = 0.999 * v + 0.001 * g * g;
            let mh = m / (1.0 - 0.9f64.powi(k));
            let vh = v / (1.0 - 0.999f64.powi(k));
            p -= 0.01 * mh / (vh.sqrt() + 1e-8);
            assert!((f64::from(value(&var)) - p).abs() < 1e-5);
        }
    }

    #[test]
    fn invalid_settings_are_rejected() {
        assert!(OptimizerConfig::sgd(-1.0, 0.9).validate().is_err());
        assert!(OptimizerConfig::sgd(0.1, 1.0).validate().is_err());
        assert!(OptimizerConfig::adam(f64::NAN).validate().is_err());
    }
}
