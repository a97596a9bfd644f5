//! Test plugin (masking): masks every occurrence of a configured needle.
//!
//! ```json
//! {"needle": "4111111111111111", "mask": "*", "panic_on": "boom"}
//! ```
//!
//! Every column is selected; each occurrence of `needle` in a value or in
//! free text is replaced with `mask` (one character, `*` by default)
//! repeated once per character of the needle. A batch or text containing
//! `panic_on` (if set) makes the plugin panic: a masking plugin failing
//! mid-result, for tests. The scan allocates nothing
//! per value: only the edits it returns.

use std::sync::OnceLock;

use serde::Deserialize;
use sluice_plugin::config;
use sluice_plugin::masking::{Masking, TextEdit, ValueBatch, ValueEdits};
use sluice_plugin::session::Session;
use sluice_plugin::types::Column;

struct MaskNeedle;

impl Masking for MaskNeedle {
    fn check_config() -> Result<(), String> {
        needle().as_ref().map(|_| ()).map_err(Clone::clone)
    }

    fn select_columns(_session: &Session, columns: &[Column]) -> Vec<bool> {
        vec![true; columns.len()]
    }

    fn mask_batch(_session: &Session, batch: &ValueBatch) -> ValueEdits {
        configured().mask_batch(batch)
    }

    fn mask_text(text: &str) -> Vec<TextEdit> {
        configured().mask_text(text)
    }
}

sluice_plugin::register_masking!(MaskNeedle);

/// The needle, read once per instance.
fn needle() -> &'static Result<Needle, String> {
    static NEEDLE: OnceLock<Result<Needle, String>> = OnceLock::new();
    NEEDLE.get_or_init(|| Needle::parse(&config::get()))
}

/// The needle, or a panic (which fails the statement: never unmasked
/// values) when the configuration is invalid.
fn configured() -> &'static Needle {
    match needle() {
        Ok(needle) => needle,
        Err(error) => panic!("guest-mask-needle: invalid configuration: {error}"),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    needle: String,
    #[serde(default = "default_mask")]
    mask: String,
    #[serde(default)]
    panic_on: Option<String>,
}

fn default_mask() -> String {
    "*".to_owned()
}

struct Needle {
    needle: String,
    panic_on: Option<String>,
    /// The mask repeated once per character of the needle.
    replacement: String,
}

impl Needle {
    fn parse(json: &str) -> Result<Needle, String> {
        let config: Config = serde_json::from_str(json).map_err(|error| error.to_string())?;
        if config.needle.is_empty() {
            return Err("needle is empty".to_owned());
        }
        let mut mask = config.mask.chars();
        let (Some(mask), None) = (mask.next(), mask.next()) else {
            return Err(format!("mask {:?} is not one character", config.mask));
        };
        let replacement = std::iter::repeat_n(mask, config.needle.chars().count()).collect();
        Ok(Needle {
            needle: config.needle,
            panic_on: config.panic_on.filter(|p| !p.is_empty()),
            replacement,
        })
    }

    fn mask_batch(&self, batch: &ValueBatch) -> ValueEdits {
        let mut edits = ValueEdits::new();
        for (index, _column, bytes) in batch.values() {
            self.panic_if_asked(bytes);
            for start in occurrences(bytes, self.needle.as_bytes()) {
                edits.push(
                    index,
                    start as u32,
                    (start + self.needle.len()) as u32,
                    self.replacement.as_bytes(),
                );
            }
        }
        edits
    }

    fn panic_if_asked(&self, bytes: &[u8]) {
        if let Some(trigger) = &self.panic_on
            && occurrences(bytes, trigger.as_bytes()).next().is_some()
        {
            panic!("guest-mask-needle: asked to fail on {trigger:?}");
        }
    }

    fn mask_text(&self, text: &str) -> Vec<TextEdit> {
        self.panic_if_asked(text.as_bytes());
        // A match of a UTF-8 needle in UTF-8 text is on character
        // boundaries.
        occurrences(text.as_bytes(), self.needle.as_bytes())
            .map(|start| TextEdit {
                start: start as u32,
                end: (start + self.needle.len()) as u32,
                replacement: self.replacement.clone(),
            })
            .collect()
    }
}

/// The start of each non-overlapping occurrence of `needle` (not empty) in
/// `haystack`, left to right.
fn occurrences<'a>(haystack: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    let mut from = 0;
    std::iter::from_fn(move || {
        let found = from
            + haystack
                .get(from..)?
                .windows(needle.len())
                .position(|w| w == needle)?;
        from = found + needle.len();
        Some(found)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin::masking::{apply_text_edits, apply_value_edits};

    #[test]
    fn masks_every_occurrence_in_values_and_text() {
        let needle = Needle::parse(r##"{"needle": "ab", "mask": "#"}"##).unwrap();
        let batch = ValueBatch::from_values([(0, &b"xxabyyab"[..]), (1, b"none"), (0, b"abab")]);
        let masked = apply_value_edits(&batch, &needle.mask_batch(&batch)).unwrap();
        assert_eq!(masked, [&b"xx##yy##"[..], b"none", b"####"]);
        let text = "ab ü ab";
        assert_eq!(
            apply_text_edits(text, &needle.mask_text(text)).unwrap(),
            "## ü ##"
        );
    }

    #[test]
    fn invalid_configurations_are_refused() {
        for json in [
            "{}",
            r#"{"needle": ""}"#,
            r#"{"needle": "x", "mask": "**"}"#,
            r#"{"needle": "x", "colour": "red"}"#,
        ] {
            assert!(Needle::parse(json).is_err(), "{json}");
        }
    }
}
