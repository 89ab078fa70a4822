//! The sending half of a [`super::channel::SecureChannel`]: a writer thread that owns the
//! socket's write half, splits each queued message into records as the channel's module
//! documentation describes, encrypts them in place into one batch buffer and writes each batch
//! with one call.
//!
//! Owns the message-to-record framing (the length header) and the send nonce; the channel's
//! receiving half follows the same layout. Imports the record layer and `NetError` only.

use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use snow::StatelessTransportState;

use super::error::NetError;
use super::record::{MAX_RECORD, MAX_RECORD_PLAINTEXT, TAG_LEN};

/// The total-length header at the start of each message's first record.
pub(super) const LENGTH_HEADER: usize = 8;
pub(super) enum Command {
    /// One message: `head` followed by `body` (two buffers, so a small header can go before a
    /// large payload without copying the payload).
    Data {
        head: Vec<u8>,
        body: Vec<u8>,
    },
    Flush(mpsc::Sender<()>),
}

/// The first error the writer thread hit; later sends report it.
pub(super) type Failure = Arc<Mutex<Option<String>>>;

pub(super) fn failure_text(f: &Failure) -> Option<String> {
    f.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

pub(super) fn writer_loop(
    commands: Receiver<Command>,
    stream: TcpStream,
    transport: &StatelessTransportState,
    label: &str,
    io_timeout: Duration,
    failure: &Failure,
) {
    let mut out = Batch::new(transport, stream);
    let mut first = vec![0u8; MAX_RECORD_PLAINTEXT];
    let fail = |e: NetError, stream: &TcpStream| {
        *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
        // Wake a reader blocked on this socket so the failure is seen promptly.
        let _ = stream.shutdown(Shutdown::Both);
    };
    let io_err = |during, e| NetError::from_io(label, during, io_timeout, e);
    loop {
        // Batch queued messages into the buffer; flush only when the queue runs dry.
        let command = match commands.try_recv() {
            Ok(c) => c,
            Err(TryRecvError::Empty) => {
                if let Err(e) = out.send() {
                    return fail(io_err("sending", e), &out.stream);
                }
                match commands.recv() {
                    Ok(c) => c,
                    Err(_) => break,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        };
        match command {
            Command::Data { head, body } => {
                if let Err(e) = encrypt_message(head, &body, &mut out, &mut first) {
                    return fail(e.into_net(label, io_timeout), &out.stream);
                }
            }
            Command::Flush(ack) => {
                if let Err(e) = out.send() {
                    return fail(io_err("sending", e), &out.stream);
                }
                let _ = ack.send(());
            }
        }
    }
    if let Err(e) = out.send() {
        fail(io_err("sending the last messages", e), &out.stream);
    }
}

/// Records ready to go: encrypted in place into one buffer, each with the next send nonce, and
/// handed to the socket in one write per batch (eight full records), so that the receiver can
/// decrypt one batch while the next is encrypted, and no record is copied again on its way to
/// the socket.
struct Batch<'t> {
    transport: &'t StatelessTransportState,
    stream: TcpStream,
    nonce: u64,
    buf: Vec<u8>,
    filled: usize,
}

impl<'t> Batch<'t> {
    const RECORDS: usize = 8;

    fn new(transport: &'t StatelessTransportState, stream: TcpStream) -> Self {
        Self {
            transport,
            stream,
            nonce: 0,
            buf: vec![0; Self::RECORDS * (2 + MAX_RECORD)],
            filled: 0,
        }
    }

    /// Encrypts `plain` as the next record, sending the batch first if it is full.
    fn seal(&mut self, plain: &[u8]) -> Result<(), EncryptError> {
        let len = 2 + plain.len() + TAG_LEN;
        if self.filled + len > self.buf.len() {
            self.send().map_err(EncryptError::Io)?;
        }
        let record = &mut self.buf[self.filled..self.filled + len];
        let n = self
            .transport
            .write_message(self.nonce, plain, &mut record[2..])
            .map_err(EncryptError::Noise)?;
        self.nonce += 1;
        // `n` is the record's length, at most MAX_RECORD, so it fits the 2-byte prefix.
        record[..2].copy_from_slice(&(n as u16).to_be_bytes());
        self.filled += 2 + n;
        Ok(())
    }

    fn send(&mut self) -> io::Result<()> {
        if self.filled > 0 {
            self.stream.write_all(&self.buf[..self.filled])?;
            self.filled = 0;
        }
        Ok(())
    }
}

enum EncryptError {
    Io(io::Error),
    Noise(snow::Error),
}

impl EncryptError {
    fn into_net(self, label: &str, io_timeout: Duration) -> NetError {
        match self {
            EncryptError::Io(e) => NetError::from_io(label, "sending", io_timeout, e),
            EncryptError::Noise(e) => NetError::Malformed {
                peer: label.to_owned(),
                reason: format!("cannot encrypt record: {e}"),
            },
        }
    }
}

/// Splits the message `head` + `body` into records as described in the channel's module
/// documentation and adds them to `out`; `first` is room for the first record's plaintext.
fn encrypt_message(
    head: Vec<u8>,
    body: &[u8],
    out: &mut Batch,
    first: &mut [u8],
) -> Result<(), EncryptError> {
    let room = MAX_RECORD_PLAINTEXT - LENGTH_HEADER;
    if head.len() > room {
        // Only the first record gathers from both parts; a head this long is joined instead.
        let joined = [head, body.to_vec()].concat();
        return encrypt_message(Vec::new(), &joined, out, first);
    }
    let total = head.len() + body.len();
    let from_body = body.len().min(room - head.len());
    first[..LENGTH_HEADER].copy_from_slice(&(total as u64).to_le_bytes());
    let mut at = LENGTH_HEADER;
    for part in [&head[..], &body[..from_body]] {
        first[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    out.seal(&first[..at])?;
    for chunk in body[from_body..].chunks(MAX_RECORD_PLAINTEXT) {
        out.seal(chunk)?;
    }
    Ok(())
}
