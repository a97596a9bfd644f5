//! The `read-only` policy, shipped inside sluice as `builtin:read-only`:
//! allows only statements that read, denies every other kind with rule
//! `read-only`.
//!
//! Allowed: SELECT, EXPLAIN, SET/RESET/SHOW of settings, and transaction
//! control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT). EXPLAIN is allowed with or
//! without ANALYZE, which the statement kind does not tell apart: EXPLAIN
//! ANALYZE of a write runs it, so pair this policy with a database role
//! that cannot write where that matters. Everything else is denied —
//! writes, COPY in either direction, DDL, privileges, prepared-statement
//! commands, procedural code, LISTEN/NOTIFY, utilities, and statements the
//! parser could not read. It takes no configuration.

use sluice_plugin::config;
use sluice_plugin::policy::Policy;
use sluice_plugin::session::Session;
use sluice_plugin::types::{Decision, Statement, StatementKind};

struct ReadOnly;

impl Policy for ReadOnly {
    fn check_config() -> Result<(), String> {
        check_config_text(&config::get())
    }

    fn evaluate(_session: &Session, statement: &Statement) -> Decision {
        judge(statement.kind)
    }
}

sluice_plugin::register_policy!(ReadOnly);

/// Whether statements of `kind` may run.
fn judge(kind: StatementKind) -> Decision {
    match kind {
        StatementKind::Select
        | StatementKind::Explain
        | StatementKind::Setting
        | StatementKind::Transaction => Decision::Allow,
        _ => Decision::deny(
            "read-only",
            format!(
                "read-only access: {} statements are not allowed",
                kind.name()
            ),
        ),
    }
}

/// Accepts only an empty configuration table.
fn check_config_text(json: &str) -> Result<(), String> {
    let compact: String = json.chars().filter(|c| !c.is_whitespace()).collect();
    if compact == "{}" {
        Ok(())
    } else {
        Err(format!("read-only takes no configuration, got {json}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reads_are_allowed() {
        for kind in StatementKind::ALL {
            let allowed = matches!(
                kind,
                StatementKind::Select
                    | StatementKind::Explain
                    | StatementKind::Setting
                    | StatementKind::Transaction
            );
            assert_eq!(judge(kind) == Decision::Allow, allowed, "{kind:?}");
        }
        assert_eq!(
            judge(StatementKind::CopyOut),
            Decision::deny(
                "read-only",
                "read-only access: copy-out statements are not allowed"
            )
        );
    }

    #[test]
    fn configuration_must_be_empty() {
        assert!(check_config_text("{}").is_ok());
        assert!(check_config_text(" { } ").is_ok());
        assert!(check_config_text(r#"{"allow": ["insert"]}"#).is_err());
    }
}
