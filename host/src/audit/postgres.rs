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
//! When the database is lost (a restart, a failover, a commit refused or
//! not answered), the sink fails closed for as long as it is gone:
//! statements are refused, `/readyz` turns 503, and the records no one
//! waits on (outcomes, session ends) are kept. sluice reconnects with
//! backoff, claims the chain again, and reads its head to learn whether
//! the commit in flight when the connection went was made; then it writes
//! what it kept and takes statements again. A chain found anywhere else
//! than where sluice left it — or rows the database did not store as sent
//! — fails the sink for good, until sluice restarts and the chain is
//! checked.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use bytes::{Bytes, BytesMut};
use pgwire::messages::extendedquery::{Bind, Execute, Parse};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

use super::chain::{self, ChainKey, EventBody, Link};
use super::log::{AuditError, SinkState};
use crate::config::UpstreamSettings;
use crate::protocol::backend;
use crate::protocol::reply::encode;
use crate::upstream::{self, StartupRequest, Upstream};

/// The records' table.
pub const RECORDS_TABLE: &str = "sluice_audit";
/// The heads' table: one row per instance.
pub const HEADS_TABLE: &str = "sluice_audit_head";

/// Most records one group commit carries.
const MAX_BATCH: usize = 512;
/// Largest reply accepted from the audit database.
const MAX_MESSAGE: usize = 64 << 20;
/// A commit that takes longer than this fails the sink: statements are
/// waiting on it.
const COMMIT_DEADLINE: Duration = Duration::from_secs(10);
/// Most records no one waits on kept while the database is lost; past
/// this, the sink fails for good.
const MAX_KEPT: usize = 100_000;
/// The first wait before reconnecting; it doubles with each failed try, up
/// to [`RECONNECT_MAX`].
const RECONNECT_FIRST: Duration = Duration::from_millis(200);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
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
}

/// The statements that make the tables, run when the records' table is
/// missing (the role needs CREATE on its schema then, and only then).
fn schema() -> String {
    format!(
        "CREATE TABLE {RECORDS_TABLE} (\
           instance text NOT NULL, \
           seq bigint NOT NULL CHECK (seq > 0), \
           record text NOT NULL, \
           record_json jsonb GENERATED ALWAYS AS (record::jsonb) STORED, \
           PRIMARY KEY (instance, seq)); \
         CREATE TABLE {HEADS_TABLE} (\
           instance text PRIMARY KEY, \
           seq bigint NOT NULL, \
           head text NOT NULL)"
    )
}

/// A connection to the audit database, speaking the extended protocol.
struct Db {
    connection: upstream::Connection,
}

impl Db {
    async fn connect(upstream: &Upstream) -> Result<Db, PgError> {
        // A commit must be on the audit database's disk (and its
        // synchronous standbys') before a record counts as written,
        // whatever the role's or database's defaults say; text is UTF-8.
        let parameters = [
            ("application_name".to_owned(), "sluice audit".to_owned()),
            ("client_encoding".to_owned(), "UTF8".to_owned()),
            ("synchronous_commit".to_owned(), "on".to_owned()),
        ];
        let connection = upstream
            .connect(StartupRequest {
                database: &upstream.settings.database,
                parameters: &parameters,
            })
            .await?;
        Ok(Db { connection })
    }

    /// Sends `out` (messages ending in Sync) and reads to ReadyForQuery:
    /// the DataRows' text values, or the first error's message.
    async fn round_trip(&mut self, out: &[u8]) -> Result<Vec<Vec<Option<String>>>, String> {
        let connection = &mut self.connection;
        connection
            .stream
            .write_all(out)
            .await
            .map_err(|e| e.to_string())?;
        let (rows, failure) = upstream::read_reply(connection, MAX_MESSAGE)
            .await
            .map_err(|e| e.to_string())?;
        match failure {
            None => Ok(rows),
            Some(error) => {
                let fields = match backend::decode(&error) {
                    Some(backend::Message::ErrorResponse(error)) => error.fields,
                    _ => Vec::new(),
                };
                let code = backend::field(&fields, b'C').unwrap_or("XX000");
                let message = backend::field(&fields, b'M').unwrap_or("(no message)");
                Err(format!("{code}: {message}"))
            }
        }
    }

    /// Runs one statement with text parameters.
    async fn query(
        &mut self,
        sql: &str,
        params: &[&str],
    ) -> Result<Vec<Vec<Option<String>>>, PgError> {
        let mut out = BytesMut::new();
        encode(&Parse::new(None, sql.to_owned(), Vec::new()), &mut out);
        bind_execute(&mut out, None, params.iter().map(|p| p.as_bytes().to_vec()));
        sync(&mut out);
        self.round_trip(&out).await.map_err(PgError::Query)
    }

    /// Runs `reads` in one read-only REPEATABLE READ transaction: every
    /// query in it sees the same committed state.
    async fn in_one_snapshot<T>(
        &mut self,
        reads: impl AsyncFnOnce(&mut Db) -> Result<T, PgError>,
    ) -> Result<T, PgError> {
        self.query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", &[])
            .await?;
        let read = reads(self).await?;
        self.query("COMMIT", &[]).await?;
        Ok(read)
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
        let state = Arc::new(SinkState::new(head));
        let (requests, queue) = mpsc::unbounded_channel();
        let committer = Committer {
            upstream,
            key,
            instance,
            state: state.clone(),
            db: Some(db),
            head,
            kept: Vec::new(),
            in_doubt: None,
            backoff: RECONNECT_FIRST,
            next_try: Instant::now(),
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

    /// Commits what is queued and stops.
    pub async fn close(self) {
        let (done, finished) = oneshot::channel();
        if self.requests.send(Request::Shutdown { done }).is_ok() {
            let _ = finished.await;
        }
    }

    /// What the sink publishes: its head, counts and failure.
    pub(crate) fn state(&self) -> &SinkState {
        &self.state
    }
}

/// Makes the tables when the records' table is missing.
async fn make_tables_if_missing(db: &mut Db) -> Result<(), PgError> {
    let exists = db
        .query("SELECT to_regclass($1) IS NOT NULL", &[RECORDS_TABLE])
        .await?;
    if exists.first().and_then(|row| row[0].as_deref()) == Some("t") {
        return Ok(());
    }
    let mut out = BytesMut::new();
    encode(
        &pgwire::messages::simplequery::Query::new(schema()),
        &mut out,
    );
    db.round_trip(&out).await.map_err(|error| {
        PgError::Query(format!(
            "creating the tables {RECORDS_TABLE} and {HEADS_TABLE}: {error}"
        ))
    })?;
    tracing::info!(table = RECORDS_TABLE, "audit tables created");
    Ok(())
}

/// Makes `db` the one connection writing `instance`'s chain: claims it,
/// reads where it stands, and prepares the commit's statements. Returns
/// the chain's head.
async fn take_up_chain(db: &mut Db, key: &ChainKey, instance: &str) -> Result<Link, PgError> {
    // Two gateways with one instance id would fork the chain, each
    // continuing from the same head. The lock is the connection's: a lost
    // connection frees it once the server sees it gone, so it is waited
    // for a while — a gateway restarted at once, or a reconnect after a
    // commit that got no answer, finds the old connection still ending,
    // and reads the head only once that one's last transaction is over.
    db.query("BEGIN", &[]).await?;
    db.query(&format!("SET LOCAL lock_timeout = {CLAIM_WAIT_MS}"), &[])
        .await?;
    let claimed = db
        .query(
            "SELECT pg_advisory_lock(hashtextextended($1, 0))",
            &[&format!("sluice audit instance {instance}")],
        )
        .await;
    match claimed {
        Ok(_) => {}
        Err(PgError::Query(error)) if error.starts_with(LOCK_NOT_AVAILABLE) => {
            return Err(PgError::InUse {
                instance: instance.to_owned(),
            });
        }
        Err(error) => return Err(error),
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
                "INSERT INTO {RECORDS_TABLE} (instance, seq, record) VALUES ($1, $2, $3) RETURNING seq"
            ),
            Vec::new(),
        ),
        &mut out,
    );
    encode(
        &Parse::new(
            Some(UPSERT_HEAD.to_owned()),
            format!(
                "INSERT INTO {HEADS_TABLE} (instance, seq, head) VALUES ($1, $2, $3) \
                 ON CONFLICT (instance) DO UPDATE SET seq = excluded.seq, head = excluded.head \
                 RETURNING seq"
            ),
            Vec::new(),
        ),
        &mut out,
    );
    sync(&mut out);
    db.round_trip(&out).await.map_err(PgError::Query)?;
    Ok(head)
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
                        "SELECT record FROM {RECORDS_TABLE} WHERE instance = $1 ORDER BY seq DESC LIMIT 1"
                    ),
                    &[instance],
                )
                .await?;
            let head = db
                .query(
                    &format!("SELECT head FROM {HEADS_TABLE} WHERE instance = $1"),
                    &[instance],
                )
                .await?;
            Ok((last, head))
        })
        .await?;
    let last = match last.first().and_then(|row| row[0].as_deref()) {
        None => None,
        Some(line) => {
            let record = chain::open_line(key, line.as_bytes())
                .map_err(|error| untrusted(format!("its last record does not open: {error}")))?;
            check_instance(&record, instance).map_err(untrusted)?;
            Some(record.link())
        }
    };
    let head = match head.first().and_then(|row| row[0].as_deref()) {
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

type Waiting = (EventBody, Option<oneshot::Sender<Result<u64, AuditError>>>);

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
    /// The last head the database is known to have committed.
    head: Link,
    /// While the database is lost: the records no one waits on (outcomes,
    /// session ends), oldest first, to write once it is back. Empty
    /// whenever `db` is `Some`.
    kept: Vec<EventBody>,
    /// A commit whose answer was lost with the connection: the head it
    /// would have made, and how many of `kept` (the first) it carried.
    in_doubt: Option<(Link, usize)>,
    /// Wait before the next reconnect after a failed one.
    backoff: Duration,
    next_try: Instant,
}

/// How a commit failed.
enum CommitFailure {
    /// The sink cannot go on (a record that cannot be sealed, rows not
    /// stored as sent): it fails for good.
    Fatal(String),
    /// The database refused or did not answer: what the transaction did is
    /// known only once connected again.
    Lost(String),
}

impl Committer {
    async fn run(mut self, mut queue: mpsc::UnboundedReceiver<Request>) {
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
            let mut next = Some(first);
            while let Some(request) = next.take() {
                match request {
                    Request::Record { event, answer } => batch.push((event, answer)),
                    Request::Shutdown { done } => {
                        shutdown = Some(done);
                        break;
                    }
                }
                if batch.len() < MAX_BATCH {
                    next = queue.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.commit(&mut batch).await;
            }
        }
        if !self.kept.is_empty() {
            tracing::error!(
                alert = true,
                records = self.kept.len(),
                "audit database unreachable at shutdown: records kept for it were not written"
            );
        }
        // What is still queued after a shutdown goes with `queue`: its waiters
        // are answered `Closed` (see `record`).
        drop(queue);
        if let Some(mut db) = self.db.take() {
            let _ = db.connection.stream.write_all(&[b'X', 0, 0, 0, 4]).await;
        }
        if let Some(done) = shutdown {
            let _ = done.send(());
        }
    }

    /// A record that came while the database is lost: a waiter is refused
    /// (its statement does not run), the rest is kept.
    fn while_lost(&mut self, event: EventBody, answer: Option<Waiter>) {
        if let Some(answer) = answer {
            let refused = self.state.refuse_if_failed().err();
            let _ = answer.send(Err(refused.unwrap_or(AuditError::Closed)));
            return;
        }
        if self.state.refuse_if_stopped().is_err() {
            return;
        }
        if self.kept.len() >= MAX_KEPT {
            self.state.fail(format!(
                "the audit database stayed unreachable for {MAX_KEPT} records; they were dropped"
            ));
            self.kept.clear();
            return;
        }
        self.kept.push(event);
    }

    /// Seals `batch` after the head, commits it with the new head, and
    /// answers its waiters.
    async fn commit(&mut self, batch: &mut Vec<Waiting>) {
        if self.state.refuse_if_stopped().is_err() {
            refuse_all(batch, &self.state);
            return;
        }
        let Some(db) = self.db.as_mut() else {
            refuse_all(batch, &self.state);
            return;
        };
        let sealed = match seal(&self.key, &self.instance, self.head, batch) {
            Ok(sealed) => sealed,
            Err(cause) => {
                self.state.fail(cause);
                refuse_all(batch, &self.state);
                return;
            }
        };
        match send(db, &sealed, self.head).await {
            Ok(()) => {
                let first_seq = self.head.seq + 1;
                self.head = sealed.head;
                self.backoff = RECONNECT_FIRST;
                self.state.committed(self.head, batch.len(), sealed.bytes);
                for (offset, (_, answer)) in batch.drain(..).enumerate() {
                    if let Some(answer) = answer {
                        let _ = answer.send(Ok(first_seq + offset as u64));
                    }
                }
            }
            Err(CommitFailure::Fatal(cause)) => {
                self.state.fail(cause);
                refuse_all(batch, &self.state);
            }
            Err(CommitFailure::Lost(cause)) => {
                // The connection goes (and with it the chain's lock, once
                // the server notices); until a new one has read the head,
                // whether this transaction committed is unknown.
                self.db = None;
                self.state.unavailable(cause);
                self.next_try = Instant::now() + self.backoff;
                for (event, answer) in batch.drain(..) {
                    match answer {
                        // Refused: the statement does not run. If the
                        // transaction did commit, its record stays with no
                        // outcome after it.
                        Some(answer) => {
                            let refused = self.state.refuse_if_failed().err();
                            let _ = answer.send(Err(refused.unwrap_or(AuditError::Closed)));
                        }
                        None => self.kept.push(event),
                    }
                }
                self.in_doubt = Some((sealed.head, self.kept.len()));
            }
        }
    }

    /// Connects again, claims the chain, and works out from the head what
    /// a commit lost with the old connection did; then writes what was
    /// kept and takes records again.
    async fn reconnect(&mut self) {
        let connected = async {
            let mut db = Db::connect(&self.upstream).await?;
            let head = take_up_chain(&mut db, &self.key, &self.instance).await?;
            Ok::<_, PgError>((db, head))
        }
        .await;
        let (db, found) = match connected {
            Ok(connected) => connected,
            Err(PgError::Untrusted { reason, .. }) => {
                self.state.fail(format!(
                    "after reconnecting, the chain cannot be continued: {reason}"
                ));
                return;
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?self.backoff, "audit database still unreachable");
                self.next_try = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(RECONNECT_MAX);
                return;
            }
        };
        match self.in_doubt.take() {
            _ if found == self.head => {} // The lost commit did not happen.
            Some((attempted, carried)) if found == attempted => {
                // It did: what it carried is written.
                self.kept.drain(..carried);
                self.state
                    .committed(found, (found.seq - self.head.seq) as usize, 0);
                self.head = found;
            }
            _ => {
                self.state.fail(format!(
                    "after reconnecting, the database's head for this instance is seq {} where \
                     sluice left it at seq {}: another writer?",
                    found.seq, self.head.seq
                ));
                return;
            }
        }
        self.db = Some(db);
        if !self.kept.is_empty() {
            let mut batch: Vec<Waiting> = self.kept.drain(..).map(|event| (event, None)).collect();
            self.commit(&mut batch).await;
            if self.db.is_none() {
                return;
            }
        }
        self.state.recovered();
    }
}

type Waiter = oneshot::Sender<Result<u64, AuditError>>;

/// Answers every waiter of a batch with the sink's failure.
fn refuse_all(batch: &mut Vec<Waiting>, state: &SinkState) {
    for (_, waiter) in batch.drain(..) {
        if let Some(waiter) = waiter {
            let refused = state.refuse_if_failed().err().unwrap_or(AuditError::Closed);
            let _ = waiter.send(Err(refused));
        }
    }
}

/// A batch sealed after a head, as one pipeline ready to send.
struct Sealed {
    out: BytesMut,
    /// The head once it commits.
    head: Link,
    /// Bytes of record text.
    bytes: usize,
}

/// Seals the batch after `head`, each record a row and then the new head,
/// ended by one Sync.
fn seal(key: &ChainKey, instance: &str, head: Link, batch: &[Waiting]) -> Result<Sealed, String> {
    let mut out = BytesMut::with_capacity(batch.len() * 512);
    let mut link = head;
    let mut bytes = 0;
    let now = SystemTime::now();
    for (event, _) in batch {
        let (line, next) = chain::seal_body(key, &link, instance, now, event)
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
    })
}

/// Commits a sealed batch that follows `head`, as one transaction.
async fn send(db: &mut Db, sealed: &Sealed, head: Link) -> Result<(), CommitFailure> {
    let rows = match tokio::time::timeout(COMMIT_DEADLINE, db.round_trip(&sealed.out)).await {
        Ok(Ok(rows)) => rows,
        Ok(Err(error)) => {
            return Err(CommitFailure::Lost(format!(
                "the audit database refused a commit: {error}"
            )));
        }
        Err(_) => {
            return Err(CommitFailure::Lost(format!(
                "the audit database did not commit within {COMMIT_DEADLINE:?}"
            )));
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

/// Every instance's records (the lines, in `seq` order) and head line, as
/// `sluice audit verify|show|tail` read them.
pub struct PgTrail {
    pub instances: Vec<InstanceTrail>,
}

pub struct InstanceTrail {
    pub instance: String,
    pub lines: Vec<Vec<u8>>,
    pub head: Option<Vec<u8>>,
}

/// Reads every instance's chain from the audit database, records and heads
/// from one snapshot: read apart, a commit in between would show a head
/// past the last record read, a chain cut short that is not.
pub async fn read_all(settings: &UpstreamSettings) -> Result<PgTrail, PgError> {
    let upstream = Upstream::new(settings.clone())?;
    let mut db = Db::connect(&upstream).await?;
    let (rows, heads) = db
        .in_one_snapshot(async |db| {
            let rows = db
                .query(
                    &format!("SELECT instance, record FROM {RECORDS_TABLE} ORDER BY instance, seq"),
                    &[],
                )
                .await?;
            let heads = db
                .query(&format!("SELECT instance, head FROM {HEADS_TABLE}"), &[])
                .await?;
            Ok((rows, heads))
        })
        .await?;
    let mut instances: Vec<InstanceTrail> = Vec::new();
    for row in rows {
        let (Some(instance), Some(record)) = (row[0].clone(), row[1].clone()) else {
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
        let (Some(instance), Some(head)) = (row[0].clone(), row[1].clone()) else {
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
