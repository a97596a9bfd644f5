//! The plugin's config table: how much of a card number stays visible,
//! what hides the rest, and which leading digits make a card number.
//!
//! Every key is optional; the defaults show what PCI DSS 3.4.1 allows at
//! most (the BIN and the last four digits) and look for the payment
//! brands' card numbers.

use serde::Deserialize;
use serde_json::Value;
use sluice_plugin::config::without_json_position;

use crate::scan::Rules;

/// The configuration, checked: what the scan needs, and the mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub rules: Rules,
    /// The character that replaces each hidden digit, as UTF-8.
    pub mask: String,
}

/// The config table as it arrives. The values are read as JSON values, not
/// as typed fields, so that a value of the wrong type gets the same error
/// as a wrong value: one that names the key and what it may be (serde's
/// own type errors do not say which key).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    keep_first: Option<Value>,
    keep_last: Option<Value>,
    mask: Option<Value>,
    leading_digits: Option<Value>,
}

const DEFAULT_KEEP_FIRST: usize = 6;
const DEFAULT_KEEP_LAST: usize = 4;
const DEFAULT_MASK: &str = "*";
/// The major industry identifiers of the payment brands: 2 and 5
/// (Mastercard), 3 (Amex, JCB, Diners), 4 (Visa), 6 (Discover, UnionPay).
const DEFAULT_LEADING_DIGITS: &str = "23456";

impl Settings {
    /// Reads the config table (JSON, as the host hands it over), or says
    /// what is wrong with it: the key, and what it may be.
    pub fn parse(json: &str) -> Result<Settings, String> {
        let table: Table = serde_json::from_str(json).map_err(|error| {
            format!(
                "plugin config: {}",
                without_json_position(&error.to_string())
            )
        })?;
        let keep_first = match &table.keep_first {
            None => DEFAULT_KEEP_FIRST,
            Some(value) => match value.as_u64() {
                Some(n @ (0 | 6 | 8)) => n as usize,
                _ => {
                    return Err(format!(
                        "plugin config: keep_first must be 0, 6 or 8 \
                         (how many leading digits stay visible), not {value}"
                    ));
                }
            },
        };
        let keep_last = match &table.keep_last {
            None => DEFAULT_KEEP_LAST,
            Some(value) => match value.as_u64() {
                Some(n @ 0..=4) => n as usize,
                _ => {
                    return Err(format!(
                        "plugin config: keep_last must be 0, 1, 2, 3 or 4 \
                         (how many trailing digits stay visible), not {value}"
                    ));
                }
            },
        };
        let mask = match &table.mask {
            None => DEFAULT_MASK.to_owned(),
            Some(value) => parse_mask(value).ok_or_else(|| {
                format!(
                    "plugin config: mask must be one character that is not a digit, \
                     whitespace, a dash or a control character (such as \"*\", \"X\" \
                     or \"•\"), not {value}"
                )
            })?,
        };
        let leading_digits = match &table.leading_digits {
            None => parse_leading_digits(DEFAULT_LEADING_DIGITS).expect("the default is valid"),
            Some(value) => parse_leading_digits(value.as_str().unwrap_or("")).ok_or_else(|| {
                format!(
                    "plugin config: leading_digits must be a string of distinct digits \
                     a card number may start with (\"{DEFAULT_LEADING_DIGITS}\" by default, \
                     \"0123456789\" for any), not {value}"
                )
            })?,
        };
        Ok(Settings {
            rules: Rules {
                leading_digits,
                keep_first,
                keep_last,
            },
            mask,
        })
    }
}

/// The mask character, when `value` is a string of one character that
/// cannot be mistaken for part of a card number or vanish from sight: a
/// digit would leave a number that looks real, a space or a dash would
/// read as a separator, a control character may not show at all.
fn parse_mask(value: &Value) -> Option<String> {
    let text = value.as_str()?;
    let mut chars = text.chars();
    let (Some(mask), None) = (chars.next(), chars.next()) else {
        return None;
    };
    let refused = mask.is_ascii_digit() || mask.is_whitespace() || mask == '-' || mask.is_control();
    (!refused).then(|| text.to_owned())
}

/// The set of digits in `text` (bit `d` for digit `d`), when it is a
/// non-empty string of distinct ASCII digits.
fn parse_leading_digits(text: &str) -> Option<u16> {
    let mut set: u16 = 0;
    for byte in text.bytes() {
        if !byte.is_ascii_digit() {
            return None;
        }
        let bit = 1 << (byte - b'0');
        if set & bit != 0 {
            return None;
        }
        set |= bit;
    }
    (set != 0).then_some(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_table_gives_the_defaults() {
        let settings = Settings::parse("{}").unwrap();
        assert_eq!(
            settings,
            Settings {
                rules: Rules {
                    leading_digits: 0b111_1100,
                    keep_first: 6,
                    keep_last: 4,
                },
                mask: "*".to_owned(),
            }
        );
    }

    #[test]
    fn every_key_can_be_set() {
        let settings = Settings::parse(
            r#"{"keep_first": 8, "keep_last": 2, "mask": "•", "leading_digits": "0123456789"}"#,
        )
        .unwrap();
        assert_eq!(settings.rules.keep_first, 8);
        assert_eq!(settings.rules.keep_last, 2);
        assert_eq!(settings.mask, "•");
        assert_eq!(settings.rules.leading_digits, 0b11_1111_1111);
        let settings =
            Settings::parse(r#"{"keep_first": 0, "keep_last": 0, "mask": "X"}"#).unwrap();
        assert_eq!(
            (settings.rules.keep_first, settings.rules.keep_last),
            (0, 0)
        );
        assert_eq!(settings.mask, "X");
        let settings = Settings::parse(r#"{"leading_digits": "4"}"#).unwrap();
        assert_eq!(settings.rules.leading_digits, 1 << 4);
    }

    #[test]
    fn bad_values_are_refused_naming_the_key_and_what_it_may_be() {
        for (json, expected) in [
            (
                r#"{"keep_first": 4}"#,
                "plugin config: keep_first must be 0, 6 or 8 \
                 (how many leading digits stay visible), not 4",
            ),
            (
                r#"{"keep_first": "6"}"#,
                "plugin config: keep_first must be 0, 6 or 8 \
                 (how many leading digits stay visible), not \"6\"",
            ),
            (
                r#"{"keep_last": 5}"#,
                "plugin config: keep_last must be 0, 1, 2, 3 or 4 \
                 (how many trailing digits stay visible), not 5",
            ),
            (
                r#"{"keep_last": -1}"#,
                "plugin config: keep_last must be 0, 1, 2, 3 or 4 \
                 (how many trailing digits stay visible), not -1",
            ),
            (
                r#"{"mask": "**"}"#,
                "plugin config: mask must be one character that is not a digit, \
                 whitespace, a dash or a control character (such as \"*\", \"X\" \
                 or \"•\"), not \"**\"",
            ),
            (
                r#"{"leading_digits": "445"}"#,
                "plugin config: leading_digits must be a string of distinct digits \
                 a card number may start with (\"23456\" by default, \"0123456789\" \
                 for any), not \"445\"",
            ),
        ] {
            assert_eq!(Settings::parse(json).unwrap_err(), expected, "{json}");
        }
    }

    #[test]
    fn masks_that_could_pass_for_digits_or_vanish_are_refused() {
        for mask in [
            "", "0", "9", " ", "-", "\t", "\n", "\u{7f}", "\u{a0}", "ab", "*•",
        ] {
            let json = serde_json::json!({ "mask": mask }).to_string();
            let error = Settings::parse(&json).unwrap_err();
            assert!(
                error.starts_with("plugin config: mask must be"),
                "{mask:?}: {error}"
            );
        }
        for mask in ["*", "#", "X", "x", "•", "█", "_"] {
            let json = serde_json::json!({ "mask": mask }).to_string();
            assert_eq!(Settings::parse(&json).unwrap().mask, mask);
        }
        assert!(Settings::parse(r#"{"mask": 7}"#).is_err());
    }

    #[test]
    fn leading_digits_must_be_distinct_digits() {
        for digits in [
            serde_json::json!(""),
            serde_json::json!("4a"),
            serde_json::json!("2 3"),
            serde_json::json!("٤"),
            serde_json::json!(4),
            serde_json::json!(["4"]),
        ] {
            let json = serde_json::json!({ "leading_digits": digits }).to_string();
            let error = Settings::parse(&json).unwrap_err();
            assert!(
                error.starts_with("plugin config: leading_digits must be"),
                "{json}: {error}"
            );
        }
    }

    #[test]
    fn unknown_keys_and_other_shapes_are_refused() {
        let error = Settings::parse(r#"{"keep_frist": 6}"#).unwrap_err();
        assert_eq!(
            error,
            "plugin config: unknown field `keep_frist`, expected one of \
             `keep_first`, `keep_last`, `mask`, `leading_digits`"
        );
        let error = Settings::parse("5").unwrap_err();
        assert!(error.starts_with("plugin config: invalid type"), "{error}");
        assert!(!error.contains(" at line "), "{error}");
    }
}
