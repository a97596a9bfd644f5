//! Text from outside — what a client sent, what a plugin logs — shown in
//! a line of sluice's own.

use std::borrow::Cow;

/// `text` as one line: control characters escaped (`\n`, `\r`,
/// `\u{1b}`), so that it cannot end the line it is shown in and start one
/// that reads as sluice's own, nor drive the reader's terminal. Anything
/// else is kept as it is.
pub fn one_line(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut line = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
    Cow::Owned(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_nothing_else() {
        assert_eq!(one_line("plain text, é"), "plain text, é");
        assert!(matches!(one_line("plain"), Cow::Borrowed(_)));
        assert_eq!(
            one_line("ok\n2026-11-30T12:00:00Z  WARN sluice: approved\r\u{1b}[0m 'é'"),
            "ok\\n2026-11-30T12:00:00Z  WARN sluice: approved\\r\\u{1b}[0m 'é'"
        );
    }
}
