//! Test plugin (policy): denies statements by kind or by word, as its
//! configuration says.
//!
//! ```json
//! {"deny_kinds": ["delete", "copy-out"], "deny_words": ["forbidden_table"],
//!  "deny_groups": ["interns"]}
//! ```
//!
//! plus, optionally, a data file under the key `words` with one more word
//! per line. A statement is denied (rule `deny-rule`) when the session's
//! principal is in one of `deny_groups` (read through the session handle),
//! its kind is one of `deny_kinds` or its text contains one of the words,
//! ignoring case;
//! one containing a word of `approval_words` needs the approval of group
//! `approval_group` (`dba` unless configured).
//! `check_config` refuses invalid JSON, unknown keys or kinds, and
//! `"reject": true`, so a test can load an invalid configuration.

use std::sync::OnceLock;

use serde::Deserialize;
use sluice_plugin::config;
use sluice_plugin::policy::Policy;
use sluice_plugin::session::Session;
use sluice_plugin::types::{Decision, Statement, StatementKind};

const RULE: &str = "deny-rule";
/// The rule that holds a statement for approval.
const APPROVAL_RULE: &str = "approval-words";

struct DenyRule;

impl Policy for DenyRule {
    fn check_config() -> Result<(), String> {
        rules().as_ref().map(|_| ()).map_err(Clone::clone)
    }

    fn evaluate(session: &Session, statement: &Statement) -> Decision {
        match rules() {
            Ok(rules) => rules.judge(session, statement),
            Err(error) => Decision::deny(RULE, format!("invalid configuration: {error}")),
        }
    }
}

sluice_plugin::register_policy!(DenyRule);

/// The rules, read once per instance.
fn rules() -> &'static Result<Rules, String> {
    static RULES: OnceLock<Result<Rules, String>> = OnceLock::new();
    RULES.get_or_init(|| Rules::parse(&config::get(), config::file("words").as_deref()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    deny_kinds: Vec<String>,
    #[serde(default)]
    deny_words: Vec<String>,
    #[serde(default)]
    approval_words: Vec<String>,
    approval_group: Option<String>,
    #[serde(default)]
    deny_groups: Vec<String>,
    #[serde(default)]
    reject: bool,
}

#[derive(Debug)]
struct Rules {
    kinds: Vec<StatementKind>,
    /// Lower-cased.
    words: Vec<String>,
    /// Lower-cased.
    approval_words: Vec<String>,
    approval_group: String,
    groups: Vec<String>,
}

impl Rules {
    fn parse(json: &str, words_file: Option<&[u8]>) -> Result<Rules, String> {
        let config: Config = serde_json::from_str(json).map_err(|error| error.to_string())?;
        if config.reject {
            return Err("the configuration says \"reject\": true".to_owned());
        }
        let kinds = config
            .deny_kinds
            .iter()
            .map(|name| {
                StatementKind::from_name(name)
                    .ok_or_else(|| format!("unknown statement kind {name:?} in deny_kinds"))
            })
            .collect::<Result<_, _>>()?;
        let mut words: Vec<String> = config.deny_words;
        if let Some(file) = words_file {
            let file =
                std::str::from_utf8(file).map_err(|_| "the words file is not UTF-8".to_owned())?;
            words.extend(file.lines().map(str::trim).map(str::to_owned));
        }
        words.retain(|word| !word.is_empty());
        for word in &mut words {
            *word = word.to_lowercase();
        }
        let approval_words = config
            .approval_words
            .iter()
            .map(|word| word.to_lowercase())
            .collect();
        Ok(Rules {
            kinds,
            words,
            approval_words,
            approval_group: config.approval_group.unwrap_or_else(|| "dba".to_owned()),
            groups: config.deny_groups,
        })
    }

    fn judge(&self, session: &Session, statement: &Statement) -> Decision {
        // The principal is fetched from sluice only when a group rule needs it.
        if !self.groups.is_empty() {
            let principal = session.principal();
            if let Some(group) = principal.groups.iter().find(|g| self.groups.contains(g)) {
                return Decision::deny(
                    RULE,
                    format!(
                        "{} is in group {group}, which may not run statements",
                        principal.id
                    ),
                );
            }
        }
        if self.kinds.contains(&statement.kind) {
            let kind = statement.kind.name();
            return Decision::deny(RULE, format!("{kind} statements are denied"));
        }
        let text = statement.text.to_lowercase();
        if let Some(word) = self.words.iter().find(|word| text.contains(word.as_str())) {
            return Decision::deny(RULE, format!("the statement mentions {word:?}"));
        }
        match self
            .approval_words
            .iter()
            .find(|word| text.contains(word.as_str()))
        {
            Some(word) => Decision::require_approval(
                APPROVAL_RULE,
                format!("the statement mentions {word:?}"),
                &self.approval_group,
            ),
            None => Decision::Allow,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin::session::SessionInfo;
    use sluice_plugin::types::Principal;

    fn judge(json: &str, words: Option<&str>, kind: StatementKind, text: &str) -> Decision {
        Rules::parse(json, words.map(str::as_bytes)).unwrap().judge(
            &Session::new(SessionInfo::default()),
            &Statement::new(kind, text),
        )
    }

    #[test]
    fn denies_members_of_denied_groups() {
        let rules = Rules::parse(r#"{"deny_groups": ["interns"]}"#, None).unwrap();
        let session = |groups: &[&str]| {
            Session::new(SessionInfo {
                principal: Principal {
                    id: "kim".into(),
                    groups: groups.iter().map(|g| g.to_string()).collect(),
                    attributes: vec![],
                    expires_at: None,
                },
                ..SessionInfo::default()
            })
        };
        let select = Statement::new(StatementKind::Select, "SELECT 1");
        assert_eq!(
            rules.judge(&session(&["staff", "interns"]), &select),
            Decision::deny(
                RULE,
                "kim is in group interns, which may not run statements"
            )
        );
        assert_eq!(rules.judge(&session(&["staff"]), &select), Decision::Allow);
    }

    #[test]
    fn denies_by_kind_and_by_word_ignoring_case() {
        let json = r#"{"deny_kinds": ["delete"], "deny_words": ["Forbidden_Table"]}"#;
        assert_eq!(
            judge(json, None, StatementKind::Delete, "DELETE FROM t"),
            Decision::deny(RULE, "delete statements are denied")
        );
        assert_eq!(
            judge(
                json,
                None,
                StatementKind::Select,
                "SELECT * FROM FORBIDDEN_TABLE"
            ),
            Decision::deny(RULE, "the statement mentions \"forbidden_table\"")
        );
        assert_eq!(
            judge(json, None, StatementKind::Select, "SELECT 1"),
            Decision::Allow
        );
    }

    #[test]
    fn words_file_adds_words() {
        assert_eq!(
            judge(
                "{}",
                Some("\nsecret\n"),
                StatementKind::Select,
                "select secret"
            ),
            Decision::deny(RULE, "the statement mentions \"secret\"")
        );
    }

    #[test]
    fn invalid_configurations_are_refused() {
        for json in [
            "not json",
            r#"{"deny_kind": []}"#,
            r#"{"deny_kinds": ["drop"]}"#,
            r#"{"reject": true}"#,
        ] {
            assert!(Rules::parse(json, None).is_err(), "{json}");
        }
        assert!(Rules::parse(r#"{"reject": false}"#, None).is_ok());
    }
}
