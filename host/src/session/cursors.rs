//! The session's SQL cursors, as far as policies need them: what each one
//! reads. A cursor's query runs FETCH by FETCH, maybe long after its
//! DECLARE was judged — a `WITH HOLD` cursor outlives its transaction, and
//! a policy reload (an incident's deny rule) may come in between. So a
//! FETCH from a cursor declared under plugins no longer in force is judged
//! as a FETCH of what that cursor reads: its tables, columns, functions
//! and settings, under the policies in force when the FETCH comes. A FETCH
//! from a cursor declared under the plugins in force (and under no older
//! ones) is judged as FETCH alone, as the DECLARE's verdict (its approval,
//! say) holds for it: a client paging through a cursor is not asked again
//! for every page.
//!
//! Followed from what the client sends, and on the safe side of what the
//! server did: a DECLARE counts once the policies allowed it (whether or
//! not the server then made the cursor), and a second DECLARE of a name
//! adds what it reads to what the name read before rather than replace it
//! — a DECLARE the server refuses (the name is taken) must not make a
//! FETCH of the real cursor look harmless. CLOSE is not followed (it may
//! fail, or not run at all behind an error in the same string); a cursor
//! declared without hold is forgotten when a transaction is seen to end
//! after it. A name that outlived its cursor only makes a later FETCH of
//! that name (a cursor made by a function, say) be judged with more than
//! it reads. A FETCH of a cursor sluice did not see declared (a function's
//! refcursor) is judged as FETCH alone: the function that made it was
//! judged when it was called — unless cursors went unfollowed (declared
//! while no policy judged, or forgotten past the session's bound), and
//! then it is refused.
//!
//! FETCH and MOVE forms sluice's parser does not read (`FETCH c`, `FETCH
//! NEXT c`, with no FROM or IN) are unparsed statements, which policies
//! refuse unless told otherwise; their cursor is named all the same (the
//! grammar ends them with it), so one a policy lets run carries its
//! cursor's reads as a parsed FETCH does.

use std::collections::{HashMap, HashSet};

use crate::analysis::{Analysed, CursorUse, stronger_kind};
use crate::plugin::bindings::types::{
    ColumnRef, FunctionRef, SettingChange, StatementKind, TableAccess,
};
use crate::protocol::sqlstate;

use super::Fatal;

/// Most tables, columns, functions and settings one cursor name reads,
/// all its DECLAREs together: past it, the DECLARE is refused.
pub const MAX_READS_PER_CURSOR: usize = 10_000;

/// Most cursor names followed in a session, and most things they read
/// together. Past either, the cursors declared longest ago are forgotten,
/// and from then on a FETCH of a cursor sluice does not know is refused.
pub const MAX_CURSORS: usize = 10_000;
pub const MAX_READS: usize = 100_000;

/// The cursors a session declared, by name (folded as PostgreSQL folds
/// it).
#[derive(Default)]
pub struct Cursors {
    by_name: HashMap<String, Cursor>,
    /// What `by_name` reads, all cursors together.
    reads: usize,
    /// How many of `by_name` were declared without hold: what the end of
    /// a transaction may forget (none, and there is nothing to look at).
    not_held: usize,
    /// Cursors were declared that sluice does not follow (no policy judged
    /// then, or they were forgotten past the bounds): a FETCH from one it
    /// does not know is refused.
    unknown_refused: bool,
    /// Counts DECLAREs, to forget the oldest first.
    declared: u64,
}

/// What a cursor name's DECLAREs read.
#[derive(Default, Clone)]
struct Cursor {
    tables: Vec<TableAccess>,
    columns: Vec<ColumnRef>,
    functions: Vec<FunctionRef>,
    settings: Vec<SettingChange>,
    /// What its DECLAREs were judged as, the strongest of them (see
    /// [`stronger_kind`]): a cursor over `pg_terminate_backend()` is a
    /// utility at each FETCH, which runs it.
    kind: Option<(StatementKind, String)>,
    /// Each of the above as printed, to add each thing once in constant
    /// time (a hostile DECLARE may name thousands).
    seen: HashSet<String>,
    /// Whether any of its DECLAREs said `WITH HOLD`: then it may outlive
    /// its transaction.
    hold: bool,
    /// The cycle of its last DECLARE.
    cycle: u64,
    /// The plugin generation its last DECLARE was judged under.
    generation: u64,
    /// When it was last declared, in [`Cursors::declared`]'s count.
    order: u64,
}

impl Cursor {
    /// Adds what `declared` reads, each thing once.
    fn add(&mut self, declared: &Analysed) {
        let statement = &declared.statement;
        add_new(&mut self.seen, &mut self.tables, &statement.tables);
        add_new(&mut self.seen, &mut self.columns, &statement.columns);
        add_new(&mut self.seen, &mut self.functions, &statement.functions);
        add_new(&mut self.seen, &mut self.settings, &statement.settings);
        let declared_as = (statement.kind, statement.command.clone());
        self.kind = Some(match self.kind.take() {
            Some(kind) => stronger_kind(kind, declared_as),
            None => declared_as,
        });
    }
}

fn add_new<T: Clone + std::fmt::Debug>(seen: &mut HashSet<String>, to: &mut Vec<T>, from: &[T]) {
    for item in from {
        if seen.insert(format!("{item:?}")) {
            to.push(item.clone());
        }
    }
}

/// How many things a statement reads, as [`Cursor`] counts them.
fn reads_of(analysed: &Analysed) -> usize {
    let statement = &analysed.statement;
    statement.tables.len()
        + statement.columns.len()
        + statement.functions.len()
        + statement.settings.len()
}

/// The DECLAREs of one query string (or Bind), as they would leave their
/// cursors: followed once the policies allow the statements
/// ([`Cursors::commit`]).
#[derive(Default)]
pub struct Declared(Vec<(String, Cursor)>);

impl Cursors {
    /// Gives each FETCH among `statements` what its cursor reads, where
    /// that cursor was declared under plugins other than those in force
    /// (`generation`) — a DECLARE earlier in the same string counts, under
    /// these. Returns the string's DECLAREs, to follow once allowed; refuses
    /// one past a cursor's bound, a FETCH of an unknown cursor once
    /// cursors went unfollowed, and one of a name that is no SQL cursor
    /// sluice follows but may be a protocol portal bound under plugins no
    /// longer in force (`stale_portal`): SQL FETCH reads a Bind's portal
    /// too, whose statement those plugins judged.
    pub fn resolve(
        &self,
        statements: &mut [Analysed],
        generation: u64,
        stale_portal: impl Fn(&str) -> bool,
    ) -> Result<Declared, Fatal> {
        let mut declared: Vec<(String, Cursor)> = Vec::new();
        for analysed in statements {
            match &analysed.cursor {
                CursorUse::None => {}
                CursorUse::Declare { name, hold } => {
                    let at = declared.iter().position(|(declared, _)| declared == name);
                    let before = match at {
                        Some(at) => Some(&declared[at].1),
                        None => self.by_name.get(name),
                    };
                    if before.map_or(0, |cursor| cursor.seen.len()) + reads_of(analysed)
                        > MAX_READS_PER_CURSOR
                    {
                        return Err(Fatal::new(
                            sqlstate::PROGRAM_LIMIT_EXCEEDED,
                            format!(
                                "cursor \"{name}\" would read more than {MAX_READS_PER_CURSOR} tables, columns, functions and settings, all its declarations in this session together: use another name, or reconnect"
                            ),
                        ));
                    }
                    // A name declared before, under plugins no longer in
                    // force, keeps its older generation: what its earlier
                    // DECLAREs read was not judged by these, and a FETCH
                    // of it must be (the server may have refused this
                    // DECLARE, the name being taken).
                    let mut cursor = before.cloned().unwrap_or_else(|| Cursor {
                        generation,
                        ..Cursor::default()
                    });
                    cursor.add(analysed);
                    cursor.hold |= *hold;
                    match at {
                        Some(at) => declared[at].1 = cursor,
                        None => declared.push((name.clone(), cursor)),
                    }
                }
                CursorUse::Fetch { name } => {
                    // Checked first: a cursor sluice follows may share the
                    // name (closed since, unseen), and the server reads
                    // the portal.
                    if stale_portal(name) {
                        return Err(Fatal::new(
                            sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                            format!(
                                "\"{name}\" may be a portal bound before sluice's policies were reloaded: bind it again to be judged by the policies in force"
                            ),
                        ));
                    }
                    let cursor = declared
                        .iter()
                        .find(|(declared, _)| declared == name)
                        .map(|(_, cursor)| cursor)
                        .or_else(|| self.by_name.get(name));
                    let Some(cursor) = cursor else {
                        if self.unknown_refused {
                            return Err(Fatal::new(
                                sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                                format!(
                                    "sluice does not follow cursor \"{name}\" (declared before sluice's policies judged this session, or among more cursors than it follows in one): declare it again"
                                ),
                            ));
                        }
                        continue;
                    };
                    if cursor.generation == generation {
                        // Its DECLARE was judged by the rules in force.
                        continue;
                    }
                    // A FETCH names no table of its own: what its cursor
                    // reads, each thing once already, is all it reads.
                    let statement = &mut analysed.statement;
                    statement.tables.extend(cursor.tables.iter().cloned());
                    statement.columns.extend(cursor.columns.iter().cloned());
                    statement.functions.extend(cursor.functions.iter().cloned());
                    statement.settings.extend(cursor.settings.iter().cloned());
                    // And what it amounts to: each FETCH runs its query.
                    if let Some(kind) = &cursor.kind {
                        (statement.kind, statement.command) = stronger_kind(
                            (statement.kind, std::mem::take(&mut statement.command)),
                            kind.clone(),
                        );
                    }
                }
            }
        }
        Ok(Declared(declared))
    }

    /// Follows the DECLAREs of statements the policies allowed, sent in
    /// cycle `cycle`; past the session's bounds, forgets the cursors
    /// declared longest ago.
    pub fn commit(&mut self, declared: Declared, cycle: u64) {
        for (name, mut cursor) in declared.0 {
            self.declared += 1;
            cursor.cycle = cycle;
            cursor.order = self.declared;
            self.reads += cursor.seen.len();
            self.not_held += usize::from(!cursor.hold);
            if let Some(before) = self.by_name.insert(name, cursor) {
                self.reads -= before.seen.len();
                self.not_held -= usize::from(!before.hold);
            }
        }
        if self.by_name.len() > MAX_CURSORS || self.reads > MAX_READS {
            // Oldest first, to a tenth below both bounds, so that this is
            // rare.
            let mut by_age: Vec<(u64, usize)> = self
                .by_name
                .values()
                .map(|cursor| (cursor.order, cursor.seen.len()))
                .collect();
            by_age.sort_unstable();
            let (mut names, mut reads) = (by_age.len(), self.reads);
            let mut oldest_kept = 0;
            for (order, len) in by_age {
                if names <= MAX_CURSORS - MAX_CURSORS / 10 && reads <= MAX_READS - MAX_READS / 10 {
                    break;
                }
                names -= 1;
                reads -= len;
                oldest_kept = order + 1;
            }
            self.by_name.retain(|_, cursor| cursor.order >= oldest_kept);
            self.reads = self.by_name.values().map(|cursor| cursor.seen.len()).sum();
            self.not_held = self.by_name.values().filter(|cursor| !cursor.hold).count();
            self.unknown_refused = true;
        }
    }

    /// Policies judge the session from now on, and cursors may have been
    /// declared before, unseen: a FETCH from a cursor sluice does not
    /// know is refused from now on (a function's refcursor too), since
    /// what it reads was never judged.
    pub fn refuse_unknown_fetches(&mut self) {
        self.unknown_refused = true;
    }

    /// A transaction ended, as the answer to cycle `done - 1` says: the
    /// cursors declared without hold up to then are gone.
    pub fn transaction_ended(&mut self, done: u64) {
        if self.not_held == 0 {
            return;
        }
        let (mut gone, mut gone_reads) = (0, 0);
        self.by_name.retain(|_, cursor| {
            let kept = cursor.hold || cursor.cycle >= done;
            if !kept {
                gone += 1;
                gone_reads += cursor.seen.len();
            }
            kept
        });
        self.not_held -= gone;
        self.reads -= gone_reads;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::Analyser;

    fn analysed(text: &str) -> Vec<Analysed> {
        Analyser::default().analyse(text, true)
    }

    /// No protocol portal of the session was bound under older plugins.
    fn no_portals(_: &str) -> bool {
        false
    }

    fn tables(analysed: &Analysed) -> Vec<String> {
        analysed
            .statement
            .tables
            .iter()
            .map(|access| access.table.name.clone())
            .collect()
    }

    /// Declares `text` under plugin generation `generation`, allowed.
    fn declare(cursors: &mut Cursors, text: &str, cycle: u64, generation: u64) {
        let declared = cursors
            .resolve(&mut analysed(text), generation, no_portals)
            .expect("within bounds");
        cursors.commit(declared, cycle);
    }

    /// What a FETCH under `generation` is judged as reading.
    fn fetched(cursors: &Cursors, text: &str, generation: u64) -> Vec<String> {
        let mut fetch = analysed(text);
        cursors
            .resolve(&mut fetch, generation, no_portals)
            .expect("resolves");
        tables(&fetch[0])
    }

    #[test]
    fn a_fetch_after_a_reload_reads_what_its_cursor_declared() {
        let mut cursors = Cursors::default();
        declare(
            &mut cursors,
            "DECLARE C CURSOR WITH HOLD FOR SELECT pan FROM cards",
            1,
            1,
        );
        // Under the rules that allowed its DECLARE: a FETCH alone.
        assert!(fetched(&cursors, "FETCH 10 FROM c", 1).is_empty());
        // After a reload: what the cursor reads, columns too.
        let mut fetch = analysed("FETCH 10 FROM c");
        cursors.resolve(&mut fetch, 2, no_portals).unwrap();
        assert_eq!(tables(&fetch[0]), ["cards"]);
        assert_eq!(fetch[0].statement.command, "FETCH");
        assert!(
            fetch[0]
                .statement
                .columns
                .iter()
                .any(|c| c.column.as_deref() == Some("pan")),
            "{:?}",
            fetch[0].statement.columns
        );
        // Another cursor's name, or a quoted one that folds otherwise, is
        // not this one.
        let other = analysed("FETCH 10 FROM \"C\"");
        assert_eq!(
            other[0].cursor,
            CursorUse::Fetch {
                name: "C".to_owned()
            }
        );
        assert!(fetched(&cursors, "FETCH 10 FROM \"C\"", 2).is_empty());
    }

    /// A DECLARE the policies refused is not followed: what it would have
    /// read never counts for the name.
    #[test]
    fn only_allowed_declarations_are_followed() {
        let cursors = Cursors::default();
        let mut refused = analysed("DECLARE c CURSOR FOR SELECT * FROM cards");
        let _not_committed = cursors.resolve(&mut refused, 1, no_portals).unwrap();
        assert!(fetched(&cursors, "FETCH NEXT FROM c", 2).is_empty());
        assert!(cursors.by_name.is_empty());
    }

    #[test]
    fn a_declare_and_its_fetch_in_one_string() {
        // A new name: its FETCH in the same string is judged alone, the
        // DECLARE before it judged by the same rules.
        let mut cursors = Cursors::default();
        let text = "BEGIN; DECLARE c CURSOR FOR SELECT * FROM cards; FETCH ALL FROM c; COMMIT";
        let mut both = analysed(text);
        cursors.resolve(&mut both, 2, no_portals).unwrap();
        assert!(tables(&both[2]).is_empty());
        // An older cursor of the name, declared under other rules (the
        // server may refuse the new DECLARE and keep it): the FETCH is
        // judged with what both read.
        declare(
            &mut cursors,
            "DECLARE c CURSOR WITH HOLD FOR SELECT * FROM merchants",
            1,
            1,
        );
        let mut both = analysed(text);
        let declared = cursors.resolve(&mut both, 2, no_portals).unwrap();
        assert_eq!(tables(&both[2]), ["merchants", "cards"]);
        cursors.commit(declared, 2);
        assert_eq!(
            fetched(&cursors, "FETCH ALL FROM c", 3),
            ["merchants", "cards"]
        );
        // Declared again under the plugins in force, it still reads what it
        // read under the older ones, which these did not judge: a FETCH is
        // judged with it all (the server may have kept the older cursor).
        assert_eq!(
            fetched(&cursors, "FETCH ALL FROM c", 2),
            ["merchants", "cards"]
        );
    }

    /// A second DECLARE of a name the server may refuse (the cursor
    /// exists) adds to what the name reads; it does not replace it.
    #[test]
    fn a_name_declared_again_reads_both() {
        let mut cursors = Cursors::default();
        for (cycle, table) in [(1, "cards"), (2, "merchants"), (4, "cards")] {
            declare(
                &mut cursors,
                &format!("DECLARE c CURSOR WITH HOLD FOR SELECT * FROM {table}"),
                cycle,
                1,
            );
        }
        assert_eq!(
            fetched(&cursors, "FETCH NEXT FROM c", 2),
            ["cards", "merchants"]
        );
        // Declared again alike: nothing new to add.
        assert_eq!(cursors.by_name["c"].tables.len(), 2);
        assert_eq!(cursors.by_name["c"].seen.len(), 2 + 2);
        assert_eq!(cursors.reads, 4);
    }

    #[test]
    fn a_cursor_without_hold_ends_with_its_transaction() {
        let mut cursors = Cursors::default();
        declare(
            &mut cursors,
            "DECLARE plain CURSOR FOR SELECT * FROM cards",
            1,
            1,
        );
        declare(
            &mut cursors,
            "DECLARE held CURSOR WITH HOLD FOR SELECT * FROM cards",
            1,
            1,
        );
        // Declared in a cycle not answered yet: a transaction that ended
        // before it does not end it.
        declare(
            &mut cursors,
            "DECLARE later CURSOR FOR SELECT * FROM cards",
            3,
            1,
        );
        cursors.transaction_ended(2);
        let mut names: Vec<&str> = cursors.by_name.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["held", "later"]);
        assert_eq!(cursors.reads, 4);
        assert_eq!(cursors.not_held, 1);
        cursors.transaction_ended(4);
        assert_eq!(cursors.not_held, 0);
        assert_eq!(cursors.reads, 2);
    }

    /// SQL FETCH reads a protocol portal as well as a cursor: a name that
    /// may be one bound under older plugins is refused, even where a
    /// cursor of that name is followed (closed since, unseen: the server
    /// reads the portal).
    #[test]
    fn a_fetch_of_a_portal_bound_under_older_plugins_is_refused() {
        let mut cursors = Cursors::default();
        let stale = |name: &str| name == "p";
        let refused = cursors
            .resolve(&mut analysed("FETCH ALL FROM p"), 2, stale)
            .err()
            .expect("refused");
        assert_eq!(refused.code, sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE);
        assert!(
            refused.message.contains("bind it again"),
            "{}",
            refused.message
        );
        // Another name is no such portal.
        cursors
            .resolve(&mut analysed("FETCH ALL FROM q"), 2, stale)
            .expect("an unknown name, no portal");
        // A cursor of the name, followed: refused all the same.
        let declared = cursors
            .resolve(
                &mut analysed("DECLARE p CURSOR FOR SELECT id FROM t"),
                2,
                no_portals,
            )
            .unwrap();
        cursors.commit(declared, 1);
        assert!(
            cursors
                .resolve(&mut analysed("FETCH ALL FROM p"), 2, stale)
                .is_err()
        );
    }

    /// A FETCH from a cursor declared under older plugins is judged as
    /// what its DECLARE was: one over `pg_terminate_backend()` is a
    /// utility, since each FETCH runs the function again.
    #[test]
    fn a_stale_cursor_s_fetch_is_judged_as_its_declare_s_kind() {
        let mut cursors = Cursors::default();
        let declared = cursors
            .resolve(
                &mut analysed(
                    "DECLARE c CURSOR WITH HOLD FOR SELECT pg_terminate_backend(p) FROM generate_series(1, 9) p",
                ),
                1,
                no_portals,
            )
            .unwrap();
        cursors.commit(declared, 1);
        let mut fetch = analysed("FETCH NEXT FROM c");
        cursors.resolve(&mut fetch, 2, no_portals).unwrap();
        let statement = &fetch[0].statement;
        assert_eq!(
            (statement.kind, statement.command.as_str()),
            (StatementKind::Utility, "pg_terminate_backend()")
        );
        // Under the plugins that judged it, the FETCH is judged alone.
        let mut fetch = analysed("FETCH NEXT FROM c");
        cursors.resolve(&mut fetch, 1, no_portals).unwrap();
        assert_eq!(fetch[0].statement.kind, StatementKind::Select);
    }

    /// Once cursors may have been declared unseen, a FETCH from one
    /// sluice does not know is refused; one it followed is judged as ever.
    #[test]
    fn unknown_cursors_are_refused_once_some_went_unseen() {
        let mut cursors = Cursors::default();
        assert!(fetched(&cursors, "FETCH NEXT FROM unseen", 1).is_empty());
        cursors.refuse_unknown_fetches();
        let refused = cursors
            .resolve(&mut analysed("FETCH NEXT FROM unseen"), 1, no_portals)
            .err()
            .expect("refused");
        assert_eq!(refused.code, sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE);
        assert!(
            refused.message.contains("declare it again"),
            "{}",
            refused.message
        );
        declare(
            &mut cursors,
            "DECLARE seen CURSOR FOR SELECT * FROM cards",
            3,
            1,
        );
        assert_eq!(fetched(&cursors, "FETCH NEXT FROM seen", 2), ["cards"]);
    }

    /// Past the session's bounds the cursors declared longest ago are
    /// forgotten (and unknown ones refused from then on); one cursor past
    /// its own bound is refused.
    #[test]
    fn bounds_forget_the_oldest_and_refuse_the_widest() {
        let mut cursors = Cursors::default();
        for n in 0..=MAX_CURSORS {
            declare(
                &mut cursors,
                &format!("DECLARE c{n} CURSOR WITH HOLD FOR SELECT 1"),
                1,
                1,
            );
        }
        assert!(cursors.by_name.len() <= MAX_CURSORS - MAX_CURSORS / 10);
        assert!(cursors.by_name.contains_key(&format!("c{MAX_CURSORS}")));
        assert!(!cursors.by_name.contains_key("c0"));
        assert!(
            cursors
                .resolve(&mut analysed("FETCH NEXT FROM c0"), 1, no_portals)
                .is_err()
        );

        let mut cursors = Cursors::default();
        let wide: Vec<String> = (0..MAX_READS_PER_CURSOR / 2 + 1)
            .map(|n| format!("t{n}"))
            .collect();
        let text = format!("DECLARE wide CURSOR FOR SELECT 1 FROM {}", wide.join(", "));
        declare(&mut cursors, &text, 1, 1);
        let refused = cursors
            .resolve(&mut analysed(&text.replace(" t", " u")), 1, no_portals)
            .err()
            .expect("refused");
        assert_eq!(refused.code, sqlstate::PROGRAM_LIMIT_EXCEEDED);
        assert!(refused.message.contains("wide"), "{}", refused.message);
    }
}
