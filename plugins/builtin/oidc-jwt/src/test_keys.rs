//! Keys and tokens for the tests: made fresh per test run, never shipped.
//! The plugin itself has no signing code; this is the IdP's side.

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::SigningKey;
use p256::ecdsa::signature::Signer as _;
use rand_core::OsRng;
use rsa::traits::PublicKeyParts as _;
use rsa::{Pkcs1v15Sign, RsaPrivateKey};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// The IdP's RSA key. Made once per test process: generating a 2048-bit
/// key takes a moment even with the bignum crate optimised.
pub fn rsa() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| RsaPrivateKey::new(&mut OsRng, 2048).expect("generate an RSA key"))
}

/// Someone else's RSA key, for tokens the IdP did not sign.
pub fn other_rsa() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| RsaPrivateKey::new(&mut OsRng, 2048).expect("generate an RSA key"))
}

/// The IdP's P-256 key.
pub fn ec() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::random(&mut OsRng))
}

/// Someone else's P-256 key.
pub fn other_ec() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::random(&mut OsRng))
}

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The public JWK of an RSA key, as an IdP publishes it.
pub fn rsa_jwk(key: &RsaPrivateKey, kid: Option<&str>) -> String {
    let mut jwk = json!({
        "kty": "RSA",
        "use": "sig",
        "alg": "RS256",
        "n": b64(key.n().to_bytes_be()),
        "e": b64(key.e().to_bytes_be()),
    });
    if let Some(kid) = kid {
        jwk["kid"] = kid.into();
    }
    jwk.to_string()
}

/// The public JWK of a P-256 key.
pub fn ec_jwk(key: &SigningKey, kid: Option<&str>) -> String {
    let point = key.verifying_key().to_encoded_point(false);
    let mut jwk = json!({
        "kty": "EC",
        "crv": "P-256",
        "x": b64(point.x().expect("an uncompressed point has x")),
        "y": b64(point.y().expect("an uncompressed point has y")),
    });
    if let Some(kid) = kid {
        jwk["kid"] = kid.into();
    }
    jwk.to_string()
}

/// `header.payload`, base64url-encoded, ready to sign.
pub fn signing_input(header: &Value, claims: &Value) -> String {
    format!("{}.{}", b64(header.to_string()), b64(claims.to_string()))
}

/// A compact JWS signed with RSASSA-PKCS1-v1_5 / SHA-256.
pub fn sign_rs256(key: &RsaPrivateKey, header: &Value, claims: &Value) -> String {
    let input = signing_input(header, claims);
    let signature = key
        .sign(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(&input))
        .expect("sign with RSA");
    format!("{input}.{}", b64(signature))
}

/// A compact JWS signed with ECDSA P-256 / SHA-256, as JWS wants it: r || s.
pub fn sign_es256(key: &SigningKey, header: &Value, claims: &Value) -> String {
    let input = signing_input(header, claims);
    let signature: p256::ecdsa::Signature = key.sign(input.as_bytes());
    format!("{input}.{}", b64(signature.to_bytes()))
}
