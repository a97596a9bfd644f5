//! Binary COPY TO STDOUT data, masked as result rows.
//!
//! A binary COPY stream is a header (the 11-byte signature, a flags word
//! and a header extension), then one tuple per row — a field count and
//! each field as a length (-1 for NULL) and its bytes, in the column's
//! binary send format — then a trailer (a field count of -1). A tuple is
//! byte for byte the body of a DataRow, so once sluice knows the columns'
//! types (it describes the COPY's source before forwarding it) the rows are
//! masked by [`super::rows::ResultMask`] like any other result.
//!
//! PostgreSQL sends the header inside the first CopyData message and each
//! tuple, and the trailer, whole in a message of its own; sluice masks a
//! run of whole CopyData messages at a time and refuses a tuple split
//! across messages rather than guess at it.

use bytes::{BufMut, BytesMut};

use crate::protocol::{frame, tag};

/// The signature a binary COPY stream starts with.
const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Why binary COPY data could not be read.
#[derive(Debug, thiserror::Error)]
#[error("the server sent malformed binary COPY data: {0}")]
pub struct CopyError(&'static str);

/// How one CopyData message of a run is put back together: its header
/// bytes (in the first message), how many of the run's rows are its
/// tuples, and whether it ends with the trailer.
#[derive(Debug, Default)]
struct Message {
    header: std::ops::Range<usize>,
    tuples: usize,
    trailer: bool,
}

/// A run of CopyData messages taken apart: their tuples as DataRow
/// messages, back to back, and how to rebuild each message.
#[derive(Debug, Default)]
pub struct Tuples {
    pub rows: Vec<u8>,
    messages: Vec<Message>,
}

/// Reads a run of whole CopyData messages (`run`, back to back).
/// `header_seen` says whether the stream's header has gone by; it is set
/// once it has.
pub fn read(run: &[u8], header_seen: &mut bool) -> Result<Tuples, CopyError> {
    let mut tuples = Tuples::default();
    let mut at = 0;
    while at < run.len() {
        let header = match frame::peek_header(&run[at..], usize::MAX) {
            Ok(Some(header))
                if header.tag == tag::COPY_DATA && header.total() <= run.len() - at =>
            {
                header
            }
            _ => return Err(CopyError("a CopyData message is cut short")),
        };
        let body_start = at + frame::HEADER_LEN;
        let body = &run[body_start..at + header.total()];
        let mut message = Message::default();
        let mut rest = body;
        if !*header_seen {
            let length = stream_header_len(rest)?;
            message.header = body_start..body_start + length;
            rest = &rest[length..];
            *header_seen = true;
        }
        while !rest.is_empty() {
            let count = i16::from_be_bytes(take::<2>(&mut rest)?);
            if count == -1 {
                if !rest.is_empty() {
                    return Err(CopyError("bytes follow the trailer"));
                }
                message.trailer = true;
                break;
            }
            let fields = usize::try_from(count).map_err(|_| CopyError("a negative field count"))?;
            let tuple_start = body.len() - rest.len() - 2;
            for _ in 0..fields {
                let length = i32::from_be_bytes(take::<4>(&mut rest)?);
                if length == -1 {
                    continue;
                }
                let length =
                    usize::try_from(length).map_err(|_| CopyError("a negative field length"))?;
                if rest.len() < length {
                    return Err(CopyError("a tuple is split across messages"));
                }
                rest = &rest[length..];
            }
            let tuple = &body[tuple_start..body.len() - rest.len()];
            tuples.rows.put_u8(tag::DATA_ROW);
            tuples.rows.put_i32((4 + tuple.len()) as i32);
            tuples.rows.extend_from_slice(tuple);
            message.tuples += 1;
        }
        tuples.messages.push(message);
        at += header.total();
    }
    Ok(tuples)
}

/// Writes the run again into `out`: each message's header bytes from
/// `run`, its tuples from `masked_rows` (DataRows, in order), its trailer.
/// On an error nothing of the run is left in `out`: a message cut off
/// where rebuilding stopped would garble what the client reads next.
pub fn rebuild(
    run: &[u8],
    tuples: &Tuples,
    masked_rows: &[u8],
    out: &mut BytesMut,
) -> Result<(), CopyError> {
    let mark = out.len();
    let written = rebuild_into(run, tuples, masked_rows, out);
    if written.is_err() {
        out.truncate(mark);
    }
    written
}

/// [`rebuild`]'s writing, which stops at the first message it cannot write.
fn rebuild_into(
    run: &[u8],
    tuples: &Tuples,
    masked_rows: &[u8],
    out: &mut BytesMut,
) -> Result<(), CopyError> {
    let mut rows = masked_rows;
    for message in &tuples.messages {
        let start = out.len();
        out.put_u8(tag::COPY_DATA);
        out.put_i32(0);
        out.extend_from_slice(&run[message.header.clone()]);
        for _ in 0..message.tuples {
            let [_, a, b, c, d, ..] = *rows else {
                return Err(CopyError("fewer masked rows than tuples"));
            };
            let length = usize::try_from(i32::from_be_bytes([a, b, c, d]))
                .map_err(|_| CopyError("a masked row's length"))?;
            let row = rows
                .get(frame::HEADER_LEN..1 + length)
                .ok_or(CopyError("a masked row's length"))?;
            out.extend_from_slice(row);
            rows = &rows[1 + length..];
        }
        if message.trailer {
            out.put_i16(-1);
        }
        // Edits may have made the message longer than its int32 length
        // can say: refused rather than written with a length that wrapped.
        if i32::try_from(out.len() - start - 1).is_err() {
            return Err(CopyError("a masked message is too long"));
        }
        super::rows::patch_length(out, start);
    }
    Ok(())
}

/// The length of the stream header at the start of `body`.
fn stream_header_len(body: &[u8]) -> Result<usize, CopyError> {
    let mut rest = body;
    let signature = take::<11>(&mut rest)?;
    if &signature != SIGNATURE {
        return Err(CopyError(
            "the stream does not start with the binary COPY signature",
        ));
    }
    let _flags = take::<4>(&mut rest)?;
    let extension = u32::from_be_bytes(take::<4>(&mut rest)?) as usize;
    if rest.len() < extension {
        return Err(CopyError("the header extension is cut short"));
    }
    Ok(19 + extension)
}

fn take<const N: usize>(rest: &mut &[u8]) -> Result<[u8; N], CopyError> {
    let Some((head, tail)) = rest.split_first_chunk::<N>() else {
        return Err(CopyError("a message is cut short"));
    };
    *rest = tail;
    Ok(*head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy_data(body: &[u8]) -> Vec<u8> {
        let mut message = vec![tag::COPY_DATA];
        message.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        message.extend_from_slice(body);
        message
    }

    fn tuple(fields: &[Option<&[u8]>]) -> Vec<u8> {
        let mut tuple = (fields.len() as i16).to_be_bytes().to_vec();
        for field in fields {
            match field {
                Some(bytes) => {
                    tuple.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                    tuple.extend_from_slice(bytes);
                }
                None => tuple.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        tuple
    }

    fn header() -> Vec<u8> {
        let mut header = SIGNATURE.to_vec();
        header.extend_from_slice(&[0; 8]);
        header
    }

    /// A stream as PostgreSQL sends it: the header with the first tuple,
    /// a tuple per message, the trailer alone.
    fn stream() -> Vec<u8> {
        let mut first = header();
        first.extend(tuple(&[Some(b"1"), Some(b"4111")]));
        let mut run = copy_data(&first);
        run.extend(copy_data(&tuple(&[Some(b"2"), None])));
        run.extend(copy_data(&(-1i16).to_be_bytes()));
        run
    }

    #[test]
    fn tuples_become_rows_and_come_back_as_they_were() {
        let run = stream();
        let mut header_seen = false;
        let tuples = read(&run, &mut header_seen).unwrap();
        assert!(header_seen);
        assert_eq!(tuples.messages.len(), 3);
        let mut out = BytesMut::new();
        rebuild(&run, &tuples, &tuples.rows, &mut out).unwrap();
        assert_eq!(&out[..], &run[..]);
        // The rows are DataRows with the tuples as bodies.
        let data_row = |tuple: Vec<u8>| {
            let mut row = vec![tag::DATA_ROW];
            row.extend_from_slice(&((tuple.len() + 4) as i32).to_be_bytes());
            row.extend(tuple);
            row
        };
        let mut rows = data_row(tuple(&[Some(b"1"), Some(b"4111")]));
        rows.extend(data_row(tuple(&[Some(b"2"), None])));
        assert_eq!(tuples.rows, rows);
        // Masked rows of other lengths go back into their messages.
        let mut masked = data_row(tuple(&[Some(b"1"), Some(b"****!")]));
        masked.extend(data_row(tuple(&[Some(b"2"), None])));
        let mut out = BytesMut::new();
        rebuild(&run, &tuples, &masked, &mut out).unwrap();
        let mut first = header();
        first.extend(tuple(&[Some(b"1"), Some(b"****!")]));
        let mut expected = copy_data(&first);
        expected.extend(copy_data(&tuple(&[Some(b"2"), None])));
        expected.extend(copy_data(&(-1i16).to_be_bytes()));
        assert_eq!(&out[..], &expected[..]);
    }

    #[test]
    fn a_run_that_cannot_be_rebuilt_leaves_nothing_behind() {
        let run = stream();
        let mut header_seen = false;
        let tuples = read(&run, &mut header_seen).unwrap();
        // What the client was already sent stays; the run adds nothing.
        let mut out = BytesMut::from(&b"sent before"[..]);
        // The first tuple's row only: the second message has none to take.
        let first_row_len = 1 + i32::from_be_bytes(tuples.rows[1..5].try_into().unwrap()) as usize;
        let error = rebuild(&run, &tuples, &tuples.rows[..first_row_len], &mut out).unwrap_err();
        assert_eq!(
            error.to_string(),
            CopyError("fewer masked rows than tuples").to_string()
        );
        assert_eq!(&out[..], b"sent before");
        // A row whose length runs past the masked rows is refused the same way.
        let mut cut = tuples.rows.to_vec();
        cut.truncate(cut.len() - 1);
        let mut out = BytesMut::new();
        assert!(rebuild(&run, &tuples, &cut, &mut out).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn a_later_run_has_no_header() {
        let mut header_seen = true;
        let run = copy_data(&tuple(&[Some(b"x")]));
        let tuples = read(&run, &mut header_seen).unwrap();
        assert_eq!(tuples.messages[0].tuples, 1);
    }

    #[test]
    fn malformed_streams_are_refused() {
        let good = stream();
        let mut bad_signature = good.clone();
        bad_signature[5] = b'X';
        let split = copy_data(
            &[
                header(),
                (1i16).to_be_bytes().to_vec(),
                10i32.to_be_bytes().to_vec(),
                b"abc".to_vec(),
            ]
            .concat(),
        );
        let after_trailer =
            copy_data(&[header(), (-1i16).to_be_bytes().to_vec(), b"x".to_vec()].concat());
        let negative = copy_data(
            &[
                header(),
                (1i16).to_be_bytes().to_vec(),
                (-7i32).to_be_bytes().to_vec(),
            ]
            .concat(),
        );
        for (name, run) in [
            ("signature", bad_signature),
            ("split tuple", split),
            ("after trailer", after_trailer),
            ("negative length", negative),
            ("cut message", good[..good.len() - 1].to_vec()),
        ] {
            assert!(read(&run, &mut false).is_err(), "{name}");
        }
    }
}
