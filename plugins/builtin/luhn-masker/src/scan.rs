//! Finding card numbers in bytes: one pass over a value or a text, that
//! reports the stretch of each card number to mask.
//!
//! A card number (PAN) is recognised by its shape, never by where it is:
//!
//! 1. a *run*: ASCII digits, where a single space or dash may separate two
//!    groups of digits (two separators in a row, or one not followed by a
//!    digit, end the run);
//! 2. of 13 to 19 digits, the lengths ISO/IEC 7812 allows;
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
//! A run with separators that is not a card number as a whole may still
//! hold one, joined to another number by a separator: `4111111111111111
//! 12/27`, `Order 1234 4111 1111 1111 1111`, two card numbers one space
//! apart. So its *windows* — stretches of whole consecutive groups, never
//! part of a group — are judged by the same six rules (a window's ends are
//! separators or the run's ends, so rule 4 reads the bytes around the
//! window), and every window that passes hides its digits between the
//! ones it keeps, whether or not it overlaps another that passes: a digit
//! stays visible only when no window that passes hides it. Whichever of
//! them is the real card number, then, no more of it shows than its first
//! and last digits kept; no other number, masked in its place, can leave
//! more of it visible. The hidden digits of a run are reported as maximal
//! spans, separators between them included. An unbroken group is never
//! split: the 16 digits at the start of a 20-digit reference are not
//! masked.
//!
//! A run that is a card number as a whole is the longest of its windows,
//! and hides every digit its other windows that pass would, but in one
//! case, the only one they are judged for. Another window ends where the
//! run does or before, so hides none of the run's last digits kept; one
//! that starts after the run's first group starts 4 digits in or more, and
//! keeps at most 2 fewer of its first digits than the run keeps of its own
//! (6 rather than 8), so hides none of those either. The case: 8 leading
//! digits kept, which PCI DSS allows only from 16 digits, and a window of
//! 13 to 15 digits at the start of a run of 16 or more, which keeps only 6
//! ([`Run::kept_first`]): the run's 7th and 8th are hidden too
//! ([`Run::masked_with_its_windows`]).
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

/// Reports, through `mask`, the byte ranges of `bytes` to hide: each card
/// number's digits from the first after the ones kept at its start to the
/// last before the ones kept at its end, separators in between included;
/// where the card numbers (windows) of a run overlap or touch, one range
/// over all their hidden digits. Ranges come left to right and never
/// overlap.
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
            let (first, last) = run.masked_with_its_windows(bytes, rules);
            mask(first, last);
        } else if run.may_hold_a_window {
            mask_windows(bytes, &run, rules, &mut mask);
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
    /// Whether it has separators and groups that a card number's window
    /// could be made of: one group of 13 to 19 digits, or two groups of
    /// 4 to 6 digits followed by one of 3 to 6 (two groups hold at most
    /// 12 digits). Runs without, such as dates and phone numbers, are not
    /// searched for windows.
    may_hold_a_window: bool,
}

impl Run {
    /// The run that starts with the digit at `start`.
    fn read(bytes: &[u8], start: usize) -> Run {
        let mut i = start;
        let mut digits = 0;
        let mut separated = false;
        let mut grouped_like_a_card = true;
        let mut may_hold_a_window = false;
        // How many groups of 4 to 6 digits end just before this one.
        let mut streak = 0;
        loop {
            let group = digits_from(bytes, i);
            i += group;
            digits += group;
            may_hold_a_window |=
                (SHORTEST..=LONGEST).contains(&group) || streak >= 2 && (3..=6).contains(&group);
            streak = if (4..=6).contains(&group) {
                streak + 1
            } else {
                0
            };
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
                    may_hold_a_window: may_hold_a_window && separated,
                };
            }
        }
    }

    /// Whether the run (or window) is a card number: the rules of the
    /// module's documentation, cheapest first.
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

    /// How many leading digits stay visible: `rules.keep_first`, but 6
    /// instead of 8 when the number is shorter than 16 digits, as PCI DSS
    /// allows 8 only from 16.
    fn kept_first(&self, rules: &Rules) -> usize {
        if self.digits < 16 {
            rules.keep_first.min(6)
        } else {
            rules.keep_first
        }
    }

    /// The byte range to hide of a run that is a card number as a whole,
    /// with the digits its other windows that are card numbers hide: more
    /// than the run's own ([`Run::masked`]) only when it keeps 8 leading
    /// digits and one of 13 to 15 digits at its start, keeping 6, is a card
    /// number too (see the module's documentation).
    fn masked_with_its_windows(&self, bytes: &[u8], rules: &Rules) -> (usize, usize) {
        let (from, to) = self.masked(bytes, rules);
        if self.may_hold_a_window && self.kept_first(rules) > rules.keep_first.min(6) {
            // The digits hidden by such a window, from its 7th to its
            // 10th at least, overlap the run's, from its 9th.
            if let Some(from) = self.hidden_from_by_a_shorter_start(bytes, rules) {
                return (from, to);
            }
        }
        (from, to)
    }

    /// The first digit hidden by a window of 13 to 15 digits at the start
    /// of the run (which is grouped like a card, so the window is too: it
    /// ends with a group of 4 to 6 digits, as each of the run's groups but
    /// the last has), if one is a card number.
    #[cold]
    fn hidden_from_by_a_shorter_start(&self, bytes: &[u8], rules: &Rules) -> Option<usize> {
        let mut window = Run {
            start: self.start,
            end: self.start,
            digits: 0,
            grouped_like_a_card: true,
            may_hold_a_window: false,
        };
        loop {
            let group = digits_from(bytes, window.end);
            window.end += group;
            window.digits += group;
            if window.end >= self.end || window.digits >= 16 {
                return None;
            }
            if window.digits >= SHORTEST && window.is_pan(bytes, rules) {
                return Some(window.masked(bytes, rules).0);
            }
            // Past the separator.
            window.end += 1;
        }
    }

    /// The byte range to hide: the digits between the first
    /// [`Run::kept_first`] and the last `rules.keep_last`, with the
    /// separators among them.
    fn masked(&self, bytes: &[u8], rules: &Rules) -> (usize, usize) {
        let keep_first = self.kept_first(rules);
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

/// How many groups of a run the search for windows holds at once.
const HELD: usize = 16;

/// The most groups a window grouped like a card has.
///
/// Only windows of one group (13 to 19 digits) or of 3 to 5 groups can
/// be grouped like a card: two groups of at most 6 digits hold at most 12,
/// six groups of at least 4 (the last 3) at least 23.
const WIDEST: usize = 5;

const _: () = assert!(WIDEST < HELD && HELD < 32);

/// Masks the digits that the windows of `run` (which is not a card number
/// as a whole) that are card numbers hide, as the module's documentation
/// says: every such window, whether it overlaps another or not. Reports
/// them left to right, as maximal spans: overlapping or touching ranges
/// (two hidden digits on either side of a separator) are reported as one.
///
/// The run's groups are read into an array of `HELD`. Whether a window is
/// a card number depends on its own groups alone (and the bytes around
/// it), so a run of more groups is searched in steps: the windows that
/// start `WIDEST - 1` groups or more before the last one held are judged,
/// the groups they start at let go, and the next groups read in. Groups
/// are sets of bits, so that the windows grouped like a card are found a
/// size at a time with a few shifts, and only those are judged. Allocates
/// nothing.
///
/// The windows are judged by their first group, left to right, and those
/// that share one by size, smallest first. The first digit each hides
/// then never comes before the first one hidden by a window judged
/// earlier: a window that starts a group later starts 4 digits later or
/// more, and keeps at most 2 leading digits fewer (6 rather than 8); one
/// of more groups from the same group has more digits, and keeps as many
/// leading digits or more. So one range, still growing, is all that needs
/// holding before it is reported.
fn mask_windows(bytes: &[u8], run: &Run, rules: &Rules, mask: &mut impl FnMut(usize, usize)) {
    // Each held group's first digit and the offset just past its last.
    let mut starts = [0; HELD];
    let mut ends = [0; HELD];
    let mut held = 0;
    // The offset of the next group to read; `None` once the run's last
    // group is held.
    let mut next = Some(run.start);
    // Bit `g` for held group `g` when it has 4 to 6 digits (it may be any
    // group of a window but the last), 3 to 6 (it may end one), 13 to 19
    // (it may be one alone).
    let (mut inner, mut closing, mut alone) = (0_u32, 0_u32, 0_u32);
    // The range of hidden digits not reported yet, which the next window
    // may extend.
    let mut pending: Option<(usize, usize)> = None;
    loop {
        while held < HELD
            && let Some(start) = next
        {
            let length = digits_from(bytes, start);
            let end = start + length;
            (starts[held], ends[held]) = (start, end);
            let bit = |is: bool| u32::from(is) << held;
            inner |= bit((4..=6).contains(&length));
            closing |= bit((3..=6).contains(&length));
            alone |= bit((SHORTEST..=LONGEST).contains(&length));
            held += 1;
            // A group that ends before the run does is followed by one
            // separator and the next group.
            next = (end < run.end).then_some(end + 1);
        }
        // The windows judged in this step start before `settled`: all
        // their groups are held.
        let settled = match next {
            None => held,
            Some(_) => held - (WIDEST - 1),
        };
        // For each size, the groups that start a window of that many held
        // groups grouped like a card (the bits past the last held group
        // are clear), smallest first.
        let of_size = |size: usize| {
            (0..size - 1).fold(closing >> (size - 1), |firsts, k| firsts & inner >> k)
        };
        let firsts = [
            (1, alone),
            (3, of_size(3)),
            (4, of_size(4)),
            (5, of_size(5)),
        ];
        let mut starting = firsts.iter().fold(0, |any, (_, firsts)| any | firsts);
        starting &= (1 << settled) - 1;
        while starting != 0 {
            let first = starting.trailing_zeros() as usize;
            starting &= starting - 1;
            for &(size, firsts) in &firsts {
                if firsts >> first & 1 == 0 {
                    continue;
                }
                let window = window(&starts, &ends, first, size);
                if !window.is_pan(bytes, rules) {
                    continue;
                }
                let (from, to) = window.masked(bytes, rules);
                pending = match pending {
                    // Overlapping, or touching: the first digit this one
                    // hides is the next digit after the last one hidden,
                    // or the digit after the separator that follows it.
                    Some((earlier, reach))
                        if from <= reach
                            || from == reach + 1
                                && bytes.get(reach).is_some_and(|b| !b.is_ascii_digit()) =>
                    {
                        Some((earlier.min(from), reach.max(to)))
                    }
                    Some((earlier, reach)) => {
                        mask(earlier, reach);
                        Some((from, to))
                    }
                    None => Some((from, to)),
                };
            }
        }
        if next.is_none() {
            if let Some((from, to)) = pending {
                mask(from, to);
            }
            return;
        }
        starts.copy_within(settled..held, 0);
        ends.copy_within(settled..held, 0);
        held -= settled;
        inner >>= settled;
        closing >>= settled;
        alone >>= settled;
    }
}

/// The window of `size` held groups (at least one) from group `first`,
/// grouped like a card.
fn window(starts: &[usize; HELD], ends: &[usize; HELD], first: usize, size: usize) -> Run {
    let (start, end) = (starts[first], ends[first + size - 1]);
    Run {
        start,
        end,
        // One separator between each two groups.
        digits: end - start - (size - 1),
        grouped_like_a_card: true,
        may_hold_a_window: false,
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
/// The grouping and boundary rules refuse most runs and windows a UUID
/// can hold (its all-digit groups are 8, 4, 4, 4, 12: too few digits, or
/// a group too long for a card's; the digits of a group with letters
/// touch a letter), but not all: digits glued before a UUID can make its
/// first group a run of 13 digits. This refuses them outright, whatever
/// the grouping rule becomes. It only runs for numbers that passed every
/// other check, and looks no further than a UUID reaches.
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
    fn only_runs_that_may_hold_a_window_are_searched_for_windows() {
        let may = |text: &str| Run::read(text.as_bytes(), 0).may_hold_a_window;
        // A group of 13 to 19 digits, or two of 4 to 6 and one of 3 to 6.
        assert!(may("4111111111111111 12"));
        assert!(may("12 4111111111111"));
        assert!(may("4111 1111 1111 1111 12"));
        assert!(may("12 1234 56789 012"));
        assert!(may("1234-123456-1234-1"));
        // Dates, times, phone numbers: no such groups.
        assert!(!may("2026-11-29 03"));
        assert!(!may("49 30 1234 56789"));
        assert!(!may("0044 20 7946 0958"));
        assert!(!may("12 34 56 78 90 12"));
        assert!(!may("1234 5678 12 1234 5678"));
        assert!(!may("41111111111111111111 1"));
        assert!(!may("123456789012 1234"));
        // No separators: the run is its only window.
        assert!(!may("4111111111111111"));
    }

    #[test]
    fn windows_of_whole_groups_are_masked_when_the_run_is_not_a_card_number() {
        // A card number and an expiry, a year, an order number.
        assert_eq!(hidden("4111111111111111 12/27", &DEFAULT), ["111111"]);
        assert_eq!(hidden("4111 1111 1111 1111 12", &DEFAULT), ["11 1111"]);
        assert_eq!(hidden("4111-1111-1111-1111-2027", &DEFAULT), ["11-1111"]);
        assert_eq!(hidden("1234 4111 1111 1111 1111", &DEFAULT), ["11 1111"]);
        // Two card numbers one separator apart.
        assert_eq!(
            hidden("4111111111111111 5555555555554444", &DEFAULT),
            ["111111", "555555"]
        );
        assert_eq!(
            hidden("4111-1111-1111-1111-5555-5555-5555-4444", &DEFAULT),
            ["11-1111", "55-5555"]
        );
        // 19 digits and the 16 they start with are both card numbers: the
        // 19 hide all that the 16 do, and more.
        assert_eq!(
            hidden("12 4111 1111 1111 1111 003", &DEFAULT),
            ["11 1111 111"]
        );
        // Groups stay whole: no window of a group of 20 digits.
        assert!(hidden("41111111111111110000 12", &DEFAULT).is_empty());
        assert!(hidden("12-41111111111111110000", &DEFAULT).is_empty());
        // A window at the run's start or end is judged by the bytes
        // around the run; one inside it, after a separator, is not the
        // fraction of a decimal number.
        assert!(hidden("x4111111111111111 12", &DEFAULT).is_empty());
        assert!(hidden("12 4111111111111111_", &DEFAULT).is_empty());
        assert!(hidden("0.4111111111111111 12", &DEFAULT).is_empty());
        assert_eq!(hidden("12.50 4111111111111111", &DEFAULT), ["111111"]);
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
    /// at a time: what the scan must find. Every window of every run, the
    /// run itself the longest, is judged, of every size (the scan skips
    /// the sizes that cannot be grouped like a card, and the other windows
    /// of a run that is a card number when they cannot hide more); every
    /// digit that one of them hides is hidden, and the hidden digits of a
    /// run reported as maximal stretches of consecutive digits.
    fn reference(bytes: &[u8], rules: &Rules) -> Vec<(usize, usize)> {
        let digit = |i: usize| bytes.get(i).is_some_and(u8::is_ascii_digit);
        let word = |i: Option<usize>| {
            i.and_then(|i| bytes.get(i))
                .is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'_')
        };
        // The range to hide of a stretch of whole groups of a run (byte
        // ranges), if it is a card number.
        let judge = |groups: &[(usize, usize)]| -> Option<(usize, usize)> {
            let n: usize = groups.iter().map(|(start, end)| end - start).sum();
            let (last, rest) = groups.split_last().unwrap();
            let grouped = rest.is_empty()
                || rest.iter().all(|(s, e)| (4..=6).contains(&(e - s)))
                    && (3..=6).contains(&(last.1 - last.0));
            if !(13..=19).contains(&n) || !grouped {
                return None;
            }
            let (start, end) = (groups[0].0, last.1);
            let positions: Vec<usize> = (start..end).filter(|&k| digit(k)).collect();
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
            let pan = !touches && !fraction && leading && sum.is_multiple_of(10) && !uuid;
            pan.then(|| {
                let keep_first = if n < 16 {
                    rules.keep_first.min(6)
                } else {
                    rules.keep_first
                };
                (
                    positions[keep_first],
                    positions[n - rules.keep_last - 1] + 1,
                )
            })
        };
        let mut found = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if !digit(i) {
                i += 1;
                continue;
            }
            let run_start = i;
            // The run's groups, as byte ranges.
            let mut groups = vec![(i, i)];
            while i < bytes.len()
                && (digit(i) || matches!(bytes[i], b' ' | b'-') && digit(i - 1) && digit(i + 1))
            {
                if digit(i) {
                    groups.last_mut().unwrap().1 = i + 1;
                } else {
                    groups.push((i + 1, i + 1));
                }
                i += 1;
            }
            // Every window, overlapping others or not: the bytes each that
            // is a card number hides, by offset from the run's start.
            let mut hidden = vec![false; i - run_start];
            for size in 1..=groups.len() {
                for first in 0..=groups.len() - size {
                    if let Some((from, to)) = judge(&groups[first..first + size]) {
                        hidden[from - run_start..to - run_start].fill(true);
                    }
                }
            }
            // The hidden digits, in stretches of the run's digits one
            // after another, from the first digit of each to the last.
            let mut stretch: Option<(usize, usize)> = None;
            for k in (run_start..i).filter(|&k| digit(k)) {
                if hidden[k - run_start] {
                    stretch = Some((stretch.map_or(k, |(from, _)| from), k + 1));
                } else {
                    found.extend(stretch.take());
                }
            }
            found.extend(stretch);
        }
        found
    }

    /// A random number generator (xorshift), of numbers below its
    /// argument.
    fn random_numbers(mut state: u64) -> impl FnMut(u64) -> u64 {
        move |below: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % below
        }
    }

    /// Sets the last digit of the digits at `digits` in `text` so that
    /// they pass the Luhn check.
    fn make_luhn_valid(text: &mut [u8], digits: &[usize]) {
        let (&check, rest) = digits.split_last().unwrap();
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

    /// Every rule set the random comparisons run under.
    const ALL_DIGITS: Rules = Rules {
        leading_digits: 0b11_1111_1111,
        keep_first: 8,
        keep_last: 2,
    };
    const BARE: Rules = Rules {
        keep_first: 0,
        keep_last: 0,
        ..DEFAULT
    };

    /// Asserts that the scan finds in `text` what the reference does,
    /// under every rule set; returns how many it found.
    fn agrees_with_the_reference(text: &[u8]) -> usize {
        let mut found = 0;
        for rules in [&DEFAULT, &ALL_DIGITS, &BARE] {
            let want = reference(text, rules);
            let mut got = Vec::new();
            scan(text, rules, |start, end| got.push((start, end)));
            assert_eq!(
                got,
                want,
                "{:?} under {rules:?}",
                String::from_utf8_lossy(text)
            );
            found += got.len();
        }
        found
    }

    #[test]
    fn the_scan_finds_what_the_rules_say_in_random_text() {
        let mut random = random_numbers(0x2545_f491_4f6c_dd1d);
        // Digit runs of about a card number's length, half of them made
        // Luhn-valid, some grouped; short numbers (an expiry, a year, an
        // order number); between them the bytes the boundary rules are
        // about, or a single separator that joins them into one run; a
        // UUID now and then.
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
                            make_luhn_valid(&mut text, &digits);
                        }
                    }
                    5 => text.extend_from_slice(b"abcdefab-1234-5678-9012-345678901234"),
                    6 => {
                        for _ in 0..1 + random(6) {
                            text.push(b'0' + random(10) as u8);
                        }
                    }
                    _ => {
                        for _ in 0..1 + random(3) {
                            text.push(noise[random(noise.len() as u64) as usize]);
                        }
                    }
                }
                if random(3) == 0 {
                    text.push(if random(2) == 0 { b' ' } else { b'-' });
                }
            }
            found += agrees_with_the_reference(&text);
        }
        // Enough card numbers among them for the comparison to mean
        // something.
        assert!(found > 10_000, "{found}");
    }

    #[test]
    fn overlapping_windows_that_are_card_numbers_are_all_masked() {
        // `2341 4111 1111 1111` passes the Luhn check too: both it and the
        // card number after it hide their middle digits, one range.
        assert_eq!(
            hidden("Order 2341 4111 1111 1111 1111", &DEFAULT),
            ["11 1111 1111"]
        );
        // A longer window overlapping a card number's end: the card
        // number's own hidden digits and the window's.
        assert_eq!(
            hidden("5555 5555 5555 4444 1234 5678 006", &DEFAULT),
            ["55 5555", "44 1234 567"]
        );
        // Touching ranges (hidden digits either side of a separator) are
        // one: with nothing kept, two card numbers one space apart.
        assert_eq!(
            hidden("4111111111111111 5555555555554444", &BARE),
            ["4111111111111111 5555555555554444"]
        );
        // A run that is a card number of 19 digits, whose first 15 are
        // one too: with 8 leading digits kept, the 15 keep only 6.
        let eight = Rules {
            keep_first: 8,
            ..DEFAULT
        };
        assert_eq!(hidden("37828 22463 10005 0018", &eight), ["2463 10005"]);
        assert_eq!(hidden("37828 22463 10005 0018", &DEFAULT), ["2463 10005"]);
        assert_eq!(hidden("4111 1111 1111 1111 003", &eight), ["1111 111"]);
    }

    /// A chain of windows that are card numbers, each overlapping the next
    /// by a group: 5-4-4 digits (13), 4-4-4-4 (16) and 4-4-4-4-3 (19).
    /// Wherever the chain falls in a run (across the groups the scan holds
    /// at once too), the scan finds what the reference does: all three
    /// windows hide their digits, in one range when nothing is kept.
    ///
    /// This test was first written for the rule that masked windows
    /// longest first, each only if it overlapped none already masked: the
    /// 16-digit window was then left unmasked, and the test checked that
    /// the scan settled that chain of dependent windows only once it had
    /// read all of it. That rule could leave more than the kept digits of
    /// a card number visible; under the present one, that every window
    /// that is a card number is masked, the middle one is masked too.
    #[test]
    fn overlapping_windows_are_masked_wherever_they_fall_in_a_run() {
        let chain = [5, 4, 4, 4, 4, 4, 4, 4, 4, 3];
        for before in 0..24 {
            for after in 0..3 {
                let mut text = Vec::new();
                let mut groups = Vec::new();
                let lengths = std::iter::repeat_n(2, before)
                    .chain(chain)
                    .chain(std::iter::repeat_n(2, after));
                for (k, length) in lengths.enumerate() {
                    if k > 0 {
                        text.push(b' ');
                    }
                    let start = text.len();
                    // Each starting with 4, the rest 1s but for the last
                    // digit, set below.
                    text.push(b'4');
                    text.extend(std::iter::repeat_n(b'1', length - 1));
                    groups.push(start..text.len());
                }
                let windows = [(before, 3), (before + 2, 4), (before + 5, 5)];
                for (first, size) in windows {
                    let digits: Vec<usize> = groups[first..first + size]
                        .iter()
                        .flat_map(Clone::clone)
                        .collect();
                    make_luhn_valid(&mut text, &digits);
                }
                agrees_with_the_reference(&text);
                // Nothing kept: one range, over the whole chain.
                let mut found = Vec::new();
                scan(&text, &BARE, |start, end| found.push((start, end)));
                let chain_bytes = (groups[before].start, groups[before + 9].end);
                let text = String::from_utf8(text).unwrap();
                assert_eq!(found, [chain_bytes], "{text}");
                // The defaults: each window's middle digits hidden.
                let mut found = Vec::new();
                scan(text.as_bytes(), &DEFAULT, |start, end| {
                    found.push((start, end))
                });
                for (first, size) in windows {
                    let digits: Vec<usize> = groups[first..first + size]
                        .iter()
                        .flat_map(Clone::clone)
                        .collect();
                    let middle = (digits[6], digits[digits.len() - 5] + 1);
                    assert!(
                        found
                            .iter()
                            .any(|&(from, to)| from <= middle.0 && middle.1 <= to),
                        "{text}: {middle:?} in {found:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn long_runs_of_groups_are_searched_as_the_rules_say() {
        let mut random = random_numbers(0x9e37_79b9_7f4a_7c15);
        let mut text = Vec::new();
        let mut found = 0;
        for _ in 0..5_000 {
            text.clear();
            if random(2) == 0 {
                text.extend_from_slice(b"x ");
            }
            // 1 to 40 groups, mostly of 4 digits, some of 3 to 6 or of 13
            // to 20; some windows of 3 to 5 groups made Luhn-valid.
            let mut groups = Vec::new();
            for k in 0..1 + random(40) {
                if k > 0 {
                    text.push(if random(4) == 0 { b'-' } else { b' ' });
                }
                let length = match random(10) {
                    0..6 => 4,
                    6..9 => 3 + random(4),
                    _ => 13 + random(8),
                };
                let start = text.len();
                for _ in 0..length {
                    text.push(b'0' + random(10) as u8);
                }
                groups.push(start..text.len());
            }
            for _ in 0..random(6) {
                let size = (3 + random(3) as usize).min(groups.len());
                let first = random((groups.len() - size + 1) as u64) as usize;
                let digits: Vec<usize> = groups[first..first + size]
                    .iter()
                    .flat_map(Clone::clone)
                    .collect();
                make_luhn_valid(&mut text, &digits);
            }
            if random(2) == 0 {
                text.extend_from_slice(b" y");
            }
            found += agrees_with_the_reference(&text);
        }
        assert!(found > 5_000, "{found}");
    }
}
