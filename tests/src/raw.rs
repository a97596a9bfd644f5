//! A byte-level PostgreSQL client for the inputs no real driver sends:
//! garbage, truncated and oversized messages, unknown types, stalls.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(15);

/// One message from the server.
#[derive(Debug, Clone)]
pub struct Message {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Message {
    /// The fields of an ErrorResponse or NoticeResponse.
    pub fn fields(&self) -> HashMap<u8, String> {
        let mut fields = HashMap::new();
        let mut rest = &self.body[..];
        while let Some((&kind, tail)) = rest.split_first() {
            if kind == 0 {
                break;
            }
            let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
            fields.insert(kind, String::from_utf8_lossy(&tail[..end]).into_owned());
            rest = tail.get(end + 1..).unwrap_or_default();
        }
        fields
    }

    pub fn code(&self) -> String {
        self.fields().get(&b'C').cloned().unwrap_or_default()
    }
}

/// The COPY data among `replies`, joined, as text (lossy: a test reads
/// what a client would see).
pub fn copy_text(replies: &[Message]) -> String {
    let data: Vec<u8> = replies
        .iter()
        .filter(|m| m.tag == b'd')
        .flat_map(|m| m.body.iter().copied())
        .collect();
    String::from_utf8_lossy(&data).into_owned()
}

/// A raw connection.
pub struct RawConn {
    pub stream: TcpStream,
    buf: BytesMut,
}

/// Encodes a tagged message.
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(tag);
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A simple Query message.
pub fn query(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    message(b'Q', &body)
}

/// A Parse of `text` as the prepared statement `name`, no parameter
/// types given.
pub fn parse(name: &str, text: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(name.len() + text.len() + 4);
    body.extend_from_slice(name.as_bytes());
    body.push(0);
    body.extend_from_slice(text.as_bytes());
    body.extend_from_slice(&[0, 0, 0]);
    message(b'P', &body)
}

/// A Bind of the prepared statement `statement` (no parameters, text
/// results) into the unnamed portal, and an Execute of it.
pub fn bind_execute(statement: &str) -> Vec<u8> {
    let mut messages = bind("", statement);
    messages.extend(execute("", 0));
    messages
}

/// A Bind of the prepared statement `statement` (no parameters, text
/// results) into the portal `portal`.
pub fn bind(portal: &str, statement: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(portal.len() + statement.len() + 8);
    body.extend_from_slice(portal.as_bytes());
    body.push(0);
    body.extend_from_slice(statement.as_bytes());
    body.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]);
    message(b'B', &body)
}

/// An Execute of the portal `portal`, returning at most `max_rows` rows
/// (0: all).
pub fn execute(portal: &str, max_rows: i32) -> Vec<u8> {
    let mut body = Vec::with_capacity(portal.len() + 5);
    body.extend_from_slice(portal.as_bytes());
    body.push(0);
    body.extend_from_slice(&max_rows.to_be_bytes());
    message(b'E', &body)
}

/// A fastpath FunctionCall of the function `oid` with one text argument.
pub fn function_call(oid: u32, argument: &str) -> Vec<u8> {
    let mut body = oid.to_be_bytes().to_vec();
    body.extend_from_slice(&0u16.to_be_bytes()); // arguments in text
    body.extend_from_slice(&1u16.to_be_bytes());
    body.extend_from_slice(&(argument.len() as i32).to_be_bytes());
    body.extend_from_slice(argument.as_bytes());
    body.extend_from_slice(&0u16.to_be_bytes()); // result in text
    message(b'F', &body)
}

/// A Flush: the server sends what it has without waiting for Sync.
pub fn flush() -> Vec<u8> {
    message(b'H', &[])
}

/// A Sync.
pub fn sync() -> Vec<u8> {
    message(b'S', &[])
}

/// [`bind_execute`], then Sync.
pub fn bind_execute_sync(statement: &str) -> Vec<u8> {
    let mut messages = bind_execute(statement);
    messages.extend(sync());
    messages
}

/// A StartupMessage for protocol 3.`minor`.
pub fn startup_message(minor: u16, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = BytesMut::new();
    body.put_u16(3);
    body.put_u16(minor);
    for (k, v) in params {
        body.put_slice(k.as_bytes());
        body.put_u8(0);
        body.put_slice(v.as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    let mut out = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let stream = TcpStream::connect(addr).await.expect("connect to sluice");
        RawConn {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Connects, logs in with SCRAM as `user`, and reads up to the first
    /// ReadyForQuery.
    pub async fn login(addr: SocketAddr, database: &str, user: &str, token: &str) -> RawConn {
        let mut conn = RawConn::connect(addr).await;
        conn.send(&startup_message(
            0,
            &[("user", user), ("database", database)],
        ))
        .await;
        conn.authenticate(token).await;
        let messages = conn.until_ready().await;
        assert!(
            messages.iter().any(|m| m.tag == b'K'),
            "no BackendKeyData in {messages:?}"
        );
        conn
    }

    /// Runs the SCRAM exchange (after the StartupMessage) up to
    /// AuthenticationOk.
    pub async fn authenticate(&mut self, token: &str) {
        let mut scram = self.scram_first_steps(token).await;
        self.send(&message(b'p', scram.message())).await;
        let fin = self.recv().await.expect("SASLFinal");
        assert_eq!(&fin.body[..4], &12i32.to_be_bytes(), "{fin:?}");
        scram.finish(&fin.body[4..]).expect("server signature");
        let ok = self.recv().await.expect("AuthenticationOk");
        assert_eq!((ok.tag, &ok.body[..]), (b'R', &[0u8, 0, 0, 0][..]));
    }

    /// The SCRAM exchange up to the server-first message, read: the
    /// client-final message with the proof is the next to send.
    async fn scram_first_steps(&mut self, token: &str) -> ScramSha256 {
        let sasl = self.recv().await.expect("AuthenticationSASL");
        assert_eq!(sasl.tag, b'R', "expected authentication, got {sasl:?}");
        let mut scram = ScramSha256::new(token.as_bytes(), ChannelBinding::unsupported());
        let mut initial = b"SCRAM-SHA-256\0".to_vec();
        initial.extend_from_slice(&(scram.message().len() as i32).to_be_bytes());
        initial.extend_from_slice(scram.message());
        self.send(&message(b'p', &initial)).await;
        let cont = self.recv().await.expect("SASLContinue");
        assert_eq!(&cont.body[..4], &11i32.to_be_bytes(), "{cont:?}");
        scram.update(&cont.body[4..]).expect("server-first");
        scram
    }

    /// Runs the SCRAM exchange (after the StartupMessage) up to the point
    /// where the proof is due, and returns the client-final message with
    /// the proof for `token`, unsent: the caller decides when it goes.
    pub async fn scram_until_proof(&mut self, token: &str) -> Vec<u8> {
        let scram = self.scram_first_steps(token).await;
        message(b'p', scram.message())
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send to sluice");
    }

    /// Sends, ignoring errors (the peer may already have closed).
    pub async fn send_lossy(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// The next message, or `None` when the connection closed. Fails the
    /// test if nothing arrives within [`WAIT`].
    pub async fn recv(&mut self) -> Option<Message> {
        tokio::time::timeout(WAIT, self.recv_inner())
            .await
            .expect("sluice answered within the wait")
    }

    async fn recv_inner(&mut self) -> Option<Message> {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]])
                    as usize;
                if self.buf.len() > len {
                    let tag = self.buf[0];
                    self.buf.advance(5);
                    let body = self.buf.split_to(len - 4).to_vec();
                    return Some(Message { tag, body });
                }
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Reads one raw byte (SSLRequest answers are a single byte).
    pub async fn recv_byte(&mut self) -> Option<u8> {
        if let Some(&b) = self.buf.first() {
            self.buf.advance(1);
            return Some(b);
        }
        let mut byte = [0u8];
        match tokio::time::timeout(WAIT, self.stream.read_exact(&mut byte)).await {
            Ok(Ok(_)) => Some(byte[0]),
            _ => None,
        }
    }

    /// Messages up to and including the next ReadyForQuery.
    pub async fn until_ready(&mut self) -> Vec<Message> {
        let mut messages = Vec::new();
        loop {
            let message = self
                .recv()
                .await
                .unwrap_or_else(|| panic!("connection closed; got {messages:?}"));
            let done = message.tag == b'Z';
            messages.push(message);
            if done {
                return messages;
            }
        }
    }

    /// Parses `text` as `name` in a cycle of its own, which must succeed.
    pub async fn define(&mut self, name: &str, text: &str) {
        let mut messages = parse(name, text);
        messages.extend(sync());
        self.send(&messages).await;
        let replies = self.until_ready().await;
        assert!(replies.iter().any(|m| m.tag == b'1'), "{replies:?}");
    }

    /// Sends `messages` and reads up to ReadyForQuery: the SQLSTATE of the
    /// error that came, when no row did.
    pub async fn refusal(&mut self, messages: &[u8]) -> String {
        self.send(messages).await;
        let replies = self.until_ready().await;
        assert!(
            !replies.iter().any(|m| m.tag == b'D'),
            "no row came: {replies:?}"
        );
        replies
            .iter()
            .find(|m| m.tag == b'E')
            .unwrap_or_else(|| panic!("an error, not {replies:?}"))
            .code()
    }

    /// Sends `messages` and reads up to ReadyForQuery: the first row that
    /// came.
    pub async fn first_row(&mut self, messages: &[u8]) -> Vec<u8> {
        self.send(messages).await;
        let replies = self.until_ready().await;
        match replies.iter().position(|m| m.tag == b'D') {
            Some(row) => replies[row].body.clone(),
            None => panic!("a row, not {replies:?}"),
        }
    }

    /// Reads until an ErrorResponse and returns it.
    pub async fn expect_error(&mut self) -> Message {
        loop {
            match self.recv().await {
                Some(m) if m.tag == b'E' => return m,
                Some(_) => {}
                None => panic!("connection closed without an ErrorResponse"),
            }
        }
    }

    /// True when the peer closes the connection within [`WAIT`] (messages
    /// before the close are skipped).
    pub async fn closed(&mut self) -> bool {
        tokio::time::timeout(WAIT, async { while self.recv_inner().await.is_some() {} })
            .await
            .is_ok()
    }
}
