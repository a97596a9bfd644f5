//! Value batches: what one `mask-batch` call carries, and the edits it
//! brings back, checked before they are applied.
//!
//! A batch holds many values back to back in one buffer (the WIT
//! `value-batch`), so one call crosses the component boundary for many
//! rows, and a plugin answers with edits only: a batch it leaves alone
//! costs no copy on the way back. Each value is a piece of text a codec
//! ([`super::codec`]) made of a column value; its [`PieceKind`] says what
//! an edit may do to it.

use super::codec::{PieceKind, zero_digits};
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
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            values: ValueBatch {
                data: Vec::new(),
                ends: Vec::new(),
                columns: Vec::new(),
            },
            kinds: Vec::new(),
            edited: Vec::new(),
        }
    }
}

impl Batch {
    pub fn len(&self) -> usize {
        self.values.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.ends.is_empty()
    }

    pub fn push(&mut self, column: u16, kind: PieceKind, value: &[u8]) {
        let values = &mut self.values;
        values.data.extend_from_slice(value);
        values.ends.push(values.data.len() as u32);
        values.columns.push(column);
        self.kinds.push(kind);
        self.edited.push(false);
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
        let mut subset = Batch::default();
        let mut origin = Vec::new();
        for (index, &column) in self.values.columns.iter().enumerate() {
            if wanted.get(column as usize).copied().unwrap_or(false) {
                subset.push(column, self.kinds[index], self.value(index));
                origin.push(index as u32);
            }
        }
        (subset, origin)
    }

    /// The WIT record a call borrows.
    pub fn as_wit(&self) -> &ValueBatch {
        &self.values
    }

    /// Applies a plugin's edits. `origin` maps the edited batch's value
    /// indexes to this batch's (for a subset). Text that was valid UTF-8
    /// must stay so; in a number, the digits an edit covers become `0`
    /// whatever its replacement says; JSON stays JSON.
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
                    PieceKind::Text | PieceKind::Bytes => apply_spans(value, &spans, data)?,
                }
                let edited = &data[start..];
                if self.kinds[index] == PieceKind::Text
                    && std::str::from_utf8(edited).is_err()
                    && std::str::from_utf8(value).is_ok()
                {
                    return Err(format!("an edit of value {index} leaves it invalid UTF-8"));
                }
                out.edited[index] |= edited != value;
            }
            out.values.ends.push(data.len() as u32);
        }
        Ok(out)
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
fn json_spans(value: &[u8], spans: &Spans, out: &mut Vec<u8>) -> Result<(), String> {
    let mut reader = JsonStrings::default();
    let mut at = 0usize;
    for &(start, end, replacement) in spans {
        check_span(start, end, at, value.len())?;
        reader.read(&value[at..start]);
        out.extend_from_slice(&value[at..start]);
        if reader.in_string {
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
        }
        reader.read(&value[start..end]);
        at = end;
    }
    out.extend_from_slice(&value[at..]);
    Ok(())
}

/// Follows JSON text far enough to know whether a position is inside a
/// string.
#[derive(Default)]
struct JsonStrings {
    in_string: bool,
    escaped: bool,
}

impl JsonStrings {
    fn read(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.escaped {
                self.escaped = false;
            } else if self.in_string && b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = !self.in_string;
            }
        }
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
}
