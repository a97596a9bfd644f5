//! SQL analysis: what each statement a client sends is and what it
//! touches, for the policy plugins to judge.
//!
//! A query string is first split into statements by a lexer that follows
//! PostgreSQL's own rules ([`lexer`]), so the statements judged are the
//! statements the server will run. Each is then parsed with sqlparser
//! (PostgreSQL dialect) and walked ([`walk`]): its kind and command, every
//! table it touches and how, the columns it names, the functions it calls,
//! whether its DELETEs and UPDATEs have a real WHERE ([`where_clause`]),
//! the settings it changes.
//!
//! Text the parser cannot read is not guessed at: it becomes an
//! `unparsed` statement carrying only its leading keywords, which the
//! shipped policies deny unless a rule allows that command. The one
//! exception is COPY, which the parser rejects in forms clients really
//! send (`copy t from stdin with (freeze on)`, from pgbench): a reader of
//! its own ([`copy`]) decides its direction and endpoint exactly, so that
//! no allowance for `COPY` can ever let `COPY ... TO PROGRAM` through.

pub mod builtins;
mod copy;
pub mod lexer;
mod statement;
mod walk;
mod where_clause;

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use crate::plugin::bindings::types::{
    CopyEndpoint, SettingChange, Statement, StatementKind, TableAction, TableRef, Wrapper,
};
pub use statement::leading_command;
use walk::Touched;

/// What running a statement does to the session's own state that sluice
/// must follow: SQL-level prepared statements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    None,
    /// `PREPARE name AS ...`: the statement is stored under `name`.
    Prepare {
        name: String,
    },
    /// `EXECUTE name (params)`: runs what `name` stores.
    Execute {
        name: String,
        params: Vec<Option<String>>,
    },
    /// `DEALLOCATE name`, or with `None` `DEALLOCATE ALL` and `DISCARD
    /// ALL`.
    Deallocate(Option<String>),
}

/// One statement of a query string, analysed.
#[derive(Debug, Clone)]
pub struct Analysed {
    /// The summary policies judge.
    pub statement: Statement,
    /// What it does to the session's prepared statements, if it runs.
    pub effect: Effect,
}

/// The facts about one statement, before they become its summary.
#[derive(Debug)]
pub struct Facts {
    pub kind: StatementKind,
    pub command: String,
    pub touched: Touched,
    pub has_where: bool,
    pub settings: Vec<SettingChange>,
    pub copy_endpoint: Option<CopyEndpoint>,
    pub wrappers: Vec<Wrapper>,
    pub effect: Effect,
}

impl Facts {
    fn new(kind: StatementKind, command: String) -> Facts {
        Facts {
            kind,
            command,
            touched: Touched::default(),
            has_where: true,
            settings: Vec::new(),
            copy_endpoint: None,
            wrappers: Vec::new(),
            effect: Effect::None,
        }
    }

    fn into_statement(self, text: &str, is_multi: bool) -> Statement {
        Statement {
            text: text.to_owned(),
            kind: self.kind,
            command: self.command,
            tables: self.touched.tables,
            columns: self.touched.columns,
            functions: self.touched.functions,
            has_where: self.has_where,
            settings: self.settings,
            copy_endpoint: self.copy_endpoint,
            wrappers: self.wrappers,
            is_multi,
            params: Vec::new(),
        }
    }
}

/// Analyses a query string: one entry per statement PostgreSQL would run,
/// none for a string of only whitespace and comments.
///
/// `standard_conforming_strings` is the session's setting, as the server
/// last reported it: it decides whether a backslash escapes a quote.
pub fn analyse(text: &str, standard_conforming_strings: bool) -> Vec<Analysed> {
    let pieces = match lexer::split(text, standard_conforming_strings) {
        Ok(pieces) => pieces,
        Err(error) => {
            // Where the statements end is unknown: the string is judged
            // whole, as something nobody may run unknowingly.
            tracing::debug!(%error, "query text could not be split into statements");
            let facts = Facts::new(StatementKind::Unparsed, String::new());
            return vec![Analysed {
                statement: facts.into_statement(text, true),
                effect: Effect::None,
            }];
        }
    };
    let is_multi = pieces.len() > 1;
    pieces
        .iter()
        .map(|piece| {
            let mut facts = one(piece.text, standard_conforming_strings);
            let effect = std::mem::replace(&mut facts.effect, Effect::None);
            Analysed {
                statement: facts.into_statement(piece.text, is_multi),
                effect,
            }
        })
        .collect()
}

/// Analyses the text of exactly one statement.
fn one(text: &str, standard_conforming_strings: bool) -> Facts {
    if let Some(ast) = canonical(text, standard_conforming_strings).and_then(|c| parse_one(&c)) {
        let facts = statement::summarise(&ast, text, standard_conforming_strings);
        // sqlparser reads text with a lexer of its own. Should it ever read
        // a different statement than PostgreSQL's rules find, the two
        // disagree on the first keyword: trust neither.
        let first = lexer::first_keyword(text, standard_conforming_strings);
        if agrees(first.as_deref(), &facts) {
            return facts;
        }
        return Facts::new(
            StatementKind::Unparsed,
            leading_command(text, standard_conforming_strings),
        );
    }
    let command = leading_command(text, standard_conforming_strings);
    if command == "COPY"
        && let Some(copy) = copy::read(text, standard_conforming_strings)
        && let Some(facts) = copy_facts(text, &copy, standard_conforming_strings)
    {
        return facts;
    }
    Facts::new(StatementKind::Unparsed, command)
}

/// The statement as sqlparser should read it: the tokens PostgreSQL's own
/// rules find in it, written out plainly, one space apart.
///
/// sqlparser's lexer is not PostgreSQL's. Left to read the client's text
/// it would disagree on what some of it means — `U&"p\0061n"` is the
/// column `pan` to PostgreSQL and `U & "p\0061n"` to sqlparser; likewise
/// strings under `standard_conforming_strings = off`, nested comments,
/// `$` inside names, names past 63 bytes — and a policy would judge a
/// statement the server never runs. Written out from sluice's lexer, every
/// name and string reaches the parser decoded, quoted plainly, with
/// nothing left for its lexer to read differently. Comments go; values
/// stay.
fn canonical(text: &str, standard_conforming_strings: bool) -> Option<String> {
    use std::fmt::Write;
    let tokens = lexer::tokens(text, standard_conforming_strings).ok()?;
    let mut out = String::with_capacity(text.len() + tokens.len());
    for token in &tokens {
        if !out.is_empty() {
            out.push(' ');
        }
        match token {
            // Keywords are ASCII: a word that is not is a name, and quoted
            // it stays one name whatever sqlparser takes for whitespace.
            lexer::Token::Word(word) if !word.is_ascii() => {
                let _ = write!(out, "{}", lexer::Token::QuotedIdentifier(word.clone()));
            }
            token => {
                let _ = write!(out, "{token}");
            }
        }
    }
    Some(out)
}

/// Whether the statement's first keyword (by PostgreSQL's rules) fits what
/// sqlparser made of it.
fn agrees(first_keyword: Option<&str>, facts: &Facts) -> bool {
    let Some(first) = first_keyword else {
        // `(SELECT ...)` starts with a parenthesis.
        return facts.kind == StatementKind::Select;
    };
    let outermost = match facts.wrappers.first() {
        Some(Wrapper::Explain | Wrapper::ExplainAnalyze) => "EXPLAIN",
        Some(Wrapper::Prepare) => "PREPARE",
        Some(Wrapper::Execute) | None => facts.command.split(' ').next().unwrap_or_default(),
    };
    let expected: &[&str] = match outermost {
        "SELECT" => &["select", "with", "values", "table"],
        "INSERT" | "UPDATE" | "DELETE" | "MERGE" => &["with"],
        "BEGIN" => &["begin", "start"],
        "COMMIT" => &["commit", "end"],
        "ROLLBACK" => &["rollback", "abort"],
        "RELEASE" => &["release"],
        "DECLARE" => &["declare"],
        "CLOSE" => &["close"],
        "LOCK" => &["lock"],
        _ => &[],
    };
    expected.contains(&first) || outermost.eq_ignore_ascii_case(first)
}

/// The statement sqlparser reads in `text`, if it reads exactly one.
fn parse_one(text: &str) -> Option<sqlparser::ast::Statement> {
    let mut statements = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(text)
        .and_then(|mut parser| parser.parse_statements())
        .ok()?;
    if statements.len() != 1 {
        return None;
    }
    statements.pop()
}

/// The facts of a COPY the parser could not read but [`copy`] could.
fn copy_facts(text: &str, copy: &copy::CopyCommand, scs: bool) -> Option<Facts> {
    let (kind, action) = match copy.direction {
        copy::CopyDirection::To => (StatementKind::CopyOut, TableAction::Read),
        copy::CopyDirection::From => (StatementKind::CopyIn, TableAction::Insert),
    };
    let mut facts = match &copy.source {
        copy::CopySource::Table {
            schema,
            name,
            columns,
        } => {
            let mut facts = Facts::new(kind, "COPY".to_owned());
            let table = TableRef {
                schema: schema.clone(),
                name: name.clone(),
            };
            facts.touched.table(table.clone(), action);
            let reads = copy.direction == copy::CopyDirection::To;
            let mut record = |column: Option<String>| {
                if reads {
                    facts.touched.column(Some(table.clone()), column)
                } else {
                    facts.touched.written(Some(table.clone()), column)
                }
            };
            if columns.is_empty() {
                record(None);
            }
            for column in columns {
                record(Some(column.clone()));
            }
            facts
        }
        copy::CopySource::Query {
            text_offset,
            text_len,
        } => {
            // `COPY (query) TO ...`: the query is analysed as a statement
            // of its own, and must be one the parser reads.
            let inner = text.get(*text_offset..text_offset + text_len)?;
            let ast = parse_one(inner)?;
            let mut facts = statement::summarise(&ast, inner, scs);
            facts.kind = kind;
            facts.command = "COPY".to_owned();
            facts
        }
    };
    facts.copy_endpoint = Some(match &copy.endpoint {
        copy::CopyEndpoint::Stdio => CopyEndpoint::Stdio,
        copy::CopyEndpoint::File(path) => CopyEndpoint::File(path.clone()),
        copy::CopyEndpoint::Program(command) => CopyEndpoint::Program(command.clone()),
    });
    Some(facts)
}

#[cfg(test)]
mod tests;
