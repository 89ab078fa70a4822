//! Dataset import and preprocessing: real samples, DICOM, bad input, reference resampling, cache.

use privxray::data::{self, decode_file, Class, Decoded, Label, Split};
use privxray::model::Technique;
use privxray::preprocess::{self, image_len, ImportLimits};
use std::fs;
use std::path::{Path, PathBuf};

fn shared_data() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("NOTICE: ../shared/data is absent; skipping tests on real radiographs");
        None
    }
}

fn write_png_grey(path: &Path, w: u32, h: u32, f: impl Fn(u32, u32) -> u8) {
    let img = image::GrayImage::from_fn(w, h, |x, y| image::Luma([f(x, y)]));
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save(path).unwrap();
}

fn write_jpeg_grey(path: &Path, w: u32, h: u32) -> Vec<u8> {
    let px: Vec<u8> = (0..w * h).map(|i| ((i * 7) % 251) as u8).collect();
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    privxray::synth::write_jpeg(path, &px, w, h, 90).unwrap();
    fs::read(path).unwrap()
}

#[test]
fn real_samples_import_with_labels_and_shapes() {
    let Some(shared) = shared_data() else { return };
    let root = shared.join("kermany-val-sample");
    let index = data::scan(&root).unwrap();
    assert_eq!(index.items.len(), 8);
    assert!(index.skipped.is_empty(), "{:?}", index.skipped);
    for it in &index.items {
        let folder = it.path.parent().unwrap().file_name().unwrap();
        assert_eq!(folder.to_str().unwrap(), index.classes.name(it.label));
    }
    // Under --labels subtype the PNEUMONIA files of this sample are all bacterial.
    let sub = data::scan_with(&root, &data::Labelling::Subtype).unwrap();
    assert_eq!(sub.items.len(), 8);
    for it in &sub.items {
        let folder = it.path.parent().unwrap().file_name().unwrap();
        let want = if folder == "NORMAL" {
            "NORMAL"
        } else {
            "BACTERIA"
        };
        assert_eq!(sub.classes.name(it.label), want);
    }
    for t in [Technique::T1, Technique::T2] {
        let (set, summary) = preprocess::run(&root, t, None, &|_| {}).unwrap();
        assert_eq!(set.len(), 8);
        assert_eq!(set.pixels.len(), 8 * image_len(t));
        assert_eq!(summary.counts.len(), 1);
        assert_eq!(
            (summary.counts[0].normal, summary.counts[0].pneumonia),
            (Some(4), Some(4))
        );
        for i in 0..8 {
            let img = set.image(i);
            let (lo, hi) = (img.iter().min().unwrap(), img.iter().max().unwrap());
            assert!(
                hi - lo > 100,
                "image {i} has almost no contrast: {lo}..{hi}"
            );
        }
        let f = preprocess::to_unit(set.image(0));
        assert!(f.iter().all(|v| (0.0..=1.0).contains(v)));
    }
}

#[test]
fn dicom_sample_imports_with_lungs_dark() {
    let Some(shared) = shared_data() else { return };
    let img = decode_file(&shared.join("dicom/RG1_UNCR.dcm")).unwrap();
    assert_eq!(img.channels, 1);
    assert_eq!((img.width, img.height), (1841, 1955));
    let mean = |x0: f64, x1: f64, y0: f64, y1: f64| {
        let (w, h) = (img.width as usize, img.height as usize);
        let mut s = 0.0;
        let mut n = 0.0;
        for y in (h as f64 * y0) as usize..(h as f64 * y1) as usize {
            for x in (w as f64 * x0) as usize..(w as f64 * x1) as usize {
                s += img.pixels[y * w + x] as f64;
                n += 1.0;
            }
        }
        s / n
    };
    // PA chest: the lung fields either side of the midline are dark, the spine/mediastinum
    // between them bright. MONOCHROME1 data that was not inverted would show the opposite.
    let right_lung = mean(0.22, 0.38, 0.3, 0.6);
    let left_lung = mean(0.62, 0.78, 0.3, 0.6);
    let mediastinum = mean(0.46, 0.54, 0.3, 0.6);
    eprintln!("lungs {right_lung:.1} / {left_lung:.1}, mediastinum {mediastinum:.1}");
    assert!(right_lung + 30.0 < mediastinum && left_lung + 30.0 < mediastinum);
    // The whole pipeline accepts it too.
    let t1 = preprocess::apply(&img, Technique::T1).unwrap();
    assert_eq!(t1.len(), 150 * 125);
}

#[test]
fn bad_inputs_each_get_one_report_line_and_good_files_survive() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let n = root.join("train/NORMAL");
    // Good files: 8-bit PNG, 16-bit PNG, RGB JPEG, greyscale JPEG.
    write_png_grey(&n.join("good1.png"), 40, 30, |x, y| (x * 5 + y) as u8);
    let g16 = image::ImageBuffer::<image::Luma<u16>, _>::from_fn(30, 20, |x, _| {
        image::Luma([(x * 2000) as u16])
    });
    g16.save(n.join("good16.png")).unwrap();
    let rgb = image::RgbImage::from_fn(32, 24, |x, y| image::Rgb([x as u8 * 8, y as u8 * 8, 100]));
    rgb.save(n.join("goodrgb.jpeg")).unwrap();
    let jpeg = write_jpeg_grey(&root.join("train/PNEUMONIA/person1_virus_2.jpeg"), 64, 48);
    // Bad files.
    fs::write(
        n.join("corrupt.jpeg"),
        b"\xff\xd8\xff\xe0 this is not a jpeg",
    )
    .unwrap();
    fs::write(n.join("truncated.jpeg"), &jpeg[..jpeg.len() / 3]).unwrap();
    fs::write(n.join("notes.txt"), b"hello").unwrap();
    fs::create_dir(n.join("subfolder")).unwrap();
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink("loop_b.jpeg", n.join("loop_a.jpeg")).unwrap();
        std::os::unix::fs::symlink("loop_a.jpeg", n.join("loop_b.jpeg")).unwrap();
    }
    // An empty class folder and a split missing a class.
    fs::create_dir_all(root.join("test/PNEUMONIA")).unwrap();
    write_png_grey(&root.join("test/NORMAL/t.png"), 20, 20, |x, _| x as u8 * 10);
    write_png_grey(&root.join("val/NORMAL/v.png"), 20, 20, |_, y| y as u8 * 10);
    // An unreadable file (root ignores permission bits, so only checked for other users).
    let unreadable = root.join("val/NORMAL/locked.png");
    write_png_grey(&unreadable, 10, 10, |_, _| 1);
    #[cfg(unix)]
    let check_unreadable = {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&unreadable, fs::Permissions::from_mode(0o000)).unwrap();
        fs::read(&unreadable).is_err()
    };
    #[cfg(not(unix))]
    let check_unreadable = false;

    let (set, summary) = preprocess::run(root, Technique::T1, None, &|_| {}).unwrap();
    let lines: Vec<String> = summary.skipped.iter().map(|s| s.to_string()).collect();
    let one_line = |needle: &str, reason: &str| {
        let hits: Vec<_> = lines.iter().filter(|l| l.contains(needle)).collect();
        assert_eq!(hits.len(), 1, "expected one line for {needle}: {lines:#?}");
        assert!(hits[0].contains(reason), "{needle}: {}", hits[0]);
    };
    one_line("corrupt.jpeg", "corrupt");
    one_line("truncated.jpeg", "corrupt");
    one_line("notes.txt", "not an image");
    one_line("subfolder", "is a folder");
    #[cfg(unix)]
    {
        one_line("loop_a.jpeg", "unreadable");
        one_line("loop_b.jpeg", "unreadable");
    }
    one_line("test/PNEUMONIA", "empty folder");
    one_line("val/PNEUMONIA", "missing class folder");
    if check_unreadable {
        one_line("locked.png", "unreadable");
    } else {
        eprintln!("NOTICE: running as root, the unreadable-file case cannot be made");
    }
    let names: Vec<String> = set
        .items
        .iter()
        .map(|i| i.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for good in [
        "good1.png",
        "good16.png",
        "goodrgb.jpeg",
        "person1_virus_2.jpeg",
        "t.png",
        "v.png",
    ] {
        assert!(names.iter().any(|n| n == good), "{good} lost: {names:?}");
    }
    let virus = set.items.iter().find(|i| i.label == Label(1)).unwrap();
    assert_eq!(
        data::Subtype::from_file_name(Class::Pneumonia, &virus.path.to_string_lossy()),
        data::Subtype::Virus
    );
    assert_eq!(virus.split, Split::Train);
    // 16-bit values are scaled, not truncated: the gradient spans most of 0..255.
    let i16 = names.iter().position(|n| n == "good16.png").unwrap();
    let px = set.image(i16);
    assert!(*px.iter().max().unwrap() > 200, "16-bit PNG came out dark");
}

#[test]
fn missing_root_and_empty_layout_are_clear_errors() {
    let err = preprocess::run(Path::new("/no/such/dataset"), Technique::T1, None, &|_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/no/such/dataset") && err.contains("train/NORMAL"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("train/NORMAL")).unwrap();
    let err = preprocess::run(dir.path(), Technique::T1, None, &|_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no images") && err.contains("expected layout"),
        "{err}"
    );
}

// ---- An independent reference of the two techniques (Pillow's resampling convention). ----

fn triangle(x: f64) -> f64 {
    (1.0 - x.abs()).max(0.0)
}

fn cubic(x: f64) -> f64 {
    let a = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * a
    } else {
        0.0
    }
}

/// Resamples rows of `src` (width `w`) to `out_w` columns in real arithmetic; the final pass
/// rounds and clamps to 8 bits.
fn pass(
    src: &[f64],
    w: usize,
    rows: usize,
    out_w: usize,
    f: fn(f64) -> f64,
    support: f64,
    round: bool,
) -> Vec<f64> {
    let scale = w as f64 / out_w as f64;
    let fscale = scale.max(1.0);
    let sup = support * fscale;
    let mut out = vec![0.0; rows * out_w];
    for o in 0..out_w {
        let center = (o as f64 + 0.5) * scale;
        let lo = ((center - sup + 0.5).floor().max(0.0)) as usize;
        let hi = ((center + sup + 0.5).floor() as usize).min(w);
        let weights: Vec<f64> = (lo..hi)
            .map(|x| f((x as f64 - center + 0.5) / fscale))
            .collect();
        let total: f64 = weights.iter().sum();
        for r in 0..rows {
            let v: f64 = (lo..hi)
                .zip(&weights)
                .map(|(x, wt)| src[r * w + x] * wt)
                .sum::<f64>()
                / total;
            out[r * out_w + o] = if round {
                v.round().clamp(0.0, 255.0)
            } else {
                v
            };
        }
    }
    out
}

fn transpose(v: &[f64], w: usize, h: usize) -> Vec<f64> {
    let mut t = vec![0.0; v.len()];
    for y in 0..h {
        for x in 0..w {
            t[x * h + y] = v[y * w + x];
        }
    }
    t
}

fn reference_resize(
    px: &[u8],
    w: usize,
    h: usize,
    ow: usize,
    oh: usize,
    f: fn(f64) -> f64,
    support: f64,
) -> Vec<f64> {
    let src: Vec<f64> = px.iter().map(|&v| v as f64).collect();
    let horiz = pass(&src, w, h, ow, f, support, false);
    let vert = pass(&transpose(&horiz, ow, h), h, ow, oh, f, support, true);
    transpose(&vert, oh, ow)
}

fn hand_made(w: u32, h: u32) -> Decoded {
    // Smooth gradients, a bright disc and a sharp-edged bar: both smooth and edge behaviour.
    let mut pixels = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let (fx, fy) = (x as f64 / w as f64, y as f64 / h as f64);
            let mut v = 40.0 + 120.0 * fx + 30.0 * (fy * 9.0).sin();
            if (fx - 0.6).powi(2) + (fy - 0.4).powi(2) < 0.03 {
                v += 70.0;
            }
            if (0.2..0.27).contains(&fx) {
                v = 250.0;
            }
            pixels.push(v.clamp(0.0, 255.0) as u8);
        }
    }
    Decoded {
        width: w,
        height: h,
        channels: 1,
        pixels,
    }
}

fn assert_close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let worst = got
        .iter()
        .zip(want)
        .map(|(g, w)| (*g as f64 - w / 255.0).abs())
        .fold(0.0, f64::max);
    assert!(
        worst <= 1.0 / 255.0 + 1e-6,
        "{what}: worst difference {:.5} > 1/255",
        worst
    );
}

#[test]
fn technique_1_matches_reference_bilinear_greyscale() {
    for (w, h) in [(300u32, 260u32), (61, 47)] {
        let img = hand_made(w, h);
        let got = preprocess::to_unit(&preprocess::apply(&img, Technique::T1).unwrap());
        let want = reference_resize(&img.pixels, w as usize, h as usize, 125, 150, triangle, 1.0);
        assert_close(&got, &want, &format!("technique 1 from {w}x{h}"));
    }
}

#[test]
fn technique_1_converts_colour_with_itu601_luma() {
    let mut img = hand_made(200, 180);
    img.pixels = img
        .pixels
        .iter()
        .flat_map(|&v| [v, v / 2, 255 - v])
        .collect();
    img.channels = 3;
    let grey: Vec<u8> = img
        .pixels
        .chunks(3)
        .map(|p| (0.299 * p[0] as f64 + 0.587 * p[1] as f64 + 0.114 * p[2] as f64).round() as u8)
        .collect();
    let got = preprocess::to_unit(&preprocess::apply(&img, Technique::T1).unwrap());
    let want = reference_resize(&grey, 200, 180, 125, 150, triangle, 1.0);
    assert_close(&got, &want, "technique 1 from RGB");
}

#[test]
fn technique_2_matches_reference_bicubic_three_channels() {
    for (w, h) in [(400u32, 330u32), (90, 70)] {
        let img = hand_made(w, h);
        let got = preprocess::to_unit(&preprocess::apply(&img, Technique::T2).unwrap());
        let plane = reference_resize(&img.pixels, w as usize, h as usize, 224, 224, cubic, 2.0);
        let want: Vec<f64> = plane.iter().chain(&plane).chain(&plane).copied().collect();
        assert_close(&got, &want, &format!("technique 2 from {w}x{h}"));
    }
    // RGB input keeps its channels, planar.
    let mut img = hand_made(120, 100);
    img.pixels = img
        .pixels
        .iter()
        .flat_map(|&v| [v, 255 - v, v / 3])
        .collect();
    img.channels = 3;
    let got = preprocess::to_unit(&preprocess::apply(&img, Technique::T2).unwrap());
    let mut want = Vec::new();
    for c in 0..3 {
        let plane: Vec<u8> = img.pixels.iter().skip(c).step_by(3).copied().collect();
        want.extend(reference_resize(&plane, 120, 100, 224, 224, cubic, 2.0));
    }
    assert_close(&got, &want, "technique 2 from RGB");
}

#[test]
fn cache_is_reused_and_invalidated_by_changes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("set");
    let cache = dir.path().join("cache");
    for i in 0..6u32 {
        let class = if i % 2 == 0 { "NORMAL" } else { "PNEUMONIA" };
        write_png_grey(
            &root.join(format!("train/{class}/img{i}.png")),
            50 + i,
            40,
            |x, y| (x * i + y) as u8,
        );
    }
    let run = || preprocess::run(&root, Technique::T1, Some(&cache), &|_| {}).unwrap();
    let (first, s1) = run();
    assert_eq!((s1.decoded, s1.from_cache), (6, 0));
    let (second, s2) = run();
    assert_eq!((s2.decoded, s2.from_cache), (0, 6));
    assert_eq!(first.pixels, second.pixels);
    assert_eq!(first.items, second.items);

    // A changed file is decoded again, and its new pixels are used.
    std::thread::sleep(std::time::Duration::from_millis(20));
    write_png_grey(&root.join("train/NORMAL/img0.png"), 70, 40, |_, _| 200);
    // A new file too.
    write_png_grey(&root.join("train/PNEUMONIA/img9.png"), 30, 30, |_, _| 9);
    let (third, s3) = run();
    assert_eq!((s3.decoded, s3.from_cache), (2, 5));
    let i0 = third
        .items
        .iter()
        .position(|i| i.path.ends_with("img0.png"))
        .unwrap();
    assert!(third.image(i0).iter().all(|&v| v == 200));

    // A removed file disappears from the set; the rest still come from the cache.
    fs::remove_file(root.join("train/PNEUMONIA/img9.png")).unwrap();
    let (fourth, s4) = run();
    assert_eq!((s4.decoded, s4.from_cache, fourth.len()), (0, 6, 6));

    // A damaged cache is reported and rebuilt, never trusted.
    let file = fs::read_dir(&cache)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let bytes = fs::read(&file).unwrap();
    fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let (fifth, s5) = run();
    assert!(s5.cache_note.is_some(), "damaged cache not reported");
    assert_eq!(s5.decoded, 6);
    assert_eq!(fifth.pixels, fourth.pixels);
    let (_, s6) = run();
    assert_eq!(s6.from_cache, 6);

    // The other technique has its own cache file.
    let (_, t2) = preprocess::run(&root, Technique::T2, Some(&cache), &|_| {}).unwrap();
    assert_eq!(t2.decoded, 6);
}

#[test]
fn train_validation_split_is_seeded_stratified_and_disjoint() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..40u32 {
        let class = if i % 4 == 0 { "NORMAL" } else { "PNEUMONIA" };
        write_png_grey(
            &dir.path().join(format!("train/{class}/{i}.png")),
            8,
            8,
            |_, _| i as u8,
        );
    }
    write_png_grey(&dir.path().join("test/NORMAL/t.png"), 8, 8, |_, _| 1);
    let (set, _) = preprocess::run(dir.path(), Technique::T1, None, &|_| {}).unwrap();
    let (tr, va) = set.train_validation_split(0.2, 5);
    assert_eq!(set.train_validation_split(0.2, 5), (tr.clone(), va.clone()));
    assert_ne!(set.train_validation_split(0.2, 6).1, va);
    assert_eq!(tr.len() + va.len(), 40);
    assert!(tr.iter().all(|i| !va.contains(i)));
    let val_normal = va
        .iter()
        .filter(|&&i| set.items[i].label == Label(0))
        .count();
    assert_eq!((va.len(), val_normal), (8, 2));
    assert_eq!(set.evaluation_indices().len(), 1);
}

#[test]
fn cmyk_jpeg_decodes_with_the_right_brightness() {
    // tests/fixtures/cmyk.jpeg: 40x30, made with Pillow as CMYK with K falling from 255 (left,
    // black) to 21 (right, light). Pillow reads it as 6 on the left and 228 on the right.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cmyk.jpeg");
    let img = decode_file(&path).unwrap();
    assert_eq!((img.width, img.height), (40, 30));
    let grey = img.to_grey();
    let (left, right) = (grey[15 * 40 + 1] as i32, grey[15 * 40 + 38] as i32);
    assert!((left - 6).abs() <= 12, "left {left}");
    assert!((right - 228).abs() <= 12, "right {right}");
}

/// The safetensors data region of a cache file: after the 8-byte header length and the header.
fn cache_data_start(bytes: &[u8]) -> usize {
    8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}

fn only_cache_file(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.into_iter().next().unwrap()
}

#[test]
fn flipped_cache_pixels_are_noticed_and_the_cache_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("set");
    let cache = dir.path().join("cache");
    for i in 0..4u32 {
        let class = if i % 2 == 0 { "NORMAL" } else { "PNEUMONIA" };
        write_png_grey(
            &root.join(format!("train/{class}/img{i}.png")),
            60,
            50,
            |x, y| (x * (i + 1) + y) as u8,
        );
    }
    let run = || preprocess::run(&root, Technique::T1, Some(&cache), &|_| {}).unwrap();
    let (first, s1) = run();
    assert_eq!((s1.decoded, s1.from_cache), (4, 0));
    // 5,000 pixel bytes flipped inside the data region, the header left intact.
    let file = only_cache_file(&cache);
    let mut bytes = fs::read(&file).unwrap();
    let start = cache_data_start(&bytes);
    assert!(bytes.len() - start >= 4 * image_len(Technique::T1));
    for b in &mut bytes[start + 1000..start + 6000] {
        *b ^= 0xff;
    }
    fs::write(&file, &bytes).unwrap();

    let (second, s2) = run();
    let note = s2.cache_note.expect("damaged cache not reported");
    assert!(
        note.contains("checksum") && note.contains("rebuilding"),
        "{note}"
    );
    assert_eq!((s2.decoded, s2.from_cache), (4, 0));
    assert_eq!(second.pixels, first.pixels, "damaged pixels were used");
    // The rebuilt cache is whole again.
    let (third, s3) = run();
    assert_eq!((s3.from_cache, s3.cache_note), (4, None));
    assert_eq!(third.pixels, first.pixels);
}

#[cfg(unix)]
#[test]
fn a_name_that_is_not_utf8_is_imported_and_round_trips_through_the_cache() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("set");
    let cache = dir.path().join("cache");
    let odd = OsStr::from_bytes(b"caf\xe9_\xff.png");
    write_png_grey(&root.join("NORMAL").join(odd), 40, 40, |x, _| x as u8);
    write_png_grey(&root.join("PNEUMONIA/plain.png"), 40, 40, |_, y| y as u8);
    let run = || preprocess::run(&root, Technique::T1, Some(&cache), &|_| {}).unwrap();
    let (first, s1) = run();
    assert!(s1.skipped.is_empty(), "{:?}", s1.skipped);
    assert_eq!((first.len(), s1.decoded), (2, 2));
    assert!(first.items.iter().any(|i| i.path.file_name() == Some(odd)));
    // The summary (the `--json` report) still serialises.
    serde_json::to_string(&s1).unwrap();
    let (second, s2) = run();
    assert_eq!((s2.from_cache, s2.decoded, s2.cache_note), (2, 0, None));
    assert_eq!(second.items, first.items);
    assert_eq!(second.pixels, first.pixels);
}

#[test]
fn caps_refuse_with_a_reason_and_a_raised_cap_is_not_answered_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("set");
    let cache = dir.path().join("cache");
    // 2000x1000 = 2 megapixels; noise, so the PNG is over 1 MiB.
    write_png_grey(&root.join("NORMAL/big.png"), 2000, 1000, |x, y| {
        ((x * 7919 + y * 104729) ^ (x * y)) as u8
    });
    assert!(fs::metadata(root.join("NORMAL/big.png")).unwrap().len() > 1 << 20);
    write_png_grey(&root.join("PNEUMONIA/small.png"), 40, 40, |x, _| x as u8);
    let run = |limits: ImportLimits| {
        preprocess::run_with(
            &root,
            Technique::T1,
            &data::Labelling::Folders,
            Some(&cache),
            &limits,
            &|_| {},
        )
        .unwrap()
    };
    let (set, s) = run(ImportLimits::new(256, 1));
    assert_eq!(set.len(), 1);
    assert_eq!(s.skipped.len(), 1, "{:?}", s.skipped);
    let line = s.skipped[0].to_string();
    assert!(
        line.contains("big.png")
            && line.contains("2000x1000 is 2 megapixels, over the 1 megapixel cap"),
        "{line}"
    );
    let (_, s) = run(ImportLimits::new(1, 100));
    let line = s.skipped[0].to_string();
    assert!(
        line.contains("big.png") && line.contains("MiB file-size cap"),
        "{line}"
    );
    // Raised caps: the refusal is not taken from the cache; the small image still is.
    let (set, s) = run(ImportLimits::default());
    assert_eq!((set.len(), s.skipped.len(), s.from_cache), (2, 0, 1));
    // Lowered again: the cached big image is not used under caps it breaks.
    let (set, s) = run(ImportLimits::new(256, 1));
    assert_eq!((set.len(), s.skipped.len()), (1, 1));
}

#[test]
fn a_subtype_run_reuses_the_pixel_cache_but_labels_from_its_own_scan() {
    // The cache holds pixels by file and never labels, so another labelling may share it.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("set");
    let cache = dir.path().join("cache");
    write_png_grey(&root.join("train/NORMAL/n.png"), 8, 8, |x, _| x as u8);
    write_png_grey(
        &root.join("train/PNEUMONIA/p1_virus_1.png"),
        8,
        8,
        |_, y| y as u8,
    );
    write_png_grey(
        &root.join("train/PNEUMONIA/p2_bacteria_1.png"),
        8,
        8,
        |x, y| (x * y) as u8,
    );
    let limits = data::ImportLimits::default();
    let run = |l: &data::Labelling| {
        preprocess::run_with(&root, Technique::T1, l, Some(&cache), &limits, &|_| {}).unwrap()
    };
    let (binary, first) = run(&data::Labelling::Folders);
    assert_eq!(first.from_cache, 0);
    assert_eq!(binary.classes, data::ClassNames::binary());
    let (sub, second) = run(&data::Labelling::Subtype);
    assert_eq!(second.from_cache, 3, "the pixels are reused");
    assert_eq!(second.classes, ["BACTERIA", "NORMAL", "VIRUS"]);
    let label_of = |name: &str| {
        let i = sub
            .items
            .iter()
            .position(|it| it.path.ends_with(name))
            .unwrap();
        (
            sub.classes.name(sub.items[i].label).to_string(),
            sub.image(i).to_vec(),
        )
    };
    for (name, class) in [
        ("n.png", "NORMAL"),
        ("p1_virus_1.png", "VIRUS"),
        ("p2_bacteria_1.png", "BACTERIA"),
    ] {
        let (got, px) = label_of(name);
        assert_eq!(got, class, "{name}");
        let j = binary
            .items
            .iter()
            .position(|it| it.path.ends_with(name))
            .unwrap();
        assert_eq!(
            px,
            binary.image(j),
            "{name}: same pixels under both labellings"
        );
    }
    assert_eq!(second.counts[0].per_class, [1, 1, 1]);
    assert_eq!(second.counts[0].normal, None);
    assert_eq!(first.counts[0].normal, Some(1));
    assert_eq!(first.counts[0].pneumonia, Some(2));
}
