//! Reduced decoding against the exact path, on real radiographs and a generated smooth one. It
//! does NOT hold 2/255 (the goal of issue 19): the largest absolute difference reaches 18/255
//! on the real samples (at sharp edges; the mean is 0.1-0.5/255), so exact decoding stays the
//! default and reduced is opt-in (the benchmark's `--decoding`, `run_using`). These tests bound
//! what reduced decoding does give, so a regression (a wrong scale, a shifted grid) fails: the
//! mean absolute difference under 1/255, the largest at most 40/255.

use super::*;

/// (largest, mean) |reduced - exact| over the output values of technique `t` for `path`, in
/// levels of 255.
fn differences(path: &Path, t: Technique) -> (u8, f64) {
    let limits = ImportLimits::default();
    let exact = load_image_using(path, t, &limits, Decoding::Exact).unwrap();
    let reduced = load_image_using(path, t, &limits, Decoding::Reduced).unwrap();
    assert_eq!(exact.len(), reduced.len());
    let d: Vec<u8> = exact
        .iter()
        .zip(&reduced)
        .map(|(a, b)| a.abs_diff(*b))
        .collect();
    let mean = d.iter().map(|&v| v as f64).sum::<f64>() / d.len() as f64;
    (*d.iter().max().unwrap(), mean)
}

fn check(path: &Path) {
    for t in [Technique::T1, Technique::T2] {
        let (worst, mean) = differences(path, t);
        println!(
            "{}: technique {}: largest {worst}/255, mean {mean:.3}/255",
            path.display(),
            t.number()
        );
        assert!(
            worst <= 40 && mean < 1.0,
            "{}: technique {} reduced differs from exact by up to {worst}/255, {mean:.3} on average",
            path.display(),
            t.number()
        );
    }
}

#[test]
fn reduced_decoding_is_close_to_exact_on_a_generated_smooth_radiograph() {
    let dir = tempfile::tempdir().unwrap();
    let files = bench::generate(dir.path(), bench::ImageSet::Smooth, 2).unwrap();
    for f in &files {
        check(f);
    }
}

#[test]
fn reduced_decoding_is_close_to_exact_on_real_radiographs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/kermany-val-sample");
    if !root.exists() {
        println!("NOTICE: {} absent; test skipped", root.display());
        return;
    }
    let files = bench::list_images(&root).unwrap();
    for f in &files {
        check(f);
    }
}
