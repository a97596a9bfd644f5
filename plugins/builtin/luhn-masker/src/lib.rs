//! The `luhn-masker` masking plugin, shipped inside sluice as
//! `builtin:luhn-masker`: finds card numbers (PANs) in everything sluice
//! returns and shows at most the BIN and the last four digits, as PCI DSS
//! 3.4.1 requires of a displayed PAN.
//!
//! A card number is a run of 13 to 19 digits (single spaces or dashes
//! between groups allowed, grouped as cards are printed) that stands alone,
//! starts with a payment brand's leading digit and passes the Luhn check,
//! or such a stretch of whole groups of a longer run (a card number and its
//! expiry, say); [`scan`] says exactly what that means and why. The rules
//! are there as much to leave order numbers, phone numbers, timestamps,
//! UUIDs and hashes alone as to find the cards.
//!
//! Each digit between the kept ones is replaced by the mask character;
//! separators stay where they were: `4111 1111 1111 1111` becomes
//! `4111 11** **** 1111`. One edit per card number, or per stretch of
//! card numbers (windows) whose hidden digits overlap or touch.
//!
//! Every column is looked at except those of types that can never show a
//! card number ([`columns`]). Values and free text (errors, notices, the
//! query text sluice logs) go through the same scan, which allocates
//! nothing per value: only the edits it returns do.

mod columns;
mod config;
mod luhn;
mod scan;
mod words;

#[cfg(test)]
mod tests;

use std::sync::OnceLock;

use sluice_plugin::masking::{Masking, TextEdit, ValueBatch, ValueEdits};
use sluice_plugin::session::Session;
use sluice_plugin::types::Column;

use crate::config::Settings;

struct LuhnMasker;

impl Masking for LuhnMasker {
    fn check_config() -> Result<(), String> {
        settings().as_ref().map(|_| ()).map_err(Clone::clone)
    }

    fn select_columns(_session: &Session, columns: &[Column]) -> Vec<bool> {
        columns
            .iter()
            .map(|column| columns::may_hold_card_numbers(column.type_oid))
            .collect()
    }

    fn mask_batch(_session: &Session, batch: &ValueBatch) -> ValueEdits {
        mask_batch(configured(), batch)
    }

    fn mask_text(text: &str) -> Vec<TextEdit> {
        mask_text(configured(), text)
    }
}

sluice_plugin::register_masking!(LuhnMasker);

/// The configuration, read once per instance.
fn settings() -> &'static Result<Settings, String> {
    static SETTINGS: OnceLock<Result<Settings, String>> = OnceLock::new();
    SETTINGS.get_or_init(|| Settings::parse(&sluice_plugin::config::get()))
}

/// The configuration, or a panic (which fails the statement: never
/// unmasked values) when it is invalid. sluice runs `check_config` first,
/// so an invalid configuration never serves.
fn configured() -> &'static Settings {
    match settings() {
        Ok(settings) => settings,
        Err(error) => panic!("luhn-masker: invalid configuration: {error}"),
    }
}

/// The edits that mask every card number in `batch`.
///
/// The host sends every value as text, whatever its wire format, and
/// writes zeros itself over a masked span of a number column, so the type
/// of the column does not matter here.
fn mask_batch(settings: &Settings, batch: &ValueBatch) -> ValueEdits {
    let mut edits = ValueEdits::new();
    for (index, _column, value) in batch.values() {
        scan::scan(value, &settings.rules, |start, end| {
            // A value is shorter than the batch, whose offsets are u32.
            edits.push_with(index, start as u32, end as u32, |out| {
                write_replacement(&value[start..end], &settings.mask, out)
            });
        });
    }
    edits
}

/// The edits that mask every card number in `text`.
fn mask_text(settings: &Settings, text: &str) -> Vec<TextEdit> {
    let mut edits = Vec::new();
    scan::scan(text.as_bytes(), &settings.rules, |start, end| {
        // The span holds only ASCII digits and separators, and the mask is
        // one character: the replacement is UTF-8, and start and end are
        // character boundaries.
        let mut replacement = Vec::new();
        write_replacement(
            &text.as_bytes()[start..end],
            &settings.mask,
            &mut replacement,
        );
        let replacement =
            String::from_utf8(replacement).expect("digits replaced by a character are UTF-8");
        edits.push(TextEdit {
            start: start as u32,
            end: end as u32,
            replacement,
        });
    });
    edits
}

/// Appends `hidden` (digits and separators) to `out` with every digit
/// replaced by `mask` and the separators kept, so the grouping stays
/// readable.
fn write_replacement(hidden: &[u8], mask: &str, out: &mut Vec<u8>) {
    match *mask.as_bytes() {
        // The common case, one byte for one byte: a single pass the
        // compiler can keep tight.
        [mask] => out.extend(hidden.iter().map(
            |&byte| {
                if byte.is_ascii_digit() { mask } else { byte }
            },
        )),
        _ => {
            for &byte in hidden {
                if byte.is_ascii_digit() {
                    out.extend_from_slice(mask.as_bytes());
                } else {
                    out.push(byte);
                }
            }
        }
    }
}
