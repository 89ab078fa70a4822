//! What the party backends share: pixels to model input, the plaintext prediction shown beside
//! the private one, and a probability as the interface's verdict.

use crate::tui::backend::ClassProb;
use privxray::model::spec::pneumonia_probability;
use privxray::train::{Model, TrainData};

/// Preprocessed 8-bit pixels as the [0, 1] floats the models take.
pub fn unit_pixels(image: &[u8]) -> Vec<f32> {
    image.iter().map(|&v| v as f32 / 255.0).collect()
}

/// The verdict for a probability of PNEUMONIA: the likelier class and its probability.
pub fn class_prob(pneumonia: f64) -> ClassProb {
    if pneumonia >= 0.5 {
        ClassProb {
            class: 1,
            probability: pneumonia,
        }
    } else {
        ClassProb {
            class: 0,
            probability: 1.0 - pneumonia,
        }
    }
}

/// The plaintext prediction of `model` (candle, CPU) for one image.
pub fn plaintext(model: &Model, shape: [usize; 3], x: Vec<f32>) -> anyhow::Result<ClassProb> {
    let data = TrainData::new(shape, x, vec![0])?;
    let (xb, _) = data.batch(&[0], &candle_core::Device::Cpu)?;
    let logits = model.forward_with(&xb, None)?.to_vec2::<f32>()?;
    let row = logits
        .first()
        .ok_or_else(|| anyhow::anyhow!("the model returned no logits"))?;
    Ok(class_prob(pneumonia_probability(row) as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_is_the_likelier_class() {
        assert_eq!(
            class_prob(0.8),
            ClassProb {
                class: 1,
                probability: 0.8
            }
        );
        let n = class_prob(0.25);
        assert_eq!(n.class, 0);
        assert!((n.probability - 0.75).abs() < 1e-12);
        assert_eq!(unit_pixels(&[0, 255]), vec![0.0, 1.0]);
    }
}
