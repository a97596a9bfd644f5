//! One parsed statement, summarised: its kind and command, and — through
//! the walker — what it touches.

use sqlparser::ast::{
    Assignment, AssignmentTarget, ConflictTarget, CopySource, CopyTarget, Expr, FromTable,
    MergeAction, OnConflictAction, OnInsert, OutputClause, Reset, Set, Statement as Ast,
    TableFactor, TableObject, UpdateTableFromKind, UtilityOption, Value, Visit,
};

use super::lexer::Token;
use super::walk::{Copied, SetConfigCall, Walker, fold, table_ref};
use super::where_clause::{self, Target};
use super::{CursorUse, Effect, Facts};
use crate::plugin::bindings::types::{
    CopyEndpoint, SettingChange, StatementKind, TableAction, TableRef, Wrapper,
};

/// Summarises one parsed statement; `tokens` are its source's, for the
/// command names sqlparser's tree does not keep.
pub fn summarise(ast: &Ast, tokens: &[Token]) -> Facts {
    let mut facts = Facts::new(StatementKind::Other, String::new());
    let mut walker = Walker::default();
    describe(ast, tokens, &mut facts, &mut walker);
    facts.has_where = !walker.bulk_write;
    facts.touched = walker.touched;
    // `UPDATE pg_settings SET setting = ... WHERE name = ...` is
    // set_config() by PostgreSQL's rewrite rule: a setting whose name is
    // known only when it runs, judged as the privilege change it may be.
    if facts.touched.tables.iter().any(|access| {
        access.action != TableAction::Read
            && access.table.name == "pg_settings"
            && matches!(access.table.schema.as_deref(), None | Some("pg_catalog"))
    }) {
        facts.setting_name_unknown = true;
    }
    facts.acting = walker.acting;
    facts.names_from_values = walker.names_from_values;
    settings_by_function(&mut facts, walker.set_config);
    facts
}

/// What calls of `set_config()` change, on the record as the SETs they
/// amount to.
fn settings_by_function(facts: &mut Facts, calls: Vec<SetConfigCall>) {
    for call in calls {
        facts.setting_name_unknown |= !call.name_known;
        facts.settings.push(call.change);
    }
}

/// A statement that reads or writes data is judged as what the built-in
/// functions it calls amount to: a privilege change (`set_config('role',
/// ...)`, see [`privilege_by_function`]) before a utility
/// (`pg_terminate_backend()`) before a notification (`pg_notify()`). A
/// statement of a kind no data grant covers (DDL, procedural code) keeps
/// its kind: it is granted apart already. (Applied once the statement's
/// own command is known to agree with its first keyword: see
/// `analysis::one`.)
pub fn kind_by_function(facts: &mut Facts) {
    use StatementKind as K;
    // An EXECUTE runs a prepared query (PostgreSQL prepares nothing
    // else) with arguments it evaluates first.
    let data = matches!(
        facts.kind,
        K::Select
            | K::Insert
            | K::Update
            | K::Delete
            | K::Merge
            | K::CopyIn
            | K::CopyOut
            | K::Explain
    ) || matches!(facts.effect, Effect::Execute { .. });
    if data {
        for call in &facts.acting {
            (facts.kind, facts.command) = stronger_kind(
                (facts.kind, std::mem::take(&mut facts.command)),
                (call.kind, call.command.clone()),
            );
        }
    }
    privilege_by_function(facts);
}

/// Of two kinds a statement may be judged as, the one a policy must see:
/// a privilege change before a utility before a notification before any
/// other (which the statement's own kind stays). `a` wins a tie.
pub fn stronger_kind(
    a: (StatementKind, String),
    b: (StatementKind, String),
) -> (StatementKind, String) {
    fn rank(kind: StatementKind) -> u8 {
        match kind {
            StatementKind::Privilege => 3,
            StatementKind::Utility => 2,
            StatementKind::Notification => 1,
            _ => 0,
        }
    }
    if rank(b.0) > rank(a.0) { b } else { a }
}

/// A statement that calls `set_config()` to set the role or session
/// authorization, or a setting whose name is only known when it runs, is
/// judged as the privilege change it is or may be, whatever else it does.
fn privilege_by_function(facts: &mut Facts) {
    if facts.kind == StatementKind::Privilege {
        return;
    }
    let command = privilege_setting(facts.settings.iter().map(|c| c.name.as_str()))
        .or(facts.setting_name_unknown.then_some("SET ROLE"));
    if let Some(command) = command {
        facts.kind = StatementKind::Privilege;
        facts.command = command.to_owned();
    }
}

fn describe(ast: &Ast, tokens: &[Token], facts: &mut Facts, walker: &mut Walker) {
    use StatementKind as K;
    // What a relation the generic pass meets unclaimed is taken to be.
    let mut unclaimed = TableAction::Read;
    match ast {
        Ast::Query(query) => {
            mark(facts, K::Select, "SELECT");
            walker.output_query(query);
            if walker
                .touched
                .tables
                .iter()
                .any(|t| t.action == TableAction::Define)
            {
                // SELECT ... INTO makes a table.
                mark(facts, K::Ddl, "SELECT INTO");
            }
            return;
        }
        Ast::Insert(_) => mark(facts, K::Insert, "INSERT"),
        Ast::Update(_) => mark(facts, K::Update, "UPDATE"),
        Ast::Delete(_) => mark(facts, K::Delete, "DELETE"),
        Ast::Merge(_) => mark(facts, K::Merge, "MERGE"),
        Ast::Copy {
            source, to, target, ..
        } => {
            mark(facts, if *to { K::CopyOut } else { K::CopyIn }, "COPY");
            facts.copy_endpoint = Some(match target {
                CopyTarget::Stdin | CopyTarget::Stdout => CopyEndpoint::Stdio,
                CopyTarget::File { filename } => CopyEndpoint::File(filename.clone()),
                CopyTarget::Program { command } => CopyEndpoint::Program(command.clone()),
            });
            match source {
                CopySource::Table {
                    table_name,
                    columns,
                } => {
                    let action = if *to {
                        TableAction::Read
                    } else {
                        TableAction::Insert
                    };
                    let way = match (to, target) {
                        (false, _) => Copied::In,
                        (true, CopyTarget::Stdout) => Copied::ToClient,
                        (true, _) => Copied::ToServer,
                    };
                    if let Some(table) = walker.relation(table_name, action) {
                        let columns: Vec<String> = columns.iter().map(fold).collect();
                        walker.touched.copied(&table, &columns, way);
                    }
                }
                CopySource::Query(query) if matches!(target, CopyTarget::Stdout) => {
                    walker.output_query(query)
                }
                CopySource::Query(query) => walker.query(query),
            }
            return;
        }
        Ast::Explain {
            statement,
            analyze,
            options,
            ..
        } => {
            let analyze = *analyze || options.as_deref().is_some_and(analyze_option);
            facts.wrappers.push(if analyze {
                Wrapper::ExplainAnalyze
            } else {
                Wrapper::Explain
            });
            return describe(statement, tokens, facts, walker);
        }
        Ast::Prepare {
            name, statement, ..
        } => {
            facts.wrappers.push(Wrapper::Prepare);
            facts.effect = Effect::Prepare { name: fold(name) };
            return describe(statement, tokens, facts, walker);
        }
        Ast::Execute {
            name: Some(name),
            parameters,
            ..
        } => {
            mark(facts, K::Prepared, "EXECUTE");
            facts.effect = Effect::Execute {
                name: table_ref(name).name,
                params: parameters.iter().map(parameter_text).collect(),
            };
            // Its arguments are expressions the server evaluates before the
            // statement runs: `EXECUTE p(query_to_xml('SELECT pan ...'))`
            // calls a function the prepared statement never names. What
            // they touch is kept with the statement the EXECUTE runs.
            for parameter in parameters {
                walker.generic(|g| {
                    let _ = parameter.visit(g);
                });
            }
            return;
        }
        Ast::Deallocate { name, .. } => {
            mark(facts, K::Prepared, "DEALLOCATE");
            let name = fold(name);
            facts.effect = Effect::Deallocate((name != "all").then_some(name));
            return;
        }
        Ast::Discard { object_type } => {
            mark(facts, K::Other, "DISCARD");
            let all = object_type.to_string().eq_ignore_ascii_case("all");
            if all {
                facts.effect = Effect::Deallocate(None);
            }
            return;
        }
        Ast::Set(set_statement) => {
            describe_set(set_statement, facts);
            return;
        }
        Ast::Reset(reset) => {
            mark(facts, K::Setting, "RESET");
            let name = match &reset.reset {
                Reset::ALL => "all".to_owned(),
                Reset::SessionAuthorization => {
                    mark(facts, K::Privilege, "RESET SESSION AUTHORIZATION");
                    "session_authorization".to_owned()
                }
                Reset::ConfigurationParameter(name) => {
                    let name = setting_name(name);
                    if name == "role" || name == "session_authorization" {
                        mark(facts, K::Privilege, "RESET");
                    }
                    name
                }
            };
            facts.settings.push(SettingChange { name, value: None });
            return;
        }
        Ast::ShowVariable { .. } => mark(facts, K::Setting, "SHOW"),
        Ast::StartTransaction { .. } => mark(facts, K::Transaction, "BEGIN"),
        Ast::Commit { .. } => mark(facts, K::Transaction, "COMMIT"),
        Ast::Rollback { .. } => mark(facts, K::Transaction, "ROLLBACK"),
        Ast::Savepoint { .. } => mark(facts, K::Transaction, "SAVEPOINT"),
        Ast::ReleaseSavepoint { .. } => mark(facts, K::Transaction, "RELEASE"),
        Ast::LISTEN { .. } => mark(facts, K::Notification, "LISTEN"),
        Ast::UNLISTEN { .. } => mark(facts, K::Notification, "UNLISTEN"),
        Ast::NOTIFY { .. } => mark(facts, K::Notification, "NOTIFY"),
        Ast::Truncate(_) => {
            mark(facts, K::Ddl, "TRUNCATE TABLE");
            unclaimed = TableAction::Truncate;
        }
        Ast::Call(_) => mark(facts, K::Procedural, "CALL"),
        Ast::Vacuum(vacuum) => {
            mark(facts, K::Utility, "VACUUM");
            // sqlparser's visitor does not take this name for a relation.
            if let Some(name) = &vacuum.table_name {
                walker.relation(name, TableAction::Maintain);
            }
            unclaimed = TableAction::Maintain;
        }
        Ast::Analyze(_) => {
            mark(facts, K::Utility, "ANALYZE");
            unclaimed = TableAction::Maintain;
        }
        Ast::Lock(_) | Ast::LockTables { .. } => {
            mark(facts, K::Utility, "LOCK TABLE");
            unclaimed = TableAction::Maintain;
        }
        Ast::Declare { stmts, .. } => {
            mark(facts, K::Select, "DECLARE CURSOR");
            // A cursor's rows go to the client, FETCH by FETCH.
            for declare in stmts {
                if let Some(query) = declare.for_query.as_deref() {
                    walker.output_query(query);
                }
                if let Some(name) = declare.names.first() {
                    facts.cursor = CursorUse::Declare {
                        name: fold(name),
                        hold: declare.hold == Some(true),
                    };
                }
            }
        }
        Ast::Fetch { name, .. } => {
            mark(facts, K::Select, "FETCH");
            facts.cursor = CursorUse::Fetch { name: fold(name) };
        }
        Ast::Close { .. } => mark(facts, K::Other, "CLOSE CURSOR"),
        Ast::Grant(_)
        | Ast::Revoke(_)
        | Ast::GrantRole(_)
        | Ast::RevokeRole(_)
        | Ast::Deny(_)
        | Ast::AlterDefaultPrivileges(_)
        | Ast::CreateRole(_)
        | Ast::AlterRole { .. }
        | Ast::CreateUser(_)
        | Ast::AlterUser(_)
        | Ast::CreatePolicy(_)
        | Ast::AlterPolicy(_)
        | Ast::DropPolicy(_) => {
            mark(facts, K::Privilege, &leading_command(tokens));
            unclaimed = TableAction::Define;
        }
        Ast::Drop {
            object_type, names, ..
        } => {
            if matches!(
                object_type,
                sqlparser::ast::ObjectType::Table
                    | sqlparser::ast::ObjectType::View
                    | sqlparser::ast::ObjectType::MaterializedView
            ) {
                for name in names {
                    walker.relation(name, TableAction::Define);
                }
            }
            let command = format!("DROP {object_type}").to_ascii_uppercase();
            let kind = if matches!(
                object_type,
                sqlparser::ast::ObjectType::Role | sqlparser::ast::ObjectType::User
            ) {
                K::Privilege
            } else {
                K::Ddl
            };
            mark(facts, kind, &command);
            unclaimed = TableAction::Define;
        }
        Ast::CreateFunction(_) => {
            mark(facts, K::Ddl, "CREATE FUNCTION");
            unclaimed = TableAction::Define;
        }
        Ast::CreateProcedure { .. } => {
            mark(facts, K::Ddl, "CREATE PROCEDURE");
            unclaimed = TableAction::Define;
        }
        Ast::CreateTrigger(_) => {
            mark(facts, K::Ddl, "CREATE TRIGGER");
            unclaimed = TableAction::Define;
        }
        // Dropping a table's trigger (an audit trigger, say) defines that
        // table; sqlparser's visitor does not take its name for a relation.
        Ast::DropTrigger(drop) => {
            mark(facts, K::Ddl, "DROP TRIGGER");
            if let Some(name) = &drop.table_name {
                walker.relation(name, TableAction::Define);
            }
            unclaimed = TableAction::Define;
        }
        Ast::CreateRule(_) => {
            mark(facts, K::Ddl, "CREATE RULE");
            unclaimed = TableAction::Define;
        }
        _ => {
            let command = leading_command(tokens);
            let (kind, action) = match command.split(' ').next().unwrap_or_default() {
                "CREATE" | "ALTER" | "DROP" | "COMMENT" | "SECURITY" | "REFRESH" => {
                    (K::Ddl, TableAction::Define)
                }
                "CLUSTER" | "REINDEX" | "CHECKPOINT" => (K::Utility, TableAction::Maintain),
                _ => (K::Other, TableAction::Define),
            };
            mark(facts, kind, &command);
            unclaimed = action;
        }
    }
    match ast {
        Ast::Insert(insert) => write_insert(walker, insert),
        Ast::Update(update) => write_update(walker, update),
        Ast::Delete(delete) => write_delete(walker, delete),
        Ast::Merge(merge) => write_merge(walker, merge),
        _ => {
            walker.unclaimed = unclaimed;
            walker.generic(|g| {
                let _ = ast.visit(g);
            });
        }
    }
}

fn mark(facts: &mut Facts, kind: StatementKind, command: &str) {
    facts.kind = kind;
    facts.command = command.to_owned();
}

/// A data-modifying statement inside a CTE (`WITH d AS (DELETE ...)`).
pub fn nested(walker: &mut Walker, ast: &Ast) {
    match ast {
        Ast::Insert(insert) => write_insert(walker, insert),
        Ast::Update(update) => write_update(walker, update),
        Ast::Delete(delete) => write_delete(walker, delete),
        Ast::Merge(merge) => write_merge(walker, merge),
        other => walker.generic(|g| {
            let _ = other.visit(g);
        }),
    }
}

fn write_insert(walker: &mut Walker, insert: &sqlparser::ast::Insert) {
    let target = match &insert.table {
        TableObject::TableName(name) => Some(walker.target_relation(name, TableAction::Insert)),
        TableObject::TableFunction(_) | TableObject::TableQuery(_) => None,
    };
    if let Some(table) = &target {
        for column in &insert.columns {
            walker
                .touched
                .written(Some(table.clone()), Some(table_ref(column).name));
        }
        if insert.columns.is_empty() {
            walker.touched.written(Some(table.clone()), None);
        }
    }
    // The rows to insert: a query of its own, not in the target's scope.
    if let Some(source) = &insert.source {
        walker.query(source);
    }
    // ON CONFLICT compares each row to insert with the rows there, on the
    // arbiter's columns: a read of them (PostgreSQL asks for SELECT on the
    // columns named), or the statement's outcome would tell whether a value
    // is stored. Without a column list the arbiter is any unique index, on
    // columns sluice does not know: every column is read. DO UPDATE then
    // updates the target.
    if let (Some(OnInsert::OnConflict(conflict)), Some(table)) = (&insert.on, &target) {
        match &conflict.conflict_target {
            Some(ConflictTarget::Columns { columns, .. }) => {
                for column in columns {
                    walker
                        .touched
                        .column(Some(table.clone()), Some(fold(column)));
                }
            }
            Some(ConflictTarget::OnConstraint(_)) | None => {
                walker.touched.column(Some(table.clone()), None);
            }
        }
        if let OnConflictAction::DoUpdate(update) = &conflict.action {
            walker.touched.table(table.clone(), TableAction::Update);
            record_assignments(walker, table, &update.assignments);
        }
    }
    // ON CONFLICT and RETURNING see the target (and `excluded`).
    walker.open_scope();
    if let (Some(table), TableObject::TableName(name)) = (&target, &insert.table) {
        let reference = insert
            .table_alias
            .as_ref()
            .map_or_else(|| table_ref(name).name, |alias| fold(&alias.alias));
        walker.add_source(reference, Some(table.clone()));
        walker.add_proposed_row();
    }
    if let Some(items) = &insert.returning {
        walker.returning(items, &target);
    }
    walker.generic(|g| {
        let _ = insert.visit(g);
    });
    walker.close_scope();
}

fn write_update(walker: &mut Walker, update: &sqlparser::ast::Update) {
    walker.open_scope();
    let target = target_of(walker, &update.table.relation, TableAction::Update);
    let others = match &update.from {
        Some(UpdateTableFromKind::BeforeSet(from) | UpdateTableFromKind::AfterSet(from)) => {
            from.as_slice()
        }
        None => &[],
    };
    for from in others {
        walker.from(from);
    }
    for join in &update.table.joins {
        walker.from(&sqlparser::ast::TableWithJoins {
            relation: join.relation.clone(),
            joins: Vec::new(),
        });
    }
    if let Some((table, _)) = &target {
        record_assignments(walker, table, &update.assignments);
    }
    let real = target.as_ref().is_some_and(|(_, names)| {
        where_clause::is_real(
            update.selection.as_ref(),
            &Target {
                alone: others.is_empty() && update.table.joins.is_empty(),
                ..names.clone()
            },
        )
    });
    walker.bulk_write |= !real;
    if let Some(items) = &update.returning {
        walker.returning(items, target.iter().map(|(table, _)| table));
    }
    walker.generic(|g| {
        let _ = update.visit(g);
    });
    walker.close_scope();
}

/// The columns a SET list writes.
fn record_assignments(walker: &mut Walker, table: &TableRef, assignments: &[Assignment]) {
    for assignment in assignments {
        let columns = match &assignment.target {
            AssignmentTarget::ColumnName(name) => std::slice::from_ref(name),
            AssignmentTarget::Tuple(names) => names.as_slice(),
        };
        for column in columns {
            walker
                .touched
                .written(Some(table.clone()), Some(table_ref(column).name));
        }
    }
}

fn write_delete(walker: &mut Walker, delete: &sqlparser::ast::Delete) {
    walker.open_scope();
    let from = match &delete.from {
        FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from) => from,
    };
    let mut targets = Vec::new();
    for item in from {
        if let Some(target) = target_of(walker, &item.relation, TableAction::Delete) {
            targets.push(target);
        }
        for join in &item.joins {
            walker.from(&sqlparser::ast::TableWithJoins {
                relation: join.relation.clone(),
                joins: Vec::new(),
            });
        }
    }
    let using = delete.using.as_deref().unwrap_or_default();
    for item in using {
        walker.from(item);
    }
    let alone = using.is_empty() && from.len() == 1 && from.iter().all(|f| f.joins.is_empty());
    let real = !targets.is_empty()
        && targets.iter().all(|(_, names)| {
            where_clause::is_real(
                delete.selection.as_ref(),
                &Target {
                    alone,
                    ..names.clone()
                },
            )
        });
    walker.bulk_write |= !real;
    if let Some(items) = &delete.returning {
        walker.returning(items, targets.iter().map(|(table, _)| table));
    }
    walker.generic(|g| {
        let _ = delete.visit(g);
    });
    walker.close_scope();
}

fn write_merge(walker: &mut Walker, merge: &sqlparser::ast::Merge) {
    walker.open_scope();
    let mut target = None;
    for clause in &merge.clauses {
        let action = match clause.action {
            MergeAction::Insert(_) => TableAction::Insert,
            MergeAction::Update(_) => TableAction::Update,
            MergeAction::Delete { .. } => TableAction::Delete,
            MergeAction::DoNothing { .. } => continue,
        };
        // MERGE's ON is a join condition, not a WHERE: an UPDATE or DELETE
        // clause counts as unrestricted.
        if action != TableAction::Insert {
            walker.bulk_write = true;
        }
        target = target_of(walker, &merge.table, action).or(target);
    }
    // A MERGE that only does nothing still reads its target in ON (and an
    // error there can quote the values): it is in scope, and read.
    if target.is_none() {
        target = target_of(walker, &merge.table, TableAction::Read);
    }
    walker.from(&sqlparser::ast::TableWithJoins {
        relation: merge.source.clone(),
        joins: Vec::new(),
    });
    // PostgreSQL 17's MERGE ... RETURNING, should the server have it.
    if let Some(
        OutputClause::Returning { select_items, .. } | OutputClause::Output { select_items, .. },
    ) = &merge.output
    {
        walker.returning(select_items, target.iter().map(|(table, _)| table));
    }
    walker.generic(|g| {
        let _ = merge.visit(g);
    });
    walker.close_scope();
}

/// Records the target of a write and makes it nameable; returns it with
/// the names it goes by.
fn target_of(
    walker: &mut Walker,
    factor: &TableFactor,
    action: TableAction,
) -> Option<(TableRef, Target)> {
    let TableFactor::Table { name, alias, .. } = factor else {
        return None;
    };
    let table = walker.target_relation(name, action);
    let mut references = vec![table.name.clone()];
    let reference = match alias {
        Some(alias) => {
            let alias = fold(&alias.name);
            references.push(alias.clone());
            alias
        }
        None => table.name.clone(),
    };
    walker.add_source(reference, Some(table.clone()));
    let target = Target {
        references,
        table: table.name.clone(),
        alone: true,
    };
    Some((table, target))
}

fn describe_set(set: &Set, facts: &mut Facts) {
    facts.kind = StatementKind::Setting;
    facts.command = "SET".to_owned();
    let mut change = |name: String, value: Option<String>| {
        facts.settings.push(SettingChange { name, value });
    };
    match set {
        Set::SingleAssignment {
            variable, values, ..
        } => change(setting_name(variable), setting_value(values)),
        Set::ParenthesizedAssignments { variables, values } => {
            for (variable, value) in variables.iter().zip(values) {
                change(
                    setting_name(variable),
                    setting_value(std::slice::from_ref(value)),
                );
            }
        }
        Set::MultipleAssignments { assignments } => {
            for assignment in assignments {
                change(
                    setting_name(&assignment.name),
                    setting_value(std::slice::from_ref(&assignment.value)),
                );
            }
        }
        Set::SetRole { role_name, .. } => {
            facts.kind = StatementKind::Privilege;
            facts.command = "SET ROLE".to_owned();
            change("role".to_owned(), role_name.as_ref().map(fold));
        }
        Set::SetSessionAuthorization(param) => {
            facts.kind = StatementKind::Privilege;
            facts.command = "SET SESSION AUTHORIZATION".to_owned();
            change("session_authorization".to_owned(), Some(param.to_string()));
        }
        Set::SetTimeZone { value, .. } => change(
            "timezone".to_owned(),
            setting_value(std::slice::from_ref(value)),
        ),
        Set::SetNames { charset_name, .. } => change(
            "client_encoding".to_owned(),
            Some(charset_name.value.clone()),
        ),
        Set::SetTransaction { .. } => {
            facts.kind = StatementKind::Transaction;
            facts.command = "SET TRANSACTION".to_owned();
        }
        // `SET NAMES DEFAULT` and forms of other dialects: what they change
        // is not certain here, so they are refused unless a rule allows an
        // unparsed SET.
        _ => facts.kind = StatementKind::Unparsed,
    }
    if facts.kind == StatementKind::Setting
        && let Some(command) = privilege_setting(facts.settings.iter().map(|c| c.name.as_str()))
    {
        facts.kind = StatementKind::Privilege;
        facts.command = command.to_owned();
    }
}

/// `SET role = 'x'` and `SET session_authorization = 'x'` (the spelling of
/// a plain setting, which sqlparser reads as one; a startup `-c role=x`)
/// change whose privileges run the session's statements, as SET ROLE does:
/// the command they amount to, if one of `names` is such a setting.
pub fn privilege_setting<'n>(mut names: impl Iterator<Item = &'n str>) -> Option<&'static str> {
    names.find_map(|name| match name {
        "role" => Some("SET ROLE"),
        "session_authorization" => Some("SET SESSION AUTHORIZATION"),
        _ => None,
    })
}

/// A setting's name as PostgreSQL keys it: lower case, dotted for custom
/// ones (`sluice.principal`).
fn setting_name(name: &sqlparser::ast::ObjectName) -> String {
    name.0
        .iter()
        .map(|part| match part {
            sqlparser::ast::ObjectNamePart::Identifier(ident) => fold(ident).to_ascii_lowercase(),
            sqlparser::ast::ObjectNamePart::Function(f) => f.name.value.to_ascii_lowercase(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// A SET's value as text: `DEFAULT` is none; a list is joined as
/// PostgreSQL shows it.
fn setting_value(values: &[Expr]) -> Option<String> {
    let parts: Vec<String> = values
        .iter()
        .map(|value| match value {
            Expr::Value(v) => match &v.value {
                Value::SingleQuotedString(s)
                | Value::EscapedStringLiteral(s)
                | Value::DollarQuotedString(sqlparser::ast::DollarQuotedString {
                    value: s, ..
                }) => s.clone(),
                other => other.to_string(),
            },
            Expr::Identifier(ident) => fold(ident),
            other => other.to_string(),
        })
        .collect();
    match parts.as_slice() {
        [only] if only.eq_ignore_ascii_case("default") => None,
        _ => Some(parts.join(", ")),
    }
}

/// An EXECUTE argument as text: a literal's value, anything else as SQL.
fn parameter_text(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Value(v) => match &v.value {
            Value::Null => None,
            Value::SingleQuotedString(s) | Value::EscapedStringLiteral(s) => Some(s.clone()),
            other => Some(other.to_string()),
        },
        other => Some(other.to_string()),
    }
}

/// Whether EXPLAIN's options ask for ANALYZE (`ANALYZE`, `ANALYZE true`,
/// `ANALYZE on`, `ANALYZE 1`): anything but an explicit false counts.
fn analyze_option(options: &[UtilityOption]) -> bool {
    options.iter().any(|option| {
        option.name.value.eq_ignore_ascii_case("analyze")
            && !option.arg.as_ref().is_some_and(|arg| {
                let text = arg.to_string().to_ascii_lowercase();
                matches!(text.trim_matches('\''), "false" | "off" | "0" | "no")
            })
    })
}

/// The command a statement's leading keywords name, upper case: `CREATE
/// INDEX`, `ALTER SYSTEM`, `CREATE MATERIALIZED VIEW`, `VACUUM`.
pub fn leading_command(tokens: &[Token]) -> String {
    let words: Vec<&str> = tokens
        .iter()
        .map_while(|token| match token {
            Token::Word(word) => Some(word.as_str()),
            _ => None,
        })
        .take(8)
        .collect();
    let Some(&first) = words.first() else {
        return String::new();
    };
    let mut command = vec![first];
    if matches!(
        first,
        "create" | "alter" | "drop" | "comment" | "security" | "grant" | "revoke" | "refresh"
    ) {
        // Skip modifiers to reach the object type (`CREATE OR REPLACE
        // TEMP VIEW` is a CREATE VIEW).
        let mut rest = words[1..].iter().copied().filter(|word| {
            !matches!(
                *word,
                "or" | "replace"
                    | "temp"
                    | "temporary"
                    | "unique"
                    | "unlogged"
                    | "global"
                    | "local"
                    | "recursive"
                    | "trusted"
                    | "procedural"
                    | "constraint"
                    | "default"
                    | "concurrently"
            )
        });
        if let Some(object) = rest.next() {
            command.push(object);
            if matches!(
                object,
                "materialized"
                    | "foreign"
                    | "event"
                    | "text"
                    | "access"
                    | "operator"
                    | "user"
                    | "large"
                    | "data"
            ) && let Some(second) = rest.next()
            {
                command.push(second);
            }
        }
    }
    command.join(" ").to_ascii_uppercase()
}
