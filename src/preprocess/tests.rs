//! Reduced decoding against the exact path, on real radiographs and a generated smooth one. It
//! does NOT hold 2/255 (the goal of issue 19): each block reduced to the means of its cells (a
//! box filter) before the antialiased resampling is not the resampling alone, and the largest
//! absolute difference reaches 7/255 (technique 1) and 11/255 (technique 2) on the real samples
//! and 19/255 at the sharp edges of the generated set (means 0.12-0.24/255 per real image, up
//! to 0.94/255 on the generated ones), so exact decoding stays the
//! default and reduced is opt-in (the benchmark's `--decoding`, `run_using`). Draft decoding
//! (reduced only down to the target size) does more of the downscale with box means and is
//! further off: up to 33/255 at the real samples' sharpest edges (their burnt-in labels), means
//! 0.20-0.56/255 per real image, 1.46/255 on the generated ones. These tests bound what each
//! gives, so a regression (a wrong scale, a shifted grid) fails.

use super::*;

/// (largest, mean) |reduced - exact| over the output values of technique `t` for `path`, in
/// levels of 255.
fn differences(path: &Path, t: Technique, decoding: Decoding) -> (u8, f64) {
    let limits = ImportLimits::default();
    let exact = load_image_using(path, t, &limits, Decoding::Exact).unwrap();
    let reduced = load_image_using(path, t, &limits, decoding).unwrap();
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
fn check(path: &Path, decoding: Decoding, largest: u8, mean_below: f64) {
    for t in [Technique::T1, Technique::T2] {
        let (worst, mean) = differences(path, t, decoding);
        println!(
            "{}: technique {}, {}: largest {worst}/255, mean {mean:.3}/255",
            path.display(),
            t.number(),
            decoding.name()
        );
        assert!(
            worst <= largest && mean < mean_below,
            "{}: technique {} {} differs from exact by up to {worst}/255, {mean:.3} on average",
            path.display(),
            t.number(),
            decoding.name()
        );
    }
}

#[test]
fn reduced_decoding_is_close_to_exact_on_a_generated_smooth_radiograph() {
    let dir = tempfile::tempdir().unwrap();
    let files = bench::generate(dir.path(), bench::ImageSet::Smooth, 2).unwrap();
    for f in &files {
        check(f, Decoding::Reduced, 24, 1.2);
        check(f, Decoding::Draft, 24, 2.0);
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
        check(f, Decoding::Reduced, 12, 0.3);
        check(f, Decoding::Draft, 40, 0.7);
    }
}
