//! [`SecureChannel`]: a blocking, message-oriented channel over TCP, encrypted and
//! authenticated with the Noise transport keys of a finished handshake.
//!
//! Wire format. Every Noise message travels as a record ([`super::record`]): a 2-byte
//! big-endian length followed by that many bytes of ciphertext (at most 65,535, the Noise
//! limit). One application message of any size becomes several records: the first record's
//! plaintext starts with the message's total length (8 bytes, little-endian), followed by the
//! first bytes of the message; further records carry the rest in order. The length is
//! encrypted and authenticated like the data.
//!
//! Nonces are implicit counters kept on both sides (one per direction), so a replayed, dropped,
//! reordered or altered record fails authentication and the channel is closed; there is no
//! recovery within a session. A receiver checks the announced length against its limit before
//! reading on, and never allocates more than it has received plus a bounded reserve.
//!
//! Deadlines. A receive has one deadline for the whole message (the I/O timeout from the moment
//! the wait starts), not one per read: every read gets only the time that is left, so a peer
//! that sends a byte now and then cannot hold the channel open beyond it.
//!
//! Sending is done by a writer thread that owns the socket's write half: [`SecureChannel::send`]
//! queues the message and returns. That way two parties that both send a large message before
//! reading (the usual shape of an MPC round) cannot deadlock on full TCP buffers.
//!
//! The writer thread lives in [`super::sender`], which also owns the framing of a message into
//! records; the receiving half here follows it.
//!
//! Builds on the record layer, the sender and the peer role; it may not import the handshake,
//! which creates channels.

use std::io::{self, BufRead, BufReader};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc::{self, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use snow::StatelessTransportState;

use super::error::NetError;
use super::message::Message;
use super::peer::PeerRole;
use super::record::{read_record, DeadlineStream, MAX_RECORD, TAG_LEN};
use super::sender::{failure_text, writer_loop, Command, Failure, LENGTH_HEADER};

/// Messages queued for the writer thread before `send` blocks. MPC rounds have one or two
/// outstanding messages per peer; the bound only stops a runaway sender from exhausting memory.
const SEND_QUEUE: usize = 64;

struct Writer {
    queue: SyncSender<Command>,
    thread: JoinHandle<()>,
}

/// Decides the receive limit when a message starts arriving.
type LimitFn = Box<dyn Fn() -> u64 + Send>;

/// Where the next record's ciphertext is (see [`SecureChannel::next_record`]).
#[derive(Clone, Copy)]
enum Held {
    /// At the start of the read buffer, after its 2-byte length: this many bytes.
    Buffered(usize),
    /// In `SecureChannel::record`.
    Copied,
}

/// Closes a channel's connection from another thread: a receive blocked on it fails at once.
#[derive(Debug)]
pub struct AbortHandle(TcpStream);

impl AbortHandle {
    pub fn abort(&self) {
        let _ = self.0.shutdown(Shutdown::Both);
    }
}

/// A bidirectional encrypted channel to one authenticated peer.
pub struct SecureChannel {
    peer: PeerRole,
    label: Arc<str>,
    transport: Arc<StatelessTransportState>,
    reader: BufReader<DeadlineStream>,
    recv_nonce: u64,
    /// The largest message this end sends.
    max_message: u64,
    /// The largest message this end accepts (the role-dependent cap, see
    /// [`SecureChannel::set_recv_limit`]), unless `recv_limit_fn` decides it per message.
    recv_limit: u64,
    recv_limit_fn: Option<LimitFn>,
    /// The deadline for one whole message received.
    io_timeout: Duration,
    writer: Option<Writer>,
    write_failure: Failure,
    broken: Option<String>,
    record: Vec<u8>,
    plain: Vec<u8>,
    bytes_sent: u64,
    bytes_received: u64,
}

impl SecureChannel {
    /// Wraps a socket whose handshake has finished. Sets the I/O timeouts and starts the writer
    /// thread.
    pub(crate) fn new(
        stream: TcpStream,
        transport: StatelessTransportState,
        peer: PeerRole,
        label: String,
        max_message: u64,
        io_timeout: Duration,
    ) -> Result<Self, NetError> {
        let io_err = |e| NetError::from_io(&label, "setting up the channel", io_timeout, e);
        stream.set_read_timeout(Some(io_timeout)).map_err(io_err)?;
        stream.set_write_timeout(Some(io_timeout)).map_err(io_err)?;
        let write_half = stream.try_clone().map_err(io_err)?;
        let transport = Arc::new(transport);
        let label: Arc<str> = label.into();
        let write_failure: Failure = Arc::default();
        let (queue, commands) = mpsc::sync_channel(SEND_QUEUE);
        let thread = {
            let transport = Arc::clone(&transport);
            let thread_label = Arc::clone(&label);
            let failure = Arc::clone(&write_failure);
            std::thread::Builder::new()
                .name(format!("privxray-send-{peer}"))
                .spawn(move || {
                    writer_loop(
                        commands,
                        write_half,
                        &transport,
                        &thread_label,
                        io_timeout,
                        &failure,
                    )
                })
                .map_err(|e| NetError::Io {
                    peer: label.to_string(),
                    during: "starting the writer thread",
                    source: e,
                })?
        };
        Ok(Self {
            peer,
            label,
            transport,
            reader: BufReader::with_capacity(4 * (MAX_RECORD + 2), DeadlineStream::new(stream)),
            recv_nonce: 0,
            max_message,
            recv_limit: max_message,
            recv_limit_fn: None,
            io_timeout,
            writer: Some(Writer { queue, thread }),
            write_failure,
            broken: None,
            record: Vec::with_capacity(MAX_RECORD),
            plain: vec![0; MAX_RECORD],
            bytes_sent: 0,
            bytes_received: 0,
        })
    }

    /// Who is at the other end (authenticated by the handshake).
    pub fn peer(&self) -> PeerRole {
        self.peer
    }

    /// The peer's role and address, as used in logs and errors.
    pub fn peer_label(&self) -> &str {
        &self.label
    }

    /// Caps the size of the messages this end accepts from now on. Sending is not affected.
    pub fn set_recv_limit(&mut self, max: u64) {
        self.recv_limit = max;
        self.recv_limit_fn = None;
    }

    /// Like [`SecureChannel::set_recv_limit`], with the cap asked of `limit` when each
    /// message's length arrives (a party gives a client no more than an input share of the
    /// model installed at that moment).
    pub fn set_recv_limit_fn(&mut self, limit: impl Fn() -> u64 + Send + 'static) {
        self.recv_limit_fn = Some(Box::new(limit));
    }

    /// The cap on the next message received.
    pub fn recv_limit(&self) -> u64 {
        self.recv_limit_fn.as_ref().map_or(self.recv_limit, |f| f())
    }

    /// A handle that can close this channel's connection from another thread.
    pub fn abort_handle(&self) -> Result<AbortHandle, NetError> {
        self.socket()
            .try_clone()
            .map(AbortHandle)
            .map_err(|e| NetError::from_io(&self.label, "cloning the socket", self.io_timeout, e))
    }

    /// Forgets the traffic so far (the handshake's confirmation is not application data).
    pub(crate) fn reset_traffic(&mut self) {
        self.bytes_sent = 0;
        self.bytes_received = 0;
    }

    /// Application bytes sent and received so far.
    pub fn traffic(&self) -> (u64, u64) {
        (self.bytes_sent, self.bytes_received)
    }

    fn socket(&self) -> &TcpStream {
        self.reader.get_ref().get_ref()
    }

    fn check_usable(&self) -> Result<(), NetError> {
        let cause = self
            .broken
            .clone()
            .or_else(|| failure_text(&self.write_failure));
        match cause {
            Some(cause) => Err(NetError::Broken {
                peer: self.label.to_string(),
                cause,
            }),
            None => Ok(()),
        }
    }

    /// Queues `data` for sending. Returns once queued; transmission errors surface on a later
    /// call (or on [`SecureChannel::flush`] / [`SecureChannel::close`]).
    pub fn send(&mut self, data: &[u8]) -> Result<(), NetError> {
        self.send_owned(data.to_vec())
    }

    /// Like [`SecureChannel::send`] without copying the buffer.
    pub fn send_owned(&mut self, data: Vec<u8>) -> Result<(), NetError> {
        self.send_parts(Vec::new(), data)
    }

    /// Sends one message made of `head` followed by `body`, copying neither.
    pub(crate) fn send_parts(&mut self, head: Vec<u8>, body: Vec<u8>) -> Result<(), NetError> {
        self.check_usable()?;
        let len = (head.len() + body.len()) as u64;
        if len > self.max_message {
            return Err(NetError::SendTooLarge {
                len,
                max: self.max_message,
            });
        }
        let queued = match &self.writer {
            Some(w) => w.queue.send(Command::Data { head, body }).is_ok(),
            None => false,
        };
        if !queued {
            return Err(self.writer_gone());
        }
        if super::debug_enabled() {
            super::log(format_args!("queued {len} bytes for {}", self.label));
        }
        self.bytes_sent += len;
        Ok(())
    }

    fn writer_gone(&mut self) -> NetError {
        let cause = failure_text(&self.write_failure).unwrap_or_else(|| "writer stopped".into());
        self.broken = Some(cause.clone());
        NetError::Broken {
            peer: self.label.to_string(),
            cause,
        }
    }

    /// Waits until everything queued so far has been handed to the operating system.
    pub fn flush(&mut self) -> Result<(), NetError> {
        self.check_usable()?;
        let (ack, acked) = mpsc::channel();
        let sent = self
            .writer
            .as_ref()
            .is_some_and(|w| w.queue.send(Command::Flush(ack)).is_ok());
        if !sent || acked.recv().is_err() {
            return Err(self.writer_gone());
        }
        self.check_usable()
    }

    /// Sends everything queued, then closes the connection. Reports any send failure.
    pub fn close(mut self) -> Result<(), NetError> {
        self.shutdown_writer();
        self.check_usable()
    }

    fn shutdown_writer(&mut self) {
        if let Some(Writer { queue, thread }) = self.writer.take() {
            if self.broken.is_some() {
                // Nothing more will be delivered in step; unblock a writer stuck on a full
                // socket instead of waiting out the write timeout.
                let _ = self.socket().shutdown(Shutdown::Both);
            }
            drop(queue);
            if thread.join().is_err() {
                *self.write_failure.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some("writer thread panicked".into());
            }
            let _ = self.socket().shutdown(Shutdown::Write);
        }
    }

    /// Receives the next message, which must arrive whole within the I/O timeout. Any failure
    /// (timeout, authentication, malformed record) breaks the channel: nonces are no longer in
    /// step, so later calls fail immediately.
    pub fn recv(&mut self) -> Result<Vec<u8>, NetError> {
        self.recv_until(Instant::now() + self.io_timeout)
    }

    /// Like [`SecureChannel::recv`], with the whole message due by `deadline`.
    pub(crate) fn recv_until(&mut self, deadline: Instant) -> Result<Vec<u8>, NetError> {
        self.recv_parts_until(0, deadline).map(|(_, body)| body)
    }

    /// Receives the next message as its first `head` bytes (fewer if the message is shorter)
    /// and the rest, so that a caller can read a small header and keep a large payload without
    /// moving it.
    pub(crate) fn recv_parts(&mut self, head: usize) -> Result<(Vec<u8>, Vec<u8>), NetError> {
        self.recv_parts_until(head, Instant::now() + self.io_timeout)
    }

    fn recv_parts_until(
        &mut self,
        head: usize,
        deadline: Instant,
    ) -> Result<(Vec<u8>, Vec<u8>), NetError> {
        self.check_usable()?;
        self.reader.get_mut().set_deadline(Some(deadline));
        let waited = deadline.saturating_duration_since(Instant::now());
        match self.recv_message_parts(head, waited) {
            Ok((h, b)) => {
                let n = h.len() + b.len();
                if super::debug_enabled() {
                    super::log(format_args!("received {n} bytes from {}", self.label));
                }
                self.bytes_received += n as u64;
                Ok((h, b))
            }
            Err(e) => {
                self.broken = Some(e.to_string());
                // Wake the writer thread and tell the peer we are gone.
                let _ = self.socket().shutdown(Shutdown::Both);
                Err(e)
            }
        }
    }

    /// Encodes and sends a typed protocol message.
    pub fn send_message(&mut self, message: &Message) -> Result<(), NetError> {
        self.send_owned(message.encode())
    }

    /// Receives and decodes a typed protocol message.
    pub fn recv_message(&mut self) -> Result<Message, NetError> {
        let bytes = self.recv()?;
        Message::decode_owned(bytes).map_err(|source| NetError::Decode {
            peer: self.label.to_string(),
            source,
        })
    }

    /// Receives one message split after `head` bytes (see [`SecureChannel::recv_parts`]).
    fn recv_message_parts(
        &mut self,
        head: usize,
        waited: Duration,
    ) -> Result<(Vec<u8>, Vec<u8>), NetError> {
        let n = self.read_chunk("waiting for a message", waited)?;
        if n < LENGTH_HEADER {
            return Err(self.malformed(format!(
                "first record of a message holds {n} bytes, less than its {LENGTH_HEADER}-byte length header"
            )));
        }
        let mut header = [0u8; LENGTH_HEADER];
        header.copy_from_slice(&self.plain[..LENGTH_HEADER]);
        let total = u64::from_le_bytes(header);
        let limit = self.recv_limit();
        if total > limit {
            return Err(NetError::TooLarge {
                peer: self.label.to_string(),
                len: total,
                max: limit,
            });
        }
        let first = n - LENGTH_HEADER;
        if first as u64 > total {
            return Err(self.malformed(format!(
                "first record carries {first} bytes of a {total}-byte message"
            )));
        }
        let total = usize::try_from(total).map_err(|_| {
            self.malformed(format!("a {total}-byte message does not fit in memory"))
        })?;
        let data = &self.plain[LENGTH_HEADER..n];
        let head = head.min(total);
        if head > first {
            // A header longer than the first record (never the case for the callers' few
            // bytes): take the whole message and split it.
            let mut all = vec![0u8; total];
            all[..first].copy_from_slice(data);
            self.receive_into(&mut all, first, waited)?;
            let body = all.split_off(head);
            return Ok((all, body));
        }
        let head_bytes = data[..head].to_vec();
        // `total` is within this peer's cap (a client's is its input share's size), so the
        // whole message is reserved at once: growing by doubling would hold the old and the new
        // buffer together, three times a 2.2 GB VGG16-2 share at the peak. A large zeroed
        // allocation comes as untouched zero pages, which cost address space, not memory, until
        // written, so a sender that stops early costs little; records decrypt straight into it.
        let mut body = vec![0u8; total - head];
        body[..first - head].copy_from_slice(&data[head..]);
        self.receive_into(&mut body, first - head, waited)?;
        Ok((head_bytes, body))
    }

    /// Decrypts continuation records into `buf` after its first `filled` bytes until it is full.
    fn receive_into(
        &mut self,
        buf: &mut [u8],
        mut filled: usize,
        waited: Duration,
    ) -> Result<(), NetError> {
        while filled < buf.len() {
            filled += self.read_chunk_into(&mut buf[filled..], waited)?;
        }
        Ok(())
    }

    /// Reads one continuation record and decrypts it into the start of `rest` (the part of the
    /// message still missing), returning its plaintext length.
    fn read_chunk_into(&mut self, rest: &mut [u8], waited: Duration) -> Result<usize, NetError> {
        let during = "receiving the rest of a message";
        let held = self
            .next_record()
            .map_err(|e| NetError::from_io(&self.label, during, waited, e))?;
        let len = self.record_bytes(held).len();
        let n = len.saturating_sub(TAG_LEN);
        if len < TAG_LEN || n == 0 || n > rest.len() {
            return Err(self.malformed(format!(
                "continuation record of {n} bytes where {} bytes remain",
                rest.len()
            )));
        }
        self.decrypt_record(held, rest)
    }

    fn malformed(&self, reason: String) -> NetError {
        NetError::Malformed {
            peer: self.label.to_string(),
            reason,
        }
    }

    /// Reads and decrypts one record into `self.plain`, returning the plaintext length.
    /// `waited` is the message's whole allowance, for the timeout error.
    fn read_chunk(&mut self, during: &'static str, waited: Duration) -> Result<usize, NetError> {
        let held = self
            .next_record()
            .map_err(|e| NetError::from_io(&self.label, during, waited, e))?;
        let len = self.record_bytes(held).len();
        if len < TAG_LEN {
            return Err(self.malformed(format!(
                "record of {len} bytes is shorter than an authentication tag"
            )));
        }
        let mut plain = std::mem::take(&mut self.plain);
        let n = self.decrypt_record(held, &mut plain);
        self.plain = plain;
        n
    }

    /// Makes the next record's ciphertext available: left in the read buffer when the buffer
    /// holds all of it (most records: it takes four), so that it is decrypted from there
    /// without a copy; otherwise copied into `self.record` as it arrives.
    fn next_record(&mut self) -> io::Result<Held> {
        loop {
            // A signal (a terminal resize in the TUI) interrupts a read under a timeout even
            // with SA_RESTART; `read_exact` below retries, so this does too.
            match self.reader.fill_buf() {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
                Ok(_) => break,
            }
        }
        let available = self.reader.buffer();
        if let [hi, lo, ..] = *available {
            let len = usize::from(u16::from_be_bytes([hi, lo]));
            if available.len() >= 2 + len {
                return Ok(Held::Buffered(len));
            }
        }
        read_record(&mut self.reader, &mut self.record)?;
        Ok(Held::Copied)
    }

    /// The ciphertext of the record `held` describes.
    fn record_bytes(&self, held: Held) -> &[u8] {
        match held {
            Held::Buffered(len) => &self.reader.buffer()[2..2 + len],
            Held::Copied => &self.record,
        }
    }

    /// Decrypts the record `held` describes into `out` with the next receive nonce, and
    /// consumes it.
    fn decrypt_record(&mut self, held: Held, out: &mut [u8]) -> Result<usize, NetError> {
        let decrypted = self
            .transport
            .read_message(self.recv_nonce, self.record_bytes(held), out);
        if let Held::Buffered(len) = held {
            self.reader.consume(2 + len);
        }
        let n = decrypted.map_err(|e| match e {
            snow::Error::Decrypt => NetError::Authentication {
                peer: self.label.to_string(),
            },
            other => self.malformed(format!("cannot decrypt record: {other}")),
        })?;
        self.recv_nonce += 1;
        Ok(n)
    }
}

impl Drop for SecureChannel {
    fn drop(&mut self) {
        // Delivers what was queued (bounded by the write timeout) before the socket closes.
        self.shutdown_writer();
    }
}

impl std::fmt::Debug for SecureChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureChannel")
            .field("peer", &self.label)
            .field("bytes_sent", &self.bytes_sent)
            .field("bytes_received", &self.bytes_received)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::config::{PartiesConfig, PartyAddress, PartyId};
    use crate::net::handshake::tests::{fixture, fixture_with, Fixture};
    use crate::net::handshake::{accept, connect_client, connect_to_party, Inbound, CONFIRM};
    use crate::net::record::{write_record, MAX_RECORD_PLAINTEXT};
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener};
    use std::thread;

    const FIRST_DATA: usize = MAX_RECORD_PLAINTEXT - LENGTH_HEADER;

    /// Deterministic, non-repeating test bytes (a xorshift stream), independent of the code
    /// under test.
    fn pattern(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn channel_of(inbound: Inbound) -> SecureChannel {
        match inbound {
            Inbound::Party { channel, .. } | Inbound::Client(channel) | Inbound::Owner(channel) => {
                channel
            }
        }
    }

    /// Party 2 -> party 0 over a direct loopback connection; runs `a` on party 2's end and
    /// `b` on party 0's end concurrently.
    fn pair<A: Send, B: Send>(
        f: &Fixture,
        a: impl FnOnce(SecureChannel) -> A + Send,
        b: impl FnOnce(SecureChannel) -> B + Send,
    ) -> (A, B) {
        thread::scope(|s| {
            let server = s.spawn(|| b(channel_of(accept(&f.listeners[0], &f.parties[0]).unwrap())));
            let ra = a(connect_to_party(&f.parties[2], PartyId::ALL[0]).unwrap());
            (ra, server.join().unwrap())
        })
    }

    #[test]
    fn messages_round_trip_at_chunk_boundaries() {
        let f = fixture();
        let sizes = [
            0,
            1,
            FIRST_DATA - 1,
            FIRST_DATA,
            FIRST_DATA + 1,
            MAX_RECORD_PLAINTEXT,
            FIRST_DATA + MAX_RECORD_PLAINTEXT,
            FIRST_DATA + 2 * MAX_RECORD_PLAINTEXT + 5,
            3_000_000,
        ];
        let (sent_back, received) = pair(
            &f,
            |mut ch| {
                for (i, &n) in sizes.iter().enumerate() {
                    ch.send(&pattern(n, i as u64)).unwrap();
                }
                let back: Vec<Vec<u8>> = sizes.iter().map(|_| ch.recv().unwrap()).collect();
                let (sent, recvd) = ch.traffic();
                assert_eq!(sent, recvd);
                back
            },
            |mut ch| {
                let got: Vec<Vec<u8>> = sizes.iter().map(|_| ch.recv().unwrap()).collect();
                for m in &got {
                    ch.send(m).unwrap();
                }
                ch.flush().unwrap();
                got
            },
        );
        for (i, &n) in sizes.iter().enumerate() {
            assert_eq!(received[i], pattern(n, i as u64), "size {n}");
            assert_eq!(sent_back[i], pattern(n, i as u64), "echo of size {n}");
        }
    }

    #[test]
    fn both_sides_sending_large_messages_before_reading_do_not_deadlock() {
        // Far more than loopback socket buffers hold: a send that blocked until the peer read
        // would deadlock here.
        let f = fixture();
        let n = 4 << 20;
        let exchange = |seed: u64| {
            move |mut ch: SecureChannel| {
                for k in 0..3 {
                    ch.send_owned(pattern(n, seed + k)).unwrap();
                }
                (0..3).map(|_| ch.recv().unwrap()).collect::<Vec<_>>()
            }
        };
        let (at_2, at_0) = pair(&f, exchange(100), exchange(200));
        for k in 0..3 {
            assert_eq!(at_2[k as usize], pattern(n, 200 + k));
            assert_eq!(at_0[k as usize], pattern(n, 100 + k));
        }
    }

    #[test]
    fn sender_refuses_messages_over_its_limit() {
        let f = fixture_with(|c| c.with_max_message_bytes(1 << 16).unwrap());
        let (err, _) = pair(
            &f,
            |mut ch| ch.send(&vec![0; (1 << 16) + 1]).unwrap_err(),
            |_ch| (),
        );
        assert!(
            matches!(
                err,
                NetError::SendTooLarge {
                    len: 65537,
                    max: 65536
                }
            ),
            "{err}"
        );
    }

    #[derive(Clone, Copy, Debug)]
    enum Fault {
        None,
        FlipBit(usize),
        Replay(usize),
        Drop(usize),
        Shorten(usize),
        CutBefore(usize),
        /// Every transport record in two writes, the second after a pause: the receiver finds
        /// records cut short in its read buffer and must take the copying path.
        Trickle,
    }

    /// A man in the middle on the client -> party direction that parses records and applies
    /// `fault` to transport record number `k` (the handshake record and the confirmation are
    /// not counted). Returns
    /// the address to connect to and a handle yielding every byte the client sent.
    fn proxy(backend: SocketAddr, fault: Fault) -> (SocketAddr, thread::JoinHandle<Vec<u8>>) {
        let front = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = front.local_addr().unwrap();
        let handle = thread::spawn(move || {
            let (mut client, _) = front.accept().unwrap();
            let mut server = TcpStream::connect(backend).unwrap();
            let mut back_client = client.try_clone().unwrap();
            let mut back_server = server.try_clone().unwrap();
            let downstream = thread::spawn(move || {
                let _ = io::copy(&mut back_server, &mut back_client);
                let _ = back_client.shutdown(Shutdown::Write);
            });
            let mut wire = Vec::new();
            let mut hello = [0u8; 39];
            client.read_exact(&mut hello).unwrap();
            wire.extend_from_slice(&hello);
            server.write_all(&hello).unwrap();
            let mut record = Vec::new();
            let mut index = 0usize;
            while read_record(&mut client, &mut record).is_ok() {
                wire.extend_from_slice(&(record.len() as u16).to_be_bytes());
                wire.extend_from_slice(&record);
                let transport = index.checked_sub(2);
                index += 1;
                let hit = |k: usize| transport == Some(k);
                let result = match fault {
                    Fault::FlipBit(k) if hit(k) => {
                        let last = record.len() - 1;
                        record[last / 2] ^= 0x04;
                        write_record(&mut server, &record)
                    }
                    Fault::Replay(k) if hit(k) => write_record(&mut server, &record)
                        .and_then(|_| write_record(&mut server, &record)),
                    Fault::Drop(k) if hit(k) => Ok(()),
                    Fault::Shorten(k) if hit(k) => write_record(&mut server, &record[..5]),
                    Fault::CutBefore(k) if hit(k) => break,
                    Fault::Trickle if transport.is_some() => {
                        let mut framed = (record.len() as u16).to_be_bytes().to_vec();
                        framed.extend_from_slice(&record);
                        server.write_all(&framed[..3]).and_then(|_| {
                            thread::sleep(Duration::from_millis(2));
                            server.write_all(&framed[3..])
                        })
                    }
                    _ => write_record(&mut server, &record),
                };
                if result.is_err() {
                    break;
                }
            }
            let _ = server.shutdown(Shutdown::Both);
            let _ = client.shutdown(Shutdown::Both);
            let _ = downstream.join();
            wire
        });
        (addr, handle)
    }

    /// A client configuration that reaches party 0 through `via` (addresses are not part of
    /// the configuration hash, so the party still accepts it).
    fn config_via(f: &Fixture, via: SocketAddr) -> PartiesConfig {
        let mut entries = f.parties[0].config().parties().to_vec();
        entries[0].address = PartyAddress::parse(&via.to_string()).unwrap();
        PartiesConfig::new(entries, f.parties[0].config().owner_public_key().copied())
            .unwrap()
            .with_max_message_bytes(f.parties[0].config().max_message_bytes())
            .unwrap()
    }

    /// Client sends `messages` through a faulty proxy; returns what party 0's `recv` calls
    /// gave (one more than the messages, to see the channel state after them).
    fn through_proxy(
        f: &Fixture,
        fault: Fault,
        client_config: impl Fn(PartiesConfig) -> PartiesConfig,
        messages: &[Vec<u8>],
    ) -> (Vec<Result<Vec<u8>, NetError>>, Vec<u8>) {
        let (via, wire) = proxy(f.listeners[0].local_addr().unwrap(), fault);
        let config = client_config(config_via(f, via));
        let results = thread::scope(|s| {
            let server = s.spawn(|| {
                let mut ch = channel_of(accept(&f.listeners[0], &f.parties[0]).unwrap());
                (0..=messages.len()).map(|_| ch.recv()).collect::<Vec<_>>()
            });
            let mut client = connect_client(&config, PartyId::ALL[0]).unwrap();
            for m in messages {
                client.send(m).unwrap();
            }
            let _ = client.close();
            server.join().unwrap()
        });
        (results, wire.join().unwrap())
    }

    #[test]
    fn ciphertext_on_the_wire_hides_the_plaintext() {
        let f = fixture();
        let secret = pattern(200_000, 7);
        let (results, wire) = through_proxy(&f, Fault::None, |c| c, std::slice::from_ref(&secret));
        assert_eq!(results[0].as_ref().unwrap(), &secret);
        assert!(matches!(results[1], Err(NetError::Closed { .. })));
        // No 16-byte window of the plaintext appears anywhere in what was sent.
        let needles: Vec<&[u8]> = secret.chunks(16).take(2000).collect();
        for w in wire.windows(16) {
            assert!(!needles.contains(&w), "plaintext visible on the wire");
        }
        // Records: hello + handshake record + confirmation + ceil((8 + n) / max plaintext)
        // transport records.
        let records = (8 + secret.len()).div_ceil(MAX_RECORD_PLAINTEXT);
        let confirmation = 2 + 8 + CONFIRM.len() + TAG_LEN;
        let expected = 39 + (2 + 48) + confirmation + records * (2 + TAG_LEN) + 8 + secret.len();
        assert_eq!(wire.len(), expected);
    }

    /// Records that arrive whole are decrypted from the read buffer, records that arrive in
    /// pieces are copied out first: both give the message, and a flipped bit fails either way.
    #[test]
    fn records_arriving_in_pieces_decrypt_like_whole_ones() {
        let f = fixture();
        let messages = vec![
            vec![1u8],
            pattern(3 * MAX_RECORD_PLAINTEXT + 5, 3),
            vec![9; 10],
        ];
        for fault in [Fault::None, Fault::Trickle] {
            let (results, _) = through_proxy(&f, fault, |c| c, &messages);
            for (got, want) in results.iter().zip(&messages) {
                assert_eq!(got.as_ref().unwrap(), want, "{fault:?}");
            }
            assert!(
                matches!(results[3], Err(NetError::Closed { .. })),
                "{fault:?}"
            );
        }
    }

    #[test]
    fn tampered_record_is_rejected_and_breaks_the_channel() {
        let f = fixture();
        let (results, _) = through_proxy(&f, Fault::FlipBit(0), |c| c, &[b"hello".to_vec()]);
        assert!(
            matches!(results[0], Err(NetError::Authentication { .. })),
            "{:?}",
            results[0]
        );
        assert!(
            matches!(results[1], Err(NetError::Broken { .. })),
            "{:?}",
            results[1]
        );
    }

    #[test]
    fn replayed_record_is_rejected() {
        let f = fixture();
        let msgs = [b"first".to_vec(), b"second".to_vec()];
        let (results, _) = through_proxy(&f, Fault::Replay(0), |c| c, &msgs);
        assert_eq!(results[0].as_ref().unwrap(), b"first");
        assert!(
            matches!(results[1], Err(NetError::Authentication { .. })),
            "{:?}",
            results[1]
        );
    }

    #[test]
    fn dropped_record_is_detected() {
        let f = fixture();
        let msgs = [b"first".to_vec(), b"second".to_vec()];
        let (results, _) = through_proxy(&f, Fault::Drop(0), |c| c, &msgs);
        assert!(
            matches!(results[0], Err(NetError::Authentication { .. })),
            "{:?}",
            results[0]
        );
    }

    #[test]
    fn dropped_chunk_inside_a_large_message_is_detected() {
        let f = fixture();
        let big = pattern(3 * MAX_RECORD_PLAINTEXT, 1);
        let (results, _) = through_proxy(&f, Fault::Drop(1), |c| c, &[big]);
        assert!(
            matches!(results[0], Err(NetError::Authentication { .. })),
            "{:?}",
            results[0]
        );
    }

    #[test]
    fn short_record_is_malformed() {
        let f = fixture();
        let (results, _) = through_proxy(&f, Fault::Shorten(0), |c| c, &[b"x".to_vec()]);
        assert!(
            matches!(results[0], Err(NetError::Malformed { .. })),
            "{:?}",
            results[0]
        );
    }

    #[test]
    fn connection_cut_mid_message_is_reported() {
        let f = fixture();
        let big = pattern(3 * MAX_RECORD_PLAINTEXT, 2);
        let (results, _) = through_proxy(&f, Fault::CutBefore(2), |c| c, &[big]);
        assert!(
            matches!(results[0], Err(NetError::Closed { .. })),
            "{:?}",
            results[0]
        );
    }

    /// A proxy to `backend` that passes the hello, the handshake record and the confirmation
    /// at once, then everything else one byte per `pace`.
    fn trickle_proxy(backend: SocketAddr, pace: Duration) -> SocketAddr {
        let front = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = front.local_addr().unwrap();
        thread::spawn(move || {
            let (mut client, _) = front.accept().unwrap();
            let mut server = TcpStream::connect(backend).unwrap();
            let (mut back_client, mut back_server) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            thread::spawn(move || {
                let _ = io::copy(&mut back_server, &mut back_client);
            });
            let mut hello = [0u8; 39];
            client.read_exact(&mut hello).unwrap();
            server.write_all(&hello).unwrap();
            let mut record = Vec::new();
            for _ in 0..2 {
                read_record(&mut client, &mut record).unwrap();
                write_record(&mut server, &record).unwrap();
            }
            let mut buf = vec![0u8; 1 << 16];
            'outer: while let Ok(n @ 1..) = client.read(&mut buf) {
                for b in &buf[..n] {
                    if server.write_all(std::slice::from_ref(b)).is_err() {
                        break 'outer;
                    }
                    thread::sleep(pace);
                }
            }
        });
        addr
    }

    #[test]
    fn a_trickling_sender_is_cut_at_the_whole_message_deadline() {
        let io = Duration::from_millis(1500);
        let f = fixture_with(|c| {
            let t = crate::net::config::Timeouts {
                io,
                ..*c.timeouts()
            };
            c.with_timeouts(t)
        });
        let via = trickle_proxy(
            f.listeners[0].local_addr().unwrap(),
            Duration::from_millis(50),
        );
        let config = config_via(&f, via);
        let (result, elapsed) = thread::scope(|s| {
            let server = s.spawn(|| {
                let mut ch = channel_of(accept(&f.listeners[0], &f.parties[0]).unwrap());
                let started = std::time::Instant::now();
                let r = ch.recv();
                (r, started.elapsed())
            });
            let mut client = connect_client(&config, PartyId::ALL[0]).unwrap();
            // 4 KB at one byte per 50 ms would take over three minutes; every single read
            // is far quicker than the I/O timeout.
            client.send(&pattern(4000, 11)).unwrap();
            let out = server.join().unwrap();
            drop(client);
            out
        });
        assert!(
            matches!(result, Err(NetError::Timeout { after, .. }) if after <= io),
            "{result:?}"
        );
        // Generous: cut near the deadline, nowhere near the trickle's end.
        assert!(elapsed < io * 10, "cut after {elapsed:?}");
    }

    #[test]
    fn oversized_announced_length_is_rejected_before_reading_the_body() {
        // Party 0 accepts at most 64 KiB; the client's own limit is larger, so it sends.
        let f = fixture_with(|c| c.with_max_message_bytes(1 << 16).unwrap());
        let big = pattern((1 << 16) + 1, 3);
        let (results, _) = through_proxy(
            &f,
            Fault::None,
            |c| c.with_max_message_bytes(1 << 20).unwrap(),
            &[big],
        );
        assert!(
            matches!(
                results[0],
                Err(NetError::TooLarge {
                    len: 65537,
                    max: 65536,
                    ..
                })
            ),
            "{:?}",
            results[0]
        );
    }
}
