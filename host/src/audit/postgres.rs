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
//! durable when PostgreSQL says the transaction committed (with the
//! database's `synchronous_commit`). Any failure fails the sink closed, as a
//! failed disk write does: statements are refused and `/readyz` turns 503
//! until sluice restarts and the chain is checked again.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

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
    /// Connects, makes the tables if they are missing, checks this
    /// instance's last record against its head, and starts the committer.
    pub async fn open(
        settings: &UpstreamSettings,
        key: ChainKey,
        instance: String,
    ) -> Result<PgLog, PgError> {
        let upstream = Upstream::new(settings.clone())?;
        let mut db = Db::connect(&upstream).await?;
        let exists = db
            .query("SELECT to_regclass($1) IS NOT NULL", &[RECORDS_TABLE])
            .await?;
        if exists.first().and_then(|row| row[0].as_deref()) != Some("t") {
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
        }
        let head = resume(&mut db, &key, &instance).await?;
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

        let state = Arc::new(SinkState::new(head));
        let (requests, queue) = mpsc::unbounded_channel();
        tokio::spawn(commit_loop(db, key, instance, head, queue, state.clone()));
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

    /// Records `event` in order with the rest, without waiting.
    pub fn record_later(&self, event: EventBody) {
        if self.state.refuse_if_failed().is_err() {
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

/// This instance's head as the tables have it: the last record must open
/// under the key, name this instance and be the one the head row names.
async fn resume(db: &mut Db, key: &ChainKey, instance: &str) -> Result<Link, PgError> {
    let untrusted = |reason: String| PgError::Untrusted {
        instance: instance.to_owned(),
        reason,
    };
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

/// Takes what is queued, commits it as one transaction, answers each
/// waiter; until shut down or failed.
async fn commit_loop(
    mut db: Db,
    key: ChainKey,
    instance: String,
    mut head: Link,
    mut queue: mpsc::UnboundedReceiver<Request>,
    state: Arc<SinkState>,
) {
    let mut batch = Vec::with_capacity(64);
    let mut shutdown = None;
    while shutdown.is_none() {
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
        if batch.is_empty() {
            continue;
        }
        if state.refuse_if_failed().is_err() {
            refuse_all(&mut batch, &state);
            continue;
        }
        match commit(&mut db, &key, &instance, head, &batch).await {
            Ok((new_head, bytes)) => {
                let first_seq = head.seq + 1;
                head = new_head;
                state.committed(head, batch.len(), bytes);
                for (offset, (_, answer)) in batch.drain(..).enumerate() {
                    if let Some(answer) = answer {
                        let _ = answer.send(Ok(first_seq + offset as u64));
                    }
                }
            }
            Err(cause) => {
                state.fail(cause);
                refuse_all(&mut batch, &state);
            }
        }
    }
    // What is still queued after a shutdown goes with `queue`: its waiters
    // are answered `Closed` (see `record`).
    drop(queue);
    let _ = db.connection.stream.write_all(&[b'X', 0, 0, 0, 4]).await;
    if let Some(done) = shutdown {
        let _ = done.send(());
    }
}

type Waiting = (EventBody, Option<oneshot::Sender<Result<u64, AuditError>>>);

/// Answers every waiter of a batch with the sink's failure.
fn refuse_all(batch: &mut Vec<Waiting>, state: &SinkState) {
    for (_, waiter) in batch.drain(..) {
        if let Some(waiter) = waiter {
            let refused = state.refuse_if_failed().err().unwrap_or(AuditError::Closed);
            let _ = waiter.send(Err(refused));
        }
    }
}

/// Seals the batch after `head` and commits it with the new head: the new
/// head and the bytes of record text written, or why it failed.
async fn commit(
    db: &mut Db,
    key: &ChainKey,
    instance: &str,
    head: Link,
    batch: &[Waiting],
) -> Result<(Link, usize), String> {
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
    match tokio::time::timeout(COMMIT_DEADLINE, db.round_trip(&out)).await {
        Ok(Ok(rows)) => {
            // Each record's row and the head's, as stored: a rule (`DO
            // INSTEAD NOTHING`) or a trigger that drops a row commits
            // without an error, and statements would run unrecorded.
            let stored: Vec<Option<u64>> = rows
                .iter()
                .map(|row| row.first().cloned().flatten()?.parse().ok())
                .collect();
            let sent: Vec<Option<u64>> = (head.seq + 1..=link.seq)
                .chain([link.seq])
                .map(Some)
                .collect();
            if stored != sent {
                return Err(format!(
                    "the audit database did not store what it was sent: {} of {} rows came back as sent (a rule or a trigger on its tables?)",
                    stored.iter().zip(&sent).filter(|(a, b)| a == b).count(),
                    sent.len()
                ));
            }
            Ok((link, bytes))
        }
        Ok(Err(error)) => Err(format!("the audit database refused a commit: {error}")),
        Err(_) => Err(format!(
            "the audit database did not commit within {COMMIT_DEADLINE:?}"
        )),
    }
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

/// Reads every instance's chain from the audit database.
pub async fn read_all(settings: &UpstreamSettings) -> Result<PgTrail, PgError> {
    let upstream = Upstream::new(settings.clone())?;
    let mut db = Db::connect(&upstream).await?;
    let rows = db
        .query(
            &format!("SELECT instance, record FROM {RECORDS_TABLE} ORDER BY instance, seq"),
            &[],
        )
        .await?;
    let heads = db
        .query(&format!("SELECT instance, head FROM {HEADS_TABLE}"), &[])
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
