//! The `oidc-jwt` identity plugin, shipped inside sluice as
//! `builtin:oidc-jwt`: clients log in with a JWT their IdP issued (an
//! OIDC ID token or a JWT access token) as the password, and the plugin
//! checks it against the IdP's public keys.
//!
//! Why: agents and people already hold short-lived tokens from the
//! company's IdP; accepting those means no long-lived database secret to
//! hand out, rotate or leak, and the principal's groups come from the
//! directory that already manages them. Why a JWKS *file* and not the
//! IdP's URL: plugins have no network (the host owns all I/O), and a file
//! the host watches reloads the plugin when the operator, or a job,
//! refreshes it after a key rotation.
//!
//! # What is checked, in order
//!
//! 1. Size: at most 16 KiB, so hostile input costs little to refuse.
//! 2. Shape: a compact JWS, `header.payload.signature`, each part strict
//!    base64url, header and payload JSON objects.
//! 3. Issuer: `iss` equals the configured `issuer`.
//! 4. Algorithm: `alg` is RS256 or ES256. `none`, the HMAC algorithms
//!    (HS256 with the public key as the "secret" is the classic algorithm
//!    confusion) and everything else are refused, as are headers with
//!    `crit`. A token never brings its own key (`jku`, `jwk`, `x5u`, `x5c`
//!    are ignored).
//! 5. Signature: with `kid`, against the JWKS keys of that id; without,
//!    against every key of the algorithm. A key verifies only with the
//!    algorithm of its type (RSA: RS256, EC P-256: ES256), so the header
//!    can narrow the keys tried but never change how a key is used.
//! 6. Audience: `aud` (a string or an array) holds the configured
//!    `audience`.
//! 7. Time: `exp` is required and must be in the future, `nbf` (if any)
//!    must not be, both give or take `leeway_seconds` (60 by default).
//!    The clock is the host's ([`sluice_plugin::clock::now`]).
//! 8. User: the `user_claim` (default `sub`) must be a non-empty string,
//!    equal to the startup user, exactly (case matters, as in PostgreSQL).
//!
//! # The answer
//!
//! The principal's `id` is the user claim; its `groups` are the
//! `groups_claim` (default `groups`: an array of strings, or one string;
//! absent means none); its `attributes` are `iss`, `sub` and the user
//! claim, sorted by name.
//!
//! Errors map to the WIT's `auth-error` so the log and the audit trail say
//! what happened (the client always sees the same 28P01):
//!
//! - `UnknownUser` — the token is not this plugin's to judge: not a
//!   compact JWS at all (an opaque token meant for another identity
//!   plugin), or issued by another issuer. sluice then asks the next
//!   identity plugin, so several IdPs (one `oidc-jwt` each) can be chained.
//!   The issuer is read before the signature is checked, which is safe:
//!   stepping aside never admits anyone.
//! - `InvalidToken(reason)` — a JWS claiming this issuer that is oversized
//!   or malformed, uses a refused algorithm, names a key the JWKS lacks,
//!   does not verify, is for another audience, or lacks a required claim.
//!   Reasons never contain the token (at most a short, printable `alg` or
//!   `kid` from the header).
//! - `Expired` — a verified token outside its `exp`/`nbf` window.
//! - `WrongUser` — a verified, current token for another user.
//!
//! The plugin never offers SCRAM verifiers (`scram_verifier` is `None`),
//! so sluice asks for the token as a cleartext password, which it does only
//! over TLS or loopback.
//!
//! `check_config` refuses a configuration with a missing or empty
//! `issuer`/`audience`, unknown keys, a leeway over 300 seconds, no JWKS
//! file, or a JWKS that is not JSON, holds private key material, has a
//! broken RSA/P-256 key, or has no usable key at all. Keys the plugin cannot use (encryption keys, other
//! curves, other algorithms) are skipped with a log line.

mod jwks;
mod settings;
mod token;

#[cfg(test)]
mod test_keys;

use std::sync::OnceLock;

use sluice_plugin::identity::{AuthError, Identity};
use sluice_plugin::types::{ConnectionInfo, Principal};
use sluice_plugin::{clock, config, log};

use token::{JWKS_FILE, Verifier};

struct OidcJwt;

impl Identity for OidcJwt {
    fn check_config() -> Result<(), String> {
        let verifier = loaded().as_ref().map_err(Clone::clone)?;
        for skipped in verifier.skipped_keys() {
            log::info(format!("JWKS {skipped}: skipped"));
        }
        log::info(format!(
            "{} signing keys loaded from the {JWKS_FILE:?} file",
            verifier.key_count()
        ));
        Ok(())
    }

    fn authenticate(
        user: &str,
        token: &str,
        _connection: &ConnectionInfo,
    ) -> Result<Principal, AuthError> {
        configured().authenticate(user, token, clock::now())
    }
}

sluice_plugin::register_identity!(OidcJwt);

/// The settings and keys, parsed once per instance: the host reloads the
/// plugin (fresh instances) whenever the config table or the JWKS file
/// changes, so the cache never outlives what it was made from.
fn loaded() -> &'static Result<Verifier, String> {
    static VERIFIER: OnceLock<Result<Verifier, String>> = OnceLock::new();
    VERIFIER.get_or_init(|| Verifier::load(&config::get(), config::file(JWKS_FILE).as_deref()))
}

/// The verifier, or a panic — which refuses the login (fail closed) — when
/// the configuration is invalid. `check_config` has already refused such a
/// version, so this is a second line of defence only.
fn configured() -> &'static Verifier {
    match loaded() {
        Ok(verifier) => verifier,
        Err(error) => panic!("oidc-jwt: invalid configuration: {error}"),
    }
}
