//! The reduced decoder against the full one (image's decoder, zune-jpeg) on generated JPEGs of
//! each sampling, with and without restart intervals, and on hostile bytes.

use super::*;
use crate::data::decode::decode_bytes;
use jpeg_encoder::{ColorType, Encoder, SamplingFactor};

const NO_CAP: u64 = 1 << 40;

/// A smooth test picture (low frequencies and a gradient, no clipping) with a little texture, so
/// blocks have AC coefficients of every kind.
fn picture(w: usize, h: usize, channels: usize) -> Vec<u8> {
    let mut px = Vec::with_capacity(w * h * channels);
    for y in 0..h {
        for x in 0..w {
            let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
            let base = 128.0 + 60.0 * (fx * 7.0).sin() * (fy * 4.0).cos() + 20.0 * (fx - fy);
            let texture = 8.0 * ((x * 7 + y * 13) % 5) as f32 / 4.0;
            for c in 0..channels {
                let shift = 25.0 * c as f32 * (fy * 3.0 + fx).sin();
                px.push((base + texture + shift).clamp(0.0, 255.0) as u8);
            }
        }
    }
    px
}

fn encode(w: u16, h: u16, colour: Option<SamplingFactor>, restart: u16) -> Vec<u8> {
    let channels = if colour.is_some() { 3 } else { 1 };
    let mut out = Vec::new();
    let mut enc = Encoder::new(&mut out, 90);
    if let Some(s) = colour {
        enc.set_sampling_factor(s);
    }
    if restart > 0 {
        enc.set_restart_interval(restart);
    }
    let kind = if channels == 3 {
        ColorType::Rgb
    } else {
        ColorType::Luma
    };
    enc.encode(&picture(w as usize, h as usize, channels), w, h, kind)
        .unwrap();
    out
}

/// The largest difference between each reduced pixel and the mean of its cell of the full
/// decode, over cells wholly inside the image.
fn worst_against_cell_means(bytes: &[u8], s: u32) -> i32 {
    let full = decode_bytes(bytes).unwrap();
    let reduced = decode_reduced(bytes, s, false, NO_CAP).unwrap().unwrap();
    let cell = (8 / s) as usize;
    let (w, h) = (full.width as usize, full.height as usize);
    assert_eq!(reduced.width as usize, (w * s as usize).div_ceil(8));
    assert_eq!(reduced.height as usize, (h * s as usize).div_ceil(8));
    assert_eq!(reduced.channels, full.channels);
    let ch = full.channels as usize;
    let rw = reduced.width as usize;
    let mut worst = 0;
    for y in 0..h / cell {
        for x in 0..w / cell {
            for c in 0..ch {
                let mut sum = 0u32;
                for yy in 0..cell {
                    for xx in 0..cell {
                        sum += full.pixels[((y * cell + yy) * w + x * cell + xx) * ch + c] as u32;
                    }
                }
                let mean = (sum as f64 / (cell * cell) as f64).round() as i32;
                let got = reduced.pixels[(y * rw + x) * ch + c] as i32;
                worst = worst.max((got - mean).abs());
            }
        }
    }
    worst
}

#[test]
fn reduced_greyscale_is_the_mean_of_each_cell_of_the_full_decode() {
    for restart in [0, 3] {
        let bytes = encode(203, 157, None, restart);
        for s in [1, 2, 4] {
            let worst = worst_against_cell_means(&bytes, s);
            assert!(worst <= 1, "grey, restart {restart}, 1/{}: {worst}", 8 / s);
        }
    }
}

#[test]
fn reduced_colour_is_the_mean_of_each_cell_of_the_full_decode() {
    // The full decoder rounds YCbCr to RGB per pixel and upsamples 4:2:0 chroma with a triangle
    // filter; these cells are the exact box means, hence a level or two more.
    for (sampling, tolerance) in [(SamplingFactor::R_4_4_4, 2), (SamplingFactor::R_4_2_0, 3)] {
        for restart in [0, 5] {
            let bytes = encode(211, 149, Some(sampling), restart);
            for s in [1, 2, 4] {
                let worst = worst_against_cell_means(&bytes, s);
                assert!(
                    worst <= tolerance,
                    "{sampling:?}, restart {restart}, 1/{}: {worst}",
                    8 / s
                );
            }
        }
    }
}

#[test]
fn grey_output_of_a_colour_jpeg_is_its_luma() {
    let bytes = encode(160, 120, Some(SamplingFactor::R_4_2_0), 0);
    let grey = decode_reduced(&bytes, 2, true, NO_CAP).unwrap().unwrap();
    let rgb = decode_reduced(&bytes, 2, false, NO_CAP).unwrap().unwrap();
    assert_eq!((grey.channels, grey.width, grey.height), (1, 40, 30));
    let luma = rgb.to_grey();
    let worst = grey
        .pixels
        .iter()
        .zip(&luma)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    assert!(worst <= 2, "{worst}");
}

#[test]
fn what_this_decoder_leaves_alone_is_none() {
    let mut progressive = Vec::new();
    let mut enc = Encoder::new(&mut progressive, 90);
    enc.set_progressive(true);
    enc.encode(&picture(64, 64, 1), 64, 64, ColorType::Luma)
        .unwrap();
    assert_eq!(dimensions(&progressive), Ok(None));
    assert_eq!(decode_reduced(&progressive, 2, false, NO_CAP), Ok(None));
    // No reduction asked.
    let baseline = encode(64, 64, None, 0);
    assert_eq!(decode_reduced(&baseline, 8, false, NO_CAP), Ok(None));
    assert_eq!(dimensions(&baseline), Ok(Some((64, 64))));
}

#[test]
fn huge_dimensions_are_refused_before_decoding() {
    let mut bytes = encode(64, 48, None, 0);
    let sof = bytes.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    // Height and width fields of the frame header set to 65535.
    for b in &mut bytes[sof + 5..sof + 9] {
        *b = 0xFF;
    }
    assert_eq!(dimensions(&bytes), Ok(Some((65535, 65535))));
    assert!(matches!(
        decode_reduced(&bytes, 1, false, 100_000_000),
        Err(JpegError::TooBig { .. })
    ));
}

fn must_not_panic(bytes: &[u8]) -> bool {
    let mut ok = false;
    for s in [1, 2, 4] {
        for grey in [false, true] {
            ok |= matches!(decode_reduced(bytes, s, grey, 10_000_000), Ok(Some(_)));
        }
    }
    let _ = dimensions(bytes);
    ok
}

#[test]
fn truncated_scans_are_errors() {
    for colour in [None, Some(SamplingFactor::R_4_2_0)] {
        let bytes = encode(120, 90, colour, 4);
        let scan = bytes.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
        for cut in (0..bytes.len() - 2).step_by(7) {
            let got = decode_reduced(&bytes[..cut], 2, false, NO_CAP);
            // A cut inside the scan data is reported, never filled in.
            if cut > scan + 14 {
                assert!(got.is_err(), "cut at {cut} of {}: {got:?}", bytes.len());
            }
            must_not_panic(&bytes[..cut]);
        }
    }
}

#[test]
fn hostile_bytes_give_an_error_or_none_never_a_panic() {
    // A deterministic generator (xorshift): the same mutations every run.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for (colour, restart) in [(None, 0), (Some(SamplingFactor::R_4_2_0), 2)] {
        let bytes = encode(96, 72, colour, restart);
        for _ in 0..1500 {
            let mut b = bytes.clone();
            for _ in 0..1 + next() % 4 {
                let at = next() as usize % b.len();
                match next() % 4 {
                    0 => b[at] ^= 1 << (next() % 8),
                    1 => b[at] = next() as u8,
                    // A marker in an odd place.
                    2 => {
                        let m = [0xD9, 0xC4, 0xDB, 0xDA, 0xD3, 0xC0][next() as usize % 6];
                        b.splice(at..at, [0xFF, m]);
                    }
                    _ => b.truncate(at.max(2)),
                }
            }
            must_not_panic(&b);
        }
        // Bad Huffman tables: every byte of each DHT segment set to an extreme.
        let mut at = 0;
        while let Some(p) = bytes[at..].windows(2).position(|w| w == [0xFF, 0xC4]) {
            let start = at + p + 4;
            for i in start..(start + 40).min(bytes.len()) {
                for v in [0x00, 0xFF, 0x10] {
                    let mut b = bytes.clone();
                    b[i] = v;
                    must_not_panic(&b);
                }
            }
            at = start;
        }
    }
    // Random bytes after the start-of-image marker.
    for _ in 0..500 {
        let mut b = vec![0xFF, 0xD8];
        b.extend((0..next() % 200).map(|_| next() as u8));
        must_not_panic(&b);
    }
}

/// Where reduced decoding spends its time, for whoever speeds up the Huffman walk:
/// `cargo test --release -p privxray --lib data::jpeg::tests::figures -- --ignored --nocapture`.
/// On generated smooth radiographs at least 896 pixels on a side (what technique 2 reduces by
/// 4), one thread, best of 5: every block reduced to its DC (the Huffman walk alone: every
/// symbol must be read to find the next block), to 4x4 cells (technique 2's reduction), and the
/// full decode.
#[test]
#[ignore = "benchmark: prints figures"]
fn figures() {
    use crate::preprocess::bench::{generate, ImageSet};
    use std::time::Instant;
    let dir = tempfile::tempdir().unwrap();
    let files = generate(dir.path(), ImageSet::Smooth, 80).unwrap();
    let large: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(f).unwrap())
        .filter(|b| matches!(dimensions(b), Ok(Some((w, h))) if w >= 896 && h >= 896))
        .collect();
    let best = |f: &dyn Fn(&[u8])| {
        (0..5)
            .map(|_| {
                let t = Instant::now();
                for b in &large {
                    f(b);
                }
                t.elapsed().as_secs_f64() * 1e3 / large.len() as f64
            })
            .fold(f64::INFINITY, f64::min)
    };
    let dc = best(&|b| drop(decode_reduced(b, 1, true, NO_CAP).unwrap().unwrap()));
    let quarter = best(&|b| drop(decode_reduced(b, 2, true, NO_CAP).unwrap().unwrap()));
    let cells = best(&|b| drop(decode_reduced(b, 4, true, NO_CAP).unwrap().unwrap()));
    let full = best(&|b| drop(decode_bytes(b).unwrap()));
    let kb = large.iter().map(Vec::len).sum::<usize>() as f64 / large.len() as f64 / 1e3;
    println!(
        "{} smooth JPEGs of at least 896x896 ({kb:.0} KB on average), ms per image: \
         DC only (Huffman walk) {dc:.2}, 2x2 cells {quarter:.2}, 4x4 cells {cells:.2}, full decode {full:.2}",
        large.len()
    );
}

/// Noise at quality 100 (every quantisation step 1): nearly every block's last coefficient is
/// nonzero, so blocks end at position 63 with no end-of-block code, and the next block's DC
/// code follows at once, where a lookup of two coefficients must not read it as one.
#[test]
fn blocks_full_to_the_last_coefficient_decode_right() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let (w, h) = (96u16, 80u16);
    let px: Vec<u8> = (0..w as usize * h as usize)
        .map(|_| rng.random_range(64..192))
        .collect();
    let mut bytes = Vec::new();
    Encoder::new(&mut bytes, 100)
        .encode(&px, w, h, ColorType::Luma)
        .unwrap();
    for s in [1, 2, 4] {
        let worst = worst_against_cell_means(&bytes, s);
        assert!(worst <= 1, "1/{}: {worst}", 8 / s);
    }
}
