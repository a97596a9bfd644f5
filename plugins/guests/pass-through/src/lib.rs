//! Test plugin (masking): selects every column and edits nothing, to
//! measure what the masking path itself costs.

use sluice_plugin::masking::{Masking, ValueBatch, ValueEdits};
use sluice_plugin::session::Session;
use sluice_plugin::types::Column;

struct PassThrough;

impl Masking for PassThrough {
    fn select_columns(_session: &Session, columns: &[Column]) -> Vec<bool> {
        vec![true; columns.len()]
    }

    fn mask_batch(_session: &Session, _batch: &ValueBatch) -> ValueEdits {
        ValueEdits::new()
    }
}

sluice_plugin::register_masking!(PassThrough);
