//! Little-endian primitives shared by the wire formats (the network's messages in
//! `net::message`, the share formats in `mpc::codec`): a [`Cursor`] that reads and a [`Writer`]
//! that writes. The cursor never reads past the end; each format turns a short read into its
//! own error, with its own field names. Each format keeps its own layout (which fields, which
//! count widths); only the byte order and the bounds checks live here.
//!
//! Imports nothing from the crate.

/// A read that wanted more bytes than were left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Short {
    pub needed: usize,
    pub available: usize,
    /// Where the read started.
    pub offset: usize,
}

pub(crate) struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Cursor { data, pos: 0 }
    }
    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Short> {
        let available = self.remaining();
        if n > available {
            return Err(Short {
                needed: n,
                available,
                offset: self.pos,
            });
        }
        let out = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], Short> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    pub fn u8(&mut self) -> Result<u8, Short> {
        Ok(self.array::<1>()?[0])
    }
    pub fn u32(&mut self) -> Result<u32, Short> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, Short> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}

/// Appends little-endian integers and raw bytes to a growing buffer.
#[derive(Debug, Default)]
pub(crate) struct Writer(Vec<u8>);

impl Writer {
    pub fn with_capacity(n: usize) -> Self {
        Writer(Vec::with_capacity(n))
    }
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    /// Bytes as they are, with no length (the format writes one first if it needs one).
    pub fn raw(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }
    /// Words as they are, with no count.
    pub fn u64s(&mut self, words: &[u64]) {
        self.0.reserve(words.len() * 8);
        for w in words {
            self.u64(*w);
        }
    }
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_writes_what_the_cursor_reads() {
        let mut w = Writer::with_capacity(4);
        w.u8(1);
        w.u32(2);
        w.u64(3);
        w.raw(b"ab");
        w.u64s(&[u64::MAX, 5]);
        let data = w.into_bytes();
        assert_eq!(&data[..13], &[1u8, 2, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0]);
        let mut c = Cursor::new(&data);
        assert_eq!(c.u8(), Ok(1));
        assert_eq!(c.u32(), Ok(2));
        assert_eq!(c.u64(), Ok(3));
        assert_eq!(c.take(2), Ok(&b"ab"[..]));
        assert_eq!(c.u64(), Ok(u64::MAX));
        assert_eq!(c.u64(), Ok(5));
        assert_eq!(c.remaining(), 0);
    }

    #[test]
    fn reads_little_endian_and_stops_at_the_end() {
        let data = [1u8, 2, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0];
        let mut c = Cursor::new(&data);
        assert_eq!(c.u8(), Ok(1));
        assert_eq!(c.u32(), Ok(2));
        assert_eq!(c.u64(), Ok(3));
        assert_eq!(c.remaining(), 0);
        assert_eq!(
            c.u8(),
            Err(Short {
                needed: 1,
                available: 0,
                offset: 13
            })
        );
        let mut c = Cursor::new(&data[..3]);
        assert_eq!(c.u8(), Ok(1));
        // A failed read consumes nothing.
        assert_eq!(
            c.u32(),
            Err(Short {
                needed: 4,
                available: 2,
                offset: 1
            })
        );
        assert_eq!(c.remaining(), 2);
    }
}
