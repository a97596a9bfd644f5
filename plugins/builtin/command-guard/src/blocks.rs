//! The kinds of dangerous statement the guard knows, and how each is
//! recognised in sluice's analysis of a statement.

use sluice_plugin::types::{CopyEndpoint, FunctionRef, Statement, StatementKind, TableAction};

use crate::rules::SettingsPolicy;

/// One kind of dangerous statement a rule can block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// A DELETE or UPDATE (anywhere, CTEs included; a MERGE that updates
    /// or deletes) without a real WHERE.
    WriteWithoutWhere,
    /// TRUNCATE.
    Truncate,
    /// DROP of anything.
    Drop,
    /// ALTER SYSTEM: rewrites the server's configuration.
    AlterSystem,
    /// COPY ... TO STDOUT (and COPY (query) TO STDOUT): a bulk export.
    CopyToStdout,
    /// COPY to or from a file on the database server.
    CopyFile,
    /// COPY to or from a program the database server runs.
    CopyProgram,
    /// DO blocks: procedural code the analysis cannot see into.
    Do,
    /// Creating or altering code that runs later or as someone else:
    /// functions, procedures, aggregates, rules, triggers, languages;
    /// extensions, and foreign tables with what they need (servers,
    /// wrappers, user mappings).
    CodeDefinition,
    /// SET ROLE, SET/RESET SESSION AUTHORIZATION.
    SetRole,
    /// SET or RESET of a setting that changes security or how SQL is read
    /// (see [`SettingsPolicy`]).
    DangerousSetting,
    /// `set_config()`: SET in a function call.
    SetConfig,
    /// Server-side file functions (`pg_read_file`, `pg_ls_dir`, adminpack's
    /// `pg_file_write`, ...) and large-object functions (`lo_import`,
    /// `lo_export`, ...).
    ServerFiles,
}

impl Block {
    pub const ALL: [Block; 13] = [
        Block::WriteWithoutWhere,
        Block::Truncate,
        Block::Drop,
        Block::AlterSystem,
        Block::CopyToStdout,
        Block::CopyFile,
        Block::CopyProgram,
        Block::Do,
        Block::CodeDefinition,
        Block::SetRole,
        Block::DangerousSetting,
        Block::SetConfig,
        Block::ServerFiles,
    ];

    /// The name rules files use.
    pub fn name(self) -> &'static str {
        match self {
            Block::WriteWithoutWhere => "write-without-where",
            Block::Truncate => "truncate",
            Block::Drop => "drop",
            Block::AlterSystem => "alter-system",
            Block::CopyToStdout => "copy-to-stdout",
            Block::CopyFile => "copy-file",
            Block::CopyProgram => "copy-program",
            Block::Do => "do",
            Block::CodeDefinition => "code-definition",
            Block::SetRole => "set-role",
            Block::DangerousSetting => "dangerous-setting",
            Block::SetConfig => "set-config",
            Block::ServerFiles => "server-files",
        }
    }

    pub fn from_name(name: &str) -> Option<Block> {
        Block::ALL.into_iter().find(|b| b.name() == name)
    }

    /// Whether `statement` is of this kind; if so, why, for the client.
    pub fn find(self, statement: &Statement, settings: &SettingsPolicy) -> Option<String> {
        let command = statement.command.as_str();
        match self {
            Block::WriteWithoutWhere => (!statement.has_where).then(|| {
                "DELETE and UPDATE must say which rows with a real WHERE (a column compared with a value)"
                    .to_owned()
            }),
            Block::Truncate => (command.starts_with("TRUNCATE")
                || statement
                    .tables
                    .iter()
                    .any(|t| t.action == TableAction::Truncate))
            .then(|| "TRUNCATE is not allowed".to_owned()),
            Block::Drop => command
                .starts_with("DROP ")
                .then(|| format!("{command} is not allowed")),
            Block::AlterSystem => {
                (command == "ALTER SYSTEM").then(|| "ALTER SYSTEM is not allowed".to_owned())
            }
            // By the endpoint, not the kind: a COPY whose query calls a
            // function that acts (an advisory lock, say) comes as the
            // utility it also is, and exports all the same. (A COPY FROM
            // STDIN raised so is refused too: fail closed.)
            Block::CopyToStdout => (statement.kind != StatementKind::CopyIn
                && statement.copy_endpoint == Some(CopyEndpoint::Stdio))
            .then(|| "COPY ... TO STDOUT exports data in bulk and is not allowed".to_owned()),
            Block::CopyFile => matches!(statement.copy_endpoint, Some(CopyEndpoint::File(_)))
                .then(|| "COPY to or from a server file is not allowed".to_owned()),
            Block::CopyProgram => matches!(statement.copy_endpoint, Some(CopyEndpoint::Program(_)))
                .then(|| "COPY to or from a program is not allowed".to_owned()),
            Block::Do => (command == "DO").then(|| "DO blocks are not allowed".to_owned()),
            Block::CodeDefinition => {
                code_definition(command).map(|why| format!("{command} is not allowed: {why}"))
            }
            Block::SetRole => (matches!(
                command,
                "SET ROLE" | "SET SESSION AUTHORIZATION" | "RESET SESSION AUTHORIZATION"
            ) || statement
                .settings
                .iter()
                .any(|s| s.name == "role" || s.name == "session_authorization"))
            .then(|| "changing the session's role is not allowed".to_owned()),
            Block::DangerousSetting => statement.settings.iter().find_map(|setting| {
                settings
                    .refuses(setting)
                    .then(|| format!("changing {} is not allowed", setting.name))
            }),
            Block::SetConfig => statement
                .functions
                .iter()
                .any(|f| f.builtin && f.name == "set_config")
                .then(|| "set_config() is not allowed; settings are changed with SET".to_owned()),
            Block::ServerFiles => statement
                .functions
                .iter()
                .find(|f| may_be_catalog_function(f) && is_server_file_function(&f.name))
                .map(|f| format!("{}() reaches the server's files and is not allowed", f.name)),
        }
    }
}

/// Why a foreign table, and what makes one, is refused: what it does is
/// decided when it is made and runs unseen each time it is read, where a
/// plain SELECT is all the guard sees.
const FOREIGN_DATA: &str = "a foreign table runs a program, reads a server file or queries \
     another server each time it is read (file_fdw's `program` is COPY ... FROM PROGRAM by \
     another name)";

/// Why `command` creates or changes code that runs later or with
/// another's rights, if it does.
///
/// Extensions and foreign data are here rather than under `server-files`
/// or `copy-program`: like a function's body, what they do runs later,
/// out of the guard's sight, and whoever may define code can already
/// reach the server's files and programs through a function. `command` is
/// the analysis's name for the statement, its leading keywords: CREATE
/// FOREIGN DATA WRAPPER arrives as `CREATE FOREIGN DATA`, IMPORT FOREIGN
/// SCHEMA as `IMPORT` (PostgreSQL's only IMPORT); the whole spellings are
/// matched too, should the analysis name them so.
fn code_definition(command: &str) -> Option<&'static str> {
    match command {
        "IMPORT" | "IMPORT FOREIGN SCHEMA" => return Some(FOREIGN_DATA),
        // A shared library's initialisation runs in the server process.
        "LOAD" => return Some("it loads a shared library into the server, code sluice never sees"),
        _ => {}
    }
    let object = command
        .strip_prefix("CREATE ")
        .or_else(|| command.strip_prefix("ALTER "))?;
    match object {
        "FUNCTION" | "PROCEDURE" | "ROUTINE" | "AGGREGATE" | "RULE" | "TRIGGER"
        | "EVENT TRIGGER" | "LANGUAGE" | "OPERATOR" | "CAST" | "TRANSFORM" => {
            Some("it defines code that runs later")
        }
        // An extension's script defines functions, some in C and some
        // reaching the server's files, programs or other servers (file_fdw,
        // adminpack, dblink), none of which the guard sees defined.
        "EXTENSION" => Some("an extension's script defines code that runs later"),
        // A user mapping holds the credentials foreign tables use.
        "SERVER" | "FOREIGN TABLE" | "FOREIGN DATA" | "FOREIGN DATA WRAPPER" | "USER MAPPING" => {
            Some(FOREIGN_DATA)
        }
        // It connects to another server with the connection string it
        // names, and writes what that server publishes into tables here,
        // in the background, unjudged.
        "SUBSCRIPTION" => Some(
            "a subscription connects to another server and writes what it sends into tables, \
             unseen by sluice",
        ),
        _ => None,
    }
}

/// Whether a call may be of PostgreSQL's function of that name, in
/// pg_catalog: built in, or named there or unqualified (PostgreSQL searches
/// pg_catalog first). The host marks built in only the functions a fresh
/// cluster has; extensions such as adminpack add more to pg_catalog.
fn may_be_catalog_function(function: &FunctionRef) -> bool {
    function.builtin || matches!(function.schema.as_deref(), None | Some("pg_catalog"))
}

/// PostgreSQL's functions that read, write or list files on the server
/// (adminpack's among them, and the older names pg_read_file kept for it),
/// and its large-object functions (which move data between the server's
/// files and the database, or hold data outside any table's rules).
fn is_server_file_function(name: &str) -> bool {
    matches!(
        name,
        "pg_read_file"
            | "pg_read_file_old"
            | "pg_read_binary_file"
            | "pg_stat_file"
            | "pg_ls_dir"
            | "pg_ls_logdir"
            | "pg_ls_waldir"
            | "pg_ls_tmpdir"
            | "pg_ls_archive_statusdir"
            | "pg_ls_logicalsnapdir"
            | "pg_ls_logicalmapdir"
            | "pg_ls_replslotdir"
            | "pg_file_write"
            | "pg_file_rename"
            | "pg_file_unlink"
            | "pg_file_sync"
            | "pg_logdir_ls"
            | "pg_file_read"
            | "pg_file_length"
    ) || name.starts_with("lo_")
        || matches!(name, "loread" | "lowrite")
}
