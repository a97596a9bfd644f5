//! Test plugin (masking): gives answers the host must refuse, so a test can
//! check that an instance which answered garbage is replaced.
//!
//! - `select_columns` returns one flag more than there are columns.
//! - `mask_text` returns an edit that ends past the text when the text
//!   contains `bad`, and no edit otherwise.
//! - `mask_batch` edits nothing.

use sluice_plugin::masking::{Masking, TextEdit, ValueBatch, ValueEdits};
use sluice_plugin::session::Session;
use sluice_plugin::types::Column;

struct BadAnswer;

impl Masking for BadAnswer {
    fn select_columns(_session: &Session, columns: &[Column]) -> Vec<bool> {
        vec![true; columns.len() + 1]
    }

    fn mask_batch(_session: &Session, _batch: &ValueBatch) -> ValueEdits {
        ValueEdits::new()
    }

    fn mask_text(text: &str) -> Vec<TextEdit> {
        if !text.contains("bad") {
            return Vec::new();
        }
        let past_the_end = text.len() as u32 + 1;
        vec![TextEdit {
            start: 0,
            end: past_the_end,
            replacement: "*".to_owned(),
        }]
    }
}

sluice_plugin::register_masking!(BadAnswer);
