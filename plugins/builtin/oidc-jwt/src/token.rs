//! Checking one bearer token against the configuration and the JWKS, and
//! mapping its claims to a principal.
//!
//! The order of the checks matters: the token is bounded in size before
//! anything is decoded; the signature is checked before any claim is
//! believed (so `Expired` or `WrongUser` in the audit trail are facts
//! about a token the IdP really issued); and the header only ever narrows
//! the choice of keys, never widens it — each key verifies with the one
//! algorithm its type allows, whatever `alg` says.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value};
use sluice_plugin::identity::AuthError;
use sluice_plugin::log;
use sluice_plugin::types::Principal;

use crate::jwks::{Algorithm, Key, KeySet};
use crate::settings::Settings;

/// Longest token accepted. IdP access and ID tokens are 1-4 KiB even with
/// many groups; the bound keeps a hostile client from making the plugin
/// decode and parse megabytes within its deadline.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The file key of the JWKS in the plugin's `files` table.
pub const JWKS_FILE: &str = "jwks";

/// What the plugin checks tokens with: its settings and the IdP's keys.
#[derive(Debug)]
pub struct Verifier {
    settings: Settings,
    keys: KeySet,
}

/// The JOSE header members this plugin reads. `jku`, `jwk`, `x5u` and
/// `x5c` are deliberately ignored: a token must never bring its own key.
#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    crit: Option<IgnoredAny>,
}

/// A compact JWS split at its dots.
struct Parts<'a> {
    /// `header.payload`, the bytes the signature covers.
    signing_input: &'a str,
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
}

impl Verifier {
    /// Builds the verifier from the config table (JSON) and the JWKS
    /// file's bytes (`None` when the operator named none).
    pub fn load(config_json: &str, jwks: Option<&[u8]>) -> Result<Self, String> {
        let settings = Settings::parse(config_json)?;
        let Some(jwks) = jwks else {
            return Err(format!(
                "no JWKS file: save the IdP's keys (its jwks_uri) to a file and name it \
                 in the plugin's files table, as {JWKS_FILE} = \"jwks.json\""
            ));
        };
        let keys = KeySet::parse(jwks)?;
        Ok(Verifier { settings, keys })
    }

    /// How many keys tokens may be signed with.
    pub fn key_count(&self) -> usize {
        self.keys.keys.len()
    }

    /// Keys of the JWKS that were skipped, one line each, for the log.
    pub fn skipped_keys(&self) -> &[String] {
        &self.keys.skipped
    }

    /// The principal `token` stands for, if it is a JWT this plugin's
    /// issuer signed for its audience, valid at `now_ms` (Unix
    /// milliseconds), naming `user`.
    ///
    /// `UnknownUser` means "not a token of this plugin's": not a compact
    /// JWS at all, or issued by another issuer. sluice then asks the next
    /// identity plugin. Every other error ends the login. No reason
    /// repeats the token or any part of it beyond short header values.
    pub fn authenticate(
        &self,
        user: &str,
        token: &str,
        now_ms: u64,
    ) -> Result<Principal, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid(format!(
                "token is longer than {MAX_TOKEN_LEN} bytes"
            )));
        }
        let Some(parts) = split(token) else {
            return Err(AuthError::UnknownUser);
        };
        let header: Header =
            decode_json(parts.header).ok_or_else(|| invalid("token header is not a JWS header"))?;
        let claims: Map<String, Value> = decode_json(parts.payload)
            .ok_or_else(|| invalid("token payload is not a JSON object"))?;

        // Unverified, and only used to step aside: a token another issuer
        // made is left to the identity plugin configured for that issuer.
        if claims.get("iss").and_then(Value::as_str) != Some(self.settings.issuer.as_str()) {
            log::info("token is not from the configured issuer; left to other identity plugins");
            return Err(AuthError::UnknownUser);
        }

        let algorithm = match Algorithm::from_name(&header.alg) {
            Some(algorithm) => algorithm,
            None if header.alg.eq_ignore_ascii_case("none") => {
                return Err(invalid("alg none is refused: tokens must be signed"));
            }
            None => {
                return Err(invalid(format!(
                    "alg {} is not accepted (RS256 or ES256 only)",
                    shown(&header.alg)
                )));
            }
        };
        // RFC 7515 4.1.11: extensions marked critical must be understood,
        // and this plugin understands none.
        if header.crit.is_some() {
            return Err(invalid("token header lists critical extensions (crit)"));
        }
        let signature = URL_SAFE_NO_PAD
            .decode(parts.signature)
            .map_err(|_| invalid("token signature is not base64url"))?;
        let candidates = self.candidates(algorithm, header.kid.as_deref())?;
        if !candidates
            .iter()
            .any(|key| key.verifies(parts.signing_input.as_bytes(), &signature))
        {
            return Err(invalid(format!(
                "{} signature does not verify with the JWKS",
                algorithm.name()
            )));
        }

        // Signed by the IdP: the claims can be believed from here on.
        self.check_audience(&claims)?;
        let expires_at = self.check_time(&claims, now_ms)?;
        let id = match claims.get(&self.settings.user_claim) {
            Some(Value::String(id)) if !id.is_empty() => id.clone(),
            _ => {
                return Err(invalid(format!(
                    "token has no {:?} claim holding a non-empty string",
                    self.settings.user_claim
                )));
            }
        };
        if id != user {
            return Err(AuthError::WrongUser);
        }
        let groups = self.groups(&claims)?;

        // A few claims policies and the audit trail may want, sorted by
        // name (a BTreeMap) so the order never depends on the token.
        let mut attributes = std::collections::BTreeMap::new();
        attributes.insert("iss".to_owned(), self.settings.issuer.clone());
        if let Some(sub) = claims.get("sub").and_then(Value::as_str) {
            attributes.insert("sub".to_owned(), sub.to_owned());
        }
        attributes.insert(self.settings.user_claim.clone(), id.clone());
        Ok(Principal {
            id,
            groups,
            attributes: attributes.into_iter().collect(),
            // The session ends when the token would no longer be taken.
            expires_at: Some(expires_at),
        })
    }

    /// The keys a token signed with `algorithm` may be checked against.
    /// With a `kid`, only the keys of that id; without, every key of the
    /// algorithm (IdPs with one key often leave `kid` out).
    fn candidates(&self, algorithm: Algorithm, kid: Option<&str>) -> Result<Vec<&Key>, AuthError> {
        let fitting = |key: &&Key| key.algorithm() == algorithm;
        let Some(kid) = kid else {
            let keys: Vec<&Key> = self.keys.keys.iter().filter(fitting).collect();
            if keys.is_empty() {
                return Err(invalid(format!("the JWKS has no {} key", algorithm.name())));
            }
            return Ok(keys);
        };
        let named: Vec<&Key> = self
            .keys
            .keys
            .iter()
            .filter(|key| key.kid.as_deref() == Some(kid))
            .collect();
        if named.is_empty() {
            // Usually the IdP rotated its keys and the file is stale.
            return Err(invalid(format!(
                "no key in the JWKS has kid {}; refresh the JWKS file if the IdP rotated its keys",
                shown(kid)
            )));
        }
        let keys: Vec<&Key> = named.into_iter().filter(fitting).collect();
        if keys.is_empty() {
            return Err(invalid(format!(
                "key {} is not a {} key",
                shown(kid),
                algorithm.name()
            )));
        }
        Ok(keys)
    }

    /// `aud` must hold the configured audience (RFC 7519 4.1.3: a string
    /// or an array of strings).
    fn check_audience(&self, claims: &Map<String, Value>) -> Result<(), AuthError> {
        let audience = self.settings.audience.as_str();
        let meant_for_us = match claims.get("aud") {
            Some(Value::String(aud)) => aud == audience,
            Some(Value::Array(auds)) => auds.iter().any(|aud| aud.as_str() == Some(audience)),
            None => return Err(invalid("token has no aud claim")),
            Some(_) => return Err(invalid("token's aud claim is not a string or an array")),
        };
        if meant_for_us {
            Ok(())
        } else {
            Err(invalid("token is for another audience"))
        }
    }

    /// `exp` is required and must be in the future, `nbf` (if there) must
    /// not be, each give or take the leeway. Returns when the token stops
    /// being taken (its `exp` and the leeway), in Unix milliseconds.
    fn check_time(&self, claims: &Map<String, Value>, now_ms: u64) -> Result<u64, AuthError> {
        // Seconds as f64: NumericDate may have a fraction (RFC 7519 2), and
        // f64 holds Unix milliseconds exactly for millennia.
        let now = now_ms as f64 / 1000.0;
        let leeway = self.settings.leeway_seconds as f64;
        let Some(exp) = numeric_date(claims, "exp")? else {
            // A token that never expires would stay good forever if it leaked.
            return Err(invalid("token has no exp claim"));
        };
        if now >= exp + leeway {
            return Err(AuthError::Expired);
        }
        if let Some(nbf) = numeric_date(claims, "nbf")?
            && now + leeway < nbf
        {
            return Err(AuthError::Expired);
        }
        // Past `now`, so positive; `as` saturates a date beyond u64's.
        Ok(((exp + leeway) * 1000.0) as u64)
    }

    /// The groups claim: an array of strings, or one string; absent (or
    /// null) means no groups. Anything else is refused rather than read
    /// half-way, since policies grant access by group.
    fn groups(&self, claims: &Map<String, Value>) -> Result<Vec<String>, AuthError> {
        let name = &self.settings.groups_claim;
        let not_strings = || {
            invalid(format!(
                "token's {name:?} claim is not a string or an array of strings"
            ))
        };
        match claims.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::String(group)) => Ok(vec![group.clone()]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect::<Option<Vec<String>>>()
                .ok_or_else(not_strings),
            Some(_) => Err(not_strings()),
        }
    }
}

fn invalid(reason: impl Into<String>) -> AuthError {
    AuthError::InvalidToken(reason.into())
}

/// Splits a compact JWS, `header.payload.signature`; `None` for anything
/// with another number of parts (an opaque token, a JWE's five).
fn split(token: &str) -> Option<Parts<'_>> {
    let (signing_input, signature) = token.rsplit_once('.')?;
    let (header, payload) = signing_input.split_once('.')?;
    if payload.contains('.') {
        return None;
    }
    Some(Parts {
        signing_input,
        header,
        payload,
        signature,
    })
}

/// One base64url (unpadded, canonical, as JWS requires) JSON segment.
fn decode_json<T: serde::de::DeserializeOwned>(segment: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A NumericDate claim in seconds, `None` when absent.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<f64>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(value) => value
            .as_f64()
            .map(Some)
            .ok_or_else(|| invalid(format!("token's {name} claim is not a number"))),
    }
}

/// A header value (from the client, unverified) as it may appear in a log
/// line: quoted when short and printable, otherwise left out.
fn shown(value: &str) -> String {
    if value.len() <= 64
        && value
            .bytes()
            .all(|byte| byte.is_ascii_graphic() || byte == b' ')
    {
        format!("{value:?}")
    } else {
        "(long or unprintable, not shown)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_keys::{self, b64, sign_es256, sign_rs256};
    use hmac::{Hmac, Mac};
    use serde_json::json;
    use sha2::Sha256;

    const ISSUER: &str = "https://idp.example.com/realms/payments";
    const AUDIENCE: &str = "sluice";
    /// The tests' clock: a fixed instant, in seconds and in milliseconds.
    const NOW: i64 = 1_750_000_000;
    const NOW_MS: u64 = NOW as u64 * 1000;

    fn jwks() -> String {
        format!(
            r#"{{"keys": [{}, {}]}}"#,
            test_keys::rsa_jwk(test_keys::rsa(), Some("rsa-1")),
            test_keys::ec_jwk(test_keys::ec(), Some("ec-1")),
        )
    }

    fn config() -> String {
        json!({"issuer": ISSUER, "audience": AUDIENCE}).to_string()
    }

    fn verifier() -> Verifier {
        verifier_with(&config())
    }

    fn verifier_with(config: &str) -> Verifier {
        Verifier::load(config, Some(jwks().as_bytes())).unwrap()
    }

    /// The claims of a good token for `agent`; tests change what they test.
    fn claims() -> Value {
        json!({
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "agent",
            "iat": NOW - 10,
            "exp": NOW + 300,
            "groups": ["agents", "readers"],
        })
    }

    fn rs256(claims: &Value) -> String {
        sign_rs256(
            test_keys::rsa(),
            &json!({"alg": "RS256", "typ": "JWT", "kid": "rsa-1"}),
            claims,
        )
    }

    fn es256(claims: &Value) -> String {
        sign_es256(
            test_keys::ec(),
            &json!({"alg": "ES256", "typ": "JWT", "kid": "ec-1"}),
            claims,
        )
    }

    fn check(token: &str) -> Result<Principal, AuthError> {
        verifier().authenticate("agent", token, NOW_MS)
    }

    /// The reason of an `InvalidToken`, which must not repeat the token.
    fn invalid_reason(result: Result<Principal, AuthError>, token: &str) -> String {
        match result {
            Err(AuthError::InvalidToken(reason)) => {
                for part in token.split('.').filter(|part| part.len() > 16) {
                    assert!(!reason.contains(part), "reason repeats the token: {reason}");
                }
                reason
            }
            other => panic!("expected InvalidToken, got {other:?}"),
        }
    }

    fn with(mut claims: Value, name: &str, value: Value) -> Value {
        claims[name] = value;
        claims
    }

    fn without(mut claims: Value, name: &str) -> Value {
        claims.as_object_mut().unwrap().remove(name);
        claims
    }

    fn pair(name: &str, value: &str) -> (String, String) {
        (name.to_owned(), value.to_owned())
    }

    #[test]
    fn a_valid_rs256_token_maps_to_its_principal() {
        let principal = check(&rs256(&claims())).unwrap();
        assert_eq!(principal.id, "agent");
        assert_eq!(principal.groups, ["agents", "readers"]);
        assert_eq!(
            principal.attributes,
            [pair("iss", ISSUER), pair("sub", "agent")]
        );
        // Its session lasts as long as the token is taken: exp and the
        // default 60 s leeway.
        assert_eq!(principal.expires_at, Some((NOW as u64 + 300 + 60) * 1000));
    }

    #[test]
    fn a_valid_es256_token_maps_to_its_principal() {
        let principal = check(&es256(&claims())).unwrap();
        assert_eq!(principal.id, "agent");
        assert_eq!(principal.groups, ["agents", "readers"]);
    }

    #[test]
    fn without_kid_every_key_of_the_algorithm_is_tried() {
        let token = sign_rs256(test_keys::rsa(), &json!({"alg": "RS256"}), &claims());
        assert_eq!(check(&token).unwrap().id, "agent");
        let token = sign_es256(test_keys::ec(), &json!({"alg": "ES256"}), &claims());
        assert_eq!(check(&token).unwrap().id, "agent");
        // Several keys of one type: the one that signed is found.
        let jwks = format!(
            r#"{{"keys": [{}, {}]}}"#,
            test_keys::rsa_jwk(test_keys::other_rsa(), None),
            test_keys::rsa_jwk(test_keys::rsa(), None),
        );
        let verifier = Verifier::load(&config(), Some(jwks.as_bytes())).unwrap();
        let token = sign_rs256(test_keys::rsa(), &json!({"alg": "RS256"}), &claims());
        assert_eq!(
            verifier.authenticate("agent", &token, NOW_MS).unwrap().id,
            "agent"
        );
    }

    #[test]
    fn expired_tokens_are_refused_after_the_leeway() {
        // Expired 30 s ago: inside the default 60 s leeway.
        let token = rs256(&with(claims(), "exp", json!(NOW - 30)));
        assert!(check(&token).is_ok());
        // Expired 60 s ago: at the end of the leeway.
        let token = rs256(&with(claims(), "exp", json!(NOW - 60)));
        assert_eq!(check(&token), Err(AuthError::Expired));
        let token = rs256(&with(claims(), "exp", json!(NOW - 3600)));
        assert_eq!(check(&token), Err(AuthError::Expired));
        // Without leeway, a token expires at its exp.
        let strict = verifier_with(
            &json!({"issuer": ISSUER, "audience": AUDIENCE, "leeway_seconds": 0}).to_string(),
        );
        let token = rs256(&with(claims(), "exp", json!(NOW)));
        assert_eq!(
            strict.authenticate("agent", &token, NOW_MS),
            Err(AuthError::Expired)
        );
        assert!(strict.authenticate("agent", &token, NOW_MS - 1).is_ok());
        // A fractional NumericDate is read as such.
        let token = rs256(&with(claims(), "exp", json!(NOW as f64 + 0.5)));
        assert!(strict.authenticate("agent", &token, NOW_MS + 499).is_ok());
        assert_eq!(
            strict.authenticate("agent", &token, NOW_MS + 500),
            Err(AuthError::Expired)
        );
    }

    #[test]
    fn tokens_not_yet_valid_are_refused_beyond_the_leeway() {
        let token = rs256(&with(claims(), "nbf", json!(NOW + 120)));
        assert_eq!(check(&token), Err(AuthError::Expired));
        let token = rs256(&with(claims(), "nbf", json!(NOW + 30)));
        assert!(check(&token).is_ok(), "inside the leeway");
        let token = rs256(&with(claims(), "nbf", json!(NOW - 30)));
        assert!(check(&token).is_ok());
    }

    #[test]
    fn exp_is_required_and_dates_must_be_numbers() {
        let token = rs256(&without(claims(), "exp"));
        assert_eq!(
            invalid_reason(check(&token), &token),
            "token has no exp claim"
        );
        let token = rs256(&with(claims(), "exp", json!("tomorrow")));
        assert!(invalid_reason(check(&token), &token).contains("exp claim is not a number"));
        let token = rs256(&with(claims(), "nbf", json!(null)));
        assert!(invalid_reason(check(&token), &token).contains("nbf claim is not a number"));
    }

    #[test]
    fn the_audience_must_be_ours() {
        let token = rs256(&with(claims(), "aud", json!("another-app")));
        assert_eq!(
            invalid_reason(check(&token), &token),
            "token is for another audience"
        );
        let token = rs256(&with(claims(), "aud", json!(["another-app", AUDIENCE])));
        assert!(check(&token).is_ok(), "an array holding ours");
        let token = rs256(&with(claims(), "aud", json!(["another-app", "third"])));
        assert_eq!(
            invalid_reason(check(&token), &token),
            "token is for another audience"
        );
        let token = rs256(&with(claims(), "aud", json!([])));
        assert_eq!(
            invalid_reason(check(&token), &token),
            "token is for another audience"
        );
        let token = rs256(&without(claims(), "aud"));
        assert_eq!(
            invalid_reason(check(&token), &token),
            "token has no aud claim"
        );
        let token = rs256(&with(claims(), "aud", json!({"sluice": true})));
        assert!(invalid_reason(check(&token), &token).contains("aud claim is not"));
    }

    #[test]
    fn tokens_of_other_issuers_are_left_to_other_plugins() {
        let token = rs256(&with(
            claims(),
            "iss",
            json!("https://other-idp.example.com"),
        ));
        assert_eq!(check(&token), Err(AuthError::UnknownUser));
        // A trailing slash makes another issuer, as OIDC compares exactly.
        let token = rs256(&with(claims(), "iss", json!(format!("{ISSUER}/"))));
        assert_eq!(check(&token), Err(AuthError::UnknownUser));
        let token = rs256(&without(claims(), "iss"));
        assert_eq!(check(&token), Err(AuthError::UnknownUser));
    }

    #[test]
    fn tokens_signed_by_another_key_are_refused() {
        let token = sign_rs256(
            test_keys::other_rsa(),
            &json!({"alg": "RS256", "kid": "rsa-1"}),
            &claims(),
        );
        let reason = invalid_reason(check(&token), &token);
        assert_eq!(reason, "RS256 signature does not verify with the JWKS");
        let token = sign_es256(
            test_keys::other_ec(),
            &json!({"alg": "ES256", "kid": "ec-1"}),
            &claims(),
        );
        let reason = invalid_reason(check(&token), &token);
        assert_eq!(reason, "ES256 signature does not verify with the JWKS");
        let token = sign_rs256(test_keys::other_rsa(), &json!({"alg": "RS256"}), &claims());
        invalid_reason(check(&token), &token);
    }

    #[test]
    fn a_kid_the_jwks_lacks_is_refused() {
        let token = sign_rs256(
            test_keys::rsa(),
            &json!({"alg": "RS256", "kid": "rsa-2"}),
            &claims(),
        );
        let reason = invalid_reason(check(&token), &token);
        assert!(
            reason.starts_with("no key in the JWKS has kid \"rsa-2\""),
            "{reason}"
        );
        // A hostile kid is not written to the log.
        let kid = "x".repeat(500);
        let token = sign_rs256(
            test_keys::rsa(),
            &json!({"alg": "RS256", "kid": kid}),
            &claims(),
        );
        let reason = invalid_reason(check(&token), &token);
        assert!(!reason.contains("xxxx"), "{reason}");
    }

    #[test]
    fn alg_none_is_refused() {
        for alg in ["none", "None", "NONE"] {
            let header = b64(json!({"alg": alg}).to_string());
            let payload = b64(claims().to_string());
            for token in [
                format!("{header}.{payload}."),
                format!("{header}.{payload}.c2ln"),
            ] {
                let reason = invalid_reason(check(&token), &token);
                assert_eq!(reason, "alg none is refused: tokens must be signed");
            }
        }
    }

    #[test]
    fn hs256_with_the_public_key_as_secret_is_refused() {
        // The classic algorithm confusion: a verifier that lets the header
        // pick HMAC would take the RSA public key as the shared secret.
        let public_jwk = test_keys::rsa_jwk(test_keys::rsa(), Some("rsa-1"));
        let header = json!({"alg": "HS256", "kid": "rsa-1"});
        let input = test_keys::signing_input(&header, &claims());
        for secret in [public_jwk.as_bytes(), jwks().as_bytes()] {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
            mac.update(input.as_bytes());
            let token = format!("{input}.{}", b64(mac.finalize().into_bytes()));
            let reason = invalid_reason(check(&token), &token);
            assert_eq!(
                reason,
                "alg \"HS256\" is not accepted (RS256 or ES256 only)"
            );
        }
        for alg in ["RS512", "PS256", "ES384", "EdDSA", "rs256"] {
            let token = sign_rs256(test_keys::rsa(), &json!({"alg": alg}), &claims());
            let reason = invalid_reason(check(&token), &token);
            assert!(reason.contains("is not accepted"), "{alg}: {reason}");
        }
    }

    #[test]
    fn the_header_cannot_make_a_key_verify_another_algorithm() {
        // ES256 naming the RSA key: refused, whatever the signature.
        let token = sign_es256(
            test_keys::ec(),
            &json!({"alg": "ES256", "kid": "rsa-1"}),
            &claims(),
        );
        let reason = invalid_reason(check(&token), &token);
        assert_eq!(reason, "key \"rsa-1\" is not a ES256 key");
        // RS256 naming the EC key.
        let token = sign_rs256(
            test_keys::rsa(),
            &json!({"alg": "RS256", "kid": "ec-1"}),
            &claims(),
        );
        let reason = invalid_reason(check(&token), &token);
        assert_eq!(reason, "key \"ec-1\" is not a RS256 key");
        // No kid, and no key of the algorithm in the set.
        let rsa_only = format!(
            r#"{{"keys": [{}]}}"#,
            test_keys::rsa_jwk(test_keys::rsa(), Some("rsa-1"))
        );
        let verifier = Verifier::load(&config(), Some(rsa_only.as_bytes())).unwrap();
        let token = sign_es256(test_keys::ec(), &json!({"alg": "ES256"}), &claims());
        let reason = invalid_reason(verifier.authenticate("agent", &token, NOW_MS), &token);
        assert_eq!(reason, "the JWKS has no ES256 key");
    }

    #[test]
    fn a_tampered_payload_is_refused() {
        let token = rs256(&claims());
        let forged = b64(with(claims(), "groups", json!(["admins"])).to_string());
        let mut parts: Vec<&str> = token.split('.').collect();
        parts[1] = &forged;
        let tampered = parts.join(".");
        let reason = invalid_reason(check(&tampered), &tampered);
        assert_eq!(reason, "RS256 signature does not verify with the JWKS");

        let token = es256(&claims());
        let forged = b64(with(claims(), "sub", json!("admin")).to_string());
        let mut parts: Vec<&str> = token.split('.').collect();
        parts[1] = &forged;
        let tampered = parts.join(".");
        let result = verifier().authenticate("admin", &tampered, NOW_MS);
        let reason = invalid_reason(result, &tampered);
        assert_eq!(reason, "ES256 signature does not verify with the JWKS");
    }

    #[test]
    fn a_der_ecdsa_signature_is_refused() {
        // JWS wants r || s; a DER signature of the same input does not pass.
        let header = json!({"alg": "ES256", "kid": "ec-1"});
        let input = test_keys::signing_input(&header, &claims());
        let signature: p256::ecdsa::Signature =
            p256::ecdsa::signature::Signer::sign(test_keys::ec(), input.as_bytes());
        let token = format!("{input}.{}", b64(signature.to_der()));
        invalid_reason(check(&token), &token);
    }

    #[test]
    fn malformed_tokens_are_refused_without_panicking() {
        // Not a compact JWS at all: not ours to judge.
        for token in [
            "",
            "a-long-opaque-token",
            "a.b",
            "a.b.c.d",
            "a.b.c.d.e",
            "...",
        ] {
            assert_eq!(check(token), Err(AuthError::UnknownUser), "{token:?}");
        }
        let good = rs256(&claims());
        let parts: Vec<&str> = good.split('.').collect();
        let (header, payload, signature) = (parts[0], parts[1], parts[2]);
        let cases = [
            // Not base64url.
            (
                format!("%%%.{payload}.{signature}"),
                "token header is not a JWS header",
            ),
            (
                format!("{header}.{payload}=.{signature}"),
                "token payload is not a JSON object",
            ),
            (
                format!("{header}.{payload}.{signature}="),
                "token signature is not base64url",
            ),
            (
                format!("{header}.{payload}.{signature}+"),
                "token signature is not base64url",
            ),
            // base64url, but not JSON, or not the right JSON.
            (
                format!("{}.{payload}.{signature}", b64("hello")),
                "token header is not a JWS header",
            ),
            (
                format!("{}.{payload}.{signature}", b64("{}")),
                "token header is not a JWS header",
            ),
            (
                format!("{}.{payload}.{signature}", b64(r#"{"alg": 256}"#)),
                "token header is not a JWS header",
            ),
            (
                format!(
                    "{}.{payload}.{signature}",
                    b64(r#"{"alg": "RS256", "alg": "none"}"#)
                ),
                "token header is not a JWS header",
            ),
            (
                format!("{header}.{}.{signature}", b64("hello")),
                "token payload is not a JSON object",
            ),
            (
                format!("{header}.{}.{signature}", b64("[1, 2]")),
                "token payload is not a JSON object",
            ),
            (
                format!("{header}.{}.{signature}", b64([0xff, 0xfe])),
                "token payload is not a JSON object",
            ),
            (
                format!("{header}.{payload}."),
                "RS256 signature does not verify with the JWKS",
            ),
            (
                format!("{header}.{payload}.{}", b64([0u8; 256])),
                "RS256 signature does not verify with the JWKS",
            ),
        ];
        for (token, expected) in cases {
            assert_eq!(invalid_reason(check(&token), &token), expected, "{token}");
        }
    }

    #[test]
    fn critical_header_extensions_are_refused() {
        let token = sign_rs256(
            test_keys::rsa(),
            &json!({"alg": "RS256", "kid": "rsa-1", "crit": ["exp"], "exp": NOW + 60}),
            &claims(),
        );
        let reason = invalid_reason(check(&token), &token);
        assert_eq!(reason, "token header lists critical extensions (crit)");
    }

    #[test]
    fn a_token_for_another_user_is_wrong_user() {
        let token = rs256(&claims());
        let verifier = verifier();
        assert_eq!(
            verifier.authenticate("bob", &token, NOW_MS),
            Err(AuthError::WrongUser)
        );
        assert_eq!(
            verifier.authenticate("Agent", &token, NOW_MS),
            Err(AuthError::WrongUser)
        );
        assert!(verifier.authenticate("agent", &token, NOW_MS).is_ok());
    }

    #[test]
    fn the_groups_claim_may_be_an_array_a_string_or_absent() {
        let token = rs256(&with(claims(), "groups", json!("agents")));
        assert_eq!(check(&token).unwrap().groups, ["agents"]);
        let token = rs256(&without(claims(), "groups"));
        assert!(check(&token).unwrap().groups.is_empty());
        let token = rs256(&with(claims(), "groups", json!([])));
        assert!(check(&token).unwrap().groups.is_empty());
        for bad in [json!(7), json!(["agents", 7]), json!({"agents": true})] {
            let token = rs256(&with(claims(), "groups", bad.clone()));
            let reason = invalid_reason(check(&token), &token);
            assert!(
                reason.contains("\"groups\" claim is not"),
                "{bad}: {reason}"
            );
        }
        // Another claim, when the operator says so.
        let verifier = verifier_with(
            &json!({"issuer": ISSUER, "audience": AUDIENCE, "groups_claim": "roles"}).to_string(),
        );
        let token = rs256(&with(claims(), "roles", json!(["dba"])));
        let principal = verifier.authenticate("agent", &token, NOW_MS).unwrap();
        assert_eq!(principal.groups, ["dba"], "groups is not read any more");
    }

    #[test]
    fn a_custom_user_claim_names_the_principal() {
        let verifier = verifier_with(
            &json!({"issuer": ISSUER, "audience": AUDIENCE, "user_claim": "preferred_username"})
                .to_string(),
        );
        let claims = with(
            with(claims(), "sub", json!("5f1c9a2e-0d7b")),
            "preferred_username",
            json!("alice"),
        );
        let token = rs256(&claims);
        let principal = verifier.authenticate("alice", &token, NOW_MS).unwrap();
        assert_eq!(principal.id, "alice");
        assert_eq!(
            principal.attributes,
            [
                pair("iss", ISSUER),
                pair("preferred_username", "alice"),
                pair("sub", "5f1c9a2e-0d7b"),
            ]
        );
        // The sub is not the user any more.
        assert_eq!(
            verifier.authenticate("5f1c9a2e-0d7b", &token, NOW_MS),
            Err(AuthError::WrongUser)
        );
        // A token without the claim, or with an empty or non-string one.
        for bad in [None, Some(json!("")), Some(json!(["alice"]))] {
            let claims = match &bad {
                None => without(claims.clone(), "preferred_username"),
                Some(value) => with(claims.clone(), "preferred_username", value.clone()),
            };
            let token = rs256(&claims);
            let reason = invalid_reason(verifier.authenticate("alice", &token, NOW_MS), &token);
            assert_eq!(
                reason, "token has no \"preferred_username\" claim holding a non-empty string",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn oversized_tokens_are_refused_before_decoding() {
        let padding = "a".repeat(MAX_TOKEN_LEN);
        let token = rs256(&with(claims(), "padding", json!(padding)));
        assert!(token.len() > MAX_TOKEN_LEN);
        let reason = invalid_reason(check(&token), &token);
        assert_eq!(reason, "token is longer than 16384 bytes");
        // Even when it is not a JWS.
        let opaque = "x".repeat(MAX_TOKEN_LEN + 1);
        assert!(matches!(check(&opaque), Err(AuthError::InvalidToken(_))));
        // Just below the bound, a big token is fine.
        let padding = "a".repeat(MAX_TOKEN_LEN / 2);
        let token = rs256(&with(claims(), "padding", json!(padding)));
        assert!(token.len() <= MAX_TOKEN_LEN);
        assert!(check(&token).is_ok());
    }

    #[test]
    fn configuration_errors_are_clear() {
        let jwks = jwks();
        let load = |config: &str, jwks: Option<&[u8]>| Verifier::load(config, jwks).unwrap_err();
        assert_eq!(
            load(r#"{"audience": "sluice"}"#, Some(jwks.as_bytes())),
            "plugin config: missing field `issuer`"
        );
        let error = load(
            &json!({"issuer": ISSUER, "audience": AUDIENCE, "jwks_url": "https://idp"}).to_string(),
            Some(jwks.as_bytes()),
        );
        assert!(
            error.starts_with("plugin config: unknown field `jwks_url`"),
            "{error}"
        );
        let error = load(&config(), None);
        assert!(error.starts_with("no JWKS file"), "{error}");
        assert!(error.contains("jwks = \"jwks.json\""), "{error}");
        let error = load(&config(), Some(b"<html>login</html>"));
        assert!(error.starts_with("JWKS file: "), "{error}");
        let error = load(
            &config(),
            Some(br#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#),
        );
        assert!(error.contains("private key material"), "{error}");
        let error = load(&config(), Some(br#"{"keys": []}"#));
        assert!(error.contains("no usable signing key"), "{error}");
    }
}
