//! Statements of a remembered shape, recognised without lexing them again.
//!
//! A session sends the same statement over and over with other values:
//! `SELECT abalance FROM pgbench_accounts WHERE aid = 48213;`, then
//! `... = 9071;`. The [`Analyser`](super::Analyser) remembers the analysis
//! of each shape, but must still lex every text to learn its shape; for a
//! short statement the lexer is most of the time an analysis takes. A
//! template is the text a shape was first seen in, cut at its literals:
//! the bytes between them kept exactly, each literal a slot of one of two
//! plain forms. A text that is the same bytes with other literals of the
//! same forms in the slots is a statement of that shape, and its analysis
//! is the remembered one with its own text.
//!
//! # Why a match lexes as the template did
//!
//! A lexer reads left to right, deciding where each token ends from the
//! bytes at and after it. A matching text differs from the template only
//! inside slots, and a slot holds only:
//!
//! - digits: `[0-9]+`, where the template had digits too;
//! - a plain string: `'` then anything but `'`, `\` and NUL, then `'`,
//!   where the template had one too.
//!
//! Neither form can begin, end or continue another token (an identifier,
//! a parameter, a number with a point or exponent, an `E'` or `U&'` or
//! `$$` string, a comment, a string continued over a newline) given the
//! bytes around it: a template is made only where the byte before and the
//! byte after every slot is whitespace, punctuation or an operator
//! character ([`is_boundary`]), never a letter, digit, `_`, `$`, `.`, a
//! quote or a non-ASCII byte. So the lexer reaches each slot in the state
//! it reached the template's, reads it as one literal of the same kind,
//! leaves it in the state the template's left it, and goes on over the
//! same bytes. No backslash means `standard_conforming_strings` changes
//! nothing inside a slot; the template is used only under the setting it
//! was made with all the same.
//!
//! The argument is checked, not just made: the tests compare the template
//! against the full analysis over generated texts, hostile ones included.

use std::sync::Arc;

use super::lexer::{self, Piece, Token};
use crate::plugin::bindings::types::Statement;

/// Texts longer than this are not made templates: matching one is a
/// comparison of its bytes, and a long text repeated verbatim is rare.
const MAX_TEMPLATE_BYTES: usize = 4096;

/// A literal's place in a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// `[0-9]+`
    Digits,
    /// `'...'` without `'`, `\` or NUL inside.
    PlainString,
}

/// One remembered statement's text, cut at its literals.
#[derive(Debug)]
pub(super) struct Template {
    /// The bytes before, between and after the slots: one more than slots.
    fixed: Vec<Box<str>>,
    slots: Vec<Slot>,
    /// Where the statement's own text starts (within `fixed[0]`) and how
    /// many bytes after it end the text (within the last fixed part): the
    /// `;`, whitespace and comments around it.
    statement_starts_at: usize,
    after_statement: usize,
    standard_conforming_strings: bool,
    /// The shape and its remembered analysis (its text left empty).
    pub(super) shape: Arc<str>,
    pub(super) statement: Statement,
}

impl Template {
    /// A template of `text`, a query string of exactly one statement
    /// (`piece`) whose shape is `shape`, or `None` where a literal is not
    /// of a plain form or stands next to a byte that could join it to
    /// another token.
    pub(super) fn of(
        text: &str,
        piece: &Piece<'_>,
        standard_conforming_strings: bool,
        shape: Arc<str>,
        statement: Statement,
    ) -> Option<Template> {
        if text.len() > MAX_TEMPLATE_BYTES {
            return None;
        }
        let tokens = lexer::spanned_tokens(text, standard_conforming_strings).ok()?;
        let bytes = text.as_bytes();
        let mut fixed: Vec<Box<str>> = Vec::new();
        let mut slots = Vec::new();
        let mut fixed_from = 0;
        for spanned in &tokens {
            let written = &text[spanned.start..spanned.end];
            let slot = match &spanned.token {
                Token::Number(_) if written.bytes().all(|b| b.is_ascii_digit()) => Slot::Digits,
                Token::String(_) if plain_string_len(written.as_bytes()) == Some(written.len()) => {
                    Slot::PlainString
                }
                Token::Number(_) | Token::String(_) | Token::BitString(_) => return None,
                _ => continue,
            };
            let before = spanned.start.checked_sub(1).map(|at| bytes[at]);
            let after = bytes.get(spanned.end).copied();
            if !before.is_none_or(is_boundary) || !after.is_none_or(is_boundary) {
                return None;
            }
            fixed.push(text[fixed_from..spanned.start].into());
            slots.push(slot);
            fixed_from = spanned.end;
        }
        fixed.push(text[fixed_from..].into());
        let statement_ends_at = piece.offset + piece.text.len();
        let first_slot_at = fixed[0].len();
        let last_slot_ends_at = text.len() - fixed[fixed.len() - 1].len();
        // A statement's literals lie inside it (only `;`, whitespace and
        // comments surround it); anything else is not a case to guess at.
        if piece.offset > first_slot_at || statement_ends_at < last_slot_ends_at {
            return None;
        }
        Some(Template {
            fixed,
            slots,
            statement_starts_at: piece.offset,
            after_statement: text.len() - statement_ends_at,
            standard_conforming_strings,
            shape,
            statement,
        })
    }

    /// The statement's own text, if `text` is this template with other
    /// literals in its slots.
    pub(super) fn matches<'t>(
        &self,
        text: &'t str,
        standard_conforming_strings: bool,
    ) -> Option<&'t str> {
        if standard_conforming_strings != self.standard_conforming_strings {
            return None;
        }
        let bytes = text.as_bytes();
        let mut at = 0;
        for (fixed, slot) in self.fixed.iter().zip(&self.slots) {
            if !bytes[at..].starts_with(fixed.as_bytes()) {
                return None;
            }
            at += fixed.len();
            let len = match slot {
                Slot::Digits => bytes[at..]
                    .iter()
                    .position(|b| !b.is_ascii_digit())
                    .unwrap_or(bytes.len() - at),
                Slot::PlainString => plain_string_len(&bytes[at..])?,
            };
            // A slot is never empty: a digit at least, or two quotes.
            if len == 0 {
                return None;
            }
            at += len;
        }
        let last = self.fixed.last()?;
        if &bytes[at..] != last.as_bytes() {
            return None;
        }
        // The fixed parts are the template's bytes at the same distance
        // from either end, so these are character boundaries.
        Some(&text[self.statement_starts_at..text.len() - self.after_statement])
    }
}

/// The length of the plain string literal at the start of `bytes`: `'`,
/// anything but `'`, `\` and NUL, `'`.
fn plain_string_len(bytes: &[u8]) -> Option<usize> {
    let (&b'\'', rest) = bytes.split_first()? else {
        return None;
    };
    let inside = rest.iter().position(|&b| matches!(b, b'\'' | b'\\' | 0))?;
    (rest[inside] == b'\'').then_some(inside + 2)
}

/// Whether a byte next to a literal keeps it a token of its own whatever
/// the literal holds: whitespace, punctuation that is a token by itself,
/// or an operator character (none of which a number or a plain string can
/// begin or continue, nor the literal turn into a comment marker).
fn is_boundary(b: u8) -> bool {
    matches!(
        b,
        b' ' | b'\t'
            | b'\n'
            | b'\r'
            | b'\x0b'
            | b'\x0c'
            | b'('
            | b')'
            | b','
            | b';'
            | b'['
            | b']'
            | b':'
            | b'~'
            | b'!'
            | b'@'
            | b'#'
            | b'^'
            | b'&'
            | b'|'
            | b'`'
            | b'?'
            | b'+'
            | b'-'
            | b'*'
            | b'/'
            | b'%'
            | b'<'
            | b'>'
            | b'='
    )
}
