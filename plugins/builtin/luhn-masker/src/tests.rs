//! The masker end to end: values and text in, edits applied as sluice
//! applies them (which also checks they are edits sluice accepts), text
//! out.

use sluice_plugin::masking::{apply_text_edits, apply_value_edits};
use sluice_plugin::session::{Session, SessionInfo};
use sluice_plugin::types::ValueFormat;

use super::*;

/// `text` masked under the config table `json`, through both paths —
/// a one-value batch and free text — which must agree.
fn masked_with(json: &str, text: &str) -> String {
    let settings = Settings::parse(json).expect("a valid configuration");
    let batch = ValueBatch::from_values([(0, text.as_bytes())]);
    let values = apply_value_edits(&batch, &mask_batch(&settings, &batch))
        .unwrap_or_else(|error| panic!("{text:?}: {error}"));
    let masked = apply_text_edits(text, &mask_text(&settings, text))
        .unwrap_or_else(|error| panic!("{text:?}: {error}"));
    assert_eq!(values, [masked.as_bytes()], "{text:?}");
    masked
}

/// `text` masked with the defaults.
fn masked(text: &str) -> String {
    masked_with("{}", text)
}

/// Asserts that nothing in `text` is touched: no edits at all.
fn unchanged_with(json: &str, text: &str) {
    let settings = Settings::parse(json).expect("a valid configuration");
    assert_eq!(mask_text(&settings, text), [], "{text:?}");
    let batch = ValueBatch::from_values([(0, text.as_bytes())]);
    assert!(mask_batch(&settings, &batch).is_empty(), "{text:?}");
}

fn unchanged(text: &str) {
    unchanged_with("{}", text);
}

/// What a card number looks like masked, worked out digit by digit: the
/// first `keep_first` (at most 6 below 16 digits) and the last
/// `keep_last` digits kept, every other digit `mask`, separators kept.
fn expected(pan: &str, keep_first: usize, keep_last: usize, mask: &str) -> String {
    let digits = pan.bytes().filter(u8::is_ascii_digit).count();
    let keep_first = if digits < 16 {
        keep_first.min(6)
    } else {
        keep_first
    };
    let mut seen = 0;
    let mut out = String::new();
    for c in pan.chars() {
        if c.is_ascii_digit() {
            seen += 1;
            if seen > keep_first && seen <= digits - keep_last {
                out.push_str(mask);
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// Test card numbers of every scheme and length, each with what the
/// defaults make of it.
const PANS: [(&str, &str); 22] = [
    // Visa, 16, 13 and 19 digits.
    ("4111111111111111", "411111******1111"),
    ("4012888888881881", "401288******1881"),
    ("4222222222222", "422222***2222"),
    ("4111111111111111003", "411111*********1003"),
    ("4012888888881881003", "401288*********1003"),
    // Mastercard, 5-series and 2-series.
    ("5555555555554444", "555555******4444"),
    ("5105105105105100", "510510******5100"),
    ("2223003122003222", "222300******3222"),
    // American Express, 15.
    ("378282246310005", "378282*****0005"),
    ("371449635398431", "371449*****8431"),
    // Discover, 16 and 19.
    ("6011111111111117", "601111******1117"),
    ("6011000990139424", "601100******9424"),
    ("6011111111111111110", "601111*********1110"),
    // JCB, 16 and 19.
    ("3530111333300000", "353011******0000"),
    ("3566002020360505", "356600******0505"),
    ("3530111333300000001", "353011*********0001"),
    // Diners Club, 14.
    ("30569309025904", "305693****5904"),
    ("38520000023237", "385200****3237"),
    // UnionPay, 16 and 19.
    ("6200000000000005", "620000******0005"),
    ("6212345678901234569", "621234*********4569"),
    // Grouped as printed.
    ("4111 1111 1111 1111", "4111 11** **** 1111"),
    ("3782 822463 10005", "3782 82**** *0005"),
];

#[test]
fn every_scheme_and_length_is_masked_with_the_defaults() {
    for (pan, want) in PANS {
        assert_eq!(masked(pan), want, "{pan}");
        assert_eq!(want, expected(pan, 6, 4, "*"), "{pan}");
    }
}

#[test]
fn every_scheme_and_length_is_masked_under_every_setting() {
    for (keep_first, keep_last, mask) in [
        (0, 4, "*"),
        (8, 4, "*"),
        (6, 0, "*"),
        (0, 0, "X"),
        (8, 2, "•"),
        (6, 4, "#"),
    ] {
        let json = format!(
            r#"{{"keep_first": {keep_first}, "keep_last": {keep_last}, "mask": "{mask}"}}"#
        );
        for (pan, _) in PANS {
            assert_eq!(
                masked_with(&json, pan),
                expected(pan, keep_first, keep_last, mask),
                "{pan} under {json}"
            );
        }
    }
}

#[test]
fn eight_leading_digits_stay_only_from_sixteen_digits() {
    let json = r#"{"keep_first": 8}"#;
    assert_eq!(masked_with(json, "4111111111111111"), "41111111****1111");
    assert_eq!(
        masked_with(json, "4111111111111111003"),
        "41111111*******1003"
    );
    assert_eq!(masked_with(json, "378282246310005"), "378282*****0005");
    assert_eq!(masked_with(json, "30569309025904"), "305693****5904");
    assert_eq!(masked_with(json, "4222222222222"), "422222***2222");
    assert_eq!(
        masked_with(json, "4111 1111 1111 1111"),
        "4111 1111 **** 1111"
    );
}

#[test]
fn separators_stay_where_they_were() {
    for (pan, want) in [
        ("4111 1111 1111 1111", "4111 11** **** 1111"),
        ("4111-1111-1111-1111", "4111-11**-****-1111"),
        ("4111 1111-1111 1111", "4111 11**-**** 1111"),
        ("5555-5555-5555-4444", "5555-55**-****-4444"),
        ("6011 0009 9013 9424", "6011 00** **** 9424"),
        ("3782 822463 10005", "3782 82**** *0005"),
        ("3782-822463-10005", "3782-82****-*0005"),
        ("3056 930902 5904", "3056 93**** 5904"),
        ("4111 1111 1111 1111 003", "4111 11** **** ***1 003"),
        ("4222 2222 22222", "4222 22** *2222"),
    ] {
        assert_eq!(masked(pan), want, "{pan}");
    }
    assert_eq!(
        masked_with(r#"{"mask": "•"}"#, "4111 1111 1111 1111"),
        "4111 11•• •••• 1111"
    );
    assert_eq!(
        masked_with(
            r#"{"keep_first": 0, "keep_last": 0}"#,
            "4111-1111-1111-1111"
        ),
        "****-****-****-****"
    );
}

#[test]
fn card_numbers_are_found_wherever_they_are_written() {
    for (text, want) in [
        (
            "card 4111 1111 1111 1111 expires",
            "card 4111 11** **** 1111 expires",
        ),
        (
            "card 4111 1111 1111 1111 expires 12/27.",
            "card 4111 11** **** 1111 expires 12/27.",
        ),
        ("paid with 4111111111111111.", "paid with 411111******1111."),
        (
            r#"{"pan":"4111111111111111","amount":1234.56}"#,
            r#"{"pan":"411111******1111","amount":1234.56}"#,
        ),
        (
            r#"{"card": {"number": 5555555555554444, "cvc": "123"}}"#,
            r#"{"card": {"number": 555555******4444, "cvc": "123"}}"#,
        ),
        (
            r#"{4111111111111111,"5555 5555 5555 4444"}"#,
            r#"{411111******1111,"5555 55** **** 4444"}"#,
        ),
        ("(1,4111111111111111)", "(1,411111******1111)"),
        (
            r#"(7,"378282246310005",2027-01-31)"#,
            r#"(7,"378282*****0005",2027-01-31)"#,
        ),
        (
            "id,pan,name\n1,4111111111111111,Alice\n2,378282246310005,Bob\n",
            "id,pan,name\n1,411111******1111,Alice\n2,378282*****0005,Bob\n",
        ),
        ("1\t6011111111111117\tCarol", "1\t601111******1117\tCarol"),
        (
            "4111111111111111 and 5555-5555-5555-4444; also 378282246310005",
            "411111******1111 and 5555-55**-****-4444; also 378282*****0005",
        ),
        ("pan=3530111333300000&x=1", "pan=353011******0000&x=1"),
        ("-4111111111111111", "-411111******1111"),
        (
            "Karte 4111111111111111 ist gültig — «5555555555554444»",
            "Karte 411111******1111 ist gültig — «555555******4444»",
        ),
        (
            "ERROR: duplicate key value violates unique constraint \"cards_pan_key\"\n\
             DETAIL: Key (pan)=(4012888888881881) already exists.",
            "ERROR: duplicate key value violates unique constraint \"cards_pan_key\"\n\
             DETAIL: Key (pan)=(401288******1881) already exists.",
        ),
        (
            "SELECT * FROM cards WHERE pan = '4111-1111-1111-1111'",
            "SELECT * FROM cards WHERE pan = '4111-11**-****-1111'",
        ),
        (
            "order ORD-2024-000123 paid by 4111111111111111 at 2026-11-29 03:07:26+00",
            "order ORD-2024-000123 paid by 411111******1111 at 2026-11-29 03:07:26+00",
        ),
    ] {
        assert_eq!(masked(text), want, "{text}");
    }
}

#[test]
fn card_numbers_joined_to_other_numbers_are_found() {
    for (text, want) in [
        // An expiry or a year after it.
        ("card 4111111111111111 12/27", "card 411111******1111 12/27"),
        ("4111 1111 1111 1111 12/27", "4111 11** **** 1111 12/27"),
        ("4111-1111-1111-1111-2027", "4111-11**-****-1111-2027"),
        ("4111 1111 1111 1111 0000", "4111 11** **** 1111 0000"),
        ("378282246310005 2027", "378282*****0005 2027"),
        // An order number or a date before it.
        (
            "Order 1234 4111 1111 1111 1111",
            "Order 1234 4111 11** **** 1111",
        ),
        (
            "2024-05-01 4111111111111111 paid",
            "2024-05-01 411111******1111 paid",
        ),
        (
            "total 12.50 4111111111111111",
            "total 12.50 411111******1111",
        ),
        // Two card numbers, one separator apart.
        (
            "pans 4111111111111111 5555555555554444",
            "pans 411111******1111 555555******4444",
        ),
        (
            "4111-1111-1111-1111-5555-5555-5555-4444",
            "4111-11**-****-1111-5555-55**-****-4444",
        ),
        (
            "3782 822463 10005 3056 930902 5904",
            "3782 82**** *0005 3056 93**** 5904",
        ),
        // The longest window: 19 digits, not the 16 they start with.
        ("12 4111 1111 1111 1111 003", "12 4111 11** **** ***1 003"),
        // A card number after the digits of a UUID.
        (
            "a0eebc99-9c0b-4ef8-bb6d-123456789012 4111111111111111",
            "a0eebc99-9c0b-4ef8-bb6d-123456789012 411111******1111",
        ),
    ] {
        assert_eq!(masked(text), want, "{text}");
    }
}

/// How many of the digits of `pan` (which starts at byte `at` of a text
/// masked with one-byte mask characters, `masked`) are still visible,
/// apart from its first `keep_first` and last `keep_last`.
fn shown_beyond_the_kept(masked: &str, at: usize, pan: &str, keep: (usize, usize)) -> usize {
    let digits = pan.bytes().filter(u8::is_ascii_digit).count();
    let (keep_first, keep_last) = keep;
    let keep_first = if digits < 16 {
        keep_first.min(6)
    } else {
        keep_first
    };
    let mut seen = 0;
    let mut shown = 0;
    for (offset, byte) in pan.bytes().enumerate() {
        if !byte.is_ascii_digit() {
            continue;
        }
        let kept = seen < keep_first || seen >= digits - keep_last;
        if !kept && masked.as_bytes()[at + offset].is_ascii_digit() {
            shown += 1;
        }
        seen += 1;
    }
    shown
}

/// A card number overlapped by another window of its run that passes
/// every rule (the Luhn check included) shows no more than its kept
/// digits: every window that passes hides its digits, so whichever is the
/// real card number, its middle digits are hidden. (Under the earlier
/// rule, which masked windows longest first and then leftmost first and
/// skipped each that overlapped one already masked, the other window won
/// and the card number showed more: `2341 41** **** 1111 1111`,
/// `5555 5555 5555 44** **** ***8 006`, and `37828 224** ***** 0018` with
/// 8 leading digits kept, 8 of a 15-digit card number.)
#[test]
fn a_card_number_overlapped_by_another_window_that_passes_shows_only_its_kept_digits() {
    for (json, text, pan, want) in [
        // `2341 4111 1111 1111` passes the Luhn check and starts with 2.
        (
            "{}",
            "Order 2341 4111 1111 1111 1111",
            "4111 1111 1111 1111",
            "Order 2341 41** **** **** 1111",
        ),
        (
            r#"{"keep_first": 8}"#,
            "Order 2341 4111 1111 1111 1111",
            "4111 1111 1111 1111",
            "Order 2341 4111 **** **** 1111",
        ),
        (
            r#"{"keep_first": 8}"#,
            "Order 2341 4111 1111 1111 1111",
            "2341 4111 1111 1111",
            "Order 2341 4111 **** **** 1111",
        ),
        // `5555 4444 1234 5678 006` (19 digits) passes too.
        (
            "{}",
            "5555 5555 5555 4444 1234 5678 006",
            "5555 5555 5555 4444",
            "5555 55** **** 44** **** ***8 006",
        ),
        (
            "{}",
            "5555 5555 5555 4444 1234 5678 006",
            "5555 4444 1234 5678 006",
            "5555 55** **** 44** **** ***8 006",
        ),
        // A run that is a card number of 19 digits, whose first 15 (an
        // Amex number) are one too: these keep only 6 leading digits.
        (
            r#"{"keep_first": 8}"#,
            "37828 22463 10005 0018",
            "37828 22463 10005",
            "37828 2**** ***** 0018",
        ),
    ] {
        let got = masked_with(json, text);
        assert_eq!(got, want, "{text} under {json}");
        let at = text.find(pan).unwrap();
        let settings = Settings::parse(json).unwrap();
        let keep = (settings.rules.keep_first, settings.rules.keep_last);
        assert_eq!(
            shown_beyond_the_kept(&got, at, pan, keep),
            0,
            "{pan} in {got}"
        );
    }
    // Wherever the pair is in a run of groups of four: a 4-digit group
    // before a test card number, such that it and the card number's first
    // three groups pass every rule too. Neither window shows more than its
    // first six and last four digits.
    for (prefix, pan) in [
        ("2341", "4111 1111 1111 1111"),
        ("2349", "5555 5555 5555 4444"),
        ("6215", "6011 1111 1111 1117"),
    ] {
        for before in 0..20 {
            let filler = "1234 ".repeat(before);
            let text = format!("ref {filler}{prefix} {pan} 9876 end");
            let got = masked(&text);
            let at = text.find(pan).unwrap();
            let window = &text[at - 5..at + 14];
            assert_eq!(shown_beyond_the_kept(&got, at, pan, (6, 4)), 0, "{got}");
            assert_eq!(
                shown_beyond_the_kept(&got, at - 5, window, (6, 4)),
                0,
                "{got}"
            );
            // The two windows' hidden digits, one range: from the
            // card number's third digit to its fourth-last.
            let want = format!("{prefix} {}** **** **** {}", &pan[..2], &pan[15..]);
            assert_eq!(got, text.replace(&format!("{prefix} {pan}"), &want));
        }
    }
}

/// A run of 30 groups, a card number among them wherever it is: found,
/// with no other group changed (the scan holds a run's groups 16 at a
/// time).
#[test]
fn a_card_number_in_a_long_run_of_groups_is_found() {
    for at in 0..=26 {
        let mut groups = vec!["1234"; 30];
        groups.splice(at..at + 4, ["4111", "1111", "1111", "1111"]);
        let text = format!("ref {} end", groups.join(" "));
        groups.splice(at..at + 4, ["4111", "11**", "****", "1111"]);
        let want = format!("ref {} end", groups.join(" "));
        assert_eq!(masked(&text), want, "at {at}");
    }
    // Two of them, and one of 19 digits.
    let text = format!(
        "{} 5555 5555 5555 4444 {} 4111 1111 1111 1111 003 {}",
        "1234 ".repeat(12).trim_end(),
        "9999 ".repeat(3).trim_end(),
        "12 ".repeat(10).trim_end(),
    );
    let want = text
        .replace("5555 5555 5555 4444", "5555 55** **** 4444")
        .replace("4111 1111 1111 1111 003", "4111 11** **** ***1 003");
    assert_eq!(masked(&text), want);
}

#[test]
fn numbers_that_are_not_card_numbers_are_left_alone() {
    for text in [
        // Luhn-invalid.
        "4111111111111112",
        "4111 1111 1111 1112",
        "5555555555554445",
        // Too short, or an unbroken group too long, even with a valid
        // card number inside.
        "411111111117",
        "4111 1111 1117",
        "41111111111111110000",
        "41111111111111111115",
        "00004111111111111111",
        "12345678901234567890123",
        "41111111111111110000 12/27",
        "Order 12-41111111111111110000",
        // Runs of groups with no window that is a card number: none
        // Luhn-valid with a leading digit, grouped like a card.
        "1234 5678 9012 3456 7890 1234",
        "4111 1111 1111 1112 12/27",
        "5555-5555-5555-4445-2027",
        "1764385646005 1764385646000",
        "4111 1111 1111 11 12 27",
        // A window that touches a word or is a float's digits.
        "id4111111111111111 12/27",
        "4111 5555555555554444_x",
        "0.4111111111111111 12",
        // Grouped otherwise than cards are: phone numbers and the like.
        "+1 555 123 4567",
        "+49 30 1234 56789",
        "0044 20 7946 0958",
        "+44 20 7946 0958",
        "41 1111 1111 1111 11",
        "4111111 111111111",
        "411111 1111111111",
        "4111 1111 1111 11 11",
        "4111--1111--1111--1111",
        "4111  1111  1111  1111",
        // Dates and timestamps, with and without a leading digit of the
        // brands.
        "2026-11-29 03:07:26.123456+00",
        "2024-05-01 2024-05-31",
        "12/27 2027-01-31 2027-12-31",
        "2026-11-29 03:07:26 2026-11-30 04:08:27",
        "20261129 030726 20261130",
        "2026-11-29T03:07:26.123456Z",
        "1764385646000",
        "1764385646005",
        "1764385646000000",
        "1764385646000009",
        // UUIDs, of letters and digits, or all digits.
        "abcdefab-abcd-abcd-9012-345678901234",
        "12345678-1234-1234-abcd-ef0123456789",
        "12345678-1234-1234-1234-123456789012",
        "ABCDEFAB-ABCD-ABCD-9012-345678901234",
        "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
        // Identifiers, hashes, base64: digits that touch letters or `_`.
        "ORD-2024-000123",
        "id4111111111111111",
        "4111111111111111id",
        "order_4111111111111111",
        "4111111111111111_2",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "9f4111111111111111e3b04298fc1c149afbf4c8996fb92427ae41e4649b934c",
        "sha256:a4111111111111111b",
        "QUJD4111111111111111RUZH",
        // Bank accounts.
        "DE89 3704 0044 0532 0130 00",
        "GB82WEST12345698765432",
        "NL91ABNA0417164300",
        "FR76 3000 6000 0112 3456 7890 189",
        // Amounts and the digits of a float.
        "1234.56",
        "-98765.4321",
        "0.4111111111111111",
        "1.4111111111111111e-05",
        "3.378282246310005",
        // A leading digit outside the default set.
        "1111111111111117",
        "0000000000000000",
        "8000000000000003",
        // Already masked.
        "411111******1111",
        "4111 11** **** 1111",
        "",
        "no digits at all",
    ] {
        unchanged(text);
    }
}

#[test]
fn leading_digits_choose_the_card_numbers_looked_for() {
    let all = r#"{"leading_digits": "0123456789"}"#;
    assert_eq!(masked_with(all, "1111111111111117"), "111111******1117");
    assert_eq!(masked_with(all, "0000000000000000"), "000000******0000");
    assert_eq!(masked_with(all, "8000000000000003"), "800000******0003");
    unchanged_with(all, "1111111111111118");
    let visa = r#"{"leading_digits": "4"}"#;
    assert_eq!(masked_with(visa, "4111111111111111"), "411111******1111");
    unchanged_with(visa, "5555555555554444");
    unchanged_with(visa, "378282246310005");
}

#[test]
fn masked_output_is_masked_no_further() {
    for (pan, want) in PANS {
        unchanged(want);
        unchanged(&expected(pan, 0, 0, "X"));
        unchanged(&expected(pan, 8, 4, "•"));
    }
}

#[test]
fn edits_cover_only_the_hidden_digits() {
    let settings = Settings::parse("{}").unwrap();
    let edits = mask_text(&settings, "x 4111 1111 1111 1111, 5555555555554444");
    assert_eq!(
        edits,
        [
            TextEdit {
                start: 9,
                end: 16,
                replacement: "** ****".to_owned(),
            },
            TextEdit {
                start: 29,
                end: 35,
                replacement: "******".to_owned(),
            },
        ]
    );
    let batch = ValueBatch::from_values([(0, &b"none"[..]), (3, b"(1,4111111111111111)")]);
    let edits = mask_batch(&settings, &batch);
    assert_eq!(
        edits.iter().collect::<Vec<_>>(),
        [(1, 9, 15, &b"******"[..])]
    );
}

#[test]
fn a_large_batch_is_masked_value_by_value() {
    let settings = Settings::parse("{}").unwrap();
    let samples: [(&str, &str); 8] = [
        ("4111111111111111", "411111******1111"),
        ("alice@example.com", "alice@example.com"),
        ("4111111111111112", "4111111111111112"),
        ("5555 5555 5555 4444", "5555 55** **** 4444"),
        ("1764385646000", "1764385646000"),
        (
            r#"{"pan":"378282246310005","n":2}"#,
            r#"{"pan":"378282*****0005","n":2}"#,
        ),
        ("", ""),
        (
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        ),
    ];
    let mut inputs = Vec::new();
    let mut wanted = Vec::new();
    for i in 0..10_000 {
        let (input, want) = samples[i % samples.len()];
        // Vary the surroundings, so values differ in length and offsets.
        let pad = " ".repeat(i % 3);
        inputs.push(format!("{pad}{input}{pad}"));
        wanted.push(format!("{pad}{want}{pad}").into_bytes());
    }
    let batch = ValueBatch::from_values(
        inputs
            .iter()
            .enumerate()
            .map(|(i, value)| ((i % 4) as u16, value.as_bytes())),
    );
    let edits = mask_batch(&settings, &batch);
    assert_eq!(edits.len(), 3 * 10_000 / 8);
    assert_eq!(apply_value_edits(&batch, &edits).unwrap(), wanted);
}

#[test]
fn columns_of_types_that_cannot_hold_a_card_number_are_not_selected() {
    let column = |type_oid| Column {
        name: "c".to_owned(),
        table_oid: 0,
        column_number: 0,
        type_oid,
        type_modifier: -1,
        format: ValueFormat::Text,
    };
    let session = Session::new(SessionInfo::default());
    let columns = [
        column(25),
        column(23),
        column(20),
        column(2950),
        column(705),
        column(3802),
    ];
    assert_eq!(
        LuhnMasker::select_columns(&session, &columns),
        [true, false, true, false, true, true]
    );
}

/// The quickstart's demo data: every card number in it masked, and not
/// one other byte changed (order numbers, a mistyped card number, phone
/// numbers, tickets, invoices, amounts and timestamps stay as they are).
#[test]
fn the_quickstart_data_is_masked_exactly() {
    const SEED: &str = include_str!("../../../../examples/quickstart/seed.sql");
    let pans = [
        "4111111111111111",
        "4242 4242 4242 4242",
        "4012-8888-8888-1881",
        "4000056655665556",
        "4222222222222",
        "4000000000000000006",
        "4242 4242 4242 4242 428",
        "5555555555554444",
        "5105 1051 0510 5100",
        "5200-8282-8282-8210",
        "5454545454545454",
        "2223003122003222",
        "2221 0000 0000 0009",
        "2720-9925-9331-9364",
        "378282246310005",
        "3714 496353 98431",
        "3787-344936-71000",
        "6011111111111117",
        "6011 0009 9013 9424",
        "3530111333300000",
        "3566-0020-2036-0505",
        "36227206271667",
        "3056 930902 5904",
        "38520000023237",
        "6200000000000005",
        "6205500000000000004",
        // In the orders' notes.
        "5555 5555 5555 4444",
        "4111-1111-1111-1111",
        "6200 0000 0000 0005",
    ];
    // Each card number between its quotes (or its words), so that one
    // that starts another is not replaced inside it.
    let mut want = SEED.to_owned();
    for pan in pans {
        let (quoted, spaced) = (format!("'{pan}'"), format!(" {pan} "));
        assert!(SEED.contains(&quoted) || SEED.contains(&spaced), "{pan}");
        want = want.replace(&quoted, &format!("'{}'", expected(pan, 6, 4, "*")));
        want = want.replace(&spaced, &format!(" {} ", expected(pan, 6, 4, "*")));
    }
    assert_eq!(masked(SEED), want);
    // 26 cards, and 4 card numbers in the notes (one of them a card's).
    let edits = mask_text(&Settings::parse("{}").unwrap(), SEED);
    assert_eq!(edits.len(), 30);
}
