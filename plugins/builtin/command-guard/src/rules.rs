//! The rules file: which blocks apply to whom, which settings are
//! dangerous, which unparsed commands some groups may still run.

use std::collections::BTreeMap;

use serde::Deserialize;
use sluice_plugin::types::SettingChange;

use crate::blocks::Block;

/// The parsed rules file.
#[derive(Debug)]
pub struct Rules {
    pub rules: Vec<Rule>,
    pub settings: SettingsPolicy,
    /// Per group: commands of unparsed statements its members may run.
    unparsed: BTreeMap<String, Vec<String>>,
}

/// One rule: blocks, and whom they apply to.
#[derive(Debug)]
pub struct Rule {
    pub name: String,
    pub blocks: Vec<Block>,
    /// Groups the rule applies to; `*` is everyone.
    groups: Vec<String>,
    /// Groups exempt from it, even when also in `groups`.
    except: Vec<String>,
    /// What the client is told instead of the block's own reason.
    pub reason: Option<String>,
}

impl Rule {
    pub fn applies_to(&self, groups: &[String]) -> bool {
        let named = self.groups.iter().any(|g| g == "*" || groups.contains(g));
        named && !self.except.iter().any(|g| groups.contains(g))
    }
}

/// Which settings a SET or RESET may not change.
#[derive(Debug)]
pub struct SettingsPolicy {
    /// Schemas `search_path` may name.
    trusted_schemas: Vec<String>,
    /// Settings never to be changed, beyond the built-in list: a name,
    /// or a prefix followed by `*` (`enable_*`).
    also: Vec<String>,
}

/// Settings that change security or how SQL is read:
/// `session_replication_role` turns off triggers and rules (and the
/// foreign keys they enforce); `standard_conforming_strings`,
/// `backslash_quote` and `client_encoding` change how the server reads
/// the text sluice has analysed; `row_security` changes row-level security;
/// `role` and `session_authorization` are SET ROLE by another name; and
/// `sluice.*` is where sluice tags the session with its principal.
const ALWAYS_DANGEROUS: &[&str] = &[
    "session_replication_role",
    "standard_conforming_strings",
    "backslash_quote",
    "client_encoding",
    "row_security",
    "role",
    "session_authorization",
];

impl SettingsPolicy {
    /// Whether the change is refused.
    pub fn refuses(&self, change: &SettingChange) -> bool {
        let name = change.name.as_str();
        if name.starts_with("sluice.")
            || ALWAYS_DANGEROUS.contains(&name)
            || self.also.iter().any(|s| match s.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => s == name,
            })
        {
            return true;
        }
        // A search_path back to the default is safe; any other must name
        // only trusted schemas, or a function of an untrusted one could
        // stand in for a built-in.
        change.search_path().is_some_and(|schemas| {
            schemas
                .iter()
                .any(|schema| !self.trusted_schemas.contains(schema))
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    rule: Vec<RuleEntry>,
    #[serde(default)]
    settings: Option<SettingsEntry>,
    #[serde(default)]
    unparsed: BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleEntry {
    name: Option<String>,
    block: Option<String>,
    #[serde(default)]
    blocks: Vec<String>,
    groups: Option<Vec<String>>,
    #[serde(default)]
    except: Vec<String>,
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsEntry {
    trusted_schemas: Option<Vec<String>>,
    #[serde(default)]
    also: Vec<String>,
}

/// Unparsed commands no rule may allow: a keyword cannot tell `COPY ...
/// FROM STDIN` from `COPY ... TO PROGRAM`, nor see inside a DO block.
const NEVER_UNPARSED: &[&str] = &["COPY", "DO", "ALTER SYSTEM"];

/// Longest rule name: a rule sluice shows whole (it cuts longer ones).
const MAX_NAME_CHARS: usize = 128;
/// Longest custom reason, in bytes: what sluice passes on whole.
const MAX_REASON_BYTES: usize = 2048;

/// Whether `text` is shown as written: a name on one line, a reason with
/// line breaks and tabs at most. sluice would show any other control
/// character escaped, and an invisible format character (a zero-width
/// space, a direction override that reorders what a reader sees) by its
/// code point.
fn fit_to_show(text: &str, what: Shown) -> Result<(), String> {
    let too_long = match what {
        Shown::Name => text.chars().count() > MAX_NAME_CHARS,
        Shown::Reason => text.len() > MAX_REASON_BYTES,
    };
    if too_long {
        return Err(match what {
            Shown::Name => format!("is longer than {MAX_NAME_CHARS} characters"),
            Shown::Reason => format!("is longer than {MAX_REASON_BYTES} bytes"),
        });
    }
    let allowed = |c: char| what == Shown::Reason && (c == '\n' || c == '\t');
    // The invisible format characters sluice names rather than shows: the
    // host's list (`text::is_invisible_format`), kept in step by hand, as
    // a plugin cannot depend on the host.
    let hidden = |c: char| {
        matches!(
            c,
            '\u{00AD}'
                | '\u{061C}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{E0000}'..='\u{E007F}'
        )
    };
    if text
        .chars()
        .any(|c| (c.is_control() && !allowed(c)) || hidden(c))
    {
        return Err(format!("{text:?} holds a control or invisible character"));
    }
    Ok(())
}

/// What a text of a rule is shown as.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shown {
    Name,
    Reason,
}

impl Rules {
    pub fn parse(text: &str) -> Result<Rules, String> {
        let file: File = toml::from_str(text).map_err(|e| format!("rules file: {e}"))?;
        let mut rules = Vec::new();
        for (index, entry) in file.rule.into_iter().enumerate() {
            let names: Vec<&String> = entry.block.iter().chain(&entry.blocks).collect();
            if names.is_empty() {
                return Err(format!(
                    "rule {}: says nothing to block (set `block` or `blocks`)",
                    index + 1
                ));
            }
            let blocks = names
                .iter()
                .map(|name| {
                    Block::from_name(name).ok_or_else(|| {
                        format!(
                            "rule {}: unknown block {name:?} (known: {})",
                            index + 1,
                            Block::ALL.map(Block::name).join(", ")
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let groups = entry.groups.unwrap_or_else(|| vec!["*".to_owned()]);
            if groups.is_empty() || groups.iter().chain(&entry.except).any(|g| g.is_empty()) {
                return Err(format!(
                    "rule {}: `groups` must name at least one group (\"*\" for everyone), none empty",
                    index + 1
                ));
            }
            let name = entry.name.unwrap_or_else(|| blocks[0].name().to_owned());
            if name.trim().is_empty() {
                return Err(format!("rule {}: empty name", index + 1));
            }
            // What a client, the log and the trail are shown: sluice would
            // cut and escape it, so say so here, where it can be fixed.
            fit_to_show(&name, Shown::Name)
                .map_err(|why| format!("rule {}: name {why}", index + 1))?;
            if let Some(reason) = &entry.reason {
                fit_to_show(reason, Shown::Reason)
                    .map_err(|why| format!("rule {}: reason {why}", index + 1))?;
            }
            rules.push(Rule {
                name,
                blocks,
                groups,
                except: entry.except,
                reason: entry.reason,
            });
        }
        let mut unparsed = BTreeMap::new();
        for (group, commands) in file.unparsed {
            let mut upper = Vec::new();
            for command in commands {
                let command = command.split_whitespace().collect::<Vec<_>>().join(" ");
                let command = command.to_ascii_uppercase();
                if command.is_empty()
                    || NEVER_UNPARSED
                        .iter()
                        .any(|never| command == *never || command.starts_with(&format!("{never} ")))
                {
                    return Err(format!(
                        "unparsed.{group}: {command:?} may never be allowed unparsed (COPY, DO and ALTER SYSTEM must be read to be judged)"
                    ));
                }
                upper.push(command);
            }
            unparsed.insert(group, upper);
        }
        let settings = file.settings.unwrap_or(SettingsEntry {
            trusted_schemas: None,
            also: Vec::new(),
        });
        Ok(Rules {
            rules,
            settings: SettingsPolicy {
                trusted_schemas: settings.trusted_schemas.unwrap_or_else(|| {
                    ["public", "pg_catalog", "$user"]
                        .map(str::to_owned)
                        .to_vec()
                }),
                also: settings
                    .also
                    .into_iter()
                    .map(|s| {
                        // A name no setting has (a `*` inside it, a space, a
                        // dash) would match nothing: a setting meant to be
                        // refused would not be.
                        let name = s.strip_suffix('*').unwrap_or(&s);
                        let setting_name = !name.is_empty()
                            && name.bytes().all(|b| {
                                b.is_ascii_alphanumeric() || b == b'_' || b == b'.'
                            });
                        if !setting_name {
                            return Err(format!(
                                "[settings] also {s:?}: not a setting's name, nor one's start followed by `*` (`enable_*`)"
                            ));
                        }
                        Ok(s.to_ascii_lowercase())
                    })
                    .collect::<Result<_, _>>()?,
            },
            unparsed,
        })
    }

    /// Whether one of `groups` may run an unparsed statement of `command`.
    pub fn unparsed_allowed(&self, command: &str, groups: &[String]) -> bool {
        if NEVER_UNPARSED
            .iter()
            .any(|never| command == *never || command.starts_with(&format!("{never} ")))
        {
            return false;
        }
        groups.iter().any(|group| {
            self.unparsed
                .get(group)
                .is_some_and(|commands| commands.iter().any(|c| c == command))
        })
    }
}
