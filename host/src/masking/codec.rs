//! Column values as text for the masking plugins, and back.
//!
//! Masking plugins read every value as text: a card number is a run of
//! digits, whatever the column's type. A DataRow value comes in the text or
//! binary wire format of its column's type, so a [`Codec`] per column
//! *explodes* each value into text *pieces* for the plugins and, after their
//! edits, *reassembles* the value from the edited pieces in the wire format
//! it came in.
//!
//! - In text format a value already is the text PostgreSQL shows, and is its
//!   own one piece. Hex bytea is the exception: the piece is the bytes the
//!   hex encodes, which is where a card number would be.
//! - In binary format a value is decoded to the text a text-format result
//!   would show, as far as needed to find card numbers: text types are their
//!   own text, numbers are written in decimal, and arrays and records are
//!   taken apart into a piece per element or field. Types that cannot show
//!   a card number as text (booleans, dates, network addresses…) are not
//!   decoded and never sent. Types sluice cannot read (ranges, multiranges,
//!   extensions' base types…) fail the value, so the host refuses the
//!   statement rather than let a value through unread.
//! - A user-defined type's OID alone says nothing of its binary form, so
//!   the host looks such types up in the database's `pg_type` and hands
//!   the codec what it learned as [`UserTypes`]: a domain is read as its
//!   base type in either format (a domain over int8 has number pieces in
//!   text format too), an enum as its label's text, a composite as a
//!   `record`, and a user-defined array type as an array of its element.
//!   A user-defined type the host has not looked up, or one of another kind
//!   (a range, an extension's base type…), stays undecodable and fails the
//!   value as above; so does a built-in type the tables here do not know,
//!   whatever the catalog says of it.
//! - Numbers stay numbers. The host never puts a plugin's replacement into a
//!   number piece: it writes `0` over the digits an edit covers
//!   ([`zero_digits`]), so the text keeps its shape and reads back as a
//!   number of the column's type.
//!
//! Every length and count in a value is hostile input: each is checked
//! against the bytes that remain before it is used, and nothing is
//! allocated by a count a value gives. A value whose pieces come back
//! unchanged is rebuilt byte for byte as it came, even where decoding and
//! encoding again would write it differently (a numeric not in canonical
//! form, uppercase hex).

use std::collections::HashMap;

/// What an edit may do to a piece, and how the host treats its edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceKind {
    /// Text: after edits it must stay valid UTF-8 if it was.
    Text,
    /// Raw bytes (a bytea's): no UTF-8 rule.
    Bytes,
    /// JSON text (json, jsonb): an edit inside a string takes its
    /// replacement; one in a number writes `0` over its digits and the
    /// zeros left at the number's front are dropped, so the document stays
    /// JSON.
    Json,
    /// A number's decimal text: the host writes `0` over every digit an
    /// edit covers (keeping `-`, `.` and the like) and ignores the plugin's
    /// replacement, so the value stays a number of its type.
    Number,
}

/// Why a value could not be taken apart or put back together.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The value is not a valid value of its type (or an edited number no
    /// longer reads as one).
    #[error("a value of type {type_oid} is malformed: {why}")]
    Malformed { type_oid: u32, why: &'static str },
    /// The value is of a type sluice cannot decode from binary format.
    #[error("a binary value of type {type_oid} cannot be read to mask it")]
    Undecodable { type_oid: u32 },
    /// Reassembly was given fewer pieces than explode made: a host bug.
    #[error("a value of type {type_oid} was given back fewer pieces than it was split into")]
    MissingPiece { type_oid: u32 },
    /// Edits made the value too long for a length on the wire.
    #[error("a masked value of type {type_oid} is too long for the wire protocol")]
    TooLarge { type_oid: u32 },
    /// The value's pieces would not fit in the room their [`PieceSink`]
    /// had left.
    #[error(transparent)]
    NoRoom(#[from] NoRoom),
}

/// A piece would not fit in the room a [`PieceSink`] had left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the text to mask would take more room than sluice gives it")]
pub struct NoRoom;

/// Where [`Codec::explode`] puts a value's pieces.
///
/// A sink takes only so many bytes of pieces, and explode measures a piece
/// it must render against the room left *before* rendering it: ten bytes
/// of binary numeric (`1e131071`) stand for 131,072 digits, so what a
/// value renders to is bounded by the sink, not by the value's size.
pub trait PieceSink {
    /// How many more bytes of pieces this sink takes.
    fn room(&self) -> usize;
    /// Takes one piece; [`NoRoom`] if it is longer than [`PieceSink::room`].
    fn take(&mut self, kind: PieceKind, piece: &[u8]) -> Result<(), NoRoom>;
}

type Result<T, E = CodecError> = std::result::Result<T, E>;

/// How one column's values become pieces and are rebuilt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Text format: the value is one piece of this kind, as it is but for
    /// numbers printed with an exponent (see [`plain_exponents`]).
    Verbatim { type_oid: u32, kind: PieceKind },
    /// Text-format bytea: one [`PieceKind::Bytes`] piece, the bytes the
    /// value encodes, written back as it came (lowercase hex for hex
    /// output, `bytea_output = 'escape'`'s octal escapes for escape
    /// output). Read as text, an escape's digits (`\012` before a card
    /// number) would run into the card number's.
    TextBytea,
    /// Binary format, decoded by the type's send format (recursively for
    /// arrays and records).
    Binary { type_oid: u32 },
}

impl Codec {
    /// The codec for a column of type `type_oid` in text (`binary` false)
    /// or binary format. `types` are the column's database's user-defined
    /// types the host has looked up: in text format a domain's values are
    /// its base type's text, so they are pieces of the base type's kind.
    pub fn for_column(type_oid: u32, binary: bool, types: &UserTypes) -> Codec {
        if binary {
            return Codec::Binary { type_oid };
        }
        // A domain chain too long to follow is plain text: every
        // text-format value is read as text anyway.
        let base = underlying(type_oid, types);
        if base == Some(BYTEA) {
            return Codec::TextBytea;
        }
        // A number array's text (`{1,2.5}`) keeps its shape when its
        // digits are zeroed, as a number's does.
        let is_number = |oid: Option<u32>| oid.is_some_and(|oid| Number::of(oid).is_some());
        let element = base
            .and_then(|base| array_element(base, types))
            .and_then(|element| underlying(element, types));
        let kind = if is_number(base) || is_number(element) {
            PieceKind::Number
        } else if matches!(base, Some(JSON | JSONB)) {
            PieceKind::Json
        } else {
            PieceKind::Text
        };
        Codec::Verbatim { type_oid, kind }
    }

    /// Whether this column's values are ever sent to plugins: false for
    /// binary types (and arrays of them, and domains over either) that
    /// cannot show a card number as text and that sluice does not decode.
    /// True for undecodable types, so a plugin that wants one fails the
    /// statement instead of missing it.
    pub fn is_sent(&self, types: &UserTypes) -> bool {
        let Codec::Binary { type_oid } = *self else {
            return true;
        };
        match BinaryType::of(type_oid, types) {
            BinaryType::Opaque => false,
            BinaryType::Array { element } => BinaryType::of(element, types) != BinaryType::Opaque,
            _ => true,
        }
    }

    /// Gives the value's pieces to `sink`, in order. A value may have no
    /// pieces at all (an array of NULLs, a NaN). `types` say how values of
    /// user-defined types are read, as for [`Codec::for_column`].
    /// A value whose pieces do not fit in `sink`'s room fails with
    /// [`CodecError::NoRoom`], found before the piece that would not fit
    /// is rendered.
    pub fn explode(
        &self,
        value: &[u8],
        types: &UserTypes,
        sink: &mut (impl PieceSink + ?Sized),
    ) -> Result<(), CodecError> {
        match *self {
            Codec::Verbatim { kind, .. } => take_text(kind, value, sink)?,
            Codec::TextBytea => {
                // At least two hex digits or one byte of escape output make
                // a byte: measured before decoding.
                let bytes = match value.strip_prefix(HEX_PREFIX) {
                    Some(hex) if hex.len() / 2 > sink.room() => return Err(NoRoom.into()),
                    Some(hex) => decode_hex(hex)?,
                    None if value.len() > sink.room() => return Err(NoRoom.into()),
                    None => decode_escape(value)?,
                };
                sink.take(PieceKind::Bytes, &bytes)?
            }
            Codec::Binary { type_oid } => explode_binary(type_oid, value, types, 0, sink)?,
        }
        Ok(())
    }

    /// Writes the value again into `out` from its pieces after edits, taken
    /// from `pieces` in the order [`Codec::explode`] gave them (exactly as
    /// many). `original` is the value as it came, and `types` those explode
    /// was given: they decide which parts of the value the pieces are.
    /// Unchanged pieces give back `original` exactly; edited ones a valid
    /// value of the same type in the same format.
    pub fn reassemble(
        &self,
        original: &[u8],
        types: &UserTypes,
        pieces: &mut dyn Iterator<Item = &[u8]>,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        let start = out.len();
        match *self {
            Codec::Verbatim { type_oid, kind } => {
                put_text(kind, original, next_piece(pieces, type_oid)?, out)?
            }
            Codec::TextBytea => reassemble_text_bytea(original, pieces, out)?,
            Codec::Binary { type_oid } => {
                reassemble_binary(type_oid, original, types, pieces, out, 0)?
            }
        }
        // The host writes the value's length as an int32.
        if i32::try_from(out.len() - start).is_err() {
            return Err(CodecError::TooLarge {
                type_oid: self.type_oid(),
            });
        }
        Ok(())
    }

    fn type_oid(&self) -> u32 {
        match *self {
            Codec::Verbatim { type_oid, .. } | Codec::Binary { type_oid } => type_oid,
            Codec::TextBytea => BYTEA,
        }
    }
}

/// Gives `sink` a piece of text of `kind` taken from a value's own bytes:
/// with its numbers printed with an exponent in plain digits (see
/// [`plain_exponents`]), raw bytes as they are.
fn take_text(kind: PieceKind, text: &[u8], sink: &mut (impl PieceSink + ?Sized)) -> Result<()> {
    match plain_form(kind, text, sink.room())? {
        Some(plain) => sink.take(kind, &plain)?,
        None => sink.take(kind, text)?,
    }
    Ok(())
}

/// Writes back the text [`take_text`] took from `original`, after edits:
/// `original` itself when the piece came back unchanged, else the piece.
fn put_text(kind: PieceKind, original: &[u8], piece: &[u8], out: &mut Vec<u8>) -> Result<()> {
    // Only values explode took a piece of are reassembled: the plain text
    // fit when it was made first, so no room is checked again.
    match plain_form(kind, original, usize::MAX)? {
        Some(plain) if piece != plain.as_slice() => out.extend_from_slice(piece),
        Some(_) => out.extend_from_slice(original),
        None => out.extend_from_slice(piece),
    }
    Ok(())
}

/// [`plain_exponents`] of a piece of text of `kind`: raw bytes have none.
fn plain_form(kind: PieceKind, text: &[u8], room: usize) -> Result<Option<Vec<u8>>> {
    if kind == PieceKind::Bytes {
        return Ok(None);
    }
    plain_exponents(text, room)
}

/// `text` with every number printed with an exponent written out in plain
/// digits, exactly (`4.111111111111111e+15` → `4111111111111111`,
/// `-1.5e-05` → `-0.000015`); `None` when it has no such number.
///
/// PostgreSQL prints a float8 of 16 digits or more with an exponent — in a
/// float column, an array, a record's field, json (`to_json`) — and a card
/// number stored in one would otherwise never reach a masker as a run of
/// digits. Only a number of its own, in the shape PostgreSQL prints, is
/// written out, and only up to [`ScientificNumber::MAX_PLAIN_LEN`]
/// characters. A text whose plain form would be longer than `room` is
/// [`NoRoom`], found before the number that would not fit is written.
fn plain_exponents(text: &[u8], room: usize) -> Result<Option<Vec<u8>>> {
    let is_number_byte =
        |b: &u8| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-');
    // A number of its own only: nothing that could make it part of a word,
    // an identifier or an escape touches it (`\u0e01`'s hex digits follow
    // its `u`; `9e4a7c` is no number).
    let joined = |byte: Option<&u8>| {
        byte.is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'\\')
    };
    if !has_digit_exponent(text) {
        return Ok(None);
    }
    let mut plain: Option<Vec<u8>> = None;
    // Bytes of `text` before `copied` are in `plain` already.
    let mut copied = 0;
    let mut at = 0;
    while let Some(start) = text[at..].iter().position(is_number_byte) {
        let start = at + start;
        let end = text[start..]
            .iter()
            .position(|b| !is_number_byte(b))
            .map_or(text.len(), |len| start + len);
        let stands_alone =
            !joined(start.checked_sub(1).and_then(|i| text.get(i))) && !joined(text.get(end));
        if stands_alone && let Some(number) = ScientificNumber::read(&text[start..end]) {
            let out = plain.get_or_insert_with(Vec::new);
            out.extend_from_slice(&text[copied..start]);
            if out.len().saturating_add(number.plain_len()) > room {
                return Err(NoRoom.into());
            }
            number.write_plain(out);
            copied = end;
        }
        at = end;
    }
    let Some(mut plain) = plain else {
        return Ok(None);
    };
    plain.extend_from_slice(&text[copied..]);
    if plain.len() > room {
        return Err(NoRoom.into());
    }
    Ok(Some(plain))
}

/// Whether `text` has an `e` between a digit and a digit or sign, as every
/// number with an exponent has: most text has an `e`, few such a one, and
/// the values of a result are looked at one by one.
fn has_digit_exponent(text: &[u8]) -> bool {
    memchr::memchr2_iter(b'e', b'E', text).any(|at| {
        let before = at.checked_sub(1).and_then(|i| text.get(i));
        let after = text.get(at + 1);
        before.is_some_and(u8::is_ascii_digit)
            && after.is_some_and(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-'))
    })
}

/// A number as a float's output writes it with an exponent: `-`, one
/// digit, optionally `.` and digits, `e`, an exponent of one to three
/// digits, signed or not (`4.111111111111111e+15`, `1e-05`). Only that
/// shape is read: in any other (`4111111111111111.0e1`), a run of digits
/// may be a card number as it stands, which writing it out would move.
struct ScientificNumber<'t> {
    negative: bool,
    /// The digits before the point, and after it.
    digits: &'t [u8],
    fraction_digits: &'t [u8],
    /// Where the point goes, counted in digits from the first: the
    /// exponent plus the digits before the point.
    point: i64,
}

impl<'t> ScientificNumber<'t> {
    /// The longest plain form a number is written out in. A card number
    /// has at most 19 digits: a number with an exponent that takes more
    /// than this to write out is no card number, in the plugins' eyes as
    /// in a plain one (the group of digits is longer than any card's), and
    /// keeps its exponent. `1e+308` would otherwise take 309 bytes of the
    /// room a result has for masking, a text of many such numbers all of
    /// it; as it is, a number grows at most sixfold (`1e23`).
    const MAX_PLAIN_LEN: usize = 24;

    fn read(text: &'t [u8]) -> Option<ScientificNumber<'t>> {
        let (negative, text) = match text.strip_prefix(b"-") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let e = text.iter().position(|b| matches!(b, b'e' | b'E'))?;
        let (mantissa, exponent) = (&text[..e], &text[e + 1..]);
        let (integer, fraction) = match mantissa.iter().position(|&b| b == b'.') {
            Some(dot) => (&mantissa[..dot], &mantissa[dot + 1..]),
            None => (mantissa, &mantissa[mantissa.len()..]),
        };
        let all_digits = |part: &[u8]| part.iter().all(u8::is_ascii_digit);
        let unsigned = exponent
            .strip_prefix(b"+")
            .or_else(|| exponent.strip_prefix(b"-"));
        let exponent_digits = unsigned.unwrap_or(exponent);
        if integer.len() != 1
            || !all_digits(integer)
            || !all_digits(fraction)
            || !(1..=3).contains(&exponent_digits.len())
            || !all_digits(exponent_digits)
        {
            return None;
        }
        // Three digits at most: the point stays within a thousand of 1.
        let exponent: i64 = std::str::from_utf8(exponent).ok()?.parse().ok()?;
        let number = ScientificNumber {
            negative,
            digits: integer,
            fraction_digits: fraction,
            point: integer.len() as i64 + exponent,
        };
        (number.plain_len() <= Self::MAX_PLAIN_LEN).then_some(number)
    }

    fn digit_count(&self) -> i64 {
        (self.digits.len() + self.fraction_digits.len()) as i64
    }

    /// The mantissa's digit `i`, counted from its first.
    fn digit(&self, i: i64) -> u8 {
        let i = i as usize;
        match self.digits.get(i) {
            Some(&digit) => digit,
            None => self.fraction_digits[i - self.digits.len()],
        }
    }

    /// How many of the digits written before the point are leading zeros
    /// to leave out (`0.5e1` is `5`, not `05`, which is no JSON number),
    /// keeping one where all of them are (`0e5` is `0`). The point is
    /// after the first digit at least.
    fn leading_zeros(&self) -> i64 {
        let written = self.digit_count().min(self.point);
        let zeros = (0..written).take_while(|&i| self.digit(i) == b'0').count() as i64;
        if zeros == written {
            self.point - 1
        } else {
            zeros
        }
    }

    /// The length of [`write_plain`](Self::write_plain)'s text.
    fn plain_len(&self) -> usize {
        let count = self.digit_count();
        let len = if self.point <= 0 {
            // `0.`, zeros, the digits.
            2 + -self.point + count
        } else {
            // The digits or zeros up to the point but leading zeros, then
            // `.` and the rest.
            self.point - self.leading_zeros()
                + if count > self.point {
                    1 + count - self.point
                } else {
                    0
                }
        };
        usize::try_from(len).unwrap_or(usize::MAX) + usize::from(self.negative)
    }

    fn write_plain(&self, out: &mut Vec<u8>) {
        let start = out.len();
        if self.negative {
            out.push(b'-');
        }
        let count = self.digit_count();
        if self.point <= 0 {
            out.extend_from_slice(b"0.");
            out.extend(std::iter::repeat_n(b'0', (-self.point) as usize));
            out.extend((0..count).map(|i| self.digit(i)));
        } else {
            let skip = self.leading_zeros();
            out.extend((skip..count.min(self.point)).map(|i| self.digit(i)));
            let padding = (self.point - count.max(skip)).max(0);
            out.extend(std::iter::repeat_n(b'0', padding as usize));
            if count > self.point {
                out.push(b'.');
                out.extend((self.point..count).map(|i| self.digit(i)));
            }
        }
        debug_assert_eq!(out.len() - start, self.plain_len(), "room measured wrong");
    }
}

/// Copies `span` into `out` with every ASCII digit written as `0`: how the
/// host applies an edit to a [`PieceKind::Number`] piece.
pub fn zero_digits(span: &[u8], out: &mut Vec<u8>) {
    out.extend(
        span.iter()
            .map(|&b| if b.is_ascii_digit() { b'0' } else { b }),
    );
}

fn next_piece<'p>(pieces: &mut dyn Iterator<Item = &'p [u8]>, type_oid: u32) -> Result<&'p [u8]> {
    pieces.next().ok_or(CodecError::MissingPiece { type_oid })
}

fn malformed(type_oid: u32, why: &'static str) -> CodecError {
    CodecError::Malformed { type_oid, why }
}

// ---------------------------------------------------------------------------
// User-defined types

/// What one user-defined type is, as far as its wire formats go (from
/// `pg_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserType {
    /// A domain (typtype 'd'): its values are its base type's
    /// (typbasetype), in both formats.
    Domain { base: u32 },
    /// An enum (typtype 'e'): binary is the label's text (enum_send), text
    /// is the label.
    Enum,
    /// A composite (typtype 'c'): binary is record_send's format, exactly
    /// what `record` (2249) reads.
    Composite,
    /// An array type (typcategory 'A', typelem != 0, typlen -1):
    /// array_send's format over `element`.
    Array { element: u32 },
    /// Anything else (a base type from an extension, a range, a
    /// multirange, a pseudo-type): its binary form is not known.
    Other,
}

/// The user-defined types of one database that sluice has looked up.
///
/// Only OIDs from 16384 (FirstNormalObjectId) on are ever read from here:
/// every OID below it was assigned by initdb, and what the built-in tables
/// say of those is final, whatever the catalog was made to hold.
#[derive(Debug, Clone, Default)]
pub struct UserTypes {
    types: HashMap<u32, UserType>,
}

impl UserTypes {
    /// No user-defined types known: every one is undecodable.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records what `type_oid` is, replacing what was known of it.
    pub fn insert(&mut self, type_oid: u32, kind: UserType) {
        self.types.insert(type_oid, kind);
    }

    pub fn get(&self, type_oid: u32) -> Option<UserType> {
        self.types.get(&type_oid).copied()
    }

    pub fn len(&self) -> usize {
        self.types.len()
    }

    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    /// Whether `type_oid` is one the host should look up before reading a
    /// binary value of it: a user-defined OID (>= 16384,
    /// FirstNormalObjectId) that the built-in tables do not know and this
    /// catalog does not hold yet.
    pub fn needs_lookup(&self, type_oid: u32) -> bool {
        !is_built_in(type_oid) && !self.types.contains_key(&type_oid)
    }

    /// The OIDs these types refer to (domain bases, array elements) that
    /// themselves need a lookup: the host looks those up next, until none
    /// remain. Sorted, each once. A composite's field types are not here:
    /// each value names its own, and a field of a type not looked up fails
    /// the value.
    pub fn missing_references(&self) -> Vec<u32> {
        let mut missing: Vec<u32> = self
            .types
            .values()
            .filter_map(|kind| match *kind {
                UserType::Domain { base } => Some(base),
                UserType::Array { element } => Some(element),
                UserType::Enum | UserType::Composite | UserType::Other => None,
            })
            .filter(|&oid| self.needs_lookup(oid))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        missing
    }

    /// What the catalog says of `type_oid`, never of a built-in one.
    fn user(&self, type_oid: u32) -> Option<UserType> {
        if is_built_in(type_oid) {
            return None;
        }
        self.get(type_oid)
    }
}

/// PostgreSQL's FirstNormalObjectId: the first OID not assigned by initdb,
/// so the first a user-defined type can have.
const FIRST_NORMAL_OBJECT_ID: u32 = 16384;

/// Whether `type_oid` belongs to the types initdb made. Those the tables
/// below do not know (ranges, information_schema's domains…) stay
/// undecodable: the catalog is never asked about them.
fn is_built_in(type_oid: u32) -> bool {
    type_oid < FIRST_NORMAL_OBJECT_ID
}

/// How many domains over domains are followed to a base type. Real chains
/// are a link or two; the limit stops a cycle, which a catalog changed
/// between lookups could make.
const MAX_DOMAIN_CHAIN: usize = 16;

/// The type whose wire formats `type_oid`'s values are in: `type_oid`
/// itself, or for a domain the base type at the end of its chain. `None`
/// for a chain longer than [`MAX_DOMAIN_CHAIN`] domains (a cycle is one).
fn underlying(type_oid: u32, types: &UserTypes) -> Option<u32> {
    let mut type_oid = type_oid;
    for _ in 0..=MAX_DOMAIN_CHAIN {
        match types.user(type_oid) {
            Some(UserType::Domain { base }) => type_oid = base,
            _ => return Some(type_oid),
        }
    }
    None
}

/// The element type of an array type, built-in or user-defined; `None`
/// for a type that is not an array (a domain over one is not: resolve it
/// with [`underlying`] first).
fn array_element(type_oid: u32, types: &UserTypes) -> Option<u32> {
    element_of(type_oid).or_else(|| match types.user(type_oid)? {
        UserType::Array { element } => Some(element),
        _ => None,
    })
}

// ---------------------------------------------------------------------------
// Types

const BYTEA: u32 = 17;
const JSON: u32 = 114;
const JSONB: u32 = 3802;

/// How a type's binary values are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinaryType {
    /// The value's bytes are its text.
    Text,
    /// The value's bytes are JSON text.
    Json,
    /// A version byte (1), then the text: jsonb (as [`PieceKind::Json`])
    /// and jsonpath (as [`PieceKind::Text`]).
    Versioned {
        kind: PieceKind,
    },
    /// Raw bytes, one [`PieceKind::Bytes`] piece.
    Bytea,
    Number(Number),
    /// The geometric types: a header of `header` bytes (a path's closed
    /// flag and point count, a polygon's count), then float8s, each a
    /// number piece of its own — `point(pan::float8, 0)` holds a card
    /// number exactly.
    Floats {
        header: usize,
    },
    Array {
        element: u32,
    },
    Record,
    /// Cannot show a card number as text: never decoded, copied as it is.
    Opaque,
    /// Sluice does not know this type's binary form.
    Undecodable,
}

impl BinaryType {
    /// How values of `type_oid` are read: a built-in type by the tables
    /// below, a user-defined one by what `types` say of it, a domain as
    /// its base type.
    fn of(type_oid: u32, types: &UserTypes) -> BinaryType {
        let Some(type_oid) = underlying(type_oid, types) else {
            return BinaryType::Undecodable;
        };
        if is_built_in(type_oid) {
            return BinaryType::built_in(type_oid);
        }
        match types.user(type_oid) {
            Some(UserType::Enum) => BinaryType::Text,
            Some(UserType::Composite) => BinaryType::Record,
            Some(UserType::Array { element }) => BinaryType::Array { element },
            // A domain here would have been resolved by `underlying`.
            Some(UserType::Domain { .. } | UserType::Other) | None => BinaryType::Undecodable,
        }
    }

    fn built_in(type_oid: u32) -> BinaryType {
        if let Some(element) = element_of(type_oid) {
            return BinaryType::Array { element };
        }
        if let Some(number) = Number::of(type_oid) {
            return BinaryType::Number(number);
        }
        match type_oid {
            // text, varchar, bpchar, name, xml, unknown, "char"
            25 | 1043 | 1042 | 19 | 142 | 705 | 18 => BinaryType::Text,
            JSON => BinaryType::Json,
            JSONB => BinaryType::Versioned {
                kind: PieceKind::Json,
            },
            // jsonpath
            4072 => BinaryType::Versioned {
                kind: PieceKind::Text,
            },
            BYTEA => BinaryType::Bytea,
            // record; a named composite has its own OID, known only from
            // the catalog (UserType::Composite).
            2249 => BinaryType::Record,
            // money: an int8 count of cents.
            790 => BinaryType::Number(Number::Int8),
            // point, lseg, box, line, circle: float8s only.
            600 | 601 | 603 | 628 | 718 => BinaryType::Floats { header: 0 },
            // path: closed flag (1 byte), point count (int4), points.
            602 => BinaryType::Floats { header: 5 },
            // polygon: point count (int4), points.
            604 => BinaryType::Floats { header: 4 },
            // bool; date, time, timetz, timestamp, timestamptz, interval;
            // uuid, inet, cidr, macaddr, macaddr8; bit, varbit; pg_lsn,
            // tid, xid, cid
            16 | 1082 | 1083 | 1266 | 1114 | 1184 | 1186 | 2950 | 869 | 650 | 829 | 774 | 1560
            | 1562 | 3220 | 27 | 28 | 29 => BinaryType::Opaque,
            _ => BinaryType::Undecodable,
        }
    }
}

/// The element type of the built-in array types sluice reads.
fn element_of(array_oid: u32) -> Option<u32> {
    let element = match array_oid {
        1009 => 25,   // text[]
        1015 => 1043, // varchar[]
        1014 => 1042, // bpchar[]
        1003 => 19,   // name[]
        143 => 142,   // xml[]
        199 => 114,   // json[]
        3807 => 3802, // jsonb[]
        1001 => BYTEA,
        1005 => 21,   // int2[]
        1007 => 23,   // int4[]
        1016 => 20,   // int8[]
        1028 => 26,   // oid[]
        1021 => 700,  // float4[]
        1022 => 701,  // float8[]
        1231 => 1700, // numeric[]
        2287 => 2249, // record[]
        1002 => 18,   // "char"[]
        1000 => 16,   // bool[]
        2951 => 2950, // uuid[]
        1182 => 1082, // date[]
        1115 => 1114, // timestamp[]
        1185 => 1184, // timestamptz[]
        1183 => 1083, // time[]
        1270 => 1266, // timetz[]
        1187 => 1186, // interval[]
        1041 => 869,  // inet[]
        651 => 650,   // cidr[]
        1040 => 829,  // macaddr[]
        _ => return None,
    };
    Some(element)
}

// ---------------------------------------------------------------------------
// Reading binary values

/// Arrays and records nest; a hostile value could nest deep enough to
/// exhaust the stack. Real values nest a few levels. A domain is no level:
/// it is resolved to its base type before the value is read.
const MAX_DEPTH: usize = 64;

/// A cursor over a binary value, every read bounds-checked.
struct Reader<'a> {
    type_oid: u32,
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(type_oid: u32, value: &'a [u8]) -> Self {
        Reader {
            type_oid,
            rest: value,
        }
    }

    fn malformed(&self, why: &'static str) -> CodecError {
        malformed(self.type_oid, why)
    }

    fn remaining(&self) -> usize {
        self.rest.len()
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N]> {
        let Some((head, rest)) = self.rest.split_first_chunk::<N>() else {
            return Err(self.malformed("it ends too soon"));
        };
        self.rest = rest;
        Ok(*head)
    }

    fn i16(&mut self) -> Result<i16> {
        self.fixed().map(i16::from_be_bytes)
    }

    fn u16(&mut self) -> Result<u16> {
        self.fixed().map(u16::from_be_bytes)
    }

    fn i32(&mut self) -> Result<i32> {
        self.fixed().map(i32::from_be_bytes)
    }

    fn u32(&mut self) -> Result<u32> {
        self.fixed().map(u32::from_be_bytes)
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        if len > self.rest.len() {
            return Err(self.malformed("a length runs past its end"));
        }
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(taken)
    }

    /// An int32 length and that many bytes; `None` for length -1 (NULL).
    fn field(&mut self) -> Result<Option<&'a [u8]>> {
        match self.i32()? {
            -1 => Ok(None),
            len => match usize::try_from(len) {
                Ok(len) => self.take(len).map(Some),
                Err(_) => Err(self.malformed("a length is negative")),
            },
        }
    }

    fn finish(&self) -> Result<()> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(self.malformed("it has bytes after its end"))
        }
    }
}

/// An array in binary form (array_send): a header, then each element as
/// an int32 length (-1 for NULL) and its bytes.
struct Array<'a> {
    /// ndim, has-null flag, element type, and each dimension's size and
    /// lower bound: copied as they are on reassembly.
    header: &'a [u8],
    count: usize,
    elements: Reader<'a>,
}

/// PostgreSQL's MAXDIM.
const MAX_DIMENSIONS: i32 = 6;

impl<'a> Array<'a> {
    fn read(type_oid: u32, element: u32, value: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(type_oid, value);
        let ndim = r.i32()?;
        if !(0..=MAX_DIMENSIONS).contains(&ndim) {
            return Err(r.malformed("an array has fewer than 0 or more than 6 dimensions"));
        }
        if !matches!(r.i32()?, 0 | 1) {
            return Err(r.malformed("an array's has-null flag is neither 0 nor 1"));
        }
        // The element type decides how elements are read; one other than
        // the array type's would be a different value than the column says.
        if r.u32()? != element {
            return Err(r.malformed("an array's element type is not its type's"));
        }
        let mut count: usize = if ndim == 0 { 0 } else { 1 };
        for _ in 0..ndim {
            let size = r.i32()?;
            let lower = r.i32()?;
            let Ok(size) = usize::try_from(size) else {
                return Err(r.malformed("an array dimension is negative"));
            };
            // As PostgreSQL checks: the upper bound must be an int32.
            if size > 0 && i64::from(lower) + size as i64 - 1 > i64::from(i32::MAX) {
                return Err(r.malformed("an array's bounds overflow"));
            }
            count = count
                .checked_mul(size)
                .ok_or_else(|| r.malformed("an array's dimensions overflow"))?;
        }
        // Every element takes at least its 4-byte length.
        if count > r.remaining() / 4 {
            return Err(r.malformed("an array has fewer elements than its dimensions say"));
        }
        let header = &value[..value.len() - r.remaining()];
        Ok(Array {
            header,
            count,
            elements: r,
        })
    }

    /// Calls `each` with every element (`None` for NULL), then checks that
    /// nothing follows the last.
    fn for_each(mut self, mut each: impl FnMut(Option<&'a [u8]>) -> Result<()>) -> Result<()> {
        for _ in 0..self.count {
            each(self.elements.field()?)?;
        }
        self.elements.finish()
    }
}

/// A record in binary form (record_send): an int32 field count, then each
/// field as its type OID, an int32 length (-1 for NULL) and its bytes.
struct Record<'a> {
    header: &'a [u8],
    count: usize,
    fields: Reader<'a>,
}

impl<'a> Record<'a> {
    fn read(type_oid: u32, value: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(type_oid, value);
        let Ok(count) = usize::try_from(r.i32()?) else {
            return Err(r.malformed("a record's field count is negative"));
        };
        // Every field takes at least its type OID and length.
        if count > r.remaining() / 8 {
            return Err(r.malformed("a record has fewer fields than its count says"));
        }
        Ok(Record {
            header: &value[..4],
            count,
            fields: r,
        })
    }

    /// Calls `each` with every field's type OID and value (`None` for
    /// NULL), then checks that nothing follows the last.
    fn for_each(mut self, mut each: impl FnMut(u32, Option<&'a [u8]>) -> Result<()>) -> Result<()> {
        for _ in 0..self.count {
            let field_type = self.fields.u32()?;
            each(field_type, self.fields.field()?)?;
        }
        self.fields.finish()
    }
}

fn check_depth(type_oid: u32, depth: usize) -> Result<()> {
    if depth >= MAX_DEPTH {
        return Err(malformed(type_oid, "it nests arrays and records too deep"));
    }
    Ok(())
}

/// The text of a jsonb or jsonpath value: what follows its version byte.
fn versioned_text(type_oid: u32, value: &[u8]) -> Result<&[u8]> {
    match value.split_first() {
        Some((1, text)) => Ok(text),
        _ => Err(malformed(type_oid, "its format version is not 1")),
    }
}

// ---------------------------------------------------------------------------
// Explode and reassemble in binary format

fn explode_binary<S>(
    type_oid: u32,
    value: &[u8],
    types: &UserTypes,
    depth: usize,
    sink: &mut S,
) -> Result<()>
where
    S: PieceSink + ?Sized,
{
    match BinaryType::of(type_oid, types) {
        BinaryType::Text => take_text(PieceKind::Text, value, sink)?,
        BinaryType::Json => take_text(PieceKind::Json, value, sink)?,
        BinaryType::Versioned { kind } => take_text(kind, versioned_text(type_oid, value)?, sink)?,
        BinaryType::Bytea => sink.take(PieceKind::Bytes, value)?,
        BinaryType::Number(number) => {
            if let Some(text) = number.render(type_oid, value, sink.room())? {
                sink.take(PieceKind::Number, text.as_bytes())?;
            }
        }
        BinaryType::Floats { header } => {
            for float in floats(type_oid, header, value)? {
                if let Some(text) = Number::Float8.render(type_oid, float, sink.room())? {
                    sink.take(PieceKind::Number, text.as_bytes())?;
                }
            }
        }
        BinaryType::Array { element } => {
            check_depth(type_oid, depth)?;
            Array::read(type_oid, element, value)?.for_each(|item| match item {
                Some(item) => explode_binary(element, item, types, depth + 1, sink),
                None => Ok(()),
            })?;
        }
        BinaryType::Record => {
            check_depth(type_oid, depth)?;
            Record::read(type_oid, value)?.for_each(|field_type, field| match field {
                Some(field) => explode_binary(field_type, field, types, depth + 1, sink),
                None => Ok(()),
            })?;
        }
        BinaryType::Opaque => {}
        BinaryType::Undecodable => return Err(CodecError::Undecodable { type_oid }),
    }
    Ok(())
}

/// Walks `original` as [`explode_binary`] does, writing each part again
/// from its piece, and lengths as the rebuilt parts need.
fn reassemble_binary(
    type_oid: u32,
    original: &[u8],
    types: &UserTypes,
    pieces: &mut dyn Iterator<Item = &[u8]>,
    out: &mut Vec<u8>,
    depth: usize,
) -> Result<()> {
    match BinaryType::of(type_oid, types) {
        BinaryType::Bytea => out.extend_from_slice(next_piece(pieces, type_oid)?),
        text @ (BinaryType::Text | BinaryType::Json) => {
            let kind = if text == BinaryType::Json {
                PieceKind::Json
            } else {
                PieceKind::Text
            };
            put_text(kind, original, next_piece(pieces, type_oid)?, out)?
        }
        BinaryType::Versioned { kind } => {
            let text = versioned_text(type_oid, original)?;
            out.push(1);
            put_text(kind, text, next_piece(pieces, type_oid)?, out)?;
        }
        BinaryType::Number(number) => number.reassemble(type_oid, original, pieces, out)?,
        BinaryType::Floats { header } => {
            out.extend_from_slice(&original[..header.min(original.len())]);
            for float in floats(type_oid, header, original)? {
                Number::Float8.reassemble(type_oid, float, pieces, out)?;
            }
        }
        BinaryType::Array { element } => {
            check_depth(type_oid, depth)?;
            let array = Array::read(type_oid, element, original)?;
            out.extend_from_slice(array.header);
            array.for_each(|item| {
                write_field(type_oid, item, out, |item, out| {
                    reassemble_binary(element, item, types, pieces, out, depth + 1)
                })
            })?;
        }
        BinaryType::Record => {
            check_depth(type_oid, depth)?;
            let record = Record::read(type_oid, original)?;
            out.extend_from_slice(record.header);
            record.for_each(|field_type, field| {
                out.extend_from_slice(&field_type.to_be_bytes());
                write_field(type_oid, field, out, |field, out| {
                    reassemble_binary(field_type, field, types, pieces, out, depth + 1)
                })
            })?;
        }
        BinaryType::Opaque => out.extend_from_slice(original),
        BinaryType::Undecodable => return Err(CodecError::Undecodable { type_oid }),
    }
    Ok(())
}

/// The float8s of a geometric value, after its `header` bytes: whole ones,
/// as many as a path's or polygon's count says.
fn floats(type_oid: u32, header: usize, value: &[u8]) -> Result<std::slice::ChunksExact<'_, u8>> {
    let Some(body) = value.get(header..) else {
        return Err(malformed(type_oid, "it is shorter than its header"));
    };
    if body.len() % 8 != 0 {
        return Err(malformed(type_oid, "its coordinates are not whole float8s"));
    }
    if header >= 4 {
        let count = &value[header - 4..header];
        let points = u32::from_be_bytes([count[0], count[1], count[2], count[3]]) as usize;
        if points.checked_mul(16) != Some(body.len()) {
            return Err(malformed(
                type_oid,
                "its point count does not match its points",
            ));
        }
    }
    Ok(body.chunks_exact(8))
}

/// Writes an element or field: -1 for NULL, or its length and what
/// `write` rebuilds of it (its length known only once it is written).
fn write_field(
    type_oid: u32,
    value: Option<&[u8]>,
    out: &mut Vec<u8>,
    write: impl FnOnce(&[u8], &mut Vec<u8>) -> Result<()>,
) -> Result<()> {
    let Some(value) = value else {
        out.extend_from_slice(&(-1i32).to_be_bytes());
        return Ok(());
    };
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    write(value, out)?;
    let len = i32::try_from(out.len() - at - 4).map_err(|_| CodecError::TooLarge { type_oid })?;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

// ---------------------------------------------------------------------------
// Numbers

/// The number types, whose binary values become decimal text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Number {
    Int2,
    Int4,
    Oid,
    Int8,
    Float4,
    Float8,
    Numeric,
}

impl Number {
    fn of(type_oid: u32) -> Option<Number> {
        Some(match type_oid {
            21 => Number::Int2,
            23 => Number::Int4,
            26 => Number::Oid,
            20 => Number::Int8,
            700 => Number::Float4,
            701 => Number::Float8,
            1700 => Number::Numeric,
            _ => return None,
        })
    }

    /// The decimal text of a binary value. `None` for NaN and infinities:
    /// no digits, nothing to mask. A numeric whose text would be longer
    /// than `room` is [`CodecError::NoRoom`] before any of it is written;
    /// the other types' texts are a few hundred bytes at most (a float8's
    /// widest is about 330).
    fn render(self, type_oid: u32, value: &[u8], room: usize) -> Result<Option<String>> {
        let text = match self {
            Number::Int2 => i16::from_be_bytes(exact(type_oid, value)?).to_string(),
            Number::Int4 => i32::from_be_bytes(exact(type_oid, value)?).to_string(),
            Number::Oid => u32::from_be_bytes(exact(type_oid, value)?).to_string(),
            Number::Int8 => i64::from_be_bytes(exact(type_oid, value)?).to_string(),
            // Display writes the shortest decimal that reads back as the
            // same float, and never an exponent, whose digits zeroing
            // would change the magnitude of.
            Number::Float4 => {
                let float = f32::from_be_bytes(exact(type_oid, value)?);
                return Ok(float.is_finite().then(|| float.to_string()));
            }
            Number::Float8 => {
                let float = f64::from_be_bytes(exact(type_oid, value)?);
                return Ok(float.is_finite().then(|| float.to_string()));
            }
            Number::Numeric => {
                let numeric = Numeric::read(type_oid, value)?;
                if numeric.text_len().is_some_and(|len| len > room) {
                    return Err(NoRoom.into());
                }
                return Ok(numeric.to_text());
            }
        };
        Ok(Some(text))
    }

    /// Writes the binary value of a number's (edited) decimal text.
    fn write(self, type_oid: u32, text: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let unreadable = || malformed(type_oid, "the masked number does not read as its type");
        let decimal = Decimal::parse(text).ok_or_else(unreadable)?;
        if decimal.fraction.is_some()
            && !matches!(self, Number::Float4 | Number::Float8 | Number::Numeric)
        {
            return Err(unreadable());
        }
        match self {
            Number::Int2 => {
                out.extend_from_slice(&parse::<i16>(text).ok_or_else(unreadable)?.to_be_bytes())
            }
            Number::Int4 => {
                out.extend_from_slice(&parse::<i32>(text).ok_or_else(unreadable)?.to_be_bytes())
            }
            Number::Oid => {
                out.extend_from_slice(&parse::<u32>(text).ok_or_else(unreadable)?.to_be_bytes())
            }
            Number::Int8 => {
                out.extend_from_slice(&parse::<i64>(text).ok_or_else(unreadable)?.to_be_bytes())
            }
            Number::Float4 => {
                let float = parse::<f32>(text)
                    .filter(|f| f.is_finite())
                    .ok_or_else(unreadable)?;
                out.extend_from_slice(&float.to_be_bytes());
            }
            Number::Float8 => {
                let float = parse::<f64>(text)
                    .filter(|f| f.is_finite())
                    .ok_or_else(unreadable)?;
                out.extend_from_slice(&float.to_be_bytes());
            }
            Number::Numeric => write_numeric(type_oid, &decimal, out)?,
        }
        Ok(())
    }

    fn reassemble(
        self,
        type_oid: u32,
        original: &[u8],
        pieces: &mut dyn Iterator<Item = &[u8]>,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        // Only values explode took pieces of are reassembled, so the text
        // fit when it was rendered first: no room to check again.
        let Some(text) = self.render(type_oid, original, usize::MAX)? else {
            // NaN or an infinity: it had no piece.
            out.extend_from_slice(original);
            return Ok(());
        };
        let piece = next_piece(pieces, type_oid)?;
        if piece == text.as_bytes() {
            out.extend_from_slice(original);
        } else {
            self.write(type_oid, piece, out)?;
        }
        Ok(())
    }
}

/// A fixed-width value's bytes.
fn exact<const N: usize>(type_oid: u32, value: &[u8]) -> Result<[u8; N]> {
    value
        .try_into()
        .map_err(|_| malformed(type_oid, "its length is wrong for its type"))
}

fn parse<T: std::str::FromStr>(text: &[u8]) -> Option<T> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// A number's text as sluice writes it: an optional `-`, digits, and
/// optionally `.` and more digits. Checked before parsing, as Rust's
/// parsers accept more (`+1`, `inf`, `1e5`).
struct Decimal<'a> {
    negative: bool,
    integer: &'a [u8],
    fraction: Option<&'a [u8]>,
}

impl<'a> Decimal<'a> {
    fn parse(text: &'a [u8]) -> Option<Self> {
        let (negative, unsigned) = match text.strip_prefix(b"-") {
            Some(unsigned) => (true, unsigned),
            None => (false, text),
        };
        let (integer, fraction) = match unsigned.iter().position(|&b| b == b'.') {
            Some(point) => (&unsigned[..point], Some(&unsigned[point + 1..])),
            None => (unsigned, None),
        };
        let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
        (digits(integer) && fraction.is_none_or(digits)).then_some(Decimal {
            negative,
            integer,
            fraction,
        })
    }
}

// numeric's binary form (numeric_send): ndigits, weight, sign, dscale, then
// ndigits base-10000 digits, the first worth 10000^weight.

const NUMERIC_POS: u16 = 0x0000;
const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;
/// The largest display scale PostgreSQL accepts (NUMERIC_DSCALE_MASK).
const NUMERIC_MAX_DSCALE: u16 = 0x3FFF;
const NBASE: u16 = 10000;

struct Numeric<'a> {
    weight: i16,
    sign: u16,
    /// Digits shown after the decimal point.
    dscale: u16,
    /// Big-endian base-10000 digits, two bytes each.
    digits: &'a [u8],
}

impl<'a> Numeric<'a> {
    /// Reads and checks a numeric as numeric_recv does.
    fn read(type_oid: u32, value: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(type_oid, value);
        // numeric_recv reads the digit count unsigned.
        let ndigits = r.u16()?;
        let weight = r.i16()?;
        let sign = r.u16()?;
        let dscale = r.u16()?;
        let digits = r.take(usize::from(ndigits) * 2)?;
        r.finish()?;
        if !matches!(
            sign,
            NUMERIC_POS | NUMERIC_NEG | NUMERIC_NAN | NUMERIC_PINF | NUMERIC_NINF
        ) {
            return Err(r.malformed("its sign is not a numeric sign"));
        }
        if dscale > NUMERIC_MAX_DSCALE {
            return Err(r.malformed("its scale is out of range"));
        }
        let numeric = Numeric {
            weight,
            sign,
            dscale,
            digits,
        };
        if (0..ndigits).any(|i| numeric.digit(i32::from(i)) >= NBASE) {
            return Err(r.malformed("a numeric digit is out of range"));
        }
        Ok(numeric)
    }

    /// The base-10000 digit at `index` (0 is the first, worth
    /// 10000^weight); zero outside the stored ones.
    fn digit(&self, index: i32) -> u16 {
        let Ok(index) = usize::try_from(index) else {
            return 0;
        };
        match self.digits.get(index * 2..index * 2 + 2) {
            Some(&[high, low]) => u16::from_be_bytes([high, low]),
            _ => 0,
        }
    }

    /// The length of [`Numeric::to_text`]'s text, from the header and the
    /// stored digits alone: the text can be 10,000 times the value's size,
    /// so it is measured before it is written. `None` for NaN and
    /// infinities.
    fn text_len(&self) -> Option<usize> {
        if !matches!(self.sign, NUMERIC_POS | NUMERIC_NEG) {
            return None;
        }
        let sign = usize::from(self.sign == NUMERIC_NEG);
        let weight = i32::from(self.weight);
        let integer = if weight < 0 {
            1
        } else {
            // Leading zeros are not shown, and digits past the stored ones
            // are zeros: the first shown digit is in a stored group.
            let stored = i32::try_from(self.digits.len() / 2).unwrap_or(i32::MAX);
            match (0..=weight.min(stored - 1)).find(|&index| self.digit(index) != 0) {
                Some(first) => {
                    let groups_after = usize::try_from(weight - first).unwrap_or_default();
                    decimal_width(self.digit(first)) + 4 * groups_after
                }
                None => 1,
            }
        };
        let fraction = match self.dscale {
            0 => 0,
            dscale => 1 + usize::from(dscale),
        };
        Some(sign + integer + fraction)
    }

    /// The text numeric_out shows: exactly `dscale` digits after the
    /// point. `None` for NaN and infinities.
    fn to_text(&self) -> Option<String> {
        if !matches!(self.sign, NUMERIC_POS | NUMERIC_NEG) {
            return None;
        }
        let weight = i32::from(self.weight);
        let mut text = String::new();
        if self.sign == NUMERIC_NEG {
            text.push('-');
        }
        if weight < 0 {
            text.push('0');
        } else {
            let mut integer = Vec::new();
            for index in 0..=weight {
                push_digit_group(self.digit(index), 4, &mut integer);
            }
            let leading_zeros = integer.iter().take_while(|&&d| d == b'0').count();
            let shown = leading_zeros.min(integer.len() - 1);
            text.extend(integer[shown..].iter().map(|&d| char::from(d)));
        }
        if self.dscale > 0 {
            text.push('.');
            let mut fraction = Vec::new();
            let groups = (i32::from(self.dscale) + 3) / 4;
            for index in weight + 1..=weight + groups {
                push_digit_group(self.digit(index), 4, &mut fraction);
            }
            fraction.truncate(usize::from(self.dscale));
            text.extend(fraction.iter().map(|&d| char::from(d)));
        }
        Some(text)
    }
}

/// How many decimal digits a base-10000 digit shows without leading zeros.
fn decimal_width(digit: u16) -> usize {
    digit.checked_ilog10().map_or(1, |log| log as usize + 1)
}

/// Appends `digit` as `width` decimal digits, zero-padded.
fn push_digit_group(digit: u16, width: u32, out: &mut Vec<u8>) {
    for place in (0..width).rev() {
        out.push(b'0' + (digit / 10u16.pow(place) % 10) as u8);
    }
}

/// Writes the numeric a decimal reads as, as make_result would: the digits
/// grouped in base 10000 around the point, zero groups stripped from both
/// ends, zero always positive with weight 0. The scale is the number of
/// digits after the point, as it was before zeroing.
fn write_numeric(type_oid: u32, decimal: &Decimal, out: &mut Vec<u8>) -> Result<()> {
    let out_of_range = || malformed(type_oid, "the masked number is out of numeric's range");
    let fraction = decimal.fraction.unwrap_or_default();
    let dscale = u16::try_from(fraction.len())
        .ok()
        .filter(|&dscale| dscale <= NUMERIC_MAX_DSCALE)
        .ok_or_else(out_of_range)?;
    let leading_zeros = decimal.integer.iter().take_while(|&&d| d == b'0').count();
    let integer = &decimal.integer[leading_zeros..];
    // Pad both sides to whole groups so the point falls between two.
    let integer_groups = integer.len().div_ceil(4);
    let mut padded = vec![b'0'; integer_groups * 4 - integer.len()];
    padded.extend_from_slice(integer);
    padded.extend_from_slice(fraction);
    padded.resize(padded.len().div_ceil(4) * 4, b'0');
    let groups: Vec<u16> = padded
        .chunks(4)
        .map(|group| group.iter().fold(0, |n, &d| n * 10 + u16::from(d - b'0')))
        .collect();
    let first = groups.iter().position(|&g| g != 0);
    let last = groups.iter().rposition(|&g| g != 0);
    let (weight, sign, digits) = match (first, last) {
        (Some(first), Some(last)) => {
            let weight = integer_groups as i64 - 1 - first as i64;
            let sign = if decimal.negative {
                NUMERIC_NEG
            } else {
                NUMERIC_POS
            };
            (weight, sign, &groups[first..=last])
        }
        _ => (0, NUMERIC_POS, &groups[..0]),
    };
    let weight = i16::try_from(weight).map_err(|_| out_of_range())?;
    let ndigits = u16::try_from(digits.len()).map_err(|_| out_of_range())?;
    out.extend_from_slice(&ndigits.to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&dscale.to_be_bytes());
    for digit in digits {
        out.extend_from_slice(&digit.to_be_bytes());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Text-format bytea

const HEX_PREFIX: &[u8] = b"\\x";

fn reassemble_text_bytea(
    original: &[u8],
    pieces: &mut dyn Iterator<Item = &[u8]>,
    out: &mut Vec<u8>,
) -> Result<()> {
    let piece = next_piece(pieces, BYTEA)?;
    match original.strip_prefix(HEX_PREFIX) {
        Some(hex) if decode_hex(hex)? != piece => {
            out.extend_from_slice(HEX_PREFIX);
            encode_hex(piece, out);
        }
        None if decode_escape(original)? != piece => encode_escape(piece, out),
        _ => out.extend_from_slice(original),
    }
    Ok(())
}

/// `bytea_output = 'escape'`'s text: a backslash is `\\`, a byte that is
/// not printable ASCII `\` and three octal digits, any other byte itself.
fn decode_escape(text: &[u8]) -> Result<Vec<u8>> {
    let invalid = || malformed(BYTEA, "its escapes are not valid");
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text;
    while let Some((&byte, tail)) = rest.split_first() {
        if byte != b'\\' {
            bytes.push(byte);
            rest = tail;
            continue;
        }
        match tail {
            [b'\\', after @ ..] => {
                bytes.push(b'\\');
                rest = after;
            }
            [
                high @ b'0'..=b'3',
                middle @ b'0'..=b'7',
                low @ b'0'..=b'7',
                after @ ..,
            ] => {
                bytes.push((high - b'0') << 6 | (middle - b'0') << 3 | (low - b'0'));
                rest = after;
            }
            _ => return Err(invalid()),
        }
    }
    Ok(bytes)
}

/// Bytes as `bytea_output = 'escape'` writes them (see [`decode_escape`]).
fn encode_escape(bytes: &[u8], out: &mut Vec<u8>) {
    for &byte in bytes {
        match byte {
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x20..=0x7e => out.push(byte),
            _ => out.extend_from_slice(&[
                b'\\',
                b'0' + (byte >> 6),
                b'0' + (byte >> 3 & 7),
                b'0' + (byte & 7),
            ]),
        }
    }
}

fn decode_hex(hex: &[u8]) -> Result<Vec<u8>> {
    let invalid = || malformed(BYTEA, "its hex is not valid");
    let (pairs, []) = hex.as_chunks::<2>() else {
        return Err(invalid());
    };
    pairs
        .iter()
        .map(|&[high, low]| Some(hex_value(high)? << 4 | hex_value(low)?))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(invalid)
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit).to_digit(16).map(|value| value as u8)
}

fn encode_hex(bytes: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &byte in bytes {
        out.extend_from_slice(&[HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0xf)]]);
    }
}

#[cfg(test)]
mod tests {
    //! Fixtures are PostgreSQL 15's own binary output: `encode(X_send(...),
    //! 'hex')` for the value named beside each. Values of user-defined
    //! types whose OIDs a fixture cannot fix are built by hand in the same
    //! send formats.

    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&text[at..at + 2], 16).unwrap())
            .collect()
    }

    /// A column's codec and its database's user-defined types, which go
    /// together into every call as the host passes them.
    #[derive(Clone, Copy)]
    struct Column<'t> {
        codec: Codec,
        types: &'t UserTypes,
    }

    impl Column<'_> {
        fn is_sent(&self) -> bool {
            self.codec.is_sent(self.types)
        }
    }

    static NO_USER_TYPES: std::sync::LazyLock<UserTypes> = std::sync::LazyLock::new(UserTypes::new);

    fn binary(type_oid: u32) -> Column<'static> {
        binary_in(&NO_USER_TYPES, type_oid)
    }

    fn text(type_oid: u32) -> Column<'static> {
        text_in(&NO_USER_TYPES, type_oid)
    }

    fn binary_in(types: &UserTypes, type_oid: u32) -> Column<'_> {
        Column {
            codec: Codec::for_column(type_oid, true, types),
            types,
        }
    }

    fn text_in(types: &UserTypes, type_oid: u32) -> Column<'_> {
        Column {
            codec: Codec::for_column(type_oid, false, types),
            types,
        }
    }

    /// Pieces as explode gives them, up to `room` bytes in all.
    struct Collected {
        room: usize,
        pieces: Vec<(PieceKind, Vec<u8>)>,
    }

    impl PieceSink for Collected {
        fn room(&self) -> usize {
            self.room
        }

        fn take(&mut self, kind: PieceKind, piece: &[u8]) -> Result<(), NoRoom> {
            self.room = self.room.checked_sub(piece.len()).ok_or(NoRoom)?;
            self.pieces.push((kind, piece.to_vec()));
            Ok(())
        }
    }

    fn explode(column: Column, value: &[u8]) -> Result<Vec<(PieceKind, Vec<u8>)>, CodecError> {
        explode_within(column, value, usize::MAX)
    }

    fn explode_within(
        column: Column,
        value: &[u8],
        room: usize,
    ) -> Result<Vec<(PieceKind, Vec<u8>)>, CodecError> {
        let mut sink = Collected {
            room,
            pieces: Vec::new(),
        };
        column.codec.explode(value, column.types, &mut sink)?;
        Ok(sink.pieces)
    }

    fn reassemble(
        column: Column,
        original: &[u8],
        pieces: &[Vec<u8>],
    ) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::new();
        let mut pieces = pieces.iter().map(Vec::as_slice);
        column
            .codec
            .reassemble(original, column.types, &mut pieces, &mut out)?;
        assert!(pieces.next().is_none(), "reassemble left pieces unread");
        Ok(out)
    }

    /// The value's pieces, checking that they put back unchanged give the
    /// value byte for byte.
    fn pieces(codec: Column, value: &[u8]) -> Vec<(PieceKind, Vec<u8>)> {
        let pieces = explode(codec, value).unwrap();
        let unchanged: Vec<Vec<u8>> = pieces.iter().map(|(_, piece)| piece.clone()).collect();
        assert_eq!(reassemble(codec, value, &unchanged).unwrap(), value);
        pieces
    }

    fn texts(pieces: &[(PieceKind, Vec<u8>)]) -> Vec<(PieceKind, &str)> {
        pieces
            .iter()
            .map(|(kind, piece)| (*kind, std::str::from_utf8(piece).unwrap()))
            .collect()
    }

    /// A number piece after an edit of `start..end`, as the host applies it.
    fn zeroed(piece: &[u8], start: usize, end: usize) -> Vec<u8> {
        let mut out = piece[..start].to_vec();
        zero_digits(&piece[start..end], &mut out);
        out.extend_from_slice(&piece[end..]);
        out
    }

    /// Explodes `value`, lets `edit` change the pieces, and reassembles.
    fn edited(codec: Column, value: &[u8], edit: impl FnOnce(&mut Vec<Vec<u8>>)) -> Vec<u8> {
        let mut pieces: Vec<Vec<u8>> = explode(codec, value)
            .unwrap()
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        edit(&mut pieces);
        reassemble(codec, value, &pieces).unwrap()
    }

    use PieceKind::{Bytes, Json, Number as Num, Text};

    // Type OIDs the tests use.
    const INT2: u32 = 21;
    const INT4: u32 = 23;
    const INT8: u32 = 20;
    const OID: u32 = 26;
    const FLOAT4: u32 = 700;
    const FLOAT8: u32 = 701;
    const NUMERIC: u32 = 1700;
    const TEXT: u32 = 25;
    const JSONB: u32 = 3802;
    const RECORD: u32 = 2249;
    /// `CREATE TYPE mood AS ENUM ('ok', 'sad')` and its array type.
    const MOOD: u32 = 16389;
    const MOOD_ARRAY: u32 = 16388;

    #[test]
    fn zero_digits_keeps_everything_but_digits() {
        let mut out = b"x".to_vec();
        zero_digits(b"-41.5e+07", &mut out);
        assert_eq!(out, b"x-00.0e+00");
    }

    // --- Text format -------------------------------------------------------

    #[test]
    fn text_format_values_are_one_piece_as_they_are() {
        assert_eq!(
            pieces(text(INT8), b"4111111111111111"),
            [(Num, b"4111111111111111".to_vec())]
        );
        assert_eq!(pieces(text(NUMERIC), b"-1.50"), [(Num, b"-1.50".to_vec())]);
        assert_eq!(
            pieces(text(1016), b"{4111111111111111}"),
            [(Num, b"{4111111111111111}".to_vec())]
        );
        assert_eq!(
            pieces(text(TEXT), b"card 4111"),
            [(Text, b"card 4111".to_vec())]
        );
        assert_eq!(
            pieces(text(1114), b"2024-01-01 00:00:00"),
            [(Text, b"2024-01-01 00:00:00".to_vec())]
        );
        assert_eq!(pieces(text(MOOD), b"ok"), [(Text, b"ok".to_vec())]);
        // Every text-format value is sent, whatever its type.
        assert!(text(16).is_sent() && text(MOOD).is_sent());
    }

    #[test]
    fn text_format_int8_array_stays_an_array_after_zeroing() {
        let value = b"{4111111111111111,-2}";
        let out = edited(text(1016), value, |p| p[0] = zeroed(&p[0], 5, 13));
        assert_eq!(out, b"{4111000000001111,-2}");
    }

    #[test]
    fn text_format_hex_bytea_is_its_bytes() {
        // '\x34313131deadbeef'::bytea::text
        let value = b"\\x34313131deadbeef";
        assert_eq!(
            pieces(text(BYTEA), value),
            [(Bytes, hex("34313131deadbeef"))]
        );
        let out = edited(text(BYTEA), value, |p| p[0][1] = b'*');
        assert_eq!(out, b"\\x342a3131deadbeef");
        // Uppercase hex (not what PostgreSQL writes) still comes back as
        // it came when unchanged.
        assert_eq!(pieces(text(BYTEA), b"\\xDEAD"), [(Bytes, hex("dead"))]);
        assert_eq!(pieces(text(BYTEA), b"\\x"), [(Bytes, vec![])]);
    }

    #[test]
    fn text_format_escape_bytea_is_its_bytes() {
        // E'\\x0a34313131005c'::bytea under bytea_output = 'escape'.
        let value = b"\\0124111\\000\\\\";
        assert_eq!(
            pieces(text(BYTEA), value),
            [(Bytes, b"\n4111\0\\".to_vec())]
        );
        // Unchanged, it comes back as it came; edited, written as
        // PostgreSQL writes it.
        assert_eq!(edited(text(BYTEA), value, |_| {}), value);
        let out = edited(text(BYTEA), value, |p| p[0][2] = b'*');
        assert_eq!(out, b"\\0124*11\\000\\\\");
        let out = edited(text(BYTEA), b"ab", |p| p[0] = vec![0xff, b'\\', b'~']);
        assert_eq!(out, b"\\377\\\\~");
        for bad in [&b"\\"[..], b"\\01", b"\\400", b"a\\x"] {
            assert!(
                matches!(
                    explode(text(BYTEA), bad),
                    Err(CodecError::Malformed {
                        type_oid: BYTEA,
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn text_format_bad_hex_is_malformed() {
        for value in [&b"\\x1"[..], b"\\xzz", b"\\x12 3"] {
            assert!(matches!(
                explode(text(BYTEA), value),
                Err(CodecError::Malformed {
                    type_oid: BYTEA,
                    ..
                })
            ));
        }
    }

    // --- Binary integers and floats ----------------------------------------

    #[test]
    fn binary_integers_are_their_decimal_text() {
        let cases: [(u32, &str, &str); 6] = [
            (INT2, "04d2", "1234"),
            (INT2, "8000", "-32768"),
            (INT4, "fd8cb1b9", "-41111111"),
            (OID, "f50a93c7", "4111111111"),
            (INT8, "000e9b08a568f1c7", "4111111111111111"),
            (INT8, "8000000000000000", "-9223372036854775808"),
        ];
        for (type_oid, value, expected) in cases {
            assert_eq!(
                texts(&pieces(binary(type_oid), &hex(value))),
                [(Num, expected)]
            );
        }
    }

    #[test]
    fn zeroed_binary_integers_are_what_postgresql_sends() {
        // (type, value, edit start..end, int*send of the zeroed number)
        let cases: [(u32, &str, usize, usize, &str); 4] = [
            (INT2, "04d2", 1, 3, "03ec"),                          // 1234 -> 1004
            (INT4, "fd8cb1b9", 2, 8, "fd9da5ff"),                  // -41111111 -> -40000001
            (OID, "f50a93c7", 1, 9, "ee6b2801"),                   // 4111111111 -> 4000000001
            (INT8, "000e9b08a568f1c7", 6, 12, "000e9b08632ec057"), // -> 4111110000001111
        ];
        for (type_oid, value, start, end, expected) in cases {
            let out = edited(binary(type_oid), &hex(value), |p| {
                p[0] = zeroed(&p[0], start, end)
            });
            assert_eq!(out, hex(expected), "type {type_oid}");
        }
    }

    /// A float PostgreSQL prints with an exponent reaches the plugins in
    /// plain digits, so a card number stored as a float8 is seen whole;
    /// put back unedited it is the server's text, edited it is the zeroed
    /// plain number.
    #[test]
    fn text_floats_with_exponents_are_plain_digits() {
        let plain = |type_oid: u32, value: &str| {
            let pieces = pieces(text(type_oid), value.as_bytes());
            assert_eq!(pieces.len(), 1, "{value}");
            assert_eq!(pieces[0].0, Num, "{value}");
            String::from_utf8(pieces[0].1.clone()).unwrap()
        };
        assert_eq!(plain(FLOAT8, "4.111111111111111e+15"), "4111111111111111");
        assert_eq!(plain(FLOAT8, "-3.782822463e+14"), "-378282246300000");
        assert_eq!(plain(FLOAT8, "1.5e-05"), "0.000015");
        assert_eq!(plain(FLOAT8, "-2e-1"), "-0.2");
        assert_eq!(plain(FLOAT8, "1.25e+1"), "12.5");
        assert_eq!(plain(FLOAT8, "1e+20"), "100000000000000000000");
        assert_eq!(plain(FLOAT4, "4.111111e+15"), "4111111000000000");
        // No exponent, nothing to do: the server's text as it is.
        assert_eq!(plain(FLOAT8, "378282246310005"), "378282246310005");
        assert_eq!(plain(FLOAT8, "-Infinity"), "-Infinity");
        assert_eq!(plain(FLOAT8, "NaN"), "NaN");
        // Every element of an array, and a domain over float8.
        assert_eq!(
            plain(1022, "{1,4.111111111111111e+15,NULL,-1e-3}"),
            "{1,4111111111111111,NULL,-0.001}"
        );
        let types = catalog();
        let domain = pieces(text_in(&types, D_FLOAT8), b"5.555555555554444e+15");
        assert_eq!(texts(&domain), [(Num, "5555555555554444")]);

        let out = edited(text(FLOAT8), b"4.111111111111111e+15", |p| {
            p[0] = zeroed(&p[0], 6, 12);
        });
        assert_eq!(out, b"4111110000001111");
        assert_eq!(
            std::str::from_utf8(&out).unwrap().parse::<f64>().unwrap(),
            4111110000001111.0
        );
    }

    /// Exponents are written out wherever PostgreSQL prints a float inside
    /// other text: a record's field, json (`to_json`), a text column
    /// holding one; in binary json and text too. Text without a number
    /// printed so, `e` or not, is its own piece untouched.
    #[test]
    fn exponents_inside_text_records_and_json_are_plain_digits() {
        let one = |column: Column, value: &[u8]| {
            let pieces = pieces(column, value);
            assert_eq!(pieces.len(), 1);
            (pieces[0].0, String::from_utf8(pieces[0].1.clone()).unwrap())
        };
        assert_eq!(
            one(text(RECORD), b"(7,4.111111111111111e+15,\"a e b\")"),
            (Text, "(7,4111111111111111,\"a e b\")".to_owned())
        );
        assert_eq!(
            one(
                text(JSON),
                br#"{"n":4.111111111111111e+15,"s":"1e2 x","t":"1e2x"}"#
            ),
            (
                Json,
                r#"{"n":4111111111111111,"s":"100 x","t":"1e2x"}"#.to_owned()
            )
        );
        assert_eq!(
            one(binary(JSON), br#"[5.555555555554444e+15]"#),
            (Json, "[5555555555554444]".to_owned())
        );
        assert_eq!(
            one(binary(TEXT), b"card 4.111111111111111E15"),
            (Text, "card 4111111111111111".to_owned())
        );
        // Not a number of its own: joined to a word, an identifier, an
        // escape (`\u0e01`, `\u001e0`: hex digits).
        for untouched in [
            &b"eel e-mail 2026-11-30 1e"[..],
            b"e+-.",
            b"3-e5",
            b"none",
            b"id 9e4a7c x1e5 1e5_",
            b"4111111111111111.0e1 -4111111111111111.5e-1 1e+0000000000000018 12e5 1.5e1234",
            br#"["\u0e01", "\u001e0", "Card:\n4111111111111111"]"#,
        ] {
            assert_eq!(one(text(TEXT), untouched).1.as_bytes(), untouched);
            assert_eq!(one(text(JSON), untouched).1.as_bytes(), untouched);
        }
        // Written out as a number is: no leading zeros, one zero for none.
        for (printed, plain) in [
            ("0.5e1", "5"),
            ("0e5", "0"),
            ("-0e0", "-0"),
            ("0.05e2", "5"),
            ("0.5e-1", "0.05"),
        ] {
            assert_eq!(one(text(FLOAT8), printed.as_bytes()).1, plain);
        }
        // Edited, the value is written in the plain digits the plugin saw.
        let out = edited(text(RECORD), b"(4.111111111111111e+15)", |p| {
            p[0] = b"(411111XXXXXX1111)".to_vec();
        });
        assert_eq!(out, b"(411111XXXXXX1111)");
        // Binary jsonb keeps its version byte.
        let out = edited(binary(JSONB), b"\x01[4.111111111111111e+15]", |p| {
            p[0] = zeroed(&p[0], 7, 13);
        });
        assert_eq!(out, b"\x01[4111110000001111]");
    }

    /// A number too long written out to be a card number keeps its
    /// exponent, and the plain text is measured against the room before
    /// it is written.
    #[test]
    fn plain_digits_are_bounded_and_measured() {
        for printed in [
            "1e+308",
            "-2.5e-300",
            "4.111111111111111e+24",
            "1e-23",
            "1e+24",
        ] {
            assert_eq!(
                texts(&pieces(text(FLOAT8), printed.as_bytes())),
                [(Num, printed)]
            );
        }
        assert_eq!(
            texts(&pieces(text(FLOAT8), b"1e+23")),
            [(Num, "100000000000000000000000")]
        );
        assert_eq!(
            texts(&pieces(text(FLOAT8), b"-4.111111111111111003e+18")),
            [(Num, "-4111111111111111003")]
        );
        let many = format!("{{{}}}", ["4.111111111111111e+15"; 10].join(","));
        assert!(matches!(
            explode_within(text(1022), many.as_bytes(), 150),
            Err(CodecError::NoRoom(_))
        ));
        let pieces = explode_within(text(1022), many.as_bytes(), 171).unwrap();
        assert_eq!(pieces[0].1.len(), 171);
    }

    #[test]
    fn binary_floats_are_their_shortest_decimal() {
        let float8 = |v: &str| {
            texts(&pieces(binary(FLOAT8), &hex(v)))
                .into_iter()
                .map(|(_, t)| t.to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(float8("42f580bb2ea88750"), ["378282246310005"]);
        assert_eq!(float8("3fb999999999999a"), ["0.1"]);
        assert_eq!(float8("c029000000000000"), ["-12.5"]);
        // 1e300: no exponent, so zeroing never touches the magnitude.
        let big = &float8("7e37e43c8800759c")[0];
        assert_eq!(big.len(), 301);
        assert!(big.starts_with('1') && big[1..].bytes().all(|b| b == b'0'));
        assert_eq!(
            texts(&pieces(binary(FLOAT4), &hex("4a7aec1c"))),
            [(Num, "4111111")]
        );
        assert_eq!(
            texts(&pieces(binary(FLOAT4), &hex("3fc00000"))),
            [(Num, "1.5")]
        );
    }

    /// Geometric values are float8s, and money an int8 of cents: each
    /// number a piece, edits written back in place, the rest as it was.
    #[test]
    fn geometric_and_money_values_are_numbers() {
        const PAN: &str = "42f580bb2ea88750"; // 378282246310005 as float8
        const ZERO: &str = "0000000000000000";
        let point = hex(&format!("{PAN}{ZERO}"));
        assert_eq!(
            texts(&pieces(binary(600), &point)),
            [(Num, "378282246310005"), (Num, "0")]
        );
        let out = edited(binary(600), &point, |p| p[0] = zeroed(&p[0], 4, 14));
        assert_eq!(out, hex(&format!("42f57f88ca770050{ZERO}")));
        // A closed path of two points, and a polygon of one.
        let path = hex(&format!("0100000002{PAN}{ZERO}{ZERO}{PAN}"));
        assert_eq!(texts(&pieces(binary(602), &path)).len(), 4);
        let out = edited(binary(602), &path, |p| p[3] = zeroed(&p[3], 4, 14));
        assert_eq!(
            out,
            hex(&format!("0100000002{PAN}{ZERO}{ZERO}42f57f88ca770050"))
        );
        let polygon = hex(&format!("00000001{ZERO}{PAN}"));
        assert_eq!(
            texts(&pieces(binary(604), &polygon)),
            [(Num, "0"), (Num, "378282246310005")]
        );
        // Counts that do not match the points, and torn coordinates.
        for (type_oid, bad) in [
            (604, format!("00000002{ZERO}{PAN}")),
            (602, format!("0100000001{PAN}")),
            (600, PAN.to_owned()[..14].to_owned()),
            (602, "01".to_owned()),
        ] {
            assert!(
                matches!(
                    explode(binary(type_oid), &hex(&bad)),
                    Err(CodecError::Malformed { .. })
                ),
                "{type_oid} {bad}"
            );
        }
        // money: 41,111,111,111,111.11 as cents.
        let cents = 4_111_111_111_111_111i64.to_be_bytes();
        assert_eq!(
            texts(&pieces(binary(790), &cents)),
            [(Num, "4111111111111111")]
        );
    }

    #[test]
    fn zeroed_binary_floats_are_what_postgresql_sends() {
        // 378282246310005 -> 378200000000005
        let out = edited(binary(FLOAT8), &hex("42f580bb2ea88750"), |p| {
            p[0] = zeroed(&p[0], 4, 14)
        });
        assert_eq!(out, hex("42f57f88ca770050"));
        // 4111111 -> 4100001 as float4
        let out = edited(binary(FLOAT4), &hex("4a7aec1c"), |p| {
            p[0] = zeroed(&p[0], 2, 6)
        });
        assert_eq!(out, hex("4a7a3e84"));
        // -12.5 -> -10.0
        let out = edited(binary(FLOAT8), &hex("c029000000000000"), |p| {
            p[0] = zeroed(&p[0], 2, 5)
        });
        assert_eq!(out, hex("c024000000000000"));
    }

    #[test]
    fn nan_and_infinities_have_no_piece() {
        for (type_oid, value) in [
            (FLOAT8, "7ff8000000000000"), // 'NaN'
            (FLOAT8, "fff0000000000000"), // '-Infinity'
            (FLOAT4, "7fc00000"),
            (NUMERIC, "00000000c0000000"), // 'NaN'
            (NUMERIC, "00000000f0000020"), // '-Infinity'
        ] {
            assert!(pieces(binary(type_oid), &hex(value)).is_empty(), "{value}");
        }
    }

    // --- Binary numeric ------------------------------------------------------

    #[test]
    fn binary_numerics_are_numeric_out_text() {
        let cases = [
            ("0004000300000002100f045704570457", "4111111111111111.00"),
            ("0002ffff4000000700010924", "-0.0001234"),
            ("0000000000000000", "0"),
            ("0000000000000002", "0.00"),
            ("0003000100000001000100001388", "10000.5"),
            ("0001ffff000000040001", "0.0001"),
            ("0004000300000000100f045704570457", "4111111111111111"),
            ("00010005000000000001", "100000000000000000000"),
            ("0002000000000002000c0bb8", "12.30"),
            ("0003000140000003007b11d722ce", "-1234567.891"),
            (
                "000b000700000009000c0d801ed204d2162e23340d801ed204d2162e2328",
                "123456789012345678901234567890.123456789",
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(
                texts(&pieces(binary(NUMERIC), &hex(value))),
                [(Num, expected)]
            );
        }
        // 1e-100: 100 digits after the point.
        let tiny = pieces(binary(NUMERIC), &hex("0001ffe7000000640001"));
        assert_eq!(tiny[0].1, format!("0.{}1", "0".repeat(99)).into_bytes());
        let big = pieces(binary(NUMERIC), &hex("00010019000000000001"));
        assert_eq!(big[0].1, format!("1{}", "0".repeat(100)).into_bytes());
    }

    #[test]
    fn a_numerics_text_is_measured_before_it_is_written() {
        // Every numeric above, and hostile ones: leading zero groups, the
        // largest weight, the largest scale, negative zero.
        let cases = [
            "0004000300000002100f045704570457",
            "0002ffff4000000700010924",
            "0000000000000000",
            "0000000000000002",
            "0003000100000001000100001388",
            "0001ffff000000040001",
            "00010005000000000001",
            "0002000000000002000c0bb8",
            "0003000140000003007b11d722ce",
            "000b000700000009000c0d801ed204d2162e23340d801ed204d2162e2328",
            "0001ffe7000000640001",
            "00040001000000000000000500000001",
            "0003000200000000000000000007",
            "00017fff000000000001",
            "00017fff40003fff0001",
            "00017fff00003fff270f",
            "0000000040000000",
            "00028000000000010001270f",
        ];
        for value in cases {
            let value = hex(value);
            let numeric = Numeric::read(NUMERIC, &value).unwrap();
            let text = numeric.to_text().unwrap();
            assert_eq!(numeric.text_len(), Some(text.len()), "{text}");
        }
        // 1e131071 (numeric_send: one digit, weight 32767), in ten bytes.
        let huge = hex("00017fff000000000001");
        assert_eq!(
            Numeric::read(NUMERIC, &huge).unwrap().text_len(),
            Some(131_069)
        );
        // It is refused by a sink without room for it, before it is
        // rendered; with room, it is rendered exactly as before.
        assert!(matches!(
            explode_within(binary(NUMERIC), &huge, 131_068),
            Err(CodecError::NoRoom(NoRoom))
        ));
        let pieces = explode_within(binary(NUMERIC), &huge, 131_069).unwrap();
        assert_eq!(
            pieces[0].1,
            format!("1{}", "0".repeat(131_068)).into_bytes()
        );
        // NaN has no text: nothing to measure, nothing to refuse.
        assert_eq!(
            explode_within(binary(NUMERIC), &hex("00000000c0000000"), 0).unwrap(),
            []
        );
        // Pieces of every kind count toward the room.
        assert!(matches!(
            explode_within(
                binary(1009),
                &array_of(25, &[Some(b"4111"), Some(b"4111")]),
                7
            ),
            Err(CodecError::NoRoom(NoRoom))
        ));
        assert!(matches!(
            explode_within(text(BYTEA), b"\\x41414141", 3),
            Err(CodecError::NoRoom(NoRoom))
        ));
    }

    #[test]
    fn zeroed_binary_numerics_are_what_postgresql_sends() {
        // (numeric_send of the value, edit start..end, of the zeroed value)
        let cases = [
            // 4111111111111111.00 -> 4111110000001111.00
            (
                "0004000300000002100f045704570457",
                6,
                12,
                "0004000300000002100f044c00000457",
            ),
            // -> 0000000000000000.00: zero, scale kept
            (
                "0004000300000002100f045704570457",
                0,
                19,
                "0000000000000002",
            ),
            // -0.0001234 -> -0.0000004: a leading zero group is stripped
            ("0002ffff4000000700010924", 3, 9, "0001fffe400000070028"),
            // -0.0001234 -> -0.0000000: zero is positive
            ("0002ffff4000000700010924", 0, 10, "0000000000000007"),
            // 10000.5 -> 00000.5
            ("0003000100000001000100001388", 0, 1, "0001ffff000000011388"),
            // 4111111111111111 -> 4111000000000000: trailing groups stripped
            (
                "0004000300000000100f045704570457",
                4,
                16,
                "0001000300000000100f",
            ),
            // 99999999.9999 -> 90000000.0009
            (
                "0003000100000004270f270f270f",
                1,
                12,
                "0003000100000004232800000009",
            ),
            // -1234567.891 -> -1000000.001
            (
                "0003000140000003007b11d722ce",
                2,
                11,
                "000300014000000300640000000a",
            ),
        ];
        for (value, start, end, expected) in cases {
            let out = edited(binary(NUMERIC), &hex(value), |p| {
                p[0] = zeroed(&p[0], start, end)
            });
            assert_eq!(out, hex(expected), "{value} zeroed at {start}..{end}");
        }
    }

    #[test]
    fn non_canonical_numerics_come_back_as_they_came() {
        // 5 with a leading zero digit, and digits beyond its scale of 0:
        // numeric_out shows "5", and PostgreSQL would send 00010000000000000005.
        let value = hex("00040001000000000000000500000001");
        assert_eq!(texts(&pieces(binary(NUMERIC), &value)), [(Num, "5")]);
        // Once edited it is written as PostgreSQL would: zero.
        let out = edited(binary(NUMERIC), &value, |p| p[0] = zeroed(&p[0], 0, 1));
        assert_eq!(out, hex("0000000000000000"));
    }

    #[test]
    fn malformed_numbers_are_errors() {
        let cases: [(u32, &str); 12] = [
            (INT8, "000e9b08a568f1"),
            (INT8, "000e9b08a568f1c700"),
            (INT4, ""),
            (INT2, "04"),
            (FLOAT8, "42f580bb"),
            // numeric: truncated header; digits beyond the value; bytes after
            // them; a digit of 10000; sign 0x8000; scale 0x4000
            (NUMERIC, "000100000000"),
            (NUMERIC, "00020000000000000001"),
            (NUMERIC, "000100000000000000010000"),
            (NUMERIC, "00010000000000002710"),
            (NUMERIC, "00010000800000000001"),
            (NUMERIC, "00010000000040000001"),
            (NUMERIC, "ffff0000000000000001"),
        ];
        for (type_oid, value) in cases {
            let result = explode(binary(type_oid), &hex(value));
            assert!(
                matches!(result, Err(CodecError::Malformed { .. })),
                "{type_oid} {value}: {result:?}"
            );
        }
    }

    #[test]
    fn edited_numbers_that_do_not_read_back_are_malformed() {
        for (type_oid, value) in [
            (INT8, "000e9b08a568f1c7"),
            (FLOAT8, "42f580bb2ea88750"),
            (NUMERIC, "0004000300000002100f045704570457"),
            (INT2, "04d2"),
        ] {
            for bad in [
                &b"41x1"[..],
                b"",
                b"-",
                b"1.2.3",
                b"+1",
                b"inf",
                b"1e5",
                b"1.",
            ] {
                let result = reassemble(binary(type_oid), &hex(value), &[bad.to_vec()]);
                assert!(
                    matches!(result, Err(CodecError::Malformed { .. })),
                    "{type_oid} {bad:?}"
                );
            }
        }
        // A fraction where the type has none; out of the type's range.
        assert!(reassemble(binary(INT4), &hex("fd8cb1b9"), &[b"1.0".to_vec()]).is_err());
        assert!(reassemble(binary(INT2), &hex("04d2"), &[b"99999".to_vec()]).is_err());
        assert!(reassemble(binary(OID), &hex("f50a93c7"), &[b"-1".to_vec()]).is_err());
        let huge = format!("1{}", "0".repeat(400)).into_bytes();
        assert!(reassemble(binary(FLOAT8), &hex("42f580bb2ea88750"), &[huge]).is_err());
    }

    // --- Binary text-like types ----------------------------------------------

    #[test]
    fn binary_text_types_are_their_bytes() {
        // xml_send('<a>4111111111111111</a>'), charsend('x')
        let xml = hex("3c613e343131313131313131313131313131313c2f613e");
        assert_eq!(
            texts(&pieces(binary(142), &xml)),
            [(Text, "<a>4111111111111111</a>")]
        );
        assert_eq!(texts(&pieces(binary(18), &hex("78"))), [(Text, "x")]);
        assert_eq!(
            pieces(binary(BYTEA), &hex("deadbeef00")),
            [(Bytes, hex("deadbeef00"))]
        );
        let out = edited(binary(TEXT), b"card 4111111111111111", |p| {
            p[0] = b"card ****".to_vec()
        });
        assert_eq!(out, b"card ****");
    }

    #[test]
    fn jsonb_is_its_text_after_the_version() {
        // jsonb_send('{"pan":"4111111111111111"}')
        let value = hex("017b2270616e223a202234313131313131313131313131313131227d");
        assert_eq!(
            texts(&pieces(binary(JSONB), &value)),
            [(Json, r#"{"pan": "4111111111111111"}"#)]
        );
        let out = edited(binary(JSONB), &value, |p| {
            p[0] = br#"{"pan": "4111XXXXXXXX1111"}"#.to_vec()
        });
        assert_eq!(
            out,
            hex("017b2270616e223a202234313131585858585858585831313131227d")
        );
        // jsonpath_send('$."4111111111111111"')
        let path = hex("01242e223431313131313131313131313131313122");
        assert_eq!(
            texts(&pieces(binary(4072), &path)),
            [(Text, r#"$."4111111111111111""#)]
        );
    }

    #[test]
    fn jsonb_of_another_version_is_malformed() {
        for value in ["027b7d", ""] {
            assert!(matches!(
                explode(binary(JSONB), &hex(value)),
                Err(CodecError::Malformed {
                    type_oid: JSONB,
                    ..
                })
            ));
        }
    }

    // --- Arrays --------------------------------------------------------------

    #[test]
    fn text_array_elements_are_pieces() {
        // array_send(ARRAY['a','4111111111111111']::text[])
        let value = hex(
            "000000010000000000000019000000020000000100000001610000001034313131313131313131313131313131",
        );
        assert_eq!(
            texts(&pieces(binary(1009), &value)),
            [(Text, "a"), (Text, "4111111111111111")]
        );
        let out = edited(binary(1009), &value, |p| {
            p[1] = b"4111XXXXXXXX1111".to_vec()
        });
        assert_eq!(
            out,
            hex(
                "000000010000000000000019000000020000000100000001610000001034313131585858585858585831313131"
            )
        );
    }

    #[test]
    fn an_edit_that_changes_an_elements_length_rewrites_it() {
        // array_send(ARRAY[['4111111111111111','b'],['c',NULL]]::varchar[])
        let value = hex(
            "00000002000000010000041300000002000000010000000200000001000000103431313131313131313131313131313100000001620000000163ffffffff",
        );
        assert_eq!(
            texts(&pieces(binary(1015), &value)),
            [(Text, "4111111111111111"), (Text, "b"), (Text, "c")]
        );
        let out = edited(binary(1015), &value, |p| p[0] = b"4111 masked".to_vec());
        assert_eq!(
            out,
            hex(
                "000000020000000100000413000000020000000100000002000000010000000b34313131206d61736b656400000001620000000163ffffffff"
            )
        );
    }

    #[test]
    fn int8_array_with_null_zeroes_as_postgresql_sends() {
        // array_send(ARRAY[[1,2],[3,NULL]]::int8[]) and with 1 -> 0
        let value = hex(
            "00000002000000010000001400000002000000010000000200000001000000080000000000000001000000080000000000000002000000080000000000000003ffffffff",
        );
        assert_eq!(
            texts(&pieces(binary(1016), &value)),
            [(Num, "1"), (Num, "2"), (Num, "3")]
        );
        let out = edited(binary(1016), &value, |p| p[0] = zeroed(&p[0], 0, 1));
        assert_eq!(
            out,
            hex(
                "00000002000000010000001400000002000000010000000200000001000000080000000000000000000000080000000000000002000000080000000000000003ffffffff"
            )
        );
    }

    #[test]
    fn numeric_array_zeroes_as_postgresql_sends() {
        // array_send(ARRAY[4111111111111111.5, -1]::numeric[]), then with
        // 4111000000000000.5
        let value = hex(
            "0000000100000000000006a40000000200000001000000120005000300000001100f04570457045713880000000a00010000400000000001",
        );
        assert_eq!(
            texts(&pieces(binary(1231), &value)),
            [(Num, "4111111111111111.5"), (Num, "-1")]
        );
        let out = edited(binary(1231), &value, |p| p[0] = zeroed(&p[0], 4, 16));
        assert_eq!(
            out,
            hex(
                "0000000100000000000006a40000000200000001000000120005000300000001100f00000000000013880000000a00010000400000000001"
            )
        );
    }

    #[test]
    fn float8_array_with_nan_and_infinity() {
        // array_send(ARRAY[378282246310005, 'NaN', 'Infinity']::float8[])
        let value = hex(
            "0000000100000000000002bd00000003000000010000000842f580bb2ea88750000000087ff8000000000000000000087ff0000000000000",
        );
        assert_eq!(
            texts(&pieces(binary(1022), &value)),
            [(Num, "378282246310005")]
        );
        let out = edited(binary(1022), &value, |p| p[0] = zeroed(&p[0], 4, 14));
        assert_eq!(
            out,
            hex(
                "0000000100000000000002bd00000003000000010000000842f57f88ca770050000000087ff8000000000000000000087ff0000000000000"
            )
        );
    }

    #[test]
    fn bytea_and_jsonb_arrays() {
        // array_send(ARRAY['\x3431...31'::bytea, NULL])
        let value = hex(
            "00000001000000010000001100000002000000010000001034313131313131313131313131313131ffffffff",
        );
        assert_eq!(
            pieces(binary(1001), &value),
            [(Bytes, b"4111111111111111".to_vec())]
        );
        let out = edited(binary(1001), &value, |p| {
            p[0] = b"4111XXXXXXXX1111".to_vec()
        });
        assert_eq!(
            out,
            hex(
                "00000001000000010000001100000002000000010000001034313131585858585858585831313131ffffffff"
            )
        );
        // array_send(ARRAY['{"a":"4111111111111111"}'::jsonb])
        let value = hex(
            "000000010000000000000eda00000001000000010000001a017b2261223a202234313131313131313131313131313131227d",
        );
        assert_eq!(
            texts(&pieces(binary(3807), &value)),
            [(Json, r#"{"a": "4111111111111111"}"#)]
        );
    }

    #[test]
    fn arrays_without_pieces() {
        // ARRAY[NULL,NULL]::text[], ARRAY[]::text[], '[2:3]={x,y}' (lower
        // bound 2), '[0:1][-1:0]={{1,2},{3,4}}'::int4[]
        assert!(
            pieces(
                binary(1009),
                &hex("0000000100000001000000190000000200000001ffffffffffffffff")
            )
            .is_empty()
        );
        assert!(pieces(binary(1009), &hex("000000000000000000000019")).is_empty());
        assert_eq!(
            texts(&pieces(
                binary(1009),
                &hex("000000010000000000000019000000020000000200000001780000000179")
            )),
            [(Text, "x"), (Text, "y")]
        );
        let int4 = hex(
            "000000020000000000000017000000020000000000000002ffffffff0000000400000001000000040000000200000004000000030000000400000004",
        );
        assert_eq!(pieces(binary(1007), &int4).len(), 4);
        // ARRAY[true,false], ARRAY['2024-01-01 00:00:00'::timestamp]: opaque
        // elements are copied, and such columns are never sent.
        assert!(
            pieces(
                binary(1000),
                &hex("000000010000000000000010000000020000000100000001010000000100")
            )
            .is_empty()
        );
        assert!(
            pieces(
                binary(1115),
                &hex("00000001000000000000045a0000000100000001000000080002b0d5d4e94000")
            )
            .is_empty()
        );
        assert!(!binary(1000).is_sent() && !binary(1115).is_sent());
        // No pieces: reassembly takes none.
        let nulls = hex("0000000100000001000000190000000200000001ffffffffffffffff");
        let mut rest = [&b"next value's"[..]].into_iter();
        let mut out = Vec::new();
        binary(1009)
            .codec
            .reassemble(&nulls, &UserTypes::new(), &mut rest, &mut out)
            .unwrap();
        assert_eq!((out, rest.len()), (nulls, 1));
        assert!(binary(1009).is_sent() && binary(2287).is_sent());
    }

    #[test]
    fn malformed_arrays_are_errors() {
        let cases = [
            // truncated header
            "000000010000",
            // 7 dimensions
            "000000070000000000000019",
            // negative dimension count
            "ffffffff0000000000000019",
            // has-null flag 2
            "000000010000000200000019000000010000000100000001 61",
            // element type int4 in a text[]
            "000000010000000000000017000000010000000100000001 61",
            // negative dimension size
            "000000010000000000000019ffffffff00000001",
            // upper bound overflows
            "0000000100000000000000190000000 27fffffff0000000161000000 0162",
            // dimensions say 3, 2 elements
            "000000010000000000000019000000030000000100000001610000000162",
            // dimensions say 1, 2 elements: trailing bytes
            "000000010000000000000019000000010000000100000001610000000162",
            // element length beyond the value
            "0000000100000000000000190000000100000001000000ff61",
            // element length -2
            "000000010000000000000019000000010000000100000000fffffffe",
            // dimensions whose product overflows
            "0000000600000000000000197fffffff000000017fffffff000000017fffffff000000017fffffff000000017fffffff000000017fffffff00000001",
            // a huge element count and few bytes
            "0000000100000000000000197fffffff00000001",
        ];
        for case in cases {
            let value = hex(&case.replace(' ', ""));
            let result = explode(binary(1009), &value);
            assert!(
                matches!(result, Err(CodecError::Malformed { type_oid: 1009, .. })),
                "{case}: {result:?}"
            );
        }
        // A malformed element: an int8 of 4 bytes.
        let value = hex("00000001000000000000001400000001000000010000000400000001");
        assert!(matches!(
            explode(binary(1016), &value),
            Err(CodecError::Malformed { type_oid: INT8, .. })
        ));
    }

    // --- Records -------------------------------------------------------------

    /// record_send(ROW(1, 'x 4111111111111111', 4111111111111111::int8,
    /// '2024-05-06 07:08:09+00'::timestamptz, NULL::text))
    const ROW: &str = "00000005000000170000000400000001000002c1000000127820343131313131313131313131313131310000001400000008000e9b08a568f1c7000004a0000000080002bac28019884000000019ffffffff";

    #[test]
    fn record_fields_are_pieces_by_their_types() {
        assert_eq!(
            texts(&pieces(binary(RECORD), &hex(ROW))),
            [
                (Num, "1"),
                (Text, "x 4111111111111111"),
                (Num, "4111111111111111")
            ]
        );
    }

    #[test]
    fn edited_record_is_what_postgresql_sends() {
        // The same row with 'x 4111XXXXXXXX1111' and 4111110000001111.
        let out = edited(binary(RECORD), &hex(ROW), |p| {
            p[1] = b"x 4111XXXXXXXX1111".to_vec();
            p[2] = zeroed(&p[2], 6, 12);
        });
        assert_eq!(
            out,
            hex(
                "00000005000000170000000400000001000002c1000000127820343131315858585858585858313131310000001400000008000e9b08632ec057000004a0000000080002bac28019884000000019ffffffff"
            )
        );
    }

    #[test]
    fn nested_records_and_arrays_in_records() {
        // record_send(ROW(ROW('a 4111111111111111', 7), 'b')), then with
        // 'a ****' and 0: the inner record's length shrinks.
        let value = hex(
            "00000002000008c90000002a00000002000002c100000012612034313131313131313131313131313131000000170000000400000007000002c10000000162",
        );
        assert_eq!(
            texts(&pieces(binary(RECORD), &value)),
            [(Text, "a 4111111111111111"), (Num, "7"), (Text, "b")]
        );
        let out = edited(binary(RECORD), &value, |p| {
            p[0] = b"a ****".to_vec();
            p[1] = zeroed(&p[1], 0, 1);
        });
        assert_eq!(
            out,
            hex(
                "00000002000008c90000001e00000002000002c10000000661202a2a2a2a000000170000000400000000000002c10000000162"
            )
        );
        // record_send(ROW(ARRAY['4111111111111111']::text[],
        // ARRAY[1.5]::numeric[])), then with '4111XXXXXXXX1111' and 0.5.
        let value = hex(
            "00000002000003f10000002800000001000000000000001900000001000000010000001034313131313131313131313131313131000004cf000000240000000100000000000006a400000001000000010000000c000200000000000100011388",
        );
        assert_eq!(
            texts(&pieces(binary(RECORD), &value)),
            [(Text, "4111111111111111"), (Num, "1.5")]
        );
        let out = edited(binary(RECORD), &value, |p| {
            p[0] = b"4111XXXXXXXX1111".to_vec();
            p[1] = zeroed(&p[1], 0, 1);
        });
        assert_eq!(
            out,
            hex(
                "00000002000003f10000002800000001000000000000001900000001000000010000001034313131585858585858585831313131000004cf000000220000000100000000000006a400000001000000010000000a0001ffff000000011388"
            )
        );
    }

    #[test]
    fn record_array() {
        // array_send(ARRAY[ROW(1,'a'), ROW(2,'4111111111111111')])
        let value = hex(
            "0000000100000000000008c900000002000000010000001900000002000000170000000400000001000002c100000001610000002800000002000000170000000400000002000002c10000001034313131313131313131313131313131",
        );
        assert_eq!(
            texts(&pieces(binary(2287), &value)),
            [
                (Num, "1"),
                (Text, "a"),
                (Num, "2"),
                (Text, "4111111111111111")
            ]
        );
        let out = edited(binary(2287), &value, |p| p[3] = b"****".to_vec());
        // array_send(ARRAY[ROW(1,'a'), ROW(2,'****')])
        assert_eq!(
            out,
            hex(
                "0000000100000000000008c900000002000000010000001900000002000000170000000400000001000002c100000001610000001c00000002000000170000000400000002000002c1000000042a2a2a2a"
            )
        );
    }

    #[test]
    fn record_of_opaque_fields_has_no_pieces() {
        // record_send(ROW(true, '2024-01-01'::date))
        assert!(
            pieces(
                binary(RECORD),
                &hex("000000020000001000000001010000043a000000040000223e")
            )
            .is_empty()
        );
    }

    #[test]
    fn malformed_records_are_errors() {
        let cases = [
            "",
            "000000",
            // negative field count
            "ffffffff",
            // count 2, one field
            "0000000200000019000000016100",
            // count 1, trailing bytes
            "00000001000000190000000161ff",
            // field length beyond the value
            "0000000100000019000000ff61",
            // field length -5
            "0000000100000019fffffffb",
            // a huge field count and few bytes
            "7fffffff0000001900000000",
        ];
        for case in cases {
            let result = explode(binary(RECORD), &hex(case));
            assert!(
                matches!(result, Err(CodecError::Malformed { .. })),
                "{case}: {result:?}"
            );
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        // ROW(ROW(ROW(...ROW()...))) a hundred thousand deep: each level
        // one field, a record as long as the levels inside it.
        const DEPTH: usize = 100_000;
        let mut value = Vec::new();
        for level in 1..=DEPTH {
            let inside = (DEPTH - level) * 12 + 4;
            value.extend_from_slice(&1i32.to_be_bytes());
            value.extend_from_slice(&RECORD.to_be_bytes());
            value.extend_from_slice(&(inside as i32).to_be_bytes());
        }
        value.extend_from_slice(&0i32.to_be_bytes());
        let result = explode(binary(RECORD), &value);
        assert!(
            matches!(result, Err(CodecError::Malformed { why, .. }) if why.contains("deep")),
            "{result:?}"
        );
        // Ten levels are read.
        let ten_deep = &value[(DEPTH - 10) * 12..];
        assert!(pieces(binary(RECORD), ten_deep).is_empty());
        let mut out = Vec::new();
        assert!(
            binary(RECORD)
                .codec
                .reassemble(&value, &UserTypes::new(), &mut std::iter::empty(), &mut out)
                .is_err()
        );
    }

    // --- What is never sent, and what cannot be read --------------------------

    #[test]
    fn opaque_types_are_not_sent() {
        for type_oid in [16, 1082, 1114, 1184, 1186, 2950, 869, 829, 3220, 27] {
            assert!(!binary(type_oid).is_sent(), "{type_oid}");
        }
        for type_oid in [
            TEXT, INT8, NUMERIC, BYTEA, JSONB, RECORD, 1009, MOOD, 790, 600, 604,
        ] {
            assert!(binary(type_oid).is_sent(), "{type_oid}");
        }
    }

    #[test]
    fn undecodable_types_fail_even_inside_arrays_and_records() {
        // An enum value, and array_send(ARRAY['ok'::mood]) as its own array
        // type.
        assert!(matches!(
            explode(binary(MOOD), b"ok"),
            Err(CodecError::Undecodable { type_oid: MOOD })
        ));
        let array = hex("0000000100000000000040050000000100000001000000026f6b");
        assert!(matches!(
            explode(binary(MOOD_ARRAY), &array),
            Err(CodecError::Undecodable {
                type_oid: MOOD_ARRAY
            })
        ));
        // The same bytes as a text[] contradict the column's type.
        assert!(matches!(
            explode(binary(1009), &array),
            Err(CodecError::Malformed { .. })
        ));
        // record_send(ROW(1, 'ok'::mood))
        let record = hex("0000000200000017000000040000000100004005000000026f6b");
        assert!(matches!(
            explode(binary(RECORD), &record),
            Err(CodecError::Undecodable { type_oid: MOOD })
        ));
        // array_send(ARRAY[ROW('ok'::mood)])
        let records =
            hex("0000000100000000000008c900000001000000010000000e0000000100004005000000026f6b");
        assert!(matches!(
            explode(binary(2287), &records),
            Err(CodecError::Undecodable { type_oid: MOOD })
        ));
        // A NULL of an unreadable type hides nothing.
        assert!(pieces(binary(RECORD), &hex("0000000100004005ffffffff")).is_empty());
        let message = CodecError::Undecodable { type_oid: 16384 }.to_string();
        assert_eq!(
            message,
            "a binary value of type 16384 cannot be read to mask it"
        );
    }

    // --- User-defined types, from the catalog ---------------------------------

    /// Domains: over text, over int8, over a domain over text, over
    /// numeric, jsonb, bytea, int8[], date, bool and float8.
    const D_TEXT: u32 = 16400;
    const D_INT8: u32 = 16403;
    const D_D_TEXT: u32 = 16404;
    const D_NUMERIC: u32 = 16405;
    const D_JSONB: u32 = 16406;
    const D_BYTEA: u32 = 16407;
    const D_INT8_ARRAY: u32 = 16408;
    const D_DATE: u32 = 16409;
    const D_BOOL: u32 = 16412;
    const D_FLOAT8: u32 = 16416;
    /// Two domains over each other.
    const CYCLE_A: u32 = 16401;
    const CYCLE_B: u32 = 16402;
    /// A composite, a domain over it, and its array type.
    const COMPOSITE: u32 = 16410;
    const D_COMPOSITE: u32 = 16413;
    const COMPOSITE_ARRAY: u32 = 16411;
    /// An enum and its array type.
    const ENUM_ARRAY: u32 = 16420;
    const ENUM: u32 = 16421;
    /// Array types of domains: over int8, over date.
    const D_INT8_ARRAY_OF: u32 = 16414;
    const D_DATE_ARRAY_OF: u32 = 16415;
    /// A range from an extension, say.
    const OTHER: u32 = 16430;

    /// The test database's user-defined types, as the host would have
    /// looked them up.
    fn catalog() -> UserTypes {
        let mut types = UserTypes::new();
        for (type_oid, kind) in [
            (D_TEXT, UserType::Domain { base: TEXT }),
            (D_INT8, UserType::Domain { base: INT8 }),
            (D_D_TEXT, UserType::Domain { base: D_TEXT }),
            (D_NUMERIC, UserType::Domain { base: NUMERIC }),
            (D_JSONB, UserType::Domain { base: JSONB }),
            (D_BYTEA, UserType::Domain { base: BYTEA }),
            (D_INT8_ARRAY, UserType::Domain { base: 1016 }),
            (D_DATE, UserType::Domain { base: 1082 }),
            (D_BOOL, UserType::Domain { base: 16 }),
            (D_FLOAT8, UserType::Domain { base: 701 }),
            (CYCLE_A, UserType::Domain { base: CYCLE_B }),
            (CYCLE_B, UserType::Domain { base: CYCLE_A }),
            (COMPOSITE, UserType::Composite),
            (D_COMPOSITE, UserType::Domain { base: COMPOSITE }),
            (COMPOSITE_ARRAY, UserType::Array { element: COMPOSITE }),
            (ENUM, UserType::Enum),
            (ENUM_ARRAY, UserType::Array { element: ENUM }),
            (D_INT8_ARRAY_OF, UserType::Array { element: D_INT8 }),
            (D_DATE_ARRAY_OF, UserType::Array { element: D_DATE }),
            (MOOD, UserType::Enum),
            (MOOD_ARRAY, UserType::Array { element: MOOD }),
            (OTHER, UserType::Other),
        ] {
            types.insert(type_oid, kind);
        }
        types
    }

    /// array_send's format, built by hand: one dimension of `elements`
    /// (`None` for NULL), lower bound 1.
    fn array_of(element: u32, elements: &[Option<&[u8]>]) -> Vec<u8> {
        let mut value = Vec::new();
        value.extend_from_slice(&1i32.to_be_bytes());
        let has_null = elements.iter().any(Option::is_none);
        value.extend_from_slice(&i32::from(has_null).to_be_bytes());
        value.extend_from_slice(&element.to_be_bytes());
        value.extend_from_slice(&(elements.len() as i32).to_be_bytes());
        value.extend_from_slice(&1i32.to_be_bytes());
        for element in elements {
            match element {
                Some(bytes) => {
                    value.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                    value.extend_from_slice(bytes);
                }
                None => value.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        value
    }

    fn is_undecodable(
        result: Result<Vec<(PieceKind, Vec<u8>)>, CodecError>,
        type_oid: u32,
    ) -> bool {
        matches!(result, Err(CodecError::Undecodable { type_oid: t }) if t == type_oid)
    }

    #[test]
    fn a_domain_over_text_is_read_and_edited_as_text() {
        let types = catalog();
        for domain in [D_TEXT, D_D_TEXT] {
            let value = b"card 4111111111111111";
            assert_eq!(
                texts(&pieces(binary_in(&types, domain), value)),
                [(Text, "card 4111111111111111")]
            );
            let out = edited(binary_in(&types, domain), value, |p| {
                p[0] = b"card ****".to_vec()
            });
            assert_eq!(out, b"card ****");
            assert_eq!(
                text_in(&types, domain).codec,
                Codec::Verbatim {
                    type_oid: domain,
                    kind: Text
                }
            );
            assert!(binary_in(&types, domain).is_sent());
        }
    }

    #[test]
    fn a_domain_over_int8_is_a_number_in_both_formats() {
        let types = catalog();
        let value = hex("000e9b08a568f1c7");
        assert_eq!(
            texts(&pieces(binary_in(&types, D_INT8), &value)),
            [(Num, "4111111111111111")]
        );
        // As int8's own: 4111111111111111 -> 4111110000001111.
        let out = edited(binary_in(&types, D_INT8), &value, |p| {
            p[0] = zeroed(&p[0], 6, 12)
        });
        assert_eq!(out, hex("000e9b08632ec057"));
        assert_eq!(
            pieces(text_in(&types, D_INT8), b"4111111111111111"),
            [(Num, b"4111111111111111".to_vec())]
        );
        let out = edited(text_in(&types, D_INT8), b"4111111111111111", |p| {
            p[0] = zeroed(&p[0], 6, 12)
        });
        assert_eq!(out, b"4111110000001111");
    }

    #[test]
    fn text_format_domains_are_pieces_of_their_base_types_kind() {
        let types = catalog();
        let kind = |type_oid| match text_in(&types, type_oid).codec {
            Codec::Verbatim { kind, .. } => Some(kind),
            _ => None,
        };
        assert_eq!(kind(D_NUMERIC), Some(Num));
        assert_eq!(kind(D_INT8_ARRAY), Some(Num));
        assert_eq!(kind(D_INT8_ARRAY_OF), Some(Num));
        assert_eq!(kind(D_JSONB), Some(Json));
        for type_oid in [D_TEXT, ENUM, ENUM_ARRAY, COMPOSITE, COMPOSITE_ARRAY, D_DATE] {
            assert_eq!(kind(type_oid), Some(Text), "{type_oid}");
        }
        // A domain over bytea shows bytea's hex.
        assert_eq!(text_in(&types, D_BYTEA).codec, Codec::TextBytea);
        assert_eq!(
            pieces(text_in(&types, D_BYTEA), b"\\x34313131"),
            [(Bytes, b"4111".to_vec())]
        );
        // An array of a domain over int8 stays an array after zeroing.
        let out = edited(
            text_in(&types, D_INT8_ARRAY_OF),
            b"{4111111111111111}",
            |p| p[0] = zeroed(&p[0], 5, 13),
        );
        assert_eq!(out, b"{4111000000001111}");
    }

    #[test]
    fn binary_domains_over_other_built_ins_read_as_them() {
        let types = catalog();
        // jsonb_send('{"pan":"4111111111111111"}'): JSON, not jsonpath's text.
        let value = hex("017b2270616e223a202234313131313131313131313131313131227d");
        assert_eq!(
            texts(&pieces(binary_in(&types, D_JSONB), &value)),
            [(Json, r#"{"pan": "4111111111111111"}"#)]
        );
        // numeric_send(4111111111111111.00)
        assert_eq!(
            texts(&pieces(
                binary_in(&types, D_NUMERIC),
                &hex("0004000300000002100f045704570457")
            )),
            [(Num, "4111111111111111.00")]
        );
        assert_eq!(
            pieces(binary_in(&types, D_BYTEA), &hex("34313131")),
            [(Bytes, b"4111".to_vec())]
        );
        // A domain over int8[]: array_send(ARRAY[[1,2],[3,NULL]]::int8[]).
        let value = hex(
            "00000002000000010000001400000002000000010000000200000001000000080000000000000001000000080000000000000002000000080000000000000003ffffffff",
        );
        assert_eq!(
            texts(&pieces(binary_in(&types, D_INT8_ARRAY), &value)),
            [(Num, "1"), (Num, "2"), (Num, "3")]
        );
    }

    #[test]
    fn domains_over_opaque_types_are_not_sent() {
        let types = catalog();
        for type_oid in [D_DATE, D_BOOL, D_DATE_ARRAY_OF] {
            assert!(!binary_in(&types, type_oid).is_sent(), "{type_oid}");
            // Every text-format value is sent.
            assert!(text_in(&types, type_oid).is_sent(), "{type_oid}");
        }
        // date_send('2024-01-01') as a domain: copied, no piece.
        assert!(pieces(binary_in(&types, D_DATE), &hex("0000223e")).is_empty());
        let dates = array_of(D_DATE, &[Some(&hex("0000223e")), None]);
        assert!(pieces(binary_in(&types, D_DATE_ARRAY_OF), &dates).is_empty());
        for type_oid in [D_INT8, ENUM, ENUM_ARRAY, COMPOSITE, D_INT8_ARRAY_OF, OTHER] {
            assert!(binary_in(&types, type_oid).is_sent(), "{type_oid}");
        }
    }

    #[test]
    fn a_domain_cycle_is_undecodable_not_a_hang() {
        let types = catalog();
        for type_oid in [CYCLE_A, CYCLE_B] {
            assert!(is_undecodable(
                explode(binary_in(&types, type_oid), b"x"),
                type_oid
            ));
            assert!(binary_in(&types, type_oid).is_sent());
            assert!(reassemble(binary_in(&types, type_oid), b"x", &[b"x".to_vec()]).is_err());
            // In text format it is text, as any value is.
            assert_eq!(
                pieces(text_in(&types, type_oid), b"x"),
                [(Text, b"x".to_vec())]
            );
        }
        // A domain over itself.
        let mut types = UserTypes::new();
        types.insert(16440, UserType::Domain { base: 16440 });
        assert!(is_undecodable(
            explode(binary_in(&types, 16440), b"x"),
            16440
        ));
    }

    #[test]
    fn domain_chains_are_followed_as_far_as_the_limit() {
        // 16500 is a domain over 16501, ... over 16500 + length - 1, which
        // is a domain over text.
        let chain = |length: u32| {
            let mut types = UserTypes::new();
            for link in 0..length {
                let base = if link + 1 == length {
                    TEXT
                } else {
                    16501 + link
                };
                types.insert(16500 + link, UserType::Domain { base });
            }
            types
        };
        let longest = chain(MAX_DOMAIN_CHAIN as u32);
        assert_eq!(
            texts(&pieces(binary_in(&longest, 16500), b"4111")),
            [(Text, "4111")]
        );
        let too_long = chain(MAX_DOMAIN_CHAIN as u32 + 1);
        assert!(is_undecodable(
            explode(binary_in(&too_long, 16500), b"4111"),
            16500
        ));
        // From one link in, it is short enough again.
        assert!(explode(binary_in(&too_long, 16501), b"4111").is_ok());
    }

    #[test]
    fn an_enum_is_its_labels_text() {
        let types = catalog();
        let label = b"card 4111111111111111";
        assert_eq!(
            texts(&pieces(binary_in(&types, ENUM), label)),
            [(Text, "card 4111111111111111")]
        );
        let out = edited(binary_in(&types, ENUM), label, |p| {
            p[0] = b"card ****".to_vec()
        });
        assert_eq!(out, b"card ****");
        assert_eq!(
            pieces(text_in(&types, ENUM), label),
            [(Text, label.to_vec())]
        );
    }

    #[test]
    fn an_enum_array_is_read_element_by_element() {
        let types = catalog();
        // ARRAY['ok', NULL, '4111111111111111']::enum[] as array_send
        // writes it, its header naming the enum.
        let value = array_of(ENUM, &[Some(b"ok"), None, Some(b"4111111111111111")]);
        assert_eq!(
            value,
            hex(
                "0000000100000001000040250000000300000001000000026f6bffffffff0000001034313131313131313131313131313131"
            )
        );
        assert_eq!(
            texts(&pieces(binary_in(&types, ENUM_ARRAY), &value)),
            [(Text, "ok"), (Text, "4111111111111111")]
        );
        let out = edited(binary_in(&types, ENUM_ARRAY), &value, |p| {
            p[1] = b"****".to_vec()
        });
        assert_eq!(out, array_of(ENUM, &[Some(b"ok"), None, Some(b"****")]));
        assert!(binary_in(&types, ENUM_ARRAY).is_sent());
        // The header must name the array type's element, as for built-ins.
        let text_elements = array_of(TEXT, &[Some(b"ok")]);
        assert!(matches!(
            explode(binary_in(&types, ENUM_ARRAY), &text_elements),
            Err(CodecError::Malformed { .. })
        ));
    }

    #[test]
    fn an_array_of_a_domain_over_int8_zeroes_as_int8s_do() {
        let types = catalog();
        let value = array_of(D_INT8, &[Some(&hex("000e9b08a568f1c7")), None]);
        assert_eq!(
            texts(&pieces(binary_in(&types, D_INT8_ARRAY_OF), &value)),
            [(Num, "4111111111111111")]
        );
        let out = edited(binary_in(&types, D_INT8_ARRAY_OF), &value, |p| {
            p[0] = zeroed(&p[0], 6, 12)
        });
        assert_eq!(
            out,
            array_of(D_INT8, &[Some(&hex("000e9b08632ec057")), None])
        );
    }

    #[test]
    fn a_composite_is_read_as_a_record() {
        let types = catalog();
        for type_oid in [COMPOSITE, D_COMPOSITE] {
            assert_eq!(
                texts(&pieces(binary_in(&types, type_oid), &hex(ROW))),
                texts(&pieces(binary(RECORD), &hex(ROW)))
            );
            let edit = |p: &mut Vec<Vec<u8>>| {
                p[1] = b"x 4111XXXXXXXX1111".to_vec();
                p[2] = zeroed(&p[2], 6, 12);
            };
            assert_eq!(
                edited(binary_in(&types, type_oid), &hex(ROW), edit),
                edited(binary(RECORD), &hex(ROW), edit)
            );
            assert_eq!(
                pieces(text_in(&types, type_oid), b"(1,x)"),
                [(Text, b"(1,x)".to_vec())]
            );
        }
    }

    #[test]
    fn record_fields_of_user_types_are_read_by_the_catalog() {
        let types = catalog();
        // record_send(ROW(1, 'x 4111111111111111'::d_text)), the field
        // naming the domain, as record_send writes a column's type.
        let value = hex(
            "000000020000001700000004000000010000401000000012782034313131313131313131313131313131",
        );
        for column in [binary_in(&types, COMPOSITE), binary_in(&types, RECORD)] {
            assert_eq!(
                texts(&pieces(column, &value)),
                [(Num, "1"), (Text, "x 4111111111111111")]
            );
            let out = edited(column, &value, |p| p[1] = b"x ****".to_vec());
            assert_eq!(
                out,
                hex("00000002000000170000000400000001000040100000000678202a2a2a2a")
            );
        }
        // Without the catalog the field is undecodable, as before.
        assert!(is_undecodable(explode(binary(RECORD), &value), D_TEXT));
        // The mood fixtures from before, now that mood is known:
        // record_send(ROW(1, 'ok'::mood)), array_send(ARRAY['ok'::mood]),
        // array_send(ARRAY[ROW('ok'::mood)]).
        let record = hex("0000000200000017000000040000000100004005000000026f6b");
        assert_eq!(
            texts(&pieces(binary_in(&types, RECORD), &record)),
            [(Num, "1"), (Text, "ok")]
        );
        let array = hex("0000000100000000000040050000000100000001000000026f6b");
        assert_eq!(
            texts(&pieces(binary_in(&types, MOOD_ARRAY), &array)),
            [(Text, "ok")]
        );
        let records =
            hex("0000000100000000000008c900000001000000010000000e0000000100004005000000026f6b");
        assert_eq!(
            texts(&pieces(binary_in(&types, 2287), &records)),
            [(Text, "ok")]
        );
    }

    #[test]
    fn a_composite_array_is_an_array_of_records() {
        let types = catalog();
        // array_send(ARRAY[ROW(1,'a'), ROW(2,'4111111111111111')]) with the
        // composite's OID (0x401a) in place of record's.
        let fixture = "00000001000000000000%%%%00000002000000010000001900000002000000170000000400000001000002c100000001610000002800000002000000170000000400000002000002c10000001034313131313131313131313131313131";
        let value = hex(&fixture.replace("%%%%", "401a"));
        assert_eq!(
            texts(&pieces(binary_in(&types, COMPOSITE_ARRAY), &value)),
            texts(&pieces(
                binary(2287),
                &hex(&fixture.replace("%%%%", "08c9"))
            ))
        );
    }

    #[test]
    fn domains_are_no_level_of_nesting() {
        // `levels` records of one field around an empty one, each field's
        // type a domain over the composite: as deep as record fields are.
        let nested = |levels: usize| {
            let mut value = Vec::new();
            for level in 1..=levels {
                let inside = (levels - level) * 12 + 4;
                value.extend_from_slice(&1i32.to_be_bytes());
                value.extend_from_slice(&D_COMPOSITE.to_be_bytes());
                value.extend_from_slice(&(inside as i32).to_be_bytes());
            }
            value.extend_from_slice(&0i32.to_be_bytes());
            value
        };
        let types = catalog();
        assert!(pieces(binary_in(&types, D_COMPOSITE), &nested(MAX_DEPTH - 1)).is_empty());
        let result = explode(binary_in(&types, D_COMPOSITE), &nested(MAX_DEPTH));
        assert!(
            matches!(result, Err(CodecError::Malformed { why, .. }) if why.contains("deep")),
            "{result:?}"
        );
    }

    #[test]
    fn types_not_in_the_catalog_stay_undecodable() {
        let types = catalog();
        // Unknown, of another kind, or over / of one that is.
        let mut over_unknown = catalog();
        over_unknown.insert(16441, UserType::Domain { base: 16500 });
        over_unknown.insert(16442, UserType::Array { element: 16500 });
        over_unknown.insert(16443, UserType::Domain { base: OTHER });
        for type_oid in [16500, OTHER, 16441, 16443] {
            assert!(
                is_undecodable(explode(binary_in(&over_unknown, type_oid), b"x"), type_oid),
                "{type_oid}"
            );
            assert!(binary_in(&over_unknown, type_oid).is_sent());
        }
        let array = array_of(16500, &[Some(b"x")]);
        assert!(is_undecodable(
            explode(binary_in(&over_unknown, 16442), &array),
            16500
        ));
        // A NULL of it hides nothing.
        let nulls = array_of(16500, &[None]);
        assert!(pieces(binary_in(&over_unknown, 16442), &nulls).is_empty());
        // Every user type of the catalog, with no catalog.
        for type_oid in [D_TEXT, D_INT8, ENUM, ENUM_ARRAY, COMPOSITE, MOOD] {
            assert!(is_undecodable(explode(binary(type_oid), b"x"), type_oid));
            // With it, each is read (if not always as a valid value).
            let read = explode(binary_in(&types, type_oid), b"x");
            assert!(
                !matches!(read, Err(CodecError::Undecodable { .. })),
                "{type_oid}"
            );
        }
    }

    #[test]
    fn the_catalog_never_overrides_built_in_types() {
        let mut types = UserTypes::new();
        types.insert(TEXT, UserType::Other);
        types.insert(1082, UserType::Enum);
        // int4range: built in, and undecodable whatever the catalog says.
        types.insert(3904, UserType::Enum);
        types.insert(INT8, UserType::Domain { base: TEXT });
        assert_eq!(
            texts(&pieces(binary_in(&types, TEXT), b"4111")),
            [(Text, "4111")]
        );
        assert!(!binary_in(&types, 1082).is_sent());
        assert!(is_undecodable(explode(binary_in(&types, 3904), b"x"), 3904));
        assert_eq!(
            texts(&pieces(binary_in(&types, INT8), &hex("000e9b08a568f1c7"))),
            [(Num, "4111111111111111")]
        );
        assert_eq!(text_in(&types, INT8).codec, text(INT8).codec);
    }

    #[test]
    fn needs_lookup_is_for_user_oids_not_known_yet() {
        let types = catalog();
        assert!(types.needs_lookup(16500));
        assert!(types.needs_lookup(FIRST_NORMAL_OBJECT_ID));
        for type_oid in [
            TEXT,
            INT8,
            RECORD,
            3904,
            1009,
            0,
            FIRST_NORMAL_OBJECT_ID - 1,
        ] {
            assert!(!types.needs_lookup(type_oid), "{type_oid}");
        }
        for type_oid in [D_TEXT, ENUM, ENUM_ARRAY, COMPOSITE, OTHER, CYCLE_A] {
            assert!(!types.needs_lookup(type_oid), "{type_oid}");
        }
        assert!(UserTypes::new().needs_lookup(D_TEXT));
        assert_eq!(types.get(ENUM), Some(UserType::Enum));
        assert_eq!(types.get(16500), None);
        assert!(!types.is_empty() && UserTypes::new().is_empty());
        assert_eq!(types.len(), 22);
    }

    #[test]
    fn missing_references_are_unknown_bases_and_elements() {
        let mut types = UserTypes::new();
        types.insert(16450, UserType::Domain { base: 16460 });
        types.insert(16451, UserType::Array { element: 16461 });
        // Known or built-in references, and kinds that refer to nothing.
        types.insert(16452, UserType::Domain { base: INT8 });
        types.insert(16453, UserType::Array { element: 16450 });
        types.insert(16454, UserType::Domain { base: 16451 });
        types.insert(16455, UserType::Array { element: 16460 });
        types.insert(16456, UserType::Composite);
        types.insert(16457, UserType::Enum);
        types.insert(16458, UserType::Other);
        assert_eq!(types.missing_references(), [16460, 16461]);
        types.insert(16460, UserType::Enum);
        types.insert(16461, UserType::Domain { base: 3904 });
        assert!(types.missing_references().is_empty());
        assert!(catalog().missing_references().is_empty());
    }

    // --- Reassembly's own failures ---------------------------------------------

    #[test]
    fn too_few_pieces_is_an_error() {
        assert!(matches!(
            reassemble(binary(RECORD), &hex(ROW), &[b"1".to_vec()]),
            Err(CodecError::MissingPiece { .. })
        ));
        assert!(matches!(
            reassemble(text(TEXT), b"x", &[]),
            Err(CodecError::MissingPiece { type_oid: TEXT })
        ));
    }

    /// Every fixture, cut short or with a byte changed, gives an error or
    /// pieces that put back unchanged give it back exactly; never a panic.
    #[test]
    fn damaged_values_never_panic() {
        let fixtures: [(u32, &str); 8] = [
            (RECORD, ROW),
            (
                1016,
                "00000002000000010000001400000002000000010000000200000001000000080000000000000001000000080000000000000002000000080000000000000003ffffffff",
            ),
            (
                1231,
                "0000000100000000000006a40000000200000001000000120005000300000001100f04570457045713880000000a00010000400000000001",
            ),
            (
                NUMERIC,
                "000b000700000009000c0d801ed204d2162e23340d801ed204d2162e2328",
            ),
            (
                2287,
                "0000000100000000000008c900000002000000010000001900000002000000170000000400000001000002c100000001610000002800000002000000170000000400000002000002c10000001034313131313131313131313131313131",
            ),
            (
                JSONB,
                "017b2270616e223a202234313131313131313131313131313131227d",
            ),
            (
                RECORD,
                "00000002000003f10000002800000001000000000000001900000001000000010000001034313131313131313131313131313131000004cf000000240000000100000000000006a400000001000000010000000c000200000000000100011388",
            ),
            (FLOAT8, "42f580bb2ea88750"),
        ];
        let check = |codec: Column, value: &[u8]| {
            if let Ok(pieces) = explode(codec, value) {
                let unchanged: Vec<Vec<u8>> = pieces.into_iter().map(|(_, p)| p).collect();
                assert_eq!(reassemble(codec, value, &unchanged).unwrap(), value);
            }
        };
        for (type_oid, fixture) in fixtures {
            let value = hex(fixture);
            for len in 0..value.len() {
                let cut = &value[..len];
                check(binary(type_oid), cut);
                if matches!(type_oid, RECORD | 1016 | 1231 | NUMERIC | 2287 | FLOAT8) {
                    assert!(
                        explode(binary(type_oid), cut).is_err(),
                        "{fixture} cut to {len}"
                    );
                }
            }
            for at in 0..value.len() {
                for byte in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                    let mut damaged = value.clone();
                    damaged[at] = byte;
                    check(binary(type_oid), &damaged);
                }
            }
        }
    }
}
