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
