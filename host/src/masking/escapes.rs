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
//! Escapes a digit begins (`\4`, octal in `E''` strings) are left as they
//! are: a backslash before digits already sets them apart, and a path such
//! as `C:\4111...` is masked as it was.

use std::ops::Range;

/// `text` with every backslash escape a letter begins blanked (see the
/// module), and where those escapes are; `None` when it has none.
pub fn blanked(text: &str) -> Option<(String, Vec<Range<usize>>)> {
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
        let Some(&letter) = bytes.get(at + 1) else {
            break;
        };
        if letter == b'\\' {
            // An escaped backslash: itself, and no escape after it.
            at += 2;
            continue;
        }
        if !letter.is_ascii_alphabetic() {
            at += 1;
            continue;
        }
        let hex_digits = match letter {
            b'x' => 2,
            b'u' => 4,
            b'U' => 8,
            _ => 0,
        };
        let hex = bytes[at + 2..]
            .iter()
            .take(hex_digits)
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        let end = at + 2 + hex;
        // `3` then the digit, after leading zeros: `\x34`, `\u0034`.
        let stands_for_digit = hex_digits > 0
            && hex == hex_digits
            && bytes[end - 1].is_ascii_digit()
            && bytes[end - 2] == b'3'
            && bytes[at + 2..end - 2].iter().all(|&b| b == b'0');
        let blank_to = if stands_for_digit { end - 1 } else { end };
        view[at..blank_to].fill(b' ');
        escapes.push(at..end);
        at = end;
    }
    if escapes.is_empty() {
        return None;
    }
    // Only ASCII bytes were replaced, by ASCII: still UTF-8.
    let view = String::from_utf8(view).ok()?;
    Some((view, escapes))
}

/// Whether an edit from `start` to `end` begins or ends inside one of
/// `escapes` (touching one's edge is fine).
pub fn cuts_an_escape(escapes: &[Range<usize>], start: usize, end: usize) -> bool {
    let inside = |at: usize| {
        escapes
            .iter()
            .any(|escape| escape.start < at && at < escape.end)
    };
    inside(start) || inside(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_a_letter_begins_are_shown_as_spaces() {
        let (view, escapes) = blanked(r"E'Card:\n4111111111111111'").unwrap();
        assert_eq!(view, "E'Card:  4111111111111111'");
        assert_eq!(escapes, vec![Range { start: 7, end: 9 }]);
        let (view, _) = blanked(r"a\x014111 b\u00e9c \U0001F600d \tz").unwrap();
        assert_eq!(view, "a    4111 b      c           d   z");
        // Escapes that stand for a digit keep it, on their last byte.
        let (view, escapes) = blanked(r#"{"c": "\u0034111111111111111"}"#).unwrap();
        assert_eq!(view, r#"{"c": "     4111111111111111"}"#);
        assert_eq!(escapes, vec![Range { start: 7, end: 13 }]);
        let (view, _) = blanked(r"\x34111 \U00000039 \u0041").unwrap();
        assert_eq!(
            view,
            format!("   4111 {}9 {}", " ".repeat(9), " ".repeat(6))
        );
        // An escaped backslash, a digit after a backslash, a short escape.
        assert_eq!(blanked(r"C:\\new \4111 \"), None);
        let (view, _) = blanked(r"\xZ \u12").unwrap();
        assert_eq!(view, "  Z     ");
        assert_eq!(blanked("no escapes"), None);
        // Multibyte text around an escape stays whole.
        let (view, _) = blanked("é\\né").unwrap();
        assert_eq!(view, "é  é");
    }

    #[test]
    fn an_edit_may_not_begin_or_end_inside_an_escape() {
        let escapes = vec![Range { start: 7, end: 13 }];
        assert!(!cuts_an_escape(&escapes, 13, 19));
        assert!(!cuts_an_escape(&escapes, 0, 7));
        assert!(cuts_an_escape(&escapes, 12, 19));
        assert!(cuts_an_escape(&escapes, 2, 8));
    }
}
