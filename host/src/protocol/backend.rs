//! Messages from the server that sluice reads.
//!
//! Most server messages pass through as the bytes they came in; the ones
//! sluice (or a hook) must read are decoded here with `pgwire`'s types.
//! Message types pgwire does not model (FunctionCallResponse, future
//! additions) are not an error: they are simply never decoded, and stream
//! through untouched.

use pgwire::messages::data::{DataRow, RowDescription};
use pgwire::messages::response::{
    CommandComplete, ErrorResponse, NoticeResponse, NotificationResponse, ReadyForQuery,
};
use pgwire::messages::startup::{BackendKeyData, ParameterStatus};

use super::frame::{Frame, take_cstr};
use super::tag;

/// A server message sluice reads, decoded.
#[derive(Debug)]
pub enum Message {
    RowDescription(RowDescription),
    DataRow(DataRow),
    CommandComplete(CommandComplete),
    ErrorResponse(ErrorResponse),
    NoticeResponse(NoticeResponse),
    NotificationResponse(NotificationResponse),
    ParameterStatus(ParameterStatus),
    BackendKeyData(BackendKeyData),
    ReadyForQuery(ReadyForQuery),
}

/// Decodes a server message sluice reads; `None` for other types and for
/// a message that is not what its type says.
pub fn decode(frame: &Frame) -> Option<Message> {
    let body = frame.body();
    Some(match frame.tag() {
        tag::ROW_DESCRIPTION if row_description_fits(body) => {
            Message::RowDescription(frame.decode()?)
        }
        tag::DATA_ROW if data_row_fits(body) => Message::DataRow(frame.decode()?),
        b'C' => Message::CommandComplete(frame.decode()?),
        tag::ERROR_RESPONSE if fields_fit(body) => Message::ErrorResponse(frame.decode()?),
        tag::NOTICE_RESPONSE if fields_fit(body) => Message::NoticeResponse(frame.decode()?),
        tag::NOTIFICATION_RESPONSE if body.len() >= 6 => {
            Message::NotificationResponse(frame.decode()?)
        }
        tag::PARAMETER_STATUS => Message::ParameterStatus(frame.decode()?),
        tag::BACKEND_KEY_DATA if body.len() == 8 => Message::BackendKeyData(frame.decode()?),
        tag::READY_FOR_QUERY if matches!(body, [b'I' | b'T' | b'E']) => {
            Message::ReadyForQuery(frame.decode()?)
        }
        _ => return None,
    })
}

/// The fields of an ErrorResponse or NoticeResponse, by their type byte.
/// A DataRow body's values (`None` for NULL), or `None` if the body is not
/// a well-formed DataRow.
pub fn data_row_values(body: &[u8]) -> Option<Vec<Option<&[u8]>>> {
    let (count, mut rest) = body.split_first_chunk::<2>()?;
    let count = u16::try_from(i16::from_be_bytes(*count)).ok()?;
    let mut values = Vec::with_capacity(usize::from(count).min(rest.len() / 4 + 1));
    for _ in 0..count {
        let (length, after) = rest.split_first_chunk::<4>()?;
        rest = after;
        let length = i32::from_be_bytes(*length);
        if length < 0 {
            values.push(None);
            continue;
        }
        let length = usize::try_from(length).ok()?;
        values.push(Some(rest.get(..length)?));
        rest = &rest[length..];
    }
    rest.is_empty().then_some(values)
}

pub fn field(fields: &[(u8, String)], kind: u8) -> Option<&str> {
    fields
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, v)| v.as_str())
}

/// ErrorResponse and NoticeResponse: fields of a type byte and a
/// NUL-terminated value, then a final NUL. Values are not required to be
/// UTF-8 (a SQL_ASCII database sends what it has); they are read lossily
/// and forwarded as they came.
fn fields_fit(mut body: &[u8]) -> bool {
    loop {
        match body.split_first() {
            Some((0, rest)) => return rest.is_empty(),
            Some((_, rest)) => match rest.iter().position(|&b| b == 0) {
                Some(end) => body = &rest[end + 1..],
                None => return false,
            },
            None => return false,
        }
    }
}

/// RowDescription: a field count, then per field a name and 18 bytes.
fn row_description_fits(body: &[u8]) -> bool {
    let Some((count, mut rest)) = body.split_first_chunk::<2>() else {
        return false;
    };
    let Ok(count) = usize::try_from(i16::from_be_bytes(*count)) else {
        return false;
    };
    for _ in 0..count {
        if take_cstr(&mut rest).is_none() || rest.len() < 18 {
            return false;
        }
        rest = &rest[18..];
    }
    rest.is_empty()
}

/// DataRow: a column count, then length-prefixed values inside the body.
fn data_row_fits(body: &[u8]) -> bool {
    let Some((count, mut rest)) = body.split_first_chunk::<2>() else {
        return false;
    };
    let Ok(count) = usize::try_from(i16::from_be_bytes(*count)) else {
        return false;
    };
    for _ in 0..count {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return false;
        };
        rest = match i32::from_be_bytes(*len) {
            -1 => tail,
            len if len >= 0 => match tail.get(len as usize..) {
                Some(after) => after,
                None => return false,
            },
            _ => return false,
        };
    }
    rest.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use pgwire::messages::data::FieldDescription;
    use pgwire::messages::response::TransactionStatus;
    use pgwire::messages::startup::SecretKey;

    #[test]
    fn every_message_round_trips() {
        let description = RowDescription::new(vec![
            FieldDescription::new("pan".into(), 16384, 2, 25, -1, -1, 0),
            FieldDescription::new("id".into(), 16384, 1, 20, 8, -1, 1),
        ]);
        let Some(Message::RowDescription(decoded)) = decode(&Frame::encode(&description)) else {
            panic!()
        };
        assert_eq!(decoded, description);

        let mut cells = BytesMut::new();
        cells.extend_from_slice(&4i32.to_be_bytes());
        cells.extend_from_slice(b"4111");
        cells.extend_from_slice(&(-1i32).to_be_bytes());
        let row = DataRow::new(cells, 2);
        let Some(Message::DataRow(decoded)) = decode(&Frame::encode(&row)) else {
            panic!()
        };
        assert_eq!(decoded, row);

        let complete = CommandComplete::new("SELECT 2".into());
        let Some(Message::CommandComplete(decoded)) = decode(&Frame::encode(&complete)) else {
            panic!()
        };
        assert_eq!(decoded, complete);

        let fields = vec![
            (b'S', "ERROR".into()),
            (b'C', "22012".into()),
            (b'M', "division by zero".into()),
        ];
        let error = ErrorResponse::new(fields.clone());
        let Some(Message::ErrorResponse(decoded)) = decode(&Frame::encode(&error)) else {
            panic!()
        };
        assert_eq!(field(&decoded.fields, b'C'), Some("22012"));
        let notice = NoticeResponse::new(fields);
        let Some(Message::NoticeResponse(decoded)) = decode(&Frame::encode(&notice)) else {
            panic!()
        };
        assert_eq!(field(&decoded.fields, b'M'), Some("division by zero"));

        let notification = NotificationResponse::new(7, "orders".into(), "shipped".into());
        let Some(Message::NotificationResponse(decoded)) = decode(&Frame::encode(&notification))
        else {
            panic!()
        };
        assert_eq!(decoded, notification);

        let status = ParameterStatus::new("application_name".into(), "psql".into());
        let Some(Message::ParameterStatus(decoded)) = decode(&Frame::encode(&status)) else {
            panic!()
        };
        assert_eq!(decoded, status);

        let key = BackendKeyData::new(42, SecretKey::I32(-5));
        let Some(Message::BackendKeyData(decoded)) = decode(&Frame::encode(&key)) else {
            panic!()
        };
        assert_eq!(decoded, key);

        let ready = ReadyForQuery::new(TransactionStatus::Error);
        let Some(Message::ReadyForQuery(decoded)) = decode(&Frame::encode(&ready)) else {
            panic!()
        };
        assert_eq!(decoded, ready);
    }

    #[test]
    fn truncated_messages_decode_to_nothing_without_panicking() {
        let description = Frame::encode(&RowDescription::new(vec![FieldDescription::new(
            "pan".into(),
            1,
            1,
            25,
            -1,
            -1,
            0,
        )]));
        let mut cells = BytesMut::new();
        cells.extend_from_slice(&3i32.to_be_bytes());
        cells.extend_from_slice(b"abc");
        let row = Frame::encode(&DataRow::new(cells, 1));
        for frame in [description, row] {
            for cut in 0..frame.body().len() {
                let truncated = Frame::new(frame.tag(), &frame.body()[..cut]);
                assert!(decode(&truncated).is_none(), "cut {cut}");
            }
        }
        // Types sluice does not model are not decoded, and not an error.
        let mut unknown = BytesMut::from(&b"V\0\0\0\x08\0\0\0\0"[..]);
        let frame = Frame::split_from(&mut unknown, 1024).unwrap().unwrap();
        assert!(decode(&frame).is_none());
    }
}
