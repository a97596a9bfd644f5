//! Result rows: every DataRow goes through the masking plugins before the
//! client sees it.
//!
//! Rows are masked a run at a time: the selected values of every whole
//! DataRow that one read brought become one value batch, one call per
//! plugin. A value reaches the plugins as text whatever its format (a
//! [`Codec`] per column turns binary values into text pieces and back),
//! and only rows with edits are rebuilt: the rest pass as the bytes they
//! came in.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use pgwire::messages::data::RowDescription;

use super::batch::{self, Batch};
use super::codec::{Codec, CodecError, UserTypes};
use crate::plugin::bindings::types::{Column, ValueFormat};
use crate::plugin::{Fault, PluginSet, Selection, SessionInfo};
use crate::protocol::tag;

/// The type OID sluice gives columns of rows it has no description of:
/// none, so no codec reads them and a plugin that wants them fails the
/// statement rather than see bytes it cannot interpret.
const NO_TYPE: u32 = 0;

/// What the masking plugins want of one result set.
#[derive(Debug)]
pub struct ResultMask {
    pub columns: Vec<Column>,
    pub selection: Selection,
    /// Per column: how its values become text for the plugins and back.
    codecs: Vec<Codec>,
    /// Per column: its values go into batches (selected, and of a type
    /// that can show digits).
    sent: Vec<bool>,
    /// The database's user-defined types, as far as they were looked up
    /// when the result began.
    types: Arc<UserTypes>,
}

/// Why rows could not be masked: the session cannot go on safely.
#[derive(Debug, thiserror::Error)]
pub enum MaskError {
    #[error(transparent)]
    Plugin(#[from] Fault),
    #[error("the server sent a malformed DataRow")]
    MalformedRow,
    /// The column's name is the server's (or the client's alias), which
    /// may be a card number: only its position is told.
    #[error("column {column}: {error}")]
    Value {
        column: usize,
        name: String,
        error: CodecError,
    },
    /// The rows' values would render to more text than sluice builds for
    /// the plugins at once (see [`batch::limit_for_rows`]): refused whole,
    /// found before the text is built.
    #[error("the rows' values would take more than {limit} bytes as text to mask")]
    TooMuchToMask { limit: usize },
    #[error("a masked row is too long for the wire protocol")]
    RowTooLong,
}

impl ResultMask {
    /// Asks the plugins about a result set's columns, whose user-defined
    /// types are read by `types`. `None` when no plugin wants any of them:
    /// its rows then stream through untouched.
    pub async fn for_columns(
        plugins: &PluginSet,
        session: &Arc<SessionInfo>,
        columns: Vec<Column>,
        types: Arc<UserTypes>,
    ) -> Result<Option<Arc<ResultMask>>, Fault> {
        let selection = plugins.select_columns(session, &columns).await?;
        if selection.is_empty() {
            return Ok(None);
        }
        let codecs: Vec<Codec> = columns
            .iter()
            .map(|c| Codec::for_column(c.type_oid, c.format == ValueFormat::Binary, &types))
            .collect();
        let sent: Vec<bool> = codecs
            .iter()
            .zip(&selection.any)
            .map(|(codec, selected)| *selected && codec.is_sent(&types))
            .collect();
        if !sent.contains(&true) {
            return Ok(None);
        }
        Ok(Some(Arc::new(ResultMask {
            columns,
            selection,
            codecs,
            sent,
            types,
        })))
    }

    /// Masks a run of whole DataRow messages (`rows`, back to back) into
    /// `out`.
    pub async fn mask_rows(
        &self,
        session: &Arc<SessionInfo>,
        rows: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), MaskError> {
        let (mut batch, piece_ends) = self.batch_of(rows, batch::limit_for_rows(rows.len()))?;
        if batch.is_empty() {
            out.extend_from_slice(rows);
            return Ok(());
        }
        let mut edited = false;
        for (plugin, wanted) in &self.selection.plugins {
            let subset;
            let (input, origin) = if *wanted == self.selection.any {
                (&batch, None)
            } else {
                let (values, origin) = batch.subset(wanted);
                if values.is_empty() {
                    continue;
                }
                subset = values;
                (&subset, Some(origin))
            };
            // The answer is checked before the instance goes back to its
            // pool: one that gave an invalid answer is not used again.
            let applied =
                crate::plugin::set::mask_batch_checked(plugin, session, &input.as_wit(), |edits| {
                    if edits.edits.is_empty() {
                        Ok(None)
                    } else {
                        batch.apply(edits, origin.as_deref()).map(Some)
                    }
                })
                .await?;
            let Some(applied) = applied else {
                continue;
            };
            batch = applied;
            edited = true;
        }
        if !edited {
            out.extend_from_slice(rows);
            return Ok(());
        }
        self.rebuild(rows, &batch, &piece_ends, out)
    }

    /// The batch of the sent values of `rows`, holding at most `limit`
    /// bytes, and per sent value the end of its pieces in it.
    fn batch_of(&self, rows: &[u8], limit: usize) -> Result<(Batch, Vec<usize>), MaskError> {
        let mut batch = Batch::with_limit(limit);
        let mut piece_ends = Vec::new();
        let mut failure = None;
        each_value(rows, self.columns.len(), |part| {
            // NULLs are not sent.
            if let RowPart::Value {
                column,
                value: Some(value),
            } = part
                && self.sent[column]
                && failure.is_none()
            {
                // Every column index fits: a DataRow counts its columns in
                // an int16.
                let column_id = u16::try_from(column).unwrap_or(u16::MAX);
                let exploded =
                    self.codecs[column].explode(value, &self.types, &mut batch.column(column_id));
                match exploded {
                    Ok(()) => piece_ends.push(batch.len()),
                    Err(CodecError::NoRoom(_)) => {
                        failure = Some(MaskError::TooMuchToMask {
                            limit: batch.limit(),
                        })
                    }
                    Err(error) => failure = Some(self.value_error(column, error)),
                }
            }
        })?;
        match failure {
            Some(failure) => Err(failure),
            None => Ok((batch, piece_ends)),
        }
    }

    fn value_error(&self, column: usize, error: CodecError) -> MaskError {
        MaskError::Value {
            column: column + 1,
            name: self.columns[column].name.clone(),
            error,
        }
    }

    /// Writes the rows again, each edited value put back together from its
    /// pieces in `batch`. On an error `out` is left as it was: no part of
    /// these rows, masked or not, is written.
    fn rebuild(
        &self,
        rows: &[u8],
        batch: &Batch,
        piece_ends: &[usize],
        out: &mut BytesMut,
    ) -> Result<(), MaskError> {
        let started = out.len();
        let written = self.rebuild_into(rows, batch, piece_ends, out);
        if written.is_err() {
            // What was written of these rows may end in a value that could
            // not be rebuilt: nothing of them goes to the client.
            out.truncate(started);
        }
        written
    }

    /// [`ResultMask::rebuild`]'s writing, which stops writing at the first
    /// value it cannot rebuild.
    fn rebuild_into(
        &self,
        rows: &[u8],
        batch: &Batch,
        piece_ends: &[usize],
        out: &mut BytesMut,
    ) -> Result<(), MaskError> {
        let mut sent_values = piece_ends.iter();
        let mut first_piece = 0usize;
        let mut row_start = None;
        let mut rebuilt = Vec::new();
        let mut failure = None;
        each_value(rows, self.columns.len(), |part| {
            if failure.is_some() {
                return;
            }
            let (column, value) = match part {
                RowPart::Row { columns } => {
                    // A new row: its header, with the length patched at the
                    // end.
                    if let Some(start) = row_start.replace(out.len())
                        && let Err(error) = patch_row_length(out, start)
                    {
                        failure = Some(error);
                        return;
                    }
                    out.put_u8(tag::DATA_ROW);
                    out.put_i32(0);
                    out.put_i16(columns);
                    return;
                }
                RowPart::Value { column, value } => (column, value),
            };
            let Some(original) = value else {
                out.put_i32(-1);
                return;
            };
            let mut bytes = original;
            if self.sent[column] {
                // Every sent value has its entry; a shortfall would be a
                // bug, and then the row is refused rather than guessed at.
                let Some(&end) = sent_values.next() else {
                    failure = Some(MaskError::MalformedRow);
                    return;
                };
                let pieces = first_piece..end;
                first_piece = end;
                if batch.any_edited(pieces.clone()) {
                    rebuilt.clear();
                    let mut edited = pieces.map(|index| batch.value(index));
                    match self.codecs[column].reassemble(
                        original,
                        &self.types,
                        &mut edited,
                        &mut rebuilt,
                    ) {
                        Ok(()) => bytes = &rebuilt,
                        Err(error) => {
                            // Never the original in its place.
                            failure = Some(self.value_error(column, error));
                            return;
                        }
                    }
                }
            }
            out.put_i32(bytes.len() as i32);
            out.extend_from_slice(bytes);
        })?;
        if let Some(failure) = failure {
            return Err(failure);
        }
        if let Some(start) = row_start {
            patch_row_length(out, start)?;
        }
        Ok(())
    }
}

/// [`patch_length`] for a rebuilt DataRow, which edits may have made too
/// long for its int32 length: refused rather than written with a length
/// that wrapped.
fn patch_row_length(out: &mut BytesMut, start: usize) -> Result<(), MaskError> {
    if i32::try_from(out.len() - start - 1).is_err() {
        return Err(MaskError::RowTooLong);
    }
    patch_length(out, start);
    Ok(())
}

/// Writes the length of the message that starts at `start` of `out` and
/// ends at its end into the message's header.
pub(super) fn patch_length(out: &mut BytesMut, start: usize) {
    let len = (out.len() - start - 1) as i32;
    out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}

/// What [`each_value`] meets in a DataRow, in order.
enum RowPart<'a> {
    /// The start of a row of this many columns.
    Row { columns: i16 },
    /// One column's value; `None` is NULL.
    Value {
        column: usize,
        value: Option<&'a [u8]>,
    },
}

/// Walks the values of back-to-back DataRow messages with bounds checks:
/// for each row, `visit` gets the row's start, then each of its values.
fn each_value<'a>(
    mut rows: &'a [u8],
    expected_columns: usize,
    mut visit: impl FnMut(RowPart<'a>),
) -> Result<(), MaskError> {
    while !rows.is_empty() {
        let (tag, len) = match rows {
            [tag, a, b, c, d, ..] => (*tag, i32::from_be_bytes([*a, *b, *c, *d])),
            _ => return Err(MaskError::MalformedRow),
        };
        let len = usize::try_from(len).map_err(|_| MaskError::MalformedRow)?;
        if tag != tag::DATA_ROW || len < 6 || rows.len() < 1 + len {
            return Err(MaskError::MalformedRow);
        }
        let mut body = &rows[5..1 + len];
        rows = &rows[1 + len..];
        let count = i16::from_be_bytes([body[0], body[1]]);
        body = &body[2..];
        if usize::try_from(count).ok() != Some(expected_columns) {
            return Err(MaskError::MalformedRow);
        }
        visit(RowPart::Row { columns: count });
        for column in 0..expected_columns {
            let [a, b, c, d, ..] = *body else {
                return Err(MaskError::MalformedRow);
            };
            let value_len = i32::from_be_bytes([a, b, c, d]);
            body = &body[4..];
            if value_len == -1 {
                visit(RowPart::Value {
                    column,
                    value: None,
                });
                continue;
            }
            let value_len = usize::try_from(value_len).map_err(|_| MaskError::MalformedRow)?;
            if body.len() < value_len {
                return Err(MaskError::MalformedRow);
            }
            visit(RowPart::Value {
                column,
                value: Some(&body[..value_len]),
            });
            body = &body[value_len..];
        }
        if !body.is_empty() {
            return Err(MaskError::MalformedRow);
        }
    }
    Ok(())
}

/// The column count of the DataRow at the start of `buf`.
pub fn row_width(buf: &[u8]) -> Option<usize> {
    let count = buf.get(5..7)?;
    usize::try_from(i16::from_be_bytes([count[0], count[1]])).ok()
}

/// The columns of a RowDescription, as plugins see them.
pub fn columns_of(description: &RowDescription) -> Vec<Column> {
    description
        .fields
        .iter()
        .map(|field| Column {
            name: field.name.clone(),
            table_oid: field.table_id as u32,
            column_number: field.column_id,
            type_oid: field.type_id,
            type_modifier: field.type_modifier,
            format: if field.format_code == 1 {
                ValueFormat::Binary
            } else {
                ValueFormat::Text
            },
        })
        .collect()
}

/// Columns for rows sluice has no description of: of no type, in binary
/// format (the format that claims least).
pub fn undescribed_columns(count: usize) -> Vec<Column> {
    (0..count)
        .map(|_| Column {
            name: "?column?".to_owned(),
            table_oid: 0,
            column_number: 0,
            type_oid: NO_TYPE,
            type_modifier: -1,
            format: ValueFormat::Binary,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::masking::codec::PieceKind;

    /// A DataRow message with these values (`None` for NULL).
    fn data_row(values: &[Option<&[u8]>]) -> Vec<u8> {
        let mut body = (values.len() as i16).to_be_bytes().to_vec();
        for value in values {
            match value {
                Some(bytes) => {
                    body.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                    body.extend_from_slice(bytes);
                }
                None => body.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        let mut message = vec![tag::DATA_ROW];
        message.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        message.extend_from_slice(&body);
        message
    }

    /// What `each_value` reports, as text.
    fn walk(rows: &[u8], columns: usize) -> Result<Vec<String>, MaskError> {
        let mut seen = Vec::new();
        each_value(rows, columns, |part| {
            seen.push(match part {
                RowPart::Row { columns } => format!("row of {columns}"),
                RowPart::Value { column, value } => match value {
                    Some(bytes) => format!("{column}={}", String::from_utf8_lossy(bytes)),
                    None => format!("{column}=NULL"),
                },
            })
        })?;
        Ok(seen)
    }

    #[test]
    fn rows_are_walked_value_by_value() {
        let mut rows = data_row(&[Some(b"a"), None]);
        rows.extend(data_row(&[Some(b""), Some(b"bc")]));
        assert_eq!(
            walk(&rows, 2).unwrap(),
            ["row of 2", "0=a", "1=NULL", "row of 2", "0=", "1=bc"]
        );
    }

    /// A mask that sends every column, each of these types in binary
    /// format, to no plugin.
    fn binary_mask(type_oids: &[u32]) -> ResultMask {
        let types = Arc::new(UserTypes::new());
        let columns: Vec<Column> = type_oids
            .iter()
            .map(|&type_oid| Column {
                type_oid,
                ..undescribed_columns(1).remove(0)
            })
            .collect();
        let codecs: Vec<Codec> = type_oids
            .iter()
            .map(|&type_oid| Codec::for_column(type_oid, true, &types))
            .collect();
        ResultMask {
            sent: codecs.iter().map(|codec| codec.is_sent(&types)).collect(),
            selection: Selection {
                any: vec![true; columns.len()],
                plugins: Vec::new(),
            },
            columns,
            codecs,
            types,
        }
    }

    const NUMERIC: u32 = 1700;
    const NUMERIC_ARRAY: u32 = 1231;
    const INT8: u32 = 20;
    const TEXT: u32 = 25;

    /// array_send of a one-dimensional array of `element` values.
    fn array(element: u32, values: &[&[u8]]) -> Vec<u8> {
        let mut array = Vec::new();
        for word in [1, 0, element as i32, values.len() as i32, 1] {
            array.extend_from_slice(&word.to_be_bytes());
        }
        for value in values {
            array.extend_from_slice(&(value.len() as i32).to_be_bytes());
            array.extend_from_slice(value);
        }
        array
    }

    #[test]
    fn numerics_that_would_render_past_the_limit_are_refused_unrendered() {
        // numeric_send(1e131071): ten bytes that read as 131,069 digits.
        let huge: &[u8] = &[0, 1, 0x7f, 0xff, 0, 0, 0, 0, 0, 1];
        // Ten thousand of them: 140 kB of row, 1.3 GB of text; refused
        // once a megabyte is built.
        let row = data_row(&[Some(&array(NUMERIC, &vec![huge; 10_000]))]);
        let mask = binary_mask(&[NUMERIC_ARRAY]);
        let limit = 1 << 20;
        assert!(matches!(
            mask.batch_of(&row, limit),
            Err(MaskError::TooMuchToMask { limit: 1_048_576 })
        ));
        // A single one past the room left is refused too.
        let row = data_row(&[Some(huge)]);
        let mask = binary_mask(&[NUMERIC]);
        assert!(matches!(
            mask.batch_of(&row, 131_068),
            Err(MaskError::TooMuchToMask { .. })
        ));
        let (batch, _) = mask.batch_of(&row, 131_069).unwrap();
        assert_eq!(batch.value(0).len(), 131_069);
    }

    #[test]
    fn ordinary_numerics_render_as_before_under_the_limit() {
        // numeric_send(4111111111111111.00), (-1234567.891) and (0.0001).
        let pan: &[u8] = &[
            0, 4, 0, 3, 0, 0, 0, 2, 0x10, 0x0f, 4, 0x57, 4, 0x57, 4, 0x57,
        ];
        let negative: &[u8] = &[0, 3, 0, 1, 0x40, 0, 0, 3, 0, 0x7b, 0x11, 0xd7, 0x22, 0xce];
        let small: &[u8] = &[0, 1, 0xff, 0xff, 0, 0, 0, 4, 0, 1];
        let row = data_row(&[Some(&array(NUMERIC, &[pan, negative, small])), Some(pan)]);
        let mask = binary_mask(&[NUMERIC_ARRAY, NUMERIC]);
        let (batch, piece_ends) = mask
            .batch_of(&row, batch::limit_for_rows(row.len()))
            .unwrap();
        let values: Vec<&[u8]> = (0..batch.len()).map(|index| batch.value(index)).collect();
        assert_eq!(
            values,
            [
                &b"4111111111111111.00"[..],
                b"-1234567.891",
                b"0.0001",
                b"4111111111111111.00"
            ]
        );
        assert_eq!(piece_ends, [3, 4]);
    }

    #[test]
    fn a_run_of_rows_may_render_to_four_times_its_size_within_bounds() {
        assert_eq!(batch::limit_for_rows(0), 64 << 20);
        assert_eq!(batch::limit_for_rows(16 << 20), 64 << 20);
        assert_eq!(batch::limit_for_rows(100 << 20), 400 << 20);
        assert_eq!(batch::limit_for_rows(usize::MAX), u32::MAX as usize);
    }

    #[test]
    fn a_value_that_cannot_be_rebuilt_leaves_nothing_of_its_rows() {
        // An int8 column holding a card number, and a text one.
        let pan = 4_111_111_111_111_111i64.to_be_bytes();
        let first_row = data_row(&[Some(&1234i64.to_be_bytes()), Some(b"4111111111111111")]);
        let mut rows = first_row.clone();
        rows.extend(data_row(&[Some(&pan), Some(b"none")]));
        let mask = binary_mask(&[INT8, TEXT]);
        // The pieces explode makes of them, but the int8's as text so an
        // edit can make it something no int8 reads as.
        let mut batch = Batch::default();
        for (column, kind, piece) in [
            (0, PieceKind::Number, &b"1234"[..]),
            (1, PieceKind::Text, b"4111111111111111"),
            (0, PieceKind::Text, b"4111111111111111"),
            (1, PieceKind::Text, b"none"),
        ] {
            batch.push(column, kind, piece);
        }
        let edits =
            crate::plugin::bindings::masking::exports::sluice::gateway::masking::ValueEdits {
                edits: vec![
                crate::plugin::bindings::masking::exports::sluice::gateway::masking::ValueEdit {
                    value: 1,
                    start: 0,
                    end: 16,
                    replacement_end: 16,
                },
                crate::plugin::bindings::masking::exports::sluice::gateway::masking::ValueEdit {
                    value: 2,
                    start: 4,
                    end: 16,
                    replacement_end: 28,
                },
            ],
                replacements: [b"*".repeat(16), b"x".repeat(12)].concat(),
            };
        let batch = batch.apply(edits, None).unwrap();
        let mut out = BytesMut::from(&b"earlier"[..]);
        let error = mask.rebuild(&rows, &batch, &[1, 2, 3, 4], &mut out);
        assert!(
            matches!(
                &error,
                Err(MaskError::Value {
                    column: 1,
                    error: CodecError::Malformed { .. },
                    ..
                })
            ),
            "{error:?}"
        );
        // Neither the value that failed nor the row before it.
        assert_eq!(&out[..], b"earlier");
        // Rebuilt as far as it goes, the first row alone was masked.
        let mut out = BytesMut::new();
        mask.rebuild(&first_row, &batch, &[1, 2], &mut out).unwrap();
        assert_eq!(
            &out[..],
            data_row(&[Some(&1234i64.to_be_bytes()), Some(&b"*".repeat(16))])
        );
    }

    #[test]
    fn malformed_rows_are_refused() {
        let row = data_row(&[Some(b"abc"), Some(b"de")]);
        let mut wrong_tag = row.clone();
        wrong_tag[0] = b'C';
        let mut value_too_long = row.clone();
        value_too_long[7..11].copy_from_slice(&100i32.to_be_bytes());
        let mut negative_length = row.clone();
        negative_length[7..11].copy_from_slice(&(-5i32).to_be_bytes());
        let mut trailing_bytes = data_row(&[Some(b"abc"), Some(b"de"), Some(b"f")]);
        trailing_bytes[5..7].copy_from_slice(&2i16.to_be_bytes());
        for (name, rows, columns) in [
            ("truncated", &row[..row.len() - 1], 2),
            ("header only", &row[..3], 2),
            ("wrong tag", &wrong_tag[..], 2),
            ("column count differs", &row[..], 3),
            ("value longer than its row", &value_too_long[..], 2),
            ("negative value length", &negative_length[..], 2),
            ("bytes after the last value", &trailing_bytes[..], 2),
        ] {
            assert!(
                matches!(walk(rows, columns), Err(MaskError::MalformedRow)),
                "{name}"
            );
        }
    }
}
