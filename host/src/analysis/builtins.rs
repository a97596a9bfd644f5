//! Which functions PostgreSQL has built in, and which of them are volatile.
//!
//! A policy needs both facts about a function call: a builtin such as
//! `pg_read_file` or `set_config` has effects its name promises, while an
//! unknown name is a user-defined function whose body sluice cannot see; and
//! a volatile function (`random()`, `nextval()`, `clock_timestamp()`) can
//! change the database or return a different value on every call.
//!
//! The facts come from PostgreSQL 15's own catalog, not from memory:
//! `gen_function_lists.sh` beside this file starts a throwaway cluster and
//! writes every function name in schema `pg_catalog` to
//! `builtin_functions.txt`, and the names with at least one volatile
//! overload (`provolatile = 'v'`) to `volatile_functions.txt`. Both files
//! are compiled in.
//!
//! Names are compared exactly, as PostgreSQL stores them: a caller passes a
//! name as the lexer delivers it (unquoted names folded to lower case,
//! quoted ones as written). So `lower` is builtin, and so is
//! `RI_FKey_cascade_del`, reachable only as a quoted identifier.

use std::sync::LazyLock;

use crate::plugin::bindings::types::TableAction;

static BUILTIN_FUNCTIONS: LazyLock<Vec<&'static str>> =
    LazyLock::new(|| sorted_names(include_str!("builtin_functions.txt")));

static VOLATILE_FUNCTIONS: LazyLock<Vec<&'static str>> =
    LazyLock::new(|| sorted_names(include_str!("volatile_functions.txt")));

/// Whether `name` (lower-case, unqualified) is a function built into
/// PostgreSQL 15 (schema pg_catalog).
pub fn is_builtin(name: &str) -> bool {
    BUILTIN_FUNCTIONS.binary_search(&name).is_ok()
}

/// Whether a builtin function is volatile (its value can change within a
/// statement: random(), nextval(), clock_timestamp(), ...). A name is
/// volatile when any of its overloads is.
pub fn is_volatile(name: &str) -> bool {
    VOLATILE_FUNCTIONS.binary_search(&name).is_ok()
}

/// What a built-in function does besides computing a value from its
/// arguments and the rows the statement reads: the acts a policy must see
/// as what they amount to. (Volatility alone does not say it: `random()`
/// is volatile and harmless, `pg_terminate_backend()` ends another
/// client's session.) A hand-kept list, by what each function of
/// PostgreSQL 15's `volatile_functions.txt` does; a test checks that every
/// name in it is a volatile built-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// Acts on other sessions or on the server: ends or cancels a backend,
    /// reloads the configuration, switches or marks the WAL, resets
    /// statistics, makes, drops or reads out replication slots and
    /// origins, takes advisory locks, summarises indexes. Judged as the
    /// utility statement it amounts to (every session shares the gateway's
    /// one upstream role, so a backend it may signal is any client's).
    Utility,
    /// Sends a notification, as NOTIFY does.
    Notification,
    /// Changes the sequence its first argument names (`nextval`, `setval`).
    WritesSequence,
    /// Reads the sequence its first argument names (`currval`).
    ReadsSequence,
    /// Reads, adds, changes or removes large objects: rows of
    /// `pg_catalog.pg_largeobject`.
    LargeObjects(TableAction),
}

/// The large objects' table, which every `lo_*` function reads or writes.
pub const LARGE_OBJECTS: &str = "pg_largeobject";

/// Every built-in function that acts (see [`Act`]), sorted by name.
const ACTS: &[(&str, Act)] = &[
    ("brin_desummarize_range", Act::Utility),
    ("brin_summarize_new_values", Act::Utility),
    ("brin_summarize_range", Act::Utility),
    ("currval", Act::ReadsSequence),
    ("gin_clean_pending_list", Act::Utility),
    ("lo_close", Act::LargeObjects(TableAction::Read)),
    ("lo_creat", Act::LargeObjects(TableAction::Insert)),
    ("lo_create", Act::LargeObjects(TableAction::Insert)),
    ("lo_export", Act::LargeObjects(TableAction::Read)),
    ("lo_from_bytea", Act::LargeObjects(TableAction::Insert)),
    ("lo_get", Act::LargeObjects(TableAction::Read)),
    ("lo_import", Act::LargeObjects(TableAction::Insert)),
    ("lo_lseek", Act::LargeObjects(TableAction::Read)),
    ("lo_lseek64", Act::LargeObjects(TableAction::Read)),
    ("lo_open", Act::LargeObjects(TableAction::Read)),
    ("lo_put", Act::LargeObjects(TableAction::Update)),
    ("lo_tell", Act::LargeObjects(TableAction::Read)),
    ("lo_tell64", Act::LargeObjects(TableAction::Read)),
    ("lo_truncate", Act::LargeObjects(TableAction::Update)),
    ("lo_truncate64", Act::LargeObjects(TableAction::Update)),
    ("lo_unlink", Act::LargeObjects(TableAction::Delete)),
    ("loread", Act::LargeObjects(TableAction::Read)),
    ("lowrite", Act::LargeObjects(TableAction::Update)),
    ("nextval", Act::WritesSequence),
    ("pg_advisory_lock", Act::Utility),
    ("pg_advisory_lock_shared", Act::Utility),
    ("pg_advisory_unlock", Act::Utility),
    ("pg_advisory_unlock_all", Act::Utility),
    ("pg_advisory_unlock_shared", Act::Utility),
    ("pg_advisory_xact_lock", Act::Utility),
    ("pg_advisory_xact_lock_shared", Act::Utility),
    ("pg_backup_start", Act::Utility),
    ("pg_backup_stop", Act::Utility),
    ("pg_cancel_backend", Act::Utility),
    ("pg_copy_logical_replication_slot", Act::Utility),
    ("pg_copy_physical_replication_slot", Act::Utility),
    ("pg_create_logical_replication_slot", Act::Utility),
    ("pg_create_physical_replication_slot", Act::Utility),
    ("pg_create_restore_point", Act::Utility),
    ("pg_drop_replication_slot", Act::Utility),
    ("pg_export_snapshot", Act::Utility),
    ("pg_import_system_collations", Act::Utility),
    ("pg_log_backend_memory_contexts", Act::Utility),
    ("pg_logical_emit_message", Act::Utility),
    // Decoded changes of every table: values no table grant covers.
    ("pg_logical_slot_get_binary_changes", Act::Utility),
    ("pg_logical_slot_get_changes", Act::Utility),
    ("pg_logical_slot_peek_binary_changes", Act::Utility),
    ("pg_logical_slot_peek_changes", Act::Utility),
    ("pg_notify", Act::Notification),
    ("pg_promote", Act::Utility),
    ("pg_reload_conf", Act::Utility),
    ("pg_replication_origin_advance", Act::Utility),
    ("pg_replication_origin_create", Act::Utility),
    ("pg_replication_origin_drop", Act::Utility),
    ("pg_replication_origin_session_reset", Act::Utility),
    ("pg_replication_origin_session_setup", Act::Utility),
    ("pg_replication_origin_xact_reset", Act::Utility),
    ("pg_replication_origin_xact_setup", Act::Utility),
    ("pg_replication_slot_advance", Act::Utility),
    ("pg_rotate_logfile", Act::Utility),
    ("pg_rotate_logfile_old", Act::Utility),
    ("pg_stat_reset", Act::Utility),
    ("pg_stat_reset_replication_slot", Act::Utility),
    ("pg_stat_reset_shared", Act::Utility),
    ("pg_stat_reset_single_function_counters", Act::Utility),
    ("pg_stat_reset_single_table_counters", Act::Utility),
    ("pg_stat_reset_slru", Act::Utility),
    ("pg_stat_reset_subscription_stats", Act::Utility),
    ("pg_switch_wal", Act::Utility),
    ("pg_terminate_backend", Act::Utility),
    ("pg_try_advisory_lock", Act::Utility),
    ("pg_try_advisory_lock_shared", Act::Utility),
    ("pg_try_advisory_xact_lock", Act::Utility),
    ("pg_try_advisory_xact_lock_shared", Act::Utility),
    ("pg_wal_replay_pause", Act::Utility),
    ("pg_wal_replay_resume", Act::Utility),
    ("setval", Act::WritesSequence),
];

/// What calling the built-in `name` does beyond its value, if anything.
pub fn act_of(name: &str) -> Option<Act> {
    ACTS.binary_search_by(|(listed, _)| listed.cmp(&name))
        .ok()
        .map(|at| ACTS[at].1)
}

/// The names listed in `list`, one a line, skipping blank lines and `#`
/// comments, sorted for binary search. The generator sorts them already;
/// sorting again keeps the lookup correct whatever order a hand edit leaves.
fn sorted_names(list: &'static str) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = list
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everyday_and_dangerous_builtins_are_known() {
        for name in [
            "lower",
            "now",
            "count",
            "set_config",
            "pg_read_file",
            "random",
            "nextval",
        ] {
            assert!(is_builtin(name), "{name} should be builtin");
        }
    }

    #[test]
    fn user_functions_and_other_schemas_are_not_builtin() {
        assert!(!is_builtin("my_func"));
        assert!(!is_builtin(""));
        // information_schema's functions are not in pg_catalog.
        assert!(!is_builtin("_pg_expandarray"));
    }

    #[test]
    fn names_are_matched_exactly() {
        assert!(!is_builtin("LOWER"), "callers pass names already folded");
        assert!(!is_builtin("lower "));
        assert!(
            is_builtin("RI_FKey_cascade_del"),
            "mixed-case catalog names stay as stored"
        );
        assert!(!is_builtin("ri_fkey_cascade_del"));
    }

    #[test]
    fn volatile_functions_are_known() {
        for name in [
            "random",
            "nextval",
            "setval",
            "clock_timestamp",
            "set_config",
            "pg_read_file",
        ] {
            assert!(is_volatile(name), "{name} should be volatile");
        }
        for name in ["lower", "now", "abs", "my_func"] {
            assert!(!is_volatile(name), "{name} should not be volatile");
        }
    }

    /// Every function listed as acting is a volatile built-in (a typo
    /// would leave the real name unjudged), and the utility list is sorted
    /// for its binary search.
    #[test]
    fn acts_are_of_volatile_builtins() {
        for name in [
            "pg_terminate_backend",
            "pg_cancel_backend",
            "pg_reload_conf",
            "pg_advisory_lock",
            "pg_notify",
            "nextval",
            "setval",
            "currval",
            "lo_import",
            "lo_unlink",
            "lo_get",
            "pg_logical_slot_peek_changes",
        ] {
            assert!(act_of(name).is_some(), "{name} acts");
        }
        for name in [
            "random",
            "clock_timestamp",
            "pg_sleep",
            "set_config",
            "lower",
        ] {
            assert_eq!(act_of(name), None, "{name}");
        }
        // Sorted for the binary search, and each a volatile built-in: a
        // typo would leave the real name unjudged.
        assert!(ACTS.windows(2).all(|pair| pair[0].0 < pair[1].0));
        for (name, _) in ACTS {
            assert!(is_volatile(name), "{name} is not a volatile built-in");
        }
        assert_eq!(
            act_of("lo_unlink"),
            Some(Act::LargeObjects(TableAction::Delete))
        );
    }

    #[test]
    fn every_volatile_function_is_builtin() {
        assert!(VOLATILE_FUNCTIONS.iter().all(|name| is_builtin(name)));
    }

    #[test]
    fn lists_skip_comments_and_blank_lines() {
        assert_eq!(
            sorted_names("# header\n\nb\na\n  c  \n#d\na\n"),
            ["a", "b", "c"]
        );
        assert!(
            BUILTIN_FUNCTIONS.len() > 2000,
            "PostgreSQL 15 has about 2,600 names"
        );
        assert!(BUILTIN_FUNCTIONS.iter().all(|name| !name.starts_with('#')));
    }
}
