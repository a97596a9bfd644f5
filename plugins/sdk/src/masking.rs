//! Masking plugins: what to hide in what the gateway returns.
//!
//! For every result set sluice first asks [`Masking::select_columns`]
//! which columns the plugin wants to see, then sends the selected columns'
//! values in batches of many rows to [`Masking::mask_batch`], all in one
//! buffer ([`ValueBatch`]). The plugin answers with edits only (spans to
//! replace, gathered in one [`ValueEdits`] with [`ValueEdits::push`]);
//! values it leaves alone cost nothing more.
//! Free text — error and notice fields, notification payloads, column
//! names, and the query text sluice writes to its audit trail and logs —
//! goes to [`Masking::mask_text`].
//!
//! A panic, a timeout or edits the host cannot apply (out of range,
//! overlapping, out of order, breaking UTF-8) fail the statement: the
//! client gets an error, never the unmasked values.
//!
//! Scanning values through [`ValueBatch::values`] allocates nothing; a
//! masker that allocates per value pays for it on every row.

use std::marker::PhantomData;

pub use crate::wit::masking::exports::sluice::gateway::masking::{
    TextEdit, ValueBatch, ValueEdit, ValueEdits,
};

use crate::session::Session;
use crate::types::Column;
use crate::wit::host::sluice::gateway::session::Session as LentSession;
use crate::wit::masking::exports::sluice::gateway::masking;
use crate::wit::plugin::exports::sluice::gateway::plugin;

/// A masker: finds what must be hidden in result values and free text.
///
/// Implement it for a type of your own and register that type with
/// [`register_masking!`](crate::register_masking).
pub trait Masking {
    /// Checks the plugin's configuration ([`crate::config`]).
    ///
    /// Called once on a fresh instance whenever the plugin is loaded or
    /// reloaded, before it serves any call. An error (saying what is
    /// wrong) rejects this version: at startup sluice refuses to start, on
    /// a reload the version already loaded keeps serving. A panic or a
    /// timeout counts as an error. The default accepts any configuration.
    fn check_config() -> Result<(), String> {
        Ok(())
    }

    /// Which of a result set's columns to be sent: one flag per column,
    /// in order, `true` to receive that column's values in
    /// [`Masking::mask_batch`].
    ///
    /// Called once per result set. A plugin that masks only text columns
    /// never pays for integers; one that selects nothing costs nothing
    /// more for that result set. An answer of the wrong length fails the
    /// statement.
    fn select_columns(session: &Session, columns: &[Column]) -> Vec<bool>;

    /// The edits to make to a batch of the selected columns' values.
    ///
    /// Called with many rows at a time; NULLs are not sent. Each edit
    /// names a value by its index in the batch and a span of it by offsets
    /// relative to the value's start. Edits of one value must come in
    /// order and not overlap, and a text value must stay valid UTF-8.
    ///
    /// Values are text whatever format the client asked for: sluice sends
    /// a binary value as the text a text-format result would show (numbers
    /// as decimal digits, jsonb without its version byte, each element of
    /// a binary array and each field of a binary record as a value of its
    /// own). In a number column sluice writes `0` over the digits an edit
    /// covers instead of its replacement, so the value stays a number.
    fn mask_batch(session: &Session, batch: &ValueBatch) -> ValueEdits;

    /// The edits to make to free text: error and notice fields,
    /// notification channels and payloads, column names, reported server
    /// parameters, and the query text and parameters sluice writes to its
    /// audit trail, logs and traces. Several short texts may come in one
    /// call separated by NUL characters; an edit must not remove or add
    /// one.
    ///
    /// Edits use byte offsets on character boundaries, in order, without
    /// overlap. The default makes none: a plugin masking values that can
    /// also appear in error messages or query text should implement it.
    fn mask_text(text: &str) -> Vec<TextEdit> {
        let _ = text;
        Vec::new()
    }
}

/// Registers a type implementing [`Masking`] as the plugin's masker. Call
/// it once per crate, at the top level.
#[macro_export]
macro_rules! register_masking {
    ($plugin:ty) => {
        $crate::__register!($plugin, masking, Masking, __export_masking);
    };
}

/// Connects a [`Masking`] to the generated bindings; used by
/// [`register_masking!`](crate::register_masking).
#[doc(hidden)]
pub struct Adapter<T>(PhantomData<T>);

impl<T: Masking> plugin::Guest for Adapter<T> {
    fn check_config() -> Result<(), String> {
        T::check_config()
    }
}

impl<T: Masking> masking::Guest for Adapter<T> {
    fn select_columns(session: &LentSession, columns: Vec<Column>) -> Vec<bool> {
        T::select_columns(&Session::lent(session), &columns)
    }

    fn mask_batch(session: &LentSession, batch: ValueBatch) -> ValueEdits {
        T::mask_batch(&Session::lent(session), &batch)
    }

    fn mask_text(text: String) -> Vec<TextEdit> {
        T::mask_text(&text)
    }
}

impl ValueBatch {
    /// How many values the batch holds.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the batch holds no values.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The values, in order, as `(index, column, bytes)`: `index` is what
    /// a [`ValueEdit`] names the value by, `column` the position of its
    /// column in the list given to [`Masking::select_columns`], and
    /// `bytes` the value itself, borrowed from the batch.
    ///
    /// Allocates nothing. Iteration stops early at a value whose offsets
    /// do not fit the buffer (never the case in batches sluice sends).
    ///
    /// ```
    /// use sluice_plugin::masking::ValueBatch;
    ///
    /// let batch = ValueBatch::from_values([(0, &b"alice"[..]), (1, b"4111")]);
    /// let values: Vec<_> = batch.values().collect();
    /// assert_eq!(values, [(0, 0, &b"alice"[..]), (1, 1, &b"4111"[..])]);
    /// ```
    pub fn values(&self) -> Values<'_> {
        Values {
            batch: self,
            next: 0,
            start: 0,
        }
    }

    /// A batch of `values`, each with the position of its column: the
    /// shape sluice sends, for tests.
    pub fn from_values<'a>(values: impl IntoIterator<Item = (u16, &'a [u8])>) -> Self {
        let mut batch = ValueBatch {
            data: Vec::new(),
            ends: Vec::new(),
            columns: Vec::new(),
        };
        for (column, bytes) in values {
            batch.data.extend_from_slice(bytes);
            let end = u32::try_from(batch.data.len()).expect("a batch holds less than 4 GiB");
            batch.ends.push(end);
            batch.columns.push(column);
        }
        batch
    }
}

/// The values of a [`ValueBatch`], from [`ValueBatch::values`].
#[derive(Debug, Clone)]
pub struct Values<'a> {
    batch: &'a ValueBatch,
    next: usize,
    start: usize,
}

impl<'a> Iterator for Values<'a> {
    /// `(index, column, bytes)`.
    type Item = (u32, u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let end = *self.batch.ends.get(self.next)? as usize;
        let column = *self.batch.columns.get(self.next)?;
        let bytes = self.batch.data.get(self.start..end)?;
        let index = u32::try_from(self.next).ok()?;
        self.next += 1;
        self.start = end;
        Some((index, column, bytes))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.batch.ends.len().saturating_sub(self.next)))
    }
}

impl std::iter::FusedIterator for Values<'_> {}

impl Default for ValueEdits {
    fn default() -> Self {
        ValueEdits::new()
    }
}

impl ValueEdits {
    /// No edits.
    pub fn new() -> Self {
        ValueEdits {
            edits: Vec::new(),
            replacements: Vec::new(),
        }
    }

    /// Adds an edit: replace bytes `start..end` of value `value` (offsets
    /// relative to the value's start) with `replacement`.
    ///
    /// ```
    /// use sluice_plugin::masking::ValueEdits;
    ///
    /// let mut edits = ValueEdits::new();
    /// edits.push(0, 6, 12, b"******");
    /// let all: Vec<_> = edits.iter().collect();
    /// assert_eq!(all, [(0, 6, 12, &b"******"[..])]);
    /// ```
    pub fn push(&mut self, value: u32, start: u32, end: u32, replacement: &[u8]) {
        self.push_with(value, start, end, |out| out.extend_from_slice(replacement));
    }

    /// Like [`ValueEdits::push`], with the replacement written by `write`
    /// straight into the shared buffer: a masker that builds replacements
    /// allocates nothing per edit.
    ///
    /// ```
    /// use sluice_plugin::masking::ValueEdits;
    ///
    /// let mut edits = ValueEdits::new();
    /// edits.push_with(0, 6, 12, |out| out.extend(std::iter::repeat_n(b'*', 6)));
    /// assert_eq!(edits.iter().next(), Some((0, 6, 12, &b"******"[..])));
    /// ```
    pub fn push_with(
        &mut self,
        value: u32,
        start: u32,
        end: u32,
        write: impl FnOnce(&mut Vec<u8>),
    ) {
        write(&mut self.replacements);
        let replacement_end =
            u32::try_from(self.replacements.len()).expect("replacements hold less than 4 GiB");
        self.edits.push(ValueEdit {
            value,
            start,
            end,
            replacement_end,
        });
    }

    /// How many edits there are.
    pub fn len(&self) -> usize {
        self.edits.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.edits.is_empty()
    }

    /// The edits in the order they were pushed, as `(value, start, end,
    /// replacement)`. Stops early at an edit whose replacement does not fit
    /// the buffer (never the case for edits made with [`ValueEdits::push`]).
    pub fn iter(&self) -> impl Iterator<Item = (u32, u32, u32, &[u8])> + '_ {
        let mut from = 0usize;
        self.edits.iter().map_while(move |edit| {
            let to = edit.replacement_end as usize;
            let replacement = self.replacements.get(from..to)?;
            from = to;
            Some((edit.value, edit.start, edit.end, replacement))
        })
    }
}

/// The batch's values with `edits` made, as sluice makes them: a test
/// helper that also checks the edits are ones sluice accepts (each value
/// index in the batch, each span inside its value, one value's edits in
/// order and not overlapping), naming the first that is not.
pub fn apply_value_edits(batch: &ValueBatch, edits: &ValueEdits) -> Result<Vec<Vec<u8>>, String> {
    let mut values: Vec<Vec<u8>> = batch.values().map(|(_, _, bytes)| bytes.to_vec()).collect();
    if values.len() != batch.len() {
        return Err("the batch's offsets do not fit its buffer".to_owned());
    }
    let listed: Vec<_> = edits.iter().collect();
    if listed.len() != edits.len() {
        return Err("an edit's replacement does not fit the replacements buffer".to_owned());
    }
    // Edits are applied last to first, so earlier offsets stay valid.
    let mut checked_from = vec![u32::MAX; values.len()];
    for (number, (index, start, end, replacement)) in listed.into_iter().enumerate().rev() {
        let value = values
            .get_mut(index as usize)
            .ok_or_else(|| format!("edit {number} names value {index}, not in the batch"))?;
        if start > end || end as usize > value.len() {
            return Err(format!(
                "edit {number} spans {start}..{end} of value {index}, which is {} bytes long",
                value.len()
            ));
        }
        let next_start = &mut checked_from[index as usize];
        if end > *next_start {
            return Err(format!(
                "edit {number} overlaps or follows the next edit of value {index}"
            ));
        }
        *next_start = start;
        value.splice(start as usize..end as usize, replacement.iter().copied());
    }
    Ok(values)
}

/// `text` with `edits` made, as sluice makes them: a test helper that also
/// checks the edits are ones sluice accepts (in order, not overlapping,
/// inside the text, on character boundaries), naming the first that is
/// not.
pub fn apply_text_edits(text: &str, edits: &[TextEdit]) -> Result<String, String> {
    let mut masked = String::with_capacity(text.len());
    let mut copied = 0;
    for (number, edit) in edits.iter().enumerate() {
        let (start, end) = (edit.start as usize, edit.end as usize);
        if start < copied || start > end {
            return Err(format!(
                "edit {number} ({start}..{end}) overlaps or precedes the one before"
            ));
        }
        if end > text.len() || !text.is_char_boundary(start) || !text.is_char_boundary(end) {
            return Err(format!(
                "edit {number} ({start}..{end}) is not on character boundaries of the text"
            ));
        }
        masked.push_str(&text[copied..start]);
        masked.push_str(&edit.replacement);
        copied = end;
    }
    masked.push_str(&text[copied..]);
    Ok(masked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_walk_the_buffer() {
        let batch = ValueBatch::from_values([(2, &b"ab"[..]), (0, b""), (1, b"xyz")]);
        assert_eq!(batch.len(), 3);
        let values: Vec<_> = batch.values().collect();
        assert_eq!(
            values,
            [(0, 2, &b"ab"[..]), (1, 0, &b""[..]), (2, 1, &b"xyz"[..])]
        );
    }

    #[test]
    fn values_stop_at_offsets_outside_the_buffer() {
        let batch = ValueBatch {
            data: b"abc".to_vec(),
            ends: vec![1, 9, 3],
            columns: vec![0, 0, 0],
        };
        let mut values = batch.values();
        assert_eq!(values.next(), Some((0, 0, &b"a"[..])));
        assert_eq!(values.next(), None);
        assert_eq!(values.next(), None);
    }

    #[test]
    fn value_edits_apply_per_value() {
        let batch = ValueBatch::from_values([(0, &b"4111 1111"[..]), (0, b"ok")]);
        let mut edits = ValueEdits::new();
        edits.push(0, 0, 4, b"****");
        edits.push(0, 5, 9, b"#");
        let values = apply_value_edits(&batch, &edits).unwrap();
        assert_eq!(values, [b"**** #".to_vec(), b"ok".to_vec()]);
    }

    #[test]
    fn value_edits_out_of_order_or_range_are_refused() {
        let batch = ValueBatch::from_values([(0, &b"abcdef"[..])]);
        let edits = |spans: &[(u32, u32, u32)]| {
            let mut edits = ValueEdits::new();
            for (value, start, end) in spans {
                edits.push(*value, *start, *end, b"");
            }
            edits
        };
        assert!(apply_value_edits(&batch, &edits(&[(0, 3, 4), (0, 1, 2)])).is_err());
        assert!(apply_value_edits(&batch, &edits(&[(0, 1, 4), (0, 3, 5)])).is_err());
        assert!(apply_value_edits(&batch, &edits(&[(0, 4, 7)])).is_err());
        assert!(apply_value_edits(&batch, &edits(&[(1, 0, 1)])).is_err());
        // A replacement beyond the buffer.
        let mut broken = edits(&[(0, 0, 1)]);
        broken.edits[0].replacement_end = 9;
        assert!(apply_value_edits(&batch, &broken).is_err());
    }

    #[test]
    fn text_edits_apply_in_order() {
        let edit = |start, end, replacement: &str| TextEdit {
            start,
            end,
            replacement: replacement.into(),
        };
        let text = "card 4111 for ü";
        assert_eq!(
            apply_text_edits(text, &[edit(5, 9, "****")]).unwrap(),
            "card **** for ü"
        );
        assert!(apply_text_edits(text, &[edit(5, 9, ""), edit(6, 7, "")]).is_err());
        assert!(apply_text_edits(text, &[edit(15, 16, "")]).is_err());
    }
}
