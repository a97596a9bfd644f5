//! The `access-policy` plugin, shipped inside sluice as
//! `builtin:access-policy`: least privilege (PCI DSS Req. 7) per principal
//! group, statement kind, schema, table and column, with human approval
//! before anyone without an explicit allowance touches cardholder data.
//!
//! Why grants and not denials: Req. 7 asks that access be restricted to
//! what a role needs, so what is not granted is refused — a table added
//! to the database tomorrow is out of reach until a rule names it. Why
//! groups: identity plugins give principals groups (from an IdP's claims
//! or the tokens file), and rules written per person go stale. Why a rules
//! file handed in by the host (`config::file("rules")`): grants change
//! more often than the gateway's config, the host watches the file and
//! reloads the plugin when it changes (a broken file is refused by
//! `check_config`, and the rules already serving stay), and the plugin
//! needs no filesystem of its own. The plugin's config table sets only
//! `default_schemas` (the database's search path; `["public"]` unless
//! said otherwise).
//!
//! # The decision, in order
//!
//! Every check that can deny runs before the one that can ask for
//! approval, so deny wins over approval.
//!
//! 1. **search path** (`access-policy/search-path`): a `SET search_path`
//!    naming a schema outside `default_schemas` (pg_catalog and pg_temp
//!    aside), and any call of the built-in `set_config()`, are refused for
//!    everyone. Step 4 reads a table named without a schema as a table of
//!    a default schema; another search path would make `orders` mean
//!    `other.orders`.
//! 2. **unparsed** (`access-policy/unparsed`): a statement sluice's parser
//!    could not read runs only when its `command` is in an `unparsed` list
//!    of a grant of one of the principal's groups and it came alone
//!    (`is_multi` false). The rules file may never list COPY, DO or ALTER
//!    SYSTEM there.
//! 3. **kind**: the data kinds (select, insert, update, delete, merge,
//!    copy-in, copy-out, explain) are judged by their tables alone; the
//!    default kinds (transaction, setting, prepared unless `[defaults]
//!    kinds` says otherwise) run for everyone; any other kind (ddl,
//!    privilege, utility, procedural, notification, other) must be in a
//!    `kinds` list of one of the principal's grants (`access-policy/kind`).
//!    A principal none of whose groups has a grant runs only the default
//!    kinds (`access-policy/no-grant`) — not even `SELECT 1`.
//! 4. **functions** (`access-policy/function`): a built-in that reads
//!    tables named in its arguments (`query_to_xml`, `table_to_xml`,
//!    `ts_stat`, ...) needs a read grant on every table (`*`).
//! 5. **tables** (`access-policy/table`): every table access of the
//!    statement (data-modifying CTEs, RETURNING, USING and subqueries
//!    included) must be covered by a grant of one of the principal's
//!    groups with that action and a matching table pattern. Grants add
//!    up across groups.
//! 6. **cardholder data** (`access-policy/cardholder-data`): a statement
//!    that touches a tagged column —
//!    names it, names every column of its table (`*`, a whole-row
//!    reference), names an unresolved column of that name while the
//!    table is among its tables, or calls a function sluice cannot see
//!    into (not built in, or one of step 4's) — needs the approval of
//!    `approver_group`, unless each way it touches the tagged table is
//!    covered by a grant with `cardholder = "allow"`. A PREPARE is not
//!    asked about: each EXECUTE or Bind that runs it is.
//! 7. Otherwise, allow.
//!
//! Table patterns: `*` every table; `schema.*` every table of a schema;
//! `schema.name`; `name`, a table of a default schema. A table the
//! statement names without a schema may be in any default schema, so it
//! is covered only when it would be in each; one named `pg_...` without a
//! schema is taken to be pg_catalog's, which PostgreSQL searches first
//! (`public.*` must not reach `pg_authid`). Names compare exactly, as
//! PostgreSQL stores them: the host folds unquoted identifiers to lower
//! case, so rules are written in lower case, and a quoted mixed-case table
//! needs its exact case.
//!
//! Reasons name groups, kinds, commands, tables, columns and functions,
//! never values from the statement text (a name with as many digits as a
//! card number has its digits hidden).
//!
//! The plugin keeps nothing between calls but its parsed rules, read once
//! per instance: the host reloads it (fresh instances) whenever the rules
//! file or the config table changes.

mod judge;
mod rules;

use std::sync::OnceLock;

use sluice_plugin::policy::Policy;
use sluice_plugin::session::Session;
use sluice_plugin::types::{Decision, Statement};
use sluice_plugin::{config, log};

pub use judge::{
    RULE_CONFIG, RULE_FUNCTION, RULE_KIND, RULE_NO_GRANT, RULE_SEARCH_PATH, RULE_TABLE,
    RULE_UNPARSED,
};
pub use rules::{RULES_FILE, Rules};

struct AccessPolicy;

impl Policy for AccessPolicy {
    // Decides on the analysis alone: never the text, parameters or clock.
    const SAME_FOR_SHAPE: bool = true;

    fn check_config() -> Result<(), String> {
        let rules = loaded().as_ref().map_err(Clone::clone)?;
        if rules.grant_count() == 0 {
            log::warn("the rules file grants nothing: every principal runs only the default kinds");
        } else {
            log::info(format!(
                "{} grants, {} cardholder columns",
                rules.grant_count(),
                rules.tagged_count()
            ));
        }
        Ok(())
    }

    fn evaluate(session: &Session, statement: &Statement) -> Decision {
        match loaded() {
            Ok(rules) => rules.judge(statement, || session.principal().groups.as_slice()),
            // check_config refused these rules, so this version never
            // serves; should it be called anyway, it refuses.
            Err(error) => Decision::deny(RULE_CONFIG, format!("no usable rules: {error}")),
        }
    }
}

sluice_plugin::register_policy!(AccessPolicy);

/// The rules, read once per instance.
fn loaded() -> &'static Result<Rules, String> {
    static RULES: OnceLock<Result<Rules, String>> = OnceLock::new();
    RULES.get_or_init(|| Rules::load(&config::get(), config::file(RULES_FILE).as_deref()))
}
