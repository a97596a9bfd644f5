//! The Luhn check (ISO/IEC 7812-1): the last digit of every card number
//! is a check digit over the others, so nine in ten random digit strings
//! of a card's length fail it. It is what tells a PAN from an order number
//! or an amount of the same length.
//!
//! From the right, every second digit — starting with the one left of the
//! check digit — is doubled, and the digits of the product added (`7` → 14
//! → `5`); the number is valid when the sum of all the contributions is a
//! multiple of 10.

use crate::words::{EACH, TOP, digit_bytes, load};

/// Whether the digits of `run` pass the Luhn check. Bytes that are not
/// digits (the separators of a grouped card number) are skipped.
pub fn is_valid(run: &[u8]) -> bool {
    let sum = match right_aligned_words(run) {
        Some(words) => words.into_iter().map(eight_digit_sum).sum(),
        None => digit_by_digit_sum(run),
    };
    sum.is_multiple_of(10)
}

/// Each digit doubled, with the digits of the product added.
const DOUBLED: [u8; 10] = [0, 2, 4, 6, 8, 1, 3, 5, 7, 9];

/// The Luhn sum of the digits of `run`, one byte at a time: for runs with
/// separators.
fn digit_by_digit_sum(run: &[u8]) -> u64 {
    let mut sum = 0;
    let mut doubled = false;
    for &byte in run.iter().rev() {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            continue;
        }
        sum += u64::from(if doubled {
            DOUBLED[usize::from(digit)]
        } else {
            digit
        });
        doubled = !doubled;
    }
    sum
}

/// `run` as three words of ASCII digits, its last digit in the last byte
/// of the last word and `0`s (which add nothing to the sum) before its
/// first, when it is 8 to 24 digits and nothing else: the common case of
/// a card number written without separators.
fn right_aligned_words(run: &[u8]) -> Option<[u64; 3]> {
    const ZEROS: u64 = EACH * b'0' as u64;
    if !(8..=24).contains(&run.len()) {
        return None;
    }
    // The eight bytes ending at `end`, `0`-padded on the left when fewer.
    let word_ending_at = |end: usize| match end {
        0 => ZEROS,
        // The first eight bytes shifted up, so the first `end` of them
        // become the word's last; zeros shifted in below them.
        1..8 => load(&run[..8]) << (8 * (8 - end)) | ZEROS >> (8 * end),
        _ => load(&run[end - 8..end]),
    };
    let words = [
        word_ending_at(run.len().saturating_sub(16)),
        word_ending_at(run.len() - 8),
        word_ending_at(run.len()),
    ];
    words
        .iter()
        .all(|&word| digit_bytes(word) == TOP)
        .then_some(words)
}

/// The Luhn contributions of eight ASCII digits, added up: the digits in
/// bytes 0, 2, 4 and 6 doubled, those in 1, 3, 5 and 7 as they are.
///
/// In a right-aligned word the last byte holds the check digit or a digit
/// an even number of places left of it — not doubled — so the doubled
/// digits are always in the even bytes. A doubled digit `d` contributes
/// `2d`, less 9 when `d >= 5` (the digits of `2d` added); every byte's
/// contribution is at most 9, so no byte carries into the next, and one
/// multiplication adds them all up into the top byte.
fn eight_digit_sum(word: u64) -> u64 {
    const EVEN_BYTES: u64 = 0x00ff_00ff_00ff_00ff;
    let digits = word - EACH * u64::from(b'0');
    let doubled = digits & EVEN_BYTES;
    // 1 in each even byte whose digit is 5 or more: 5 + 0x7b = 0x80.
    let five_or_more = ((doubled + EACH * 0x7b) & TOP) >> 7;
    let contributions = digits + doubled - 9 * five_or_more;
    contributions.wrapping_mul(EACH) >> 56
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_card_numbers_pass() {
        for pan in [
            "4111111111111111",
            "4222222222222",
            "4111111111111111003",
            "378282246310005",
            "30569309025904",
            "6011111111111117",
            "0",
            "00000000000000000000000000000",
        ] {
            assert!(is_valid(pan.as_bytes()), "{pan}");
        }
    }

    #[test]
    fn one_wrong_digit_or_a_swap_fails() {
        for number in [
            "4111111111111112",
            "4111111111111121",
            "378282246310006",
            "3782822463100055",
        ] {
            assert!(!is_valid(number.as_bytes()), "{number}");
        }
    }

    #[test]
    fn separators_are_skipped() {
        assert!(is_valid(b"4111 1111-1111 1111"));
        assert!(is_valid(b"3782 822463 10005"));
        assert!(!is_valid(b"4111 1111 1111 1112"));
    }

    #[test]
    fn words_and_digits_agree_on_every_length() {
        // Every prefix of some digit strings, each with every check digit:
        // the word-wise sum must be the digit-by-digit sum.
        let mut number = Vec::new();
        for seed in ["4111111111111111003", "9876543210987654321012345", "5"] {
            for length in 1..=26 {
                for check in b'0'..=b'9' {
                    number.clear();
                    number.extend(seed.bytes().cycle().take(length - 1));
                    number.push(check);
                    let by_digit = digit_by_digit_sum(&number);
                    if let Some(words) = right_aligned_words(&number) {
                        let by_word: u64 = words.into_iter().map(eight_digit_sum).sum();
                        assert_eq!(by_word, by_digit, "{:?}", String::from_utf8_lossy(&number));
                    } else {
                        assert!(!(8..=24).contains(&length));
                    }
                }
            }
        }
    }

    /// The Luhn check as it is usually written: a digit at a time.
    fn textbook(number: &[u8]) -> bool {
        let digits = number.iter().rev().filter(|byte| byte.is_ascii_digit());
        let sum: u32 = digits
            .enumerate()
            .map(|(position, byte)| {
                let digit = u32::from(byte - b'0');
                match position % 2 {
                    0 => digit,
                    _ => 2 * digit / 10 + 2 * digit % 10,
                }
            })
            .sum();
        sum.is_multiple_of(10)
    }

    #[test]
    fn random_runs_are_judged_as_the_textbook_does() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut random = move |below: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % below
        };
        let mut run = Vec::new();
        let mut valid = 0;
        for _ in 0..100_000 {
            run.clear();
            let grouped = random(2) == 0;
            for k in 0..1 + random(30) {
                if grouped && k > 0 && random(4) == 0 {
                    run.push(if random(2) == 0 { b' ' } else { b'-' });
                }
                run.push(b'0' + random(10) as u8);
            }
            let want = textbook(&run);
            assert_eq!(is_valid(&run), want, "{:?}", String::from_utf8_lossy(&run));
            valid += usize::from(want);
        }
        assert!(valid > 5_000, "{valid}");
    }
}
