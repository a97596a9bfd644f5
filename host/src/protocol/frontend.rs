//! Messages from the client, after startup.
//!
//! [`check`] validates a message's shape without allocating: every string
//! NUL-terminated and UTF-8, every count and length inside the message,
//! nothing left over. The statement loop runs it on every message, so a
//! malformed one is refused before anything is forwarded. [`decode`] then
//! turns a checked message into `pgwire`'s type for the hooks that read it;
//! the check comes first because several of pgwire's body decoders index
//! without bounds checks.

use pgwire::messages::copy::{CopyData, CopyFail};
use pgwire::messages::extendedquery::{Bind, Close, Describe, Execute, Parse};
use pgwire::messages::simplequery::Query;

use super::frame::{Frame, take_cstr};
use super::tag;

/// A client message that is not what its type says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("invalid {0} message")]
    Malformed(&'static str),
    #[error("invalid frontend message type {0}")]
    UnknownType(u8),
}

/// A client message, decoded.
#[derive(Debug)]
pub enum Message {
    Query(Query),
    Parse(Parse),
    Bind(Bind),
    Describe(Describe),
    Execute(Execute),
    Close(Close),
    Sync,
    Flush,
    CopyData(CopyData),
    CopyDone,
    CopyFail(CopyFail),
    /// The fastpath: sluice refuses it, so its body is never decoded.
    FunctionCall,
    Terminate,
}

/// Checks the shape of a client message of any type sluice accepts.
pub fn check(frame: &Frame) -> Result<(), Error> {
    let body = frame.body();
    let ok = match frame.tag() {
        tag::QUERY => check_single_cstr(body),
        tag::PARSE => check_parse(body),
        tag::BIND => check_bind(body),
        tag::DESCRIBE | tag::CLOSE => check_target(body),
        tag::EXECUTE => check_execute(body),
        tag::SYNC | tag::FLUSH | tag::COPY_DONE | tag::TERMINATE => body.is_empty(),
        tag::COPY_FAIL => check_single_cstr(body),
        tag::COPY_DATA | tag::FUNCTION_CALL => true,
        other => return Err(Error::UnknownType(other)),
    };
    if ok {
        Ok(())
    } else {
        Err(Error::Malformed(name(frame.tag())))
    }
}

/// Checks and decodes a client message.
pub fn decode(frame: &Frame) -> Result<Message, Error> {
    check(frame)?;
    let malformed = || Error::Malformed(name(frame.tag()));
    Ok(match frame.tag() {
        tag::QUERY => Message::Query(frame.decode().ok_or_else(malformed)?),
        tag::PARSE => Message::Parse(frame.decode().ok_or_else(malformed)?),
        tag::BIND => Message::Bind(frame.decode().ok_or_else(malformed)?),
        tag::DESCRIBE => Message::Describe(frame.decode().ok_or_else(malformed)?),
        tag::EXECUTE => Message::Execute(frame.decode().ok_or_else(malformed)?),
        tag::CLOSE => Message::Close(frame.decode().ok_or_else(malformed)?),
        tag::COPY_DATA => Message::CopyData(frame.decode().ok_or_else(malformed)?),
        tag::COPY_FAIL => Message::CopyFail(frame.decode().ok_or_else(malformed)?),
        tag::SYNC => Message::Sync,
        tag::FLUSH => Message::Flush,
        tag::COPY_DONE => Message::CopyDone,
        tag::FUNCTION_CALL => Message::FunctionCall,
        tag::TERMINATE => Message::Terminate,
        other => return Err(Error::UnknownType(other)),
    })
}

/// The statement text of a checked Query message, without copying.
pub fn query_text(frame: &Frame) -> Option<&str> {
    let mut body = frame.body();
    take_cstr(&mut body)
}

/// Parse: the statement's name and text.
pub fn parse_statement(frame: &Frame) -> Option<(&str, &str)> {
    let mut body = frame.body();
    let name = take_cstr(&mut body)?;
    let text = take_cstr(&mut body)?;
    Some((name, text))
}

/// Bind: the name of the portal it makes.
pub fn bind_portal(frame: &Frame) -> Option<&str> {
    let mut body = frame.body();
    take_cstr(&mut body)
}

/// Bind: the name of the statement it binds.
pub fn bind_statement(frame: &Frame) -> Option<&str> {
    let mut body = frame.body();
    take_cstr(&mut body)?;
    take_cstr(&mut body)
}

/// Bind: its parameters in text form, as policies see them: `None` for
/// NULL, for a value sent in binary format and for text that is not UTF-8.
pub fn bind_parameters(frame: &Frame) -> Option<Vec<Option<String>>> {
    let values = bind_values(frame)?;
    Some(
        values
            .into_iter()
            .map(|value| match value {
                Some((0, bytes)) => std::str::from_utf8(bytes).ok().map(str::to_owned),
                _ => None,
            })
            .collect(),
    )
}

/// Bind: its parameters as the audit trail keeps them and an approval
/// ticket shows them (before masking); `None` for NULL. Text-format values
/// as sent. A value in binary format is bytes the server reads by the
/// parameter's type, which sluice does not know: `00000042` sent in binary
/// for an int8 is 3472328296227681330, not 42. So a binary value is never
/// shown as if it were text: it is labelled, with what its bytes read as —
/// printable UTF-8 as text (a driver sending a string in binary), two, four
/// or eight bytes as a big-endian integer of at most twelve digits (a longer
/// one only said to be so) — and withheld when neither: bytes sluice cannot
/// read could hide a card number in any encoding.
pub fn bind_parameters_for_audit(frame: &Frame) -> Option<Vec<Option<String>>> {
    let values = bind_values(frame)?;
    Some(
        values
            .into_iter()
            .map(|value| {
                let (format, bytes) = value?;
                let text = std::str::from_utf8(bytes).ok();
                if format == 0 {
                    return Some(match text {
                        Some(text) => text.to_owned(),
                        None => format!("[value withheld: {} bytes, not UTF-8]", bytes.len()),
                    });
                }
                Some(binary_parameter(bytes, text))
            })
            .collect(),
    )
}

/// A binary parameter as [`bind_parameters_for_audit`] shows it.
fn binary_parameter(bytes: &[u8], text: Option<&str>) -> String {
    let as_text = text
        .filter(|text| !text.chars().any(char::is_control))
        .map(|text| format!("as text: {text:?}"));
    let as_integer = match *bytes {
        [a, b] => Some(i64::from(i16::from_be_bytes([a, b]))),
        [a, b, c, d] => Some(i64::from(i32::from_be_bytes([a, b, c, d]))),
        [a, b, c, d, e, f, g, h] => Some(i64::from_be_bytes([a, b, c, d, e, f, g, h])),
        _ => None,
    }
    .map(|integer| {
        // Eight bytes read as a number of more than twelve digits may be a
        // card number hidden in another encoding (a float8's bits, packed
        // decimal) that the maskers, which look for the digits themselves,
        // would let through: such a reading is withheld, its size shown.
        let digits = integer.unsigned_abs().checked_ilog10().unwrap_or(0) + 1;
        if digits > 12 {
            format!("as an integer: withheld, {digits} digits")
        } else {
            format!("as an integer: {integer}")
        }
    });
    let readings: Vec<String> = as_text.into_iter().chain(as_integer).collect();
    if readings.is_empty() {
        return format!("[binary value withheld: {} bytes]", bytes.len());
    }
    format!("[binary, {}]", readings.join(", "))
}

/// A bound parameter: its format code (0 text, 1 binary) and bytes; `None`
/// for NULL.
type BoundValue<'f> = Option<(i16, &'f [u8])>;

/// Bind: each parameter's format and bytes.
fn bind_values(frame: &Frame) -> Option<Vec<BoundValue<'_>>> {
    let mut body = frame.body();
    take_cstr(&mut body)?;
    take_cstr(&mut body)?;
    let format_count = usize::try_from(take_i16(&mut body)?).ok()?;
    let mut formats = Vec::with_capacity(format_count.min(body.len() / 2));
    for _ in 0..format_count {
        formats.push(take_i16(&mut body)?);
    }
    let count = usize::try_from(take_i16(&mut body)?).ok()?;
    let mut values = Vec::with_capacity(count.min(body.len() / 4));
    for index in 0..count {
        let len = take_i32(&mut body)?;
        let format = match formats.as_slice() {
            [] => 0,
            [only] => *only,
            all => *all.get(index)?,
        };
        if len < 0 {
            values.push(None);
            continue;
        }
        let len = usize::try_from(len).ok()?;
        let value = body.get(..len)?;
        body = &body[len..];
        values.push(Some((format, value)));
    }
    Some(values)
}

fn take_i16(body: &mut &[u8]) -> Option<i16> {
    let (bytes, rest) = body.split_first_chunk::<2>()?;
    *body = rest;
    Some(i16::from_be_bytes(*bytes))
}

fn take_i32(body: &mut &[u8]) -> Option<i32> {
    let (bytes, rest) = body.split_first_chunk::<4>()?;
    *body = rest;
    Some(i32::from_be_bytes(*bytes))
}

/// Describe (and Close): whether it names a portal (rather than a statement), and the
/// name.
pub fn describe_target(frame: &Frame) -> Option<(bool, &str)> {
    let (&kind, mut rest) = frame.body().split_first()?;
    Some((kind == b'P', take_cstr(&mut rest)?))
}

/// Execute: the portal's name.
pub fn execute_portal(frame: &Frame) -> Option<&str> {
    let mut body = frame.body();
    take_cstr(&mut body)
}

fn name(tag: u8) -> &'static str {
    match tag {
        tag::QUERY => "Query",
        tag::PARSE => "Parse",
        tag::BIND => "Bind",
        tag::DESCRIBE => "Describe",
        tag::CLOSE => "Close",
        tag::EXECUTE => "Execute",
        tag::SYNC => "Sync",
        tag::FLUSH => "Flush",
        tag::COPY_DONE => "CopyDone",
        tag::COPY_FAIL => "CopyFail",
        tag::TERMINATE => "Terminate",
        _ => "frontend",
    }
}

/// Query and CopyFail: one NUL-terminated UTF-8 string filling the body.
fn check_single_cstr(mut body: &[u8]) -> bool {
    take_cstr(&mut body).is_some() && body.is_empty()
}

/// Parse: name, query, then a count of parameter type OIDs and the OIDs.
fn check_parse(mut body: &[u8]) -> bool {
    if take_cstr(&mut body).is_none() || take_cstr(&mut body).is_none() {
        return false;
    }
    let Some(count) = read_i16(&mut body) else {
        return false;
    };
    count >= 0 && body.len() == count as usize * 4
}

/// Bind: portal, statement, parameter formats, parameters, result formats,
/// every length within the message.
fn check_bind(mut body: &[u8]) -> bool {
    fn formats(body: &mut &[u8]) -> Option<()> {
        let count = read_i16(body)?;
        let bytes = usize::try_from(count).ok()? * 2;
        *body = body.get(bytes..)?;
        Some(())
    }
    fn parameters(body: &mut &[u8]) -> Option<()> {
        let count = read_i16(body)?;
        for _ in 0..usize::try_from(count).ok()? {
            let len = read_i32(body)?;
            if len >= 0 {
                *body = body.get(len as usize..)?;
            } else if len != -1 {
                return None;
            }
        }
        Some(())
    }
    take_cstr(&mut body).is_some()
        && take_cstr(&mut body).is_some()
        && formats(&mut body).is_some()
        && parameters(&mut body).is_some()
        && formats(&mut body).is_some()
        && body.is_empty()
}

/// Describe and Close: `S` (statement) or `P` (portal), then a name.
fn check_target(body: &[u8]) -> bool {
    match body.split_first() {
        Some((b'S' | b'P', mut rest)) => take_cstr(&mut rest).is_some() && rest.is_empty(),
        _ => false,
    }
}

/// Execute: portal name, then a row limit.
fn check_execute(mut body: &[u8]) -> bool {
    take_cstr(&mut body).is_some() && body.len() == 4
}

fn read_i16(body: &mut &[u8]) -> Option<i16> {
    let bytes: [u8; 2] = body.get(..2)?.try_into().ok()?;
    *body = &body[2..];
    Some(i16::from_be_bytes(bytes))
}

fn read_i32(body: &mut &[u8]) -> Option<i32> {
    let bytes: [u8; 4] = body.get(..4)?.try_into().ok()?;
    *body = &body[4..];
    Some(i32::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn every_message_round_trips() {
        let query = Query::new("SELECT 1; SELECT 'two'".into());
        let Message::Query(decoded) = decode(&Frame::encode(&query)).unwrap() else {
            panic!()
        };
        assert_eq!(decoded, query);
        assert_eq!(
            query_text(&Frame::encode(&query)),
            Some("SELECT 1; SELECT 'two'")
        );

        let parse = Parse::new(Some("s1".into()), "SELECT $1".into(), vec![23]);
        let Message::Parse(decoded) = decode(&Frame::encode(&parse)).unwrap() else {
            panic!()
        };
        assert_eq!(decoded, parse);

        let bind = Bind::new(
            Some("p".into()),
            Some("s1".into()),
            vec![1],
            vec![Some(Bytes::from_static(b"\0\0\0\x2a")), None],
            vec![0, 1],
        );
        let Message::Bind(decoded) = decode(&Frame::encode(&bind)).unwrap() else {
            panic!()
        };
        assert_eq!(decoded, bind);

        let describe = Describe::new(b'S', Some("s1".into()));
        let Message::Describe(decoded) = decode(&Frame::encode(&describe)).unwrap() else {
            panic!()
        };
        assert_eq!(decoded, describe);

        let execute = Execute::new(Some("p".into()), 100);
        let Message::Execute(decoded) = decode(&Frame::encode(&execute)).unwrap() else {
            panic!()
        };
        assert_eq!(decoded, execute);

        let close = Close::new(b'P', None);
        let Message::Close(decoded) = decode(&Frame::encode(&close)).unwrap() else {
            panic!()
        };
        assert_eq!(decoded, close);

        let data = CopyData::new(Bytes::from_static(b"1\tone\n"));
        let Message::CopyData(decoded) = decode(&Frame::encode(&data)).unwrap() else {
            panic!()
        };
        assert_eq!(decoded, data);

        let fail = CopyFail::new("client gave up".into());
        let Message::CopyFail(decoded) = decode(&Frame::encode(&fail)).unwrap() else {
            panic!()
        };
        assert_eq!(decoded, fail);

        for (tag, expected) in [
            (b'S', "Sync"),
            (b'H', "Flush"),
            (b'c', "CopyDone"),
            (b'X', "Terminate"),
        ] {
            let decoded = decode(&Frame::new(tag, b"")).unwrap();
            assert!(format!("{decoded:?}").starts_with(expected));
        }
    }

    /// A binary parameter is never shown as if it were text: `00000042`
    /// sent in binary for an int8 is a number near 3.5e18, and an approver
    /// reading "42" would approve another statement than the one that runs.
    #[test]
    fn binary_parameters_are_labelled_with_what_their_bytes_read_as() {
        let bind = |values: Vec<Option<&'static [u8]>>, formats: Vec<i16>| {
            let values = values
                .into_iter()
                .map(|value| value.map(Bytes::from_static))
                .collect();
            Frame::encode(&Bind::new(None, None, formats, values, vec![]))
        };
        let shown = |frame: &Frame| bind_parameters_for_audit(frame).expect("a Bind");
        let frame = bind(
            vec![
                Some(b"00000042"),
                Some(b"\0\0\0\x2a"),
                Some(b"hello"),
                Some(b"\x01\x02\x03"),
                Some(b"\xff\xfe"),
                None,
            ],
            vec![1],
        );
        assert_eq!(
            shown(&frame),
            [
                Some(
                    "[binary, as text: \"00000042\", as an integer: withheld, 19 digits]"
                        .to_owned()
                ),
                Some("[binary, as an integer: 42]".to_owned()),
                Some("[binary, as text: \"hello\"]".to_owned()),
                Some("[binary value withheld: 3 bytes]".to_owned()),
                Some("[binary, as an integer: -2]".to_owned()),
                None,
            ]
        );
        // Text format: as sent; bytes that are not UTF-8, withheld.
        let frame = bind(vec![Some(b"00000042"), Some(b"\xff")], vec![0]);
        assert_eq!(
            shown(&frame),
            [
                Some("00000042".to_owned()),
                Some("[value withheld: 1 bytes, not UTF-8]".to_owned())
            ]
        );
        // A number of more than twelve digits may be a card number in
        // another encoding: a float8's bits read back exactly to it.
        let leaked = |value: &[u8]| {
            let frame = Frame::encode(&Bind::new(
                None,
                None,
                vec![1],
                vec![Some(Bytes::copy_from_slice(value))],
                vec![],
            ));
            shown(&frame).remove(0).expect("not NULL")
        };
        let pan = 4_111_111_111_111_111_i64;
        assert_eq!(
            leaked(&(pan as f64).to_be_bytes()),
            "[binary, as an integer: withheld, 19 digits]"
        );
        assert_eq!(
            leaked(&pan.to_be_bytes()),
            "[binary, as an integer: withheld, 16 digits]"
        );
        assert_eq!(
            leaked(&999_999_999_999_i64.to_be_bytes()),
            "[binary, as an integer: 999999999999]"
        );
        assert_eq!(
            leaked(&(-1_000_000_000_000_i64).to_be_bytes()),
            "[binary, as an integer: withheld, 13 digits]"
        );

        // A quote in binary text cannot end the label's quoted text early.
        let frame = bind(vec![Some(b"a\", as an integer: 1")], vec![1]);
        assert_eq!(
            shown(&frame),
            [Some(
                r#"[binary, as text: "a\", as an integer: 1"]"#.to_owned()
            )]
        );
    }

    #[test]
    fn bind_shapes_are_checked() {
        // portal "", statement "s", 1 format (binary), 2 params (NULL, 'ab'), 0 result formats
        let good = b"\0s\0\x00\x01\x00\x01\x00\x02\xff\xff\xff\xff\x00\x00\x00\x02ab\x00\x00";
        assert!(check_bind(good));
        assert!(!check_bind(&good[..good.len() - 1]));
        let mut long = good.to_vec();
        long.push(0);
        assert!(!check_bind(&long));
        // A parameter length running past the end.
        assert!(!check_bind(b"\0\0\x00\x00\x00\x01\x7f\xff\xff\xff\x00\x00"));
        // A negative count.
        assert!(!check_bind(b"\0\0\xff\xff\x00\x00\x00\x00"));
        // A length of -2.
        assert!(!check_bind(b"\0\0\x00\x00\x00\x01\xff\xff\xff\xfe\x00\x00"));
    }

    #[test]
    fn malformed_messages_are_refused_without_panicking() {
        let cases: &[(u8, &[u8])] = &[
            (b'Q', b"SELECT 1"),
            (b'Q', b"SELECT 1\0; DROP TABLE x\0"),
            (b'Q', b"SELECT '\xff'\0"),
            (b'P', b"s1\0SELECT $1\0\x00\x02\x00\x00\x00\x17"),
            (b'P', b"s1\0SELECT $1\0\xff\xff"),
            (b'P', b"s1\0SELECT $1\0"),
            (b'B', b"\0"),
            (b'D', b"X\0"),
            (b'D', b"S"),
            (b'C', b""),
            (b'E', b"\0\0\0"),
            (b'S', b"x"),
            (b'f', b"no terminator"),
        ];
        for (tag, body) in cases {
            let frame = Frame::new(*tag, body);
            assert!(
                matches!(check(&frame), Err(Error::Malformed(_))),
                "{:?} {body:?}",
                *tag as char
            );
            assert!(decode(&frame).is_err());
        }
        assert_eq!(check(&Frame::new(b'!', b"")), Err(Error::UnknownType(b'!')));
        // Every truncation of a valid Bind is refused, none panics.
        let bind = Frame::encode(&Bind::new(
            None,
            Some("s".into()),
            vec![0, 1],
            vec![Some(Bytes::from_static(b"abc")), None],
            vec![1],
        ));
        for cut in 0..bind.body().len() {
            assert!(
                decode(&Frame::new(b'B', &bind.body()[..cut])).is_err(),
                "cut {cut}"
            );
        }
    }
}
