//! Value batches: what one `mask-batch` call carries, and the edits it
//! brings back, checked before they are applied.
//!
//! A batch holds many values back to back in one buffer (the WIT
//! `value-batch`), so one call crosses the component boundary for many
//! rows, and a plugin answers with edits only: a batch it leaves alone
//! costs no copy on the way back. Each value is a piece of text a codec
//! ([`super::codec`]) made of a column value; its [`PieceKind`] says what
//! an edit may do to it.

use super::codec::{NoRoom, PieceKind, PieceSink, zero_digits};
use crate::plugin::bindings::masking::exports::sluice::gateway::masking::{ValueBatch, ValueEdits};

/// Values of one result set's selected columns, kept in the WIT record's
/// own shape so a call borrows it as it is.
#[derive(Debug, Clone)]
pub struct Batch {
    values: ValueBatch,
    /// Per value: what kind of text it is.
    kinds: Vec<PieceKind>,
    /// Per value: whether some plugin's edits changed it.
    edited: Vec<bool>,
    /// The most bytes of values the batch holds, edits included; never
    /// more than [`MAX_BATCH_BYTES`].
    limit: usize,
}

/// The most bytes of values any batch holds: the WIT batch's offsets are
/// u32.
pub const MAX_BATCH_BYTES: usize = u32::MAX as usize;

/// The least a batch of rows may hold whatever their size: 64 MiB, four
/// times the default `max_held_server_message_bytes` (16 MiB), and the
/// default memory of a plugin instance (`DEFAULT_PLUGIN_MEMORY_MB`), which
/// must hold a batch to mask it.
pub const MIN_ROWS_BATCH_BYTES: usize = 64 << 20;

/// How many times its rows' size a batch of rows may hold.
const ROWS_BATCH_FACTOR: usize = 4;

/// The most bytes of text sluice builds for the masking plugins out of a
/// run of `rows_len` bytes of rows: four times the rows, at least
/// [`MIN_ROWS_BATCH_BYTES`], at most [`MAX_BATCH_BYTES`].
///
/// Text values are their own pieces, no longer than they came but for
/// numbers printed with an exponent, written out (at most sixfold, `1e23`
/// to 24 digits; see `codec::plain_exponents`), but binary
/// numbers are rendered in decimal: an int8's 8 bytes to 20 digits, a
/// float8's to about 330, and a numeric's 10 (`1e131071`) to 131,072 —
/// 147,455 with its largest scale. Unbounded, a 14 MB result of such
/// numerics would make a 140 GB batch, and the allocation failure would
/// abort the process. What one run holds is bounded by
/// `max_held_server_message_bytes`, so the floor covers a run of default
/// size four times over, and a run larger than that (an operator raised the
/// limit) gets four times its own size. There is no knob of its own: the
/// masking code is not handed the session's limits, and a batch beyond
/// every plugin's memory could only fail later.
pub fn limit_for_rows(rows_len: usize) -> usize {
    rows_len
        .saturating_mul(ROWS_BATCH_FACTOR)
        .clamp(MIN_ROWS_BATCH_BYTES, MAX_BATCH_BYTES)
}

impl Default for Batch {
    fn default() -> Self {
        Batch::with_limit(MAX_BATCH_BYTES)
    }
}

impl Batch {
    /// An empty batch that holds at most `limit` bytes of values (at most
    /// [`MAX_BATCH_BYTES`] whatever `limit` says).
    pub fn with_limit(limit: usize) -> Self {
        Batch {
            values: ValueBatch {
                data: Vec::new(),
                ends: Vec::new(),
                columns: Vec::new(),
            },
            kinds: Vec::new(),
            edited: Vec::new(),
            limit: limit.min(MAX_BATCH_BYTES),
        }
    }

    /// The most bytes of values this batch holds.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// How many more bytes of values this batch takes.
    pub fn room(&self) -> usize {
        self.limit.saturating_sub(self.values.data.len())
    }

    /// Where [`super::codec::Codec::explode`] puts the pieces of a value of
    /// `column`: this batch, as far as it has room.
    pub fn column(&mut self, column: u16) -> ColumnPieces<'_> {
        ColumnPieces {
            batch: self,
            column,
        }
    }
    pub fn len(&self) -> usize {
        self.values.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.ends.is_empty()
    }

    /// Adds a value, or [`NoRoom`] (the batch unchanged) if it does not
    /// fit in the batch's limit.
    pub fn try_push(&mut self, column: u16, kind: PieceKind, value: &[u8]) -> Result<(), NoRoom> {
        if value.len() > self.room() {
            return Err(NoRoom);
        }
        let values = &mut self.values;
        let end = u32::try_from(values.data.len() + value.len()).map_err(|_| NoRoom)?;
        values.data.extend_from_slice(value);
        values.ends.push(end);
        values.columns.push(column);
        self.kinds.push(kind);
        self.edited.push(false);
        Ok(())
    }

    /// Adds a value known to fit: one of another batch of no larger a
    /// limit, or one a test or benchmark made. Values of network input go
    /// through [`Batch::try_push`].
    ///
    /// # Panics
    /// If the value does not fit.
    pub fn push(&mut self, column: u16, kind: PieceKind, value: &[u8]) {
        self.try_push(column, kind, value)
            .expect("a value pushed unchecked fits in its batch");
    }

    pub fn value(&self, index: usize) -> &[u8] {
        let ends = &self.values.ends;
        let start = if index == 0 {
            0
        } else {
            ends[index - 1] as usize
        };
        &self.values.data[start..ends[index] as usize]
    }

    /// Whether any value in `range` was changed by an edit.
    pub fn any_edited(&self, range: std::ops::Range<usize>) -> bool {
        self.edited[range].iter().any(|edited| *edited)
    }

    /// The column of each value, in order.
    pub fn columns(&self) -> &[u16] {
        &self.values.columns
    }

    /// The values whose column `wanted` flags, as a batch of their own,
    /// with the index each has here.
    pub fn subset(&self, wanted: &[bool]) -> (Batch, Vec<u32>) {
        // Some of this batch's values under the same limit: they fit.
        let mut subset = Batch::with_limit(self.limit);
        let mut origin = Vec::new();
        for (index, &column) in self.values.columns.iter().enumerate() {
            if wanted.get(column as usize).copied().unwrap_or(false) {
                subset.push(column, self.kinds[index], self.value(index));
                origin.push(index as u32);
            }
        }
        (subset, origin)
    }

    /// The WIT record a call borrows. In a JSON value each escape
    /// sequence inside a string (`\n`, `\"`, `\u00e9`) is given as as many
    /// spaces: what it stands for is no digit of a card number, and its
    /// letter or hex digits would otherwise run into one beside it (a
    /// masker reads `"Card:\n4111..."` as digits glued to an `n`). Edits
    /// come back against the same offsets, and none may begin or end
    /// inside an escape (see `json_spans`). A text value's backslash
    /// escapes are shown as free text's are (see [`escapes`]): JSON or a
    /// log kept in a `text` column writes its line breaks as `\n` too, and
    /// a client that reads it as such reads the card number after one.
    pub fn as_wit(&self) -> std::borrow::Cow<'_, ValueBatch> {
        let escaped = |index: usize| {
            matches!(self.kinds[index], PieceKind::Json | PieceKind::Text)
                && self.value(index).contains(&b'\\')
        };
        if !(0..self.len()).any(escaped) {
            return std::borrow::Cow::Borrowed(&self.values);
        }
        let mut view = self.values.clone();
        let mut start = 0;
        for (index, &end) in self.values.ends.iter().enumerate() {
            let end = end as usize;
            if escaped(index) {
                let value = &mut view.data[start..end];
                match self.kinds[index] {
                    PieceKind::Json => blank_json_escapes(value),
                    _ => {
                        if let Some((shown, _)) = text_escapes(value) {
                            value.copy_from_slice(shown.as_bytes());
                        }
                    }
                }
            }
            start = end;
        }
        std::borrow::Cow::Owned(view)
    }

    /// Applies a plugin's edits. `origin` maps the edited batch's value
    /// indexes to this batch's (for a subset). Text that was valid UTF-8
    /// must stay so; in a number, the digits an edit covers become `0`
    /// whatever its replacement says; JSON stays JSON (and UTF-8). The
    /// edited batch holds no more than this one's limit.
    pub fn apply(&self, answer: ValueEdits, origin: Option<&[u32]>) -> Result<Batch, String> {
        let edits = edit_list(&answer, origin, self.len())?;
        let mut out = Batch {
            values: ValueBatch {
                data: Vec::with_capacity(self.values.data.len() + answer.replacements.len()),
                ends: Vec::with_capacity(self.len()),
                columns: self.values.columns.clone(),
            },
            kinds: self.kinds.clone(),
            edited: self.edited.clone(),
            limit: self.limit,
        };
        let mut edits = edits.into_iter().peekable();
        let mut spans = Vec::new();
        for index in 0..self.len() {
            let value = self.value(index);
            spans.clear();
            while let Some(edit) = edits.next_if(|e| e.value as usize == index) {
                let replacement = &answer.replacements[edit.replacement.clone()];
                spans.push((edit.start as usize, edit.end as usize, replacement));
            }
            let data = &mut out.values.data;
            let start = data.len();
            if spans.is_empty() {
                data.extend_from_slice(value);
            } else {
                match self.kinds[index] {
                    PieceKind::Number => zero_spans(value, &spans, data)?,
                    PieceKind::Json => json_spans(value, &spans, data)?,
                    PieceKind::Text => match text_escapes(value) {
                        Some((_, escapes)) => text_spans(value, &escapes, &spans, data)?,
                        None => apply_spans(value, &spans, data)?,
                    },
                    PieceKind::Bytes => apply_spans(value, &spans, data)?,
                }
                let edited = &data[start..];
                // Text that was UTF-8 stays so; JSON is text whatever it
                // was (PostgreSQL sends it as UTF-8).
                let must_be_utf8 = match self.kinds[index] {
                    PieceKind::Text => std::str::from_utf8(value).is_ok(),
                    PieceKind::Json => true,
                    PieceKind::Number | PieceKind::Bytes => false,
                };
                if must_be_utf8 && std::str::from_utf8(edited).is_err() {
                    return Err(format!("an edit of value {index} leaves it invalid UTF-8"));
                }
                out.edited[index] |= edited != value;
            }
            let end = u32::try_from(data.len())
                .ok()
                .filter(|&end| end as usize <= self.limit)
                .ok_or_else(|| {
                    format!(
                        "the edits make the batch larger than the {} bytes it may hold",
                        self.limit
                    )
                })?;
            out.values.ends.push(end);
        }
        Ok(out)
    }
}

/// A batch as the [`PieceSink`] of one column's values.
pub struct ColumnPieces<'b> {
    batch: &'b mut Batch,
    column: u16,
}

impl PieceSink for ColumnPieces<'_> {
    fn room(&self) -> usize {
        self.batch.room()
    }

    fn take(&mut self, kind: PieceKind, piece: &[u8]) -> Result<(), NoRoom> {
        self.batch.try_push(self.column, kind, piece)
    }
}

/// One edit of a plugin's answer, checked to name a value of the batch and
/// a replacement inside the answer's buffer.
struct Edit {
    value: u32,
    start: u32,
    end: u32,
    replacement: std::ops::Range<usize>,
}

/// A plugin's edits in the order they apply (by value, then by start),
/// each naming a value of a batch of `len` (after `origin` maps a subset's
/// indexes back) and a replacement inside the answer.
fn edit_list(answer: &ValueEdits, origin: Option<&[u32]>, len: usize) -> Result<Vec<Edit>, String> {
    let mut from = 0usize;
    let mut edits = Vec::with_capacity(answer.edits.len());
    for edit in &answer.edits {
        let to = edit.replacement_end as usize;
        if to < from || to > answer.replacements.len() {
            return Err(format!(
                "an edit's replacement ends at {to}, outside {from}..{} of the replacements",
                answer.replacements.len()
            ));
        }
        let value = match origin {
            Some(origin) => *origin.get(edit.value as usize).ok_or_else(|| {
                format!(
                    "an edit names value {} of a batch of {}",
                    edit.value,
                    origin.len()
                )
            })?,
            None => edit.value,
        };
        if value as usize >= len {
            return Err(format!("an edit names value {value} of a batch of {len}"));
        }
        edits.push(Edit {
            value,
            start: edit.start,
            end: edit.end,
            replacement: from..to,
        });
        from = to;
    }
    // Overlaps are still caught after sorting: spans must not cross.
    // Plugins usually answer in order already.
    if !edits.is_sorted_by_key(|e| (e.value, e.start)) {
        edits.sort_by_key(|e| (e.value, e.start));
    }
    Ok(edits)
}

/// One value's edits: the span of the value each replaces, and with what.
type Spans<'a> = [(usize, usize, &'a [u8])];

/// A number with the digits of each span written as `0`, appended to
/// `out`: the spans' replacements are not used, so the value keeps its
/// shape and type.
fn zero_spans(value: &[u8], spans: &Spans, out: &mut Vec<u8>) -> Result<(), String> {
    let mut at = 0usize;
    for &(start, end, _) in spans {
        check_span(start, end, at, value.len())?;
        out.extend_from_slice(&value[at..start]);
        zero_digits(&value[start..end], out);
        at = end;
    }
    out.extend_from_slice(&value[at..]);
    Ok(())
}

/// JSON text with edits made so it stays JSON, appended to `out`: an edit
/// inside a string takes its replacement (which must need no escaping),
/// one elsewhere — in a number — writes `0` over its digits.
///
/// An edit must lie within one string's content, or wholly outside
/// strings: one that covers a quote would unbalance them (`{"a":"4111"}`
/// edited over `4111"}` leaves `{"a":"****`). Nor may an edit begin or end
/// inside an escape sequence (`\"`, `\u00e9`): its backslash or hex
/// digits left without the rest are not JSON. An edit may cover whole
/// escapes.
fn json_spans(value: &[u8], spans: &Spans, out: &mut Vec<u8>) -> Result<(), String> {
    let out_start = out.len();
    let mut zeroed = false;
    let mut reader = JsonStrings::default();
    let mut at = 0usize;
    for &(start, end, replacement) in spans {
        check_span(start, end, at, value.len())?;
        reader.read(&value[at..start]);
        out.extend_from_slice(&value[at..start]);
        let in_string = reader.in_string;
        let starts_in_escape = reader.in_escape();
        let crossed_quote = reader.read(&value[start..end]);
        if starts_in_escape || reader.in_escape() {
            return Err(format!(
                "edit {start}..{end} begins or ends inside a JSON escape sequence"
            ));
        }
        if crossed_quote {
            return Err(format!(
                "edit {start}..{end} covers a quote that begins or ends a JSON string"
            ));
        }
        if in_string {
            if replacement
                .iter()
                .any(|b| matches!(b, b'"' | b'\\') || *b < 0x20)
            {
                return Err(
                    "an edit puts a quote, backslash or control character into a JSON string"
                        .to_owned(),
                );
            }
            out.extend_from_slice(replacement);
        } else {
            zero_digits(&value[start..end], out);
            zeroed = true;
        }
        at = end;
    }
    out.extend_from_slice(&value[at..]);
    if zeroed {
        drop_leading_zeros(out, out_start);
    }
    Ok(())
}

/// Takes the leading zeros that zeroed digits left off the integer part
/// of every number in the JSON text `json[from..]` (keeping one where the
/// part is all zeros): `4111` edited over its `4` reads `0111`, which is
/// not JSON, and becomes `111`. A JSON number never has them otherwise.
fn drop_leading_zeros(json: &mut Vec<u8>, from: usize) {
    let mut kept = from;
    let mut strings = JsonStrings::default();
    let mut in_number = false;
    let mut at = from;
    while at < json.len() {
        let b = json[at];
        if strings.in_string || b == b'"' {
            strings.read(&[b]);
            in_number = false;
        } else if !in_number && (b == b'-' || b.is_ascii_digit()) {
            in_number = true;
            if b == b'-' {
                json[kept] = b;
                kept += 1;
                at += 1;
            }
            let digits = json[at..].iter().take_while(|d| d.is_ascii_digit()).count();
            let zeros = json[at..at + digits]
                .iter()
                .take_while(|&&d| d == b'0')
                .count();
            // All zeros keep one; leading zeros before other digits go.
            let skip = zeros.min(digits.saturating_sub(1));
            at += skip;
            continue;
        } else {
            in_number =
                in_number && (b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
        }
        json[kept] = json[at];
        kept += 1;
        at += 1;
    }
    json.truncate(kept);
}

/// Follows JSON text far enough to know whether a position is inside a
/// string, and whether inside an escape sequence there.
#[derive(Default)]
struct JsonStrings {
    in_string: bool,
    /// The last byte was an escape's backslash.
    after_backslash: bool,
    /// Hex digits of a `\u` escape still to come.
    hex_left: u8,
}

impl JsonStrings {
    /// Reads `bytes` on from where the last read ended; whether a quote
    /// among them began or ended a string.
    fn read(&mut self, bytes: &[u8]) -> bool {
        let mut crossed_quote = false;
        for &b in bytes {
            if self.after_backslash {
                self.after_backslash = false;
                self.hex_left = if b == b'u' { 4 } else { 0 };
            } else if self.hex_left > 0 {
                self.hex_left -= 1;
            } else if self.in_string && b == b'\\' {
                self.after_backslash = true;
            } else if b == b'"' {
                self.in_string = !self.in_string;
                crossed_quote = true;
            }
        }
        crossed_quote
    }

    /// Whether the position the last read ended at is inside an escape
    /// sequence (after its backslash, before its last byte).
    fn in_escape(&self) -> bool {
        self.after_backslash || self.hex_left > 0
    }
}

/// Writes a space over every byte of each escape sequence inside the
/// strings of the JSON text `json`.
///
/// The one escape that does stand for a digit, `\u0030` to `\u0039`, is
/// given as the digit on its last byte, spaces before it: digits that
/// follow run on from it, so a card number begun with one is still found
/// and masked after the digits kept (an edit that began inside the escape
/// would be refused by `json_spans`: the result fails closed).
fn blank_json_escapes(json: &mut [u8]) {
    let mut strings = JsonStrings::default();
    // Where the escape being read began: it is blanked once it ends.
    let mut escape_start = None;
    for at in 0..json.len() {
        strings.read(&json[at..=at]);
        match (escape_start, strings.in_escape()) {
            (None, true) => escape_start = Some(at),
            (Some(start), false) => {
                let escape = &mut json[start..=at];
                let digit = escape.len() == 6
                    && escape[1..5].eq_ignore_ascii_case(b"u003")
                    && escape[5].is_ascii_digit();
                let blanked = if digit { 5 } else { escape.len() };
                escape[..blanked].fill(b' ');
                escape_start = None;
            }
            _ => {}
        }
    }
    if let Some(start) = escape_start {
        json[start..].fill(b' ');
    }
}

fn check_span(start: usize, end: usize, after: usize, len: usize) -> Result<(), String> {
    if start < after || end < start || end > len {
        return Err(format!(
            "edit {start}..{end} is out of order, overlapping or outside a value of {len} bytes"
        ));
    }
    Ok(())
}

/// A text value as plugins are shown it, and where its backslash escapes
/// are; `None` when it has none (or is not UTF-8, and so shown as it is).
fn text_escapes(value: &[u8]) -> Option<(String, Vec<super::escapes::Escape>)> {
    if !value.contains(&b'\\') {
        return None;
    }
    super::escapes::blanked(std::str::from_utf8(value).ok()?)
}

/// Applies edits made against a text value's view (see
/// [`Batch::as_wit`]): one that begins on an escape's digit covers the
/// whole escape; one that begins or ends anywhere else inside an escape
/// is refused.
fn text_spans(
    value: &[u8],
    escapes: &[super::escapes::Escape],
    spans: &Spans,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let mut mapped = Vec::with_capacity(spans.len());
    for &(start, end, replacement) in spans {
        let (start, end) = super::escapes::edit_of_text(escapes, start, end)
            .ok_or("an edit begins or ends inside a backslash escape of a text value")?;
        mapped.push((start, end, replacement));
    }
    apply_spans(value, &mapped, out)
}

/// `input` with its spans replaced, appended to `out`. Spans must be in
/// order, must not overlap and must lie within the input.
pub fn apply_spans(input: &[u8], spans: &Spans, out: &mut Vec<u8>) -> Result<(), String> {
    let mut at = 0usize;
    for &(start, end, replacement) in spans {
        check_span(start, end, at, input.len())?;
        out.extend_from_slice(&input[at..start]);
        out.extend_from_slice(replacement);
        at = end;
    }
    out.extend_from_slice(&input[at..]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::bindings::masking::exports::sluice::gateway::masking::ValueEdit;

    fn batch(values: &[(&str, u16)]) -> Batch {
        let mut batch = Batch::default();
        for (value, column) in values {
            batch.push(*column, PieceKind::Text, value.as_bytes());
        }
        batch
    }

    /// A plugin's answer: `(value, start, end, replacement)` per edit.
    fn answer(edits: &[(u32, u32, u32, &[u8])]) -> ValueEdits {
        let mut answer = ValueEdits {
            edits: Vec::new(),
            replacements: Vec::new(),
        };
        for &(value, start, end, replacement) in edits {
            answer.replacements.extend_from_slice(replacement);
            answer.edits.push(ValueEdit {
                value,
                start,
                end,
                replacement_end: answer.replacements.len() as u32,
            });
        }
        answer
    }

    #[test]
    fn edits_replace_spans_of_the_values_they_name() {
        let b = batch(&[("card 4111", 0), ("none", 1), ("4111 and 4111", 0)]);
        let edited = b
            .apply(
                answer(&[(2, 9, 13, b"****"), (0, 5, 9, b"****"), (2, 0, 4, b"#")]),
                None,
            )
            .unwrap();
        assert_eq!(edited.value(0), b"card ****");
        assert_eq!(edited.value(1), b"none");
        assert_eq!(edited.value(2), b"# and ****");
        assert_eq!(edited.columns(), b.columns());
    }

    #[test]
    fn bad_edits_are_refused_not_applied() {
        let b = batch(&[("abc", 0)]);
        let mut beyond = answer(&[(0, 0, 1, b"x")]);
        beyond.edits[0].replacement_end = 7;
        for (bad, why) in [
            (answer(&[(1, 0, 1, b"x")]), "names value 1"),
            (answer(&[(0, 2, 9, b"x")]), "outside"),
            (answer(&[(0, 2, 1, b"x")]), "outside"),
            (answer(&[(0, 0, 2, b"x"), (0, 1, 3, b"y")]), "overlapping"),
            (beyond, "replacement ends at 7"),
            (answer(&[(0, 0, 1, &[0xff])]), "UTF-8"),
        ] {
            let error = b.apply(bad, None).unwrap_err();
            assert!(error.contains(why), "{error}");
        }
    }

    #[test]
    fn a_subset_maps_edits_back_to_the_whole_batch() {
        let b = batch(&[("a1", 0), ("b1", 1), ("a2", 0)]);
        let (subset, origin) = b.subset(&[true, false]);
        assert_eq!(subset.len(), 2);
        assert_eq!(subset.value(1), b"a2");
        let edited = b.apply(answer(&[(1, 0, 1, b"A")]), Some(&origin)).unwrap();
        assert_eq!(edited.value(2), b"A2");
        assert_eq!(edited.value(1), b"b1");
    }

    #[test]
    fn edits_of_a_number_write_zeros_and_only_changes_count_as_edits() {
        let mut b = Batch::default();
        b.push(0, PieceKind::Number, b"-4111111111111111.50");
        b.push(1, PieceKind::Text, b"unchanged");
        b.push(2, PieceKind::Bytes, &[0xff, 0x00]);
        let edited = b
            .apply(
                answer(&[(0, 7, 17, b"******"), (1, 0, 2, b"un"), (2, 0, 1, &[0xfe])]),
                None,
            )
            .unwrap();
        assert_eq!(edited.value(0), b"-4111110000000000.50");
        assert!(edited.any_edited(0..1));
        // Replacing a span with the same bytes changes nothing.
        assert_eq!(edited.value(1), b"unchanged");
        assert!(!edited.any_edited(1..2));
        // Bytes need not be UTF-8, and text that was not may stay so.
        assert_eq!(edited.value(2), [0xfe, 0x00]);
        assert!(edited.any_edited(2..3));
    }

    #[test]
    fn edits_of_json_keep_it_json() {
        let mut b = Batch::default();
        let json = r#"{"pan": "4111 \" 4111", "n": 4111, "s": "4111"}"#;
        b.push(0, PieceKind::Json, json.as_bytes());
        let at = |needle: &str, nth: usize| json.match_indices(needle).nth(nth).unwrap().0 as u32;
        let edits =
            [0, 1, 2, 3].map(|nth| (0, at("4111", nth) + 1, at("4111", nth) + 3, &b"**"[..]));
        let edited = b.apply(answer(&edits), None).unwrap();
        assert_eq!(
            std::str::from_utf8(edited.value(0)).unwrap(),
            r#"{"pan": "4**1 \" 4**1", "n": 4001, "s": "4**1"}"#
        );
        let error = b.apply(
            answer(&[(0, at("4111", 0), at("4111", 0) + 1, b"\"")]),
            None,
        );
        assert!(error.unwrap_err().contains("JSON string"));
    }

    /// Plugins see a JSON string's escapes as spaces, so an escape's letter
    /// or hex digits do not run into a card number beside it; the text
    /// outside strings, other values and the batch itself are as they were.
    #[test]
    fn plugins_see_json_escapes_as_spaces() {
        let mut b = Batch::default();
        let json = r#"{"m": "Card:\n4111\u00e9\"x\\", "n": 4111}"#;
        b.push(0, PieceKind::Json, json.as_bytes());
        b.push(1, PieceKind::Text, br"a\n4111");
        let view = b.as_wit();
        let seen = std::str::from_utf8(&view.data[..json.len()]).unwrap();
        assert_eq!(seen, r#"{"m": "Card:  4111        x  ", "n": 4111}"#);
        // A text value's escapes too, as free text's are.
        assert_eq!(&view.data[json.len()..], b"a  4111");
        assert_eq!(b.value(0), json.as_bytes());
        // An escaped digit is the digit, on the escape's last byte.
        let mut digits = Batch::default();
        digits.push(0, PieceKind::Json, br#"{"c": "\u0034111 \u004a"}"#);
        assert_eq!(&digits.as_wit().data[..], br#"{"c": "     4111       "}"#);
        // Without a backslash, the batch itself is lent.
        let mut plain = Batch::default();
        plain.push(0, PieceKind::Json, br#"{"a": "4111"}"#);
        plain.push(1, PieceKind::Text, br"a/n");
        assert!(matches!(plain.as_wit(), std::borrow::Cow::Borrowed(_)));
    }

    /// JSON or a log kept in a text column: its escapes are shown as free
    /// text's are, so the card number after a `\n` is found, and edits
    /// come back to the value as it is.
    #[test]
    fn a_text_value_s_escapes_are_shown_as_free_text_s() {
        let mut b = Batch::default();
        let text = r#"{"note":"Card:\n4111111111111111", "d": "\u00341111"} C:\\new"#;
        b.push(0, PieceKind::Text, text.as_bytes());
        let view = b.as_wit();
        assert_eq!(
            std::str::from_utf8(&view.data).unwrap(),
            r#"{"note":"Card:  4111111111111111", "d": "     41111"} C:   ew"#
        );
        // A masker's edit of the card number; one that begins on the
        // escaped digit covers its escape.
        let at = text.find("4111").unwrap() as u32;
        let escaped = text.find(r"\u0034").unwrap() as u32;
        let edited = b
            .apply(
                answer(&[
                    (0, at + 6, at + 12, b"******"),
                    (0, escaped + 5, escaped + 8, b"#"),
                ]),
                None,
            )
            .unwrap();
        assert_eq!(
            std::str::from_utf8(edited.value(0)).unwrap(),
            r##"{"note":"Card:\n411111******1111", "d": "#11"} C:\\new"##
        );
        // An edit that begins or ends inside an escape is refused.
        for (start, end) in [(at - 1, at + 4), (escaped + 2, escaped + 8), (0, at - 1)] {
            let error = b.apply(answer(&[(0, start, end, b"*")]), None).unwrap_err();
            assert!(error.contains("inside a backslash escape"), "{error}");
        }
        // Text that is not UTF-8 is shown as it is.
        let mut raw = Batch::default();
        raw.push(0, PieceKind::Text, b"\xff\n4111");
        assert_eq!(&raw.as_wit().data[..], b"\xff\n4111");
    }

    /// `json` as one JSON value, after one edit.
    fn json_edited(json: &str, start: u32, end: u32, replacement: &[u8]) -> Result<String, String> {
        let mut b = Batch::default();
        b.push(0, PieceKind::Json, json.as_bytes());
        let edited = b.apply(answer(&[(0, start, end, replacement)]), None)?;
        Ok(String::from_utf8(edited.value(0).to_vec()).expect("apply keeps JSON UTF-8"))
    }

    #[test]
    fn edits_of_json_stay_inside_one_string_or_number() {
        // Whole escapes may be covered, and a number's digits zeroed.
        for (json, start, end, replacement, expected) in [
            (r#"{"a":"41\"11"}"#, 8, 10, "**", r#"{"a":"41**11"}"#),
            (r#"{"a":"\u0041 4111"}"#, 6, 12, "*", r#"{"a":"* 4111"}"#),
            (r#"{"a":"é4111"}"#, 6, 10, "••", r#"{"a":"••11"}"#),
            (r#"{"n":4111}"#, 6, 8, "**", r#"{"n":4001}"#),
            // A number's leading digits zeroed: the zeros go, one kept
            // where nothing else is left, so it stays a JSON number.
            (r#"{"n":4111}"#, 5, 6, "*", r#"{"n":111}"#),
            (
                r#"{"n":4111,"m":[-4111]}"#,
                5,
                9,
                "*",
                r#"{"n":0,"m":[-4111]}"#,
            ),
            (r#"[-4111.25e10]"#, 2, 5, "*", r#"[-1.25e10]"#),
            (r#"[4100, "0041"]"#, 1, 2, "*", r#"[100, "0041"]"#),
            (r#"[1e41]"#, 3, 4, "*", r#"[1e01]"#),
        ] {
            assert_eq!(
                json_edited(json, start, end, replacement.as_bytes()).as_deref(),
                Ok(expected),
                "{json} {start}..{end}"
            );
        }
        for (json, start, end, replacement, why) in [
            // Over a string's closing quote, or its opening one.
            (r#"{"a":"4111111111111111"}"#, 6, 23, &b"****"[..], "quote"),
            (r#"{"a":"4111111111111111"}"#, 5, 10, b"****", "quote"),
            // From a number into a string.
            (r#"{"n":4111,"s":"x"}"#, 5, 15, b"*", "quote"),
            // Splitting `\"`: after its backslash, or just before its end.
            (r#"{"a":"41\"11"}"#, 9, 10, b"*", "escape"),
            (r#"{"a":"41\"11"}"#, 6, 9, b"*", "escape"),
            // Splitting `\u0041` among its hex digits.
            (r#"{"a":"\u0041 4111"}"#, 9, 11, b"*", "escape"),
            (r#"{"a":"\u0041 4111"}"#, 6, 8, b"*", "escape"),
            // Not UTF-8 after the edit: a replacement that is not, or a
            // span that splits a character.
            (r#"{"a":"4111"}"#, 6, 7, &[0xff], "UTF-8"),
            (r#"{"a":"é4111"}"#, 7, 9, b"*", "UTF-8"),
        ] {
            let error = json_edited(json, start, end, replacement).unwrap_err();
            assert!(error.contains(why), "{json} {start}..{end}: {error}");
        }
    }
}
