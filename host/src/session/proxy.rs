//! The statement loop: client messages go up, server messages come down,
//! and sluice sees each one on the way.
//!
//! One task drives both sockets. Each turn it writes what is pending, then
//! reads whichever side has data, frames what it read and decides per
//! message: pass it on as the bytes it came in, rewrite it, or refuse it.
//! Writes are coalesced (everything decided from one read goes out in one
//! write), and each direction stops reading while the other side is slow to
//! take what it already has, so a slow client slows the reading of its
//! results and memory per session stays bounded whatever the result size.
//!
//! Rows (DataRow) and COPY data stream through, a large one in pieces,
//! unless they must be masked: then a run of whole ones is held at a time.
//! Messages sluice must read whole (errors, notices, status) are held up to
//! `max_held_server_message_bytes`.
//!
//! ## Cycles
//! The client's stream divides into cycles, each ended by a message the
//! server answers with ReadyForQuery: Query, Sync, and FunctionCall. sluice
//! keeps the cycles it has forwarded in order, so it knows when the server
//! is idle, which ErrorResponse belongs to a statement it refused, and when
//! a draining gateway may close the session.
//!
//! ## Hooks
//! Every statement goes to the policy plugins before it can run: a Query's
//! text when it arrives, a prepared statement's at each Bind (so the policy
//! in force at the time decides, even for a statement prepared before a
//! reload). Each statement is first analysed (see [`crate::analysis`]); a
//! string of several statements runs only if every one of them may, and an
//! `EXECUTE` or a Bind is judged as the prepared statement it runs (see
//! [`super::prepared`]). Result rows go to the masking plugins before
//! the client sees them, and so do the texts of errors and notices. To mask
//! rows the proxy must know their columns: a simple query's RowDescription
//! says, and for an Execute sluice asks the server itself (a Describe of the
//! portal sent just before, its answer kept from the client) unless the
//! client just asked the same. COPY data carries no description at all:
//! before a COPY TO STDOUT — in a simple query, or parsed at the start of
//! an extended-protocol cycle — sluice describes what the COPY reads, in a
//! cycle of its own whose replies it keeps from the client, so
//! COPY data is read by type: binary tuples, and text and csv rows field by
//! field under the statement's options (see [`crate::masking::copy`] and
//! [`crate::masking::copy_text`]). Binary values of user-defined types are
//! read through the database's catalog, which sluice looks up on a
//! connection of its own the first time it meets a type
//! ([`crate::masking::types`]).
//!
//! ## Refusals
//! When sluice refuses a whole cycle (a statement a policy denies, or a
//! FunctionCall, which calls server functions by OID with no SQL to judge)
//! it does not answer on its own. It sends the server a statement that fails
//! to parse in its place and rewrites the server's error into its own. The server thereby produces the
//! ErrorResponse and ReadyForQuery at the right place among the replies it
//! still owes, and a refusal inside a transaction block aborts the
//! transaction on both sides, exactly as a failing statement would.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::{Context, Poll};

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use pgwire::messages::extendedquery::{Describe, Parse};
use pgwire::messages::simplequery::Query;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::Fatal;
use super::cancel::UpstreamKey;
use super::cursors::Cursors;
use super::prepared::Prepared;
use super::startup::{Established, LoggedIn};
use crate::analysis::{Analysed, Analyser, Effect};
use crate::approval::{self, Approvals, Resolution};
use crate::audit::{self, ApprovalRecord, Decision, Protocol};
use crate::config::Hook;
use crate::gateway::{Phase, Shared};
use crate::masking::copy_text::{self, TextFormat};
use crate::masking::messages;
use crate::masking::rows::{self, ResultMask};
use crate::plugin::SessionInfo;
use crate::plugin::bindings::approval::exports::sluice::gateway::approval::Ticket;
use crate::plugin::bindings::types::{TableRef, ValueFormat, Wrapper};
use crate::plugin::{Fault, PluginSet, Verdict};
use crate::protocol::frame::{self, Frame, Header};
use crate::protocol::reply::{self, Severity};
use crate::protocol::{backend, frontend};
use crate::protocol::{sqlstate, tag};
use crate::telemetry::{KeyValue, SpanKind, Trace, attribute};
use crate::transport::Stream;

/// Stop reading one side while this much waits to be written to the other.
const HIGH_WATER: usize = 256 << 10;
/// Bytes asked of the kernel per read.
const READ_CHUNK: usize = 32 << 10;
/// Buffers that grew past this for a large message are given back once
/// empty, so idle sessions stay small.
const KEEP_CAPACITY: usize = 128 << 10;
/// Most policy verdicts a session remembers by statement shape.
const MAX_REMEMBERED_VERDICTS: usize = 256;

/// The query sent upstream in place of a refused cycle. It fails to parse,
/// so it runs nothing, and its text explains itself in the server's log.
/// One word, so the server's syntax error names all of it: that is how
/// its error is told from an earlier one of the same cycle (see
/// [`is_stand_in_error`]).
const REFUSAL_STAND_IN: &str = "sluice_refused_this_statement";
/// The name the stand-in is parsed under in place of a refused Bind: the
/// Parse fails whether or not a statement of that name exists, and leaves
/// the client's own statements (the unnamed one included) untouched.
const REFUSAL_STATEMENT: &str = "sluice_refused";
/// The DETAIL of a constraint violation whose row values a session may not
/// see (see `Proxy::withhold_row_values`).
const ROW_VALUES_WITHHELD: &str = "sluice withholds the row's values from this session: \
     [errors] row_values_for names the groups whose sessions see them";

/// A cycle forwarded to the server and not yet answered with ReadyForQuery.
#[derive(Debug)]
struct Cycle {
    /// A simple Query (rather than extended-protocol messages ending in Sync).
    simple: bool,
    /// Set when sluice refused a statement of the cycle: the server's first
    /// error in it is replaced by this one.
    refusal: Option<Fatal>,
    /// sluice's own cycle, a describe of a COPY's source: its replies are
    /// read by sluice (the columns go here) and never reach the client.
    injected: Option<Arc<CopySource>>,
    /// The recorded (or traced) statements the cycle runs, and what
    /// becomes of them.
    audit: Option<CycleOutcome>,
    /// The cycle's one Execute (or its simple Query) was its last message
    /// but for Flush: a COPY FROM STDIN it starts can be followed.
    ends_at_its_only_execute: bool,
    /// The server ignored the cycle's Sync, which reached it while it read
    /// COPY data: the ReadyForQuery of the next cycle ends both.
    sync_ignored: bool,
    /// The plugin set its statements were judged under, and its
    /// generation: its replies are masked under the same one.
    plugins: Arc<PluginSet>,
    plugins_generation: u64,
}

/// Where a COPY FROM STDIN stands. While the server reads COPY data it
/// ignores Sync and Flush and fails the COPY on any other message, which
/// changes how many ReadyForQuery messages it sends: sluice follows it
/// to keep its count of cycles true (see [`Proxy::copy_in_started`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CopyIn {
    /// No COPY FROM STDIN under way.
    Idle,
    /// The server said CopyInResponse; the client has not ended its data.
    /// `sync_next`: the COPY's own Sync was ignored, so the next cycle
    /// must hold nothing but the Sync that ends the COPY's cycle.
    Receiving { sync_next: bool },
    /// The client ended the data of a COPY whose Sync was ignored: only a
    /// Sync (or Flush) may come before that Sync.
    SyncNext,
}

/// What the statements of one cycle came to, gathered from the server's
/// replies for the audit trail's outcome record.
#[derive(Debug)]
struct CycleOutcome {
    /// The statements' numbers in the session.
    statements: Vec<u64>,
    started: std::time::Instant,
    /// CommandComplete tags, in order.
    tags: Vec<String>,
    rows: u64,
    /// DataRows since the last CommandComplete or PortalSuspended: an
    /// Execute that stops at its row limit reports no count of its own.
    rows_unreported: u64,
    /// Executes that stopped at their row limit (PortalSuspended): each
    /// left its portal with rows a later Execute reads.
    suspended: u32,
    /// The error that ended the cycle: SQLSTATE and message (not yet
    /// masked).
    error: Option<(String, String)>,
    /// The rows returned, as the client got them (after masking): of each
    /// result (a statement's, or an Execute's part of one) those that fit
    /// in `result_bytes`, as long as the cycle's [`MAX_CYCLE_DATA_BYTES`]
    /// last. A row of a COPY TO STDOUT is one value:
    /// its line (text, csv) or its bytes (binary).
    data: Vec<Vec<Option<String>>>,
    /// Of each result ended so far, in order (a CommandComplete or a
    /// PortalSuspended ends one): how many rows of `data` are its, and
    /// whether it returned more than were kept.
    data_results: Vec<audit::ResultData>,
    /// The result being returned: its rows kept, and whether it was cut.
    current: audit::ResultData,
    keep_data: bool,
    /// The cap on one result's rows, and the room left in the current
    /// result and in the cycle.
    result_bytes: usize,
    result_room: usize,
    cycle_room: usize,
    /// The statements' spans (none when not traced), ended with the cycle.
    traces: Vec<Trace>,
    /// Time spent masking the cycle's results, for its masking span.
    masking: Option<MaskingTime>,
    /// The plugin set the cycle was judged under, which masks its error
    /// for the record.
    plugins: Arc<PluginSet>,
}

/// When a cycle's masking began and last ended, and how long it ran in
/// all (it runs in bursts, between the server's reads).
#[derive(Debug)]
struct MaskingTime {
    first: std::time::SystemTime,
    last: std::time::SystemTime,
    busy: std::time::Duration,
}

impl CycleOutcome {
    /// An outcome to gather, keeping up to `result_bytes` bytes of rows of
    /// each result.
    fn new(result_bytes: usize, plugins: Arc<PluginSet>) -> CycleOutcome {
        CycleOutcome {
            statements: Vec::new(),
            started: std::time::Instant::now(),
            tags: Vec::new(),
            rows: 0,
            rows_unreported: 0,
            suspended: 0,
            error: None,
            data: Vec::new(),
            data_results: Vec::new(),
            current: audit::ResultData::default(),
            keep_data: result_bytes > 0,
            result_bytes,
            result_room: result_bytes,
            cycle_room: MAX_CYCLE_DATA_BYTES.max(result_bytes),
            traces: Vec::new(),
            masking: None,
            plugins,
        }
    }

    /// The cycle is judged again under `plugins` (reloaded while a
    /// statement of it waited for approval): they mask its error for the
    /// record, and its rows are kept only if they mask them.
    fn judged_again_under(&mut self, plugins: &Arc<PluginSet>) {
        self.plugins = Arc::clone(plugins);
        if !plugins.masks() {
            self.keep_data = false;
        }
    }

    /// Whether any of the cycle's statements is traced.
    fn traced(&self) -> bool {
        !self.traces.is_empty()
    }

    /// Adds a burst of masking that began at `began` and ends now.
    fn note_masking(&mut self, began: std::time::Instant) {
        let busy = began.elapsed();
        let now = std::time::SystemTime::now();
        let time = self.masking.get_or_insert(MaskingTime {
            first: now - busy,
            last: now,
            busy: std::time::Duration::ZERO,
        });
        time.last = now;
        time.busy += busy;
    }

    /// Notes what `messages` (whole messages, as sent to the client) say
    /// about the cycle, in one pass: command tags and their row counts,
    /// and the rows themselves while they fit — text values as they are,
    /// binary ones as hex; COPY data as its rows' lines.
    fn note_sent(&mut self, messages: &[u8]) {
        let mut at = 0;
        while let Ok(Some(header)) = frame::peek_header(&messages[at..], usize::MAX) {
            let Some(body) = messages.get(at + frame::HEADER_LEN..at + header.total()) else {
                break;
            };
            if header.tag == tag::DATA_ROW {
                self.rows_unreported += 1;
            }
            match header.tag {
                tag::COMMAND_COMPLETE => {
                    let text = String::from_utf8_lossy(body.strip_suffix(b"\0").unwrap_or(body));
                    self.rows += rows_of(&text);
                    self.rows_unreported = 0;
                    self.tags.push(text.into_owned());
                    self.result_over();
                }
                tag::PORTAL_SUSPENDED => {
                    self.rows += std::mem::take(&mut self.rows_unreported);
                    self.suspended += 1;
                    self.result_over();
                }
                tag::DATA_ROW | tag::COPY_DATA if self.keep_data && !self.current.truncated => {
                    let row = if header.tag == tag::DATA_ROW {
                        row_as_text(body)
                    } else {
                        Some(copy_row_as_text(body))
                    };
                    match row {
                        Some((row, size)) if size <= self.result_room.min(self.cycle_room) => {
                            self.result_room -= size;
                            self.cycle_room -= size;
                            self.data.push(row);
                            self.current.rows += 1;
                        }
                        _ => {
                            self.current.truncated = true;
                        }
                    }
                }
                _ => {}
            }
            at += header.total();
        }
    }
}

impl CycleOutcome {
    /// A result is over: the rows that come next are another's, with room
    /// of their own.
    fn result_over(&mut self) {
        if self.keep_data {
            self.data_results.push(std::mem::take(&mut self.current));
        }
        self.result_room = self.result_bytes;
    }

    /// The results' shares of the kept rows, the one an error cut short
    /// included.
    fn data_results(&self) -> Vec<audit::ResultData> {
        let mut results = self.data_results.clone();
        if self.current.rows > 0 || self.current.truncated {
            results.push(self.current);
        }
        results
    }
}

/// Most bytes of returned rows one cycle's record keeps, whatever the cap
/// per result: a pipeline of thousands of statements must not hold
/// thousands of caps in memory until its outcome is written.
const MAX_CYCLE_DATA_BYTES: usize = 1 << 20;

/// A DataRow body's values as text (see [`value_as_text`]), and their size
/// in bytes, counted as the wire counts them (a row's column count, each
/// value's length): a row of empty values, or of none, still costs room,
/// or a result of millions of them would all be kept.
fn row_as_text(body: &[u8]) -> Option<(Vec<Option<String>>, usize)> {
    let values = backend::data_row_values(body)?;
    let mut size = 2;
    let row = values
        .into_iter()
        .map(|value| {
            let text = value.map(value_as_text);
            size += 4 + text.as_ref().map_or(0, String::len);
            text
        })
        .collect();
    Some((row, size))
}

/// A CopyData body of a COPY TO STDOUT as a one-value row: a text or csv
/// line without its newline, binary data as hex; and its size in bytes.
fn copy_row_as_text(body: &[u8]) -> (Vec<Option<String>>, usize) {
    let line = value_as_text(body.strip_suffix(b"\n").unwrap_or(body));
    // Its newline: an empty line costs room too.
    let size = line.len() + 1;
    (vec![Some(line)], size)
}

/// A value as the record keeps it: valid UTF-8 as it is, anything else as
/// `\x` hex, as PostgreSQL writes bytea.
fn value_as_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => format!("\\x{}", crate::audit::chain::encode_hex(bytes)),
    }
}

/// A Bind of a portal that is, or was, one of a COPY statement or a
/// [`NamingPortal`], whose BindComplete has not come: until it does, the
/// portal is what it was (the server refuses a Bind of a named portal that
/// exists, and skips one after an error).
#[derive(Debug)]
struct PortalBind {
    /// The cycle the Bind was sent in.
    cycle: u64,
    portal: String,
    /// Its place among the Binds of its cycle: its BindComplete is the
    /// cycle's `index`-th.
    index: u32,
    /// What the portal runs once bound: not a COPY (`None`), or a COPY
    /// that sluice reads (`Some(Some(..))`) or cannot (`Some(None)`).
    copy: Option<Option<crate::analysis::CopyOut>>,
    /// Whether it is a [`NamingPortal`] once bound.
    names_prepared: bool,
    /// When this Bind bound the portal anew for the audit trail (see
    /// `Proxy::portal_statements`): what it bound, and what the portal was
    /// bound from before, given back if the server skips or refuses the
    /// Bind, so that the old portal's outcomes stay its own.
    rebound: Option<Rebound>,
}

/// A portal bound anew for the audit trail by a Bind not yet answered.
#[derive(Debug, Clone, Copy)]
struct Rebound {
    bound: BoundPortal,
    previously: Option<BoundPortal>,
}

/// sluice's describe of a COPY's source, sent just ahead of the client's
/// cycle that runs the COPY.
#[derive(Debug)]
struct CopyDescribe {
    /// The client's cycle it was sent ahead of.
    cycle: u64,
    copy: crate::analysis::CopyOut,
    source: Arc<CopySource>,
}

/// What sluice learns of a COPY TO STDOUT's data before the COPY runs.
#[derive(Debug)]
struct CopySource {
    /// How the statement's options write text and csv data.
    format: crate::analysis::DataFormat,
    /// The columns of what the COPY reads, once sluice's describe of it is
    /// answered (never, if it failed).
    columns: std::sync::OnceLock<Vec<crate::plugin::bindings::types::Column>>,
}

/// A Describe sent upstream whose answer (RowDescription or NoData) has not
/// come back yet.
#[derive(Debug)]
struct PendingDescribe {
    /// Number of the cycle it belongs to.
    cycle: u64,
    /// Of a portal (whose answer describes the rows an Execute returns), or
    /// of a prepared statement.
    portal: bool,
    /// Sent by sluice, not the client: the answer is not passed on.
    injected: bool,
}

/// What sluice knows about the rows arriving now.
#[derive(Debug, Clone, Default)]
enum Rows {
    /// No description in force: a DataRow now is described as unknown.
    #[default]
    Undescribed,
    /// Described; masked with this, or streamed when no plugin wants any
    /// column.
    Described(Option<Arc<ResultMask>>),
}

/// Most portals bound to COPY statements sluice remembers per session.
const MAX_COPY_PORTALS: usize = 1_000;
/// Most open portals whose statement sluice remembers per session, for
/// the audit trail (see `Proxy::portal_statements`).
const MAX_AUDITED_PORTALS: usize = 1_000;

/// A portal the client bound from a recorded statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BoundPortal {
    /// The statement's number in the session.
    statement: u64,
    /// The cycle the Bind was sent in.
    cycle: u64,
}

/// A portal whose statement names a prepared statement when it runs
/// (`EXECUTE x`) or changes which ones exist (`PREPARE`, `DEALLOCATE`,
/// `DISCARD ALL`). What it does is decided when its Execute runs, not when
/// it is bound: judged at its Bind, it runs only in that Bind's cycle,
/// and what it changes is followed from its Execute, in the order the
/// server runs them.
#[derive(Debug)]
struct NamingPortal {
    /// The cycle the Bind was sent in.
    cycle: u64,
    /// The changes to follow once it is executed (the first time), with
    /// the `standard_conforming_strings` they were analysed under.
    changes: Vec<Analysed>,
    standard_conforming_strings: bool,
    /// The prepared statements its EXECUTEs run, by the definition each
    /// held when judged: should one be redefined before the portal runs
    /// (closed and parsed again in the same cycle), it is refused.
    runs: Vec<(String, u64)>,
}

/// Most open portals that name prepared statements sluice follows per
/// session.
const MAX_NAMING_PORTALS: usize = 1_000;

/// What a statement is, as far as COPY TO STDOUT goes.
enum CopyOutStatement {
    /// Not one (or no masking plugin is loaded).
    None,
    /// One sluice reads: its source and its options.
    Readable(crate::analysis::CopyOut),
    /// A COPY sluice cannot read: it may be TO STDOUT, in any format.
    Unreadable,
}

/// Why a COPY TO STDOUT's data is refused: sluice has no describe of it
/// to read it by.
const COPY_NOT_READ: &str = "COPY TO STDOUT data is passed on only when sluice can read it: send the COPY alone in a simple query, or as the first statement an extended-protocol cycle executes, with options PostgreSQL 15 knows";

/// What sluice does with the data of a COPY TO STDOUT.
#[derive(Debug, Default)]
enum CopyOut {
    /// Pass it on as it comes (no COPY, or nothing to mask).
    #[default]
    Streams,
    /// Text or csv rows read field by field, each value masked by its
    /// column's type like a DataRow value. The header line, if any, is
    /// column names, masked as text.
    Fields {
        mask: Option<Arc<ResultMask>>,
        format: TextFormat,
        header_pending: bool,
    },
    /// Binary tuples, masked as rows of the described columns.
    Binary {
        mask: Arc<ResultMask>,
        header_seen: bool,
    },
}

/// A RowDescription the masking plugins have seen, and their answers.
#[derive(Debug)]
struct SeenDescription {
    /// The plugin set's generation when it was seen.
    generation: u64,
    /// The message body as the server sent it.
    body: bytes::Bytes,
    /// What the plugins want of the rows.
    mask: Option<Arc<ResultMask>>,
    /// The message with its column names masked, when a name changed.
    renamed: Option<bytes::Bytes>,
}

/// What to do with a RowDescription or NoData from the server.
enum Description {
    /// Pass it on as it came.
    Pass,
    /// Pass this instead: its column names masked.
    Renamed(bytes::Bytes),
    /// Keep it: sluice asked, not the client.
    Keep,
}

/// What woke the loop.
enum Event {
    ClientData,
    ServerData,
    ClientClosed,
    ServerClosed,
    ClientStalled,
    /// The client sent nothing for the idle timeout while nothing ran.
    ClientIdle,
    PhaseChanged,
}

/// How the session ends.
enum End {
    /// The client said Terminate: what it sent before goes upstream first.
    ClientTerminated,
    /// The client went away without a word.
    ClientGone,
    /// The server went away; the client has been told.
    ServerGone,
    /// sluice ends the session with this error to the client.
    Fatal(Fatal),
}

/// Where the reader of the server's stream is.
#[derive(Debug, Default)]
enum ServerReader {
    /// At a message boundary.
    #[default]
    Boundary,
    /// Inside a streamed message: this many bytes of it still to pass on.
    Streaming(usize),
    /// Inside a message too large to hold: this many bytes still to drop.
    Discarding(usize),
}

struct Proxy<'a> {
    shared: &'a Shared,
    client: Stream,
    server: Stream,
    client_in: BytesMut,
    /// A client message held until the server has answered the cycle
    /// `waiting_for` (see [`Proxy::must_wait`]); nothing more is read
    /// from the client meanwhile.
    deferred: Option<Frame>,
    waiting_for: u64,
    server_in: BytesMut,
    to_client: BytesMut,
    to_server: BytesMut,
    reader: ServerReader,
    cycles: VecDeque<Cycle>,
    /// Transaction status from the server's last ReadyForQuery.
    transaction: u8,
    /// Set while the client has sent part of a message: it must finish it
    /// before this deadline.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Ends a session idle too long (see [`Proxy::poll_idle`]); armed
    /// (`idle_armed`) each time the session starts waiting on its client.
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
    idle_armed: bool,
    /// When the proof the client logged in with stops being good (a bearer
    /// token's expiry, as the identity plugin gave it): its first message
    /// after that ends the session.
    credentials_expire: Option<tokio::time::Instant>,
    /// The gateway's phase, as of the last change seen.
    phase: Phase,
    /// Resolves when the gateway's phase changes. Kept across turns of the
    /// loop so it registers its waker once, not on every turn.
    phase_changed: PhaseChanged,
    /// Alternates which side is read first, so neither starves the other.
    client_first: bool,
    /// The server sent a FATAL error: it has told the client why it ends.
    server_said_fatal: bool,
    /// The client left while a statement was held for approval: what it
    /// sent behind the statement is dropped and the session ends.
    client_left: bool,
    /// The client closed its side while a message of it was held: what it
    /// sent is still handled, then the session ends.
    client_eof: bool,
    upstream_key: Option<UpstreamKey>,
    /// The CancelRequests sent with this session's key: one withdraws a
    /// statement held for approval. `None` without cancel support.
    cancelled: Option<Arc<super::cancel::Cancels>>,
    /// Who this session is, as hooks are told.
    session: Arc<SessionInfo>,
    /// Cycles sent upstream, and cycles answered: the number of the cycle
    /// whose replies arrive now is `cycles_done`.
    cycles_sent: u64,
    cycles_done: u64,
    /// A refusal in the extended-protocol cycle not yet closed by Sync.
    refusing: Option<Fatal>,
    describes: VecDeque<PendingDescribe>,
    /// The portal the client's last message described, if it was a
    /// Describe: an Execute of it right after needs no describe of ours.
    just_described: Option<String>,
    rows: Rows,
    /// What to do with the data of a COPY TO STDOUT now.
    copy_out: CopyOut,
    /// The source of the COPY of the simple Query being answered, if
    /// sluice described it; and the error the describe met, if it failed.
    copy_query_source: Option<Arc<CopySource>>,
    copy_describe_error: Option<Vec<(u8, String)>>,
    /// The extended protocol's COPY TO STDOUT statements by name: what
    /// they copy, where sluice reads it (`None`: a COPY it cannot read).
    copy_statements: std::collections::HashMap<String, Option<crate::analysis::CopyOut>>,
    /// The open portals of those statements, as the server confirmed
    /// their Binds.
    copy_portals: std::collections::HashMap<String, Option<crate::analysis::CopyOut>>,
    /// Binds the server has yet to answer that may change which portals
    /// are COPY portals or naming portals (see [`PortalBind`]).
    portal_binds: VecDeque<PortalBind>,
    /// Binds forwarded in the cycle being sent, and BindCompletes come in
    /// the cycle being answered: which Bind a BindComplete answers.
    binds_sent: u32,
    binds_answered: u32,
    /// A COPY's data is read by a describe of its source taken just before
    /// the cycle that runs it, with nothing run in between: the catalog
    /// (a temporary table that shadows another, say) can change what the
    /// same text copies. The describe sent ahead of the cycle being sent.
    copy_describe: Option<CopyDescribe>,
    /// The Executes of COPY portals whose CopyOutResponse has not come yet,
    /// in order, with the cycle each belongs to and the source its data is
    /// read by (none: the data is refused).
    copy_executes: VecDeque<(u64, Option<Arc<CopySource>>)>,
    /// The recorded statement each portal was bound from, while it may be
    /// open: an Execute in a later cycle (a portal read in parts, as JDBC
    /// does with a fetch size) returns that statement's rows, and its
    /// outcome is the statement's. Forgotten when no transaction is open,
    /// as the server's portals are.
    portal_statements: std::collections::HashMap<String, BoundPortal>,
    /// Open portals whose statements name prepared statements (see
    /// [`NamingPortal`]), forgotten as `portal_statements` are.
    naming_portals: std::collections::HashMap<String, NamingPortal>,
    /// For the cycles that bound portals which may still be open (their
    /// transaction has not ended): the plugin generation they were judged
    /// under, each with the last such cycle. A portal bound under an older
    /// set than the one in force is not run (see `portal_bound_before_reload`).
    portal_generations: VecDeque<(u64, u64)>,
    /// The portals bound in the open cycle: judged under the set it runs.
    open_cycle_portals: Vec<String>,
    /// While no policy judged, the client sent a statement that may have
    /// changed its prepared statements in SQL (see `judges`).
    prepared_changed_unjudged: bool,
    /// While no policy judged, the client sent a statement that may have
    /// declared a SQL cursor.
    cursors_declared_unjudged: bool,
    /// What the statements allowed last change among prepared statements,
    /// to follow once they run (see `judge`).
    allowed_changes: Vec<Analysed>,
    /// What the session's SQL cursors read, for their FETCHes to be
    /// judged with (see [`Cursors`]).
    cursors: Cursors,
    /// The client has sent extended-protocol messages not yet ended by a
    /// Sync.
    extended_open: bool,
    /// Executes in the client's open cycle, and whether nothing but Flush
    /// followed the last one (what [`Cycle`] records when it is pushed).
    open_executes: u32,
    open_ends_at_execute: bool,
    copy_in: CopyIn,
    /// The session's prepared statements, judged at each Bind or EXECUTE.
    prepared: Prepared,
    /// Analyses the session's statements, remembering their shapes.
    analyser: Analyser,
    /// Verdicts the policies said hold for a statement shape (and whether
    /// it came with others), under the plugin set of generation
    /// `verdicts_generation`.
    verdicts: std::collections::HashMap<(Arc<str>, bool), Verdict>,
    verdicts_generation: u64,
    /// How the server reads a backslash in a plain string literal, as it
    /// last reported: the statement splitter must read text the same way.
    standard_conforming_strings: bool,
    /// The plugin set the client's open cycle is judged under, and its
    /// generation: the session checks the generation (a plain read) instead
    /// of loading the shared set for every message.
    plugins: Arc<PluginSet>,
    plugins_generation: u64,
    /// Whether the open cycle was judged under `plugins` already: a reload
    /// then waits for the next cycle.
    open_cycle_pinned: bool,
    /// The session's span, parent of its statements' spans.
    trace: Trace,
    /// The span of the statement being judged, until it is recorded.
    statement_trace: Trace,
    /// Statements recorded in the audit trail (or traced) so far.
    statements_recorded: u64,
    /// What the policies decided about the statement being judged, for
    /// its audit record.
    decision: Option<Decision>,
    /// The outcome of the statements recorded since the last cycle was
    /// queued: it goes with the next one.
    pending_outcome: Option<CycleOutcome>,
    started: std::time::Instant,
    /// The last RowDescription masked, and what the plugins made of it:
    /// a plugin's answer depends only on the session, the columns and its
    /// configuration, so the same description under the same plugins gets
    /// the same answer without asking again.
    last_description: Option<SeenDescription>,
}

/// The moment on the session's clock that `expires_at` (Unix
/// milliseconds, from the identity plugin) names.
fn credentials_deadline(expires_at: u64) -> tokio::time::Instant {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64);
    // Ten years ahead is as good as never, and the clock holds it.
    let left = expires_at
        .saturating_sub(now_ms)
        .min(10 * 365 * 86_400 * 1000);
    tokio::time::Instant::now() + std::time::Duration::from_millis(left)
}

/// Runs the session's statement loop until it ends.
pub async fn run(shared: &Shared, mut client: Stream, client_buf: BytesMut, session: Established) {
    let Established {
        login:
            LoggedIn {
                principal,
                connection,
                session_id,
                end,
                peer,
                upstream,
                upstream_key,
            },
        trace,
    } = session;
    let database = connection.database.clone();
    tracing::debug!(%database, "statement loop starts");
    let credentials_expire = principal.expires_at.map(credentials_deadline);
    let registration = upstream_key.map(|key| shared.cancel.register(key));

    let mut to_client = BytesMut::with_capacity(1024);
    // The startup reply: server parameters, then sluice's own cancel key.
    reply::authentication(
        &mut to_client,
        pgwire::messages::startup::Authentication::Ok,
    );
    let plugins = shared.plugins.current();
    for status in &upstream.parameter_status {
        // The client's own application_name comes back in one of these.
        match masked_parameter_status(&plugins, status).await {
            Ok(Some(masked)) => to_client.extend_from_slice(&masked),
            Ok(None) => to_client.extend_from_slice(status.as_bytes()),
            Err(why) => {
                tracing::error!(%why, "a server parameter could not be masked; ending the session");
                let message = format!("sluice could not mask a server parameter ({why})");
                reply::error(
                    &mut to_client,
                    Severity::Fatal,
                    sqlstate::INTERNAL_ERROR,
                    &message,
                );
                let _ = client.write_all(&to_client).await;
                end.now("sluice ended it: a server parameter could not be masked");
                return;
            }
        }
    }
    let (pid, secret) = match &registration {
        Some(r) => (r.pid, r.secret),
        // A server that sent no key (a pooler in front of PostgreSQL, say)
        // gets no cancel support: hand out a key nothing matches.
        None => (0, 0),
    };
    reply::backend_key_data(&mut to_client, pid, secret);
    reply::ready_for_query(&mut to_client, upstream.ready_status);
    if let Err(error) = client.write_all(&to_client).await {
        tracing::debug!(%peer, %error, "client left before the session began");
        end.now("the client left before its first reply");
        return;
    }
    // From here the statement loop writes the session's end.
    end.handed_over();
    // The generation first, then the set: a reload between the two reads
    // pairs a new set with an older generation, which the next look
    // refreshes; the other order could pair the old set with the new
    // generation and keep it until the next reload.
    let generation = shared.plugins.generation();
    let current = shared.plugins.current();
    to_client.clear();

    let mut proxy = Proxy {
        shared,
        client,
        server: upstream.stream,
        client_in: client_buf,
        deferred: None,
        waiting_for: 0,
        server_in: upstream.read_buf,
        to_client,
        to_server: BytesMut::with_capacity(1024),
        reader: ServerReader::Boundary,
        cycles: VecDeque::new(),
        transaction: upstream.ready_status,
        stall: None,
        idle: None,
        idle_armed: false,
        phase: *shared.phase.borrow(),
        phase_changed: watch_phase(shared.phase.clone()),
        client_first: true,
        server_said_fatal: false,
        client_left: false,
        client_eof: false,
        upstream_key,
        cancelled: registration.as_ref().map(|r| r.cancelled.clone()),
        session: Arc::new(SessionInfo {
            session_id,
            principal,
            connection,
        }),
        credentials_expire,
        cycles_sent: 0,
        cycles_done: 0,
        refusing: None,
        describes: VecDeque::new(),
        just_described: None,
        rows: Rows::Undescribed,
        copy_out: CopyOut::Streams,
        copy_query_source: None,
        copy_describe_error: None,
        copy_statements: std::collections::HashMap::new(),
        copy_portals: std::collections::HashMap::new(),
        portal_binds: VecDeque::new(),
        binds_sent: 0,
        binds_answered: 0,
        copy_describe: None,
        portal_statements: std::collections::HashMap::new(),
        portal_generations: VecDeque::new(),
        open_cycle_portals: Vec::new(),
        naming_portals: std::collections::HashMap::new(),
        allowed_changes: Vec::new(),
        cursors: Cursors::default(),
        prepared_changed_unjudged: false,
        cursors_declared_unjudged: false,
        copy_executes: VecDeque::new(),
        extended_open: false,
        open_executes: 0,
        open_ends_at_execute: false,
        copy_in: CopyIn::Idle,
        prepared: Prepared::default(),
        analyser: Analyser::default(),
        verdicts: std::collections::HashMap::new(),
        verdicts_generation: generation,
        standard_conforming_strings: upstream
            .parameter_status
            .iter()
            .filter_map(|frame| match backend::decode(frame) {
                Some(backend::Message::ParameterStatus(status))
                    if status.name == "standard_conforming_strings" =>
                {
                    Some(status.value == "on")
                }
                _ => None,
            })
            .next_back()
            // Every PostgreSQL since 9.1 reports it; without a report, the
            // reading that splits fewer statements is the wrong guess, so
            // assume the server's default.
            .unwrap_or(true),
        plugins: current,
        plugins_generation: generation,
        open_cycle_pinned: false,
        last_description: None,
        trace,
        statement_trace: Trace::none(),
        statements_recorded: 0,
        decision: None,
        pending_outcome: None,
        started: std::time::Instant::now(),
    };
    let end = proxy.serve().await;
    let principal = proxy.session.principal.id.clone();
    proxy.finish(end, &principal, peer).await;
    drop(registration);
}

impl Proxy<'_> {
    async fn serve(&mut self) -> End {
        // Bytes that arrived with the last startup message.
        if !self.client_in.is_empty()
            && let Err(end) = self.on_client_data().await
        {
            return end;
        }
        if !self.server_in.is_empty()
            && let Err(end) = self.on_server_data().await
        {
            return end;
        }
        loop {
            if let Some(end) = self.end_for_phase() {
                return end;
            }
            let event = match self.pump().await {
                Ok(event) => event,
                Err(end) => return end,
            };
            let handled = match event {
                Event::ClientData => {
                    self.idle_armed = false;
                    self.on_client_data().await
                }
                Event::ServerData => match self.on_server_data().await {
                    // The answer a held message waited for came.
                    Ok(()) if self.deferred.is_some() && self.cycles_done > self.waiting_for => {
                        self.on_client_data().await
                    }
                    handled => handled,
                },
                // What it sent before closing still goes, as PostgreSQL
                // would read it (a held message, a Terminate behind it).
                Event::ClientClosed if self.deferred.is_some() => {
                    self.client_eof = true;
                    Ok(())
                }
                Event::ClientClosed => Err(End::ClientGone),
                Event::ServerClosed => Err(End::ServerGone),
                Event::ClientStalled => Err(End::Fatal(Fatal::new(
                    sqlstate::PROTOCOL_VIOLATION,
                    "client stalled in the middle of a message",
                ))),
                Event::ClientIdle => Err(End::Fatal(self.idle_refusal())),
                Event::PhaseChanged => Ok(()),
            };
            if let Err(end) = handled {
                return end;
            }
        }
    }

    /// During shutdown: idle sessions close now, busy ones when idle or
    /// when the grace period ends.
    fn end_for_phase(&self) -> Option<End> {
        let phase = self.phase;
        let idle = self.cycles.is_empty()
            && self.transaction == b'I'
            && self.client_in.is_empty()
            && self.deferred.is_none()
            && matches!(self.reader, ServerReader::Boundary);
        match phase {
            Phase::Serving => None,
            Phase::Draining if !idle => None,
            Phase::Draining | Phase::Closing => Some(End::Fatal(Fatal::new(
                sqlstate::ADMIN_SHUTDOWN,
                "terminating connection: sluice is shutting down",
            ))),
        }
    }

    /// Writes what is pending and waits for the next thing to handle.
    async fn pump(&mut self) -> Result<Event, End> {
        poll_fn(|cx| {
            if let Poll::Ready(end) = self.poll_writes(cx) {
                return Poll::Ready(Err(end));
            }
            self.client_first = !self.client_first;
            let order = if self.client_first {
                [true, false]
            } else {
                [false, true]
            };
            for from_client in order {
                let event = if from_client {
                    self.poll_client_read(cx)
                } else {
                    self.poll_server_read(cx)
                };
                if let Poll::Ready(event) = event {
                    return Poll::Ready(Ok(event));
                }
            }
            // While sluice itself is not reading the client (the server is
            // slow to take what it has, or a message waits for the server's
            // answer), the client cannot be stalling.
            let reading_client = self.to_server.len() < HIGH_WATER && self.deferred.is_none();
            if reading_client
                && let Some(stall) = self.stall.as_mut()
                && stall.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Ok(Event::ClientStalled));
            }
            if self.poll_idle(cx) {
                return Poll::Ready(Ok(Event::ClientIdle));
            }
            if let Poll::Ready(receiver) = self.phase_changed.as_mut().poll(cx) {
                self.phase = *receiver.borrow();
                self.phase_changed = watch_phase(receiver);
                return Poll::Ready(Ok(Event::PhaseChanged));
            }
            Poll::Pending
        })
        .await
    }

    /// Writes as much as the sockets take without waiting. Ready only on a
    /// failed write.
    fn poll_writes(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        if let Err(error) = poll_write_all(&mut self.server, &mut self.to_server, cx) {
            tracing::debug!(%error, "writing to the server failed");
            return Poll::Ready(End::ServerGone);
        }
        if let Err(error) = poll_write_all(&mut self.client, &mut self.to_client, cx) {
            tracing::debug!(%error, "writing to the client failed");
            return Poll::Ready(End::ClientGone);
        }
        Poll::Pending
    }

    fn poll_client_read(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        // While a message waits for the server's answer, what comes behind
        // it is read only so far: enough to notice a client that leaves.
        if self.to_server.len() >= HIGH_WATER
            || self.client_eof
            || (self.deferred.is_some() && self.client_in.len() >= HIGH_WATER)
        {
            return Poll::Pending;
        }
        // Room for the rest of a message whose header has arrived (already
        // checked against the limit), or a chunk.
        let want = match frame::peek_header(
            &self.client_in,
            self.shared.settings.limits.max_message_bytes,
        ) {
            Ok(Some(header)) => header
                .total()
                .saturating_sub(self.client_in.len())
                .max(1024),
            _ => READ_CHUNK / 4,
        };
        self.client_in.reserve(want);
        match poll_read(&mut self.client, &mut self.client_in, cx) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => Poll::Ready(Event::ClientClosed),
            Poll::Ready(Ok(_)) => Poll::Ready(Event::ClientData),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_server_read(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        if self.to_client.len() >= HIGH_WATER {
            return Poll::Pending;
        }
        self.server_in.reserve(READ_CHUNK);
        match poll_read(&mut self.server, &mut self.server_in, cx) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => Poll::Ready(Event::ServerClosed),
            Poll::Ready(Ok(_)) => Poll::Ready(Event::ServerData),
            Poll::Pending => Poll::Pending,
        }
    }

    // ---- client to server -------------------------------------------

    async fn on_client_data(&mut self) -> Result<(), End> {
        let max = self.shared.settings.limits.max_message_bytes;
        loop {
            if self.deferred.is_some() && self.cycles_done <= self.waiting_for {
                // Still waiting for the server's answer.
                return Ok(());
            }
            let frame = match self.deferred.take() {
                Some(frame) => frame,
                None => match Frame::split_from(&mut self.client_in, max) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(error) => {
                        return Err(End::Fatal(Fatal::new(
                            sqlstate::PROTOCOL_VIOLATION,
                            error.to_string(),
                        )));
                    }
                },
            };
            if let Some(cycle) = self.must_wait(&frame) {
                self.waiting_for = cycle;
                self.deferred = Some(frame);
                self.stall = None;
                return Ok(());
            }
            self.on_client_message(frame).await?;
            if self.client_left {
                return Err(End::ClientGone);
            }
        }
        if self.client_eof {
            // Everything it sent before closing is on its way.
            return Err(End::ClientGone);
        }
        self.arm_stall_timer();
        shrink_if_idle(&mut self.client_in);
        Ok(())
    }

    /// The earlier cycle whose answer must come before `frame` is judged,
    /// if one must: its effect on the session's prepared statements is not
    /// known until then (see `prepared`). Messages of the same cycle never
    /// wait: the server skips them if what they depend on was skipped.
    fn must_wait(&mut self, frame: &Frame) -> Option<u64> {
        // During a COPY FROM STDIN the cycle before cannot end until the
        // client's data does: whatever else comes is handled (refused) now.
        if !matches!(self.copy_in, CopyIn::Idle) || !self.judges() {
            return None;
        }
        let cycle = self.cycles_sent;
        let wait = match frame.tag() {
            tag::BIND => {
                let name = frontend::bind_statement(frame)?;
                // A statement that is itself an EXECUTE runs another name.
                let executed = self
                    .prepared
                    .may_execute(name)
                    .then(|| self.prepared.wait_for_any(cycle))
                    .flatten();
                executed.max(self.prepared.wait_to_bind(name, cycle))
            }
            tag::PARSE => {
                let (name, text) = frontend::parse_statement(frame)?;
                // Starting a cycle, it can wait for the cycles before it
                // to settle the setting it is parsed under; inside one,
                // the server's answers wait for the Sync (see `parsed`).
                let setting = (!self.extended_open)
                    .then(|| self.wait_for_the_setting(text))
                    .flatten();
                setting.max(self.prepared.wait_to_define(name, cycle))
            }
            tag::QUERY => {
                // An EXECUTE or PREPARE may name any statement; a string
                // that spells neither word waits for nothing.
                let text = frontend::query_text(frame)?;
                let names_a_statement = crate::analysis::spells(text, b"execute")
                    || crate::analysis::spells(text, b"prepare");
                let named = names_a_statement
                    .then(|| self.prepared.wait_for_any(cycle))
                    .flatten();
                named.max(self.wait_for_the_setting(text))
            }
            _ => None,
        };
        // A cycle answered already holds nothing up.
        wait.filter(|cycle| *cycle >= self.cycles_done)
    }

    /// The last cycle sent, if `text` must wait for it: a backslash makes
    /// `standard_conforming_strings` decide how the text is read, and a
    /// statement not answered yet may change the setting (a `SET`, a
    /// `set_config`, a function): sluice knows it only from the server's
    /// ParameterStatus, which comes before that cycle's ReadyForQuery.
    fn wait_for_the_setting(&self, text: &str) -> Option<u64> {
        (self.cycles_done < self.cycles_sent && text.contains('\\')).then(|| self.cycles_sent - 1)
    }

    /// Whether the session has sat idle for the idle timeout: its client
    /// sent nothing since the session last began to wait on it, with no
    /// statement running, nothing held and nothing half-read. The clock
    /// starts when the session starts waiting (a long statement's time is
    /// not idle time), once per wait: a timer reset per transaction.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(timeout) = self.shared.settings.limits.idle_session_timeout else {
            return false;
        };
        // An extended-protocol cycle not yet closed by a Sync (pipelined
        // Executes, a COPY begun before it) may be running.
        let waits_on_client = self.cycles.is_empty()
            && !self.extended_open
            && self.deferred.is_none()
            && self.client_in.is_empty()
            && matches!(self.reader, ServerReader::Boundary);
        if !waits_on_client {
            self.idle_armed = false;
            return false;
        }
        if !self.idle_armed {
            let deadline = tokio::time::Instant::now() + timeout;
            match &mut self.idle {
                Some(idle) => idle.as_mut().reset(deadline),
                None => self.idle = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.idle_armed = true;
        }
        self.idle
            .as_mut()
            .is_some_and(|idle| idle.as_mut().poll(cx).is_ready())
    }

    /// Why the session ends now, if the credentials it logged in with
    /// have expired: a token's holder must show a fresh one, not ride an
    /// old login for as long as the connection lasts.
    fn credentials_expired(&self) -> Option<Fatal> {
        let expire = self.credentials_expire?;
        (tokio::time::Instant::now() >= expire).then(|| {
            Fatal::new(
                sqlstate::INVALID_AUTHORIZATION,
                "terminating connection: the credentials this session logged in with have expired; log in again",
            )
        })
    }

    /// Why an idle session ends, in PostgreSQL's own codes for its idle
    /// timeouts: a new login is what the client needs (PCI DSS 8.2.8).
    fn idle_refusal(&self) -> Fatal {
        let timeout = self
            .shared
            .settings
            .limits
            .idle_session_timeout
            .unwrap_or_default();
        let (code, what) = match self.transaction {
            b'I' => (sqlstate::IDLE_SESSION_TIMEOUT, "idle-session"),
            _ => (
                sqlstate::IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
                "idle-in-transaction",
            ),
        };
        Fatal::new(
            code,
            format!(
                "terminating connection due to {what} timeout: the client sent nothing for {}s; log in again",
                timeout.as_secs_f64()
            ),
        )
    }

    /// A client that leaves half a message in the buffer must make progress
    /// on it within the stall timeout: every read that brings more of it
    /// restarts the clock.
    fn arm_stall_timer(&mut self) {
        if self.client_in.is_empty() {
            self.stall = None;
            return;
        }
        let deadline =
            tokio::time::Instant::now() + self.shared.settings.limits.message_stall_timeout;
        match &mut self.stall {
            Some(stall) => stall.as_mut().reset(deadline),
            None => self.stall = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
    }

    async fn on_client_message(&mut self, frame: Frame) -> Result<(), End> {
        if let Some(expired) = self.credentials_expired() {
            return Err(End::Fatal(expired));
        }
        if let Err(error) = frontend::check(&frame) {
            return Err(End::Fatal(Fatal::new(
                sqlstate::PROTOCOL_VIOLATION,
                error.to_string(),
            )));
        }
        let just_described = self.just_described.take();
        let cycle_was_open = self.extended_open;
        self.follow_copy_in(frame.tag())?;
        if matches!(frame.tag(), tag::QUERY | tag::FUNCTION_CALL) && cycle_was_open {
            // The server answers such a Query with a ReadyForQuery of its
            // own, unless an error earlier in the cycle makes it skip the
            // Query (and send none): which of the two comes cannot be told
            // in advance, and sluice's count of what the server is answering
            // (whose statement a reply is, which Parse it confirms) would
            // drift. A FunctionCall is refused with a Query stand-in, so the
            // same holds for it. No driver sends either; a client must send
            // Sync first.
            let what = if frame.tag() == tag::QUERY {
                "a simple Query"
            } else {
                "a FunctionCall"
            };
            return Err(End::Fatal(Fatal::new(
                sqlstate::PROTOCOL_VIOLATION,
                format!(
                    "{what} arrived inside an unfinished extended-protocol cycle: send Sync before it"
                ),
            )));
        }
        match frame.tag() {
            tag::PARSE | tag::BIND | tag::DESCRIBE | tag::EXECUTE | tag::CLOSE => {
                self.extended_open = true;
                if frame.tag() == tag::EXECUTE {
                    self.open_executes += 1;
                    self.open_ends_at_execute = true;
                } else {
                    self.open_ends_at_execute = false;
                }
            }
            tag::SYNC => self.extended_open = false,
            _ => {}
        }
        match frame.tag() {
            // The shape check above has already read the statement text as
            // UTF-8.
            tag::QUERY => {
                let text = frontend::query_text(&frame).unwrap_or_default();
                self.decision = None;
                self.start_statement_trace();
                let refusal = if self.judges() {
                    let statements = self
                        .analyser
                        .analyse(text, self.standard_conforming_strings);
                    self.judge(text, statements, None).await
                } else {
                    let names_prepared = self.note_unjudged(text);
                    if self.statement_trace.is_recording() || names_prepared {
                        let statements = self
                            .analyser
                            .analyse(text, self.standard_conforming_strings);
                        if self.statement_trace.is_recording() {
                            describe_statement_span(
                                &self.plugins,
                                &self.statement_trace,
                                &statements,
                            )
                            .await;
                        }
                        // With nothing to judge them, what it does to
                        // prepared statements is followed all the same: a
                        // later Bind's record names the statement the
                        // server runs.
                        if names_prepared {
                            self.follow_unjudged_changes(statements);
                        }
                    }
                    self.decision = Some(Decision::unjudged());
                    None
                };
                // On the record before it can run, refused or not.
                let refusal = match self
                    .record_statement(text, Vec::new, Protocol::Simple, refusal.as_ref())
                    .await
                {
                    Ok(_) => refusal,
                    Err(unrecorded) => Some(unrecorded),
                };
                if let Some(refusal) = refusal {
                    self.refuse_cycle(refusal);
                    return Ok(());
                }
                let changes = std::mem::take(&mut self.allowed_changes);
                self.prepared
                    .apply(&changes, self.standard_conforming_strings, self.cycles_sent);
                // One sluice cannot read has no source: its data is refused.
                self.copy_query_source = None;
                if let CopyOutStatement::Readable(copy) = self.copy_out_to_mask(text) {
                    self.copy_query_source = Some(self.describe_copy_source(copy, false));
                }
                self.push_cycle(true, None);
            }
            tag::PARSE => {
                // Parsing runs nothing: the statement is judged when bound.
                let (name, text) = frontend::parse_statement(&frame).unwrap_or_default();
                // A statement run before it in this cycle may change the
                // setting the server parses it under (earlier cycles are
                // waited for: see `must_wait`).
                let setting_may_change =
                    self.open_executes > 0 || self.cycles_done < self.cycles_sent;
                if let Err(refusal) = self.prepared.parsed(
                    name,
                    text,
                    self.standard_conforming_strings,
                    setting_may_change,
                    self.cycles_sent,
                ) {
                    self.refuse_extended(refusal);
                    return Ok(());
                }
                // Its Executes are counted whatever sluice can read of it,
                // to pair each with its CopyOutResponse.
                match self.copy_out_to_mask(text) {
                    CopyOutStatement::None => {
                        self.copy_statements.remove(name);
                    }
                    CopyOutStatement::Unreadable => {
                        self.copy_statements.insert(name.to_owned(), None);
                    }
                    CopyOutStatement::Readable(copy) => {
                        // Described when it starts a cycle, for an Execute
                        // of it first in that cycle; inside one, sluice's
                        // own describe cannot be slipped in.
                        if !cycle_was_open {
                            self.describe_copy_ahead(copy.clone(), !name.is_empty());
                            // The Parse goes in the cycle after sluice's.
                            self.prepared.last_parse_moved_to(self.cycles_sent);
                        }
                        self.copy_statements.insert(name.to_owned(), Some(copy));
                    }
                }
            }
            tag::BIND => {
                let name = frontend::bind_statement(&frame).unwrap_or_default();
                let portal = frontend::bind_portal(&frame).unwrap_or_default();
                let copy = self.copy_statements.get(name).cloned();
                if let (false, Some(Some(copy))) = (cycle_was_open, &copy) {
                    // For an Execute of it first in this cycle.
                    self.describe_copy_ahead(copy.clone(), true);
                }
                // A portal forgotten would have its COPY data paired with
                // another COPY's describe, or run in a later cycle what it
                // names: past the limits, the Bind is refused (and
                // recorded, like any refusal).
                let followed = copy.is_some()
                    || self.copy_portals.contains_key(portal)
                    || self.naming_portals.contains_key(portal)
                    || self.portal_binds.iter().any(|bind| {
                        bind.portal == portal && (bind.copy.is_some() || bind.names_prepared)
                    });
                let too_many_copy_portals = (followed
                    && self.portal_binds.len() >= MAX_COPY_PORTALS)
                    || (copy.is_some()
                        && self.copy_portals.len() >= MAX_COPY_PORTALS
                        && !self.copy_portals.contains_key(portal));
                // Read before judging: a statement that deallocates
                // prepared statements (`DISCARD ALL`, `DEALLOCATE`) takes
                // its own text with it when judged.
                let text = self.prepared.text(name).unwrap_or_default();
                self.decision = None;
                self.allowed_changes.clear();
                self.start_statement_trace();
                // Whether it names a prepared statement when it runs, and
                // the definitions of those its EXECUTEs run.
                let mut names_prepared = false;
                let mut runs = Vec::new();
                let refusal = if too_many_copy_portals {
                    Some(Fatal::new(
                        sqlstate::PROGRAM_LIMIT_EXCEEDED,
                        format!(
                            "more than {MAX_COPY_PORTALS} open portals of COPY statements, or Binds of them the server has yet to answer: close some, end the transaction, or wait for answers"
                        ),
                    ))
                } else if !self.judges() {
                    self.note_unjudged(&text);
                    if self.statement_trace.is_recording()
                        && let Some(Ok(analysed)) = self.prepared.analysis(name, &mut self.analyser)
                    {
                        describe_statement_span(&self.plugins, &self.statement_trace, &analysed)
                            .await;
                    }
                    self.decision = Some(Decision::unjudged());
                    None
                } else {
                    match self.prepared.analysis(name, &mut self.analyser) {
                        Some(Err(unsure)) => Some(unsure),
                        Some(Ok(analysed)) if self.allowed_by_shape(&analysed) => None,
                        Some(Ok(analysed))
                            if analysed.iter().any(|a| a.effect != Effect::None)
                                && ((self.naming_portals.len() >= MAX_NAMING_PORTALS
                                    && !self.naming_portals.contains_key(portal))
                                    || self.portal_binds.len() >= MAX_COPY_PORTALS) =>
                        {
                            // Forgotten, it could run in a later cycle.
                            Some(Fatal::new(
                                sqlstate::PROGRAM_LIMIT_EXCEEDED,
                                format!(
                                    "more than {MAX_NAMING_PORTALS} open portals that run EXECUTE, PREPARE or DEALLOCATE, or Binds of portals the server has yet to answer: close some, end the transaction, or wait for answers"
                                ),
                            ))
                        }
                        Some(Ok(analysed)) => {
                            names_prepared = analysed.iter().any(|a| a.effect != Effect::None);
                            runs = analysed
                                .iter()
                                .filter_map(|a| match &a.effect {
                                    Effect::Execute { name, .. } => {
                                        Some((name.clone(), self.prepared.generation(name)?))
                                    }
                                    _ => None,
                                })
                                .collect();
                            let params = frontend::bind_parameters(&frame).unwrap_or_default();
                            let statements = analysed
                                .iter()
                                .map(|a| {
                                    let mut a = a.clone();
                                    a.statement.params = params.clone();
                                    a
                                })
                                .collect();
                            let text = analysed
                                .first()
                                .map(|a| a.statement.text.clone())
                                .unwrap_or_default();
                            self.judge(&text, statements, Some(&frame)).await
                        }
                        None => Some(Fatal::new(
                            sqlstate::INVALID_SQL_STATEMENT_NAME,
                            format!(
                                "sluice cannot judge prepared statement {name:?}: this session did not prepare it"
                            ),
                        )),
                    }
                };
                let params = || frontend::bind_parameters_for_audit(&frame).unwrap_or_default();
                let previously = self.portal_statements.get(portal).copied();
                let mut rebound = None;
                let refusal = match self
                    .record_statement(&text, params, Protocol::Extended, refusal.as_ref())
                    .await
                {
                    Ok(recorded) => {
                        if refusal.is_none()
                            && let Some(statement) = recorded
                        {
                            rebound = Some(self.portal_bound(portal, statement));
                        }
                        refusal
                    }
                    Err(unrecorded) => Some(unrecorded),
                };
                if let Some(refusal) = refusal {
                    self.refuse_extended(refusal);
                    return Ok(());
                }
                // Past the bound, a portal of this cycle may be taken for
                // an older one after a reload: refused, never let through.
                if self.open_cycle_portals.len() < MAX_AUDITED_PORTALS
                    && !self.open_cycle_portals.iter().any(|bound| bound == portal)
                {
                    self.open_cycle_portals.push(portal.to_owned());
                }
                // A naming portal is one at once (should the Bind fail, a
                // portal of that name run in a later cycle is refused all
                // the same); it stops being one, and a portal is a COPY's,
                // once the server says it bound it (BindComplete). One
                // that is neither and replaces neither needs no following.
                if names_prepared {
                    let changes = std::mem::take(&mut self.allowed_changes);
                    self.naming_portals.insert(
                        portal.to_owned(),
                        NamingPortal {
                            cycle: self.cycles_sent,
                            changes,
                            standard_conforming_strings: self.standard_conforming_strings,
                            runs,
                        },
                    );
                }
                // One bound anew for the trail only is followed while there
                // is room (past it, a Bind the server refuses may leave a
                // later outcome credited to it).
                let rebound = rebound
                    .filter(|_| self.portal_binds.len() < MAX_COPY_PORTALS)
                    .map(|bound| Rebound { bound, previously });
                if followed || names_prepared || rebound.is_some() {
                    self.portal_binds.push_back(PortalBind {
                        cycle: self.cycles_sent,
                        portal: portal.to_owned(),
                        index: self.binds_sent,
                        copy,
                        names_prepared,
                        rebound,
                    });
                }
                self.binds_sent += 1;
            }
            tag::CLOSE => match frontend::describe_target(&frame) {
                // Let go once the server confirms it (see `prepared`).
                Some((false, name)) => self.prepared.close_sent(Some(name), self.cycles_sent),
                Some((true, name)) => {
                    self.prepared.close_sent(None, self.cycles_sent);
                    // Gone once the server confirms it; should the Close be
                    // skipped, a COPY portal's data is not read by anything
                    // sluice describes again.
                    if let Some(copy) = self.copy_portals.get_mut(name) {
                        *copy = None;
                    }
                    self.portal_statements.remove(name);
                    self.naming_portals.remove(name);
                }
                None => {}
            },
            tag::DESCRIBE => {
                let (portal, name) = frontend::describe_target(&frame).unwrap_or_default();
                self.describes.push_back(PendingDescribe {
                    cycle: self.cycles_sent,
                    portal,
                    injected: false,
                });
                if portal {
                    self.just_described = Some(name.to_owned());
                }
            }
            tag::EXECUTE => {
                let portal = frontend::execute_portal(&frame).unwrap_or_default();
                // A COPY's data is read by a describe sent just ahead of
                // its cycle (sent now, if this Execute starts one).
                let refusal = match self.portal_copy(portal) {
                    _ if self.portal_bound_before_reload(portal) => Some(Fatal::new(
                        sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                        "sluice's plugins were reloaded since this portal was bound: bind it again",
                    )),
                    Some(Some(copy)) => match self.copy_source_for(copy, cycle_was_open) {
                        Some(source) => {
                            self.copy_executes
                                .push_back((self.cycles_sent, Some(source)));
                            None
                        }
                        None => Some(Fatal::new(sqlstate::FEATURE_NOT_SUPPORTED, COPY_NOT_READ)),
                    },
                    // Its data, if it sends any, is read by nothing.
                    Some(None) => {
                        self.copy_executes.push_back((self.cycles_sent, None));
                        None
                    }
                    None => None,
                };
                let refusal = refusal.or_else(|| self.follow_naming_portal(portal));
                // Its outcome, refused or not, is the bound statement's.
                self.execute_recorded(portal);
                if let Some(refusal) = refusal {
                    self.refuse_extended(refusal);
                    return Ok(());
                }
                if just_described.as_deref() != Some(portal) && self.client_plugins().masks() {
                    // Learn the columns the rows will have, for masking.
                    let name = (!portal.is_empty()).then(|| portal.to_owned());
                    reply::encode(&Describe::new(b'P', name), &mut self.to_server);
                    self.describes.push_back(PendingDescribe {
                        cycle: self.cycles_sent,
                        portal: true,
                        injected: true,
                    });
                }
            }
            tag::SYNC => {
                let refusal = self.refusing.take();
                self.push_cycle(false, refusal);
            }
            tag::FUNCTION_CALL => {
                tracing::warn!("FunctionCall refused: the fastpath bypasses SQL analysis");
                let refusal = Fatal::new(
                    sqlstate::INSUFFICIENT_PRIVILEGE,
                    "sluice does not allow the fastpath function call interface; call the function in SQL",
                );
                // An attempt like any other: on the record, refused.
                let text = match frame.body().first_chunk::<4>() {
                    Some(oid) => format!(
                        "fastpath function call (function oid {})",
                        u32::from_be_bytes(*oid)
                    ),
                    None => "fastpath function call".to_owned(),
                };
                self.decision = None;
                self.start_statement_trace();
                let refusal = match self
                    .record_statement(&text, Vec::new, Protocol::Fastpath, Some(&refusal))
                    .await
                {
                    Ok(_) => refusal,
                    Err(unrecorded) => unrecorded,
                };
                self.refuse_cycle(refusal);
                return Ok(());
            }
            tag::TERMINATE => {
                self.to_server.extend_from_slice(frame.as_bytes());
                return Err(End::ClientTerminated);
            }
            _ => {}
        }
        self.to_server.extend_from_slice(frame.as_bytes());
        Ok(())
    }

    /// Checks a client message against the COPY FROM STDIN under way, if
    /// any: while the server reads COPY data only CopyData, CopyDone,
    /// CopyFail and Flush may come, and COPY data never comes otherwise.
    fn follow_copy_in(&mut self, message: u8) -> Result<(), End> {
        let copy_message = matches!(message, tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL);
        let refuse = |why: &str| {
            Err(End::Fatal(Fatal::new(
                sqlstate::PROTOCOL_VIOLATION,
                format!("{why}: sluice cannot tell how the server would read it"),
            )))
        };
        match self.copy_in {
            CopyIn::Idle if copy_message => refuse("COPY data outside a COPY FROM STDIN"),
            CopyIn::Idle => Ok(()),
            CopyIn::Receiving { sync_next } => match message {
                tag::COPY_DATA | tag::FLUSH | tag::TERMINATE => Ok(()),
                tag::COPY_DONE | tag::COPY_FAIL => {
                    self.copy_in = if sync_next {
                        CopyIn::SyncNext
                    } else {
                        CopyIn::Idle
                    };
                    Ok(())
                }
                _ => refuse("a message other than COPY data before CopyDone or CopyFail"),
            },
            CopyIn::SyncNext => match message {
                tag::FLUSH | tag::TERMINATE => Ok(()),
                tag::SYNC => {
                    self.copy_in = CopyIn::Idle;
                    Ok(())
                }
                _ => refuse("a message between the end of COPY data and the Sync it needs"),
            },
        }
    }

    /// The server began reading COPY data (CopyInResponse). From now on it
    /// ignores Sync: if the client already sent the Sync behind the COPY's
    /// Execute, no ReadyForQuery answers it, and the cycle runs on into the
    /// next (whose Sync, after CopyDone, is answered). sluice marks the
    /// cycle so. It can be sure of that only when the COPY is the last
    /// Execute of the only cycle awaiting an answer, with nothing sent
    /// behind it — as every driver sends it; anything else ends the
    /// session rather than let sluice lose count of what answers what.
    fn copy_in_started(&mut self) -> Result<(), End> {
        let certain = match self.cycles.len() {
            // The client has not sent the Sync yet.
            0 => self.extended_open && self.open_cycle_ends_at_its_only_execute(),
            1 => {
                let cycle = &self.cycles[0];
                !self.extended_open
                    && cycle.injected.is_none()
                    && cycle.ends_at_its_only_execute
                    && self.deferred.is_none()
            }
            _ => false,
        };
        if !certain {
            return Err(End::Fatal(Fatal::new(
                sqlstate::PROTOCOL_VIOLATION,
                "a COPY FROM STDIN began with other messages pipelined with it: send it as its cycle's only Execute, and nothing behind it until its data has ended",
            )));
        }
        let sync_next = match self.cycles.front_mut() {
            Some(cycle) if !cycle.simple => {
                cycle.sync_ignored = true;
                true
            }
            _ => false,
        };
        self.copy_in = CopyIn::Receiving { sync_next };
        Ok(())
    }

    /// Whether the client's open cycle holds one Execute, followed by
    /// nothing but Flush.
    fn open_cycle_ends_at_its_only_execute(&self) -> bool {
        self.open_executes == 1 && self.open_ends_at_execute
    }

    /// Sends the refusal stand-in in place of a whole cycle.
    fn refuse_cycle(&mut self, refusal: Fatal) {
        reply::encode(
            &Query::new(REFUSAL_STAND_IN.to_owned()),
            &mut self.to_server,
        );
        self.push_cycle(true, Some(refusal));
    }

    /// Refuses the extended-protocol message at hand: a stand-in that fails
    /// to parse goes in its place, the server skips the cycle's rest up to
    /// Sync, and its error is replaced by `refusal`.
    fn refuse_extended(&mut self, refusal: Fatal) {
        reply::encode(
            &Parse::new(
                Some(REFUSAL_STATEMENT.to_owned()),
                REFUSAL_STAND_IN.to_owned(),
                Vec::new(),
            ),
            &mut self.to_server,
        );
        self.refusing.get_or_insert(refusal);
    }

    fn push_cycle(&mut self, simple: bool, refusal: Option<Fatal>) {
        let plugins = Arc::clone(self.client_plugins());
        let plugins_generation = self.plugins_generation;
        self.open_cycle_pinned = false;
        let audit = self.pending_outcome.take();
        let ends_at_its_only_execute = simple || self.open_cycle_ends_at_its_only_execute();
        if !self.open_cycle_portals.is_empty() {
            self.open_cycle_portals.clear();
            match self.portal_generations.back_mut() {
                Some((cycle, generation)) if *generation == plugins_generation => {
                    *cycle = self.cycles_sent;
                }
                _ => self
                    .portal_generations
                    .push_back((self.cycles_sent, plugins_generation)),
            }
        }
        self.open_executes = 0;
        self.binds_sent = 0;
        self.open_ends_at_execute = false;
        self.cycles.push_back(Cycle {
            simple,
            refusal,
            injected: None,
            audit,
            ends_at_its_only_execute,
            sync_ignored: false,
            plugins,
            plugins_generation,
        });
        self.cycles_sent += 1;
    }

    /// The COPY TO STDOUT `text` is, if it is one and masking plugins are
    /// loaded: its data will have to be read by type.
    fn copy_out_to_mask(&mut self, text: &str) -> CopyOutStatement {
        // A COPY spells its keyword out: text without the letters is not
        // one, and is not lexed again on its way.
        if !crate::analysis::spells(text, b"copy") || !self.client_plugins().masks() {
            return CopyOutStatement::None;
        }
        let setting = self.standard_conforming_strings;
        match crate::analysis::copy_out(text, setting) {
            Some(copy) => CopyOutStatement::Readable(copy),
            None if crate::analysis::unreadable_copy(text, setting) => CopyOutStatement::Unreadable,
            None => CopyOutStatement::None,
        }
    }

    /// Before a `COPY ... TO STDOUT` is forwarded, asks the server what its
    /// rows will be, so its data can be read by type: a Parse and Describe
    /// of its source query, then Sync, in a cycle of sluice's own whose
    /// replies never reach the client. Only between the client's cycles
    /// (a Sync of sluice's would end one the client has open). The source
    /// is parsed into the unnamed statement when the client's own message
    /// replaces that anyway (a Query, a Parse of the unnamed statement),
    /// else into one of sluice's, closed in the same cycle.
    fn describe_copy_source(
        &mut self,
        copy: crate::analysis::CopyOut,
        keep_unnamed: bool,
    ) -> Arc<CopySource> {
        let statement = keep_unnamed.then(|| format!("sluice_copy_source_{}", self.cycles_sent));
        reply::encode(
            &Parse::new(statement.clone(), copy.query, Vec::new()),
            &mut self.to_server,
        );
        reply::encode(&Describe::new(b'S', statement.clone()), &mut self.to_server);
        if let Some(statement) = statement {
            reply::encode(
                &pgwire::messages::extendedquery::Close::new(b'S', Some(statement)),
                &mut self.to_server,
            );
        }
        reply::encode(
            &pgwire::messages::extendedquery::Sync::new(),
            &mut self.to_server,
        );
        let source = Arc::new(CopySource {
            format: copy.format,
            columns: std::sync::OnceLock::new(),
        });
        // Between the client's cycles: the newest set, which the client's
        // next cycle (the COPY's) is judged under too.
        let plugins = Arc::clone(self.client_plugins());
        self.cycles.push_back(Cycle {
            simple: false,
            refusal: None,
            injected: Some(source.clone()),
            audit: None,
            ends_at_its_only_execute: false,
            sync_ignored: false,
            plugins,
            plugins_generation: self.plugins_generation,
        });
        self.cycles_sent += 1;
        source
    }

    /// An Execute of `portal`, if it runs EXECUTE, PREPARE or DEALLOCATE
    /// (see [`NamingPortal`]): refused outside the cycle it was bound in,
    /// or if a PREPARE executed before it took its name; else what it
    /// changes is followed from now.
    fn follow_naming_portal(&mut self, portal: &str) -> Option<Fatal> {
        let naming = self.naming_portals.get_mut(portal)?;
        if naming.cycle != self.cycles_sent {
            // What it names may have changed since it was judged.
            return Some(Fatal::new(
                sqlstate::FEATURE_NOT_SUPPORTED,
                "sluice runs a portal that runs EXECUTE, PREPARE or DEALLOCATE only in the cycle it was bound in (before the next Sync): bind it again",
            ));
        }
        if let Some((name, _)) = naming
            .runs
            .iter()
            .find(|(name, generation)| self.prepared.generation(name) != Some(*generation))
        {
            return Some(Fatal::new(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!(
                    "prepared statement \"{name}\" was defined anew after this portal's EXECUTE of it was bound: bind it again"
                ),
            ));
        }
        let changes = std::mem::take(&mut naming.changes);
        let setting = naming.standard_conforming_strings;
        if let Err(refusal) = self.prepared.check(&changes, false) {
            return Some(refusal);
        }
        self.prepared.apply(&changes, setting, self.cycles_sent);
        None
    }

    /// [`describe_copy_source`](Self::describe_copy_source) ahead of the
    /// cycle being sent, for an Execute of the COPY first in it.
    fn describe_copy_ahead(&mut self, copy: crate::analysis::CopyOut, keep_unnamed: bool) {
        let source = self.describe_copy_source(copy.clone(), keep_unnamed);
        self.copy_describe = Some(CopyDescribe {
            cycle: self.cycles_sent,
            copy,
            source,
        });
    }

    /// What an Execute of `portal` runs, as far as COPY goes: not a COPY
    /// (`None`), or a COPY that sluice reads (`Some(Some(..))`) or cannot
    /// (`Some(None)`). A Bind of the portal in this cycle is what runs if
    /// the Execute does (the server skips the rest of a cycle after an
    /// error); one in an earlier cycle not yet answered may have failed
    /// and left the portal as it was: if either may be a COPY, its data is
    /// read by nothing.
    fn portal_copy(&self, portal: &str) -> Option<Option<crate::analysis::CopyOut>> {
        let confirmed = self.copy_portals.get(portal).cloned();
        match self
            .portal_binds
            .iter()
            .rev()
            .find(|bind| bind.portal == portal)
        {
            Some(bind) if bind.cycle == self.cycles_sent => bind.copy.clone(),
            Some(bind) => (bind.copy.is_some() || confirmed.is_some()).then_some(None),
            None => confirmed,
        }
    }

    /// The source the data of `copy`, executed now, is read by: sluice's
    /// describe sent just ahead of this cycle, when this Execute is the
    /// cycle's first (sent now if the Execute starts the cycle). After
    /// another Execute, what the same text copies may have changed.
    fn copy_source_for(
        &mut self,
        copy: crate::analysis::CopyOut,
        cycle_was_open: bool,
    ) -> Option<Arc<CopySource>> {
        if !cycle_was_open {
            self.describe_copy_ahead(copy.clone(), true);
        }
        let first_execute = self.open_executes == 1;
        self.copy_describe
            .as_ref()
            .filter(|ahead| first_execute && ahead.cycle == self.cycles_sent && ahead.copy == copy)
            .map(|ahead| ahead.source.clone())
    }

    /// BindCompletes have come: the Binds of COPY and naming portals they
    /// answer now hold.
    fn follow_binds(&mut self, completed: u32) {
        self.binds_answered += completed;
        while let Some(bind) = self.portal_binds.front() {
            if bind.cycle != self.cycles_done || bind.index >= self.binds_answered {
                break;
            }
            let Some(bind) = self.portal_binds.pop_front() else {
                break;
            };
            if !bind.names_prepared
                && self
                    .naming_portals
                    .get(&bind.portal)
                    .is_some_and(|naming| naming.cycle <= bind.cycle)
            {
                self.naming_portals.remove(&bind.portal);
            }
            match bind.copy {
                Some(copy) => {
                    self.copy_portals.insert(bind.portal, copy);
                }
                None => {
                    self.copy_portals.remove(&bind.portal);
                }
            }
        }
    }

    /// The Binds whose cycles ended without their BindComplete were skipped
    /// after an error or refused: their portals are what they were, and
    /// outcomes of them are credited as before.
    fn give_back_skipped_binds(&mut self) {
        let done = self.cycles_done;
        let mut skipped = Vec::new();
        while let Some(bind) = self.portal_binds.pop_front_if(|bind| bind.cycle < done) {
            skipped.push(bind);
        }
        // Newest first, so the oldest one's earlier binding is what stays.
        for bind in skipped.into_iter().rev() {
            let Some(Rebound { bound, previously }) = bind.rebound else {
                continue;
            };
            // Only if the portal is still what this Bind made it: a later
            // Bind of it may have bound it since.
            if self.portal_statements.get(&bind.portal) == Some(&bound) {
                match previously {
                    Some(before) => {
                        self.portal_statements.insert(bind.portal.clone(), before);
                    }
                    None => {
                        self.portal_statements.remove(&bind.portal);
                    }
                }
            }
            // A later Bind of it, not yet answered, came after this one's
            // binding, which never was: it gives back the one before.
            for later in &mut self.portal_binds {
                if later.portal == bind.portal
                    && let Some(later) = &mut later.rebound
                    && later.previously == Some(bound)
                {
                    later.previously = previously;
                }
            }
        }
    }

    /// Whether the replies arriving now answer sluice's own describe.
    fn answering_injected(&self) -> bool {
        self.cycles
            .front()
            .is_some_and(|cycle| cycle.injected.is_some())
    }

    /// A reply to sluice's own describe: the source's columns are kept for
    /// the COPY, an error for the client's statement, the rest dropped.
    fn on_injected_reply(&mut self, frame: Frame) -> Result<(), End> {
        match frame.tag() {
            tag::ROW_DESCRIPTION => match backend::decode(&frame) {
                Some(backend::Message::RowDescription(description)) => {
                    if let Some(source) = self.cycles.front().and_then(|c| c.injected.as_ref()) {
                        let _ = source.columns.set(rows::columns_of(&description));
                    }
                }
                _ => {
                    return Err(End::Fatal(Fatal::new(
                        sqlstate::PROTOCOL_VIOLATION,
                        "the upstream server sent a malformed RowDescription",
                    )));
                }
            },
            tag::ERROR_RESPONSE => {
                if let Some(backend::Message::ErrorResponse(error)) = backend::decode(&frame) {
                    self.copy_describe_error = Some(error.fields);
                }
            }
            tag::READY_FOR_QUERY => {
                self.cycle_done(&frame)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// A ReadyForQuery ends the cycle at the front: the server's
    /// transaction status is recorded and the next cycle's replies follow.
    fn cycle_done(&mut self, frame: &Frame) -> Result<Option<CycleOutcome>, End> {
        let [status @ (b'I' | b'T' | b'E')] = *frame.body() else {
            return Err(End::Fatal(Fatal::new(
                sqlstate::PROTOCOL_VIOLATION,
                "the upstream server sent a malformed ReadyForQuery",
            )));
        };
        self.transaction = status;
        let finished = self.cycles.pop_front();
        self.cycles_done += 1;
        self.binds_answered = 0;
        if finished.as_ref().is_some_and(|cycle| cycle.sync_ignored) {
            // Its Sync was ignored during COPY data: this ReadyForQuery
            // answers the next cycle's Sync too. That cycle holds nothing
            // but the COPY's data and the Sync (see `follow_copy_in`).
            self.cycles.pop_front();
            self.cycles_done += 1;
        }
        self.give_back_skipped_binds();
        if status == b'I' {
            // No transaction: the server's portals are gone, those bound in
            // cycles not yet answered aside.
            let done = self.cycles_done;
            self.portal_statements
                .retain(|_, bound| bound.cycle >= done);
            self.portal_generations.retain(|&(cycle, _)| cycle >= done);
            self.cursors.transaction_ended(done);
            self.naming_portals.retain(|_, naming| naming.cycle >= done);
            if self.cycles.is_empty() && !self.extended_open {
                self.copy_portals.clear();
            }
        }
        Ok(finished.and_then(|cycle| cycle.audit))
    }

    /// Runs the policy plugins on the statements of one query string (or
    /// one Bind): `None` lets them through, a refusal says why not. Any
    /// deny refuses the whole string; a plugin that fails refuses it too.
    /// `bind` is the Bind of an extended-protocol statement: its values go
    /// on an approval ticket.
    async fn judge(
        &mut self,
        text: &str,
        statements: Vec<Analysed>,
        bind: Option<&Frame>,
    ) -> Option<Fatal> {
        if self.open_cycle_pinned && self.shared.plugins.generation() != self.plugins_generation {
            // One version judges a cycle's statements and masks their
            // replies; a client that never ends its cycle must not keep the
            // old one for good (an emergency deny rule would never reach
            // it). The Sync that ends the cycle lets the next statement be
            // judged by the new set.
            return Some(Fatal::new(
                sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                "sluice's plugins were reloaded while this pipeline was open: send Sync, then run the statement again",
            ));
        }
        let plugins = self.client_plugins().clone();
        // The generation of the plugins that judge it, for an approval
        // given after a reload to be checked against those then in force.
        let judged_under = self.plugins_generation;
        if tracing::enabled!(tracing::Level::DEBUG) {
            let statement = crate::masking::for_log(&plugins, text).await;
            tracing::debug!(session = self.session.session_id, %statement, "statement");
        }
        if plugins.chain(Hook::Policy).is_empty() {
            self.decision = Some(Decision::unjudged());
            return None;
        }
        let (statements, declared) = match self
            .prepared
            .resolve(statements, &mut self.analyser)
            .and_then(|statements| self.prepared.check(&statements, false).map(|()| statements))
            .and_then(|mut statements| {
                self.cursors
                    .resolve(&mut statements, self.plugins_generation, |name| {
                        self.portal_bound_before_reload(name)
                    })
                    .map(|declared| (statements, declared))
            }) {
            Ok(resolved) => resolved,
            Err(refusal) => return Some(refusal),
        };
        describe_statement_span(&self.plugins, &self.statement_trace, &statements).await;
        let policy = self
            .statement_trace
            .child("policy", SpanKind::Internal, Vec::new());
        let approval = match self.policy_verdicts(&plugins, text, &statements).await {
            Ok(approval) => approval,
            Err(refusal) => {
                policy.set(KeyValue::new(
                    attribute::VERDICT,
                    self.decision.as_ref().map_or("error", |d| d.verdict),
                ));
                // The refusal's message quotes the plugin's reason, which
                // may quote the statement: the span says only the SQLSTATE.
                policy.fail(format!("refused ({})", refusal.code));
                return Some(refusal);
            }
        };
        policy.set(KeyValue::new(
            attribute::VERDICT,
            if approval.is_some() {
                "require-approval"
            } else {
                "allow"
            },
        ));
        policy.end();
        let session = self.session.session_id;
        if let Some((asked, command)) = approval {
            let (plugin, rule) = (&asked.plugin, &asked.rule);
            if !plugins.approves() {
                let command = loggable_command(&command);
                tracing::info!(session, %plugin, %rule, command, "statement needs approval; no approval plugin is configured");
                let refusal = Fatal::new(
                    sqlstate::INSUFFICIENT_PRIVILEGE,
                    format!(
                        "this statement needs approval from {} ({}), and this gateway has no approval plugin: refused",
                        asked.approver_group, asked.reason
                    ),
                );
                self.approval_not_obtained(&asked, "no-approval-plugin", None, &refusal);
                return Some(refusal);
            }
            let command = loggable_command(&command);
            tracing::info!(session, %plugin, %rule, command, "statement held for approval");
            let mut tables: Vec<TableRef> = Vec::new();
            for access in statements.iter().flat_map(|a| &a.statement.tables) {
                if !tables.contains(&access.table) {
                    tables.push(access.table.clone());
                }
            }
            // As the audit trail shows them: a value sent in binary is
            // labelled with what its bytes read as, or withheld.
            let params = bind
                .and_then(frontend::bind_parameters_for_audit)
                .unwrap_or_default();
            let approver_group = asked.approver_group.clone();
            let held = Held {
                text: with_executed_texts(text, &statements),
                params,
                tables,
                asked,
            };
            if let Some(refusal) = self.hold_for_approval(&plugins, held).await {
                return Some(refusal);
            }
            // The approval was given under the policies in force when the
            // statement was held, maybe hours ago. If a reload replaced
            // them meanwhile (an incident's new deny rule, say), the
            // statement runs only if the policies in force now would let
            // it run on that same group's approval.
            if self.shared.plugins.generation() != judged_under {
                // The open cycle moves to the set in force now, which
                // judges the statement again and masks what it returns,
                // and what the cycle's outcome keeps of it.
                self.open_cycle_pinned = false;
                let plugins = self.client_plugins().clone();
                if let Some(outcome) = &mut self.pending_outcome {
                    outcome.judged_again_under(&plugins);
                }
                match self.policy_verdicts(&plugins, text, &statements).await {
                    Ok(None) => {}
                    Ok(Some((now, _))) if now.approver_group == approver_group => {}
                    Ok(Some((now, _))) => {
                        let Requirement {
                            plugin,
                            rule,
                            reason,
                            approver_group: group,
                        } = now;
                        return Some(self.denied_by(
                            plugin,
                            rule,
                            format!(
                                "the policies were reloaded while this statement waited for approval, and now it needs approval from {group} ({reason}): refused"
                            ),
                        ));
                    }
                    Err(refusal) => return Some(refusal),
                }
            }
        }
        // Allowed: its cursors are followed from now on.
        self.cursors.commit(declared, self.cycles_sent);
        // Followed once they run: at once for a simple Query, at its
        // Execute for a Bind (see `NamingPortal`).
        self.allowed_changes = statements
            .into_iter()
            .filter(|analysed| analysed.effect != Effect::None)
            .collect();
        None
    }

    /// Asks the policies about each statement: a refusal, or whether one
    /// of them needs approval (the first requirement, and the command of
    /// the statement it was for).
    async fn policy_verdicts(
        &mut self,
        plugins: &Arc<PluginSet>,
        text: &str,
        statements: &[Analysed],
    ) -> Result<Option<(Requirement, String)>, Fatal> {
        let session = self.session.session_id;
        let mut approval = None;
        for analysed in statements {
            let statement = &analysed.statement;
            let command = statement.command.as_str();
            match self.verdict(plugins, analysed).await {
                Ok(Verdict::Allow) => {}
                Ok(Verdict::Deny {
                    plugin,
                    rule,
                    reason,
                }) => {
                    let statement = crate::masking::for_log(plugins, text).await;
                    let command = loggable_command(command);
                    tracing::info!(session, %plugin, %rule, command, %statement, "statement denied");
                    let approval = self.approval_given();
                    self.decision = Some(Decision {
                        verdict: "deny",
                        plugin: Some(plugin),
                        rule: Some(rule.clone()),
                        reason: Some(reason.clone()),
                        approval,
                    });
                    return Err(Fatal::new(
                        sqlstate::INSUFFICIENT_PRIVILEGE,
                        format!("sluice denied this statement: {reason} (rule {rule})"),
                    ));
                }
                Ok(Verdict::RequireApproval {
                    plugin,
                    rule,
                    reason,
                    approver_group,
                }) => match &approval {
                    None => {
                        let asked = Requirement {
                            plugin,
                            rule,
                            reason,
                            approver_group,
                        };
                        approval = Some((asked, command.to_owned()));
                    }
                    // One ticket, one group: statements that need two
                    // groups' approval in one query would pass on the
                    // first group's word alone.
                    Some((first, _)) if first.approver_group != approver_group => {
                        let first_group = &first.approver_group;
                        let refusal = Fatal::new(
                            sqlstate::INSUFFICIENT_PRIVILEGE,
                            format!(
                                "the statements of this query need approval from different groups ({first_group}, {approver_group}): send them one at a time"
                            ),
                        );
                        let both = Requirement {
                            plugin,
                            rule: crate::plugin::set::ONE_APPROVER_GROUP.to_owned(),
                            approver_group: format!("{first_group}, {approver_group}"),
                            reason,
                        };
                        self.approval_not_obtained(&both, "two-groups", None, &refusal);
                        return Err(refusal);
                    }
                    Some(_) => {}
                },
                Err(fault) => return Err(plugin_failed("policy", &fault)),
            }
        }
        Ok(approval)
    }

    /// The approval the statement being judged was given already (policies
    /// reloaded while it waited judge it again): a refusal after it keeps
    /// it on the record.
    fn approval_given(&mut self) -> Option<ApprovalRecord> {
        self.decision.take().and_then(|earlier| earlier.approval)
    }

    /// Refuses the statement (42501) on the verdict of `plugin`'s `rule`,
    /// with `message` to the client and on the record.
    fn denied_by(&mut self, plugin: String, rule: String, message: String) -> Fatal {
        let refusal = Fatal::new(sqlstate::INSUFFICIENT_PRIVILEGE, message);
        let approval = self.approval_given();
        self.decision = Some(Decision {
            plugin: Some(plugin),
            rule: Some(rule),
            approval,
            ..Decision::refused("deny", refusal.message.clone())
        });
        refusal
    }

    /// Asking for the approval `asked` failed (`refusal` says how): on the
    /// record as such, and the statement refused.
    fn approval_request_failed(
        &mut self,
        asked: &Requirement,
        ticket: Option<String>,
        refusal: Fatal,
    ) -> Option<Fatal> {
        self.approval_not_obtained(asked, "request-failed", ticket, &refusal);
        Some(refusal)
    }

    /// The statement being judged needed the approval `asked` and no
    /// approver could give it (`outcome`, one of [`audit::NOT_OBTAINED`]):
    /// its record says so, and which rule asked, rather than that it
    /// needed none. `refusal` is what the client is told.
    fn approval_not_obtained(
        &mut self,
        asked: &Requirement,
        outcome: &'static str,
        ticket: Option<String>,
        refusal: &Fatal,
    ) {
        let verdict = refusal_verdict(refusal);
        let approval = self.approval_given().unwrap_or_else(|| {
            // An approval given before (policies reloaded while it waited)
            // was counted as given; this one is counted as not obtained.
            self.shared.counters.approvals.count_not_obtained(outcome);
            ApprovalRecord::not_obtained(
                asked.approver_group.clone(),
                outcome,
                ticket,
                approval::now_ms(),
            )
        });
        self.decision = Some(Decision {
            plugin: Some(asked.plugin.clone()),
            rule: Some(asked.rule.clone()),
            approval: Some(approval),
            ..Decision::refused(verdict, refusal.message.clone())
        });
    }

    /// The policies' verdict on one statement: asked, or — for a statement
    /// of a shape whose verdict every policy said holds for the shape —
    /// remembered from the session's earlier statement of that shape, as
    /// long as the same plugins are in force.
    async fn verdict(
        &mut self,
        plugins: &Arc<PluginSet>,
        analysed: &Analysed,
    ) -> Result<Verdict, Fault> {
        if let Some(verdict) = self.remembered_verdict(analysed) {
            return Ok(verdict.clone());
        }
        let judged = plugins.judge(&self.session, &analysed.statement).await?;
        if let Some(key) = verdict_key(analysed)
            && judged.same_for_shape
        {
            if self.verdicts.len() >= MAX_REMEMBERED_VERDICTS {
                self.verdicts.clear();
            }
            self.verdicts.insert(key, judged.verdict.clone());
        }
        Ok(judged.verdict)
    }

    /// The verdict the policies in force gave a statement of this shape
    /// earlier in the session, if they said it holds for the shape.
    /// Remembered verdicts hold for the plugins that gave them: a reload
    /// forgets them all.
    fn remembered_verdict(&mut self, analysed: &Analysed) -> Option<&Verdict> {
        if self.verdicts_generation != self.plugins_generation {
            self.verdicts.clear();
            self.verdicts_generation = self.plugins_generation;
        }
        self.verdicts.get(&verdict_key(analysed)?)
    }

    /// Whether `portal`, run by an Execute now, may have been bound (and
    /// judged) under an older plugin set than the one in force: it was not
    /// bound in the open cycle, and a cycle of the open transaction bound
    /// portals under an older set. Such a portal is not run — a reload
    /// (an emergency deny rule) reaches a transaction that keeps portals
    /// open — and the client binds it again, to be judged anew. (A portal
    /// bound after the reload in a transaction that also holds one from
    /// before it is refused too: the portals are not told apart.)
    fn portal_bound_before_reload(&self, portal: &str) -> bool {
        !self.portal_generations.is_empty()
            && !self.open_cycle_portals.iter().any(|bound| bound == portal)
            && {
                let in_force = self.shared.plugins.generation();
                self.portal_generations
                    .iter()
                    .any(|&(_, generation)| generation != in_force)
            }
    }

    /// Whether the statements a Bind runs are allowed already: each of a
    /// shape the policies in force allowed earlier in this session, with
    /// nothing else for [`Proxy::judge`] to do — no effect on the
    /// session's prepared statements, no span to name, no debug line to
    /// write. Then the Bind is allowed exactly as `judge` would allow it,
    /// without copying the kept analysis to give it the Bind's parameters
    /// (which only a policy call would read). Called after
    /// [`Proxy::judges`], which brings the plugin generation up to date.
    fn allowed_by_shape(&mut self, statements: &[Analysed]) -> bool {
        if statements.is_empty()
            || self.statement_trace.is_recording()
            || tracing::enabled!(tracing::Level::DEBUG)
        {
            return false;
        }
        // A reload while the cycle is open: its verdicts are the old set's,
        // and `judge` refuses the statement (the cycle must end first).
        if self.open_cycle_pinned && self.shared.plugins.generation() != self.plugins_generation {
            return false;
        }
        statements.iter().all(|analysed| {
            analysed.effect == crate::analysis::Effect::None
                && matches!(self.remembered_verdict(analysed), Some(Verdict::Allow))
        })
    }

    /// Holds a statement until an approver answers, its ticket expires,
    /// the client withdraws it (a CancelRequest, or leaving) or the gateway
    /// closes; `None` releases it. What was already decided is written out
    /// first, so the client has every earlier reply while it waits; what it
    /// sends behind the statement is read (so that leaving is noticed) but
    /// not acted on until the statement is decided.
    async fn hold_for_approval(&mut self, plugins: &PluginSet, held: Held<'_>) -> Option<Fatal> {
        let Held {
            text,
            params,
            tables,
            asked,
        } = held;
        let Requirement {
            plugin,
            rule,
            reason,
            approver_group,
        } = &asked;
        // A cancel from now on withdraws the statement: the ticket is
        // visible to approvers (and the client may give up) before the
        // wait begins.
        let cancelled = self.cancelled.clone();
        let mut cancel = cancelled
            .as_deref()
            .map(|cancels| Box::pin(cancels.announced.notified()));
        if let Some(cancel) = cancel.as_mut() {
            cancel.as_mut().enable();
        }
        let cancels_before = cancelled.as_deref().map(super::cancel::Cancels::count);
        // The approver approves the statement with its values, masked as
        // the audit trail records them (withheld without a masking plugin).
        // The policy's reason may quote the statement too.
        // So are the tables' names: they are the client's text too.
        let mut texts = Vec::with_capacity(2 + params.len() + 2 * tables.len());
        texts.push(text.as_ref());
        texts.push(reason);
        texts.extend(params.iter().flatten().map(String::as_str));
        for table in &tables {
            texts.extend(table.schema.as_deref());
            texts.push(&table.name);
        }
        let masked = match crate::masking::for_record(plugins, &texts).await {
            Ok(masked) => masked.into_iter(),
            Err(fault) => {
                let refusal = plugin_failed("masking", &fault);
                return self.approval_request_failed(&asked, None, refusal);
            }
        };
        // What the approver reads, in the order the server reads it: an
        // invisible bidi override or zero-width character shown as such.
        let mut masked = masked.map(|text| crate::text::format_controls_shown(&text).into_owned());
        let statement_text = masked.next().unwrap_or_default();
        let shown_reason = masked.next().unwrap_or_default();
        let parameters = params
            .iter()
            .map(|param| param.as_ref().and_then(|_| masked.next()))
            .collect();
        let tables = tables
            .iter()
            .map(|table| TableRef {
                schema: table.schema.as_ref().and_then(|_| masked.next()),
                name: masked.next().unwrap_or_default(),
            })
            .collect();
        let timeout = self.shared.settings.approval_timeout;
        // The ticket's expiry on the session's clock: an answer counts
        // only before it, however long the client keeps the session
        // writing what it does not read.
        let waits_until = tokio::time::Instant::now() + timeout;
        let ticket = Ticket {
            id: Approvals::new_ticket_id(),
            requester: self.session.principal.clone(),
            statement_text,
            parameters,
            tables,
            reason: shown_reason,
            approver_group: approver_group.clone(),
            expires_at: approval::now_ms() + timeout.as_millis() as u64,
        };
        // On the record before any approver sees it: a request they saw is
        // there even if sluice stops during the wait. Like a statement's
        // record, if it cannot be written, nothing is asked.
        let trace_ids = self.statement_trace.ids();
        let recorded = self
            .shared
            .audit
            .record(audit::Event::ApprovalRequested {
                session: self.session.session_id,
                statement: self.statements_recorded + 1,
                ticket: &ticket.id,
                approver_group,
                plugin,
                rule,
                text: &ticket.statement_text,
                expires_ms: ticket.expires_at,
                trace: trace_ids.as_ref(),
            })
            .await;
        if let Err(error) = recorded {
            tracing::error!(alert = true, session = self.session.session_id, %error, "the audit trail cannot be written: approval not asked, statement refused");
            let refusal = trail_unwritable();
            return self.approval_request_failed(&asked, Some(ticket.id), refusal);
        }
        // The wait, as the statement's child: how long a human took.
        let wait = self.statement_trace.child(
            "approval wait",
            SpanKind::Internal,
            vec![
                KeyValue::new(attribute::APPROVAL_TICKET, ticket.id.clone()),
                KeyValue::new(attribute::APPROVER_GROUP, approver_group.clone()),
            ],
        );
        // Open before the approvers are told: an answer may come back
        // before the request returns.
        let answer = self.shared.approvals.open(ticket.clone());
        match plugins.request_approval(&ticket).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                self.shared.approvals.close(&ticket.id);
                tracing::warn!(ticket = %ticket.id, %error, "approval request failed");
                let refusal = Fatal::new(
                    sqlstate::SYSTEM_ERROR,
                    format!(
                        "this statement needs approval from {approver_group}, and asking for it failed: refused"
                    ),
                );
                return self.approval_request_failed(&asked, Some(ticket.id), refusal);
            }
            Err(fault) => {
                self.shared.approvals.close(&ticket.id);
                let refusal = plugin_failed("approval", &fault);
                return self.approval_request_failed(&asked, Some(ticket.id), refusal);
            }
        }
        let _ = self.flush().await;
        let mut outcome = self
            .await_approval(answer, cancel.as_mut().map(|c| c.as_mut()), waits_until)
            .await;
        // A cancel that arrived while the hold ended (its notice still on
        // its way upstream) withdraws the statement all the same.
        if matches!(outcome, HoldEnd::Answered(Resolution::Approved { .. }))
            && cancelled.as_deref().map(super::cancel::Cancels::count) != cancels_before
        {
            outcome = HoldEnd::Withdrawn("a cancel request");
        }
        self.shared.approvals.close(&ticket.id);
        // When the answer came (or the wait ended), before the approval
        // plugin is told, which may take a round trip to Slack.
        let answered_ms = approval::now_ms();
        let (approver, verdict) = match &outcome {
            HoldEnd::Answered(Resolution::Approved { approver }) => {
                (Some(approver.clone()), "allow")
            }
            HoldEnd::Answered(Resolution::Denied { approver }) => (Some(approver.clone()), "deny"),
            HoldEnd::Expired | HoldEnd::Withdrawn(_) => (None, "deny"),
        };
        let requested_ms = ticket.expires_at - timeout.as_millis() as u64;
        let (label, refusal) = match outcome {
            HoldEnd::Answered(Resolution::Approved { approver }) => {
                tracing::info!(ticket = %ticket.id, %approver, "statement approved");
                ("approved", None)
            }
            HoldEnd::Withdrawn(why) => {
                tracing::info!(ticket = %ticket.id, why, "held statement withdrawn");
                (
                    "withdrawn",
                    Some(Fatal::new(
                        sqlstate::QUERY_CANCELED,
                        format!(
                            "canceling statement due to user request: it was waiting for approval (ticket {})",
                            ticket.id
                        ),
                    )),
                )
            }
            HoldEnd::Answered(Resolution::Denied { approver }) => (
                "denied",
                Some(Fatal::new(
                    sqlstate::INSUFFICIENT_PRIVILEGE,
                    format!(
                        "{approver} denied this statement (approval ticket {})",
                        ticket.id
                    ),
                )),
            ),
            HoldEnd::Expired => (
                "expired",
                Some(Fatal::new(
                    sqlstate::QUERY_CANCELED,
                    format!(
                        "no approval within {}s (approval ticket {}): refused",
                        timeout.as_secs(),
                        ticket.id
                    ),
                )),
            ),
        };
        plugins.approval_outcome(&ticket, label).await;
        let approvals = &self.shared.counters.approvals;
        match label {
            "approved" => &approvals.approved,
            "denied" => &approvals.denied,
            "withdrawn" => &approvals.withdrawn,
            _ => &approvals.expired,
        }
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        wait.set(KeyValue::new(attribute::APPROVAL_OUTCOME, label));
        if let Some(approver) = &approver {
            wait.set(KeyValue::new(attribute::APPROVER, approver.clone()));
        }
        wait.end();
        self.decision = Some(Decision {
            verdict,
            // The policy and rule that asked for the approval.
            plugin: Some(plugin.clone()),
            rule: Some(rule.clone()),
            reason: Some(reason.clone()),
            approval: Some(ApprovalRecord {
                ticket: ticket.id.clone(),
                approver_group: approver_group.clone(),
                outcome: label,
                approver,
                requested_ms,
                answered_ms,
            }),
        });
        refusal
    }

    /// Waits for the held statement's answer until `waits_until`, the
    /// ticket's expiry: an answer found after it (the session was held up
    /// writing to a client that did not read) is too late. Reads what the
    /// client sends meanwhile into its buffer (up to a bound) only to
    /// notice that it left; a CancelRequest with the session's key
    /// withdraws the statement.
    async fn await_approval(
        &mut self,
        answer: tokio::sync::oneshot::Receiver<Resolution>,
        cancel: Option<Pin<&mut tokio::sync::futures::Notified<'_>>>,
        waits_until: tokio::time::Instant,
    ) -> HoldEnd {
        let mut phase = self.shared.phase.clone();
        let withdrawn = async {
            match cancel {
                Some(cancel) => cancel.await,
                None => std::future::pending().await,
            }
        };
        let expiry = tokio::time::sleep_until(waits_until);
        tokio::pin!(answer, withdrawn, expiry);
        let read_limit = self.shared.settings.limits.max_message_bytes;
        loop {
            tokio::select! {
                // Looked at first: an expiry passed while the session
                // could not look is not lost to an answer waiting since.
                biased;
                () = &mut expiry => break HoldEnd::Expired,
                answer = &mut answer => {
                    break answer.map_or(HoldEnd::Expired, HoldEnd::Answered);
                }
                _ = phase.wait_for(|p| *p == Phase::Closing) => break HoldEnd::Expired,
                () = &mut withdrawn => break HoldEnd::Withdrawn("a cancel request"),
                read = self.client.read_buf(&mut self.client_in), if self.client_in.len() < read_limit => {
                    match read {
                        // The client is gone: nobody waits for the answer,
                        // nor for what it sent behind the statement.
                        Ok(0) | Err(_) => {
                            self.client_left = true;
                            self.client_in.clear();
                            break HoldEnd::Withdrawn("the client left");
                        }
                        Ok(_) => {}
                    }
                }
            }
        }
    }

    /// Writes the statement's record — who, what (masked), the decision —
    /// and returns once it is durable: nothing runs upstream unrecorded.
    /// `refusal` is what the statement met, if it was refused. An error
    /// says why the statement must be refused after all (the trail cannot
    /// be written, or its text cannot be masked).
    async fn record_statement(
        &mut self,
        text: &str,
        params: impl FnOnce() -> Vec<Option<String>>,
        protocol: Protocol,
        refusal: Option<&Fatal>,
    ) -> Result<Option<u64>, Fatal> {
        let mut decision = match (self.decision.take(), refusal) {
            (Some(decision), None) => decision,
            (Some(decision), Some(_)) if decision.verdict != "allow" => decision,
            // Refused after the policies let it through (a limit, a
            // prepared statement sluice does not know, a failed plugin);
            // an approval given first stays on the record.
            (earlier, Some(refusal)) => Decision {
                approval: earlier.and_then(|decision| decision.approval),
                ..Decision::refused(refusal_verdict(refusal), refusal.message.clone())
            },
            (None, None) => Decision::allowed(),
        };
        self.count_statement(&decision);
        let trace = std::mem::take(&mut self.statement_trace);
        if !self.shared.audit.enabled() && !trace.is_recording() {
            return Ok(None);
        }
        let params = params();
        // The text, every parameter and the decision's reason in one
        // masking call: a refusal's reason can quote what the client sent
        // (a statement name, say) and a plugin's what it judged, so it does
        // not reach the trail raw. (A rule is the plugin's name for one of
        // its rules.)
        let mut texts: Vec<&str> = Vec::with_capacity(2 + params.len());
        texts.push(text);
        texts.extend(params.iter().map(|p| p.as_deref().unwrap_or("")));
        let reason = decision
            .reason_needs_masking()
            .then(|| decision.reason.take())
            .flatten();
        texts.extend(reason.as_deref());
        // Text that cannot be masked is refused, and the attempt stays on
        // the record with its words withheld.
        let (masked, masking_fault) = match crate::masking::for_record(&self.plugins, &texts).await
        {
            Ok(masked) => (masked, None),
            Err(fault) => (
                vec!["[withheld: masking failed]".to_owned(); texts.len()],
                Some(fault),
            ),
        };
        let mut masked = masked.into_iter();
        let text = masked.next().unwrap_or_default();
        let params: Vec<Option<String>> = masked
            .by_ref()
            .take(params.len())
            .zip(&params)
            .map(|(masked, original)| original.as_ref().map(|_| masked))
            .collect();
        if reason.is_some() {
            decision.reason = masked.next();
        }
        if let Some(fault) = &masking_fault {
            decision = Decision {
                approval: decision.approval.take(),
                ..Decision::refused(
                    "error",
                    format!("its text could not be masked ({})", fault.summary()),
                )
            };
        }
        self.statements_recorded += 1;
        let statement = self.statements_recorded;
        describe_decision_span(&trace, statement, &text, &decision);
        let trace_ids = trace.ids();
        let recorded = self
            .shared
            .audit
            .record(audit::Event::Statement {
                session: self.session.session_id,
                principal: &self.session.principal.id,
                statement,
                protocol,
                text: &text,
                params: &params,
                decision: &decision,
                trace: trace_ids.as_ref(),
            })
            .await;
        if let Err(error) = recorded {
            trace.fail("the audit trail cannot be written");
            tracing::error!(alert = true, session = self.session.session_id, %error, "the audit trail cannot be written: statement refused");
            return Err(trail_unwritable());
        }
        let outcome = self.pending_outcome();
        outcome.statements.push(statement);
        if trace.is_recording() {
            outcome.traces.push(trace);
        }
        match masking_fault {
            Some(fault) => Err(plugin_failed("masking", &fault)),
            None => Ok(Some(statement)),
        }
    }

    /// The outcome the client's open cycle gathers, begun if need be.
    fn pending_outcome(&mut self) -> &mut CycleOutcome {
        let outcome = match self.pending_outcome.take() {
            Some(outcome) => outcome,
            None => {
                let plugins = Arc::clone(self.client_plugins());
                // Returned rows are kept only as the masking plugins left them.
                let result_bytes = if plugins.masks() {
                    self.shared.audit.result_bytes()
                } else {
                    0
                };
                CycleOutcome::new(result_bytes, plugins)
            }
        };
        self.pending_outcome.insert(outcome)
    }

    /// The client bound `portal` from the recorded `statement`, in the
    /// open cycle.
    fn portal_bound(&mut self, portal: &str, statement: u64) -> BoundPortal {
        if self.portal_statements.len() >= MAX_AUDITED_PORTALS {
            // Only a later cycle's Execute of a forgotten portal loses its
            // statement.
            self.portal_statements.clear();
        }
        let bound = BoundPortal {
            statement,
            cycle: self.cycles_sent,
        };
        self.portal_statements.insert(portal.to_owned(), bound);
        bound
    }

    /// An Execute of `portal`: when the portal was bound from a statement
    /// recorded in an earlier cycle, this cycle's outcome is that
    /// statement's too. A portal sluice did not see bound (a SQL cursor)
    /// still gets an outcome, of no statement, so that what it returns is
    /// on the record.
    fn execute_recorded(&mut self, portal: &str) {
        if !self.shared.audit.enabled() {
            return;
        }
        let bound_from = self.portal_statements.get(portal).map(|p| p.statement);
        let outcome = self.pending_outcome();
        if let Some(statement) = bound_from
            && !outcome.statements.contains(&statement)
        {
            outcome.statements.push(statement);
        }
    }

    /// Counts the statement under its verdict, for the metrics.
    fn count_statement(&self, decision: &Decision) {
        let statements = &self.shared.counters.statements;
        let counter = match decision.verdict {
            "allow" if self.plugins.chain(Hook::Policy).is_empty() => &statements.unjudged,
            "allow" => &statements.allowed,
            "deny" => &statements.denied,
            _ => &statements.failed,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Starts the span of the statement that just arrived, as a child of
    /// the session's.
    fn start_statement_trace(&mut self) {
        if !self.trace.is_recording() {
            return;
        }
        self.statement_trace = self.trace.child(
            "postgresql",
            // sluice runs the statement against PostgreSQL on the client's
            // behalf: a database client span, as the conventions have it.
            SpanKind::Client,
            vec![
                KeyValue::new(attribute::DB_SYSTEM_NAME, "postgresql"),
                KeyValue::new(
                    attribute::DB_NAMESPACE,
                    self.session.connection.database.clone(),
                ),
                KeyValue::new(attribute::ENDUSER_ID, self.session.principal.id.clone()),
                KeyValue::new(attribute::SESSION_ID, self.session.session_id as i64),
            ],
        );
    }

    /// The outcome of a finished cycle's recorded statements, appended to
    /// the trail without making the client wait.
    async fn record_outcome(&mut self, mut outcome: CycleOutcome) {
        let error = match &outcome.error {
            Some((code, message)) => {
                let message = crate::masking::for_log(&outcome.plugins, message).await;
                Some((code.clone(), message))
            }
            None => None,
        };
        let trace = outcome.traces.first().and_then(Trace::ids);
        end_statement_spans(&mut outcome, error.as_ref());
        self.shared.audit.record_later(audit::Event::Outcome {
            session: self.session.session_id,
            statements: &outcome.statements,
            tags: &outcome.tags,
            rows: outcome.rows,
            suspended: outcome.suspended,
            duration_us: outcome.started.elapsed().as_micros() as u64,
            error: error
                .as_ref()
                .map(|(code, message)| (code.as_str(), message.as_str())),
            data: outcome.keep_data.then(|| audit::ReturnedData {
                rows: &outcome.data,
                results: outcome.data_results(),
            }),
            trace: trace.as_ref(),
        });
    }

    /// A result is over (or was cut short): the rows that come next belong
    /// to another, whose description sluice has yet to see.
    fn result_ended(&mut self) {
        self.rows = Rows::Undescribed;
        self.copy_out = CopyOut::Streams;
    }

    /// Notes the error that ended the cycle being answered.
    /// The server skips the rest of an extended cycle after an error: the
    /// result it was sending is over, and the describes it held will not
    /// be answered.
    fn after_server_error(&mut self) {
        self.result_ended();
        let current = self.cycles_done;
        self.describes.retain(|d| d.cycle != current);
        self.copy_executes.retain(|(cycle, _)| *cycle != current);
    }

    fn note_error(&mut self, code: &str, message: &str) {
        if let Some(outcome) = answered_outcome(&mut self.cycles, &mut self.pending_outcome) {
            outcome
                .error
                .get_or_insert_with(|| (code.to_owned(), message.to_owned()));
        }
    }

    /// Writes everything pending to both sides.
    async fn flush(&mut self) -> std::io::Result<()> {
        self.server.write_all(&self.to_server).await?;
        self.to_server.clear();
        self.client.write_all(&self.to_client).await?;
        self.to_client.clear();
        Ok(())
    }

    /// Whether policy plugins are in force. When they have just come (a
    /// reload), and the client may have changed its prepared statements in
    /// SQL while nothing judged, sluice no longer knows what any name holds
    /// (see [`Prepared::forget_every_name`]).
    fn judges(&mut self) -> bool {
        // Asked of every message (a Flush too): it looks, and leaves the
        // open cycle's set to be fixed by what judges or masks.
        self.refresh_plugins();
        let judges = !self.plugins.chain(Hook::Policy).is_empty();
        if judges && std::mem::take(&mut self.cursors_declared_unjudged) {
            tracing::info!(
                session = self.session.session_id,
                "policies now judge this session: its cursors from before must be declared again"
            );
            self.cursors.refuse_unknown_fetches();
        }
        if judges && std::mem::take(&mut self.prepared_changed_unjudged) {
            tracing::info!(
                session = self.session.session_id,
                "policies now judge this session: its prepared statements from before must be prepared again"
            );
            self.prepared.forget_every_name();
        }
        judges
    }

    /// While nothing judges, notes a statement about to run that may
    /// change the session's prepared statements in SQL (and says so).
    fn note_unjudged(&mut self, text: &str) -> bool {
        if crate::analysis::spells(text, b"declare") {
            self.cursors_declared_unjudged = true;
        }
        if [&b"prepare"[..], b"deallocate", b"discard"]
            .iter()
            .any(|word| crate::analysis::spells(text, word))
        {
            self.prepared_changed_unjudged = true;
            return true;
        }
        false
    }

    /// What the statements of a query string nothing judges do to
    /// prepared statements, to follow once they run, as `judge` does for
    /// the statements it allows.
    fn follow_unjudged_changes(&mut self, statements: Vec<Analysed>) {
        let changes: Vec<Analysed> = statements
            .into_iter()
            .filter(|analysed| analysed.effect != Effect::None)
            .collect();
        // Nothing is refused here (no policy is in force): changes the
        // server will refuse are not followed, and the names stay as they
        // are.
        if self.prepared.check(&changes, true).is_ok() {
            self.allowed_changes = changes;
        }
    }

    /// The plugin set the client's open cycle is judged under: the one in
    /// force when the cycle's first message was judged. A reload takes
    /// effect between cycles, never within one, so that one version judges
    /// all of a cycle's statements and masks every reply to them (see
    /// [`replies_plugins`](Self::replies_plugins)).
    fn client_plugins(&mut self) -> &Arc<PluginSet> {
        self.refresh_plugins();
        self.open_cycle_pinned = true;
        &self.plugins
    }

    /// Takes the set in force if a reload swapped it since this session
    /// last looked, unless the open cycle was judged under the one it has.
    fn refresh_plugins(&mut self) {
        if self.open_cycle_pinned {
            return;
        }
        let generation = self.shared.plugins.generation();
        if generation != self.plugins_generation {
            self.plugins = self.shared.plugins.current();
            self.plugins_generation = generation;
        }
    }

    /// The plugin set that masks the replies arriving now, and its
    /// generation: that of the cycle they answer, or, before any cycle was
    /// sent whole (replies to a Flush) or between cycles (a notification),
    /// the open cycle's.
    fn replies_plugins(&mut self) -> (Arc<PluginSet>, u64) {
        match self.cycles.front() {
            Some(cycle) => (Arc::clone(&cycle.plugins), cycle.plugins_generation),
            None => {
                self.refresh_plugins();
                (Arc::clone(&self.plugins), self.plugins_generation)
            }
        }
    }

    /// The refusal the server's next error is to be replaced with: the
    /// front cycle's, or, while no cycle is waiting, the open one's.
    fn pending_refusal(&self) -> Option<&Fatal> {
        match self.cycles.front() {
            Some(cycle) => cycle.refusal.as_ref(),
            None => self.refusing.as_ref(),
        }
    }

    /// Whether the replies arriving now belong to a simple Query.
    fn replying_to_simple_query(&self) -> bool {
        self.cycles.front().is_some_and(|cycle| cycle.simple)
    }

    // ---- server to client -------------------------------------------

    async fn on_server_data(&mut self) -> Result<(), End> {
        let max_held = self.shared.settings.limits.max_held_server_message_bytes;
        loop {
            match self.reader {
                ServerReader::Streaming(remaining) => {
                    let n = remaining.min(self.server_in.len());
                    self.to_client.extend_from_slice(&self.server_in[..n]);
                    self.server_in.advance(n);
                    self.reader = next_reader(remaining - n, ServerReader::Streaming);
                    if n < remaining {
                        break;
                    }
                }
                ServerReader::Discarding(remaining) => {
                    let n = remaining.min(self.server_in.len());
                    self.server_in.advance(n);
                    self.reader = next_reader(remaining - n, ServerReader::Discarding);
                    if n < remaining {
                        break;
                    }
                }
                ServerReader::Boundary => {
                    // Pass a run of whole streamed messages in one copy.
                    let rows_stream = matches!(self.rows, Rows::Described(None));
                    let copy_streams = matches!(self.copy_out, CopyOut::Streams);
                    let completions_read = self.prepared.awaits_completions();
                    let (run, result_ended, binds_completed) = if self.answering_injected() {
                        // sluice's own describe: every reply is read.
                        (0, false, 0)
                    } else {
                        streamed_run(&self.server_in, rows_stream, copy_streams, completions_read)
                    };
                    if binds_completed > 0 {
                        self.follow_binds(binds_completed);
                    }
                    if run > 0 {
                        if let Some(outcome) =
                            answered_outcome(&mut self.cycles, &mut self.pending_outcome)
                        {
                            outcome.note_sent(&self.server_in[..run]);
                        }
                        self.to_client.extend_from_slice(&self.server_in[..run]);
                        self.server_in.advance(run);
                        if result_ended {
                            self.result_ended();
                        }
                        continue;
                    }
                    let header = match frame::peek_header(&self.server_in, usize::MAX) {
                        Ok(Some(header)) => header,
                        Ok(None) => break,
                        Err(error) => {
                            tracing::error!(%error, "malformed message from the server");
                            return Err(End::Fatal(Fatal::new(
                                sqlstate::PROTOCOL_VIOLATION,
                                "the upstream server sent a malformed message",
                            )));
                        }
                    };
                    // Rows to mask are held, a run of whole ones at a time.
                    let held = match header.tag {
                        tag::DATA_ROW if !rows_stream => Some("result row"),
                        tag::COPY_DATA if !copy_streams => Some("COPY row"),
                        _ => None,
                    };
                    if let Some(what) = held {
                        if header.total() > max_held {
                            return Err(End::Fatal(Fatal::new(
                                sqlstate::PROGRAM_LIMIT_EXCEEDED,
                                format!(
                                    "a {} byte {what} is larger than sluice may hold to mask it (max_held_server_message_bytes)",
                                    header.total()
                                ),
                            )));
                        }
                        let len = run_of(&self.server_in, header.tag, MASKED_RUN_BYTES);
                        if len == 0 {
                            self.server_in
                                .reserve(header.total() - self.server_in.len());
                            break;
                        }
                        let began = self.traced_cycle().then(std::time::Instant::now);
                        if header.tag == tag::DATA_ROW {
                            self.mask_rows(len).await?;
                        } else {
                            self.mask_copy_rows(len).await?;
                        }
                        if let Some(began) = began
                            && let Some(outcome) =
                                answered_outcome(&mut self.cycles, &mut self.pending_outcome)
                        {
                            outcome.note_masking(began);
                        }
                        continue;
                    }
                    let read_whole = completions_read && confirms_prepared(header.tag);
                    if is_streamed(header.tag)
                        && !ends_result(header.tag)
                        && !read_whole
                        && !self.answering_injected()
                    {
                        // A streamed message larger than what has arrived:
                        // pass on the part we have.
                        let n = self.server_in.len();
                        self.to_client.extend_from_slice(&self.server_in);
                        self.server_in.clear();
                        self.reader = ServerReader::Streaming(header.total() - n);
                        break;
                    }
                    if header.total() > max_held {
                        self.on_oversized_server_message(header)?;
                        continue;
                    }
                    match Frame::split_from(&mut self.server_in, usize::MAX) {
                        Ok(Some(frame)) => self.on_server_message(frame).await?,
                        _ => {
                            self.server_in
                                .reserve(header.total() - self.server_in.len());
                            break;
                        }
                    }
                }
            }
        }
        shrink_if_idle(&mut self.server_in);
        Ok(())
    }

    /// Whether the cycle being answered has a statement traced.
    fn traced_cycle(&self) -> bool {
        self.cycles
            .front()
            .and_then(|c| c.audit.as_ref())
            .is_some_and(CycleOutcome::traced)
    }

    /// Masks the first `len` bytes of the server's buffer, whole DataRows,
    /// into the client's.
    async fn mask_rows(&mut self, len: usize) -> Result<(), End> {
        let mask = match &self.rows {
            Rows::Described(mask) => mask.clone(),
            Rows::Undescribed => {
                let columns = rows::row_width(&self.server_in).unwrap_or(0);
                let mask = self.result_mask(rows::undescribed_columns(columns)).await?;
                self.rows = Rows::Described(mask.clone());
                mask
            }
        };
        let rows = self.server_in.split_to(len);
        let sent_from = self.to_client.len();
        match mask {
            None => self.to_client.extend_from_slice(&rows),
            Some(mask) => {
                mask.mask_rows(&self.session, &rows, &mut self.to_client)
                    .await
                    .map_err(|error| masking_failed("a result", &error))?;
            }
        }
        if let Some(outcome) = answered_outcome(&mut self.cycles, &mut self.pending_outcome) {
            outcome.note_sent(&self.to_client[sent_from..]);
        }
        Ok(())
    }

    /// Masks the first `len` bytes of the server's buffer, whole CopyData
    /// messages of a COPY TO STDOUT, into the client's, and notes what was
    /// sent for the statement's outcome.
    async fn mask_copy_rows(&mut self, len: usize) -> Result<(), End> {
        let sent_from = self.to_client.len();
        if let Err(end) = self.mask_copy_run(len).await {
            // Whole messages or nothing: the session's closing error must
            // not land inside a message the run left half-written.
            self.to_client.truncate(sent_from);
            return Err(end);
        }
        if let Some(outcome) = answered_outcome(&mut self.cycles, &mut self.pending_outcome) {
            outcome.note_sent(&self.to_client[sent_from..]);
        }
        Ok(())
    }

    /// [`mask_copy_rows`](Self::mask_copy_rows)'s masking.
    async fn mask_copy_run(&mut self, len: usize) -> Result<(), End> {
        let run = self.server_in.split_to(len);
        match &mut self.copy_out {
            CopyOut::Binary { mask, header_seen } => {
                let mask = mask.clone();
                let tuples = crate::masking::copy::read(&run, header_seen)
                    .map_err(|error| masking_failed("COPY data", &error))?;
                let mut masked = BytesMut::with_capacity(tuples.rows.len());
                mask.mask_rows(&self.session, &tuples.rows, &mut masked)
                    .await
                    .map_err(|error| masking_failed("COPY data", &error))?;
                crate::masking::copy::rebuild(&run, &tuples, &masked, &mut self.to_client)
                    .map_err(|error| masking_failed("COPY data", &error))
            }
            CopyOut::Fields {
                mask,
                format,
                header_pending,
            } => {
                let (mask, format) = (mask.clone(), format.clone());
                let mut run = run;
                if std::mem::take(header_pending) {
                    let header = run.split_to(first_message_len(&run));
                    self.mask_copy_text(header).await?;
                }
                let Some(mask) = mask else {
                    // Only the header was to be masked.
                    self.copy_out = CopyOut::Streams;
                    self.to_client.extend_from_slice(&run);
                    return Ok(());
                };
                // Rows that do not read as the describe says are not what
                // it described: never passed on unread.
                let fields = copy_text::read(&run, &format, mask.columns.len())
                    .map_err(|error| masking_failed("COPY data", &error))?;
                let mut masked = BytesMut::with_capacity(fields.rows.len());
                mask.mask_rows(&self.session, &fields.rows, &mut masked)
                    .await
                    .map_err(|error| masking_failed("COPY data", &error))?;
                copy_text::rebuild(&run, &fields, &masked, &format, &mut self.to_client)
                    .map_err(|error| masking_failed("COPY data", &error))
            }
            CopyOut::Streams => {
                self.to_client.extend_from_slice(&run);
                Ok(())
            }
        }
    }

    /// Masks CopyData messages of a COPY TO STDOUT in text or csv format:
    /// each row is free text to the plugins; a run of rows goes in one
    /// call.
    async fn mask_copy_text(&mut self, run: BytesMut) -> Result<(), End> {
        // `run_of` found whole messages here, so every header reads.
        let mut rows = Vec::new();
        let mut at = 0;
        while let Ok(Some(header)) = frame::peek_header(&run[at..], usize::MAX) {
            let body = &run[at + frame::HEADER_LEN..at + header.total()];
            rows.push(
                std::str::from_utf8(body)
                    .map_err(|_| masking_failed("COPY data", &"a row is not UTF-8 text"))?,
            );
            at += header.total();
        }
        let (plugins, _) = self.replies_plugins();
        let masked = crate::masking::mask_texts(&plugins, &rows)
            .await
            .map_err(|fault| masking_failed("COPY data", &fault))?;
        match masked {
            None => self.to_client.extend_from_slice(&run),
            Some(masked) => {
                for row in masked {
                    // Edits may have made a row longer than a message's
                    // int32 length can say.
                    let length = i32::try_from(row.len() + 4)
                        .map_err(|_| masking_failed("COPY data", &"a masked row is too long"))?;
                    self.to_client.extend_from_slice(&[tag::COPY_DATA]);
                    self.to_client.extend_from_slice(&length.to_be_bytes());
                    self.to_client.extend_from_slice(row.as_bytes());
                }
            }
        }
        Ok(())
    }

    /// `columns`, described by `SELECT * FROM t` for a `COPY t TO`,
    /// without the table's generated columns, which the COPY leaves out:
    /// looked up in the catalog (by the table's OID, a number). Left as
    /// they are if the lookup fails.
    async fn leave_out_generated(
        &mut self,
        columns: &mut Vec<crate::plugin::bindings::types::Column>,
    ) {
        let Some(table) = columns.first().map(|c| c.table_oid).filter(|&oid| oid != 0) else {
            return;
        };
        let sql = format!(
            "SELECT attnum FROM pg_catalog.pg_attribute \
             WHERE attrelid = {table} AND attgenerated <> '' AND NOT attisdropped"
        );
        let rows = self
            .shared
            .upstream
            .catalog_query(&self.session.connection.database, &sql)
            .await;
        match rows {
            Ok(rows) => {
                let generated: Vec<i16> = rows
                    .iter()
                    .filter_map(|row| row.first()?.as_deref()?.parse().ok())
                    .collect();
                columns.retain(|c| !(c.table_oid == table && generated.contains(&c.column_number)));
            }
            Err(error) => {
                tracing::warn!(%error, "could not look up a table's generated columns; its COPY data is refused");
            }
        }
    }

    /// What the masking plugins want of a result with these columns.
    async fn result_mask(
        &mut self,
        columns: Vec<crate::plugin::bindings::types::Column>,
    ) -> Result<Option<Arc<ResultMask>>, End> {
        let (plugins, _) = self.replies_plugins();
        if !plugins.masks() {
            return Ok(None);
        }
        // Binary values of user-defined types are read through the
        // database's catalog: types not seen before are looked up first.
        let types = self
            .shared
            .user_types
            .resolve(
                &self.shared.upstream,
                &self.session.connection.database,
                columns.iter().map(|column| column.type_oid),
            )
            .await;
        ResultMask::for_columns(&plugins, &self.session, columns, types)
            .await
            .map_err(|fault| masking_failed("a result", &fault))
    }

    /// A RowDescription or NoData arrived: whose answer is it, and what
    /// does it say about the rows to come? Returns what to pass on.
    async fn on_description(&mut self, frame: &Frame) -> Result<Description, End> {
        let describe = if self.replying_to_simple_query() {
            None
        } else {
            match self.describes.pop_front() {
                Some(describe) => Some(describe),
                None => {
                    return Err(End::Fatal(Fatal::new(
                        sqlstate::PROTOCOL_VIOLATION,
                        "the upstream server sent a row description nobody asked for",
                    )));
                }
            }
        };
        let injected = describe.as_ref().is_some_and(|d| d.injected);
        let of_statement = describe.as_ref().is_some_and(|d| !d.portal);
        let (plugins, generation) = self.replies_plugins();
        if frame.tag() != tag::ROW_DESCRIPTION || !plugins.masks() {
            if !of_statement {
                // A portal described as returning nothing (NoData) sends
                // no rows: PostgreSQL discards those of a rule's `DO ALSO
                // SELECT` or of a FETCH bound before its cursor existed
                // (`PortalRunMulti`). Should a server send some anyway,
                // they come with no description, and are not streamed.
                self.rows = if frame.tag() == tag::NO_DATA && plugins.masks() {
                    Rows::Undescribed
                } else {
                    Rows::Described(None)
                };
            }
            return Ok(if injected {
                Description::Keep
            } else {
                Description::Pass
            });
        }
        let seen = match &self.last_description {
            Some(seen) if seen.generation == generation && seen.body.as_ref() == frame.body() => {
                (seen.mask.clone(), seen.renamed.clone())
            }
            _ => {
                let description = match backend::decode(frame) {
                    Some(backend::Message::RowDescription(description)) => description,
                    _ => {
                        return Err(End::Fatal(Fatal::new(
                            sqlstate::PROTOCOL_VIOLATION,
                            "the upstream server sent a malformed RowDescription",
                        )));
                    }
                };
                let renamed = messages::mask_column_names(&plugins, &description)
                    .await
                    .map_err(|fault| masking_failed("a result's column names", &fault))?
                    .map(BytesMut::freeze);
                // A prepared statement's description: its formats are not
                // yet chosen, so it says nothing certain about rows.
                let mask = if of_statement {
                    None
                } else {
                    self.result_mask(rows::columns_of(&description)).await?
                };
                if !of_statement {
                    self.last_description = Some(SeenDescription {
                        generation,
                        body: bytes::Bytes::copy_from_slice(frame.body()),
                        mask: mask.clone(),
                        renamed: renamed.clone(),
                    });
                }
                (mask, renamed)
            }
        };
        let (mask, renamed) = seen;
        if !of_statement {
            self.rows = Rows::Described(mask);
        }
        Ok(match (injected, renamed) {
            (true, _) => Description::Keep,
            (false, Some(renamed)) => Description::Renamed(renamed),
            (false, None) => Description::Pass,
        })
    }

    async fn on_server_message(&mut self, frame: Frame) -> Result<(), End> {
        if self.answering_injected() {
            return self.on_injected_reply(frame);
        }
        match frame.tag() {
            tag::ROW_DESCRIPTION | tag::NO_DATA => match self.on_description(&frame).await? {
                Description::Pass => {}
                Description::Renamed(renamed) => {
                    self.to_client.extend_from_slice(&renamed);
                    return Ok(());
                }
                // sluice's own describe: the client did not ask.
                Description::Keep => return Ok(()),
            },
            tag::PARSE_COMPLETE => self.prepared.confirmed(),
            tag::CLOSE_COMPLETE | tag::COMMAND_COMPLETE => {
                // Read only while a change to prepared statements waits
                // for its answer (see `confirms_prepared`); otherwise they
                // stream.
                let gone = if frame.tag() == tag::CLOSE_COMPLETE {
                    self.prepared.close_confirmed()
                } else {
                    let body = frame.body();
                    let text = String::from_utf8_lossy(body.strip_suffix(b"\0").unwrap_or(body));
                    self.prepared.command_completed(&text)
                };
                for name in gone {
                    self.copy_statements.remove(&name);
                }
                if let Some(outcome) = answered_outcome(&mut self.cycles, &mut self.pending_outcome)
                {
                    outcome.note_sent(frame.as_bytes());
                }
                if ends_result(frame.tag()) {
                    self.result_ended();
                }
            }
            tag::COPY_IN_RESPONSE => self.copy_in_started()?,
            tag::READY_FOR_QUERY => {
                // A statement the server did not make is not a COPY either:
                // no describe of another query masks what a Bind of its name
                // runs.
                for name in self.prepared.cycle_ended(self.cycles_done) {
                    self.copy_statements.remove(&name);
                }
                if let Some(outcome) = self.cycle_done(&frame)? {
                    self.record_outcome(outcome).await;
                }
                self.result_ended();
                self.copy_describe_error = None;
                let done = self.cycles_done;
                self.describes.retain(|d| d.cycle >= done);
                self.copy_executes.retain(|(cycle, _)| *cycle >= done);
            }
            tag::ERROR_RESPONSE => {
                let fields = match backend::decode(&frame) {
                    Some(backend::Message::ErrorResponse(error)) => error.fields,
                    // Unread, it could not be masked: not passed on raw.
                    _ => return Err(malformed_from_server("ErrorResponse")),
                };
                if matches!(backend::field(&fields, b'V'), Some("FATAL" | "PANIC")) {
                    self.server_said_fatal = true;
                }
                if backend::field(&fields, b'C') == Some("25P02")
                    && let Some(original) = self.copy_describe_error.take()
                {
                    // sluice's describe ahead of this COPY failed and, in a
                    // transaction block, aborted it: the client is told
                    // what failed, as the COPY itself would have said.
                    let original = self.withhold_row_values(&original).unwrap_or(original);
                    let (plugins, _) = self.replies_plugins();
                    let masked = messages::mask_fields(&plugins, &original)
                        .await
                        .map_err(|fault| masking_failed("a server message", &fault))?;
                    self.note_error(
                        backend::field(&original, b'C').unwrap_or_default(),
                        backend::field(&original, b'M').unwrap_or_default(),
                    );
                    messages::encode_fields(
                        tag::ERROR_RESPONSE,
                        masked.unwrap_or(original),
                        &mut self.to_client,
                    );
                    self.result_ended();
                    return Ok(());
                }
                self.after_server_error();
                if let Some(refusal) = self.pending_refusal() {
                    // Only the stand-in's own error becomes the refusal. Any
                    // other came first and stopped the cycle before the
                    // refused statement: a statement ahead of it failed, or
                    // the transaction is aborted (25P02, which the server
                    // says before it looks at any statement). The client
                    // gets that error, as PostgreSQL would give it.
                    if is_stand_in_error(&fields) {
                        let (code, message) = (refusal.code, refusal.message.clone());
                        if let Some(cycle) = self.cycles.front_mut() {
                            cycle.refusal = None;
                        } else {
                            self.refusing = None;
                        }
                        reply::error(&mut self.to_client, Severity::Error, code, &message);
                        self.note_error(code, &message);
                        return Ok(());
                    }
                }
                self.note_error(
                    backend::field(&fields, b'C').unwrap_or_default(),
                    backend::field(&fields, b'M').unwrap_or_default(),
                );
                return match self.withhold_row_values(&fields) {
                    Some(withheld) => self.pass_changed_fields(frame.tag(), withheld).await,
                    None => self.pass_fields(frame, fields).await,
                };
            }
            tag::NOTICE_RESPONSE => {
                let fields = match backend::decode(&frame) {
                    Some(backend::Message::NoticeResponse(notice)) => notice.fields,
                    _ => return Err(malformed_from_server("NoticeResponse")),
                };
                return self.pass_fields(frame, fields).await;
            }
            tag::PARAMETER_STATUS => {
                let status = match backend::decode(&frame) {
                    Some(backend::Message::ParameterStatus(status)) => status,
                    _ => {
                        return Err(End::Fatal(Fatal::new(
                            sqlstate::PROTOCOL_VIOLATION,
                            "the upstream server sent a malformed ParameterStatus",
                        )));
                    }
                };
                if status.name == "standard_conforming_strings" {
                    self.standard_conforming_strings = status.value == "on";
                }
                if status.name == "client_encoding" && status.value != "UTF8" {
                    // Someone ran SET client_encoding: sluice reads every
                    // session as UTF-8 and will not guess at another.
                    return Err(End::Fatal(Fatal::new(
                        sqlstate::FEATURE_NOT_SUPPORTED,
                        "client_encoding was changed away from UTF8, which sluice does not support",
                    )));
                }
                let (plugins, _) = self.replies_plugins();
                if plugins.masks() {
                    // `SET application_name = '4111...'` is reported back.
                    let masked = messages::mask_parameter_status(&plugins, &status)
                        .await
                        .map_err(|fault| masking_failed("a reported parameter", &fault))?;
                    if let Some(masked) = masked {
                        self.to_client.extend_from_slice(&masked);
                        return Ok(());
                    }
                }
            }
            tag::COPY_OUT_RESPONSE if self.replies_plugins().0.masks() => {
                // COPY data is read by the columns of the describe sent
                // just ahead of the COPY, text and csv rows field by field.
                // Without one it is not passed on: free text could hide a
                // card number's digits behind a delimiter or an escape
                // (`X4111...`, `\n4111...`), and binary data carries no
                // types.
                let source = if self.replying_to_simple_query() {
                    self.copy_query_source.take()
                } else {
                    self.copy_executes
                        .pop_front()
                        .and_then(|(_, source)| source)
                };
                let mut described = source.as_ref().and_then(|s| s.columns.get().cloned());
                // The COPY says how many columns it sends: a describe of
                // another count is not what it copies (`COPY t TO` leaves
                // out generated columns, which `SELECT *` has).
                let copied = frame
                    .body()
                    .get(1..3)
                    .map(|count| usize::from(u16::from_be_bytes([count[0], count[1]])));
                if let Some(columns) = &mut described
                    && Some(columns.len()) != copied
                {
                    self.leave_out_generated(columns).await;
                    if Some(columns.len()) != copied {
                        described = None;
                    }
                }
                let format = source.map(|s| s.format.clone());
                self.copy_out = if frame.body().first() == Some(&0) {
                    let text_format = format.as_ref().and_then(TextFormat::of);
                    match (described, text_format) {
                        (Some(mut columns), Some(text_format)) => {
                            for column in &mut columns {
                                column.format = ValueFormat::Text;
                            }
                            let mask = self.result_mask(columns).await?;
                            let header_pending = format.is_some_and(|format| format.header);
                            if mask.is_none() && !header_pending {
                                CopyOut::Streams
                            } else {
                                CopyOut::Fields {
                                    mask,
                                    format: text_format,
                                    header_pending,
                                }
                            }
                        }
                        _ => {
                            return Err(masking_failed("COPY data", &COPY_NOT_READ));
                        }
                    }
                } else {
                    let Some(mut columns) = described else {
                        return Err(masking_failed("COPY data", &COPY_NOT_READ));
                    };
                    // A COPY with FORMAT binary sends every column in binary.
                    for column in &mut columns {
                        column.format = ValueFormat::Binary;
                    }
                    match self.result_mask(columns).await? {
                        Some(mask) => CopyOut::Binary {
                            mask,
                            header_seen: false,
                        },
                        None => CopyOut::Streams,
                    }
                };
            }
            tag::NOTIFICATION_RESPONSE if self.replies_plugins().0.masks() => {
                let Some(backend::Message::NotificationResponse(notification)) =
                    backend::decode(&frame)
                else {
                    return Err(End::Fatal(Fatal::new(
                        sqlstate::PROTOCOL_VIOLATION,
                        "the upstream server sent a malformed NotificationResponse",
                    )));
                };
                let (plugins, _) = self.replies_plugins();
                let masked = messages::mask_notification(&plugins, &notification)
                    .await
                    .map_err(|fault| masking_failed("a notification", &fault))?;
                if let Some(masked) = masked {
                    self.to_client.extend_from_slice(&masked);
                    return Ok(());
                }
            }
            // The server's cancel key never reaches the client.
            tag::BACKEND_KEY_DATA => return Ok(()),
            _ => {}
        }
        self.to_client.extend_from_slice(frame.as_bytes());
        Ok(())
    }

    /// The error's fields with the row values of its DETAIL withheld, when
    /// it is a constraint violation (class 23: not null, foreign key,
    /// unique, check, exclusion; 44000: a view's check option) and the
    /// session's principal is in no group of `[errors] row_values_for`.
    /// PostgreSQL shows the failing row, or the key that collided, only to
    /// a user who may read those columns — but sluice's upstream role may
    /// read every column, so a principal allowed only to write a table
    /// would be shown values its grants keep from it (a tagged note, the
    /// card number beside a colliding key). Told by SQLSTATE, not by the
    /// DETAIL's wording, which the server's language changes.
    /// `None`: nothing to withhold.
    fn withhold_row_values(&self, fields: &[(u8, String)]) -> Option<Vec<(u8, String)>> {
        let code = backend::field(fields, b'C')?;
        let shows_row = code.starts_with("23") || code == "44000";
        if !shows_row || backend::field(fields, b'D').is_none() {
            return None;
        }
        let row_values_for = &self.shared.settings.row_values_for;
        if self
            .session
            .principal
            .groups
            .iter()
            .any(|group| row_values_for.contains(group))
        {
            return None;
        }
        Some(
            fields
                .iter()
                .map(|(kind, value)| match kind {
                    b'D' => (*kind, ROW_VALUES_WITHHELD.to_owned()),
                    _ => (*kind, value.clone()),
                })
                .collect(),
        )
    }

    /// Passes an ErrorResponse or NoticeResponse on, its text masked.
    async fn pass_fields(&mut self, frame: Frame, fields: Vec<(u8, String)>) -> Result<(), End> {
        match self.masked_fields(&fields).await? {
            Some(masked) => messages::encode_fields(frame.tag(), masked, &mut self.to_client),
            None => self.to_client.extend_from_slice(frame.as_bytes()),
        }
        Ok(())
    }

    /// Passes an error or notice sluice changed to the client, masked.
    async fn pass_changed_fields(&mut self, tag: u8, fields: Vec<(u8, String)>) -> Result<(), End> {
        let fields = self.masked_fields(&fields).await?.unwrap_or(fields);
        messages::encode_fields(tag, fields, &mut self.to_client);
        Ok(())
    }

    /// `fields` as the masking plugins leave them; `None` when none is
    /// loaded or none changed anything.
    async fn masked_fields(
        &mut self,
        fields: &[(u8, String)],
    ) -> Result<Option<Vec<(u8, String)>>, End> {
        let (plugins, _) = self.replies_plugins();
        if !plugins.masks() {
            return Ok(None);
        }
        messages::mask_fields(&plugins, fields)
            .await
            .map_err(|fault| masking_failed("a server message", &fault))
    }

    /// A message sluice must read whole is larger than it may hold. Errors
    /// and notices are replaced by sluice's own, with the same effect on the
    /// statement; anything else cannot be passed on safely.
    fn on_oversized_server_message(&mut self, header: Header) -> Result<(), End> {
        let limit = self.shared.settings.limits.max_held_server_message_bytes;
        let message = format!(
            "a {} byte message from the server exceeded max_held_server_message_bytes ({limit}) and was dropped",
            header.total()
        );
        tracing::warn!(tag = %(header.tag as char), size = header.total(), "oversized server message dropped");
        match header.tag {
            tag::ERROR_RESPONSE => {
                // The statement failed all the same: its outcome says so.
                self.after_server_error();
                self.note_error(sqlstate::PROGRAM_LIMIT_EXCEEDED, &message);
                reply::error(
                    &mut self.to_client,
                    Severity::Error,
                    sqlstate::PROGRAM_LIMIT_EXCEEDED,
                    &message,
                );
            }
            tag::NOTICE_RESPONSE => reply::notice(
                &mut self.to_client,
                sqlstate::PROGRAM_LIMIT_EXCEEDED,
                &message,
            ),
            _ => {
                return Err(End::Fatal(Fatal::new(
                    sqlstate::PROGRAM_LIMIT_EXCEEDED,
                    message,
                )));
            }
        }
        let n = header.total().min(self.server_in.len());
        self.server_in.advance(n);
        self.reader = next_reader(header.total() - n, ServerReader::Discarding);
        Ok(())
    }

    // ---- the end ------------------------------------------------------

    /// The outcomes of statements the server had not finished answering
    /// when the session ended: what they returned so far is on the record,
    /// with why they did not finish.
    async fn record_unfinished(&mut self, end: &End) {
        // A refused cycle (its stand-in still on its way back) ended in its
        // refusal, whatever ended the session after.
        let unfinished: Vec<CycleOutcome> = std::mem::take(&mut self.cycles)
            .into_iter()
            .filter_map(|cycle| {
                let mut outcome = cycle.audit?;
                if let Some(refusal) = &cycle.refusal {
                    outcome
                        .error
                        .get_or_insert_with(|| (refusal.code.to_owned(), refusal.message.clone()));
                }
                Some(outcome)
            })
            .chain(self.pending_outcome.take())
            .collect();
        let (code, why) = match end {
            End::Fatal(fatal) => (fatal.code, fatal.message.as_str()),
            End::ServerGone => (
                sqlstate::CONNECTION_FAILURE,
                "the upstream connection was lost",
            ),
            End::ClientGone | End::ClientTerminated => {
                (sqlstate::CONNECTION_FAILURE, "the client left")
            }
        };
        for mut outcome in unfinished {
            outcome.error.get_or_insert_with(|| {
                (
                    code.to_owned(),
                    format!("the session ended before the statement finished: {why}"),
                )
            });
            self.record_outcome(outcome).await;
        }
    }

    async fn finish(&mut self, end: End, principal: &str, peer: super::Peer) {
        // Only a statement that runs upstream is worth cancelling: a
        // refusal's stand-in fails there at once.
        let busy = self.cycles.iter().any(|cycle| cycle.refusal.is_none());
        let trace = std::mem::take(&mut self.trace);
        let trace_ids = trace.ids();
        if let End::Fatal(fatal) = &end {
            trace.fail(fatal.message.clone());
        }
        trace.end();
        self.record_unfinished(&end).await;
        let reason = match &end {
            End::ClientTerminated => "the client ended it".to_owned(),
            End::ClientGone => "the client left".to_owned(),
            End::ServerGone => "the server ended it".to_owned(),
            // Why, as the client was told: its SQLSTATE and message (which
            // may quote what the client sent, so masked — for a trail, the
            // only reader). An idle session ended at a shutdown has no
            // outcome to say it.
            End::Fatal(fatal) if self.shared.audit.enabled() => {
                let plugins = self.shared.plugins.current();
                let message = crate::masking::for_log(&plugins, &fatal.message).await;
                format!("sluice ended it ({}): {message}", fatal.code)
            }
            End::Fatal(_) => String::new(),
        };
        self.shared.audit.record_later(audit::Event::SessionEnd {
            session: self.session.session_id,
            statements: self.statements_recorded,
            duration_ms: self.started.elapsed().as_millis() as u64,
            reason: &reason,
            trace: trace_ids.as_ref(),
        });
        match &end {
            End::ClientTerminated => {
                tracing::info!(%peer, principal, "session ended by the client");
            }
            End::ClientGone => {
                if busy && let Some(key) = self.upstream_key {
                    // The client left mid-statement: stop the statement so
                    // the server backend does not run on for nobody.
                    if let Err(error) = self.shared.upstream.cancel(key.pid, key.secret).await {
                        tracing::warn!(%error, "could not cancel the abandoned statement");
                    }
                }
                tracing::info!(%peer, principal, busy, "session ended by the client");
            }
            End::ServerGone if self.server_said_fatal => {
                tracing::info!(%peer, principal, "the server ended the session");
            }
            End::ServerGone => {
                tracing::warn!(%peer, principal, "upstream connection lost");
                reply::error(
                    &mut self.to_client,
                    Severity::Fatal,
                    sqlstate::CONNECTION_FAILURE,
                    "the upstream database connection was lost",
                );
            }
            End::Fatal(fatal) => {
                tracing::info!(%peer, principal, code = fatal.code, reason = %fatal.message, "session closed by sluice");
                reply::error(
                    &mut self.to_client,
                    Severity::Fatal,
                    fatal.code,
                    &fatal.message,
                );
            }
        }
        let deadline = std::time::Duration::from_secs(2);
        if !matches!(end, End::ServerGone) {
            // Say goodbye so the backend exits at once. After the client's
            // own Terminate, what it sent before goes first, in order.
            if !matches!(end, End::ClientTerminated) {
                self.to_server.clear();
                self.to_server
                    .extend_from_slice(&[tag::TERMINATE, 0, 0, 0, 4]);
            }
            let _ = tokio::time::timeout(deadline, async {
                let _ = self.server.write_all(&self.to_server).await;
                let _ = self.server.shutdown().await;
            })
            .await;
        }
        if !matches!(end, End::ClientGone | End::ClientTerminated) {
            let _ = tokio::time::timeout(deadline, async {
                let _ = self.client.write_all(&self.to_client).await;
                let _ = self.client.shutdown().await;
            })
            .await;
        }
    }
}

/// What a statement's verdict is remembered under: its shape, and whether
/// it came in a string of several (`None`: its analysis depends on its
/// literals, so its verdict is not remembered).
fn verdict_key(analysed: &Analysed) -> Option<(Arc<str>, bool)> {
    analysed
        .shape
        .clone()
        .map(|shape| (shape, analysed.statement.is_multi))
}

/// The outcome of the cycle the server is answering: the first one queued
/// or, while none is, the client's open cycle (an Execute followed by a
/// Flush is answered before its Sync comes).
fn answered_outcome<'a>(
    cycles: &'a mut VecDeque<Cycle>,
    open: &'a mut Option<CycleOutcome>,
) -> Option<&'a mut CycleOutcome> {
    match cycles.front_mut() {
        Some(cycle) => cycle.audit.as_mut(),
        None => open.as_mut(),
    }
}

/// Names the statement's span after what the analysis found: the command,
/// and the table when there is exactly one.
async fn describe_statement_span(plugins: &PluginSet, trace: &Trace, statements: &[Analysed]) {
    if !trace.is_recording() {
        return;
    }
    let Some(first) = statements.first() else {
        return;
    };
    let command = loggable_command(&first.statement.command);
    let operation = if statements.len() == 1 {
        command.to_owned()
    } else {
        // Several statements in one string: the conventions' batch form.
        format!("BATCH {command}")
    };
    let tables: Vec<String> = statements
        .iter()
        .flat_map(|a| &a.statement.tables)
        .map(|access| match &access.table.schema {
            Some(schema) => format!("{schema}.{}", access.table.name),
            None => access.table.name.clone(),
        })
        .collect();
    // Named only when every access is to the same one table. A name is
    // the client's text and may be anything, a card number too: masked as
    // the statement's text is, and left out where that cannot be.
    let collection = match tables.first() {
        Some(first) if tables.iter().all(|table| table == first) && plugins.masks() => {
            match plugins.mask_text(first).await {
                Ok(Some(masked)) => Some(masked),
                Ok(None) => Some(first.clone()),
                Err(_) => None,
            }
        }
        _ => None,
    };
    let summary = crate::telemetry::statement_span_name(&operation, collection.as_deref());
    trace.rename(summary.clone());
    trace.set_all(
        [
            Some(KeyValue::new(attribute::DB_QUERY_SUMMARY, summary)),
            Some(KeyValue::new(attribute::DB_OPERATION_NAME, operation)),
            collection.map(|collection| KeyValue::new(attribute::DB_COLLECTION_NAME, collection)),
        ]
        .into_iter()
        .flatten(),
    );
}

/// A statement's command as logs and spans may show it. For a statement
/// the parser does not read, the command is the client's first words
/// (`x4111111111111111` reads `X4111111111111111`): one with a digit is no
/// SQL keyword and could be a card number, so it shows as `OTHER`.
fn loggable_command(command: &str) -> &str {
    if command.bytes().any(|b| b.is_ascii_digit()) {
        "OTHER"
    } else {
        command
    }
}

/// Puts the masked text and the decision on the statement's span.
fn describe_decision_span(trace: &Trace, statement: u64, text: &str, decision: &Decision) {
    if !trace.is_recording() {
        return;
    }
    let mut attributes = vec![
        KeyValue::new(attribute::STATEMENT, statement as i64),
        KeyValue::new(attribute::DB_QUERY_TEXT, text.to_owned()),
        KeyValue::new(attribute::VERDICT, decision.verdict),
    ];
    if let Some(plugin) = &decision.plugin {
        attributes.push(KeyValue::new(attribute::PLUGIN, plugin.clone()));
    }
    if let Some(rule) = &decision.rule {
        attributes.push(KeyValue::new(attribute::RULE, rule.clone()));
    }
    if let Some(approval) = &decision.approval {
        attributes.push(KeyValue::new(
            attribute::APPROVAL_TICKET,
            approval.ticket.clone(),
        ));
        attributes.push(KeyValue::new(attribute::APPROVAL_OUTCOME, approval.outcome));
    }
    trace.set_all(attributes);
    // The client's own span, if it named one in the (masked) text.
    if let Some(client) = crate::telemetry::client_context(text) {
        trace.link(client);
    }
    if decision.verdict != "allow" {
        trace.fail(format!("refused: {}", decision.verdict));
    }
}

/// Ends the spans of a finished cycle's statements, with what came of
/// them: rows, the error's SQLSTATE (masked message), and a child span
/// for the time masking took.
fn end_statement_spans(outcome: &mut CycleOutcome, error: Option<&(String, String)>) {
    let traces = std::mem::take(&mut outcome.traces);
    let single = traces.len() == 1;
    for (index, trace) in traces.into_iter().enumerate() {
        if single {
            trace.set(KeyValue::new(
                attribute::DB_RESPONSE_RETURNED_ROWS,
                outcome.rows as i64,
            ));
        }
        if let Some((code, message)) = error {
            trace.set_all([
                KeyValue::new(attribute::DB_RESPONSE_STATUS_CODE, code.clone()),
                KeyValue::new(attribute::ERROR_TYPE, code.clone()),
            ]);
            trace.fail(message.clone());
        }
        // The cycle's masking is one burst or many, timed as it ran; it
        // goes under the first statement's span.
        if index == 0
            && let Some(time) = outcome.masking.take()
        {
            trace
                .child_at(
                    "masking",
                    SpanKind::Internal,
                    vec![KeyValue::new(
                        "sluice.masking.busy_us",
                        time.busy.as_micros() as i64,
                    )],
                    Some(time.first),
                )
                .end_at(time.last);
        }
        trace.end();
    }
}

/// A ParameterStatus from the server with its text masked, when a masking
/// plugin changed it; why not, when it cannot be masked (one that cannot
/// be read is not passed on unread).
async fn masked_parameter_status(
    plugins: &PluginSet,
    frame: &Frame,
) -> Result<Option<BytesMut>, String> {
    if !plugins.masks() {
        return Ok(None);
    }
    match backend::decode(frame) {
        Some(backend::Message::ParameterStatus(status)) => {
            messages::mask_parameter_status(plugins, &status)
                .await
                .map_err(|fault| fault.summary())
        }
        _ => Err("the upstream server sent a malformed ParameterStatus".to_owned()),
    }
}

type PhaseChanged =
    Pin<Box<dyn Future<Output = tokio::sync::watch::Receiver<Phase>> + Send + Sync>>;

/// A future that resolves, handing back its receiver (now up to date), when
/// the gateway's phase changes; never, if the gateway is gone.
fn watch_phase(mut receiver: tokio::sync::watch::Receiver<Phase>) -> PhaseChanged {
    Box::pin(async move {
        if receiver.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        receiver
    })
}

/// Message types that stream through without being held: rows and COPY
/// data, and anything sluice does not model (passed on as it came). Rows
/// are held instead while they must be masked. A ParseComplete is read:
/// it tells that a prepared statement exists.
fn is_streamed(tag: u8) -> bool {
    !matches!(
        tag,
        tag::READY_FOR_QUERY
            | tag::PARSE_COMPLETE
            | tag::COPY_IN_RESPONSE
            | tag::ERROR_RESPONSE
            | tag::NOTICE_RESPONSE
            | tag::NOTIFICATION_RESPONSE
            | tag::PARAMETER_STATUS
            | tag::BACKEND_KEY_DATA
            | tag::ROW_DESCRIPTION
            | tag::NO_DATA
            | tag::COPY_OUT_RESPONSE
            | tag::AUTHENTICATION
            | tag::NEGOTIATE_PROTOCOL_VERSION
    )
}

/// Messages that may confirm a change to the session's prepared
/// statements (a Close, a `DEALLOCATE`): read, not streamed, while one
/// waits for its answer.
fn confirms_prepared(tag: u8) -> bool {
    matches!(tag, tag::CLOSE_COMPLETE | tag::COMMAND_COMPLETE)
}

/// Messages after which the rows that come belong to another result (or
/// portal), whose description sluice has yet to see. They pass through
/// whole, with the streamed ones.
fn ends_result(tag: u8) -> bool {
    matches!(
        tag,
        tag::BIND_COMPLETE
            | tag::COMMAND_COMPLETE
            | tag::EMPTY_QUERY_RESPONSE
            | tag::PORTAL_SUSPENDED
    )
}

/// The row count a command tag reports (`SELECT 3`, `INSERT 0 5`,
/// `COPY 12`); 0 for a tag without one.
fn rows_of(tag: &str) -> u64 {
    match tag.split(' ').next() {
        Some("SELECT" | "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "COPY" | "FETCH" | "MOVE") => {
            tag.rsplit(' ')
                .next()
                .and_then(|count| count.parse().ok())
                .unwrap_or(0)
        }
        _ => 0,
    }
}

/// The length of the first whole message of `run`.
fn first_message_len(run: &[u8]) -> usize {
    match frame::peek_header(run, usize::MAX) {
        Ok(Some(header)) => header.total().min(run.len()),
        _ => run.len(),
    }
}

/// Length of the run of whole streamed messages at the start of `buf`, and
/// whether a result ended in it. DataRows count only while `rows_stream`,
/// which a result's end revokes.
fn streamed_run(
    buf: &[u8],
    mut rows_stream: bool,
    copy_streams: bool,
    completions_read: bool,
) -> (usize, bool, u32) {
    let mut at = 0;
    let mut result_ended = false;
    let mut binds_completed = 0;
    while let Ok(Some(header)) = frame::peek_header(&buf[at..], usize::MAX) {
        if buf.len() - at < header.total() {
            break;
        }
        let streamed = match header.tag {
            tag::DATA_ROW => rows_stream,
            tag::COPY_DATA => copy_streams,
            tag if completions_read && confirms_prepared(tag) => false,
            tag if ends_result(tag) => {
                result_ended = true;
                rows_stream = false;
                if tag == tag::BIND_COMPLETE {
                    binds_completed += 1;
                }
                true
            }
            tag => is_streamed(tag),
        };
        if !streamed {
            break;
        }
        at += header.total();
    }
    (at, result_ended, binds_completed)
}

/// Most bytes of rows masked in one go (one row larger than this is
/// masked alone). What masking a run takes grows with its values, not its
/// bytes: a COPY row of empty fields is a byte a field, and each field is
/// tens of bytes of bookkeeping — without a bound, a server's buffer of such
/// rows would take many times its size.
const MASKED_RUN_BYTES: usize = 1 << 20;

/// Length of the run of whole `message_tag` messages at the start of
/// `buf`: at most `most` bytes, unless the first message alone is more.
fn run_of(buf: &[u8], message_tag: u8, most: usize) -> usize {
    let mut at = 0;
    while let Ok(Some(header)) = frame::peek_header(&buf[at..], usize::MAX) {
        if header.tag != message_tag
            || buf.len() - at < header.total()
            || (at > 0 && at + header.total() > most)
        {
            break;
        }
        at += header.total();
    }
    at
}

/// Something from the server could not be masked: it is not passed on,
/// and the session ends (a result cannot resume after a value is
/// dropped), with the client told why.
/// Why masking failed, as the client may be told it.
trait MaskingFailure: std::fmt::Display {
    /// sluice's own reasons as they are; a plugin's fault by kind and
    /// plugin (its detail, a trap's wasm backtrace, is for the log).
    fn for_client(&self) -> String {
        self.to_string()
    }

    fn sqlstate(&self) -> &'static str {
        sqlstate::INTERNAL_ERROR
    }
}

impl MaskingFailure for Fault {
    fn for_client(&self) -> String {
        self.summary()
    }
}

impl MaskingFailure for crate::masking::rows::MaskError {
    fn for_client(&self) -> String {
        match self {
            Self::Plugin(fault) => fault.for_client(),
            other => other.to_string(),
        }
    }

    fn sqlstate(&self) -> &'static str {
        match self {
            Self::TooMuchToMask { .. } | Self::RowTooLong => sqlstate::PROGRAM_LIMIT_EXCEEDED,
            _ => sqlstate::INTERNAL_ERROR,
        }
    }
}

impl MaskingFailure for crate::masking::copy::CopyError {}
impl MaskingFailure for crate::masking::copy_text::CopyTextError {}
impl MaskingFailure for &str {}

/// A statement a policy holds for approval, and what the ticket needs.
struct Held<'a> {
    /// The statement's text, with what its EXECUTEs run.
    text: Cow<'a, str>,
    /// Its parameters (a Bind's, as the audit trail renders them),
    /// unmasked; none for a simple query.
    params: Vec<Option<String>>,
    tables: Vec<TableRef>,
    /// What the policy asked for.
    asked: Requirement,
}

/// A policy's demand that a statement be approved: the plugin and rule
/// that asked, why, and the group whose members may approve.
#[derive(Debug, Clone)]
struct Requirement {
    plugin: String,
    rule: String,
    reason: String,
    approver_group: String,
}

/// A statement's text as an approver must read it: with the text of each
/// prepared statement its EXECUTEs run, which its own text only names
/// (`EXECUTE lookup(42)` may be an UPDATE of every card).
fn with_executed_texts<'t>(text: &'t str, statements: &[Analysed]) -> Cow<'t, str> {
    let mut shown = Cow::Borrowed(text);
    for analysed in statements {
        if analysed.statement.wrappers.contains(&Wrapper::Execute) {
            let shown = shown.to_mut();
            shown.push_str("\n-- EXECUTE runs: ");
            shown.push_str(&analysed.statement.text);
        }
    }
    shown
}

/// How a hold ended.
enum HoldEnd {
    Answered(Resolution),
    /// No answer in time, or the gateway is closing.
    Expired,
    /// The client cancelled the statement or left; says which.
    Withdrawn(&'static str),
}

/// Masking failed: the session ends rather than pass anything unmasked.
fn masking_failed(what: &str, error: &dyn MaskingFailure) -> End {
    tracing::error!(%error, "{what} could not be masked; ending the session");
    End::Fatal(Fatal::new(
        error.sqlstate(),
        format!(
            "sluice could not mask {what} and ended the session: {}",
            error.for_client()
        ),
    ))
}

/// The verdict a refusal is recorded under: `deny` where a policy or an
/// approver said no (42501), `error` where something failed.
fn refusal_verdict(refusal: &Fatal) -> &'static str {
    if refusal.code == sqlstate::INSUFFICIENT_PRIVILEGE {
        "deny"
    } else {
        "error"
    }
}

/// What the client is told when the audit trail cannot be written: the
/// statement does not run (it would run unrecorded).
fn trail_unwritable() -> Fatal {
    Fatal::new(
        sqlstate::SYSTEM_ERROR,
        "sluice cannot write its audit trail, so it runs no statement: tell the operator",
    )
}

/// The upstream server sent a `what` sluice cannot read, so cannot mask or
/// follow: the session ends.
fn malformed_from_server(what: &str) -> End {
    End::Fatal(Fatal::new(
        sqlstate::PROTOCOL_VIOLATION,
        format!("the upstream server sent a malformed {what}"),
    ))
}

/// Whether an ErrorResponse is the server's answer to the refusal
/// stand-in: the syntax error at its one word (in whatever language the
/// server speaks, the word is quoted as sent).
fn is_stand_in_error(fields: &[(u8, String)]) -> bool {
    backend::field(fields, b'C') == Some(sqlstate::SYNTAX_ERROR)
        && backend::field(fields, b'M').is_some_and(|message| message.contains(REFUSAL_STAND_IN))
}

/// The refusal of a statement whose check failed: a system error, naming
/// the hook, the kind of fault and the plugin (details are in the log).
fn plugin_failed(hook: &str, fault: &Fault) -> Fatal {
    Fatal::new(
        sqlstate::SYSTEM_ERROR,
        format!(
            "sluice refused this statement: its {hook} check failed ({})",
            fault.summary()
        ),
    )
}

fn next_reader(remaining: usize, state: fn(usize) -> ServerReader) -> ServerReader {
    if remaining == 0 {
        ServerReader::Boundary
    } else {
        state(remaining)
    }
}

fn shrink_if_idle(buf: &mut BytesMut) {
    if buf.is_empty() && buf.capacity() > KEEP_CAPACITY {
        *buf = BytesMut::new();
    }
}

/// Polls one read into `buf` (cancel-safe: a read that is not ready reads
/// nothing).
fn poll_read(
    stream: &mut Stream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    let read = stream.read_buf(buf);
    pin!(read).poll(cx)
}

/// Writes from `buf` until it is empty or the socket would block.
fn poll_write_all(
    stream: &mut Stream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> std::io::Result<()> {
    while !buf.is_empty() {
        match Pin::new(&mut *stream).poll_write(cx, buf) {
            Poll::Ready(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => buf.advance(n),
            Poll::Ready(Err(error)) => return Err(error),
            Poll::Pending => return Ok(()),
        }
    }
    // TLS buffers records until flushed; plain TCP's flush is free.
    match Pin::new(&mut *stream).poll_flush(cx) {
        Poll::Ready(Err(error)) => Err(error),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command word with a digit in it is no keyword: shown as OTHER.
    #[test]
    fn commands_with_digits_are_not_shown() {
        assert_eq!(loggable_command("SELECT"), "SELECT");
        assert_eq!(loggable_command("CREATE TABLE"), "CREATE TABLE");
        assert_eq!(loggable_command("X4111111111111111"), "OTHER");
        assert_eq!(loggable_command("CREATE A4111111111111111"), "OTHER");
    }

    #[test]
    fn streamed_runs_stop_at_held_or_partial_messages() {
        let mut buf = Vec::new();
        buf.extend_from_slice(Frame::new(b'D', b"\x00\x00").as_bytes());
        buf.extend_from_slice(Frame::new(b'D', b"\x00\x01\x00\x00\x00\x01x").as_bytes());
        let two_rows = buf.len();
        buf.extend_from_slice(Frame::new(b'C', b"SELECT 2\0").as_bytes());
        let with_complete = buf.len();
        buf.extend_from_slice(Frame::new(b'Z', b"I").as_bytes());
        assert_eq!(
            streamed_run(&buf, true, true, false),
            (with_complete, true, 0)
        );
        assert_eq!(
            streamed_run(&buf[..two_rows + 3], true, true, false),
            (two_rows, false, 0)
        );
        assert_eq!(
            streamed_run(&buf[with_complete..], true, true, false),
            (0, false, 0)
        );
        // While rows are masked they are held.
        assert_eq!(streamed_run(&buf, false, true, false), (0, false, 0));
        // Rows after a result's end wait for their own description.
        let mut next = buf[two_rows..with_complete].to_vec();
        next.extend_from_slice(&buf[..two_rows]);
        assert_eq!(
            streamed_run(&next, true, true, false),
            (with_complete - two_rows, true, 0)
        );
        // BindCompletes pass, counted.
        let mut binds = Frame::new(b'2', b"").as_bytes().to_vec();
        binds.extend_from_slice(Frame::new(b'2', b"").as_bytes());
        let both = binds.len();
        binds.extend_from_slice(&buf);
        assert_eq!(streamed_run(&binds, true, true, false), (both, true, 2));
        assert_eq!(run_of(&buf, tag::DATA_ROW, usize::MAX), two_rows);
        // Bounded in bytes, but never less than one message.
        let first_row = Frame::new(b'D', b"\x00\x00").as_bytes().len();
        assert_eq!(run_of(&buf, tag::DATA_ROW, two_rows - 1), first_row);
        assert_eq!(run_of(&buf, tag::DATA_ROW, 1), first_row);
        assert_eq!(run_of(&buf, tag::DATA_ROW, two_rows), two_rows);
        assert_eq!(
            run_of(&buf[..two_rows - 1], tag::DATA_ROW, usize::MAX),
            two_rows
                - Frame::new(b'D', b"\x00\x01\x00\x00\x00\x01x")
                    .as_bytes()
                    .len()
        );
    }
}
