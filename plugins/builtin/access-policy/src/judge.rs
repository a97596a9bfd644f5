//! The decision: what one statement may do, for the principal's groups,
//! under the rules.
//!
//! Every check that can deny runs before the one that can ask for
//! approval, so a statement that would be refused anyway never bothers an
//! approver (deny wins over approval, as it does across plugins).

use std::borrow::Cow;
use std::cell::LazyCell;

use sluice_plugin::types::{
    ColumnAccess, Decision, Statement, StatementKind, TableAccess, TableAction, TableRef, Wrapper,
};

use crate::rules::{CATALOG_SCHEMA, Cardholder, ColumnTag, DATA_KINDS, Grant, Rules};

/// How a statement touches a tagged column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Touch {
    /// The table of a whole-table tag, touched without a column read
    /// (`count(*)`, an INSERT): no value goes anywhere.
    Unread,
    /// Only reads that send its values to the client as stored.
    AsStored,
    /// Any other read: computed on, compared, filtered by.
    Computed,
}

/// Catalog views that show values of any table's columns: the planner's
/// statistics (a column's most common values and histogram bounds) and
/// the text of other sessions' statements. Reading one may touch every
/// tagged column. They are pg_catalog's, so only a name there (or without
/// a schema, searched there first) is one of them.
const SHOWS_OTHER_TABLES_VALUES: &[&str] = &[
    "pg_stats",
    "pg_stats_ext",
    "pg_stats_ext_exprs",
    "pg_statistic",
    "pg_statistic_ext_data",
    "pg_stat_activity",
];

/// Extensions' views that show other sessions' statements, values and
/// all: an extension makes its objects in whatever schema it is created
/// in (`public`, by default), so a name in any schema counts. Another
/// table that happens to share the name is held for approval with them.
const EXTENSION_SHOWS_OTHER_TABLES_VALUES: &[&str] = &["pg_stat_statements"];

/// Built-in functions that return values read elsewhere, which the
/// statement calling them does not name: the rows of a cursor declared
/// earlier (`cursor_to_xml`: an as-stored read, then computed on), other
/// sessions' statement text (the functions behind `pg_stat_activity`), and
/// every row written since a logical replication slot was made. Calling
/// one may touch every tagged column.
const SHOWS_OTHER_VALUES_FUNCTIONS: &[&str] = &[
    "cursor_to_xml",
    "pg_stat_get_activity",
    "pg_stat_get_backend_activity",
    "pg_logical_slot_get_changes",
    "pg_logical_slot_peek_changes",
    "pg_logical_slot_get_binary_changes",
    "pg_logical_slot_peek_binary_changes",
];

/// Rule names in denials: which part of the policy refused.
pub const RULE_UNPARSED: &str = "access-policy/unparsed";
pub const RULE_NO_GRANT: &str = "access-policy/no-grant";
pub const RULE_KIND: &str = "access-policy/kind";
pub const RULE_SEARCH_PATH: &str = "access-policy/search-path";
pub const RULE_FUNCTION: &str = "access-policy/function";
pub const RULE_TABLE: &str = "access-policy/table";
pub const RULE_CONFIG: &str = "access-policy/config";
/// The rule that holds a statement touching cardholder data for approval.
pub const RULE_CARDHOLDER: &str = "access-policy/cardholder-data";

/// Built-in functions that read tables the analysis never sees: they run
/// SQL given as text (`query_to_xml('SELECT pan FROM cards', ...)`,
/// `ts_stat`, `ts_rewrite`) or read a table, schema or database named by a
/// value (`table_to_xml('cards', ...)`). They could read anything, so only
/// a read grant on every table (`*`) covers them.
const READS_ANY_TABLE: &[&str] = &[
    "query_to_xml",
    "query_to_xml_and_xmlschema",
    "query_to_xmlschema",
    "table_to_xml",
    "table_to_xml_and_xmlschema",
    "table_to_xmlschema",
    "schema_to_xml",
    "schema_to_xml_and_xmlschema",
    "schema_to_xmlschema",
    "database_to_xml",
    "database_to_xml_and_xmlschema",
    "database_to_xmlschema",
    "ts_stat",
    "ts_rewrite",
];

/// Schemas a `search_path` may always name: PostgreSQL searches both
/// first anyway (pg_temp holds only the session's own temporary tables).
const ALWAYS_SEARCHED: [&str; 2] = ["pg_catalog", "pg_temp"];

impl Rules {
    /// Decides on `statement` for a principal in `groups`. `groups` is
    /// called at most once, and only when the decision depends on them
    /// (so a BEGIN or a SET costs no fetch of the principal).
    pub fn judge<'g>(
        &self,
        statement: &Statement,
        groups: impl FnOnce() -> &'g [String],
    ) -> Decision {
        // What a name without a schema means rests on the search path: it
        // must stay within the schemas the rules assume, for everyone.
        if let Some(denial) = self.search_path_change(statement) {
            return denial;
        }
        let groups = LazyCell::new(groups);
        let grants = LazyCell::new(|| self.grants_of(*groups));
        let kind = statement.kind;

        if kind == StatementKind::Unparsed {
            return self.judge_unparsed(statement, *groups, &grants);
        }

        let default_kind = self.default_kinds.contains(&kind);
        if !default_kind && grants.is_empty() {
            return Decision::deny(
                RULE_NO_GRANT,
                format!(
                    "no grant applies to {}: only {} statements are allowed",
                    who(*groups),
                    self.default_kind_names()
                ),
            );
        }
        if !default_kind
            && !DATA_KINDS.contains(&kind)
            && !grants.iter().any(|grant| grant.kinds.contains(&kind))
        {
            return Decision::deny(
                RULE_KIND,
                format!(
                    "{} statements ({}) are not granted to {}",
                    kind.name(),
                    shown(&statement.command),
                    who(*groups)
                ),
            );
        }

        if let Some(function) = statement
            .functions
            .iter()
            .find(|f| f.builtin && READS_ANY_TABLE.contains(&f.name.as_str()))
            && !grants.iter().any(|grant| grant.reads_everything())
        {
            return Decision::deny(
                RULE_FUNCTION,
                format!(
                    "{}() reads tables named in its arguments, which sluice cannot check: \
                     only a grant to read every table (\"*\") allows it, and none applies to {}",
                    shown(&function.name),
                    who(*groups)
                ),
            );
        }

        for access in &statement.tables {
            if !self.covered(&grants, &access.table, access.action, Cardholder::Approve) {
                return Decision::deny(
                    RULE_TABLE,
                    format!(
                        "{} may not {} {}",
                        who(*groups),
                        access.action.name(),
                        shown(&access.table.qualified())
                    ),
                );
            }
        }

        self.judge_cardholder(statement, &grants)
    }

    /// An unparsed statement runs only when a grant names its command and
    /// it came alone: in a string of several, where it ends (and so what
    /// follows it) is not known for sure.
    fn judge_unparsed(
        &self,
        statement: &Statement,
        groups: &[String],
        grants: &[&Grant],
    ) -> Decision {
        let command = statement.command.as_str();
        let named = !command.is_empty()
            && grants
                .iter()
                .any(|grant| grant.unparsed.iter().any(|c| c == command));
        if named && !statement.is_multi {
            return Decision::Allow;
        }
        let what = if command.is_empty() {
            "this statement".to_owned()
        } else {
            format!("this {} statement", shown(command))
        };
        let reason = if named {
            format!(
                "sluice could not read {what}; it may run unread only when sent alone, \
                 not in a string with other statements"
            )
        } else {
            format!(
                "sluice could not read {what}, and no grant of {} lets it run unread",
                who(groups)
            )
        };
        Decision::deny(RULE_UNPARSED, reason)
    }

    /// Asks for approval when the statement touches a tagged column in a
    /// way no grant of the principal covers: reads that only send its
    /// values to the client as stored need a `cardholder = "as-stored"`
    /// grant (or better), any other touch `cardholder = "allow"`; allows
    /// otherwise.
    fn judge_cardholder<'r>(
        &'r self,
        statement: &Statement,
        // Lazy: a statement that touches no tagged column needs no grants.
        grants: &LazyCell<Vec<&'r Grant>, impl FnOnce() -> Vec<&'r Grant>>,
    ) -> Decision {
        if self.tags.is_empty() {
            return Decision::Allow;
        }
        // A PREPARE only stores the statement: it is judged again, with
        // approval, at each EXECUTE or Bind that runs it. Asking now would
        // make the approver answer twice for one run.
        if statement.wrappers.first() == Some(&Wrapper::Prepare) {
            return Decision::Allow;
        }
        // Functions whose bodies (or SQL text) sluice does not see may
        // read any table: they count as touching every tagged column.
        let mut opaque: Vec<Cow<str>> = Vec::new();
        for function in &statement.functions {
            if !function.builtin || READS_ANY_TABLE.contains(&function.name.as_str()) {
                let name = shown(&function.name);
                if !opaque.contains(&name) {
                    opaque.push(name);
                }
            }
        }

        // Views that show values of other tables' columns: the planner's
        // statistics (`histogram_bounds`, `most_common_vals` of cards.pan
        // are card numbers) and other sessions' statement text, the
        // catalog's or an extension's in whatever schema it went.
        let views = statement
            .tables
            .iter()
            .filter(|access| {
                let name = access.table.name.as_str();
                let in_catalog =
                    matches!(access.table.schema.as_deref(), None | Some(CATALOG_SCHEMA));
                (in_catalog && SHOWS_OTHER_TABLES_VALUES.contains(&name))
                    || EXTENSION_SHOWS_OTHER_TABLES_VALUES.contains(&name)
            })
            .map(|access| Cow::Borrowed(access.table.name.as_str()));
        let functions = statement
            .functions
            .iter()
            .filter(|f| f.builtin && SHOWS_OTHER_VALUES_FUNCTIONS.contains(&f.name.as_str()))
            .map(|f| Cow::Owned(format!("{}()", f.name)));
        let shows_other_values: Vec<Cow<str>> =
            views.chain(functions).fold(Vec::new(), |mut names, name| {
                if !names.contains(&name) {
                    names.push(name);
                }
                names
            });
        // Either may touch any tagged column, unseen.
        let unseen = !opaque.is_empty() || !shows_other_values.is_empty();

        let mut direct = Vec::new();
        let mut computed = Vec::new();
        let mut through_functions = Vec::new();
        for tag in &self.tags {
            let on_table: Vec<&TableAccess> = statement
                .tables
                .iter()
                .filter(|access| self.same_table(&access.table, &tag.table))
                .collect();
            let touch = self.touches(statement, tag, !on_table.is_empty());
            if touch.is_none() && !unseen {
                continue;
            }
            // What must be covered by grants whose `cardholder` reaches
            // the touch: each way the statement touches the tag's table,
            // and a read of it when a function may read it unseen. Only a
            // read that sends the values out as stored, with no function
            // reading unseen, is an as-stored touch.
            let mut needed: Vec<(&TableRef, TableAction)> = on_table
                .iter()
                .map(|access| (&access.table, access.action))
                .collect();
            // A value read in a write — its WHERE, its RETURNING, the
            // columns an ON CONFLICT compares — is a read all the same: a
            // grant to write card numbers is not one to read them back.
            let reads = unseen || matches!(touch, Some(Touch::AsStored | Touch::Computed));
            let read_needed = needed
                .iter()
                .any(|(_, action)| *action == TableAction::Read);
            if needed.is_empty() || reads && !read_needed {
                needed.push((&tag.table, TableAction::Read));
            }
            let as_stored = matches!(touch, Some(Touch::AsStored | Touch::Unread)) && !unseen;
            let exempt = needed.iter().all(|(table, action)| {
                let needs = if as_stored && *action == TableAction::Read {
                    Cardholder::AsStored
                } else {
                    Cardholder::Allow
                };
                self.covered(grants, table, *action, needs)
            });
            if !exempt {
                // A computed read that an as-stored grant would have let
                // through is told apart: the principal may read the
                // column, just not this way.
                let readable_as_stored = touch == Some(Touch::Computed)
                    && !unseen
                    && needed.iter().all(|(table, action)| {
                        *action == TableAction::Read
                            && self.covered(grants, table, *action, Cardholder::AsStored)
                    });
                if readable_as_stored {
                    computed.push(tag.shown.as_str());
                } else if touch.is_some() {
                    direct.push(tag.shown.as_str());
                } else {
                    through_functions.push(tag.shown.as_str());
                }
            }
        }
        if direct.is_empty() && computed.is_empty() && through_functions.is_empty() {
            return Decision::Allow;
        }
        let mut reason = String::new();
        if !direct.is_empty() {
            reason = format!("touches cardholder data: {}", direct.join(", "));
        }
        if !computed.is_empty() {
            if !reason.is_empty() {
                reason.push_str("; ");
            }
            reason.push_str(&format!(
                "uses cardholder data other than as stored (computed on, compared, or read in a subquery), which a grant allows only read as stored: {}",
                computed.join(", ")
            ));
        }
        if !through_functions.is_empty() {
            if !reason.is_empty() {
                reason.push_str("; ");
            }
            let mut unseen_by = Vec::new();
            if !opaque.is_empty() {
                unseen_by.push(format!(
                    "calls {}, whose body sluice cannot see",
                    opaque.join(", ")
                ));
            }
            if !shows_other_values.is_empty() {
                unseen_by.push(format!(
                    "reads {}, which shows values of other tables",
                    shows_other_values.join(", ")
                ));
            }
            reason.push_str(&format!(
                "{}, so it may touch cardholder data: {}",
                unseen_by.join(", and "),
                through_functions.join(", ")
            ));
        }
        Decision::require_approval(RULE_CARDHOLDER, reason, self.approver_group.clone())
    }

    /// How the statement touches the tagged column, if it does: by a
    /// column reference to its table, by an unresolved one of the same
    /// name when its table is among the statement's (`on_table`), or — for
    /// a whole-table tag — by touching the table at all. The touch is
    /// as-stored when every such reference is; a whole-table tag touched
    /// with no column read, as by `count(*)`, is touched unread. Setting a
    /// tagged column does not show what it holds: only reads count.
    fn touches(&self, statement: &Statement, tag: &ColumnTag, on_table: bool) -> Option<Touch> {
        let mut reads = statement.columns.iter().filter(|reference| {
            reference.access == ColumnAccess::Read && {
                // No column means every column of the table; a whole-table
                // tag means every column is tagged.
                let column_matches = match (&reference.column, &tag.column) {
                    (Some(named), Some(tagged)) => named == tagged,
                    _ => true,
                };
                let table_matches = match &reference.table {
                    Some(table) => self.same_table(table, &tag.table),
                    // Unresolved: possibly a column of any of the
                    // statement's tables.
                    None => on_table,
                };
                column_matches && table_matches
            }
        });
        let mut any = false;
        let all_as_stored = reads.all(|reference| {
            any = true;
            reference.as_stored
        });
        if any {
            return Some(if all_as_stored {
                Touch::AsStored
            } else {
                Touch::Computed
            });
        }
        (tag.column.is_none() && on_table).then_some(Touch::Unread)
    }

    /// The grants that apply to a principal in `groups`.
    fn grants_of(&self, groups: &[String]) -> Vec<&Grant> {
        self.grants
            .iter()
            .filter(|grant| grant.groups.iter().any(|g| groups.contains(g)))
            .collect()
    }

    /// Whether `grants` (only those whose `cardholder` reaches `needs`) let
    /// `action` on `table`. A table named without a schema could be in any
    /// default schema: it is covered only when it would be in each of them.
    fn covered(
        &self,
        grants: &[&Grant],
        table: &TableRef,
        action: TableAction,
        needs: Cardholder,
    ) -> bool {
        let schemas = self.schemas_of(table);
        !schemas.is_empty()
            && schemas.iter().all(|schema| {
                grants.iter().any(|grant| {
                    grant.cardholder >= needs
                        && grant.actions.contains(&action)
                        && grant
                            .tables
                            .iter()
                            .any(|p| p.matches(schema, &table.name, &self.default_schemas))
                })
            })
    }

    /// Whether `a` and `b` may be the same table.
    fn same_table(&self, a: &TableRef, b: &TableRef) -> bool {
        a.name == b.name && {
            let theirs = self.schemas_of(b);
            self.schemas_of(a).iter().any(|s| theirs.contains(s))
        }
    }

    /// The schemas `table` may be in. A name without a schema is looked up
    /// by PostgreSQL in pg_catalog first, then along the search path; every
    /// catalog table and view is named `pg_...`, so such a name is taken
    /// to be the catalog's (where `pg_authid` and `pg_stat_activity` live),
    /// and any other to be in a default schema.
    fn schemas_of<'a>(&'a self, table: &'a TableRef) -> &'a [String] {
        match &table.schema {
            Some(schema) => std::slice::from_ref(schema),
            None if table.name.starts_with("pg_") => &self.catalog,
            None => &self.default_schemas,
        }
    }

    /// Refuses a change of `search_path` to schemas other than the default
    /// ones, and calls of `set_config()` (which can change it unseen): a
    /// table named without a schema is judged as one of a default schema,
    /// so another search path would let `orders` mean `other.orders`.
    fn search_path_change(&self, statement: &Statement) -> Option<Decision> {
        let allowed = || {
            let mut names: Vec<&str> = self.default_schemas.iter().map(String::as_str).collect();
            names.extend(ALWAYS_SEARCHED);
            names.join(", ")
        };
        for setting in &statement.settings {
            // None for other settings, and for RESET or DEFAULT: back to
            // the server's own path.
            let Some(schemas) = setting.search_path() else {
                continue;
            };
            let outside = schemas.iter().any(|schema| {
                !self.default_schemas.contains(schema)
                    && !ALWAYS_SEARCHED.contains(&schema.as_str())
            });
            if outside {
                return Some(Decision::deny(
                    RULE_SEARCH_PATH,
                    format!(
                        "search_path may name only {}: access rules read a table named without \
                         a schema as one of those; name other schemas' tables with their schema",
                        allowed()
                    ),
                ));
            }
        }
        if statement
            .functions
            .iter()
            .any(|f| f.builtin && f.name == "set_config")
        {
            return Some(Decision::deny(
                RULE_SEARCH_PATH,
                "set_config() can change search_path unseen, and with it which table a name \
                 without a schema means; change settings with SET",
            ));
        }
        None
    }

    fn default_kind_names(&self) -> String {
        if self.default_kinds.is_empty() {
            return "no".to_owned();
        }
        self.default_kinds
            .iter()
            .map(|kind| kind.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Whom a reason speaks of: the principal's groups.
fn who(groups: &[String]) -> String {
    if groups.is_empty() {
        "a principal in no group".to_owned()
    } else {
        format!("groups {}", groups.join(", "))
    }
}

/// A name from the statement, fit for a reason. Names are not values, but a
/// quoted identifier can hold anything and reasons reach the client and the
/// audit trail: a name with as many digits as a card number has them
/// hidden.
fn shown(name: &str) -> Cow<'_, str> {
    if name.chars().filter(char::is_ascii_digit).count() < 12 {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(
            name.chars()
                .map(|c| if c.is_ascii_digit() { '#' } else { c })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use sluice_plugin::types::{ColumnRef, FunctionRef, SettingChange};

    /// The README's example rules.
    const EXAMPLE: &str = r#"
[cardholder]
columns = ["cards.pan", "payments.card_number"]
approver_group = "security"

[[grant]]
groups = ["agents"]
tables = ["customers", "orders", "cards"]
actions = ["read"]

[[grant]]
groups = ["agents"]
tables = ["orders"]
actions = ["insert", "update", "delete"]

[[grant]]
groups = ["analysts"]
tables = ["*"]
actions = ["read"]
cardholder = "allow"
kinds = ["notification"]

[[grant]]
groups = ["admins"]
tables = ["*"]
actions = ["read", "insert", "update", "delete", "truncate", "define", "maintain"]
cardholder = "allow"
kinds = ["ddl", "utility", "notification"]
unparsed = ["VACUUM", "ANALYZE"]
"#;

    fn example() -> Rules {
        Rules::parse(vec!["public".into()], EXAMPLE).expect("the example rules are valid")
    }

    fn judge_with(rules: &Rules, groups: &[&str], statement: &Statement) -> Decision {
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        rules.judge(statement, || &groups)
    }

    fn judge(groups: &[&str], statement: &Statement) -> Decision {
        judge_with(&example(), groups, statement)
    }

    /// `name` or `schema.name`.
    fn table(name: &str) -> TableRef {
        match name.split_once('.') {
            Some((schema, name)) => TableRef {
                schema: Some(schema.into()),
                name: name.into(),
            },
            None => TableRef {
                schema: None,
                name: name.into(),
            },
        }
    }

    fn access(name: &str, action: TableAction) -> TableAccess {
        TableAccess {
            table: table(name),
            action,
        }
    }

    /// A column of `table` (none: unresolved), read other than as stored;
    /// `column` none is every column.
    fn column(table_name: Option<&str>, column: Option<&str>) -> ColumnRef {
        ColumnRef {
            table: table_name.map(table),
            column: column.map(str::to_owned),
            access: ColumnAccess::Read,
            as_stored: false,
        }
    }

    /// A column read as stored: selected bare.
    fn stored(table_name: Option<&str>, column_name: Option<&str>) -> ColumnRef {
        ColumnRef {
            as_stored: true,
            ..column(table_name, column_name)
        }
    }

    /// A column written (INSERT's list, UPDATE's SET).
    fn written(table_name: Option<&str>, column_name: Option<&str>) -> ColumnRef {
        ColumnRef {
            access: ColumnAccess::Write,
            ..column(table_name, column_name)
        }
    }

    /// A SELECT reading `tables`, naming `columns`.
    fn select(tables: &[&str], columns: Vec<ColumnRef>) -> Statement {
        Statement {
            tables: tables
                .iter()
                .map(|t| access(t, TableAction::Read))
                .collect(),
            columns,
            ..Statement::new(StatementKind::Select, "SELECT ...")
        }
    }

    /// A statement of `kind` doing `action` to `table`.
    fn write(kind: StatementKind, action: TableAction, table_name: &str) -> Statement {
        Statement {
            tables: vec![access(table_name, action)],
            ..Statement::new(kind, "...")
        }
    }

    fn unparsed(command: &str, is_multi: bool) -> Statement {
        Statement {
            command: command.into(),
            is_multi,
            ..Statement::new(StatementKind::Unparsed, "...")
        }
    }

    fn function(name: &str, builtin: bool) -> FunctionRef {
        FunctionRef {
            schema: None,
            name: name.into(),
            builtin,
        }
    }

    fn approval(reason: &str) -> Decision {
        Decision::require_approval(RULE_CARDHOLDER, reason, "security")
    }

    /// The rule of a denial, or a panic naming what was decided instead.
    fn denied_by(decision: Decision) -> String {
        match decision {
            Decision::Deny(denial) => denial.rule,
            other => panic!("expected a denial, got {other:?}"),
        }
    }

    #[test]
    fn agents_read_their_tables() {
        let orders = select(&["orders"], vec![column(Some("orders"), Some("total"))]);
        assert_eq!(judge(&["agents"], &orders), Decision::Allow);
        let holder = select(&["cards"], vec![column(Some("cards"), Some("holder"))]);
        assert_eq!(judge(&["agents"], &holder), Decision::Allow);
        // Reading a table no grant names is refused, by the table rule.
        let secrets = select(&["secrets"], vec![]);
        assert_eq!(
            judge(&["agents"], &secrets),
            Decision::deny(RULE_TABLE, "groups agents may not read secrets")
        );
    }

    #[test]
    fn agents_reading_a_tagged_column_need_approval() {
        let pan = select(&["cards"], vec![column(Some("cards"), Some("pan"))]);
        assert_eq!(
            judge(&["agents"], &pan),
            approval("touches cardholder data: cards.pan")
        );
        // SELECT * (every column of cards).
        let star = select(&["cards"], vec![column(Some("cards"), None)]);
        assert_eq!(
            judge(&["agents"], &star),
            approval("touches cardholder data: cards.pan")
        );
        // Setting a tagged column shows nothing: no approval.
        let set_pan = Statement {
            tables: vec![access("cards", TableAction::Update)],
            columns: vec![ColumnRef {
                access: ColumnAccess::Write,
                ..column(Some("cards"), Some("pan"))
            }],
            ..Statement::new(StatementKind::Update, "UPDATE cards SET pan = ...")
        };
        let writer = Rules::parse(
            vec!["public".into()],
            "[cardholder]\ncolumns = [\"cards.pan\"]\napprover_group = \"security\"\n\
             [[grant]]\ngroups = [\"agents\"]\ntables = [\"cards\"]\nactions = [\"update\"]\n",
        )
        .expect("valid");
        assert_eq!(judge_with(&writer, &["agents"], &set_pan), Decision::Allow);
        // An unresolved `pan` in a query over cards and orders.
        let unresolved = select(&["orders", "cards"], vec![column(None, Some("pan"))]);
        assert_eq!(
            judge(&["agents"], &unresolved),
            approval("touches cardholder data: cards.pan")
        );
        // The same unresolved name over tables without the tag is fine.
        let elsewhere = select(&["orders", "customers"], vec![column(None, Some("pan"))]);
        assert_eq!(judge(&["agents"], &elsewhere), Decision::Allow);
        // A tagged column of another schema's table of the same name is not
        // the tagged one (and that table is not granted either).
        let other_schema = select(
            &["archive.cards"],
            vec![column(Some("archive.cards"), Some("pan"))],
        );
        assert_eq!(denied_by(judge(&["agents"], &other_schema)), RULE_TABLE);
        // public.cards is the tagged table when public is a default schema.
        let qualified = select(
            &["public.cards"],
            vec![column(Some("public.cards"), Some("pan"))],
        );
        assert_eq!(
            judge(&["agents"], &qualified),
            approval("touches cardholder data: cards.pan")
        );
    }

    #[test]
    fn a_function_that_is_not_built_in_counts_as_reading_every_tag() {
        let call = Statement {
            functions: vec![function("lookup", false), function("lower", true)],
            ..select(&["orders"], vec![column(Some("orders"), Some("id"))])
        };
        assert_eq!(
            judge(&["agents"], &call),
            approval(
                "calls lookup, whose body sluice cannot see, so it may touch cardholder data: \
                 cards.pan, payments.card_number"
            )
        );
        // Built-in functions read nothing unseen.
        let builtin = Statement {
            functions: vec![function("lower", true)],
            ..select(&["orders"], vec![])
        };
        assert_eq!(judge(&["agents"], &builtin), Decision::Allow);
        // Analysts may read tagged data anywhere, so the function is fine.
        assert_eq!(judge(&["analysts"], &call), Decision::Allow);
    }

    #[test]
    fn agents_write_only_what_they_are_granted() {
        let delete_orders = write(StatementKind::Delete, TableAction::Delete, "orders");
        assert_eq!(judge(&["agents"], &delete_orders), Decision::Allow);
        let delete_cards = write(StatementKind::Delete, TableAction::Delete, "cards");
        assert_eq!(
            judge(&["agents"], &delete_cards),
            Decision::deny(RULE_TABLE, "groups agents may not delete cards")
        );
        let insert_customers = write(StatementKind::Insert, TableAction::Insert, "customers");
        assert_eq!(
            judge(&["agents"], &insert_customers),
            Decision::deny(RULE_TABLE, "groups agents may not insert customers")
        );
        // WITH d AS (DELETE FROM cards RETURNING id) SELECT * FROM orders:
        // a select, but it deletes.
        let cte = Statement {
            tables: vec![
                access("orders", TableAction::Read),
                access("cards", TableAction::Delete),
            ],
            ..Statement::new(StatementKind::Select, "WITH ...")
        };
        assert_eq!(
            judge(&["agents"], &cte),
            Decision::deny(RULE_TABLE, "groups agents may not delete cards")
        );
        // TRUNCATE is ddl: refused by kind before its table is looked at.
        let truncate = write(StatementKind::Ddl, TableAction::Truncate, "orders");
        assert_eq!(denied_by(judge(&["agents"], &truncate)), RULE_KIND);
        // Even with the kind granted, the table action must be too.
        let rules = Rules::parse(
            vec!["public".into()],
            "[[grant]]\ngroups = [\"agents\"]\ntables = [\"orders\"]\nactions = [\"read\"]\nkinds = [\"ddl\"]\n",
        )
        .expect("valid");
        assert_eq!(
            judge_with(&rules, &["agents"], &truncate),
            Decision::deny(RULE_TABLE, "groups agents may not truncate orders")
        );
    }

    #[test]
    fn deny_wins_over_approval() {
        // Reads cards.pan (approval) and deletes cards (refused).
        let statement = Statement {
            tables: vec![
                access("cards", TableAction::Read),
                access("cards", TableAction::Delete),
            ],
            columns: vec![column(Some("cards"), Some("pan"))],
            ..Statement::new(StatementKind::Delete, "DELETE ...")
        };
        assert_eq!(denied_by(judge(&["agents"], &statement)), RULE_TABLE);
    }

    #[test]
    fn kinds_beyond_data_need_a_grant() {
        let ddl = Statement::new(StatementKind::Ddl, "CREATE SCHEMA s");
        assert_eq!(
            judge(&["agents"], &ddl),
            Decision::deny(
                RULE_KIND,
                "ddl statements (CREATE) are not granted to groups agents"
            )
        );
        assert_eq!(judge(&["admins"], &ddl), Decision::Allow);
        let listen = Statement::new(StatementKind::Notification, "LISTEN jobs");
        assert_eq!(judge(&["analysts"], &listen), Decision::Allow);
        assert_eq!(denied_by(judge(&["agents"], &listen)), RULE_KIND);
        let privilege = Statement::new(StatementKind::Privilege, "SET ROLE postgres");
        assert_eq!(denied_by(judge(&["admins"], &privilege)), RULE_KIND);
    }

    #[test]
    fn analysts_read_everything_and_write_nothing() {
        let pan = select(&["cards"], vec![column(Some("cards"), Some("pan"))]);
        assert_eq!(judge(&["analysts"], &pan), Decision::Allow);
        let anywhere = select(&["billing.invoices"], vec![]);
        assert_eq!(judge(&["analysts"], &anywhere), Decision::Allow);
        let update = write(StatementKind::Update, TableAction::Update, "orders");
        assert_eq!(
            judge(&["analysts"], &update),
            Decision::deny(RULE_TABLE, "groups analysts may not update orders")
        );
    }

    #[test]
    fn unparsed_statements_run_only_by_name_and_alone() {
        assert_eq!(
            judge(&["admins"], &unparsed("VACUUM", false)),
            Decision::Allow
        );
        assert_eq!(
            judge(&["admins"], &unparsed("VACUUM", true)),
            Decision::deny(
                RULE_UNPARSED,
                "sluice could not read this VACUUM statement; it may run unread only when \
                 sent alone, not in a string with other statements"
            )
        );
        assert_eq!(
            judge(&["admins"], &unparsed("DO", false)),
            Decision::deny(
                RULE_UNPARSED,
                "sluice could not read this DO statement, and no grant of groups admins \
                 lets it run unread"
            )
        );
        assert_eq!(
            denied_by(judge(&["admins"], &unparsed("", false))),
            RULE_UNPARSED
        );
        assert_eq!(
            denied_by(judge(&["agents"], &unparsed("VACUUM", false))),
            RULE_UNPARSED
        );
        // Only the commands named run unread.
        assert_eq!(
            denied_by(judge(&["admins"], &unparsed("REINDEX", false))),
            RULE_UNPARSED
        );
    }

    #[test]
    fn schemas_match_as_the_search_path_resolves() {
        let rules = Rules::parse(
            vec!["public".into()],
            r#"
[[grant]]
groups = ["agents"]
tables = ["public.orders", "reports.*", "customers"]
actions = ["read"]
"#,
        )
        .expect("valid");
        let reads = |name: &str| judge_with(&rules, &["agents"], &select(&[name], vec![]));
        // public.orders covers orders named with and without its schema.
        assert_eq!(reads("public.orders"), Decision::Allow);
        assert_eq!(reads("orders"), Decision::Allow);
        assert_eq!(
            reads("other.orders"),
            Decision::deny(RULE_TABLE, "groups agents may not read other.orders")
        );
        // reports.* covers the schema's tables, but not a name without a
        // schema: reports is not a default schema.
        assert_eq!(reads("reports.daily"), Decision::Allow);
        assert_eq!(denied_by(reads("daily")), RULE_TABLE);
        // A pattern without a schema means a default schema.
        assert_eq!(reads("customers"), Decision::Allow);
        assert_eq!(reads("public.customers"), Decision::Allow);
        assert_eq!(denied_by(reads("other.customers")), RULE_TABLE);
        // Names compare exactly: a quoted "Orders" is another table.
        assert_eq!(denied_by(reads("Orders")), RULE_TABLE);
    }

    #[test]
    fn a_name_without_a_schema_must_be_covered_in_every_default_schema() {
        let text = r#"
[[grant]]
groups = ["agents"]
tables = ["public.orders", "app.*", "customers"]
actions = ["read"]
"#;
        let rules = Rules::parse(vec!["app".into(), "public".into()], text).expect("valid");
        let reads = |name: &str| judge_with(&rules, &["agents"], &select(&[name], vec![]));
        // orders could be app.orders (covered by app.*) or public.orders.
        assert_eq!(reads("orders"), Decision::Allow);
        // invoices could be public.invoices, which nothing covers.
        assert_eq!(denied_by(reads("invoices")), RULE_TABLE);
        assert_eq!(reads("app.invoices"), Decision::Allow);
        assert_eq!(reads("customers"), Decision::Allow);
        // `s.*` covers names without a schema when s is the only default.
        let rules = Rules::parse(
            vec!["app".into()],
            "[[grant]]\ngroups = [\"agents\"]\ntables = [\"app.*\"]\nactions = [\"read\"]\n",
        )
        .expect("valid");
        assert_eq!(
            judge_with(&rules, &["agents"], &select(&["invoices"], vec![])),
            Decision::Allow
        );
    }

    #[test]
    fn catalog_names_without_a_schema_are_the_catalogs() {
        let rules = Rules::parse(
            vec!["public".into()],
            r#"
[[grant]]
groups = ["agents"]
tables = ["public.*"]
actions = ["read"]

[[grant]]
groups = ["drivers"]
tables = ["pg_catalog.pg_type"]
actions = ["read"]
"#,
        )
        .expect("valid");
        // public.* does not reach pg_catalog.pg_authid through a bare name.
        assert_eq!(
            judge_with(&rules, &["agents"], &select(&["pg_authid"], vec![])),
            Decision::deny(RULE_TABLE, "groups agents may not read pg_authid")
        );
        assert_eq!(
            judge_with(&rules, &["agents"], &select(&["orders"], vec![])),
            Decision::Allow
        );
        assert_eq!(
            judge_with(&rules, &["drivers"], &select(&["pg_type"], vec![])),
            Decision::Allow
        );
        assert_eq!(
            judge_with(
                &rules,
                &["drivers"],
                &select(&["pg_catalog.pg_type"], vec![])
            ),
            Decision::Allow
        );
    }

    #[test]
    fn without_a_grant_only_default_kinds_run() {
        for groups in [&["visitors"][..], &[]] {
            let orders = select(&["orders"], vec![]);
            assert_eq!(denied_by(judge(groups, &orders)), RULE_NO_GRANT);
            let constant = Statement::new(StatementKind::Select, "SELECT 1");
            assert_eq!(denied_by(judge(groups, &constant)), RULE_NO_GRANT);
            for kind in [
                StatementKind::Transaction,
                StatementKind::Setting,
                StatementKind::Prepared,
            ] {
                assert_eq!(judge(groups, &Statement::new(kind, "x")), Decision::Allow);
            }
        }
        assert_eq!(
            judge(
                &[],
                &Statement::new(StatementKind::Ddl, "DROP TABLE orders")
            ),
            Decision::deny(
                RULE_NO_GRANT,
                "no grant applies to a principal in no group: only transaction, setting, \
                 prepared statements are allowed"
            )
        );
    }

    #[test]
    fn default_kinds_are_configurable() {
        let rules = Rules::parse(
            vec!["public".into()],
            "[defaults]\nkinds = [\"transaction\", \"other\"]\n",
        )
        .expect("valid");
        let run = |kind| judge_with(&rules, &["anyone"], &Statement::new(kind, "x"));
        assert_eq!(run(StatementKind::Transaction), Decision::Allow);
        assert_eq!(run(StatementKind::Other), Decision::Allow);
        assert_eq!(denied_by(run(StatementKind::Setting)), RULE_NO_GRANT);
    }

    #[test]
    fn default_kinds_do_not_fetch_the_principal() {
        let rules = example();
        let begin = Statement::new(StatementKind::Transaction, "BEGIN");
        let decision = rules.judge(&begin, || panic!("the groups were not needed"));
        assert_eq!(decision, Decision::Allow);
    }

    #[test]
    fn groups_add_up() {
        // Agents may delete orders, analysts may read tagged data: one
        // principal in both may do both in one statement.
        let statement = Statement {
            tables: vec![
                access("orders", TableAction::Delete),
                access("cards", TableAction::Read),
            ],
            columns: vec![column(Some("cards"), Some("pan"))],
            ..Statement::new(StatementKind::Delete, "DELETE ... USING cards")
        };
        assert_eq!(judge(&["agents", "analysts"], &statement), Decision::Allow);
        assert_eq!(denied_by(judge(&["analysts"], &statement)), RULE_TABLE);
        assert_eq!(
            judge(&["agents"], &statement),
            approval("touches cardholder data: cards.pan")
        );
        // A group with no grants takes nothing away.
        assert_eq!(judge(&["visitors", "admins"], &statement), Decision::Allow);
    }

    #[test]
    fn cardholder_allow_covers_only_its_own_actions() {
        let rules = Rules::parse(
            vec!["public".into()],
            r#"
[cardholder]
columns = ["cards.pan"]
approver_group = "security"

[[grant]]
groups = ["loaders"]
tables = ["cards"]
actions = ["insert"]
cardholder = "allow"

[[grant]]
groups = ["loaders"]
tables = ["cards"]
actions = ["read"]
"#,
        )
        .expect("valid");
        let written = written(Some("cards"), Some("pan"));
        let insert = Statement {
            tables: vec![access("cards", TableAction::Insert)],
            columns: vec![written.clone()],
            ..Statement::new(StatementKind::Insert, "INSERT ...")
        };
        assert_eq!(judge_with(&rules, &["loaders"], &insert), Decision::Allow);
        let read = select(&["cards"], vec![column(Some("cards"), Some("pan"))]);
        assert_eq!(
            judge_with(&rules, &["loaders"], &read),
            approval("touches cardholder data: cards.pan")
        );
        // A read inside the write is a read: RETURNING pan (unresolved, as
        // the analysis finds it), ON CONFLICT (pan), whose outcome says
        // whether the number is stored, the whole row an ON CONFLICT with
        // no column list compares.
        for read in [
            column(None, Some("pan")),
            column(Some("cards"), Some("pan")),
            column(Some("cards"), None),
        ] {
            let reading = Statement {
                columns: vec![written.clone(), read.clone()],
                ..insert.clone()
            };
            assert_eq!(
                judge_with(&rules, &["loaders"], &reading),
                approval("touches cardholder data: cards.pan"),
                "{read:?}"
            );
        }
        // With a grant to read card numbers too, it runs.
        let readers = Rules::parse(
            vec!["public".into()],
            r#"
[cardholder]
columns = ["cards.pan"]
approver_group = "security"

[[grant]]
groups = ["loaders"]
tables = ["cards"]
actions = ["insert", "read"]
cardholder = "allow"
"#,
        )
        .expect("valid");
        let conflict = Statement {
            columns: vec![written, column(Some("cards"), Some("pan"))],
            ..insert
        };
        assert_eq!(
            judge_with(&readers, &["loaders"], &conflict),
            Decision::Allow
        );
    }

    /// A grant to change or delete card data with `cardholder = "allow"`
    /// is not one to read it: `WHERE pan = ...` answers whether a number
    /// is stored, `RETURNING pan` shows it.
    #[test]
    fn reads_in_updates_and_deletes_need_a_read_grant() {
        let rules = Rules::parse(
            vec!["public".into()],
            r#"
[cardholder]
columns = ["cards.pan"]
approver_group = "security"

[[grant]]
groups = ["keepers"]
tables = ["cards"]
actions = ["read", "update", "delete"]

[[grant]]
groups = ["keepers"]
tables = ["cards"]
actions = ["update", "delete"]
cardholder = "allow"
"#,
        )
        .expect("valid");
        let written = written(Some("cards"), Some("pan"));
        let update = Statement {
            tables: vec![access("cards", TableAction::Update)],
            columns: vec![written, column(Some("cards"), Some("id"))],
            ..Statement::new(
                StatementKind::Update,
                "UPDATE cards SET pan = ... WHERE id = 1",
            )
        };
        assert_eq!(judge_with(&rules, &["keepers"], &update), Decision::Allow);
        for (kind, action) in [
            (StatementKind::Update, TableAction::Update),
            (StatementKind::Delete, TableAction::Delete),
        ] {
            let reading = Statement {
                tables: vec![access("cards", action)],
                columns: vec![column(Some("cards"), Some("pan"))],
                ..Statement::new(kind, "... WHERE pan = '4111111111111111' RETURNING pan")
            };
            assert_eq!(
                judge_with(&rules, &["keepers"], &reading),
                approval("touches cardholder data: cards.pan"),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn whole_table_tags_cover_every_access() {
        let rules = Rules::parse(
            vec!["public".into()],
            r#"
[cardholder]
columns = ["vault.*"]
approver_group = "security"

[[grant]]
groups = ["agents"]
tables = ["vault", "orders"]
actions = ["read", "delete"]
"#,
        )
        .expect("valid");
        let count = select(&["vault"], vec![]);
        assert_eq!(
            judge_with(&rules, &["agents"], &count),
            approval("touches cardholder data: vault.*")
        );
        let delete = write(StatementKind::Delete, TableAction::Delete, "vault");
        assert_eq!(
            judge_with(&rules, &["agents"], &delete),
            approval("touches cardholder data: vault.*")
        );
        let orders = select(&["orders"], vec![column(None, Some("pan"))]);
        assert_eq!(judge_with(&rules, &["agents"], &orders), Decision::Allow);
    }

    #[test]
    fn a_prepare_waits_for_its_execute_to_ask() {
        let pan = select(&["cards"], vec![column(Some("cards"), Some("pan"))]);
        let prepare = Statement {
            wrappers: vec![Wrapper::Prepare],
            ..pan.clone()
        };
        assert_eq!(judge(&["agents"], &prepare), Decision::Allow);
        let execute = Statement {
            wrappers: vec![Wrapper::Execute],
            ..pan.clone()
        };
        assert_eq!(
            judge(&["agents"], &execute),
            approval("touches cardholder data: cards.pan")
        );
        // EXPLAIN's estimates tell about the data: it asks like the query.
        let explain = Statement {
            wrappers: vec![Wrapper::Explain],
            ..pan
        };
        assert_eq!(
            judge(&["agents"], &explain),
            approval("touches cardholder data: cards.pan")
        );
        // A PREPARE of what the principal may never run fails at once.
        let prepare_delete = Statement {
            wrappers: vec![Wrapper::Prepare],
            ..write(StatementKind::Delete, TableAction::Delete, "cards")
        };
        assert_eq!(denied_by(judge(&["agents"], &prepare_delete)), RULE_TABLE);
    }

    #[test]
    fn functions_that_read_tables_by_name_need_every_table() {
        let statement = Statement {
            functions: vec![function("query_to_xml", true)],
            ..Statement::new(StatementKind::Select, "SELECT query_to_xml(...)")
        };
        assert_eq!(denied_by(judge(&["agents"], &statement)), RULE_FUNCTION);
        // Analysts read every table, tagged columns included.
        assert_eq!(judge(&["analysts"], &statement), Decision::Allow);
        // Read on every table without cardholder = "allow" asks.
        let rules = Rules::parse(
            vec!["public".into()],
            r#"
[cardholder]
columns = ["cards.pan"]
approver_group = "security"

[[grant]]
groups = ["readers"]
tables = ["*"]
actions = ["read"]
"#,
        )
        .expect("valid");
        assert_eq!(
            judge_with(&rules, &["readers"], &statement),
            approval(
                "calls query_to_xml, whose body sluice cannot see, so it may touch cardholder \
                 data: cards.pan"
            )
        );
    }

    #[test]
    fn search_path_stays_within_the_default_schemas() {
        let set = |value: Option<&str>| Statement {
            settings: vec![SettingChange {
                name: "search_path".into(),
                value: value.map(str::to_owned),
            }],
            ..Statement::new(StatementKind::Setting, "SET search_path ...")
        };
        for value in [
            Some("public"),
            Some("public, pg_catalog"),
            Some("\"public\", pg_temp"),
            Some("PUBLIC"),
            Some(""),
            None,
        ] {
            assert_eq!(
                judge(&["agents"], &set(value)),
                Decision::Allow,
                "{value:?}"
            );
        }
        for value in ["evil, public", "\"Public\"", "\"$user\", public"] {
            let decision = judge(&["admins"], &set(Some(value)));
            assert_eq!(
                decision,
                Decision::deny(
                    RULE_SEARCH_PATH,
                    "search_path may name only public, pg_catalog, pg_temp: access rules read a \
                     table named without a schema as one of those; name other schemas' tables \
                     with their schema"
                ),
                "{value}"
            );
        }
        let set_config = Statement {
            functions: vec![function("set_config", true)],
            ..Statement::new(StatementKind::Select, "SELECT set_config(...)")
        };
        assert_eq!(denied_by(judge(&["admins"], &set_config)), RULE_SEARCH_PATH);
        // A function of the same name that is not built in is not set_config.
        let own = Statement {
            functions: vec![function("set_config", false)],
            ..Statement::new(StatementKind::Select, "SELECT app.set_config()")
        };
        assert_eq!(judge(&["admins"], &own), Decision::Allow);
    }

    #[test]
    fn reasons_hide_names_as_long_as_card_numbers() {
        let statement = select(&["4111111111111111"], vec![]);
        assert_eq!(
            judge(&["agents"], &statement),
            Decision::deny(RULE_TABLE, "groups agents may not read ################")
        );
        assert_eq!(shown("orders_2024"), "orders_2024");
    }

    #[test]
    fn an_as_stored_grant_covers_only_reads_that_send_values_out_as_stored() {
        let rules = Rules::parse(
            vec!["public".into()],
            r#"
[cardholder]
columns = ["cards.pan", "vault.*"]
approver_group = "security"

[[grant]]
groups = ["support"]
tables = ["cards", "vault", "orders"]
actions = ["read"]
cardholder = "as-stored"

[[grant]]
groups = ["support"]
tables = ["cards"]
actions = ["update"]
cardholder = "as-stored"
"#,
        )
        .expect("valid rules");
        let support = |statement: &Statement| judge_with(&rules, &["support"], statement);

        // SELECT id, pan FROM cards; SELECT * FROM cards; unresolved but
        // bare; a whole tagged table read as stored, or only counted.
        for columns in [
            vec![
                stored(Some("cards"), Some("id")),
                stored(Some("cards"), Some("pan")),
            ],
            vec![stored(Some("cards"), None)],
            vec![stored(None, Some("pan"))],
        ] {
            assert_eq!(support(&select(&["cards"], columns)), Decision::Allow);
        }
        assert_eq!(
            support(&select(&["vault"], vec![stored(Some("vault"), None)])),
            Decision::Allow
        );
        assert_eq!(support(&select(&["vault"], vec![])), Decision::Allow);

        // pan || 'x', WHERE pan = ..., an unresolved pan compared: each a
        // read the masker could not see whole, so it asks.
        let computed = "uses cardholder data other than as stored (computed on, compared, or read in a subquery), which a grant allows only read as stored: cards.pan";
        for columns in [
            vec![column(Some("cards"), Some("pan"))],
            vec![
                stored(Some("cards"), Some("id")),
                column(Some("cards"), Some("pan")),
            ],
            vec![stored(Some("cards"), Some("id")), column(None, Some("pan"))],
            vec![column(Some("cards"), None)],
        ] {
            assert_eq!(support(&select(&["cards"], columns)), approval(computed));
        }
        assert_eq!(
            support(&select(
                &["vault"],
                vec![column(Some("vault"), Some("secret"))]
            )),
            Decision::require_approval(
                RULE_CARDHOLDER,
                computed.replace("cards.pan", "vault.*"),
                "security".to_owned()
            )
        );

        // A function sluice cannot see into may read pan any way it likes.
        let opaque = Statement {
            functions: vec![FunctionRef {
                schema: Some("app".into()),
                name: "lookup".into(),
                builtin: false,
            }],
            ..select(&["orders"], vec![stored(Some("orders"), Some("id"))])
        };
        assert_eq!(
            support(&opaque),
            approval(
                "calls lookup, whose body sluice cannot see, so it may touch cardholder data: \
                 cards.pan, vault.*"
            )
        );

        // Touching the tagged table other than by reading it is beyond an
        // as-stored grant: an UPDATE of cards ... RETURNING pan.
        let returning = Statement {
            tables: vec![access("cards", TableAction::Update)],
            columns: vec![stored(Some("cards"), Some("pan"))],
            ..Statement::new(StatementKind::Update, "UPDATE ...")
        };
        assert_eq!(
            support(&returning),
            approval("touches cardholder data: cards.pan")
        );

        // The planner's statistics show cards.pan's most common values.
        let stats = Statement {
            tables: vec![TableAccess {
                table: TableRef {
                    schema: Some("pg_catalog".into()),
                    name: "pg_stats".into(),
                },
                action: TableAction::Read,
            }],
            ..select(&[], vec![stored(None, Some("histogram_bounds"))])
        };
        let everything = support_reads_everything_as_stored();
        assert_eq!(
            judge_with(&everything, &["support"], &stats),
            approval(
                "reads pg_stats, which shows values of other tables, so it may touch \
                 cardholder data: cards.pan"
            )
        );

        // So do a cursor's rows, read as stored when it was declared, and
        // other sessions' statements, handed out by built-in functions.
        for name in ["cursor_to_xml", "pg_stat_get_activity"] {
            let call = Statement {
                functions: vec![function(name, true)],
                ..select(&[], vec![])
            };
            assert_eq!(
                judge_with(&everything, &["support"], &call),
                approval(&format!(
                    "reads {name}(), which shows values of other tables, so it may touch \
                     cardholder data: cards.pan"
                ))
            );
        }

        // A grant with no cardholder level covers no touch at all.
        assert_eq!(
            judge(
                &["agents"],
                &select(&["cards"], vec![stored(Some("cards"), Some("pan"))])
            ),
            approval("touches cardholder data: cards.pan")
        );
    }

    /// Rules where `support` reads every table, cardholder data as stored.
    fn support_reads_everything_as_stored() -> Rules {
        Rules::parse(
            vec!["public".into()],
            "[cardholder]\ncolumns = [\"cards.pan\"]\napprover_group = \"security\"\n\
             [[grant]]\ngroups = [\"support\"]\ntables = [\"*\"]\nactions = [\"read\"]\n\
             cardholder = \"as-stored\"\n",
        )
        .expect("valid rules")
    }

    /// pg_stat_statements is an extension's view, made in whatever schema
    /// the extension was created in: read from any, it shows other
    /// sessions' statements, the values in them included.
    #[test]
    fn pg_stat_statements_in_any_schema_may_touch_cardholder_data() {
        let everything = support_reads_everything_as_stored();
        // SELECT translate(query, '0123456789', 'abcdefghij') FROM
        // public.pg_stat_statements, and the like.
        for view in [
            "pg_stat_statements",
            "pg_catalog.pg_stat_statements",
            "public.pg_stat_statements",
            "extensions.pg_stat_statements",
        ] {
            let statement = select(&[view], vec![column(Some(view), Some("query"))]);
            assert_eq!(
                judge_with(&everything, &["support"], &statement),
                approval(
                    "reads pg_stat_statements, which shows values of other tables, so it may \
                     touch cardholder data: cards.pan"
                ),
                "{view}"
            );
        }
        // The catalog's own views live in pg_catalog alone: an
        // application's table named pg_stats elsewhere is just a table.
        let own = select(
            &["public.pg_stats"],
            vec![stored(Some("public.pg_stats"), Some("note"))],
        );
        assert_eq!(judge_with(&everything, &["support"], &own), Decision::Allow);
    }
}
