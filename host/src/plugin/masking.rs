//! The data side of the masking hook: value batches and the edits plugins
//! return, checked before they are applied.
//!
//! A batch holds many values back to back in one buffer (the WIT
//! `value-batch`), so one call crosses the component boundary for many
//! rows, and a plugin answers with edits only: a batch it leaves alone
//! costs no copy on the way back.

use super::bindings::masking::exports::sluice::gateway::masking::{ValueBatch, ValueEdit};

/// Values of one result set's selected columns, kept in the WIT record's
/// own shape so a call borrows it as it is.
#[derive(Debug, Clone)]
pub struct Batch {
    values: ValueBatch,
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            values: ValueBatch {
                data: Vec::new(),
                ends: Vec::new(),
                columns: Vec::new(),
            },
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

    pub fn push(&mut self, column: u16, value: &[u8]) {
        let values = &mut self.values;
        values.data.extend_from_slice(value);
        values.ends.push(values.data.len() as u32);
        values.columns.push(column);
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
                subset.push(column, self.value(index));
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
    /// indexes to this batch's (for a subset); `must_be_utf8` says per
    /// column whether its values are text that must stay valid UTF-8.
    pub fn apply(
        &self,
        mut edits: Vec<ValueEdit>,
        origin: Option<&[u32]>,
        must_be_utf8: &[bool],
    ) -> Result<Batch, String> {
        for edit in &mut edits {
            if let Some(origin) = origin {
                edit.value = *origin.get(edit.value as usize).ok_or_else(|| {
                    format!(
                        "an edit names value {} of a batch of {}",
                        edit.value,
                        origin.len()
                    )
                })?;
            }
            if edit.value as usize >= self.len() {
                return Err(format!(
                    "an edit names value {} of a batch of {}",
                    edit.value,
                    self.len()
                ));
            }
        }
        edits.sort_by_key(|e| (e.value, e.start));
        let mut out = ValueBatch {
            data: Vec::with_capacity(self.values.data.len()),
            ends: Vec::with_capacity(self.len()),
            columns: self.values.columns.clone(),
        };
        let mut edits = edits.into_iter().peekable();
        for index in 0..self.len() {
            let value = self.value(index);
            let mut spans = Vec::new();
            while let Some(edit) = edits.next_if(|e| e.value as usize == index) {
                spans.push((edit.start, edit.end, edit.replacement));
            }
            if spans.is_empty() {
                out.data.extend_from_slice(value);
            } else {
                let edited = apply_spans(value, spans)?;
                let column = self.values.columns[index] as usize;
                if must_be_utf8.get(column).copied().unwrap_or(true)
                    && std::str::from_utf8(&edited).is_err()
                {
                    return Err(format!("an edit of value {index} leaves it invalid UTF-8"));
                }
                out.data.extend_from_slice(&edited);
            }
            out.ends.push(out.data.len() as u32);
        }
        Ok(Batch { values: out })
    }
}

/// Replaces spans of `input`. Spans must be in order, must not overlap and
/// must lie within the input.
pub fn apply_spans(
    input: &[u8],
    spans: impl IntoIterator<Item = (u32, u32, Vec<u8>)>,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(input.len());
    let mut at = 0usize;
    for (start, end, replacement) in spans {
        let (start, end) = (start as usize, end as usize);
        if start < at || end < start || end > input.len() {
            return Err(format!(
                "edit {start}..{end} is out of order, overlapping or outside a value of {} bytes",
                input.len()
            ));
        }
        out.extend_from_slice(&input[at..start]);
        out.extend_from_slice(&replacement);
        at = end;
    }
    out.extend_from_slice(&input[at..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(values: &[(&str, u16)]) -> Batch {
        let mut batch = Batch::default();
        for (value, column) in values {
            batch.push(*column, value.as_bytes());
        }
        batch
    }

    fn edit(value: u32, start: u32, end: u32, replacement: &str) -> ValueEdit {
        ValueEdit {
            value,
            start,
            end,
            replacement: replacement.as_bytes().to_vec(),
        }
    }

    #[test]
    fn edits_replace_spans_of_the_values_they_name() {
        let b = batch(&[("card 4111", 0), ("none", 1), ("4111 and 4111", 0)]);
        let edited = b
            .apply(
                vec![
                    edit(2, 9, 13, "****"),
                    edit(0, 5, 9, "****"),
                    edit(2, 0, 4, "#"),
                ],
                None,
                &[true, true],
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
        for (bad, why) in [
            (vec![edit(1, 0, 1, "x")], "names value 1"),
            (vec![edit(0, 2, 9, "x")], "outside"),
            (vec![edit(0, 2, 1, "x")], "outside"),
            (vec![edit(0, 0, 2, "x"), edit(0, 1, 3, "y")], "overlapping"),
        ] {
            let error = b.apply(bad, None, &[true]).unwrap_err();
            assert!(error.contains(why), "{error}");
        }
        let error = b
            .apply(
                vec![ValueEdit {
                    value: 0,
                    start: 0,
                    end: 1,
                    replacement: vec![0xff],
                }],
                None,
                &[true],
            )
            .unwrap_err();
        assert!(error.contains("UTF-8"), "{error}");
    }

    #[test]
    fn a_subset_maps_edits_back_to_the_whole_batch() {
        let b = batch(&[("a1", 0), ("b1", 1), ("a2", 0)]);
        let (subset, origin) = b.subset(&[true, false]);
        assert_eq!(subset.len(), 2);
        assert_eq!(subset.value(1), b"a2");
        let edited = b
            .apply(vec![edit(1, 0, 1, "A")], Some(&origin), &[true, true])
            .unwrap();
        assert_eq!(edited.value(2), b"A2");
        assert_eq!(edited.value(1), b"b1");
    }
}
