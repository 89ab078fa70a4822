//! An exponential moving average of the weights (Polyak averaging), the model a run releases
//! when asked for one.
//!
//! Why: under DP-SGD every step adds Gaussian noise, and the last iterate carries the noise of
//! its last few steps at full size. Averaging the iterates shrinks that part (De et al. 2022,
//! "Unlocking high-accuracy differentially private image classification through scale", use it
//! for all their results). The average is computed from the weights alone, which are already
//! private, so it is post-processing and costs no privacy.
//!
//! Imports `super::error` and candle only; nothing outside `train`.

use super::error::{Result, TrainError};
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// How much of the average each optimizer step keeps: `avg <- d * avg + (1 - d) * weights`.
/// A decay `d` averages over about `1 / (1 - d)` steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct EmaDecay(f64);

impl EmaDecay {
    pub fn new(d: f64) -> Result<Self> {
        if d.is_finite() && d > 0.0 && d < 1.0 {
            Ok(EmaDecay(d))
        } else {
            Err(TrainError::Config(format!(
                "weight-average decay must be in (0, 1) (e.g. 0.9 averages about 10 steps), got {d}"
            )))
        }
    }
    pub fn get(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for EmaDecay {
    type Error = TrainError;
    fn try_from(d: f64) -> Result<Self> {
        EmaDecay::new(d)
    }
}

impl From<EmaDecay> for f64 {
    fn from(d: EmaDecay) -> f64 {
        d.0
    }
}

/// Checkpoint names of the averages: `ema.` and the variable's name.
const PREFIX: &str = "ema.";

/// The running average of the trainable variables (frozen ones never change, so they are their
/// own average and are not stored twice).
pub struct WeightAverage {
    decay: EmaDecay,
    /// One entry per model variable, in the same order; `None` for frozen ones.
    avg: Vec<Option<Tensor>>,
}

impl WeightAverage {
    /// Starts the average at the variables' current values.
    pub fn start(decay: EmaDecay, vars: &[(String, Var)], trainable: &[bool]) -> Result<Self> {
        if trainable.len() != vars.len() {
            return Err(TrainError::Config(format!(
                "weight average: {} variables but {} trainable flags",
                vars.len(),
                trainable.len()
            )));
        }
        let avg = vars
            .iter()
            .zip(trainable)
            .map(|((_, v), &t)| t.then(|| v.as_tensor().detach().copy()).transpose())
            .collect::<candle_core::Result<_>>()?;
        Ok(WeightAverage { decay, avg })
    }

    pub fn decay(&self) -> EmaDecay {
        self.decay
    }

    /// Folds the variables' current values in; call after every optimizer step.
    pub fn update(&mut self, vars: &[(String, Var)]) -> Result<()> {
        let d = self.decay.get();
        for (slot, (_, v)) in self.avg.iter_mut().zip(vars) {
            if let Some(a) = slot {
                let w = v.as_tensor().detach();
                *a = (a.affine(d, 0.0)? + w.affine(1.0 - d, 0.0)?)?;
            }
        }
        Ok(())
    }

    /// Puts the averages into the variables and returns what they held, for [`Self::restore`].
    pub fn swap_in(&self, vars: &[(String, Var)]) -> Result<Vec<Option<Tensor>>> {
        let mut raw = Vec::with_capacity(vars.len());
        for (slot, (_, v)) in self.avg.iter().zip(vars) {
            raw.push(match slot {
                Some(a) => {
                    let held = v.as_tensor().detach().copy()?;
                    v.set(a)?;
                    Some(held)
                }
                None => None,
            });
        }
        Ok(raw)
    }

    /// Undoes [`Self::swap_in`].
    pub fn restore(vars: &[(String, Var)], raw: Vec<Option<Tensor>>) -> Result<()> {
        for (held, (_, v)) in raw.into_iter().zip(vars) {
            if let Some(t) = held {
                v.set(&t)?;
            }
        }
        Ok(())
    }

    /// The released weights under the variables' names: the averages, and the frozen
    /// variables as they are (they never change).
    pub fn released(&self, vars: &[(String, Var)]) -> Vec<(String, Tensor)> {
        self.avg
            .iter()
            .zip(vars)
            .map(|(a, (name, v))| {
                (
                    name.clone(),
                    a.clone().unwrap_or_else(|| v.as_tensor().clone()),
                )
            })
            .collect()
    }

    /// The averages under their checkpoint names, for a resumable checkpoint.
    pub fn state_tensors(&self, vars: &[(String, Var)]) -> Vec<(String, Tensor)> {
        self.avg
            .iter()
            .zip(vars)
            .filter_map(|(a, (name, _))| a.as_ref().map(|a| (format!("{PREFIX}{name}"), a.clone())))
            .collect()
    }

    /// Takes the averages from a checkpoint's tensors. Returns false (and keeps the current
    /// start) when the checkpoint has none, as one from a run without averaging.
    pub fn load_state(
        &mut self,
        tensors: &HashMap<String, Tensor>,
        vars: &[(String, Var)],
    ) -> Result<bool> {
        let mut loaded = Vec::with_capacity(self.avg.len());
        for (slot, (name, v)) in self.avg.iter().zip(vars) {
            if slot.is_none() {
                loaded.push(None);
                continue;
            }
            match tensors.get(&format!("{PREFIX}{name}")) {
                Some(t) if t.dims() == v.dims() => loaded.push(Some(t.clone())),
                Some(t) => {
                    return Err(TrainError::Config(format!(
                    "checkpoint weight average {PREFIX}{name} has shape {:?}, the model needs {:?}",
                    t.dims(),
                    v.dims()
                )))
                }
                None => return Ok(false),
            }
        }
        self.avg = loaded;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn var(x: &[f32]) -> Var {
        Var::from_tensor(&Tensor::new(x, &Device::Cpu).unwrap()).unwrap()
    }

    fn values(v: &Var) -> Vec<f32> {
        v.as_tensor().to_vec1().unwrap()
    }

    #[test]
    fn decay_outside_the_open_unit_interval_is_refused() {
        for d in [0.0, 1.0, -0.5, 1.5, f64::NAN] {
            let e = EmaDecay::new(d).unwrap_err().to_string();
            assert!(e.contains("(0, 1)"), "{e}");
        }
        assert_eq!(EmaDecay::new(0.9).unwrap().get(), 0.9);
        let back: EmaDecay = serde_json::from_str("0.95").unwrap();
        assert_eq!(back.get(), 0.95);
        assert!(serde_json::from_str::<EmaDecay>("1.0").is_err());
    }

    #[test]
    fn average_follows_the_recurrence_and_skips_frozen_variables() {
        let vars = vec![
            ("w".to_string(), var(&[0.0, 10.0])),
            ("f".to_string(), var(&[5.0])),
        ];
        let mut avg =
            WeightAverage::start(EmaDecay::new(0.5).unwrap(), &vars, &[true, false]).unwrap();
        // Two steps move w to [2, 6] then [4, 2]: the average is 0.5 * (0.5 * w0 + 0.5 * w1) +
        // 0.5 * w2.
        for w in [[2.0f32, 6.0], [4.0, 2.0]] {
            vars[0]
                .1
                .set(&Tensor::new(&w, &Device::Cpu).unwrap())
                .unwrap();
            avg.update(&vars).unwrap();
        }
        let raw = avg.swap_in(&vars).unwrap();
        assert_eq!(
            values(&vars[0].1),
            vec![
                0.25 * 0.0 + 0.25 * 2.0 + 0.5 * 4.0,
                0.25 * 10.0 + 0.25 * 6.0 + 0.5 * 2.0
            ]
        );
        assert_eq!(values(&vars[1].1), vec![5.0]);
        WeightAverage::restore(&vars, raw).unwrap();
        assert_eq!(values(&vars[0].1), vec![4.0, 2.0]);

        // The state round-trips through checkpoint names and holds nothing for frozen ones.
        let state = avg.state_tensors(&vars);
        assert_eq!(state.len(), 1);
        assert_eq!(state[0].0, "ema.w");
        let map: HashMap<String, Tensor> = state.into_iter().collect();
        let mut again =
            WeightAverage::start(EmaDecay::new(0.5).unwrap(), &vars, &[true, false]).unwrap();
        assert!(again.load_state(&map, &vars).unwrap());
        let raw = again.swap_in(&vars).unwrap();
        assert_eq!(values(&vars[0].1), vec![2.5, 5.0]);
        WeightAverage::restore(&vars, raw).unwrap();
        assert!(!again.load_state(&HashMap::new(), &vars).unwrap());
    }

    #[test]
    fn the_average_keeps_no_graph() {
        let vars = vec![("w".to_string(), var(&[1.0, 2.0]))];
        let mut avg = WeightAverage::start(EmaDecay::new(0.9).unwrap(), &vars, &[true]).unwrap();
        avg.update(&vars).unwrap();
        for (_, t) in avg.state_tensors(&vars) {
            assert!(!t.track_op(), "the average keeps the graph of an update");
        }
    }
}
