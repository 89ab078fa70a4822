//! Record framing: every Noise message travels as a record, a 2-byte big-endian length followed
//! by that many bytes (at most 65,535, the Noise limit), and reads of records can run under one
//! deadline for a whole exchange.
//!
//! Owns the record layer only: it knows nothing of handshakes, roles or channels, and imports
//! nothing from the rest of `net` but the tag length, so the handshake and the channel can both
//! build on it.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

/// Largest Noise message (ciphertext including the tag).
pub const MAX_RECORD: usize = 65_535;
/// Authentication tag added by the cipher (AES-GCM, see [`super::cipher`]).
pub const TAG_LEN: usize = super::cipher::TAG_LEN;
/// Largest plaintext in one record.
pub const MAX_RECORD_PLAINTEXT: usize = MAX_RECORD - TAG_LEN;

/// Writes one record (length prefix and body) to `w`.
pub(crate) fn write_record(w: &mut impl Write, body: &[u8]) -> io::Result<()> {
    let len = u16::try_from(body.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "record over 65535 bytes"))?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(body)
}

/// Reads one record into `buf` (resized to the record's length, at most 65,535 bytes).
pub(crate) fn read_record(r: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut len = [0u8; 2];
    r.read_exact(&mut len)?;
    buf.resize(usize::from(u16::from_be_bytes(len)), 0);
    r.read_exact(buf)
}

/// A socket's read half under one deadline for a whole exchange: each read waits only for the
/// time left, and once it has passed reads fail with `TimedOut`. Without a deadline, reads use
/// the socket's own timeout.
pub(crate) struct DeadlineStream {
    stream: TcpStream,
    deadline: Option<Instant>,
}

impl DeadlineStream {
    pub(crate) fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            deadline: None,
        }
    }

    pub(crate) fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    pub(crate) fn get_ref(&self) -> &TcpStream {
        &self.stream
    }
}

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.deadline {
            Some(deadline) => read_by(&self.stream, deadline, buf),
            None => self.stream.read(buf),
        }
    }
}

/// A borrowed socket read under one deadline (the handshake's).
pub(crate) struct Within<'a>(pub &'a TcpStream, pub Instant);

impl Read for Within<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        read_by(self.0, self.1, buf)
    }
}

/// One read that waits at most until `deadline`.
fn read_by(mut stream: &TcpStream, deadline: Instant, buf: &mut [u8]) -> io::Result<usize> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
    }
    stream.set_read_timeout(Some(left))?;
    stream.read(buf)
}
