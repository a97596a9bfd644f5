//! The command guard, shipped inside sluice as `builtin:command-guard`:
//! refuses dangerous statements — bulk deletes and updates, exports,
//! server-side files and programs, code and privilege changes, settings
//! that change how SQL is read — per principal group, from a rules file.
//!
//! It decides on what sluice's SQL analysis reports, never on the text:
//! the command, the table accesses, `has_where`, the COPY endpoint, the
//! functions called and the settings changed. The analysis describes the
//! statement inside EXPLAIN, PREPARE and EXECUTE, so `EXPLAIN ANALYZE` of a
//! blocked statement (which runs it) is blocked like the statement, and so
//! is a plain EXPLAIN of one.
//!
//! Statements the parser could not read (`unparsed`) are refused unless
//! the rules allow their command for one of the principal's groups — and
//! no rules file may allow `COPY`, `DO` or `ALTER SYSTEM` that way.
//!
//! See README.md for the rules file.

mod blocks;
mod rules;

use std::cell::LazyCell;
use std::sync::OnceLock;

use sluice_plugin::config;
use sluice_plugin::policy::Policy;
use sluice_plugin::session::Session;
use sluice_plugin::types::{Decision, Statement, StatementKind};

pub use blocks::Block;
pub use rules::Rules;

struct Guard;

impl Policy for Guard {
    fn check_config() -> Result<(), String> {
        loaded().as_ref().map(|_| ()).map_err(Clone::clone)
    }

    // Decides on the analysis alone: never the text, parameters or clock.
    const SAME_FOR_SHAPE: bool = true;

    fn evaluate(session: &Session, statement: &Statement) -> Decision {
        match loaded() {
            Ok(rules) => judge(rules, statement, || session.principal().groups.clone()),
            // check_config refused these rules, so this version never
            // serves; should it be called anyway, it refuses.
            Err(error) => Decision::deny("command-guard", format!("no usable rules: {error}")),
        }
    }
}

sluice_plugin::register_policy!(Guard);

/// The rules, parsed once per instance from the `rules` file.
fn loaded() -> &'static Result<Rules, String> {
    static RULES: OnceLock<Result<Rules, String>> = OnceLock::new();
    RULES.get_or_init(|| {
        let own = config::get();
        if own.chars().any(|c| !c.is_whitespace() && c != '{' && c != '}') {
            return Err(format!(
                "command-guard takes its rules from the `rules` file, not from its config table (got {own})"
            ));
        }
        let file = config::file("rules");
        Rules::parse(config::file_text(file.as_deref(), "rules", "rules file", "guard.toml")?)
    })
}

/// Decides on one statement. `groups` fetches the principal's groups,
/// asked for only when some rule might refuse the statement.
pub fn judge(
    rules: &Rules,
    statement: &Statement,
    groups: impl FnOnce() -> Vec<String>,
) -> Decision {
    // Fetched from sluice on first use, if a rule needs it.
    let groups = LazyCell::new(groups);
    if statement.kind == StatementKind::Unparsed {
        let allowed = !statement.is_multi
            && !statement.command.is_empty()
            && rules.unparsed_allowed(&statement.command, &groups);
        if allowed {
            // Allowed unread, and still refused by any rule its command
            // alone meets (`ALTER EXTENSION`, which the parser does not
            // read, is code all the same): only the command is known.
            return blocked(rules, statement, &groups).unwrap_or(Decision::Allow);
        }
        let what = if statement.command.is_empty() {
            "this text".to_owned()
        } else {
            statement.command.clone()
        };
        return Decision::deny(
            "unparsed",
            format!(
                "sluice could not read {what} with certainty, and no rule allows it for your groups"
            ),
        );
    }
    blocked(rules, statement, &groups).unwrap_or(Decision::Allow)
}

/// The refusal of the first rule that blocks `statement` for the
/// principal's groups, if one does.
fn blocked(
    rules: &Rules,
    statement: &Statement,
    groups: &LazyCell<Vec<String>, impl FnOnce() -> Vec<String>>,
) -> Option<Decision> {
    for rule in &rules.rules {
        let Some(found) = rule
            .blocks
            .iter()
            .find_map(|b| b.find(statement, &rules.settings))
        else {
            continue;
        };
        if rule.applies_to(groups) {
            let reason = rule.reason.clone().unwrap_or(found);
            return Some(Decision::deny(rule.name.clone(), reason));
        }
    }
    None
}

#[cfg(test)]
mod tests;
