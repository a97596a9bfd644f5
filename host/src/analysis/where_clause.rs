//! Whether a DELETE or UPDATE has a real WHERE.
//!
//! A WHERE is real only if it restricts a column of the target table by
//! comparison with values that do not depend on the row: literals,
//! parameters, and expressions of those and of built-in functions that are
//! not volatile (`now()`, `lower('X')`). Anything else — no WHERE, a
//! constant, a tautology (`true`, `1=1`, `id=id`, `NOT false`, `id IS NOT
//! NULL`), a bare `$1`, a subquery over the same table, a join condition —
//! counts as none. The rule is deliberately narrow: a guard that blocks
//! bulk writes must not be talked out of it, and a legitimate statement
//! can always say which rows it means.

use std::ops::ControlFlow;

use sqlparser::ast::{
    BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, InTarget, ObjectName,
    Query, TableAlias, TableFactor, UnaryOperator, Value, Visit, Visitor,
};

use super::builtins;
use super::walk::{fold, table_ref};

/// The names the target of a DELETE or UPDATE goes by.
#[derive(Debug, Clone)]
pub struct Target {
    /// The table's name, and its alias if it has one.
    pub references: Vec<String>,
    /// The table's own name (for subqueries over the same table).
    pub table: String,
    /// Whether the target is the statement's only table, so that an
    /// unqualified column must be one of its own.
    pub alone: bool,
}

/// Whether `selection` is a real WHERE for `target`.
pub fn is_real(selection: Option<&Expr>, target: &Target) -> bool {
    selection.is_some_and(|expr| restricts(expr, false, target))
}

/// Whether `expr` (negated when `negated`) is certain to restrict the
/// target's rows.
fn restricts(expr: &Expr, negated: bool, target: &Target) -> bool {
    match expr {
        Expr::Nested(inner) => restricts(inner, negated, target),
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr,
        } => restricts(expr, !negated, target),
        // One restricting side is enough for AND; OR needs both. Under NOT
        // they trade places.
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            if negated {
                restricts(left, true, target) && restricts(right, true, target)
            } else {
                restricts(left, false, target) || restricts(right, false, target)
            }
        }
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Or,
            right,
        } => {
            if negated {
                restricts(left, true, target) || restricts(right, true, target)
            } else {
                restricts(left, false, target) && restricts(right, false, target)
            }
        }
        Expr::BinaryOp { left, op, right } if is_comparison(op) => {
            compares_column_with_value(left, right, target)
        }
        Expr::AnyOp { left, right, .. } | Expr::AllOp { left, right, .. } => {
            is_target_column(left, target) && is_row_independent(right, target)
        }
        Expr::IsNull(inner) => !negated && is_target_column(inner, target),
        Expr::IsNotNull(inner) => negated && is_target_column(inner, target),
        Expr::IsTrue(inner) | Expr::IsFalse(inner) => is_target_column(inner, target),
        Expr::In {
            expr,
            target: InTarget::List(list),
            ..
        } => {
            is_target_column(expr, target)
                && !list.is_empty()
                && list.iter().all(|value| is_row_independent(value, target))
        }
        Expr::In {
            expr,
            target: InTarget::Subquery(query),
            ..
        } => is_target_column(expr, target) && is_independent_query(query, target),
        Expr::Between {
            expr, low, high, ..
        } => {
            is_target_column(expr, target)
                && is_row_independent(low, target)
                && is_row_independent(high, target)
        }
        Expr::Like { expr, pattern, .. } | Expr::ILike { expr, pattern, .. } => {
            is_target_column(expr, target)
                && is_row_independent(pattern, target)
                && !matches_everything(pattern)
        }
        // A boolean column on its own (`WHERE archived`).
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => is_target_column(expr, target),
        _ => false,
    }
}

fn is_comparison(op: &BinaryOperator) -> bool {
    matches!(
        op,
        BinaryOperator::Eq
            | BinaryOperator::NotEq
            | BinaryOperator::Lt
            | BinaryOperator::LtEq
            | BinaryOperator::Gt
            | BinaryOperator::GtEq
    )
}

fn compares_column_with_value(left: &Expr, right: &Expr, target: &Target) -> bool {
    (is_target_column(left, target) && is_row_independent(right, target))
        || (is_target_column(right, target) && is_row_independent(left, target))
}

/// A column of the target, bare or cast (`id`, `o.id`, `id::text`).
fn is_target_column(expr: &Expr, target: &Target) -> bool {
    match expr {
        Expr::Nested(inner) | Expr::Cast { expr: inner, .. } => is_target_column(inner, target),
        Expr::Identifier(_) => target.alone,
        Expr::CompoundIdentifier(parts) => match parts.as_slice() {
            [reference, _column] => target.references.contains(&fold(reference)),
            [_schema, table, _column] => fold(table) == target.table,
            _ => false,
        },
        _ => false,
    }
}

/// A `LIKE` pattern of nothing but `%`.
fn matches_everything(pattern: &Expr) -> bool {
    match pattern {
        Expr::Value(value) => match &value.value {
            Value::SingleQuotedString(text) | Value::EscapedStringLiteral(text) => {
                !text.is_empty() && text.chars().all(|c| c == '%')
            }
            _ => false,
        },
        _ => false,
    }
}

/// Whether a value is the same for every row: literals, parameters and
/// expressions of those and of non-volatile built-in functions. A bare
/// parameter qualifies as a value to compare with; on its own (`WHERE $1`)
/// it is no restriction, which [`restricts`] never asks this about.
fn is_row_independent(expr: &Expr, target: &Target) -> bool {
    match expr {
        Expr::Value(_) | Expr::TypedString(_) | Expr::Interval(_) => true,
        Expr::Nested(inner)
        | Expr::Cast { expr: inner, .. }
        | Expr::UnaryOp { expr: inner, .. } => is_row_independent(inner, target),
        Expr::BinaryOp { left, right, .. } => {
            is_row_independent(left, target) && is_row_independent(right, target)
        }
        Expr::Array(array) => array.elem.iter().all(|e| is_row_independent(e, target)),
        Expr::Tuple(items) => items.iter().all(|e| is_row_independent(e, target)),
        Expr::Function(function) => {
            let name = table_ref(&function.name);
            let builtin = matches!(name.schema.as_deref(), None | Some("pg_catalog"))
                && builtins::is_builtin(&name.name)
                && !builtins::is_volatile(&name.name);
            builtin
                && function.over.is_none()
                && function.filter.is_none()
                && match &function.args {
                    FunctionArguments::None => true,
                    FunctionArguments::Subquery(query) => is_independent_query(query, target),
                    FunctionArguments::List(list) => list.args.iter().all(|arg| match arg {
                        FunctionArg::Named { arg, .. }
                        | FunctionArg::ExprNamed { arg, .. }
                        | FunctionArg::Unnamed(arg) => match arg {
                            FunctionArgExpr::Expr(e) => is_row_independent(e, target),
                            _ => false,
                        },
                    }),
                }
        }
        Expr::Subquery(query) => is_independent_query(query, target),
        _ => false,
    }
}

/// Whether a subquery's values are the same for every target row: it
/// does not read the target table, and every column it names is
/// qualified with one of its own tables. A bare name could be the outer
/// row's (PostgreSQL looks outward when the inner tables lack the column),
/// which would make `id IN (SELECT id FROM other)` a tautology; without
/// the catalog only qualified names are certain.
fn is_independent_query(query: &Query, target: &Target) -> bool {
    /// Pass one: the names the subquery's own FROM items go by.
    #[derive(Default)]
    struct OwnNames(Vec<String>);
    impl Visitor for OwnNames {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
            if let TableFactor::Table { name, .. } = factor {
                self.0.push(table_ref(name).name);
            }
            if let Some(alias) = factor_alias(factor) {
                self.0.push(fold(&alias.name));
            }
            ControlFlow::Continue(())
        }
    }
    /// Pass two: anything that ties the subquery to the outer row.
    struct Dependence<'t> {
        target: &'t Target,
        own: Vec<String>,
    }
    impl Visitor for Dependence<'_> {
        type Break = ();
        fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
            if table_ref(relation).name == self.target.table {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            let tied = match expr {
                Expr::Identifier(_) => true,
                Expr::CompoundIdentifier(parts) => match parts.len().checked_sub(2) {
                    Some(at) => !self.own.contains(&fold(&parts[at])),
                    None => true,
                },
                Expr::QualifiedWildcard(..) | Expr::Wildcard(_) => false,
                _ => false,
            };
            if tied {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
    }
    let mut own = OwnNames::default();
    let _ = query.visit(&mut own);
    query
        .visit(&mut Dependence { target, own: own.0 })
        .is_continue()
}

fn factor_alias(factor: &TableFactor) -> Option<&TableAlias> {
    match factor {
        TableFactor::Table { alias, .. }
        | TableFactor::Derived { alias, .. }
        | TableFactor::TableFunction { alias, .. }
        | TableFactor::Function { alias, .. }
        | TableFactor::UNNEST { alias, .. }
        | TableFactor::NestedJoin { alias, .. } => alias.as_ref(),
        _ => None,
    }
}
