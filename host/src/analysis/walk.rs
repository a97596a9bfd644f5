//! The walk over a parsed statement that finds what it touches: tables
//! and how, columns, functions.
//!
//! Two passes make one walk. A hand-written pass follows the parts of the
//! tree that carry meaning — CTEs in their order of visibility, FROM lists
//! that open a scope, the target of a write — so that names resolve as
//! PostgreSQL resolves them. Underneath, sqlparser's generic visitor runs
//! over every node of each scope, so any expression, subquery or relation
//! in a place the hand-written pass does not name (and sqlparser's tree
//! has many) is still seen: a relation nobody claimed counts as read, a
//! query nobody walked is walked with the scopes around it. Missing a
//! table is the failure that matters here; over-reporting one only makes a
//! policy stricter.

use std::collections::HashSet;
use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident, JoinConstraint,
    JoinOperator, ObjectName, ObjectNamePart, OrderByKind, Query, Select, SelectItem,
    SelectItemQualifiedWildcardKind, SetExpr, TableFactor, TableWithJoins, Value, Visit, Visitor,
};

use super::builtins;
use crate::plugin::bindings::types::{
    ColumnAccess, ColumnRef, FunctionRef, SettingChange, StatementKind, TableAccess, TableAction,
    TableRef,
};

/// An identifier as PostgreSQL reads it: unquoted ones fold to lower
/// case (ASCII letters only, as in a UTF-8 database), quoted ones stay,
/// and either is cut to PostgreSQL's 63 bytes (a longer name reaches the
/// object named by its first 63).
pub fn fold(ident: &Ident) -> String {
    let mut name = if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_ascii_lowercase()
    };
    if name.len() > super::lexer::MAX_IDENTIFIER_BYTES {
        let mut end = super::lexer::MAX_IDENTIFIER_BYTES;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
    }
    name
}

/// The table an object name names: `name`, `schema.name` or
/// `database.schema.name` (the database can only be the current one).
pub fn table_ref(name: &ObjectName) -> TableRef {
    let mut parts = name.0.iter().rev().map(|part| match part {
        ObjectNamePart::Identifier(ident) => fold(ident),
        // Not PostgreSQL syntax; kept visible rather than dropped.
        ObjectNamePart::Function(function) => function.name.value.clone(),
    });
    let table = parts.next().unwrap_or_default();
    TableRef {
        schema: parts.next(),
        name: table,
    }
}

/// Something a FROM list makes nameable.
#[derive(Debug, Clone)]
struct Source {
    /// The name it is referred to by: its alias, or the table's own name.
    reference: String,
    /// The table behind it, when it is one (not a subquery, a CTE or a
    /// function).
    table: Option<TableRef>,
    /// For the alias of a parenthesised join, the tables inside it: its
    /// columns are theirs.
    joined: Vec<TableRef>,
    /// ON CONFLICT's `excluded`: the row proposed for insertion, whose
    /// values came from the statement itself (walked where they are
    /// written), never from a stored row.
    proposed: bool,
}

/// What a name in a FROM list stands for.
enum Named {
    Table(TableRef),
    /// A parenthesised join's alias: columns of any of these tables.
    Join(Vec<TableRef>),
    /// A subquery, CTE or function: its columns were recorded where they
    /// were read.
    Derived,
    /// The row an INSERT proposes (`excluded`): nothing stored.
    Proposed,
}

/// One level of name resolution: a SELECT's FROM list, or the target (and
/// USING/FROM list) of a DELETE, UPDATE or INSERT.
#[derive(Debug, Default)]
struct Scope {
    sources: Vec<Source>,
}

/// What a statement touches, accumulated as the walk goes.
/// Where a COPY of a table moves its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Copied {
    /// `COPY ... TO STDOUT`.
    ToClient,
    /// `COPY ... TO` a server file or program.
    ToServer,
    /// `COPY ... FROM`.
    In,
}

#[derive(Debug, Default)]
pub struct Touched {
    pub tables: Vec<TableAccess>,
    pub columns: Vec<ColumnRef>,
    pub functions: Vec<FunctionRef>,
    /// Inside a query with a locking clause (`FOR UPDATE`, `FOR SHARE`):
    /// the rows it reads are locked, which PostgreSQL lets only a role
    /// that may update them do, so every table read there is updated
    /// too. (PostgreSQL locks the tables of the FROM list and of
    /// subqueries in it; a subquery elsewhere counts here as well, which
    /// errs on the side of asking more.)
    pub locking: bool,
}

impl Touched {
    pub fn table(&mut self, table: TableRef, action: TableAction) {
        if self.locking && action == TableAction::Read {
            self.add_table(table.clone(), TableAction::Update);
        }
        self.add_table(table, action);
    }

    fn add_table(&mut self, table: TableRef, action: TableAction) {
        let seen = self
            .tables
            .iter()
            .any(|t| t.action == action && t.table == table);
        if !seen {
            self.tables.push(TableAccess { table, action });
        }
    }

    /// Records a column read: computed on, compared, or read where its
    /// values do not go straight to the client.
    pub fn column(&mut self, table: Option<TableRef>, column: Option<String>) {
        self.use_column(table, column, ColumnAccess::Read, false);
    }

    /// Records a column read as stored: its values go to the client
    /// unchanged (see [`Walker::output_query`]).
    pub fn column_as_stored(&mut self, table: Option<TableRef>, column: Option<String>) {
        self.use_column(table, column, ColumnAccess::Read, true);
    }

    /// Records a column written (INSERT's list, UPDATE's SET, COPY FROM).
    pub fn written(&mut self, table: Option<TableRef>, column: Option<String>) {
        self.use_column(table, column, ColumnAccess::Write, false);
    }

    /// The columns of `table` a COPY moves (every column when `columns`
    /// names none). Rows copied to the client go as they are stored; to a
    /// server file or program, they leave sluice's sight: a read.
    pub fn copied(&mut self, table: &TableRef, columns: &[String], way: Copied) {
        let mut record = |column: Option<String>| match way {
            Copied::ToClient => self.column_as_stored(Some(table.clone()), column),
            Copied::ToServer => self.column(Some(table.clone()), column),
            Copied::In => self.written(Some(table.clone()), column),
        };
        if columns.is_empty() {
            record(None);
        }
        for column in columns {
            record(Some(column.clone()));
        }
    }

    /// Records one use of a column. A column used several ways is listed
    /// once per access, read as stored only if every read of it is.
    fn use_column(
        &mut self,
        table: Option<TableRef>,
        column: Option<String>,
        access: ColumnAccess,
        as_stored: bool,
    ) {
        let seen = self
            .columns
            .iter_mut()
            .find(|c| c.access == access && c.table == table && c.column == column);
        match seen {
            Some(seen) => seen.as_stored &= as_stored,
            None => self.columns.push(ColumnRef {
                table,
                column,
                access,
                as_stored,
            }),
        }
    }

    fn function(&mut self, name: &ObjectName) {
        let TableRef { schema, name } = table_ref(name);
        let builtin = match schema.as_deref() {
            None | Some("pg_catalog") => builtins::is_builtin(&name),
            Some(_) => false,
        };
        if !self
            .functions
            .iter()
            .any(|f| f.name == name && f.schema == schema)
        {
            self.functions.push(FunctionRef {
                schema,
                name,
                builtin,
            });
        }
    }
}

/// The walker: scopes, visible CTE names, and what has been claimed.
pub struct Walker {
    pub touched: Touched,
    scopes: Vec<Scope>,
    /// CTE names visible at this point, innermost last.
    ctes: Vec<String>,
    /// Queries already walked (by address), so the generic pass does not
    /// walk them again in the wrong scope.
    walked: HashSet<usize>,
    /// Relations already claimed by the hand-written pass (by address).
    claimed: HashSet<usize>,
    /// What a relation nobody claimed is taken to be: read, unless the
    /// statement is DDL (defined), TRUNCATE or maintenance.
    pub unclaimed: TableAction,
    /// Whether some DELETE or UPDATE in the statement lacks a real WHERE.
    pub bulk_write: bool,
    /// The settings changed by calls of the built-in `set_config()`.
    pub set_config: Vec<SetConfigCall>,
    /// Calls of built-in functions that act on other sessions, the server
    /// or notifications (see [`builtins::Act`]): the statement is judged as
    /// the kind of statement they amount to.
    pub acting: Vec<ActingCall>,
    /// Whether a table the statement touches is named by a literal's value
    /// (`nextval('orders_id_seq')`): another statement of the same shape
    /// touches another table.
    pub names_from_values: bool,
    /// The SELECTs whose rows are the statement's output (by address), and
    /// the expressions that pass a column's values into that output as
    /// they are stored: see [`Walker::output_query`].
    output_selects: HashSet<usize>,
    output_exprs: HashSet<usize>,
}

/// A call of a built-in function judged as another kind of statement:
/// `SELECT pg_terminate_backend(pid)` as a utility, `SELECT pg_notify(...)`
/// as the NOTIFY it is.
#[derive(Debug)]
pub struct ActingCall {
    pub kind: StatementKind,
    /// The function, as the statement's command: `pg_terminate_backend()`.
    pub command: String,
}

/// A call of the built-in `set_config(name, value, is_local)`: the SET it
/// amounts to. A name or value that is not a plain string (`$1`,
/// `current_setting('x')`) is kept as written: what it will be when the
/// statement runs is unknown here.
#[derive(Debug)]
pub struct SetConfigCall {
    pub change: SettingChange,
    /// Whether the name is a plain string, and so the setting known.
    pub name_known: bool,
}

impl Default for Walker {
    fn default() -> Self {
        Walker {
            touched: Touched::default(),
            scopes: Vec::new(),
            ctes: Vec::new(),
            walked: HashSet::new(),
            claimed: HashSet::new(),
            unclaimed: TableAction::Read,
            bulk_write: false,
            set_config: Vec::new(),
            acting: Vec::new(),
            names_from_values: false,
            output_selects: HashSet::new(),
            output_exprs: HashSet::new(),
        }
    }
}

fn address<T>(node: &T) -> usize {
    std::ptr::from_ref(node) as usize
}

impl Walker {
    /// Records a relation named in a FROM list or as a statement's target,
    /// unless it is a visible CTE; returns the table, if it is one.
    pub fn relation(&mut self, name: &ObjectName, action: TableAction) -> Option<TableRef> {
        self.claimed.insert(address(name));
        let table = table_ref(name);
        if table.schema.is_none() && self.ctes.iter().rev().any(|cte| *cte == table.name) {
            return None;
        }
        self.touched.table(table.clone(), action);
        Some(table)
    }

    /// Records the target of a write (INSERT, UPDATE, DELETE, MERGE). It is
    /// always a table: a CTE of the same name does not hide it, as
    /// PostgreSQL finds it (`WITH cards AS (SELECT 1) DELETE FROM cards`
    /// deletes from the table).
    pub fn target_relation(&mut self, name: &ObjectName, action: TableAction) -> TableRef {
        self.claimed.insert(address(name));
        let table = table_ref(name);
        self.touched.table(table.clone(), action);
        table
    }

    /// Opens a scope for a statement's target and the tables it lists.
    pub fn open_scope(&mut self) {
        self.scopes.push(Scope::default());
    }

    pub fn close_scope(&mut self) {
        self.scopes.pop();
    }

    /// Makes a table nameable in the innermost scope.
    pub fn add_source(&mut self, reference: String, table: Option<TableRef>) {
        if let Some(scope) = self.scopes.last_mut() {
            scope.sources.push(Source {
                reference,
                table,
                joined: Vec::new(),
                proposed: false,
            });
        }
    }

    /// Makes ON CONFLICT's `excluded` nameable: the row proposed for
    /// insertion. Its columns hold what the INSERT's own VALUES or query
    /// gave (read there, if from a table) or the defaults, so naming them
    /// reads nothing stored — as a loader's `SET pan = excluded.pan`
    /// shows the loader nothing.
    pub fn add_proposed_row(&mut self) {
        if let Some(scope) = self.scopes.last_mut() {
            scope.sources.push(Source {
                reference: "excluded".to_owned(),
                table: None,
                joined: Vec::new(),
                proposed: true,
            });
        }
    }

    /// Walks a query whose rows go to the client (a SELECT, a cursor's
    /// query, a COPY's query TO STDOUT), noting which columns it passes on
    /// as they are stored: those named bare (`pan`, `c.pan`, with or
    /// without an alias) or by `*` / `c.*` in the select list of its own
    /// SELECT, or of each SELECT of a UNION ALL, where that SELECT neither
    /// groups nor removes duplicates. Every other use — in an expression,
    /// a cast, a comparison, a join, ORDER BY, GROUP BY, DISTINCT, a
    /// subquery, a CTE, another set operation (INTERSECT and EXCEPT
    /// compare values) — computes on the values or compares them, so a
    /// masker could no longer see them as stored, or the rows' order or
    /// number would tell about them: sorted among values the client
    /// chose (`UNION ALL SELECT '411111' || g ... ORDER BY 1`), a masked
    /// card number's hidden digits are read off its neighbours. A query
    /// ordered by position or by an output alias (`ORDER BY 1`, `SELECT pan
    /// AS x ... ORDER BY x`) sorts by a column without naming it, so
    /// nothing of it is as stored; nor of a set operation's, whose ORDER
    /// BY can only name output columns. Rows that go into a table (INSERT
    /// ... SELECT, SELECT INTO) do not go to the client and are walked
    /// with [`Walker::query`].
    pub fn output_query(&mut self, query: &Query) {
        if order_names_no_output_column(query) {
            self.mark_output(&query.body);
        }
        self.query(query);
    }

    fn mark_output(&mut self, body: &SetExpr) {
        match body {
            // SELECT ... INTO sends its rows into a table; grouping and
            // DISTINCT compare the values.
            SetExpr::Select(select)
                if select.into.is_none()
                    && select.distinct.is_none()
                    && select.having.is_none()
                    && matches!(&select.group_by, GroupByExpr::Expressions(by, modifiers)
                        if by.is_empty() && modifiers.is_empty()) =>
            {
                self.output_selects.insert(address(select.as_ref()));
                for item in &select.projection {
                    match item {
                        SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. }
                            if is_bare_column(expr) =>
                        {
                            self.output_exprs.insert(address(expr));
                        }
                        _ => {}
                    }
                }
            }
            SetExpr::Query(query)
                if query.with.is_none()
                    && query.order_by.is_none()
                    && query.limit_clause.is_none()
                    && query.fetch.is_none() =>
            {
                self.mark_output(&query.body)
            }
            SetExpr::SetOperation {
                op: sqlparser::ast::SetOperator::Union,
                set_quantifier: sqlparser::ast::SetQuantifier::All,
                left,
                right,
            } => {
                self.mark_output(left);
                self.mark_output(right);
            }
            _ => {}
        }
    }

    /// Walks a query: its CTEs (each visible to the ones after it, and to
    /// itself only under RECURSIVE), its body, then its ORDER BY and LIMIT.
    pub fn query(&mut self, query: &Query) {
        self.walked.insert(address(query));
        let visible_before = self.ctes.len();
        if let Some(with) = &query.with {
            if with.recursive {
                self.ctes
                    .extend(with.cte_tables.iter().map(|cte| fold(&cte.alias.name)));
            }
            for cte in &with.cte_tables {
                self.query(&cte.query);
                if !with.recursive {
                    self.ctes.push(fold(&cte.alias.name));
                }
            }
        }
        // ORDER BY, LIMIT and the rest: names there resolve to the body's
        // output, a plain SELECT's FROM list (`ORDER BY c.pan`), or the
        // scopes around; the generic pass sees them.
        let tail = |walker: &mut Walker| {
            walker.generic(|walker| {
                let _ = query.order_by.visit(walker);
                let _ = query.limit_clause.visit(walker);
                let _ = query.fetch.visit(walker);
            })
        };
        // `FOR UPDATE`, `FOR SHARE` and the like lock the rows they read
        // (see `Touched::locking`), whatever `OF` names.
        let locking_before = self.touched.locking;
        self.touched.locking |= !query.locks.is_empty();
        match query.body.as_ref() {
            SetExpr::Select(select) => self.select_then(select, tail),
            body => {
                self.set_expr(body);
                tail(self);
            }
        }
        self.touched.locking = locking_before;
        self.ctes.truncate(visible_before);
    }

    fn set_expr(&mut self, body: &SetExpr) {
        match body {
            SetExpr::Select(select) => self.select(select),
            SetExpr::Query(query) => self.query(query),
            SetExpr::SetOperation { left, right, .. } => {
                self.set_expr(left);
                self.set_expr(right);
            }
            // `TABLE name` reads the whole table.
            SetExpr::Table(table) => {
                if let Some(name) = &table.table_name {
                    let table = TableRef {
                        schema: table.schema_name.as_ref().map(fold),
                        name: fold(name),
                    };
                    let is_cte = table.schema.is_none() && self.ctes.contains(&table.name);
                    if !is_cte {
                        self.touched.table(table.clone(), TableAction::Read);
                        self.touched.column(Some(table), None);
                    }
                }
            }
            // A data-modifying statement inside a CTE.
            SetExpr::Insert(statement)
            | SetExpr::Update(statement)
            | SetExpr::Delete(statement)
            | SetExpr::Merge(statement) => super::statement::nested(self, statement),
            SetExpr::Values(values) => self.generic(|walker| {
                let _ = values.visit(walker);
            }),
        }
    }

    fn select(&mut self, select: &Select) {
        self.select_then(select, |_| {});
    }

    /// Walks a SELECT, then `then` while its FROM list is still in scope.
    fn select_then(&mut self, select: &Select, then: impl FnOnce(&mut Walker)) {
        self.open_scope();
        for from in &select.from {
            self.from(from);
        }
        let output = self.output_selects.contains(&address(select));
        for item in &select.projection {
            self.wildcard(item, output);
        }
        if let Some(into) = &select.into {
            // SELECT ... INTO makes a table, as CREATE TABLE AS does.
            for target in &into.targets {
                let parts: &[Ident] = match target {
                    Expr::Identifier(ident) => std::slice::from_ref(ident),
                    Expr::CompoundIdentifier(parts) => parts,
                    _ => &[],
                };
                if let Some(name) = parts.last() {
                    let table = TableRef {
                        schema: parts.len().checked_sub(2).map(|at| fold(&parts[at])),
                        name: fold(name),
                    };
                    self.touched.table(table, TableAction::Define);
                }
            }
        }
        // Everything else of the SELECT — expressions anywhere in it, join
        // conditions, subqueries — in this scope.
        self.generic(|walker| {
            let _ = select.visit(walker);
        });
        then(self);
        self.close_scope();
    }

    /// A write's RETURNING list, in the write's scope: it reads the rows
    /// written (the stored rows an UPDATE, DELETE or ON CONFLICT DO UPDATE
    /// met, the USING/FROM lists'), so it is a read of each target, and
    /// `*` or `c.*` reads every column of what it names. Never as stored:
    /// the rows returned are the ones a statement's own WHERE chose and
    /// changed. Expressions in it are walked with the rest of the write.
    pub fn returning<'t>(
        &mut self,
        items: &[SelectItem],
        targets: impl IntoIterator<Item = &'t TableRef>,
    ) {
        let targets: Vec<&TableRef> = targets.into_iter().collect();
        for target in &targets {
            self.touched.table((*target).clone(), TableAction::Read);
        }
        for item in items {
            self.wildcard(item, false);
        }
        // PostgreSQL 18's `old` and `new` name a target's row before and
        // after (`RETURNING old.*`, `to_jsonb(old)`): the items that name
        // either are walked again in a scope where they are the targets.
        let naming_rows: Vec<&SelectItem> =
            items.iter().filter(|item| names_old_or_new(item)).collect();
        if naming_rows.is_empty() {
            return;
        }
        self.open_scope();
        for target in targets {
            for row in ["old", "new"] {
                self.add_source(row.to_owned(), Some(target.clone()));
            }
        }
        for item in naming_rows {
            self.wildcard(item, false);
            self.generic(|g| {
                let _ = item.visit(g);
            });
        }
        self.close_scope();
    }

    /// A select list's or RETURNING's `*` (every column in scope) or `c.*`
    /// (every column of `c`); other items are expressions, walked as such.
    fn wildcard(&mut self, item: &SelectItem, as_stored: bool) {
        match item {
            SelectItem::Wildcard(_) => self.every_column_of_scope(as_stored),
            SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(name), _) => {
                self.whole_row(name, as_stored)
            }
            _ => {}
        }
    }

    /// Walks one FROM item and its joins, making each nameable.
    pub fn from(&mut self, from: &TableWithJoins) {
        self.table_factor(&from.relation);
        for join in &from.joins {
            self.table_factor(&join.relation);
            // `USING (pan)` and NATURAL compare columns they do not name
            // as expressions: `JOIN (VALUES ('4111...')) v(pan) USING
            // (pan)` asks whether a card number is there. USING's columns
            // are read, of whichever side has them; NATURAL's are every
            // column the two sides share, so every column of each.
            match join_constraint(&join.join_operator) {
                Some(JoinConstraint::Using(names) | JoinConstraint::UsingAlias(names, _)) => {
                    for name in names {
                        let column = table_ref(name).name;
                        self.touched.column(None, Some(column));
                    }
                }
                Some(JoinConstraint::Natural) => self.every_column_of_scope(false),
                _ => {}
            }
        }
    }

    pub fn table_factor(&mut self, factor: &TableFactor) {
        match factor {
            TableFactor::Table {
                name, alias, args, ..
            } => {
                // `FROM f(...)` parses as a table with arguments: a call.
                if let Some(args) = args {
                    self.claimed.insert(address(name));
                    self.called(name, &args.args);
                    self.add_source(alias_or(alias.as_ref(), name), None);
                    return;
                }
                let table = self.relation(name, TableAction::Read);
                // `cards AS c(i, cu, p)` renames the table's columns in
                // order: which one `p` is takes the catalog to know, so
                // every column is read, and not as stored.
                if let (Some(table), Some(alias)) = (&table, alias)
                    && !alias.columns.is_empty()
                {
                    self.touched.column(Some(table.clone()), None);
                }
                self.add_source(alias_or(alias.as_ref(), name), table);
            }
            TableFactor::Derived {
                subquery, alias, ..
            } => {
                self.query(subquery);
                if let Some(alias) = alias {
                    self.add_source(fold(&alias.name), None);
                }
            }
            TableFactor::Function {
                name, args, alias, ..
            } => {
                self.called(name, args);
                if let Some(alias) = alias {
                    self.add_source(fold(&alias.name), None);
                }
            }
            TableFactor::NestedJoin {
                table_with_joins,
                alias,
            } => {
                let before = self.scopes.last().map_or(0, |scope| scope.sources.len());
                self.from(table_with_joins);
                if let Some(alias) = alias {
                    // `(cards CROSS JOIN v) AS j`: `j.pan` is cards' pan.
                    let joined: Vec<TableRef> = self
                        .scopes
                        .last()
                        .map(|scope| {
                            scope.sources[before..]
                                .iter()
                                .flat_map(|s| s.table.iter().chain(&s.joined).cloned())
                                .collect()
                        })
                        .unwrap_or_default();
                    if !alias.columns.is_empty() {
                        for table in &joined {
                            self.touched.column(Some(table.clone()), None);
                        }
                    }
                    if let Some(scope) = self.scopes.last_mut() {
                        scope.sources.push(Source {
                            reference: fold(&alias.name),
                            table: None,
                            joined,
                            proposed: false,
                        });
                    }
                }
            }
            other => {
                // Table functions, UNNEST and dialect forms: their
                // expressions and any relation inside are left to the
                // generic pass; the alias is nameable.
                if let Some(alias) = factor_alias(other) {
                    self.add_source(alias, None);
                }
            }
        }
    }

    /// `*`: every column of every table in the innermost scope.
    fn every_column_of_scope(&mut self, as_stored: bool) {
        let tables: Vec<TableRef> = self
            .scopes
            .last()
            .map(|scope| {
                scope
                    .sources
                    .iter()
                    .filter_map(|s| s.table.clone())
                    .collect()
            })
            .unwrap_or_default();
        for table in tables {
            self.read(Some(table), None, as_stored);
        }
    }

    fn read(&mut self, table: Option<TableRef>, column: Option<String>, as_stored: bool) {
        if as_stored {
            self.touched.column_as_stored(table, column);
        } else {
            self.touched.column(table, column);
        }
    }

    /// `c.*`, `row(c.*)`: every column of the table `c` names.
    fn whole_row(&mut self, name: &ObjectName, as_stored: bool) {
        let reference = table_ref(name);
        let every = self.candidates(&reference.name);
        if every.len() > 1 {
            for named in every {
                self.whole_row_of(named, false);
            }
            return;
        }
        match every.into_iter().next() {
            Some(named) => self.whole_row_of(named, as_stored),
            // `schema.table.*` or a name the scopes do not know: the table
            // itself, as named.
            None => self.read(Some(reference), None, as_stored),
        }
    }

    /// Every column of what a FROM list's name stands for.
    fn whole_row_of(&mut self, named: Named, as_stored: bool) {
        match named {
            Named::Table(table) => self.read(Some(table), None, as_stored),
            Named::Join(tables) => {
                for table in tables {
                    self.read(Some(table), None, as_stored);
                }
            }
            Named::Derived | Named::Proposed => {}
        }
    }

    /// The source a reference names: `Some(table)` for a table (`None`
    /// inside for a subquery or CTE), or `None` if no scope has it.
    fn lookup(&self, reference: &str) -> Option<Named> {
        self.candidates(reference).into_iter().next()
    }

    /// Every source a reference may name, innermost first. sluice's
    /// scopes are wider than PostgreSQL's (a join's alias hides the names
    /// inside it; a subquery in FROM does not see the items beside it),
    /// so where a name is found more than once the first need not be the
    /// one PostgreSQL takes.
    fn candidates(&self, reference: &str) -> Vec<Named> {
        self.scopes
            .iter()
            .rev()
            .flat_map(|scope| &scope.sources)
            .filter(|source| source.reference == reference)
            .map(|source| match (&source.table, source.joined.is_empty()) {
                _ if source.proposed => Named::Proposed,
                (Some(table), _) => Named::Table(table.clone()),
                (None, false) => Named::Join(source.joined.clone()),
                (None, true) => Named::Derived,
            })
            .collect()
    }

    /// A column named without a table. It belongs to the only table of
    /// the innermost scope when there is no scope around it; inside a
    /// subquery it may be an outer column (PostgreSQL looks outward when
    /// the inner tables lack it), so it stays unresolved there.
    fn bare_column(&mut self, name: String, as_stored: bool) {
        // A name that is also a FROM item's name may be a whole-row
        // reference (`SELECT c FROM cards c`): without the catalog, count
        // it as both.
        let every = self.candidates(&name);
        let whole_row_as_stored = as_stored && every.len() == 1;
        for named in every {
            self.whole_row_of(named, whole_row_as_stored);
        }
        let nonempty_scopes = self.scopes.iter().filter(|s| !s.sources.is_empty()).count();
        let table = match self.scopes.last() {
            Some(scope) if nonempty_scopes == 1 && scope.sources.len() == 1 => {
                scope.sources[0].table.clone()
            }
            _ => None,
        };
        // A column of a subquery or CTE was recorded where it was read.
        if table.is_none() && self.single_derived_source() {
            return;
        }
        self.read(table, Some(name), as_stored);
    }

    fn single_derived_source(&self) -> bool {
        let nonempty_scopes = self.scopes.iter().filter(|s| !s.sources.is_empty()).count();
        matches!(self.scopes.last(), Some(scope) if nonempty_scopes == 1
            && scope.sources.len() == 1
            && scope.sources[0].table.is_none())
    }

    /// `a.b`, `s.t.c`: a column of a named source, or of a table named in
    /// full.
    fn qualified_column(&mut self, parts: &[Ident], as_stored: bool) {
        let folded: Vec<String> = parts.iter().map(fold).collect();
        match folded.as_slice() {
            [] => {}
            [column] => self.bare_column(column.clone(), as_stored),
            [reference, column] => {
                let every = self.candidates(reference);
                // PostgreSQL reads `c.f`, where c has no column f, as the
                // call f(c): `c.to_jsonb`, `c.text` hand the whole row to
                // a function, and nothing of it is a column.
                if let Some(function) = row_function(column) {
                    if every.is_empty() {
                        self.bare_column(reference.clone(), false);
                    }
                    for named in every {
                        self.whole_row_of(named, false);
                    }
                    self.touched.function(&ObjectName::from(vec![function]));
                    return;
                }
                // A name found more than once is read as each, and
                // unresolved besides.
                if every.len() > 1 {
                    for named in every {
                        if let Named::Table(table) = named {
                            self.touched.column(Some(table), Some(column.clone()));
                        }
                    }
                    self.touched.column(None, Some(column.clone()));
                    return;
                }
                match every.into_iter().next() {
                    Some(Named::Table(table)) => {
                        self.read(Some(table), Some(column.clone()), as_stored)
                    }
                    // A column of one of the join's tables.
                    Some(Named::Join(_)) => self.read(None, Some(column.clone()), as_stored),
                    // A subquery's column was read inside it. Unless the
                    // name is not the source sluice took it for (a join's
                    // alias hides the names inside it; a subquery in FROM
                    // does not see the items beside it): read unresolved,
                    // it still counts where a table of the statement has
                    // a column of that name.
                    Some(Named::Derived) => self.touched.column(None, Some(column.clone())),
                    // A value of the row proposed for insertion.
                    Some(Named::Proposed) => {}
                    // `(composite).field` and the like: the first part is
                    // a column of its own, and a field of it is computed.
                    // Or a name out of sight: the column is read all the
                    // same, unresolved.
                    None => {
                        self.bare_column(reference.clone(), false);
                        self.touched.column(None, Some(column.clone()));
                    }
                }
            }
            // `schema.table.column` (`db.schema.table.column`), which
            // PostgreSQL tries before `table.column.field`: both are read.
            [.., schema, name, column] => {
                let table = TableRef {
                    schema: Some(schema.clone()),
                    name: name.clone(),
                };
                match row_function(column) {
                    Some(function) => {
                        self.read(Some(table), None, false);
                        self.touched.function(&ObjectName::from(vec![function]));
                    }
                    None => self.read(Some(table), Some(column.clone()), as_stored),
                }
                // `c.pan.field`: a field of c's column pan.
                if self.lookup(&folded[0]).is_some() {
                    self.touched.column(None, Some(folded[1].clone()));
                }
            }
        }
    }

    /// One expression node, met by the generic pass.
    fn expr(&mut self, expr: &Expr) {
        let as_stored = self.output_exprs.contains(&address(expr));
        match expr {
            Expr::Identifier(ident) => self.bare_column(fold(ident), as_stored),
            Expr::CompoundIdentifier(parts) => self.qualified_column(parts, as_stored),
            Expr::Wildcard(_) => self.every_column_of_scope(false),
            Expr::QualifiedWildcard(name, _) => self.whole_row(name, false),
            Expr::Function(function) => {
                let args = match &function.args {
                    FunctionArguments::List(list) => list.args.as_slice(),
                    _ => &[],
                };
                self.called(&function.name, args);
                if let FunctionArguments::List(list) = &function.args {
                    for arg in &list.args {
                        let arg = match arg {
                            FunctionArg::Named { arg, .. }
                            | FunctionArg::ExprNamed { arg, .. }
                            | FunctionArg::Unnamed(arg) => arg,
                        };
                        if let FunctionArgExpr::QualifiedWildcard(name) = arg {
                            self.whole_row(name, false);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// A function called with `args`: named, and if it is a built-in one
    /// that acts beyond its value, or `set_config()`, what it does noted.
    fn called(&mut self, name: &ObjectName, args: &[FunctionArg]) {
        self.touched.function(name);
        let function = table_ref(name);
        let builtin = matches!(function.schema.as_deref(), None | Some("pg_catalog"));
        if !builtin {
            return;
        }
        if let Some(act) = builtins::act_of(&function.name) {
            self.acts(&function.name, act, args);
            return;
        }
        if function.name != "set_config" {
            return;
        }
        let text = |index: usize| plain_string(args, index);
        let (name, name_known) = match text(0) {
            Some(Ok(name)) => (name.to_ascii_lowercase(), true),
            Some(Err(written)) => (written, false),
            None => (String::new(), false),
        };
        let value = text(1).map(|value| value.unwrap_or_else(|written| written));
        self.set_config.push(SetConfigCall {
            change: SettingChange { name, value },
            name_known,
        });
    }

    /// Notes what the built-in `function` called with `args` does: the
    /// large objects or the sequence it reads or writes as a table touched,
    /// anything else as the kind of statement it amounts to. A sequence
    /// named by anything but a plain string is known only when the call
    /// runs: the call is judged as a utility, which no reading policy lets
    /// through unseen.
    fn acts(&mut self, function: &str, act: builtins::Act, args: &[FunctionArg]) {
        use builtins::Act;
        let acting = |kind| ActingCall {
            kind,
            command: format!("{function}()"),
        };
        match act {
            Act::Utility => self.acting.push(acting(StatementKind::Utility)),
            Act::Notification => self.acting.push(acting(StatementKind::Notification)),
            Act::LargeObjects(action) => self.touched.table(
                TableRef {
                    schema: Some("pg_catalog".to_owned()),
                    name: builtins::LARGE_OBJECTS.to_owned(),
                },
                action,
            ),
            Act::WritesSequence | Act::ReadsSequence => {
                let action = match act {
                    Act::WritesSequence => TableAction::Update,
                    _ => TableAction::Read,
                };
                match plain_string(args, 0)
                    .and_then(Result::ok)
                    .as_deref()
                    .and_then(relation_named)
                {
                    Some(sequence) => {
                        self.names_from_values = true;
                        self.touched.table(sequence, action);
                    }
                    None => self.acting.push(acting(StatementKind::Utility)),
                }
            }
        }
    }

    /// Runs sqlparser's visitor from inside the current scopes: every
    /// expression it meets outside a nested query is resolved here, every
    /// nested query not yet walked is walked with these scopes around it,
    /// and every relation not yet claimed counts as read.
    pub fn generic(&mut self, visit: impl FnOnce(&mut Generic<'_>)) {
        let mut generic = Generic {
            walker: self,
            depth: 0,
        };
        visit(&mut generic);
    }
}

/// Argument `index` of a call: the text of a plain string (`'x'`, or
/// `'x'::regclass` and the like: a cast of one), or as written when it is
/// anything else; `None` when there is no such argument.
fn plain_string(args: &[FunctionArg], index: usize) -> Option<Result<String, String>> {
    let arg = match args.get(index)? {
        FunctionArg::Named { arg, .. }
        | FunctionArg::ExprNamed { arg, .. }
        | FunctionArg::Unnamed(arg) => arg,
    };
    let mut expr = match arg {
        FunctionArgExpr::Expr(expr) => expr,
        other => return Some(Err(other.to_string())),
    };
    while let Expr::Cast { expr: inner, .. } | Expr::Nested(inner) = expr {
        expr = inner;
    }
    Some(match expr {
        Expr::Value(value) => match &value.value {
            Value::SingleQuotedString(text) => Ok(text.clone()),
            other => Err(other.to_string()),
        },
        other => Err(other.to_string()),
    })
}

/// The relation a `regclass` text names, read as PostgreSQL reads it:
/// `name`, `schema.name` or `database.schema.name`, each part a plain
/// identifier (folded to lower case) or a quoted one (`"Orders"`, `""`
/// for a quote inside). `None` for text that is no such name, and for an
/// OID (`'16400'`).
pub fn relation_named(text: &str) -> Option<TableRef> {
    let mut parts = Vec::new();
    let mut rest = text.trim();
    // Digits are an OID, and `-` none: which relation is the catalog's to
    // say.
    if rest == "-" || (!rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    loop {
        let (part, after) = if let Some(quoted) = rest.strip_prefix('"') {
            let mut part = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                match chars.next()? {
                    (at, '"') if quoted[at + 1..].starts_with('"') => {
                        part.push('"');
                        chars.next();
                    }
                    (at, '"') => break at + 1,
                    (_, c) => part.push(c),
                }
            };
            (part, &quoted[end..])
        } else {
            let end = rest.find(['.', '"']).unwrap_or(rest.len());
            let word = rest[..end].trim();
            let plain = !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '$');
            if !plain {
                return None;
            }
            (fold(&Ident::new(word)), &rest[end..])
        };
        if part.is_empty() {
            return None;
        }
        parts.push(part);
        rest = after.trim_start();
        match rest.strip_prefix('.') {
            Some(next) => rest = next.trim_start(),
            None if rest.is_empty() => break,
            None => return None,
        }
    }
    let name = parts.pop()?;
    let schema = parts.pop();
    // A database name, if given, can only be the current one.
    (parts.len() <= 1).then_some(TableRef { schema, name })
}

/// The constraint of a join, for the operators that have one.
fn join_constraint(operator: &JoinOperator) -> Option<&JoinConstraint> {
    match operator {
        JoinOperator::Join(constraint)
        | JoinOperator::Inner(constraint)
        | JoinOperator::Left(constraint)
        | JoinOperator::LeftOuter(constraint)
        | JoinOperator::Right(constraint)
        | JoinOperator::RightOuter(constraint)
        | JoinOperator::FullOuter(constraint)
        | JoinOperator::CrossJoin(constraint)
        | JoinOperator::Semi(constraint)
        | JoinOperator::LeftSemi(constraint)
        | JoinOperator::RightSemi(constraint)
        | JoinOperator::Anti(constraint)
        | JoinOperator::LeftAnti(constraint)
        | JoinOperator::RightAnti(constraint)
        | JoinOperator::StraightJoin(constraint)
        | JoinOperator::AsOf { constraint, .. } => Some(constraint),
        JoinOperator::CrossApply
        | JoinOperator::OuterApply
        | JoinOperator::ArrayJoin
        | JoinOperator::LeftArrayJoin
        | JoinOperator::InnerArrayJoin => None,
    }
}

/// Built-in functions and types a whole row can be handed to by attribute
/// notation (`c.to_jsonb` is `to_jsonb(c)`, `c.text` is `c::text`): those
/// taking one argument of any type or a record, and the string types every
/// row casts to. What they return holds the row's values, computed on.
const ROW_FUNCTIONS: &[&str] = &[
    "to_json",
    "to_jsonb",
    "row_to_json",
    "json_build_array",
    "jsonb_build_array",
    "hash_record",
    "record_out",
    "record_send",
    "quote_literal",
    "quote_nullable",
    "concat",
    "pg_column_size",
    // Aggregates too: `c.json_agg` is json_agg(c).
    "json_agg",
    "jsonb_agg",
    "array_agg",
    // PostgreSQL 16's, for a newer server, and the hstore extension's
    // hstore(record): not among PostgreSQL 15's built-ins, so each counts
    // as a call sluice cannot see into.
    "json_agg_strict",
    "jsonb_agg_strict",
    "any_value",
    "hstore",
    "text",
    "varchar",
    "bpchar",
    "name",
    "char",
];

/// The built-in function `c.name` calls, if `name` is one a whole row can
/// be handed to.
fn row_function(name: &str) -> Option<Ident> {
    ROW_FUNCTIONS
        .contains(&name)
        .then(|| Ident::new(name.to_owned()))
}

/// Whether a RETURNING item names `old` or `new`, alone or as the first
/// part of a name (`old.pan`, `old.*`).
fn names_old_or_new(item: &SelectItem) -> bool {
    let is_row = |ident: &Ident| matches!(fold(ident).as_str(), "old" | "new");
    if let SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(name), _) =
        item
        && name
            .0
            .first()
            .and_then(ObjectNamePart::as_ident)
            .is_some_and(is_row)
    {
        return true;
    }
    let mut found = false;
    let _ = sqlparser::ast::visit_expressions(item, |expr| {
        found |= match expr {
            Expr::Identifier(ident) => is_row(ident),
            Expr::CompoundIdentifier(parts) => parts.first().is_some_and(is_row),
            _ => false,
        };
        ControlFlow::<()>::Continue(())
    });
    found
}

/// Whether a query's ORDER BY, if any, sorts only by what it names: no
/// position, no alias of the select list, and no set operation's output.
fn order_names_no_output_column(query: &Query) -> bool {
    let Some(order) = &query.order_by else {
        return true;
    };
    let OrderByKind::Expressions(items) = &order.kind else {
        return false;
    };
    let SetExpr::Select(select) = query.body.as_ref() else {
        return false;
    };
    let aliases: Vec<String> = select
        .projection
        .iter()
        .filter_map(|item| match item {
            SelectItem::ExprWithAlias { alias, .. } => Some(fold(alias)),
            _ => None,
        })
        .collect();
    items.iter().all(|item| match &item.expr {
        Expr::Value(_) => false,
        Expr::Identifier(ident) => !aliases.contains(&fold(ident)),
        _ => true,
    })
}

/// A column named bare: `pan`, `c.pan`, `public.cards.pan`.
fn is_bare_column(expr: &Expr) -> bool {
    matches!(expr, Expr::Identifier(_) | Expr::CompoundIdentifier(_))
}

fn alias_or(alias: Option<&sqlparser::ast::TableAlias>, name: &ObjectName) -> String {
    match alias {
        Some(alias) => fold(&alias.name),
        None => table_ref(name).name,
    }
}

fn factor_alias(factor: &TableFactor) -> Option<String> {
    let alias = match factor {
        TableFactor::TableFunction { alias, .. }
        | TableFactor::UNNEST { alias, .. }
        | TableFactor::JsonTable { alias, .. }
        | TableFactor::OpenJsonTable { alias, .. }
        | TableFactor::XmlTable { alias, .. } => alias.as_ref(),
        _ => None,
    };
    alias.map(|a| fold(&a.name))
}

/// sqlparser's visitor, steered by the walker (see [`Walker::generic`]).
pub struct Generic<'w> {
    walker: &'w mut Walker,
    /// How many nested queries deep the visitor is: expressions inside a
    /// nested query belong to that query's own walk.
    depth: usize,
}

impl Visitor for Generic<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if self.depth == 0 && !self.walker.walked.contains(&address(query)) {
            self.walker.query(query);
        }
        self.depth += 1;
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<()> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if self.depth == 0 {
            self.walker.expr(expr);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        if self.depth == 0 && !self.walker.claimed.contains(&address(relation)) {
            let action = self.walker.unclaimed;
            self.walker.relation(relation, action);
        }
        ControlFlow::Continue(())
    }
}
