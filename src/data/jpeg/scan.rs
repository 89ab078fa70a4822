//! Decoding the scans into reduced planes, one per component, then the output image.
//!
//! Imports its siblings and `super::Decoded`.

use super::bits::{next_marker, Bits};
use super::header::{Frame, State, Step};
use super::huffman::{Pair, Table, PAIR_BITS};
use super::{means, Decoded, JpegError};

/// One component's reduced plane: each block becomes `sx` x `sy` pixels.
struct Plane {
    sx: usize,
    sy: usize,
    /// Blocks per row and rows of blocks, padded to whole MCUs.
    blocks_w: usize,
    blocks_h: usize,
    /// Whether the pixels are wanted (a colour image's chroma is not when only grey is asked).
    keep: bool,
    pixels: Vec<u8>,
    decoded: bool,
}

pub fn decode(
    bytes: &[u8],
    s: usize,
    grey: bool,
    max_pixels: u64,
) -> Result<Option<Decoded>, JpegError> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return Err(JpegError::Corrupt("not a JPEG (no start-of-image marker)"));
    }
    let mut state = State::default();
    let mut frame: Option<Frame> = None;
    let mut planes: Vec<Plane> = Vec::new();
    let mut pos = 2;
    loop {
        match state.step(bytes, pos)? {
            Step::Next(p) => pos = p,
            Step::Unsupported => return Ok(None),
            Step::Frame(f, p) => {
                if f.width as u64 * f.height as u64 > max_pixels {
                    return Err(JpegError::TooBig {
                        width: f.width,
                        height: f.height,
                        max: max_pixels,
                    });
                }
                match make_planes(&f, s, grey) {
                    Some(p) => planes = p,
                    None => return Ok(None),
                }
                frame = Some(f);
                pos = p;
            }
            Step::Scan(header, data) => {
                let f = frame
                    .as_ref()
                    .ok_or(JpegError::Corrupt("no frame header before the scan"))?;
                let mut comps: Vec<ScanComp> = Vec::with_capacity(header.comps.len());
                for &(id, dc, ac) in &header.comps {
                    let c = f
                        .comps
                        .iter()
                        .position(|c| c.id as usize == id)
                        .ok_or(JpegError::Corrupt("a scan names no component of the frame"))?;
                    if planes[c].decoded || comps.iter().any(|&(i, ..)| i == c) {
                        return Err(JpegError::Corrupt("a component scanned twice"));
                    }
                    let q = state.quant[f.comps[c].tq]
                        .as_ref()
                        .ok_or(JpegError::Corrupt("missing quantisation table"))?;
                    let dc = state.dc[dc]
                        .as_ref()
                        .ok_or(JpegError::Corrupt("missing Huffman table"))?;
                    let ac = state.ac[ac]
                        .as_ref()
                        .ok_or(JpegError::Corrupt("missing Huffman table"))?;
                    let p = &planes[c];
                    let rows = if p.keep {
                        means::rows(p.sx, p.sy, q)
                    } else {
                        Vec::new()
                    };
                    comps.push((c, dc, ac, rows));
                }
                pos = decode_scan(bytes, data, f, &mut planes, &comps, state.restart)?;
                for &(c, ..) in &comps {
                    planes[c].decoded = true;
                }
            }
            Step::End => break,
        }
    }
    let f = frame.ok_or(JpegError::Corrupt("no frame header"))?;
    if planes.iter().any(|p| !p.decoded) {
        return Err(JpegError::Corrupt("a component has no scan"));
    }
    Ok(Some(output(&f, s, planes)))
}

/// The planes of a frame reduced by `s`/8, or `None` if a component's sampling gives a cell that
/// is not 1, 2, 4 or 8 pixels.
fn make_planes(f: &Frame, s: usize, grey: bool) -> Option<Vec<Plane>> {
    let mcux = (f.width as usize).div_ceil(8 * f.hmax);
    let mcuy = (f.height as usize).div_ceil(8 * f.vmax);
    f.comps
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if !f.hmax.is_multiple_of(c.h) || !f.vmax.is_multiple_of(c.v) {
                return None;
            }
            // A subsampled component's block covers more output pixels: decoding it at a
            // larger cell puts it straight at the luma's resolution, with no upsampling.
            let (sx, sy) = (s * (f.hmax / c.h), s * (f.vmax / c.v));
            if !matches!(sx, 1 | 2 | 4 | 8) || !matches!(sy, 1 | 2 | 4 | 8) {
                return None;
            }
            let keep = i == 0 || !grey;
            let (blocks_w, blocks_h) = (mcux * c.h, mcuy * c.v);
            Some(Plane {
                sx,
                sy,
                blocks_w,
                blocks_h,
                keep,
                pixels: if keep {
                    vec![0u8; blocks_w * sx * blocks_h * sy]
                } else {
                    Vec::new()
                },
                decoded: false,
            })
        })
        .collect()
}

type ScanComp<'t> = (usize, &'t Table, &'t Table, Vec<f32>);

/// Decodes one scan's entropy-coded data from `data`; returns the offset of the marker after it.
fn decode_scan(
    bytes: &[u8],
    data: usize,
    f: &Frame,
    planes: &mut [Plane],
    comps: &[ScanComp],
    restart: usize,
) -> Result<usize, JpegError> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("bmi2")
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports the features the function was compiled for.
            return unsafe { decode_scan_v3(bytes, data, f, planes, comps, restart) };
        }
    }
    decode_scan_body(bytes, data, f, planes, comps, restart)
}

/// The scan loop compiled for x86-64-v3: BMI2's shifts by a register (`shlx`, `shrx`: one
/// micro-op, no flags) sit on the bit reader's critical path at every lookup, and AVX2 with FMA
/// sums a block's cells.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "bmi1,bmi2,avx2,fma,lzcnt,popcnt")]
fn decode_scan_v3(
    bytes: &[u8],
    data: usize,
    f: &Frame,
    planes: &mut [Plane],
    comps: &[ScanComp],
    restart: usize,
) -> Result<usize, JpegError> {
    decode_scan_body(bytes, data, f, planes, comps, restart)
}

#[inline(always)]
fn decode_scan_body(
    bytes: &[u8],
    data: usize,
    f: &Frame,
    planes: &mut [Plane],
    comps: &[ScanComp],
    restart: usize,
) -> Result<usize, JpegError> {
    let mut bits = Bits::new(bytes, data);
    let mut preds = [0i32; 4];
    // A one-component scan is non-interleaved: its blocks in raster order over the
    // component's own size, not padded to MCUs.
    let (mcus_w, mcus_h) = if comps.len() == 1 {
        let c = &f.comps[comps[0].0];
        let w = (f.width as usize * c.h).div_ceil(f.hmax).div_ceil(8);
        let h = (f.height as usize * c.v).div_ceil(f.vmax).div_ceil(8);
        (w, h)
    } else {
        (
            (f.width as usize).div_ceil(8 * f.hmax),
            (f.height as usize).div_ceil(8 * f.vmax),
        )
    };
    let mut coefs = Coefs::new();
    // MCU coordinates kept by counting (a division per MCU costs more than its block's DC).
    let (mut mx, mut my) = (0, 0);
    // MCUs left before the next restart marker.
    let mut until_restart = restart;
    for m in 0..mcus_w * mcus_h {
        if m > 0 {
            mx += 1;
            if mx == mcus_w {
                mx = 0;
                my += 1;
            }
        }
        if restart > 0 && m > 0 && until_restart == 0 {
            until_restart = restart;
            bits.check()?;
            let (at, marker) = next_marker(bytes, bits.position()).ok_or(JpegError::Truncated)?;
            if !(0xD0..=0xD7).contains(&marker) {
                return Err(JpegError::Corrupt("missing restart marker"));
            }
            bits = Bits::new(bytes, at + 2);
            preds = [0; 4];
        }
        until_restart = until_restart.wrapping_sub(1);
        for (ci, (c, dc, ac, rows)) in comps.iter().enumerate() {
            let (h, v) = if comps.len() == 1 {
                (1, 1)
            } else {
                (f.comps[*c].h, f.comps[*c].v)
            };
            let plane = &mut planes[*c];
            for by in 0..v {
                for bx in 0..h {
                    let pred = &mut preds[ci];
                    let (x, y) = (mx * h + bx, my * v + by);
                    match rows.len() / 64 {
                        0 => skip_block(&mut bits, dc, ac, pred, &mut coefs)?,
                        1 => block::<1>(&mut bits, dc, ac, pred, rows, plane, &mut coefs, x, y)?,
                        2 => block::<2>(&mut bits, dc, ac, pred, rows, plane, &mut coefs, x, y)?,
                        4 => block::<4>(&mut bits, dc, ac, pred, rows, plane, &mut coefs, x, y)?,
                        8 => block::<8>(&mut bits, dc, ac, pred, rows, plane, &mut coefs, x, y)?,
                        16 => block::<16>(&mut bits, dc, ac, pred, rows, plane, &mut coefs, x, y)?,
                        32 => block::<32>(&mut bits, dc, ac, pred, rows, plane, &mut coefs, x, y)?,
                        _ => block::<64>(&mut bits, dc, ac, pred, rows, plane, &mut coefs, x, y)?,
                    }
                }
            }
        }
    }
    bits.check()?;
    let (at, _) = next_marker(bytes, bits.position()).ok_or(JpegError::Truncated)?;
    Ok(at)
}

/// Decodes the DC difference of a block into its predictor.
#[inline(always)]
fn dc_value(bits: &mut Bits, dc: &Table, pred: &mut i32) -> Result<(), JpegError> {
    if bits.count() < 32 {
        bits.refill();
    }
    let size = dc.decode(bits)? as u32;
    if size > 16 {
        return Err(JpegError::Corrupt("bad DC difference"));
    }
    *pred = pred.wrapping_add(bits.receive_extend(size));
    Ok(())
}

/// Decodes a block whose pixels are not wanted.
fn skip_block(
    bits: &mut Bits,
    dc: &Table,
    ac: &Table,
    pred: &mut i32,
    coefs: &mut Coefs,
) -> Result<(), JpegError> {
    dc_value(bits, dc, pred)?;
    ac_walk(bits, ac, coefs).map(drop)
}

/// A block's nonzero AC coefficients in the order decoded: zigzag positions and values. Kept
/// across blocks (only the first `n` slots of a block are read), so never cleared. Slots are
/// indexed mod 64, which needs no bounds check: a lookup starts with n <= k - 1 <= 62
/// coefficients, so even the second slot it writes, used or not, is below 64.
struct Coefs {
    at: [u8; 64],
    values: [i16; 64],
}

impl Coefs {
    fn new() -> Coefs {
        Coefs {
            at: [0; 64],
            values: [0; 64],
        }
    }

    #[inline(always)]
    fn put(&mut self, n: usize, k: usize, v: i16) {
        self.at[n & 63] = k as u8;
        self.values[n & 63] = v;
    }
}

/// Decodes a block's AC coefficients into `coefs`, returning how many there are; a run past the
/// block's end is an error. Most steps take the pair lookup (two coefficients, or one and the
/// end of block, per lookup); the rest, and any lookup that would reach past position 63 (where
/// the next block's bits could be mistaken for a coefficient or an end of block), decode one
/// symbol.
#[inline(always)]
fn ac_walk(bits: &mut Bits, ac: &Table, coefs: &mut Coefs) -> Result<usize, JpegError> {
    let pairs = ac
        .pairs()
        .ok_or(JpegError::Corrupt("a DC Huffman table used for AC"))?;
    // k: the zigzag position of the next coefficient; n: coefficients so far (n < k).
    let mut k = 1;
    let mut n = 0;
    while k < 64 {
        if bits.count() < 32 {
            bits.refill();
        }
        let e = Pair(pairs[bits.peek(PAIR_BITS) as usize]);
        // The reach counts an end of block as a step: after a coefficient at position 63 the
        // block is over, and bits that read as an end of block (or a coefficient) are the next
        // block's DC code. An entry not in the lookup has a reach of 255.
        if k + e.reach() <= 64 {
            bits.skip(e.len());
            let next = k + e.advance();
            let (v1, v2) = e.values();
            // The second slot is written even when empty: `count` says how many are real.
            coefs.put(n, k + e.first_run(), v1);
            coefs.put(n + 1, next - 1, v2);
            n += e.count();
            k = next;
            if e.end_of_block() {
                break;
            }
            continue;
        }
        match ac.decode_ac(bits)? {
            None => break,
            Some((run, v)) => {
                k += run as usize;
                if k > 63 {
                    return Err(JpegError::Corrupt(
                        "AC coefficients past the end of a block",
                    ));
                }
                coefs.put(n, k, v as i16);
                n += 1;
                k += 1;
            }
        }
    }
    Ok(n)
}

/// Decodes a block into its `N` = sx * sy cell means at block (x, y) of `plane`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn block<const N: usize>(
    bits: &mut Bits,
    dc: &Table,
    ac: &Table,
    pred: &mut i32,
    rows: &[f32],
    plane: &mut Plane,
    coefs: &mut Coefs,
    x: usize,
    y: usize,
) -> Result<(), JpegError> {
    let (rows, _) = rows.as_chunks::<N>();
    let rows: &[[f32; N]; 64] = rows.try_into().expect("64 rows");
    dc_value(bits, dc, pred)?;
    // The nonzero AC coefficients first, then their rows summed: the Huffman loop stays free
    // of the arithmetic (and of the registers it would take).
    let n = ac_walk(bits, ac, coefs)?;
    let d = *pred as f32;
    let mut acc = [0f32; N];
    for (a, r) in acc.iter_mut().zip(&rows[0]) {
        *a = d * r;
    }
    // At 1x1 only the DC counts; above, rows of zeros (even frequencies at 2x2) cost a few
    // multiplies, less than a branch.
    if N > 1 {
        for (&k, &v) in coefs.at[..n].iter().zip(&coefs.values[..n]) {
            let v = v as f32;
            for (a, r) in acc.iter_mut().zip(&rows[k as usize & 63]) {
                *a += v * r;
            }
        }
    }
    let (sx, sy) = (plane.sx, plane.sy);
    let stride = plane.blocks_w * sx;
    if x < plane.blocks_w && y < plane.blocks_h {
        let mut px = [0u8; N];
        for (p, a) in px.iter_mut().zip(&acc) {
            // floor(a + 128.5) clamped to 0..=255 (rounding half up, as the reference does),
            // without a saturating cast, which the compiler cannot vectorise: adding 1.5 * 2^23
            // rounds to the nearest integer (ties to even), a step back makes that the floor,
            // and the integer sits in the low bits of the mantissa. Any NaN would give some
            // byte, never a panic; none can occur.
            const M: f32 = 12_582_912.0;
            let y = (a + 128.5).clamp(0.0, 255.0);
            let r = (y + M) - M;
            let f = if r > y { r - 1.0 } else { r };
            *p = (f + M).to_bits() as u8;
        }
        for (cy, row) in px.chunks_exact(sx).enumerate().take(sy) {
            let at = (y * sy + cy) * stride + x * sx;
            plane.pixels[at..at + sx].copy_from_slice(row);
        }
    }
    Ok(())
}

/// Crops the planes to the reduced size and converts YCbCr to RGB (or keeps the luma alone).
fn output(f: &Frame, s: usize, planes: Vec<Plane>) -> Decoded {
    let w = (f.width as usize * s).div_ceil(8);
    let h = (f.height as usize * s).div_ceil(8);
    let stride = |p: &Plane| p.blocks_w * p.sx;
    let crop = |p: &Plane| -> Vec<u8> {
        let st = stride(p);
        let mut out = Vec::with_capacity(w * h);
        for y in 0..h {
            out.extend_from_slice(&p.pixels[y * st..y * st + w]);
        }
        out
    };
    if planes.len() == 1 || !planes[1].keep {
        return Decoded {
            width: w as u32,
            height: h as u32,
            channels: 1,
            pixels: crop(&planes[0]),
        };
    }
    let (yp, cb, cr) = (crop(&planes[0]), crop(&planes[1]), crop(&planes[2]));
    let mut pixels = Vec::with_capacity(w * h * 3);
    for i in 0..w * h {
        let (l, b, r) = (yp[i] as f32, cb[i] as f32 - 128.0, cr[i] as f32 - 128.0);
        // JFIF's YCbCr to RGB; the casts saturate.
        pixels.push((l + 1.402 * r + 0.5) as u8);
        pixels.push((l - 0.344_136 * b - 0.714_136 * r + 0.5) as u8);
        pixels.push((l + 1.772 * b + 0.5) as u8);
    }
    Decoded {
        width: w as u32,
        height: h as u32,
        channels: 3,
        pixels,
    }
}
