//! The untagged packets that open a connection: SSLRequest, GSSENCRequest,
//! CancelRequest and StartupMessage.
//!
//! Each is a length followed by a 32-bit code. PostgreSQL caps them at
//! 10,000 bytes; so does sluice, before reading the rest.

use bytes::BytesMut;
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::startup::Startup;
use pgwire::messages::{DecodeContext, Message, ProtocolVersion};

use super::frame::take_cstr;

/// PostgreSQL's limit on a startup-phase packet.
pub const MAX_STARTUP_PACKET: usize = 10_000;

const SSL_REQUEST_CODE: u32 = 80_877_103;
const GSSENC_REQUEST_CODE: u32 = 80_877_104;
const CANCEL_REQUEST_CODE: u32 = 80_877_102;

/// Errors in a startup-phase packet. All of them end the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("invalid length of startup packet ({0} bytes)")]
    BadLength(i64),
    #[error("unsupported frontend protocol {major}.{minor}: sluice speaks 3.0")]
    UnsupportedProtocol { major: u16, minor: u16 },
    #[error("malformed startup packet: {0}")]
    Malformed(&'static str),
    #[error(
        "a PROXY protocol header where the startup packet belongs: sluice reads one header, first, and only from the addresses [listen] proxy_protocol_from lists"
    )]
    UnexpectedProxyHeader,
}

/// A packet from the connection's startup phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    SslRequest,
    GssEncRequest,
    Cancel { pid: i32, secret: i32 },
    Startup(StartupMessage),
}

/// A StartupMessage: the protocol version asked for and the parameters in
/// the order sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupMessage {
    pub minor_version: u16,
    pub parameters: Vec<(String, String)>,
}

impl StartupMessage {
    /// The value of a parameter; names are matched exactly, as PostgreSQL does.
    pub fn get(&self, name: &str) -> Option<&str> {
        // The last occurrence wins, as in PostgreSQL.
        self.parameters
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Takes the next startup-phase packet off `buf`, or `None` if it has not
/// fully arrived.
pub fn split_packet(buf: &mut BytesMut) -> Result<Option<Packet>, Error> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let declared = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if declared < 8 || declared as usize > MAX_STARTUP_PACKET {
        // Both versions' openings read as lengths far beyond the cap.
        if super::proxy_header::looks_like_header(&buf[..8]) {
            return Err(Error::UnexpectedProxyHeader);
        }
        return Err(Error::BadLength(declared.into()));
    }
    let len = declared as usize;
    if buf.len() < len {
        return Ok(None);
    }
    let packet = buf.split_to(len);
    let code = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
    match code {
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE if len != 8 => {
            Err(Error::Malformed("negotiation request with a body"))
        }
        SSL_REQUEST_CODE => Ok(Some(Packet::SslRequest)),
        GSSENC_REQUEST_CODE => Ok(Some(Packet::GssEncRequest)),
        CANCEL_REQUEST_CODE => decode_cancel(packet).map(Some),
        _ => decode_startup(packet).map(Some),
    }
}

fn decode_cancel(packet: BytesMut) -> Result<Packet, Error> {
    // Protocol 3.0 keys are four bytes; sluice hands out nothing longer.
    if packet.len() != 16 {
        return Err(Error::Malformed("cancel request of the wrong length"));
    }
    let mut ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
    ctx.awaiting_frontend_ssl = false;
    let mut copy = packet;
    let request = CancelRequest::decode(&mut copy, &ctx)
        .ok()
        .flatten()
        .ok_or(Error::Malformed("cancel request"))?;
    let secret = request
        .secret_key
        .as_i32()
        .ok_or(Error::Malformed("cancel request key"))?;
    Ok(Packet::Cancel {
        pid: request.pid,
        secret,
    })
}

fn decode_startup(packet: BytesMut) -> Result<Packet, Error> {
    let major = u16::from_be_bytes([packet[4], packet[5]]);
    let minor = u16::from_be_bytes([packet[6], packet[7]]);
    if major != 3 {
        return Err(Error::UnsupportedProtocol { major, minor });
    }
    // Walk the parameters ourselves first: pgwire decodes text lossily and
    // keeps them in a map, and sluice wants exact UTF-8, the order sent and a
    // proper terminator.
    let mut body = &packet[8..];
    let mut parameters = Vec::new();
    loop {
        let key = take_cstr(&mut body).ok_or(Error::Malformed("parameter name"))?;
        if key.is_empty() {
            break;
        }
        let value = take_cstr(&mut body).ok_or(Error::Malformed("parameter value"))?;
        parameters.push((key.to_owned(), value.to_owned()));
    }
    if !body.is_empty() {
        return Err(Error::Malformed("bytes after the parameter list"));
    }
    // pgwire agrees on what it read: same parameters, nothing left over.
    let ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
    let mut copy = packet;
    let decoded = Startup::decode(&mut copy, &ctx)
        .ok()
        .flatten()
        .ok_or(Error::Malformed("startup message"))?;
    if decoded.parameters.len() > parameters.len() {
        return Err(Error::Malformed("startup message"));
    }
    Ok(Packet::Startup(StartupMessage {
        minor_version: minor,
        parameters,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn startup_bytes(version: (u16, u16), params: &[(&str, &str)]) -> BytesMut {
        let mut body = BytesMut::new();
        body.put_u16(version.0);
        body.put_u16(version.1);
        for (k, v) in params {
            body.put_slice(k.as_bytes());
            body.put_u8(0);
            body.put_slice(v.as_bytes());
            body.put_u8(0);
        }
        body.put_u8(0);
        let mut out = BytesMut::new();
        out.put_i32(body.len() as i32 + 4);
        out.put_slice(&body);
        out
    }

    #[test]
    fn startup_keeps_order_and_values() {
        let mut buf = startup_bytes((3, 0), &[("user", "agent"), ("database", "payments")]);
        let packet = split_packet(&mut buf).unwrap().unwrap();
        let Packet::Startup(message) = packet else {
            panic!("not a startup")
        };
        assert_eq!(message.minor_version, 0);
        assert_eq!(message.get("user"), Some("agent"));
        assert_eq!(message.parameters[1].0, "database");
        assert!(buf.is_empty());
    }

    #[test]
    fn ssl_gss_and_cancel_are_recognised() {
        let mut buf = BytesMut::new();
        buf.put_i32(8);
        buf.put_u32(SSL_REQUEST_CODE);
        buf.put_i32(8);
        buf.put_u32(GSSENC_REQUEST_CODE);
        buf.put_i32(16);
        buf.put_u32(CANCEL_REQUEST_CODE);
        buf.put_i32(42);
        buf.put_i32(-7);
        assert_eq!(split_packet(&mut buf).unwrap(), Some(Packet::SslRequest));
        assert_eq!(split_packet(&mut buf).unwrap(), Some(Packet::GssEncRequest));
        assert_eq!(
            split_packet(&mut buf).unwrap(),
            Some(Packet::Cancel {
                pid: 42,
                secret: -7
            })
        );
    }

    #[test]
    fn garbage_is_refused_without_waiting_for_it() {
        for bytes in [
            &b"\x7f\xff\xff\xff\x00\x03\x00\x00"[..], // 2 GiB announced
            &b"\x00\x00\x00\x04\x00\x03\x00\x00"[..], // shorter than its header
            &b"\xff\xff\xff\xff\x00\x03\x00\x00"[..], // negative
        ] {
            let mut buf = BytesMut::from(bytes);
            assert!(
                matches!(split_packet(&mut buf), Err(Error::BadLength(_))),
                "{bytes:?}"
            );
        }
        let mut buf = startup_bytes((2, 0), &[("user", "x")]);
        assert!(matches!(
            split_packet(&mut buf),
            Err(Error::UnsupportedProtocol { major: 2, .. })
        ));
    }

    #[test]
    fn a_proxy_header_where_none_is_expected_is_named() {
        for opening in [
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n".as_slice(),
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11\0\x0c".as_slice(),
        ] {
            let mut buf = BytesMut::from(opening);
            assert_eq!(split_packet(&mut buf), Err(Error::UnexpectedProxyHeader));
        }
        // Any other impossible length is just that.
        let mut buf = BytesMut::from(&b"\x7f\0\0\0\0\0\0\0"[..]);
        assert!(matches!(split_packet(&mut buf), Err(Error::BadLength(_))));
    }

    #[test]
    fn malformed_parameter_lists_are_refused() {
        // No final terminator.
        let mut buf = startup_bytes((3, 0), &[("user", "x")]);
        let len = buf.len();
        buf.truncate(len - 1);
        let fixed = (len - 1) as i32;
        buf[..4].copy_from_slice(&fixed.to_be_bytes());
        assert!(matches!(split_packet(&mut buf), Err(Error::Malformed(_))));
        // Invalid UTF-8 in a value.
        let mut buf = startup_bytes((3, 0), &[("user", "\u{0}")]);
        buf[13] = 0xff;
        assert!(split_packet(&mut buf).is_err());
        // Trailing bytes after the list.
        let mut buf = startup_bytes((3, 0), &[("user", "x")]);
        buf.put_u8(b'z');
        let fixed = buf.len() as i32;
        buf[..4].copy_from_slice(&fixed.to_be_bytes());
        assert!(matches!(split_packet(&mut buf), Err(Error::Malformed(_))));
    }

    #[test]
    fn partial_packets_wait() {
        let full = startup_bytes((3, 0), &[("user", "agent")]);
        let mut buf = BytesMut::from(&full[..full.len() - 1]);
        assert_eq!(split_packet(&mut buf).unwrap(), None);
    }
}
