//! Every layer's backward pinned by finite differences, and every fast op checked against its
//! reference.

use super::*;
use candle_core::{DType, Var};
use rand::{seq::SliceRandom, Rng, SeedableRng};

pub(crate) fn rng(seed: u64) -> rand_chacha::ChaCha8Rng {
    rand_chacha::ChaCha8Rng::seed_from_u64(seed)
}

pub(crate) fn randn(shape: &[usize], seed: u64) -> Tensor {
    let mut r = rng(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| r.random_range(-1.0f32..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Distinct values 0.1 apart in random order, at least 0.05 from 0: no ties or kinks move
/// under the 1e-2 perturbation of [`check_grad`].
fn distinct(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut v: Vec<f32> = (0..n)
        .map(|i| (i as f32 - n as f32 / 2.0 + 0.5) * 0.1)
        .collect();
    v.shuffle(&mut rng(seed));
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Checks d/dx of `sum(f(x) * r)` (r random) from autograd against central differences at
/// every coordinate (or `max_coords` random ones), in f64 arithmetic on the f32 results.
pub(crate) fn check_grad(x0: &Tensor, f: impl Fn(&Tensor) -> Tensor, max_coords: usize, tol: f64) {
    let x = Var::from_tensor(x0).unwrap();
    let y = f(x.as_tensor());
    let r = randn(y.dims(), 99);
    let objective = |t: &Tensor| -> f64 {
        // Summed in f64 so rounding does not swamp the difference quotient.
        let y = f(t).to_dtype(DType::F64).unwrap();
        let r = r.to_dtype(DType::F64).unwrap();
        y.mul(&r)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let g = y
        .mul(&r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap()
        .get(x.as_tensor())
        .expect("gradient reaches the input")
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let base = x0.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mut coords: Vec<usize> = (0..base.len()).collect();
    coords.shuffle(&mut rng(7));
    coords.truncate(max_coords);
    let eps = 1e-2f32;
    for &i in &coords {
        let mut plus = base.clone();
        plus[i] += eps;
        let mut minus = base.clone();
        minus[i] -= eps;
        let tp = Tensor::from_vec(plus, x0.shape(), &Device::Cpu).unwrap();
        let tm = Tensor::from_vec(minus, x0.shape(), &Device::Cpu).unwrap();
        let fd = (objective(&tp) - objective(&tm)) / (2.0 * f64::from(eps));
        let an = f64::from(g[i]);
        assert!(
            (fd - an).abs() <= tol * (1.0 + fd.abs().max(an.abs())),
            "coordinate {i}: finite difference {fd}, autograd {an}"
        );
    }
}

fn assert_close(a: &Tensor, b: &Tensor, tol: f32) {
    assert_eq!(a.dims(), b.dims());
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + x.abs().max(y.abs())),
            "index {i}: {x} vs {y}"
        );
    }
}

#[test]
fn pool_backward_matches_finite_differences_on_odd_sides() {
    for kind in [PoolKind::Max, PoolKind::Avg] {
        for shape in [[2, 3, 7, 5], [1, 2, 6, 9], [1, 1, 2, 2]] {
            let x = distinct(&shape, 1);
            check_grad(&x, |t| pool2d(t, kind, 2).unwrap(), 500, 2e-3);
        }
    }
}

#[test]
fn fast_pool_equals_reference_forward_and_backward() {
    for kind in [PoolKind::Max, PoolKind::Avg] {
        let x = Var::from_tensor(&distinct(&[3, 4, 13, 11], 2)).unwrap();
        let fast = pool2d(&x, kind, 2).unwrap();
        let slow = pool::pool2d_reference(&x, kind, 2).unwrap();
        assert_close(&fast, &slow, 0.0);
        let r = randn(fast.dims(), 3);
        let gf = fast.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
        let gs = slow.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
        assert_close(gf.get(&x).unwrap(), gs.get(&x).unwrap(), 1e-6);
    }
}

#[test]
fn pool_backward_gradient_lands_on_the_argmax() {
    // One window [[1, 4], [3, 2]] plus an odd trailing row and column that must get zero.
    let x = Var::from_tensor(
        &Tensor::new(
            &[[[[1f32, 4., 9.], [3., 2., 9.], [9., 9., 9.]]]],
            &Device::Cpu,
        )
        .unwrap(),
    )
    .unwrap();
    let y = pool2d(&x, PoolKind::Max, 2).unwrap();
    assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), [4.0]);
    let g = y.sum_all().unwrap().backward().unwrap();
    let g = g
        .get(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(g, [0., 1., 0., 0., 0., 0., 0., 0., 0.]);
}

#[test]
fn unfold_equals_reference_and_its_adjoint_is_exact() {
    for (shape, k, p) in [
        ([2, 3, 7, 5], 3, 0),
        ([1, 2, 6, 9], 3, 1),
        ([2, 1, 4, 4], 2, 1),
    ] {
        let x = Var::from_tensor(&randn(&shape, 4)).unwrap();
        let fast = unfold(&x, k, p).unwrap();
        let slow = unfold::unfold_reference(&x, k, p).unwrap();
        assert_close(&fast, &slow, 0.0);
        let r = randn(fast.dims(), 5);
        let gf = fast.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
        let gs = slow.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
        assert_close(gf.get(&x).unwrap(), gs.get(&x).unwrap(), 1e-6);
    }
}

#[test]
fn conv_matches_candle_and_finite_differences() {
    for (shape, o, p) in [([2, 3, 7, 5], 4, 0), ([1, 2, 6, 9], 3, 1)] {
        let x = randn(&shape, 6);
        let w = randn(&[o, shape[1], 3, 3], 7);
        let b = randn(&[o], 8);
        let ours = conv2d(&x, &w, &b, p).unwrap();
        let theirs = x
            .conv2d(&w, p, 1, 1, 1)
            .unwrap()
            .broadcast_add(&b.reshape((1, o, 1, 1)).unwrap())
            .unwrap();
        assert_close(&ours, &theirs, 1e-5);
        check_grad(&x, |t| conv2d(t, &w, &b, p).unwrap(), 200, 2e-3);
        check_grad(&w, |t| conv2d(&x, t, &b, p).unwrap(), 200, 2e-3);
        check_grad(&b, |t| conv2d(&x, &w, t, p).unwrap(), 200, 2e-3);
    }
}

#[test]
fn dense_relu_and_loss_match_finite_differences() {
    let x = distinct(&[4, 6], 9);
    let w = randn(&[3, 6], 10);
    let b = randn(&[3], 11);
    let dense = |x: &Tensor, w: &Tensor, b: &Tensor| {
        x.matmul(&w.t().unwrap()).unwrap().broadcast_add(b).unwrap()
    };
    check_grad(&x, |t| dense(t, &w, &b), 100, 2e-3);
    check_grad(&w, |t| dense(&x, t, &b), 100, 2e-3);
    check_grad(&b, |t| dense(&x, &w, t), 100, 2e-3);
    check_grad(&x, |t| t.relu().unwrap(), 100, 2e-3);
    let labels = Tensor::new(&[0u32, 1, 1, 0], &Device::Cpu).unwrap();
    let logits = randn(&[4, 2], 12);
    let cw = crate::train::loss::ClassWeights::new(3.0, 1.0).unwrap();
    for weights in [None, Some(cw)] {
        check_grad(
            &logits,
            |t| crate::train::loss::cross_entropy(t, &labels, weights.as_ref()).unwrap(),
            100,
            2e-3,
        );
    }
}

/// Forward and every gradient of `fast` against `slow` (both given x, w, b Vars), with a
/// random output weighting.
fn compare_conv(
    x0: &Tensor,
    w0: &Tensor,
    b0: &Tensor,
    track_x: bool,
    fast: impl Fn(&Tensor, &Tensor, &Tensor) -> Tensor,
    slow: impl Fn(&Tensor, &Tensor, &Tensor) -> Tensor,
    what: &str,
) {
    let x = Var::from_tensor(x0).unwrap();
    let w = Var::from_tensor(w0).unwrap();
    let b = Var::from_tensor(b0).unwrap();
    let xin = if track_x {
        x.as_tensor().clone()
    } else {
        x0.clone()
    };
    let yf = fast(&xin, &w, &b);
    let ys = slow(&xin, &w, &b);
    assert_close(&yf, &ys, 1e-5);
    let r = randn(yf.dims(), 13);
    let gf = yf.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
    let gs = ys.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
    for (name, v) in [("weight", &w), ("bias", &b)] {
        let (a, e) = (gf.get(v).unwrap(), gs.get(v).unwrap());
        assert_eq!(a.dims(), e.dims(), "{what}: {name}");
        assert_close(a, e, 1e-4);
    }
    if track_x {
        assert_close(gf.get(&x).unwrap(), gs.get(&x).unwrap(), 1e-4);
    } else {
        assert!(
            gf.get(&x).is_none(),
            "{what}: untracked input got a gradient"
        );
    }
}

/// Every epilogue: none, ReLU, pooling (max/avg, window 2 and 3) with and without ReLU.
fn epilogues() -> Vec<Epilogue> {
    let mut v = vec![Epilogue::NONE];
    for relu in [false, true] {
        for pool in [
            None,
            Some((PoolKind::Max, 2)),
            Some((PoolKind::Avg, 2)),
            Some((PoolKind::Max, 3)),
        ] {
            v.push(Epilogue { relu, pool });
        }
    }
    v.dedup();
    v
}

fn unfused(y: Tensor, e: Epilogue) -> Tensor {
    let y = if e.relu { y.relu().unwrap() } else { y };
    match e.pool {
        Some((kind, s)) => pool::pool2d_reference(&y, kind, s).unwrap(),
        None => y,
    }
}

#[test]
fn fast_conv_equals_reference_forward_and_backward() {
    // Odd sides (dropped pooling rows/columns), padding 0 and 1, kernels 1 to 3, batch 1 (GEMM
    // parallelism inside) and several (examples in parallel).
    for (shape, o, k, p) in [
        ([3, 2, 7, 5], 4, 3, 0),
        ([1, 3, 6, 9], 5, 3, 1),
        ([4, 1, 9, 8], 3, 3, 0),
        ([2, 2, 4, 4], 2, 2, 1),
        ([5, 3, 7, 7], 6, 1, 0),
    ] {
        let c = shape[1];
        // Distinct values: no ties in pooling windows or at the ReLU kink.
        let x = distinct(&shape, 21);
        let w = randn(&[o, c, k, k], 22);
        let b = randn(&[o], 23);
        for e in epilogues() {
            for track_x in [true, false] {
                let what = format!("{shape:?} o={o} k={k} p={p} {e:?} track={track_x}");
                compare_conv(
                    &x,
                    &w,
                    &b,
                    track_x,
                    |x, w, b| conv2d_fused(x, w, b, p, e).unwrap(),
                    |x, w, b| unfused(conv2d_reference(x, w, b, p).unwrap(), e),
                    &what,
                );
            }
        }
    }
}

#[test]
fn fast_per_example_conv_equals_reference_forward_and_backward() {
    for (shape, o, k, p) in [([3, 2, 7, 5], 4, 3, 0), ([1, 3, 6, 9], 5, 3, 1)] {
        let (n, c) = (shape[0], shape[1]);
        let x = distinct(&shape, 31);
        let w = randn(&[n, o, c * k * k], 32);
        let b = randn(&[n, o, 1], 33);
        for e in epilogues() {
            for track_x in [true, false] {
                let what = format!("{shape:?} {e:?} track={track_x}");
                compare_conv(
                    &x,
                    &w,
                    &b,
                    track_x,
                    |x, w, b| conv2d_per_example(x, w, b, k, p, e).unwrap(),
                    |x, w, b| unfused(conv2d_per_example_reference(x, w, b, k, p).unwrap(), e),
                    &what,
                );
            }
        }
    }
}

#[test]
fn conv_reference_matches_candle() {
    let x = randn(&[2, 3, 7, 6], 41);
    let w = randn(&[4, 3, 3, 3], 42);
    let b = randn(&[4], 43);
    for p in [0, 1] {
        let theirs = x
            .conv2d(&w, p, 1, 1, 1)
            .unwrap()
            .broadcast_add(&b.reshape((1, 4, 1, 1)).unwrap())
            .unwrap();
        assert_close(&conv2d_reference(&x, &w, &b, p).unwrap(), &theirs, 1e-5);
    }
}

/// GPU memory must not grow with the number of training steps (run on a GPU machine:
/// `scripts/build-cuda.sh test --release --features cuda -p privxray --lib --no-run`, then the
/// test binary with `cuda_training_memory_is_flat --ignored --nocapture`). Before the optimizer
/// detached its gradients, every step kept its activations alive: dnn-max at batch 16 grew by
/// about 290 MiB per step on an H200 and vgg16-2 ran out of memory within 20 steps.
#[cfg(feature = "cuda")]
#[test]
#[ignore]
fn cuda_training_memory_is_flat() {
    use crate::model::ModelKind;
    use crate::train::{engine, loss, model::Model, optim};
    use candle_core::cuda_backend::cudarc::driver::result::mem_get_info;
    let d = Device::new_cuda(0).unwrap();
    let used = || {
        d.synchronize().unwrap();
        let (free, total) = mem_get_info().unwrap();
        (total - free) >> 20
    };
    for config in [
        optim::OptimizerConfig::adam(1e-4),
        optim::OptimizerConfig::sgd(1e-3, 0.9),
    ] {
        let kind = ModelKind::DnnMax;
        let (m, vm) = Model::init(kind, 1.0, 1, &d).unwrap();
        let vars = engine::model_vars(&m, &vm).unwrap();
        let mut opt = optim::Optimizer::new(config, vars.clone()).unwrap();
        let [c, h, w] = kind.technique().input_shape();
        let x = Tensor::rand(0f32, 1., (16, c, h, w), &d).unwrap();
        let y = Tensor::from_vec(vec![1u32; 16], 16, &d).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut trace = Vec::new();
        for _ in 0..12 {
            let logits = m.forward_with(&x, Some(&mut rng)).unwrap();
            let l = loss::cross_entropy(&logits, &y, None).unwrap();
            let g = l.backward().unwrap();
            let grads: Vec<Tensor> = vars
                .iter()
                .map(|(_, v)| g.get(v.as_tensor()).unwrap().clone())
                .collect();
            opt.step(&grads).unwrap();
            trace.push(used());
        }
        eprintln!("{config:?}: GPU MiB used after each step: {trace:?}");
        // Allow the allocator's pool to settle in the first steps; after that, flat.
        assert!(
            trace[11] <= trace[3] + 64,
            "GPU memory grows with steps: {trace:?}"
        );
    }
}
