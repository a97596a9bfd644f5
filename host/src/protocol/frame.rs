//! Message framing: a type byte, a big-endian length that counts itself,
//! then the body.
//!
//! The length is checked before anything is allocated or waited for, so a
//! peer cannot make sluice reserve memory by announcing a large message, and
//! `pgwire`'s body decoders (which do not bound their reads by the declared
//! length) only ever see a buffer holding exactly one message.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes before the body: type byte and length.
pub const HEADER_LEN: usize = 5;

/// Errors in a message's framing. Any of them ends the session: the stream
/// can no longer be trusted to be in step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("message of type {tag:?} declares {len} bytes, more than the limit of {max}")]
    TooLong { tag: char, len: usize, max: usize },
    #[error("message of type {tag:?} declares an impossible length {len}")]
    BadLength { tag: char, len: i64 },
}

/// The header of a framed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub tag: u8,
    /// Bytes after the type byte: the length field and the body.
    pub len: usize,
}

impl Header {
    /// Bytes the whole message occupies on the wire.
    pub fn total(&self) -> usize {
        1 + self.len
    }

    /// Bytes of the body alone.
    pub fn body_len(&self) -> usize {
        self.len - 4
    }
}

/// Reads the header at the start of `buf` if all five bytes are there,
/// checking the declared length against `max` (whole message, header
/// included).
pub fn peek_header(buf: &[u8], max: usize) -> Result<Option<Header>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let tag = buf[0];
    let declared = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if declared < 4 {
        return Err(FrameError::BadLength {
            tag: tag as char,
            len: declared.into(),
        });
    }
    let len = declared as usize;
    if 1 + len > max {
        return Err(FrameError::TooLong {
            tag: tag as char,
            len: 1 + len,
            max,
        });
    }
    Ok(Some(Header { tag, len }))
}

/// One whole message, split off the read buffer without copying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    bytes: BytesMut,
}

impl Frame {
    /// Takes the next whole message off the front of `buf`, or `None` if it
    /// has not fully arrived.
    pub fn split_from(buf: &mut BytesMut, max: usize) -> Result<Option<Frame>, FrameError> {
        match peek_header(buf, max)? {
            Some(header) if buf.len() >= header.total() => Ok(Some(Frame {
                bytes: buf.split_to(header.total()),
            })),
            _ => Ok(None),
        }
    }

    /// A message of type `tag` with `body`.
    pub fn new(tag: u8, body: &[u8]) -> Frame {
        let mut bytes = BytesMut::with_capacity(HEADER_LEN + body.len());
        bytes.extend_from_slice(&[tag]);
        bytes.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        bytes.extend_from_slice(body);
        Frame { bytes }
    }

    /// Encodes a `pgwire` message (only sluice's own, which fit pgwire's
    /// limits).
    pub fn encode(message: &impl pgwire::messages::Message) -> Frame {
        let mut bytes = BytesMut::new();
        super::reply::encode(message, &mut bytes);
        Frame { bytes }
    }

    /// Wraps bytes that already hold exactly one message.
    pub fn from_encoded(bytes: BytesMut) -> Frame {
        debug_assert!(bytes.len() >= HEADER_LEN);
        Frame { bytes }
    }

    pub fn tag(&self) -> u8 {
        self.bytes[0]
    }

    /// The message as it travels on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The body after the header.
    pub fn body(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..]
    }

    pub fn into_bytes(self) -> BytesMut {
        self.bytes
    }

    /// Decodes the message with `pgwire`: the buffer holds this message
    /// alone, so the decoder cannot read past it. Callers check a message's
    /// shape before decoding it, because several of pgwire's body decoders
    /// index without bounds checks; the unwind guard turns a shape sluice
    /// failed to check into a malformed message instead of a dead task.
    pub fn decode<M: pgwire::messages::Message>(&self) -> Option<M> {
        let mut copy = self.bytes.clone();
        let ctx = decode_context();
        let decoded =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| M::decode(&mut copy, &ctx)));
        let Ok(decoded) = decoded else {
            // A shape sluice should have checked and did not: count it, so
            // the gap is seen and closed.
            DECODER_PANICS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(tag = %(self.tag() as char), "pgwire decoder panicked on a message");
            return None;
        };
        match decoded {
            // A decoder that left bytes behind read a different message
            // than the one framed: treat it as malformed.
            Ok(Some(message)) if !copy.has_remaining() => Some(message),
            _ => None,
        }
    }
}

/// Times a `pgwire` decoder panicked on a message sluice had let through
/// its shape checks (should stay zero).
pub static DECODER_PANICS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Reads until one whole message is in `buf` and splits it off. `Ok(None)`
/// means the peer closed the connection between messages.
pub async fn read_frame<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    max: usize,
) -> std::io::Result<Option<Frame>> {
    loop {
        if let Some(frame) = Frame::split_from(buf, max).map_err(std::io::Error::other)? {
            return Ok(Some(frame));
        }
        if let Some(header) = peek_header(buf, max).map_err(std::io::Error::other)? {
            buf.reserve(header.total() - buf.len());
        } else {
            buf.reserve(HEADER_LEN);
        }
        if stream.read_buf(buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
    }
}

/// The decoding context for messages after startup, pinned to protocol 3.0.
pub fn decode_context() -> pgwire::messages::DecodeContext {
    let mut ctx =
        pgwire::messages::DecodeContext::new(pgwire::messages::ProtocolVersion::PROTOCOL3_0);
    ctx.awaiting_frontend_ssl = false;
    ctx.awaiting_frontend_startup = false;
    ctx
}

/// Splits a NUL-terminated string off the front of `bytes`: the text must
/// be UTF-8 (sluice only serves UTF-8 sessions, and PostgreSQL would refuse
/// invalid text in one too), so no byte is silently replaced.
pub fn take_cstr<'a>(bytes: &mut &'a [u8]) -> Option<&'a str> {
    let end = bytes.iter().position(|&b| b == 0)?;
    let text = std::str::from_utf8(&bytes[..end]).ok()?;
    *bytes = &bytes[end + 1..];
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgwire::messages::Message;
    use pgwire::messages::simplequery::Query;

    fn encoded(query: &str) -> BytesMut {
        let mut buf = BytesMut::new();
        Query::new(query.to_owned()).encode(&mut buf).unwrap();
        buf
    }

    #[test]
    fn query_round_trips_through_a_frame() {
        let mut buf = encoded("SELECT 1");
        buf.extend_from_slice(&encoded("SELECT 2")[..3]);
        let frame = Frame::split_from(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(frame.tag(), b'Q');
        let query: Query = frame.decode().unwrap();
        assert_eq!(query.query, "SELECT 1");
        // The second message has not fully arrived.
        assert_eq!(Frame::split_from(&mut buf, 1024).unwrap(), None);
        assert_eq!(buf.len(), 3);
    }

    #[test]
    fn lengths_are_checked_before_waiting_for_the_body() {
        let mut buf = BytesMut::from(&b"Q\x7f\xff\xff\xff"[..]);
        assert!(matches!(
            Frame::split_from(&mut buf, 1 << 20),
            Err(FrameError::TooLong { .. })
        ));
        let mut buf = BytesMut::from(&b"Q\x00\x00\x00\x03"[..]);
        assert!(matches!(
            Frame::split_from(&mut buf, 1 << 20),
            Err(FrameError::BadLength { len: 3, .. })
        ));
        let mut buf = BytesMut::from(&b"Q\xff\xff\xff\xff"[..]);
        assert!(matches!(
            Frame::split_from(&mut buf, 1 << 20),
            Err(FrameError::BadLength { len: -1, .. })
        ));
    }

    #[test]
    fn a_body_without_its_terminator_does_not_decode() {
        // Length says 9 bytes, the string inside has no NUL: pgwire must not
        // run on into the next message.
        let mut buf = BytesMut::from(&b"Q\x00\x00\x00\x09SELECTQ\x00\x00\x00\x05x\x00"[..]);
        let frame = Frame::split_from(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(frame.decode::<Query>(), None);
    }

    #[test]
    fn cstr_refuses_invalid_utf8() {
        let mut body: &[u8] = b"ok\0\xff\xfe\0";
        assert_eq!(take_cstr(&mut body), Some("ok"));
        assert_eq!(take_cstr(&mut body), None);
        let mut unterminated: &[u8] = b"abc";
        assert_eq!(take_cstr(&mut unterminated), None);
    }
}
