//! One audit record: its line, its place in the chain and its MAC.
//!
//! The trail is a file of JSON Lines. Every record is one line:
//!
//! ```text
//! {"seq":7,"time":"2026-11-29T06:30:00.123456Z","instance":"gw-1","prev":"<64 hex>",<event fields>,"mac":"<64 hex>"}
//! ```
//!
//! - `seq` counts the records of one chain (one gateway instance) from 1 and
//!   never starts again, not across rotated files nor across restarts.
//! - `time` is when the record was sealed, UTC, RFC 3339 with microseconds.
//! - `prev` is the `mac` of the record before it; the first record of a chain
//!   has 64 zeros there.
//! - `"file_start":true` follows `prev` in the first record of each file of
//!   the trail (and in no other): the end of a file is kept by the head and
//!   the next file's first record, and its start by this. Cutting a file's
//!   first records off is seen; whole oldest files archived away are not
//!   a fault when archive lines (see [`super::archive`]) account for them.
//! - the event's fields follow in the order the caller's map yields them
//!   (with serde_json's default `Map`, sorted by name).
//! - `mac` is HMAC-SHA256, under the chain's key, of the line as it would
//!   read without its `mac` field: everything before `,"mac":"…"}` with the
//!   closing `}` put back.
//!
//! # Why these choices
//!
//! A plain hash chain proves nothing against whoever can write the file: they
//! edit a record and recompute every hash after it. Keying the chain with a
//! secret that someone editing the file does not hold makes that impossible,
//! and linking each record to the previous MAC makes an inserted, deleted or
//! reordered record visible. What a keyed chain cannot show alone is a file
//! cut short at a record boundary — the shorter chain is still valid — so
//! the writer also keeps a *head* (the last `seq` and `mac`, MACed too) in
//! a separate file; see [`head_line`]; nor a file whose first records were
//! cut off, which the sealed `file_start` marks.
//!
//! The MAC covers the exact bytes of the line, not a re-serialisation of
//! its JSON, so there is no canonicalisation question: whoever verifies
//! strips the fixed-length suffix (the `mac` field is always last and always
//! 64 hex digits, so a line ends with exactly [`MAC_SUFFIX_LEN`] bytes before
//! its newline), puts `}` back and computes the MAC over what is left.
//! serde_json escapes control characters inside strings, so a newline never
//! appears raw inside a record and a line is always one record.

use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of the smallest key [`ChainKey`] accepts: HMAC-SHA256 gains nothing
/// from a longer one and is weakened by a shorter one.
pub const MIN_KEY_LEN: usize = 32;

/// Length of the suffix `,"mac":"<64 hex>"}` that ends every record line
/// before its newline.
pub const MAC_SUFFIX_LEN: usize = MAC_FIELD_OPEN.len() + 64 + MAC_FIELD_CLOSE.len();

/// The `prev` of the first record of a chain.
pub const GENESIS_MAC: [u8; 32] = [0; 32];

/// Field names the record itself uses; an event may not carry them.
pub const RESERVED_FIELDS: [&str; 6] = ["seq", "time", "instance", "prev", FILE_START, "mac"];

/// The field, `true`, that the first record of each file of the trail
/// carries (sealed with it): a file whose first record lacks it lost its
/// first records, and one that carries it inside a file was moved there.
/// Without it, cutting the oldest records off the only file left a trail
/// that merely started late, as one whose oldest files were archived does.
pub const FILE_START: &str = "file_start";

/// Length of a head line (see [`head_line`]), newline included. Every head
/// line has this length, so rewriting it in place never leaves a mixture of
/// an old and a new one behind a shorter write.
pub const HEAD_LEN: usize = HEAD_MAGIC.len() + 4 + 20 + 5 + 64 + 6 + 64 + 1;

/// Length of a head file: two slots of [`HEAD_LEN`] bytes, each head
/// copied into one, then the other, so that a copy a crash interrupts
/// damages only the slot it was writing (see [`parse_head_file`]).
pub const HEAD_FILE_LEN: usize = 2 * HEAD_LEN;

const LINE_START: &[u8] = b"{\"seq\":";
const MAC_FIELD_OPEN: &[u8] = b",\"mac\":\"";
const MAC_FIELD_CLOSE: &[u8] = b"\"}";
const HEAD_MAGIC: &[u8] = b"sluice-audit-head v1 ";
/// Prefixed to what a head's MAC covers, so a head's MAC can never be
/// mistaken for a record's (whose bodies start with `{`).
const HEAD_MAC_DOMAIN: &[u8] = b"head";

/// Why a key cannot be used or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key is shorter than [`MIN_KEY_LEN`].
    #[error("audit key is {len} bytes long; it must have at least {MIN_KEY_LEN}")]
    TooShort {
        /// Length of the refused key.
        len: usize,
    },
    /// The key file cannot be read or created.
    #[error("cannot use audit key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The key file does not hold 64 hex digits and an optional newline.
    #[error("audit key file {path} is not 64 hex digits and an optional newline: {reason}")]
    Format {
        /// The key file.
        path: PathBuf,
        /// What is wrong with its contents (never the contents).
        reason: &'static str,
    },
    /// Users other than the owner may read or write the key file.
    #[error(
        "audit key file {path} has mode {mode:04o}: group and others must have no access \
         (chmod 600 it)"
    )]
    Exposed {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file is not a regular file (a device or pipe in its place),
    /// or another user owns it (one who could have planted it).
    #[error(
        "audit key file {path} must be a regular file owned by the user sluice runs as (or root): {reason}"
    )]
    Untrusted {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The secret that keys a chain's MACs.
///
/// Its `Debug` shows no byte of the key, so it can sit in settings that are
/// logged.
#[derive(Clone)]
pub struct ChainKey {
    /// HMAC-SHA256 with the key already absorbed; each MAC starts from a
    /// clone, so the key bytes themselves are not kept.
    keyed: HmacSha256,
}

impl fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChainKey(<redacted>)")
    }
}

impl ChainKey {
    /// A key from raw bytes, of which there must be at least [`MIN_KEY_LEN`].
    pub fn from_bytes(bytes: &[u8]) -> Result<ChainKey, KeyError> {
        let too_short = KeyError::TooShort { len: bytes.len() };
        if bytes.len() < MIN_KEY_LEN {
            return Err(too_short);
        }
        // HMAC accepts keys of any length, so this cannot fail.
        let keyed = HmacSha256::new_from_slice(bytes).map_err(|_| too_short)?;
        Ok(ChainKey { keyed })
    }

    /// Reads a key file: 64 hex digits (32 bytes), optionally followed by
    /// one newline, that only its owner may access.
    ///
    /// A file that group or others may read or write is refused: whoever can
    /// read the key can forge the whole trail.
    pub fn load(path: &Path) -> Result<ChainKey, KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let format = |reason| KeyError::Format {
            path: path.to_path_buf(),
            reason,
        };
        // Not blocking: a pipe in the key's place answers nothing.
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(io)?;
        let metadata = file.metadata().map_err(io)?;
        let untrusted = |reason| KeyError::Untrusted {
            path: path.to_path_buf(),
            reason,
        };
        if !metadata.file_type().is_file() {
            return Err(untrusted("not a regular file"));
        }
        // SAFETY: geteuid cannot fail and touches no memory.
        let me = unsafe { libc::geteuid() };
        // Root reads any user's key (an operator's `sudo sluice audit ...`).
        if me != 0 && metadata.uid() != me && metadata.uid() != 0 {
            return Err(untrusted("another user owns it"));
        }
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Exposed {
                path: path.to_path_buf(),
                mode,
            });
        }
        // One byte more than the longest valid file tells "too long" apart
        // without reading a file of any size into memory.
        let mut text = Vec::with_capacity(66);
        (&file).take(66).read_to_end(&mut text).map_err(io)?;
        let digits = text.strip_suffix(b"\n").unwrap_or(&text);
        if digits.len() != 64 {
            return Err(format("wrong length"));
        }
        let bytes: [u8; 32] = decode_hex(digits).ok_or_else(|| format("not hex"))?;
        ChainKey::from_bytes(&bytes)
    }

    /// A MAC computation keyed with this key.
    fn mac(&self) -> HmacSha256 {
        self.keyed.clone()
    }
}

/// Creates a key file with 32 random bytes (from `/dev/urandom`) as hex,
/// mode 0600, and returns the key. An existing file is never overwritten:
/// losing a key makes every record written under it unverifiable.
pub fn generate_key_file(path: &Path) -> Result<ChainKey, KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .map_err(|source| KeyError::Io {
            path: PathBuf::from("/dev/urandom"),
            source,
        })?;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    let mut text = encode_hex(&bytes).into_bytes();
    text.push(b'\n');
    file.write_all(&text).map_err(io)?;
    file.sync_all().map_err(io)?;
    ChainKey::from_bytes(&bytes)
}

/// The head of a chain: the last record's `seq` and `mac`. Before the first
/// record it is `seq` 0 with [`GENESIS_MAC`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    /// Sequence number of the last record; 0 for an empty chain.
    pub seq: u64,
    /// MAC of the last record; zeros for an empty chain.
    pub mac: [u8; 32],
}

impl Link {
    /// The head of a chain that has no record yet.
    pub const GENESIS: Link = Link {
        seq: 0,
        mac: GENESIS_MAC,
    };

    /// Reads `SEQ:MAC` — a head as sluice's log gives it (`seq=` and
    /// `mac=` of an `audit chain head` line), the MAC in hex.
    pub fn parse(text: &str) -> Result<Link, String> {
        let (seq, mac) = text.trim().split_once(':').ok_or_else(|| {
            format!("{text:?} is not SEQ:MAC (a record's seq, a colon, its MAC in hex)")
        })?;
        let seq = seq
            .parse::<u64>()
            .ok()
            .filter(|&seq| seq > 0)
            .ok_or_else(|| format!("{seq:?} is not a record's seq (a number from 1)"))?;
        let mac = decode_hex(mac.as_bytes())
            .ok_or_else(|| format!("{mac:?} is not a MAC (64 hex digits)"))?;
        Ok(Link { seq, mac })
    }
}

/// Why an event cannot be sealed into a record.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The event uses a field name the record itself needs.
    #[error("audit event field {0:?} is reserved for the record itself")]
    ReservedField(String),
    /// The event has no `event` field naming what happened.
    #[error("audit event has no \"event\" field")]
    NoEventName,
    /// The chain has used every sequence number.
    #[error("audit chain sequence numbers are exhausted")]
    SeqExhausted,
    /// serde_json could not write a value.
    #[error("cannot encode audit event: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Checks an event's field names: it needs an `event` field and may use none
/// of [`RESERVED_FIELDS`]. [`seal`] checks the same; callers check early to
/// refuse a bad event before it is queued.
pub fn check_event(event: &Map<String, Value>) -> Result<(), SealError> {
    if let Some(name) = event
        .keys()
        .find(|name| RESERVED_FIELDS.contains(&name.as_str()))
    {
        return Err(SealError::ReservedField(name.clone()));
    }
    if !event.contains_key("event") {
        return Err(SealError::NoEventName);
    }
    Ok(())
}

/// An event's fields, ready to seal: the inside of a JSON object
/// (`"event":"statement","session":1,...`) with an `event` field and none
/// of [`RESERVED_FIELDS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventBody(Vec<u8>);

impl EventBody {
    /// Bytes of its fields as they will be sealed.
    pub fn encoded_len(&self) -> usize {
        self.0.len()
    }

    /// From a map of fields, checked.
    pub fn from_map(event: &Map<String, Value>) -> Result<EventBody, SealError> {
        check_event(event)?;
        let mut body = Vec::with_capacity(256);
        for (name, value) in event {
            if !body.is_empty() {
                body.push(b',');
            }
            write_json(&mut body, name)?;
            body.push(b':');
            write_json(&mut body, value)?;
        }
        Ok(EventBody(body))
    }

    /// Starts a body with its `event` field; [`EventBody::field`] adds the
    /// rest. For sluice's own events, whose field names are fixed: nothing
    /// checks them at run time.
    pub(crate) fn new(event: &'static str) -> EventBody {
        let mut body = EventBody(Vec::with_capacity(320));
        body.0.extend_from_slice(b"\"event\":");
        // A static name needs no escaping beyond its quotes.
        body.0.push(b'"');
        body.0.extend_from_slice(event.as_bytes());
        body.0.push(b'"');
        body
    }

    /// Adds a field; `name` is a fixed field name (plain ASCII, none of
    /// [`RESERVED_FIELDS`]).
    pub(crate) fn field<T: serde::Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        value: &T,
    ) -> Result<&mut EventBody, SealError> {
        debug_assert!(!RESERVED_FIELDS.contains(&name) && !name.contains('"'));
        self.0.extend_from_slice(b",\"");
        self.0.extend_from_slice(name.as_bytes());
        self.0.extend_from_slice(b"\":");
        write_json(&mut self.0, value)?;
        Ok(self)
    }
}

/// Writes `value` as compact JSON, with U+0000 written as U+FFFD: a NUL
/// (a Bind value may carry one, though PostgreSQL refuses it in text) is
/// `\u0000` in JSON, which `jsonb` refuses, so one such value would stop
/// the PostgreSQL sink and with it every statement of the gateway.
fn write_json<T: serde::Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
) -> serde_json::Result<()> {
    value.serialize(&mut serde_json::Serializer::with_formatter(out, WithoutNul))
}

/// [`serde_json`]'s compact formatter, but for NUL.
struct WithoutNul;

impl serde_json::ser::Formatter for WithoutNul {
    fn write_char_escape<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        escape: serde_json::ser::CharEscape,
    ) -> std::io::Result<()> {
        match escape {
            serde_json::ser::CharEscape::AsciiControl(0) => writer.write_all(b"\\ufffd"),
            other => serde_json::ser::CompactFormatter.write_char_escape(writer, other),
        }
    }
}

/// Seals an event into the record that follows `before` in the chain:
/// returns its line (newline included) and the new head.
pub fn seal(
    key: &ChainKey,
    before: &Link,
    instance: &str,
    time: SystemTime,
    event: &Map<String, Value>,
) -> Result<(Vec<u8>, Link), SealError> {
    seal_body(key, before, instance, time, &EventBody::from_map(event)?)
}

/// [`seal`] for a body made already.
pub fn seal_body(
    key: &ChainKey,
    before: &Link,
    instance: &str,
    time: SystemTime,
    body: &EventBody,
) -> Result<(Vec<u8>, Link), SealError> {
    let mut line = Vec::with_capacity(256 + body.0.len());
    let link = seal_body_into(key, before, instance, time, body, false, &mut line)?;
    Ok((line, link))
}

/// [`seal_body`] appending the line to `lines`, where a writer gathers a
/// group's lines: no buffer of its own per record, and nothing formatted
/// through an intermediate `String` (this runs for every statement, under
/// the lock that keeps the chain in order). `opens_file`: the record is
/// the first of its file (see [`FILE_START`]). On an error `lines` is left
/// as it was.
pub fn seal_body_into(
    key: &ChainKey,
    before: &Link,
    instance: &str,
    time: SystemTime,
    body: &EventBody,
    opens_file: bool,
    lines: &mut Vec<u8>,
) -> Result<Link, SealError> {
    let seq = before.seq.checked_add(1).ok_or(SealError::SeqExhausted)?;
    let start = lines.len();
    lines.reserve(256 + body.0.len());
    lines.extend_from_slice(LINE_START);
    push_decimal(lines, seq, 1);
    lines.extend_from_slice(b",\"time\":\"");
    push_utc_micros(lines, time);
    lines.extend_from_slice(b"\",\"instance\":");
    if let Err(error) = serde_json::to_writer(&mut *lines, instance) {
        lines.truncate(start);
        return Err(error.into());
    }
    lines.extend_from_slice(b",\"prev\":\"");
    push_hex(lines, &before.mac);
    lines.push(b'"');
    if opens_file {
        lines.extend_from_slice(b",\"file_start\":true");
    }
    if !body.0.is_empty() {
        lines.push(b',');
        lines.extend_from_slice(&body.0);
    }
    let mac = body_mac(key, &lines[start..]);
    lines.extend_from_slice(MAC_FIELD_OPEN);
    push_hex(lines, &mac);
    lines.extend_from_slice(MAC_FIELD_CLOSE);
    lines.push(b'\n');
    Ok(Link { seq, mac })
}

/// A record line that opened: its MAC verified under the key.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenedRecord {
    /// Its sequence number.
    pub seq: u64,
    /// The MAC of the record before it (zeros for the first).
    pub prev: [u8; 32],
    /// Its own MAC.
    pub mac: [u8; 32],
    /// Every field but `mac`: `seq`, `time`, `instance`, `prev` and the
    /// event's.
    pub fields: Map<String, Value>,
    /// Whether it is sealed as the first record of a file.
    pub opens_file: bool,
}

impl OpenedRecord {
    /// The chain's head once this record is in it.
    pub fn link(&self) -> Link {
        Link {
            seq: self.seq,
            mac: self.mac,
        }
    }
}

/// Why a line is not a record of the chain.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// The line does not end with a newline: its write did not finish.
    #[error("record line is torn: it has no newline at its end")]
    Torn,
    /// The line does not have a record's layout, is not JSON, or lacks a
    /// record field.
    #[error("line is not an audit record: {0}")]
    Malformed(&'static str),
    /// The line has a record's layout, but its MAC does not verify under the
    /// key: it was changed, or written under another key.
    #[error("record MAC does not verify")]
    BadMac {
        /// The `seq` the line claims, when it can be read.
        claimed_seq: Option<u64>,
        /// The `mac` the line claims (what a following record's `prev`
        /// names if only this record's other bytes were changed).
        claimed_mac: [u8; 32],
    },
}

/// Opens one line (newline included): checks its layout and its MAC, then
/// reads its record fields.
pub fn open_line(key: &ChainKey, line: &[u8]) -> Result<OpenedRecord, LineError> {
    let text = line.strip_suffix(b"\n").ok_or(LineError::Torn)?;
    if text.contains(&b'\n') {
        return Err(LineError::Malformed("more than one line"));
    }
    if !text.starts_with(LINE_START) || text.len() < LINE_START.len() + MAC_SUFFIX_LEN {
        return Err(LineError::Malformed("does not start with a seq field"));
    }
    let (unsealed, suffix) = text.split_at(text.len() - MAC_SUFFIX_LEN);
    let claimed_mac = suffix
        .strip_prefix(MAC_FIELD_OPEN)
        .and_then(|rest| rest.strip_suffix(MAC_FIELD_CLOSE))
        .and_then(decode_lower_hex)
        .ok_or(LineError::Malformed("does not end with a mac field"))?;
    let mut check = key.mac();
    check.update(unsealed);
    check.update(b"}");
    if check.verify_slice(&claimed_mac).is_err() {
        return Err(LineError::BadMac {
            claimed_seq: peek_seq(line),
            claimed_mac,
        });
    }
    let mut body = Vec::with_capacity(unsealed.len() + 1);
    body.extend_from_slice(unsealed);
    body.push(b'}');
    let fields: Map<String, Value> =
        serde_json::from_slice(&body).map_err(|_| LineError::Malformed("not a JSON object"))?;
    let seq = fields
        .get("seq")
        .and_then(Value::as_u64)
        .ok_or(LineError::Malformed("seq is not a number"))?;
    let prev = fields
        .get("prev")
        .and_then(Value::as_str)
        .and_then(|prev| decode_lower_hex(prev.as_bytes()))
        .ok_or(LineError::Malformed("prev is not 64 hex digits"))?;
    for name in ["time", "instance"] {
        if !fields.get(name).is_some_and(Value::is_string) {
            return Err(LineError::Malformed("time or instance is missing"));
        }
    }
    let opens_file = fields.get(FILE_START) == Some(&Value::Bool(true));
    Ok(OpenedRecord {
        seq,
        prev,
        mac: claimed_mac,
        fields,
        opens_file,
    })
}

/// The `seq` a line claims, read from its first bytes without trusting or
/// parsing the rest: for reports about lines that do not open (torn or
/// changed ones).
pub fn peek_seq(line: &[u8]) -> Option<u64> {
    let digits = line.strip_prefix(LINE_START)?;
    let end = digits
        .iter()
        .position(|byte| !byte.is_ascii_digit())
        .unwrap_or(digits.len());
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

/// The head line for `link`: [`HEAD_LEN`] bytes,
/// `sluice-audit-head v1 seq=<20 digits> mac=<64 hex> hmac=<64 hex>\n`,
/// where `hmac` is HMAC-SHA256 of `"head"`, the seq as 8 big-endian bytes and
/// the mac — so a head cannot be made without the key.
pub fn head_line(key: &ChainKey, link: &Link) -> Vec<u8> {
    let line = sealed_line(key, &HEAD_SEAL, link);
    debug_assert_eq!(line.len(), HEAD_LEN);
    line
}

/// The archive line for `link`, the last record of a file moved away
/// (see [`super::archive`]): as a head line, but
/// `sluice-audit-archived v1 ...`, its MAC over `"archived"` — so that no
/// head passes for one, nor one for a head.
pub fn archive_line(key: &ChainKey, link: &Link) -> Vec<u8> {
    sealed_line(key, &ARCHIVE_SEAL, link)
}

/// Reads an archive line written by [`archive_line`] and checks its MAC.
pub fn parse_archive_line(key: &ChainKey, bytes: &[u8]) -> Result<Link, HeadError> {
    parse_sealed(key, &ARCHIVE_SEAL, bytes)
}

/// The line acknowledging that the records up to `link` were moved away
/// by other means than [`archive_line`]'s (see
/// [`super::archive::acknowledge_start`]): `sluice-audit-start-acknowledged
/// v1 ...`, its MAC over `"acknowledged"`, so that an operator's word is
/// never shown as an archive.
pub fn acknowledgement_line(key: &ChainKey, link: &Link) -> Vec<u8> {
    sealed_line(key, &ACKNOWLEDGEMENT_SEAL, link)
}

/// Reads a line written by [`acknowledgement_line`] and checks its MAC.
pub fn parse_acknowledgement_line(key: &ChainKey, bytes: &[u8]) -> Result<Link, HeadError> {
    parse_sealed(key, &ACKNOWLEDGEMENT_SEAL, bytes)
}

/// What tells one kind of sealed link line from another: the words it
/// starts with, and what its MAC covers first.
struct Seal {
    magic: &'static str,
    domain: &'static [u8],
}

const HEAD_SEAL: Seal = Seal {
    magic: "sluice-audit-head",
    domain: HEAD_MAC_DOMAIN,
};

const ARCHIVE_SEAL: Seal = Seal {
    magic: "sluice-audit-archived",
    domain: b"archived",
};

const ACKNOWLEDGEMENT_SEAL: Seal = Seal {
    magic: "sluice-audit-start-acknowledged",
    domain: b"acknowledged",
};

/// `MAGIC v1 seq=<20 digits> mac=<64 hex> hmac=<64 hex>\n` for `link`.
fn sealed_line(key: &ChainKey, seal: &Seal, link: &Link) -> Vec<u8> {
    let mut line = Vec::with_capacity(seal.magic.len() + HEAD_LEN - HEAD_MAGIC.len() + 4);
    line.extend_from_slice(seal.magic.as_bytes());
    line.extend_from_slice(b" v1 seq=");
    push_decimal(&mut line, link.seq, 20);
    line.extend_from_slice(b" mac=");
    push_hex(&mut line, &link.mac);
    line.extend_from_slice(b" hmac=");
    push_hex(&mut line, &sealed_mac(key, seal, link));
    line.push(b'\n');
    line
}

/// Why a head file's contents are not a head of the chain.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Not a head line.
    #[error("not an audit head line")]
    Malformed,
    /// A head line whose `hmac` does not verify under the key.
    #[error("audit head MAC does not verify")]
    BadMac,
    /// The two slots of a head file name the same record with different
    /// MACs: each verifies, so both were made with the key, and one of them
    /// was put back from another trail or another time.
    #[error("the head file's two slots name seq {seq} with different MACs")]
    SlotsDisagree {
        /// The seq both slots name.
        seq: u64,
    },
}

/// What a head file holds: the newest head in it, and whether its other
/// slot failed to verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadSlots {
    /// The head with the highest `seq` among the slots that verify.
    pub newest: Link,
    /// Why the other slot does not verify, when it does not: the copy a
    /// crash interrupted, or a change.
    pub other_refused: Option<HeadError>,
}

/// Reads a head file: [`HEAD_FILE_LEN`] bytes of two slots, each a
/// [`head_line`], or one line alone ([`HEAD_LEN`] bytes, as versions
/// before the slots wrote it). The newest slot that verifies is the head;
/// when neither does, the first slot's error is returned.
pub fn parse_head_file(key: &ChainKey, bytes: &[u8]) -> Result<HeadSlots, HeadError> {
    if bytes.len() != HEAD_FILE_LEN {
        return parse_head(key, bytes).map(|newest| HeadSlots {
            newest,
            other_refused: None,
        });
    }
    let (first, second) = bytes.split_at(HEAD_LEN);
    match (parse_head(key, first), parse_head(key, second)) {
        (Ok(a), Ok(b)) if a.seq == b.seq && a.mac != b.mac => {
            Err(HeadError::SlotsDisagree { seq: a.seq })
        }
        (Ok(a), Ok(b)) => Ok(HeadSlots {
            newest: if b.seq > a.seq { b } else { a },
            other_refused: None,
        }),
        (Ok(newest), Err(refused)) | (Err(refused), Ok(newest)) => Ok(HeadSlots {
            newest,
            other_refused: Some(refused),
        }),
        (Err(refused), Err(_)) => Err(refused),
    }
}

/// Reads a head line written by [`head_line`] and checks its MAC.
pub fn parse_head(key: &ChainKey, bytes: &[u8]) -> Result<Link, HeadError> {
    parse_sealed(key, &HEAD_SEAL, bytes)
}

/// Reads a line written by [`sealed_line`] with `seal` and checks its MAC.
fn parse_sealed(key: &ChainKey, seal: &Seal, bytes: &[u8]) -> Result<Link, HeadError> {
    let text = bytes.strip_suffix(b"\n").ok_or(HeadError::Malformed)?;
    let text = std::str::from_utf8(text).map_err(|_| HeadError::Malformed)?;
    let mut words = text.split(' ');
    let (Some(magic), Some("v1"), Some(seq), Some(mac), Some(hmac), None) = (
        words.next(),
        words.next(),
        words.next(),
        words.next(),
        words.next(),
        words.next(),
    ) else {
        return Err(HeadError::Malformed);
    };
    if magic != seal.magic {
        return Err(HeadError::Malformed);
    }
    let seq = seq
        .strip_prefix("seq=")
        .filter(|digits| digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|digits| digits.parse().ok())
        .ok_or(HeadError::Malformed)?;
    let mac = mac
        .strip_prefix("mac=")
        .and_then(|hex| decode_lower_hex(hex.as_bytes()))
        .ok_or(HeadError::Malformed)?;
    let claimed: [u8; 32] = hmac
        .strip_prefix("hmac=")
        .and_then(|hex| decode_lower_hex(hex.as_bytes()))
        .ok_or(HeadError::Malformed)?;
    let link = Link { seq, mac };
    let mut check = key.mac();
    sealed_mac_input(&mut check, seal, &link);
    check
        .verify_slice(&claimed)
        .map_err(|_| HeadError::BadMac)?;
    Ok(link)
}

fn sealed_mac(key: &ChainKey, seal: &Seal, link: &Link) -> [u8; 32] {
    let mut mac = key.mac();
    sealed_mac_input(&mut mac, seal, link);
    mac.finalize().into_bytes().into()
}

fn sealed_mac_input(mac: &mut HmacSha256, seal: &Seal, link: &Link) {
    mac.update(seal.domain);
    mac.update(&link.seq.to_be_bytes());
    mac.update(&link.mac);
}

/// MAC of a record body given without its closing brace.
fn body_mac(key: &ChainKey, unsealed: &[u8]) -> [u8; 32] {
    let mut mac = key.mac();
    mac.update(unsealed);
    mac.update(b"}");
    mac.finalize().into_bytes().into()
}

/// Lowercase hex of `bytes`.
pub fn encode_hex(bytes: &[u8]) -> String {
    let mut text = Vec::with_capacity(bytes.len() * 2);
    push_hex(&mut text, bytes);
    ascii_string(text)
}

/// Appends the lowercase hex of `bytes`.
fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)]);
        out.push(DIGITS[usize::from(byte & 0xf)]);
    }
}

/// Appends `value` in decimal, zero-padded to at least `width` digits.
fn push_decimal(out: &mut Vec<u8>, mut value: u64, width: usize) {
    let mut digits = [b'0'; 20]; // u64::MAX has 20 digits
    let mut start = digits.len();
    while value > 0 {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
    }
    let start = start.min(digits.len().saturating_sub(width));
    out.extend_from_slice(&digits[start..]);
}

/// Text made of the ASCII this module writes.
fn ascii_string(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes)
        .unwrap_or_else(|not_text| String::from_utf8_lossy(not_text.as_bytes()).into_owned())
}

/// Decodes hex of either case into exactly `N` bytes.
fn decode_hex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if text.len() != N * 2 {
        return None;
    }
    let mut bytes = [0u8; N];
    for (byte, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
        let high = char::from(pair[0]).to_digit(16)?;
        let low = char::from(pair[1]).to_digit(16)?;
        *byte = u8::try_from(high << 4 | low).ok()?;
    }
    Some(bytes)
}

/// Decodes the lowercase hex sluice writes. Uppercase is refused so that one
/// MAC has exactly one spelling in a line.
fn decode_lower_hex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if text.iter().any(u8::is_ascii_uppercase) {
        return None;
    }
    decode_hex(text)
}

/// `time` as UTC in RFC 3339 with microseconds: `2026-11-29T06:30:00.123456Z`.
/// Times before 1970 count backwards correctly; sub-microsecond parts are
/// cut off.
pub fn format_utc_micros(time: SystemTime) -> String {
    let mut text = Vec::with_capacity(27);
    push_utc_micros(&mut text, time);
    ascii_string(text)
}

/// Appends [`format_utc_micros`]'s text, digit by digit: every record
/// carries one, and `format!` took a tenth of a record's sealing.
fn push_utc_micros(out: &mut Vec<u8>, time: SystemTime) {
    // i64 microseconds reach ±292,000 years from 1970.
    let micros: i64 = match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_micros()).map_or(i64::MIN, |m| -m),
    };
    let seconds = micros.div_euclid(1_000_000);
    let micro = micros.rem_euclid(1_000_000);
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let Ok(four_digit_year @ 0..=9999) = u64::try_from(year) else {
        // Beyond four digits (or before year 0): the general formatter.
        out.extend_from_slice(
            format!(
                "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micro:06}Z",
                second_of_day / 3600,
                second_of_day / 60 % 60,
                second_of_day % 60,
            )
            .as_bytes(),
        );
        return;
    };
    // All of these are non-negative and in range by construction.
    let two = |n: i64| n.unsigned_abs();
    push_decimal(out, four_digit_year, 4);
    out.push(b'-');
    push_decimal(out, u64::from(month), 2);
    out.push(b'-');
    push_decimal(out, u64::from(day), 2);
    out.push(b'T');
    push_decimal(out, two(second_of_day / 3600), 2);
    out.push(b':');
    push_decimal(out, two(second_of_day / 60 % 60), 2);
    out.push(b':');
    push_decimal(out, two(second_of_day % 60), 2);
    out.push(b'.');
    push_decimal(out, two(micro), 6);
    out.push(b'Z');
}

/// The proleptic Gregorian date of a day counted from 1970-01-01: Howard
/// Hinnant's `civil_from_days`, which counts in 400-year eras starting on
/// 1 March so that the leap day falls at the end of each year.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468; // days from 0000-03-01
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097); // [0, 146096]
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let march_month = (5 * day_of_year + 2) / 153; // 0 = March … 11 = February
    let day = day_of_year - (153 * march_month + 2) / 5 + 1;
    let month = if march_month < 10 {
        march_month + 3
    } else {
        march_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Both are in range by construction (1..=31, 1..=12).
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    fn key() -> ChainKey {
        ChainKey::from_bytes(&[7u8; 32]).expect("32 bytes is long enough")
    }

    fn event(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("test events are objects"),
        }
    }

    fn at(seconds: u64, micros: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_micros(micros)
    }

    /// A NUL is written as U+FFFD (PostgreSQL's `jsonb` refuses `\u0000`);
    /// other control characters keep their usual escapes, and a backslash
    /// followed by `u0000` in the text stays what it was.
    #[test]
    fn a_nul_is_written_as_the_replacement_character() {
        let mut body = EventBody::new("statement");
        body.field(
            "params",
            &[Some("a\0b"), Some("tab\there"), Some("\\u0000")],
        )
        .unwrap();
        let text = String::from_utf8(body.0.clone()).unwrap();
        assert!(!text.contains(r#""a\u0000b""#), "{text}");
        assert!(text.contains(r#""a\ufffdb""#), "{text}");
        assert!(text.contains(r#""tab\there""#), "{text}");
        assert!(text.contains(r#""\\u0000""#), "{text}");
        let parsed: serde_json::Value = serde_json::from_str(&format!("{{{text}}}")).unwrap();
        assert_eq!(parsed["params"][0], "a\u{fffd}b");
        assert_eq!(parsed["params"][2], "\\u0000");
    }

    #[test]
    fn time_is_formatted_as_rfc3339_utc_with_microseconds() {
        let before_1970 = |duration| SystemTime::UNIX_EPOCH - duration;
        for (time, text) in [
            (at(0, 0), "1970-01-01T00:00:00.000000Z"),
            (at(951_782_400, 0), "2000-02-29T00:00:00.000000Z"),
            (at(4_102_444_799, 0), "2099-12-31T23:59:59.000000Z"),
            (at(1_700_000_000, 123_456), "2023-11-14T22:13:20.123456Z"),
            (at(1_709_164_800, 999_999), "2024-02-29T00:00:00.999999Z"),
            (at(951_868_800, 0), "2000-03-01T00:00:00.000000Z"),
            (
                before_1970(Duration::from_micros(500_000)),
                "1969-12-31T23:59:59.500000Z",
            ),
            // Years beyond four digits, either way, take the general
            // formatter.
            (at(253_402_300_800, 1), "10000-01-01T00:00:00.000001Z"),
            (
                before_1970(Duration::from_secs(62_167_219_201)),
                "-001-12-31T23:59:59.000000Z",
            ),
        ] {
            assert_eq!(format_utc_micros(time), text);
        }
    }

    #[test]
    fn decimals_are_padded_to_their_width_and_never_cut() {
        let decimal = |value, width| {
            let mut out = b"x".to_vec();
            push_decimal(&mut out, value, width);
            String::from_utf8(out).expect("ascii")
        };
        assert_eq!(decimal(0, 1), "x0");
        assert_eq!(decimal(7, 2), "x07");
        assert_eq!(decimal(41_208, 1), "x41208");
        assert_eq!(decimal(41_208, 20), "x00000000000000041208");
        assert_eq!(decimal(u64::MAX, 4), "x18446744073709551615");
        assert_eq!(decimal(123_456, 6), "x123456");
    }

    /// Walks day by day across 800 years around the epoch: every date
    /// follows the previous one by the calendar's rules.
    #[test]
    fn civil_dates_follow_each_other_by_the_gregorian_rules() {
        let leap = |year: i64| year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        let month_len = |year: i64, month: u32| match month {
            2 if leap(year) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let mut previous = civil_from_days(-146_097 - 1);
        for days in -146_097..146_097 {
            let (year, month, day) = civil_from_days(days);
            let (p_year, p_month, p_day) = previous;
            let expected = if p_day < month_len(p_year, p_month) {
                (p_year, p_month, p_day + 1)
            } else if p_month < 12 {
                (p_year, p_month + 1, 1)
            } else {
                (p_year + 1, 1, 1)
            };
            assert_eq!((year, month, day), expected, "day {days}");
            previous = (year, month, day);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
    }

    #[test]
    fn sealed_line_has_the_documented_layout_and_opens() {
        let key = key();
        let (line, link) = seal(
            &key,
            &Link::GENESIS,
            "gw-1",
            at(1_700_000_000, 123_456),
            &event(json!({"event": "statement", "session": "s1"})),
        )
        .expect("a valid event seals");
        let text = std::str::from_utf8(&line).expect("lines are UTF-8");
        let zeros = "0".repeat(64);
        let expected_start = format!(
            "{{\"seq\":1,\"time\":\"2023-11-14T22:13:20.123456Z\",\"instance\":\"gw-1\",\
             \"prev\":\"{zeros}\",\"event\":\"statement\",\"session\":\"s1\",\"mac\":\""
        );
        assert!(text.starts_with(&expected_start), "{text}");
        assert!(text.ends_with("\"}\n"));
        assert_eq!(link.seq, 1);
        assert_eq!(
            &text[text.len() - 67..text.len() - 3],
            encode_hex(&link.mac)
        );

        // The MAC covers the line without its mac field, brace put back.
        let unsealed = &line[..line.len() - 1 - MAC_SUFFIX_LEN];
        assert_eq!(body_mac(&key, unsealed), link.mac);

        let opened = open_line(&key, &line).expect("a sealed line opens");
        assert_eq!(opened.seq, 1);
        assert_eq!(opened.prev, GENESIS_MAC);
        assert_eq!(opened.link(), link);
        assert_eq!(opened.fields["session"], "s1");
        assert_eq!(opened.fields["instance"], "gw-1");
    }

    #[test]
    fn each_record_names_the_mac_of_the_one_before() {
        let key = key();
        let (_, first) = seal(
            &key,
            &Link::GENESIS,
            "gw",
            at(1, 0),
            &event(json!({"event": "a"})),
        )
        .expect("seals");
        let (line, second) =
            seal(&key, &first, "gw", at(2, 0), &event(json!({"event": "b"}))).expect("seals");
        let opened = open_line(&key, &line).expect("opens");
        assert_eq!(opened.prev, first.mac);
        assert_eq!(second.seq, 2);
    }

    #[test]
    fn strings_with_newlines_and_quotes_stay_on_one_line() {
        let key = key();
        let (line, _) = seal(
            &key,
            &Link::GENESIS,
            "gw\n\"1\"",
            at(0, 0),
            &event(json!({"event": "statement", "text": "select 1;\nselect '\"}'"})),
        )
        .expect("seals");
        assert_eq!(line.iter().filter(|&&byte| byte == b'\n').count(), 1);
        let opened = open_line(&key, &line).expect("opens");
        assert_eq!(opened.fields["text"], "select 1;\nselect '\"}'");
    }

    #[test]
    fn reserved_or_missing_fields_are_refused() {
        for name in RESERVED_FIELDS {
            let mut fields = event(json!({"event": "x"}));
            fields.insert(name.to_string(), json!(1));
            let refused = seal(&key(), &Link::GENESIS, "gw", at(0, 0), &fields);
            assert!(
                matches!(refused, Err(SealError::ReservedField(ref field)) if field == name),
                "{name}: {refused:?}"
            );
        }
        let refused = seal(&key(), &Link::GENESIS, "gw", at(0, 0), &Map::new());
        assert!(matches!(refused, Err(SealError::NoEventName)));
    }

    #[test]
    fn open_line_tells_torn_malformed_and_changed_lines_apart() {
        let key = key();
        let (line, link) = seal(
            &key,
            &Link {
                seq: 41,
                mac: [1; 32],
            },
            "gw",
            at(0, 0),
            &event(json!({"event": "statement", "text": "select 1"})),
        )
        .expect("seals");

        assert_eq!(
            open_line(&key, &line[..line.len() - 1]),
            Err(LineError::Torn)
        );
        assert_eq!(open_line(&key, &line[..20]), Err(LineError::Torn));
        assert!(matches!(
            open_line(&key, b"hello\n"),
            Err(LineError::Malformed(_))
        ));
        let mut no_mac = line[..line.len() - 1 - MAC_SUFFIX_LEN].to_vec();
        no_mac.extend_from_slice(b"}\n");
        assert!(matches!(
            open_line(&key, &no_mac),
            Err(LineError::Malformed(_))
        ));

        let text = String::from_utf8(line.clone()).expect("UTF-8");
        let changed = text.replace("select 1", "select 2");
        assert_eq!(
            open_line(&key, changed.as_bytes()),
            Err(LineError::BadMac {
                claimed_seq: Some(42),
                claimed_mac: link.mac
            })
        );
        let other_key = ChainKey::from_bytes(&[8u8; 32]).expect("long enough");
        assert!(matches!(
            open_line(&other_key, &line),
            Err(LineError::BadMac { .. })
        ));
    }

    #[test]
    fn head_line_has_fixed_length_and_needs_the_key() {
        let key = key();
        let link = Link {
            seq: 120,
            mac: [0xab; 32],
        };
        let line = head_line(&key, &link);
        assert_eq!(line.len(), HEAD_LEN);
        assert_eq!(head_line(&key, &Link::GENESIS).len(), HEAD_LEN);
        assert_eq!(
            head_line(
                &key,
                &Link {
                    seq: u64::MAX,
                    mac: [0xff; 32]
                }
            )
            .len(),
            HEAD_LEN
        );
        assert!(line.starts_with(b"sluice-audit-head v1 seq=00000000000000000120 mac=abab"));
        assert_eq!(parse_head(&key, &line), Ok(link));

        let other_key = ChainKey::from_bytes(&[8u8; 32]).expect("long enough");
        assert_eq!(parse_head(&other_key, &line), Err(HeadError::BadMac));
        let text = String::from_utf8(line).expect("UTF-8");
        let moved = text.replace("seq=00000000000000000120", "seq=00000000000000000099");
        assert_eq!(parse_head(&key, moved.as_bytes()), Err(HeadError::BadMac));
        assert_eq!(
            parse_head(&key, &text.as_bytes()[..HEAD_LEN - 1]),
            Err(HeadError::Malformed)
        );
        assert_eq!(parse_head(&key, b""), Err(HeadError::Malformed));
    }

    #[test]
    fn a_head_file_is_read_from_its_newest_slot_that_verifies() {
        let key = key();
        let at = |seq: u64, byte: u8| Link {
            seq,
            mac: [byte; 32],
        };
        let file = |first: &[u8], second: &[u8]| [first, second].concat();
        let (older, newer) = (head_line(&key, &at(7, 1)), head_line(&key, &at(8, 2)));
        let read = |bytes: &[u8]| parse_head_file(&key, bytes);
        for bytes in [file(&older, &newer), file(&newer, &older)] {
            assert_eq!(
                read(&bytes),
                Ok(HeadSlots {
                    newest: at(8, 2),
                    other_refused: None
                })
            );
        }
        // One line alone, as versions before the slots wrote it.
        assert_eq!(read(&older).map(|slots| slots.newest), Ok(at(7, 1)));

        // A slot torn (or zeroed, or from another key) beside a whole one.
        let mut torn = newer.clone();
        torn[100..].copy_from_slice(&older[100..]);
        let forged = head_line(&ChainKey::from_bytes(&[8u8; 32]).expect("long"), &at(9, 3));
        for (damaged, why) in [
            (torn.clone(), HeadError::BadMac),
            (vec![0; HEAD_LEN], HeadError::Malformed),
            (forged, HeadError::BadMac),
        ] {
            assert_eq!(
                read(&file(&older, &damaged)),
                Ok(HeadSlots {
                    newest: at(7, 1),
                    other_refused: Some(why.clone())
                })
            );
            assert_eq!(
                read(&file(&damaged, &older)).map(|slots| slots.other_refused),
                Ok(Some(why))
            );
        }
        assert_eq!(read(&file(&torn, &torn)), Err(HeadError::BadMac));
        // Two heads of one seq with different MACs: one was put back.
        let twin = head_line(&key, &at(8, 9));
        assert_eq!(
            read(&file(&newer, &twin)),
            Err(HeadError::SlotsDisagree { seq: 8 })
        );
        assert_eq!(
            read(&file(&newer, &newer)).map(|slots| slots.newest),
            Ok(at(8, 2))
        );
        // Neither one slot nor two.
        assert_eq!(
            read(&[older.clone(), vec![b'x']].concat()),
            Err(HeadError::Malformed)
        );
        assert_eq!(
            read(&file(&older, &newer[..HEAD_LEN - 1])),
            Err(HeadError::Malformed)
        );
    }

    #[test]
    fn generated_key_file_is_private_loads_and_is_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.key");
        let key = generate_key_file(&path).expect("generates");
        let mode = fs::metadata(&path).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = fs::read_to_string(&path).expect("readable");
        assert_eq!(text.len(), 65);
        let loaded = ChainKey::load(&path).expect("loads");
        let genesis = Link::GENESIS;
        assert_eq!(head_line(&loaded, &genesis), head_line(&key, &genesis));
        assert!(matches!(
            generate_key_file(&path),
            Err(KeyError::Io { ref source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists
        ));
        assert_eq!(fs::read_to_string(&path).expect("readable"), text);
    }

    #[test]
    fn key_file_others_may_read_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.key");
        generate_key_file(&path).expect("generates");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
        let refused = ChainKey::load(&path);
        assert!(
            matches!(refused, Err(KeyError::Exposed { mode: 0o640, .. })),
            "{refused:?}"
        );
        let message = refused.map(|_| ()).unwrap_err().to_string();
        assert!(message.contains("chmod 600"), "{message}");
    }

    /// Root reads a key another user owns (an operator's `sudo sluice
    /// audit verify` of the service user's trail). Runs only as root.
    #[test]
    fn root_reads_a_key_another_user_owns() {
        // SAFETY: geteuid cannot fail and touches no memory.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: not running as root");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.key");
        generate_key_file(&path).expect("generates");
        std::os::unix::fs::chown(&path, Some(65534), Some(65534)).expect("chown");
        assert!(ChainKey::load(&path).is_ok());
    }

    /// A pipe or a directory in the key's place is refused at once: a pipe
    /// would have hung the start on an open that never returns.
    #[test]
    fn a_key_file_that_is_no_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pipe = dir.path().join("audit.key");
        let made = std::process::Command::new("mkfifo")
            .arg(&pipe)
            .status()
            .expect("mkfifo runs");
        assert!(made.success());
        fs::set_permissions(&pipe, fs::Permissions::from_mode(0o600)).expect("chmod");
        for path in [&pipe, &dir.path().to_path_buf()] {
            let refused = ChainKey::load(path);
            assert!(
                matches!(
                    refused,
                    Err(KeyError::Untrusted {
                        reason: "not a regular file",
                        ..
                    })
                ),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn short_or_garbled_keys_are_refused() {
        assert!(matches!(
            ChainKey::from_bytes(&[1u8; 31]),
            Err(KeyError::TooShort { len: 31 })
        ));
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, contents) in [
            ("short", "ab".repeat(31) + "\n"),
            ("long", "ab".repeat(33)),
            ("not-hex", "zz".repeat(32)),
            ("two-newlines", "ab".repeat(32) + "\n\n"),
        ] {
            let path = dir.path().join(name);
            fs::write(&path, contents).expect("write");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
            assert!(
                matches!(ChainKey::load(&path), Err(KeyError::Format { .. })),
                "{name}"
            );
        }
        let path = dir.path().join("upper");
        fs::write(&path, "AB".repeat(32)).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).expect("chmod");
        let loaded = ChainKey::load(&path).expect("uppercase hex loads");
        let same = ChainKey::from_bytes(&[0xab; 32]).expect("long enough");
        let genesis = Link::GENESIS;
        assert_eq!(head_line(&loaded, &genesis), head_line(&same, &genesis));
    }

    #[test]
    fn debug_never_shows_the_key() {
        let key = ChainKey::from_bytes(&[0x5a; 32]).expect("long enough");
        let shown = format!("{key:?} {key:#?}");
        assert!(!shown.contains("5a") && !shown.contains("90"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn peek_seq_reads_the_claimed_seq_of_any_line() {
        assert_eq!(peek_seq(b"{\"seq\":1234,\"time\""), Some(1234));
        assert_eq!(peek_seq(b"{\"seq\":12"), Some(12));
        assert_eq!(peek_seq(b"{\"seq\":"), None);
        assert_eq!(peek_seq(b"garbage"), None);
    }
}
