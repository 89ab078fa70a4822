//! The marker segments: quantisation and Huffman tables, restart interval, the frame and the
//! scan headers. Anything but a baseline or extended sequential Huffman frame of 8-bit samples
//! with 1 or 3 components (and no Adobe RGB transform) is reported as unsupported.
//!
//! Imports `super::huffman` and `super::JpegError` only.

use super::huffman::Table;
use super::JpegError;

const BAD_LENGTH: JpegError = JpegError::Corrupt("bad marker segment length");

#[derive(Debug, Clone)]
pub struct Component {
    pub id: u8,
    /// Sampling factors (1 for both in a one-component frame, whose only scan is
    /// non-interleaved whatever the header says).
    pub h: usize,
    pub v: usize,
    /// Quantisation table index.
    pub tq: usize,
}

#[derive(Debug, Clone)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    pub comps: Vec<Component>,
    pub hmax: usize,
    pub vmax: usize,
}

/// One scan's components: (index in the frame, DC table, AC table).
pub struct ScanHeader {
    pub comps: Vec<(usize, usize, usize)>,
}

/// What the walk over the markers found next.
pub enum Step {
    /// A segment handled here (tables, restart interval, application data); go on from `.0`.
    Next(usize),
    Frame(Frame, usize),
    /// A scan header; its entropy-coded data starts at `.1`.
    Scan(ScanHeader, usize),
    End,
    /// Something this decoder leaves to the full one.
    Unsupported,
}

#[derive(Default)]
pub struct State {
    pub quant: [Option<[u16; 64]>; 4],
    pub dc: [Option<Table>; 4],
    pub ac: [Option<Table>; 4],
    /// MCUs per restart interval, 0 for none.
    pub restart: usize,
    adobe_rgb: bool,
    frame_seen: bool,
}

fn be16(b: &[u8], at: usize) -> Result<usize, JpegError> {
    match b.get(at..at + 2) {
        Some(&[hi, lo]) => Ok((hi as usize) << 8 | lo as usize),
        _ => Err(JpegError::Truncated),
    }
}

impl State {
    /// Handles the marker at `pos` (fill bytes before it tolerated).
    pub fn step(&mut self, bytes: &[u8], pos: usize) -> Result<Step, JpegError> {
        let mut at = pos;
        if bytes.get(at) != Some(&0xFF) {
            return Err(match bytes.get(at) {
                None => JpegError::Truncated,
                Some(_) => JpegError::Corrupt("expected a marker"),
            });
        }
        while bytes.get(at) == Some(&0xFF) {
            at += 1;
        }
        let marker = *bytes.get(at).ok_or(JpegError::Truncated)?;
        at += 1;
        match marker {
            0xD9 => return Ok(Step::End),
            0x01 | 0xD0..=0xD7 => return Ok(Step::Next(at)),
            0xD8 | 0x00 => return Err(JpegError::Corrupt("unexpected marker")),
            _ => {}
        }
        let len = be16(bytes, at)?;
        if len < 2 {
            return Err(BAD_LENGTH);
        }
        let body = bytes.get(at + 2..at + len).ok_or(JpegError::Truncated)?;
        let next = at + len;
        match marker {
            0xDB => self.quant_tables(body)?,
            0xC4 => self.huffman_tables(body)?,
            0xDD => {
                self.restart = be16(body, 0).map_err(|_| BAD_LENGTH)?;
            }
            0xEE if body.starts_with(b"Adobe") && body.len() >= 12 => {
                // Transform 0 on three components: RGB, not YCbCr.
                self.adobe_rgb = body[11] == 0;
            }
            0xC0 | 0xC1 => {
                if self.frame_seen {
                    return Err(JpegError::Corrupt("a second frame header"));
                }
                self.frame_seen = true;
                return Ok(match self.frame(body)? {
                    Some(f) => Step::Frame(f, next),
                    None => Step::Unsupported,
                });
            }
            // Progressive, lossless, hierarchical, arithmetic coding.
            0xC2 | 0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => return Ok(Step::Unsupported),
            0xDA => return Ok(Step::Scan(self.scan(body)?, next)),
            _ => {}
        }
        Ok(Step::Next(next))
    }

    fn quant_tables(&mut self, mut b: &[u8]) -> Result<(), JpegError> {
        while !b.is_empty() {
            let (precision, id) = ((b[0] >> 4) as usize, (b[0] & 15) as usize);
            if precision > 1 || id > 3 {
                return Err(JpegError::Corrupt("bad quantisation table"));
            }
            let size = 64 * (precision + 1);
            let values = b.get(1..1 + size).ok_or(BAD_LENGTH)?;
            let mut q = [0u16; 64];
            for (k, v) in q.iter_mut().enumerate() {
                *v = if precision == 0 {
                    values[k] as u16
                } else {
                    (values[2 * k] as u16) << 8 | values[2 * k + 1] as u16
                };
            }
            self.quant[id] = Some(q);
            b = &b[1 + size..];
        }
        Ok(())
    }

    fn huffman_tables(&mut self, mut b: &[u8]) -> Result<(), JpegError> {
        while !b.is_empty() {
            let (class, id) = ((b[0] >> 4) as usize, (b[0] & 15) as usize);
            if class > 1 || id > 3 {
                return Err(JpegError::Corrupt("bad Huffman table"));
            }
            let counts: [u8; 16] = b.get(1..17).ok_or(BAD_LENGTH)?.try_into().expect("16");
            let n: usize = counts.iter().map(|&c| c as usize).sum();
            let values = b.get(17..17 + n).ok_or(BAD_LENGTH)?;
            let table = Table::new(&counts, values, class == 1)?;
            if class == 0 {
                self.dc[id] = Some(table);
            } else {
                self.ac[id] = Some(table);
            }
            b = &b[17 + n..];
        }
        Ok(())
    }

    fn frame(&self, b: &[u8]) -> Result<Option<Frame>, JpegError> {
        if b.len() < 6 {
            return Err(BAD_LENGTH);
        }
        let (precision, height, width, n) = (b[0], be16(b, 1)?, be16(b, 3)?, b[5] as usize);
        if b.len() < 6 + 3 * n {
            return Err(BAD_LENGTH);
        }
        if width == 0 {
            return Err(JpegError::Corrupt("zero width"));
        }
        // 12-bit samples, a height given later (DNL), CMYK or Adobe RGB: the full decoder's.
        if precision != 8 || height == 0 || !(n == 1 || n == 3) || (n == 3 && self.adobe_rgb) {
            return Ok(None);
        }
        let mut comps = Vec::with_capacity(n);
        for c in b[6..6 + 3 * n].chunks_exact(3) {
            let (h, v, tq) = ((c[1] >> 4) as usize, (c[1] & 15) as usize, c[2] as usize);
            if !(1..=4).contains(&h) || !(1..=4).contains(&v) || tq > 3 {
                return Err(JpegError::Corrupt("bad component in the frame header"));
            }
            let (h, v) = if n == 1 { (1, 1) } else { (h, v) };
            comps.push(Component { id: c[0], h, v, tq });
        }
        let hmax = comps.iter().map(|c| c.h).max().unwrap_or(1);
        let vmax = comps.iter().map(|c| c.v).max().unwrap_or(1);
        Ok(Some(Frame {
            width: width as u32,
            height: height as u32,
            comps,
            hmax,
            vmax,
        }))
    }

    fn scan(&self, b: &[u8]) -> Result<ScanHeader, JpegError> {
        let n = *b.first().ok_or(BAD_LENGTH)? as usize;
        if !(1..=4).contains(&n) || b.len() < 1 + 2 * n + 3 {
            return Err(BAD_LENGTH);
        }
        let ids: Vec<(u8, usize, usize)> = b[1..1 + 2 * n]
            .chunks_exact(2)
            .map(|c| (c[0], (c[1] >> 4) as usize, (c[1] & 15) as usize))
            .collect();
        let tail = &b[1 + 2 * n..];
        // Spectral selection 0-63, no successive approximation: a sequential scan.
        if tail[0] != 0 || tail[1] != 63 || tail[2] != 0 {
            return Err(JpegError::Corrupt("not a sequential scan"));
        }
        if ids.iter().any(|&(_, dc, ac)| dc > 3 || ac > 3) {
            return Err(JpegError::Corrupt("bad Huffman table index in a scan"));
        }
        // The component indices are resolved against the frame by the caller.
        Ok(ScanHeader {
            comps: ids
                .into_iter()
                .map(|(id, dc, ac)| (id as usize, dc, ac))
                .collect(),
        })
    }
}

/// Reads up to the frame header: `Ok(None)` if the frame is one this decoder leaves alone.
pub fn read_frame(bytes: &[u8]) -> Result<Option<Frame>, JpegError> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return Err(JpegError::Corrupt("not a JPEG (no start-of-image marker)"));
    }
    let mut state = State::default();
    let mut pos = 2;
    loop {
        match state.step(bytes, pos)? {
            Step::Next(p) => pos = p,
            Step::Frame(f, _) => return Ok(Some(f)),
            Step::Unsupported => return Ok(None),
            Step::Scan(..) | Step::End => {
                return Err(JpegError::Corrupt("no frame header before the scan"))
            }
        }
    }
}
