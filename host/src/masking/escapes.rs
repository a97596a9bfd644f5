//! Backslash escapes in free text, as masking plugins are shown them.
//!
//! A statement's text writes a line break in an `E'...'` string as `\n`,
//! a JSON literal in it writes one the same way, and `\x01` or `\u00e9`
//! stand for one character each. A masker that reads the text as it is
//! sees the escape's letter (or hex digits) glued to whatever digits come
//! next — `E'Card:\n4111111111111111'` reads as digits after an `n`, which
//! no careful masker takes for a card number (`pan4111...` is an
//! identifier) — and the card number would reach the audit trail and the
//! log raw. So each escape a letter begins is shown to the plugins as as
//! many spaces; an escape that stands for a digit (`\x34`, `\u0034`,
//! `\U00000034`) as spaces and the digit on its last byte, so that digits
//! after it run on from it, as they do in what the escape writes. Edits
//! come back against the same offsets, and none may begin or end inside an
//! escape (the answer is refused: masking fails closed).
//!
//! Text escaped twice is read the same: an escape after an escaped
//! backslash (`\\n`, as JSON in an `E'...'` string writes a line break) is
//! one escape, shown as spaces from its first backslash.
//!
//! Escapes that stand for a digit and begin with one are read too: a
//! `E'...'` string's octal `\064` and a `U&'...'` string's `\0034` and
//! `\+000034` are `4`. Other escapes a digit begins (`\4111...`, a
//! Windows path's `C:\4111...`) are left as they are: a backslash before
//! digits already sets them apart.
//!
//! Not found: a card number with an escape in its middle (`411\x3111...`),
//! whose digits are shown with the escape's spaces among them.

use std::ops::Range;

/// A backslash escape in a text: where it is, and the digit it stands
/// for, if it stands for one (shown on its last byte).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escape {
    pub range: Range<usize>,
    pub digit: Option<u8>,
}

/// `text` with every backslash escape a letter begins blanked, and every
/// escape that stands for a digit shown as that digit (see the module),
/// and where those escapes are, in order; `None` when it has none.
pub fn blanked(text: &str) -> Option<(String, Vec<Escape>)> {
    if !text.contains('\\') {
        return None;
    }
    let bytes = text.as_bytes();
    let mut view = bytes.to_vec();
    let mut escapes = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] != b'\\' {
            at += 1;
            continue;
        }
        let Some(&next) = bytes.get(at + 1) else {
            break;
        };
        // An escaped backslash is itself — unless an escape follows it:
        // text escaped twice (JSON in an `E'...'` string writes a line
        // break as `\\n`) reads as one escape once unescaped, and is shown
        // as one, its first backslash included.
        let begins = if next == b'\\' { at + 1 } else { at };
        let Some((end, digit)) = escape_at(bytes, begins) else {
            if next == b'\\' {
                at += 2;
                continue;
            }
            at += 1;
            continue;
        };
        view[at..end].fill(b' ');
        if let Some(digit) = digit {
            view[end - 1] = digit;
        }
        escapes.push(Escape {
            range: at..end,
            digit,
        });
        at = end;
    }
    if escapes.is_empty() {
        return None;
    }
    // Only ASCII bytes were replaced, by ASCII: still UTF-8.
    let view = String::from_utf8(view).ok()?;
    Some((view, escapes))
}

/// The escape whose backslash is at `at`: where it ends, and the digit it
/// stands for. `None` for a backslash that begins no escape read here.
fn escape_at(bytes: &[u8], at: usize) -> Option<(usize, Option<u8>)> {
    let rest = &bytes[at + 1..];
    let hex_run = |from: usize, most: usize| {
        rest[from..]
            .iter()
            .take(most)
            .take_while(|b| b.is_ascii_hexdigit())
            .count()
    };
    let digit_of = |hex: &[u8]| {
        let value = u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
        (0x30..=0x39).contains(&value).then_some(value as u8)
    };
    let letter = *rest.first()?;
    if letter.is_ascii_alphabetic() {
        let wanted = match letter {
            b'x' => 2,
            b'u' => 4,
            b'U' => 8,
            _ => 0,
        };
        let hex = hex_run(1, wanted);
        let digit = (wanted > 0 && hex == wanted)
            .then(|| digit_of(&rest[1..1 + hex]))
            .flatten();
        return Some((at + 2 + hex, digit));
    }
    // `\+XXXXXX` and `\XXXX` (U&'' strings), `\0oo` (E'' octal): read
    // only when they stand for a digit.
    if letter == b'+' && hex_run(1, 6) == 6 {
        return digit_of(&rest[1..7]).map(|digit| (at + 8, Some(digit)));
    }
    if hex_run(0, 4) == 4
        && let Some(digit) = digit_of(&rest[..4])
    {
        return Some((at + 5, Some(digit)));
    }
    if rest.len() >= 3 && rest[0] == b'0' && rest[1..3].iter().all(|b| (b'0'..=b'7').contains(b)) {
        let value = u32::from(rest[1] - b'0') * 8 + u32::from(rest[2] - b'0');
        if (0x30..=0x39).contains(&value) {
            return Some((at + 4, Some(value as u8)));
        }
    }
    None
}

/// An edit from `start` to `end` made against the view, as an edit of the
/// text: one that begins on an escape's digit begins at its backslash
/// instead (the escape is that digit); `None` when it begins or ends
/// anywhere else inside an escape. `escapes` are in order, so each end is
/// looked up, not searched for: a text may hold many of both.
pub fn edit_of_text(escapes: &[Escape], start: usize, end: usize) -> Option<(usize, usize)> {
    let around = |at: usize| {
        let after = escapes.partition_point(|escape| escape.range.end <= at);
        escapes.get(after).filter(|escape| escape.range.start < at)
    };
    let start = match around(start) {
        None => start,
        Some(escape) if escape.digit.is_some() && start == escape.range.end - 1 => {
            escape.range.start
        }
        Some(_) => return None,
    };
    match around(end) {
        None => Some((start, end)),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(text: &str) -> String {
        blanked(text)
            .map(|(view, _)| view)
            .unwrap_or_else(|| text.to_owned())
    }

    #[test]
    fn escapes_a_letter_begins_are_shown_as_spaces() {
        let (shown, escapes) = blanked(r"E'Card:\n4111111111111111'").unwrap();
        assert_eq!(shown, "E'Card:  4111111111111111'");
        assert_eq!(
            escapes,
            vec![Escape {
                range: Range { start: 7, end: 9 },
                digit: None
            }]
        );
        assert_eq!(
            view(r"a\x014111 b\u00e9c \U0001F600d \tz"),
            "a    4111 b      c           d   z"
        );
        // An escaped backslash, a digit after a backslash, a short escape.
        assert_eq!(blanked(r"C:\\ \4111 \"), None);
        // Escaped twice: one escape, from its first backslash.
        assert_eq!(
            view(r#"E'{"m": "Card:\\n4111"}' \\\\t \\x34111"#),
            r#"E'{"m": "Card:   4111"}' \\        4111"#
        );
        assert_eq!(view(r"\xZ \u12"), "  Z     ");
        assert_eq!(view("no escapes"), "no escapes");
        // Multibyte text around an escape stays whole.
        assert_eq!(view("é\\né"), "é  é");
    }

    /// Every way a statement's text writes a digit with a backslash shows
    /// the digit, so a card number begun with one is found.
    #[test]
    fn escapes_that_stand_for_a_digit_show_it() {
        for (text, shown) in [
            (r#"{"c": "\u0034111"}"#, r#"{"c": "     4111"}"#),
            (r"\x34111", "   4111"),
            (r"\U00000039", "         9"),
            (r"E'\064111'", "E'   4111'"),
            (r"E'\071'", "E'   9'"),
            (r"U&'\0034111'", "U&'    4111'"),
            (r"U&'\+000034111'", "U&'       4111'"),
        ] {
            assert_eq!(view(text), shown, "{text}");
        }
        // Escapes of other characters: a letter's shown as spaces, those
        // a digit begins left alone.
        assert_eq!(view(r"\u0041"), "      ");
        assert_eq!(view(r"\4111 \+004111 \0101"), r"\4111 \+004111 \0101");
        // Not found: an escape in the middle of a number.
        assert_eq!(view(r"411\x3111"), "411   111");
    }

    #[test]
    fn an_edit_begins_on_an_escape_s_digit_or_outside_escapes() {
        let (_, escapes) = blanked(r#"{"c": "\u0034111111111111111"} \n"#).unwrap();
        // After the escape, or touching its edges: as it is.
        assert_eq!(edit_of_text(&escapes, 13, 19), Some((13, 19)));
        assert_eq!(edit_of_text(&escapes, 0, 7), Some((0, 7)));
        // On its digit: from its backslash.
        assert_eq!(edit_of_text(&escapes, 12, 19), Some((7, 19)));
        // Anywhere else inside one: refused.
        assert_eq!(edit_of_text(&escapes, 9, 19), None);
        assert_eq!(edit_of_text(&escapes, 2, 8), None);
        assert_eq!(edit_of_text(&escapes, 32, 33), None);
    }

    /// A text of many escapes and a masker's many edits are matched in
    /// time linear in them, not their product.
    #[test]
    fn many_escapes_and_edits_are_looked_up() {
        let text = "4111111111111111\\n".repeat(50_000);
        let (_, escapes) = blanked(&text).unwrap();
        assert_eq!(escapes.len(), 50_000);
        let edits = (0..50_000).map(|n| (n * 18 + 6, n * 18 + 12));
        assert!(
            edits
                .into_iter()
                .all(|(start, end)| edit_of_text(&escapes, start, end) == Some((start, end)))
        );
    }
}
