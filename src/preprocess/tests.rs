//! Reduced decoding against the exact path, on real radiographs and a generated smooth one. It
//! does NOT hold 2/255 (the goal of issue 19): each block reduced to the means of its cells (a
//! box filter) before the antialiased resampling is not the resampling alone, and the largest
//! absolute difference reaches 7/255 (technique 1) and 11/255 (technique 2) on the real samples
//! and 19/255 at the sharp edges of the generated set (means 0.12-0.24/255 per real image, up
//! to 0.94/255 on the generated ones), so exact decoding stays the
//! default and reduced is opt-in (the benchmark's `--decoding`, `run_using`). These tests bound
//! what reduced decoding does give, so a regression (a wrong scale, a shifted grid) fails.

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

/// Holds both techniques to at most `largest`/255 and a mean under `mean`/255.
fn check(path: &Path, largest: u8, mean_below: f64) {
    for t in [Technique::T1, Technique::T2] {
        let (worst, mean) = differences(path, t);
        println!(
            "{}: technique {}: largest {worst}/255, mean {mean:.3}/255",
            path.display(),
            t.number()
        );
        assert!(
            worst <= largest && mean < mean_below,
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
        check(f, 24, 1.2);
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
        check(f, 12, 0.3);
    }
}
