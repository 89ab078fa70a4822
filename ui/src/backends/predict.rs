//! What the party backends share: the plaintext prediction shown beside the private one (the
//! pipeline's, as `privxray predict` makes it), and a probability as the interface's verdict.
//! Pixels become model input with `privxray::preprocess::to_unit`. Imports the TUI's backend
//! types only.

use crate::tui::backend::ClassProb;
use privxray::pipeline::{plaintext_probability, PipelineError};
use privxray::train::Model;

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
pub fn plaintext(
    model: &Model,
    shape: [usize; 3],
    pixels: Vec<f32>,
) -> Result<ClassProb, PipelineError> {
    Ok(class_prob(plaintext_probability(model, shape, pixels)?))
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
        assert_eq!(privxray::preprocess::to_unit(&[0, 255]), vec![0.0, 1.0]);
    }
}
