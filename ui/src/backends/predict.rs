//! What the party backends share: the plaintext prediction shown beside the private one (the
//! pipeline's, as `privxray predict` makes it), and logits as the interface's probabilities.
//! Pixels become model input with `privxray::preprocess::to_unit`. Imports the TUI's backend
//! types only.

use crate::tui::backend::ClassProbs;
use privxray::model::spec::softmax;
use privxray::pipeline::{plaintext_logits, PipelineError};
use privxray::train::Model;

/// Every class's probability from a model's logits (any number of classes).
pub fn class_probs(logits: &[f32]) -> ClassProbs {
    ClassProbs(softmax(logits).into_iter().map(f64::from).collect())
}

/// The plaintext prediction of `model` (candle, CPU) for one image.
pub fn plaintext(
    model: &Model,
    shape: [usize; 3],
    pixels: Vec<f32>,
) -> Result<ClassProbs, PipelineError> {
    Ok(class_probs(&plaintext_logits(model, shape, pixels)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_is_the_likelier_class_of_two_or_three() {
        // Two logits: PNEUMONIA's probability is the sigmoid of their difference.
        let two = class_probs(&[0.0, (4.0f32).ln()]);
        assert_eq!(two.class(), 1);
        assert!((two.probability() - 0.8).abs() < 1e-6, "{two:?}");
        assert!((two.0[0] - 0.2).abs() < 1e-6, "{two:?}");
        // Three: every class's probability, summing to one, the largest the verdict.
        let three = class_probs(&[1.0, 3.0, 2.0]);
        assert_eq!(three.0.len(), 3);
        assert_eq!(three.class(), 1);
        assert!((three.0.iter().sum::<f64>() - 1.0).abs() < 1e-6);
        assert!(
            three.0[1] > three.0[2] && three.0[2] > three.0[0],
            "{three:?}"
        );
        assert_eq!(privxray::preprocess::to_unit(&[0, 255]), vec![0.0, 1.0]);
    }
}
