//! The PostgreSQL v3 wire protocol, as far as sluice needs it.
//!
//! sluice frames every message itself ([`frame`]) with a checked length and
//! decodes only what a hook must see, with the `pgwire` crate's message
//! types ([`frontend`], [`backend`]). Everything else passes as the bytes
//! it came in. [`reply`] builds the
//! messages sluice writes on its own behalf (errors, authentication, its own
//! BackendKeyData); [`startup`] reads the untagged packets that open a
//! connection.

pub mod backend;
pub mod frame;
pub mod frontend;
pub mod proxy_header;
pub mod reply;
pub mod startup;

pub use frame::{Frame, FrameError};

/// Message type bytes sluice acts on (PostgreSQL's names).
pub mod tag {
    // Frontend (client to server).
    pub const QUERY: u8 = b'Q';
    pub const PARSE: u8 = b'P';
    pub const BIND: u8 = b'B';
    pub const DESCRIBE: u8 = b'D';
    pub const EXECUTE: u8 = b'E';
    pub const CLOSE: u8 = b'C';
    pub const SYNC: u8 = b'S';
    pub const FLUSH: u8 = b'H';
    pub const FUNCTION_CALL: u8 = b'F';
    pub const TERMINATE: u8 = b'X';
    pub const PASSWORD: u8 = b'p';
    pub const COPY_FAIL: u8 = b'f';
    // Both directions.
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    // Backend (server to client).
    pub const AUTHENTICATION: u8 = b'R';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
    pub const ROW_DESCRIPTION: u8 = b'T';
    pub const NO_DATA: u8 = b'n';
    pub const PARSE_COMPLETE: u8 = b'1';
    pub const BIND_COMPLETE: u8 = b'2';
    pub const CLOSE_COMPLETE: u8 = b'3';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
    pub const PORTAL_SUSPENDED: u8 = b's';
    pub const DATA_ROW: u8 = b'D';
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
    pub const COPY_IN_RESPONSE: u8 = b'G';
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
}

/// SQLSTATE codes sluice answers with, or looks for in the server's.
pub mod sqlstate {
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    pub const CONNECTION_FAILURE: &str = "08006";
    pub const CONNECTION_REJECTED: &str = "08004";
    pub const INVALID_PASSWORD: &str = "28P01";
    pub const INVALID_AUTHORIZATION: &str = "28000";
    pub const INVALID_CATALOG_NAME: &str = "3D000";
    pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    pub const IDLE_SESSION_TIMEOUT: &str = "57P05";
    pub const IDLE_IN_TRANSACTION_SESSION_TIMEOUT: &str = "25P03";
    pub const CANNOT_CONNECT_NOW: &str = "57P03";
    pub const CHARACTER_NOT_IN_REPERTOIRE: &str = "22021";
    pub const INTERNAL_ERROR: &str = "XX000";
    /// An error outside PostgreSQL: a plugin that failed.
    pub const SYSTEM_ERROR: &str = "58000";
    /// A statement given up on: here, one whose approval did not come.
    pub const QUERY_CANCELED: &str = "57014";
    pub const INVALID_SQL_STATEMENT_NAME: &str = "26000";
    pub const DUPLICATE_PREPARED_STATEMENT: &str = "42P05";
    /// What the server answers the refusal stand-in with.
    pub const SYNTAX_ERROR: &str = "42601";
    /// A statement refused until the client ends its cycle: here, the
    /// plugins were reloaded in the middle of it.
    pub const OBJECT_NOT_IN_PREREQUISITE_STATE: &str = "55000";
}

#[cfg(test)]
mod hostile_input {
    //! Random bytes through every parser that sees network input: each
    //! either parses or refuses, none panics.
    use bytes::BytesMut;
    use rand::{Rng, SeedableRng};

    use super::frame::Frame;
    use super::{backend, frontend, startup};

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5115e);
        let tags = b"QPBDECSHFXpdcfRKSZENATDvGHWt12n3sIV!";
        for round in 0..20_000 {
            let len = rng.random_range(0..64usize);
            let mut body: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            // Bias towards plausible shapes: NULs and small counts.
            for byte in body.iter_mut() {
                if rng.random_ratio(1, 4) {
                    *byte = if rng.random() { 0 } else { 1 };
                }
            }
            let tag = tags[round % tags.len()];
            let frame = Frame::new(tag, &body);
            let _ = frontend::check(&frame);
            let _ = frontend::decode(&frame);
            let _ = backend::decode(&frame);

            let mut packet = BytesMut::new();
            packet.extend_from_slice(&((body.len() + 8) as i32).to_be_bytes());
            packet.extend_from_slice(&[0, 3, 0, rng.random_range(0..3)]);
            packet.extend_from_slice(&body);
            let _ = startup::split_packet(&mut packet);

            let mut raw = BytesMut::from(&body[..]);
            let _ = Frame::split_from(&mut raw, 1 << 20);
        }
        // The shape checks stopped every malformed message before pgwire's
        // decoders saw it.
        assert_eq!(
            super::frame::DECODER_PANICS.load(std::sync::atomic::Ordering::Relaxed),
            0
        );
    }
}
