//! What the policy hook is told about a statement.
//!
//! This is the first cut: the statement's kind from its leading keywords,
//! read the way PostgreSQL's lexer reads them (whitespace, `--` and nested
//! `/* */` comments skipped). Text that may hold more than one statement is
//! reported as `unparsed`, so a policy that allows reads cannot be walked
//! past with `SELECT 1; DELETE ...`. Full analysis with a SQL parser —
//! tables, columns, functions, WHERE clauses, one statement at a time —
//! replaces it.

use crate::plugin::bindings::types::{Statement, StatementKind};

/// The summary of one statement's text.
pub fn summarize(text: &str) -> Statement {
    let multi = may_hold_several(text);
    let kind = if multi {
        StatementKind::Unparsed
    } else {
        classify(text)
    };
    Statement {
        text: text.to_owned(),
        kind,
        tables: Vec::new(),
        columns: Vec::new(),
        functions: Vec::new(),
        has_where: false,
        is_multi: multi,
        params: Vec::new(),
    }
}

fn classify(text: &str) -> StatementKind {
    let mut words = Keywords { rest: text };
    let first = words.next().unwrap_or_default();
    let second = words.next().unwrap_or_default();
    match first.as_str() {
        "select" | "values" | "table" => StatementKind::Select,
        "insert" => StatementKind::Insert,
        "update" => StatementKind::Update,
        "delete" => StatementKind::Delete,
        "merge" => StatementKind::Merge,
        "grant" | "revoke" => StatementKind::Privilege,
        "create" | "alter" | "drop"
            if matches!(second.as_str(), "role" | "user" | "group" | "policy") =>
        {
            StatementKind::Privilege
        }
        "create" | "alter" | "drop" | "truncate" | "comment" | "security" | "reassign" => {
            StatementKind::Ddl
        }
        "set" | "reset" if matches!(second.as_str(), "role" | "session") => {
            StatementKind::Privilege
        }
        "set" | "reset" | "show" => StatementKind::Setting,
        "begin" | "start" | "commit" | "end" | "rollback" | "abort" | "savepoint" | "release" => {
            StatementKind::Transaction
        }
        "prepare" | "execute" | "deallocate" => StatementKind::Prepared,
        "call" | "do" => StatementKind::Procedural,
        "explain" => StatementKind::Explain,
        "listen" | "notify" | "unlisten" => StatementKind::Notification,
        "vacuum" | "analyze" | "analyse" | "cluster" | "reindex" | "checkpoint" => {
            StatementKind::Utility
        }
        // WITH may wrap a data-modifying statement and COPY may read or
        // write: without a parser neither can be told apart safely.
        "" => StatementKind::Other,
        _ => StatementKind::Other,
    }
}

/// Leading keywords, lower-cased, skipping comments and whitespace.
struct Keywords<'a> {
    rest: &'a str,
}

impl Iterator for Keywords<'_> {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        self.rest = skip_blank(self.rest);
        let end = self
            .rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(self.rest.len());
        if end == 0 {
            return None;
        }
        let word = self.rest[..end].to_lowercase();
        self.rest = &self.rest[end..];
        Some(word)
    }
}

/// Skips whitespace and comments (`--` to end of line, nested `/* */`).
fn skip_blank(mut text: &str) -> &str {
    loop {
        let trimmed = text.trim_start();
        if let Some(after) = trimmed.strip_prefix("--") {
            text = after.find('\n').map_or("", |i| &after[i + 1..]);
        } else if trimmed.starts_with("/*") {
            let mut depth = 0usize;
            let bytes = trimmed.as_bytes();
            let mut i = 0;
            while i + 1 < bytes.len() {
                match (bytes[i], bytes[i + 1]) {
                    (b'/', b'*') => {
                        depth += 1;
                        i += 2;
                    }
                    (b'*', b'/') => {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => i += 1,
                }
            }
            if depth > 0 {
                return "";
            }
            text = &trimmed[i..];
        } else {
            return trimmed;
        }
    }
}

/// Whether anything but blanks follows a `;`. Quotes are not read, so a
/// `;` inside a literal counts too: the answer errs towards "several".
fn may_hold_several(text: &str) -> bool {
    let mut rest = text;
    while let Some(at) = rest.find(';') {
        rest = &rest[at + 1..];
        if !skip_blank(rest).trim_start_matches(';').trim().is_empty() {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_come_from_the_leading_keywords() {
        for (text, kind) in [
            ("SELECT 1", StatementKind::Select),
            (
                "  /* a /* nested */ comment */ -- line\n select 1",
                StatementKind::Select,
            ),
            ("delete from cards", StatementKind::Delete),
            ("DROP TABLE cards", StatementKind::Ddl),
            ("ALTER ROLE x SUPERUSER", StatementKind::Privilege),
            ("SET ROLE admin", StatementKind::Privilege),
            ("SET search_path = x", StatementKind::Setting),
            ("begin", StatementKind::Transaction),
            (
                "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
                StatementKind::Other,
            ),
            ("COPY cards TO STDOUT", StatementKind::Other),
            ("", StatementKind::Other),
            ("/* unterminated", StatementKind::Other),
        ] {
            assert_eq!(summarize(text).kind, kind, "{text}");
        }
    }

    #[test]
    fn several_statements_are_unparsed_until_they_can_be_split() {
        for text in [
            "SELECT 1; DELETE FROM t",
            "select 1;delete from t",
            "SELECT ';x'",
        ] {
            let statement = summarize(text);
            assert_eq!(statement.kind, StatementKind::Unparsed, "{text}");
            assert!(statement.is_multi);
        }
        for text in ["SELECT 1;", "SELECT 1; ;  ", "SELECT 1; -- done"] {
            assert_eq!(summarize(text).kind, StatementKind::Select, "{text}");
        }
    }
}
