//! The `static-tokens` identity plugin, shipped inside sluice as
//! `builtin:static-tokens`: principals the operator lists in a TOML file,
//! each with a SCRAM-SHA-256 verifier of its token.
//!
//! Why a file of verifiers and not of tokens: sluice runs SCRAM-SHA-256
//! with the client itself, so the token never crosses the wire and never
//! reaches this plugin, and the file holds nothing a client could log in
//! with (a verifier is what PostgreSQL keeps in `pg_authid`). Why a file
//! handed in by the host (`config::file("tokens")`) and not the plugin's
//! config table: principals change more often than the gateway's config,
//! the host watches the file and reloads the plugin when it changes, and
//! the plugin needs no filesystem access of its own.
//!
//! The file (see the README for the operator's view):
//!
//! ```toml
//! [[principal]]
//! name = "agent"                 # the startup user the client connects as
//! groups = ["agents"]            # optional
//! verifier = "SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>"   # `sluice hash-token`
//! attributes = { team = "payments" }                               # optional
//! ```
//!
//! `scram_verifier(user)` answers with the user's verifier and principal
//! (id = the name, groups in file order, attributes sorted by name), or
//! `None` for a user the file does not list, so sluice can ask the next
//! identity plugin (or, failing all, refuse the login). The plugin keeps no
//! bearer tokens: `authenticate` is the SDK's default, `UnknownUser`.
//!
//! `check_config` refuses the whole file — so a reload keeps the version
//! already serving — when it is missing, is not TOML, has keys this plugin
//! does not know, names a principal twice, has an empty or unusable name,
//! or holds a verifier that is not a well-formed SCRAM-SHA-256 secret
//! (prefix, an iteration count of at least 4096, a base64 salt, base64
//! 32-byte keys). Errors name the line and never repeat a verifier. The
//! plugin's config table takes no keys.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use sluice_plugin::identity::{Identity, StoredSecret};
use sluice_plugin::types::{ConnectionInfo, Principal};
use sluice_plugin::{config, log};

/// The key of the principals file in the plugin's `files` table.
pub const TOKENS_FILE: &str = "tokens";

/// Fewest PBKDF2 iterations a verifier may ask for: PostgreSQL's default
/// (and `sluice hash-token`'s). Fewer makes a stolen file cheaper to
/// brute-force, and nothing this gateway makes uses fewer.
pub const MIN_ITERATIONS: u32 = 4096;

const VERIFIER_PREFIX: &str = "SCRAM-SHA-256$";
const KEY_LEN: usize = 32;

struct StaticTokens;

impl Identity for StaticTokens {
    fn check_config() -> Result<(), String> {
        let directory = loaded().as_ref().map_err(Clone::clone)?;
        log::info(format!(
            "{} principals loaded from the {TOKENS_FILE:?} file",
            directory.principals.len()
        ));
        Ok(())
    }

    fn scram_verifier(user: &str, _connection: &ConnectionInfo) -> Option<StoredSecret> {
        configured().scram_verifier(user)
    }
}

sluice_plugin::register_identity!(StaticTokens);

/// The parsed file, read once per instance: the host reloads the plugin
/// (fresh instances) whenever the file or the config table changes, so
/// the cache never outlives what it was made from.
fn loaded() -> &'static Result<Directory, String> {
    static DIRECTORY: OnceLock<Result<Directory, String>> = OnceLock::new();
    DIRECTORY.get_or_init(|| Directory::load(&config::get(), config::file(TOKENS_FILE).as_deref()))
}

/// The directory, or a panic — which refuses the login (fail closed) —
/// when it is invalid. `check_config` has already refused such a version,
/// so this is a second line of defence only.
fn configured() -> &'static Directory {
    match loaded() {
        Ok(directory) => directory,
        Err(error) => panic!("static-tokens: invalid configuration: {error}"),
    }
}

/// The plugin's config table: no settings yet, but a key in it is a
/// mistake (a setting meant for another plugin, a typo) worth refusing.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {}

/// The principals file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    #[serde(default)]
    principal: Vec<Entry>,
}

/// One `[[principal]]` table. Name and verifier keep their position in
/// the file so errors about them can name the line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: toml::Spanned<String>,
    #[serde(default)]
    groups: Vec<String>,
    verifier: toml::Spanned<String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

/// The principals a valid file lists, by name.
#[derive(Debug)]
pub struct Directory {
    principals: BTreeMap<String, StoredSecret>,
}

impl Directory {
    /// Reads the plugin's config table (JSON) and the principals file
    /// (`None` when the operator named none). The error says what is
    /// wrong and where, without repeating any verifier.
    pub fn load(config_json: &str, file: Option<&[u8]>) -> Result<Self, String> {
        serde_json::from_str::<Settings>(config_json).map_err(|error| {
            format!(
                "plugin config: {}",
                config::without_json_position(&error.to_string())
            )
        })?;
        let text = config::file_text(file, TOKENS_FILE, "principals file", "principals.toml")?;
        Self::parse(text)
    }

    /// Parses and checks the text of a principals file.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: TokenFile = toml::from_str(text).map_err(|error| {
            // The message alone, placed by its span: toml's own Display
            // quotes the offending line, which may hold a verifier.
            match error.span() {
                Some(span) => at(text, &span, error.message()),
                None => format!("principals file: {}", error.message()),
            }
        })?;
        let mut principals = BTreeMap::new();
        let mut first_seen: BTreeMap<String, Range<usize>> = BTreeMap::new();
        for entry in file.principal {
            let name_span = entry.name.span();
            let name = entry.name.into_inner();
            check_name(&name).map_err(|why| at(text, &name_span, &format!("name {why}")))?;
            if let Some(first) = first_seen.get(&name) {
                let (line, _) = config::line_column(text, first.start);
                return Err(at(
                    text,
                    &name_span,
                    &format!("principal {name:?} is listed twice (first at line {line})"),
                ));
            }
            first_seen.insert(name.clone(), name_span.clone());
            for group in &entry.groups {
                check_name(group).map_err(|why| {
                    at(
                        text,
                        &name_span,
                        &format!("principal {name:?}: a group name {why}"),
                    )
                })?;
            }
            for attribute in entry.attributes.keys() {
                check_name(attribute).map_err(|why| {
                    at(
                        text,
                        &name_span,
                        &format!("principal {name:?}: an attribute name {why}"),
                    )
                })?;
            }
            let verifier_span = entry.verifier.span();
            let verifier = entry.verifier.into_inner();
            check_verifier(&verifier).map_err(|why| {
                at(
                    text,
                    &verifier_span,
                    &format!("principal {name:?}: verifier {why}"),
                )
            })?;
            let principal = Principal {
                id: name.clone(),
                groups: entry.groups,
                // BTreeMap: sorted by name, so policies and the audit trail
                // see the same order whatever order the file used.
                attributes: entry.attributes.into_iter().collect(),
                // A token in this file is good until the file changes.
                expires_at: None,
            };
            principals.insert(
                name,
                StoredSecret {
                    scram_verifier: verifier,
                    principal,
                },
            );
        }
        Ok(Directory { principals })
    }

    /// The stored secret of `user`, or `None` when the file does not list
    /// it (sluice then asks other identity plugins, and refuses the login
    /// when none knows the user).
    pub fn scram_verifier(&self, user: &str) -> Option<StoredSecret> {
        self.principals.get(user).cloned()
    }
}

/// Why `name` (a principal, group or attribute name) is unusable, if it
/// is. A startup user is a C string, so NUL and other control characters
/// can never match; surrounding spaces are almost always a typo that would
/// make the principal unreachable without saying so.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("is empty")
    } else if name.chars().any(char::is_control) {
        Err("contains a control character")
    } else if name.trim() != name {
        Err("starts or ends with white space")
    } else {
        Ok(())
    }
}

/// Checks that `verifier` is a SCRAM-SHA-256 secret in PostgreSQL's
/// format, `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, the
/// same way sluice reads it at login — so a bad entry is refused when the
/// file is loaded, not discovered as a failed login. Says what is wrong,
/// never what the verifier holds.
fn check_verifier(verifier: &str) -> Result<(), String> {
    let rest = verifier
        .strip_prefix(VERIFIER_PREFIX)
        .ok_or("does not start with SCRAM-SHA-256$ (make one with `sluice hash-token`)")?;
    let shape = "is not SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>";
    let (parameters, keys) = rest.split_once('$').ok_or(shape)?;
    let (iterations, salt) = parameters.split_once(':').ok_or(shape)?;
    let (stored_key, server_key) = keys.split_once(':').ok_or(shape)?;

    // str::parse would also take a leading '+', which PostgreSQL never writes.
    if iterations.is_empty() || !iterations.bytes().all(|b| b.is_ascii_digit()) {
        return Err("iteration count is not a number".to_owned());
    }
    let iterations: u32 = iterations
        .parse()
        .map_err(|_| "iteration count is too large")?;
    if iterations < MIN_ITERATIONS {
        return Err(format!(
            "iteration count {iterations} is below {MIN_ITERATIONS}"
        ));
    }
    let salt = STANDARD
        .decode(salt)
        .map_err(|_| "salt is not valid base64")?;
    if salt.is_empty() {
        return Err("salt is empty".to_owned());
    }
    for (key, what) in [(stored_key, "StoredKey"), (server_key, "ServerKey")] {
        let bytes = STANDARD
            .decode(key)
            .map_err(|_| format!("{what} is not valid base64"))?;
        if bytes.len() != KEY_LEN {
            return Err(format!("{what} is not {KEY_LEN} bytes long"));
        }
    }
    Ok(())
}

/// `message`, placed at the line and column where `span` starts.
fn at(text: &str, span: &Range<usize>, message: &str) -> String {
    let (line, column) = config::line_column(text, span.start);
    format!("principals file, line {line}, column {column}: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real verifier: token `a-long-random-token`, salt bytes 0..16,
    /// 4096 iterations, as `sluice hash-token` or PostgreSQL would write it.
    const VERIFIER: &str = "SCRAM-SHA-256$4096:AAECAwQFBgcICQoLDA0ODw==$V6q7xMObd/PuZH/hB/ddR+85BvRY2cNJMYBPolARJZk=:Ae5YmFkI4jSxj5wblHdnYHLV8UMMEtRkMvvoXcaLdpA=";

    fn file_with(entries: &str) -> String {
        entries.replace("VERIFIER", VERIFIER)
    }

    fn load(text: &str) -> Result<Directory, String> {
        Directory::load("{}", Some(text.as_bytes()))
    }

    fn error_of(text: &str) -> String {
        match load(text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(error) => error,
        }
    }

    #[test]
    fn known_users_get_their_verifier_and_principal() {
        let directory = load(&file_with(
            r#"
[[principal]]
name = "agent"
groups = ["agents", "readers"]
verifier = "VERIFIER"
attributes = { team = "payments", cost_center = "42" }

[[principal]]
name = "alice@example.com"
verifier = "VERIFIER"
"#,
        ))
        .unwrap();

        let agent = directory.scram_verifier("agent").unwrap();
        assert_eq!(agent.scram_verifier, VERIFIER);
        assert_eq!(agent.principal.id, "agent");
        assert_eq!(agent.principal.groups, ["agents", "readers"]);
        assert_eq!(
            agent.principal.attributes,
            [
                ("cost_center".to_owned(), "42".to_owned()),
                ("team".to_owned(), "payments".to_owned()),
            ],
            "attributes are sorted by name"
        );

        let alice = directory.scram_verifier("alice@example.com").unwrap();
        assert_eq!(alice.principal.id, "alice@example.com");
        assert!(alice.principal.groups.is_empty());
        assert!(alice.principal.attributes.is_empty());
    }

    #[test]
    fn unknown_users_get_none() {
        let directory = load(&file_with(
            "[[principal]]\nname = \"agent\"\nverifier = \"VERIFIER\"\n",
        ))
        .unwrap();
        assert!(directory.scram_verifier("agent").is_some());
        assert!(
            directory.scram_verifier("Agent").is_none(),
            "names are exact"
        );
        assert!(directory.scram_verifier("agent ").is_none());
        assert!(directory.scram_verifier("").is_none());
        assert!(directory.scram_verifier("mallory").is_none());
    }

    #[test]
    fn an_empty_file_lists_nobody() {
        let directory = load("# no principals yet\n").unwrap();
        assert!(directory.scram_verifier("agent").is_none());
    }

    #[test]
    fn a_missing_file_is_refused() {
        let error = Directory::load("{}", None).unwrap_err();
        assert!(error.contains("no principals file"), "{error}");
        assert!(error.contains("tokens = "), "{error}");
    }

    #[test]
    fn a_file_that_is_not_utf8_is_refused() {
        let error = Directory::load("{}", Some(b"[[principal]]\nname = \"\xff\"\n")).unwrap_err();
        assert!(error.contains("not UTF-8"), "{error}");
    }

    #[test]
    fn toml_errors_name_their_line() {
        let error = error_of("[[principal]]\nname = \"agent\"\nverifier = \n");
        assert!(error.starts_with("principals file, line 3,"), "{error}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let error = error_of(&file_with(
            "[[principal]]\nname = \"agent\"\nverifier = \"VERIFIER\"\ngroup = [\"agents\"]\n",
        ));
        assert!(error.contains("unknown field `group`"), "{error}");
        assert!(error.contains("line 4"), "{error}");

        let error = error_of(&file_with(
            "[[principals]]\nname = \"agent\"\nverifier = \"VERIFIER\"\n",
        ));
        assert!(error.contains("unknown field `principals`"), "{error}");
    }

    #[test]
    fn the_config_table_takes_no_keys() {
        let file = file_with("[[principal]]\nname = \"agent\"\nverifier = \"VERIFIER\"\n");
        assert!(Directory::load("{}", Some(file.as_bytes())).is_ok());
        let error =
            Directory::load(r#"{"file": "principals.toml"}"#, Some(file.as_bytes())).unwrap_err();
        assert!(
            error.starts_with("plugin config: unknown field `file`"),
            "{error}"
        );
        assert!(
            !error.contains("column"),
            "JSON positions are left out: {error}"
        );
    }

    #[test]
    fn a_name_listed_twice_is_refused() {
        let error = error_of(&file_with(
            "[[principal]]\nname = \"agent\"\nverifier = \"VERIFIER\"\n\n\
             [[principal]]\nname = \"agent\"\nverifier = \"VERIFIER\"\n",
        ));
        assert!(error.contains("line 6"), "{error}");
        assert!(error.contains("listed twice (first at line 2)"), "{error}");
    }

    #[test]
    fn missing_fields_are_refused() {
        let error = error_of("[[principal]]\nname = \"agent\"\n");
        assert!(error.contains("missing field `verifier`"), "{error}");
        let error = error_of(&file_with("[[principal]]\nverifier = \"VERIFIER\"\n"));
        assert!(error.contains("missing field `name`"), "{error}");
    }

    #[test]
    fn unusable_names_are_refused() {
        for (name, why) in [
            ("", "name is empty"),
            (" agent", "white space"),
            ("agent\\t", "control character"),
            ("age\\u0000nt", "control character"),
        ] {
            let error = error_of(&file_with(&format!(
                "[[principal]]\nname = \"{name}\"\nverifier = \"VERIFIER\"\n"
            )));
            assert!(error.contains(why), "{name:?}: {error}");
            assert!(error.contains("line 2"), "{name:?}: {error}");
        }
        let error = error_of(&file_with(
            "[[principal]]\nname = \"agent\"\ngroups = [\"agents\", \"\"]\nverifier = \"VERIFIER\"\n",
        ));
        assert!(error.contains("a group name is empty"), "{error}");
        let error = error_of(&file_with(
            "[[principal]]\nname = \"agent\"\nverifier = \"VERIFIER\"\nattributes = { \"\" = \"x\" }\n",
        ));
        assert!(error.contains("an attribute name is empty"), "{error}");
    }

    #[test]
    fn malformed_verifiers_are_refused_without_being_repeated() {
        let salt = "AAECAwQFBgcICQoLDA0ODw==";
        let key = "V6q7xMObd/PuZH/hB/ddR+85BvRY2cNJMYBPolARJZk=";
        let short_key = "AAECAwQFBgcICQoLDA0ODw==";
        let cases = [
            (
                format!("md5$4096:{salt}${key}:{key}"),
                "does not start with SCRAM-SHA-256$",
            ),
            (
                format!("SCRAM-SHA-256$4096:{salt}"),
                "is not SCRAM-SHA-256$",
            ),
            (format!("SCRAM-SHA-256$4096{salt}${key}:{key}"), "is not"),
            (format!("SCRAM-SHA-256$4096:{salt}${key}{key}"), "is not"),
            (
                format!("SCRAM-SHA-256$+4096:{salt}${key}:{key}"),
                "iteration count is not a number",
            ),
            (
                format!("SCRAM-SHA-256$:{salt}${key}:{key}"),
                "iteration count is not a number",
            ),
            (
                format!("SCRAM-SHA-256$99999999999:{salt}${key}:{key}"),
                "too large",
            ),
            (
                format!("SCRAM-SHA-256$4095:{salt}${key}:{key}"),
                "iteration count 4095 is below 4096",
            ),
            (
                format!("SCRAM-SHA-256$4096:not*base64${key}:{key}"),
                "salt is not valid base64",
            ),
            (format!("SCRAM-SHA-256$4096:${key}:{key}"), "salt is empty"),
            (
                format!("SCRAM-SHA-256$4096:{salt}$!!!:{key}"),
                "StoredKey is not valid base64",
            ),
            (
                format!("SCRAM-SHA-256$4096:{salt}${key}:{short_key}"),
                "ServerKey is not 32 bytes long",
            ),
            (
                format!("SCRAM-SHA-256$4096:{salt}${short_key}:{key}"),
                "StoredKey is not 32 bytes long",
            ),
        ];
        for (verifier, why) in cases {
            let error = error_of(&format!(
                "[[principal]]\nname = \"agent\"\nverifier = \"{verifier}\"\n"
            ));
            assert!(error.contains(why), "{verifier}: {error}");
            assert!(error.contains("line 3"), "{verifier}: {error}");
            assert!(error.contains("principal \"agent\""), "{verifier}: {error}");
            assert!(
                !error.contains(salt),
                "the verifier is not repeated: {error}"
            );
        }
        // More iterations than the minimum are fine.
        let stronger = VERIFIER.replace("$4096:", "$600000:");
        assert!(
            load(&format!(
                "[[principal]]\nname = \"a\"\nverifier = \"{stronger}\"\n"
            ))
            .is_ok()
        );
    }

    #[test]
    fn attributes_must_be_strings() {
        let error = error_of(&file_with(
            "[[principal]]\nname = \"agent\"\nverifier = \"VERIFIER\"\nattributes = { level = 3 }\n",
        ));
        assert!(error.contains("line 4"), "{error}");
        assert!(error.contains("invalid type"), "{error}");
    }
}
