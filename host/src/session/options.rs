//! The startup parameter `options`: settings a client asks for at login
//! (`PGOPTIONS="-c search_path=app"`), read as PostgreSQL reads them, and
//! the SET statement they amount to, for the policies to judge.
//!
//! PostgreSQL splits `options` at unescaped whitespace (a backslash escapes
//! the next character) and reads each piece as a command-line switch. Only
//! the switches that set one setting are accepted — `-c name=value`,
//! `-cname=value`, `--name=value` — since only those have a SET to be
//! judged as; anything else is refused.

use crate::plugin::bindings::types::{SettingChange, Statement, StatementKind};

/// The settings in an `options` value, in order: (name, value), the name
/// lower-cased with `-` read as `_` (as PostgreSQL does).
pub fn parse(options: &str) -> Result<Vec<(String, String)>, String> {
    let words = split(options)?;
    let mut settings = Vec::new();
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        let assignment = if word == "-c" {
            words
                .next()
                .ok_or_else(|| "-c without a setting after it".to_owned())?
        } else if let Some(rest) = word.strip_prefix("--").or_else(|| word.strip_prefix("-c")) {
            rest.to_owned()
        } else {
            return Err(format!(
                "only -c name=value settings are accepted, not {:?}",
                word.chars().take(32).collect::<String>()
            ));
        };
        let Some((name, value)) = assignment.split_once('=') else {
            return Err(format!("{assignment:?} sets no value (use name=value)"));
        };
        let name = name.trim().to_ascii_lowercase().replace('-', "_");
        if name.is_empty() {
            return Err("a setting without a name".to_owned());
        }
        settings.push((name, value.to_owned()));
    }
    Ok(settings)
}

/// Whether PostgreSQL's split of `options` (C's `isspace`) separates at
/// `c`: Rust's `is_ascii_whitespace` leaves out the vertical tab, which
/// would let `x\v-c\vrole=admin` be one value to sluice and a second
/// setting to the server.
fn separates(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\u{0b}' | '\u{0c}' | '\r')
}

/// PostgreSQL's split of `options`: whitespace separates, a backslash
/// takes the next character literally. Other control characters, and
/// anything not ASCII (which the server's locale may count as space), are
/// refused: what the server splits there is not certain.
fn split(options: &str) -> Result<Vec<String>, String> {
    if let Some(odd) = options
        .chars()
        .find(|&c| !c.is_ascii() || (c.is_ascii_control() && !separates(c)))
    {
        return Err(format!(
            "options may hold only printable ASCII and spaces, not {:?}",
            odd
        ));
    }
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped) => word.push(escaped),
                None => return Err("options end in a lone backslash".to_owned()),
            },
            c if separates(c) => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    Ok(words)
}

/// An `options` value that sets `settings`, escaped for PostgreSQL's split.
pub fn render(settings: &[(String, String)]) -> String {
    let mut out = String::new();
    for (name, value) in settings {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str("-c ");
        for c in format!("{name}={value}").chars() {
            if c == '\\' || separates(c) {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out
}

/// The SET statement the settings amount to, as policies see it.
pub fn as_statement(settings: &[(String, String)]) -> Statement {
    let text = settings
        .iter()
        .map(|(name, value)| format!("SET {name} TO '{}'", value.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join("; ");
    let privilege =
        crate::analysis::privilege_setting(settings.iter().map(|(name, _)| name.as_str()));
    Statement {
        text,
        kind: if privilege.is_some() {
            StatementKind::Privilege
        } else {
            StatementKind::Setting
        },
        command: privilege.unwrap_or("SET").to_owned(),
        tables: Vec::new(),
        columns: Vec::new(),
        functions: Vec::new(),
        has_where: true,
        settings: settings
            .iter()
            .map(|(name, value)| SettingChange {
                name: name.clone(),
                value: Some(value.clone()),
            })
            .collect(),
        copy_endpoint: None,
        wrappers: Vec::new(),
        is_multi: false,
        params: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn settings_are_read_as_postgresql_reads_them() {
        assert_eq!(
            parse("-c search_path=app -cstatement_timeout=5s --work-mem=64MB").unwrap(),
            pairs(&[
                ("search_path", "app"),
                ("statement_timeout", "5s"),
                ("work_mem", "64MB")
            ])
        );
        assert_eq!(
            parse(r"-c application_name=my\ app -c x.y=a\\b").unwrap(),
            pairs(&[("application_name", "my app"), ("x.y", r"a\b")])
        );
        assert_eq!(parse("   ").unwrap(), pairs(&[]));
    }

    #[test]
    fn a_role_among_the_options_is_judged_as_a_privilege_change() {
        let statement = as_statement(&pairs(&[("work_mem", "64MB"), ("role", "admin")]));
        assert_eq!(statement.kind, StatementKind::Privilege);
        assert_eq!(statement.command, "SET ROLE");
        let statement = as_statement(&pairs(&[("work_mem", "64MB")]));
        assert_eq!(statement.kind, StatementKind::Setting);
    }

    #[test]
    fn anything_but_a_setting_is_refused() {
        for (options, why) in [
            ("-d 5", "only -c"),
            ("-c", "without a setting"),
            ("-c search_path", "sets no value"),
            ("-c =x", "without a name"),
            ("-c x=1 \\", "lone backslash"),
            ("-O", "only -c"),
            ("search_path=app", "only -c"),
        ] {
            let error = parse(options).expect_err(options);
            assert!(error.contains(why), "{options}: {error}");
        }
    }

    #[test]
    fn rendering_round_trips() {
        let settings = pairs(&[
            ("application_name", "two words"),
            ("sluice.principal", r"dom\alice"),
            ("search_path", "a\u{0b}b\u{0c}c"),
        ]);
        assert_eq!(parse(&render(&settings)).unwrap(), settings);
    }

    /// Every byte C's `isspace` counts, as PostgreSQL splits: a vertical
    /// tab or form feed is no part of a value that a second setting could
    /// hide behind.
    #[test]
    fn options_split_where_postgresql_splits() {
        assert_eq!(
            parse("-c application_name=x\u{0b}-c\u{0b}role=admin").unwrap(),
            pairs(&[("application_name", "x"), ("role", "admin")])
        );
        assert_eq!(
            parse("-c a=1\u{0c}-c b=2\r-c c=3").unwrap(),
            pairs(&[("a", "1"), ("b", "2"), ("c", "3")])
        );
        for odd in ["-c a=x\u{1}", "-c a=x\u{7f}", "-c a=\u{a0}", "-c a=é"] {
            let error = parse(odd).expect_err(odd);
            assert!(error.contains("printable ASCII"), "{odd:?}: {error}");
        }
    }

    #[test]
    fn the_statement_is_the_set_it_amounts_to() {
        let statement = as_statement(&pairs(&[("search_path", "it's")]));
        assert_eq!(statement.kind, StatementKind::Setting);
        assert_eq!(statement.text, "SET search_path TO 'it''s'");
        assert_eq!(statement.settings[0].name, "search_path");
        assert_eq!(statement.settings[0].value.as_deref(), Some("it's"));
    }
}
