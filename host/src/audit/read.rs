//! The trail as people read it: `sluice audit show --session ID` replays
//! one session — who, from where, each statement with its decision and
//! approval, what it returned — and `sluice audit tail` lists the latest
//! records. Both read the rotated files and the active one in order, and
//! take filters by principal, time range and verdict.
//!
//! Reading does not vouch for the records: `sluice audit verify` does. A
//! line that is not a record (a torn last line after a crash) is skipped
//! here and counted, so the reader is told.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Which records to show.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this gateway instance's records (several write to one
    /// PostgreSQL sink, each numbering its own sessions).
    pub instance: Option<String>,
    pub session: Option<u64>,
    pub principal: Option<String>,
    /// UTC times as records write them, or any prefix of one
    /// (`2026-11-29`, `2026-11-29T06:30`); a space may stand for the `T`.
    pub since: Option<String>,
    pub until: Option<String>,
    /// `allow`, `deny` or `error`: statements with that verdict, and what
    /// belongs to them.
    pub verdict: Option<String>,
}

/// The records of a trail, oldest first.
#[derive(Debug, Default)]
pub struct Records {
    pub records: Vec<Value>,
    /// Lines that were not records.
    pub unreadable: usize,
}

/// A record picked by a [`Filter`], with the run of the gateway that wrote
/// it.
#[derive(Debug, Clone, Copy)]
pub struct Picked<'r> {
    pub record: &'r Value,
    pub run: Run<'r>,
}

/// One run of a gateway, from its `gateway_start` record to the next:
/// sessions are numbered from 1 again every time a gateway starts, so a
/// session is known by its instance, its run and its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Run<'r> {
    pub instance: &'r str,
    /// The `seq` and `time` of the run's `gateway_start` (none for records
    /// before the first one).
    pub started: Option<(u64, &'r str)>,
}

/// Each record's run, in the records' order.
fn runs(records: &[Value]) -> Vec<Run<'_>> {
    let mut current: HashMap<&str, Run<'_>> = HashMap::new();
    records
        .iter()
        .map(|record| {
            let instance = text(record, "instance");
            let run = current.entry(instance).or_insert(Run {
                instance,
                started: None,
            });
            if text(record, "event") == "gateway_start" {
                run.started = Some((number(record, "seq").unwrap_or(0), text(record, "time")));
            }
            *run
        })
        .collect()
}

/// Why the trail could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no audit trail at {0}")]
    Missing(PathBuf),
}

/// Reads every record of the trail at `path`.
pub fn read(path: &Path) -> Result<Records, ReadError> {
    let mut records = Vec::new();
    let unreadable = scan(path, |record| records.push(record))?;
    Ok(Records {
        records,
        unreadable,
    })
}

/// Reads the trail at `path` a record at a time, oldest first, handing
/// each to `each` — for trails too large to hold. Returns how many lines
/// were not records (a line that could not be read counts, and ends its
/// file).
pub fn scan(path: &Path, mut each: impl FnMut(Value)) -> Result<usize, ReadError> {
    let files = super::log::chain_files(path).map_err(|source| ReadError::Io {
        path: path.to_owned(),
        source,
    })?;
    if files.is_empty() {
        return Err(ReadError::Missing(path.to_owned()));
    }
    let mut unreadable = 0;
    for file in files {
        let opened = super::log::open_trail_file(&file).map_err(|source| ReadError::Io {
            path: file.clone(),
            source,
        })?;
        // The trail's own line reader: it stops at the space an active file
        // has allocated ahead, and leaves a torn last line without its
        // newline.
        for line in super::log::RecordLines::new(opened) {
            let Ok(line) = line else {
                unreadable += 1;
                break;
            };
            unreadable += usize::from(!parse_line(&line, &mut each));
        }
    }
    Ok(unreadable)
}

/// [`scan`] of lines (newlines included) read elsewhere: the PostgreSQL
/// sink's rows.
pub fn scan_lines<'l>(
    lines: impl IntoIterator<Item = &'l [u8]>,
    mut each: impl FnMut(Value),
) -> usize {
    lines
        .into_iter()
        .filter(|line| !parse_line(line, &mut each))
        .count()
}

/// Hands the record on `line` to `each`; `false` when it is none.
fn parse_line(line: &[u8], each: &mut impl FnMut(Value)) -> bool {
    match serde_json::from_slice::<Value>(line) {
        Ok(record @ Value::Object(_)) if line.ends_with(b"\n") => {
            each(record);
            true
        }
        _ => false,
    }
}

impl Records {
    /// Records from lines (newlines included) read elsewhere: the
    /// PostgreSQL sink's rows.
    pub fn from_lines<'l>(lines: impl IntoIterator<Item = &'l [u8]>) -> Records {
        let mut records = Vec::new();
        let unreadable = scan_lines(lines, |record| records.push(record));
        Records {
            records,
            unreadable,
        }
    }
}

fn text<'v>(record: &'v Value, field: &str) -> &'v str {
    record.get(field).and_then(Value::as_str).unwrap_or("")
}

/// A field as it is printed: control characters escaped (`\n`, `\u{1b}`)
/// and invisible format characters shown (`<U+202E>`), so that text a
/// client sent (a statement, an error it provoked) cannot start a line of
/// its own, drive the reader's terminal or read in another order than it
/// ran. Every field a record carries is printed so: `show` and `tail`
/// print the file as it is, before anyone verified it.
fn shown<'v>(record: &'v Value, field: &str) -> std::borrow::Cow<'v, str> {
    crate::text::one_line(text(record, field))
}

fn number(record: &Value, field: &str) -> Option<u64> {
    record.get(field).and_then(Value::as_u64)
}

/// A time bound as records write times, which it is compared with as
/// text: `2026-11-29 06:30` reads as `2026-11-29T06:30`, and a UTC offset
/// (`Z`, `+00:00`) is dropped, records' times being UTC. `None` when it is
/// no prefix of such a time ([`Filter::check`] says so).
fn time_bound(bound: &str) -> Option<String> {
    /// Where a record's time has digits, and what stands between them.
    const SHAPE: &[u8] = b"dddd-dd-ddTdd:dd:dd";
    let bound = bound.trim().replacen(' ', "T", 1);
    let utc = bound
        .strip_suffix('Z')
        .or_else(|| bound.strip_suffix("+00:00"))
        .unwrap_or(&bound);
    let (whole, fraction) = match utc.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (utc, None),
    };
    let fits = !whole.is_empty()
        && whole.len() <= SHAPE.len()
        && whole.bytes().zip(SHAPE).all(|(byte, &shape)| match shape {
            b'd' => byte.is_ascii_digit(),
            separator => byte == separator,
        })
        && fraction.is_none_or(|fraction| {
            whole.len() == SHAPE.len()
                && (1..=6).contains(&fraction.len())
                && fraction.bytes().all(|byte| byte.is_ascii_digit())
        });
    fits.then(|| utc.to_owned())
}

/// The verdicts statements are recorded with.
const VERDICTS: [&str; 3] = ["allow", "deny", "error"];

impl Filter {
    /// Checks what a person typed: times that records' times can be
    /// compared with, a verdict statements are recorded with. A bound that
    /// is not one would pick the wrong records, or none, without a word.
    pub fn check(&self) -> Result<(), String> {
        for (name, bound) in [("--since", &self.since), ("--until", &self.until)] {
            if let Some(bound) = bound
                && time_bound(bound).is_none()
            {
                return Err(format!(
                    "{name} {bound:?} is not a UTC time: give 2026-11-29, 2026-11-29T06:30, 2026-11-29 06:30:15 or 2026-11-29T06:30:15.250Z (no offset but Z or +00:00)"
                ));
            }
        }
        if let Some(verdict) = &self.verdict
            && !VERDICTS.contains(&verdict.as_str())
        {
            return Err(format!(
                "--verdict {verdict:?} is not a verdict statements are recorded with: allow, deny or error"
            ));
        }
        Ok(())
    }

    /// Whether `record` is of the instance asked for (any, when none is).
    fn takes_instance(&self, record: &Value) -> bool {
        self.instance
            .as_deref()
            .is_none_or(|instance| text(record, "instance") == instance)
    }

    /// Picks the records this filter wants, keeping each session's and
    /// statement's context: a statement's outcome goes with it.
    pub fn apply<'r>(&self, records: &'r [Value]) -> Vec<Picked<'r>> {
        // The sieve decides; `runs` gives the same runs as borrows.
        let mut sieve = self.sieve();
        records
            .iter()
            .zip(runs(records))
            .filter(|(record, _)| sieve.offer(record).is_some())
            .map(|(record, run)| Picked { record, run })
            .collect()
    }

    /// [`Filter::apply`] a record at a time, for trails too large to hold.
    pub fn sieve(&self) -> Sieve<'_> {
        Sieve {
            filter: self,
            // Unchecked bounds are compared as they were given.
            since: (self.since.as_deref()).map(|b| time_bound(b).unwrap_or_else(|| b.to_owned())),
            until: (self.until.as_deref()).map(|b| time_bound(b).unwrap_or_else(|| b.to_owned())),
            runs: HashMap::new(),
            runs_seen: 0,
            principals_sessions: HashSet::new(),
            so_decided: HashSet::new(),
        }
    }
}

/// A gateway run as a [`Sieve`] names it, owning its words.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RunKey {
    pub instance: String,
    /// The `seq` and `time` of the run's `gateway_start`.
    pub started: Option<(u64, String)>,
}

impl RunKey {
    pub fn as_run(&self) -> Run<'_> {
        Run {
            instance: &self.instance,
            started: self
                .started
                .as_ref()
                .map(|(seq, time)| (*seq, time.as_str())),
        }
    }
}

/// A [`Filter`] taking the trail a record at a time, in its order (each
/// instance's records in theirs), and picking as [`Filter::apply`] does:
/// who a session belongs to and what was decided about each statement are
/// learnt from the records that say so, which come before the records
/// they govern (in a trail cut mid-session — its older files archived —
/// the records before the session's first statement have no principal).
///
/// What it learns is only what the filter asks about, of the session it
/// asks about, and is forgotten at the session's end and when its gateway
/// starts again (a session a crash left without an end): memory follows
/// the sessions open at a point of the trail, not its length.
pub struct Sieve<'f> {
    filter: &'f Filter,
    since: Option<String>,
    until: Option<String>,
    /// Each instance's current run, and a number for it (runs counted
    /// across instances) that the sets below key sessions by.
    runs: HashMap<String, (u64, RunKey)>,
    runs_seen: u64,
    /// Sessions of the principal asked for.
    principals_sessions: HashSet<(u64, u64)>,
    /// Statements (run, session, statement) with the verdict asked for.
    so_decided: HashSet<(u64, u64, u64)>,
}

impl Sieve<'_> {
    /// The next record: its run when the filter picks it.
    pub fn offer(&mut self, record: &Value) -> Option<RunKey> {
        let instance = text(record, "instance");
        let event = text(record, "event");
        if event == "gateway_start" || !self.runs.contains_key(instance) {
            self.runs_seen += 1;
            let started = (event == "gateway_start").then(|| {
                (
                    number(record, "seq").unwrap_or(0),
                    text(record, "time").to_owned(),
                )
            });
            let key = RunKey {
                instance: instance.to_owned(),
                started,
            };
            // A record of the run before never comes after: the chain is
            // in order.
            if let Some((ended, _)) = self.runs.insert(instance.to_owned(), (self.runs_seen, key)) {
                self.principals_sessions.retain(|(run, _)| *run != ended);
                self.so_decided.retain(|(run, _, _)| *run != ended);
            }
        }
        let run = self.runs[instance].0;
        if !self.filter.takes_instance(record) {
            return None;
        }
        let session = number(record, "session");
        if let Some(session) = session {
            self.learn(record, event, run, session);
        }
        let picked = self.picks(record, event, run, session);
        if let (Some(session), "session_end") = (session, event) {
            // Nothing of the session comes after its end.
            self.principals_sessions.remove(&(run, session));
            self.so_decided
                .retain(|(r, s, _)| (*r, *s) != (run, session));
        }
        if !picked {
            return None;
        }
        Some(self.runs[instance].1.clone())
    }

    /// What `record` says of its session that the filter asks about: whose
    /// it is, how a statement was decided (the latest record saying so
    /// wins).
    fn learn(&mut self, record: &Value, event: &str, run: u64, session: u64) {
        let filter = self.filter;
        if filter.session.is_some_and(|wanted| wanted != session) {
            return;
        }
        if let Some(principal) = &filter.principal
            && matches!(event, "session_start" | "statement")
        {
            if text(record, "principal") == principal {
                self.principals_sessions.insert((run, session));
            } else {
                self.principals_sessions.remove(&(run, session));
            }
        }
        if let Some(verdict) = &filter.verdict
            && let (Some(statement), Some(decided)) = (
                number(record, "statement"),
                record
                    .get("decision")
                    .and_then(|d| d.get("verdict"))
                    .and_then(Value::as_str),
            )
        {
            if decided == verdict {
                self.so_decided.insert((run, session, statement));
            } else {
                self.so_decided.remove(&(run, session, statement));
            }
        }
    }

    fn picks(&self, record: &Value, event: &str, run: u64, session: Option<u64>) -> bool {
        let filter = self.filter;
        if filter.session.is_some() && session != filter.session {
            return false;
        }
        if let Some(principal) = &filter.principal {
            let theirs = match event {
                "login_failed" => text(record, "user") == principal,
                _ => session.is_some_and(|s| self.principals_sessions.contains(&(run, s))),
            };
            if !theirs {
                return false;
            }
        }
        let time = text(record, "time");
        if self.since.as_deref().is_some_and(|since| time < since) {
            return false;
        }
        // A prefix bound takes in the whole of what it names.
        if self
            .until
            .as_deref()
            .is_some_and(|until| time > until && !time.starts_with(until))
        {
            return false;
        }
        if filter.verdict.is_some() {
            let Some(session) = session else {
                return false;
            };
            let statements: Vec<u64> = match event {
                "statement" => number(record, "statement").into_iter().collect(),
                "outcome" => record
                    .get("statements")
                    .and_then(Value::as_array)
                    .map(|s| s.iter().filter_map(Value::as_u64).collect())
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            if !statements
                .iter()
                .any(|statement| self.so_decided.contains(&(run, session, *statement)))
            {
                return false;
            }
        }
        true
    }
}

/// One record as a line of text.
pub fn one_line(record: &Value) -> String {
    let time = shown(record, "time");
    let seq = number(record, "seq").unwrap_or(0);
    let session = number(record, "session")
        .map(|s| format!(" session {s}"))
        .unwrap_or_default();
    let what = match text(record, "event") {
        "session_start" => format!(
            "session start: {} from {} ({}), database {}",
            shown(record, "principal"),
            origin(record),
            application(record),
            shown(record, "database"),
        ),
        "login_failed" => format!(
            "failed login as {:?} from {}: {}",
            shown(record, "user"),
            origin(record),
            shown(record, "reason")
        ),
        "connections_refused" => format!(
            "{} connection(s) refused before a login from {}: {} (first {}, last {})",
            number(record, "count").unwrap_or(0),
            match record.get("client").and_then(Value::as_str) {
                Some(client) => match record.get("via").and_then(Value::as_str) {
                    Some(via) => format!(
                        "{} via load balancer {}",
                        crate::text::one_line(client),
                        crate::text::one_line(via)
                    ),
                    None => crate::text::one_line(client).into_owned(),
                },
                None => "addresses past those counted apart".to_owned(),
            },
            shown(record, "reason"),
            shown(record, "first"),
            shown(record, "last"),
        ),
        "statement" => format!(
            "#{} {} by {}: {}",
            number(record, "statement").unwrap_or(0),
            decision_summary(record.get("decision")),
            shown(record, "principal"),
            shown(record, "text")
        ),
        "outcome" => format!("-> {}", outcome_summary(record)),
        "approval_requested" => format!(
            "#{} held {}",
            number(record, "statement").unwrap_or(0),
            approval_asked(record)
        ),
        "session_end" => format!(
            "session end: {} statements, {} ms, {}",
            number(record, "statements").unwrap_or(0),
            number(record, "duration_ms").unwrap_or(0),
            shown(record, "reason")
        ),
        "gateway_start" => format!(
            "gateway start (sluice {}), plugins: {}",
            shown(record, "version"),
            plugins_summary(record)
        ),
        "plugins_reloaded" => format!(
            "plugins reloaded ({}): {}",
            shown(record, "cause"),
            plugins_summary(record)
        ),
        "gateway_stop" => "gateway stop".to_owned(),
        "audit_outage" => format!(
            "the trail could not be written from {} until now ({}): {} statements or sessions refused, {} at login; the {} records before this one were kept through it",
            shown(record, "since"),
            shown(record, "cause"),
            number(record, "records_refused").unwrap_or(0),
            number(record, "sessions_refused").unwrap_or(0),
            number(record, "records_kept").unwrap_or(0),
        ),
        "trail_recovered" => format!(
            "the trail was recovered at start: {}{}",
            shown(record, "found"),
            match record.get("set_aside").and_then(Value::as_str) {
                Some(file) => format!("; the file was kept as {}", crate::text::one_line(file)),
                None => String::new(),
            }
        ),
        other => crate::text::one_line(other).into_owned(),
    };
    format!("{time} #{seq}{session} {what}")
}

/// `rules (policy, 3f9a1c2b4d5e), pans (masking, ...)`: each plugin with
/// the start of its fingerprint.
fn plugins_summary(record: &Value) -> String {
    let plugins: Vec<String> = record
        .get("plugins")
        .and_then(Value::as_array)
        .map(|plugins| {
            plugins
                .iter()
                .map(|p| {
                    let fingerprint: String = shown(p, "fingerprint").chars().take(12).collect();
                    format!("{} ({}, {fingerprint})", shown(p, "name"), shown(p, "hook"))
                })
                .collect()
        })
        .unwrap_or_default();
    if plugins.is_empty() {
        "none".to_owned()
    } else {
        plugins.join(", ")
    }
}

/// Where a session or a login came from: the client, and the load
/// balancer it came through when one named it.
fn origin(record: &Value) -> String {
    match record.get("via").and_then(Value::as_str) {
        Some(via) if via == text(record, "client") => {
            format!(
                "{} (a load balancer that named no client)",
                shown(record, "via")
            )
        }
        Some(_) => format!(
            "{} via load balancer {}",
            shown(record, "client"),
            shown(record, "via")
        ),
        None => shown(record, "client").into_owned(),
    }
}

fn application(record: &Value) -> String {
    match record.get("application").and_then(Value::as_str) {
        Some(name) => format!("application {name:?}"),
        None => "no application name".to_owned(),
    }
}

/// The rows an outcome kept, under each result they belong to when the
/// cycle had several (a query of several statements, a pipeline), each
/// result's cut marked where it was cut. Records of versions before
/// `data_results` show their rows as one list.
fn show_returned(out: &mut String, record: &Value, rows: &[Value]) {
    let show_row = |out: &mut String, row: &Value| {
        // JSON escapes control characters, not the rest.
        let row = row.to_string();
        let _ = writeln!(out, "      {}", crate::text::one_line(&row));
    };
    const CUT: &str = "      ... (more rows than recorded)";
    let results: Vec<(usize, bool)> = record
        .get("data_results")
        .and_then(Value::as_array)
        .map(|results| {
            results
                .iter()
                .map(|result| {
                    (
                        number(result, "rows").unwrap_or(0) as usize,
                        result.get("truncated").and_then(Value::as_bool) == Some(true),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if results.len() < 2 {
        for row in rows {
            show_row(out, row);
        }
        if record.get("data_truncated").and_then(Value::as_bool) == Some(true) {
            let _ = writeln!(out, "{CUT}");
        }
        return;
    }
    // A result is a statement's (in the order of the tags) or an
    // Execute's part of one (which has no tag): numbered, not tagged.
    let mut rows = rows.iter();
    for (n, (count, truncated)) in results.into_iter().enumerate() {
        let _ = writeln!(out, "      result {}:", n + 1);
        for row in rows.by_ref().take(count) {
            show_row(out, row);
        }
        if truncated {
            let _ = writeln!(out, "{CUT}");
        }
    }
}

/// What an `approval_requested` record says was asked: `for approval
/// from GROUP (ticket T, asked by PLUGIN, rule R): TEXT` — the rule when
/// the record names it (records of earlier versions did not).
fn approval_asked(record: &Value) -> String {
    let rule = match shown(record, "rule") {
        rule if rule.is_empty() => String::new(),
        rule => format!(", rule {rule}"),
    };
    format!(
        "for approval from {} (ticket {}, asked by {}{rule}): {}",
        shown(record, "approver_group"),
        shown(record, "ticket"),
        shown(record, "plugin"),
        shown(record, "text")
    )
}

/// `allow`, `deny (access-policy, rule no-pan: ...)`, with the approval.
fn decision_summary(decision: Option<&Value>) -> String {
    let Some(decision) = decision else {
        return "no decision".to_owned();
    };
    let mut out = shown(decision, "verdict").into_owned();
    let plugin = shown(decision, "plugin");
    let rule = shown(decision, "rule");
    let reason = shown(decision, "reason");
    let mut why = Vec::new();
    if !plugin.is_empty() {
        why.push(format!("plugin {plugin}"));
    }
    if !rule.is_empty() {
        why.push(format!("rule {rule}"));
    }
    if !reason.is_empty() {
        why.push(reason.into_owned());
    }
    if !why.is_empty() {
        let _ = write!(out, " ({})", why.join(", "));
    }
    if let Some(approval) = decision.get("approval")
        && super::NOT_OBTAINED.contains(&text(approval, "outcome"))
    {
        let ticket = match shown(approval, "ticket") {
            ticket if ticket.is_empty() => String::new(),
            ticket => format!(" (ticket {ticket})"),
        };
        let _ = write!(
            out,
            "; approval from {} required, none obtained: {}{ticket}",
            shown(approval, "approver_group"),
            shown(approval, "outcome"),
        );
    } else if let Some(approval) = decision.get("approval") {
        let approver = match shown(approval, "approver") {
            approver if approver.is_empty() => "nobody".into(),
            approver => approver,
        };
        let _ = write!(
            out,
            "; approval from {} {} by {} at {} (ticket {})",
            shown(approval, "approver_group"),
            shown(approval, "outcome"),
            approver,
            number(approval, "answered_ms")
                .map(millis_as_time)
                .unwrap_or_default(),
            shown(approval, "ticket"),
        );
    }
    out
}

/// Whose outcome this is, when not (only) the statement shown just above
/// it: ` (statement 4, continued)`, or ` (a portal no Bind made, such as
/// a SQL cursor)`.
fn outcome_of(record: &Value, last_statement: Option<u64>) -> String {
    let statements: Vec<u64> = record
        .get("statements")
        .and_then(Value::as_array)
        .map(|s| s.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    if statements.is_empty() {
        return " (a portal no Bind made, such as a SQL cursor)".to_owned();
    }
    let others: Vec<String> = statements
        .iter()
        .filter(|&&s| Some(s) != last_statement)
        .map(u64::to_string)
        .collect();
    match (others.is_empty(), statements.len() == others.len()) {
        (true, _) => String::new(),
        (false, true) => format!(" (statement {}, continued)", others.join(", ")),
        (false, false) => format!(" (also statement {})", others.join(", ")),
    }
}

fn outcome_summary(record: &Value) -> String {
    let tags: Vec<&str> = record
        .get("tags")
        .and_then(Value::as_array)
        .map(|tags| tags.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let suspended = number(record, "suspended").unwrap_or(0);
    let mut parts: Vec<String> = tags
        .iter()
        .map(|tag| crate::text::one_line(tag).into_owned())
        .collect();
    match suspended {
        0 => {}
        1 => parts.push("stopped at its row limit (rows left in the portal)".to_owned()),
        n => parts.push(format!(
            "{n} stopped at their row limit (rows left in the portals)"
        )),
    }
    let mut out = if parts.is_empty() {
        "no command completed".to_owned()
    } else {
        parts.join(", ")
    };
    let _ = write!(
        out,
        "; {} rows in {:.1} ms",
        number(record, "rows").unwrap_or(0),
        number(record, "duration_us").unwrap_or(0) as f64 / 1000.0
    );
    if let Some(error) = record.get("error") {
        let _ = write!(
            out,
            "; error {}: {}",
            shown(error, "sqlstate"),
            shown(error, "message")
        );
    }
    out
}

/// Unix milliseconds as a UTC time like the records' own.
fn millis_as_time(ms: u64) -> String {
    super::chain::format_utc_micros(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
}

/// One session replayed: who initiated it, then each statement — the
/// exact (masked) text and parameters, whether it needed approval and who
/// gave or refused it, and what it returned.
///
/// A gateway numbers its sessions from 1 again each time it starts, so a
/// trail may hold several sessions of one number: each is shown apart,
/// under the start of the gateway run it belongs to.
pub fn show_session(records: &[Picked<'_>], session: u64) -> String {
    let mut out = String::new();
    let mut runs: Vec<Run<'_>> = Vec::new();
    for picked in records {
        if number(picked.record, "session") == Some(session) && !runs.contains(&picked.run) {
            runs.push(picked.run);
        }
    }
    if runs.is_empty() {
        let _ = writeln!(out, "no records of session {session}");
        return out;
    }
    if runs.len() > 1 {
        let _ = writeln!(
            out,
            "{} sessions numbered {session} are on the record (the gateway numbers its sessions from 1 again when it starts); each is shown under its gateway's start",
            runs.len()
        );
    }
    for run in &runs {
        if runs.len() > 1 {
            let _ = writeln!(out);
            match run.started {
                Some((seq, time)) => {
                    let time = crate::text::one_line(time);
                    let _ = writeln!(out, "== the gateway started {time} (record #{seq}) ==");
                }
                None => {
                    let _ = writeln!(out, "== before the trail's first gateway start ==");
                }
            }
        }
        let mine: Vec<&Value> = records
            .iter()
            .filter(|p| p.run == *run && number(p.record, "session") == Some(session))
            .map(|p| p.record)
            .collect();
        show_one_session(&mut out, &mine, session);
    }
    out
}

/// One session's records, replayed into `out`.
fn show_one_session(out: &mut String, mine: &[&Value], session: u64) {
    // The statement shown last: an outcome of another one (a portal read
    // in parts, a later cycle) says whose it is.
    let mut last_statement = None;
    for record in mine {
        let time = shown(record, "time");
        match text(record, "event") {
            "session_start" => {
                let groups: Vec<std::borrow::Cow<str>> = record
                    .get("groups")
                    .and_then(Value::as_array)
                    .map(|g| {
                        g.iter()
                            .filter_map(Value::as_str)
                            .map(crate::text::one_line)
                            .collect()
                    })
                    .unwrap_or_default();
                let _ = writeln!(out, "session {session}, started {time}");
                let _ = writeln!(
                    out,
                    "  initiated by {} (groups: {}) from {}, {}, database {}, {}",
                    shown(record, "principal"),
                    if groups.is_empty() {
                        "none".to_owned()
                    } else {
                        groups.join(", ")
                    },
                    origin(record),
                    application(record),
                    shown(record, "database"),
                    if record.get("tls").and_then(Value::as_bool) == Some(true) {
                        "TLS"
                    } else {
                        "no TLS"
                    },
                );
                if let Some(options) = record.get("options").and_then(Value::as_str) {
                    let options = crate::text::one_line(options);
                    let _ = writeln!(out, "  startup options, run at login: {options}");
                }
                if let Some(parameters) = record.get("parameters").and_then(Value::as_object) {
                    let parameters: Vec<String> = parameters
                        .iter()
                        .map(|(name, value)| {
                            format!(
                                "{}={}",
                                crate::text::one_line(name),
                                crate::text::one_line(value.as_str().unwrap_or_default())
                            )
                        })
                        .collect();
                    let _ = writeln!(
                        out,
                        "  startup parameters, passed to the server: {}",
                        parameters.join(", ")
                    );
                }
            }
            "statement" => {
                last_statement = number(record, "statement");
                let _ = writeln!(
                    out,
                    "  statement {} at {time} ({}): {}",
                    number(record, "statement").unwrap_or(0),
                    shown(record, "protocol"),
                    shown(record, "text")
                );
                if let Some(params) = record.get("params").and_then(Value::as_array)
                    && !params.is_empty()
                {
                    let shown: Vec<String> = params
                        .iter()
                        .map(|p| match p.as_str() {
                            Some(p) => format!("{p:?}"),
                            None => "NULL".to_owned(),
                        })
                        .collect();
                    let _ = writeln!(out, "    parameters: {}", shown.join(", "));
                }
                let decision = record.get("decision");
                let approval = decision.and_then(|d| d.get("approval"));
                let _ = writeln!(out, "    decision: {}", decision_summary(decision));
                if approval.is_none() {
                    let _ = writeln!(out, "    approval: not required");
                }
            }
            "approval_requested" => {
                // Before the statement's own record, which has the answer;
                // alone when sluice stopped during the wait.
                let _ = writeln!(
                    out,
                    "  statement {} held at {time} {}",
                    number(record, "statement").unwrap_or(0),
                    approval_asked(record)
                );
            }
            "outcome" => {
                let _ = writeln!(
                    out,
                    "    returned{}: {}",
                    outcome_of(record, last_statement),
                    outcome_summary(record)
                );
                if let Some(rows) = record.get("data").and_then(Value::as_array) {
                    show_returned(out, record, rows);
                }
            }
            "session_end" => {
                let _ = writeln!(
                    out,
                    "session {session} ended {time}: {} statements in {} ms, {}",
                    number(record, "statements").unwrap_or(0),
                    number(record, "duration_ms").unwrap_or(0),
                    shown(record, "reason")
                );
            }
            _ => {
                let _ = writeln!(out, "  {}", one_line(record));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{Filter, one_line, show_session};

    /// A client behind a load balancer is shown with the balancer; one the
    /// balancer did not name is shown as the balancer.
    #[test]
    fn an_origin_behind_a_load_balancer_names_both() {
        let start = |client: &str, via: Option<&str>| {
            let mut record = json!({"seq": 1, "event": "session_start", "session": 1,
                "principal": "alice", "client": client, "database": "payments"});
            if let Some(via) = via {
                record["via"] = json!(via);
            }
            record
        };
        let shown = one_line(&start("203.0.113.7:5000", Some("10.0.0.5:40000")));
        assert!(
            shown.contains("from 203.0.113.7:5000 via load balancer 10.0.0.5:40000"),
            "{shown}"
        );
        let shown = one_line(&start("10.0.0.5:40000", Some("10.0.0.5:40000")));
        assert!(
            shown.contains("from 10.0.0.5:40000 (a load balancer that named no client)"),
            "{shown}"
        );
        let shown = one_line(&start("127.0.0.1:5000", None));
        assert!(
            shown.contains("from 127.0.0.1:5000 (no application name)"),
            "{shown}"
        );
        let failed = json!({"seq": 2, "event": "login_failed", "user": "mallory",
            "client": "203.0.113.9:1", "via": "10.0.0.5:1", "reason": "authentication failed"});
        let shown = one_line(&failed);
        assert!(
            shown.contains("from 203.0.113.9:1 via load balancer 10.0.0.5:1"),
            "{shown}"
        );
        let records = [start("203.0.113.7:5000", Some("10.0.0.5:40000"))];
        let picked = Filter::default().apply(&records);
        let shown = show_session(&picked, 1);
        assert!(
            shown.contains("from 203.0.113.7:5000 via load balancer 10.0.0.5:40000"),
            "{shown}"
        );
    }

    /// What a client sent is printed with its control characters escaped:
    /// a statement cannot end its line and print a record of its own, nor
    /// drive the reader's terminal.
    #[test]
    fn text_a_client_sent_cannot_forge_a_line() {
        let forged = "select 1 /*\r\u{1b}[2K2026-11-30 #57 allow by alice: select 1\n*/";
        let statement = json!({"seq": 3, "time": "2026-11-30T12:00:00Z", "event": "statement",
            "session": 1, "statement": 2, "principal": "mallory", "protocol": "simple",
            "text": forged, "decision": {"verdict": "deny", "reason": "no\nway"}});
        let line = one_line(&statement);
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert!(line.contains("\\r\\u{1b}[2K2026"), "{line}");
        assert!(line.contains("no\\nway"), "{line}");
        let records = [statement];
        let picked = Filter::default().apply(&records);
        let shown = show_session(&picked, 1);
        assert!(
            !shown.contains('\r') && !shown.contains('\u{1b}'),
            "{shown:?}"
        );
        assert!(shown.contains("\\n*/"), "{shown}");
    }

    /// No field of a record, edited into the file by whoever could, prints
    /// a line of its own or text that reads in another order than it is
    /// stored: invisible format characters (a right-to-left override, a
    /// zero-width space) are shown, in the text, the time, the origin, the
    /// groups, the startup options, the tags and the returned rows.
    #[test]
    fn no_field_prints_a_line_of_its_own_or_hidden_characters() {
        let rlo = "\u{202E}";
        let session = [
            json!({"seq": 1, "time": format!("2026-12-01T05:00:00Z{rlo}"), "event": "session_start",
                "session": 1, "principal": "alice", "groups": [format!("ops\n{rlo}admins")],
                "client": "203.0.113.7:5000", "via": format!("10.0.0.5:1\n#2 allow{rlo}"),
                "database": "payments", "options": format!("-c\nsearch_path={rlo}x")}),
            json!({"seq": 2, "event": "statement", "session": 1, "statement": 1,
                "protocol": "simple", "text": format!("SELECT 1 -- {rlo}'1' ;x\u{200B}"),
                "decision": {"verdict": "allow"}}),
            json!({"seq": 3, "event": "outcome", "session": 1, "statements": [1],
                "tags": [format!("SELECT 1\n{rlo}")], "rows": 1, "duration_us": 9,
                "data": [[format!("4111{rlo}")]]}),
        ];
        let picked = Filter::default().apply(&session);
        let mut printed = show_session(&picked, 1);
        for record in &session {
            printed.push_str(&one_line(record));
            printed.push('\n');
        }
        assert!(
            !printed.contains('\u{202E}') && !printed.contains('\u{200B}'),
            "{printed}"
        );
        assert!(
            printed.contains("<U+202E>") && printed.contains("<U+200B>"),
            "{printed}"
        );
        // Every line is one of sluice's own: none starts with a forged `#`.
        assert!(
            printed.lines().all(|line| !line.starts_with('#')),
            "{printed}"
        );
        assert!(printed.contains("ops\\n<U+202E>admins"), "{printed}");
        assert!(printed.contains("search_path=<U+202E>x"), "{printed}");
    }

    /// Time bounds are any prefix of a record's UTC time, with a space for
    /// the `T` and `Z` or `+00:00` allowed; other text, another offset or
    /// an unknown verdict is refused with what to give instead.
    #[test]
    fn filters_take_utc_times_and_known_verdicts_only() {
        let record = |seq: u64, time: &str| {
            json!({"seq": seq, "time": time, "event": "statement", "session": 1, "statement": seq,
                "principal": "alice", "text": "SELECT 1", "decision": {"verdict": "allow"}})
        };
        let records = [
            record(1, "2026-11-29T06:29:59.999999Z"),
            record(2, "2026-11-29T06:30:00.250000Z"),
            record(3, "2026-11-29T06:31:00.000000Z"),
        ];
        let picked = |since: &str, until: &str| {
            let filter = Filter {
                since: Some(since.to_owned()),
                until: Some(until.to_owned()),
                ..Filter::default()
            };
            filter.check().unwrap();
            let seqs: Vec<u64> = filter
                .apply(&records)
                .iter()
                .filter_map(|p| p.record["seq"].as_u64())
                .collect();
            seqs
        };
        assert_eq!(picked("2026-11-29 06:30", "2026-11-29T06:30"), [2]);
        assert_eq!(picked("2026-11-29T06:30:00Z", "2026-11-29T06:30:59Z"), [2]);
        assert_eq!(picked("2026-11-29T06:30:00.25+00:00", "2026-11-29"), [2, 3]);

        for (since, until, verdict, says) in [
            ("2026-1-5", "", "", "--since \"2026-1-5\" is not a UTC time"),
            ("2026-11-29T06:30+02:00", "", "", "is not a UTC time"),
            (
                "",
                "yesterday",
                "",
                "--until \"yesterday\" is not a UTC time",
            ),
            ("", "2026-11-29T06:30:00.", "", "is not a UTC time"),
            ("", "", "denied", "--verdict \"denied\" is not a verdict"),
        ] {
            let filter = Filter {
                since: (!since.is_empty()).then(|| since.to_owned()),
                until: (!until.is_empty()).then(|| until.to_owned()),
                verdict: (!verdict.is_empty()).then(|| verdict.to_owned()),
                ..Filter::default()
            };
            let error = filter.check().expect_err(says);
            assert!(error.contains(says), "{error}");
        }
    }

    /// An outcome shown after another statement's record says whose it
    /// is; one of the statement just shown says nothing more.
    #[test]
    fn an_outcome_says_whose_it_is_when_another_statement_came_between() {
        let statement = |n: u64| {
            json!({"event": "statement", "session": 7, "statement": n, "protocol": "extended",
                   "text": format!("SELECT {n}"), "decision": {"verdict": "allow"}})
        };
        let outcome = |of: &[u64], tag: &str| {
            json!({"event": "outcome", "session": 7, "statements": of, "tags": [tag],
                   "rows": 1, "duration_us": 100})
        };
        let records = [
            statement(1),
            outcome(&[1], "SELECT 1"),
            statement(2),
            outcome(&[1], "SELECT 5"),
            outcome(&[2, 1], "SELECT 2"),
            outcome(&[], "FETCH 3"),
        ];
        let picked = Filter::default().apply(&records);
        let shown = show_session(&picked, 7);
        for needle in [
            "    returned: SELECT 1; 1 rows",
            "    returned (statement 1, continued): SELECT 5; 1 rows",
            "    returned (also statement 1): SELECT 2; 1 rows",
            "    returned (a portal no Bind made, such as a SQL cursor): FETCH 3",
        ] {
            assert!(shown.contains(needle), "{needle:?} not in:\n{shown}");
        }
    }

    /// Sessions are numbered from 1 again when the gateway starts: a
    /// trail with two sessions 1 shows each apart, and a principal's
    /// filter takes the session that was theirs, not the other.
    #[test]
    fn a_session_number_used_again_after_a_restart_is_another_session() {
        let start = |seq: u64, time: &str| json!({"seq": seq, "time": time, "event": "gateway_start", "version": "0", "plugins": []});
        let session = |seq: u64, principal: &str| {
            json!({"seq": seq, "event": "session_start", "session": 1, "principal": principal,
                   "client": "127.0.0.1:5000", "database": "payments"})
        };
        let statement = |seq: u64, principal: &str, text: &str| {
            json!({"seq": seq, "event": "statement", "session": 1, "statement": 1,
                   "principal": principal, "protocol": "simple", "text": text,
                   "decision": {"verdict": "allow"}})
        };
        let outcome = |seq: u64| {
            json!({"seq": seq, "event": "outcome", "session": 1, "statements": [1],
                   "tags": ["SELECT 1"], "rows": 1, "duration_us": 10})
        };
        let records = [
            start(1, "2026-11-29T06:00:00Z"),
            session(2, "alice"),
            statement(3, "alice", "SELECT 'alice'"),
            outcome(4),
            start(5, "2026-11-29T07:00:00Z"),
            session(6, "bob"),
            statement(7, "bob", "SELECT 'bob'"),
            outcome(8),
        ];
        let shown = show_session(&Filter::default().apply(&records), 1);
        assert!(shown.starts_with("2 sessions numbered 1"), "{shown}");
        let alice = shown.find("SELECT 'alice'").expect(&shown);
        let bob = shown.find("SELECT 'bob'").expect(&shown);
        let second_start = shown
            .find("2026-11-29T07:00:00Z (record #5)")
            .expect(&shown);
        assert!(alice < second_start && second_start < bob, "{shown}");

        let bobs = Filter {
            principal: Some("bob".to_owned()),
            ..Filter::default()
        }
        .apply(&records);
        let seqs: Vec<u64> = bobs
            .iter()
            .filter_map(|p| p.record["seq"].as_u64())
            .collect();
        assert_eq!(seqs, [6, 7, 8]);
    }

    /// Offered one record at a time, with two sessions interleaved: a
    /// verdict filter takes the statements so decided and the outcomes
    /// naming any of them, a principal filter that principal's session
    /// and failed logins — each learnt from records that came before.
    #[test]
    fn the_sieve_picks_from_what_came_before() {
        let session = |seq: u64, session: u64, principal: &str| json!({"seq": seq, "event": "session_start", "session": session, "principal": principal});
        let statement = |seq: u64, session: u64, statement: u64, verdict: &str| {
            let principal = if session == 1 { "alice" } else { "bob" };
            json!({"seq": seq, "event": "statement", "session": session, "statement": statement,
                   "principal": principal, "decision": {"verdict": verdict}})
        };
        let outcome = |seq: u64, session: u64, statements: &[u64]| json!({"seq": seq, "event": "outcome", "session": session, "statements": statements});
        let records = [
            session(1, 1, "alice"),
            session(2, 2, "bob"),
            statement(3, 1, 1, "allow"),
            statement(4, 2, 1, "deny"),
            outcome(5, 1, &[1]),
            outcome(6, 2, &[1]),
            statement(7, 1, 2, "deny"),
            statement(8, 1, 3, "allow"),
            outcome(9, 1, &[2, 3]),
            json!({"seq": 10, "event": "login_failed", "user": "bob"}),
            json!({"seq": 11, "event": "session_end", "session": 2}),
        ];
        let picked = |filter: Filter| -> Vec<u64> {
            let mut sieve = filter.sieve();
            records
                .iter()
                .filter(|record| sieve.offer(record).is_some())
                .filter_map(|record| record["seq"].as_u64())
                .collect()
        };
        let denied = Filter {
            verdict: Some("deny".to_owned()),
            ..Filter::default()
        };
        assert_eq!(picked(denied), [4, 6, 7, 9]);
        let bobs = Filter {
            principal: Some("bob".to_owned()),
            ..Filter::default()
        };
        assert_eq!(picked(bobs), [2, 4, 6, 10, 11]);
    }

    /// What the sieve learns of a session is forgotten at its end, and —
    /// for a session a crash left without one — when its gateway starts
    /// again: its memory follows the sessions open, not the trail.
    #[test]
    fn the_sieve_forgets_sessions_that_are_over() {
        let filter = Filter {
            principal: Some("alice".to_owned()),
            verdict: Some("allow".to_owned()),
            ..Filter::default()
        };
        let mut sieve = filter.sieve();
        let start = |seq: u64| json!({"seq": seq, "event": "gateway_start"});
        let session = |session: u64| json!({"event": "session_start", "session": session, "principal": "alice"});
        let statement = |session: u64| {
            json!({"event": "statement", "session": session, "statement": 1,
                   "principal": "alice", "decision": {"verdict": "allow"}})
        };
        for record in [start(1), session(1), statement(1), session(2), statement(2)] {
            sieve.offer(&record);
        }
        assert_eq!(sieve.principals_sessions.len(), 2);
        assert_eq!(sieve.so_decided.len(), 2);
        sieve.offer(&json!({"event": "session_end", "session": 1}));
        assert_eq!(sieve.principals_sessions.len(), 1);
        assert_eq!(sieve.so_decided.len(), 1);
        sieve.offer(&start(9));
        assert!(sieve.principals_sessions.is_empty() && sieve.so_decided.is_empty());
    }
}
