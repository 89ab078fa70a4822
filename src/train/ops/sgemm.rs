//! The CPU matrix products of the convolution kernels: a bounds-checked wrapper over the
//! `gemm` crate (the kernel candle itself uses), thread-local scratch buffers reused across
//! calls, and how much parallelism to give a GEMM. Imports nothing of the crate.

use gemm::Parallelism;
use std::cell::RefCell;

/// A read-only matrix view: element `(i, j)` at `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(super) struct Mat<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

fn span(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

/// `dst (m x n, row stride dst_rs) = [dst +] a (m x k) * b (k x n)`.
#[allow(clippy::too_many_arguments)]
pub(super) fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    a: Mat,
    b: Mat,
    par: Parallelism,
) {
    // The bounds the raw-pointer GEMM relies on (internal shapes; a failure is a bug here).
    assert!(
        span(m, n, dst_rs, 1) <= dst.len(),
        "sgemm: destination too small"
    );
    assert!(
        span(m, k, a.rs, a.cs) <= a.data.len(),
        "sgemm: lhs too small"
    );
    assert!(
        span(k, n, b.rs, b.cs) <= b.data.len(),
        "sgemm: rhs too small"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                dst[i * dst_rs..i * dst_rs + n].fill(0.0);
            }
        }
        return;
    }
    // SAFETY: every index the GEMM touches, (m-1, n-1) at most, lies within the slices
    // (checked above); `dst` is exclusively borrowed and does not alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

thread_local! {
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Runs `f` with two scratch buffers of the given lengths, reused across calls on this thread
/// (no fresh zeroed pages per step). Contents are arbitrary. If the buffers are in use (a
/// rayon task stolen while this thread waits inside a parallel GEMM), fresh ones are used.
pub(super) fn with_scratch<R>(
    a: usize,
    b: usize,
    f: impl FnOnce(&mut [f32], &mut [f32]) -> R,
) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut s) => {
            let (sa, sb) = &mut *s;
            if sa.len() < a {
                sa.resize(a, 0.0);
            }
            if sb.len() < b {
                sb.resize(b, 0.0);
            }
            f(&mut sa[..a], &mut sb[..b])
        }
        Err(_) => f(&mut vec![0.0; a], &mut vec![0.0; b]),
    })
}

/// Parallelism inside the GEMMs: all threads for a single example, none when the examples
/// themselves are spread over the threads.
pub(super) fn inner_parallelism(examples_in_parallel: bool) -> Parallelism {
    if examples_in_parallel {
        Parallelism::None
    } else {
        Parallelism::Rayon(rayon::current_num_threads())
    }
}
