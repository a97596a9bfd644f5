//! The values every hook speaks about: who is asking, over which
//! connection, what statement, which result columns, and what a policy
//! decides.
//!
//! These are the `sluice:gateway/types` records of the WIT contract, one
//! set of Rust types for all four kinds of plugin. The field docs are the
//! WIT's; what follows in this module adds constructors that make answers
//! (and test inputs) short to write.

pub use crate::wit::host::sluice::gateway::types::{
    ApprovalRequirement, Column, ColumnAccess, ColumnRef, ConnectionInfo, CopyEndpoint, Decision,
    Denial, FunctionRef, Principal, SettingChange, Statement, StatementKind, TableAccess,
    TableAction, TableRef, ValueFormat, Wrapper,
};

impl Decision {
    /// Refuses the statement. `rule` names the rule that refused, for
    /// operators; `reason` says why. Both reach the client and the audit
    /// trail, so neither may hold card numbers or secrets.
    pub fn deny(rule: impl Into<String>, reason: impl Into<String>) -> Self {
        Decision::Deny(Denial {
            reason: reason.into(),
            rule: rule.into(),
        })
    }

    /// Holds the statement until a member of `approver_group` approves it.
    /// `rule` names the rule that asks, for operators and the audit trail;
    /// `reason` is shown to the approver. Neither may hold card numbers or
    /// secrets.
    pub fn require_approval(
        rule: impl Into<String>,
        reason: impl Into<String>,
        approver_group: impl Into<String>,
    ) -> Self {
        Decision::RequireApproval(ApprovalRequirement {
            reason: reason.into(),
            approver_group: approver_group.into(),
            rule: rule.into(),
        })
    }
}

impl Statement {
    /// A statement of `kind` with `text`, its command the text's first
    /// word upper-cased, touching no tables, columns or functions, changing
    /// no settings, deleting and updating nothing (so `has_where` holds),
    /// unwrapped, alone in its query and without parameters: a starting
    /// point for tests, to be filled in with struct update syntax where a
    /// test needs more.
    ///
    /// ```
    /// use sluice_plugin::types::{Statement, StatementKind, TableAccess, TableAction, TableRef};
    ///
    /// let statement = Statement {
    ///     tables: vec![TableAccess {
    ///         table: TableRef { schema: None, name: "cards".into() },
    ///         action: TableAction::Read,
    ///     }],
    ///     ..Statement::new(StatementKind::Select, "SELECT * FROM cards")
    /// };
    /// assert_eq!(statement.command, "SELECT");
    /// ```
    pub fn new(kind: StatementKind, text: impl Into<String>) -> Self {
        let text = text.into();
        let command = text
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        Statement {
            text,
            kind,
            command,
            tables: Vec::new(),
            columns: Vec::new(),
            functions: Vec::new(),
            has_where: true,
            settings: Vec::new(),
            copy_endpoint: None,
            wrappers: Vec::new(),
            is_multi: false,
            params: Vec::new(),
        }
    }

    /// Whether the statement changes anything: a table touched other than
    /// by reading, a function that is not built in (its body may write), a
    /// setting, or a kind that is not a read.
    pub fn writes(&self) -> bool {
        !matches!(
            self.kind,
            StatementKind::Select | StatementKind::Explain | StatementKind::CopyOut
        ) || self.tables.iter().any(|t| t.action != TableAction::Read)
            || self.functions.iter().any(|f| !f.builtin)
            || !self.settings.is_empty()
    }
}

impl SettingChange {
    /// For a change of `search_path` to a value: the schemas it names, as
    /// PostgreSQL reads the list (comma-separated; unquoted names folded to
    /// lower case, double-quoted ones kept exactly, `""` inside them a
    /// quote). `None` for other settings and for a reset to the default.
    pub fn search_path(&self) -> Option<Vec<String>> {
        if self.name != "search_path" {
            return None;
        }
        let value = self.value.as_deref()?;
        let schemas = value
            .split(',')
            .map(|part| {
                let part = part.trim();
                match part.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
                    Some(quoted) => quoted.replace("\"\"", "\""),
                    None => part.to_ascii_lowercase(),
                }
            })
            .filter(|schema| !schema.is_empty())
            .collect();
        Some(schemas)
    }
}

impl TableRef {
    /// `schema.name`, or `name` when the statement relied on the search
    /// path.
    pub fn qualified(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{schema}.{}", self.name),
            None => self.name.clone(),
        }
    }
}

impl TableAction {
    /// The action's name as the WIT spells it (`read`, `insert`, ...).
    pub fn name(self) -> &'static str {
        match self {
            TableAction::Read => "read",
            TableAction::Insert => "insert",
            TableAction::Update => "update",
            TableAction::Delete => "delete",
            TableAction::Truncate => "truncate",
            TableAction::Define => "define",
            TableAction::Maintain => "maintain",
        }
    }

    /// Every action, in the WIT's order.
    pub const ALL: [TableAction; 7] = [
        TableAction::Read,
        TableAction::Insert,
        TableAction::Update,
        TableAction::Delete,
        TableAction::Truncate,
        TableAction::Define,
        TableAction::Maintain,
    ];

    /// The action a name (as [`TableAction::name`] gives it) stands for.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|action| action.name() == name)
    }
}

impl StatementKind {
    /// The kind's name as the WIT spells it (`select`, `copy-out`, ...),
    /// for messages.
    pub fn name(self) -> &'static str {
        match self {
            StatementKind::Select => "select",
            StatementKind::Insert => "insert",
            StatementKind::Update => "update",
            StatementKind::Delete => "delete",
            StatementKind::Merge => "merge",
            StatementKind::CopyIn => "copy-in",
            StatementKind::CopyOut => "copy-out",
            StatementKind::Ddl => "ddl",
            StatementKind::Privilege => "privilege",
            StatementKind::Transaction => "transaction",
            StatementKind::Setting => "setting",
            StatementKind::Prepared => "prepared",
            StatementKind::Procedural => "procedural",
            StatementKind::Explain => "explain",
            StatementKind::Notification => "notification",
            StatementKind::Utility => "utility",
            StatementKind::Unparsed => "unparsed",
            StatementKind::Other => "other",
        }
    }

    /// Every kind, in the WIT's order: handy to validate names in a
    /// configuration against [`StatementKind::name`].
    pub const ALL: [StatementKind; 18] = [
        StatementKind::Select,
        StatementKind::Insert,
        StatementKind::Update,
        StatementKind::Delete,
        StatementKind::Merge,
        StatementKind::CopyIn,
        StatementKind::CopyOut,
        StatementKind::Ddl,
        StatementKind::Privilege,
        StatementKind::Transaction,
        StatementKind::Setting,
        StatementKind::Prepared,
        StatementKind::Procedural,
        StatementKind::Explain,
        StatementKind::Notification,
        StatementKind::Utility,
        StatementKind::Unparsed,
        StatementKind::Other,
    ];

    /// The kind named `name` as the WIT spells it, if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

impl Default for Principal {
    /// A principal with an empty id, no groups and no attributes, whose
    /// identity does not expire.
    fn default() -> Self {
        Principal {
            id: String::new(),
            groups: Vec::new(),
            attributes: Vec::new(),
            expires_at: None,
        }
    }
}

impl Default for ConnectionInfo {
    /// A plain-TCP connection from an empty address to an empty database
    /// name, without `application_name`.
    fn default() -> Self {
        ConnectionInfo {
            client_address: String::new(),
            tls: false,
            database: String::new(),
            application_name: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip() {
        for kind in StatementKind::ALL {
            assert_eq!(StatementKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(StatementKind::from_name("drop"), None);
    }

    #[test]
    fn deny_names_rule_and_reason() {
        assert_eq!(
            Decision::deny("rule", "why"),
            Decision::Deny(Denial {
                reason: "why".into(),
                rule: "rule".into()
            })
        );
    }
}
