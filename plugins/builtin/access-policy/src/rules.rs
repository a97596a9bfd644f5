//! The rules file and the plugin's own config table, read and checked once
//! per instance.
//!
//! Everything an operator can get wrong is refused here, by `check_config`,
//! so a reload with a broken file keeps the rules already serving: a typo in
//! an action, a kind or a key would otherwise silently grant less — or, for
//! an `unparsed` allowance, more — than the operator meant.

use std::ops::Range;

use serde::Deserialize;
use sluice_plugin::config;
use sluice_plugin::types::{StatementKind, TableAction, TableRef};
use toml::Spanned;

/// The key of the rules file in the plugin's `files` table.
pub const RULES_FILE: &str = "rules";

/// Kinds judged by the tables they touch alone: what they may do is said
/// by `actions` on `tables`, so naming them in `kinds` would mean nothing.
pub const DATA_KINDS: [StatementKind; 8] = [
    StatementKind::Select,
    StatementKind::Insert,
    StatementKind::Update,
    StatementKind::Delete,
    StatementKind::Merge,
    StatementKind::CopyIn,
    StatementKind::CopyOut,
    StatementKind::Explain,
];

/// Kinds everyone may run unless `[defaults] kinds` says otherwise: they
/// touch no table (a prepared statement is judged again as what it runs,
/// at each EXECUTE or Bind), and a client without them cannot even end a
/// transaction or read a setting.
pub const DEFAULT_KINDS: [StatementKind; 3] = [
    StatementKind::Transaction,
    StatementKind::Setting,
    StatementKind::Prepared,
];

/// Commands no `unparsed` list may name. Their first keyword cannot tell a
/// harmless statement from a dangerous one: `COPY ... FROM STDIN` from
/// `COPY ... TO PROGRAM`, a DO block from any other (its body is code), and
/// `ALTER SYSTEM` rewrites the server's configuration. These must be read
/// by the parser to be judged, never let through on a keyword.
const NEVER_UNPARSED: [&str; 3] = ["COPY", "DO", "ALTER SYSTEM"];

/// The schema PostgreSQL searches first for every name without a schema,
/// and where every one of its catalog tables and views lives (all named
/// `pg_...`).
pub const CATALOG_SCHEMA: &str = "pg_catalog";

/// The parsed and checked rules: what each group may do.
#[derive(Debug)]
pub struct Rules {
    /// Schemas a table named without one may be in: the database's
    /// search path, as the operator declares it.
    pub(crate) default_schemas: Vec<String>,
    /// `[CATALOG_SCHEMA]`, as a slice to hand out like the others.
    pub(crate) catalog: Vec<String>,
    /// Kinds beyond the data kinds that everyone may run.
    pub(crate) default_kinds: Vec<StatementKind>,
    /// Columns holding cardholder data.
    pub(crate) tags: Vec<ColumnTag>,
    /// Who approves access to them; empty only when nothing is tagged.
    pub(crate) approver_group: String,
    pub(crate) grants: Vec<Grant>,
}

/// One `[[grant]]`: what its groups may do.
#[derive(Debug)]
pub(crate) struct Grant {
    pub groups: Vec<String>,
    pub tables: Vec<TablePattern>,
    pub actions: Vec<TableAction>,
    /// What these actions on these tables may do with tagged columns
    /// without approval.
    pub cardholder: Cardholder,
    /// Kinds beyond the data kinds and the default ones.
    pub kinds: Vec<StatementKind>,
    /// Commands of statements the parser could not read, upper case.
    pub unparsed: Vec<String>,
}

/// A table pattern of a grant.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TablePattern {
    /// `*`: every table of every schema.
    Any,
    /// `schema.*`: every table of one schema.
    Schema(String),
    /// `name` (in a default schema) or `schema.name`.
    Table {
        schema: Option<String>,
        name: String,
    },
}

/// A column tagged as cardholder data.
#[derive(Debug)]
pub(crate) struct ColumnTag {
    /// Its table; no schema means a default schema.
    pub table: TableRef,
    /// None for `table.*`: every column of the table.
    pub column: Option<String>,
    /// As the rules file writes it, for reasons.
    pub shown: String,
}

impl Grant {
    /// Whether the grant lets its groups read every table there is.
    pub fn reads_everything(&self) -> bool {
        self.actions.contains(&TableAction::Read) && self.tables.contains(&TablePattern::Any)
    }
}

impl TablePattern {
    /// Whether the pattern names table `name` of `schema`.
    /// `default_schemas` are the schemas a pattern without one stands for.
    pub fn matches(&self, schema: &str, name: &str, default_schemas: &[String]) -> bool {
        match self {
            TablePattern::Any => true,
            TablePattern::Schema(pattern) => pattern == schema,
            TablePattern::Table {
                schema: None,
                name: pattern,
            } => pattern == name && default_schemas.iter().any(|s| s == schema),
            TablePattern::Table {
                schema: Some(pattern_schema),
                name: pattern,
            } => pattern == name && pattern_schema == schema,
        }
    }
}

/// The plugin's config table (JSON from `[plugins.config]`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_schemas")]
    default_schemas: Vec<String>,
}

fn default_schemas() -> Vec<String> {
    vec!["public".to_owned()]
}

/// The rules file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    defaults: Option<DefaultsEntry>,
    #[serde(default)]
    cardholder: Option<CardholderEntry>,
    #[serde(default)]
    grant: Vec<Spanned<GrantEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DefaultsEntry {
    kinds: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CardholderEntry {
    #[serde(default)]
    columns: Vec<Spanned<String>>,
    approver_group: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantEntry {
    groups: Vec<Spanned<String>>,
    #[serde(default)]
    tables: Vec<Spanned<String>>,
    #[serde(default)]
    actions: Vec<Spanned<String>>,
    #[serde(default)]
    cardholder: Option<Cardholder>,
    #[serde(default)]
    kinds: Vec<Spanned<String>>,
    #[serde(default)]
    unparsed: Vec<Spanned<String>>,
}

/// A grant's `cardholder`: how far its actions may touch tagged columns
/// without a human's approval. Each level allows what the ones before it
/// do.
#[derive(Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord, Clone, Copy, Default)]
pub(crate) enum Cardholder {
    /// `"approve"` (the default): every touch needs approval.
    #[default]
    #[serde(rename = "approve")]
    Approve,
    /// `"as-stored"`: reads that send the columns' values to the client
    /// as they are stored (the host's `as-stored`), where the masker sees
    /// each whole. Anything that computes on them, compares them or
    /// writes the tables needs approval: `pan || 'x'` or
    /// `WHERE pan LIKE '4111%'` would show digits no masker recognises.
    #[serde(rename = "as-stored")]
    AsStored,
    /// `"allow"`: any use.
    #[serde(rename = "allow")]
    Allow,
}

impl Rules {
    /// Reads the plugin's config table (JSON) and the rules file (`None`
    /// when the operator named none). The error says what is wrong and,
    /// for the rules file, where.
    pub fn load(config_json: &str, file: Option<&[u8]>) -> Result<Rules, String> {
        let settings: Settings = serde_json::from_str(config_json).map_err(|error| {
            format!(
                "plugin config: {}",
                config::without_json_position(&error.to_string())
            )
        })?;
        let text = config::file_text(file, RULES_FILE, "rules file", "access.toml")?;
        Rules::parse(settings.default_schemas, text)
    }

    /// Parses and checks the text of a rules file, for a database whose
    /// tables named without a schema are in one of `default_schemas`.
    pub fn parse(default_schemas: Vec<String>, text: &str) -> Result<Rules, String> {
        if default_schemas.is_empty() {
            return Err(
                "plugin config: default_schemas is empty; list the schemas of the \
                 database's search_path (a table named without a schema is in one of them)"
                    .to_owned(),
            );
        }
        for schema in &default_schemas {
            check_name(schema, false).map_err(|why| {
                format!("plugin config: default_schemas: the schema {schema:?} {why}")
            })?;
        }
        let file: File = toml::from_str(text).map_err(|error| match error.span() {
            Some(span) => at(text, &span, error.message().trim_end()),
            None => format!("rules file: {}", error.message().trim_end()),
        })?;

        let default_kinds = match file.defaults.and_then(|d| d.kinds) {
            Some(names) => parse_kinds(text, &names, "[defaults] kinds")?,
            None => DEFAULT_KINDS.to_vec(),
        };

        let (tags, approver_group) = match file.cardholder {
            Some(entry) => parse_cardholder(text, entry)?,
            None => (Vec::new(), String::new()),
        };

        let grants = file
            .grant
            .iter()
            .map(|entry| parse_grant(text, entry))
            .collect::<Result<Vec<_>, _>>()?;

        Ok(Rules {
            default_schemas,
            catalog: vec![CATALOG_SCHEMA.to_owned()],
            default_kinds,
            tags,
            approver_group,
            grants,
        })
    }

    /// How many grants the file holds, for the log.
    pub fn grant_count(&self) -> usize {
        self.grants.len()
    }

    /// How many columns are tagged as cardholder data, for the log.
    pub fn tagged_count(&self) -> usize {
        self.tags.len()
    }
}

fn parse_cardholder(
    text: &str,
    entry: CardholderEntry,
) -> Result<(Vec<ColumnTag>, String), String> {
    let mut tags = Vec::new();
    for column in &entry.columns {
        let tag = parse_tag(column.get_ref()).map_err(|why| {
            at(
                text,
                &column.span(),
                &format!("[cardholder] columns: {why}"),
            )
        })?;
        tags.push(tag);
    }
    let approver_group = match entry.approver_group {
        Some(group) => {
            check_name(group.get_ref(), true).map_err(|why| {
                at(
                    text,
                    &group.span(),
                    &format!("[cardholder] approver_group {why}"),
                )
            })?;
            group.into_inner()
        }
        None if !tags.is_empty() => {
            return Err(
                "rules file: [cardholder] tags columns but names no approver_group: \
                 say which group approves reading them"
                    .to_owned(),
            );
        }
        None => String::new(),
    };
    Ok((tags, approver_group))
}

fn parse_grant(text: &str, entry: &Spanned<GrantEntry>) -> Result<Grant, String> {
    let span = entry.span();
    let grant = entry.get_ref();
    let fail = |message: String| at(text, &span, &format!("[[grant]]: {message}"));

    if grant.groups.is_empty() {
        return Err(fail(
            "groups is empty: name the groups it grants to".to_owned(),
        ));
    }
    for group in &grant.groups {
        check_name(group.get_ref(), true)
            .map_err(|why| at(text, &group.span(), &format!("a group name {why}")))?;
    }

    let mut tables = Vec::new();
    for pattern in &grant.tables {
        tables.push(
            parse_table_pattern(pattern.get_ref())
                .map_err(|why| at(text, &pattern.span(), &why))?,
        );
    }
    let mut actions = Vec::new();
    for name in &grant.actions {
        let action = TableAction::from_name(name.get_ref()).ok_or_else(|| {
            at(
                text,
                &name.span(),
                &format!(
                    "unknown action {:?} (known: {})",
                    name.get_ref(),
                    TableAction::ALL.map(TableAction::name).join(", ")
                ),
            )
        })?;
        actions.push(action);
    }
    if tables.is_empty() != actions.is_empty() {
        return Err(fail(
            "tables and actions go together: a grant names both, or neither".to_owned(),
        ));
    }
    let cardholder = grant.cardholder.unwrap_or_default();
    if grant.cardholder.is_some() && tables.is_empty() {
        return Err(fail(
            "cardholder applies to the grant's tables, and it names none".to_owned(),
        ));
    }

    let kinds = parse_kinds(text, &grant.kinds, "kinds")?;

    let mut unparsed = Vec::new();
    for command in &grant.unparsed {
        let normal = parse_unparsed(command.get_ref())
            .map_err(|why| at(text, &command.span(), &format!("unparsed: {why}")))?;
        unparsed.push(normal);
    }

    if tables.is_empty() && kinds.is_empty() && unparsed.is_empty() {
        return Err(fail(
            "grants nothing: give it tables and actions, kinds or unparsed".to_owned(),
        ));
    }
    Ok(Grant {
        groups: grant
            .groups
            .iter()
            .map(|group| group.get_ref().clone())
            .collect(),
        tables,
        actions,
        cardholder,
        kinds,
        unparsed,
    })
}

/// Statement kinds by name, for `kinds` lists: neither data kinds (a grant
/// says what they may touch with `tables` and `actions`) nor `unparsed`
/// (a kind that says nothing of what the statement does; `unparsed`
/// lists name the commands that may run unread).
fn parse_kinds(
    text: &str,
    names: &[Spanned<String>],
    list: &str,
) -> Result<Vec<StatementKind>, String> {
    let mut kinds = Vec::new();
    for name in names {
        let fail = |why: String| at(text, &name.span(), &format!("{list}: {why}"));
        let kind = StatementKind::from_name(name.get_ref()).ok_or_else(|| {
            fail(format!(
                "unknown statement kind {:?} (known: {})",
                name.get_ref(),
                StatementKind::ALL.map(StatementKind::name).join(", ")
            ))
        })?;
        if DATA_KINDS.contains(&kind) {
            return Err(fail(format!(
                "{} statements are judged by the tables they touch: grant actions on tables instead",
                kind.name()
            )));
        }
        if kind == StatementKind::Unparsed {
            return Err(fail(
                "unparsed statements cannot be allowed by kind: list the commands that may run \
                 unread in a grant's `unparsed` instead"
                    .to_owned(),
            ));
        }
        kinds.push(kind);
    }
    Ok(kinds)
}

/// A command an `unparsed` list names, as sluice reports it: upper case,
/// words separated by single spaces.
fn parse_unparsed(command: &str) -> Result<String, String> {
    let normal = command
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_uppercase();
    if normal.is_empty() {
        return Err("an empty command would match text with no keyword at all".to_owned());
    }
    if let Some(never) = NEVER_UNPARSED
        .iter()
        .find(|never| normal.starts_with(*never))
    {
        return Err(format!(
            "{normal:?} may never run unread: a {never} statement must be read by sluice to be \
             judged (a keyword cannot tell COPY ... FROM STDIN from COPY ... TO PROGRAM, nor \
             see inside a DO block)"
        ));
    }
    if !normal
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ' ')
    {
        return Err(format!(
            "{normal:?} is not a command: sluice reports an unread statement's leading keywords, \
             such as VACUUM or CREATE TEXT SEARCH"
        ));
    }
    Ok(normal)
}

/// A table pattern: `*`, `schema.*`, `name` or `schema.name`.
fn parse_table_pattern(pattern: &str) -> Result<TablePattern, String> {
    if pattern == "*" {
        return Ok(TablePattern::Any);
    }
    let fail = |why: &str| {
        format!(
            "table pattern {pattern:?} {why} (a pattern is `*`, `schema.*`, `name` or `schema.name`)"
        )
    };
    let parts: Vec<&str> = pattern.split('.').collect();
    match parts.as_slice() {
        [name] => {
            check_name(name, false).map_err(&fail)?;
            Ok(TablePattern::Table {
                schema: None,
                name: (*name).to_owned(),
            })
        }
        [schema, "*"] => {
            check_name(schema, false).map_err(&fail)?;
            Ok(TablePattern::Schema((*schema).to_owned()))
        }
        [schema, name] => {
            check_name(schema, false).map_err(&fail)?;
            check_name(name, false).map_err(&fail)?;
            Ok(TablePattern::Table {
                schema: Some((*schema).to_owned()),
                name: (*name).to_owned(),
            })
        }
        _ => Err(fail("has too many dots")),
    }
}

/// A tagged column: `table.column` or `schema.table.column`, the column
/// `*` for all of the table's.
fn parse_tag(tag: &str) -> Result<ColumnTag, String> {
    let parts: Vec<&str> = tag.split('.').collect();
    let (schema, table, column) = match parts.as_slice() {
        [table, column] => (None, *table, *column),
        [schema, table, column] => (Some(*schema), *table, *column),
        [_] => {
            return Err(format!(
                "{tag:?} names no table: write table.column or schema.table.column"
            ));
        }
        _ => return Err(format!("{tag:?} has too many dots")),
    };
    let fail = |why: &str| format!("{tag:?}: a name {why}");
    if let Some(schema) = schema {
        check_name(schema, false).map_err(&fail)?;
    }
    check_name(table, false).map_err(&fail)?;
    let column = match column {
        "*" => None,
        name => {
            check_name(name, false).map_err(&fail)?;
            Some(name.to_owned())
        }
    };
    Ok(ColumnTag {
        table: TableRef {
            schema: schema.map(str::to_owned),
            name: table.to_owned(),
        },
        column,
        shown: tag.to_owned(),
    })
}

/// Refuses names that cannot be meant: empty, with spaces around them or
/// control characters in them, or — for a name inside a pattern (not a
/// group's) — with the characters patterns are made of.
fn check_name(name: &str, group: bool) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("is empty")
    } else if name.trim() != name {
        Err("has spaces around it")
    } else if name.chars().any(char::is_control) {
        Err("has a control character in it")
    } else if !group && name.contains(['.', '*']) {
        Err("has a `.` or `*` inside a name (patterns are exact names; `*` stands alone)")
    } else {
        Ok(())
    }
}

/// `message`, placed at the line and column where `span` starts.
fn at(text: &str, span: &Range<usize>, message: &str) -> String {
    let (line, column) = config::line_column(text, span.start);
    format!("rules file, line {line}, column {column}: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Rules, String> {
        Rules::parse(default_schemas(), text)
    }

    /// The error for `text`, which must be refused.
    fn refused(text: &str) -> String {
        match parse(text) {
            Ok(rules) => panic!("accepted {text:?} as {rules:?}"),
            Err(error) => error,
        }
    }

    #[test]
    fn unparsed_copy_do_and_alter_system_are_refused() {
        for command in [
            "COPY",
            "copy",
            "COPY TO",
            "copy  to program",
            "DO",
            "do",
            "ALTER SYSTEM",
            "alter   system",
        ] {
            let error = refused(&format!(
                "[[grant]]\ngroups = [\"admins\"]\nunparsed = [\"VACUUM\", {command:?}]\n"
            ));
            assert!(error.contains("may never run unread"), "{command}: {error}");
            assert!(error.contains("line 3"), "{command}: {error}");
        }
        let error = refused("[[grant]]\ngroups = [\"admins\"]\nunparsed = [\"  \"]\n");
        assert!(error.contains("empty command"), "{error}");
        let error = refused("[[grant]]\ngroups = [\"admins\"]\nunparsed = [\"VACUUM;\"]\n");
        assert!(error.contains("not a command"), "{error}");
    }

    #[test]
    fn unparsed_commands_are_kept_upper_case_with_single_spaces() {
        let rules = parse(
            "[[grant]]\ngroups = [\"admins\"]\nunparsed = [\"vacuum\", \"create  text search\"]\n",
        )
        .expect("valid");
        assert_eq!(rules.grants[0].unparsed, ["VACUUM", "CREATE TEXT SEARCH"]);
    }

    #[test]
    fn unknown_actions_kinds_and_keys_are_refused() {
        let error = refused(
            "[[grant]]\ngroups = [\"agents\"]\ntables = [\"orders\"]\nactions = [\"reed\"]\n",
        );
        assert!(error.contains("unknown action \"reed\""), "{error}");
        assert!(error.contains("line 4"), "{error}");

        let error = refused("[[grant]]\ngroups = [\"agents\"]\nkinds = [\"drop\"]\n");
        assert!(error.contains("unknown statement kind \"drop\""), "{error}");

        let error = refused(
            "[[grant]]\ngroups = [\"agents\"]\ntable = [\"orders\"]\nactions = [\"read\"]\n",
        );
        assert!(error.contains("unknown field `table`"), "{error}");
        assert!(error.contains("line 3"), "{error}");

        let error = refused("[[grants]]\ngroups = [\"agents\"]\n");
        assert!(error.contains("unknown field `grants`"), "{error}");

        let error = refused(
            "[[grant]]\ngroups = [\"agents\"]\ntables = [\"*\"]\nactions = [\"read\"]\ncardholder = \"yes\"\n",
        );
        assert!(error.contains("unknown variant `yes`"), "{error}");
    }

    #[test]
    fn data_kinds_and_unparsed_are_refused_in_kinds() {
        let error = refused("[[grant]]\ngroups = [\"agents\"]\nkinds = [\"select\"]\n");
        assert!(error.contains("judged by the tables"), "{error}");
        let error = refused("[[grant]]\ngroups = [\"agents\"]\nkinds = [\"unparsed\"]\n");
        assert!(error.contains("`unparsed` instead"), "{error}");
        let error = refused("[defaults]\nkinds = [\"unparsed\"]\n");
        assert!(error.contains("[defaults] kinds"), "{error}");
    }

    #[test]
    fn bad_toml_is_refused_with_its_position() {
        let error = refused("[[grant]]\ngroups = [\"agents\"\n");
        assert!(error.starts_with("rules file, line"), "{error}");
        let error = refused("[[grant]]\ngroups = \"agents\"\nkinds = [\"ddl\"]\n");
        assert!(error.contains("line 2"), "{error}");
    }

    #[test]
    fn tags_need_an_approver_and_a_table() {
        let error = refused("[cardholder]\ncolumns = [\"cards.pan\"]\n");
        assert!(error.contains("no approver_group"), "{error}");
        let error = refused("[cardholder]\ncolumns = [\"pan\"]\napprover_group = \"security\"\n");
        assert!(error.contains("names no table"), "{error}");
        let error =
            refused("[cardholder]\ncolumns = [\"a.b.c.d\"]\napprover_group = \"security\"\n");
        assert!(error.contains("too many dots"), "{error}");
        let error =
            refused("[cardholder]\ncolumns = [\"cards.\"]\napprover_group = \"security\"\n");
        assert!(error.contains("is empty"), "{error}");
        let error = refused("[cardholder]\ncolumns = [\"cards.pan\"]\napprover_group = \"\"\n");
        assert!(error.contains("approver_group is empty"), "{error}");

        let rules = parse(
            "[cardholder]\ncolumns = [\"billing.cards.pan\", \"vault.*\"]\napprover_group = \"security\"\n",
        )
        .expect("valid");
        assert_eq!(rules.tags[0].table.schema.as_deref(), Some("billing"));
        assert_eq!(rules.tags[0].column.as_deref(), Some("pan"));
        assert_eq!(rules.tags[1].column, None);
        // No tags, no approver needed.
        assert!(parse("[cardholder]\ncolumns = []\n").is_ok());
    }

    #[test]
    fn table_patterns_are_checked() {
        for (pattern, expected) in [
            ("*", TablePattern::Any),
            ("s.*", TablePattern::Schema("s".into())),
            (
                "orders",
                TablePattern::Table {
                    schema: None,
                    name: "orders".into(),
                },
            ),
            (
                "Public.Orders",
                TablePattern::Table {
                    schema: Some("Public".into()),
                    name: "Orders".into(),
                },
            ),
        ] {
            assert_eq!(parse_table_pattern(pattern), Ok(expected), "{pattern}");
        }
        for pattern in [
            "", "*.orders", "*.*", "a.b.c", "ord*", ".orders", "orders ", "s.",
        ] {
            assert!(parse_table_pattern(pattern).is_err(), "{pattern:?}");
        }
        let error = refused(
            "[[grant]]\ngroups = [\"agents\"]\ntables = [\"orders\", \"x.y.z\"]\nactions = [\"read\"]\n",
        );
        assert!(error.contains("\"x.y.z\" has too many dots"), "{error}");
    }

    #[test]
    fn grants_must_be_whole() {
        let error = refused("[[grant]]\ngroups = []\nkinds = [\"ddl\"]\n");
        assert!(error.contains("groups is empty"), "{error}");
        let error = refused("[[grant]]\ngroups = [\"\"]\nkinds = [\"ddl\"]\n");
        assert!(error.contains("group name is empty"), "{error}");
        let error = refused("[[grant]]\nkinds = [\"ddl\"]\n");
        assert!(error.contains("missing field `groups`"), "{error}");
        let error = refused("[[grant]]\ngroups = [\"agents\"]\ntables = [\"orders\"]\n");
        assert!(error.contains("tables and actions go together"), "{error}");
        let error = refused("[[grant]]\ngroups = [\"agents\"]\n");
        assert!(error.contains("grants nothing"), "{error}");
        let error = refused(
            "[[grant]]\ngroups = [\"agents\"]\nkinds = [\"ddl\"]\ncardholder = \"allow\"\n",
        );
        assert!(error.contains("names none"), "{error}");
    }

    #[test]
    fn the_config_table_takes_default_schemas_only() {
        let file = b"[[grant]]\ngroups = [\"agents\"]\nkinds = [\"ddl\"]\n";
        let rules = Rules::load("{}", Some(file)).expect("valid");
        assert_eq!(rules.default_schemas, ["public"]);
        let rules =
            Rules::load(r#"{"default_schemas": ["app", "public"]}"#, Some(file)).expect("valid");
        assert_eq!(rules.default_schemas, ["app", "public"]);

        let error =
            Rules::load(r#"{"default_schema": ["app"]}"#, Some(file)).expect_err("unknown key");
        assert!(error.contains("unknown field `default_schema`"), "{error}");
        let error = Rules::load(r#"{"default_schemas": []}"#, Some(file)).expect_err("empty");
        assert!(error.contains("default_schemas is empty"), "{error}");
        let error = Rules::load(r#"{"default_schemas": ["a.b"]}"#, Some(file)).expect_err("dotted");
        assert!(error.contains("\"a.b\""), "{error}");
        let error = Rules::load("{}", None).expect_err("no file");
        assert!(error.contains("no rules file"), "{error}");
        let error = Rules::load("{}", Some(b"\xff")).expect_err("not UTF-8");
        assert!(error.contains("not UTF-8"), "{error}");
    }

    #[test]
    fn defaults_replace_the_default_kinds() {
        assert_eq!(parse("").expect("valid").default_kinds, DEFAULT_KINDS);
        let rules = parse("[defaults]\nkinds = [\"transaction\"]\n").expect("valid");
        assert_eq!(rules.default_kinds, [StatementKind::Transaction]);
        let rules = parse("[defaults]\nkinds = []\n").expect("valid");
        assert!(rules.default_kinds.is_empty());
    }
}
