//! The connection to PostgreSQL: connect, negotiate TLS, log in with
//! sluice's own service credential, and collect what the server says before
//! its first ReadyForQuery.
//!
//! The client never sees this login: it authenticated to sluice, and the
//! service secret stays here. Authentication methods: trust, cleartext
//! password, md5 and SCRAM-SHA-256, as `auth_methods` allows (by default
//! SCRAM-SHA-256 alone when a password is configured, where the server
//! proves it knows the password; the server, or whoever answers at its
//! address, chooses the method).
//!
//! Over TLS the SCRAM login is bound to the server's certificate
//! (SCRAM-SHA-256-PLUS with `tls-server-end-point`) when the server offers
//! it, as libpq's `channel_binding=prefer` does: a relay that answers the
//! SSLRequest with a certificate of its own (accepted by `tls = "require"`)
//! and passes the exchange on to the real server is caught by the server.
//! When TLS is used and -PLUS is not offered, sluice says `y` ("I could
//! bind"), so a server that can bind sees the offer was stripped.
//! `channel_binding = "require"` refuses every login but a bound one.

use std::collections::BTreeMap;
use std::io;

use bytes::{Bytes, BytesMut};
use pgwire::messages::startup::{
    Authentication, BackendKeyData, Password, SASLInitialResponse, SASLResponse, Startup,
};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::auth::scram;
use crate::config::{AuthMethods, ChannelBindingMode, Secret, UpstreamSettings};
use crate::protocol::frame::{Frame, read_frame};
use crate::protocol::reply::encode;
use crate::protocol::{backend, tag};
use crate::transport::{self, Stream};

/// Largest message accepted from the server while logging in.
const MAX_LOGIN_MESSAGE: usize = 1 << 20;

/// Why a connection to PostgreSQL could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to the upstream server: {0}")]
    Connect(io::Error),
    #[error("the upstream server did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("upstream tls: {0}")]
    Tls(String),
    #[error("the upstream server does not offer tls")]
    TlsRefused,
    #[error("upstream connection lost during login: {0}")]
    Io(#[from] io::Error),
    #[error("the upstream server asks for a password and none is configured")]
    PasswordRequired,
    #[error("the upstream server asks for an unsupported authentication method ({0})")]
    UnsupportedAuthentication(String),
    #[error(
        "the upstream server asks for {0} authentication, which auth_methods does not allow (whoever answers at its address chooses the method)"
    )]
    MethodNotAllowed(&'static str),
    #[error("upstream scram exchange failed: {0}")]
    Scram(io::Error),
    #[error("upstream channel binding: {0}")]
    ChannelBinding(String),
    #[error("unexpected message {0:?} from the upstream server during login")]
    Unexpected(char),
    /// The server refused the login; the fields are its ErrorResponse.
    #[error("the upstream server refused the session: {code}")]
    Refused {
        code: String,
        fields: Vec<(u8, String)>,
        frame: BytesMut,
    },
}

/// A logged-in connection to PostgreSQL, at its first ReadyForQuery.
pub struct Connection {
    pub stream: Stream,
    /// Bytes read past the first ReadyForQuery (normally none).
    pub read_buf: BytesMut,
    /// The server's ParameterStatus messages, as sent, in order.
    pub parameter_status: Vec<Frame>,
    /// The server's own BackendKeyData, kept to forward cancel requests.
    pub backend_key: Option<(i32, i32)>,
    /// Transaction status of the first ReadyForQuery.
    pub ready_status: u8,
}

/// What to send in the StartupMessage besides user and database.
pub struct StartupRequest<'a> {
    pub database: &'a str,
    pub parameters: &'a [(String, String)],
}

/// How to reach PostgreSQL: the settings, and the TLS connector built
/// once from them (reading the CA file once, not per session).
pub struct Upstream {
    pub settings: UpstreamSettings,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Upstream {
    pub fn new(settings: UpstreamSettings) -> Result<Upstream, transport::TlsError> {
        let tls = transport::upstream_connector(settings.tls, settings.tls_ca_file.as_deref())?;
        Ok(Upstream { settings, tls })
    }

    /// Opens a TCP (and, if configured, TLS) connection to the server.
    async fn open_stream(&self) -> Result<Stream, Error> {
        let settings = &self.settings;
        let tcp = TcpStream::connect((settings.host.as_str(), settings.port))
            .await
            .map_err(Error::Connect)?;
        tcp.set_nodelay(true).map_err(Error::Connect)?;
        let Some(connector) = &self.tls else {
            return Ok(Stream::Plain(tcp));
        };
        let mut tcp = tcp;
        // SSLRequest: length 8, code 80877103.
        tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await?;
        let mut answer = [0u8; 1];
        tokio::io::AsyncReadExt::read_exact(&mut tcp, &mut answer).await?;
        if answer[0] != b'S' {
            return Err(Error::TlsRefused);
        }
        let name = transport::server_name(&settings.host).map_err(|e| Error::Tls(e.to_string()))?;
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| Error::Tls(e.to_string()))?;
        Ok(Stream::ClientTls(Box::new(tls)))
    }

    /// Connects and logs in, within the configured connect timeout.
    pub async fn connect(&self, request: StartupRequest<'_>) -> Result<Connection, Error> {
        let settings = &self.settings;
        tokio::time::timeout(settings.connect_timeout, async {
            let mut stream = self.open_stream().await?;
            login(&mut stream, settings, request).await.map(
                |(read_buf, parameter_status, backend_key, ready_status)| Connection {
                    stream,
                    read_buf,
                    parameter_status,
                    backend_key,
                    ready_status,
                },
            )
        })
        .await
        .map_err(|_| Error::Timeout(settings.connect_timeout))?
    }

    /// Runs one read-only catalog query of sluice's own on a fresh
    /// connection to `database` and gives back its rows, each value as text
    /// (`None` for NULL). For lookups the session's own connection cannot
    /// make, being in the middle of a result. Bounded by the connect
    /// timeout, start to finish.
    pub async fn catalog_query(
        &self,
        database: &str,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, Error> {
        let parameters = [(
            "application_name".to_owned(),
            "sluice catalog lookup".to_owned(),
        )];
        let timeout = self.settings.connect_timeout;
        tokio::time::timeout(timeout, async {
            let mut connection = self
                .connect(StartupRequest {
                    database,
                    parameters: &parameters,
                })
                .await?;
            let mut out = BytesMut::new();
            encode(
                &pgwire::messages::simplequery::Query::new(sql.to_owned()),
                &mut out,
            );
            connection.stream.write_all(&out).await?;
            let (rows, failure) = read_reply(&mut connection, MAX_LOGIN_MESSAGE).await?;
            // Terminate: the server closes the connection.
            let _ = connection.stream.write_all(&[b'X', 0, 0, 0, 4]).await;
            failure.map(refused).map_or(Ok(rows), Err)
        })
        .await
        .map_err(|_| Error::Timeout(timeout))?
    }

    /// Sends a CancelRequest for the server's backend `pid` over a fresh
    /// connection, as PostgreSQL expects.
    pub async fn cancel(&self, pid: i32, secret: i32) -> Result<(), Error> {
        tokio::time::timeout(self.settings.connect_timeout, async {
            let mut stream = self.open_stream().await?;
            let mut packet = Vec::with_capacity(16);
            packet.extend_from_slice(&16i32.to_be_bytes());
            packet.extend_from_slice(&80_877_102i32.to_be_bytes());
            packet.extend_from_slice(&pid.to_be_bytes());
            packet.extend_from_slice(&secret.to_be_bytes());
            stream.write_all(&packet).await?;
            stream.flush().await?;
            // The server closes the connection when it has acted on it.
            let mut sink = [0u8; 1];
            let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await;
            Ok(())
        })
        .await
        .map_err(|_| Error::Timeout(self.settings.connect_timeout))?
    }
}

/// Reads the server's reply to a query up to ReadyForQuery: the rows'
/// text values, and the first ErrorResponse if one came.
pub(crate) async fn read_reply(
    connection: &mut Connection,
    max_message: usize,
) -> Result<(Vec<Vec<Option<String>>>, Option<Frame>), Error> {
    let mut rows = Vec::new();
    let mut failure = None;
    loop {
        let frame = read_frame(
            &mut connection.stream,
            &mut connection.read_buf,
            max_message,
        )
        .await?
        .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        match frame.tag() {
            tag::DATA_ROW => rows.push(text_values(&frame).ok_or(Error::Unexpected('D'))?),
            tag::ERROR_RESPONSE => {
                failure.get_or_insert(frame);
            }
            tag::READY_FOR_QUERY => return Ok((rows, failure)),
            _ => {}
        }
    }
}

/// The server's ErrorResponse as an [`Error::Refused`].
fn refused(frame: Frame) -> Error {
    let fields = match backend::decode(&frame) {
        Some(backend::Message::ErrorResponse(error)) => error.fields,
        _ => Vec::new(),
    };
    let code = backend::field(&fields, b'C').unwrap_or("XX000").to_owned();
    Error::Refused {
        code,
        fields,
        frame: frame.into_bytes(),
    }
}

type LoginOutcome = (BytesMut, Vec<Frame>, Option<(i32, i32)>, u8);

/// A text-format DataRow's values; `None` if it is malformed or a value is
/// not UTF-8.
fn text_values(frame: &Frame) -> Option<Vec<Option<String>>> {
    backend::data_row_values(frame.body())?
        .into_iter()
        .map(|value| match value {
            None => Some(None),
            Some(bytes) => std::str::from_utf8(bytes).ok().map(|t| Some(t.to_owned())),
        })
        .collect()
}

async fn login(
    stream: &mut Stream,
    settings: &UpstreamSettings,
    request: StartupRequest<'_>,
) -> Result<LoginOutcome, Error> {
    let mut startup = Startup::new();
    let mut parameters = BTreeMap::new();
    for (name, value) in request.parameters {
        parameters.insert(name.clone(), value.clone());
    }
    parameters.insert("user".to_owned(), settings.user.clone());
    parameters.insert("database".to_owned(), request.database.to_owned());
    // sluice reads every session as UTF-8; the server converts for us.
    parameters.insert("client_encoding".to_owned(), "UTF8".to_owned());
    startup.parameters = parameters;
    let mut out = BytesMut::new();
    encode(&startup, &mut out);
    stream.write_all(&out).await?;

    let mut buf = BytesMut::with_capacity(8192);
    let mut scram = Scram::default();
    // Whether the server said the login succeeded: nothing else counts.
    let mut authenticated = false;
    let mut password_asked = false;
    let mut parameter_status = Vec::new();
    let mut backend_key = None;
    loop {
        let frame = read_frame(stream, &mut buf, MAX_LOGIN_MESSAGE)
            .await?
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        match frame.tag() {
            tag::AUTHENTICATION => {
                let auth = decode_authentication(&frame)?;
                let ok = matches!(auth, Authentication::Ok);
                authenticate(stream, settings, auth, &mut scram, password_asked).await?;
                password_asked |= !ok;
                authenticated |= ok;
            }
            tag::PARAMETER_STATUS => parameter_status.push(frame),
            tag::BACKEND_KEY_DATA => {
                if frame.body().len() == 8 {
                    let key: Option<BackendKeyData> = frame.decode();
                    backend_key =
                        key.and_then(|k| k.secret_key.as_i32().map(|secret| (k.pid, secret)));
                }
            }
            // A server that skips the login's end (a SCRAM proof, the
            // "ok") has not logged sluice in: it is not served.
            tag::READY_FOR_QUERY if !authenticated => return Err(Error::Unexpected('Z')),
            tag::READY_FOR_QUERY => {
                let status = match frame.body() {
                    [status @ (b'I' | b'T' | b'E')] => *status,
                    _ => return Err(Error::Unexpected('Z')),
                };
                return Ok((buf, parameter_status, backend_key, status));
            }
            tag::ERROR_RESPONSE => return Err(refused(frame)),
            // Notices during login carry nothing the client needs.
            tag::NOTICE_RESPONSE | tag::NEGOTIATE_PROTOCOL_VERSION => {}
            other => return Err(Error::Unexpected(other as char)),
        }
    }
}

/// The method the server asks for, when `allowed` leaves it out: an "ok"
/// before any password was asked for is `trust`.
fn disallowed(
    auth: &Authentication,
    allowed: AuthMethods,
    password_asked: bool,
) -> Option<&'static str> {
    let (method, is_allowed) = match auth {
        Authentication::Ok if !password_asked => ("trust", allowed.trust),
        Authentication::CleartextPassword => ("password", allowed.password),
        Authentication::MD5Password(_) => ("md5", allowed.md5),
        Authentication::SASL(_) => ("scram-sha-256", allowed.scram_sha_256),
        _ => return None,
    };
    (!is_allowed).then_some(method)
}

fn decode_authentication(frame: &Frame) -> Result<Authentication, Error> {
    // pgwire subtracts 8 from the length for SASL data without checking it.
    if frame.body().len() < 4 {
        return Err(Error::Unexpected('R'));
    }
    let code = i32::from_be_bytes([
        frame.body()[0],
        frame.body()[1],
        frame.body()[2],
        frame.body()[3],
    ]);
    if code == 5 && frame.body().len() != 8 {
        return Err(Error::Unexpected('R'));
    }
    frame
        .decode::<Authentication>()
        .ok_or_else(|| Error::UnsupportedAuthentication(format!("code {code}")))
}

/// sluice's side of the SCRAM login upstream.
#[derive(Default)]
struct Scram {
    /// The exchange under way, between the server's offer and its proof.
    client: Option<ScramSha256>,
    /// Whether the exchange under way is bound to the TLS certificate.
    plus: bool,
    /// Whether the server proved itself in a bound exchange.
    bound: bool,
}

/// The SCRAM mechanism to select from the server's `mechanisms`, and the
/// channel binding to run it with, as libpq chooses them.
fn choose_scram(
    mechanisms: &[String],
    mode: ChannelBindingMode,
    stream: &Stream,
) -> Result<(&'static str, ChannelBinding), Error> {
    let offers = |name: &str| mechanisms.iter().any(|m| m == name);
    let plain = |binding: ChannelBinding| {
        if offers(scram::MECHANISM) {
            Ok((scram::MECHANISM, binding))
        } else {
            Err(Error::UnsupportedAuthentication(mechanisms.join(", ")))
        }
    };
    match mode {
        // 'n': honest about not binding.
        ChannelBindingMode::Disable => plain(ChannelBinding::unsupported()),
        ChannelBindingMode::Require if !stream.is_tls() => Err(Error::ChannelBinding(
            "channel_binding = \"require\", but the connection to the server is not tls".to_owned(),
        )),
        ChannelBindingMode::Prefer if !stream.is_tls() => plain(ChannelBinding::unsupported()),
        _ if offers(scram::MECHANISM_PLUS) => {
            // The certificate the server sent on this connection: a relay's
            // own, if one sits in between, which the server then refuses.
            let end_point = transport::peer_end_point(stream)
                .map_err(|error| Error::ChannelBinding(error.to_string()))?;
            Ok((
                scram::MECHANISM_PLUS,
                ChannelBinding::tls_server_end_point(end_point),
            ))
        }
        ChannelBindingMode::Require => Err(Error::ChannelBinding(
            "channel_binding = \"require\", but the server does not offer SCRAM-SHA-256-PLUS"
                .to_owned(),
        )),
        // 'y': sluice could bind; a server that can sees the downgrade.
        ChannelBindingMode::Prefer => plain(ChannelBinding::unrequested()),
    }
}

/// Answers one Authentication request. `password_asked`: whether the
/// server asked for the password in some form before this request.
async fn authenticate(
    stream: &mut Stream,
    settings: &UpstreamSettings,
    auth: Authentication,
    scram: &mut Scram,
    password_asked: bool,
) -> Result<(), Error> {
    let password = || settings.password.as_ref().ok_or(Error::PasswordRequired);
    let mut out = BytesMut::new();
    // Once a SCRAM exchange has begun, only its next step or the server's
    // proof may come: an "ok", or a request for the password in a weaker
    // form, before the server proved it knows the verifier is what a
    // server in the middle would send.
    if scram.client.is_some()
        && !matches!(
            auth,
            Authentication::SASLContinue(_) | Authentication::SASLFinal(_)
        )
    {
        return Err(Error::Scram(io::Error::other(
            "the server left the SCRAM exchange before proving it knows the password",
        )));
    }
    if let Some(method) = disallowed(&auth, settings.auth_methods, password_asked) {
        return Err(Error::MethodNotAllowed(method));
    }
    // With `require`, only a bound SCRAM exchange logs sluice in: an "ok"
    // before the server proved itself in one, or any other method, is
    // what a server in the middle would answer.
    if settings.channel_binding == ChannelBindingMode::Require {
        let unbound = match &auth {
            Authentication::SASL(_)
            | Authentication::SASLContinue(_)
            | Authentication::SASLFinal(_) => false,
            Authentication::Ok => !scram.bound,
            _ => true,
        };
        if unbound {
            return Err(Error::ChannelBinding(
                "channel_binding = \"require\", but the server authenticated sluice without channel binding"
                    .to_owned(),
            ));
        }
    }
    match auth {
        Authentication::Ok => return Ok(()),
        Authentication::CleartextPassword => {
            encode(&Password::new(password()?.expose().to_owned()), &mut out);
        }
        Authentication::MD5Password(salt) => {
            let salt: [u8; 4] = salt.try_into().map_err(|_| Error::Unexpected('R'))?;
            let hashed = postgres_protocol::authentication::md5_hash(
                settings.user.as_bytes(),
                password()?.expose().as_bytes(),
                salt,
            );
            encode(&Password::new(hashed), &mut out);
        }
        Authentication::SASL(mechanisms) => {
            let (mechanism, binding) = choose_scram(&mechanisms, settings.channel_binding, stream)?;
            let secret: &Secret = password()?;
            let client = ScramSha256::new(secret.expose().as_bytes(), binding);
            let initial = SASLInitialResponse::new(
                mechanism.to_owned(),
                Some(Bytes::copy_from_slice(client.message())),
            );
            encode(&initial, &mut out);
            scram.client = Some(client);
            scram.plus = mechanism == scram::MECHANISM_PLUS;
        }
        Authentication::SASLContinue(data) => {
            let client = scram.client.as_mut().ok_or(Error::Unexpected('R'))?;
            client.update(&data).map_err(Error::Scram)?;
            encode(
                &SASLResponse::new(Bytes::copy_from_slice(client.message())),
                &mut out,
            );
        }
        Authentication::SASLFinal(data) => {
            let client = scram.client.as_mut().ok_or(Error::Unexpected('R'))?;
            // Proves the server knew the verifier: a server that merely
            // says "ok" without it is refused.
            client.finish(&data).map_err(Error::Scram)?;
            // Done: the "ok" that follows is now the server's to send.
            scram.client = None;
            scram.bound = scram.plus;
            return Ok(());
        }
        Authentication::KerberosV5 => {
            return Err(Error::UnsupportedAuthentication("kerberos".to_owned()));
        }
        other => {
            return Err(Error::UnsupportedAuthentication(format!("{other:?}")));
        }
    }
    stream.write_all(&out).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(names: &[&str]) -> Vec<String> {
        names.iter().map(|&n| n.to_owned()).collect()
    }

    /// Without TLS there is no certificate to bind to: `prefer` and
    /// `disable` say `n`, `require` refuses, whatever the server offers.
    #[test]
    fn without_tls_nothing_is_bound() {
        let both = offer(&[scram::MECHANISM_PLUS, scram::MECHANISM]);
        for mode in [ChannelBindingMode::Disable, ChannelBindingMode::Prefer] {
            let (mechanism, _) = choose_scram(&both, mode, &Stream::Detached).expect("plain");
            assert_eq!(mechanism, scram::MECHANISM);
        }
        let error = choose_scram(&both, ChannelBindingMode::Require, &Stream::Detached)
            .err()
            .expect("refused");
        assert!(matches!(error, Error::ChannelBinding(_)), "{error:?}");
        assert!(error.to_string().contains("not tls"), "{error}");

        // A server offering only -PLUS (or nothing known) over plain TCP.
        for offered in [offer(&[scram::MECHANISM_PLUS]), offer(&["SCRAM-SHA-1"])] {
            let error = choose_scram(&offered, ChannelBindingMode::Prefer, &Stream::Detached)
                .err()
                .expect("refused");
            assert!(
                matches!(error, Error::UnsupportedAuthentication(_)),
                "{error:?}"
            );
        }
    }
}
