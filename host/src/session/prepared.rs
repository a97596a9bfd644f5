//! The session's prepared statements, as sluice must know them to judge
//! what runs.
//!
//! PostgreSQL keeps one namespace of prepared statements per session: a
//! protocol-level Parse with a name and an SQL `PREPARE` both add to it,
//! and a Bind or an `EXECUTE` may run either. So sluice keeps one map too,
//! and judges a Bind or an `EXECUTE` as the statement it runs, with the
//! policy in force at that moment. `DEALLOCATE`, `DISCARD ALL` and Close
//! take entries out.
//!
//! A Parse is analysed at its first Bind, not before: a session that
//! binds a statement many times (pgbench -M prepared) pays for one
//! analysis, and one that never binds pays for none. A Parse that replaces
//! a statement with the same text keeps its analysis: drivers that parse
//! the unnamed statement before every execution (the extended protocol
//! without named statements) send the same text over and over.

use std::collections::HashMap;
use std::sync::Arc;

use crate::analysis::{Analysed, Analyser, Effect};
use crate::plugin::bindings::types::Wrapper;
use crate::protocol::sqlstate;

use super::Fatal;

/// Most prepared statements sluice remembers for one session; a client
/// that keeps more open gets its statements refused, never unjudged.
pub const MAX_PREPARED_STATEMENTS: usize = 10_000;

/// One prepared statement.
#[derive(Debug)]
struct Entry {
    /// The text the client parsed.
    text: Arc<str>,
    /// Its analysis, made at first need (an SQL `PREPARE` comes analysed).
    analysed: Option<Arc<[Analysed]>>,
    /// The session's `standard_conforming_strings` when the analysis was
    /// made: the same text lexes differently under the other setting.
    analysed_under: bool,
}

/// The session's prepared statements by name (`""` is the unnamed one of
/// the extended protocol).
#[derive(Debug, Default)]
pub struct Prepared {
    entries: HashMap<String, Entry>,
}

impl Prepared {
    /// Remembers a statement the client parsed, under the session's
    /// current `standard_conforming_strings`.
    ///
    /// The unnamed statement is replaced, as the server replaces it (it
    /// drops the old one even when the new one fails to parse). A named
    /// statement that exists is kept: the server refuses to redefine it
    /// and keeps running the one it has, so a Bind must be judged as that
    /// one, not as a text that never ran.
    pub fn parsed(
        &mut self,
        name: &str,
        text: &str,
        standard_conforming_strings: bool,
    ) -> Result<(), Fatal> {
        if let Some(entry) = self.entries.get_mut(name) {
            if !name.is_empty() {
                return Ok(());
            }
            if *entry.text == *text {
                if entry.analysed_under != standard_conforming_strings {
                    entry.analysed = None;
                }
                return Ok(());
            }
        }
        if self.entries.len() >= MAX_PREPARED_STATEMENTS && !self.entries.contains_key(name) {
            return Err(Fatal::new(
                sqlstate::PROGRAM_LIMIT_EXCEEDED,
                format!("more than {MAX_PREPARED_STATEMENTS} prepared statements in one session"),
            ));
        }
        self.entries.insert(
            name.to_owned(),
            Entry {
                text: text.into(),
                analysed: None,
                analysed_under: standard_conforming_strings,
            },
        );
        Ok(())
    }

    /// The text of a prepared statement.
    pub fn text(&self, name: &str) -> Option<Arc<str>> {
        self.entries.get(name).map(|entry| entry.text.clone())
    }

    /// Forgets a statement the client closed.
    pub fn closed(&mut self, name: &str) {
        self.entries.remove(name);
    }

    /// The analysis of a prepared statement, made now if not yet; `None`
    /// if the session has no statement of that name.
    pub fn analysis(
        &mut self,
        name: &str,
        analyser: &mut Analyser,
        standard_conforming_strings: bool,
    ) -> Option<Arc<[Analysed]>> {
        let entry = self.entries.get_mut(name)?;
        let analysed = entry.analysed.get_or_insert_with(|| {
            entry.analysed_under = standard_conforming_strings;
            analyser
                .analyse(&entry.text, standard_conforming_strings)
                .into()
        });
        Some(analysed.clone())
    }

    /// Replaces each `EXECUTE` among `statements` with the statement it
    /// runs, as judged: wrapped in `execute`, with the EXECUTE's
    /// parameters. An EXECUTE of a name the session has not prepared is
    /// refused: sluice cannot judge what it would run.
    pub fn resolve(
        &mut self,
        statements: Vec<Analysed>,
        analyser: &mut Analyser,
        standard_conforming_strings: bool,
    ) -> Result<Vec<Analysed>, Fatal> {
        if !statements
            .iter()
            .any(|a| matches!(a.effect, Effect::Execute { .. }))
        {
            return Ok(statements);
        }
        let mut resolved = Vec::with_capacity(statements.len());
        for outer in statements {
            let Effect::Execute { name, params } = &outer.effect else {
                resolved.push(outer);
                continue;
            };
            let Some(inner) = self.analysis(name, analyser, standard_conforming_strings) else {
                return Err(Fatal::new(
                    sqlstate::INVALID_SQL_STATEMENT_NAME,
                    format!("prepared statement \"{name}\" does not exist in this session"),
                ));
            };
            for stored in inner.iter() {
                let mut statement = stored.statement.clone();
                let mut wrappers = outer.statement.wrappers.clone();
                wrappers.push(Wrapper::Execute);
                wrappers.append(&mut statement.wrappers);
                statement.wrappers = wrappers;
                statement.params = params.clone();
                statement.is_multi = outer.statement.is_multi;
                resolved.push(Analysed {
                    statement,
                    // What it runs changes no prepared statement; an
                    // EXECUTE of a stored PREPARE is refused by PostgreSQL.
                    effect: Effect::None,
                    // Wrapped in EXECUTE: judged afresh every time.
                    shape: None,
                });
            }
        }
        Ok(resolved)
    }

    /// Refuses a `PREPARE` of a name already in use, before it runs: the
    /// server would refuse it too, and sluice must not forget what the
    /// name really holds.
    pub fn check(&self, statements: &[Analysed]) -> Result<(), Fatal> {
        for analysed in statements {
            if let Effect::Prepare { name } = &analysed.effect
                && self.entries.contains_key(name)
            {
                return Err(Fatal::new(
                    sqlstate::DUPLICATE_PREPARED_STATEMENT,
                    format!("prepared statement \"{name}\" already exists"),
                ));
            }
        }
        if self.entries.len() >= MAX_PREPARED_STATEMENTS
            && statements
                .iter()
                .any(|a| matches!(a.effect, Effect::Prepare { .. }))
        {
            return Err(Fatal::new(
                sqlstate::PROGRAM_LIMIT_EXCEEDED,
                format!("more than {MAX_PREPARED_STATEMENTS} prepared statements in one session"),
            ));
        }
        Ok(())
    }

    /// Follows what allowed statements do to prepared statements;
    /// `standard_conforming_strings` is the setting they were analysed
    /// under.
    pub fn apply(&mut self, statements: &[Analysed], standard_conforming_strings: bool) {
        for analysed in statements {
            match &analysed.effect {
                Effect::None | Effect::Execute { .. } => {}
                Effect::Prepare { name } => {
                    let mut stored = analysed.clone();
                    stored.effect = Effect::None;
                    stored.shape = None;
                    if stored.statement.wrappers.first() == Some(&Wrapper::Prepare) {
                        stored.statement.wrappers.remove(0);
                    }
                    self.entries.insert(
                        name.clone(),
                        Entry {
                            text: analysed.statement.text.as_str().into(),
                            analysed: Some(Arc::from(vec![stored])),
                            analysed_under: standard_conforming_strings,
                        },
                    );
                }
                Effect::Deallocate(Some(name)) => {
                    self.entries.remove(name);
                }
                Effect::Deallocate(None) => self.entries.clear(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analysis_of(prepared: &mut Prepared, name: &str) -> Arc<[Analysed]> {
        prepared
            .analysis(name, &mut Analyser::default(), true)
            .expect("the statement is known")
    }

    #[test]
    fn the_unnamed_statement_parsed_again_with_the_same_text_keeps_its_analysis() {
        let mut prepared = Prepared::default();
        let text = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
        prepared.parsed("", text, true).unwrap();
        let first = analysis_of(&mut prepared, "");
        prepared.parsed("", text, true).unwrap();
        assert!(Arc::ptr_eq(&first, &analysis_of(&mut prepared, "")));
    }

    #[test]
    fn the_unnamed_statement_is_analysed_again_for_another_text_or_setting() {
        let mut prepared = Prepared::default();
        prepared.parsed("", "SELECT 'a\\'", true).unwrap();
        let first = analysis_of(&mut prepared, "");
        prepared.parsed("", "SELECT 'a\\'", false).unwrap();
        let under_the_other_setting = analysis_of(&mut prepared, "");
        assert!(!Arc::ptr_eq(&first, &under_the_other_setting));
        prepared.parsed("", "DELETE FROM orders", false).unwrap();
        assert_eq!(&*prepared.text("").unwrap(), "DELETE FROM orders");
        assert_eq!(
            analysis_of(&mut prepared, "")[0].statement.command,
            "DELETE"
        );
    }

    #[test]
    fn a_named_statement_is_not_redefined_by_a_parse_the_server_refuses() {
        let mut prepared = Prepared::default();
        prepared
            .parsed("report", "DELETE FROM orders WHERE id = $1", true)
            .unwrap();
        prepared.parsed("report", "SELECT 1", true).unwrap();
        assert_eq!(
            &*prepared.text("report").unwrap(),
            "DELETE FROM orders WHERE id = $1"
        );
        assert_eq!(
            analysis_of(&mut prepared, "report")[0].statement.command,
            "DELETE"
        );
        // Once closed, the name is free again.
        prepared.closed("report");
        prepared.parsed("report", "SELECT 1", true).unwrap();
        assert_eq!(&*prepared.text("report").unwrap(), "SELECT 1");
    }
}
