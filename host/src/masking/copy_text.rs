//! Text and csv COPY TO STDOUT data, masked as result rows.
//!
//! In text and csv format PostgreSQL sends one row per CopyData message,
//! its fields written as the columns' text output, separated by the
//! delimiter and ended by a newline, with escapes (text) or quotes (csv)
//! around the bytes that would otherwise be read as syntax. Once sluice
//! knows the columns' types (it describes the COPY's source before
//! forwarding it), [`read`] turns a run of such messages into DataRow
//! messages holding each field's logical value — exactly what the column's
//! text output was — so [`super::rows::ResultMask`] masks them like any
//! other text result. [`rebuild`] then writes the messages again: a row the
//! plugins left alone is copied as it came, and in a row they changed only
//! the changed fields are encoded afresh, so every other byte (a field
//! quoted without needing it, an escape PostgreSQL chose) reaches the
//! client as the server wrote it.
//!
//! The reader follows PostgreSQL 15's COPY FROM (`CopyReadLineText`,
//! `CopyReadAttributesText`, `CopyReadAttributesCSV`) and the encoder its
//! COPY TO (`CopyAttributeOutText`, `CopyAttributeOutCSV`). Anything COPY
//! FROM would refuse or read two ways — a row not ending in exactly one
//! newline, a raw carriage return, an end-of-data marker, a field count
//! other than the columns', an unterminated quote — is refused rather than
//! guessed at: the caller then masks the message as free text instead.
//!
//! Values are bytes, never assumed to be UTF-8. The reader does assume
//! that every ASCII byte is a character of its own, which holds for UTF-8
//! and every server encoding but not for client encodings such as SJIS or
//! BIG5 whose multibyte characters can contain a backslash or quote byte;
//! sluice must not read COPY data by field in such a client encoding.

use std::ops::Range;

use bytes::{BufMut, BytesMut};

use super::rows::patch_length;
use crate::protocol::frame::HEADER_LEN;
use crate::protocol::tag;

/// How a COPY's text or csv data is written (the COPY statement's options).
///
/// The reader needs them to find where fields end and which are NULL, and
/// the encoder to write a changed value the way the server would have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextFormat {
    /// csv format (`FORMAT csv`) rather than text.
    pub csv: bool,
    /// The byte between fields: a tab in text format, a comma in csv.
    pub delimiter: u8,
    /// How NULL is written: `\N` in text format, nothing in csv.
    pub null: Vec<u8>,
    /// The byte that opens and closes a quoted csv field; unused in text.
    pub quote: u8,
    /// The byte that, inside a quoted csv field, makes the next quote or
    /// escape byte data; unused in text. By default the quote itself, so a
    /// doubled quote is one quote.
    pub escape: u8,
}

impl TextFormat {
    /// Text format with PostgreSQL's defaults: tab-separated, `\N` for NULL.
    pub fn text() -> Self {
        TextFormat {
            csv: false,
            delimiter: b'\t',
            null: b"\\N".to_vec(),
            quote: b'"',
            escape: b'"',
        }
    }

    /// csv format with PostgreSQL's defaults: comma-separated, NULL as
    /// nothing, `"` to quote and to escape a quote.
    pub fn csv() -> Self {
        TextFormat {
            csv: true,
            delimiter: b',',
            null: Vec::new(),
            quote: b'"',
            escape: b'"',
        }
    }

    /// The format a COPY statement's options give its text or csv data;
    /// `None` when sluice cannot be certain how its fields read — binary
    /// data, an option it does not interpret, data converted to another
    /// encoding than the session's UTF-8, a delimiter, quote or escape
    /// that is not one byte (PostgreSQL refuses those anyway).
    pub fn of(format: &crate::analysis::DataFormat) -> Option<TextFormat> {
        use crate::analysis::FormatKind;
        if format.unrecognised {
            return None;
        }
        if let Some(encoding) = &format.encoding {
            // PostgreSQL ignores case and punctuation in encoding names.
            let name: String = encoding
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .map(|c| c.to_ascii_lowercase())
                .collect();
            if name != "utf8" && name != "unicode" {
                return None;
            }
        }
        let one_byte =
            |option: &Option<String>, default: u8| match option.as_deref().map(str::as_bytes) {
                None => Some(default),
                Some(&[byte]) if byte.is_ascii() => Some(byte),
                Some(_) => None,
            };
        let mut text = match format.kind {
            FormatKind::Binary => return None,
            FormatKind::Text => TextFormat::text(),
            FormatKind::Csv => TextFormat::csv(),
        };
        text.delimiter = one_byte(&format.delimiter, text.delimiter)?;
        text.quote = one_byte(&format.quote, text.quote)?;
        // The escape defaults to the quote, whichever quote was given.
        text.escape = one_byte(&format.escape, text.quote)?;
        if let Some(null) = &format.null {
            text.null = null.as_bytes().to_vec();
        }
        Some(text)
    }

    /// Refuses options PostgreSQL refuses (and a quote or escape byte that
    /// is a line ending), under which a row could not be split into fields
    /// one way only.
    fn check(&self) -> Result<(), CopyTextError> {
        let refused = CopyTextError("COPY options that do not split rows unambiguously");
        let delimiter = self.delimiter;
        if matches!(delimiter, 0 | b'\n' | b'\r')
            || self.null.contains(&b'\n')
            || self.null.contains(&b'\r')
            || self.null.contains(&delimiter)
        {
            return Err(refused);
        }
        if !self.csv {
            // PostgreSQL refuses these delimiters in text format: they
            // would collide with escapes.
            if delimiter == b'\\'
                || delimiter == b'.'
                || delimiter.is_ascii_lowercase()
                || delimiter.is_ascii_digit()
            {
                return Err(refused);
            }
            return Ok(());
        }
        if matches!(self.quote, 0 | b'\n' | b'\r')
            || matches!(self.escape, 0 | b'\n' | b'\r')
            || self.quote == delimiter
            || self.null.contains(&self.quote)
        {
            return Err(refused);
        }
        Ok(())
    }
}

/// Why COPY data could not be read by field (or the masked rows put back
/// into it). The caller masks the data another way; nothing is guessed.
#[derive(Debug, thiserror::Error)]
#[error("COPY data sluice cannot read by field: {0}")]
pub struct CopyTextError(&'static str);

const NO_NEWLINE: CopyTextError = CopyTextError("a row does not end with a newline");
const AFTER_END: CopyTextError = CopyTextError("bytes follow a row's newline");
const RAW_RETURN: CopyTextError = CopyTextError("a raw carriage return");
const END_MARKER: CopyTextError = CopyTextError("an end-of-data marker");
const FIELD_COUNT: CopyTextError = CopyTextError("a row's field count is not the column count");
const UNTERMINATED: CopyTextError = CopyTextError("an unterminated quoted field");
const CUT_SHORT: CopyTextError = CopyTextError("a CopyData message is cut short");
const MISMATCH: CopyTextError = CopyTextError("the run does not match its fields");
const FEWER_ROWS: CopyTextError = CopyTextError("fewer masked rows than messages");
const MORE_ROWS: CopyTextError = CopyTextError("more masked rows than messages");
const MALFORMED_ROW: CopyTextError = CopyTextError("a malformed masked row");
const TOO_LONG: CopyTextError = CopyTextError("a message longer than the protocol allows");

/// Where one CopyData message of a run lies, and its row.
#[derive(Debug)]
struct Message {
    /// The whole message (header included) in the run.
    whole: Range<usize>,
    /// Its DataRow in [`Fields::rows`].
    row: Range<usize>,
    /// Its fields in [`Fields::fields`].
    fields: Range<usize>,
}

/// Where one field lies in the run, as the server wrote it.
#[derive(Debug)]
struct Raw {
    /// The field's bytes, without the delimiter or newline after it.
    range: Range<usize>,
    /// Some part of it was quoted (csv). A changed value stays quoted, as
    /// the server may have quoted it for FORCE QUOTE, which sluice cannot
    /// see.
    quoted: bool,
}

/// A run of CopyData rows taken apart: their fields as DataRow messages
/// back to back (`rows`), and where each field lies in the original
/// message so rows can be rebuilt.
#[derive(Debug, Default)]
pub struct Fields {
    /// One DataRow per message, in order, each field its logical value
    /// (escapes and quotes removed) or NULL: what the masking plugins see.
    pub rows: Vec<u8>,
    /// Fields per row.
    columns: usize,
    messages: Vec<Message>,
    fields: Vec<Raw>,
}

/// Reads a run of whole CopyData messages back to back (`run`), each one
/// row of `columns` fields in `format`.
///
/// Fails on the first message that is not exactly one such row, on
/// options PostgreSQL would refuse, and on more columns than a DataRow can
/// count.
pub fn read(run: &[u8], format: &TextFormat, columns: usize) -> Result<Fields, CopyTextError> {
    format.check()?;
    let count = i16::try_from(columns)
        .map_err(|_| CopyTextError("more columns than a DataRow can hold"))?;
    let syntax = Syntax::new(format);

    // A first pass over the headers sizes the vectors once. Every body it
    // lets through has at least a byte per field, so the sizes are bounded
    // by the run's length whatever the server announces.
    let mut messages = 0usize;
    let mut at = 0;
    while at < run.len() {
        let body = body_of(run, at)?;
        if body.len() < columns.max(1) {
            return Err(FIELD_COUNT);
        }
        at = body.end;
        messages += 1;
    }
    // A DataRow adds a field count to the header and turns each one-byte
    // delimiter (or the newline) into a four-byte length; values only
    // shrink when their escapes and quotes go.
    let growth = messages.saturating_mul(columns.saturating_mul(3).saturating_add(2));
    let mut fields = Fields {
        rows: Vec::with_capacity(run.len().saturating_add(growth)),
        columns,
        messages: Vec::with_capacity(messages),
        fields: Vec::with_capacity(messages.saturating_mul(columns)),
    };

    let mut at = 0;
    while at < run.len() {
        let body_range = body_of(run, at)?;
        let body = run.get(body_range.clone()).ok_or(CUT_SHORT)?;
        let row_start = fields.rows.len();
        let fields_start = fields.fields.len();
        fields.rows.put_u8(tag::DATA_ROW);
        fields.rows.put_i32(0);
        fields.rows.put_i16(count);
        if columns == 0 {
            // A row of no columns is an empty line.
            if body != b"\n" {
                return Err(FIELD_COUNT);
            }
        } else if format.csv {
            read_csv_row(body, body_range.start, &syntax, columns, &mut fields)?;
        } else {
            read_text_row(body, body_range.start, &syntax, columns, &mut fields)?;
        }
        let length = i32::try_from(fields.rows.len() - row_start - 1).map_err(|_| TOO_LONG)?;
        fields.rows[row_start + 1..row_start + HEADER_LEN].copy_from_slice(&length.to_be_bytes());
        fields.messages.push(Message {
            whole: at..body_range.end,
            row: row_start..fields.rows.len(),
            fields: fields_start..fields.fields.len(),
        });
        at = body_range.end;
    }
    Ok(fields)
}

/// Writes the run again into `out` from `masked_rows` (the DataRows of
/// `fields.rows` after masking, same count and order): a message whose row
/// is byte-identical to its DataRow in `fields.rows` is copied from `run`
/// unchanged; otherwise the message is rebuilt with each unchanged field's
/// original raw bytes and each changed field's new value encoded for
/// `format`; the message length is recomputed.
///
/// `run` and `format` must be those `fields` was read from. On an error
/// `out` is left as it was.
pub fn rebuild(
    run: &[u8],
    fields: &Fields,
    masked_rows: &[u8],
    format: &TextFormat,
    out: &mut BytesMut,
) -> Result<(), CopyTextError> {
    let mark = out.len();
    let result = rebuild_into(run, fields, masked_rows, format, out);
    if result.is_err() {
        out.truncate(mark);
    }
    result
}

fn rebuild_into(
    run: &[u8],
    fields: &Fields,
    masked_rows: &[u8],
    format: &TextFormat,
    out: &mut BytesMut,
) -> Result<(), CopyTextError> {
    format.check()?;
    let syntax = Syntax::new(format);
    let single = fields.columns == 1;
    let mut masked = masked_rows;
    for message in &fields.messages {
        let (row, rest) = split_row(masked)?;
        masked = rest;
        let original = fields.rows.get(message.row.clone()).ok_or(MISMATCH)?;
        if row == original {
            out.extend_from_slice(run.get(message.whole.clone()).ok_or(MISMATCH)?);
            continue;
        }
        let raws = fields.fields.get(message.fields.clone()).ok_or(MISMATCH)?;
        let mut new = Values::new(row)?;
        let mut old = Values::new(original)?;
        if new.count != raws.len() || old.count != raws.len() {
            return Err(MALFORMED_ROW);
        }
        let start = out.len();
        out.put_u8(tag::COPY_DATA);
        out.put_i32(0);
        for (index, raw) in raws.iter().enumerate() {
            if index > 0 {
                out.put_u8(format.delimiter);
            }
            let value = new.next()?;
            if value == old.next()? {
                out.extend_from_slice(run.get(raw.range.clone()).ok_or(MISMATCH)?);
            } else {
                encode(value, raw.quoted, single, &syntax, out);
            }
        }
        new.finish()?;
        out.put_u8(b'\n');
        if out.len() - start - 1 > i32::MAX as usize {
            return Err(TOO_LONG);
        }
        patch_length(out, start);
    }
    if !masked.is_empty() {
        return Err(MORE_ROWS);
    }
    Ok(())
}

/// Which bytes end a stretch of plain value bytes, per format, looked up
/// by byte value so the scans copy whole stretches at a time.
struct Syntax<'a> {
    format: &'a TextFormat,
    /// Outside quotes: the delimiter, the line endings, and the backslash
    /// (text) or the quote (csv).
    stop: [bool; 256],
    /// Inside csv quotes: the quote and the escape.
    quoted_stop: [bool; 256],
    /// Text: bytes the server writes as an escape. csv: bytes that make
    /// the server quote a value.
    special: [bool; 256],
}

impl<'a> Syntax<'a> {
    fn new(format: &'a TextFormat) -> Self {
        let mut syntax = Syntax {
            format,
            stop: [false; 256],
            quoted_stop: [false; 256],
            special: [false; 256],
        };
        let opener = if format.csv { format.quote } else { b'\\' };
        for byte in [format.delimiter, b'\n', b'\r', opener] {
            syntax.stop[usize::from(byte)] = true;
        }
        if format.csv {
            for byte in [format.quote, format.escape] {
                syntax.quoted_stop[usize::from(byte)] = true;
            }
            for byte in [format.delimiter, format.quote, b'\n', b'\r'] {
                syntax.special[usize::from(byte)] = true;
            }
        } else {
            for byte in [
                b'\\',
                format.delimiter,
                0x08,
                0x0c,
                b'\n',
                b'\r',
                b'\t',
                0x0b,
            ] {
                syntax.special[usize::from(byte)] = true;
            }
        }
        syntax
    }

    /// Where the next byte of `bytes` in `table` is.
    fn find(table: &[bool; 256], bytes: &[u8]) -> Option<usize> {
        bytes.iter().position(|&byte| table[usize::from(byte)])
    }
}

/// The body of the CopyData message at `at` of `run`, checked to lie
/// wholly within the run.
fn body_of(run: &[u8], at: usize) -> Result<Range<usize>, CopyTextError> {
    let Some(&[kind, a, b, c, d]) = run.get(at..).and_then(|rest| rest.first_chunk::<5>()) else {
        return Err(CUT_SHORT);
    };
    if kind != tag::COPY_DATA {
        return Err(CopyTextError("a message other than CopyData"));
    }
    let length = usize::try_from(i32::from_be_bytes([a, b, c, d]))
        .ok()
        .filter(|&length| length >= 4)
        .ok_or(CopyTextError(
            "a CopyData message with an impossible length",
        ))?;
    let end = at
        .checked_add(1 + length)
        .filter(|&end| end <= run.len())
        .ok_or(CUT_SHORT)?;
    Ok(at + HEADER_LEN..end)
}

/// Starts a value in the DataRow being written: a placeholder length.
fn open_value(rows: &mut Vec<u8>) -> usize {
    let at = rows.len();
    rows.put_i32(0);
    at
}

/// Ends the value opened at `length_at`: NULL (its bytes dropped) or its
/// length.
fn close_value(rows: &mut Vec<u8>, length_at: usize, null: bool) -> Result<(), CopyTextError> {
    if null {
        rows.truncate(length_at);
        rows.put_i32(-1);
        return Ok(());
    }
    let length = i32::try_from(rows.len() - length_at - 4).map_err(|_| TOO_LONG)?;
    rows[length_at..length_at + 4].copy_from_slice(&length.to_be_bytes());
    Ok(())
}

/// Where a field lies in a row being read.
struct Field {
    /// The row's first field in [`Fields::fields`].
    first: usize,
    /// Its raw bytes in the row's body.
    raw: Range<usize>,
    quoted: bool,
}

/// Ends a field: records where it lies in the run (the row's `body` is at
/// `offset`) and says whether the row goes on after it.
fn end_field(
    body: &[u8],
    offset: usize,
    field: Field,
    columns: usize,
    fields: &mut Fields,
) -> Result<bool, CopyTextError> {
    let at = field.raw.end;
    fields.fields.push(Raw {
        range: offset + field.raw.start..offset + at,
        quoted: field.quoted,
    });
    let found = fields.fields.len() - field.first;
    if body.get(at) == Some(&b'\n') {
        if at + 1 != body.len() {
            return Err(AFTER_END);
        }
        if found != columns {
            return Err(FIELD_COUNT);
        }
        return Ok(false);
    }
    if found == columns {
        return Err(FIELD_COUNT);
    }
    Ok(true)
}

/// Reads one text-format row (`body`, at `offset` in the run) into
/// `fields`: as `CopyReadAttributesText` splits and de-escapes it.
fn read_text_row(
    body: &[u8],
    offset: usize,
    syntax: &Syntax,
    columns: usize,
    fields: &mut Fields,
) -> Result<(), CopyTextError> {
    let first = fields.fields.len();
    let mut at = 0;
    loop {
        let start = at;
        let length_at = open_value(&mut fields.rows);
        loop {
            let rest = body.get(at..).unwrap_or_default();
            let Some(plain) = Syntax::find(&syntax.stop, rest) else {
                return Err(NO_NEWLINE);
            };
            fields.rows.extend_from_slice(&rest[..plain]);
            at += plain;
            match rest[plain] {
                b'\\' => at = unescape(body, at + 1, &mut fields.rows)?,
                b'\r' => return Err(RAW_RETURN),
                // The newline or the delimiter.
                _ => break,
            }
        }
        // NULL is recognised on the raw bytes, before de-escaping.
        let null = body.get(start..at) == Some(&syntax.format.null[..]);
        close_value(&mut fields.rows, length_at, null)?;
        let field = Field {
            first,
            raw: start..at,
            quoted: false,
        };
        if !end_field(body, offset, field, columns, fields)? {
            return Ok(());
        }
        at += 1;
    }
}

/// De-escapes the escape whose backslash ends just before `at` of `body`
/// into `rows`, returning where the bytes after it start.
fn unescape(body: &[u8], at: usize, rows: &mut Vec<u8>) -> Result<usize, CopyTextError> {
    let Some(&escaped) = body.get(at) else {
        return Err(NO_NEWLINE);
    };
    let mut next = at + 1;
    let byte = match escaped {
        b'b' => 0x08,
        b'f' => 0x0c,
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'v' => 0x0b,
        b'0'..=b'7' => {
            let mut value = u32::from(escaped - b'0');
            for _ in 0..2 {
                match body.get(next) {
                    Some(&digit @ b'0'..=b'7') => {
                        value = value * 8 + u32::from(digit - b'0');
                        next += 1;
                    }
                    _ => break,
                }
            }
            (value & 0xff) as u8
        }
        b'x' => match body.get(next).and_then(|&digit| hex(digit)) {
            Some(high) => {
                next += 1;
                match body.get(next).and_then(|&digit| hex(digit)) {
                    Some(low) => {
                        next += 1;
                        high * 16 + low
                    }
                    None => high,
                }
            }
            None => b'x',
        },
        // COPY FROM reads `\.` as the end of the data wherever it stands
        // (or refuses the line); the server never writes it in a row.
        b'.' => return Err(END_MARKER),
        other => other,
    };
    rows.push(byte);
    Ok(next)
}

fn hex(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Reads one csv row (`body`, at `offset` in the run) into `fields`: as
/// `CopyReadAttributesCSV` splits and unquotes it, quoted and unquoted
/// parts of a field joined.
fn read_csv_row(
    body: &[u8],
    offset: usize,
    syntax: &Syntax,
    columns: usize,
    fields: &mut Fields,
) -> Result<(), CopyTextError> {
    // Alone on a line, `\.` is COPY FROM's end-of-data marker.
    if body == b"\\.\n" {
        return Err(END_MARKER);
    }
    let format = syntax.format;
    let first = fields.fields.len();
    let mut at = 0;
    loop {
        let start = at;
        let length_at = open_value(&mut fields.rows);
        let mut quoted = false;
        loop {
            let rest = body.get(at..).unwrap_or_default();
            let Some(plain) = Syntax::find(&syntax.stop, rest) else {
                return Err(NO_NEWLINE);
            };
            fields.rows.extend_from_slice(&rest[..plain]);
            at += plain;
            match rest[plain] {
                byte if byte == format.quote => {
                    quoted = true;
                    at = read_quoted(body, at + 1, syntax, &mut fields.rows)?;
                }
                b'\r' => return Err(RAW_RETURN),
                // The newline or the delimiter.
                _ => break,
            }
        }
        // A quoted field, even an empty one, is never NULL.
        let null = !quoted && body.get(start..at) == Some(&format.null[..]);
        close_value(&mut fields.rows, length_at, null)?;
        let field = Field {
            first,
            raw: start..at,
            quoted,
        };
        if !end_field(body, offset, field, columns, fields)? {
            return Ok(());
        }
        at += 1;
    }
}

/// Reads the quoted part of a csv field that starts at `at` of `body`
/// (just after its opening quote) into `rows`, returning where the bytes
/// after its closing quote start.
fn read_quoted(
    body: &[u8],
    mut at: usize,
    syntax: &Syntax,
    rows: &mut Vec<u8>,
) -> Result<usize, CopyTextError> {
    let format = syntax.format;
    loop {
        let rest = body.get(at..).unwrap_or_default();
        let Some(plain) = Syntax::find(&syntax.quoted_stop, rest) else {
            return Err(UNTERMINATED);
        };
        rows.extend_from_slice(&rest[..plain]);
        let byte = rest[plain];
        at += plain + 1;
        // The escape is tested first: it is usually the quote itself.
        if byte == format.escape
            && let Some(&next) = body.get(at)
            && (next == format.escape || next == format.quote)
        {
            rows.push(next);
            at += 1;
            continue;
        }
        if byte == format.quote {
            return Ok(at);
        }
        rows.push(byte);
    }
}

/// Splits the DataRow at the start of `masked` from the rows after it.
fn split_row(masked: &[u8]) -> Result<(&[u8], &[u8]), CopyTextError> {
    let Some(&[kind, a, b, c, d]) = masked.first_chunk::<5>() else {
        return Err(if masked.is_empty() {
            FEWER_ROWS
        } else {
            MALFORMED_ROW
        });
    };
    if kind != tag::DATA_ROW {
        return Err(MALFORMED_ROW);
    }
    let total = usize::try_from(i32::from_be_bytes([a, b, c, d]))
        .ok()
        .filter(|&length| length >= 4)
        .and_then(|length| length.checked_add(1))
        .filter(|&total| total <= masked.len())
        .ok_or(MALFORMED_ROW)?;
    Ok(masked.split_at(total))
}

/// The values of a DataRow, one at a time, each checked to lie within it.
struct Values<'a> {
    rest: &'a [u8],
    count: usize,
}

impl<'a> Values<'a> {
    /// `row` is a whole DataRow, as [`split_row`] gives it.
    fn new(row: &'a [u8]) -> Result<Self, CopyTextError> {
        let body = row.get(HEADER_LEN..).unwrap_or_default();
        let Some((&count, rest)) = body.split_first_chunk::<2>() else {
            return Err(MALFORMED_ROW);
        };
        let count = usize::try_from(i16::from_be_bytes(count)).map_err(|_| MALFORMED_ROW)?;
        Ok(Values { rest, count })
    }

    /// The next value; `None` is NULL.
    fn next(&mut self) -> Result<Option<&'a [u8]>, CopyTextError> {
        let Some((&length, rest)) = self.rest.split_first_chunk::<4>() else {
            return Err(MALFORMED_ROW);
        };
        let length = i32::from_be_bytes(length);
        if length == -1 {
            self.rest = rest;
            return Ok(None);
        }
        let length = usize::try_from(length).map_err(|_| MALFORMED_ROW)?;
        let Some((value, rest)) = rest.split_at_checked(length) else {
            return Err(MALFORMED_ROW);
        };
        self.rest = rest;
        Ok(Some(value))
    }

    /// Checks that no bytes follow the last value.
    fn finish(self) -> Result<(), CopyTextError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(MALFORMED_ROW)
        }
    }
}

/// Writes `value` into `out` as the server writes a field: NULL as the
/// null string, a text value escaped as `CopyAttributeOutText` does, a csv
/// value quoted when `quoted` (it was before) or when
/// `CopyAttributeOutCSV` would quote it. `single` says the row has one
/// column, where a csv `\.` is quoted lest it read as the end of the data.
fn encode(value: Option<&[u8]>, quoted: bool, single: bool, syntax: &Syntax, out: &mut BytesMut) {
    let format = syntax.format;
    let Some(value) = value else {
        out.extend_from_slice(&format.null);
        return;
    };
    if !format.csv {
        let mut rest = value;
        while let Some(plain) = Syntax::find(&syntax.special, rest) {
            out.extend_from_slice(&rest[..plain]);
            let escaped = match rest[plain] {
                0x08 => b'b',
                0x0c => b'f',
                b'\n' => b'n',
                b'\r' => b'r',
                b'\t' => b't',
                0x0b => b'v',
                // The backslash, or the delimiter.
                other => other,
            };
            out.put_u8(b'\\');
            out.put_u8(escaped);
            rest = &rest[plain + 1..];
        }
        out.extend_from_slice(rest);
        return;
    }
    let quote = quoted
        || value == &format.null[..]
        || (single && value == b"\\.")
        || Syntax::find(&syntax.special, value).is_some();
    if !quote {
        out.extend_from_slice(value);
        return;
    }
    out.put_u8(format.quote);
    let mut rest = value;
    while let Some(plain) = Syntax::find(&syntax.quoted_stop, rest) {
        out.extend_from_slice(&rest[..plain]);
        out.put_u8(format.escape);
        out.put_u8(rest[plain]);
        rest = &rest[plain + 1..];
    }
    out.extend_from_slice(rest);
    out.put_u8(format.quote);
}

#[cfg(test)]
mod tests {
    use super::*;

    type Row = Vec<Option<Vec<u8>>>;

    fn copy_data(body: &[u8]) -> Vec<u8> {
        let mut message = vec![tag::COPY_DATA];
        message.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        message.extend_from_slice(body);
        message
    }

    fn run_of(bodies: &[&[u8]]) -> Vec<u8> {
        bodies.iter().flat_map(|body| copy_data(body)).collect()
    }

    fn data_row(values: &[Option<Vec<u8>>]) -> Vec<u8> {
        let mut body = (values.len() as i16).to_be_bytes().to_vec();
        for value in values {
            match value {
                None => body.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(value) => {
                    body.extend_from_slice(&(value.len() as i32).to_be_bytes());
                    body.extend_from_slice(value);
                }
            }
        }
        let mut row = vec![tag::DATA_ROW];
        row.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        row.extend_from_slice(&body);
        row
    }

    fn rows_of(rows: &[Row]) -> Vec<u8> {
        rows.iter().flat_map(|row| data_row(row)).collect()
    }

    /// Parses DataRows back into values.
    fn values_of(mut rows: &[u8]) -> Vec<Row> {
        let mut all = Vec::new();
        while !rows.is_empty() {
            let (row, rest) = split_row(rows).unwrap();
            let mut values = Values::new(row).unwrap();
            all.push(
                (0..values.count)
                    .map(|_| values.next().unwrap().map(<[u8]>::to_vec))
                    .collect(),
            );
            values.finish().unwrap();
            rows = rest;
        }
        all
    }

    fn v(value: &[u8]) -> Option<Vec<u8>> {
        Some(value.to_vec())
    }

    fn rebuilt(run: &[u8], fields: &Fields, masked: &[u8], format: &TextFormat) -> Vec<u8> {
        let mut out = BytesMut::new();
        rebuild(run, fields, masked, format, &mut out).unwrap();
        out.to_vec()
    }

    /// Reads `bodies`, checks the values, and checks that rebuilding with
    /// nothing masked gives the run back.
    fn check_read(format: &TextFormat, columns: usize, bodies: &[&[u8]], expected: &[Row]) {
        let run = run_of(bodies);
        let fields = read(&run, format, columns).unwrap();
        assert_eq!(values_of(&fields.rows), expected);
        assert_eq!(fields.rows, rows_of(expected));
        assert_eq!(rebuilt(&run, &fields, &fields.rows, format), run);
    }

    /// Masks column `column` of every row with `mask`, rebuilds, and
    /// checks the result against `expected` bodies and a re-read.
    fn check_mask(
        format: &TextFormat,
        columns: usize,
        bodies: &[&[u8]],
        column: usize,
        masks: &[&[u8]],
        expected: &[&[u8]],
    ) {
        let run = run_of(bodies);
        let fields = read(&run, format, columns).unwrap();
        let mut rows = values_of(&fields.rows);
        for (row, mask) in rows.iter_mut().zip(masks) {
            row[column] = v(mask);
        }
        let masked = rows_of(&rows);
        let out = rebuilt(&run, &fields, &masked, format);
        assert_eq!(out, run_of(expected), "{:?}", String::from_utf8_lossy(&out));
        let again = read(&out, format, columns).unwrap();
        assert_eq!(values_of(&again.rows), rows);
    }

    #[test]
    fn text_fields_are_de_escaped() {
        check_read(
            &TextFormat::text(),
            3,
            &[
                b"1\tab\\tc\\nd\\\\e\t\\N\n",
                b"2\t\\101\\x42\\7\\x7g\\q\\0\\0601\t\\b\\f\\r\\v\n",
                b"3\t\t\n",
            ],
            &[
                vec![v(b"1"), v(b"ab\tc\nd\\e"), None],
                vec![v(b"2"), v(b"AB\x07\x07gq\x0001"), v(b"\x08\x0c\r\x0b")],
                vec![v(b"3"), v(b""), v(b"")],
            ],
        );
    }

    #[test]
    fn text_with_a_custom_delimiter_and_null() {
        let format = TextFormat {
            delimiter: b'|',
            null: b"NULL".to_vec(),
            ..TextFormat::text()
        };
        // NULL is decided on the raw bytes: `\NULL` is the text "NULL", and
        // `\N` is just "N" when the null string is something else.
        check_read(
            &format,
            5,
            &[b"a\\|b|NULL|\\N|\\NULL|\n", b"\t||||x\n"],
            &[
                vec![v(b"a|b"), None, v(b"N"), v(b"NULL"), v(b"")],
                vec![v(b"\t"), v(b""), v(b""), v(b""), v(b"x")],
            ],
        );
        check_mask(
            &format,
            2,
            &[b"4111111111111111|x\\|y\n"],
            0,
            &[b"41|11\\"],
            &[b"41\\|11\\\\|x\\|y\n"],
        );
    }

    #[test]
    fn csv_fields_are_unquoted() {
        check_read(
            &TextFormat::csv(),
            6,
            &[
                b"1,\"a,b\",\"say \"\"hi\"\"\",\"line1\nline2\",,\"\"\n",
                b"a\"b,c\"d,x\"\"y,\"\",\"\r\",\\.,\"\\N\"\n",
            ],
            &[
                vec![
                    v(b"1"),
                    v(b"a,b"),
                    v(b"say \"hi\""),
                    v(b"line1\nline2"),
                    None,
                    v(b""),
                ],
                vec![
                    v(b"ab,cd"),
                    v(b"xy"),
                    v(b""),
                    v(b"\r"),
                    v(b"\\."),
                    v(b"\\N"),
                ],
            ],
        );
    }

    #[test]
    fn csv_with_a_custom_quote_and_escape() {
        let format = TextFormat {
            delimiter: b';',
            null: b"NULL".to_vec(),
            quote: b'\'',
            escape: b'\\',
            ..TextFormat::csv()
        };
        check_read(
            &format,
            5,
            &[
                b"'it\\'s';'a\\\\b';'c\\d';\"x\";NULL\n",
                b"'NULL';'';;'';''''\n",
            ],
            &[
                vec![v(b"it's"), v(b"a\\b"), v(b"c\\d"), v(b"\"x\""), None],
                // With a separate escape a doubled quote closes and reopens.
                vec![v(b"NULL"), v(b""), v(b""), v(b""), v(b"")],
            ],
        );
        check_mask(
            &format,
            2,
            &[b"4111111111111111;x\n", b"'4111111111111111';x\n"],
            0,
            &[b"a'b\\c", b"411111******1111"],
            &[b"'a\\'b\\\\c';x\n", b"'411111******1111';x\n"],
        );
    }

    #[test]
    fn unicode_and_other_bytes_pass_as_they_are() {
        check_read(
            &TextFormat::text(),
            2,
            &[b"\xc3\xb1\xe2\x82\xac\t\xff\xfe\\\\\x80\n"],
            &[vec![v("ñ€".as_bytes()), v(b"\xff\xfe\\\x80")]],
        );
        check_read(
            &TextFormat::csv(),
            2,
            &[b"\"\xff,\xfe\",\xe2\x82\xac\n"],
            &[vec![v(b"\xff,\xfe"), v("€".as_bytes())]],
        );
    }

    #[test]
    fn a_row_of_no_columns_is_an_empty_line() {
        check_read(&TextFormat::text(), 0, &[b"\n", b"\n"], &[vec![], vec![]]);
        assert!(read(&run_of(&[b"x\n"]), &TextFormat::text(), 0).is_err());
    }

    #[test]
    fn masked_text_values_are_written_as_the_server_would() {
        check_mask(
            &TextFormat::text(),
            3,
            &[
                b"42\t4111111111111111\tx\\ty\n",
                b"43\t5500000000000004\t\\N\n",
                b"44\t\\x41\\101\t\\\\\n",
            ],
            1,
            &[b"411111******1111", b"a\tb\\c\nd|e\r\x08\x0c\x0b", b"AA"],
            &[
                b"42\t411111******1111\tx\\ty\n",
                b"43\ta\\tb\\\\c\\nd|e\\r\\b\\f\\v\t\\N\n",
                // Unchanged: the server's own escapes stay.
                b"44\t\\x41\\101\t\\\\\n",
            ],
        );
    }

    #[test]
    fn masked_csv_values_are_written_as_the_server_would() {
        check_mask(
            &TextFormat::csv(),
            3,
            &[
                b"1,\"4111111111111111\",\"a,b\"\n",
                b"2,4111111111111111,\"x\"\n",
                b"3,4111111111111111,\n",
                b"4,4111111111111111,\n",
                b"5,4111111111111111,\n",
                b"6,4111111111111111,\n",
            ],
            1,
            &[
                b"411111******1111",
                b"411111******1111",
                b"41,11",
                b"4\"1",
                b"a\nb\rc",
                b"",
            ],
            &[
                // Quoted before (FORCE QUOTE), quoted still.
                b"1,\"411111******1111\",\"a,b\"\n",
                b"2,411111******1111,\"x\"\n",
                b"3,\"41,11\",\n",
                b"4,\"4\"\"1\",\n",
                b"5,\"a\nb\rc\",\n",
                // Equal to the null string: quoted so it is not NULL.
                b"6,\"\",\n",
            ],
        );
        // `\.` alone on a line is quoted; among other fields it is not.
        check_mask(
            &TextFormat::csv(),
            1,
            &[b"x\n"],
            0,
            &[b"\\."],
            &[b"\"\\.\"\n"],
        );
        check_mask(
            &TextFormat::csv(),
            2,
            &[b"x,y\n"],
            0,
            &[b"\\."],
            &[b"\\.,y\n"],
        );
    }

    #[test]
    fn a_value_masked_to_null_is_the_null_string() {
        for (format, body, expected) in [
            (TextFormat::text(), &b"a\tb\n"[..], &b"\\N\tb\n"[..]),
            (TextFormat::csv(), b"\"a\",b\n", b",b\n"),
        ] {
            let run = run_of(&[body]);
            let fields = read(&run, &format, 2).unwrap();
            let masked = rows_of(&[vec![None, v(b"b")]]);
            assert_eq!(
                rebuilt(&run, &fields, &masked, &format),
                run_of(&[expected])
            );
        }
    }

    #[test]
    fn malformed_rows_are_refused() {
        let text = TextFormat::text();
        let csv = TextFormat::csv();
        for (format, columns, body) in [
            (&text, 2, &b"a\tb"[..]),
            (&text, 2, b"a\tb\nc\td\n"),
            (&text, 2, b"a\n"),
            (&text, 2, b"a\tb\tc\n"),
            (&text, 2, b"a\tb\r\n"),
            (&text, 2, b"a\r\tb\n"),
            (&text, 1, b"\\.\n"),
            (&text, 2, b"a\\.b\tc\n"),
            (&text, 2, b"a\tb\\\n"),
            (&text, 1, b"a\\"),
            (&csv, 2, b"\"a,b\n"),
            (&csv, 2, b"a,\"b\n"),
            (&csv, 2, b"a,b\r\n"),
            (&csv, 2, b"a,b"),
            (&csv, 2, b"a,b\n\n"),
            (&csv, 2, b"a,b,c\n"),
            (&csv, 1, b"\\.\n"),
        ] {
            // After a good row, so the error is the bad row's.
            let good: &[u8] = match (format.csv, columns) {
                (_, 1) => b"x\n",
                (true, _) => b"x,y\n",
                (false, _) => b"x\ty\n",
            };
            assert!(read(&run_of(&[good]), format, columns).is_ok());
            let run = run_of(&[good, body]);
            let result = read(&run, format, columns);
            assert!(
                result.is_err(),
                "{:?} read as {result:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn malformed_messages_are_refused() {
        let format = TextFormat::text();
        let run = run_of(&[b"a\tb\n"]);
        assert!(read(&run[..run.len() - 1], &format, 2).is_err());
        assert!(read(&run[..3], &format, 2).is_err());
        let mut other = run.clone();
        other[0] = b'D';
        assert!(read(&other, &format, 2).is_err());
        for length in [3i32, -1, i32::MAX] {
            let mut bad = run.clone();
            bad[1..5].copy_from_slice(&length.to_be_bytes());
            assert!(read(&bad, &format, 2).is_err());
        }
        assert!(read(&run, &format, 40_000).is_err());
        assert!(read(b"", &format, 40_000).is_err());
        for bad_format in [
            TextFormat {
                delimiter: b'\\',
                ..TextFormat::text()
            },
            TextFormat {
                delimiter: b'n',
                ..TextFormat::text()
            },
            TextFormat {
                null: b"a\tb".to_vec(),
                ..TextFormat::text()
            },
            TextFormat {
                quote: b',',
                ..TextFormat::csv()
            },
            TextFormat {
                null: b"\"".to_vec(),
                ..TextFormat::csv()
            },
            TextFormat {
                escape: b'\n',
                ..TextFormat::csv()
            },
        ] {
            assert!(read(&run, &bad_format, 2).is_err());
        }
        assert!(read(b"", &format, 2).unwrap().rows.is_empty());
    }

    #[test]
    fn malformed_masked_rows_are_refused() {
        let format = TextFormat::text();
        let run = run_of(&[b"a\tb\n", b"c\td\n"]);
        let fields = read(&run, &format, 2).unwrap();
        let changed = rows_of(&[vec![v(b"x"), v(b"b")], vec![v(b"y"), v(b"d")]]);
        let first = split_row(&changed).unwrap().0.len();
        let mut wrong_tag = changed.clone();
        wrong_tag[0] = b'T';
        let mut past_end = changed.clone();
        past_end[1..5].copy_from_slice(&1000i32.to_be_bytes());
        let mut too_short = changed.clone();
        too_short[1..5].copy_from_slice(&2i32.to_be_bytes());
        let mut field_past_end = changed.clone();
        field_past_end[7..11].copy_from_slice(&100i32.to_be_bytes());
        let mut negative = changed.clone();
        negative[7..11].copy_from_slice(&(-2i32).to_be_bytes());
        let three = [
            data_row(&[v(b"x"), v(b"b"), v(b"z")]),
            changed[first..].to_vec(),
        ]
        .concat();
        let mut trailing = data_row(&[v(b"x"), v(b"b")]);
        trailing.push(0);
        let lengthened = trailing.len() as i32 - 1;
        trailing[1..5].copy_from_slice(&lengthened.to_be_bytes());
        let trailing = [trailing, changed[first..].to_vec()].concat();
        let extra = [changed.clone(), data_row(&[v(b"e"), v(b"f")])].concat();
        for masked in [
            &changed[..first],
            &changed[..changed.len() - 1],
            &wrong_tag,
            &past_end,
            &too_short,
            &field_past_end,
            &negative,
            &three,
            &trailing,
            &extra,
            &[][..],
        ] {
            let mut out = BytesMut::from(&b"before"[..]);
            assert!(rebuild(&run, &fields, masked, &format, &mut out).is_err());
            assert_eq!(&out[..], b"before");
        }
        // The run it was read from is needed.
        let mut out = BytesMut::new();
        assert!(rebuild(&run[..4], &fields, &fields.rows, &format, &mut out).is_err());
        assert!(rebuild(&run, &fields, &changed, &format, &mut out).is_ok());
    }

    /// xorshift64: enough randomness for a test, no dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn random_value(rng: &mut Rng, format: &TextFormat) -> Vec<u8> {
        let mut specials = vec![
            format.delimiter,
            format.quote,
            format.escape,
            b'\\',
            b'\n',
            b'\r',
            b'\t',
            0x08,
            0x0c,
            0x0b,
            b'.',
            b'N',
            b'x',
            b'7',
            b'A',
            0xff,
            0xc3,
            0,
        ];
        specials.extend_from_slice(&format.null);
        let value = match rng.below(16) {
            0 => format.null.clone(),
            1 => b"\\.".to_vec(),
            _ => (0..rng.below(9))
                .map(|_| {
                    if rng.below(2) == 0 {
                        specials[rng.below(specials.len())]
                    } else {
                        rng.next() as u8
                    }
                })
                .collect(),
        };
        // In text format a value written like the null string reads as
        // NULL (PostgreSQL's own ambiguity): leave those out.
        if !format.csv && value == format.null {
            return b"z".to_vec();
        }
        value
    }

    #[test]
    fn random_values_come_back() {
        let mut formats = Vec::new();
        for (delimiter, null) in [
            (b'\t', &b"\\N"[..]),
            (b'|', b"NULL"),
            (b',', b""),
            (0x01, b"\\N"),
            (b'A', b"nil"),
            (0x08, b"-"),
        ] {
            formats.push(TextFormat {
                delimiter,
                null: null.to_vec(),
                ..TextFormat::text()
            });
        }
        for (delimiter, null, quote, escape) in [
            (b',', &b""[..], b'"', b'"'),
            (b';', b"NULL", b'\'', b'\\'),
            (b'\t', b"\\N", b'"', b'\\'),
            (b'|', b"", b'"', b'|'),
        ] {
            formats.push(TextFormat {
                csv: true,
                delimiter,
                null: null.to_vec(),
                quote,
                escape,
            });
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for format in &formats {
            let syntax = Syntax::new(format);
            for _ in 0..300 {
                let columns = 1 + rng.below(4);
                let single = columns == 1;
                let count = 1 + rng.below(4);
                let mut rows: Vec<Row> = Vec::new();
                let mut encoded: Vec<Vec<Vec<u8>>> = Vec::new();
                let mut run = Vec::new();
                for _ in 0..count {
                    let mut row = Vec::new();
                    let mut raws = Vec::new();
                    for _ in 0..columns {
                        let value = if rng.below(8) == 0 {
                            None
                        } else {
                            Some(random_value(&mut rng, format))
                        };
                        let mut raw = BytesMut::new();
                        let force = format.csv && rng.below(4) == 0;
                        encode(value.as_deref(), force, single, &syntax, &mut raw);
                        row.push(value);
                        raws.push(raw.to_vec());
                    }
                    let mut body = raws.join(&[format.delimiter][..]);
                    body.push(b'\n');
                    run.extend(copy_data(&body));
                    rows.push(row);
                    encoded.push(raws);
                }
                let fields = read(&run, format, columns)
                    .unwrap_or_else(|e| panic!("{format:?} {run:?}: {e}"));
                assert_eq!(values_of(&fields.rows), rows, "{format:?} {run:?}");
                assert_eq!(rebuilt(&run, &fields, &fields.rows, format), run);

                // Change some values; the others keep their raw bytes.
                let mut masked = rows.clone();
                let mut expected = Vec::new();
                for (row, raws) in masked.iter_mut().zip(&encoded) {
                    let mut parts = Vec::new();
                    for (value, raw) in row.iter_mut().zip(raws) {
                        let new = Some(random_value(&mut rng, format));
                        if rng.below(2) == 0 && new != *value {
                            *value = new;
                            let was_quoted = format.csv && raw.first() == Some(&format.quote);
                            let mut part = BytesMut::new();
                            encode(value.as_deref(), was_quoted, single, &syntax, &mut part);
                            parts.push(part.to_vec());
                        } else {
                            parts.push(raw.clone());
                        }
                    }
                    let mut body = parts.join(&[format.delimiter][..]);
                    body.push(b'\n');
                    expected.extend(copy_data(&body));
                }
                let out = rebuilt(&run, &fields, &rows_of(&masked), format);
                assert_eq!(out, expected, "{format:?}");
                let again = read(&out, format, columns).unwrap();
                assert_eq!(values_of(&again.rows), masked, "{format:?}");
            }
        }
    }

    #[test]
    fn the_statement_options_give_the_format_or_nothing_certain() {
        use crate::analysis::{DataFormat, FormatKind};
        let of = |format: DataFormat| TextFormat::of(&format);
        assert_eq!(of(DataFormat::default()), Some(TextFormat::text()));
        let csv = DataFormat {
            kind: FormatKind::Csv,
            ..DataFormat::default()
        };
        assert_eq!(of(csv.clone()), Some(TextFormat::csv()));
        // A quote given alone is the escape too.
        assert_eq!(
            of(DataFormat {
                delimiter: Some(";".into()),
                null: Some("none".into()),
                quote: Some("'".into()),
                encoding: Some("UTF-8".into()),
                ..csv.clone()
            }),
            Some(TextFormat {
                csv: true,
                delimiter: b';',
                null: b"none".to_vec(),
                quote: b'\'',
                escape: b'\'',
            })
        );
        for uncertain in [
            DataFormat {
                kind: FormatKind::Binary,
                ..DataFormat::default()
            },
            DataFormat {
                unrecognised: true,
                ..DataFormat::default()
            },
            DataFormat {
                encoding: Some("LATIN1".into()),
                ..DataFormat::default()
            },
            DataFormat {
                delimiter: Some("||".into()),
                ..DataFormat::default()
            },
            DataFormat {
                quote: Some("é".into()),
                ..csv.clone()
            },
        ] {
            assert_eq!(of(uncertain.clone()), None, "{uncertain:?}");
        }
    }
}
