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
mod template;
mod walk;
mod where_clause;

pub use copy::{CopyOut, DataFormat, FormatKind, copy_out, unreadable_copy};

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use crate::plugin::bindings::types::{
    CopyEndpoint, SettingChange, Statement, StatementKind, TableAction, TableRef, Wrapper,
};
use lexer::Token;
pub use statement::{leading_command, privilege_setting, stronger_kind};
use walk::{Copied, Touched};

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

/// What a statement does with a SQL cursor, which sluice follows so that
/// a FETCH is judged with what its cursor reads: the cursor's query runs
/// FETCH by FETCH, maybe long after the DECLARE was judged (a `WITH HOLD`
/// cursor outlives its transaction, and a policy reload meanwhile).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CursorUse {
    #[default]
    None,
    /// `DECLARE name CURSOR [WITH HOLD] FOR query`.
    Declare { name: String, hold: bool },
    /// `FETCH ... FROM name`: reads rows of `name`'s query.
    Fetch { name: String },
}

/// One statement of a query string, analysed.
#[derive(Debug, Clone)]
pub struct Analysed {
    /// The summary policies judge.
    pub statement: Statement,
    /// What it does to the session's prepared statements, if it runs.
    pub effect: Effect,
    /// What it does with a SQL cursor.
    pub cursor: CursorUse,
    /// The statement's shape, when its analysis holds for every statement
    /// of that shape (see [`Analyser`]): a policy decision that follows
    /// from the analysis alone may be reused for them.
    pub shape: Option<std::sync::Arc<str>>,
}

/// The facts about one statement, before they become its summary.
#[derive(Debug)]
pub struct Facts {
    pub kind: StatementKind,
    pub command: String,
    pub touched: Touched,
    pub has_where: bool,
    pub settings: Vec<SettingChange>,
    /// Whether a `set_config()` call names its setting only when it runs.
    pub setting_name_unknown: bool,
    pub copy_endpoint: Option<CopyEndpoint>,
    pub wrappers: Vec<Wrapper>,
    pub effect: Effect,
    pub cursor: CursorUse,
    /// Calls of built-in functions that make the statement another kind.
    pub acting: Vec<walk::ActingCall>,
    /// Whether a table it touches is named by a literal's value: its
    /// analysis is not its shape's.
    pub names_from_values: bool,
}

impl Facts {
    fn new(kind: StatementKind, command: String) -> Facts {
        Facts {
            kind,
            command,
            touched: Touched::default(),
            has_where: true,
            settings: Vec::new(),
            setting_name_unknown: false,
            copy_endpoint: None,
            wrappers: Vec::new(),
            effect: Effect::None,
            cursor: CursorUse::None,
            acting: Vec::new(),
            names_from_values: false,
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

/// `name` as a quoted SQL identifier: exactly this name, whatever its
/// case or characters.
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Whether `text` spells `word` (ASCII, any case) anywhere: a cheap test
/// of whether a statement can be one that `word` begins or names, before
/// anything is lexed; over-inclusive (a string or comment counts too).
pub fn spells(text: &str, word: &[u8]) -> bool {
    text.as_bytes()
        .windows(word.len())
        .any(|w| w.eq_ignore_ascii_case(word))
}

/// Analyses a query string: one entry per statement PostgreSQL would run,
/// none for a string of only whitespace and comments.
///
/// `standard_conforming_strings` is the session's setting, as the server
/// last reported it: it decides whether a backslash escapes a quote.
pub fn analyse(text: &str, standard_conforming_strings: bool) -> Vec<Analysed> {
    Analyser::default().analyse(text, standard_conforming_strings)
}

/// Most statement shapes an [`Analyser`] remembers.
const SHAPES: usize = 256;

/// Analyses statements, remembering the analysis of each statement shape
/// it has parsed: a session sends the same statements over and over with
/// different values (`... WHERE aid = 48213`, then `= 9071`), and parsing
/// is most of an analysis.
///
/// A shape is the statement's tokens with every string and number
/// replaced by a placeholder. Only shapes whose analysis cannot depend on
/// a literal's value are remembered: SELECT, INSERT, UPDATE, DELETE and
/// MERGE, not wrapped, with no LIKE or ILIKE (whose pattern decides whether
/// a WHERE is real). Settings (by SET or `set_config()`), COPY endpoints,
/// EXPLAIN options and EXECUTE parameters all carry values, and are
/// analysed every time.
#[derive(Default)]
pub struct Analyser {
    shapes: std::collections::HashMap<std::sync::Arc<str>, Remembered>,
    /// Texts of remembered shapes cut at their literals, most recently
    /// matched first: a text that matches one needs no lexing at all.
    templates: Vec<template::Template>,
}

/// Most templates an [`Analyser`] keeps, each tried in turn.
const TEMPLATES: usize = 8;

/// Most texts of one shape a template is tried from.
const TEMPLATE_TRIES: u8 = 3;

/// A remembered shape's analysis.
struct Remembered {
    statement: Statement,
    /// Texts of it a template was tried from: one whose literals are not
    /// plain (`1.5`, `E'x'`) makes none, and another text of the shape
    /// may; after [`TEMPLATE_TRIES`] the shape is left to the lexer.
    template_tries: u8,
}

impl Analyser {
    /// [`analyse`], with this analyser's memory of shapes.
    pub fn analyse(&mut self, text: &str, standard_conforming_strings: bool) -> Vec<Analysed> {
        if let Some(analysed) = self.by_template(text, standard_conforming_strings) {
            return vec![analysed];
        }
        let statements = match lexer::statements(text, standard_conforming_strings) {
            Ok(statements) => statements,
            Err(error) => {
                // Where the statements end is unknown: the string is judged
                // whole, as something nobody may run unknowingly.
                tracing::debug!(%error, "query text could not be split into statements");
                let facts = Facts::new(StatementKind::Unparsed, String::new());
                return vec![Analysed {
                    statement: facts.into_statement(text, true),
                    effect: Effect::None,
                    cursor: CursorUse::None,
                    shape: None,
                }];
            }
        };
        let is_multi = statements.len() > 1;
        let analysed: Vec<Analysed> = statements
            .iter()
            .map(|(piece, tokens)| {
                self.one(piece.text, tokens, standard_conforming_strings, is_multi)
            })
            .collect();
        if let ([(piece, _)], [one]) = (statements.as_slice(), analysed.as_slice()) {
            self.make_template(text, piece, standard_conforming_strings, one);
        }
        analysed
    }

    /// The analysis of `text` from a template it matches, if any.
    fn by_template(&mut self, text: &str, scs: bool) -> Option<Analysed> {
        let (at, statement_text) = self
            .templates
            .iter()
            .enumerate()
            .find_map(|(at, template)| Some((at, template.matches(text, scs)?)))?;
        // Most recently matched first: a session's next statement is
        // most often of the shape it sent last.
        self.templates[..=at].rotate_right(1);
        let template = &self.templates[0];
        let mut statement = template.statement.clone();
        statement.text = statement_text.to_owned();
        Some(Analysed {
            statement,
            effect: Effect::None,
            cursor: CursorUse::None,
            shape: Some(template.shape.clone()),
        })
    }

    /// Makes a template of `text`, one statement of a remembered shape,
    /// unless one was tried for that shape already.
    fn make_template(&mut self, text: &str, piece: &lexer::Piece<'_>, scs: bool, one: &Analysed) {
        let Some(shape) = one.shape.clone() else {
            return;
        };
        let Some(remembered) = self.shapes.get_mut(&shape) else {
            return;
        };
        if remembered.template_tries >= TEMPLATE_TRIES {
            return;
        }
        let made = template::Template::of(text, piece, scs, shape, remembered.statement.clone());
        match made {
            Some(made) => {
                // Made once: a shape whose template is later pushed out of
                // the list is lexed from then on.
                remembered.template_tries = TEMPLATE_TRIES;
                self.templates.truncate(TEMPLATES - 1);
                self.templates.insert(0, made);
            }
            None => remembered.template_tries += 1,
        }
    }

    fn one(&mut self, text: &str, tokens: &[Token], scs: bool, is_multi: bool) -> Analysed {
        let shape = shape_of(tokens);
        if let Some((shape, known)) = shape
            .as_deref()
            .and_then(|shape| self.shapes.get_key_value(shape))
        {
            let mut statement = known.statement.clone();
            statement.text = text.to_owned();
            statement.is_multi = is_multi;
            return Analysed {
                statement,
                effect: Effect::None,
                cursor: CursorUse::None,
                shape: Some(shape.clone()),
            };
        }
        let mut facts = one(text, tokens, scs);
        let effect = std::mem::replace(&mut facts.effect, Effect::None);
        let cursor = std::mem::take(&mut facts.cursor);
        let names_from_values = facts.names_from_values;
        let statement = facts.into_statement(text, is_multi);
        // A cursor's DECLARE and FETCH are followed (see `CursorUse`):
        // judged every time, never by a remembered shape.
        let shape = shape.filter(|_| {
            effect == Effect::None
                && cursor == CursorUse::None
                && !names_from_values
                && statement.wrappers.is_empty()
                // `set_config()`'s arguments are values.
                && statement.settings.is_empty()
                && matches!(
                    statement.kind,
                    StatementKind::Select
                        | StatementKind::Insert
                        | StatementKind::Update
                        | StatementKind::Delete
                        | StatementKind::Merge
                )
        });
        let shape = shape.map(|shape| {
            if self.shapes.len() >= SHAPES {
                // A session that never repeats itself gains nothing from
                // remembering; start over rather than grow. The templates
                // go with the shapes they stand for.
                self.shapes.clear();
                self.templates.clear();
            }
            let shape: std::sync::Arc<str> = shape.into();
            // The text is the one thing a later statement of this shape
            // does not share: kept out, it is not copied at every hit.
            let known = Statement {
                text: String::new(),
                is_multi: false,
                ..statement.clone()
            };
            self.shapes.insert(
                shape.clone(),
                Remembered {
                    statement: known,
                    template_tries: 0,
                },
            );
            shape
        });
        Analysed {
            statement,
            effect,
            cursor,
            shape,
        }
    }
}

/// A statement's shape: its tokens, literals replaced by a placeholder no
/// token can be (a NUL, which PostgreSQL's lexer refuses in SQL text, and
/// the literal's kind), or
/// `None` when its analysis may depend on a literal (LIKE, ILIKE, a bit
/// string).
///
/// Every statement a session sends is shaped, so the common tokens are
/// written straight into the buffer rather than through `Display`.
fn shape_of(tokens: &[Token]) -> Option<String> {
    use std::fmt::Write;
    let mut shape = String::with_capacity(tokens.len() * 8);
    for token in tokens {
        match token {
            Token::Word(word) if word == "like" || word == "ilike" => return None,
            Token::Word(word) => shape.push_str(word),
            Token::Symbol(symbol) => shape.push_str(symbol),
            // Each kind of literal a placeholder of its own: `holder 'x'`
            // is a value of type `holder`, `holder 0` no statement at all.
            Token::String(_) => shape.push_str("\0s"),
            Token::Number(_) => shape.push_str("\0n"),
            // Whether a bit string parses depends on its digits.
            Token::BitString(_) => return None,
            token => {
                let _ = write!(shape, "{token}");
            }
        }
        shape.push(' ');
    }
    Some(shape)
}

/// Analyses the text of exactly one statement, given its tokens.
fn one(text: &str, tokens: &[Token], standard_conforming_strings: bool) -> Facts {
    if let Some(ast) = parse_one(&canonical(tokens)) {
        let mut facts = statement::summarise(&ast, tokens);
        // sqlparser reads text with a lexer of its own. Should it ever read
        // a different statement than PostgreSQL's rules find, the two
        // disagree on the first keyword: trust neither.
        let first = match tokens.first() {
            Some(Token::Word(word)) => Some(word.as_str()),
            _ => None,
        };
        if agrees(first, &facts) {
            statement::kind_by_function(&mut facts);
            return facts;
        }
        return Facts::new(StatementKind::Unparsed, leading_command(tokens));
    }
    let command = leading_command(tokens);
    if command == "COPY"
        && let Some(copy) = copy::read(text, standard_conforming_strings)
        && let Some(mut facts) = copy_facts(text, &copy, standard_conforming_strings)
    {
        // Its query may call set_config() or pg_terminate_backend() as
        // any other may.
        statement::kind_by_function(&mut facts);
        return facts;
    }
    let fetches = matches!(command.as_str(), "FETCH" | "MOVE");
    let mut facts = Facts::new(StatementKind::Unparsed, command);
    if fetches {
        // A form sluice's parser does not read (`FETCH c`, `MOVE NEXT c`):
        // PostgreSQL's grammar ends it with the cursor's name, which is
        // followed as a parsed FETCH's is, should a policy let it run.
        facts.cursor = match tokens.last() {
            Some(Token::Word(name) | Token::QuotedIdentifier(name)) if tokens.len() > 1 => {
                CursorUse::Fetch { name: name.clone() }
            }
            _ => CursorUse::None,
        };
    }
    facts
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
fn canonical(tokens: &[Token]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(tokens.len() * 8);
    for token in tokens {
        if !out.is_empty() {
            out.push(' ');
        }
        match token {
            // Keywords are ASCII: a word that is not is a name, and quoted
            // it stays one name whatever sqlparser takes for whitespace.
            Token::Word(word) if !word.is_ascii() => {
                let _ = write!(out, "{}", Token::QuotedIdentifier(word.clone()));
            }
            token => {
                let _ = write!(out, "{token}");
            }
        }
    }
    out
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
            let way = match (&copy.direction, &copy.endpoint) {
                (copy::CopyDirection::From, _) => Copied::In,
                (copy::CopyDirection::To, copy::CopyEndpoint::Stdio) => Copied::ToClient,
                (copy::CopyDirection::To, _) => Copied::ToServer,
            };
            facts.touched.copied(&table, columns, way);
            facts
        }
        copy::CopySource::Query {
            text_offset,
            text_len,
        } => {
            // `COPY (query) TO ...`: the query is analysed as a statement
            // of its own, and must be one the parser reads.
            let inner = text.get(*text_offset..text_offset + text_len)?;
            let tokens = lexer::tokens(inner, scs).ok()?;
            let ast = parse_one(&canonical(&tokens))?;
            let mut facts = statement::summarise(&ast, &tokens);
            facts.kind = kind;
            facts.command = "COPY".to_owned();
            // Read as a SELECT of its own, the query's rows went to the
            // client; they go there only when the COPY sends them there.
            if copy.endpoint != copy::CopyEndpoint::Stdio {
                for column in &mut facts.touched.columns {
                    column.as_stored = false;
                }
            }
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
