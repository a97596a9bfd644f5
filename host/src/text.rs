//! Text from outside — what a client sent, what a plugin logs — shown in
//! a line of sluice's own.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `text` as one line: control characters escaped (`\n`, `\r`,
/// `\u{1b}`), so that it cannot end the line it is shown in and start one
/// that reads as sluice's own, nor drive the reader's terminal; and
/// invisible format characters shown as `<U+XXXX>` (see
/// [`format_controls_shown`]), so that a log line or an audit replay reads
/// in the order, and of the words, that the server ran. Anything else is
/// kept as it is.
pub fn one_line(text: &str) -> Cow<'_, str> {
    if !text
        .chars()
        .any(|c| c.is_control() || is_invisible_format(c))
    {
        return Cow::Borrowed(text);
    }
    let mut line = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            line.extend(c.escape_default());
        } else if is_invisible_format(c) {
            // Writing to a String cannot fail.
            let _ = write!(line, "<U+{:04X}>", u32::from(c));
        } else {
            line.push(c);
        }
    }
    Cow::Owned(line)
}

/// Whether `c` is an invisible format character: a bidirectional override
/// or isolate that reorders the text around it (U+202E shows `'1' -- ;x`
/// for what runs as `x; -- '1'`), a zero-width space or joiner that hides
/// where one word ends, a soft hyphen, a tag character (invisible text);
/// or a line or paragraph separator, which some viewers break the line at.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{E0000}'..='\u{E007F}'
    )
}

/// `text` for a human to judge (an approver reading a held statement):
/// each invisible format character shown as `<U+XXXX>`, so that what they
/// read is in the order, and of the words, that the server runs. Anything
/// else is kept as it is.
pub fn format_controls_shown(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_invisible_format) {
        return Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_invisible_format(c) {
            // Writing to a String cannot fail.
            let _ = write!(shown, "<U+{:04X}>", u32::from(c));
        } else {
            shown.push(c);
        }
    }
    Cow::Owned(shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invisible_format_characters_are_shown() {
        assert!(matches!(
            format_controls_shown("SELECT 'é'\n"),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            format_controls_shown("SELECT 1 -- \u{202E}'1' ;x\u{202C}\u{200B}"),
            "SELECT 1 -- <U+202E>'1' ;x<U+202C><U+200B>"
        );
        assert_eq!(
            format_controls_shown("\u{2067}\u{FEFF}"),
            "<U+2067><U+FEFF>"
        );
    }

    #[test]
    fn control_and_invisible_characters_are_shown_and_nothing_else() {
        assert_eq!(one_line("plain text, é"), "plain text, é");
        assert!(matches!(one_line("plain"), Cow::Borrowed(_)));
        assert_eq!(
            one_line("ok\n2026-11-30T12:00:00Z  WARN sluice: approved\r\u{1b}[0m 'é'"),
            "ok\\n2026-11-30T12:00:00Z  WARN sluice: approved\\r\\u{1b}[0m 'é'"
        );
        // What a replay shows runs in the order the server read it, on
        // one line, with no text hidden in tag characters.
        assert_eq!(
            one_line("SELECT 1 -- \u{202E}'1' ;x\u{200B}\n\u{2028}\u{E0041}"),
            "SELECT 1 -- <U+202E>'1' ;x<U+200B>\\n<U+2028><U+E0041>"
        );
    }
}
