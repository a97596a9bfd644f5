//! The audit trail in PostgreSQL, for deployments with several gateway
//! instances: one table of records, one row of chain head per instance.
//!
//! Each instance keeps a chain of its own (`instance`, `seq`), so no
//! instance waits on another: their rows never conflict. A record row holds
//! the exact sealed line the file sink would write, newline included (what
//! its MAC covers), and the head row the head file's line;
//! `record_json` is the same as `jsonb` for queries. The head row is
//! upserted in the same transaction as the records it covers, so a row
//! deleted off the end, or a head rolled back alone, fails verification.
//!
//! Group commit as in the file sink: records waiting when a commit starts
//! go together, as one pipeline of Bind/Execute per row plus the head,
//! ended by one Sync — one round trip and one transaction. A record is
//! durable when PostgreSQL says the transaction committed (the audit
//! connection asks for `synchronous_commit = on`).
//!
//! Each instance's chain has one writer: its connection holds an advisory
//! lock on the instance id, so a second gateway started with the same id
//! is refused, and a chain never forks.
//!
//! When the database is lost (a restart, a failover, a commit not
//! answered, or refused in a way that may pass: out of disk, read-only,
//! shutting down), the sink fails closed for as long as it is gone:
//! sessions and statements are refused, `/readyz` turns 503, and the
//! records no one waits on (outcomes, session ends, failed logins) are
//! kept, up to [`MAX_KEPT_BYTES`]. sluice reconnects with backoff (to the
//! primary: a standby is passed over), claims the chain again — ending its
//! own last connection if the server still has it — and reads the head to
//! learn whether the commit in flight when the connection went was made;
//! then it writes what it kept, a batch at a time, and serves again. A
//! refusal that would repeat (a privilege revoked, a record refused), rows
//! the database did not store as sent, a chain found anywhere else than
//! where sluice left it, or more kept than it holds fail the sink for
//! good, until sluice restarts and the chain is checked.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use pgwire::messages::extendedquery::{Bind, Execute, Parse};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::chain::{self, ChainKey, EventBody, Link};
use super::log::{self, AuditError, MAX_KEPT_BYTES, SinkState};
use super::verify::{self, Chains, Report, RowsVerifier};
use crate::config::UpstreamSettings;
use crate::protocol::backend;
use crate::protocol::reply::encode;
use crate::upstream::{self, StartupRequest, Upstream};

/// The records' table, in the configured schema (`public` by default).
pub const RECORDS_TABLE: &str = "sluice_audit";
/// The heads' table: one row per instance.
pub const HEADS_TABLE: &str = "sluice_audit_head";

/// The audit tables' names as queries write them: with their schema,
/// quoted. The audit connection's `search_path` is `pg_catalog` alone, so
/// a table or function of the same name in a schema earlier on the role's
/// or database's path (one another role may create things in) is never
/// taken for sluice's own.
#[derive(Debug, Clone)]
struct Tables {
    records: String,
    heads: String,
}

impl Tables {
    fn in_schema(schema: &str) -> Tables {
        use crate::analysis::quote_identifier;
        let schema = quote_identifier(schema);
        Tables {
            records: format!("{schema}.{}", quote_identifier(RECORDS_TABLE)),
            heads: format!("{schema}.{}", quote_identifier(HEADS_TABLE)),
        }
    }
}

/// Most records one group commit carries ...
const MAX_BATCH: usize = 512;
/// ... and most bytes of them: a commit must be sent and answered well
/// within [`COMMIT_DEADLINE`], or it would be retried whole for ever.
const MAX_BATCH_BYTES: usize = 8 << 20;
/// Largest reply accepted from the audit database.
const MAX_MESSAGE: usize = 64 << 20;
/// A commit that takes longer than this counts as the database lost:
/// statements are waiting on it.
const COMMIT_DEADLINE: Duration = Duration::from_secs(10);
/// A reconnect (login, claim, reading the head) that takes longer than
/// this is given up and tried again later.
const RECONNECT_DEADLINE: Duration = Duration::from_secs(30);
/// The first wait before reconnecting; it doubles with each failed try, up
/// to [`RECONNECT_MAX`].
const RECONNECT_FIRST: Duration = Duration::from_millis(200);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// How often a reconnect that keeps failing raises the alert again.
const REALERT_INTERVAL: Duration = Duration::from_secs(60);
/// How long closing waits for the committer to write what is queued.
const CLOSE_DEADLINE: Duration = Duration::from_secs(30);
/// How long a connection waits for the instance's chain to be free.
const CLAIM_WAIT_MS: u32 = 3000;
/// SQLSTATE of a lock wait cut short by `lock_timeout`.
const LOCK_NOT_AVAILABLE: &str = "55P03";

const INSERT_RECORD: &str = "sluice_audit_insert";
const UPSERT_HEAD: &str = "sluice_audit_head";

/// Why the PostgreSQL sink could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("audit database: {0}")]
    Connect(#[from] upstream::Error),
    #[error("audit database: tls: {0}")]
    Tls(#[from] crate::transport::TlsError),
    #[error("audit database: {0}")]
    Query(String),
    #[error(
        "audit database: the chain of instance {instance:?} cannot be continued: {reason}; check it with `sluice audit verify`"
    )]
    Untrusted { instance: String, reason: String },
    #[error(
        "audit database: another connection is writing the chain of instance {instance:?}: each gateway needs its own `[audit] instance`"
    )]
    InUse { instance: String },
    #[error("audit database: the server is a standby or read-only; records need the primary")]
    ReadOnly,
}

/// Why a round trip to the audit database failed.
#[derive(Debug)]
enum TripError {
    /// The connection failed before the answer was whole: what the server
    /// did with what was sent is unknown.
    Lost(String),
    /// The server answered with an error and is ready again: a transaction
    /// sent whole before one Sync was rolled back.
    Refused { code: String, message: String },
}

impl std::fmt::Display for TripError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TripError::Lost(error) => write!(f, "{error}"),
            TripError::Refused { code, message } => write!(f, "{code}: {message}"),
        }
    }
}

impl From<TripError> for PgError {
    fn from(error: TripError) -> PgError {
        PgError::Query(error.to_string())
    }
}

impl TripError {
    /// Whether trying again later may succeed where this failed: the
    /// connection, a server shutting down or out of resources, a lock or
    /// a timeout, a server that is read-only for now (a demoted primary).
    /// Anything else — a privilege revoked, a constraint, a record refused
    /// — would fail the same way every time.
    fn is_transient(&self) -> bool {
        match self {
            TripError::Lost(_) => true,
            TripError::Refused { code, .. } => {
                ["08", "40", "53", "57P", "58"]
                    .iter()
                    .any(|class| code.starts_with(class))
                    || ["55P03", "57014", "25006"].contains(&code.as_str())
            }
        }
    }
}

/// The statements that make the tables, run when the records' table is
/// missing (the role needs CREATE on its schema then, and only then).
fn create_tables(tables: &Tables) -> String {
    let Tables { records, heads } = tables;
    format!(
        "CREATE TABLE {records} (\
           instance text NOT NULL, \
           seq bigint NOT NULL CHECK (seq > 0), \
           record text NOT NULL, \
           record_json jsonb GENERATED ALWAYS AS (record::jsonb) STORED, \
           PRIMARY KEY (instance, seq)); \
         CREATE TABLE {heads} (\
           instance text PRIMARY KEY, \
           seq bigint NOT NULL, \
           head text NOT NULL)"
    )
}

/// A connection to the audit database, speaking the extended protocol.
struct Db {
    connection: upstream::Connection,
    /// Where sluice's tables are.
    tables: Tables,
}

impl Db {
    async fn connect(upstream: &Upstream) -> Result<Db, PgError> {
        // A commit must be on the audit database's disk (and its
        // synchronous standbys') before a record counts as written,
        // whatever the role's or database's defaults say; text is UTF-8.
        let parameters = [
            ("application_name".to_owned(), "sluice audit".to_owned()),
            // A connection lost without a goodbye (a partition, a NAT that
            // forgot it) frees the chain's lock in about half a minute,
            // not the kernel's two hours.
            ("tcp_keepalives_idle".to_owned(), "10".to_owned()),
            ("tcp_keepalives_interval".to_owned(), "5".to_owned()),
            ("tcp_keepalives_count".to_owned(), "3".to_owned()),
            // The commit's own deadline bounds it; a role's statement
            // timeout would cancel a long one again on every try.
            ("statement_timeout".to_owned(), "0".to_owned()),
            ("client_encoding".to_owned(), "UTF8".to_owned()),
            ("synchronous_commit".to_owned(), "on".to_owned()),
            // Functions and operators from the catalog only, and the
            // tables by their schema (see `Tables`).
            ("search_path".to_owned(), "pg_catalog".to_owned()),
        ];
        let connection = upstream
            .connect(StartupRequest {
                database: &upstream.settings.database,
                parameters: &parameters,
            })
            .await?;
        let mut db = Db {
            connection,
            tables: Tables::in_schema(&upstream.settings.schema),
        };
        // A managed database's idle timeout (PostgreSQL 14 and later; the
        // setting is unknown before) would close the connection between
        // quiet spells; `closed_by_server` copes, this saves the login.
        db.query(
            "SELECT set_config('idle_session_timeout', '0', false) \
             WHERE current_setting('server_version_num')::int >= 140000",
            &[],
        )
        .await?;
        Ok(db)
    }

    /// Whether the server has closed this idle connection (an idle
    /// timeout, an administrator, a restart): an ErrorResponse or the end
    /// of the stream is waiting. Nothing sent on it now would be read, so
    /// nothing is in doubt. Never waits.
    fn closed_by_server(&mut self) -> bool {
        use std::task::{Context, Poll, Waker};
        use tokio::io::AsyncReadExt;
        let connection = &mut self.connection;
        let mut context = Context::from_waker(Waker::noop());
        let read = std::pin::pin!(connection.stream.read_buf(&mut connection.read_buf));
        match read.poll(&mut context) {
            Poll::Ready(Ok(0) | Err(_)) => return true,
            Poll::Ready(Ok(_)) | Poll::Pending => {}
        }
        // A notice is harmless; an error on an idle connection is the
        // server's goodbye, and bytes that are not the protocol leave the
        // connection of no use.
        let mut waiting = &connection.read_buf[..];
        loop {
            match crate::protocol::frame::peek_header(waiting, MAX_MESSAGE) {
                Ok(Some(header)) if header.tag == b'E' => return true,
                Ok(Some(header)) => waiting = waiting.get(header.total()..).unwrap_or_default(),
                Ok(None) => return false,
                Err(_) => return true,
            }
        }
    }

    /// Sends `out` (messages ending in Sync) and reads to ReadyForQuery:
    /// the DataRows' text values, or the first error.
    async fn round_trip(&mut self, out: &[u8]) -> Result<Vec<Vec<Option<String>>>, TripError> {
        let connection = &mut self.connection;
        let lost = |e: &dyn std::fmt::Display| TripError::Lost(e.to_string());
        connection
            .stream
            .write_all(out)
            .await
            .map_err(|e| lost(&e))?;
        let (rows, failure) = upstream::read_reply(connection, MAX_MESSAGE)
            .await
            .map_err(|e| lost(&e))?;
        match failure {
            None => Ok(rows),
            Some(error) => {
                let fields = match backend::decode(&error) {
                    Some(backend::Message::ErrorResponse(error)) => error.fields,
                    _ => Vec::new(),
                };
                let field = |tag, default| backend::field(&fields, tag).unwrap_or(default);
                Err(TripError::Refused {
                    code: field(b'C', "XX000").to_owned(),
                    message: field(b'M', "(no message)").to_owned(),
                })
            }
        }
    }

    /// Runs one statement with text parameters.
    async fn query(
        &mut self,
        sql: &str,
        params: &[&str],
    ) -> Result<Vec<Vec<Option<String>>>, TripError> {
        let mut out = BytesMut::new();
        encode(&Parse::new(None, sql.to_owned(), Vec::new()), &mut out);
        bind_execute(&mut out, None, params.iter().map(|p| p.as_bytes().to_vec()));
        sync(&mut out);
        self.round_trip(&out).await
    }

    /// Runs `reads` in one read-only REPEATABLE READ transaction: every
    /// query in it sees the same committed state.
    async fn in_one_snapshot<T>(
        &mut self,
        reads: impl AsyncFnOnce(&mut Db) -> Result<T, PgError>,
    ) -> Result<T, PgError> {
        self.query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", &[])
            .await?;
        match reads(self).await {
            Ok(read) => {
                self.query("COMMIT", &[]).await?;
                Ok(read)
            }
            Err(error) => {
                // The connection stays usable, outside any transaction.
                let _ = self.query("ROLLBACK", &[]).await;
                Err(error)
            }
        }
    }
}

fn bind_execute(
    out: &mut BytesMut,
    statement: Option<&str>,
    params: impl Iterator<Item = Vec<u8>>,
) {
    encode(
        &Bind::new(
            None,
            statement.map(str::to_owned),
            Vec::new(),
            params.map(|p| Some(Bytes::from(p))).collect(),
            Vec::new(),
        ),
        out,
    );
    encode(&Execute::new(None, 0), out);
}

fn sync(out: &mut BytesMut) {
    out.extend_from_slice(&[b'S', 0, 0, 0, 4]);
}

/// The trail as the PostgreSQL sink keeps it.
#[derive(Clone)]
pub struct PgLog {
    requests: mpsc::UnboundedSender<Request>,
    state: Arc<SinkState>,
}

enum Request {
    Record {
        event: EventBody,
        answer: Option<oneshot::Sender<Result<u64, AuditError>>>,
    },
    Shutdown {
        done: oneshot::Sender<()>,
    },
}

impl PgLog {
    /// Connects, makes the tables if they are missing, claims this
    /// instance's chain, checks its last record against its head, and
    /// starts the committer.
    pub async fn open(
        settings: &UpstreamSettings,
        key: ChainKey,
        instance: String,
    ) -> Result<PgLog, PgError> {
        let upstream = Upstream::new(settings.clone())?;
        let mut db = Db::connect(&upstream).await?;
        make_tables_if_missing(&mut db).await?;
        let head = take_up_chain(&mut db, &key, &instance).await?;
        let state = Arc::new(SinkState::new(head, &instance));
        let (requests, queue) = mpsc::unbounded_channel();
        let committer = Committer {
            upstream,
            key,
            instance,
            state: state.clone(),
            db: Some(db),
            last_backend: None,
            head,
            kept: VecDeque::new(),
            kept_bytes: 0,
            kept_in_outage: 0,
            outage_recorded: false,
            in_doubt: None,
            backoff: RECONNECT_FIRST,
            next_try: Instant::now(),
            last_alert: None,
        };
        tokio::spawn(committer.run(queue));
        Ok(PgLog { requests, state })
    }

    /// Records `event`; returns once its transaction committed.
    pub async fn record(&self, event: EventBody) -> Result<u64, AuditError> {
        self.state.refuse_if_failed()?;
        let (answer, answered) = oneshot::channel();
        let request = Request::Record {
            event,
            answer: Some(answer),
        };
        if self.requests.send(request).is_err() {
            return Err(AuditError::Closed);
        }
        answered.await.unwrap_or(Err(AuditError::Closed))
    }

    /// Records `event` in order with the rest, without waiting. While the
    /// database is being reconnected it is kept, and written once it is
    /// back.
    pub fn record_later(&self, event: EventBody) {
        if self.state.refuse_if_stopped().is_err() {
            return;
        }
        let request = Request::Record {
            event,
            answer: None,
        };
        if self.requests.send(request).is_err() {
            tracing::error!(alert = true, "audit log is closed: a record was dropped");
        }
    }

    /// Commits what is queued and stops — within [`CLOSE_DEADLINE`]: a
    /// gateway stopping while its audit database is away does not hang.
    pub async fn close(self) {
        let (done, finished) = oneshot::channel();
        if self.requests.send(Request::Shutdown { done }).is_ok()
            && tokio::time::timeout(CLOSE_DEADLINE, finished)
                .await
                .is_err()
        {
            tracing::error!(
                alert = true,
                "the audit database did not take what was queued within {CLOSE_DEADLINE:?}: \
                 stopping without it"
            );
        }
        self.state().log_final_head();
    }

    /// What the sink publishes: its head, counts and failure.
    pub(crate) fn state(&self) -> &SinkState {
        &self.state
    }
}

/// Makes the tables when the records' table is missing.
async fn make_tables_if_missing(db: &mut Db) -> Result<(), PgError> {
    let records = db.tables.records.clone();
    let exists = db
        .query("SELECT to_regclass($1) IS NOT NULL", &[&records])
        .await?;
    if first_value(&exists) == Some("t") {
        return Ok(());
    }
    let mut out = BytesMut::new();
    encode(
        &pgwire::messages::simplequery::Query::new(create_tables(&db.tables)),
        &mut out,
    );
    db.round_trip(&out).await.map_err(|error| {
        PgError::Query(format!(
            "creating the tables {} and {}: {error}",
            db.tables.records, db.tables.heads
        ))
    })?;
    tracing::info!(table = %db.tables.records, "audit tables created");
    Ok(())
}

/// The first row's first value of a reply, if any.
fn first_value(rows: &[Vec<Option<String>>]) -> Option<&str> {
    rows.first()?.first()?.as_deref()
}

/// The advisory lock's key for an instance's chain, as a query parameter
/// (hashed by the server: `hashtextextended($1, 0)`): the chain of that
/// instance in these tables (the same instance name in another schema's
/// tables is another chain).
fn chain_lock_name(tables: &Tables, instance: &str) -> String {
    format!("sluice audit {} instance {instance}", tables.records)
}

/// Makes `db` the one connection writing `instance`'s chain: claims it,
/// reads where it stands, and prepares the commit's statements. Returns
/// the chain's head.
async fn take_up_chain(db: &mut Db, key: &ChainKey, instance: &str) -> Result<Link, PgError> {
    // A standby answers reads and takes advisory locks, but would refuse
    // the first commit: a reconnect that lands on one tries again later.
    let server = db
        .query(
            "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only')::bool, \
                    current_setting('server_encoding')",
            &[],
        )
        .await?;
    let row = server.first().map(Vec::as_slice).unwrap_or_default();
    if row.first().and_then(Option::as_deref) != Some("f") {
        return Err(PgError::ReadOnly);
    }
    // Records are UTF-8: a database in another encoding would refuse the
    // record of any statement with a character it cannot hold, stopping
    // the gateway for every client.
    match row.get(1).and_then(Option::as_deref) {
        Some("UTF8") => {}
        other => {
            return Err(PgError::Query(format!(
                "the database's encoding is {}; the audit trail needs UTF8",
                other.unwrap_or("unknown")
            )));
        }
    }
    // Two gateways with one instance id would fork the chain, each
    // continuing from the same head. The lock is the connection's: a lost
    // connection frees it once the server sees it gone, so it is waited
    // for a while — a gateway restarted at once, or a reconnect after a
    // commit that got no answer, finds the old connection still ending,
    // and reads the head only once that one's last transaction is over.
    db.query("BEGIN", &[]).await?;
    db.query(&format!("SET LOCAL lock_timeout = {CLAIM_WAIT_MS}"), &[])
        .await?;
    let lock = chain_lock_name(&db.tables, instance);
    let claimed = db
        .query("SELECT pg_advisory_lock(hashtextextended($1, 0))", &[&lock])
        .await;
    match claimed {
        Ok(_) => {}
        Err(TripError::Refused { code, .. }) if code == LOCK_NOT_AVAILABLE => {
            return Err(PgError::InUse {
                instance: instance.to_owned(),
            });
        }
        Err(error) => return Err(error.into()),
    }
    db.query("COMMIT", &[]).await?;
    let head = resume(db, key, instance).await?;
    // Parsed once per connection; each commit binds them.
    let mut out = BytesMut::new();
    encode(
        &Parse::new(
            Some(INSERT_RECORD.to_owned()),
            // RETURNING: the commit checks that every row was stored
            // (a rule or a trigger could drop it without an error).
            format!(
                "INSERT INTO {} (instance, seq, record) VALUES ($1, $2, $3) RETURNING seq",
                db.tables.records
            ),
            Vec::new(),
        ),
        &mut out,
    );
    encode(
        &Parse::new(
            Some(UPSERT_HEAD.to_owned()),
            format!(
                "INSERT INTO {} (instance, seq, head) VALUES ($1, $2, $3) \
                 ON CONFLICT (instance) DO UPDATE SET seq = excluded.seq, head = excluded.head \
                 RETURNING seq",
                db.tables.heads
            ),
            Vec::new(),
        ),
        &mut out,
    );
    sync(&mut out);
    db.round_trip(&out).await?;
    Ok(head)
}

/// Ends the audit connection of this sink's that the server still has (a
/// connection lost on the way, whose end the server has not seen), when it
/// holds `instance`'s chain: `pid` as its BackendKeyData named it. Only a
/// backend holding this chain's lock is ended, so a pid since reused by
/// another connection is left alone, and so is one waiting for a
/// synchronous standby (ending it would leave its commit on the primary
/// alone, which `synchronous_commit = on` is there to prevent).
async fn end_stale_connection(db: &mut Db, pid: i32, instance: &str) -> Result<bool, PgError> {
    let lock = chain_lock_name(&db.tables, instance);
    let ended = db
        .query(
            "SELECT pg_terminate_backend(l.pid) FROM pg_locks l, \
               (SELECT hashtextextended($2, 0) AS k) AS chain \
             WHERE l.locktype = 'advisory' AND l.granted AND l.pid = $1::int AND l.objsubid = 1 \
               AND l.classid = ((chain.k >> 32) & 4294967295)::oid \
               AND l.objid = (chain.k & 4294967295)::oid \
               AND NOT EXISTS (SELECT FROM pg_stat_activity a \
                               WHERE a.pid = l.pid AND a.wait_event = 'SyncRep')",
            &[&pid.to_string(), &lock],
        )
        .await?;
    Ok(first_value(&ended) == Some("t"))
}

/// This instance's head as the tables have it: the last record must open
/// under the key, name this instance and be the one the head row names.
async fn resume(db: &mut Db, key: &ChainKey, instance: &str) -> Result<Link, PgError> {
    let untrusted = |reason: String| PgError::Untrusted {
        instance: instance.to_owned(),
        reason,
    };
    let (last, head) = db
        .in_one_snapshot(async |db| {
            let last = db
                .query(
                    &format!(
                        "SELECT record FROM {} WHERE instance = $1 ORDER BY seq DESC LIMIT 1",
                        db.tables.records
                    ),
                    &[instance],
                )
                .await?;
            let head = db
                .query(
                    &format!("SELECT head FROM {} WHERE instance = $1", db.tables.heads),
                    &[instance],
                )
                .await?;
            Ok((last, head))
        })
        .await?;
    let last = match first_value(&last) {
        None => None,
        Some(line) => {
            let record = chain::open_line(key, line.as_bytes())
                .map_err(|error| untrusted(format!("its last record does not open: {error}")))?;
            check_instance(&record, instance).map_err(untrusted)?;
            Some(record.link())
        }
    };
    let head = match first_value(&head) {
        None => None,
        Some(line) => Some(
            chain::parse_head(key, line.as_bytes())
                .map_err(|error| untrusted(format!("its head row is refused: {error}")))?,
        ),
    };
    match (last, head) {
        (None, None) => Ok(Link::GENESIS),
        (Some(last), Some(head)) if last == head => Ok(last),
        (Some(last), Some(head)) => Err(untrusted(format!(
            "its last record is seq {} but its head names seq {}",
            last.seq, head.seq
        ))),
        (Some(last), None) => Err(untrusted(format!(
            "records up to seq {} and no head row",
            last.seq
        ))),
        (None, Some(head)) => Err(untrusted(format!(
            "no records, but a head at seq {}",
            head.seq
        ))),
    }
}

/// Whether a record read from `instance`'s rows names that instance: the
/// record's MAC covers its `instance` field, the row's column is not
/// covered, so rows relabelled from another instance (with its head row)
/// would otherwise be continued as this one's chain.
fn check_instance(record: &chain::OpenedRecord, instance: &str) -> Result<(), String> {
    let found = record.fields.get("instance").and_then(|i| i.as_str());
    if found == Some(instance) {
        return Ok(());
    }
    Err(format!(
        "its last record (seq {}) names instance {:?}: rows were moved from another \
         instance's chain",
        record.seq,
        found.unwrap_or("")
    ))
}

type Waiter = oneshot::Sender<Result<u64, AuditError>>;

/// A record on its way to a commit.
struct Pending {
    event: EventBody,
    /// When it was kept through an outage: its record says when it
    /// happened, not when the database was back.
    kept_at: Option<SystemTime>,
    answer: Option<Waiter>,
}

/// The task that owns the connection: takes what is queued, commits it as
/// one transaction and answers each waiter; when the database is lost,
/// reconnects and works out what the lost commit did.
struct Committer {
    upstream: Upstream,
    key: ChainKey,
    instance: String,
    state: Arc<SinkState>,
    /// `None` while the database is lost.
    db: Option<Db>,
    /// The server process of the last connection, to end it should the
    /// server not have seen it go (it would hold the chain's lock).
    last_backend: Option<i32>,
    /// The last head the database is known to have committed.
    head: Link,
    /// While the database is lost: the records no one waits on (outcomes,
    /// session ends, failed logins), oldest first, to write once it is
    /// back, and their bytes. Empty whenever `db` is `Some` and no
    /// reconnect is writing them.
    kept: VecDeque<Pending>,
    kept_bytes: usize,
    /// Records kept through the current outage, however many reconnects
    /// it took to write them; and whether its `audit_outage` record was
    /// made (written, or kept to be), so that one outage has one.
    kept_in_outage: usize,
    outage_recorded: bool,
    /// A commit whose answer was lost with the connection: the head it
    /// would have made, how many of `kept` (the first) it carried, and its
    /// bytes of record text.
    in_doubt: Option<InDoubt>,
    /// Wait before the next reconnect; doubles with each outage or failed
    /// try, back to the first after a commit.
    backoff: Duration,
    next_try: Instant,
    /// When a failed reconnect last raised the alert.
    last_alert: Option<Instant>,
}

#[derive(Clone, Copy)]
struct InDoubt {
    head: Link,
    carried: usize,
    bytes: usize,
}

/// Fails the sink when the committer stops other than at its end (a
/// panic): the handles would otherwise see a healthy sink whose every
/// record is answered `Closed`.
struct FailsUnlessEnded {
    state: Arc<SinkState>,
    ended: bool,
}

impl Drop for FailsUnlessEnded {
    fn drop(&mut self) {
        if !self.ended {
            self.state
                .fail("the audit database's committer stopped unexpectedly".to_owned());
        }
    }
}

/// How a commit failed.
enum CommitFailure {
    /// The sink cannot go on (a record that cannot be sealed, rows not
    /// stored as sent, a refusal that would repeat): it fails for good.
    Fatal(String),
    /// For now: the database is lost, or refused in a way that may pass.
    /// `in_doubt`: whether the transaction may have committed (the answer
    /// was lost), or certainly did not (the server refused it).
    Outage { cause: String, in_doubt: bool },
}

impl Committer {
    async fn run(mut self, mut queue: mpsc::UnboundedReceiver<Request>) {
        let mut ended = FailsUnlessEnded {
            state: self.state.clone(),
            ended: false,
        };
        let mut batch = Vec::with_capacity(64);
        let mut shutdown = None;
        while shutdown.is_none() {
            if self.db.is_none() {
                // Lost: answer what comes while waiting to reconnect; a
                // sink failed for good never reconnects.
                let stopped = self.state.refuse_if_stopped().is_err();
                let request = tokio::select! {
                    request = queue.recv() => request,
                    () = tokio::time::sleep_until(self.next_try), if !stopped => {
                        self.reconnect().await;
                        continue;
                    }
                };
                match request {
                    None => break,
                    Some(Request::Shutdown { done }) => shutdown = Some(done),
                    Some(Request::Record { event, answer }) => self.while_lost(event, answer),
                }
                continue;
            }
            let Some(first) = queue.recv().await else {
                break;
            };
            batch.clear();
            let mut bytes = 0;
            let mut next = Some(first);
            while let Some(request) = next.take() {
                match request {
                    Request::Record { event, answer } => {
                        bytes += event.encoded_len();
                        batch.push(Pending {
                            event,
                            kept_at: None,
                            answer,
                        });
                    }
                    Request::Shutdown { done } => {
                        shutdown = Some(done);
                        break;
                    }
                }
                if batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
                    next = queue.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.commit(&mut batch).await;
            }
        }
        self.drop_kept("sluice stopped before the audit database was back", 0);
        // What is still queued after a shutdown goes with `queue`: its waiters
        // are answered `Closed` (see `record`).
        drop(queue);
        if let Some(mut db) = self.db.take() {
            let _ = db.connection.stream.write_all(&[b'X', 0, 0, 0, 4]).await;
        }
        ended.ended = true;
        if let Some(done) = shutdown {
            let _ = done.send(());
        }
    }

    /// A record that came while the database is lost: a waiter is refused
    /// (its statement does not run), the rest is kept.
    fn while_lost(&mut self, event: EventBody, answer: Option<Waiter>) {
        if let Some(answer) = answer {
            refuse(answer, &self.state);
            return;
        }
        if self.state.refuse_if_stopped().is_err() {
            return;
        }
        self.keep(Pending {
            event,
            kept_at: Some(SystemTime::now()),
            answer: None,
        });
    }

    /// Keeps a record no one waits on until the database is back, within
    /// [`MAX_KEPT_BYTES`].
    fn keep(&mut self, record: Pending) {
        self.kept_in_outage += 1;
        self.kept_bytes += record.event.encoded_len();
        self.kept.push_back(record);
        if self.kept_bytes > MAX_KEPT_BYTES {
            self.state.fail(format!(
                "the audit database stayed away past {} MiB of records kept for it",
                MAX_KEPT_BYTES >> 20
            ));
            self.drop_kept("more was kept for the audit database than sluice holds", 0);
        }
    }

    /// Drops what was kept, saying so, with `also` records no one waited
    /// on that are lost with it.
    fn drop_kept(&mut self, why: &str, also: usize) {
        log::drop_kept(why, self.kept.len() + also);
        self.kept.clear();
        self.kept_bytes = 0;
    }

    /// Seals `batch` after the head, commits it with the new head, and
    /// answers its waiters.
    async fn commit(&mut self, batch: &mut Vec<Pending>) {
        if self.state.refuse_if_stopped().is_err() {
            // Failed and said so already.
            let _ = refuse_all(batch, &self.state);
            return;
        }
        if self.db.as_mut().is_some_and(Db::closed_by_server) {
            // Closed while idle: nothing was sent, nothing is in doubt.
            // One reconnect now spares the waiting statements a refusal.
            self.db = None;
            self.last_backend = None;
            match tokio::time::timeout(RECONNECT_DEADLINE, self.connect_and_claim()).await {
                Ok(Ok((db, found))) if found == self.head => {
                    tracing::info!("the audit database closed its idle connection; reconnected");
                    self.db = Some(db);
                }
                Ok(Ok((_, found))) => {
                    self.fail_for_good(moved_head(found, self.head), batch);
                    return;
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, "the audit database closed its idle connection and cannot be reached again")
                }
                Err(_) => tracing::warn!(
                    "the audit database closed its idle connection; reconnecting took longer than {RECONNECT_DEADLINE:?}"
                ),
            }
        }
        let Some(db) = self.db.as_mut() else {
            let cause = "the audit database closed its connection and cannot be reached again";
            self.lost(cause.to_owned(), batch, None);
            return;
        };
        let sealed = match seal(&self.key, &self.instance, self.head, batch) {
            Ok(sealed) => sealed,
            Err(cause) => {
                self.fail_for_good(cause, batch);
                return;
            }
        };
        match send(db, &sealed, self.head).await {
            Ok(()) => {
                let first_seq = self.head.seq + 1;
                self.head = sealed.head;
                self.backoff = RECONNECT_FIRST;
                self.state.committed(self.head, batch.len(), sealed.bytes);
                for (offset, pending) in batch.drain(..).enumerate() {
                    if let Some(answer) = pending.answer {
                        let _ = answer.send(Ok(first_seq + offset as u64));
                    }
                }
            }
            Err(CommitFailure::Fatal(cause)) => self.fail_for_good(cause, batch),
            Err(CommitFailure::Outage { cause, in_doubt }) => {
                // The connection goes (and with it the chain's lock, once
                // the server sees it); until a new one has read the head,
                // whether this transaction committed may be unknown.
                self.last_backend = self
                    .db
                    .take()
                    .and_then(|db| db.connection.backend_key)
                    .map(|(pid, _)| pid);
                self.lost(cause, batch, in_doubt.then_some(&sealed));
            }
        }
    }

    /// The database is lost with `batch` unwritten (or, with `sent`, sent
    /// and in doubt): records are refused until a reconnect; what no one
    /// waits on goes back in front of what was kept meanwhile (a reconnect
    /// writes `kept` a batch at a time); a waiter is refused, its
    /// statement does not run — if the transaction did commit, that
    /// record stays with no outcome after it.
    fn lost(&mut self, cause: String, batch: &mut Vec<Pending>, sent: Option<&Sealed>) {
        self.state.unavailable(cause);
        self.wait_before_next_try();
        let now = SystemTime::now();
        let mut carried = Vec::new();
        for pending in batch.drain(..) {
            match pending.answer {
                Some(answer) => refuse(answer, &self.state),
                None if pending.kept_at.is_none() => {
                    // Kept for the first time (one kept before, or the
                    // outage's own record, carries its time already).
                    self.kept_in_outage += 1;
                    carried.push(Pending {
                        kept_at: Some(sent.map_or(now, |sealed| sealed.at)),
                        ..pending
                    });
                }
                None => carried.push(pending),
            }
        }
        self.in_doubt = sent.map(|sealed| InDoubt {
            head: sealed.head,
            carried: carried.len(),
            bytes: sealed.bytes,
        });
        for pending in carried.into_iter().rev() {
            self.kept_bytes += pending.event.encoded_len();
            self.kept.push_front(pending);
        }
    }

    /// Fails the sink for good: `batch`'s waiters are refused, and what no
    /// one waited on is dropped with what was kept, counted in the alert.
    fn fail_for_good(&mut self, cause: String, batch: &mut Vec<Pending>) {
        self.state.fail(cause);
        let unwritten = refuse_all(batch, &self.state);
        self.drop_kept("the audit trail failed", unwritten);
    }

    /// A reconnect failed: tried again later. Each try is a warning; once
    /// a minute the alert is raised again, so a cause that will not clear
    /// by itself (tables dropped, a login revoked) reaches someone.
    fn still_unreachable(&mut self, cause: &dyn std::fmt::Display) {
        let alert_due = self
            .last_alert
            .is_none_or(|alerted| alerted.elapsed() >= REALERT_INTERVAL);
        if alert_due {
            self.last_alert = Some(Instant::now());
            tracing::error!(
                alert = true,
                %cause,
                "audit database still unreachable: statements are still refused"
            );
        } else {
            tracing::warn!(%cause, retry_in = ?self.backoff, "audit database still unreachable");
        }
        self.wait_before_next_try();
    }

    fn wait_before_next_try(&mut self) {
        self.next_try = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(RECONNECT_MAX);
    }

    /// Connects again, claims the chain, and works out from the head what
    /// a commit lost with the old connection did; then writes what was
    /// kept and takes records again.
    async fn reconnect(&mut self) {
        let connected = tokio::time::timeout(RECONNECT_DEADLINE, self.connect_and_claim()).await;
        let (db, found) = match connected {
            Ok(Ok(connected)) => connected,
            Ok(Err(PgError::Untrusted { reason, .. })) => {
                let cause = format!("after reconnecting, the chain cannot be continued: {reason}");
                self.fail_for_good(cause, &mut Vec::new());
                return;
            }
            Ok(Err(error)) => {
                self.still_unreachable(&error);
                return;
            }
            Err(_) => {
                self.still_unreachable(&format!(
                    "reconnecting took longer than {RECONNECT_DEADLINE:?}"
                ));
                return;
            }
        };
        match self.in_doubt.take() {
            _ if found == self.head => {} // The lost commit did not happen.
            Some(lost) if found == lost.head => {
                // It did: what it carried is written.
                for pending in self.kept.drain(..lost.carried.min(self.kept.len())) {
                    self.kept_bytes -= pending.event.encoded_len();
                }
                self.state
                    .committed(found, (found.seq - self.head.seq) as usize, lost.bytes);
                self.head = found;
            }
            _ => {
                self.fail_for_good(moved_head(found, self.head), &mut Vec::new());
                return;
            }
        }
        self.db = Some(db);
        // What was kept goes first, a batch at a time, before anything
        // newer; a commit that fails puts its part back in front.
        while !self.kept.is_empty() {
            let mut take = 0;
            let mut bytes = 0;
            for pending in self.kept.iter().take(MAX_BATCH) {
                if take > 0 && bytes + pending.event.encoded_len() > MAX_BATCH_BYTES {
                    break;
                }
                take += 1;
                bytes += pending.event.encoded_len();
            }
            let mut batch: Vec<Pending> = self.kept.drain(..take).collect();
            self.kept_bytes -= batch.iter().map(|p| p.event.encoded_len()).sum::<usize>();
            self.commit(&mut batch).await;
            if self.db.is_none() || self.state.refuse_if_stopped().is_err() {
                return;
            }
        }
        // Then the record of the outage, so the trail says where it was
        // interrupted and what was refused meanwhile: once per outage (if
        // its commit is lost, it is kept and written as the rest is).
        if !self.outage_recorded
            && let Some(outage) = self.state.outage_record(self.kept_in_outage)
        {
            self.outage_recorded = true;
            let mut batch = vec![Pending {
                event: outage,
                kept_at: Some(SystemTime::now()),
                answer: None,
            }];
            self.commit(&mut batch).await;
            if self.db.is_none() || self.state.refuse_if_stopped().is_err() {
                return;
            }
        }
        // The backoff stays where it is until a commit goes through: a
        // database that takes logins but refuses commits is not hammered.
        self.last_alert = None;
        self.kept_in_outage = 0;
        self.outage_recorded = false;
        self.state.recovered();
    }

    /// A new connection that holds the chain, and the chain's head. A
    /// lock still held by this sink's last connection (the server has not
    /// seen it go) is taken back by ending that connection.
    async fn connect_and_claim(&mut self) -> Result<(Db, Link), PgError> {
        let mut db = Db::connect(&self.upstream).await?;
        let claimed = take_up_chain(&mut db, &self.key, &self.instance).await;
        let stale = match (claimed, self.last_backend) {
            (Err(PgError::InUse { .. }), Some(pid)) => pid,
            (claimed, _) => return claimed.map(|head| (db, head)),
        };
        // The failed claim left `db` in an aborted transaction: start
        // afresh.
        let mut db = Db::connect(&self.upstream).await?;
        if end_stale_connection(&mut db, stale, &self.instance).await? {
            tracing::warn!(
                pid = stale,
                "audit database: ended this gateway's last connection, which the server still had"
            );
        }
        let head = take_up_chain(&mut db, &self.key, &self.instance).await?;
        self.last_backend = None;
        Ok((db, head))
    }
}

/// Why a chain's head found after reconnecting, not where sluice left it,
/// fails the sink.
fn moved_head(found: Link, left: Link) -> String {
    let what = if found.seq < left.seq {
        "records it committed are missing (a failover to a standby that had not received them, \
         or a restore?)"
    } else {
        "records it did not write are there (another writer?)"
    };
    format!(
        "after reconnecting, the database's head for this instance is seq {} where sluice left \
         it at seq {}: {what}",
        found.seq, left.seq
    )
}

/// Answers a waiter with why the sink takes no records.
fn refuse(waiter: Waiter, state: &SinkState) {
    let refused = state.refuse_if_failed().err().unwrap_or(AuditError::Closed);
    let _ = waiter.send(Err(refused));
}

/// Answers every waiter of a batch with the sink's failure; the number of
/// its records no one waited on, which are dropped.
fn refuse_all(batch: &mut Vec<Pending>, state: &SinkState) -> usize {
    let mut unwaited = 0;
    for pending in batch.drain(..) {
        match pending.answer {
            Some(waiter) => refuse(waiter, state),
            None => unwaited += 1,
        }
    }
    unwaited
}

/// A batch sealed after a head, as one pipeline ready to send.
struct Sealed {
    out: BytesMut,
    /// The head once it commits.
    head: Link,
    /// Bytes of record text.
    bytes: usize,
    /// The time its new records carry.
    at: SystemTime,
}

/// Seals the batch after `head`, each record a row and then the new head,
/// ended by one Sync.
fn seal(key: &ChainKey, instance: &str, head: Link, batch: &[Pending]) -> Result<Sealed, String> {
    let mut out = BytesMut::with_capacity(batch.len() * 512);
    let mut link = head;
    let mut bytes = 0;
    let now = SystemTime::now();
    for pending in batch {
        let at = pending.kept_at.unwrap_or(now);
        let (line, next) = chain::seal_body(key, &link, instance, at, &pending.event)
            .map_err(|error| format!("a record cannot be sealed: {error}"))?;
        bytes += line.len();
        bind_execute(
            &mut out,
            Some(INSERT_RECORD),
            [
                instance.as_bytes().to_vec(),
                next.seq.to_string().into_bytes(),
                line,
            ]
            .into_iter(),
        );
        link = next;
    }
    let head_line = chain::head_line(key, &link);
    bind_execute(
        &mut out,
        Some(UPSERT_HEAD),
        [
            instance.as_bytes().to_vec(),
            link.seq.to_string().into_bytes(),
            head_line,
        ]
        .into_iter(),
    );
    sync(&mut out);
    Ok(Sealed {
        out,
        head: link,
        bytes,
        at: now,
    })
}

/// Commits a sealed batch that follows `head`, as one transaction.
async fn send(db: &mut Db, sealed: &Sealed, head: Link) -> Result<(), CommitFailure> {
    let rows = match tokio::time::timeout(COMMIT_DEADLINE, db.round_trip(&sealed.out)).await {
        Ok(Ok(rows)) => rows,
        Ok(Err(error)) if error.is_transient() => {
            let in_doubt = matches!(error, TripError::Lost(_));
            return Err(CommitFailure::Outage {
                cause: format!("the audit database failed a commit: {error}"),
                in_doubt,
            });
        }
        Ok(Err(error)) => {
            return Err(CommitFailure::Fatal(format!(
                "the audit database refused a commit: {error}"
            )));
        }
        Err(_) => {
            return Err(CommitFailure::Outage {
                cause: format!("the audit database did not commit within {COMMIT_DEADLINE:?}"),
                in_doubt: true,
            });
        }
    };
    // Each record's row and the head's, as stored: a rule (`DO INSTEAD
    // NOTHING`) or a trigger that drops a row commits without an error,
    // and statements would run unrecorded.
    let stored: Vec<Option<u64>> = rows
        .iter()
        .map(|row| row.first().cloned().flatten()?.parse().ok())
        .collect();
    let sent: Vec<Option<u64>> = (head.seq + 1..=sealed.head.seq)
        .chain([sealed.head.seq])
        .map(Some)
        .collect();
    if stored != sent {
        return Err(CommitFailure::Fatal(format!(
            "the audit database did not store what it was sent: {} of {} rows came back as sent (a rule or a trigger on its tables?)",
            stored.iter().zip(&sent).filter(|(a, b)| a == b).count(),
            sent.len()
        )));
    }
    Ok(())
}

/// Rows of one chain read at a time by [`verify_chains`] and
/// [`scan_chains`]: memory stays bounded however long the chain.
const PAGE_ROWS: usize = 1000;

/// The instances with records, in order: the distinct instances of the
/// records' key, one index probe each.
async fn instances_with_rows(db: &mut Db) -> Result<Vec<String>, PgError> {
    let rows = db
        .query(
            &format!(
                "WITH RECURSIVE i(instance) AS (\
                   SELECT min(instance) FROM {records} \
                   UNION ALL SELECT (SELECT min(instance) FROM {records} \
                     WHERE instance > i.instance) FROM i WHERE i.instance IS NOT NULL) \
                 SELECT instance FROM i WHERE instance IS NOT NULL",
                records = db.tables.records
            ),
            &[],
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| row.into_iter().next().flatten())
        .collect())
}

/// Hands `instance`'s record lines to `each` in `seq` order, a page at a
/// time: keyset pages along the primary key, no cursor to keep open.
async fn each_page(
    db: &mut Db,
    instance: &str,
    mut each: impl FnMut(Vec<Vec<u8>>),
) -> Result<(), PgError> {
    let mut after = 0u64;
    loop {
        let page = db
            .query(
                &format!(
                    "SELECT seq, record FROM {} \
                     WHERE instance = $1 AND seq > $2 ORDER BY seq LIMIT {PAGE_ROWS}",
                    db.tables.records
                ),
                &[instance, &after.to_string()],
            )
            .await?;
        let rows = page.len();
        let mut lines = Vec::with_capacity(rows);
        for row in page {
            let mut row = row.into_iter();
            let (Some(Some(seq)), Some(Some(record))) = (row.next(), row.next()) else {
                return Err(PgError::Query(format!(
                    "a row of instance {instance:?} without seq or record"
                )));
            };
            after = seq.parse().map_err(|_| {
                PgError::Query(format!(
                    "a row of instance {instance:?} has a seq that is not a number: {seq:?}"
                ))
            })?;
            lines.push(record.into_bytes());
        }
        each(lines);
        if rows < PAGE_ROWS {
            return Ok(());
        }
    }
}

/// `sluice audit verify` of the audit database: checks the chains
/// `chains` picks (see [`verify::verify_database`]), one report each,
/// reading a page of rows at a time — all from
/// one snapshot, so gateways may write meanwhile. Each chain is checked
/// against `anchors` too (see [`verify::verify_anchored`]): give them with
/// one instance named.
pub async fn verify_chains(
    settings: &UpstreamSettings,
    chains: Chains<'_>,
    key: &ChainKey,
    anchors: &[Link],
) -> Result<Vec<Report>, PgError> {
    let upstream = Upstream::new(settings.clone())?;
    let mut db = Db::connect(&upstream).await?;
    db.in_one_snapshot(async |db| {
        let heads: BTreeMap<String, String> = db
            .query(
                &format!("SELECT instance, head FROM {}", db.tables.heads),
                &[],
            )
            .await?
            .into_iter()
            .filter_map(|row| Some((row.first()?.clone()?, row.get(1)?.clone()?)))
            .collect();
        // Those with a head row and those with rows (a head row can be
        // deleted alone).
        let mut found: Vec<String> = heads.keys().cloned().collect();
        if matches!(chains, Chains::Found { .. }) {
            found.extend(instances_with_rows(db).await?);
        }
        let instances = chains.pick(found);
        let mut reports = Vec::with_capacity(instances.len());
        for instance in instances {
            let head = heads.get(&instance);
            let mut chain = RowsVerifier::new(
                &verify::database_place(&instance),
                head.map(String::as_bytes),
                key,
            )
            .anchored(anchors);
            each_page(db, &instance, |lines| chain.check(lines.into_iter(), key)).await?;
            reports.push(chain.finish());
        }
        Ok(reports)
    })
    .await
}

/// The instances with records in the audit database.
pub async fn instances(settings: &UpstreamSettings) -> Result<Vec<String>, PgError> {
    let upstream = Upstream::new(settings.clone())?;
    let mut db = Db::connect(&upstream).await?;
    instances_with_rows(&mut db).await
}

/// Hands every record line of `instance`'s chain (every instance's, one
/// after another in the database's order, when `None`) to `each` with its
/// instance, in `seq` order, a page at a time, from one snapshot: `sluice
/// audit show|tail`, however large the table. An instance named that has
/// no records is an error that lists those there.
pub async fn scan_chains(
    settings: &UpstreamSettings,
    instance: Option<&str>,
    mut each: impl FnMut(&str, Vec<u8>),
) -> Result<(), PgError> {
    let upstream = Upstream::new(settings.clone())?;
    let mut db = Db::connect(&upstream).await?;
    db.in_one_snapshot(async |db| {
        let instances = match instance {
            Some(instance) => vec![instance.to_owned()],
            None => instances_with_rows(db).await?,
        };
        for instance in &instances {
            let mut rows = 0;
            each_page(db, instance, |lines| {
                rows += lines.len();
                for line in lines {
                    each(instance, line);
                }
            })
            .await?;
            if rows == 0 {
                let mut there = instances_with_rows(db).await?;
                there.sort();
                return Err(PgError::Query(format!(
                    "no records of instance {instance:?} (the database has: {})",
                    if there.is_empty() {
                        "none".to_owned()
                    } else {
                        there.join(", ")
                    }
                )));
            }
        }
        Ok(())
    })
    .await
}

/// Every instance's records (the lines, in `seq` order) and head line,
/// read whole: for a look at a small trail (the commands read a page at a
/// time, see [`scan_chains`]).
pub struct PgTrail {
    pub instances: Vec<InstanceTrail>,
}

pub struct InstanceTrail {
    pub instance: String,
    pub lines: Vec<Vec<u8>>,
    pub head: Option<Vec<u8>>,
}

/// Reads every instance's chain from the audit database whole, records
/// and heads from one snapshot: read apart, a commit in between would show a head
/// past the last record read, a chain cut short that is not.
pub async fn read_all(settings: &UpstreamSettings) -> Result<PgTrail, PgError> {
    let upstream = Upstream::new(settings.clone())?;
    let mut db = Db::connect(&upstream).await?;
    let (rows, heads) = db
        .in_one_snapshot(async |db| {
            let rows = db
                .query(
                    &format!(
                        "SELECT instance, record FROM {} ORDER BY instance, seq",
                        db.tables.records
                    ),
                    &[],
                )
                .await?;
            let heads = db
                .query(
                    &format!("SELECT instance, head FROM {}", db.tables.heads),
                    &[],
                )
                .await?;
            Ok((rows, heads))
        })
        .await?;
    let mut instances: Vec<InstanceTrail> = Vec::new();
    for row in rows {
        let (Some(Some(instance)), Some(Some(record))) =
            (row.first().cloned(), row.get(1).cloned())
        else {
            continue;
        };
        match instances.last_mut() {
            Some(trail) if trail.instance == instance => trail.lines.push(record.into_bytes()),
            _ => instances.push(InstanceTrail {
                instance,
                lines: vec![record.into_bytes()],
                head: None,
            }),
        }
    }
    for row in heads {
        let (Some(Some(instance)), Some(Some(head))) = (row.first().cloned(), row.get(1).cloned())
        else {
            continue;
        };
        let head = head.into_bytes();
        match instances.iter_mut().find(|t| t.instance == instance) {
            Some(trail) => trail.head = Some(head),
            None => instances.push(InstanceTrail {
                instance,
                lines: Vec::new(),
                head: Some(head),
            }),
        }
    }
    Ok(PgTrail { instances })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema and the tables are quoted identifiers: a name with a
    /// quote, a dot or capitals stays one name.
    #[test]
    fn tables_are_named_with_their_schema_quoted() {
        let tables = Tables::in_schema("Audit \"trail\".x");
        assert_eq!(tables.records, r#""Audit ""trail"".x"."sluice_audit""#);
        assert_eq!(tables.heads, r#""Audit ""trail"".x"."sluice_audit_head""#);
        assert!(
            create_tables(&tables)
                .contains(r#"CREATE TABLE "Audit ""trail"".x"."sluice_audit_head""#)
        );
    }

    /// A row's `instance` column is not under the MAC, the record's field
    /// is: a last record naming another instance is not continued.
    #[test]
    fn a_last_record_of_another_instance_is_refused() {
        let key = ChainKey::from_bytes(&[3u8; 32]).expect("long enough");
        let event = match serde_json::json!({"event": "statement"}) {
            serde_json::Value::Object(map) => map,
            _ => unreachable!("a json object literal"),
        };
        let (line, _) =
            chain::seal(&key, &Link::GENESIS, "gw-a", SystemTime::now(), &event).expect("seals");
        let record = chain::open_line(&key, &line).expect("opens");
        assert_eq!(check_instance(&record, "gw-a"), Ok(()));
        let refused = check_instance(&record, "gw-b").expect_err("another instance's record");
        assert!(
            refused.contains("seq 1") && refused.contains("\"gw-a\""),
            "{refused}"
        );
    }
}
