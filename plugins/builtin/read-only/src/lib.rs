//! The `read-only` policy, shipped inside sluice as `builtin:read-only`:
//! allows only statements that read, denies every other kind with rule
//! `read-only`.
//!
//! Allowed: SELECT (and EXPLAIN of one, which the host reports as the
//! statement it explains), SET/RESET/SHOW of settings, and transaction
//! control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT) — provided the statement
//! only reads the tables it touches (a data-modifying CTE inside a SELECT
//! is a write; so is `nextval()` of a sequence or `lo_create()`, which the
//! host reports as writes of the sequence and of `pg_largeobject`) and
//! calls no function that is not built in (its body could write). A
//! SELECT calling a built-in that acts on other sessions or the server
//! (`pg_terminate_backend()`) or notifies (`pg_notify()`) comes as the
//! utility or notification it amounts to, and is denied as such.
//! Everything else is denied — writes, COPY in either direction,
//! DDL, privileges, SET ROLE, procedural code, LISTEN/NOTIFY, utilities,
//! and statements the parser could not read. It takes no configuration.

use sluice_plugin::config;
use sluice_plugin::policy::Policy;
use sluice_plugin::session::Session;
use sluice_plugin::types::{Decision, Statement, StatementKind, TableAction};

struct ReadOnly;

impl Policy for ReadOnly {
    fn check_config() -> Result<(), String> {
        check_config_text(&config::get())
    }

    // Decides on the analysis alone: never the text, parameters or clock.
    const SAME_FOR_SHAPE: bool = true;

    fn evaluate(_session: &Session, statement: &Statement) -> Decision {
        judge(statement)
    }
}

sluice_plugin::register_policy!(ReadOnly);

/// Whether a statement may run.
fn judge(statement: &Statement) -> Decision {
    let kind = statement.kind;
    if !matches!(
        kind,
        StatementKind::Select
            | StatementKind::Explain
            | StatementKind::Setting
            | StatementKind::Transaction
    ) {
        return Decision::deny(
            "read-only",
            format!(
                "read-only access: {} statements are not allowed",
                kind.name()
            ),
        );
    }
    if let Some(write) = statement
        .tables
        .iter()
        .find(|t| t.action != TableAction::Read)
    {
        return Decision::deny(
            "read-only",
            format!(
                "read-only access: this statement would {} {}",
                write.action.name(),
                write.table.qualified()
            ),
        );
    }
    if let Some(function) = statement.functions.iter().find(|f| !f.builtin) {
        return Decision::deny(
            "read-only",
            format!(
                "read-only access: {} is not a built-in function and may write",
                function.name
            ),
        );
    }
    Decision::Allow
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

    use sluice_plugin::types::{FunctionRef, TableAccess, TableRef};

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
            let statement = Statement::new(kind, "x");
            assert_eq!(judge(&statement) == Decision::Allow, allowed, "{kind:?}");
        }
        assert_eq!(
            judge(&Statement::new(StatementKind::CopyOut, "COPY t TO STDOUT")),
            Decision::deny(
                "read-only",
                "read-only access: copy-out statements are not allowed"
            )
        );
    }

    #[test]
    fn a_select_that_writes_is_denied() {
        let orders = TableRef {
            schema: None,
            name: "orders".into(),
        };
        let cte_delete = Statement {
            tables: vec![TableAccess {
                table: orders,
                action: TableAction::Delete,
            }],
            ..Statement::new(
                StatementKind::Select,
                "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d",
            )
        };
        assert_eq!(
            judge(&cte_delete),
            Decision::deny(
                "read-only",
                "read-only access: this statement would delete orders"
            )
        );
        let user_function = Statement {
            functions: vec![FunctionRef {
                schema: None,
                name: "purge".into(),
                builtin: false,
            }],
            ..Statement::new(StatementKind::Select, "SELECT purge()")
        };
        assert!(matches!(judge(&user_function), Decision::Deny(_)));
    }

    #[test]
    fn configuration_must_be_empty() {
        assert!(check_config_text("{}").is_ok());
        assert!(check_config_text(" { } ").is_ok());
        assert!(check_config_text(r#"{"allow": ["insert"]}"#).is_err());
    }
}
