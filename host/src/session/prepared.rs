//! The session's prepared statements, as sluice must know them to judge
//! what runs.
//!
//! PostgreSQL keeps one namespace of prepared statements per session: a
//! protocol-level Parse with a name and an SQL `PREPARE` both add to it,
//! and a Bind or an `EXECUTE` may run either. So sluice keeps one map too,
//! and judges a Bind or an `EXECUTE` as the statement it runs, with the
//! policy in force at that moment. `DEALLOCATE`, `DISCARD ALL` and Close
//! take entries out.
//!
//! A Parse is analysed at its first Bind, not before: a session that
//! binds a statement many times (pgbench -M prepared) pays for one
//! analysis, and one that never binds pays for none. A Parse that replaces
//! a statement with the same text keeps its analysis: drivers that parse
//! the unnamed statement before every execution (the extended protocol
//! without named statements) send the same text over and over.
//!
//! sluice's map must never hold a different statement under a name than
//! the server does, or a Bind would be judged as one statement and run as
//! another. A client's pipeline is judged as it arrives, before the server
//! has answered any of it, so a Parse counts at once (the Bind behind it
//! in the same cycle runs it if the Parse succeeds, and is skipped if it
//! fails); but a Parse the server does not confirm with ParseComplete by
//! the end of its cycle (it failed, or an error earlier in the cycle made
//! the server skip it) is forgotten then, so nothing is judged by a text
//! the server never took; an SQL `PREPARE` the same way, confirmed by its
//! CommandComplete. A Parse that would redefine a name sluice holds is
//! refused before it runs, as the server would refuse it.
//!
//! A name is let go only on the server's word: a Close when its
//! CloseComplete comes, a `DEALLOCATE` or `DISCARD ALL` when its
//! CommandComplete does. Until then a Bind of the name is judged as the
//! statement sluice holds, which is right either way: if the server did
//! let it go, the Bind fails there. (Let go at once, a Close the server
//! skipped would leave sluice free to take a new definition of a name the
//! server still holds, and to judge what runs by the definition the
//! server refused.)
//!
//! Within one cycle the server runs what it was sent in order and skips
//! the rest after an error, so what a message depends on from earlier in
//! its own cycle either happened or the message is skipped too. A
//! definition from an earlier cycle the server has not answered yet is
//! another matter — it may have been skipped while the message that uses
//! it runs — so the session waits for that cycle's answer before judging
//! a Bind or `EXECUTE` of a name defined there, or a new definition of a
//! name let go there ([`Prepared::wait_to_bind`],
//! [`Prepared::wait_to_define`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::analysis::{Analysed, Analyser, Effect};
use crate::plugin::bindings::types::Wrapper;
use crate::protocol::sqlstate;

use super::Fatal;

/// Most prepared statements sluice remembers for one session; a client
/// that keeps more open gets its statements refused, never unjudged.
pub const MAX_PREPARED_STATEMENTS: usize = 10_000;
/// Most Parse messages awaiting the server's answer: a client that
/// pipelines more without reading gets them refused.
pub const MAX_UNCONFIRMED_PARSES: usize = 10_000;

/// One prepared statement.
#[derive(Debug)]
struct Entry {
    /// The text the client parsed.
    text: Arc<str>,
    /// Its analysis, made at first need (an SQL `PREPARE` comes analysed).
    analysed: Option<Arc<[Analysed]>>,
    /// The session's `standard_conforming_strings` when it was parsed, as
    /// the server lexed it then: the same text lexes differently under the
    /// other setting, and the analysis is made under this one.
    analysed_under: bool,
    /// Parsed while a statement before it that may have changed the setting
    /// was not answered yet, with a backslash that makes the setting
    /// matter: judged only if both settings read it alike.
    setting_unsure: bool,
    /// Which definition of the name this is (unique in the session): each
    /// Parse makes a new one, even of the same text.
    generation: u64,
    /// The cycle of the Parse or `PREPARE` that made it, until the server
    /// confirms it.
    unconfirmed_in: Option<u64>,
    /// Its text spells EXECUTE: bound, it may run another prepared
    /// statement (found once, not at every Bind).
    may_execute: bool,
}

/// A Parse forwarded and not yet answered.
#[derive(Debug)]
struct Unconfirmed {
    /// The number of the client's cycle the Parse went in, or a lower one
    /// (see [`Prepared::cycle_ended`]).
    cycle: u64,
    name: String,
    /// The definition it made.
    generation: u64,
}

/// A Close forwarded and not answered yet (CloseComplete answers each in
/// order, a portal's too).
#[derive(Debug)]
struct PendingClose {
    cycle: u64,
    /// The statement closed and the definition it closes; `None` for a
    /// portal, or a name sluice does not hold.
    statement: Option<(String, u64)>,
}

/// An SQL statement that changes prepared statements, forwarded and not
/// answered yet: its CommandComplete confirms it.
#[derive(Debug)]
struct PendingSql {
    cycle: u64,
    change: SqlChange,
}

#[derive(Debug)]
enum SqlChange {
    /// `PREPARE name`: the definition it made.
    Prepare { name: String, generation: u64 },
    /// `DEALLOCATE name`: the definition it lets go (none sluice holds: 0).
    Deallocate { name: String, generation: u64 },
    /// `DEALLOCATE ALL`, `DISCARD ALL`: every definition made before it.
    DeallocateAll { up_to: u64 },
}

impl SqlChange {
    /// Whether it lets go of `name`'s definition `generation`.
    fn lets_go(&self, name: &str, generation: u64) -> bool {
        match self {
            SqlChange::Prepare { .. } => false,
            SqlChange::Deallocate {
                name: gone,
                generation: of,
            } => gone == name && *of == generation,
            SqlChange::DeallocateAll { up_to } => generation <= *up_to,
        }
    }
}

/// The session's prepared statements by name (`""` is the unnamed one of
/// the extended protocol).
#[derive(Debug, Default)]
pub struct Prepared {
    entries: HashMap<String, Entry>,
    /// Parses the server has not confirmed yet, oldest first.
    unconfirmed: VecDeque<Unconfirmed>,
    /// Closes and SQL changes the server has not answered yet.
    closes: VecDeque<PendingClose>,
    sql: VecDeque<PendingSql>,
    generations: u64,
}

impl Prepared {
    /// Remembers a statement the client parsed in its cycle number
    /// `cycle`, under the session's current `standard_conforming_strings`,
    /// until the server's answer says otherwise ([`Prepared::confirmed`],
    /// [`Prepared::cycle_ended`]).
    ///
    /// The unnamed statement is replaced, as the server replaces it. A
    /// named statement that exists is refused here, as the server would
    /// refuse it, so sluice and the server keep the one they have.
    ///
    /// `setting_may_change`: statements sent before it are not answered
    /// yet, so the server may parse it under the other setting.
    pub fn parsed(
        &mut self,
        name: &str,
        text: &str,
        standard_conforming_strings: bool,
        setting_may_change: bool,
        cycle: u64,
    ) -> Result<(), Fatal> {
        let setting_unsure = setting_may_change && text.contains('\\');
        if self.unconfirmed.len() >= MAX_UNCONFIRMED_PARSES {
            return Err(Fatal::new(
                sqlstate::PROGRAM_LIMIT_EXCEEDED,
                format!(
                    "more than {MAX_UNCONFIRMED_PARSES} Parse messages awaiting the server's answer"
                ),
            ));
        }
        let let_go_here = self.entries.get(name).is_some_and(|entry| {
            self.let_go_cycles(name, entry.generation)
                .any(|c| c == cycle)
        });
        // A name closed earlier in this same cycle is taken anew: if the
        // server skips the Close it skips this Parse too, and the name is
        // forgotten at the cycle's end either way.
        let generation = match self.entries.get_mut(name) {
            Some(_) if !name.is_empty() && !let_go_here => {
                return Err(Fatal::new(
                    sqlstate::DUPLICATE_PREPARED_STATEMENT,
                    format!("prepared statement \"{name}\" already exists"),
                ));
            }
            // The unnamed statement again with the same text: its analysis
            // is kept (a new definition all the same, answered in its own
            // cycle).
            Some(entry) if !let_go_here && *entry.text == *text => {
                if entry.analysed_under != standard_conforming_strings || setting_unsure {
                    entry.analysed = None;
                    entry.analysed_under = standard_conforming_strings;
                }
                entry.setting_unsure = setting_unsure;
                self.generations += 1;
                entry.generation = self.generations;
                entry.unconfirmed_in = Some(cycle);
                entry.generation
            }
            replaced => {
                if replaced.is_none() && self.entries.len() >= MAX_PREPARED_STATEMENTS {
                    return Err(Fatal::new(
                        sqlstate::PROGRAM_LIMIT_EXCEEDED,
                        format!(
                            "more than {MAX_PREPARED_STATEMENTS} prepared statements in one session"
                        ),
                    ));
                }
                let generation = self.next_generation();
                self.entries.insert(
                    name.to_owned(),
                    Entry {
                        text: text.into(),
                        analysed: None,
                        analysed_under: standard_conforming_strings,
                        setting_unsure,
                        generation,
                        unconfirmed_in: Some(cycle),
                        may_execute: crate::analysis::spells(text, b"execute"),
                    },
                );
                generation
            }
        };
        self.unconfirmed.push_back(Unconfirmed {
            cycle,
            name: name.to_owned(),
            generation,
        });
        Ok(())
    }

    /// The server answered the oldest Parse awaiting an answer with
    /// ParseComplete: the statement exists.
    pub fn confirmed(&mut self) {
        if let Some(parse) = self.unconfirmed.pop_front() {
            self.made(&parse.name, parse.generation);
        }
    }

    /// Forgets every name: while no policy judged, the client may have
    /// changed what they hold in SQL (`DEALLOCATE`, `PREPARE`, `DISCARD
    /// ALL`) unseen. A Bind or EXECUTE of a name from before is refused
    /// until the name is prepared again. (What waits for the server's word
    /// still finds nothing to confirm or let go.)
    pub fn forget_every_name(&mut self) {
        self.entries.clear();
    }

    /// The definition `name` holds now (its generation), if sluice knows
    /// it.
    pub fn generation(&self, name: &str) -> Option<u64> {
        self.entries.get(name).map(|entry| entry.generation)
    }

    /// The server confirmed definition `generation` of `name`.
    fn made(&mut self, name: &str, generation: u64) {
        if let Some(entry) = self.entries.get_mut(name)
            && entry.generation == generation
        {
            entry.unconfirmed_in = None;
        }
    }

    /// A Parse just recorded in cycle `cycle` goes to the server in a later
    /// one: sluice slipped a cycle of its own in ahead of it (a COPY's
    /// describe).
    pub fn last_parse_moved_to(&mut self, cycle: u64) {
        if let Some(parse) = self.unconfirmed.back_mut() {
            parse.cycle = cycle;
            if let Some(entry) = self.entries.get_mut(&parse.name)
                && entry.generation == parse.generation
            {
                entry.unconfirmed_in = Some(cycle);
            }
        }
    }

    /// The cycles of the Closes and SQL changes not answered yet that let
    /// go of `name`'s definition `generation`.
    fn let_go_cycles(&self, name: &str, generation: u64) -> impl Iterator<Item = u64> {
        let closes = self.closes.iter().filter(move |close| {
            close
                .statement
                .as_ref()
                .is_some_and(|(closed, of)| closed == name && *of == generation)
        });
        let sql = self
            .sql
            .iter()
            .filter(move |pending| pending.change.lets_go(name, generation));
        closes
            .map(|close| close.cycle)
            .chain(sql.map(|pending| pending.cycle))
    }

    /// A Close was forwarded in cycle `cycle`: of the prepared statement
    /// `statement`, or of a portal (`None`).
    pub fn close_sent(&mut self, statement: Option<&str>, cycle: u64) {
        let statement = statement.and_then(|name| {
            self.entries
                .get(name)
                .map(|entry| (name.to_owned(), entry.generation))
        });
        self.closes.push_back(PendingClose { cycle, statement });
    }

    /// The server answered the oldest Close awaiting an answer: a
    /// statement it closed is gone. Returns the names let go.
    pub fn close_confirmed(&mut self) -> Vec<String> {
        match self.closes.pop_front() {
            Some(PendingClose {
                statement: Some((name, generation)),
                ..
            }) => self.remove_if(&name, generation).into_iter().collect(),
            _ => Vec::new(),
        }
    }

    /// The server completed a command, `tag` its CommandComplete's tag: a
    /// `PREPARE`, `DEALLOCATE` or `DISCARD ALL` sluice forwarded is
    /// confirmed by it (the server runs them in order, and an error skips
    /// the rest of their cycle, so the oldest one waiting is this one).
    /// Returns the names let go.
    pub fn command_completed(&mut self, tag: &str) -> Vec<String> {
        let expected = match tag {
            "PREPARE" => |c: &SqlChange| matches!(c, SqlChange::Prepare { .. }),
            "DEALLOCATE" => |c: &SqlChange| matches!(c, SqlChange::Deallocate { .. }),
            "DEALLOCATE ALL" | "DISCARD ALL" => {
                |c: &SqlChange| matches!(c, SqlChange::DeallocateAll { .. })
            }
            _ => return Vec::new(),
        };
        let Some(pending) = self.sql.pop_front() else {
            return Vec::new();
        };
        if !expected(&pending.change) {
            // sluice's count and the server's differ: nothing is let go
            // on this word (what sluice holds only makes it refuse more).
            tracing::warn!(tag, "a command completed that sluice did not expect");
            return Vec::new();
        }
        match pending.change {
            SqlChange::Prepare { name, generation } => {
                self.made(&name, generation);
                Vec::new()
            }
            SqlChange::Deallocate { name, generation } => {
                self.remove_if(&name, generation).into_iter().collect()
            }
            SqlChange::DeallocateAll { up_to } => {
                let gone: Vec<String> = self
                    .entries
                    .iter()
                    .filter(|(_, entry)| entry.generation <= up_to)
                    .map(|(name, _)| name.clone())
                    .collect();
                for name in &gone {
                    self.entries.remove(name);
                }
                gone
            }
        }
    }

    /// Whether CloseComplete and CommandComplete must be read for what
    /// they confirm.
    pub fn awaits_completions(&self) -> bool {
        !self.closes.is_empty() || !self.sql.is_empty()
    }

    /// Removes `name` if it still holds definition `generation`; the name,
    /// if it did.
    fn remove_if(&mut self, name: &str, generation: u64) -> Option<String> {
        let holds = self
            .entries
            .get(name)
            .is_some_and(|entry| entry.generation == generation);
        holds.then(|| {
            self.entries.remove(name);
            name.to_owned()
        })
    }

    /// Before a Bind or `EXECUTE` of `name` in cycle `cycle` is judged:
    /// the earlier cycle whose answer must come first, if the definition
    /// sluice holds for it was made there and is not confirmed yet (the
    /// server may have skipped it and still hold another).
    pub fn wait_to_bind(&self, name: &str, cycle: u64) -> Option<u64> {
        self.entries
            .get(name)?
            .unconfirmed_in
            .filter(|made_in| *made_in < cycle)
    }

    /// Before a Parse or `PREPARE` defines `name` in cycle `cycle`: the
    /// earlier cycle whose answer must come first, if the name is let go
    /// there and not confirmed yet (refused now, it would be refused as
    /// a name in use; taken now, it could shadow one the server kept).
    pub fn wait_to_define(&self, name: &str, cycle: u64) -> Option<u64> {
        let generation = self.entries.get(name)?.generation;
        self.let_go_cycles(name, generation)
            .filter(|c| *c < cycle)
            .max()
    }

    /// The latest cycle before `cycle` with a definition, Close or SQL
    /// change not answered yet, if any: what a query string that may
    /// `EXECUTE` or `PREPARE` any name waits for.
    pub fn wait_for_any(&self, cycle: u64) -> Option<u64> {
        let parses = self.unconfirmed.iter().map(|u| u.cycle);
        let closes = self.closes.iter().map(|close| close.cycle);
        let sql = self.sql.iter().map(|pending| pending.cycle);
        parses.chain(closes).chain(sql).filter(|c| *c < cycle).max()
    }

    /// The server finished the client's cycle number `cycle`
    /// (ReadyForQuery). Its Parses not confirmed by now did not make their
    /// statements, and are forgotten; so are those of any earlier cycle.
    /// (A Parse may carry a number lower than its cycle's when sluice slips
    /// a cycle of its own in ahead of it; it is still forgotten no earlier
    /// than its own cycle ends, as nothing of it is answered before.)
    /// Returns the names forgotten, for whatever else the session keeps
    /// about them.
    pub fn cycle_ended(&mut self, cycle: u64) -> Vec<String> {
        let mut forgotten = Vec::new();
        let mut made = Vec::new();
        while let Some(parse) = self.unconfirmed.pop_front_if(|u| u.cycle <= cycle) {
            made.push((parse.name, parse.generation));
        }
        // Closes and SQL changes not answered by now were skipped: what
        // they would have let go is still there; a PREPARE made nothing.
        while self
            .closes
            .pop_front_if(|close| close.cycle <= cycle)
            .is_some()
        {}
        while let Some(pending) = self.sql.pop_front_if(|pending| pending.cycle <= cycle) {
            if let SqlChange::Prepare { name, generation } = pending.change {
                made.push((name, generation));
            }
        }
        for (name, generation) in made {
            forgotten.extend(self.remove_if(&name, generation));
        }
        forgotten
    }

    fn next_generation(&mut self) -> u64 {
        self.generations += 1;
        self.generations
    }

    /// Whether a Bind of `name` may run another prepared statement (its
    /// text spells EXECUTE).
    pub fn may_execute(&self, name: &str) -> bool {
        self.entries
            .get(name)
            .is_some_and(|entry| entry.may_execute)
    }

    /// The text of a prepared statement.
    pub fn text(&self, name: &str) -> Option<Arc<str>> {
        self.entries.get(name).map(|entry| entry.text.clone())
    }

    /// The analysis of a prepared statement, made now if not yet, under
    /// the setting it was parsed under; `None` if the session has no
    /// statement of that name, a refusal if which setting the server
    /// parsed it under is unsure and the two read it differently.
    pub fn analysis(
        &mut self,
        name: &str,
        analyser: &mut Analyser,
    ) -> Option<Result<Arc<[Analysed]>, Fatal>> {
        let entry = self.entries.get_mut(name)?;
        if let Some(analysed) = &entry.analysed {
            return Some(Ok(analysed.clone()));
        }
        let analysed: Arc<[Analysed]> = analyser.analyse(&entry.text, entry.analysed_under).into();
        if entry.setting_unsure
            && !reads_alike(
                &analysed,
                &analyser.analyse(&entry.text, !entry.analysed_under),
            )
        {
            return Some(Err(setting_unsure()));
        }
        entry.analysed = Some(analysed.clone());
        Some(Ok(analysed))
    }

    /// Replaces each `EXECUTE` among `statements` with the statement it
    /// runs, as judged: wrapped in `execute`, with the EXECUTE's
    /// parameters. An EXECUTE of a name the session has not prepared is
    /// refused: sluice cannot judge what it would run.
    pub fn resolve(
        &mut self,
        statements: Vec<Analysed>,
        analyser: &mut Analyser,
    ) -> Result<Vec<Analysed>, Fatal> {
        if !statements
            .iter()
            .any(|a| matches!(a.effect, Effect::Execute { .. }))
        {
            return Ok(statements);
        }
        let mut resolved = Vec::with_capacity(statements.len());
        for outer in statements {
            let Effect::Execute { name, params } = &outer.effect else {
                resolved.push(outer);
                continue;
            };
            let Some(inner) = self.analysis(name, analyser) else {
                return Err(Fatal::new(
                    sqlstate::INVALID_SQL_STATEMENT_NAME,
                    format!("prepared statement \"{name}\" does not exist in this session"),
                ));
            };
            let inner = inner?;
            for stored in inner.iter() {
                let mut statement = stored.statement.clone();
                let mut wrappers = outer.statement.wrappers.clone();
                wrappers.push(Wrapper::Execute);
                wrappers.append(&mut statement.wrappers);
                statement.wrappers = wrappers;
                statement.params = params.clone();
                statement.is_multi = outer.statement.is_multi;
                // What the EXECUTE's own arguments touch (functions they
                // call, settings those change) is the statement's too.
                let arguments = &outer.statement;
                statement.tables.extend(arguments.tables.iter().cloned());
                statement.columns.extend(arguments.columns.iter().cloned());
                statement
                    .functions
                    .extend(arguments.functions.iter().cloned());
                statement
                    .settings
                    .extend(arguments.settings.iter().cloned());
                // And so is what they amount to: an argument that sets the
                // role or ends a backend makes the EXECUTE a privilege
                // change or a utility (see `kind_by_function`) — unless
                // the query it runs is judged as something stronger still.
                (statement.kind, statement.command) = crate::analysis::stronger_kind(
                    (statement.kind, std::mem::take(&mut statement.command)),
                    (arguments.kind, arguments.command.clone()),
                );
                resolved.push(Analysed {
                    statement,
                    // What it runs changes no prepared statement; an
                    // EXECUTE of a stored PREPARE is refused by PostgreSQL.
                    effect: Effect::None,
                    // PostgreSQL prepares no DECLARE or FETCH; were one
                    // read so, it is followed all the same.
                    cursor: stored.cursor.clone(),
                    // Wrapped in EXECUTE: judged afresh every time.
                    shape: None,
                });
            }
        }
        Ok(resolved)
    }

    /// Refuses a `PREPARE` of a name already in use, before it runs: the
    /// server would refuse it too, and sluice must not forget what the
    /// name really holds. Also one of a name prepared earlier in the same
    /// string. `let_go_first`: a name a `DEALLOCATE` earlier in the same
    /// string lets go may be prepared again — only where nothing is judged
    /// by what a name holds (no policy: the statements are followed for
    /// the trail alone), since an `EXECUTE` after it would be judged as
    /// the name's old statement.
    pub fn check(&self, statements: &[Analysed], let_go_first: bool) -> Result<(), Fatal> {
        let mut let_go: Vec<&str> = Vec::new();
        let mut all_let_go = false;
        let mut prepared: Vec<&str> = Vec::new();
        for analysed in statements {
            match &analysed.effect {
                Effect::Deallocate(Some(name)) if let_go_first => {
                    let_go.push(name);
                    prepared.retain(|p| p != name);
                }
                Effect::Deallocate(None) if let_go_first => {
                    all_let_go = true;
                    prepared.clear();
                }
                Effect::Prepare { name } => {
                    let in_use = prepared.contains(&name.as_str())
                        || (self.entries.contains_key(name)
                            && !all_let_go
                            && !let_go.contains(&name.as_str()));
                    if in_use {
                        return Err(Fatal::new(
                            sqlstate::DUPLICATE_PREPARED_STATEMENT,
                            format!("prepared statement \"{name}\" already exists"),
                        ));
                    }
                    prepared.push(name);
                }
                Effect::None | Effect::Execute { .. } | Effect::Deallocate(_) => {}
            }
        }
        if self.entries.len() >= MAX_PREPARED_STATEMENTS
            && statements
                .iter()
                .any(|a| matches!(a.effect, Effect::Prepare { .. }))
        {
            return Err(Fatal::new(
                sqlstate::PROGRAM_LIMIT_EXCEEDED,
                format!("more than {MAX_PREPARED_STATEMENTS} prepared statements in one session"),
            ));
        }
        Ok(())
    }

    /// Follows what allowed statements, forwarded in cycle `cycle`, do to
    /// prepared statements once the server confirms each;
    /// `standard_conforming_strings` is the setting they were analysed
    /// under. A `PREPARE` counts at once (an `EXECUTE` behind it in the
    /// same string runs it if it succeeds), forgotten if not confirmed by
    /// its cycle's end; what a `DEALLOCATE` lets go stays until confirmed.
    pub fn apply(
        &mut self,
        statements: &[Analysed],
        standard_conforming_strings: bool,
        cycle: u64,
    ) {
        for analysed in statements {
            match &analysed.effect {
                Effect::None | Effect::Execute { .. } => {}
                Effect::Prepare { name } => {
                    let mut stored = analysed.clone();
                    stored.effect = Effect::None;
                    stored.shape = None;
                    if stored.statement.wrappers.first() == Some(&Wrapper::Prepare) {
                        stored.statement.wrappers.remove(0);
                    }
                    let generation = self.next_generation();
                    self.entries.insert(
                        name.clone(),
                        Entry {
                            text: analysed.statement.text.as_str().into(),
                            analysed: Some(Arc::from(vec![stored])),
                            analysed_under: standard_conforming_strings,
                            setting_unsure: false,
                            generation,
                            unconfirmed_in: Some(cycle),
                            // Only queries can be prepared in SQL.
                            may_execute: false,
                        },
                    );
                    self.sql.push_back(PendingSql {
                        cycle,
                        change: SqlChange::Prepare {
                            name: name.clone(),
                            generation,
                        },
                    });
                }
                Effect::Deallocate(Some(name)) => {
                    let generation = self.entries.get(name).map_or(0, |entry| entry.generation);
                    self.sql.push_back(PendingSql {
                        cycle,
                        change: SqlChange::Deallocate {
                            name: name.clone(),
                            generation,
                        },
                    });
                }
                Effect::Deallocate(None) => self.sql.push_back(PendingSql {
                    cycle,
                    change: SqlChange::DeallocateAll {
                        up_to: self.generations,
                    },
                }),
            }
        }
    }
}

/// Whether two analyses of one text (under each setting of
/// `standard_conforming_strings`) say the same: then it does not matter
/// which one the server used. (Compared as printed: every field counts.)
pub fn reads_alike(one: &[Analysed], other: &[Analysed]) -> bool {
    format!("{one:?}") == format!("{other:?}")
}

/// The refusal of a statement whose reading depends on a setting a
/// statement before it may be changing.
pub fn setting_unsure() -> Fatal {
    Fatal::new(
        sqlstate::FEATURE_NOT_SUPPORTED,
        "this statement reads differently with standard_conforming_strings on and off, and a \
         statement before it that may change the setting is not answered yet: send it after \
         the statements before it are answered",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::bindings::types::StatementKind;

    /// A session's statements holding `name`, parsed and confirmed in
    /// cycle 0.
    fn defined(name: &str, text: &str) -> Prepared {
        let mut prepared = Prepared::default();
        prepared.parsed(name, text, true, false, 0).unwrap();
        prepared.confirmed();
        prepared.cycle_ended(0);
        prepared
    }

    fn analysis_of(prepared: &mut Prepared, name: &str) -> Arc<[Analysed]> {
        prepared
            .analysis(name, &mut Analyser::default())
            .expect("the statement is known")
            .expect("read one way")
    }

    /// A PREPARE of a name in use is refused before it runs — followed for
    /// the trail alone, unless the same string lets the name go first; two
    /// PREPAREs of one name in a string are refused too.
    #[test]
    fn a_prepare_of_a_name_in_use_is_refused_unless_let_go_first() {
        let prepared = defined("p", "SELECT 1");
        let check = |text: &str| {
            prepared
                .check(&Analyser::default().analyse(text, true), true)
                .map_err(|refusal| refusal.code)
        };
        let taken = Err(sqlstate::DUPLICATE_PREPARED_STATEMENT);
        // Judged, a name in use is refused whatever comes before: an
        // EXECUTE after it would be judged as the old statement.
        for text in [
            "PREPARE p AS SELECT 2",
            "DEALLOCATE p; PREPARE p AS SELECT 2; EXECUTE p",
            "DEALLOCATE ALL; PREPARE p AS SELECT 2",
        ] {
            let judged = prepared.check(&Analyser::default().analyse(text, true), false);
            assert_eq!(judged.map_err(|r| r.code), taken, "{text}");
        }
        assert_eq!(check("PREPARE p AS SELECT 2"), taken);
        assert_eq!(check("DEALLOCATE p; PREPARE p AS SELECT 2"), Ok(()));
        assert_eq!(check("DEALLOCATE ALL; PREPARE p AS SELECT 2"), Ok(()));
        assert_eq!(check("DEALLOCATE q; PREPARE p AS SELECT 2"), taken);
        assert_eq!(check("PREPARE q AS SELECT 1; PREPARE q AS SELECT 2"), taken);
        assert_eq!(
            check("PREPARE q AS SELECT 1; DEALLOCATE q; PREPARE q AS SELECT 2"),
            Ok(())
        );
    }

    /// An EXECUTE is judged as the stronger of what it runs and what its
    /// arguments do: an argument that notifies neither hides a prepared
    /// `pg_terminate_backend()` nor is lost on a plain query.
    #[test]
    fn an_execute_is_judged_as_the_stronger_of_its_query_and_its_arguments() {
        let mut analyser = Analyser::default();
        let mut judged = |prepared: &mut Prepared, text: &str| {
            let resolved = prepared
                .resolve(analyser.analyse(text, true), &mut analyser)
                .unwrap();
            let statement = &resolved[0].statement;
            (statement.kind, statement.command.clone())
        };
        let mut terminating = defined("s", "SELECT pg_terminate_backend($1::int)");
        assert_eq!(
            judged(
                &mut terminating,
                "EXECUTE s(length(pg_notify('c', 'x')::text))"
            ),
            (StatementKind::Utility, "pg_terminate_backend()".to_owned())
        );
        let mut plain = defined("s", "SELECT $1::int");
        assert_eq!(
            judged(&mut plain, "EXECUTE s(length(pg_notify('c', 'x')::text))"),
            (StatementKind::Notification, "pg_notify()".to_owned())
        );
        assert_eq!(
            judged(
                &mut plain,
                "EXECUTE s(length(set_config('role', 'x', false)))"
            ),
            (StatementKind::Privilege, "SET ROLE".to_owned())
        );
        assert_eq!(
            judged(&mut plain, "EXECUTE s(1)"),
            (StatementKind::Select, "SELECT".to_owned())
        );
    }

    #[test]
    fn the_unnamed_statement_parsed_again_with_the_same_text_keeps_its_analysis() {
        let mut prepared = Prepared::default();
        let text = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
        prepared.parsed("", text, true, false, 0).unwrap();
        let first = analysis_of(&mut prepared, "");
        prepared.parsed("", text, true, false, 0).unwrap();
        assert!(Arc::ptr_eq(&first, &analysis_of(&mut prepared, "")));
    }

    #[test]
    fn the_unnamed_statement_is_analysed_again_for_another_text_or_setting() {
        let mut prepared = Prepared::default();
        prepared.parsed("", "SELECT 'a\\'", true, false, 0).unwrap();
        let first = analysis_of(&mut prepared, "");
        prepared
            .parsed("", "SELECT 'a\\'", false, false, 0)
            .unwrap();
        let under_the_other_setting = analysis_of(&mut prepared, "");
        assert!(!Arc::ptr_eq(&first, &under_the_other_setting));
        prepared
            .parsed("", "DELETE FROM orders", false, false, 0)
            .unwrap();
        assert_eq!(&*prepared.text("").unwrap(), "DELETE FROM orders");
        assert_eq!(
            analysis_of(&mut prepared, "")[0].statement.command,
            "DELETE"
        );
    }

    /// The server lexes a statement when it is parsed: so does sluice,
    /// whatever the setting is by the time it is bound; and where the
    /// setting at the Parse is unsure, a text the two settings read
    /// differently is refused, one they read alike is not.
    #[test]
    fn a_statement_is_read_under_the_setting_it_was_parsed_under() {
        let text = "SELECT 'a\\' , pan FROM cards -- '";
        let mut prepared = Prepared::default();
        prepared.parsed("on", text, true, false, 0).unwrap();
        prepared.parsed("off", text, false, false, 0).unwrap();
        let tables = |analysed: &[Analysed]| analysed[0].statement.tables.len();
        assert_eq!(
            tables(&analysis_of(&mut prepared, "on")),
            1,
            "pan from cards"
        );
        assert_eq!(tables(&analysis_of(&mut prepared, "off")), 0, "one string");

        prepared.parsed("unsure", text, true, true, 1).unwrap();
        let refused = prepared
            .analysis("unsure", &mut Analyser::default())
            .expect("known")
            .unwrap_err();
        assert_eq!(refused.code, sqlstate::FEATURE_NOT_SUPPORTED);
        let alike = "SELECT E'a\\n' FROM cards";
        prepared.parsed("alike", alike, true, true, 1).unwrap();
        assert_eq!(tables(&analysis_of(&mut prepared, "alike")), 1);
    }

    #[test]
    fn a_named_statement_is_not_redefined() {
        let mut prepared = Prepared::default();
        prepared
            .parsed("report", "DELETE FROM orders WHERE id = $1", true, false, 0)
            .unwrap();
        let refused = prepared
            .parsed("report", "SELECT 1", true, false, 0)
            .unwrap_err();
        assert_eq!(refused.code, sqlstate::DUPLICATE_PREPARED_STATEMENT);
        assert_eq!(
            &*prepared.text("report").unwrap(),
            "DELETE FROM orders WHERE id = $1"
        );
        // Once its close is confirmed, the name is free again.
        prepared.close_sent(Some("report"), 1);
        assert_eq!(
            prepared
                .parsed("report", "SELECT 1", true, false, 2)
                .unwrap_err()
                .code,
            sqlstate::DUPLICATE_PREPARED_STATEMENT,
            "closed in an earlier cycle not answered yet"
        );
        prepared.close_confirmed();
        prepared
            .parsed("report", "SELECT 1", true, false, 2)
            .unwrap();
        assert_eq!(&*prepared.text("report").unwrap(), "SELECT 1");
    }

    #[test]
    fn a_name_closed_in_its_own_cycle_is_taken_anew() {
        let mut prepared = defined("s", "SELECT 1");
        // Close and Parse in one cycle: both run, or both are skipped.
        prepared.close_sent(Some("s"), 1);
        prepared.parsed("s", "SELECT 2", true, false, 1).unwrap();
        assert_eq!(&*prepared.text("s").unwrap(), "SELECT 2");
        // The Close let go of the first definition, not the new one.
        assert!(prepared.close_confirmed().is_empty());
        prepared.confirmed();
        prepared.cycle_ended(1);
        assert_eq!(&*prepared.text("s").unwrap(), "SELECT 2");
        // Both skipped: the server kept the first, sluice holds neither.
        prepared.close_sent(Some("s"), 2);
        prepared.parsed("s", "SELECT 3", true, false, 2).unwrap();
        assert_eq!(prepared.cycle_ended(2), ["s"]);
        assert_eq!(prepared.text("s"), None);
    }

    #[test]
    fn discard_all_lets_go_of_what_came_before_it_once_confirmed() {
        let mut prepared = defined("old", "SELECT 1");
        let discard = Analyser::default().analyse("DISCARD ALL", true);
        prepared.apply(&discard, true, 1);
        prepared.parsed("new", "SELECT 2", true, false, 1).unwrap();
        assert!(
            prepared.text("old").is_some(),
            "not before the server's word"
        );
        assert_eq!(prepared.wait_to_define("old", 2), Some(1));
        assert_eq!(prepared.command_completed("DISCARD ALL"), ["old"]);
        prepared.confirmed();
        prepared.cycle_ended(1);
        assert_eq!(prepared.text("old"), None);
        assert_eq!(&*prepared.text("new").unwrap(), "SELECT 2");
    }

    #[test]
    fn parses_the_server_did_not_confirm_are_forgotten_when_their_cycle_ends() {
        let mut prepared = Prepared::default();
        // Cycle 0: both made.
        prepared.parsed("", "SELECT 1", true, false, 0).unwrap();
        prepared.parsed("kept", "SELECT 2", true, false, 0).unwrap();
        prepared.confirmed();
        prepared.confirmed();
        prepared.cycle_ended(0);
        // Cycle 1: the first Parse made, then an error: the rest skipped.
        // Cycle 2, pipelined behind it, is not answered yet.
        prepared.parsed("made", "SELECT 3", true, false, 1).unwrap();
        prepared.parsed("", "SELECT 4", true, false, 1).unwrap();
        prepared
            .parsed("skipped", "SELECT 5", true, false, 1)
            .unwrap();
        prepared
            .parsed("later", "SELECT 6", true, false, 2)
            .unwrap();
        prepared.confirmed();
        assert_eq!(prepared.cycle_ended(1), ["", "skipped"]);
        assert_eq!(&*prepared.text("kept").unwrap(), "SELECT 2");
        assert_eq!(&*prepared.text("made").unwrap(), "SELECT 3");
        assert_eq!(prepared.text(""), None, "the server may hold either");
        assert_eq!(prepared.text("skipped"), None);
        assert_eq!(&*prepared.text("later").unwrap(), "SELECT 6");
        prepared.cycle_ended(2);
        assert_eq!(prepared.text("later"), None);
    }

    #[test]
    fn an_unconfirmed_parse_does_not_forget_a_later_definition_of_its_name() {
        let mut prepared = Prepared::default();
        prepared.parsed("", "SELECT 1", true, false, 0).unwrap();
        prepared.parsed("", "SELECT 2", true, false, 1).unwrap();
        prepared.cycle_ended(0);
        assert_eq!(&*prepared.text("").unwrap(), "SELECT 2");
    }

    #[test]
    fn a_client_that_pipelines_parses_without_end_is_refused() {
        let mut prepared = Prepared::default();
        for _ in 0..MAX_UNCONFIRMED_PARSES {
            prepared.parsed("", "SELECT 1", true, false, 0).unwrap();
        }
        let refused = prepared.parsed("", "SELECT 1", true, false, 0).unwrap_err();
        assert_eq!(refused.code, sqlstate::PROGRAM_LIMIT_EXCEEDED);
        prepared.confirmed();
        prepared.parsed("", "SELECT 1", true, false, 0).unwrap();
    }
}
