//! Protocol and end-to-end tests: every secure result is compared with an independent plaintext
//! computation (wrapping integer arithmetic, or `NetworkSpec::forward`).

use super::context::Party;
use super::error::Result;
use super::fixed::FixedPoint;
use super::layers::{avg_pool, max_pool};
use super::protocol::{max, msb, mul, relu, reshare_from_two, select, trunc, SignBits};
use super::share::{deal, open, open_bits, BitShare};
use super::transport::{InMemoryTransport, Transport};
use super::*;
use crate::model::arch::random_spec;
use crate::model::spec::pneumonia_probability;
use crate::model::{Layer, ModelKind, NetworkSpec};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::sync::{Arc, Mutex};

/// Test data generator with a fixed seed (not for shares in production).
fn test_rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// Runs `f` as parties 0, 1 and 2 on three threads connected in memory.
fn run3<R: Send>(f: impl Fn(&mut Party<InMemoryTransport>) -> Result<R> + Sync) -> [R; 3] {
    let ts = InMemoryTransport::triple();
    let out: Vec<R> = std::thread::scope(|s| {
        let hs: Vec<_> = ts
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                let f = &f;
                s.spawn(move || {
                    let mut p = Party::setup(PartyId::ALL[i], t)?;
                    f(&mut p)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("party thread").expect("party result"))
            .collect()
    });
    out.try_into().unwrap_or_else(|_| unreachable!())
}

fn signed(v: &[u64]) -> Vec<i64> {
    v.iter().map(|&x| x as i64).collect()
}

/// Whether `words` look uniformly random: each of the 64 bit positions is set in 40-60% of
/// them (a fixed or masked-by-zero message fails at once).
fn looks_uniform(words: &[u64]) -> bool {
    (0..64).all(|b| {
        let ones = words.iter().filter(|w| (*w >> b) & 1 == 1).count();
        (ones * 10 >= words.len() * 4) && (ones * 10 <= words.len() * 6)
    })
}

#[test]
fn resharing_from_two_parties_is_correct_and_shows_only_random_words() {
    let mut rng = test_rng(41);
    let z1: Vec<u64> = (0..2000).map(|_| rng.random()).collect();
    // Party 2's part is all zeros: the worst case for what party 1 receives from it.
    let z2 = vec![0u64; 2000];
    let shares = run3(|p| {
        let z = match p.id().index() {
            0 => vec![0; 2000],
            1 => z1.clone(),
            _ => z2.clone(),
        };
        reshare_from_two(p, z)
    });
    let want: Vec<u64> = z1
        .iter()
        .zip(&z2)
        .map(|(a, b)| a.wrapping_add(*b))
        .collect();
    assert_eq!(open(&shares).unwrap(), want);
    // Party 1 received `c_2 - (z_1 - c_1)` from party 2, party 2 received `c_2 - (z_2 - c_0)`
    // from party 1: both must be uniformly random although z_2 is zero.
    let (s1, s2) = (&shares[1], &shares[2]);
    let at_1: Vec<u64> = (0..2000)
        .map(|e| s1.next()[e].wrapping_sub(z1[e].wrapping_sub(s1.own()[e])))
        .collect();
    let at_2: Vec<u64> = (0..2000)
        .map(|e| s2.own()[e].wrapping_sub(z2[e].wrapping_sub(s2.next()[e])))
        .collect();
    assert!(looks_uniform(&at_1), "party 1's view is not random");
    assert!(looks_uniform(&at_2), "party 2's view is not random");
    assert!(!looks_uniform(&z2));
}

#[test]
fn multiplication_matches_ring_product() {
    let mut rng = test_rng(1);
    let x: Vec<u64> = (0..1000).map(|_| rng.random()).collect();
    let y: Vec<u64> = (0..1000).map(|_| rng.random()).collect();
    let (xs, ys) = (deal(&x, &mut rng), deal(&y, &mut rng));
    let z = run3(|p| mul(p, &xs[p.id().index()], &ys[p.id().index()]));
    let want: Vec<u64> = x.iter().zip(&y).map(|(a, b)| a.wrapping_mul(*b)).collect();
    assert_eq!(open(&z).unwrap(), want);
}

#[test]
fn trunc_error_is_at_most_one_ulp() {
    let mut rng = test_rng(2);
    let x: Vec<u64> = (0..20_000)
        .map(|_| rng.random_range(-(1i64 << 32)..(1i64 << 32)) as u64)
        .collect();
    let xs = deal(&x, &mut rng);
    for bits in [2u32, 12, 20] {
        let y = open(&run3(|p| trunc(p, &xs[p.id().index()], bits))).unwrap();
        assert_truncated(&y, &x, bits);
        // Stochastic rounding: the mean error is 2^-bits (the low bits' carry), not half a
        // unit either way.
        let mean_error = signed(&y)
            .iter()
            .zip(signed(&x))
            .map(|(got, want)| *got as f64 - want as f64 / (1u64 << bits) as f64)
            .sum::<f64>()
            / x.len() as f64;
        let expected = 1.0 / (1u64 << bits) as f64;
        assert!(
            (mean_error - expected).abs() < 0.05,
            "bits {bits}: mean error {mean_error}, expected {expected}"
        );
    }
}

/// `floor(x / 2^bits)` or one more: the contract of [`trunc`] on its whole range.
fn assert_truncated(got: &[u64], x: &[u64], bits: u32) {
    for (got, want) in signed(got).iter().zip(signed(x)) {
        let floor = want >> bits;
        assert!(
            (0..=1).contains(&(got.wrapping_sub(floor))),
            "{want} >> {bits}: got {got}, floor {floor}"
        );
    }
}

#[test]
fn trunc_is_exact_at_the_range_bounds() {
    use super::protocol::TRUNC_RANGE;
    let (lo, hi) = TRUNC_RANGE;
    let mut rng = test_rng(3);
    // The bounds themselves, their neighbours, zero, and values spread over the whole range on
    // a log scale (so both tiny and huge magnitudes appear), each dealt with fresh randomness.
    let mut x: Vec<i64> = vec![lo, lo + 1, hi - 1, hi - 2, -1, 0, 1, lo / 2, hi / 2];
    for _ in 0..20_000 {
        let magnitude = rng.random_range(0..62u32);
        let v = rng.random_range(0..(1i64 << magnitude).max(1));
        x.push(if rng.random() { v } else { -v });
        x.push(rng.random_range(lo..hi));
        x.push(if rng.random() { lo + v } else { hi - 1 - v });
    }
    let x: Vec<u64> = x.into_iter().map(|v| v as u64).collect();
    let xs = deal(&x, &mut rng);
    for bits in [1u32, 14, 18, 32, 61, 62] {
        let y = run3(|p| trunc(p, &xs[p.id().index()], bits));
        assert_truncated(&open(&y).unwrap(), &x, bits);
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Any value of the range, any dealing, any shift: never more than one unit off.
    #[test]
    fn trunc_holds_for_any_value_and_dealing(
        v in super::protocol::TRUNC_RANGE.0..super::protocol::TRUNC_RANGE.1,
        seed in proptest::prelude::any::<u64>(),
        bits in 1u32..=62,
    ) {
        let mut rng = test_rng(seed);
        let x = [v as u64, (v / 3) as u64, v.wrapping_neg().max(super::protocol::TRUNC_RANGE.0) as u64];
        let xs = deal(&x, &mut rng);
        let y = run3(|p| trunc(p, &xs[p.id().index()], bits));
        assert_truncated(&open(&y).unwrap(), &x, bits);
    }
}

#[test]
fn trunc_never_wraps_near_the_bound() {
    // The one-round truncation this protocol replaced failed with probability |x| / 2^64: at
    // |x| = 2^62 one element in four. Ten million truncations of values within 2^20 of either
    // bound (fresh dealing and fresh protocol randomness for every chunk) must all be exact.
    use super::protocol::TRUNC_RANGE;
    let (lo, hi) = TRUNC_RANGE;
    let mut rng = test_rng(5);
    let chunk = 1 << 20;
    let mut checked = 0usize;
    while checked < 10_000_000 {
        let x: Vec<u64> = (0..chunk)
            .map(|i| {
                let d = rng.random_range(0..1i64 << 20);
                (if i % 2 == 0 { lo + d } else { hi - 1 - d }) as u64
            })
            .collect();
        let xs = deal(&x, &mut rng);
        let y = run3(|p| trunc(p, &xs[p.id().index()], 18));
        assert_truncated(&open(&y).unwrap(), &x, 18);
        checked += chunk;
    }
}

#[test]
fn trunc_by_zero_is_the_identity_and_too_many_bits_are_refused() {
    let mut rng = test_rng(6);
    let x: Vec<u64> = (0..100).map(|_| rng.random()).collect();
    let xs = deal(&x, &mut rng);
    let y = run3(|p| trunc(p, &xs[p.id().index()], 0));
    assert_eq!(open(&y).unwrap(), x);
    let errs = run3(|p| Ok(trunc(p, &xs[p.id().index()], 63).is_err()));
    assert_eq!(errs, [true; 3]);
}

#[test]
fn sign_bit_on_edge_and_random_values() {
    let mut rng = test_rng(4);
    let mut x: Vec<u64> = vec![
        0,
        1,
        u64::MAX, // -1
        i64::MAX as u64,
        i64::MIN as u64,
        (i64::MIN + 1) as u64,
        (i64::MAX - 1) as u64,
        1 << 62,
        (1u64 << 62).wrapping_neg(),
    ];
    x.extend((0..1000).map(|_| rng.random::<u64>()));
    x.extend((0..100).map(|_| rng.random_range(-5i64..5) as u64));
    let xs = deal(&x, &mut rng);
    let b: [BitShare; 3] = run3(|p| msb(p, &xs[p.id().index()], SignBits::FULL));
    let got = open_bits(&b).unwrap();
    for (g, v) in got.iter().zip(&x) {
        assert_eq!(*g, (v >> 63) == 1, "sign of {}", *v as i64);
    }
}

/// At every narrower width `k` the sign is right on the whole range `-2^(k-1) .. 2^(k-1)` (its
/// ends, zero, and random values inside), and wrong just outside it: the circuit really works
/// in the narrow ring, so a width must come with a bound (`super::bounds`).
#[test]
fn narrow_sign_bits_are_right_inside_their_range_and_only_there() {
    let mut rng = test_rng(44);
    for k in [2u32, 3, 5, 8, 17, 24, 32, 33, 40, 63] {
        let width = SignBits::new(k).unwrap();
        let half = 1i64 << (k - 1);
        let mut inside: Vec<i64> = vec![0, 1, -1, half - 1, -half, half / 2, -half / 2];
        inside.extend((0..300).map(|_| rng.random_range(-half..half)));
        let outside = [half, -half - 1, half + half / 2];
        let x: Vec<u64> = inside.iter().chain(&outside).map(|v| *v as u64).collect();
        let xs = deal(&x, &mut rng);
        let b: [BitShare; 3] = run3(|p| msb(p, &xs[p.id().index()], width));
        let got = open_bits(&b).unwrap();
        for (g, v) in got.iter().zip(&inside) {
            assert!(width.holds(*v));
            assert_eq!(*g, *v < 0, "sign of {v} at {k} bits");
        }
        for (g, v) in got[inside.len()..].iter().zip(&outside) {
            assert!(!width.holds(*v));
            assert_ne!(
                *g,
                *v < 0,
                "{v} is outside {k} bits, its sign cannot be read there"
            );
        }
    }
    assert!(SignBits::new(1).is_err() && SignBits::new(65).is_err());
}

/// The narrower the ring, the fewer bits sent and rounds taken (the point of the widths).
#[test]
fn narrow_sign_bits_send_less() {
    let mut rng = test_rng(45);
    let x: Vec<u64> = (0..640)
        .map(|_| rng.random_range(-1000i64..1000) as u64)
        .collect();
    let xs = deal(&x, &mut rng);
    let cost = |k: u32| {
        let width = SignBits::new(k).unwrap();
        let sent = run3(|p| {
            let before = p.stats();
            msb(p, &xs[p.id().index()], width)?;
            let spent = p.stats().since(&before);
            Ok((spent.bytes_sent, spent.rounds))
        });
        (sent.iter().map(|s| s.0).sum::<u64>(), sent[0].1)
    };
    let (full, narrow) = (cost(64), cost(24));
    // 640 elements are 10 words per plane: 64 + 2 * 63 + 3 * 118 planes at full width,
    // 24 + 2 * 23 + 3 * 39 at 24 bits, 8 bytes per word.
    assert_eq!(full.0, (64 + 2 * 63 + 3 * 118) * 10 * 8);
    assert_eq!(narrow.0, (24 + 2 * 23 + 3 * 39) * 10 * 8);
    assert!(narrow.1 < full.1, "rounds {narrow:?} vs {full:?}");
}

/// A transport that keeps a copy of every message its party receives.
struct Recording {
    inner: InMemoryTransport,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Transport for Recording {
    fn send(&mut self, to: PartyId, data: Vec<u8>) -> Result<()> {
        self.inner.send(to, data)
    }
    fn recv(&mut self, from: PartyId) -> Result<Vec<u8>> {
        let data = self.inner.recv(from)?;
        self.seen.lock().unwrap().push(data.clone());
        Ok(data)
    }
}

/// `select` gives `x * b` for every bit, and what each party receives in it looks uniformly
/// random although every `x` is the same small value and the bits follow a fixed pattern.
#[test]
fn select_is_exact_and_every_party_sees_only_random_words() {
    let n = 4000;
    let mut rng = test_rng(47);
    let x: Vec<u64> = vec![5 << 14; n];
    let bits: Vec<bool> = (0..n).map(|e| e % 3 == 0).collect();
    let xs = deal(&x, &mut rng);
    // A boolean sharing of the bits: two random words, the third their XOR with the bits.
    let ch = n.div_ceil(64);
    let packed: Vec<u64> = (0..ch)
        .map(|c| {
            (0..64)
                .filter(|i| bits.get(c * 64 + i) == Some(&true))
                .fold(0, |w, i| w | 1 << i)
        })
        .collect();
    let b0: Vec<u64> = (0..ch).map(|_| rng.random()).collect();
    let b1: Vec<u64> = (0..ch).map(|_| rng.random()).collect();
    let b2: Vec<u64> = (0..ch).map(|c| packed[c] ^ b0[c] ^ b1[c]).collect();
    let parts = [b0, b1, b2];
    let bs: [BitShare; 3] = std::array::from_fn(|i| {
        BitShare::new(parts[i].clone(), parts[(i + 1) % 3].clone(), n).unwrap()
    });
    let seen: [Arc<Mutex<Vec<Vec<u8>>>>; 3] = Default::default();
    let ts = InMemoryTransport::triple();
    let out: Vec<ArithShare> = std::thread::scope(|s| {
        let hs: Vec<_> = ts
            .into_iter()
            .enumerate()
            .map(|(i, inner)| {
                let t = Recording {
                    inner,
                    seen: seen[i].clone(),
                };
                let (xs, bs) = (&xs[i], &bs[i]);
                s.spawn(move || {
                    let mut p = Party::setup(PartyId::ALL[i], t).unwrap();
                    select(&mut p, xs, bs).unwrap()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let out: [ArithShare; 3] = out.try_into().unwrap_or_else(|_| unreachable!());
    let got = open(&out).unwrap();
    for (e, g) in got.iter().enumerate() {
        assert_eq!(*g, if bits[e] { 5 << 14 } else { 0 }, "element {e}");
    }
    for (i, seen) in seen.iter().enumerate() {
        // The 32-byte PRG seed of the setup aside, every message is a vector of words.
        let msgs: Vec<Vec<u64>> = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.len() > 32)
            .map(|m| {
                m.chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
                    .collect()
            })
            .collect();
        // Party 1 receives the two masked words per element, then the resharing; the others
        // only the resharing.
        assert_eq!(msgs.len(), if i == 1 { 2 } else { 1 }, "party {i}");
        for m in &msgs {
            assert!(m.len() >= n, "party {i}: {} words", m.len());
            assert!(
                looks_uniform(m),
                "party {i} received words that are not random"
            );
        }
        if i == 1 {
            // Each half on its own, and their difference: two halves masked alike would cancel.
            let (m1, m2) = msgs[0].split_at(n);
            let diff: Vec<u64> = m1.iter().zip(m2).map(|(a, b)| a.wrapping_sub(*b)).collect();
            for (what, words) in [
                ("first half", m1),
                ("second half", m2),
                ("difference", &diff),
            ] {
                assert!(looks_uniform(words), "party 1's {what} is not random");
            }
        }
    }
    assert!(!looks_uniform(&x));
}

#[test]
fn relu_and_max_are_exact() {
    let mut rng = test_rng(5);
    let fp = FixedPoint::default();
    let a: Vec<u64> = (0..777)
        .map(|_| fp.constant(rng.random_range(-50.0..50.0)))
        .collect();
    let mut b: Vec<u64> = (0..777)
        .map(|_| fp.constant(rng.random_range(-50.0..50.0)))
        .collect();
    b[0] = a[0]; // a tie
    let (sa, sb) = (deal(&a, &mut rng), deal(&b, &mut rng));
    // Differences are below 100 * 2^14 < 2^21: 24 bits hold them.
    for width in [SignBits::FULL, SignBits::new(24).unwrap()] {
        let r = run3(|p| relu(p, &sa[p.id().index()], width));
        let m = run3(|p| max(p, &sa[p.id().index()], &sb[p.id().index()], width));
        let (r, m) = (signed(&open(&r).unwrap()), signed(&open(&m).unwrap()));
        for i in 0..a.len() {
            assert_eq!(r[i], (a[i] as i64).max(0), "{width:?}");
            assert_eq!(m[i], (a[i] as i64).max(b[i] as i64), "{width:?}");
        }
    }
}

/// A batch of 2 images x 3 channels of 5x4 values, with pooling windows of 2 (odd height).
fn pool_input(rng: &mut ChaCha20Rng) -> (Vec<i64>, (usize, usize, usize)) {
    let dims = (2 * 3, 5, 4);
    let x = (0..dims.0 * dims.1 * dims.2)
        .map(|_| rng.random_range(-100_000i64..100_000))
        .collect();
    (x, dims)
}

fn pool_ref(
    x: &[i64],
    (planes, h, w): (usize, usize, usize),
    s: usize,
    f: impl Fn(&[i64]) -> i64,
) -> Vec<i64> {
    let mut out = Vec::new();
    for pl in 0..planes {
        for i in 0..h / s {
            for j in 0..w / s {
                let win: Vec<i64> = (0..s * s)
                    .map(|q| x[pl * h * w + (i * s + q / s) * w + j * s + q % s])
                    .collect();
                out.push(f(&win));
            }
        }
    }
    out
}

#[test]
fn max_pool_with_and_without_relu() {
    let mut rng = test_rng(6);
    let (x, dims) = pool_input(&mut rng);
    let xs = deal(&x.iter().map(|v| *v as u64).collect::<Vec<_>>(), &mut rng);
    // Values below 10^5 < 2^17, differences below 2^18: 24 bits hold them.
    for (relu, width) in [
        (false, SignBits::FULL),
        (true, SignBits::FULL),
        (false, SignBits::new(24).unwrap()),
        (true, SignBits::new(24).unwrap()),
    ] {
        let y = run3(|p| max_pool(p, &xs[p.id().index()], dims, 2, relu, width));
        let want = pool_ref(&x, dims, 2, |w| {
            let m = *w.iter().max().unwrap_or(&0);
            if relu {
                m.max(0)
            } else {
                m
            }
        });
        assert_eq!(signed(&open(&y).unwrap()), want, "relu {relu}");
    }
    // A 3x3 window has an odd number of elements per tree level.
    let y = run3(|p| max_pool(p, &xs[p.id().index()], dims, 3, false, SignBits::FULL));
    let want = pool_ref(&x, dims, 3, |w| *w.iter().max().unwrap_or(&0));
    assert_eq!(signed(&open(&y).unwrap()), want);
}

#[test]
fn avg_pool_within_one_ulp() {
    let mut rng = test_rng(7);
    let (x, dims) = pool_input(&mut rng);
    let xs = deal(&x.iter().map(|v| *v as u64).collect::<Vec<_>>(), &mut rng);
    let y = run3(|p| avg_pool(p, &xs[p.id().index()], dims, 2, 12));
    let want = pool_ref(&x, dims, 2, |w| w.iter().sum::<i64>().div_euclid(4));
    for (g, w) in signed(&open(&y).unwrap()).iter().zip(&want) {
        assert!((0..=1).contains(&(g - w)), "got {g}, floor {w}");
    }
    // 3x3 goes through the public constant 1/9 and a truncation by the fractional bits.
    let y = run3(|p| avg_pool(p, &xs[p.id().index()], dims, 3, 12));
    let want = pool_ref(&x, dims, 3, |w| w.iter().sum::<i64>() / 9);
    for (g, w) in signed(&open(&y).unwrap()).iter().zip(&want) {
        // |error| <= sum * |1/9 - round(4096/9)/4096| + 1 ulp.
        assert!((g - w).abs() <= 2 + w.abs() / 4000, "got {g}, want {w}");
    }
}

// ---------------------------------------------------------------- networks against f32

fn images(spec: &NetworkSpec, n: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = test_rng(seed);
    (0..n)
        .map(|_| (0..spec.input_len()).map(|_| rng.random::<f32>()).collect())
        .collect()
}

/// Runs `spec` securely and checks every logit against the f32 reference within `tol`.
fn check_against_forward(
    spec: &NetworkSpec,
    imgs: &[Vec<f32>],
    batch: usize,
    tol: f32,
) -> SimulationReport {
    let rep = simulate(spec, imgs, batch).unwrap();
    assert_eq!(rep.logits.len(), imgs.len());
    for (im, got) in imgs.iter().zip(&rep.logits) {
        let want = spec.forward(im).unwrap();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() <= tol * (1.0 + w.abs()),
                "{}: got {got:?}, want {want:?}",
                spec.name
            );
        }
    }
    rep
}

/// Same predicted class on every image and pneumonia probability within 1e-2.
fn check_predictions(spec: &NetworkSpec, imgs: &[Vec<f32>], batch: usize) -> SimulationReport {
    let rep = simulate(spec, imgs, batch).unwrap();
    for (im, got) in imgs.iter().zip(&rep.logits) {
        let want = spec.forward(im).unwrap();
        let (pg, pw) = (pneumonia_probability(got), pneumonia_probability(&want));
        assert!(
            (pg - pw).abs() < 1e-2,
            "{}: probability {pg} vs {pw} ({got:?} vs {want:?})",
            spec.name
        );
        // The reference must not be a near-tie, or the class check would test rounding only.
        assert!(
            (want[0] - want[1]).abs() > 0.05,
            "{}: near-tie test image {want:?}",
            spec.name
        );
        assert_eq!(got[0] > got[1], want[0] > want[1], "{}: class", spec.name);
    }
    rep
}

fn conv_layer(rng: &mut ChaCha20Rng, i: usize, o: usize, k: usize, padding: usize) -> Layer {
    Layer::Conv2d {
        in_channels: i,
        out_channels: o,
        kernel: k,
        padding,
        weight: (0..o * i * k * k)
            .map(|_| rng.random_range(-0.5..0.5))
            .collect(),
        bias: (0..o).map(|_| rng.random_range(-0.2..0.2)).collect(),
    }
}

fn dense_layer(rng: &mut ChaCha20Rng, i: usize, o: usize) -> Layer {
    Layer::Dense {
        in_features: i,
        out_features: o,
        weight: (0..o * i).map(|_| rng.random_range(-0.3..0.3)).collect(),
        bias: (0..o).map(|_| rng.random_range(-0.2..0.2)).collect(),
    }
}

#[test]
fn convolution_with_and_without_padding() {
    let mut rng = test_rng(8);
    let spec = NetworkSpec {
        name: "conv".into(),
        input: [2, 9, 7],
        layers: vec![
            conv_layer(&mut rng, 2, 3, 3, 1),
            conv_layer(&mut rng, 3, 5, 3, 0),
        ],
    };
    check_against_forward(&spec, &images(&spec, 3, 9), 2, 2e-3);
}

#[test]
fn dense_layers() {
    let mut rng = test_rng(10);
    let spec = NetworkSpec {
        name: "dense".into(),
        input: [1, 6, 5],
        layers: vec![
            Layer::Flatten,
            dense_layer(&mut rng, 30, 17),
            Layer::Relu,
            dense_layer(&mut rng, 17, 2),
        ],
    };
    check_against_forward(&spec, &images(&spec, 4, 11), 4, 2e-3);
}

#[test]
fn every_layer_kind_runs() {
    // BatchNorm after a convolution (folded) and after a ReLU (secure affine step), dropout,
    // both poolings, ReLU before max pooling (reordered), flatten and dense.
    let mut rng = test_rng(12);
    let bn = |rng: &mut ChaCha20Rng, c: usize| Layer::BatchNorm2d {
        gamma: (0..c).map(|_| rng.random_range(0.5..1.5)).collect(),
        beta: (0..c).map(|_| rng.random_range(-0.3..0.3)).collect(),
        mean: (0..c).map(|_| rng.random_range(-0.2..0.2)).collect(),
        var: (0..c).map(|_| rng.random_range(0.5..2.0)).collect(),
        eps: 1e-5,
    };
    let spec = NetworkSpec {
        name: "all-layers".into(),
        input: [1, 12, 10],
        layers: vec![
            conv_layer(&mut rng, 1, 4, 3, 1),
            bn(&mut rng, 4),
            Layer::Relu,
            Layer::MaxPool2d { size: 2 },
            conv_layer(&mut rng, 4, 4, 3, 0),
            Layer::Relu,
            bn(&mut rng, 4),
            Layer::AvgPool2d { size: 2 },
            Layer::Dropout { p: 0.5 },
            Layer::Flatten,
            dense_layer(&mut rng, 8, 6), // 4 channels x 2 x 1 after both poolings
            Layer::Relu,
            Layer::Dropout { p: 0.5 },
            dense_layer(&mut rng, 6, 2),
        ],
    };
    let models = share_model_os(&spec, FixedPoint::default()).unwrap();
    let kinds: Vec<&str> = models[0].ops().iter().map(|o| o.kind()).collect();
    assert_eq!(
        kinds,
        [
            "conv",
            "maxpool+relu",
            "conv",
            "relu",
            "channel-affine",
            "avgpool",
            "dense",
            "relu",
            "dense"
        ]
    );
    check_against_forward(&spec, &images(&spec, 3, 13), 3, 3e-3);
}

#[test]
fn dnn_av_predictions_match_plaintext() {
    let spec = random_spec(ModelKind::DnnAv, 1.0, 21);
    check_predictions(&spec, &images(&spec, 2, 22), 2);
}

#[test]
fn dnn_max_predictions_match_plaintext() {
    let spec = random_spec(ModelKind::DnnMax, 1.0, 23);
    let rep = check_predictions(&spec, &images(&spec, 2, 24), 1);
    // Two batches of one image: the rounds of one inference, twice.
    assert_eq!(rep.rounds % 2, 0);
}

#[test]
fn vgg16_small_width_predictions_match_plaintext() {
    let spec = random_spec(ModelKind::Vgg16_1, 1.0 / 16.0, 25);
    check_predictions(&spec, &images(&spec, 2, 26), 2);
}

/// Values at the edge of the width the owner's bound chose: a dense layer whose weights are all
/// `+w` for output 0 and `-w` for output 1, on an all-ones image, puts `+-16 w` (plus the bias)
/// into the ReLU, within a few units of the bound itself. With `w = 31.9` that is 8.36e6 of the
/// 2^23 = 8.39e6 a 24-bit ring holds; a ReLU that read the sign one bit too narrow would zero
/// the positive value or pass the negative one.
#[test]
fn values_at_the_bound_of_a_narrow_width_are_compared_right() {
    let w = 31.9f32;
    let spec = NetworkSpec {
        name: "edge".into(),
        input: [1, 4, 4],
        layers: vec![
            Layer::Flatten,
            Layer::Dense {
                in_features: 16,
                out_features: 2,
                weight: [vec![w; 16], vec![-w; 16]].concat(),
                bias: vec![0.0, 0.0],
            },
            Layer::Relu,
        ],
    };
    let models = share_model(&spec, FixedPoint::default(), &mut test_rng(46)).unwrap();
    let widths: Vec<u32> = models[0]
        .ops()
        .iter()
        .filter_map(|op| match op {
            model::SecureOp::Relu { sign } => Some(sign.get()),
            _ => None,
        })
        .collect();
    assert_eq!(widths, [24]);
    let ones = vec![1.0f32; 16];
    let want = spec.forward(&ones).unwrap();
    assert!(want[0] > 8.3e6 / 16384.0 && want[1] == 0.0, "{want:?}");
    let rep = simulate(&spec, &[ones], 1).unwrap();
    for (g, w) in rep.logits[0].iter().zip(&want) {
        assert!(
            (g - w).abs() < 1e-3,
            "got {:?}, want {want:?}",
            rep.logits[0]
        );
    }
}

#[test]
fn batching_shares_rounds() {
    let mut rng = test_rng(14);
    let spec = NetworkSpec {
        name: "small".into(),
        input: [1, 8, 8],
        layers: vec![
            conv_layer(&mut rng, 1, 2, 3, 0),
            Layer::Relu,
            Layer::MaxPool2d { size: 2 },
            Layer::Flatten,
            dense_layer(&mut rng, 18, 2),
        ],
    };
    let imgs = images(&spec, 4, 15);
    let one = check_against_forward(&spec, &imgs[..1], 1, 2e-3);
    let four = check_against_forward(&spec, &imgs, 4, 2e-3);
    assert_eq!(
        one.rounds, four.rounds,
        "a batch costs the rounds of one image"
    );
    assert!(four.bytes_between_parties > one.bytes_between_parties);
}

// ---------------------------------------------------------------- what one party sees

#[test]
fn input_shares_are_fresh_and_uniform() {
    let fp = FixedPoint::default();
    let image: Vec<f32> = (0..64 * 64).map(|i| (i % 7) as f32 / 7.0).collect();
    let a = share_input_os(&image, [1, 64, 64], fp).unwrap();
    let b = share_input_os(&image, [1, 64, 64], fp).unwrap();
    for party in 0..3 {
        let (sa, sb) = (a[party].share(), b[party].share());
        // A new request gives the party entirely new values.
        let same = sa
            .own()
            .iter()
            .zip(sb.own())
            .filter(|(x, y)| x == y)
            .count();
        assert_eq!(same, 0, "party {party} saw repeated share words");
        // Bit balance and a chi-square test on byte values of everything the party holds.
        let words: Vec<u64> = sa.own().iter().chain(sa.next()).copied().collect();
        let ones: u64 = words.iter().map(|w| u64::from(w.count_ones())).sum();
        let bits = 64.0 * words.len() as f64;
        let z = (ones as f64 - bits / 2.0) / (bits / 4.0).sqrt();
        assert!(z.abs() < 5.0, "bit balance z = {z}");
        let mut counts = [0f64; 256];
        for w in &words {
            for byte in w.to_le_bytes() {
                counts[byte as usize] += 1.0;
            }
        }
        let expected = words.len() as f64 * 8.0 / 256.0;
        let chi2: f64 = counts
            .iter()
            .map(|c| (c - expected).powi(2) / expected)
            .sum();
        // 255 degrees of freedom: mean 255, sd 22.6; 400 is beyond 6 sd.
        assert!(chi2 < 400.0, "chi-square {chi2}");
    }
    // The image itself (a repeating pattern) would fail the same test badly.
    let plain: Vec<u64> = fp.encode_slice(&image).unwrap();
    let mut counts = [0f64; 256];
    for w in &plain {
        for byte in w.to_le_bytes() {
            counts[byte as usize] += 1.0;
        }
    }
    let expected = plain.len() as f64 * 8.0 / 256.0;
    let chi2: f64 = counts
        .iter()
        .map(|c| (c - expected).powi(2) / expected)
        .sum();
    assert!(chi2 > 10_000.0, "control chi-square {chi2}");
    // Shares still open to the image.
    let opened = open(&[
        a[0].share().clone(),
        a[1].share().clone(),
        a[2].share().clone(),
    ])
    .unwrap();
    assert_eq!(opened, plain);
}

#[test]
fn output_parts_are_rerandomised() {
    let mut rng = test_rng(16);
    let spec = NetworkSpec {
        name: "tiny".into(),
        input: [1, 4, 4],
        layers: vec![Layer::Flatten, dense_layer(&mut rng, 16, 2)],
    };
    let models = share_model_os(&spec, FixedPoint::default()).unwrap();
    let image = vec![0.5f32; 16];
    let shares = share_input_os(&image, spec.input, FixedPoint::default()).unwrap();
    let run = || {
        run3(|p| {
            let i = p.id().index();
            infer(p, &models[i], std::slice::from_ref(&shares[i]))
        })
    };
    let (first, second) = (run(), run());
    let parts = |r: &[Vec<OutputShare>; 3]| -> [OutputShare; 3] {
        std::array::from_fn(|i| r[i][0].clone())
    };
    let (l1, l2) = (
        reconstruct(&parts(&first)).unwrap(),
        reconstruct(&parts(&second)).unwrap(),
    );
    // Probabilistic truncation may round either way: equal up to one unit in the last place.
    let ulp = 1.0 / FixedPoint::default().scale() as f32;
    for (a, b) in l1.iter().zip(&l2) {
        assert!((a - b).abs() <= ulp * 1.01, "same input, logits {a} vs {b}");
    }
    for i in 0..3 {
        assert_ne!(
            first[i][0].part(),
            second[i][0].part(),
            "party {i} sent the same part twice"
        );
    }
}

// ---------------------------------------------------------------- byte formats

#[test]
fn shares_round_trip_through_bytes() {
    let mut rng = test_rng(17);
    let spec = random_spec(ModelKind::Vgg16_1, 1.0 / 32.0, 3);
    let models = share_model(&spec, FixedPoint::default(), &mut rng).unwrap();
    for m in &models {
        assert_eq!(&PartyModel::from_bytes(&m.to_bytes()).unwrap(), m);
    }
    let inputs = share_input(
        &images(&spec, 1, 18)[0],
        spec.input,
        FixedPoint::default(),
        &mut rng,
    )
    .unwrap();
    for s in &inputs {
        assert_eq!(&InputShare::from_bytes(&s.to_bytes()).unwrap(), s);
    }
    let out = OutputShare::new(PartyId::ALL[2], FixedPoint::default(), vec![1, 2, u64::MAX]);
    assert_eq!(OutputShare::from_bytes(&out.to_bytes()).unwrap(), out);
}

#[test]
fn corrupt_bytes_are_errors_not_panics() {
    let mut rng = test_rng(19);
    let spec = random_spec(ModelKind::DnnAv, 1.0, 4);
    let models = share_model(&spec, FixedPoint::default(), &mut rng).unwrap();
    let bytes = models[1].to_bytes();
    // Every truncation point, sampled.
    for cut in (0..bytes.len())
        .step_by(bytes.len() / 997 + 1)
        .chain([bytes.len() - 1])
    {
        assert!(
            PartyModel::from_bytes(&bytes[..cut]).is_err(),
            "cut at {cut}"
        );
    }
    let mut long = bytes.clone();
    long.push(0);
    assert!(matches!(
        PartyModel::from_bytes(&long),
        Err(MpcError::Decode { .. })
    ));
    let mut bad = bytes.clone();
    bad[0] = b'X';
    assert!(PartyModel::from_bytes(&bad).is_err());
    // A wrong dimension is caught by the shape check, not by a crash later.
    let input = share_input(&[0.0; 4], [1, 2, 2], FixedPoint::default(), &mut rng).unwrap();
    let mut b = input[0].to_bytes();
    b[7] = 3; // first shape dimension 1 -> 3
    assert!(matches!(
        InputShare::from_bytes(&b),
        Err(MpcError::Mismatch { .. })
    ));
    // Huge declared counts are rejected before allocating.
    let mut b = OutputShare::new(PartyId::ALL[0], FixedPoint::default(), vec![1]).to_bytes();
    b[7..15].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(OutputShare::from_bytes(&b).is_err());
}

#[test]
fn mismatched_requests_are_refused() {
    let mut rng = test_rng(20);
    let spec = NetworkSpec {
        name: "tiny".into(),
        input: [1, 4, 4],
        layers: vec![Layer::Flatten, dense_layer(&mut rng, 16, 2)],
    };
    let models = share_model_os(&spec, FixedPoint::default()).unwrap();
    let wrong_shape = share_input_os(&[0.0; 9], [1, 3, 3], FixedPoint::default()).unwrap();
    let errs = run3(|p| {
        let i = p.id().index();
        Ok(infer(p, &models[i], std::slice::from_ref(&wrong_shape[i])).is_err())
    });
    assert_eq!(errs, [true; 3]);
    let bad_shares = [
        OutputShare::new(PartyId::ALL[0], FixedPoint::default(), vec![1]),
        OutputShare::new(PartyId::ALL[0], FixedPoint::default(), vec![1]),
        OutputShare::new(PartyId::ALL[2], FixedPoint::default(), vec![1]),
    ];
    assert!(reconstruct(&bad_shares).is_err());
    assert!(share_input_os(&[f32::NAN; 16], [1, 4, 4], FixedPoint::default()).is_err());
    // A layer with no outputs is refused when the model is shared, not at inference.
    let empty = NetworkSpec {
        name: "empty".into(),
        input: [1, 4, 4],
        layers: vec![Layer::Conv2d {
            in_channels: 1,
            out_channels: 0,
            kernel: 3,
            padding: 0,
            weight: vec![],
            bias: vec![],
        }],
    };
    assert!(matches!(
        share_model_os(&empty, FixedPoint::default()),
        Err(MpcError::Mismatch { .. })
    ));
}

/// The comparison widths hold for inputs in [0, 1] only, so the client refuses any other value
/// (naming it and where it is) instead of sharing it; the ends of the range are accepted.
#[test]
fn input_values_outside_the_bounded_range_are_refused() {
    let fp = FixedPoint::default();
    for bad in [1.5f32, -0.01, f32::NAN, f32::INFINITY] {
        let mut image = vec![0.5f32; 16];
        image[7] = bad;
        let err = share_input_os(&image, [1, 4, 4], fp)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a value in [0, 1]") && err.contains(&format!("{bad} at index 7")),
            "{err}"
        );
    }
    let ends = [vec![0.0f32; 8], vec![1.0f32; 8]].concat();
    assert!(share_input_os(&ends, [1, 4, 4], fp).is_ok());
}
