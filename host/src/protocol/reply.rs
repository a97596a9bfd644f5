//! Messages sluice writes on its own behalf, encoded with `pgwire`'s types.
//!
//! Errors carry the fields a PostgreSQL client expects: severity (both the
//! localised `S` and the fixed `V`), SQLSTATE and message. sluice's own
//! errors never quote query text or server messages, so they need no
//! masking.

use bytes::BytesMut;
use pgwire::messages::Message;
use pgwire::messages::response::{ErrorResponse, NoticeResponse, ReadyForQuery, TransactionStatus};
use pgwire::messages::startup::{
    Authentication, BackendKeyData, NegotiateProtocolVersion, ParameterStatus, SecretKey,
};

/// How bad an error is: an `Error` ends the statement, `Fatal` the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// Appends a message sluice builds itself. Encoding into a BytesMut fails
/// only for messages over pgwire's size limits; sluice's own are small.
pub fn encode(message: &impl Message, out: &mut BytesMut) {
    message
        .encode(out)
        .expect("sluice's own messages are within pgwire's limits");
}

/// Appends an ErrorResponse.
pub fn error(out: &mut BytesMut, severity: Severity, code: &str, message: &str) {
    let fields = vec![
        (b'S', severity.as_str().to_owned()),
        (b'V', severity.as_str().to_owned()),
        (b'C', code.to_owned()),
        (b'M', message.to_owned()),
    ];
    encode(&ErrorResponse::new(fields), out);
}

/// Appends a NoticeResponse (severity NOTICE).
pub fn notice(out: &mut BytesMut, code: &str, message: &str) {
    let fields = vec![
        (b'S', "NOTICE".to_owned()),
        (b'V', "NOTICE".to_owned()),
        (b'C', code.to_owned()),
        (b'M', message.to_owned()),
    ];
    encode(&NoticeResponse::new(fields), out);
}

/// Appends a ReadyForQuery with the given transaction status byte
/// (`I`, `T` or `E`).
pub fn ready_for_query(out: &mut BytesMut, status: u8) {
    let status = match status {
        b'T' => TransactionStatus::Transaction,
        b'E' => TransactionStatus::Error,
        _ => TransactionStatus::Idle,
    };
    encode(&ReadyForQuery::new(status), out);
}

/// Appends an Authentication request or outcome.
pub fn authentication(out: &mut BytesMut, message: Authentication) {
    encode(&message, out);
}

/// Appends sluice's own BackendKeyData (protocol 3.0: a 4-byte secret).
pub fn backend_key_data(out: &mut BytesMut, pid: i32, secret: i32) {
    encode(&BackendKeyData::new(pid, SecretKey::I32(secret)), out);
}

/// Appends a ParameterStatus.
pub fn parameter_status(out: &mut BytesMut, name: &str, value: &str) {
    encode(
        &ParameterStatus::new(name.to_owned(), value.to_owned()),
        out,
    );
}

/// Appends NegotiateProtocolVersion: sluice speaks protocol 3.0, and names
/// the `_pq_.` options it does not know. Like PostgreSQL, it sends the full
/// version number.
pub fn negotiate_protocol_version(out: &mut BytesMut, unsupported_options: Vec<String>) {
    const PROTOCOL_3_0: i32 = 3 << 16;
    encode(
        &NegotiateProtocolVersion::new(PROTOCOL_3_0, unsupported_options),
        out,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::Frame;

    #[test]
    fn error_response_round_trips() {
        let mut out = BytesMut::new();
        error(&mut out, Severity::Fatal, "08P01", "bad message");
        let frame = Frame::split_from(&mut out, 1 << 20).unwrap().unwrap();
        let decoded: ErrorResponse = frame.decode().unwrap();
        assert!(decoded.fields.contains(&(b'C', "08P01".to_owned())));
        assert!(decoded.fields.contains(&(b'S', "FATAL".to_owned())));
        assert!(decoded.fields.contains(&(b'M', "bad message".to_owned())));
        assert!(out.is_empty());
    }

    #[test]
    fn ready_for_query_round_trips() {
        for status in [b'I', b'T', b'E'] {
            let mut out = BytesMut::new();
            ready_for_query(&mut out, status);
            assert_eq!(&out[..], &[b'Z', 0, 0, 0, 5, status]);
        }
    }

    #[test]
    fn backend_key_data_round_trips() {
        let mut out = BytesMut::new();
        backend_key_data(&mut out, 1234, -99);
        let frame = Frame::split_from(&mut out, 1 << 20).unwrap().unwrap();
        let decoded: BackendKeyData = frame.decode().unwrap();
        assert_eq!(decoded.pid, 1234);
        assert_eq!(decoded.secret_key, SecretKey::I32(-99));
    }

    #[test]
    fn negotiate_protocol_version_names_options() {
        let mut out = BytesMut::new();
        negotiate_protocol_version(&mut out, vec!["_pq_.x".into()]);
        let frame = Frame::split_from(&mut out, 1 << 20).unwrap().unwrap();
        let decoded: NegotiateProtocolVersion = frame.decode().unwrap();
        assert_eq!(decoded.newest_minor_protocol, 196608);
        assert_eq!(decoded.unsupported_options, vec!["_pq_.x".to_owned()]);
    }
}
