//! In-memory training data: images in NCHW order, labels, and the names of the classes.
//!
//! Imports `super::error`, the class names of `model` and candle only.

use super::error::{Result, TrainError};
use crate::model::ClassNames;
use candle_core::{Device, Tensor};

/// Label of a normal chest X-ray.
pub const NORMAL: u8 = 0;
/// Label of a pneumonia chest X-ray.
pub const PNEUMONIA: u8 = 1;

/// A set of images (`N * C * H * W` f32 values, image after image), their labels (indices into
/// the class names; 0 NORMAL, 1 PNEUMONIA for the binary task). Construct with
/// [`TrainData::new`] or [`TrainData::with_classes`], which validate lengths and labels.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainData {
    shape: [usize; 3],
    images: Vec<f32>,
    labels: Vec<u8>,
    classes: ClassNames,
}

impl TrainData {
    /// Binary data: labels 0 (NORMAL) and 1 (PNEUMONIA).
    pub fn new(shape: [usize; 3], images: Vec<f32>, labels: Vec<u8>) -> Result<Self> {
        Self::with_classes(shape, images, labels, ClassNames::binary())
    }

    /// Data whose labels index `classes`.
    pub fn with_classes(
        shape: [usize; 3],
        images: Vec<f32>,
        labels: Vec<u8>,
        classes: ClassNames,
    ) -> Result<Self> {
        let per: usize = shape.iter().product();
        if per == 0 {
            return Err(TrainError::Data(format!(
                "image shape {shape:?} has a zero dimension"
            )));
        }
        if images.len() != per * labels.len() {
            return Err(TrainError::Data(format!(
                "{} labels need {} image values ({} per {shape:?} image), got {}",
                labels.len(),
                per * labels.len(),
                per,
                images.len()
            )));
        }
        if let Some((i, l)) = labels
            .iter()
            .enumerate()
            .find(|(_, l)| usize::from(**l) >= classes.len())
        {
            return Err(TrainError::Data(format!(
                "label {l} at index {i}: expected 0..{} ({classes})",
                classes.len() - 1
            )));
        }
        if let Some(i) = images.iter().position(|v| !v.is_finite()) {
            return Err(TrainError::Data(format!(
                "image value at index {i} is not finite: {}",
                images[i]
            )));
        }
        Ok(Self {
            shape,
            images,
            labels,
            classes,
        })
    }

    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    pub fn classes(&self) -> &ClassNames {
        &self.classes
    }
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }
    pub fn images(&self) -> &[f32] {
        &self.images
    }
    pub fn image(&self, i: usize) -> Option<&[f32]> {
        let per = self.per_image();
        self.images.get(i * per..(i + 1) * per)
    }
    fn per_image(&self) -> usize {
        self.shape.iter().product()
    }

    /// Number of examples of each class, in label order (`[normal, pneumonia]` when binary).
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for &l in &self.labels {
            counts[usize::from(l)] += 1;
        }
        counts
    }

    /// The examples at `indices` as an `(n, C, H, W)` tensor and their labels as `(n,)` u32.
    pub fn batch(&self, indices: &[usize], device: &Device) -> Result<(Tensor, Tensor)> {
        let per = self.per_image();
        let mut x = Vec::with_capacity(indices.len() * per);
        let mut y = Vec::with_capacity(indices.len());
        for &i in indices {
            let img = self.image(i).ok_or_else(|| {
                TrainError::Data(format!("example index {i} out of range 0..{}", self.len()))
            })?;
            x.extend_from_slice(img);
            y.push(u32::from(self.labels[i]));
        }
        let [c, h, w] = self.shape;
        let n = indices.len();
        Ok((
            Tensor::from_vec(x, (n, c, h, w), device)?,
            Tensor::from_vec(y, n, device)?,
        ))
    }

    /// Splits off a validation set: a seeded shuffle, then the first `fraction` of each class
    /// (stratified, so the 3:1 class ratio survives) becomes validation.
    pub fn split(&self, fraction: f64, seed: u64) -> Result<(TrainData, TrainData)> {
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        if !(0.0..1.0).contains(&fraction) {
            return Err(TrainError::Config(format!(
                "validation fraction {fraction}: expected a value in [0, 1)"
            )));
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut train = Vec::new();
        let mut val = Vec::new();
        for class in 0..self.classes.len() as u8 {
            let mut idx: Vec<usize> = (0..self.len())
                .filter(|&i| self.labels[i] == class)
                .collect();
            idx.shuffle(&mut rng);
            let k = (idx.len() as f64 * fraction).round() as usize;
            val.extend_from_slice(&idx[..k]);
            train.extend_from_slice(&idx[k..]);
        }
        train.sort_unstable();
        val.sort_unstable();
        Ok((self.subset(&train), self.subset(&val)))
    }

    fn subset(&self, idx: &[usize]) -> TrainData {
        let per = self.per_image();
        let mut images = Vec::with_capacity(idx.len() * per);
        for &i in idx {
            images.extend_from_slice(&self.images[i * per..(i + 1) * per]);
        }
        TrainData {
            shape: self.shape,
            images,
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
            classes: self.classes.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_validated() {
        assert!(TrainData::new([1, 2, 2], vec![0.0; 8], vec![0, 1]).is_ok());
        let e = TrainData::new([1, 2, 2], vec![0.0; 7], vec![0, 1]).unwrap_err();
        assert!(e.to_string().contains("got 7"), "{e}");
        assert!(TrainData::new([1, 2, 2], vec![0.0; 4], vec![2]).is_err());
        assert!(TrainData::new([1, 1, 1], vec![f32::NAN], vec![0]).is_err());
    }

    #[test]
    fn split_is_stratified_and_disjoint() {
        let labels: Vec<u8> = (0..40).map(|i| u8::from(i % 4 != 0)).collect();
        let images: Vec<f32> = (0..40).map(|i| i as f32).collect();
        let d = TrainData::new([1, 1, 1], images, labels).unwrap();
        let (t, v) = d.split(0.25, 3).unwrap();
        assert_eq!(v.class_counts(), [3, 8]);
        assert_eq!(t.len() + v.len(), 40);
        let mut all: Vec<f32> = t.images().iter().chain(v.images()).copied().collect();
        all.sort_by(f32::total_cmp);
        assert_eq!(all, (0..40).map(|i| i as f32).collect::<Vec<_>>());
        // Labels travel with their images.
        for (x, l) in v.images().iter().zip(v.labels()) {
            assert_eq!(*l, u8::from(!(*x as usize).is_multiple_of(4)));
        }
    }
}
