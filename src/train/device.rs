//! Device selection with an explicit CPU fallback: with the `cuda` feature on and no usable
//! GPU, `Device::cuda_if_available` errors instead of falling back.
//!
//! Imports candle only; no sibling and no other engine module.

use candle_core::Device;

/// The device to train on: CUDA device 0 when `prefer_gpu`, the `cuda` feature is built and a
/// GPU opens; otherwise the CPU. Also returns a human-readable description.
pub fn select(prefer_gpu: bool) -> (Device, String) {
    #[cfg(feature = "cuda")]
    if prefer_gpu {
        match Device::new_cuda(0) {
            Ok(d) => return (d, "cuda:0".to_string()),
            Err(e) => {
                return (
                    Device::Cpu,
                    format!(
                        "cpu ({} threads; CUDA unavailable: {e})",
                        rayon::current_num_threads()
                    ),
                )
            }
        }
    }
    let _ = prefer_gpu;
    (
        Device::Cpu,
        format!("cpu ({} threads)", rayon::current_num_threads()),
    )
}
