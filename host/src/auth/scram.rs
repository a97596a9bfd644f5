//! The server side of SCRAM-SHA-256 (RFC 5802, RFC 7677), run the way
//! PostgreSQL runs it.
//!
//! sluice authenticates its own clients before it opens anything upstream.
//! SCRAM lets it do that with only a stored verifier: the client proves it
//! knows the token without sending it, the verifier cannot be replayed as a
//! password, and the client in turn checks that sluice holds the verifier
//! (the `v=` server signature), so a stolen connection string alone does not
//! let someone impersonate the gateway.
//!
//! What is here:
//!
//! - [`Verifier`], read from and written as PostgreSQL's own
//!   `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` text, so
//!   operators can reuse `\password`, libpq's `PQencryptPasswordConn` or
//!   `sluice hash-token` output unchanged, and [`make_verifier`] to create one.
//! - [`ScramServer`], the two-step exchange behind `AuthenticationSASL`,
//!   `AuthenticationSASLContinue` and `AuthenticationSASLFinal`. It is pure
//!   logic: the caller moves the bytes and maps errors to SQLSTATEs
//!   ([`Error::WrongProof`] is `28P01 invalid_password`; every other exchange
//!   error is a protocol violation, `08P01`, as in PostgreSQL).
//! - [`ScramServer::for_unknown_user`], which runs the same exchange against a
//!   made-up verifier and always fails, so a probe cannot tell "no such user"
//!   from "wrong token" by the message flow, the salt, or the time taken.
//! - [`tls_server_end_point`], the RFC 5929 channel-binding data of a
//!   certificate, for this exchange over TLS and for sluice's own login
//!   upstream.
//!
//! Deliberate choices, mostly PostgreSQL's own:
//!
//! - Over TLS, `SCRAM-SHA-256-PLUS` is offered first and `SCRAM-SHA-256`
//!   second, binding to sluice's own certificate with
//!   `tls-server-end-point`, the one binding type PostgreSQL and libpq know
//!   (any other type is refused). A client that chose `-PLUS` must send
//!   `p=tls-server-end-point` and the certificate's hash in `c=`, so a relay
//!   that terminates TLS with its own certificate is caught. A `y` ("I could
//!   bind, but the server cannot") while `-PLUS` is offered is refused as a
//!   downgrade: someone stripped the `-PLUS` from the offer. `n` (the
//!   client does not bind) is accepted, as PostgreSQL accepts it.
//! - Over plain TCP (or when sluice's certificate has a signature
//!   algorithm RFC 5929 gives no hash for, such as Ed25519) only
//!   `SCRAM-SHA-256` is offered: `p=` is refused and `y` is accepted.
//! - An authorization identity (`a=`) is refused, and the `n=` user name is
//!   ignored: libpq sends it empty, and the user that counts is the one in
//!   the startup packet.
//! - Passwords go through SASLprep when they can; when they cannot
//!   (prohibited or unassigned characters) the raw bytes are used, exactly
//!   as PostgreSQL and libpq do, so verifiers made either way interoperate.
//! - Every message is hostile input: bounded to [`MAX_MESSAGE_LEN`] bytes,
//!   parsed without indexing, and any error ends the exchange so a client
//!   cannot try a second proof against the same server nonce.

use std::fmt;
use std::mem;
use std::str::FromStr;
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

type HmacSha256 = Hmac<Sha256>;

/// The iteration count PostgreSQL uses when `scram_iterations` is left alone.
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Longest SCRAM message accepted from a client. Real ones are around 100
/// bytes; the bound only keeps a hostile client from making sluice parse and
/// hash megabytes.
pub const MAX_MESSAGE_LEN: usize = 4096;

/// The SASL mechanism name to offer in `AuthenticationSASL`.
pub const MECHANISM: &str = "SCRAM-SHA-256";

/// The SASL mechanism with channel binding, offered over TLS only.
pub const MECHANISM_PLUS: &str = "SCRAM-SHA-256-PLUS";

/// The one channel-binding type PostgreSQL, libpq and sluice support
/// (RFC 5929 section 4).
pub const CHANNEL_BINDING_TYPE: &str = "tls-server-end-point";

const VERIFIER_PREFIX: &str = "SCRAM-SHA-256$";
/// PostgreSQL's salt length; unknown users get the same so they look alike.
const SALT_LEN: usize = 16;
/// PostgreSQL's raw server nonce length (24 characters once in base64).
const SERVER_NONCE_LEN: usize = 18;
const KEY_LEN: usize = 32;

/// Errors from reading a verifier or running an exchange.
///
/// Messages never include key material, proofs, or client-sent text, so they
/// are safe to log and to send back to the client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("verifier is not a SCRAM-SHA-256 secret")]
    VerifierPrefix,
    #[error("verifier is malformed")]
    VerifierMalformed,
    #[error("verifier iteration count is not a number")]
    VerifierIterations,
    #[error("verifier iteration count is zero")]
    VerifierZeroIterations,
    #[error("verifier {0} is not valid base64")]
    VerifierBase64(&'static str),
    #[error("verifier salt is empty")]
    VerifierEmptySalt,
    #[error("verifier {0} is not 32 bytes long")]
    VerifierKeyLength(&'static str),

    #[error("client sent a SCRAM message longer than {MAX_MESSAGE_LEN} bytes")]
    MessageTooLong,
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("client selected an invalid SASL authentication mechanism")]
    InvalidMechanism,
    #[error("client requested channel binding, but SCRAM-SHA-256-PLUS is not offered")]
    ChannelBindingNotOffered,
    #[error(
        "client selected SCRAM-SHA-256 without channel binding, but the SCRAM message includes channel binding data"
    )]
    ChannelBindingNotSelected,
    #[error(
        "client selected SCRAM-SHA-256-PLUS, but the SCRAM message does not include channel binding data"
    )]
    ChannelBindingMissing,
    #[error(
        "client supports SCRAM channel binding but thinks the server does not, while SCRAM-SHA-256-PLUS is offered"
    )]
    ChannelBindingDowngrade,
    #[error("unsupported SCRAM channel-binding type")]
    UnsupportedChannelBindingType,
    #[error("client uses authorization identity, but it is not supported")]
    AuthzidNotSupported,
    #[error("client requires an unsupported SCRAM extension")]
    UnsupportedExtension,
    #[error("channel binding in SCRAM client-final-message does not match")]
    ChannelBindingMismatch,
    #[error("nonce in SCRAM client-final-message does not match")]
    NonceMismatch,
    #[error("wrong SCRAM client proof")]
    WrongProof,
    #[error("out-of-order step in SCRAM exchange")]
    OutOfOrder,

    #[error("cannot compute tls-server-end-point channel binding: {0}")]
    Certificate(&'static str),
}

/// A stored SCRAM-SHA-256 secret: enough to check a client's proof and to
/// prove ourselves back, not enough to log in anywhere as the client.
///
/// `Debug` leaves the keys out; `Display` writes the full PostgreSQL text,
/// which is secret-equivalent for anyone who can also watch the wire, so it
/// belongs in config files and nowhere near logs.
#[derive(Clone)]
pub struct Verifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; KEY_LEN],
    server_key: [u8; KEY_LEN],
}

impl Verifier {
    /// The PBKDF2 iteration count clients must run.
    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    /// The raw salt, public by design: every client is sent it.
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// `password` must already be SASLprepped (or deliberately raw).
    fn from_password(password: &[u8], salt: Vec<u8>, iterations: u32) -> Self {
        let salted = hi(password, &salt, iterations);
        let client_key = hmac(&salted, &[b"Client Key"]);
        Verifier {
            iterations,
            stored_key: sha256(&client_key),
            server_key: hmac(&salted, &[b"Server Key"]),
            salt,
        }
    }
}

impl FromStr for Verifier {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let rest = s
            .strip_prefix(VERIFIER_PREFIX)
            .ok_or(Error::VerifierPrefix)?;
        let (params, keys) = rest.split_once('$').ok_or(Error::VerifierMalformed)?;
        let (iterations, salt) = params.split_once(':').ok_or(Error::VerifierMalformed)?;
        let (stored_key, server_key) = keys.split_once(':').ok_or(Error::VerifierMalformed)?;

        // u32::from_str would also take a leading '+', which PostgreSQL never writes.
        if iterations.is_empty() || !iterations.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::VerifierIterations);
        }
        let iterations: u32 = iterations.parse().map_err(|_| Error::VerifierIterations)?;
        if iterations == 0 {
            return Err(Error::VerifierZeroIterations);
        }
        let salt = STANDARD
            .decode(salt)
            .map_err(|_| Error::VerifierBase64("salt"))?;
        if salt.is_empty() {
            return Err(Error::VerifierEmptySalt);
        }
        Ok(Verifier {
            iterations,
            salt,
            stored_key: decode_key(stored_key, "stored key")?,
            server_key: decode_key(server_key, "server key")?,
        })
    }
}

fn decode_key(text: &str, what: &'static str) -> Result<[u8; KEY_LEN], Error> {
    let bytes = STANDARD
        .decode(text)
        .map_err(|_| Error::VerifierBase64(what))?;
    <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| Error::VerifierKeyLength(what))
}

impl fmt::Display for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{VERIFIER_PREFIX}{}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key),
        )
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The salt and iteration count are sent to every client anyway.
        f.debug_struct("Verifier")
            .field("iterations", &self.iterations)
            .field("salt", &STANDARD.encode(&self.salt))
            .field("keys", &"<redacted>")
            .finish()
    }
}

/// Makes a verifier for `secret` with a fresh random 16-byte salt, as
/// PostgreSQL's `scram_build_secret` does.
///
/// An `iterations` of 0 is raised to 1: RFC 5802 requires at least one, and a
/// verifier with 0 could not be read back.
pub fn make_verifier(secret: &str, iterations: u32) -> Verifier {
    let mut salt = vec![0u8; SALT_LEN];
    rand::rng().fill_bytes(&mut salt);
    Verifier::from_password(&saslprep_lenient(secret), salt, iterations.max(1))
}

/// SASLprep when possible, raw bytes otherwise: PostgreSQL's passwords are
/// byte strings, and both the server and libpq fall back this way, so doing
/// anything stricter would lock out passwords PostgreSQL accepts.
fn saslprep_lenient(secret: &str) -> Vec<u8> {
    match stringprep::saslprep(secret) {
        Ok(prepared) => prepared.into_owned().into_bytes(),
        Err(_) => secret.as_bytes().to_vec(),
    }
}

/// The server half of one SCRAM-SHA-256 exchange.
///
/// Call [`server_first`](Self::server_first) with the `SASLInitialResponse`
/// data and send the result in `AuthenticationSASLContinue`; call
/// [`server_final`](Self::server_final) with the `SASLResponse` data and, on
/// success, send the result in `AuthenticationSASLFinal`. Any error ends the
/// exchange: later calls return [`Error::OutOfOrder`].
pub struct ScramServer {
    verifier: Verifier,
    /// Set for unknown users: the exchange runs in full and then fails.
    doomed: bool,
    /// sluice's own `tls-server-end-point` data when the client came over
    /// TLS: `-PLUS` is offered, and a bound exchange must carry it.
    end_point: Option<Vec<u8>>,
    state: State,
}

/// The client's gs2 channel-binding flag.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Gs2Flag {
    /// `n`: the client does not bind.
    No,
    /// `y`: the client could bind but thinks the server cannot.
    ClientOnly,
    /// `p=tls-server-end-point`: the client binds.
    Bound,
}

impl Gs2Flag {
    /// The gs2 header the flag stands for (no authzid is ever accepted).
    fn header(self) -> &'static [u8] {
        match self {
            Gs2Flag::No => b"n,,",
            Gs2Flag::ClientOnly => b"y,,",
            Gs2Flag::Bound => b"p=tls-server-end-point,,",
        }
    }
}

enum State {
    Initial,
    SentFirst {
        /// The gs2 flag the client sent, whose header `c=` must echo.
        flag: Gs2Flag,
        client_first_bare: Vec<u8>,
        server_first: Vec<u8>,
        nonce: Vec<u8>,
    },
    Finished,
}

impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Leaves out `doomed`: whether a user exists is not for logs either.
        let state = match self.state {
            State::Initial => "initial",
            State::SentFirst { .. } => "sent-first",
            State::Finished => "finished",
        };
        f.debug_struct("ScramServer")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl ScramServer {
    /// An exchange for a known user holding `verifier`.
    pub fn new(verifier: Verifier) -> Self {
        ScramServer {
            verifier,
            doomed: false,
            end_point: None,
            state: State::Initial,
        }
    }

    /// An exchange for a user sluice does not know, indistinguishable on the
    /// wire from a real one until it fails with [`Error::WrongProof`].
    ///
    /// The fake salt is derived from `username` with a per-process random key
    /// so that asking twice gives the same salt (a real user's salt does not
    /// change either) yet nobody can predict it. Unlike PostgreSQL, whose
    /// key survives restarts, the fake salts change when sluice restarts;
    /// the fake iteration count is [`DEFAULT_ITERATIONS`], so real verifiers
    /// made with another count stand out to a patient observer.
    pub fn for_unknown_user(username: &str) -> Self {
        ScramServer {
            verifier: mock_verifier(username),
            doomed: true,
            end_point: None,
            state: State::Initial,
        }
    }

    /// Binds the exchange to the TLS session the client came over:
    /// `end_point` is the [`tls_server_end_point`] data of sluice's own
    /// certificate, `None` over plain TCP (or for a certificate RFC 5929
    /// gives no hash for). With it, `-PLUS` is offered and `y` refused.
    pub fn with_channel_binding(mut self, end_point: Option<Vec<u8>>) -> Self {
        self.end_point = end_point;
        self
    }

    /// The mechanisms to offer in `AuthenticationSASL`, in order of
    /// preference: `-PLUS` first when the exchange can be bound.
    pub fn mechanisms(&self) -> Vec<String> {
        if self.end_point.is_some() {
            vec![MECHANISM_PLUS.to_owned(), MECHANISM.to_owned()]
        } else {
            vec![MECHANISM.to_owned()]
        }
    }

    /// Reads the client-first-message sent with the `mechanism` the
    /// client selected, and returns the server-first-message.
    pub fn server_first(&mut self, mechanism: &str, client_first: &[u8]) -> Result<Vec<u8>, Error> {
        let mut raw = [0u8; SERVER_NONCE_LEN];
        rand::rng().fill_bytes(&mut raw);
        self.server_first_with_nonce(mechanism, client_first, STANDARD.encode(raw).as_bytes())
    }

    /// [`server_first`](Self::server_first) with a given server nonce, so
    /// tests can replay recorded exchanges.
    fn server_first_with_nonce(
        &mut self,
        mechanism: &str,
        client_first: &[u8],
        server_nonce: &[u8],
    ) -> Result<Vec<u8>, Error> {
        if !matches!(
            mem::replace(&mut self.state, State::Finished),
            State::Initial
        ) {
            return Err(Error::OutOfOrder);
        }
        let offered_plus = self.end_point.is_some();
        let selected_plus = match mechanism {
            MECHANISM => false,
            MECHANISM_PLUS if offered_plus => true,
            _ => return Err(Error::InvalidMechanism),
        };
        let parsed = parse_client_first(client_first)?;
        // PostgreSQL's checks, in its order: the flag must fit the
        // mechanism chosen, and `y` is a downgrade when -PLUS was offered.
        match parsed.flag {
            Gs2Flag::No | Gs2Flag::ClientOnly if selected_plus => {
                return Err(Error::ChannelBindingMissing);
            }
            Gs2Flag::ClientOnly if offered_plus => return Err(Error::ChannelBindingDowngrade),
            Gs2Flag::Bound if !offered_plus => return Err(Error::ChannelBindingNotOffered),
            Gs2Flag::Bound if !selected_plus => return Err(Error::ChannelBindingNotSelected),
            _ => {}
        }
        if parsed.flag == Gs2Flag::Bound && parsed.cbind_type != CHANNEL_BINDING_TYPE.as_bytes() {
            return Err(Error::UnsupportedChannelBindingType);
        }

        let mut nonce = Vec::with_capacity(parsed.nonce.len() + server_nonce.len());
        nonce.extend_from_slice(parsed.nonce);
        nonce.extend_from_slice(server_nonce);

        let mut server_first = Vec::with_capacity(nonce.len() + 64);
        server_first.extend_from_slice(b"r=");
        server_first.extend_from_slice(&nonce);
        server_first.extend_from_slice(b",s=");
        server_first.extend_from_slice(STANDARD.encode(&self.verifier.salt).as_bytes());
        server_first.extend_from_slice(b",i=");
        server_first.extend_from_slice(self.verifier.iterations.to_string().as_bytes());

        self.state = State::SentFirst {
            flag: parsed.flag,
            client_first_bare: parsed.bare.to_vec(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok(server_first)
    }

    /// Reads the client-final-message, checks the proof, and returns the
    /// server-final-message (`v=<ServerSignature>`) for the client to check.
    pub fn server_final(&mut self, client_final: &[u8]) -> Result<Vec<u8>, Error> {
        let State::SentFirst {
            flag,
            client_first_bare,
            server_first,
            nonce,
        } = mem::replace(&mut self.state, State::Finished)
        else {
            return Err(Error::OutOfOrder);
        };
        let parsed = parse_client_final(client_final)?;

        // The client echoes its gs2 header, so a man in the middle cannot
        // strip a `p=` or turn `n` into `y`; a bound client adds the hash of
        // the certificate it saw, which is sluice's own unless someone
        // else's TLS session sits in between.
        let mut expected = flag.header().to_vec();
        if flag == Gs2Flag::Bound {
            // Never reached without one: server_first refused `p=` then.
            let end_point = self
                .end_point
                .as_deref()
                .ok_or(Error::ChannelBindingNotOffered)?;
            expected.extend_from_slice(end_point);
        }
        if !bool::from(
            parsed
                .channel_binding
                .ct_eq(STANDARD.encode(&expected).as_bytes()),
        ) {
            return Err(Error::ChannelBindingMismatch);
        }
        if parsed.nonce != nonce.as_slice() {
            return Err(Error::NonceMismatch);
        }

        let mut auth_message = Vec::with_capacity(
            client_first_bare.len() + server_first.len() + parsed.without_proof.len() + 2,
        );
        auth_message.extend_from_slice(&client_first_bare);
        auth_message.push(b',');
        auth_message.extend_from_slice(&server_first);
        auth_message.push(b',');
        auth_message.extend_from_slice(parsed.without_proof);

        // ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage), and the
        // proof is right when H(ClientKey) is the StoredKey we hold.
        let client_signature = hmac(&self.verifier.stored_key, &[&auth_message]);
        let mut client_key = parsed.proof;
        for (k, s) in client_key.iter_mut().zip(client_signature) {
            *k ^= s;
        }
        // Unknown users do the same work and fail at the same point.
        let ok = sha256(&client_key).ct_eq(&self.verifier.stored_key)
            & Choice::from(u8::from(!self.doomed));
        if !bool::from(ok) {
            return Err(Error::WrongProof);
        }

        let server_signature = hmac(&self.verifier.server_key, &[&auth_message]);
        let mut server_final = b"v=".to_vec();
        server_final.extend_from_slice(STANDARD.encode(server_signature).as_bytes());
        Ok(server_final)
    }
}

/// A fake verifier for `username`, stable for the life of the process.
fn mock_verifier(username: &str) -> Verifier {
    static KEY: OnceLock<[u8; KEY_LEN]> = OnceLock::new();
    let key = KEY.get_or_init(|| {
        let mut key = [0u8; KEY_LEN];
        rand::rng().fill_bytes(&mut key);
        key
    });
    // The NUL keeps label and user name apart: labels never contain one.
    let derive = |label: &[u8]| hmac(key, &[label, b"\0", username.as_bytes()]);
    let mut salt = derive(b"salt").to_vec();
    salt.truncate(SALT_LEN);
    Verifier {
        iterations: DEFAULT_ITERATIONS,
        salt,
        stored_key: derive(b"stored key"),
        server_key: derive(b"server key"),
    }
}

struct ClientFirst<'a> {
    flag: Gs2Flag,
    /// The binding type after `p=`; empty for `n` and `y`.
    cbind_type: &'a [u8],
    bare: &'a [u8],
    nonce: &'a [u8],
}

struct ClientFinal<'a> {
    channel_binding: &'a [u8],
    nonce: &'a [u8],
    without_proof: &'a [u8],
    proof: [u8; KEY_LEN],
}

fn check_message(message: &[u8]) -> Result<(), Error> {
    if message.len() > MAX_MESSAGE_LEN {
        return Err(Error::MessageTooLong);
    }
    if message.is_empty() {
        return Err(Error::Malformed("the message is empty"));
    }
    // PostgreSQL treats these messages as C strings and rejects an embedded
    // NUL; doing the same keeps the two from ever reading one message apart.
    if message.contains(&0) {
        return Err(Error::Malformed("the message contains a NUL byte"));
    }
    Ok(())
}

/// `gs2-header client-first-message-bare`, where the header is
/// `gs2-cbind-flag "," [authzid] ","` (the flag `n`, `y` or
/// `p=cb-name`) and the bare part is
/// `[reserved-mext ","] username "," nonce ["," extensions]`.
fn parse_client_first(message: &[u8]) -> Result<ClientFirst<'_>, Error> {
    check_message(message)?;
    let (flag, cbind_type, rest): (Gs2Flag, &[u8], &[u8]) = match message {
        [b'n', rest @ ..] => (Gs2Flag::No, b"", rest),
        [b'y', rest @ ..] => (Gs2Flag::ClientOnly, b"", rest),
        [b'p', b'=', rest @ ..] => {
            let end = rest.iter().position(|&b| b == b',').unwrap_or(rest.len());
            let (name, rest) = rest.split_at(end);
            (Gs2Flag::Bound, name, rest)
        }
        _ => return Err(Error::Malformed("unexpected channel-binding flag")),
    };
    let [b',', rest @ ..] = rest else {
        return Err(Error::Malformed(
            "expected a comma after the channel-binding flag",
        ));
    };
    let bare = match rest {
        [b',', bare @ ..] => bare,
        [b'a', ..] => return Err(Error::AuthzidNotSupported),
        _ => return Err(Error::Malformed("unexpected attribute in the gs2 header")),
    };
    if bare.first() == Some(&b'm') {
        return Err(Error::UnsupportedExtension);
    }

    let mut fields = bare.split(|&b| b == b',');
    // Ignored, as PostgreSQL ignores it: the startup packet names the user.
    fields
        .next()
        .and_then(|f| attr(f, b'n'))
        .ok_or(Error::Malformed("expected the username attribute"))?;
    let nonce = fields
        .next()
        .and_then(|f| attr(f, b'r'))
        .ok_or(Error::Malformed("expected the nonce attribute"))?;
    if nonce.is_empty() || !nonce.iter().all(|&b| is_printable(b)) {
        return Err(Error::Malformed("the client nonce is not printable"));
    }
    for field in fields {
        any_attr(field).ok_or(Error::Malformed("malformed extension attribute"))?;
    }
    Ok(ClientFirst {
        flag,
        cbind_type,
        bare,
        nonce,
    })
}

/// `channel-binding "," nonce ["," extensions] "," proof`.
fn parse_client_final(message: &[u8]) -> Result<ClientFinal<'_>, Error> {
    check_message(message)?;
    // The proof is base64, which has no commas, so it is everything after
    // the last one and the rest is client-final-message-without-proof.
    let mut halves = message.rsplitn(2, |&b| b == b',');
    let last = halves.next().unwrap_or_default();
    let without_proof = halves
        .next()
        .ok_or(Error::Malformed("expected the proof attribute"))?;
    let proof = attr(last, b'p').ok_or(Error::Malformed("expected the proof attribute last"))?;

    let mut fields = without_proof.split(|&b| b == b',');
    let channel_binding = fields
        .next()
        .and_then(|f| attr(f, b'c'))
        .ok_or(Error::Malformed("expected the channel-binding attribute"))?;
    let nonce = fields
        .next()
        .and_then(|f| attr(f, b'r'))
        .ok_or(Error::Malformed("expected the nonce attribute"))?;
    for field in fields {
        match any_attr(field) {
            Some((b'p', _)) => return Err(Error::Malformed("garbage after the proof")),
            Some(_) => {}
            None => return Err(Error::Malformed("malformed extension attribute")),
        }
    }

    let proof = STANDARD
        .decode(proof)
        .map_err(|_| Error::Malformed("the proof is not valid base64"))?;
    let proof = <[u8; KEY_LEN]>::try_from(proof.as_slice())
        .map_err(|_| Error::Malformed("the proof is not 32 bytes long"))?;
    Ok(ClientFinal {
        channel_binding,
        nonce,
        without_proof,
        proof,
    })
}

/// The value of `name=value`, if `field` is that attribute.
fn attr(field: &[u8], name: u8) -> Option<&[u8]> {
    match field {
        [n, b'=', value @ ..] if *n == name => Some(value),
        _ => None,
    }
}

/// Any `letter=value` attribute, for the extensions RFC 5802 says to ignore.
fn any_attr(field: &[u8]) -> Option<(u8, &[u8])> {
    match field {
        [n, b'=', value @ ..] if n.is_ascii_alphabetic() => Some((*n, value)),
        _ => None,
    }
}

/// RFC 5802 `printable`: visible ASCII except the comma that separates
/// attributes.
fn is_printable(b: u8) -> bool {
    matches!(b, 0x21..=0x2b | 0x2d..=0x7e)
}

fn new_mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of every length (long ones are hashed, short ones
    // padded), so this never fails.
    HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length")
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; KEY_LEN] {
    let mut mac = new_mac(key);
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn sha256(data: &[u8]) -> [u8; KEY_LEN] {
    Sha256::digest(data).into()
}

/// RFC 5802 `Hi()`: PBKDF2-HMAC-SHA-256 for a single 32-byte block.
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; KEY_LEN] {
    // Keying HMAC hashes the key; do it once and clone the keyed state.
    let prf = new_mac(password);
    let mut mac = prf.clone();
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut u: [u8; KEY_LEN] = mac.finalize().into_bytes().into();
    let mut out = u;
    for _ in 1..iterations {
        let mut mac = prf.clone();
        mac.update(&u);
        u = mac.finalize().into_bytes().into();
        for (o, x) in out.iter_mut().zip(u) {
            *o ^= x;
        }
    }
    out
}

/// The `tls-server-end-point` channel-binding data of a certificate (RFC
/// 5929 section 4.1): the hash of its DER with the hash function of its
/// signature algorithm, SHA-256 when that is MD5 or SHA-1.
///
/// The algorithm is the certificate's outer `signatureAlgorithm`, as
/// OpenSSL reads it for PostgreSQL and libpq; for RSASSA-PSS the hash is in
/// its parameters (SHA-1 when they name none). A certificate whose
/// algorithm has no single hash (Ed25519, Ed448) or is unknown gives an
/// error, as it does in PostgreSQL: there is nothing to bind to. `der` may
/// come from a hostile server; it is read with bounds checks only.
pub fn tls_server_end_point(der: &[u8]) -> Result<Vec<u8>, Error> {
    let hash = end_point_hash(der)?;
    Ok(match hash {
        EndPointHash::Sha224 => sha2::Sha224::digest(der).to_vec(),
        EndPointHash::Sha256 => Sha256::digest(der).to_vec(),
        EndPointHash::Sha384 => sha2::Sha384::digest(der).to_vec(),
        EndPointHash::Sha512 => sha2::Sha512::digest(der).to_vec(),
    })
}

/// The hash RFC 5929 picks for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndPointHash {
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

/// Reads `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm,
/// signature }` just far enough to find the signature algorithm.
fn end_point_hash(der: &[u8]) -> Result<EndPointHash, Error> {
    let not_der = || Error::Certificate("the certificate is not DER");
    let (certificate, rest) = der_take(der, 0x30).ok_or_else(not_der)?;
    if !rest.is_empty() {
        return Err(not_der());
    }
    let (_tbs, rest) = der_take(certificate, 0x30).ok_or_else(not_der)?;
    let (algorithm, _) = der_take(rest, 0x30).ok_or_else(not_der)?;
    let (oid, parameters) = der_take(algorithm, 0x06).ok_or_else(not_der)?;
    // 1.2.840.113549.1.1.10, RSASSA-PSS: the hash is a parameter.
    if oid == RSASSA_PSS {
        return pss_hash(parameters);
    }
    signature_hash(oid).ok_or(Error::Certificate(
        "the certificate's signature algorithm has no hash to bind with",
    ))
}

const RSASSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];

/// The hash of a signature algorithm, RFC 5929's way (MD5 and SHA-1 become
/// SHA-256).
fn signature_hash(oid: &[u8]) -> Option<EndPointHash> {
    use EndPointHash::*;
    Some(match oid {
        // PKCS #1, 1.2.840.113549.1.1.*: md5, sha1, sha256, sha384,
        // sha512 and sha224 with RSA.
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, last] => match last {
            0x04 | 0x05 | 0x0b => Sha256,
            0x0c => Sha384,
            0x0d => Sha512,
            0x0e => Sha224,
            _ => return None,
        },
        // ecdsa-with-SHA1, 1.2.840.10045.4.1.
        [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01] => Sha256,
        // ecdsa-with-SHA224 to SHA512, 1.2.840.10045.4.3.1 to 4.
        [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, last] => match last {
            0x01 => Sha224,
            0x02 => Sha256,
            0x03 => Sha384,
            0x04 => Sha512,
            _ => return None,
        },
        // dsa-with-sha1, 1.2.840.10040.4.3.
        [0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x03] => Sha256,
        // dsa-with-sha224 and sha256, 2.16.840.1.101.3.4.3.1 and 2.
        [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, 0x01] => Sha224,
        [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, 0x02] => Sha256,
        _ => return None,
    })
}

/// The hash named by RSASSA-PSS parameters:
/// `SEQUENCE { hashAlgorithm [0] EXPLICIT AlgorithmIdentifier DEFAULT sha1, ... }`.
fn pss_hash(parameters: &[u8]) -> Result<EndPointHash, Error> {
    let malformed = || Error::Certificate("malformed RSASSA-PSS parameters");
    let (fields, _) = der_take(parameters, 0x30).ok_or_else(malformed)?;
    let Some((explicit, _)) = der_take(fields, 0xa0) else {
        // The default, SHA-1, bound with SHA-256.
        return Ok(EndPointHash::Sha256);
    };
    let (algorithm, _) = der_take(explicit, 0x30).ok_or_else(malformed)?;
    let (oid, _) = der_take(algorithm, 0x06).ok_or_else(malformed)?;
    match oid {
        // md5 1.2.840.113549.2.5, sha1 1.3.14.3.2.26.
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x05] | [0x2b, 0x0e, 0x03, 0x02, 0x1a] => {
            Ok(EndPointHash::Sha256)
        }
        // sha256, sha384, sha512, sha224: 2.16.840.1.101.3.4.2.1 to 4.
        [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, last] => match last {
            0x01 => Ok(EndPointHash::Sha256),
            0x02 => Ok(EndPointHash::Sha384),
            0x03 => Ok(EndPointHash::Sha512),
            0x04 => Ok(EndPointHash::Sha224),
            _ => Err(Error::Certificate(
                "the certificate's RSASSA-PSS hash is not supported",
            )),
        },
        _ => Err(Error::Certificate(
            "the certificate's RSASSA-PSS hash is not supported",
        )),
    }
}

/// One DER element with tag `tag` at the start of `input`: its contents
/// and what follows. `None` for another tag, an indefinite or oversized
/// length, or contents running past the end.
fn der_take(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let [first, length, rest @ ..] = input else {
        return None;
    };
    if *first != tag {
        return None;
    }
    let (length, rest) = match *length {
        short @ 0..=0x7f => (usize::from(short), rest),
        // Long form, at most 4 length bytes: certificates are far smaller.
        long @ 0x81..=0x84 => {
            let count = usize::from(long & 0x7f);
            if rest.len() < count {
                return None;
            }
            let (bytes, rest) = rest.split_at(count);
            let length = bytes.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b));
            (length, rest)
        }
        _ => return None,
    };
    if rest.len() < length {
        return None;
    }
    Some(rest.split_at(length))
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    /// Which error a malformed input must produce.
    type Expect = fn(&Error) -> bool;

    /// Runs a whole exchange with the real client from `postgres-protocol`,
    /// including the client's check of our server signature.
    fn exchange(
        server: &mut ScramServer,
        password: &[u8],
        cb: ChannelBinding,
    ) -> Result<(), Error> {
        let mut client = ScramSha256::new(password, cb);
        let server_first = server.server_first(MECHANISM, client.message())?;
        client
            .update(&server_first)
            .expect("client accepts server-first-message");
        let server_final = server.server_final(client.message())?;
        client
            .finish(&server_final)
            .expect("client verifies the server signature");
        Ok(())
    }

    /// Client messages from a real client, for tampering with.
    fn client_messages(verifier: &Verifier, password: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let mut client = ScramSha256::new(password, ChannelBinding::unsupported());
        let first = client.message().to_vec();
        let mut server = ScramServer::new(verifier.clone());
        let server_first = server
            .server_first(MECHANISM, &first)
            .expect("server-first");
        client.update(&server_first).expect("client update");
        (first, server_first, client.message().to_vec())
    }

    #[test]
    fn exchange_with_postgres_protocol_client() {
        let verifier = make_verifier("secret", DEFAULT_ITERATIONS);
        for cb in [ChannelBinding::unsupported(), ChannelBinding::unrequested()] {
            let mut server = ScramServer::new(verifier.clone());
            exchange(&mut server, b"secret", cb).expect("exchange succeeds");
        }
    }

    #[test]
    fn server_first_shape() {
        let verifier = make_verifier("secret", DEFAULT_ITERATIONS);
        let mut server = ScramServer::new(verifier.clone());
        let first = server
            .server_first(MECHANISM, b"n,,n=,r=abc")
            .expect("server-first");
        let text = String::from_utf8(first).expect("ascii");
        let nonce = text
            .strip_prefix("r=abc")
            .and_then(|t| t.split(',').next())
            .expect("nonce");
        assert_eq!(nonce.len(), 24, "18 random bytes in base64");
        assert!(text.ends_with(&format!(",s={},i=4096", STANDARD.encode(verifier.salt()))));
    }

    #[test]
    fn wrong_password_is_wrong_proof() {
        let verifier = make_verifier("secret", DEFAULT_ITERATIONS);
        let mut server = ScramServer::new(verifier);
        let err = exchange(&mut server, b"Secret", ChannelBinding::unsupported()).unwrap_err();
        assert!(matches!(err, Error::WrongProof), "{err:?}");
        // No second try against the same nonce.
        assert!(matches!(
            server.server_final(b"c=biws,r=x,p=AAAA"),
            Err(Error::OutOfOrder)
        ));
    }

    #[test]
    fn postgres_protocol_verifier_authenticates() {
        let text = postgres_protocol::password::scram_sha_256(b"secret");
        let verifier: Verifier = text.parse().expect("verifier parses");
        assert_eq!(verifier.iterations(), DEFAULT_ITERATIONS);
        assert_eq!(verifier.to_string(), text, "display round-trips");
        let mut server = ScramServer::new(verifier.clone());
        exchange(&mut server, b"secret", ChannelBinding::unsupported()).expect("succeeds");
        let mut server = ScramServer::new(verifier);
        let err = exchange(&mut server, b"other", ChannelBinding::unsupported()).unwrap_err();
        assert!(matches!(err, Error::WrongProof));
    }

    #[test]
    fn make_verifier_round_trips_and_authenticates() {
        let made = make_verifier("tok_3x4mpl3", 8192);
        let text = made.to_string();
        assert!(text.starts_with("SCRAM-SHA-256$8192:"));
        let parsed: Verifier = text.parse().expect("our own output parses");
        assert_eq!(parsed.to_string(), text);
        assert_eq!(parsed.salt().len(), SALT_LEN);
        let mut server = ScramServer::new(parsed);
        exchange(&mut server, b"tok_3x4mpl3", ChannelBinding::unsupported()).expect("succeeds");
        // Fresh salt every time.
        assert_ne!(make_verifier("x", 1).salt(), make_verifier("x", 1).salt());
        assert_eq!(make_verifier("x", 0).iterations(), 1);
    }

    #[test]
    fn saslprep_matches_client() {
        // U+00AD SOFT HYPHEN is mapped to nothing by SASLprep, on both sides.
        let mut server = ScramServer::new(make_verifier("pass\u{ad}word", 1));
        exchange(&mut server, b"password", ChannelBinding::unsupported()).expect("normalised");
        // U+0007 is prohibited, so both sides fall back to the raw bytes.
        let mut server = ScramServer::new(make_verifier("bell\u{7}", 1));
        exchange(&mut server, b"bell\x07", ChannelBinding::unsupported()).expect("raw");
    }

    /// The exchange psql recorded in `postgres-protocol`'s own tests.
    #[test]
    fn recorded_psql_exchange() {
        let salt = STANDARD.decode("fs3IXBy7U7+IvVjZ").expect("salt");
        let verifier = Verifier::from_password(b"foobar", salt, 4096);
        let mut server = ScramServer::new(verifier);
        let first = server
            .server_first_with_nonce(
                MECHANISM,
                b"n,,n=,r=9IZ2O01zb9IgiIZ1WJ/zgpJB",
                b"jx/oIRLs02gGSHcw1KEty3eY",
            )
            .expect("server-first");
        assert_eq!(
            first,
            b"r=9IZ2O01zb9IgiIZ1WJ/zgpJBjx/oIRLs02gGSHcw1KEty3eY,s=fs3IXBy7U7+IvVjZ,i=4096"
        );
        let last = server
            .server_final(
                b"c=biws,r=9IZ2O01zb9IgiIZ1WJ/zgpJBjx/oIRLs02gGSHcw1KEty3eY,\
                  p=AmNKosjJzS31NTlQYNs5BTeQjdHdk7lOflDo5re2an8=",
            )
            .expect("server-final");
        assert_eq!(last, b"v=U+ppxD5XUKtradnv8e2MkeupiA8FU87Sg8CXzXHDAzw=");
    }

    /// RFC 7677 section 3, which also carries a user name.
    #[test]
    fn rfc7677_exchange() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("salt");
        let mut server = ScramServer::new(Verifier::from_password(b"pencil", salt, 4096));
        let first = server
            .server_first_with_nonce(
                MECHANISM,
                b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
                b"%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            )
            .expect("server-first");
        assert_eq!(
            first,
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
              s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let last = server
            .server_final(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                  p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            )
            .expect("server-final");
        assert_eq!(last, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    #[test]
    fn verifier_parse_errors() {
        let good = make_verifier("secret", 4096).to_string();
        let (_, rest) = good.split_once('$').expect("prefix");
        let (params, keys) = rest.split_once('$').expect("params");
        let (_, salt) = params.split_once(':').expect("salt");
        let (stored, server) = keys.split_once(':').expect("keys");
        let short = STANDARD.encode([0u8; 31]);
        let cases: Vec<(String, Expect)> = vec![
            ("plain".into(), |e| matches!(e, Error::VerifierPrefix)),
            (String::new(), |e| matches!(e, Error::VerifierPrefix)),
            (format!("scram-sha-256${rest}"), |e| {
                matches!(e, Error::VerifierPrefix)
            }),
            (format!("md5{}", "0".repeat(32)), |e| {
                matches!(e, Error::VerifierPrefix)
            }),
            ("SCRAM-SHA-256$".into(), |e| {
                matches!(e, Error::VerifierMalformed)
            }),
            (format!("SCRAM-SHA-256$4096{salt}${keys}"), |e| {
                matches!(e, Error::VerifierMalformed)
            }),
            (format!("SCRAM-SHA-256${params}${stored}{server}"), |e| {
                matches!(e, Error::VerifierMalformed)
            }),
            (format!("SCRAM-SHA-256$0:{salt}${keys}"), |e| {
                matches!(e, Error::VerifierZeroIterations)
            }),
            (format!("SCRAM-SHA-256$:{salt}${keys}"), |e| {
                matches!(e, Error::VerifierIterations)
            }),
            (format!("SCRAM-SHA-256$+4096:{salt}${keys}"), |e| {
                matches!(e, Error::VerifierIterations)
            }),
            (format!("SCRAM-SHA-256$99999999999:{salt}${keys}"), |e| {
                matches!(e, Error::VerifierIterations)
            }),
            (format!("SCRAM-SHA-256$4096:!!${keys}"), |e| {
                matches!(e, Error::VerifierBase64("salt"))
            }),
            (format!("SCRAM-SHA-256$4096:${keys}"), |e| {
                matches!(e, Error::VerifierEmptySalt)
            }),
            (format!("SCRAM-SHA-256${params}$%%:{server}"), |e| {
                matches!(e, Error::VerifierBase64("stored key"))
            }),
            (format!("SCRAM-SHA-256${params}${stored}:{server}:x"), |e| {
                matches!(e, Error::VerifierBase64("server key"))
            }),
            (format!("SCRAM-SHA-256${params}${short}:{server}"), |e| {
                matches!(e, Error::VerifierKeyLength("stored key"))
            }),
            (format!("SCRAM-SHA-256${params}${stored}:{short}"), |e| {
                matches!(e, Error::VerifierKeyLength("server key"))
            }),
        ];
        for (text, expected) in cases {
            let err = text.parse::<Verifier>().expect_err(&text);
            assert!(expected(&err), "{text:?} gave {err:?}");
        }
    }

    #[test]
    fn malformed_client_first() {
        let cases: &[(&[u8], Expect)] = &[
            (b"", |e| matches!(e, Error::Malformed(_))),
            (b"garbage", |e| matches!(e, Error::Malformed(_))),
            (b"n", |e| matches!(e, Error::Malformed(_))),
            (b"n,", |e| matches!(e, Error::Malformed(_))),
            (b"n,,", |e| matches!(e, Error::Malformed(_))),
            (b"n,,n=", |e| matches!(e, Error::Malformed(_))),
            (b"n,,n=,", |e| matches!(e, Error::Malformed(_))),
            (b"n,,n=,r=", |e| matches!(e, Error::Malformed(_))),
            (b"n,,r=abc", |e| matches!(e, Error::Malformed(_))),
            (b"n,,n=,r=a\x7fb", |e| matches!(e, Error::Malformed(_))),
            (b"n,,n=,r=abc,junk", |e| matches!(e, Error::Malformed(_))),
            (b"n,,n=,r=abc\0", |e| matches!(e, Error::Malformed(_))),
            (b"x,,n=,r=abc", |e| matches!(e, Error::Malformed(_))),
            (b"nn,,n=,r=abc", |e| matches!(e, Error::Malformed(_))),
            (b"n,x,n=,r=abc", |e| matches!(e, Error::Malformed(_))),
            (b"p=tls-server-end-point,,n=,r=abc", |e| {
                matches!(e, Error::ChannelBindingNotOffered)
            }),
            (b"n,a=admin,n=,r=abc", |e| {
                matches!(e, Error::AuthzidNotSupported)
            }),
            (b"n,,m=ext,n=,r=abc", |e| {
                matches!(e, Error::UnsupportedExtension)
            }),
        ];
        for (input, expected) in cases {
            let mut server = ScramServer::new(make_verifier("secret", 1));
            let err = server
                .server_first(MECHANISM, input)
                .expect_err("must fail");
            assert!(
                expected(&err),
                "{:?} gave {err:?}",
                String::from_utf8_lossy(input)
            );
            // A failed step ends the exchange.
            assert!(matches!(
                server.server_first(MECHANISM, b"n,,n=,r=abc"),
                Err(Error::OutOfOrder)
            ));
        }

        let mut long = b"n,,n=,r=".to_vec();
        long.resize(MAX_MESSAGE_LEN + 1, b'a');
        let mut server = ScramServer::new(make_verifier("secret", 1));
        assert!(matches!(
            server.server_first(MECHANISM, &long),
            Err(Error::MessageTooLong)
        ));

        // Extensions after the nonce and a non-empty user name are accepted.
        let mut server = ScramServer::new(make_verifier("secret", 1));
        server
            .server_first(MECHANISM, b"y,,n=someone=2Celse,r=abc,x=ext")
            .expect("accepted");
    }

    #[test]
    fn malformed_client_final() {
        let verifier = make_verifier("secret", 1);
        let (first, server_first, good) = client_messages(&verifier, b"secret");
        let good = String::from_utf8(good).expect("ascii");
        let nonce = std::str::from_utf8(&server_first)
            .expect("ascii")
            .split(',')
            .next()
            .and_then(|r| r.strip_prefix("r="))
            .expect("nonce")
            .to_owned();
        let proof = good.rsplit_once(",p=").expect("proof").1.to_owned();
        // Change the last character, to something it is not already.
        let replacement = if nonce.ends_with('X') { 'Y' } else { 'X' };
        let tampered_nonce = format!(
            "{}{replacement}",
            nonce.get(..nonce.len() - 1).expect("nonce")
        );

        let cases: Vec<(String, Expect)> = vec![
            (String::new(), |e| matches!(e, Error::Malformed(_))),
            ("garbage".into(), |e| matches!(e, Error::Malformed(_))),
            (",".into(), |e| matches!(e, Error::Malformed(_))),
            ("c=biws,r=,p=".into(), |e| matches!(e, Error::Malformed(_))),
            // Missing nonce.
            (format!("c=biws,p={proof}"), |e| {
                matches!(e, Error::Malformed(_))
            }),
            // Missing proof.
            (format!("c=biws,r={nonce}"), |e| {
                matches!(e, Error::Malformed(_))
            }),
            // Garbage after the proof.
            (format!("{good},x=1"), |e| matches!(e, Error::Malformed(_))),
            (format!("c=biws,r={nonce},p={proof},p={proof}"), |e| {
                matches!(e, Error::Malformed(_))
            }),
            // Proof of the wrong length or not base64.
            (format!("c=biws,r={nonce},p=AAAA"), |e| {
                matches!(e, Error::Malformed(_))
            }),
            (format!("c=biws,r={nonce},p=!!!!"), |e| {
                matches!(e, Error::Malformed(_))
            }),
            // c= mismatches: the client said `n`, not `y`, and never `p`.
            (format!("c=eSws,r={nonce},p={proof}"), |e| {
                matches!(e, Error::ChannelBindingMismatch)
            }),
            (
                format!(
                    "c={},r={nonce},p={proof}",
                    STANDARD.encode("p=tls-server-end-point,,")
                ),
                |e| matches!(e, Error::ChannelBindingMismatch),
            ),
            (format!("c=,r={nonce},p={proof}"), |e| {
                matches!(e, Error::ChannelBindingMismatch)
            }),
            // Tampered, truncated and extended nonces.
            (format!("c=biws,r={tampered_nonce},p={proof}"), |e| {
                matches!(e, Error::NonceMismatch)
            }),
            (format!("c=biws,r={nonce}X,p={proof}"), |e| {
                matches!(e, Error::NonceMismatch)
            }),
            (
                format!("c=biws,r={},p={proof}", nonce.get(..10).expect("nonce")),
                |e| matches!(e, Error::NonceMismatch),
            ),
            // Well-formed but the extension changes AuthMessage.
            (format!("c=biws,r={nonce},x=1,p={proof}"), |e| {
                matches!(e, Error::WrongProof)
            }),
        ];
        for (input, expected) in cases {
            // Replays the recorded server nonce so `good` and its variants fit.
            let mut replay = ScramServer::new(verifier.clone());
            replay
                .server_first_with_nonce(MECHANISM, &first, server_nonce(&first, &server_first))
                .expect("server-first");
            let err = replay.server_final(input.as_bytes()).expect_err(&input);
            assert!(expected(&err), "{input:?} gave {err:?}");
            assert!(matches!(
                replay.server_final(good.as_bytes()),
                Err(Error::OutOfOrder)
            ));
        }

        // The untampered message still works against the same nonce.
        let mut replay = ScramServer::new(verifier);
        replay
            .server_first_with_nonce(MECHANISM, &first, server_nonce(&first, &server_first))
            .expect("server-first");
        replay.server_final(good.as_bytes()).expect("good proof");
    }

    /// The server's part of the combined nonce in `server_first`.
    fn server_nonce<'a>(client_first: &[u8], server_first: &'a [u8]) -> &'a [u8] {
        let client_nonce_len = client_first
            .rsplit(|&b| b == b',')
            .next()
            .map_or(0, |r| r.len().saturating_sub(2));
        let combined = server_first
            .split(|&b| b == b',')
            .next()
            .expect("nonce attribute");
        combined.get(2 + client_nonce_len..).expect("server nonce")
    }

    #[test]
    fn out_of_order_calls() {
        let verifier = make_verifier("secret", 1);
        let mut server = ScramServer::new(verifier.clone());
        assert!(matches!(
            server.server_final(b"c=biws,r=abc,p=AAAA"),
            Err(Error::OutOfOrder)
        ));

        let mut server = ScramServer::new(verifier.clone());
        server
            .server_first(MECHANISM, b"n,,n=,r=abc")
            .expect("server-first");
        assert!(matches!(
            server.server_first(MECHANISM, b"n,,n=,r=abc"),
            Err(Error::OutOfOrder)
        ));

        let mut server = ScramServer::new(verifier);
        exchange(&mut server, b"secret", ChannelBinding::unsupported()).expect("succeeds");
        assert!(matches!(
            server.server_first(MECHANISM, b"n,,n=,r=abc"),
            Err(Error::OutOfOrder)
        ));
        assert!(matches!(
            server.server_final(b"c=biws,r=abc,p=AAAA"),
            Err(Error::OutOfOrder)
        ));
    }

    /// Every prefix and many single-byte corruptions of real messages are
    /// rejected without panicking.
    #[test]
    fn corrupted_messages_do_not_panic() {
        let verifier = make_verifier("secret", 1);
        let (first, server_first, last) = client_messages(&verifier, b"secret");
        let nonce = server_nonce(&first, &server_first).to_vec();
        let bytes = [0u8, b',', b'=', b'p', b'r', b'c', b'n', 0x80, 0xff, b'A'];

        let mut variants = Vec::new();
        for msg in [&first, &last] {
            for end in 0..msg.len() {
                variants.push((msg == &first, msg.get(..end).unwrap_or_default().to_vec()));
            }
            for i in 0..msg.len() {
                for b in bytes {
                    let mut m = msg.clone();
                    if let Some(slot) = m.get_mut(i) {
                        *slot = b;
                    }
                    variants.push((msg == &first, m));
                }
            }
        }
        for (is_first, msg) in variants {
            let mut server = ScramServer::new(verifier.clone());
            if is_first {
                let _ = server.server_first(MECHANISM, &msg);
            } else {
                server
                    .server_first_with_nonce(MECHANISM, &first, &nonce)
                    .expect("server-first");
                if msg != last {
                    assert!(server.server_final(&msg).is_err());
                }
            }
        }
    }

    #[test]
    fn unknown_user_always_fails_after_full_exchange() {
        for password in [&b"secret"[..], b"", b"anything"] {
            let mut server = ScramServer::for_unknown_user("mallory");
            let mut client = ScramSha256::new(password, ChannelBinding::unsupported());
            let server_first = server
                .server_first(MECHANISM, client.message())
                .expect("server-first");
            client
                .update(&server_first)
                .expect("client accepts the fake salt");
            let err = server.server_final(client.message()).unwrap_err();
            assert!(matches!(err, Error::WrongProof), "{err:?}");
        }

        // Same salt every time for one name, like a real user; different
        // names differ; shaped like make_verifier's defaults.
        let salt_of = |name: &str| {
            let mut server = ScramServer::for_unknown_user(name);
            let first = server
                .server_first(MECHANISM, b"n,,n=,r=abc")
                .expect("server-first");
            let text = String::from_utf8(first).expect("ascii");
            let (_, salt) = text.split_once(",s=").expect("salt");
            salt.to_owned()
        };
        assert_eq!(salt_of("mallory"), salt_of("mallory"));
        assert_ne!(salt_of("mallory"), salt_of("trudy"));
        let salt = salt_of("mallory");
        let (salt, iterations) = salt.split_once(",i=").expect("iterations");
        assert_eq!(STANDARD.decode(salt).expect("base64").len(), SALT_LEN);
        assert_eq!(iterations, DEFAULT_ITERATIONS.to_string());

        // Malformed input fails the same way as for a real user.
        let mut server = ScramServer::for_unknown_user("mallory");
        assert!(matches!(
            server.server_first(MECHANISM, b"p=tls-server-end-point,,n=,r=abc"),
            Err(Error::ChannelBindingNotOffered)
        ));
    }

    /// Runs an exchange the way a client that selected `mechanism` would.
    fn exchange_as(
        server: &mut ScramServer,
        mechanism: &str,
        password: &[u8],
        cb: ChannelBinding,
    ) -> Result<(), Error> {
        let mut client = ScramSha256::new(password, cb);
        let server_first = server.server_first(mechanism, client.message())?;
        client
            .update(&server_first)
            .expect("client accepts server-first-message");
        let server_final = server.server_final(client.message())?;
        client
            .finish(&server_final)
            .expect("client verifies the server signature");
        Ok(())
    }

    /// Made-up `tls-server-end-point` data: what it hashes does not matter
    /// to the exchange, only that both ends agree.
    fn end_point(byte: u8) -> Vec<u8> {
        vec![byte; 32]
    }

    #[test]
    fn plus_is_offered_first_only_with_an_end_point() {
        for known in [true, false] {
            assert_eq!(server_for(known).mechanisms(), [MECHANISM]);
            assert_eq!(
                bound_server(known).mechanisms(),
                [MECHANISM_PLUS, MECHANISM]
            );
        }
    }

    /// A server for the principal's verifier (`known`) or an unknown
    /// user's made-up one.
    fn server_for(known: bool) -> ScramServer {
        if known {
            ScramServer::new(make_verifier("secret", 1))
        } else {
            ScramServer::for_unknown_user("mallory")
        }
    }

    /// [`server_for`] over TLS, offering -PLUS bound to certificate 1.
    fn bound_server(known: bool) -> ScramServer {
        server_for(known).with_channel_binding(Some(end_point(1)))
    }

    #[test]
    fn plus_exchange_with_the_right_end_point_is_accepted() {
        let verifier = make_verifier("secret", 1);
        let mut server = ScramServer::new(verifier).with_channel_binding(Some(end_point(1)));
        exchange_as(
            &mut server,
            MECHANISM_PLUS,
            b"secret",
            ChannelBinding::tls_server_end_point(end_point(1)),
        )
        .expect("bound exchange succeeds");
    }

    #[test]
    fn plus_exchange_with_another_certificates_end_point_is_refused() {
        // A relay's TLS session: the client hashed the relay's certificate.
        for known in [true, false] {
            let mut server = bound_server(known);
            let err = exchange_as(
                &mut server,
                MECHANISM_PLUS,
                b"secret",
                ChannelBinding::tls_server_end_point(end_point(2)),
            )
            .unwrap_err();
            // The same error for an unknown user: checked before the proof.
            assert!(matches!(err, Error::ChannelBindingMismatch), "{err:?}");
        }

        // A client-final whose c= drops the binding data, or claims `n`.
        let verifier = make_verifier("secret", 1);
        for c in [
            STANDARD.encode("p=tls-server-end-point,,"),
            STANDARD.encode("n,,"),
            "biws".to_owned(),
        ] {
            let mut client = ScramSha256::new(
                b"secret",
                ChannelBinding::tls_server_end_point(end_point(1)),
            );
            let mut server =
                ScramServer::new(verifier.clone()).with_channel_binding(Some(end_point(1)));
            let server_first = server
                .server_first(MECHANISM_PLUS, client.message())
                .expect("server-first");
            client.update(&server_first).expect("client update");
            let last = String::from_utf8(client.message().to_vec()).expect("ascii");
            let (_, rest) = last.split_once(',').expect("c= first");
            let tampered = format!("c={c},{rest}");
            let err = server.server_final(tampered.as_bytes()).unwrap_err();
            assert!(matches!(err, Error::ChannelBindingMismatch), "{err:?}");
        }
    }

    #[test]
    fn y_is_a_downgrade_when_plus_is_offered() {
        for known in [true, false] {
            let mut server = bound_server(known);
            let err = exchange_as(
                &mut server,
                MECHANISM,
                b"secret",
                ChannelBinding::unrequested(),
            )
            .unwrap_err();
            assert!(matches!(err, Error::ChannelBindingDowngrade), "{err:?}");
        }
        // `n`, a client that does not bind at all, is still accepted over
        // TLS, as PostgreSQL accepts it; over plain TCP so is `y`.
        let verifier = make_verifier("secret", 1);
        let mut server =
            ScramServer::new(verifier.clone()).with_channel_binding(Some(end_point(1)));
        exchange_as(
            &mut server,
            MECHANISM,
            b"secret",
            ChannelBinding::unsupported(),
        )
        .expect("n over TLS");
        let mut server = ScramServer::new(verifier);
        exchange_as(
            &mut server,
            MECHANISM,
            b"secret",
            ChannelBinding::unrequested(),
        )
        .expect("y over plain TCP");
    }

    #[test]
    fn binding_over_plain_tcp_is_refused() {
        for known in [true, false] {
            let bound = || ChannelBinding::tls_server_end_point(end_point(1));
            let err =
                exchange_as(&mut server_for(known), MECHANISM, b"secret", bound()).unwrap_err();
            assert!(matches!(err, Error::ChannelBindingNotOffered), "{err:?}");
            let err = exchange_as(&mut server_for(known), MECHANISM_PLUS, b"secret", bound())
                .unwrap_err();
            assert!(matches!(err, Error::InvalidMechanism), "{err:?}");
        }
    }

    #[test]
    fn flag_and_mechanism_must_agree() {
        let server = || {
            ScramServer::new(make_verifier("secret", 1)).with_channel_binding(Some(end_point(1)))
        };
        let cases: &[(&str, &[u8], Expect)] = &[
            (MECHANISM_PLUS, b"n,,n=,r=abc", |e| {
                matches!(e, Error::ChannelBindingMissing)
            }),
            (MECHANISM_PLUS, b"y,,n=,r=abc", |e| {
                matches!(e, Error::ChannelBindingMissing)
            }),
            (MECHANISM, b"p=tls-server-end-point,,n=,r=abc", |e| {
                matches!(e, Error::ChannelBindingNotSelected)
            }),
            (MECHANISM_PLUS, b"p=tls-unique,,n=,r=abc", |e| {
                matches!(e, Error::UnsupportedChannelBindingType)
            }),
            (MECHANISM_PLUS, b"p=tls-server-end-point-x,,n=,r=abc", |e| {
                matches!(e, Error::UnsupportedChannelBindingType)
            }),
            (MECHANISM_PLUS, b"p=,,n=,r=abc", |e| {
                matches!(e, Error::UnsupportedChannelBindingType)
            }),
            (MECHANISM_PLUS, b"p,,n=,r=abc", |e| {
                matches!(e, Error::Malformed(_))
            }),
            (MECHANISM_PLUS, b"p=tls-server-end-point", |e| {
                matches!(e, Error::Malformed(_))
            }),
            ("SCRAM-SHA-1", b"n,,n=,r=abc", |e| {
                matches!(e, Error::InvalidMechanism)
            }),
            ("scram-sha-256-plus", b"n,,n=,r=abc", |e| {
                matches!(e, Error::InvalidMechanism)
            }),
        ];
        for (mechanism, input, expected) in cases {
            let err = server()
                .server_first(mechanism, input)
                .expect_err("must fail");
            assert!(
                expected(&err),
                "{mechanism} {:?} gave {err:?}",
                String::from_utf8_lossy(input)
            );
        }
        server()
            .server_first(MECHANISM_PLUS, b"p=tls-server-end-point,,n=,r=abc")
            .expect("accepted");
    }

    /// A DER certificate skeleton with the signature algorithm `algorithm`
    /// (an AlgorithmIdentifier's contents): all the hash choice reads.
    fn certificate_with(algorithm: &[u8]) -> Vec<u8> {
        let mut algorithm_id = vec![0x30, u8::try_from(algorithm.len()).expect("short")];
        algorithm_id.extend_from_slice(algorithm);
        let mut body = vec![0x30, 0x03, 0x02, 0x01, 0x02]; // tbsCertificate
        body.extend_from_slice(&algorithm_id);
        body.extend_from_slice(&[0x03, 0x02, 0x00, 0xff]); // signature
        let mut der = vec![0x30, 0x81, u8::try_from(body.len()).expect("short")];
        der.extend_from_slice(&body);
        der
    }

    fn oid(bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![0x06, u8::try_from(bytes.len()).expect("short")];
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn end_point_hash_follows_rfc5929() {
        use EndPointHash::*;
        let pkcs1 = |last: u8| oid(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, last]);
        let ecdsa = |last: u8| oid(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, last]);
        let null = [0x05, 0x00];
        let with_null = |mut o: Vec<u8>| {
            o.extend_from_slice(&null);
            o
        };
        let cases: Vec<(Vec<u8>, EndPointHash)> = vec![
            (with_null(pkcs1(0x04)), Sha256), // md5WithRSAEncryption
            (with_null(pkcs1(0x05)), Sha256), // sha1WithRSAEncryption
            (with_null(pkcs1(0x0b)), Sha256),
            (with_null(pkcs1(0x0c)), Sha384),
            (with_null(pkcs1(0x0d)), Sha512),
            (with_null(pkcs1(0x0e)), Sha224),
            (oid(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01]), Sha256), // ecdsa-with-SHA1
            (ecdsa(0x02), Sha256),
            (ecdsa(0x03), Sha384),
            (ecdsa(0x04), Sha512),
        ];
        for (algorithm, expected) in cases {
            let der = certificate_with(&algorithm);
            assert_eq!(
                end_point_hash(&der).expect("mapped"),
                expected,
                "{algorithm:02x?}"
            );
            let data = tls_server_end_point(&der).expect("hashed");
            let want = match expected {
                Sha224 => sha2::Sha224::digest(&der).to_vec(),
                Sha256 => sha2::Sha256::digest(&der).to_vec(),
                Sha384 => sha2::Sha384::digest(&der).to_vec(),
                Sha512 => sha2::Sha512::digest(&der).to_vec(),
            };
            assert_eq!(data, want);
        }

        // RSASSA-PSS: the hash from its parameters, SHA-1 (so SHA-256) by
        // default.
        let pss_with = |params: &[u8]| {
            let mut algorithm = oid(RSASSA_PSS);
            algorithm.push(0x30);
            algorithm.push(u8::try_from(params.len()).expect("short"));
            algorithm.extend_from_slice(params);
            certificate_with(&algorithm)
        };
        let hash_param = |last: u8| {
            let hash = oid(&[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, last]);
            let mut id = vec![0x30, u8::try_from(hash.len()).expect("short")];
            id.extend_from_slice(&hash);
            let mut explicit = vec![0xa0, u8::try_from(id.len()).expect("short")];
            explicit.extend_from_slice(&id);
            explicit
        };
        assert_eq!(end_point_hash(&pss_with(&[])).unwrap(), Sha256);
        assert_eq!(
            end_point_hash(&pss_with(&hash_param(0x01))).unwrap(),
            Sha256
        );
        assert_eq!(
            end_point_hash(&pss_with(&hash_param(0x02))).unwrap(),
            Sha384
        );
        assert_eq!(
            end_point_hash(&pss_with(&hash_param(0x03))).unwrap(),
            Sha512
        );
        assert!(end_point_hash(&pss_with(&hash_param(0x09))).is_err());

        // No single hash (Ed25519, 1.3.101.112), or unknown: nothing to
        // bind with, as in PostgreSQL.
        for algorithm in [oid(&[0x2b, 0x65, 0x70]), oid(&[0x2a, 0x03]), pkcs1(0x01)] {
            let err = tls_server_end_point(&certificate_with(&algorithm)).unwrap_err();
            assert!(matches!(err, Error::Certificate(_)), "{err:?}");
        }
    }

    #[test]
    fn end_point_of_malformed_certificates_is_an_error() {
        let good = certificate_with(&oid(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]));
        tls_server_end_point(&good).expect("good");
        for end in 0..good.len() {
            assert!(tls_server_end_point(good.get(..end).unwrap_or_default()).is_err());
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(tls_server_end_point(&trailing).is_err());
        // Indefinite and huge lengths.
        assert!(tls_server_end_point(&[0x30, 0x80, 0x00, 0x00]).is_err());
        assert!(tls_server_end_point(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(
            tls_server_end_point(&[0x30, 0x88, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
                .is_err()
        );
        for i in 0..good.len() {
            for b in [0x00, 0x30, 0x80, 0x84, 0xff] {
                let mut m = good.clone();
                if let Some(slot) = m.get_mut(i) {
                    *slot = b;
                }
                let _ = tls_server_end_point(&m);
            }
        }
    }

    #[test]
    fn debug_output_hides_keys() {
        let verifier = make_verifier("secret", 1);
        let text = verifier.to_string();
        let (_, keys) = text.rsplit_once('$').expect("keys");
        let (stored, server) = keys.split_once(':').expect("keys");
        let debug = format!("{verifier:?} {:?}", ScramServer::new(verifier.clone()));
        assert!(
            !debug.contains(stored) && !debug.contains(server),
            "{debug}"
        );
    }

    #[test]
    fn error_messages_are_lowercase_without_period() {
        let errors = [
            Error::VerifierPrefix,
            Error::VerifierMalformed,
            Error::VerifierIterations,
            Error::VerifierZeroIterations,
            Error::VerifierBase64("salt"),
            Error::VerifierEmptySalt,
            Error::VerifierKeyLength("stored key"),
            Error::MessageTooLong,
            Error::Malformed("x"),
            Error::InvalidMechanism,
            Error::ChannelBindingNotOffered,
            Error::ChannelBindingNotSelected,
            Error::ChannelBindingMissing,
            Error::ChannelBindingDowngrade,
            Error::UnsupportedChannelBindingType,
            Error::AuthzidNotSupported,
            Error::UnsupportedExtension,
            Error::ChannelBindingMismatch,
            Error::NonceMismatch,
            Error::WrongProof,
            Error::OutOfOrder,
            Error::Certificate("x"),
        ];
        for e in errors {
            let msg = e.to_string();
            assert!(msg.starts_with(|c: char| c.is_ascii_lowercase()), "{msg}");
            assert!(!msg.ends_with('.'), "{msg}");
        }
    }
}
