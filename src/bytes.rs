//! A little-endian cursor over a byte slice, shared by the wire formats (the network's
//! messages in `net::message`, the share formats in `mpc::codec`). It never reads past the end;
//! each format turns a short read into its own error, with its own field names.

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

#[cfg(test)]
mod tests {
    use super::*;

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
