//! Card numbers never leave unmasked: the shipped Luhn masker
//! (`builtin:luhn-masker`) on every path out of the gateway — rows in text
//! and binary format in every column type that can hold one, column names,
//! errors and notices, notifications, reported parameters — while values
//! that are not card numbers come back exactly as the server sent them.
//!
//! Expected binary values are PostgreSQL's own: the same query run directly
//! with the masked value in place of the card number must give the very
//! bytes sluice passed on.

use tokio_postgres::SimpleQueryMessage;
use tokio_postgres::types::{FromSql, Type};

use sluice_tests::raw::{
    RawConn, bind, bind_execute_sync, copy_text, execute, parse, query, startup_message, sync,
};
use sluice_tests::{TestEnv, token_of};

/// The shipped masker, with its defaults: first six and last four digits
/// shown, `*` for the rest.
const LUHN_MASKER: &str =
    "[[plugins]]\nname = \"pans\"\nhook = \"masking\"\npath = \"builtin:luhn-masker\"\n";

/// The audit trail every masking test writes, in the config's directory,
/// with the rows returned: what sluice records about this traffic must
/// hold no card number either.
const AUDIT_TRAIL: &str =
    "[audit]\nfile = \"audit.jsonl\"\nfsync = \"batch\"\nrecord_results = true\n";

/// Test card numbers of every scheme and length; each passes the Luhn
/// check.
const PANS: &[(&str, &str)] = &[
    ("Visa 16", "4111111111111111"),
    ("Visa 13", "4222222222222"),
    ("Visa 19", "4111111111111111003"),
    ("Mastercard 5-series", "5555555555554444"),
    ("Mastercard 2-series", "2223003122003222"),
    ("Amex 15", "378282246310005"),
    ("Discover", "6011111111111117"),
    ("JCB", "3530111333300000"),
    ("Diners 14", "30569309025904"),
];

/// Text that looks a little like a card number and is not one.
const NEAR_MISSES: &[&str] = &[
    "4111111111111112",
    "411111111111",
    "41111111111111111111",
    "x 54111111111111111111 y",
    "+1 555 123 4567",
    "+49 30 1234 56789",
    "2026-11-29 03:07:26.123456+00",
    "1764385646000",
    "550e8400-e29b-41d4-a716-446655440000",
    "abcdefab-abcd-abcd-9012-345678901234",
    "ORD-2024-000123",
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "total 1234.56",
];

/// A card number as the masker shows it: the first six and the last four
/// digits, `*` for the digits between, anything else kept.
fn masked(pan: &str) -> String {
    hide(pan, '*')
}

/// A card number in a number column, masked: the hidden digits are 0.
fn zeroed(pan: &str) -> String {
    hide(pan, '0')
}

fn hide(pan: &str, with: char) -> String {
    let digits = pan.chars().filter(char::is_ascii_digit).count();
    let mut seen = 0;
    pan.chars()
        .map(|c| {
            if !c.is_ascii_digit() {
                return c;
            }
            seen += 1;
            if seen <= 6 || seen > digits - 4 {
                c
            } else {
                with
            }
        })
        .collect()
}

/// A value exactly as the server's binary result carried it.
#[derive(Debug, PartialEq)]
struct Raw(Option<Vec<u8>>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(Some(raw.to_vec())))
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A SELECT of one value of each case: `(type, what the table holds, what
/// the client must see)`, as SQL expressions.
fn cases_for(pan: &str) -> Vec<(&'static str, String, String)> {
    let (m, z) = (masked(pan), zeroed(pan));
    let grouped = |pan: &str| -> String {
        pan.as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut cases = vec![
        ("text", format!("'card {pan} ok'"), format!("'card {m} ok'")),
        ("varchar(60)", format!("'{pan}'"), format!("'{m}'")),
        ("char(25)", format!("'{pan}'"), format!("'{m}'")),
        ("name", format!("'{pan}'"), format!("'{m}'")),
        (
            "xml",
            format!("'<card>{pan}</card>'"),
            format!("'<card>{m}</card>'"),
        ),
        (
            "json",
            format!(r#"'{{"pan": "{pan}", "n": {pan}}}'"#),
            format!(r#"'{{"pan": "{m}", "n": {z}}}'"#),
        ),
        (
            "jsonb",
            format!(r#"'{{"pan": "{pan}", "n": {pan}}}'"#),
            format!(r#"'{{"pan": "{m}", "n": {z}}}'"#),
        ),
        ("numeric", format!("{pan}.50"), format!("{z}.50")),
        (
            "text[]",
            format!("ARRAY['a', 'x {pan}', NULL]"),
            format!("ARRAY['a', 'x {m}', NULL]"),
        ),
        (
            "record",
            format!("ROW(7, 'pan {pan}'::text, now()::date, NULL::text)"),
            format!("ROW(7, 'pan {m}'::text, now()::date, NULL::text)"),
        ),
        ("bytea", format!("'{pan}'::bytea"), format!("'{m}'::bytea")),
    ];
    if pan.len() == 16 {
        // Grouped as printed on the card.
        cases.push((
            "text",
            format!("'{}'", grouped(pan)),
            format!("'{}'", grouped(&m)),
        ));
    }
    if pan.len() <= 18 || pan < "9223372036854775807" {
        cases.push(("int8", pan.to_owned(), z.clone()));
        cases.push((
            "int8[]",
            format!("ARRAY[1, {pan}]"),
            format!("ARRAY[1, {z}]"),
        ));
    }
    if pan.len() <= 15 {
        // Exactly representable, and printed without an exponent.
        cases.push(("float8", pan.to_owned(), z.clone()));
    }
    cases
}

/// One SELECT of every expression, cast to its type.
fn select(expressions: &[(&str, String)]) -> String {
    let columns: Vec<String> = expressions
        .iter()
        .enumerate()
        .map(|(i, (ty, expression))| {
            if *ty == "record" {
                format!("{expression} AS c{i}")
            } else {
                format!("({expression})::{ty} AS c{i}")
            }
        })
        .collect();
    format!("SELECT {}", columns.join(", "))
}

async fn binary_values(client: &tokio_postgres::Client, sql: &str) -> Vec<Raw> {
    let row = client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    (0..row.len()).map(|i| row.get::<_, Raw>(i)).collect()
}

async fn text_values(client: &tokio_postgres::Client, sql: &str) -> Vec<Option<String>> {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let row = messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row"));
    (0..row.len())
        .map(|i| row.get(i).map(str::to_owned))
        .collect()
}

/// Admins see the row values of a constraint violation (others' are
/// withheld): those values are masked too.
const ADMINS_SEE_ROW_VALUES: &str = "[errors]\nrow_values_for = [\"admins\"]\n";

async fn start_masked() -> TestEnv {
    let config = format!("{AUDIT_TRAIL}\n{ADMINS_SEE_ROW_VALUES}\n{LUHN_MASKER}");
    TestEnv::start_with_config(&config, false)
        .await
        .expect("the gateway starts with the Luhn masker")
}

/// Checks that the audit trail of `env` holds no card number of the test
/// set, raw: statement text, parameters, error messages, column aliases —
/// everything the tests sent through it is recorded masked.
async fn assert_trail_holds_no_card_number(env: &TestEnv) {
    let trail = whole_trail(env).await;
    let statements = trail.matches("\"event\":\"statement\"").count();
    assert!(statements >= 2, "the trail holds the statements: {trail}");
    assert!(
        trail.contains("\"data\":"),
        "the trail holds returned rows: {trail}"
    );
    assert_no_card_number_in(&trail);
}

/// Every file of `env`'s trail (rotated ones first), as text, once a
/// statement recorded now is in: it is committed after every record
/// queued before it, so the outcomes of what the test ran are in.
async fn whole_trail(env: &TestEnv) -> String {
    env.connect("admin")
        .await
        .simple_query("SELECT 1")
        .await
        .unwrap();
    let path = env.config_path.with_file_name("audit.jsonl");
    sluice::audit::log::chain_files(&path)
        .expect("the audit trail's files")
        .iter()
        .map(|file| std::fs::read_to_string(file).expect("a trail file"))
        .collect()
}

/// [`assert_trail_holds_no_card_number`] for a test whose statements need
/// not return rows: the trail, every file of it, holds no test card
/// number in any spelling a record could give it.
async fn assert_trail_clean(env: &TestEnv) {
    assert_no_card_number_in(&whole_trail(env).await);
}

/// No test card number in `trail`: whole or grouped, nor its digits as the
/// hex of their ASCII (a bytea, or a value not valid UTF-8, is recorded
/// as `\x` hex), nor its value as a binary int8's hex.
fn assert_no_card_number_in(trail: &str) {
    // The searches themselves find what they are for.
    assert!(spells("x:\"4111 1111-1111 1111\"", "4111111111111111"));
    assert!(!spells("4111 1111  1111 1111", "4111111111111111"));
    assert_eq!(ascii_hex("41"), "3431");
    for (scheme, pan) in PANS {
        assert!(
            !spells(trail, pan),
            "{scheme} {pan} is in the audit trail, whole or grouped:\n{trail}"
        );
        let hex = ascii_hex(pan);
        assert!(
            !trail.contains(&hex),
            "{scheme} {pan} is in the audit trail as hex {hex}:\n{trail}"
        );
        if let Ok(value) = pan.parse::<i64>() {
            let int8 = format!("\\\\x{value:016x}");
            assert!(
                !trail.contains(&int8),
                "{scheme} {pan} is in the audit trail as a binary int8:\n{trail}"
            );
        }
    }
}

/// The lowercase hex of `text`'s bytes.
fn ascii_hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Whether `text` holds the digits of `pan` in order, whole or grouped by
/// single spaces or dashes (`4111 1111 1111 1111`, `4111-1111-...`).
fn spells(text: &str, pan: &str) -> bool {
    let text = text.as_bytes();
    let digits = pan.as_bytes();
    (0..text.len()).any(|start| {
        let mut at = start;
        for (n, &digit) in digits.iter().enumerate() {
            if n > 0 && matches!(text.get(at), Some(b' ' | b'-')) {
                at += 1;
            }
            if text.get(at) != Some(&digit) {
                return false;
            }
            at += 1;
        }
        true
    })
}

/// Every scheme in every column type, in binary format (tokio-postgres's
/// extended protocol) and text format (its simple protocol): what the
/// client sees through sluice is what PostgreSQL itself sends for the
/// masked value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_numbers_are_masked_in_every_column_type_and_format() {
    let env = start_masked().await;
    let direct = env.connect_direct().await;
    let client = env.connect("analyst").await;
    for (scheme, pan) in PANS {
        let cases = cases_for(pan);
        let stored: Vec<(&str, String)> = cases.iter().map(|(t, s, _)| (*t, s.clone())).collect();
        let shown: Vec<(&str, String)> = cases.iter().map(|(t, _, m)| (*t, m.clone())).collect();
        let (through, expected) = (select(&stored), select(&shown));

        let binary = binary_values(&client, &through).await;
        let want = binary_values(&direct, &expected).await;
        for ((ty, _, _), (got, want)) in cases.iter().zip(binary.iter().zip(&want)) {
            assert_eq!(got, want, "{scheme} as {ty}, binary format");
        }
        let text = text_values(&client, &through).await;
        let want = text_values(&direct, &expected).await;
        for ((ty, _, _), (got, want)) in cases.iter().zip(text.iter().zip(&want)) {
            assert_eq!(got, want, "{scheme} as {ty}, text format");
        }
        // And the raw number is nowhere in what the client got.
        let everything = format!("{binary:?} {text:?}");
        assert!(!everything.contains(pan), "{scheme}: {everything}");
    }
    assert_trail_holds_no_card_number(&env).await;
}

/// A card number stored as a float8 prints with an exponent in text format
/// (`4.111111111111111e+15`), where no masker could see its digits: it
/// reaches the masker in plain digits, and the client gets the masked
/// number — the same float the binary format gives — alone, in arrays, in
/// records and in json.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_numbers_stored_as_floats_are_masked_in_text_format() {
    let env = start_masked().await;
    let direct = env.connect_direct().await;
    let client = env.connect("analyst").await;
    // The numbers in a value's text, whatever surrounds them.
    let floats = |text: &str| -> Vec<f64> {
        text.split(|c: char| !(c.is_ascii_digit() || ".eE+-".contains(c)))
            .filter(|n| !n.is_empty())
            .map(|n| n.parse().unwrap_or_else(|e| panic!("{text}: {e}")))
            .collect()
    };
    let select = |n: &str| {
        format!(
            "SELECT {n}::float8 AS a, ARRAY[1, {n}]::float8[] AS b, \
             ROW(2, {n}::float8) AS c, to_json({n}::float8) AS d, \
             json_build_object('pan', {n}::float8)::text AS e"
        )
    };
    let mut exponents = 0;
    for (scheme, pan) in PANS {
        if pan.len() > 16 {
            continue; // Not a float8 exactly: its digits are not all there.
        }
        let sql = select(pan);
        let raw = text_values(&direct, &sql).await;
        exponents += raw.iter().flatten().filter(|t| t.contains('e')).count();
        let shown = text_values(&client, &sql).await;
        let want = text_values(&direct, &select(&zeroed(pan))).await;
        // How the server prints the card number as a float8.
        let printed = raw[0].clone().unwrap();
        for (column, ((got, want), raw)) in shown.iter().zip(&want).zip(&raw).enumerate() {
            let (got, want, raw) = (
                got.as_deref().unwrap(),
                want.as_deref().unwrap(),
                raw.as_deref().unwrap(),
            );
            assert!(
                !got.contains(pan) && !got.contains(&printed),
                "{scheme}: {got}"
            );
            if matches!(column, 2 | 4) {
                // A record's text and text: masked as text, the card number
                // in plain digits with its middle replaced.
                assert_eq!(got, raw.replace(&printed, &masked(pan)), "{scheme}");
            } else {
                // A number, in an array, in json: its middle digits zeroed,
                // the same float the binary format gives.
                assert_eq!(floats(got), floats(want), "{scheme}: {got} against {want}");
            }
        }
    }
    // The case this is about happened: PostgreSQL wrote exponents.
    assert!(
        exponents >= 25,
        "{exponents} values printed with an exponent"
    );
    assert_trail_holds_no_card_number(&env).await;
}

/// A card number in a geometric value's coordinates, or money's cents,
/// read in binary format: masked as the number it is, the value as the
/// server would send the masked number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_numbers_in_geometry_and_money_are_masked_in_binary() {
    let env = start_masked().await;
    let direct = env.connect_direct().await;
    let client = env.connect("admin").await;
    let select = |n: &str| {
        format!(
            "SELECT point({n}::float8, 0) AS a, polygon(box(point(1, {n}::float8), point(0, 0))) AS b, \
             circle(point(0, 0), {n}::float8) AS c, ({n}::numeric / 100)::money AS d"
        )
    };
    let pan = "4111111111111111";
    let shown = binary_values(&client, &select(pan)).await;
    assert_eq!(shown, binary_values(&direct, &select(&zeroed(pan))).await);
    assert_ne!(shown, binary_values(&direct, &select(pan)).await);
    assert_trail_holds_no_card_number(&env).await;
}

/// Near misses come back exactly as the server sent them, in both formats.
/// (Its trail is not searched: a near miss such as `41111111111111111111`
/// spells a test card number inside it, and is rightly left alone.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_not_a_card_number_is_left_alone() {
    let env = start_masked().await;
    let direct = env.connect_direct().await;
    let client = env.connect("analyst").await;
    let mut expressions: Vec<(&str, String)> = Vec::new();
    for text in NEAR_MISSES {
        expressions.push(("text", format!("'{text}'")));
        expressions.push(("jsonb", format!(r#"'{{"v": "{text}"}}'"#)));
        expressions.push(("text[]", format!("ARRAY['{text}']")));
    }
    for number in ["4111111111111112", "411111111111", "1764385646000123"] {
        expressions.push(("int8", number.to_owned()));
        expressions.push(("numeric", format!("{number}.25")));
    }
    expressions.push(("uuid", "'12345678-1234-1234-1234-123456789012'".to_owned()));
    expressions.push(("timestamptz", "'2026-11-29 03:07:26.123456+00'".to_owned()));
    let sql = select(&expressions);
    assert_eq!(
        binary_values(&client, &sql).await,
        binary_values(&direct, &sql).await,
        "binary format"
    );
    assert_eq!(
        text_values(&client, &sql).await,
        text_values(&direct, &sql).await,
        "text format"
    );
}

/// The seeded cards table through sluice shows no raw card number, and
/// direct access shows them: the quickstart's promise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cards_table_is_masked_through_sluice_only() {
    let env = start_masked().await;
    let direct = env.connect_direct().await;
    let client = env.connect("analyst").await;
    async fn pans(client: &tokio_postgres::Client) -> Vec<String> {
        let rows = client
            .query("SELECT pan FROM cards ORDER BY id", &[])
            .await
            .unwrap();
        rows.iter().map(|row| row.get(0)).collect()
    }
    let (pans, through) = (pans(&direct).await, pans(&client).await);
    assert_eq!(through.len(), pans.len());
    let mut masked_count = 0;
    for (raw, shown) in pans.iter().zip(&through) {
        assert!(
            !shown.contains(raw.as_str()) || raw == shown,
            "{raw} shown as {shown}"
        );
        if raw != shown {
            assert_eq!(*shown, masked(raw));
            masked_count += 1;
        }
    }
    assert!(masked_count >= 10, "only {masked_count} cards masked");
    assert_trail_clean(&env).await;
}

/// Column names, errors with their detail, an echoed bind parameter,
/// notices and notifications are masked too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_numbers_in_server_messages_are_masked() {
    let env = start_masked().await;
    let (client, mut messages) = env.connect_with_async_messages("admin").await;
    let pan = "4111111111111111";

    // A column named like a card number, in both protocols.
    let sql = format!(r#"SELECT 1 AS "{pan}", 2 AS "card {pan}""#);
    let row = client.query_one(&sql, &[]).await.unwrap();
    let names: Vec<&str> = row.columns().iter().map(|c| c.name()).collect();
    assert_eq!(names, [masked(pan), format!("card {}", masked(pan))]);
    let statement = client.prepare(&sql).await.unwrap();
    assert_eq!(statement.columns()[0].name(), masked(pan));

    // An error echoing a value, and a unique violation's DETAIL.
    let error = client
        .simple_query(&format!("SELECT '{pan}'::int4"))
        .await
        .unwrap_err();
    let db = error.as_db_error().expect("a server error");
    assert!(db.message().contains(&masked(pan)), "{}", db.message());
    client
        .batch_execute(&format!(
            "CREATE TABLE vault (pan text UNIQUE); INSERT INTO vault VALUES ('{pan}')"
        ))
        .await
        .unwrap();
    let error = client
        .execute(&format!("INSERT INTO vault VALUES ('{pan}')"), &[])
        .await
        .unwrap_err();
    let detail = error
        .as_db_error()
        .unwrap()
        .detail()
        .unwrap_or_default()
        .to_owned();
    assert!(detail.contains(&masked(pan)), "{detail}");
    assert!(!format!("{error:?}").contains(pan), "{error:?}");

    // A bind parameter the server echoes in its error.
    let typed = client
        .prepare_typed("SELECT $1::int4", &[Type::TEXT])
        .await
        .unwrap();
    let error = client
        .query(&typed, &[&format!("card {pan}")])
        .await
        .unwrap_err();
    let message = error.as_db_error().unwrap().message().to_owned();
    assert!(
        message.contains(&masked(pan)) && !message.contains(pan),
        "{message}"
    );

    // A notice, and a notification's channel and payload.
    client
        .batch_execute(&format!(
            "DO $$ BEGIN RAISE NOTICE 'seen %', '{pan}' USING HINT = 'hint {pan}'; END $$"
        ))
        .await
        .unwrap();
    client
        .batch_execute(&format!(
            r#"LISTEN "{pan}"; NOTIFY "{pan}", 'payload {pan}'"#
        ))
        .await
        .unwrap();
    let mut seen_notice = false;
    let mut seen_notification = false;
    while !(seen_notice && seen_notification) {
        match tokio::time::timeout(std::time::Duration::from_secs(10), messages.recv()).await {
            Ok(Some(tokio_postgres::AsyncMessage::Notice(notice))) => {
                assert_eq!(notice.message(), format!("seen {}", masked(pan)));
                assert_eq!(
                    notice.hint(),
                    Some(format!("hint {}", masked(pan)).as_str())
                );
                seen_notice = true;
            }
            Ok(Some(tokio_postgres::AsyncMessage::Notification(notification))) => {
                assert_eq!(notification.channel(), masked(pan));
                assert_eq!(notification.payload(), format!("payload {}", masked(pan)));
                seen_notification = true;
            }
            other => panic!("expected a notice and a notification, got {other:?}"),
        }
    }
    assert_trail_holds_no_card_number(&env).await;
}

/// `SET application_name` is reported back to the client in a
/// ParameterStatus, at startup and after a SET: masked both times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reported_parameters_are_masked() {
    let env = start_masked().await;
    let pan = "5555555555554444";
    let mut conn = RawConn::connect(env.addr()).await;
    conn.send(&sluice_tests::raw::startup_message(
        0,
        &[
            ("user", "admin"),
            ("database", &env.database),
            ("application_name", &format!("app {pan}")),
        ],
    ))
    .await;
    conn.authenticate(token_of("admin")).await;
    let startup = conn.until_ready().await;
    let reported = |messages: &[sluice_tests::raw::Message]| -> Vec<String> {
        messages
            .iter()
            .filter(|m| m.tag == b'S')
            .map(|m| String::from_utf8_lossy(&m.body).replace('\0', "="))
            .filter(|s| s.starts_with("application_name="))
            .collect()
    };
    let names = reported(&startup);
    assert_eq!(names.len(), 1, "{startup:?}");
    assert!(
        names[0].contains(&masked(pan)) && !names[0].contains(pan),
        "{names:?}"
    );

    conn.send(&query(&format!("SET application_name = 'now {pan}'")))
        .await;
    let answer = conn.until_ready().await;
    let names = reported(&answer);
    assert_eq!(names, [format!("application_name=now {}=", masked(pan))]);
    assert_trail_holds_no_card_number(&env).await;
}

/// A COPY of many rows of many empty fields (a byte a field, the most
/// values per byte there can be), longer than one masked run (the bound
/// itself is `run_of`'s unit test), arrives whole, the card number among
/// them masked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_many_empty_fields_is_masked_in_bounded_runs() {
    let env = start_masked().await;
    let client = env.connect("admin").await;
    let direct = env.connect_direct().await;
    let empties = vec!["''"; 200].join(", ");
    let sql = |pan: &str| {
        format!(
            "COPY (SELECT {empties}, CASE WHEN n = 7000 THEN '{pan}' END \
             FROM generate_series(1, 12000) AS n) TO STDOUT"
        )
    };
    let pan = "4111111111111111";
    let through = sluice_tests::copy_out(&client, &sql(pan)).await.unwrap();
    assert!(through.len() > 2 << 20, "{} bytes", through.len());
    let expected = sluice_tests::copy_out(&direct, &sql(&masked(pan)))
        .await
        .unwrap();
    assert!(through == expected, "the COPY differs from the masked one");
}

/// COPY TO STDOUT through tokio-postgres (the extended protocol) is masked
/// in every format; a binary COPY sluice could not describe first is
/// refused rather than passed on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_out_is_masked() {
    let env = start_masked().await;
    let client = env.connect("admin").await;
    let direct = env.connect_direct().await;
    let copy_out = async |client: &tokio_postgres::Client, sql: &str| {
        sluice_tests::copy_out(client, sql)
            .await
            .map(|data| String::from_utf8(data).expect("COPY text is UTF-8"))
    };
    for format in ["text", "csv"] {
        let sql = format!(
            "COPY (SELECT id, pan, 'note ' || pan AS note FROM cards ORDER BY id) TO STDOUT (FORMAT {format})"
        );
        let raw = copy_out(&direct, &sql).await.unwrap();
        let through = copy_out(&client, &sql).await.unwrap();
        assert_eq!(raw.lines().count(), through.lines().count(), "{format}");
        let mut masked_rows = 0;
        for (raw, shown) in raw.lines().zip(through.lines()) {
            if raw != shown {
                masked_rows += 1;
            }
            let pan = raw
                .split(if format == "csv" { ',' } else { '\t' })
                .nth(1)
                .unwrap();
            assert!(!shown.contains(pan), "{format}: {shown}");
            assert!(shown.contains(&masked(pan)), "{format}: {shown}");
        }
        assert!(masked_rows >= 10, "{format}: {masked_rows} rows masked");
    }
    // Binary COPY in the extended protocol: tokio-postgres parses the COPY
    // in a cycle of its own, so sluice describes it there and reads the
    // data by type — the bytes are PostgreSQL's own for the masked values.
    let pan = "4111111111111111";
    let binary = |pan: &str, number: &str| {
        format!("COPY (SELECT '{pan}'::text, {number}::int8) TO STDOUT (FORMAT binary)")
    };
    assert_eq!(
        copy_data(&client, &binary(pan, pan)).await,
        copy_data(&direct, &binary(&masked(pan), &zeroed(pan))).await
    );

    // A COPY parsed in the middle of a cycle cannot be described first:
    // its Execute is refused, its data never passed on unread, and the
    // session carries on.
    let mut conn = RawConn::login(env.addr(), &env.database, "admin", token_of("admin")).await;
    let mut pipeline = parse("", "SELECT 1");
    pipeline.extend(parse("c", &binary(pan, pan)));
    pipeline.extend(bind_execute_sync("c"));
    conn.send(&pipeline).await;
    let replies = conn.until_ready().await;
    let error = replies
        .iter()
        .find(|m| m.tag == b'E')
        .expect("the binary COPY is refused");
    assert_eq!(error.code(), "0A000");
    assert!(
        error.fields()[&b'M'].contains("first statement"),
        "{:?}",
        error.fields()
    );
    assert!(replies.iter().all(|m| m.tag != b'd'), "no COPY data passes");
    assert!(conn.first_row(&query("SELECT 1")).await.ends_with(b"1"));
    assert_trail_holds_no_card_number(&env).await;
}

/// A masking plugin that fails in the middle of a result fails closed: the
/// client gets an error, never the rows it could not mask, and other
/// sessions carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_masking_failure_mid_result_fails_closed() {
    let env = TestEnv::start_with_config(
        &format!(
            "[[plugins]]\nname = \"fragile\"\nhook = \"masking\"\npath = \"{}\"\n\
             [plugins.config]\nneedle = \"4111111111111111\"\npanic_on = \"boom\"\n",
            sluice::plugin::builtin::test_guests::GUEST_MASK_NEEDLE
        ),
        false,
    )
    .await
    .expect("the gateway starts");
    let bystander = env.connect("analyst").await;
    for binary in [false, true] {
        let client = env.connect("analyst").await;
        // Many rows, the failing one late, so earlier batches were sent.
        let sql = "SELECT g, CASE WHEN g = 5000 THEN 'boom' ELSE '4111111111111111' END \
                   FROM generate_series(1, 6000) AS g";
        let outcome = if binary {
            client.query(sql, &[]).await.map(|rows| format!("{rows:?}"))
        } else {
            client
                .simple_query(sql)
                .await
                .map(|rows| format!("{rows:?}"))
        };
        let error = outcome.expect_err("the result is refused");
        assert!(
            !format!("{error:?}").contains("4111111111111111"),
            "{error:?}"
        );
        let message = error.as_db_error().map(|e| e.message().to_owned());
        assert!(
            message
                .as_deref()
                .is_some_and(|m| m.contains("could not mask"))
                || error.is_closed(),
            "{error:?}"
        );
        assert!(
            client.simple_query("SELECT 1").await.is_err(),
            "the session ended"
        );
    }
    let rows = bystander
        .query("SELECT '4111111111111111 ok'::text", &[])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, String>(0), "**************** ok");
}

/// The data of a simple-protocol COPY TO STDOUT through sluice, as raw
/// bytes; or the SQLSTATE of the error it met.
async fn simple_copy(conn: &mut RawConn, sql: &str) -> Result<Vec<u8>, String> {
    conn.send(&query(sql)).await;
    let mut data = Vec::new();
    let mut error = None;
    for message in conn.until_ready().await {
        match message.tag {
            b'd' => data.extend_from_slice(&message.body),
            b'E' => error = Some(message.code()),
            _ => {}
        }
    }
    error.map_or(Ok(data), Err)
}

/// The data of a COPY TO STDOUT run by a tokio-postgres client (in the
/// extended protocol).
async fn copy_data(client: &tokio_postgres::Client, sql: &str) -> Vec<u8> {
    sluice_tests::copy_out(client, sql).await.unwrap()
}

/// Binary COPY TO STDOUT in the simple protocol: sluice describes the
/// COPY's source first, so each field is read by its type and masked as a
/// row's value would be — the bytes are PostgreSQL's own for the masked
/// values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_copy_out_is_masked_by_type() {
    let env = start_masked().await;
    let direct = env.connect_direct().await;
    let mut conn = RawConn::login(env.addr(), &env.database, "admin", token_of("admin")).await;
    let copy = |pan: &str, number: &str, other: &str, json: &str| {
        format!(
            "COPY (SELECT 1::int4 AS id, '{pan}'::text AS pan, {number}::int8 AS n, \
             ARRAY['x {other}'] AS a, '{{\"p\": \"{json}\"}}'::jsonb AS j, \
             date '2026-11-29' AS d) TO STDOUT (FORMAT binary)"
        )
    };
    let (pan, other, amex) = ("4111111111111111", "5555555555554444", "378282246310005");
    let through = simple_copy(&mut conn, &copy(pan, pan, other, amex))
        .await
        .unwrap();
    let expected_sql = copy(&masked(pan), &zeroed(pan), &masked(other), &masked(amex));
    assert_eq!(through, copy_data(&direct, &expected_sql).await);

    // The table form, every card of the seed.
    let through = simple_copy(&mut conn, "COPY cards (id, pan) TO STDOUT (FORMAT binary)")
        .await
        .unwrap();
    let rows = direct.query("SELECT pan FROM cards", &[]).await.unwrap();
    let contains = |needle: &[u8]| through.windows(needle.len()).any(|w| w == needle);
    for row in &rows {
        let pan: String = row.get(0);
        assert!(
            !contains(pan.as_bytes()),
            "{pan} is in the binary COPY data"
        );
        assert!(contains(masked(&pan).as_bytes()), "{pan} is not masked");
    }

    // When the describe fails inside a transaction block, the client hears
    // why (no such table), not that its transaction is aborted.
    conn.send(&query("BEGIN")).await;
    conn.until_ready().await;
    let code = simple_copy(&mut conn, "COPY no_such_table TO STDOUT (FORMAT binary)")
        .await
        .unwrap_err();
    assert_eq!(code, "42P01");
    conn.send(&query("ROLLBACK")).await;
    conn.until_ready().await;
    // And the session carries on.
    assert!(
        simple_copy(&mut conn, "COPY (SELECT 1) TO STDOUT (FORMAT binary)")
            .await
            .is_ok()
    );
    assert_trail_holds_no_card_number(&env).await;
}

/// COPY TO STDOUT in text and csv format, simple protocol: each field is
/// read by its column's type and masked as a row's value would be — a card
/// number in a number column keeps its digits' places (zeros, so the data
/// still loads) — and the output is byte for byte what PostgreSQL writes
/// for the masked values, quoting, escaping and NULLs included, under every
/// option that changes how a field reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_and_csv_copy_out_is_masked_by_field() {
    let env = start_masked().await;
    let direct = env.connect_direct().await;
    let mut conn = RawConn::login(env.addr(), &env.database, "admin", token_of("admin")).await;
    let source = |pan: &str, number: &str, other: &str, json: &str| {
        format!(
            "SELECT 1::int4 AS id, 'card {pan}, \"quoted\"' || chr(9) || 'tab' || chr(10) || 'line' AS note, \
             {number}::int8 AS n, {number}::numeric AS num, ARRAY['x {other}', NULL] AS a, \
             '{{\"p\": \"{json}\"}}'::jsonb AS j, NULL::text AS nothing, 'back\\slash;|' AS b, \
             '' AS empty, 'x' AS \"{pan}\""
        )
    };
    let (pan, other, amex) = ("4111111111111111", "5555555555554444", "378282246310005");
    for options in [
        "(FORMAT text)",
        "(FORMAT csv)",
        "(FORMAT csv, HEADER)",
        "(FORMAT text, HEADER true, DELIMITER '|', NULL 'NULL')",
        r"(FORMAT csv, QUOTE '''', ESCAPE '\', DELIMITER ';', NULL 'none', FORCE_QUOTE *)",
        "WITH CSV HEADER DELIMITER '|'",
        "DELIMITER ';'",
    ] {
        let through = simple_copy(
            &mut conn,
            &format!(
                "COPY ({}) TO STDOUT {options}",
                source(pan, pan, other, amex)
            ),
        )
        .await
        .unwrap();
        let expected_sql = format!(
            "COPY ({}) TO STDOUT {options}",
            source(&masked(pan), &zeroed(pan), &masked(other), &masked(amex))
        );
        let expected = copy_data(&direct, &expected_sql).await;
        assert_eq!(
            String::from_utf8_lossy(&through),
            String::from_utf8_lossy(&expected),
            "{options}"
        );
    }

    // The table form: every card of the seed masked, every row there.
    let through = simple_copy(&mut conn, "COPY cards TO STDOUT (FORMAT csv)")
        .await
        .unwrap();
    let through = String::from_utf8(through).unwrap();
    let rows = direct.query("SELECT pan FROM cards", &[]).await.unwrap();
    for row in &rows {
        let pan: String = row.get(0);
        assert!(!through.contains(&pan), "{pan} is in the COPY data");
    }
    assert_eq!(through.lines().count(), rows.len());
    assert_trail_holds_no_card_number(&env).await;
}

/// csv options that put digits around or inside a value (`QUOTE '0'`,
/// `ESCAPE '1'`, a digit delimiter) are read field by field, as any other
/// csv, and a statement ending in `;` (as psql sends it) is read too; a
/// COPY TO STDOUT sluice cannot read is refused, never masked as free
/// text where a card number's digits could be split past the masker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_out_with_digits_for_punctuation_is_masked_or_refused() {
    let env = start_masked().await;
    let direct = env.connect_direct().await;
    let pan = "4111111111111111";
    let source = |pan: &str| format!("SELECT '{pan}'::text AS pan, 7 AS n");
    for options in [
        "(FORMAT csv, QUOTE '0', FORCE_QUOTE *)",
        "(FORMAT csv, QUOTE '0', FORCE_QUOTE *);",
        "(FORMAT csv, ESCAPE '1', FORCE_QUOTE *)",
        "(FORMAT csv, DELIMITER '5')",
    ] {
        let mut conn = RawConn::login(env.addr(), &env.database, "admin", token_of("admin")).await;
        let through = simple_copy(
            &mut conn,
            &format!("COPY ({}) TO STDOUT {options}", source(pan)),
        )
        .await;
        let expected = copy_data(
            &direct,
            &format!(
                "COPY ({}) TO STDOUT {}",
                source(&masked(pan)),
                options.trim_end_matches(';')
            ),
        )
        .await;
        match through {
            Ok(data) => assert_eq!(
                String::from_utf8_lossy(&data),
                String::from_utf8_lossy(&expected),
                "{options}"
            ),
            Err(code) => panic!("{options}: refused with {code}"),
        }
    }

    // Behind another statement in one query string sluice does not read
    // the COPY: its data is refused, and the session ends.
    let mut conn = RawConn::login(env.addr(), &env.database, "admin", token_of("admin")).await;
    conn.send(&query(&format!(
        "SELECT 1; COPY ({}) TO STDOUT (FORMAT csv, QUOTE '0', FORCE_QUOTE *)",
        source(pan)
    )))
    .await;
    let mut seen = Vec::new();
    while let Some(message) = conn.recv().await {
        seen.extend_from_slice(&message.body);
    }
    let seen = String::from_utf8_lossy(&seen);
    assert!(!seen.contains(&pan[1..]), "{seen}");
    assert!(
        seen.contains("passed on only when sluice can read it"),
        "{seen}"
    );
    assert_trail_holds_no_card_number(&env).await;
}

/// The server's refusal of a login can quote what the client sent — here a
/// time zone that is a card number — and reaches the client masked, as
/// any message from the server does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_refused_by_the_server_is_masked() {
    let env = start_masked().await;
    let pan = "4111111111111111";
    let mut conn = RawConn::connect(env.addr()).await;
    conn.send(&startup_message(
        0,
        &[
            ("user", "admin"),
            ("database", &env.database),
            ("TimeZone", pan),
        ],
    ))
    .await;
    // sluice logs in upstream before it says the client is in.
    let proof = conn.scram_until_proof(token_of("admin")).await;
    conn.send(&proof).await;
    let refused = conn.expect_error().await;
    let message = refused.fields().remove(&b'M').unwrap_or_default();
    assert!(message.contains("TimeZone"), "{message}");
    assert!(!message.contains(pan), "{message}");
    assert!(message.contains(&masked(pan)), "{message}");
    assert_trail_clean(&env).await;
}

/// A COPY portal bound in a cycle still open when an earlier cycle's
/// ReadyForQuery comes is remembered as a COPY: its data is read by its
/// own describe, not paired with the next COPY's. A second COPY executed
/// in the same cycle has no describe taken just before it (the first may
/// have changed what it copies): refused before it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_portal_bound_in_an_open_cycle_is_read_by_its_own_describe() {
    let env = start_masked().await;
    let mut conn = RawConn::login(env.addr(), &env.database, "admin", token_of("admin")).await;
    conn.define("pans", "COPY (SELECT 'card 4111111111111111') TO STDOUT")
        .await;
    conn.define("ints", "COPY (SELECT 1::int4) TO STDOUT").await;
    let mut first = query("SELECT 1");
    first.extend(bind("p", "pans"));
    conn.send(&first).await;
    conn.until_ready().await;
    let mut rest = bind("q", "ints");
    rest.extend(execute("p", 0));
    rest.extend(execute("q", 0));
    rest.extend(sync());
    conn.send(&rest).await;
    let replies = conn.until_ready().await;
    assert_eq!(copy_text(&replies), "card 411111******1111\n");
    let error = replies.iter().find(|m| m.tag == b'E').expect("refused");
    assert_eq!(error.code(), "0A000", "{:?}", error.fields());
    assert_trail_clean(&env).await;
}

/// A prepared COPY's data is read by a describe taken just before the
/// cycle that runs it, not by the one taken when it was parsed: the same
/// text can copy another table by then (here a temporary table that
/// shadowed `cards` is dropped). Before, `cards`' card numbers passed as
/// the temporary table's int4 column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_copy_is_described_again_when_it_runs() {
    let env = start_masked().await;
    let direct = env.connect_direct().await;
    let pan: String = direct
        .query_one("SELECT pan FROM cards ORDER BY pan LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    let mut conn = RawConn::login(env.addr(), &env.database, "admin", token_of("admin")).await;
    conn.send(&query("CREATE TEMP TABLE cards (pan int4)"))
        .await;
    conn.until_ready().await;
    conn.define(
        "c",
        "COPY (SELECT pan FROM cards ORDER BY pan LIMIT 1) TO STDOUT",
    )
    .await;
    conn.send(&query("DROP TABLE pg_temp.cards")).await;
    conn.until_ready().await;
    conn.send(&bind_execute_sync("c")).await;
    let replies = conn.until_ready().await;
    assert!(replies.iter().all(|m| m.tag != b'E'), "{replies:?}");
    let data = copy_text(&replies);
    assert!(!data.contains(&pan), "{data}");
    assert!(data.contains(&masked(&pan)), "{data}");
    assert_trail_clean(&env).await;
}

/// A Bind the server refuses leaves the portal what it was: a named
/// portal of one COPY, bound again from another inside a savepoint (the
/// server refuses: it exists), is still the first COPY's once the
/// savepoint is rolled back, and its data is read as that COPY's.
/// Before, it was read by the second COPY's int4 describe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_bind_leaves_a_copy_portal_as_it_was() {
    let env = start_masked().await;
    let direct = env.connect_direct().await;
    let pan = first_card(&direct).await;
    let mut conn = RawConn::login(env.addr(), &env.database, "admin", token_of("admin")).await;
    conn.send(&query("BEGIN")).await;
    conn.until_ready().await;
    conn.define(
        "pans",
        "COPY (SELECT pan FROM cards ORDER BY id LIMIT 1) TO STDOUT",
    )
    .await;
    conn.define("ints", "COPY (SELECT 1::int4) TO STDOUT").await;
    let mut first = bind("p", "pans");
    first.extend(sync());
    conn.send(&first).await;
    conn.until_ready().await;
    conn.send(&query("SAVEPOINT s")).await;
    conn.until_ready().await;
    let mut again = bind("p", "ints");
    again.extend(sync());
    assert_eq!(conn.refusal(&again).await, "42P03");
    conn.send(&query("ROLLBACK TO SAVEPOINT s")).await;
    conn.until_ready().await;
    let mut run = execute("p", 0);
    run.extend(sync());
    conn.send(&run).await;
    let replies = conn.until_ready().await;
    assert!(replies.iter().all(|m| m.tag != b'E'), "{replies:?}");
    assert_eq!(copy_text(&replies), format!("{}\n", masked(&pan)));
    assert_trail_clean(&env).await;
}

/// COPY data is never masked as free text, where a delimiter or escape
/// next to a card number (`1X4111...`, `\n4111...`) hides it from a masker
/// that looks for digits standing alone: a COPY sluice could not describe
/// just before it runs is refused; one it could is read field by field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_data_is_never_masked_as_free_text() {
    let env = start_masked().await;
    let direct = env.connect_direct().await;
    let pan = first_card(&direct).await;
    let mut conn = RawConn::login(env.addr(), &env.database, "admin", token_of("admin")).await;
    let copy = "COPY (SELECT id, pan FROM cards ORDER BY id LIMIT 1) TO STDOUT (DELIMITER 'X')";
    let mut behind = parse("", "SELECT 1");
    behind.extend(parse("", copy));
    behind.extend(bind_execute_sync(""));
    assert_eq!(conn.refusal(&behind).await, "0A000");
    let mut alone = parse("", copy);
    alone.extend(bind_execute_sync(""));
    conn.send(&alone).await;
    let replies = conn.until_ready().await;
    assert!(replies.iter().all(|m| m.tag != b'E'), "{replies:?}");
    assert_eq!(copy_text(&replies), format!("1X{}\n", masked(&pan)));
    assert_trail_clean(&env).await;
}

/// Text-format bytea written with `bytea_output = 'escape'` is read as the
/// bytes it encodes: the octal digits of an escape before a card number
/// (`\012`, a line feed) no longer run into its digits, and the masked
/// value is written back as PostgreSQL writes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escape_format_bytea_is_masked() {
    let env = start_masked().await;
    let client = env.connect("admin").await;
    let direct = env.connect_direct().await;
    for session in [&client, &direct] {
        session
            .batch_execute("SET bytea_output = 'escape'")
            .await
            .unwrap();
    }
    let pan = "4111111111111111";
    let sql = |pan: &str| format!("SELECT '\\x0a'::bytea || convert_to('{pan} \\', 'UTF8') AS b");
    let shown = text_values(&client, &sql(pan)).await;
    assert_eq!(shown, text_values(&direct, &sql(&masked(pan))).await);
    assert!(shown[0].as_deref().unwrap().starts_with("\\012411111*"));
    assert_trail_clean(&env).await;
}

/// A card number in a JSON string right after an escape PostgreSQL writes
/// (`\n` for a line feed, `\u0001`) is masked, in json and jsonb, text
/// and binary format: the escape's letter or hex digits no longer run into
/// its digits for the masker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_numbers_after_json_escapes_are_masked() {
    let env = start_masked().await;
    let client = env.connect("admin").await;
    let direct = env.connect_direct().await;
    let pan = "4111111111111111";
    let sql = |pan: &str| {
        format!(
            "SELECT json_build_object('memo', E'Card:\\n{pan}')::{{}} AS a, \
             jsonb_build_object('memo', E'\\x01{pan}') AS b"
        )
    };
    for ty in ["json", "jsonb"] {
        let through = sql(pan).replace("{}", ty);
        let expected = sql(&masked(pan)).replace("{}", ty);
        let shown = text_values(&client, &through).await;
        assert_eq!(shown, text_values(&direct, &expected).await, "{ty}");
        assert!(
            shown[0].as_deref().unwrap().contains("\\n411111*"),
            "{shown:?}"
        );
        assert_eq!(
            binary_values(&client, &through).await,
            binary_values(&direct, &expected).await,
            "{ty}"
        );
    }
    // A card number begun with an escaped digit (json keeps its text as
    // written) is found too, and masked after the digits kept.
    let hidden = r#"SELECT '{"c": "\u0034111111111111111"}'::json"#;
    let shown = text_values(&client, hidden).await;
    assert_eq!(
        shown[0].as_deref(),
        Some(r#"{"c": "\u003411111******1111"}"#)
    );
    // An escape whose hex digits read like a number with an exponent
    // (`\u001e0`, `\u0e01`) is left as it is, and the escapes after it
    // are still read as escapes.
    let escaped: [fn(&str) -> String; 2] = [
        |pan| format!(r"SELECT json_build_array(E'\x1e0', E'Card:\n{pan}')"),
        |pan| format!(r#"SELECT '["\u0e01", "Card:\n{pan}"]'::json"#),
    ];
    for sql in escaped {
        let shown = text_values(&client, &sql(pan)).await;
        assert_eq!(shown, text_values(&direct, &sql(&masked(pan))).await);
        assert!(!shown[0].as_deref().unwrap().contains(pan), "{shown:?}");
    }
    // JSON kept as text (or jsonb cast to it), whose escapes a client
    // that parses it reads: masked as in json, in both formats.
    let as_text = |pan: &str| {
        format!(
            "SELECT jsonb_build_object('memo', E'Card:\\n{pan}')::text AS a, \
             E'log line\\\\t{pan}'::varchar AS b"
        )
    };
    let shown = text_values(&client, &as_text(pan)).await;
    assert_eq!(shown, text_values(&direct, &as_text(&masked(pan))).await);
    assert!(
        shown[0].as_deref().unwrap().contains("\\n411111*"),
        "{shown:?}"
    );
    assert!(
        shown[1].as_deref().unwrap().contains("\\t411111*"),
        "{shown:?}"
    );
    assert_eq!(
        binary_values(&client, &as_text(pan)).await,
        binary_values(&direct, &as_text(&masked(pan))).await
    );
    assert_trail_clean(&env).await;
}

/// `COPY t TO STDOUT` leaves out `t`'s generated columns, which the
/// describe of `SELECT * FROM t` has: they are left out of the describe
/// too (looked up in the catalog), and the rows are read and masked as the
/// COPY sends them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_with_generated_columns_is_copied_masked() {
    let env = start_masked().await;
    let direct = env.connect_direct().await;
    direct
        .batch_execute(
            "CREATE TABLE generated_cards (id int, \
             last4 text GENERATED ALWAYS AS (right(pan, 4)) STORED, pan text); \
             GRANT ALL ON generated_cards TO PUBLIC; \
             INSERT INTO generated_cards (id, pan) VALUES (1, '4111111111111111')",
        )
        .await
        .unwrap();
    let client = env.connect("admin").await;
    let data = sluice_tests::copy_out(&client, "COPY generated_cards TO STDOUT")
        .await
        .unwrap();
    assert_eq!(String::from_utf8(data).unwrap(), "1\t411111******1111\n");
    client.simple_query("SELECT 1").await.unwrap();
    assert_trail_clean(&env).await;
}

/// The card number of the seed's first card, read directly.
async fn first_card(direct: &tokio_postgres::Client) -> String {
    direct
        .query_one("SELECT pan FROM cards ORDER BY id LIMIT 1", &[])
        .await
        .unwrap()
        .get(0)
}

/// Each COPY's data is read by its own describe, however COPYs and other
/// statements are pipelined: a COPY ending in `;` is one sluice reads, so
/// its data is not paired with the describe of the COPY executed after it
/// (before, its card numbers passed as the other COPY's int4 column); the
/// COPY executed second in a cycle is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_copies_are_each_read_by_their_own_describe() {
    let env = start_masked().await;
    let direct = env.connect_direct().await;
    let pan = first_card(&direct).await;
    let mut conn = RawConn::login(env.addr(), &env.database, "admin", token_of("admin")).await;
    let mut pipeline = parse("b", "COPY (SELECT 1::int4) TO STDOUT");
    pipeline.extend(sync());
    pipeline.extend(parse(
        "a",
        "COPY (SELECT pan FROM cards ORDER BY id LIMIT 1) TO STDOUT;",
    ));
    pipeline.extend(bind("pa", "a"));
    pipeline.extend(execute("pa", 0));
    pipeline.extend(bind("pb", "b"));
    pipeline.extend(execute("pb", 0));
    pipeline.extend(sync());
    conn.send(&pipeline).await;
    let mut replies = conn.until_ready().await;
    replies.extend(conn.until_ready().await);
    assert_eq!(copy_text(&replies), format!("{}\n", masked(&pan)));
    let error = replies.iter().find(|m| m.tag == b'E').expect("refused");
    assert_eq!(error.code(), "0A000", "{:?}", error.fields());
    assert_trail_clean(&env).await;
}

/// Values of user-defined types — domains (of domains) over text and int8,
/// an enum, a composite with a field of a domain seen nowhere else, an
/// array of the enum — are
/// read through the database's catalog, which sluice looks up itself, and
/// masked as their base types are: in binary format the bytes are
/// PostgreSQL's own for the masked values, and in text format a domain
/// over a number keeps its digits' places.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_defined_types_are_masked() {
    let env = start_masked().await;
    let direct = env.connect_direct().await;
    direct
        .batch_execute(
            "CREATE DOMAIN card_text AS text; \
             CREATE DOMAIN card_number AS int8; \
             CREATE DOMAIN card_note AS card_text; \
             CREATE TYPE card_label AS ENUM ('card 4111111111111111', 'card 411111******1111'); \
             CREATE DOMAIN card_code AS text; \
             CREATE TYPE card_pair AS (label text, pan card_code);",
        )
        .await
        .unwrap();
    let client = env.connect("admin").await;
    let select = |pan: &str, number: &str, label: &str| {
        format!(
            "SELECT '{pan}'::card_text, {number}::card_number, 'x {pan}'::card_note, \
             'card {label}'::card_label, ROW('l', '{pan}')::card_pair, \
             ARRAY['card {label}']::card_label[], 42::card_number"
        )
    };
    let pan = "4111111111111111";
    let through = select(pan, pan, pan);
    let expected = select(&masked(pan), &zeroed(pan), &masked(pan));

    let binary = binary_values(&client, &through).await;
    assert_eq!(
        binary,
        binary_values(&direct, &expected).await,
        "binary format"
    );
    let text = text_values(&client, &through).await;
    assert_eq!(text, text_values(&direct, &expected).await, "text format");
    let everything = format!("{binary:?} {text:?}");
    assert!(!everything.contains(pan), "{everything}");
    assert_trail_holds_no_card_number(&env).await;
}

/// A COPY prepared under a name is read with its own describe: a Parse
/// that would redefine the name (as a COPY of a column the masker never
/// looks at) is refused, as PostgreSQL refuses it, and what sluice learnt
/// of a Parse the server did not carry out is forgotten, so the describe
/// of another query never stands in for the statement the server still
/// runs under the name. (Before, the card number passed unmasked.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_statement_is_masked_by_its_own_describe_after_a_refused_redefinition() {
    let env = start_masked().await;
    let direct = env.connect_direct().await;
    let pan = first_card(&direct).await;
    let mut conn = RawConn::login(env.addr(), &env.database, "agent", token_of("agent")).await;
    conn.define(
        "pans",
        "COPY (SELECT pan FROM cards ORDER BY id LIMIT 1) TO STDOUT",
    )
    .await;

    let mut redefined = parse("pans", "COPY (SELECT true) TO STDOUT");
    redefined.extend(sync());
    conn.send(&redefined).await;
    let error = conn.expect_error().await;
    assert_eq!(error.code(), "42P05", "{:?}", error.fields());
    conn.until_ready().await;

    conn.send(&bind_execute_sync("pans")).await;
    let replies = conn.until_ready().await;
    let data = copy_text(&replies);
    assert_eq!(data, format!("{}\n", masked(&pan)), "{replies:?}");
    assert_trail_clean(&env).await;
}

/// Binary numerics that would render to far more text than they take on
/// the wire (`1e131071` is ten bytes, and 131,072 digits as text) are
/// refused before that text is built — unbounded, this result would have
/// made a 13 GB batch in the gateway's process — and the gateway serves
/// on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numerics_that_would_render_past_the_masking_limit_are_refused() {
    let env = start_masked().await;
    let bystander = env.connect("analyst").await;
    let client = env.connect("analyst").await;
    // 1.4 MB on the wire; 13 GB of digits had it been rendered.
    let error = client
        .query("SELECT array_fill(1e131071::numeric, ARRAY[100000])", &[])
        .await
        .expect_err("the result is refused");
    let (code, message) = sluice_tests::code_and_message(&error);
    assert_eq!(code, "54000", "{message}");
    assert!(
        message.contains("could not mask") && message.contains("as text to mask"),
        "{message}"
    );
    assert!(
        client.simple_query("SELECT 1").await.is_err(),
        "the session ended"
    );
    // One such numeric fits, and comes back as PostgreSQL sent it.
    let direct = env.connect_direct().await;
    let sql = "SELECT 1e131071::numeric";
    assert_eq!(
        binary_values(&bystander, sql).await,
        binary_values(&direct, sql).await
    );
    assert_trail_clean(&env).await;
}
