//! Activation shapes and the shape rules of the layer kinds, in one place: the spec's shape
//! walk ([`super::NetworkSpec::shapes`]) and the secure engine's model-share validation
//! (`mpc::model`) both ask these functions what a convolution or a pooling window makes of an
//! input, and each turns a refusal into its own error.
//!
//! Imports nothing from the crate.

/// The shape of an activation between layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Chw(usize, usize, usize),
    Flat(usize),
}

impl Shape {
    pub fn len(&self) -> usize {
        match *self {
            Shape::Chw(c, h, w) => c * h * w,
            Shape::Flat(n) => n,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn dims(&self) -> Vec<usize> {
        match *self {
            Shape::Chw(c, h, w) => vec![c, h, w],
            Shape::Flat(n) => vec![n],
        }
    }
    /// The dimensions of a CHW shape; `None` for a flat one.
    pub fn chw(&self) -> Option<Chw> {
        match *self {
            Shape::Chw(channels, height, width) => Some(Chw {
                channels,
                height,
                width,
            }),
            Shape::Flat(_) => None,
        }
    }
}

/// Channels, height and width of a CHW activation, named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Chw {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl Chw {
    pub fn shape(self) -> Shape {
        Shape::Chw(self.channels, self.height, self.width)
    }
    pub fn len(self) -> usize {
        self.shape().len()
    }
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }
}

/// Height and width after a stride-1 `kernel` x `kernel` convolution with `padding` on every
/// side, or `None` if the kernel does not fit in the padded input (or the sizes overflow).
pub fn conv_out(
    height: usize,
    width: usize,
    kernel: usize,
    padding: usize,
) -> Option<(usize, usize)> {
    let pad = padding.checked_mul(2)?;
    let out = |side: usize| Some(side.checked_add(pad)?.checked_sub(kernel)? + 1);
    Some((out(height)?, out(width)?))
}

/// Height and width after `size` x `size` pooling with stride `size` (a trailing odd row or
/// column is dropped), or `None` for an empty window or one larger than the input.
pub fn pool_out(height: usize, width: usize, size: usize) -> Option<(usize, usize)> {
    (size != 0 && height >= size && width >= size).then(|| (height / size, width / size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_fits_once_padded_and_a_window_must_fit_unpadded() {
        assert_eq!(conv_out(5, 4, 3, 0), Some((3, 2)));
        assert_eq!(conv_out(2, 2, 3, 1), Some((2, 2)));
        assert_eq!(conv_out(1, 5, 4, 1), None);
        assert_eq!(conv_out(2, 2, 4, 1), Some((1, 1)));
        assert_eq!(conv_out(0, 2, 0, 0), Some((1, 3)));
        assert_eq!(conv_out(usize::MAX, 1, 1, 1), None);
        assert_eq!(pool_out(5, 4, 2), Some((2, 2)));
        assert_eq!(pool_out(1, 4, 2), None);
        assert_eq!(pool_out(4, 4, 0), None);
    }
}
