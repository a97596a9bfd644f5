//! The guard against the quickstart's rules.

use sluice_plugin::types::{
    CopyEndpoint, Decision, FunctionRef, SettingChange, Statement, StatementKind, TableAccess,
    TableAction, TableRef,
};

use super::*;

const QUICKSTART: &str = include_str!("../../../../examples/quickstart/guard.toml");

fn rules() -> Rules {
    Rules::parse(QUICKSTART).expect("the quickstart rules parse")
}

/// The rule that refuses `statement` for a member of `group`, if any.
fn refused_by(statement: &Statement, group: &str) -> Option<String> {
    match judge(&rules(), statement, || vec![group.to_owned()]) {
        Decision::Allow => None,
        Decision::Deny(denial) => Some(denial.rule),
        Decision::RequireApproval(_) => panic!("the guard never asks for approval"),
    }
}

fn kind(kind: StatementKind, text: &str) -> Statement {
    Statement::new(kind, text)
}

fn with_command(kind: StatementKind, command: &str) -> Statement {
    Statement {
        command: command.to_owned(),
        ..Statement::new(kind, command)
    }
}

fn table(name: &str, action: TableAction) -> TableAccess {
    TableAccess {
        table: TableRef {
            schema: None,
            name: name.to_owned(),
        },
        action,
    }
}

fn builtin(name: &str) -> FunctionRef {
    FunctionRef {
        schema: None,
        name: name.to_owned(),
        builtin: true,
    }
}

fn setting(name: &str, value: Option<&str>) -> Statement {
    Statement {
        settings: vec![SettingChange {
            name: name.to_owned(),
            value: value.map(str::to_owned),
        }],
        ..Statement::new(StatementKind::Setting, "SET ...")
    }
}

fn copy(kind_: StatementKind, endpoint: CopyEndpoint) -> Statement {
    Statement {
        copy_endpoint: Some(endpoint),
        ..kind(kind_, "COPY ...")
    }
}

#[test]
fn ordinary_statements_pass_for_everyone() {
    for group in ["agents", "analysts", "admins", "nobody"] {
        for statement in [
            kind(StatementKind::Select, "SELECT * FROM orders"),
            Statement {
                tables: vec![table("orders", TableAction::Delete)],
                ..kind(StatementKind::Delete, "DELETE FROM orders WHERE id = 1")
            },
            kind(StatementKind::Transaction, "BEGIN"),
            setting("search_path", Some("public, \"$user\"")),
            setting("search_path", None),
            setting("application_name", Some("report")),
            Statement {
                functions: vec![builtin("lower")],
                ..kind(StatementKind::Select, "SELECT lower('x')")
            },
        ] {
            assert_eq!(
                refused_by(&statement, group),
                None,
                "{group}: {statement:?}"
            );
        }
    }
}

#[test]
fn bulk_writes_are_refused_for_everyone() {
    let bulk = Statement {
        has_where: false,
        tables: vec![table("orders", TableAction::Delete)],
        ..kind(
            StatementKind::Select,
            "WITH d AS (DELETE FROM orders) SELECT 1",
        )
    };
    for group in ["agents", "analysts", "admins"] {
        assert_eq!(refused_by(&bulk, group).as_deref(), Some("no-bulk-write"));
    }
}

#[test]
fn admins_are_exempt_where_the_rules_say_so() {
    let truncate = Statement {
        tables: vec![table("orders", TableAction::Truncate)],
        ..with_command(StatementKind::Ddl, "TRUNCATE TABLE")
    };
    let drop = with_command(StatementKind::Ddl, "DROP TABLE");
    for statement in [&truncate, &drop] {
        assert!(refused_by(statement, "agents").is_some());
        assert!(refused_by(statement, "analysts").is_some());
        assert_eq!(refused_by(statement, "admins"), None);
    }
    assert_eq!(
        refused_by(&truncate, "agents").as_deref(),
        Some("no-truncate")
    );
    assert_eq!(refused_by(&drop, "agents").as_deref(), Some("no-drop"));
}

#[test]
fn exports_are_refused_to_agents_only() {
    let export = copy(StatementKind::CopyOut, CopyEndpoint::Stdio);
    assert_eq!(refused_by(&export, "agents").as_deref(), Some("no-export"));
    assert_eq!(refused_by(&export, "analysts"), None);
    let import = copy(StatementKind::CopyIn, CopyEndpoint::Stdio);
    assert_eq!(refused_by(&import, "agents"), None);
    // An export whose query takes an advisory lock comes as a utility: it
    // exports all the same.
    let raised = copy(StatementKind::Utility, CopyEndpoint::Stdio);
    assert_eq!(refused_by(&raised, "agents").as_deref(), Some("no-export"));
}

#[test]
fn server_files_and_programs_are_refused_for_everyone() {
    for statement in [
        copy(StatementKind::CopyOut, CopyEndpoint::Program("curl".into())),
        copy(
            StatementKind::CopyIn,
            CopyEndpoint::Program("cat /etc/passwd".into()),
        ),
        copy(StatementKind::CopyOut, CopyEndpoint::File("/tmp/x".into())),
        copy(
            StatementKind::CopyIn,
            CopyEndpoint::File("/etc/passwd".into()),
        ),
        Statement {
            functions: vec![builtin("pg_read_file")],
            ..kind(StatementKind::Select, "SELECT pg_read_file('x')")
        },
        Statement {
            functions: vec![builtin("lo_import")],
            ..kind(StatementKind::Select, "SELECT lo_import('x')")
        },
        Statement {
            functions: vec![builtin("lo_export")],
            ..kind(StatementKind::Select, "SELECT lo_export(1, 'x')")
        },
    ] {
        for group in ["agents", "analysts", "admins"] {
            assert_eq!(
                refused_by(&statement, group).as_deref(),
                Some("no-server-files"),
                "{statement:?}"
            );
        }
    }
    // A function of the same name that is not PostgreSQL's is not a file
    // function (the access policy decides about user functions).
    let lookalike = Statement {
        functions: vec![FunctionRef {
            schema: Some("app".into()),
            name: "pg_read_file".into(),
            builtin: false,
        }],
        ..kind(StatementKind::Select, "SELECT app.pg_read_file()")
    };
    assert_eq!(refused_by(&lookalike, "agents"), None);
}

/// adminpack installs its file functions in pg_catalog, but a fresh
/// cluster has none of them, so sluice does not mark them built in: named
/// in pg_catalog or unqualified (PostgreSQL looks in pg_catalog first),
/// they are the server's file functions all the same.
#[test]
fn adminpack_file_functions_are_refused_though_not_marked_builtin() {
    for (schema, name) in [
        (None, "pg_file_write"),
        (Some("pg_catalog"), "pg_file_write"),
        (None, "pg_file_rename"),
        (None, "pg_file_unlink"),
        (None, "pg_file_sync"),
        (Some("pg_catalog"), "pg_logdir_ls"),
        (None, "pg_read_file_old"),
    ] {
        let statement = Statement {
            functions: vec![FunctionRef {
                schema: schema.map(str::to_owned),
                name: name.to_owned(),
                builtin: false,
            }],
            ..kind(
                StatementKind::Select,
                "SELECT pg_file_write('/tmp/x', 'y', false)",
            )
        };
        for group in ["agents", "analysts", "admins"] {
            assert_eq!(
                refused_by(&statement, group).as_deref(),
                Some("no-server-files"),
                "{schema:?}.{name}"
            );
        }
    }
}

/// file_fdw's `program` and `filename` options are COPY ... FROM PROGRAM
/// and COPY ... FROM a server file by another name, run each time the
/// foreign table is read: making one, or what it needs, is refused as code.
#[test]
fn extensions_and_foreign_data_are_refused_as_code() {
    // The commands as sluice's analysis names them, by their leading
    // keywords: CREATE FOREIGN DATA WRAPPER arrives as `CREATE FOREIGN
    // DATA` and IMPORT FOREIGN SCHEMA as `IMPORT` (the longer spellings are
    // matched too, should the analysis ever name them whole).
    for (kind_, command) in [
        (StatementKind::Ddl, "CREATE EXTENSION"),
        (StatementKind::Ddl, "ALTER EXTENSION"),
        (StatementKind::Ddl, "CREATE SERVER"),
        (StatementKind::Ddl, "ALTER SERVER"),
        (StatementKind::Ddl, "CREATE FOREIGN TABLE"),
        (StatementKind::Ddl, "ALTER FOREIGN TABLE"),
        (StatementKind::Ddl, "CREATE FOREIGN DATA"),
        (StatementKind::Ddl, "ALTER FOREIGN DATA"),
        (StatementKind::Ddl, "CREATE FOREIGN DATA WRAPPER"),
        (StatementKind::Ddl, "CREATE USER MAPPING"),
        (StatementKind::Privilege, "CREATE USER MAPPING"),
        (StatementKind::Ddl, "ALTER USER MAPPING"),
        (StatementKind::Other, "IMPORT"),
        (StatementKind::Other, "IMPORT FOREIGN SCHEMA"),
        // A shared library loaded, another server subscribed to.
        (StatementKind::Other, "LOAD"),
        (StatementKind::Ddl, "CREATE SUBSCRIPTION"),
        (StatementKind::Ddl, "ALTER SUBSCRIPTION"),
    ] {
        let statement = with_command(kind_, command);
        for group in ["agents", "analysts", "admins"] {
            assert_eq!(
                refused_by(&statement, group).as_deref(),
                Some("no-code"),
                "{command}"
            );
        }
    }
    let Decision::Deny(denial) = judge(
        &rules(),
        &with_command(StatementKind::Ddl, "CREATE FOREIGN TABLE"),
        Vec::new,
    ) else {
        panic!("CREATE FOREIGN TABLE was not refused")
    };
    assert!(
        denial
            .reason
            .starts_with("CREATE FOREIGN TABLE is not allowed: ")
            && denial.reason.contains("program"),
        "{}",
        denial.reason
    );
    // Neighbours that define no code: a table, a role, a schema.
    for command in [
        "CREATE TABLE",
        "ALTER TABLE",
        "CREATE USER",
        "CREATE SCHEMA",
    ] {
        assert_eq!(
            refused_by(&with_command(StatementKind::Ddl, command), "admins"),
            None,
            "{command}"
        );
    }
}

#[test]
fn code_role_and_settings_changes_are_refused() {
    for (statement, rule) in [
        (
            with_command(StatementKind::Ddl, "CREATE FUNCTION"),
            "no-code",
        ),
        (
            with_command(StatementKind::Ddl, "CREATE PROCEDURE"),
            "no-code",
        ),
        (
            with_command(StatementKind::Ddl, "CREATE TRIGGER"),
            "no-code",
        ),
        (with_command(StatementKind::Ddl, "CREATE RULE"), "no-code"),
        (
            with_command(StatementKind::Ddl, "ALTER FUNCTION"),
            "no-code",
        ),
        (
            with_command(StatementKind::Privilege, "SET ROLE"),
            "no-privilege-change",
        ),
        (
            with_command(StatementKind::Privilege, "SET SESSION AUTHORIZATION"),
            "no-privilege-change",
        ),
        (setting("role", Some("postgres")), "no-privilege-change"),
        (
            setting("session_replication_role", Some("replica")),
            "no-privilege-change",
        ),
        (
            setting("standard_conforming_strings", Some("off")),
            "no-privilege-change",
        ),
        (
            setting("sluice.principal", Some("root")),
            "no-privilege-change",
        ),
        (
            setting("search_path", Some("evil, public")),
            "no-privilege-change",
        ),
        // The quickstart's `also = ["enable_*"]`: planner settings that,
        // with an index on a tagged column, order rows by hidden values.
        (
            setting("enable_seqscan", Some("off")),
            "no-privilege-change",
        ),
        (setting("enable_bitmapscan", None), "no-privilege-change"),
        (
            setting("random_page_cost", Some("0.01")),
            "no-privilege-change",
        ),
        (
            setting("search_path", Some("\"Evil\"")),
            "no-privilege-change",
        ),
        (
            Statement {
                functions: vec![builtin("set_config")],
                ..kind(
                    StatementKind::Select,
                    "SELECT set_config('role', 'x', false)",
                )
            },
            "no-privilege-change",
        ),
    ] {
        for group in ["agents", "analysts", "admins"] {
            assert_eq!(
                refused_by(&statement, group).as_deref(),
                Some(rule),
                "{statement:?}"
            );
        }
    }
}

#[test]
fn a_star_only_ends_a_setting_prefix() {
    let rules = |also: &str| Rules::parse(&format!("[settings]\nalso = [{also}]"));
    let prefixed = rules("\"Enable_*\"").expect("a prefix");
    assert!(prefixed.settings.refuses(&SettingChange {
        name: "enable_hashjoin".into(),
        value: Some("off".into()),
    }));
    assert!(!prefixed.settings.refuses(&SettingChange {
        name: "work_mem".into(),
        value: Some("64MB".into()),
    }));
    for bad in [
        "\"enable_*_scan\"",
        "\"*enable\"",
        "\"enable_**\"",
        "\"*\"",
        "\"\"",
        "\" enable_*\"",
        "\"enable-seqscan\"",
    ] {
        let Err(error) = rules(bad) else {
            panic!("{bad} was taken")
        };
        assert!(error.contains("not a setting's name"), "{bad}: {error}");
    }
}

#[test]
fn alter_system_is_refused_parsed_or_not() {
    let parsed = with_command(StatementKind::Ddl, "ALTER SYSTEM");
    let unparsed = with_command(StatementKind::Unparsed, "ALTER SYSTEM");
    for group in ["agents", "admins"] {
        assert_eq!(
            refused_by(&parsed, group).as_deref(),
            Some("no-alter-system")
        );
        assert_eq!(refused_by(&unparsed, group).as_deref(), Some("unparsed"));
    }
}

#[test]
fn unparsed_statements_pass_only_where_allowed() {
    let vacuum = with_command(StatementKind::Unparsed, "VACUUM");
    assert_eq!(refused_by(&vacuum, "admins"), None);
    assert_eq!(refused_by(&vacuum, "agents").as_deref(), Some("unparsed"));
    let several = Statement {
        is_multi: true,
        ..vacuum.clone()
    };
    assert_eq!(refused_by(&several, "admins").as_deref(), Some("unparsed"));
    for command in ["DO", "COPY", ""] {
        let statement = with_command(StatementKind::Unparsed, command);
        assert_eq!(
            refused_by(&statement, "admins").as_deref(),
            Some("unparsed")
        );
    }
}

/// A command allowed to run unread still meets every rule its command
/// alone matches: `ALTER EXTENSION` (which the parser does not read) is
/// code all the same.
#[test]
fn an_allowed_unparsed_command_still_meets_the_rules() {
    let text = QUICKSTART.replace(
        "admins = [\"VACUUM\", \"ANALYZE\"]",
        "admins = [\"VACUUM\", \"ANALYZE\", \"ALTER EXTENSION\"]",
    );
    let rules = Rules::parse(&text).expect("the rules parse");
    let judged = |command: &str| match judge(
        &rules,
        &with_command(StatementKind::Unparsed, command),
        || vec!["admins".to_owned()],
    ) {
        Decision::Allow => None,
        Decision::Deny(denial) => Some(denial.rule),
        Decision::RequireApproval(_) => panic!("the guard never asks for approval"),
    };
    assert_eq!(judged("ALTER EXTENSION").as_deref(), Some("no-code"));
    assert_eq!(judged("VACUUM"), None);
}

#[test]
fn the_principal_is_fetched_only_when_a_rule_might_refuse() {
    let fetched = std::cell::Cell::new(false);
    let decision = judge(&rules(), &kind(StatementKind::Select, "SELECT 1"), || {
        fetched.set(true);
        vec![]
    });
    assert_eq!(decision, Decision::Allow);
    assert!(!fetched.get());
}

#[test]
fn rules_that_would_open_a_hole_are_refused() {
    for (text, why) in [
        ("[unparsed]\nadmins = [\"COPY\"]", "may never be allowed"),
        ("[unparsed]\nadmins = [\"copy\"]", "may never be allowed"),
        ("[unparsed]\nadmins = [\"DO\"]", "may never be allowed"),
        (
            "[unparsed]\nadmins = [\"alter  system\"]",
            "may never be allowed",
        ),
        ("[unparsed]\nadmins = [\"\"]", "may never be allowed"),
        ("[[rule]]\nname = \"x\"", "says nothing to block"),
        ("[[rule]]\nblock = \"drop-everything\"", "unknown block"),
        (
            "[[rule]]\nblock = \"drop\"\ngroups = []",
            "at least one group",
        ),
        ("[[rule]]\nblock = \"drop\"\nsurprise = 1", "unknown field"),
        ("[[rule]\nblock = \"drop\"", "rules file"),
        (
            "[[rule]]\nblock = \"drop\"\nname = \"no-drop\\n2099 INFO forged\"",
            "name \"no-drop\\n2099 INFO forged\" holds a control or invisible character",
        ),
        (
            "[[rule]]\nblock = \"drop\"\nname = \"no-\\u202edrop\"",
            "holds a control or invisible character",
        ),
        (
            "[[rule]]\nblock = \"drop\"\nreason = \"one\\u2028two\"",
            "holds a control or invisible character",
        ),
        (
            "[[rule]]\nblock = \"drop\"\nreason = \"no\\u0000\"",
            "reason \"no\\0\" holds a control or invisible character",
        ),
        (
            &format!("[[rule]]\nblock = \"drop\"\nname = \"{}\"", "n".repeat(129)),
            "name is longer than 128 characters",
        ),
        (
            &format!(
                "[[rule]]\nblock = \"drop\"\nreason = \"{}\"",
                "é".repeat(1025)
            ),
            "reason is longer than 2048 bytes",
        ),
    ] {
        let error = Rules::parse(text).expect_err(text);
        assert!(error.contains(why), "{text}: {error}");
    }
}

/// A reason may run over lines, and be indented: sluice shows it so.
#[test]
fn a_reason_may_hold_line_breaks_and_tabs() {
    let rules = Rules::parse("[[rule]]\nblock = \"drop\"\nreason = \"first\\n\\tsecond\"");
    assert!(rules.is_ok(), "{:?}", rules.err());
}

#[test]
fn a_custom_reason_replaces_the_blocks_own() {
    let rules = Rules::parse(
        "[[rule]]\nname = \"ask-dba\"\nblock = \"drop\"\nreason = \"ask the DBA team\"",
    )
    .unwrap();
    let decision = judge(
        &rules,
        &with_command(StatementKind::Ddl, "DROP TABLE"),
        Vec::new,
    );
    assert_eq!(decision, Decision::deny("ask-dba", "ask the DBA team"));
}
