//! Eight bytes at a time: the scan's inner loops test whole 64-bit words
//! (SWAR, "SIMD within a register") instead of single bytes, with few
//! branches that depend on the data: what keeps the scan at about a
//! nanosecond per byte or less, in WebAssembly too (whose `i64`
//! operations are native).
//!
//! Words are loaded little-endian, so byte `i` of a slice is byte `i` of
//! the word, counted from the least significant end.

/// `0x01` in every byte: multiplying a byte value by it repeats the value
/// in every byte.
pub const EACH: u64 = 0x0101_0101_0101_0101;

/// The top bit of every byte.
pub const TOP: u64 = EACH * 0x80;

/// Eight bytes as a word; `bytes` must hold exactly eight.
pub fn load(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().expect("eight bytes"))
}

/// The eight bytes of `bytes` from `at` on as a word, zeros in place of
/// those past the end; `bytes` must hold at least eight, and `at` be
/// inside it.
pub fn word_at(bytes: &[u8], at: usize) -> u64 {
    match bytes.get(at..at + 8) {
        Some(eight) => load(eight),
        // The last eight bytes, shifted down so that the byte at `at`
        // comes first and zeros fill in above the last.
        None => load(&bytes[bytes.len() - 8..]) >> (8 * (at + 8 - bytes.len())),
    }
}

/// The top bit of every byte of `word` equal to `byte` (an ASCII byte),
/// every other bit clear.
///
/// Per byte, `x` = the byte xor `byte` is zero exactly when they are
/// equal; `(x & 0x7f) + 0x7f` has its top bit set when `x`'s low bits are
/// not all zero, `x` itself when its top bit is; neither carries into the
/// next byte.
pub const fn bytes_equal(word: u64, byte: u8) -> u64 {
    let x = word ^ (EACH * byte as u64);
    let low = EACH * 0x7f;
    !(((x & low) + low) | x) & TOP
}

/// The top bit of every byte of `word` that is an ASCII digit (`0x30` to
/// `0x39`), every other bit clear.
///
/// Per byte, on its low seven bits `low`: `0xb9 - low` has its top bit set
/// when `low <= 0x39`, `low + 0x50` when `low >= 0x30`; neither borrows
/// nor carries into the next byte, so each byte is judged alone. Bytes
/// with their own top bit set (UTF-8 beyond ASCII) are excluded.
pub const fn digit_bytes(word: u64) -> u64 {
    let low = word & (EACH * 0x7f);
    let at_most_nine = (EACH * 0xb9) - low;
    let at_least_zero = low + EACH * 0x50;
    at_most_nine & at_least_zero & !word & TOP
}

/// The index of the first byte whose top bit is set in `flags` (a result
/// of [`digit_bytes`] or its complement), if any.
pub fn first_flagged(flags: u64) -> Option<usize> {
    (flags != 0).then(|| flags.trailing_zeros() as usize / 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_byte_is_judged_alone() {
        for byte in 0..=255u8 {
            let word = load(&[b'x', b'9', b'/', byte, b':', 0x80, 0xb9, 0xff]);
            let digit = if byte.is_ascii_digit() { 0x80 << 24 } else { 0 };
            assert_eq!(digit_bytes(word), 0x80 << 8 | digit, "byte {byte:#x}");
        }
        assert_eq!(digit_bytes(load(b"01234567")), TOP);
        assert_eq!(digit_bytes(load(b"89abcdef")), 0x8080);
    }

    #[test]
    fn equal_bytes_are_found_alone() {
        for byte in 0..=255u8 {
            let word = load(&[b'-', b' ', b'x', byte, b'-', 0xad, 0xa0, 0]);
            let dash = if byte == b'-' { 0x80 << 24 } else { 0 };
            assert_eq!(
                bytes_equal(word, b'-'),
                0x80 << 32 | dash | 0x80,
                "{byte:#x}"
            );
        }
        assert_eq!(bytes_equal(load(b"        "), b' '), TOP);
    }

    #[test]
    fn words_past_the_end_are_padded_with_zeros() {
        let bytes = b"0123456789ab";
        assert_eq!(word_at(bytes, 0), load(b"01234567"));
        assert_eq!(word_at(bytes, 4), load(b"456789ab"));
        assert_eq!(word_at(bytes, 5), load(b"56789ab\0"));
        assert_eq!(word_at(bytes, 11), u64::from(b'b'));
    }

    #[test]
    fn the_first_flagged_byte_is_the_lowest() {
        assert_eq!(first_flagged(digit_bytes(load(b"ab3d5fgh"))), Some(2));
        assert_eq!(
            first_flagged(!digit_bytes(load(b"1234567x")) & TOP),
            Some(7)
        );
        assert_eq!(first_flagged(0), None);
    }
}
