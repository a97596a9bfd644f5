//! A lexer for PostgreSQL's SQL dialect that follows the server's own rules.
//!
//! # Why sluice has its own lexer
//! sluice judges every statement before it reaches the database, so it must
//! see a query string exactly as the server will: where one statement ends
//! and the next begins, and which keyword each starts with. A general SQL
//! tokenizer (sqlparser's included) is close to PostgreSQL's but not equal
//! to it, and every difference is a way to smuggle a statement past the
//! policy: a `;` that sluice thinks is inside a string but the server sees
//! as a separator is a hidden second statement. So this module implements
//! the rules of PostgreSQL's scanner (`src/backend/parser/scan.l`), which
//! are documented facts about the server, and nothing looser:
//!
//! * `--` comments run to the end of the line (`\n` or `\r`); `/* */`
//!   comments nest.
//! * `'...'` strings double `''` for a quote. When the session's
//!   `standard_conforming_strings` is off they also take backslash escapes,
//!   exactly like `E'...'` strings, so `'a\';DROP x;--'` is one string.
//! * Two string literals separated only by whitespace (and `--` comments)
//!   that include a newline are one literal, and the second part keeps the
//!   first part's escaping rules.
//! * `U&'...'` and `U&"..."` take Unicode escapes, with an optional
//!   `UESCAPE 'c'` clause after them; `U&'...'` is an error while
//!   `standard_conforming_strings` is off.
//! * `$tag$...$tag$` quotes anything up to the same delimiter; the tag has
//!   the shape of an identifier without `$`. `$1` is a parameter, and a `$`
//!   inside an identifier (`a$b`) is part of the identifier.
//! * Unquoted identifiers fold ASCII letters only to lower case, and every
//!   byte of a non-ASCII character is an identifier character: a no-break
//!   space is *not* whitespace to PostgreSQL, so `SELECT\u{a0}1` is one
//!   identifier. Identifiers longer than 63 bytes are truncated, as the
//!   server does (`NAMEDATALEN` is 64 unless PostgreSQL was rebuilt).
//! * An operator run stops before `--` or `/*`, which start comments.
//!
//! # Where this lexer is stricter than the server
//! Anything the lexer cannot read with certainty is an error, so that the
//! caller denies the statement instead of guessing. Each such case is either
//! one the server rejects too, or one where agreeing with the server would
//! need more than a lexer:
//! * A NUL character: the wire protocol cannot carry one inside a query.
//! * A parameter number above `i32::MAX`. (PostgreSQL 15 silently wraps
//!   `$4294967297` round to `$1`; newer versions reject it.)
//! * `BEGIN ATOMIC` in [`split`]: the body of an SQL-standard function
//!   holds `;` that do not end the statement, and only a parser can tell
//!   where the body ends. See [`LexError::BeginAtomic`].
//!
//! # Versions
//! The rules are those of PostgreSQL 15, widened where a newer version
//! accepts more: vertical tab (`\v`) counts as whitespace and numbers may be
//! written `0x1F`, `0o17`, `0b101` or `1_000` (the number forms came with
//! PostgreSQL 16). PostgreSQL 15 rejects every one of those outright (a
//! stray `\v` is a syntax error, the numbers "trailing junk"), so accepting
//! them never makes sluice read a string that an older server would split or
//! run differently: up to the first such character both read the text
//! alike, and there the older server refuses the whole string.
//!
//! # Encoding
//! The lexer reads UTF-8, the only encoding sluice should let a client speak:
//! with a client-only encoding such as SJIS or GBK the server converts the
//! text before lexing it, and a byte that looks like `\` or `'` here can be
//! half of a character there.
//!
//! Every function runs in time linear in its input, keeps no recursion, and
//! never panics on any input.

use std::fmt;

/// The longest identifier PostgreSQL keeps, in bytes (`NAMEDATALEN - 1`).
/// Longer identifiers are cut to this length at a character boundary.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// One statement of a query string, as PostgreSQL would split it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece<'a> {
    /// The statement's text, without the `;` that ends it and without
    /// leading/trailing whitespace (comments inside are kept; leading
    /// comments are kept too). It may end inside a `--` comment, so join
    /// pieces with a newline, never with a bare `;`.
    pub text: &'a str,
    /// Byte offset of `text` in the whole string.
    pub offset: usize,
}

/// Why a query string cannot be lexed. Every variant carries the byte offset
/// in the lexed text where the trouble starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LexError {
    #[error("unterminated /* comment starting at byte {at}")]
    UnterminatedComment { at: usize },
    #[error("unterminated quoted string starting at byte {at}")]
    UnterminatedString { at: usize },
    #[error("unterminated bit string literal starting at byte {at}")]
    UnterminatedBitString { at: usize },
    #[error("unterminated hexadecimal string literal starting at byte {at}")]
    UnterminatedHexString { at: usize },
    #[error("unterminated quoted identifier starting at byte {at}")]
    UnterminatedQuotedIdentifier { at: usize },
    #[error("unterminated dollar-quoted string starting at byte {at}")]
    UnterminatedDollarQuote { at: usize },
    #[error("zero-length delimited identifier at byte {at}")]
    ZeroLengthIdentifier { at: usize },
    #[error("invalid Unicode escape at byte {at}")]
    InvalidUnicodeEscape { at: usize },
    #[error("invalid Unicode escape value at byte {at}")]
    InvalidUnicodeEscapeValue { at: usize },
    #[error("invalid Unicode surrogate pair at byte {at}")]
    InvalidUnicodeSurrogatePair { at: usize },
    #[error("string constant at byte {at}: escapes make it invalid UTF-8 or hold a NUL")]
    InvalidByteSequence { at: usize },
    #[error(
        "unsafe use of string constant with Unicode escapes at byte {at}: \
         not allowed while standard_conforming_strings is off"
    )]
    UnicodeStringWithoutStandardConformingStrings { at: usize },
    #[error("UESCAPE at byte {at} must be followed by a simple string literal")]
    UescapeWithoutString { at: usize },
    #[error("invalid Unicode escape character at byte {at}")]
    InvalidUescapeCharacter { at: usize },
    #[error("invalid numeric literal at byte {at}")]
    InvalidNumber { at: usize },
    #[error("trailing junk after numeric literal at byte {at}")]
    TrailingJunkAfterNumber { at: usize },
    #[error("trailing junk after parameter at byte {at}")]
    TrailingJunkAfterParameter { at: usize },
    #[error("parameter number too large at byte {at}")]
    ParameterNumberTooLarge { at: usize },
    #[error("operator too long at byte {at}")]
    OperatorTooLong { at: usize },
    #[error("NUL character at byte {at}")]
    NulCharacter { at: usize },
    /// `BEGIN ATOMIC` starts the body of an SQL-standard function
    /// (`CREATE FUNCTION ... BEGIN ATOMIC stmt; stmt; END`), whose `;` do not
    /// end the statement. Only PostgreSQL's grammar knows where such a body
    /// ends, so [`split`] refuses the whole string rather than guess. (The
    /// same two words can be a column and its alias, `SELECT begin atomic
    /// FROM t`, which is refused too: a rare false alarm, never a miss.)
    #[error(
        "BEGIN ATOMIC at byte {at}: a function body whose statements sluice cannot split with certainty"
    )]
    BeginAtomic { at: usize },
}

/// A token of PostgreSQL's SQL, with the value the server gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// An unquoted identifier or keyword, with ASCII letters folded to lower
    /// case (other letters are kept as written, as in a UTF-8 database) and
    /// truncated to [`MAX_IDENTIFIER_BYTES`]. `N'...'` yields the keyword
    /// `nchar` followed by the string, as PostgreSQL does.
    Word(String),
    /// A quoted identifier: `"..."` with `""` unescaped, or `U&"..."` with
    /// its escapes decoded; truncated to [`MAX_IDENTIFIER_BYTES`].
    QuotedIdentifier(String),
    /// A string constant with its value: `'...'`, `E'...'`, `U&'...'`
    /// (with any `UESCAPE` clause) or `$tag$...$tag$`, continuation parts
    /// joined.
    String(String),
    /// A bit string constant, `B'...'` or `X'...'`, as PostgreSQL passes it
    /// on: `b` or `x` followed by the raw digits (not validated here).
    BitString(String),
    /// A numeric constant as written (`42`, `1.5e3`, `0x1F`, `1_000`).
    Number(String),
    /// A positional parameter: `$1`, `$2`, ...
    Parameter(u32),
    /// Punctuation and operators: `( ) , ; . [ ] : :: := ..`, operator runs
    /// such as `+`, `<>`, `||`, `@>`, and any other single character the
    /// server would hand to its grammar (which rejects it).
    Symbol(String),
}

/// A token and the byte range `start..end` of the text it was read from.
///
/// A `U&` literal's range includes its `UESCAPE` clause; an `N'...'`
/// literal is two tokens, `nchar` (covering the `N`) and the string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpannedToken {
    pub token: Token,
    pub start: usize,
    pub end: usize,
}

/// Splits a simple-query string into statements. Pieces that hold nothing
/// but whitespace and comments are dropped (so `""` and `";;"` give no
/// pieces).
///
/// `standard_conforming_strings` is the session's setting (the server
/// reports it in ParameterStatus): when false, backslash escapes apply
/// inside plain `'...'` strings too. The server lexes a whole query string
/// with the setting in force when it arrives, so a `SET` inside the string
/// changes nothing for the rest of that string.
///
/// Every `;` outside strings, quoted identifiers, dollar quotes and
/// comments ends a statement, whatever parentheses surround it. PostgreSQL's
/// lexer knows nothing of parentheses, and its grammar accepts `;` only
/// between statements, so a `;` inside parentheses makes the server reject
/// the whole string and nothing runs: splitting there is never a miss. The
/// one place the grammar takes `;` inside a statement is a `BEGIN ATOMIC`
/// function body, which is an error here ([`LexError::BeginAtomic`]).
pub fn split(text: &str, standard_conforming_strings: bool) -> Result<Vec<Piece<'_>>, LexError> {
    Ok(statements(text, standard_conforming_strings)?
        .into_iter()
        .map(|(piece, _)| piece)
        .collect())
}

/// [`split`], with each statement's tokens: the text is lexed once.
pub fn statements(
    text: &str,
    standard_conforming_strings: bool,
) -> Result<Vec<(Piece<'_>, Vec<Token>)>, LexError> {
    let tokens = spanned_tokens(text, standard_conforming_strings)?;
    // Where each statement's tokens lie is found first, reading the tokens
    // in place; then each token is moved once, into its statement.
    let mut bounds: Vec<(std::ops::Range<usize>, Piece<'_>)> = Vec::with_capacity(1);
    let mut first = 0;
    let mut statement_start = 0;
    for (at, spanned) in tokens.iter().enumerate() {
        if is_symbol(&spanned.token, ";") {
            if at > first {
                bounds.push((first..at, piece(text, statement_start, spanned.start)));
            }
            first = at + 1;
            statement_start = spanned.end;
        } else if is_word(&spanned.token, "atomic")
            && at > first
            && is_word(&tokens[at - 1].token, "begin")
        {
            return Err(LexError::BeginAtomic { at: spanned.start });
        }
    }
    if first < tokens.len() {
        bounds.push((
            first..tokens.len(),
            piece(text, statement_start, text.len()),
        ));
    }
    let mut tokens = tokens.into_iter();
    let mut taken = 0;
    Ok(bounds
        .into_iter()
        .map(|(range, piece)| {
            // The `;`s before the statement are dropped on the way.
            let separators = range.start - taken;
            taken = range.end;
            let statement = tokens
                .by_ref()
                .skip(separators)
                .take(range.len())
                .map(|spanned| spanned.token)
                .collect();
            (piece, statement)
        })
        .collect())
}

/// Tokens of one statement (comments and whitespace skipped).
pub fn tokens(text: &str, standard_conforming_strings: bool) -> Result<Vec<Token>, LexError> {
    Ok(spanned_tokens(text, standard_conforming_strings)?
        .into_iter()
        .map(|spanned| spanned.token)
        .collect())
}

/// Tokens of one statement with the byte range each was read from.
pub fn spanned_tokens(
    text: &str,
    standard_conforming_strings: bool,
) -> Result<Vec<SpannedToken>, LexError> {
    if let Some(at) = text.bytes().position(|b| b == 0) {
        return Err(LexError::NulCharacter { at });
    }
    let mut scanner = Scanner {
        text,
        bytes: text.as_bytes(),
        pos: 0,
        standard_conforming_strings,
        single_char_operators_until: 0,
    };
    // About one token per four bytes of SQL: one allocation for most
    // statements instead of a few growths.
    let mut tokens = Vec::with_capacity(text.len() / 4 + 4);
    while let Some(lexeme) = scanner.next_lexeme()? {
        match lexeme {
            Lexeme::Done(token) => tokens.push(token),
            // A `U&` literal (rare) is decoded once the tokens after it are
            // known: from here on, the lexemes are kept as they come.
            unicode @ Lexeme::Unicode { .. } => {
                let mut lexemes: Vec<Lexeme> = tokens.into_iter().map(Lexeme::Done).collect();
                lexemes.push(unicode);
                while let Some(lexeme) = scanner.next_lexeme()? {
                    lexemes.push(lexeme);
                }
                return resolve_unicode_literals(lexemes);
            }
        }
    }
    Ok(tokens)
}

/// The first keyword of a statement, lower-cased (`None` if it starts with
/// anything else or is empty).
///
/// The whole text is lexed, and text that does not lex gives `None`: the
/// server would reject it whole, and a caller must not act on a keyword
/// read from text it cannot trust.
pub fn first_keyword(text: &str, standard_conforming_strings: bool) -> Option<String> {
    let tokens = spanned_tokens(text, standard_conforming_strings).ok()?;
    match tokens.into_iter().next()?.token {
        Token::Word(word) => Some(word),
        _ => None,
    }
}

/// Whether `token` is the unquoted word `word` (lower case).
pub fn is_word(token: &Token, word: &str) -> bool {
    matches!(token, Token::Word(w) if w == word)
}

/// Whether `token` is the symbol `symbol`.
pub fn is_symbol(token: &Token, symbol: &str) -> bool {
    matches!(token, Token::Symbol(s) if s == symbol)
}

/// `text` without PostgreSQL whitespace at either end. Unlike
/// [`str::trim`] this keeps Unicode spaces, which PostgreSQL reads as
/// identifier characters.
pub fn trim_whitespace(text: &str) -> &str {
    text.trim_matches(is_space_char)
}

fn piece(text: &str, start: usize, end: usize) -> Piece<'_> {
    let raw = &text[start..end];
    let leading = raw.len() - raw.trim_start_matches(is_space_char).len();
    Piece {
        text: trim_whitespace(raw),
        offset: start + leading,
    }
}

fn is_space_char(c: char) -> bool {
    u8::try_from(c).is_ok_and(is_space)
}

// Character classes of PostgreSQL's scanner. Every byte of a non-ASCII
// character (all are >= 0x80 in UTF-8) is an identifier character, so a
// scan that stops at an ASCII byte always stops at a character boundary.

/// Whitespace: space, tab, newline, carriage return, form feed, and vertical
/// tab (newer versions only; see the module docs).
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' | b'\x0b')
}

fn is_newline(b: u8) -> bool {
    matches!(b, b'\n' | b'\r')
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

/// Characters of a dollar-quote tag after the first: as for identifiers,
/// but without `$`.
fn is_dollar_tag_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit()
}

/// Characters that can make up a multi-character operator.
fn is_op_char(b: u8) -> bool {
    b"~!@#^&|`?+-*/%<>=".contains(&b)
}

/// Operator characters that SQL's own operators never use. An operator that
/// holds one may end in `+` or `-` (`?-`); any other multi-character
/// operator sheds its trailing `+`/`-`, so `=-1` reads as `=` and `-1`.
fn is_non_sql_op_char(b: u8) -> bool {
    b"~!@#^&|`?%".contains(&b)
}

/// Punctuation that is always a token of its own.
fn is_punctuation(b: u8) -> bool {
    b",()[].;:".contains(&b)
}

/// What the scanner reads before `UESCAPE` clauses are resolved: a `U&`
/// literal cannot be decoded until the tokens after it are known.
enum Lexeme {
    Done(SpannedToken),
    Unicode {
        kind: UnicodeKind,
        /// The literal's text with `''` (or `""`) already unescaped.
        body: String,
        start: usize,
        end: usize,
    },
}

#[derive(Clone, Copy)]
enum UnicodeKind {
    String,
    Identifier,
}

/// How the body of a `'`-quoted literal is read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum QuoteRules {
    /// `'...'` with standard_conforming_strings on, and `U&'...'`: only
    /// `''` is special.
    Standard,
    /// `E'...'`, and `'...'` with standard_conforming_strings off: `''` and
    /// backslash escapes.
    Escaped,
    /// `B'...'` and `X'...'`: every `'` ends the part (no `''`).
    Bits,
}

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    standard_conforming_strings: bool,
    /// Up to where the operator characters ahead are single-character
    /// operators (see [`Scanner::operator`]).
    single_char_operators_until: usize,
}

impl Scanner<'_> {
    fn peek(&self, ahead: usize) -> Option<u8> {
        self.bytes.get(self.pos + ahead).copied()
    }

    fn next_lexeme(&mut self) -> Result<Option<Lexeme>, LexError> {
        self.skip_whitespace_and_comments()?;
        let start = self.pos;
        let Some(first) = self.peek(0) else {
            return Ok(None);
        };
        let second = self.peek(1);
        let token = match (first, second) {
            (b'\'', _) => {
                self.pos += 1;
                let rules = if self.standard_conforming_strings {
                    QuoteRules::Standard
                } else {
                    QuoteRules::Escaped
                };
                Token::String(self.string_constant(start, rules)?)
            }
            (b'e' | b'E', Some(b'\'')) => {
                self.pos += 2;
                Token::String(self.string_constant(start, QuoteRules::Escaped)?)
            }
            (b'b' | b'B' | b'x' | b'X', Some(b'\'')) => {
                self.pos += 2;
                let digits = self.quoted_body(start, QuoteRules::Bits)?;
                let mut value = String::with_capacity(digits.len() + 1);
                value.push(char::from(first.to_ascii_lowercase()));
                value.push_str(&utf8(digits, start)?);
                Token::BitString(value)
            }
            // National character string: the keyword NCHAR, then the string,
            // which the next call reads under the usual rules.
            (b'n' | b'N', Some(b'\'')) => {
                self.pos += 1;
                Token::Word("nchar".to_owned())
            }
            (b'u' | b'U', Some(b'&')) if matches!(self.peek(2), Some(b'\'' | b'"')) => {
                return self.unicode_literal(start).map(Some);
            }
            (b'"', _) => {
                self.pos += 1;
                let name = self.quoted_identifier_body(start)?;
                Token::QuotedIdentifier(truncate_identifier(utf8(name, start)?))
            }
            (b'$', _) => self.dollar(start)?,
            (b'0'..=b'9', _) => self.number(start)?,
            (b'.', Some(b'0'..=b'9')) => self.number(start)?,
            (b'.', Some(b'.')) => self.symbol(start, 2),
            (b':', Some(b':' | b'=')) => self.symbol(start, 2),
            _ if is_ident_start(first) => self.identifier(start),
            _ if is_op_char(first) => self.operator(start)?,
            _ if is_punctuation(first) => self.symbol(start, 1),
            // Any other ASCII character (a backslash, a brace, a control
            // character) is handed to the grammar as a token of its own,
            // which PostgreSQL then rejects.
            _ => self.symbol(start, 1),
        };
        Ok(Some(Lexeme::Done(SpannedToken {
            token,
            start,
            end: self.pos,
        })))
    }

    fn skip_whitespace_and_comments(&mut self) -> Result<(), LexError> {
        loop {
            match (self.peek(0), self.peek(1)) {
                (Some(b), _) if is_space(b) => self.pos += 1,
                (Some(b'-'), Some(b'-')) => self.pos = line_comment_end(self.bytes, self.pos),
                (Some(b'/'), Some(b'*')) => self.skip_block_comment()?,
                _ => return Ok(()),
            }
        }
    }

    /// Skips a `/* */` comment, which nests: every `/*` inside needs its own
    /// `*/`.
    fn skip_block_comment(&mut self) -> Result<(), LexError> {
        let start = self.pos;
        self.pos += 2;
        let mut depth: usize = 1;
        while depth > 0 {
            match (self.peek(0), self.peek(1)) {
                (None, _) => return Err(LexError::UnterminatedComment { at: start }),
                (Some(b'/'), Some(b'*')) => {
                    depth += 1;
                    self.pos += 2;
                }
                (Some(b'*'), Some(b'/')) => {
                    depth -= 1;
                    self.pos += 2;
                }
                _ => self.pos += 1,
            }
        }
        Ok(())
    }

    fn symbol(&mut self, start: usize, len: usize) -> Token {
        self.pos = start + len;
        Token::Symbol(self.text[start..self.pos].to_owned())
    }

    /// An unquoted identifier or keyword.
    fn identifier(&mut self, start: usize) -> Token {
        self.pos = start + 1;
        while self.peek(0).is_some_and(is_ident_cont) {
            self.pos += 1;
        }
        let folded = self.text[start..self.pos].to_ascii_lowercase();
        Token::Word(truncate_identifier(folded))
    }

    /// An operator: the longest run of operator characters that holds no
    /// `--` or `/*` (those start comments), shorn of trailing `+`/`-`
    /// unless it holds a character SQL's operators never use.
    fn operator(&mut self, start: usize) -> Result<Token, LexError> {
        if start < self.single_char_operators_until {
            return Ok(self.symbol(start, 1));
        }
        // The run never starts with a comment marker (comments were skipped
        // before we got here), so it holds at least one character.
        let mut run_end = start + 1;
        while self.bytes.get(run_end).copied().is_some_and(is_op_char)
            && !starts_comment(&self.bytes[run_end..])
        {
            run_end += 1;
        }
        let run = &self.bytes[start..run_end];
        let mut len = run.len();
        if len > 1
            && matches!(run[len - 1], b'+' | b'-')
            && !run[..len - 1].iter().copied().any(is_non_sql_op_char)
        {
            while len > 1 && matches!(run[len - 1], b'+' | b'-') {
                len -= 1;
            }
            // What was shorn is all `+` and `-`, and PostgreSQL reads each
            // of those as an operator of its own. Saying so here, instead of
            // scanning the rest of the run again for every one of them,
            // keeps a long run of `+` linear.
            self.single_char_operators_until = run_end;
        }
        if len > MAX_IDENTIFIER_BYTES {
            return Err(LexError::OperatorTooLong { at: start });
        }
        Ok(self.symbol(start, len))
    }

    /// A number: decimal with optional fraction and exponent, or an integer
    /// with a `0x`, `0o` or `0b` prefix; digits may be grouped with single
    /// underscores. A number directly followed by an identifier character is
    /// an error, as `123abc` and `0x1Fg` are in PostgreSQL.
    fn number(&mut self, start: usize) -> Result<Token, LexError> {
        self.pos = start;
        let radix = match (self.peek(0), self.peek(1)) {
            (Some(b'0'), Some(b'x' | b'X')) => Some(16),
            (Some(b'0'), Some(b'o' | b'O')) => Some(8),
            (Some(b'0'), Some(b'b' | b'B')) => Some(2),
            _ => None,
        };
        if let Some(radix) = radix {
            self.pos += 2;
            if !self.digits(radix, true) {
                return Err(LexError::InvalidNumber { at: start });
            }
            // Anything that could continue an identifier would make the
            // text read as `0` followed by an identifier: junk.
            if self.peek(0).is_some_and(is_ident_cont) {
                return Err(LexError::TrailingJunkAfterNumber { at: start });
            }
            return Ok(Token::Number(self.text[start..self.pos].to_owned()));
        }
        let has_integer_part = self.digits(10, false);
        if self.peek(0) == Some(b'.') {
            if has_integer_part && self.peek(1) == Some(b'.') {
                // `1..10` is 1, `..`, 10.
                return Ok(Token::Number(self.text[start..self.pos].to_owned()));
            }
            self.pos += 1;
            self.digits(10, false);
        }
        if matches!(self.peek(0), Some(b'e' | b'E')) {
            let mantissa_end = self.pos;
            self.pos += 1;
            if matches!(self.peek(0), Some(b'+' | b'-')) {
                self.pos += 1;
                if !self.digits(10, false) {
                    return Err(LexError::TrailingJunkAfterNumber { at: start });
                }
            } else if !self.digits(10, false) {
                // `1e` alone: the `e` starts an identifier, which is junk.
                self.pos = mantissa_end;
            }
        }
        if self.peek(0).is_some_and(is_ident_start) {
            return Err(LexError::TrailingJunkAfterNumber { at: start });
        }
        Ok(Token::Number(self.text[start..self.pos].to_owned()))
    }

    /// Reads digits of `radix`, each after the first optionally preceded by
    /// one underscore (the first too after a `0x`-style prefix). Returns
    /// whether at least one digit was read; leaves an underscore that no
    /// digit follows unread.
    fn digits(&mut self, radix: u32, underscore_first: bool) -> bool {
        let is_digit = |b: Option<u8>| b.is_some_and(|b| char::from(b).is_digit(radix));
        let mut any = false;
        loop {
            if is_digit(self.peek(0)) {
                self.pos += 1;
            } else if (any || underscore_first)
                && self.peek(0) == Some(b'_')
                && is_digit(self.peek(1))
            {
                self.pos += 2;
            } else {
                return any;
            }
            any = true;
        }
    }

    /// After a `$`: a parameter (`$1`), a dollar-quoted string (`$$...$$`,
    /// `$tag$...$tag$`), or a lone `$`.
    fn dollar(&mut self, start: usize) -> Result<Token, LexError> {
        if self.peek(1).is_some_and(|b| b.is_ascii_digit()) {
            return self.parameter(start);
        }
        let mut tag_end = start + 1;
        if self.peek(1).is_some_and(is_ident_start) {
            while self
                .bytes
                .get(tag_end)
                .copied()
                .is_some_and(is_dollar_tag_cont)
            {
                tag_end += 1;
            }
        }
        if self.bytes.get(tag_end) != Some(&b'$') {
            // `$abc` without a closing `$` is no delimiter: the `$` is a
            // token of its own and `abc` is read next.
            return Ok(self.symbol(start, 1));
        }
        let delimiter = &self.text[start..=tag_end];
        let body_start = tag_end + 1;
        // The body runs to the first occurrence of the same delimiter: no
        // escapes, no nesting, and `;`, quotes and comment markers inside
        // mean nothing.
        let Some(body_len) = self.text[body_start..].find(delimiter) else {
            return Err(LexError::UnterminatedDollarQuote { at: start });
        };
        self.pos = body_start + body_len + delimiter.len();
        Ok(Token::String(
            self.text[body_start..body_start + body_len].to_owned(),
        ))
    }

    fn parameter(&mut self, start: usize) -> Result<Token, LexError> {
        self.pos = start + 1;
        while self.peek(0).is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        if self.peek(0).is_some_and(is_ident_start) {
            return Err(LexError::TrailingJunkAfterParameter { at: start });
        }
        self.text[start + 1..self.pos]
            .parse::<i32>()
            .ok()
            .and_then(|number| u32::try_from(number).ok())
            .map(Token::Parameter)
            .ok_or(LexError::ParameterNumberTooLarge { at: start })
    }

    /// A string constant whose opening quote has been consumed.
    fn string_constant(&mut self, start: usize, rules: QuoteRules) -> Result<String, LexError> {
        let value = self.quoted_body(start, rules)?;
        utf8(value, start)
    }

    /// `U&'...'` or `U&"..."`. Decoding waits for the `UESCAPE` clause that
    /// may follow (see [`resolve_unicode_literals`]).
    fn unicode_literal(&mut self, start: usize) -> Result<Lexeme, LexError> {
        self.pos = start + 3;
        let (kind, body) = if self.bytes[start + 2] == b'\'' {
            if !self.standard_conforming_strings {
                return Err(LexError::UnicodeStringWithoutStandardConformingStrings { at: start });
            }
            (
                UnicodeKind::String,
                self.quoted_body(start, QuoteRules::Standard)?,
            )
        } else {
            (UnicodeKind::Identifier, self.quoted_identifier_body(start)?)
        };
        Ok(Lexeme::Unicode {
            kind,
            body: utf8(body, start)?,
            start,
            end: self.pos,
        })
    }

    /// The value of a `'`-quoted literal whose opening quote (and prefix)
    /// has been consumed, continuation parts included.
    fn quoted_body(&mut self, start: usize, rules: QuoteRules) -> Result<Vec<u8>, LexError> {
        let mut value = Vec::new();
        loop {
            match self.peek(0) {
                None => {
                    return Err(match (rules, self.bytes[start]) {
                        (QuoteRules::Bits, b'b' | b'B') => {
                            LexError::UnterminatedBitString { at: start }
                        }
                        (QuoteRules::Bits, _) => LexError::UnterminatedHexString { at: start },
                        _ => LexError::UnterminatedString { at: start },
                    });
                }
                Some(b'\'') if rules != QuoteRules::Bits && self.peek(1) == Some(b'\'') => {
                    value.push(b'\'');
                    self.pos += 2;
                }
                Some(b'\'') => {
                    self.pos += 1;
                    match continuation_quote(self.bytes, self.pos) {
                        // The literal goes on after the next quote, under
                        // the same rules.
                        Some(resume) => self.pos = resume,
                        None => return Ok(value),
                    }
                }
                Some(b'\\') if rules == QuoteRules::Escaped => self.backslash_escape(&mut value)?,
                Some(b) => {
                    value.push(b);
                    self.pos += 1;
                }
            }
        }
    }

    /// One backslash escape of an `E'...'` string, appended to `value` as
    /// bytes. Octal and hex escapes produce single bytes, whose result must
    /// still be UTF-8 (checked when the string ends).
    fn backslash_escape(&mut self, value: &mut Vec<u8>) -> Result<(), LexError> {
        let at = self.pos;
        let Some(escaped) = self.peek(1) else {
            // A backslash just before the end: the string is unterminated,
            // which the caller reports next.
            value.push(b'\\');
            self.pos += 1;
            return Ok(());
        };
        match escaped {
            b'0'..=b'7' => {
                let digits = self.bytes[at + 1..]
                    .iter()
                    .take(3)
                    .take_while(|b| (b'0'..=b'7').contains(b))
                    .count();
                let code = parse_hex_or_octal(&self.bytes[at + 1..at + 1 + digits], 8);
                // Like PostgreSQL, keep the low byte of `\400`..`\777`.
                value.push((code & 0xff) as u8);
                self.pos = at + 1 + digits;
            }
            b'x' if self.peek(2).is_some_and(|b| b.is_ascii_hexdigit()) => {
                let digits = self.bytes[at + 2..]
                    .iter()
                    .take(2)
                    .take_while(|b| b.is_ascii_hexdigit())
                    .count();
                let code = parse_hex_or_octal(&self.bytes[at + 2..at + 2 + digits], 16);
                value.push((code & 0xff) as u8);
                self.pos = at + 2 + digits;
            }
            b'u' | b'U' => {
                let code = self.unicode_escape()?;
                let code = if is_high_surrogate(code) {
                    // The low half must follow at once, as another escape.
                    let low_at = self.pos;
                    if self.peek(0) != Some(b'\\') || !matches!(self.peek(1), Some(b'u' | b'U')) {
                        return Err(LexError::InvalidUnicodeSurrogatePair { at: low_at });
                    }
                    let low = self.unicode_escape()?;
                    if !is_low_surrogate(low) {
                        return Err(LexError::InvalidUnicodeSurrogatePair { at: low_at });
                    }
                    combine_surrogates(code, low)
                } else if is_low_surrogate(code) {
                    return Err(LexError::InvalidUnicodeSurrogatePair { at });
                } else {
                    code
                };
                push_code_point(value, code, at)?;
            }
            other => {
                value.push(match other {
                    b'b' => b'\x08',
                    b'f' => b'\x0c',
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    // `\'`, `\\`, and any other character stand for
                    // themselves. (PostgreSQL 15 has no `\v`.)
                    _ => other,
                });
                self.pos = at + 2;
            }
        }
        Ok(())
    }

    /// `\uXXXX` or `\UXXXXXXXX` at the current position; fewer hex digits
    /// are an error.
    fn unicode_escape(&mut self) -> Result<u32, LexError> {
        let at = self.pos;
        let width = if self.peek(1) == Some(b'u') { 4 } else { 8 };
        let digits = self.bytes.get(at + 2..at + 2 + width);
        match digits {
            Some(digits) if digits.iter().all(u8::is_ascii_hexdigit) => {
                self.pos = at + 2 + width;
                Ok(parse_hex_or_octal(digits, 16))
            }
            _ => Err(LexError::InvalidUnicodeEscape { at }),
        }
    }

    /// The name inside `"..."` whose opening quote has been consumed, with
    /// `""` unescaped. An empty name is an error.
    fn quoted_identifier_body(&mut self, start: usize) -> Result<Vec<u8>, LexError> {
        let mut name = Vec::new();
        loop {
            match self.peek(0) {
                None => return Err(LexError::UnterminatedQuotedIdentifier { at: start }),
                Some(b'"') if self.peek(1) == Some(b'"') => {
                    name.push(b'"');
                    self.pos += 2;
                }
                Some(b'"') => {
                    self.pos += 1;
                    if name.is_empty() {
                        return Err(LexError::ZeroLengthIdentifier { at: start });
                    }
                    return Ok(name);
                }
                Some(b) => {
                    name.push(b);
                    self.pos += 1;
                }
            }
        }
    }
}

fn starts_comment(bytes: &[u8]) -> bool {
    bytes.starts_with(b"--") || bytes.starts_with(b"/*")
}

/// Where a `--` comment starting at `start` ends: at the next newline, which
/// is left unread, or at the end of the text.
fn line_comment_end(bytes: &[u8], start: usize) -> usize {
    bytes[start..]
        .iter()
        .position(|&b| is_newline(b))
        .map_or(bytes.len(), |len| start + len)
}

/// Whether the string literal whose closing quote ends just before
/// `after_quote` goes on: SQL joins two literals separated by nothing but
/// whitespace and `--` comments if that separation holds a newline (a
/// `/* */` comment does not count). Returns the position just after the
/// next part's opening quote.
fn continuation_quote(bytes: &[u8], after_quote: usize) -> Option<usize> {
    let mut pos = after_quote;
    let mut saw_newline = false;
    loop {
        match (bytes.get(pos).copied(), bytes.get(pos + 1).copied()) {
            (Some(b), _) if is_newline(b) => {
                saw_newline = true;
                pos += 1;
            }
            (Some(b), _) if is_space(b) => pos += 1,
            (Some(b'-'), Some(b'-')) => pos = line_comment_end(bytes, pos),
            (Some(b'\''), _) if saw_newline => return Some(pos + 1),
            _ => return None,
        }
    }
}

/// Decodes every `U&` literal, taking in the `UESCAPE 'c'` clause that may
/// follow it, as PostgreSQL's parser does after lexing.
fn resolve_unicode_literals(lexemes: Vec<Lexeme>) -> Result<Vec<SpannedToken>, LexError> {
    let mut tokens = Vec::with_capacity(lexemes.len());
    let mut lexemes = lexemes.into_iter().peekable();
    while let Some(lexeme) = lexemes.next() {
        let (kind, body, start, mut end) = match lexeme {
            Lexeme::Done(token) => {
                tokens.push(token);
                continue;
            }
            Lexeme::Unicode {
                kind,
                body,
                start,
                end,
            } => (kind, body, start, end),
        };
        let mut escape = b'\\';
        if let Some(Lexeme::Done(next)) = lexemes.peek()
            && is_word(&next.token, "uescape")
        {
            let uescape_at = next.start;
            lexemes.next();
            // Only a plain, E or dollar-quoted string may follow: a `U&`
            // string is still a Lexeme::Unicode here, and `N'...'` starts
            // with the word `nchar`.
            match lexemes.next() {
                Some(Lexeme::Done(SpannedToken {
                    token: Token::String(chosen),
                    start: chosen_at,
                    end: chosen_end,
                })) => {
                    escape = valid_escape_character(&chosen)
                        .ok_or(LexError::InvalidUescapeCharacter { at: chosen_at })?;
                    end = chosen_end;
                }
                _ => return Err(LexError::UescapeWithoutString { at: uescape_at }),
            }
        }
        let decoded = decode_unicode_escapes(&body, escape, start)?;
        let token = match kind {
            UnicodeKind::String => Token::String(decoded),
            UnicodeKind::Identifier => Token::QuotedIdentifier(truncate_identifier(decoded)),
        };
        tokens.push(SpannedToken { token, start, end });
    }
    Ok(tokens)
}

/// The escape character a `UESCAPE` string names, if it is allowed: one
/// byte, and not a hex digit, `+`, a quote or whitespace.
fn valid_escape_character(chosen: &str) -> Option<u8> {
    match chosen.as_bytes() {
        &[c] if !(c.is_ascii_hexdigit() || c == b'+' || c == b'\'' || c == b'"' || is_space(c)) => {
            Some(c)
        }
        _ => None,
    }
}

/// Decodes the escapes of a `U&` literal's body: `cXXXX` and `c+XXXXXX`
/// (hex code points; UTF-16 surrogate pairs combine) and `cc` for `c`
/// itself, where `c` is the escape character.
fn decode_unicode_escapes(body: &str, escape: u8, at: usize) -> Result<String, LexError> {
    let bytes = body.as_bytes();
    let mut decoded = String::with_capacity(body.len());
    let mut pending_high: Option<u32> = None;
    let mut pos = 0;
    let pair_error = LexError::InvalidUnicodeSurrogatePair { at };
    while pos < bytes.len() {
        if bytes[pos] != escape {
            if pending_high.is_some() {
                return Err(pair_error);
            }
            // `escape` is ASCII, so `pos` is always at a character boundary.
            let Some(c) = body[pos..].chars().next() else {
                break;
            };
            decoded.push(c);
            pos += c.len_utf8();
            continue;
        }
        let hex = |from: usize, width: usize| {
            bytes
                .get(from..from + width)
                .filter(|digits| digits.iter().all(u8::is_ascii_hexdigit))
                .map(|digits| parse_hex_or_octal(digits, 16))
        };
        let code = if bytes.get(pos + 1) == Some(&escape) {
            if pending_high.is_some() {
                return Err(pair_error);
            }
            decoded.push(char::from(escape));
            pos += 2;
            continue;
        } else if let Some(code) = hex(pos + 1, 4) {
            pos += 5;
            code
        } else if bytes.get(pos + 1) == Some(&b'+')
            && let Some(code) = hex(pos + 2, 6)
        {
            pos += 8;
            code
        } else if pending_high.is_some() {
            return Err(pair_error);
        } else {
            return Err(LexError::InvalidUnicodeEscape { at });
        };
        if !is_valid_code_point(code) {
            return Err(LexError::InvalidUnicodeEscapeValue { at });
        }
        match pending_high.take() {
            Some(high) if is_low_surrogate(code) => {
                push_char(&mut decoded, combine_surrogates(high, code), at)?;
            }
            Some(_) => return Err(pair_error),
            None if is_low_surrogate(code) => return Err(pair_error),
            None if is_high_surrogate(code) => pending_high = Some(code),
            None => push_char(&mut decoded, code, at)?,
        }
    }
    if pending_high.is_some() {
        return Err(pair_error);
    }
    Ok(decoded)
}

fn parse_hex_or_octal(digits: &[u8], radix: u32) -> u32 {
    digits.iter().fold(0u32, |value, &digit| {
        value
            .wrapping_mul(radix)
            .wrapping_add(char::from(digit).to_digit(radix).unwrap_or(0))
    })
}

/// A code point an escape may name: PostgreSQL refuses 0 as well as
/// anything beyond Unicode.
fn is_valid_code_point(code: u32) -> bool {
    (1..=0x10ffff).contains(&code)
}

fn is_high_surrogate(code: u32) -> bool {
    (0xd800..=0xdbff).contains(&code)
}

fn is_low_surrogate(code: u32) -> bool {
    (0xdc00..=0xdfff).contains(&code)
}

fn combine_surrogates(high: u32, low: u32) -> u32 {
    0x10000 + ((high - 0xd800) << 10) + (low - 0xdc00)
}

fn push_code_point(value: &mut Vec<u8>, code: u32, at: usize) -> Result<(), LexError> {
    if !is_valid_code_point(code) {
        return Err(LexError::InvalidUnicodeEscapeValue { at });
    }
    let c = char::from_u32(code).ok_or(LexError::InvalidUnicodeEscapeValue { at })?;
    value.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
    Ok(())
}

fn push_char(decoded: &mut String, code: u32, at: usize) -> Result<(), LexError> {
    decoded.push(char::from_u32(code).ok_or(LexError::InvalidUnicodeEscapeValue { at })?);
    Ok(())
}

/// A literal's bytes as text. Only escapes can make them invalid UTF-8 or
/// put a NUL in them, and the server rejects both.
fn utf8(bytes: Vec<u8>, at: usize) -> Result<String, LexError> {
    if bytes.contains(&0) {
        return Err(LexError::InvalidByteSequence { at });
    }
    String::from_utf8(bytes).map_err(|_| LexError::InvalidByteSequence { at })
}

/// Cuts an identifier to [`MAX_IDENTIFIER_BYTES`] at a character boundary,
/// as PostgreSQL does (with a NOTICE) for every identifier, quoted or not.
fn truncate_identifier(mut name: String) -> String {
    if name.len() > MAX_IDENTIFIER_BYTES {
        let mut cut = MAX_IDENTIFIER_BYTES;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    name
}

impl fmt::Display for Token {
    /// The token as a reader would recognise it (not necessarily as
    /// written: values are shown decoded).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Word(word) => f.write_str(word),
            Token::QuotedIdentifier(name) => write!(f, "\"{}\"", name.replace('"', "\"\"")),
            Token::String(value) => write!(f, "'{}'", value.replace('\'', "''")),
            Token::BitString(value) => {
                let (kind, digits) = value.split_at(value.len().min(1));
                write!(f, "{kind}'{digits}'")
            }
            Token::Number(number) => f.write_str(number),
            Token::Parameter(number) => write!(f, "${number}"),
            Token::Symbol(symbol) => f.write_str(symbol),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(sql: &str) -> Vec<&str> {
        texts_with(sql, true)
    }

    fn texts_with(sql: &str, standard_conforming_strings: bool) -> Vec<&str> {
        match split(sql, standard_conforming_strings) {
            Ok(pieces) => pieces.into_iter().map(|piece| piece.text).collect(),
            Err(error) => panic!("{sql:?} should split, got {error}"),
        }
    }

    fn lex(sql: &str) -> Vec<Token> {
        match tokens(sql, true) {
            Ok(tokens) => tokens,
            Err(error) => panic!("{sql:?} should lex, got {error}"),
        }
    }

    fn lex_error(sql: &str) -> LexError {
        match tokens(sql, true) {
            Ok(tokens) => panic!("{sql:?} should not lex, got {tokens:?}"),
            Err(error) => error,
        }
    }

    fn word(w: &str) -> Token {
        Token::Word(w.to_owned())
    }

    fn string(s: &str) -> Token {
        Token::String(s.to_owned())
    }

    fn symbol(s: &str) -> Token {
        Token::Symbol(s.to_owned())
    }

    fn number(n: &str) -> Token {
        Token::Number(n.to_owned())
    }

    fn quoted(name: &str) -> Token {
        Token::QuotedIdentifier(name.to_owned())
    }

    /// The value of the single string constant `literal`.
    fn string_value(literal: &str) -> String {
        match lex(literal).as_slice() {
            [Token::String(value)] => value.clone(),
            other => panic!("{literal:?} should be one string, got {other:?}"),
        }
    }

    // --- splitting -------------------------------------------------------

    #[test]
    fn semicolons_split_statements() {
        let pieces = split("SELECT 1; DELETE FROM t", true).unwrap();
        assert_eq!(
            pieces,
            [
                Piece {
                    text: "SELECT 1",
                    offset: 0
                },
                Piece {
                    text: "DELETE FROM t",
                    offset: 10
                },
            ]
        );
    }

    #[test]
    fn pieces_are_trimmed_and_offsets_point_into_the_text() {
        let sql = "  SELECT 1  ;\n\tSELECT 2\n";
        let pieces = split(sql, true).unwrap();
        assert_eq!(pieces.len(), 2);
        for piece in &pieces {
            assert_eq!(
                &sql[piece.offset..piece.offset + piece.text.len()],
                piece.text
            );
        }
        assert_eq!(
            pieces[0],
            Piece {
                text: "SELECT 1",
                offset: 2
            }
        );
        assert_eq!(
            pieces[1],
            Piece {
                text: "SELECT 2",
                offset: 15
            }
        );
    }

    #[test]
    fn empty_and_comment_only_pieces_are_dropped() {
        assert!(texts("").is_empty());
        assert!(texts(";;").is_empty());
        assert!(texts("  ;\n ; -- nothing\n ; /* ; */ ").is_empty());
        assert_eq!(texts("/* c */ ; SELECT 1 -- tail"), ["SELECT 1 -- tail"]);
    }

    #[test]
    fn leading_comments_stay_with_their_statement() {
        assert_eq!(texts("/* ; */ SELECT 1"), ["/* ; */ SELECT 1"]);
        assert_eq!(
            texts("-- hi ;\nSELECT 1; -- a\nSELECT 2"),
            ["-- hi ;\nSELECT 1", "-- a\nSELECT 2"]
        );
    }

    #[test]
    fn semicolons_in_strings_identifiers_and_comments_do_not_split() {
        assert_eq!(texts("SELECT '--'; DROP x"), ["SELECT '--'", "DROP x"]);
        assert_eq!(texts("SELECT ';'''; DROP x"), ["SELECT ';'''", "DROP x"]);
        assert_eq!(texts("SELECT \"a;b\""), ["SELECT \"a;b\""]);
        assert_eq!(texts("SELECT \"a\"\";b\"; x"), ["SELECT \"a\"\";b\"", "x"]);
        assert_eq!(
            texts("SELECT 1 /* /* ; */ ; */"),
            ["SELECT 1 /* /* ; */ ; */"]
        );
        assert_eq!(texts("SELECT 1 -- ; DROP x"), ["SELECT 1 -- ; DROP x"]);
        assert_eq!(
            texts("SELECT 1 -- ;\r; DROP x"),
            ["SELECT 1 -- ;", "DROP x"]
        );
    }

    #[test]
    fn semicolons_in_dollar_quotes_do_not_split() {
        assert_eq!(texts("SELECT $$;$$; DROP x"), ["SELECT $$;$$", "DROP x"]);
        assert_eq!(texts("SELECT $a$ $$ ; $a$"), ["SELECT $a$ $$ ; $a$"]);
        assert_eq!(
            texts("SELECT $a$ ' \" -- /* ; $a$; x"),
            ["SELECT $a$ ' \" -- /* ; $a$", "x"]
        );
        assert_eq!(lex("$a$ $b$ ; $b$ $a$"), [string(" $b$ ; $b$ ")]);
    }

    #[test]
    fn semicolons_inside_parentheses_still_split() {
        // PostgreSQL rejects such a string whole, so splitting is safe.
        assert_eq!(texts("SELECT (1; DROP x)"), ["SELECT (1", "DROP x)"]);
    }

    #[test]
    fn backslash_quote_ends_or_continues_an_escape_string() {
        // E'\\' is one backslash; the string ends; what follows is an
        // unterminated string, so the whole text is refused.
        assert_eq!(
            split(r"SELECT E'\\';' ; DROP x", true),
            Err(LexError::UnterminatedString { at: 13 })
        );
        // E'\';' is the two characters `';`.
        assert_eq!(
            texts(r"SELECT E'\';' ; DROP x"),
            [r"SELECT E'\';'", "DROP x"]
        );
        assert_eq!(lex(r"E'\';'"), [string("';")]);
    }

    #[test]
    fn standard_conforming_strings_off_makes_backslash_escape_quotes() {
        let sql = r"SELECT 'a\';DROP x;--'";
        assert_eq!(texts_with(sql, false), [sql]);
        assert_eq!(tokens(r"'a\'b'", false).unwrap(), [string("a'b")]);
        // With the setting on, the backslash is an ordinary character, and
        // the last piece is a comment only.
        assert_eq!(texts_with(sql, true), [r"SELECT 'a\'", "DROP x"]);
    }

    #[test]
    fn dollar_inside_an_identifier_is_not_a_quote() {
        assert_eq!(
            texts("SELECT a$b$c FROM t; x"),
            ["SELECT a$b$c FROM t", "x"]
        );
        assert_eq!(
            lex("a$b$c x$1$ _$$"),
            [word("a$b$c"), word("x$1$"), word("_$$")]
        );
    }

    #[test]
    fn begin_atomic_bodies_are_refused() {
        let sql =
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END";
        assert!(matches!(
            split(sql, true),
            Err(LexError::BeginAtomic { .. })
        ));
        assert!(matches!(
            split("begin /* */ Atomic", true),
            Err(LexError::BeginAtomic { .. })
        ));
        // A transaction BEGIN, a quoted name or a split between them is fine.
        assert_eq!(texts("BEGIN; ATOMIC"), ["BEGIN", "ATOMIC"]);
        assert_eq!(
            texts("SELECT \"begin\" atomic FROM t"),
            ["SELECT \"begin\" atomic FROM t"]
        );
        assert_eq!(
            texts("BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT 1"),
            ["BEGIN ISOLATION LEVEL SERIALIZABLE", "SELECT 1"]
        );
    }

    #[test]
    fn non_ascii_text_splits_like_ascii() {
        assert_eq!(
            texts("SELECT 'ä;ö' AS \"名前;\"; SELECT ñ"),
            ["SELECT 'ä;ö' AS \"名前;\"", "SELECT ñ"]
        );
    }

    #[test]
    fn unterminated_constructs_are_errors() {
        assert_eq!(
            lex_error("SELECT 'abc"),
            LexError::UnterminatedString { at: 7 }
        );
        assert_eq!(
            lex_error(r"SELECT E'abc\'"),
            LexError::UnterminatedString { at: 7 }
        );
        assert_eq!(
            lex_error("SELECT E'abc\\"),
            LexError::UnterminatedString { at: 7 }
        );
        assert_eq!(
            lex_error("SELECT U&'abc"),
            LexError::UnterminatedString { at: 7 }
        );
        assert_eq!(
            lex_error("SELECT \"abc"),
            LexError::UnterminatedQuotedIdentifier { at: 7 }
        );
        assert_eq!(
            lex_error("SELECT U&\"abc"),
            LexError::UnterminatedQuotedIdentifier { at: 7 }
        );
        assert_eq!(
            lex_error("SELECT $$abc"),
            LexError::UnterminatedDollarQuote { at: 7 }
        );
        assert_eq!(
            lex_error("SELECT $a$abc$b$"),
            LexError::UnterminatedDollarQuote { at: 7 }
        );
        assert_eq!(
            lex_error("SELECT $a$abc$A$"),
            LexError::UnterminatedDollarQuote { at: 7 }
        );
        assert_eq!(
            lex_error("SELECT /* /* */"),
            LexError::UnterminatedComment { at: 7 }
        );
        assert_eq!(
            lex_error("SELECT B'01"),
            LexError::UnterminatedBitString { at: 7 }
        );
        assert_eq!(
            lex_error("SELECT x'ff"),
            LexError::UnterminatedHexString { at: 7 }
        );
        assert!(split("SELECT 1; SELECT 'oops", true).is_err());
    }

    // --- comments --------------------------------------------------------

    #[test]
    fn block_comments_nest() {
        assert_eq!(lex("1 /* a /* b */ c */ 2"), [number("1"), number("2")]);
        assert_eq!(
            lex("1 /**/ 2 /***/ 3 /*/ */ 4"),
            [number("1"), number("2"), number("3"), number("4")]
        );
        assert_eq!(
            lex_error("/* /* */"),
            LexError::UnterminatedComment { at: 0 }
        );
    }

    #[test]
    fn line_comments_end_at_either_newline() {
        assert_eq!(
            lex("1 -- x\n2 -- y\r3 --"),
            [number("1"), number("2"), number("3")]
        );
    }

    #[test]
    fn operators_stop_before_comments() {
        assert_eq!(lex("2 +-- c\n1"), [number("2"), symbol("+"), number("1")]);
        assert_eq!(lex("2 */* c */ 3"), [number("2"), symbol("*"), number("3")]);
        assert_eq!(lex("a <@/* c */b"), [word("a"), symbol("<@"), word("b")]);
    }

    // --- operators and punctuation ---------------------------------------

    #[test]
    fn operators_follow_postgres_rules() {
        assert_eq!(
            lex("a+-b"),
            [word("a"), symbol("+"), symbol("-"), word("b")]
        );
        assert_eq!(
            lex("3 <=-1"),
            [number("3"), symbol("<="), symbol("-"), number("1")]
        );
        assert_eq!(lex("a @- b"), [word("a"), symbol("@-"), word("b")]);
        assert_eq!(lex("j->>'k'"), [word("j"), symbol("->>"), string("k")]);
        assert_eq!(
            lex("a != b <> c"),
            [word("a"), symbol("!="), word("b"), symbol("<>"), word("c")]
        );
        assert_eq!(lex("x::int"), [word("x"), symbol("::"), word("int")]);
        assert_eq!(lex("x := 1"), [word("x"), symbol(":="), number("1")]);
        assert_eq!(
            lex("a[1:2]"),
            [
                word("a"),
                symbol("["),
                number("1"),
                symbol(":"),
                number("2"),
                symbol("]")
            ]
        );
        assert_eq!(lex("1..2"), [number("1"), symbol(".."), number("2")]);
        assert_eq!(lex("s.t"), [word("s"), symbol("."), word("t")]);
        assert_eq!(
            lex("f(a, b);"),
            [
                word("f"),
                symbol("("),
                word("a"),
                symbol(","),
                word("b"),
                symbol(")"),
                symbol(";")
            ]
        );
    }

    #[test]
    fn long_operator_runs() {
        assert_eq!(lex(&"@".repeat(63)), [symbol(&"@".repeat(63))]);
        assert_eq!(
            lex_error(&"@".repeat(64)),
            LexError::OperatorTooLong { at: 0 }
        );
        // A run of `+` is that many one-character operators.
        assert_eq!(lex("+++"), [symbol("+"), symbol("+"), symbol("+")]);
        assert_eq!(lex("=+-"), [symbol("="), symbol("+"), symbol("-")]);
    }

    #[test]
    fn other_characters_are_single_symbols() {
        assert_eq!(
            lex(r"\ { } $"),
            [symbol("\\"), symbol("{"), symbol("}"), symbol("$")]
        );
        assert_eq!(lex("\x01"), [symbol("\x01")]);
    }

    // --- identifiers -----------------------------------------------------

    #[test]
    fn unquoted_identifiers_fold_ascii_only() {
        assert_eq!(
            lex("SELECT FooBar, ÄBC"),
            [word("select"), word("foobar"), symbol(","), word("Äbc")]
        );
    }

    #[test]
    fn quoted_identifiers_keep_case_and_unescape_quotes() {
        assert_eq!(
            lex("\"FooBar\" \"a\"\"b\" \"a;b\""),
            [quoted("FooBar"), quoted("a\"b"), quoted("a;b")]
        );
        assert_eq!(
            lex_error("SELECT \"\""),
            LexError::ZeroLengthIdentifier { at: 7 }
        );
        assert_eq!(
            lex_error("U&\"\""),
            LexError::ZeroLengthIdentifier { at: 0 }
        );
    }

    #[test]
    fn identifiers_are_truncated_to_63_bytes() {
        let long = "a".repeat(70);
        let kept = "a".repeat(63);
        assert_eq!(lex(&long), [word(&kept)]);
        assert_eq!(lex(&format!("\"{long}\"")), [quoted(&kept)]);
        // Cut at a character boundary: 31 two-byte letters, not 31.5.
        assert_eq!(lex(&"Ä".repeat(40)), [word(&"Ä".repeat(31))]);
    }

    #[test]
    fn unicode_spaces_are_identifier_characters() {
        // PostgreSQL reads every non-ASCII byte as part of an identifier.
        assert_eq!(lex("SELECT\u{a0}1"), [word("select\u{a0}1")]);
        assert_eq!(
            first_keyword("SELECT\u{2003}* FROM t", true).as_deref(),
            Some("select\u{2003}")
        );
        assert_eq!(trim_whitespace("\u{a0} x \n"), "\u{a0} x");
    }

    #[test]
    fn vertical_tab_is_whitespace() {
        assert_eq!(lex("SELECT\x0b1"), [word("select"), number("1")]);
    }

    // --- string constants ------------------------------------------------

    #[test]
    fn plain_strings_double_quotes() {
        assert_eq!(string_value("'it''s'"), "it's");
        assert_eq!(string_value(r"'a\n'"), r"a\n");
        assert_eq!(string_value("''"), "");
    }

    #[test]
    fn adjacent_strings_join_only_across_a_newline() {
        assert_eq!(string_value("'a'\n'b'"), "ab");
        assert_eq!(string_value("'a'\r'b'"), "ab");
        assert_eq!(string_value("'a' -- c\n  'b'"), "ab");
        assert_eq!(string_value("'a'\n-- c\n'b'\n\t'c'"), "abc");
        assert_eq!(lex("'a' 'b'"), [string("a"), string("b")]);
        assert_eq!(lex("'a' /* c */\n'b'"), [string("a"), string("b")]);
        assert_eq!(lex("$$a$$\n'b'"), [string("a"), string("b")]);
        assert_eq!(lex("B'1'\n'0'"), [Token::BitString("b10".to_owned())]);
    }

    #[test]
    fn continued_strings_keep_their_escaping_rules() {
        // The second part of E'x' is escaped too, so `\'` does not end it
        // and the whole rest of the text is one string.
        let sql = "SELECT E'x'\n'\\'; DROP t; --'";
        assert_eq!(texts(sql), [sql]);
        assert_eq!(string_value("E'x'\n'\\''"), "x'");
        assert_eq!(lex("'a'\n'\\'"), [string("a\\")]);
    }

    #[test]
    fn escape_strings_decode_backslash_escapes() {
        assert_eq!(string_value(r"E'\b\f\n\r\t'"), "\x08\x0c\n\r\t");
        assert_eq!(string_value(r"e'\x41\101\u0041\U00000041'"), "AAAA");
        assert_eq!(string_value(r"E'\\ \' '' \q \v \xZ'"), "\\ ' ' q v xZ");
        assert_eq!(string_value(r"E'\303\251'"), "é");
        assert_eq!(string_value(r"E'\uD83D\uDE00'"), "😀");
        assert_eq!(string_value(r"E'\x414'"), "A4");
        assert_eq!(string_value(r"E'\u00411'"), "A1");
        assert_eq!(string_value("E'\\\n'"), "\n");
    }

    #[test]
    fn bad_escapes_are_errors() {
        assert_eq!(lex_error(r"E'\0'"), LexError::InvalidByteSequence { at: 0 });
        assert_eq!(
            lex_error(r"E'\400'"),
            LexError::InvalidByteSequence { at: 0 }
        );
        assert_eq!(
            lex_error(r"E'\377'"),
            LexError::InvalidByteSequence { at: 0 }
        );
        assert_eq!(
            lex_error(r"E'\u'"),
            LexError::InvalidUnicodeEscape { at: 2 }
        );
        assert_eq!(
            lex_error(r"E'\u12'"),
            LexError::InvalidUnicodeEscape { at: 2 }
        );
        assert_eq!(
            lex_error(r"E'\U0001F60'"),
            LexError::InvalidUnicodeEscape { at: 2 }
        );
        assert_eq!(
            lex_error(r"E'\u0000'"),
            LexError::InvalidUnicodeEscapeValue { at: 2 }
        );
        assert_eq!(
            lex_error(r"E'\U00110000'"),
            LexError::InvalidUnicodeEscapeValue { at: 2 }
        );
        assert_eq!(
            lex_error(r"E'\uD800'"),
            LexError::InvalidUnicodeSurrogatePair { at: 8 }
        );
        assert_eq!(
            lex_error(r"E'\uD800x'"),
            LexError::InvalidUnicodeSurrogatePair { at: 8 }
        );
        assert_eq!(
            lex_error(r"E'\uD800\u0041'"),
            LexError::InvalidUnicodeSurrogatePair { at: 8 }
        );
        assert_eq!(
            lex_error(r"E'\uDC00'"),
            LexError::InvalidUnicodeSurrogatePair { at: 2 }
        );
    }

    #[test]
    fn unicode_strings_decode_escapes() {
        assert_eq!(string_value(r"U&'\0041'"), "A");
        assert_eq!(string_value(r"u&'d\0061t\+000061'"), "data");
        assert_eq!(string_value(r"U&'\\'"), "\\");
        assert_eq!(string_value(r"U&'\+01F600 \D83D\DE00'"), "😀 😀");
        assert_eq!(string_value("U&'a''b'"), "a'b");
        assert_eq!(lex(r#"U&"\0061""#), [quoted("a")]);
    }

    #[test]
    fn uescape_chooses_the_escape_character() {
        let tokens = spanned_tokens("U&'!0041' UESCAPE '!' x", true).unwrap();
        assert_eq!(
            tokens[0],
            SpannedToken {
                token: string("A"),
                start: 0,
                end: 21
            }
        );
        assert_eq!(tokens[1].token, word("x"));
        assert_eq!(string_value("U&'!0041\\' uescape E'!'"), "A\\");
        assert_eq!(string_value("U&'!!' UESCAPE $$!$$"), "!");
        assert_eq!(lex(r#"U&"!0061" UESCAPE '!'"#), [quoted("a")]);
    }

    #[test]
    fn bad_unicode_literals_are_errors() {
        assert_eq!(
            lex_error(r"U&'\0000'"),
            LexError::InvalidUnicodeEscapeValue { at: 0 }
        );
        assert_eq!(
            lex_error(r"U&'\12'"),
            LexError::InvalidUnicodeEscape { at: 0 }
        );
        assert_eq!(
            lex_error(r"U&'\D83D'"),
            LexError::InvalidUnicodeSurrogatePair { at: 0 }
        );
        assert_eq!(
            lex_error(r"U&'\DE00\D83D'"),
            LexError::InvalidUnicodeSurrogatePair { at: 0 }
        );
        assert_eq!(
            lex_error(r"U&'\D83Dx'"),
            LexError::InvalidUnicodeSurrogatePair { at: 0 }
        );
        for bad in ["'a'", "'+'", "' '", "'ab'", "''", "'\"'", "''''"] {
            assert_eq!(
                lex_error(&format!("U&'x' UESCAPE {bad}")),
                LexError::InvalidUescapeCharacter { at: 14 },
                "{bad}"
            );
        }
        for bad in ["", "N'!'", "U&'!'", "x", "B'1'"] {
            assert_eq!(
                lex_error(&format!("U&'x' UESCAPE {bad}")),
                LexError::UescapeWithoutString { at: 6 },
                "{bad}"
            );
        }
    }

    #[test]
    fn unicode_strings_need_standard_conforming_strings() {
        assert_eq!(
            tokens("SELECT U&'a'", false),
            Err(LexError::UnicodeStringWithoutStandardConformingStrings { at: 7 })
        );
        assert_eq!(
            tokens("SELECT U&\"a\"", false).unwrap(),
            [word("select"), quoted("a")]
        );
    }

    #[test]
    fn u_ampersand_needs_an_adjacent_quote() {
        assert_eq!(lex("U & 'x'"), [word("u"), symbol("&"), string("x")]);
        assert_eq!(lex("U&x"), [word("u"), symbol("&"), word("x")]);
        assert_eq!(lex("au&'x'"), [word("au"), symbol("&"), string("x")]);
    }

    #[test]
    fn prefixed_strings() {
        assert_eq!(
            lex("B'0101' X'1F'"),
            [
                Token::BitString("b0101".to_owned()),
                Token::BitString("x1F".to_owned())
            ]
        );
        // Bit strings have no '' escape: the second quote starts a string.
        assert_eq!(
            lex("B'1''0'"),
            [Token::BitString("b1".to_owned()), string("0")]
        );
        assert_eq!(lex("N'x'"), [word("nchar"), string("x")]);
        assert_eq!(
            tokens(r"n'a\'b'", false).unwrap(),
            [word("nchar"), string("a'b")]
        );
        // The prefix letter only counts at the start of a token.
        assert_eq!(lex("be'x'"), [word("be"), string("x")]);
    }

    #[test]
    fn dollar_quotes() {
        assert_eq!(lex("$$a'b$$"), [string("a'b")]);
        assert_eq!(lex("$tag_1$x$tag$y$tag_1$"), [string("x$tag$y")]);
        assert_eq!(lex("$ä$b$ä$"), [string("b")]);
        assert_eq!(lex("$_$-- x$_$"), [string("-- x")]);
        assert_eq!(lex("$a$x$A$y$a$"), [string("x$A$y")]);
        // Not delimiters: a tag needs its closing `$`, and may not start
        // with a digit.
        assert_eq!(lex("$abc def$"), [symbol("$"), word("abc"), word("def$")]);
        assert_eq!(lex("$1$"), [Token::Parameter(1), symbol("$")]);
    }

    // --- numbers and parameters ------------------------------------------

    #[test]
    fn numbers() {
        for n in [
            "42", "1.5", ".5", "1.", "1e10", "1.5E-3", "2e+2", "1_000", "0x1F", "0X_ff", "0o17",
            "0b101",
        ] {
            assert_eq!(lex(n), [number(n)], "{n}");
        }
        assert_eq!(lex("1.5.6"), [number("1.5"), number(".6")]);
    }

    #[test]
    fn numbers_with_trailing_junk_are_errors() {
        for junk in [
            "1abc", "1e", "1e+", "1.5abc", "1_", "1__0", "0x1Fg", "0b12", "1.5e3x", "0x1F$",
        ] {
            assert!(
                matches!(
                    lex_error(junk),
                    LexError::TrailingJunkAfterNumber { at: 0 } | LexError::InvalidNumber { at: 0 }
                ),
                "{junk}"
            );
        }
        assert_eq!(lex_error("0x"), LexError::InvalidNumber { at: 0 });
    }

    #[test]
    fn parameters() {
        assert_eq!(
            lex("$1 + $22"),
            [Token::Parameter(1), symbol("+"), Token::Parameter(22)]
        );
        assert_eq!(lex("$0"), [Token::Parameter(0)]);
        assert_eq!(lex("$2147483647"), [Token::Parameter(2_147_483_647)]);
        assert_eq!(
            lex_error("$2147483648"),
            LexError::ParameterNumberTooLarge { at: 0 }
        );
        // PostgreSQL 15 reads this as $1; refuse it.
        assert_eq!(
            lex_error("$4294967297"),
            LexError::ParameterNumberTooLarge { at: 0 }
        );
        assert_eq!(
            lex_error("$1abc"),
            LexError::TrailingJunkAfterParameter { at: 0 }
        );
        assert_eq!(
            lex_error("$1_000"),
            LexError::TrailingJunkAfterParameter { at: 0 }
        );
    }

    // --- first_keyword and hostile input ---------------------------------

    #[test]
    fn first_keyword_skips_comments_and_folds_case() {
        assert_eq!(
            first_keyword("  -- c\n /* x */ SeLeCt 1", true).as_deref(),
            Some("select")
        );
        assert_eq!(first_keyword("DROP TABLE x", true).as_deref(), Some("drop"));
        assert_eq!(first_keyword("(SELECT 1)", true), None);
        assert_eq!(first_keyword("", true), None);
        assert_eq!(first_keyword("-- only a comment", true), None);
        assert_eq!(first_keyword("'x'", true), None);
        assert_eq!(first_keyword("\"select\" 1", true), None);
        assert_eq!(first_keyword("SELECT 'unterminated", true), None);
    }

    #[test]
    fn nul_characters_are_refused() {
        assert_eq!(lex_error("SELECT '\0'"), LexError::NulCharacter { at: 8 });
        assert_eq!(
            split("SELECT 1; -- \0", true),
            Err(LexError::NulCharacter { at: 13 })
        );
    }

    #[test]
    fn errors_explain_themselves() {
        assert_eq!(
            LexError::UnterminatedDollarQuote { at: 7 }.to_string(),
            "unterminated dollar-quoted string starting at byte 7"
        );
    }

    #[test]
    fn tokens_display_as_sql() {
        let shown: Vec<String> = lex(r#"a "B""c" 'it''s' B'01' 1.5 $2 <>"#)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            shown,
            ["a", "\"B\"\"c\"", "'it''s'", "b'01'", "1.5", "$2", "<>"]
        );
    }

    #[test]
    fn hostile_input_is_linear_and_never_recurses() {
        let size = 200_000;
        let nested = format!("{}{}", "/*".repeat(size), "*/".repeat(size));
        assert!(texts(&nested).is_empty());
        assert_eq!(lex(&"+".repeat(size)).len(), size);
        assert_eq!(lex(&"+/**/".repeat(size)).len(), size);
        assert_eq!(lex(&"'a'\n".repeat(size)), [string(&"a".repeat(size))]);
        assert_eq!(split(&"$a".repeat(size), true).unwrap().len(), 1);
        assert!(tokens(&format!("$a${}", "$b".repeat(size)), true).is_err());
        assert_eq!(split(&";".repeat(size), true).unwrap().len(), 0);
        assert_eq!(lex(&"'' ".repeat(size)).len(), size);
        assert_eq!(
            lex(&format!("E'{}'", "\\\\".repeat(size))),
            [string(&"\\".repeat(size))]
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz: every short string over an alphabet
        // of the characters that matter to the lexer.
        let alphabet = [
            "'", "\"", "$", "\\", "-", "/", "*", ";", "\n", "E", "U", "&", "a", "1", "ä", " ", "+",
            ".",
        ];
        let mut cases = vec![String::new()];
        for _ in 0..4 {
            cases = cases
                .iter()
                .flat_map(|prefix| alphabet.iter().map(move |c| format!("{prefix}{c}")))
                .collect();
            for case in &cases {
                for standard in [true, false] {
                    let _ = split(case, standard);
                    let _ = first_keyword(case, standard);
                    if let Ok(spanned) = spanned_tokens(case, standard) {
                        for token in spanned {
                            assert!(
                                token.start < token.end && token.end <= case.len(),
                                "{case:?}"
                            );
                        }
                    }
                }
            }
        }
    }
}
