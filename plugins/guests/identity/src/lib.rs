//! Test plugin (identity): users with stored SCRAM verifiers and bearer
//! tokens, from its configuration.
//!
//! ```json
//! {
//!   "users": {"alice": {"verifier": "SCRAM-SHA-256$4096:...", "groups": ["analysts"]}},
//!   "tokens": {"tok-bob": {"user": "bob", "groups": ["ops"], "expires_at": 1900000000000}}
//! }
//! ```
//!
//! Both kinds of entry may also carry `"attributes": {"name": "value"}`
//! (given to the principal sorted by name); `expires_at` (Unix
//! milliseconds) is optional.
//!
//! A user in `users` gets its verifier from `scram_verifier`; any other
//! user is asked for a token. `authenticate` then answers, in this order:
//! the token's principal if the token is known, names the startup user and
//! has not expired; `WrongUser` if it names another user; `Expired` if it
//! has expired; and for a token it does not know, `UnknownUser` when no
//! token names the startup user at all, `InvalidToken` otherwise (logging
//! and quoting the token, as a careless plugin would). A token starting
//! `tok-panic` makes it panic, quoting the token.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;
use sluice_plugin::identity::{AuthError, Identity, StoredSecret};
use sluice_plugin::types::{ConnectionInfo, Principal};
use sluice_plugin::{clock, config};

struct Directory;

impl Identity for Directory {
    fn check_config() -> Result<(), String> {
        config_once().as_ref().map(|_| ()).map_err(Clone::clone)
    }

    fn scram_verifier(user: &str, _connection: &ConnectionInfo) -> Option<StoredSecret> {
        configured().scram_verifier(user)
    }

    fn authenticate(
        user: &str,
        token: &str,
        _connection: &ConnectionInfo,
    ) -> Result<Principal, AuthError> {
        configured().authenticate(user, token, clock::now())
    }
}

sluice_plugin::register_identity!(Directory);

/// The configuration, read once per instance.
fn config_once() -> &'static Result<Config, String> {
    static CONFIG: OnceLock<Result<Config, String>> = OnceLock::new();
    CONFIG.get_or_init(|| serde_json::from_str(&config::get()).map_err(|e| e.to_string()))
}

/// The configuration, or a panic (which refuses the login) when it is
/// invalid.
fn configured() -> &'static Config {
    match config_once() {
        Ok(config) => config,
        Err(error) => panic!("guest-identity: invalid configuration: {error}"),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    users: BTreeMap<String, User>,
    #[serde(default)]
    tokens: BTreeMap<String, Token>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct User {
    verifier: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Token {
    user: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    expires_at: Option<u64>,
}

fn principal(id: &str, groups: &[String], attributes: &BTreeMap<String, String>) -> Principal {
    Principal {
        id: id.to_owned(),
        groups: groups.to_vec(),
        attributes: attributes
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect(),
        expires_at: None,
    }
}

impl Config {
    fn scram_verifier(&self, user: &str) -> Option<StoredSecret> {
        let entry = self.users.get(user)?;
        Some(StoredSecret {
            scram_verifier: entry.verifier.clone(),
            principal: principal(user, &entry.groups, &entry.attributes),
        })
    }

    fn authenticate(&self, user: &str, token: &str, now: u64) -> Result<Principal, AuthError> {
        // Careless on purpose, as a plugin should not be: it quotes the
        // token it was handed, for the host to keep out of its log.
        if token.starts_with("tok-panic") {
            panic!("cannot parse token {token}");
        }
        let Some(entry) = self.tokens.get(token) else {
            return if self.tokens.values().any(|entry| entry.user == user) {
                sluice_plugin::log::warn(format!("no such token: {token}"));
                Err(AuthError::InvalidToken(format!("unknown token {token}")))
            } else {
                Err(AuthError::UnknownUser)
            };
        };
        if entry.user != user {
            return Err(AuthError::WrongUser);
        }
        if entry.expires_at.is_some_and(|expires_at| expires_at <= now) {
            return Err(AuthError::Expired);
        }
        Ok(principal(user, &entry.groups, &entry.attributes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        serde_json::from_str(
            r#"{
                "users": {"alice": {"verifier": "SCRAM-SHA-256$v", "groups": ["analysts"]}},
                "tokens": {
                    "tok-bob": {"user": "bob", "groups": ["ops"], "attributes": {"team": "db"}},
                    "tok-old": {"user": "bob", "expires_at": 10}
                }
            }"#,
        )
        .unwrap()
    }

    #[test]
    fn users_get_their_verifier() {
        let secret = config().scram_verifier("alice").unwrap();
        assert_eq!(secret.scram_verifier, "SCRAM-SHA-256$v");
        assert_eq!(secret.principal.groups, ["analysts"]);
        assert!(config().scram_verifier("bob").is_none());
    }

    #[test]
    fn tokens_map_to_principals() {
        let bob = config().authenticate("bob", "tok-bob", 100).unwrap();
        assert_eq!(bob.id, "bob");
        assert_eq!(bob.attributes, [("team".to_owned(), "db".to_owned())]);
        assert_eq!(
            config().authenticate("carol", "tok-bob", 100),
            Err(AuthError::WrongUser)
        );
        assert_eq!(
            config().authenticate("bob", "tok-old", 100),
            Err(AuthError::Expired)
        );
        assert!(matches!(
            config().authenticate("bob", "tok-nope", 100),
            Err(AuthError::InvalidToken(_))
        ));
        assert_eq!(
            config().authenticate("carol", "tok-nope", 100),
            Err(AuthError::UnknownUser)
        );
    }
}
