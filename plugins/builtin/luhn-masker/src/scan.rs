//! Finding card numbers in bytes: one pass over a value or a text, that
//! reports the stretch of each card number to mask.
//!
//! A card number (PAN) is recognised by its shape, never by where it is:
//!
//! 1. a *run*: ASCII digits, where a single space or dash may separate two
//!    groups of digits (two separators in a row, or one not followed by a
//!    digit, end the run);
//! 2. of 13 to 19 digits, the lengths ISO/IEC 7812 allows. A longer run is
//!    some other number and is left alone entirely: masking a window of it
//!    would alter what is not a PAN;
//! 3. grouped as cards are printed, when it has separators: every group
//!    but the last of 4 to 6 digits, the last of 3 to 6 (phone numbers and
//!    dates are grouped otherwise);
//! 4. a token of its own: no ASCII letter, digit or underscore directly
//!    before or after it (digits inside hashes, base64 and identifiers are
//!    not card numbers), not the fraction of a decimal number (`0.41...`,
//!    a float's digits), and not part of a UUID;
//! 5. starting with a configured leading digit (a payment brand's major
//!    industry identifier), which keeps timestamps and the like out;
//! 6. passing the Luhn check.
//!
//! Most bytes are not part of a long run, so the scan first looks, eight
//! bytes at a time and without a branch per byte, for a run at least 13
//! bytes long; only such a run is read closely, its checks cheapest first.
//! The scan allocates nothing: it calls back with offsets, and only the
//! caller's edits allocate.

use crate::luhn;
use crate::words::{TOP, bytes_equal, digit_bytes, first_flagged, load, word_at};

/// The fewest digits a card number has.
pub const SHORTEST: usize = 13;
/// The most digits a card number has.
pub const LONGEST: usize = 19;

/// What the scan looks for and how much of each card number it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// The digits a card number may start with, as a set of bits: bit `d`
    /// for digit `d`.
    pub leading_digits: u16,
    /// How many leading digits stay visible (0, 6 or 8; 8 only on card
    /// numbers of 16 digits or more, 6 on shorter ones).
    pub keep_first: usize,
    /// How many trailing digits stay visible (0 to 4).
    pub keep_last: usize,
}

/// Reports, through `mask`, the byte range of each card number in `bytes`
/// to hide: from the first digit after the ones kept at its start to the
/// last digit before the ones kept at its end, separators in between
/// included. Ranges come left to right and never overlap.
///
/// Allocates nothing.
pub fn scan(bytes: &[u8], rules: &Rules, mut mask: impl FnMut(usize, usize)) {
    if bytes.len() < SHORTEST {
        // Too short to hold a card number: most values of most columns.
        return;
    }
    let mut from = 0;
    while let Some(start) = next_long_run(bytes, from) {
        let run = Run::read(bytes, start);
        from = run.end;
        if run.is_pan(bytes, rules) {
            let (first, last) = run.masked(bytes, rules);
            mask(first, last);
        }
    }
}

/// A maximal run of digits and single separators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    /// Offset of its first digit.
    start: usize,
    /// Offset just past its last digit.
    end: usize,
    /// How many digits it holds (separators not counted).
    digits: usize,
    /// Whether its groups are those of a printed card number (true when
    /// it has no separators).
    grouped_like_a_card: bool,
}

impl Run {
    /// The run that starts with the digit at `start`.
    fn read(bytes: &[u8], start: usize) -> Run {
        let mut i = start;
        let mut digits = 0;
        let mut separated = false;
        let mut grouped_like_a_card = true;
        loop {
            let group = digits_from(bytes, i);
            i += group;
            digits += group;
            let continues = matches!(bytes.get(i), Some(b' ' | b'-'))
                && bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
            if continues {
                grouped_like_a_card &= (4..=6).contains(&group);
                separated = true;
                i += 1;
            } else {
                if separated {
                    grouped_like_a_card &= (3..=6).contains(&group);
                }
                return Run {
                    start,
                    end: i,
                    digits,
                    grouped_like_a_card,
                };
            }
        }
    }

    /// Whether the run is a card number: the rules of the module's
    /// documentation, cheapest first.
    fn is_pan(&self, bytes: &[u8], rules: &Rules) -> bool {
        (SHORTEST..=LONGEST).contains(&self.digits)
            && self.grouped_like_a_card
            && rules.leading_digits & (1 << (bytes[self.start] - b'0')) != 0
            && self.stands_alone(bytes)
            && luhn::is_valid(&bytes[self.start..self.end])
            && !in_uuid(bytes, self.start, self.end)
    }

    /// Whether the run is a token of its own: no letter, digit or
    /// underscore touches it, and it is not the fraction of a decimal
    /// number.
    fn stands_alone(&self, bytes: &[u8]) -> bool {
        let before = self.start.checked_sub(1).map(|i| bytes[i]);
        let after = bytes.get(self.end).copied();
        if before.is_some_and(is_word) || after.is_some_and(is_word) {
            return false;
        }
        // `0.4111111111111111`: the digits of a float (a float8 column, a
        // JSON number), which the Luhn check alone would let through once
        // in twenty values. A card number is never written after a
        // decimal point.
        let fraction = before == Some(b'.')
            && self
                .start
                .checked_sub(2)
                .is_some_and(|i| bytes[i].is_ascii_digit());
        !fraction
    }

    /// The byte range to hide: the digits between the first
    /// `rules.keep_first` (6 instead of 8 when the number is shorter than
    /// 16 digits, as PCI DSS allows 8 only from 16) and the last
    /// `rules.keep_last`, with the separators among them.
    fn masked(&self, bytes: &[u8], rules: &Rules) -> (usize, usize) {
        let keep_first = if self.digits < 16 {
            rules.keep_first.min(6)
        } else {
            rules.keep_first
        };
        // Digits `first_hidden..past_hidden` (counted from 0) are hidden;
        // at least 3 are, since keep_first + keep_last is at most 10 on 13
        // to 15 digits and 12 on 16 or more.
        let (first_hidden, past_hidden) = (keep_first, self.digits - rules.keep_last);
        if self.end - self.start == self.digits {
            // No separators: digits and bytes are one.
            return (self.start + first_hidden, self.start + past_hidden);
        }
        let mut seen = 0;
        let mut from = self.start;
        for (offset, byte) in bytes[self.start..self.end].iter().enumerate() {
            if !byte.is_ascii_digit() {
                continue;
            }
            if seen == first_hidden {
                from = self.start + offset;
            }
            seen += 1;
            if seen == past_hidden {
                return (from, self.start + offset + 1);
            }
        }
        // Not reached: `digits` was counted over these same bytes. Were it
        // reached, hiding to the end of the run errs on the safe side.
        (from, self.end)
    }
}

/// Whether a byte is part of a word: an ASCII letter, digit or underscore.
fn is_word(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// The length of a UUID in text form.
const UUID_LEN: usize = 36;

/// Whether the run at `start..end` overlaps a UUID-shaped stretch of
/// `bytes`: `8-4-4-4-12` hex digits (either case) joined by dashes.
///
/// The grouping rule already refuses every run a UUID can hold (its runs
/// of all-digit groups are 8, 4, 4, 4, 12: too short, or led by 8 or ended
/// by 12); this says so outright, so a UUID stays safe whatever the
/// grouping rule becomes. It only runs for numbers that passed every other
/// check, and looks no further than a UUID reaches.
fn in_uuid(bytes: &[u8], start: usize, end: usize) -> bool {
    let uuid_char = |byte: u8| byte.is_ascii_hexdigit() || byte == b'-';
    // The stretch of hex digits and dashes around the run, as far as a
    // UUID overlapping the run could reach.
    let mut low = start;
    while low > 0 && start - low < UUID_LEN && uuid_char(bytes[low - 1]) {
        low -= 1;
    }
    let mut high = end;
    while high < bytes.len() && high - end < UUID_LEN && uuid_char(bytes[high]) {
        high += 1;
    }
    if high - low < UUID_LEN {
        return false;
    }
    (low..=high - UUID_LEN)
        .filter(|&first| first < end && first + UUID_LEN > start)
        .any(|first| is_uuid(&bytes[first..first + UUID_LEN]))
}

/// Whether 36 bytes are a UUID: hex digits, with dashes at 8, 13, 18, 23.
fn is_uuid(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().all(|(i, byte)| match i {
        8 | 13 | 18 | 23 => *byte == b'-',
        _ => byte.is_ascii_hexdigit(),
    })
}

/// The offset of the first run (digits, and single separators between
/// them) of at least 13 bytes that starts at or after `from`, which is 0
/// or the end of a run. A card number's run is at least that long; the
/// runs skipped are all shorter, so none of them is one.
///
/// Eight bytes at a time, with no branch that depends on the bytes but
/// whether a long run was found: a byte belongs to a run when it is a
/// digit, or a space or dash between two digits, and the length of the
/// run that reaches the end of one word is carried into the next.
fn next_long_run(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    // How many bytes of a run end just before `at`.
    let mut carried = 0;
    while at < bytes.len() {
        let word = word_at(bytes, at);
        let digits = digit_bytes(word);
        let separators = bytes_equal(word, b' ') | bytes_equal(word, b'-');
        // Per byte: is the byte before it a digit, and the byte after it?
        let digit_before_word = at > 0 && bytes[at - 1].is_ascii_digit();
        let digit_after_word = bytes.get(at + 8).is_some_and(u8::is_ascii_digit);
        let digit_before = digits << 8 | u64::from(digit_before_word) << 7;
        let digit_after = digits >> 8 | u64::from(digit_after_word) << 63;
        let in_run = digits | separators & digit_before & digit_after;
        // The first byte not in a run (8 when every byte is), and the
        // bytes of a run at the end of the word (8 when every byte is).
        let breaks = !in_run & TOP;
        let first_break = breaks.trailing_zeros() as usize / 8;
        if carried + first_break >= SHORTEST {
            return Some(at - carried);
        }
        carried = match breaks {
            0 => carried + 8,
            _ => breaks.leading_zeros() as usize / 8,
        };
        at += 8;
    }
    None
}

/// How many ASCII digits follow one another from `from` on: the length of
/// a group. Eight bytes at a time.
fn digits_from(bytes: &[u8], from: usize) -> usize {
    let mut at = from;
    while let Some(eight) = bytes.get(at..at + 8) {
        if let Some(first) = first_flagged(!digit_bytes(load(eight)) & TOP) {
            return at + first - from;
        }
        at += 8;
    }
    let tail = bytes.get(at..).unwrap_or_default();
    at + tail.iter().take_while(|byte| byte.is_ascii_digit()).count() - from
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: Rules = Rules {
        leading_digits: 0b111_1100, // 2 to 6
        keep_first: 6,
        keep_last: 4,
    };

    /// The ranges the scan reports, as text.
    fn hidden<'a>(text: &'a str, rules: &Rules) -> Vec<&'a str> {
        let mut found = Vec::new();
        scan(text.as_bytes(), rules, |start, end| {
            found.push(&text[start..end])
        });
        found
    }

    #[test]
    fn long_runs_are_found_eight_bytes_at_a_time() {
        let long_run = |text: &str, from| next_long_run(text.as_bytes(), from);
        assert_eq!(long_run("abcdefghijklmnop 1234567890123", 0), Some(17));
        assert_eq!(long_run("abcdefghijklmnop 123456789012", 0), None);
        assert_eq!(long_run("1234567890123", 0), Some(0));
        assert_eq!(long_run("x1234567890123", 0), Some(1));
        // Runs cross words; separators count, but only between digits.
        assert_eq!(long_run("ab 1234 5678-9012 x", 0), Some(3));
        assert_eq!(long_run("ab 1234 5678-901 x", 0), Some(3));
        assert_eq!(long_run("ab 1234 5678-90 x", 0), None);
        assert_eq!(long_run("ab 1234  5678-9012 x", 0), None);
        assert_eq!(long_run("ab 1234 -5678-9012 x", 0), None);
        assert_eq!(long_run("12 34 56 78 90 12 x", 0), Some(0));
        // From the end of a run: the next one.
        let text = "123456789012345 and 1234-5678-9012-3456";
        assert_eq!(long_run(text, 0), Some(0));
        assert_eq!(long_run(text, 15), Some(20));
        assert_eq!(long_run(text, text.len()), None);
        // Every start and length around the word size.
        for before in 0..20 {
            for length in 10..30 {
                let text = format!(
                    "{}{}{}",
                    "x".repeat(before),
                    "7".repeat(length),
                    "y".repeat(3)
                );
                let want = (length >= 13).then_some(before);
                assert_eq!(long_run(&text, 0), want, "{text}");
            }
        }
    }

    #[test]
    fn groups_are_counted_eight_bytes_at_a_time() {
        let digits = b"x12345678901234567 ";
        for from in 1..digits.len() {
            assert_eq!(digits_from(digits, from), 18 - from, "from {from}");
        }
        assert_eq!(digits_from(digits, 0), 0);
        assert_eq!(digits_from(b"1234567890123456", 0), 16);
        assert_eq!(digits_from(b"1234567890123456", 16), 0);
    }

    #[test]
    fn runs_end_at_two_separators_or_a_trailing_one() {
        fn run(text: &str) -> (&str, usize, bool) {
            let run = Run::read(text.as_bytes(), 0);
            (&text[..run.end], run.digits, run.grouped_like_a_card)
        }
        assert_eq!(
            run("4111 1111-1111 1111 x"),
            ("4111 1111-1111 1111", 16, true)
        );
        assert_eq!(run("4111  1111"), ("4111", 4, true));
        assert_eq!(run("4111 -1111"), ("4111", 4, true));
        assert_eq!(run("4111- "), ("4111", 4, true));
        assert_eq!(run("49 30 1234 56789"), ("49 30 1234 56789", 13, false));
        assert_eq!(run("3782 822463 10005"), ("3782 822463 10005", 15, true));
        assert_eq!(
            run("4111 1111 1111 1111 003"),
            ("4111 1111 1111 1111 003", 19, true)
        );
        assert_eq!(run("4111 1111 1111 11"), ("4111 1111 1111 11", 14, false));
        assert_eq!(run("4111111 111111111"), ("4111111 111111111", 16, false));
    }

    #[test]
    fn the_middle_digits_are_hidden() {
        assert_eq!(hidden("4111111111111111", &DEFAULT), ["111111"]);
        assert_eq!(hidden("4111 1111 1111 1111", &DEFAULT), ["11 1111"]);
        assert_eq!(hidden("3782-822463-10005", &DEFAULT), ["2463-1"]);
        let eight = Rules {
            keep_first: 8,
            ..DEFAULT
        };
        assert_eq!(hidden("4111 1111 1111 1111", &eight), ["1111"]);
        // 15 digits: only 6 may stay.
        assert_eq!(hidden("378282246310005", &eight), ["24631"]);
        let none = Rules {
            keep_first: 0,
            keep_last: 0,
            ..DEFAULT
        };
        assert_eq!(
            hidden("x 4111-1111-1111-1111.", &none),
            ["4111-1111-1111-1111"]
        );
    }

    #[test]
    fn uuids_are_recognised_around_a_run() {
        let text = "id abcdefab-abcd-abcd-9012-345678901234 x";
        let start = text.find("9012").unwrap();
        assert!(in_uuid(text.as_bytes(), start, text.len() - 2));
        let text = "12345678-1234-1234-ABCD-EF0123456789";
        assert!(in_uuid(text.as_bytes(), 0, 18));
        // One character short, or a letter that is not hex: not a UUID.
        let text = "12345678-1234-1234-abcd-ef012345678";
        assert!(!in_uuid(text.as_bytes(), 0, 18));
        let text = "12345678-1234-1234-abcd-ef012345678g";
        assert!(!in_uuid(text.as_bytes(), 0, 18));
        assert!(!in_uuid(b"4111111111111111", 0, 16));
        // A UUID elsewhere in the text does not shield a card number.
        let text = "4111111111111111 abcdefab-abcd-abcd-9012-345678901234";
        assert!(!in_uuid(text.as_bytes(), 0, 16));
        assert_eq!(hidden(text, &DEFAULT), ["111111"]);
    }

    /// The rules of the module's documentation followed literally, a byte
    /// at a time: what the scan must find.
    fn reference(bytes: &[u8], rules: &Rules) -> Vec<(usize, usize)> {
        let digit = |i: usize| bytes.get(i).is_some_and(u8::is_ascii_digit);
        let word = |i: Option<usize>| {
            i.and_then(|i| bytes.get(i))
                .is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'_')
        };
        let mut found = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if !digit(i) {
                i += 1;
                continue;
            }
            let start = i;
            let mut groups = vec![0];
            while digit(i) || matches!(bytes[i], b' ' | b'-') && digit(i - 1) && digit(i + 1) {
                if digit(i) {
                    *groups.last_mut().unwrap() += 1;
                } else {
                    groups.push(0);
                }
                i += 1;
                if i == bytes.len() {
                    break;
                }
            }
            let end = i;
            let positions: Vec<usize> = (start..end).filter(|&k| digit(k)).collect();
            let n = positions.len();
            let (last, rest) = groups.split_last().unwrap();
            let grouped = rest.is_empty()
                || rest.iter().all(|g| (4..=6).contains(g)) && (3..=6).contains(last);
            let touches = word(start.checked_sub(1)) || word(Some(end));
            let fraction = start >= 2 && bytes[start - 1] == b'.' && digit(start - 2);
            let leading = rules.leading_digits & (1 << (bytes[start] - b'0')) != 0;
            let mut sum = 0;
            for (k, &p) in positions.iter().rev().enumerate() {
                let d = u32::from(bytes[p] - b'0');
                sum += if k % 2 == 1 {
                    (2 * d) / 10 + (2 * d) % 10
                } else {
                    d
                };
            }
            let uuid = bytes.len() >= UUID_LEN
                && (0..=bytes.len() - UUID_LEN)
                    .filter(|&u| u < end && u + UUID_LEN > start)
                    .any(|u| is_uuid(&bytes[u..u + UUID_LEN]));
            if (13..=19).contains(&n)
                && grouped
                && !touches
                && !fraction
                && leading
                && sum.is_multiple_of(10)
                && !uuid
            {
                let keep_first = if n < 16 {
                    rules.keep_first.min(6)
                } else {
                    rules.keep_first
                };
                found.push((
                    positions[keep_first],
                    positions[n - rules.keep_last - 1] + 1,
                ));
            }
        }
        found
    }

    #[test]
    fn the_scan_finds_what_the_rules_say_in_random_text() {
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut random = move |below: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % below
        };
        let all_digits = Rules {
            leading_digits: 0b11_1111_1111,
            keep_first: 8,
            keep_last: 2,
        };
        let bare = Rules {
            keep_first: 0,
            keep_last: 0,
            ..DEFAULT
        };
        // Digit runs of about a card number's length, half of them made
        // Luhn-valid, some grouped; between them the bytes the boundary
        // rules are about; a UUID now and then.
        let noise = b"  --..,,_afxZ\xc3\xa9";
        let mut text = Vec::new();
        let mut found = 0;
        for _ in 0..100_000 {
            text.clear();
            for _ in 0..random(6) {
                match random(10) {
                    0..5 => {
                        let run_start = text.len();
                        // Ungrouped, or in groups of 3 to 7.
                        let group = if random(2) == 0 { 99 } else { 3 + random(5) };
                        for k in 0..10 + random(12) {
                            if k > 0 && k % group == 0 {
                                text.push(if random(2) == 0 { b' ' } else { b'-' });
                            }
                            text.push(b'0' + random(10) as u8);
                        }
                        if random(2) == 0 {
                            let digits: Vec<usize> = (run_start..text.len())
                                .filter(|&k| text[k].is_ascii_digit())
                                .collect();
                            let (&check, rest) = digits.split_last().unwrap();
                            text[check] = b'0';
                            let mut sum = 0;
                            for (k, &p) in rest.iter().rev().enumerate() {
                                let d = u32::from(text[p] - b'0');
                                sum += if k % 2 == 0 {
                                    (2 * d) / 10 + (2 * d) % 10
                                } else {
                                    d
                                };
                            }
                            text[check] = b'0' + ((10 - sum % 10) % 10) as u8;
                        }
                    }
                    5 => text.extend_from_slice(b"abcdefab-1234-5678-9012-345678901234"),
                    _ => {
                        for _ in 0..1 + random(3) {
                            text.push(noise[random(noise.len() as u64) as usize]);
                        }
                    }
                }
            }
            for rules in [&DEFAULT, &all_digits, &bare] {
                let want = reference(&text, rules);
                let mut got = Vec::new();
                scan(&text, rules, |start, end| got.push((start, end)));
                assert_eq!(
                    got,
                    want,
                    "{:?} under {rules:?}",
                    String::from_utf8_lossy(&text)
                );
                found += got.len();
            }
        }
        // Enough card numbers among them for the comparison to mean
        // something.
        assert!(found > 10_000, "{found}");
    }
}
