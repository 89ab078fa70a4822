//! Typed messages of the private-prediction protocol and their binary encoding.
//!
//! Longer than 600 lines: each message's encoder and checked decoder stay side by side, so a
//! field added to one cannot be missed in the other.
//!
//! Encoding (all integers little-endian): one tag byte, then the fields in order.
//! - byte strings: `u64` length, then the bytes;
//! - `shape`: one rank byte (at most [`MAX_RANK`]), then one `u32` per dimension;
//! - text: `u32` length (at most [`MAX_TEXT`]), then UTF-8 bytes;
//! - flags: one byte, 0 or 1;
//! - request id lists: `u32` count (at most [`MAX_IDS`]), then one `u64` per id;
//! - name lists: `u32` count (at most [`MAX_NAMES`]), then one text per name.
//!
//! The decoder checks every length against the bytes actually present before using it, so a
//! hostile length never causes an allocation or a panic, and it rejects trailing bytes.
//!
//! Imports `crate::bytes` only; no sibling, never `mpc`, `party` or `pipeline`.

use crate::bytes::{Cursor, Short, Writer};
use std::fmt;

/// Largest tensor rank a request may declare.
pub const MAX_RANK: usize = 8;
/// Largest error text, in bytes.
pub const MAX_TEXT: usize = 64 * 1024;
/// Most request ids in one [`Message::Poll`] or [`Message::Holding`] list.
pub const MAX_IDS: usize = 1024;
/// Most class names in one [`Message::ModelInfo`].
pub const MAX_NAMES: usize = 4096;

const TAG_SHARE_MODEL: u8 = 1;
const TAG_PREDICT_REQUEST: u8 = 2;
const TAG_PREDICT_RESPONSE: u8 = 3;
const TAG_ERROR: u8 = 4;
const TAG_MPC: u8 = 5;
/// Bytes of an `Mpc` message before its payload (tag, length).
pub(crate) const MPC_HEAD: usize = 1 + 8;
const TAG_MODEL_INFO_REQUEST: u8 = 6;
const TAG_MODEL_INFO: u8 = 7;
const TAG_SCHEDULE: u8 = 8;
const TAG_HEARTBEAT: u8 = 9;
const TAG_READY: u8 = 10;
const TAG_REQUEST_STATS: u8 = 11;
// 12-15 left free for other control messages.
const TAG_POLL: u8 = 16;
const TAG_HOLDING: u8 = 17;

/// One protocol message. Share bytes are opaque here; the MPC engine defines their layout.
#[derive(Clone, PartialEq, Eq)]
pub enum Message {
    /// Model owner -> party: this party's share of the model.
    ShareModel { share: Vec<u8> },
    /// Client -> party: this party's share of the input tensor of the given shape.
    PredictRequest {
        request_id: u64,
        shape: Shape,
        input_share: Vec<u8>,
    },
    /// Party -> client: this party's share of the output for `request_id`.
    PredictResponse {
        request_id: u64,
        output_share: Vec<u8>,
    },
    /// Either direction: a refusal or failure the other side should show.
    Error { text: String },
    /// Party <-> party: one payload of the secure-computation protocol.
    Mpc { payload: Vec<u8> },
    /// Client -> party: which model is shared (so the client can preprocess and encode).
    ModelInfoRequest,
    /// Party -> client or owner: the public description of the shared model. The owner gets it
    /// as the acknowledgement of [`Message::ShareModel`].
    ModelInfo {
        name: String,
        /// Input tensor shape (CHW).
        shape: Shape,
        /// Fractional bits of the fixed-point encoding the model share uses.
        frac_bits: u8,
        /// Number of outputs (logits) per image.
        output_len: u32,
        /// The outputs' public names in order, as the model owner shared them; empty when the
        /// shared model carries none.
        classes: Vec<String>,
    },
    /// Party 0 -> parties 1 and 2: serve this request next.
    Schedule { request_id: u64 },
    /// Party 0 -> parties 1 and 2 when idle: keeps the mesh checked and alive.
    Heartbeat,
    /// Party <-> party after a schedule or heartbeat: whether this party holds a usable share
    /// of the request (always `accept` for a heartbeat).
    Ready { request_id: u64, accept: bool },
    /// Party -> client, right after [`Message::PredictResponse`]: what the request cost this
    /// party (bytes it sent to the other parties, rounds, computation time).
    RequestStats {
        request_id: u64,
        bytes_sent: u64,
        rounds: u64,
        micros: u64,
    },
    /// Party 0 -> parties 1 and 2: which of these requests (party 0 holds them, oldest first)
    /// do you hold? A round like a heartbeat's, after which each answers with
    /// [`Message::Holding`].
    Poll { request_ids: Vec<u64> },
    /// Party 1 or 2 -> party 0, after a [`Message::Poll`]: the polled requests it holds a share
    /// of, and those it rejected. Party 0 schedules only requests every party has answered for.
    Holding { held: Vec<u64>, refused: Vec<u64> },
}

impl Message {
    /// Encoded length of a [`Message::ShareModel`] carrying `share_len` bytes (its tag and
    /// length prefix added), without building it: what a party's message cap is checked against.
    pub fn share_model_len(share_len: usize) -> u64 {
        1 + 8 + share_len as u64
    }

    /// A short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::ShareModel { .. } => "ShareModel",
            Message::PredictRequest { .. } => "PredictRequest",
            Message::PredictResponse { .. } => "PredictResponse",
            Message::Error { .. } => "Error",
            Message::Mpc { .. } => "Mpc",
            Message::ModelInfoRequest => "ModelInfoRequest",
            Message::ModelInfo { .. } => "ModelInfo",
            Message::Schedule { .. } => "Schedule",
            Message::Heartbeat => "Heartbeat",
            Message::Ready { .. } => "Ready",
            Message::RequestStats { .. } => "RequestStats",
            Message::Poll { .. } => "Poll",
            Message::Holding { .. } => "Holding",
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Writer::with_capacity(self.encoded_len_hint());
        match self {
            Message::ShareModel { share } => {
                out.u8(TAG_SHARE_MODEL);
                put_bytes(&mut out, share);
            }
            Message::PredictRequest {
                request_id,
                shape,
                input_share,
            } => {
                out.u8(TAG_PREDICT_REQUEST);
                out.u64(*request_id);
                put_shape(&mut out, shape);
                put_bytes(&mut out, input_share);
            }
            Message::PredictResponse {
                request_id,
                output_share,
            } => {
                out.u8(TAG_PREDICT_RESPONSE);
                out.u64(*request_id);
                put_bytes(&mut out, output_share);
            }
            Message::Error { text } => {
                out.u8(TAG_ERROR);
                put_text(&mut out, text);
            }
            Message::Mpc { payload } => {
                out.u8(TAG_MPC);
                put_bytes(&mut out, payload);
            }
            Message::ModelInfoRequest => out.u8(TAG_MODEL_INFO_REQUEST),
            Message::ModelInfo {
                name,
                shape,
                frac_bits,
                output_len,
                classes,
            } => {
                out.u8(TAG_MODEL_INFO);
                put_text(&mut out, name);
                put_shape(&mut out, shape);
                out.u8(*frac_bits);
                out.u32(*output_len);
                let classes = &classes[..classes.len().min(MAX_NAMES)];
                out.u32(classes.len() as u32);
                for c in classes {
                    put_text(&mut out, c);
                }
            }
            Message::Schedule { request_id } => {
                out.u8(TAG_SCHEDULE);
                out.u64(*request_id);
            }
            Message::Heartbeat => out.u8(TAG_HEARTBEAT),
            Message::Ready { request_id, accept } => {
                out.u8(TAG_READY);
                out.u64(*request_id);
                out.u8(u8::from(*accept));
            }
            Message::RequestStats {
                request_id,
                bytes_sent,
                rounds,
                micros,
            } => {
                out.u8(TAG_REQUEST_STATS);
                for v in [request_id, bytes_sent, rounds, micros] {
                    out.u64(*v);
                }
            }
            Message::Poll { request_ids } => {
                out.u8(TAG_POLL);
                put_ids(&mut out, request_ids);
            }
            Message::Holding { held, refused } => {
                out.u8(TAG_HOLDING);
                put_ids(&mut out, held);
                put_ids(&mut out, refused);
            }
        }
        out.into_bytes()
    }

    fn encoded_len_hint(&self) -> usize {
        1 + 8
            + 8
            + match self {
                Message::ShareModel { share } => share.len(),
                Message::PredictRequest {
                    shape, input_share, ..
                } => 1 + 4 * shape.rank() + input_share.len(),
                Message::PredictResponse { output_share, .. } => output_share.len(),
                Message::Error { text } => text.len(),
                Message::Mpc { payload } => payload.len(),
                Message::ModelInfo {
                    name,
                    shape,
                    classes,
                    ..
                } => {
                    4 + name.len()
                        + 1
                        + 4 * shape.rank()
                        + 9
                        + classes.iter().map(|c| 4 + c.len()).sum::<usize>()
                }
                Message::Poll { request_ids } => 4 + 8 * request_ids.len(),
                Message::Holding { held, refused } => 8 + 8 * (held.len() + refused.len()),
                Message::ModelInfoRequest
                | Message::Schedule { .. }
                | Message::Heartbeat
                | Message::Ready { .. }
                | Message::RequestStats { .. } => 24,
            }
    }

    /// [`Message::decode`] taking the buffer: a model share (gigabytes for VGG16-2) moves
    /// out of the received buffer instead of being copied beside it.
    pub fn decode_owned(mut bytes: Vec<u8>) -> Result<Self, DecodeError> {
        const HEADER: usize = 1 + 8;
        if bytes.first() == Some(&TAG_SHARE_MODEL) && bytes.len() >= HEADER {
            let len = u64::from_le_bytes(bytes[1..HEADER].try_into().expect("8 bytes"));
            if len == (bytes.len() - HEADER) as u64 {
                bytes.drain(..HEADER);
                return Ok(Message::ShareModel { share: bytes });
            }
        }
        // Anything else, a malformed share message included, gets the checks and errors of
        // the borrowing decoder.
        Self::decode(&bytes)
    }

    /// The encoding of `Message::Mpc` up to its payload: tag and payload length.
    pub(crate) fn mpc_head(payload_len: usize) -> Vec<u8> {
        let mut head = Vec::with_capacity(MPC_HEAD);
        head.push(TAG_MPC);
        head.extend_from_slice(&(payload_len as u64).to_le_bytes());
        head
    }

    /// Decodes a message received as its first [`MPC_HEAD`] bytes and the rest: an `Mpc`
    /// message keeps `body` as its payload without a copy; anything else is joined and decoded.
    pub(crate) fn decode_parts(head: Vec<u8>, body: Vec<u8>) -> Result<Self, DecodeError> {
        if head.len() == MPC_HEAD && head[..] == Self::mpc_head(body.len())[..] {
            return Ok(Message::Mpc { payload: body });
        }
        Self::decode_owned([head, body].concat())
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader {
            cur: Cursor::new(bytes),
        };
        let tag = r.u8("tag")?;
        let message = match tag {
            TAG_SHARE_MODEL => Message::ShareModel {
                share: r.byte_string("share")?,
            },
            TAG_PREDICT_REQUEST => {
                let request_id = r.u64("request_id")?;
                let shape = r.shape()?;
                let input_share = r.byte_string("input_share")?;
                Message::PredictRequest {
                    request_id,
                    shape,
                    input_share,
                }
            }
            TAG_PREDICT_RESPONSE => Message::PredictResponse {
                request_id: r.u64("request_id")?,
                output_share: r.byte_string("output_share")?,
            },
            TAG_ERROR => Message::Error { text: r.text()? },
            TAG_MPC => Message::Mpc {
                payload: r.byte_string("payload")?,
            },
            TAG_MODEL_INFO_REQUEST => Message::ModelInfoRequest,
            TAG_MODEL_INFO => Message::ModelInfo {
                name: r.text()?,
                shape: r.shape()?,
                frac_bits: r.u8("frac_bits")?,
                output_len: r.u32("output_len")?,
                classes: r.names("classes")?,
            },
            TAG_SCHEDULE => Message::Schedule {
                request_id: r.u64("request_id")?,
            },
            TAG_HEARTBEAT => Message::Heartbeat,
            TAG_READY => Message::Ready {
                request_id: r.u64("request_id")?,
                accept: match r.u8("accept")? {
                    0 => false,
                    1 => true,
                    other => return Err(DecodeError::BadFlag(other)),
                },
            },
            TAG_REQUEST_STATS => Message::RequestStats {
                request_id: r.u64("request_id")?,
                bytes_sent: r.u64("bytes_sent")?,
                rounds: r.u64("rounds")?,
                micros: r.u64("micros")?,
            },
            TAG_POLL => Message::Poll {
                request_ids: r.ids("request_ids")?,
            },
            TAG_HOLDING => Message::Holding {
                held: r.ids("held")?,
                refused: r.ids("refused")?,
            },
            other => return Err(DecodeError::UnknownTag(other)),
        };
        let trailing = r.cur.remaining();
        if trailing != 0 {
            return Err(DecodeError::TrailingBytes { count: trailing });
        }
        Ok(message)
    }
}

impl fmt::Debug for Message {
    // Payloads are secret shares: Debug shows sizes only, so a stray `{:?}` cannot leak them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::ShareModel { share } => write!(f, "ShareModel({} bytes)", share.len()),
            Message::PredictRequest {
                request_id,
                shape,
                input_share,
            } => write!(
                f,
                "PredictRequest(id {request_id}, shape {:?}, {} bytes)",
                shape.dims(),
                input_share.len()
            ),
            Message::PredictResponse {
                request_id,
                output_share,
            } => {
                write!(
                    f,
                    "PredictResponse(id {request_id}, {} bytes)",
                    output_share.len()
                )
            }
            Message::Error { text } => write!(f, "Error({text:?})"),
            Message::Mpc { payload } => write!(f, "Mpc({} bytes)", payload.len()),
            // Public metadata only: model architecture, ids and counters.
            Message::ModelInfoRequest => f.write_str("ModelInfoRequest"),
            Message::ModelInfo {
                name,
                shape,
                frac_bits,
                output_len,
                classes,
            } => write!(
                f,
                "ModelInfo({name:?}, shape {:?}, {frac_bits} fractional bits, {output_len} outputs \
                 {classes:?})",
                shape.dims()
            ),
            Message::Schedule { request_id } => write!(f, "Schedule(id {request_id})"),
            Message::Heartbeat => f.write_str("Heartbeat"),
            Message::Ready { request_id, accept } => {
                write!(f, "Ready(id {request_id}, accept {accept})")
            }
            Message::RequestStats {
                request_id,
                bytes_sent,
                rounds,
                micros,
            } => write!(
                f,
                "RequestStats(id {request_id}, {bytes_sent} bytes, {rounds} rounds, {micros} us)"
            ),
            Message::Poll { request_ids } => write!(f, "Poll({} ids)", request_ids.len()),
            Message::Holding { held, refused } => {
                write!(f, "Holding({} held, {} refused)", held.len(), refused.len())
            }
        }
    }
}

/// Cuts an error text to at most [`MAX_TEXT`] bytes on a character boundary, so every
/// encodable message also decodes.
fn truncate_text(text: &str) -> &str {
    if text.len() <= MAX_TEXT {
        return text;
    }
    let mut end = MAX_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The dimensions of a tensor, at most [`MAX_RANK`] of them.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Shape(Vec<u32>);

impl Shape {
    pub fn new(dims: Vec<u32>) -> Result<Self, DecodeError> {
        if dims.len() > MAX_RANK {
            return Err(DecodeError::RankTooLarge {
                rank: dims.len(),
                max: MAX_RANK,
            });
        }
        Ok(Self(dims))
    }

    pub fn dims(&self) -> &[u32] {
        &self.0
    }

    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// The number of elements, or `None` if it overflows `u64`.
    pub fn element_count(&self) -> Option<u64> {
        self.0
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(u64::from(d)))
    }
}

fn put_bytes(out: &mut Writer, bytes: &[u8]) {
    out.u64(bytes.len() as u64);
    out.raw(bytes);
}

fn put_text(out: &mut Writer, text: &str) {
    let bytes = truncate_text(text).as_bytes();
    out.u32(bytes.len() as u32);
    out.raw(bytes);
}

/// Writes at most [`MAX_IDS`] ids (the senders never list more), so every encoded list
/// decodes.
fn put_ids(out: &mut Writer, ids: &[u64]) {
    let ids = &ids[..ids.len().min(MAX_IDS)];
    out.u32(ids.len() as u32);
    out.u64s(ids);
}

fn put_shape(out: &mut Writer, shape: &Shape) {
    // `Shape` guarantees rank <= MAX_RANK, so the rank fits its byte.
    out.u8(shape.rank() as u8);
    for d in shape.dims() {
        out.u32(*d);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown message tag {0}")]
    UnknownTag(u8),
    #[error("truncated message: {field} needs {needed} bytes, {available} remain")]
    Truncated {
        field: &'static str,
        needed: u64,
        available: usize,
    },
    #[error("{count} unexpected bytes after the end of the message")]
    TrailingBytes { count: usize },
    #[error("tensor rank {rank} exceeds the maximum of {max}")]
    RankTooLarge { rank: usize, max: usize },
    #[error("error text of {len} bytes exceeds the maximum of {max}")]
    TextTooLong { len: usize, max: usize },
    #[error("error text is not valid UTF-8")]
    BadUtf8,
    #[error("flag byte {0} is neither 0 nor 1")]
    BadFlag(u8),
    #[error("a list of {count} request ids exceeds the maximum of {max}")]
    TooManyIds { count: usize, max: usize },
    #[error("a list of {count} names exceeds the maximum of {max}")]
    TooManyNames { count: usize, max: usize },
}

struct Reader<'a> {
    cur: Cursor<'a>,
}

impl<'a> Reader<'a> {
    fn short(field: &'static str) -> impl Fn(Short) -> DecodeError {
        move |s| DecodeError::Truncated {
            field,
            needed: s.needed as u64,
            available: s.available,
        }
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        self.cur.take(n).map_err(Self::short(field))
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.cur.u8().map_err(Self::short(field))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.cur.u32().map_err(Self::short(field))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.cur.u64().map_err(Self::short(field))
    }

    fn text(&mut self) -> Result<String, DecodeError> {
        let len = self.u32("text length")? as usize;
        if len > MAX_TEXT {
            return Err(DecodeError::TextTooLong { len, max: MAX_TEXT });
        }
        let raw = self.take(len, "text")?;
        Ok(std::str::from_utf8(raw)
            .map_err(|_| DecodeError::BadUtf8)?
            .to_owned())
    }

    fn ids(&mut self, field: &'static str) -> Result<Vec<u64>, DecodeError> {
        let count = self.u32(field)? as usize;
        if count > MAX_IDS {
            return Err(DecodeError::TooManyIds {
                count,
                max: MAX_IDS,
            });
        }
        (0..count).map(|_| self.u64(field)).collect()
    }

    fn names(&mut self, field: &'static str) -> Result<Vec<String>, DecodeError> {
        let count = self.u32(field)? as usize;
        if count > MAX_NAMES {
            return Err(DecodeError::TooManyNames {
                count,
                max: MAX_NAMES,
            });
        }
        (0..count).map(|_| self.text()).collect()
    }

    fn shape(&mut self) -> Result<Shape, DecodeError> {
        let rank = usize::from(self.u8("rank")?);
        if rank > MAX_RANK {
            return Err(DecodeError::RankTooLarge {
                rank,
                max: MAX_RANK,
            });
        }
        let dims = (0..rank)
            .map(|_| self.u32("shape"))
            .collect::<Result<Vec<_>, _>>()?;
        Shape::new(dims)
    }

    fn byte_string(&mut self, field: &'static str) -> Result<Vec<u8>, DecodeError> {
        let len = self.u64(field)?;
        let available = self.cur.remaining();
        // Compare in u64 first: a hostile length must not wrap when narrowed to usize.
        if len > available as u64 {
            return Err(DecodeError::Truncated {
                field,
                needed: len,
                available,
            });
        }
        Ok(self.take(len as usize, field)?.to_vec())
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn share_model_len_is_the_encoded_length() {
        for n in [0usize, 1, 1000] {
            let m = Message::ShareModel { share: vec![7; n] };
            assert_eq!(Message::share_model_len(n), m.encode().len() as u64);
        }
    }

    #[test]
    fn decode_owned_moves_a_share_and_agrees_with_decode() {
        let share = Message::ShareModel {
            share: (0..1000u32).map(|i| i as u8).collect(),
        };
        let bytes = share.encode();
        assert_eq!(Message::decode_owned(bytes.clone()).unwrap(), share);
        // A length that disagrees with the bytes left is the borrowing decoder's error.
        let mut short = bytes.clone();
        short.pop();
        assert_eq!(
            Message::decode_owned(short.clone())
                .unwrap_err()
                .to_string(),
            Message::decode(&short).unwrap_err().to_string()
        );
        let other = Message::Heartbeat;
        assert_eq!(Message::decode_owned(other.encode()).unwrap(), other);
    }
    use super::*;
    use proptest::prelude::*;

    /// Independent reference encoder, written field by field from the format description.
    fn reference_encode_request(id: u64, shape: &[u32], share: &[u8]) -> Vec<u8> {
        let mut v = vec![2u8];
        v.extend(id.to_le_bytes());
        v.push(shape.len() as u8);
        for d in shape {
            v.extend(d.to_le_bytes());
        }
        v.extend((share.len() as u64).to_le_bytes());
        v.extend(share);
        v
    }

    #[test]
    fn request_layout_matches_the_documented_format() {
        let m = Message::PredictRequest {
            request_id: 0x0102_0304_0506_0708,
            shape: Shape::new(vec![1, 224, 224]).unwrap(),
            input_share: vec![9, 8, 7],
        };
        let want = reference_encode_request(0x0102_0304_0506_0708, &[1, 224, 224], &[9, 8, 7]);
        assert_eq!(m.encode(), want);
        assert_eq!(Message::decode(&want).unwrap(), m);
    }

    #[test]
    fn rejects_malformed_frames_with_specific_errors() {
        assert!(matches!(
            Message::decode(&[]),
            Err(DecodeError::Truncated { field: "tag", .. })
        ));
        assert_eq!(Message::decode(&[0]), Err(DecodeError::UnknownTag(0)));
        assert_eq!(
            Message::decode(&[99, 1, 2]),
            Err(DecodeError::UnknownTag(99))
        );
        // A length far beyond the data: rejected before any allocation.
        let mut huge = vec![TAG_MPC];
        huge.extend(u64::MAX.to_le_bytes());
        assert!(matches!(
            Message::decode(&huge),
            Err(DecodeError::Truncated {
                needed: u64::MAX,
                available: 0,
                ..
            })
        ));
        let mut ok = Message::Mpc {
            payload: vec![1, 2, 3],
        }
        .encode();
        ok.push(0);
        assert_eq!(
            Message::decode(&ok),
            Err(DecodeError::TrailingBytes { count: 1 })
        );
        let deep = reference_encode_request(1, &[1; 9], &[]);
        assert!(matches!(
            Message::decode(&deep),
            Err(DecodeError::RankTooLarge { rank: 9, .. })
        ));
        let mut bad_text = vec![TAG_ERROR];
        bad_text.extend(2u32.to_le_bytes());
        bad_text.extend([0xff, 0xfe]);
        assert_eq!(Message::decode(&bad_text), Err(DecodeError::BadUtf8));
        let mut long_text = vec![TAG_ERROR];
        long_text.extend((MAX_TEXT as u32 + 1).to_le_bytes());
        assert!(matches!(
            Message::decode(&long_text),
            Err(DecodeError::TextTooLong { .. })
        ));
    }

    #[test]
    fn party_control_layouts_match_the_documented_format() {
        let info = Message::ModelInfo {
            name: "dnn".into(),
            shape: Shape::new(vec![1, 150, 125]).unwrap(),
            frac_bits: 12,
            output_len: 2,
            classes: vec!["NO".into(), "YES".into()],
        };
        let mut want = vec![7u8];
        want.extend(3u32.to_le_bytes());
        want.extend(b"dnn");
        want.push(3);
        for d in [1u32, 150, 125] {
            want.extend(d.to_le_bytes());
        }
        want.push(12);
        want.extend(2u32.to_le_bytes());
        want.extend(2u32.to_le_bytes());
        for c in ["NO", "YES"] {
            want.extend((c.len() as u32).to_le_bytes());
            want.extend(c.as_bytes());
        }
        assert_eq!(info.encode(), want);
        assert_eq!(Message::decode(&want).unwrap(), info);

        let mut ready = vec![10u8];
        ready.extend(9u64.to_le_bytes());
        ready.push(1);
        assert_eq!(
            Message::decode(&ready).unwrap(),
            Message::Ready {
                request_id: 9,
                accept: true
            }
        );
        *ready.last_mut().unwrap() = 2;
        assert_eq!(Message::decode(&ready), Err(DecodeError::BadFlag(2)));
        assert_eq!(Message::decode(&[9]).unwrap(), Message::Heartbeat);
        assert_eq!(
            Message::decode(&[9, 0]),
            Err(DecodeError::TrailingBytes { count: 1 })
        );
    }

    #[test]
    fn id_lists_match_the_documented_format_and_are_bounded() {
        let mut want = vec![17u8];
        want.extend(2u32.to_le_bytes());
        want.extend(5u64.to_le_bytes());
        want.extend(6u64.to_le_bytes());
        want.extend(0u32.to_le_bytes());
        let holding = Message::Holding {
            held: vec![5, 6],
            refused: vec![],
        };
        assert_eq!(holding.encode(), want);
        assert_eq!(Message::decode(&want).unwrap(), holding);
        // A count over the bound is refused before anything is read.
        let mut long = vec![16u8];
        long.extend((MAX_IDS as u32 + 1).to_le_bytes());
        assert_eq!(
            Message::decode(&long),
            Err(DecodeError::TooManyIds {
                count: MAX_IDS + 1,
                max: MAX_IDS
            })
        );
        // The encoder never writes a list the decoder refuses.
        let many = Message::Poll {
            request_ids: (0..MAX_IDS as u64 + 10).collect(),
        };
        let Message::Poll { request_ids } = Message::decode(&many.encode()).unwrap() else {
            panic!("wrong variant")
        };
        assert_eq!(request_ids.len(), MAX_IDS);
    }

    #[test]
    fn every_strict_prefix_is_rejected() {
        let m = Message::PredictRequest {
            request_id: 7,
            shape: Shape::new(vec![2, 3]).unwrap(),
            input_share: vec![5; 10],
        };
        let bytes = m.encode();
        for cut in 0..bytes.len() {
            assert!(
                Message::decode(&bytes[..cut]).is_err(),
                "prefix of {cut} bytes accepted"
            );
        }
    }

    #[test]
    fn shape_rank_and_overlong_text() {
        assert!(Shape::new(vec![1; MAX_RANK + 1]).is_err());
        assert_eq!(Shape::new(vec![2, 3, 4]).unwrap().element_count(), Some(24));
        assert_eq!(Shape::new(vec![u32::MAX; 3]).unwrap().element_count(), None);
        // An over-long text is cut on a char boundary and still decodes.
        let text = "é".repeat(MAX_TEXT);
        let back = Message::decode(&Message::Error { text: text.clone() }.encode()).unwrap();
        let Message::Error { text: got } = back else {
            panic!("wrong variant")
        };
        assert!(got.len() <= MAX_TEXT && text.starts_with(&got) && !got.is_empty());
    }

    #[test]
    fn debug_shows_sizes_not_contents() {
        let m = Message::Mpc {
            payload: vec![0xAB; 4],
        };
        let shown = format!("{m:?}");
        assert_eq!(shown, "Mpc(4 bytes)");
    }

    fn ids() -> impl Strategy<Value = Vec<u64>> {
        proptest::collection::vec(any::<u64>(), 0..20)
    }

    fn any_message() -> impl Strategy<Value = Message> {
        let bytes = || proptest::collection::vec(any::<u8>(), 0..300);
        prop_oneof![
            bytes().prop_map(|share| Message::ShareModel { share }),
            (
                any::<u64>(),
                proptest::collection::vec(any::<u32>(), 0..=MAX_RANK),
                bytes()
            )
                .prop_map(|(request_id, dims, input_share)| Message::PredictRequest {
                    request_id,
                    shape: Shape::new(dims).expect("rank within MAX_RANK"),
                    input_share
                }),
            (any::<u64>(), bytes()).prop_map(|(request_id, output_share)| {
                Message::PredictResponse {
                    request_id,
                    output_share,
                }
            }),
            ".{0,100}".prop_map(|text| Message::Error { text }),
            bytes().prop_map(|payload| Message::Mpc { payload }),
            Just(Message::ModelInfoRequest),
            (
                ".{0,40}",
                proptest::collection::vec(any::<u32>(), 0..=MAX_RANK),
                any::<u8>(),
                any::<u32>(),
                proptest::collection::vec(".{0,12}", 0..5)
            )
                .prop_map(|(name, dims, frac_bits, output_len, classes)| {
                    Message::ModelInfo {
                        name,
                        shape: Shape::new(dims).expect("rank within MAX_RANK"),
                        frac_bits,
                        output_len,
                        classes,
                    }
                }),
            any::<u64>().prop_map(|request_id| Message::Schedule { request_id }),
            Just(Message::Heartbeat),
            (any::<u64>(), any::<bool>())
                .prop_map(|(request_id, accept)| Message::Ready { request_id, accept }),
            (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
                |(request_id, bytes_sent, rounds, micros)| Message::RequestStats {
                    request_id,
                    bytes_sent,
                    rounds,
                    micros
                }
            ),
            ids().prop_map(|request_ids| Message::Poll { request_ids }),
            (ids(), ids()).prop_map(|(held, refused)| Message::Holding { held, refused }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Message::decode(&bytes);
        }

        #[test]
        fn tagged_random_bodies_never_panic(tag in 0u8..20, body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut bytes = vec![tag];
            bytes.extend(body);
            let _ = Message::decode(&bytes);
        }

        #[test]
        fn round_trip(m in any_message()) {
            let bytes = m.encode();
            prop_assert_eq!(Message::decode(&bytes).unwrap(), m);
        }

        #[test]
        fn single_byte_corruption_never_panics(m in any_message(), pos in any::<usize>(), val in any::<u8>()) {
            let mut bytes = m.encode();
            let i = pos % bytes.len();
            bytes[i] = val;
            let _ = Message::decode(&bytes);
        }
    }

    #[test]
    fn mpc_messages_travel_as_a_head_and_an_uncopied_payload() {
        for payload in [
            vec![],
            vec![7u8],
            (0..5000).map(|i| i as u8).collect::<Vec<_>>(),
        ] {
            let whole = Message::Mpc {
                payload: payload.clone(),
            }
            .encode();
            let head = Message::mpc_head(payload.len());
            assert_eq!([head.clone(), payload.clone()].concat(), whole);
            let m = Message::decode_parts(head, payload.clone()).unwrap();
            assert_eq!(m, Message::Mpc { payload });
        }
        // Other messages, and an Mpc head whose length disagrees, go through the full decoder.
        let e = Message::Error { text: "no".into() }.encode();
        let (h, b) = e.split_at(MPC_HEAD.min(e.len()));
        assert_eq!(
            Message::decode_parts(h.to_vec(), b.to_vec()).unwrap(),
            Message::Error { text: "no".into() }
        );
        let bad = Message::decode_parts(Message::mpc_head(10), vec![0; 9]);
        assert!(bad.is_err());
    }
}
