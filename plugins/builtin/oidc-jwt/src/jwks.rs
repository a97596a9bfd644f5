//! The JWKS file: the IdP's public signing keys, as the operator saved
//! them from the IdP's `jwks_uri`.
//!
//! Only keys this plugin can verify with are kept: RSA keys (RS256) of
//! 2048 to 8192 bits and EC keys on P-256 (ES256) that are meant for
//! signatures. An IdP's JWKS often lists keys for other uses too
//! (encryption keys, other curves), so those are skipped with a note, not
//! refused; a key of a usable type whose numbers do not make a key is
//! refused, because the file is then not what the IdP published. A key
//! holding private material is refused outright: the gateway must never
//! be handed a signing key.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use p256::ecdsa::VerifyingKey;
use p256::ecdsa::signature::Verifier as _;
use rsa::{BigUint, Pkcs1v15Sign, RsaPublicKey};
use serde::Deserialize;
use serde::de::IgnoredAny;
use sha2::{Digest as _, Sha256};

/// Smallest RSA modulus accepted: below 2048 bits RSA is not considered
/// safe for signatures (NIST SP 800-131A).
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted, so a verification stays cheap.
pub const MAX_RSA_BITS: usize = 8192;

/// base64url for JWK members: RFC 7518 says unpadded, but padded values
/// from hand-edited files carry the same bytes, so both are read.
const JWK_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The JWS algorithms this plugin verifies. Each is tied to one key type,
/// so a token's header can never make a key be used another way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// ECDSA on P-256 with SHA-256.
    Es256,
}

impl Algorithm {
    /// The algorithm a JWS header's `alg` names, if it is one of ours.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "RS256" => Some(Algorithm::Rs256),
            "ES256" => Some(Algorithm::Es256),
            _ => None,
        }
    }

    /// The `alg` name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Es256 => "ES256",
        }
    }
}

/// One usable public key.
#[derive(Debug)]
pub struct Key {
    /// The key's `kid`, which tokens name it by.
    pub kid: Option<String>,
    public: PublicKey,
}

#[derive(Debug)]
enum PublicKey {
    Rsa(Box<RsaPublicKey>),
    P256(VerifyingKey),
}

impl Key {
    /// The one algorithm this key verifies.
    pub fn algorithm(&self) -> Algorithm {
        match self.public {
            PublicKey::Rsa(_) => Algorithm::Rs256,
            PublicKey::P256(_) => Algorithm::Es256,
        }
    }

    /// Whether `signature` is this key's signature of `message` under the
    /// key's own algorithm. Any malformation is simply "no".
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        match &self.public {
            PublicKey::Rsa(key) => key
                .verify(
                    Pkcs1v15Sign::new::<Sha256>(),
                    &Sha256::digest(message),
                    signature,
                )
                .is_ok(),
            // JWS carries ECDSA signatures as raw r || s (RFC 7518 3.4),
            // 64 bytes for P-256, not DER.
            PublicKey::P256(key) => p256::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|signature| key.verify(message, &signature).is_ok()),
        }
    }
}

/// The usable keys of a JWKS file, and what was skipped and why.
#[derive(Debug)]
pub struct KeySet {
    /// Keys tokens may be signed with, in file order.
    pub keys: Vec<Key>,
    /// One line per key that was skipped, for the log.
    pub skipped: Vec<String>,
}

/// A JWKS document, RFC 7517 section 5. Other members are allowed: IdPs
/// add their own.
#[derive(Deserialize)]
struct RawSet {
    keys: Vec<RawKey>,
}

/// The members of one JWK this plugin looks at; others (`x5c`, `x5t`,
/// ...) are ignored, since the key itself is in `n`/`e` or `x`/`y`.
#[derive(Deserialize)]
struct RawKey {
    kty: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
    alg: Option<String>,
    kid: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
    /// Private exponent (RSA) or scalar (EC): must not be there.
    d: Option<IgnoredAny>,
    /// A symmetric key's secret: must not be there either.
    k: Option<IgnoredAny>,
}

impl KeySet {
    /// Reads a JWKS file's bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let raw: RawSet =
            serde_json::from_slice(bytes).map_err(|error| format!("JWKS file: {error}"))?;
        let mut set = KeySet {
            keys: Vec::new(),
            skipped: Vec::new(),
        };
        for (index, raw) in raw.keys.into_iter().enumerate() {
            let label = match &raw.kid {
                Some(kid) => format!("key {index} (kid {kid:?})"),
                None => format!("key {index}"),
            };
            match parse_key(raw) {
                Ok(Usable::Yes(key)) => set.keys.push(key),
                Ok(Usable::No(why)) => set.skipped.push(format!("{label}: {why}")),
                Err(why) => return Err(format!("JWKS file, {label}: {why}")),
            }
        }
        if set.keys.is_empty() {
            let mut message =
                "JWKS file has no usable signing key (RSA for RS256, or EC P-256 for ES256)"
                    .to_owned();
            if !set.skipped.is_empty() {
                message.push_str("; skipped: ");
                message.push_str(&set.skipped.join("; "));
            }
            return Err(message);
        }
        Ok(set)
    }
}

enum Usable {
    Yes(Key),
    No(String),
}

/// One JWK: a usable key, a key to skip (and why), or an error.
fn parse_key(raw: RawKey) -> Result<Usable, String> {
    if raw.d.is_some() || raw.k.is_some() {
        return Err(
            "holds private key material (`d` or `k`); give sluice the IdP's \
                    public keys only, and treat this file's key as leaked"
                .to_owned(),
        );
    }
    let Some(kty) = raw.kty.as_deref() else {
        return Err("has no `kty`".to_owned());
    };
    let algorithm = match (kty, raw.crv.as_deref()) {
        ("RSA", _) => Algorithm::Rs256,
        ("EC", Some("P-256")) => Algorithm::Es256,
        ("EC", Some(curve)) => return Ok(Usable::No(format!("curve {curve} is not supported"))),
        ("EC", None) => return Err("is an EC key without `crv`".to_owned()),
        (other, _) => return Ok(Usable::No(format!("key type {other} is not supported"))),
    };
    if let Some(use_) = raw.use_.as_deref().filter(|use_| *use_ != "sig") {
        return Ok(Usable::No(format!("its use is {use_:?}, not \"sig\"")));
    }
    if let Some(ops) = &raw.key_ops
        && !ops.iter().any(|op| op == "verify")
    {
        return Ok(Usable::No(
            "its key_ops do not include \"verify\"".to_owned(),
        ));
    }
    // A key published for one algorithm is used for that one only.
    if let Some(alg) = raw.alg.as_deref()
        && alg != algorithm.name()
    {
        return Ok(Usable::No(format!(
            "its alg is {alg}, and only {} is supported for a {kty} key",
            algorithm.name()
        )));
    }
    let public = match algorithm {
        Algorithm::Rs256 => PublicKey::Rsa(Box::new(rsa_key(&raw)?)),
        Algorithm::Es256 => PublicKey::P256(p256_key(&raw)?),
    };
    Ok(Usable::Yes(Key {
        kid: raw.kid,
        public,
    }))
}

fn rsa_key(raw: &RawKey) -> Result<RsaPublicKey, String> {
    let n = BigUint::from_bytes_be(&member(&raw.n, "n")?);
    let e = BigUint::from_bytes_be(&member(&raw.e, "e")?);
    let bits = n.bits();
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "RSA modulus is {bits} bits, at least {MIN_RSA_BITS} are required"
        ));
    }
    RsaPublicKey::new_with_max_size(n, e, MAX_RSA_BITS)
        .map_err(|error| format!("is not a usable RSA public key ({error})"))
}

fn p256_key(raw: &RawKey) -> Result<VerifyingKey, String> {
    let x = member(&raw.x, "x")?;
    let y = member(&raw.y, "y")?;
    let (Ok(x), Ok(y)) = (<[u8; 32]>::try_from(x), <[u8; 32]>::try_from(y)) else {
        return Err("`x` and `y` must be 32 bytes each for P-256".to_owned());
    };
    let point = p256::EncodedPoint::from_affine_coordinates(&x.into(), &y.into(), false);
    VerifyingKey::from_encoded_point(&point)
        .map_err(|_| "`x` and `y` are not a point on P-256".to_owned())
}

/// A required base64url member's bytes.
fn member(value: &Option<String>, name: &str) -> Result<Vec<u8>, String> {
    let Some(value) = value else {
        return Err(format!("has no `{name}`"));
    };
    let bytes = JWK_BASE64
        .decode(value)
        .map_err(|_| format!("`{name}` is not base64url"))?;
    if bytes.is_empty() {
        return Err(format!("`{name}` is empty"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_keys;

    fn error_of(json: &str) -> String {
        match KeySet::parse(json.as_bytes()) {
            Ok(set) => panic!("accepted {} keys from {json}", set.keys.len()),
            Err(error) => error,
        }
    }

    #[test]
    fn rsa_and_p256_keys_are_read() {
        let json = format!(
            r#"{{"keys": [{}, {}]}}"#,
            test_keys::rsa_jwk(test_keys::rsa(), Some("r1")),
            test_keys::ec_jwk(test_keys::ec(), Some("e1")),
        );
        let set = KeySet::parse(json.as_bytes()).unwrap();
        assert_eq!(set.keys.len(), 2);
        assert_eq!(set.keys[0].kid.as_deref(), Some("r1"));
        assert_eq!(set.keys[0].algorithm(), Algorithm::Rs256);
        assert_eq!(set.keys[1].kid.as_deref(), Some("e1"));
        assert_eq!(set.keys[1].algorithm(), Algorithm::Es256);
        assert!(set.skipped.is_empty());
    }

    #[test]
    fn keys_for_other_uses_are_skipped_with_a_note() {
        let rsa = test_keys::rsa_jwk(test_keys::rsa(), Some("sig"));
        let json = format!(
            r#"{{"keys": [
                {{"kty": "RSA", "use": "enc", "kid": "enc", "n": "AQAB", "e": "AQAB"}},
                {{"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA"}},
                {{"kty": "OKP", "crv": "Ed25519", "x": "AA"}},
                {{"kty": "RSA", "alg": "RS384", "kid": "rs384", "n": "AQAB", "e": "AQAB"}},
                {{"kty": "RSA", "key_ops": ["encrypt"], "n": "AQAB", "e": "AQAB"}},
                {rsa}
            ], "x-vendor": true}}"#
        );
        let set = KeySet::parse(json.as_bytes()).unwrap();
        assert_eq!(set.keys.len(), 1);
        assert_eq!(set.keys[0].kid.as_deref(), Some("sig"));
        assert_eq!(set.skipped.len(), 5, "{:?}", set.skipped);
        assert!(set.skipped[0].contains("use is \"enc\""));
        assert!(set.skipped[1].contains("curve P-384"));
        assert!(set.skipped[2].contains("key type OKP"));
        assert!(set.skipped[3].contains("alg is RS384"));
        assert!(set.skipped[4].contains("key_ops"));
    }

    #[test]
    fn a_set_with_no_usable_key_is_refused() {
        assert_eq!(
            error_of(r#"{"keys": []}"#),
            "JWKS file has no usable signing key (RSA for RS256, or EC P-256 for ES256)"
        );
        let error = error_of(r#"{"keys": [{"kty": "oct", "alg": "HS256"}]}"#);
        assert!(error.contains("no usable signing key"), "{error}");
        assert!(error.contains("key type oct is not supported"), "{error}");
    }

    #[test]
    fn files_that_are_not_a_jwks_are_refused() {
        let error = error_of("not json");
        assert!(
            error.starts_with("JWKS file: expected ident at line 1"),
            "{error}"
        );
        let error = error_of(r#"{"kty": "RSA", "n": "AQAB", "e": "AQAB"}"#);
        assert!(error.contains("missing field `keys`"), "{error}");
        let error = error_of(r#"{"keys": [{"kty": "RSA", "kid": 7}]}"#);
        assert!(error.contains("invalid type: integer `7`"), "{error}");
    }

    #[test]
    fn broken_keys_of_usable_types_are_refused() {
        let error = error_of(r#"{"keys": [{"kty": "RSA", "kid": "a", "e": "AQAB"}]}"#);
        assert_eq!(error, "JWKS file, key 0 (kid \"a\"): has no `n`");
        let error = error_of(r#"{"keys": [{"kty": "RSA", "n": "!!", "e": "AQAB"}]}"#);
        assert_eq!(error, "JWKS file, key 0: `n` is not base64url");
        let error = error_of(r#"{"keys": [{"n": "AQAB", "e": "AQAB"}]}"#);
        assert_eq!(error, "JWKS file, key 0: has no `kty`");
        let error = error_of(r#"{"keys": [{"kty": "EC", "x": "AA", "y": "AA"}]}"#);
        assert!(error.contains("EC key without `crv`"), "{error}");
        let error = error_of(r#"{"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]}"#);
        assert!(error.contains("32 bytes each"), "{error}");
        // 32-byte coordinates that are not on the curve.
        let coordinate = JWK_BASE64.encode([7u8; 32]);
        let error = error_of(&format!(
            r#"{{"keys": [{{"kty": "EC", "crv": "P-256", "x": "{coordinate}", "y": "{coordinate}"}}]}}"#
        ));
        assert!(error.contains("not a point on P-256"), "{error}");
    }

    #[test]
    fn weak_or_bad_rsa_keys_are_refused() {
        // A 1024-bit modulus (its value does not matter for the check).
        let n = JWK_BASE64.encode([0xc5u8; 128]);
        let error = error_of(&format!(
            r#"{{"keys": [{{"kty": "RSA", "n": "{n}", "e": "AQAB"}}]}}"#
        ));
        assert!(error.contains("1024 bits, at least 2048"), "{error}");
        // A 2048-bit modulus with the exponent 1.
        let n = JWK_BASE64.encode([0xc5u8; 256]);
        let error = error_of(&format!(
            r#"{{"keys": [{{"kty": "RSA", "n": "{n}", "e": "AQ"}}]}}"#
        ));
        assert!(error.contains("not a usable RSA public key"), "{error}");
    }

    #[test]
    fn private_keys_are_refused() {
        let mut jwk: serde_json::Value =
            serde_json::from_str(&test_keys::rsa_jwk(test_keys::rsa(), None)).unwrap();
        jwk["d"] = "AQAB".into();
        let error = error_of(&format!(r#"{{"keys": [{jwk}]}}"#));
        assert!(error.contains("private key material"), "{error}");
        let error = error_of(r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#);
        assert!(error.contains("private key material"), "{error}");
        assert!(!error.contains("c2VjcmV0"), "{error}");
    }

    #[test]
    fn padded_members_are_read_too() {
        // e = 3 written with padding: "Aw==".
        let jwk = test_keys::rsa_jwk(test_keys::rsa(), None);
        let padded = jwk.replace("\"AQAB\"", "\"Aw==\"");
        assert_ne!(padded, jwk);
        let key = KeySet::parse(format!(r#"{{"keys": [{padded}]}}"#).as_bytes()).unwrap();
        assert_eq!(key.keys.len(), 1);
    }
}
