//! The session's SQL cursors, as far as policies need them: what each one
//! reads. A cursor's query runs FETCH by FETCH, maybe long after its
//! DECLARE was judged — a `WITH HOLD` cursor outlives its transaction, and
//! a policy reload (an incident's deny rule) may come in between. So a
//! FETCH from a cursor this session declared is judged as a FETCH of what
//! that cursor reads: its tables, columns, functions and settings, under
//! the policies in force when the FETCH comes.
//!
//! Followed from what the client sends, and on the safe side of what the
//! server did: a DECLARE counts once judged (whether or not the server
//! then made the cursor), and a second DECLARE of a name adds what it reads
//! to what the name read before rather than replace it — a DECLARE the
//! server refuses (the name is taken) must not make a FETCH of the real
//! cursor look harmless. CLOSE is not followed (it may fail, or not run at
//! all behind an error in the same string); a cursor declared without
//! hold is forgotten when a transaction is seen to end after it. A name
//! that outlived its cursor only makes a later FETCH of that name (a
//! cursor made by a function, say) be judged with more than it reads. A
//! FETCH of a cursor sluice did not see declared (a function's refcursor)
//! is judged as FETCH alone, as before: the function that made it was
//! judged when it was called.

use std::collections::{HashMap, HashSet};

use crate::analysis::{Analysed, CursorUse};
use crate::plugin::bindings::types::{ColumnRef, FunctionRef, SettingChange, TableAccess};
use crate::protocol::sqlstate;

use super::Fatal;

/// Most cursor names a session's cursors are followed under.
pub const MAX_CURSORS: usize = 10_000;

/// Most tables, columns, functions and settings one cursor name reads,
/// all its DECLAREs together.
pub const MAX_READS_PER_CURSOR: usize = 10_000;

/// The cursors a session declared, by name (folded as PostgreSQL folds
/// it).
#[derive(Default)]
pub struct Cursors {
    by_name: HashMap<String, Cursor>,
    /// Cursors may have been declared that sluice did not follow (no
    /// policy judged then): a FETCH from one it does not know is refused.
    unknown_refused: bool,
}

/// What a cursor name's DECLAREs read.
#[derive(Default)]
struct Cursor {
    tables: Vec<TableAccess>,
    columns: Vec<ColumnRef>,
    functions: Vec<FunctionRef>,
    settings: Vec<SettingChange>,
    /// Each of the above as printed, to add each thing once in constant
    /// time (a hostile DECLARE may name thousands).
    seen: HashSet<String>,
    /// Whether any of its DECLAREs said `WITH HOLD`: then it may outlive
    /// its transaction.
    hold: bool,
    /// The cycle of its last DECLARE.
    cycle: u64,
}

impl Cursor {
    /// Adds what `declared` reads, each thing once.
    fn add(&mut self, declared: &Analysed) {
        let statement = &declared.statement;
        add_new(&mut self.seen, &mut self.tables, &statement.tables);
        add_new(&mut self.seen, &mut self.columns, &statement.columns);
        add_new(&mut self.seen, &mut self.functions, &statement.functions);
        add_new(&mut self.seen, &mut self.settings, &statement.settings);
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

impl Cursors {
    /// Follows the DECLAREs among `statements` (sent in cycle `cycle`),
    /// and gives each FETCH from a cursor declared in this session what
    /// that cursor reads — a DECLARE earlier in the same string included.
    /// Refuses a DECLARE past the session's bounds.
    pub fn resolve(&mut self, statements: &mut [Analysed], cycle: u64) -> Result<(), Fatal> {
        for analysed in statements {
            match &analysed.cursor {
                CursorUse::None => {}
                CursorUse::Declare { name, hold } => {
                    let known = self.by_name.get(name);
                    if known.is_none() && self.by_name.len() >= MAX_CURSORS {
                        return Err(Fatal::new(
                            sqlstate::PROGRAM_LIMIT_EXCEEDED,
                            format!(
                                "more than {MAX_CURSORS} cursor names in one session: reconnect"
                            ),
                        ));
                    }
                    if known.map_or(0, |cursor| cursor.seen.len()) + reads_of(analysed)
                        > MAX_READS_PER_CURSOR
                    {
                        return Err(Fatal::new(
                            sqlstate::PROGRAM_LIMIT_EXCEEDED,
                            format!(
                                "cursor \"{name}\" would read more than {MAX_READS_PER_CURSOR} tables, columns, functions and settings, all its declarations in this session together: use another name, or reconnect"
                            ),
                        ));
                    }
                    let cursor = self.by_name.entry(name.clone()).or_default();
                    cursor.add(analysed);
                    cursor.hold |= *hold;
                    cursor.cycle = cycle;
                }
                CursorUse::Fetch { name } => {
                    let Some(cursor) = self.by_name.get(name) else {
                        if self.unknown_refused {
                            return Err(Fatal::new(
                                sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                                format!(
                                    "cursor \"{name}\" may have been declared before sluice's policies judged this session: declare it again"
                                ),
                            ));
                        }
                        continue;
                    };
                    // A FETCH names no table of its own: what its cursor
                    // reads, each thing once already, is all it reads.
                    let statement = &mut analysed.statement;
                    statement.tables.extend(cursor.tables.iter().cloned());
                    statement.columns.extend(cursor.columns.iter().cloned());
                    statement.functions.extend(cursor.functions.iter().cloned());
                    statement.settings.extend(cursor.settings.iter().cloned());
                }
            }
        }
        Ok(())
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
        if !self.by_name.is_empty() {
            self.by_name
                .retain(|_, cursor| cursor.hold || cursor.cycle >= done);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::Analyser;

    fn analysed(text: &str) -> Vec<Analysed> {
        Analyser::default().analyse(text, true)
    }

    fn tables(analysed: &Analysed) -> Vec<String> {
        analysed
            .statement
            .tables
            .iter()
            .map(|access| access.table.name.clone())
            .collect()
    }

    #[test]
    fn a_fetch_reads_what_its_cursor_declared() {
        let mut cursors = Cursors::default();
        let mut declare = analysed("DECLARE C CURSOR WITH HOLD FOR SELECT pan FROM cards");
        cursors.resolve(&mut declare, 1).unwrap();
        let mut fetch = analysed("FETCH 10 FROM c");
        assert!(tables(&fetch[0]).is_empty());
        cursors.resolve(&mut fetch, 2).unwrap();
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
        let mut other = analysed("FETCH 10 FROM \"C\"");
        assert_eq!(
            other[0].cursor,
            CursorUse::Fetch {
                name: "C".to_owned()
            }
        );
        cursors.resolve(&mut other, 3).unwrap();
        assert!(tables(&other[0]).is_empty());
    }

    #[test]
    fn a_declare_and_its_fetch_in_one_string() {
        let mut cursors = Cursors::default();
        let mut both =
            analysed("BEGIN; DECLARE c CURSOR FOR SELECT * FROM cards; FETCH ALL FROM c; COMMIT");
        cursors.resolve(&mut both, 1).unwrap();
        assert_eq!(tables(&both[2]), ["cards"]);
    }

    /// A second DECLARE of a name the server may refuse (the cursor
    /// exists) adds to what the name reads; it does not replace it.
    #[test]
    fn a_name_declared_again_reads_both() {
        let mut cursors = Cursors::default();
        cursors
            .resolve(
                &mut analysed("DECLARE c CURSOR WITH HOLD FOR SELECT * FROM cards"),
                1,
            )
            .unwrap();
        cursors
            .resolve(
                &mut analysed("DECLARE c CURSOR WITH HOLD FOR SELECT * FROM merchants"),
                2,
            )
            .unwrap();
        let mut fetch = analysed("FETCH NEXT FROM c");
        cursors.resolve(&mut fetch, 3).unwrap();
        assert_eq!(tables(&fetch[0]), ["cards", "merchants"]);
        // Declared again alike: nothing new to add.
        cursors
            .resolve(
                &mut analysed("DECLARE c CURSOR WITH HOLD FOR SELECT * FROM cards"),
                4,
            )
            .unwrap();
        assert_eq!(cursors.by_name["c"].tables.len(), 2);
        assert_eq!(cursors.by_name["c"].seen.len(), 2 + 2);
    }

    #[test]
    fn a_cursor_without_hold_ends_with_its_transaction() {
        let mut cursors = Cursors::default();
        cursors
            .resolve(
                &mut analysed("DECLARE plain CURSOR FOR SELECT * FROM cards"),
                1,
            )
            .unwrap();
        cursors
            .resolve(
                &mut analysed("DECLARE held CURSOR WITH HOLD FOR SELECT * FROM cards"),
                1,
            )
            .unwrap();
        // Declared in a cycle not answered yet: a transaction that ended
        // before it does not end it.
        cursors
            .resolve(
                &mut analysed("DECLARE later CURSOR FOR SELECT * FROM cards"),
                3,
            )
            .unwrap();
        cursors.transaction_ended(2);
        let mut names: Vec<&str> = cursors.by_name.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["held", "later"]);
    }

    /// Once cursors may have been declared unseen, a FETCH from one
    /// sluice does not know is refused; one it followed is judged as ever.
    #[test]
    fn unknown_cursors_are_refused_once_some_went_unseen() {
        let mut cursors = Cursors::default();
        cursors
            .resolve(&mut analysed("FETCH NEXT FROM unseen"), 1)
            .expect("a function's refcursor, say");
        cursors.refuse_unknown_fetches();
        let refused = cursors
            .resolve(&mut analysed("FETCH NEXT FROM unseen"), 2)
            .unwrap_err();
        assert_eq!(refused.code, sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE);
        assert!(
            refused.message.contains("declare it again"),
            "{}",
            refused.message
        );
        let mut both =
            analysed("DECLARE seen CURSOR FOR SELECT * FROM cards; FETCH NEXT FROM seen");
        cursors.resolve(&mut both, 3).unwrap();
        assert_eq!(tables(&both[1]), ["cards"]);
    }

    #[test]
    fn declarations_past_the_bounds_are_refused() {
        let mut cursors = Cursors::default();
        for n in 0..MAX_CURSORS {
            cursors.by_name.insert(format!("c{n}"), Cursor::default());
        }
        let refused = cursors
            .resolve(&mut analysed("DECLARE one_more CURSOR FOR SELECT 1"), 1)
            .unwrap_err();
        assert_eq!(refused.code, sqlstate::PROGRAM_LIMIT_EXCEEDED);
        // A name already followed may be declared again.
        cursors
            .resolve(&mut analysed("DECLARE c1 CURSOR FOR SELECT 1"), 1)
            .unwrap();

        let mut cursors = Cursors::default();
        let wide: Vec<String> = (0..MAX_READS_PER_CURSOR / 2 + 1)
            .map(|n| format!("t{n}"))
            .collect();
        let text = format!("DECLARE wide CURSOR FOR SELECT 1 FROM {}", wide.join(", "));
        let refused = cursors.resolve(&mut analysed(&text), 1);
        let refused = match refused {
            Err(refused) => refused,
            // One DECLARE under the bound: a second one past it.
            Ok(()) => {
                let text = text.replace(" t", " u");
                cursors.resolve(&mut analysed(&text), 2).unwrap_err()
            }
        };
        assert_eq!(refused.code, sqlstate::PROGRAM_LIMIT_EXCEEDED);
        assert!(refused.message.contains("wide"), "{}", refused.message);
    }
}
