//! Reduced JPEG decoding: the IDCT size chosen, the size decoded, and hostile files refused as
//! by the full decoder.

use super::*;

fn smooth_jpeg(dir: &Path, w: u32, h: u32) -> std::path::PathBuf {
    let px: Vec<u8> = (0..h)
        .flat_map(|y| {
            (0..w).map(move |x| {
                let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
                (128.0 + 90.0 * (fx * 5.0).sin() * (fy * 3.0).cos()) as u8
            })
        })
        .collect();
    let path = dir.join(format!("smooth-{w}x{h}.jpeg"));
    let mut buf = Vec::new();
    let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, 90);
    image::ImageEncoder::write_image(enc, &px, w, h, image::ExtendedColorType::L8).unwrap();
    std::fs::write(&path, buf).unwrap();
    path
}

const T1: Reduce = Reduce {
    at_least: (125, 150),
    gap: 2.0,
    grey: true,
};

#[test]
fn idct_size_keeps_both_dimensions_at_least_gap_times_the_target() {
    // 1776x1416 at 1/4 is 444x354: both at least 250x300; at 1/8 (222x177) neither is.
    assert_eq!(T1.idct_size(1776, 1416), 2);
    // 1300x1000 at 1/4 is 325x250: the height is short of 300, so 1/2 (650x500).
    assert_eq!(T1.idct_size(1300, 1000), 4);
    // 4000x4000 at 1/8 is 500x500.
    assert_eq!(T1.idct_size(4000, 4000), 1);
    // Under 4x the target: no reduction.
    assert_eq!(T1.idct_size(480, 1000), 8);
    assert_eq!(T1.idct_size(125, 150), 8);
}

#[test]
fn a_big_jpeg_is_decoded_reduced_and_a_small_one_at_full_size() {
    let dir = tempfile::tempdir().unwrap();
    let big = smooth_jpeg(dir.path(), 1303, 1001);
    let d = decode_file_reduced(&big, &ImportLimits::default(), T1).unwrap();
    // IDCT 4 of 8, rounded up as libjpeg does.
    assert_eq!((d.width, d.height, d.channels), (652, 501, 1));
    assert_eq!(d.pixels.len(), 652 * 501);
    let full = decode_file(&big).unwrap();
    // Each reduced pixel is about the mean of its 2x2 block of the full image.
    let mut worst = 0i32;
    for y in 0..500 {
        for x in 0..651 {
            let at = |xx: u32, yy: u32| full.pixels[(yy * 1303 + xx) as usize] as i32;
            let mean = (at(2 * x, 2 * y)
                + at(2 * x + 1, 2 * y)
                + at(2 * x, 2 * y + 1)
                + at(2 * x + 1, 2 * y + 1)
                + 2)
                / 4;
            worst = worst.max((d.pixels[(y * 652 + x) as usize] as i32 - mean).abs());
        }
    }
    assert!(
        worst <= 3,
        "reduced pixel {worst} levels from its block's mean"
    );

    let small = smooth_jpeg(dir.path(), 400, 300);
    let d = decode_file_reduced(&small, &ImportLimits::default(), T1).unwrap();
    assert_eq!(d, decode_file(&small).unwrap());
}

#[test]
fn reduced_decoding_refuses_what_the_full_decoder_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let big = smooth_jpeg(dir.path(), 1303, 1001);
    // Over the pixel cap, from the header, before decoding.
    let tight = ImportLimits {
        max_file_bytes: 1 << 30,
        max_pixels: 1_000_000,
    };
    let err = decode_file_reduced(&big, &tight, T1).unwrap_err();
    assert!(
        matches!(err, DecodeError::Refused(Refusal::TooManyPixels { .. })),
        "{err}"
    );
    // Cut short: reported as truncated, not filled with grey.
    let bytes = std::fs::read(&big).unwrap();
    let cut = dir.path().join("cut.jpeg");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = decode_file_reduced(&cut, &ImportLimits::default(), T1).unwrap_err();
    assert!(matches!(err, DecodeError::Truncated), "{err}");
    // Not a JPEG past its first two bytes.
    let junk = dir.path().join("junk.jpeg");
    std::fs::write(&junk, b"\xFF\xD8 not a jpeg").unwrap();
    let err = decode_file_reduced(&junk, &ImportLimits::default(), T1).unwrap_err();
    assert!(err.to_string().starts_with("corrupt"), "{err}");
}
