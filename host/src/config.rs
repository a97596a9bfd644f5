//! The operator's configuration: `sluice.toml`, parsed with serde.
//!
//! Every table denies unknown keys, so a typo is an error that names the line
//! and column instead of a setting silently ignored. Secrets never live in the
//! config text: the upstream password is named by an environment variable or
//! a file, and client tokens are stored as SCRAM-SHA-256 verifiers.
//!
//! Loading happens in two steps: [`Config::from_toml`] parses and checks the
//! text, and [`Config::resolve`] turns it into the [`Settings`] the gateway
//! runs with (paths made relative to the config file, the upstream URL split,
//! command-line overrides applied, the secret read).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::auth::scram::Verifier;

/// Port sluice listens on when the config names none.
pub const DEFAULT_PORT: u16 = 6432;

/// Longest name PostgreSQL keeps, in bytes (NAMEDATALEN - 1): of a schema,
/// and of a principal, whose name is the startup `user` it logs in as
/// (startup refuses a longer one: it could be no principal's).
pub const MAX_NAME_BYTES: usize = 63;

/// Startup parameters a client may pass upstream without asking anyone:
/// presentation settings that change how values are rendered, nothing that
/// changes what a statement is allowed to do.
pub const DEFAULT_STARTUP_PARAMETERS: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "IntervalStyle",
    "extra_float_digits",
];

/// Errors from reading or checking a configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: line {line}, column {column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
}

fn invalid(message: impl Into<String>) -> Error {
    Error::Invalid(message.into())
}

/// The whole file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub listen: ListenConfig,
    pub upstream: Option<UpstreamConfig>,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub startup: StartupConfig,
    #[serde(default)]
    pub principals: Vec<PrincipalConfig>,
    #[serde(default)]
    pub plugins: Vec<PluginConfig>,
    #[serde(default)]
    pub approvals: ApprovalsConfig,
    pub audit: Option<AuditConfig>,
    pub admin: Option<AdminConfig>,
    pub telemetry: Option<TelemetryConfig>,
    #[serde(default)]
    pub errors: ErrorsConfig,
}

/// `[errors]`: what of the server's errors a session is shown.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorsConfig {
    /// Groups whose sessions see the row values PostgreSQL puts in the
    /// DETAIL of a constraint violation (`Failing row contains (...)`,
    /// `Key (pan)=(...) already exists`); everyone else's are withheld.
    #[serde(default)]
    pub row_values_for: Vec<String>,
}

/// `[admin]`: the operators' HTTP port — `/metrics` (Prometheus text),
/// `/healthz`, `/readyz`. Off without this table (or `--admin-listen`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address and port, e.g. `127.0.0.1:9187`. Nothing on it needs a
    /// secret to read, but it tells what the gateway does: keep it off
    /// networks clients reach.
    pub listen: String,
}

/// `[telemetry]`: OpenTelemetry traces, exported over OTLP/HTTP
/// (protobuf). Off without this table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The collector's OTLP/HTTP base URL, e.g. `http://127.0.0.1:4318`
    /// (spans go to `/v1/traces` under it), or the full traces URL;
    /// `https://` with `tls_ca_file` for a collector elsewhere.
    /// Headers the collector wants (an API key) come from the environment,
    /// `OTEL_EXPORTER_OTLP_HEADERS`, never from this file.
    pub otlp_endpoint: String,
    /// `service.name` of the spans. Default `sluice`.
    pub service_name: Option<String>,
    /// The share of sessions traced, from 0 to 1. Default 1.
    pub sample_ratio: Option<f64>,
    /// How long one export may take. Default 10000.
    pub export_timeout_ms: Option<u64>,
    /// For an `https://` endpoint: the CA (PEM) that signed the collector's
    /// certificate, which is checked with its host name. Required there:
    /// sluice carries no bundle of public roots.
    pub tls_ca_file: Option<PathBuf>,
}

/// `[audit]`: the tamper-evident audit trail. Without this table (and
/// without `--audit-file`) nothing is recorded, and sluice says so when it
/// starts.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The active audit file (JSON Lines); rotated files sit next to it.
    pub file: Option<PathBuf>,
    /// When a record counts as written: `"always"` (the default: synced to
    /// disk, survives power loss) or `"batch"` (handed to the OS, survives
    /// a crash of sluice).
    pub fsync: Option<AuditFsync>,
    /// The file holding the chain's key (64 hex characters, not readable by
    /// group or others). Default: the file `SLUICE_AUDIT_KEY_FILE` names,
    /// else `FILE.key`, made when missing (demo-grade: it sits next to the
    /// trail it protects).
    pub key_file: Option<PathBuf>,
    /// Where the chain head is kept. Default `FILE.head`; put it where the
    /// trail's readers cannot write.
    pub head_file: Option<PathBuf>,
    /// Rotate the active file once it is this large (default 1 GiB).
    pub rotate_bytes: Option<u64>,
    /// Rotate the active file once it is this old.
    pub rotate_seconds: Option<u64>,
    /// Record what statements return — rows as the client got them, after
    /// masking — up to `result_bytes` per statement. Default false: row
    /// counts only.
    #[serde(default)]
    pub record_results: bool,
    pub result_bytes: Option<usize>,
    /// This gateway's name in the records (several instances each keep a
    /// chain of their own). Default: the host name.
    pub instance: Option<String>,
    /// `[audit.postgres]`: record into a PostgreSQL database instead of a
    /// file (url, password_env or password_file, tls, tls_ca_file,
    /// connect_timeout_ms, as for `[upstream]`). Needs `key_file`.
    pub postgres: Option<UpstreamConfig>,
}

/// When an audit record counts as written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditFsync {
    /// fdatasync per group commit, before the statement goes upstream.
    #[default]
    Always,
    /// Written to the OS per group commit; synced by the OS later.
    Batch,
}

/// `[approvals]`: statements held for a human's approval.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// How long a held statement waits for an answer before it is refused.
    pub timeout_ms: Option<u64>,
    /// Who may answer tickets, by the name an approval plugin reads from
    /// an answer (a Slack user ID, say): the principal that name is, and
    /// the groups it approves for. Nobody else's answer is taken.
    #[serde(default)]
    pub approvers: BTreeMap<String, ApproverConfig>,
}

/// One entry of `[approvals.approvers]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproverConfig {
    /// The principal the approver is: never the approver of a statement
    /// this principal sent.
    pub principal: String,
    /// The approver groups whose tickets this approver may answer.
    pub groups: Vec<String>,
    /// The approval plugin whose answers under this name are taken; any
    /// approval plugin's when unset. Names are a channel's own (a Slack
    /// user ID means nothing to another channel), so with several approval
    /// plugins, set it.
    pub plugin: Option<String>,
}

/// `[listen]`: where clients connect.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// Address and port, e.g. `127.0.0.1:6432`.
    pub address: Option<String>,
    /// PEM certificate chain; with `tls_key`, clients may negotiate TLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Refuse plaintext clients (they get an error asking for TLS).
    #[serde(default)]
    pub require_tls: bool,
    /// Most client sessions served at once; more are refused with 53300.
    pub max_connections: Option<usize>,
    /// Threads serving sessions; default: one per CPU.
    pub worker_threads: Option<usize>,
    /// Load balancers that put a PROXY protocol header (version 1 or 2)
    /// before each connection, as addresses or CIDR ranges: a connection
    /// from one of them must start with the header, whose client address
    /// is then the session's origin (in the audit trail, the lockouts, the
    /// logs and spans). From any other address a header is refused.
    #[serde(default)]
    pub proxy_protocol_from: Vec<String>,
}

/// `[upstream]`: the PostgreSQL server sluice fronts.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `postgres://user@host:port/database`; a password here is accepted
    /// for local use only (sluice warns).
    pub url: String,
    /// Environment variable holding the service password.
    pub password_env: Option<String>,
    /// File holding the service password (trailing newline ignored).
    pub password_file: Option<PathBuf>,
    /// Databases clients may ask for; default: the URL's database.
    pub databases: Option<Vec<String>>,
    /// `disable`, `require` or `verify-full`.
    #[serde(default)]
    pub tls: UpstreamTlsMode,
    /// CA bundle (PEM) for `verify-full`.
    pub tls_ca_file: Option<PathBuf>,
    /// SCRAM channel binding to the server's certificate: `prefer`
    /// (default), `require` or `disable`, as libpq's `channel_binding`.
    #[serde(default)]
    pub channel_binding: ChannelBindingMode,
    /// How long to wait for the server to accept and log in.
    pub connect_timeout_ms: Option<u64>,
    /// The ways the server may ask for the service password:
    /// `scram-sha-256`, `md5`, `password` (cleartext), `trust` (none).
    /// Default: `scram-sha-256` when a password is configured (the one
    /// method in which the server proves it knows the password), `trust`
    /// when none is.
    pub auth_methods: Option<Vec<String>>,
    /// `[audit.postgres]` only: the schema of the audit tables (default
    /// `public`).
    pub schema: Option<String>,
}

impl std::fmt::Debug for UpstreamConfig {
    /// The URL may carry the service password (accepted for local use):
    /// its form is shown without it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = match UpstreamUrl::parse(&self.url) {
            Ok(url) => format!(
                "postgres://{}{}@{}:{}/{}",
                url.user,
                if url.password.is_some() {
                    ":<redacted>"
                } else {
                    ""
                },
                url.host,
                url.port,
                url.database
            ),
            Err(_) => "<unreadable>".to_owned(),
        };
        f.debug_struct("UpstreamConfig")
            .field("url", &url)
            .field("password_env", &self.password_env)
            .field("password_file", &self.password_file)
            .field("databases", &self.databases)
            .field("tls", &self.tls)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("channel_binding", &self.channel_binding)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("auth_methods", &self.auth_methods)
            .finish()
    }
}

/// How sluice protects its connection to PostgreSQL.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTlsMode {
    /// Plain TCP.
    #[default]
    Disable,
    /// TLS, certificate not checked (protects against passive sniffing only).
    Require,
    /// TLS, certificate chain and host name checked against `tls_ca_file`.
    VerifyFull,
}

/// Whether sluice binds its SCRAM login to the server's TLS certificate
/// (`tls-server-end-point`), as libpq's `channel_binding` setting: a
/// relay that answers with a certificate of its own and passes the SCRAM
/// exchange on to the real server is caught by the server.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChannelBindingMode {
    /// Never bind (and send `n`: the client does not bind).
    Disable,
    /// Over TLS, bind when the server offers SCRAM-SHA-256-PLUS, and send
    /// `y` otherwise, so a server that can bind sees the downgrade.
    #[default]
    Prefer,
    /// Log in only with SCRAM-SHA-256-PLUS over TLS: any other method, or
    /// a server that does not offer -PLUS, is refused.
    Require,
}

/// `[limits]`: bounds that keep one session from hurting the others.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest message a client may send (bytes).
    pub max_message_bytes: Option<usize>,
    /// Largest server message sluice holds whole to inspect (bytes); rows and
    /// COPY data stream through and are not bound by this.
    pub max_held_server_message_bytes: Option<usize>,
    /// Time a client has from connecting to finishing its login.
    pub login_timeout_ms: Option<u64>,
    /// Connections from one client address (an IPv6 /64) that may be
    /// logging in at once (default: a quarter of `max_connections`).
    pub max_logins_per_address: Option<usize>,
    /// Time a client may leave a message half-sent.
    pub message_stall_timeout_ms: Option<u64>,
    /// On SIGTERM, how long busy sessions may run before they are closed.
    pub shutdown_grace_ms: Option<u64>,
    /// A session whose client sends nothing for this long while nothing
    /// runs for it is ended (PCI DSS 8.2.8: an idle session needs a new
    /// login); 0 turns it off.
    pub idle_session_timeout_ms: Option<u64>,
}

/// `[startup]`: what a client may set when it connects.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartupConfig {
    /// Parameters allowed in addition to the default allowlist.
    #[serde(default)]
    pub extra_allowed_parameters: Vec<String>,
}

/// `[[principals]]`: a client identity (until identity plugins replace it).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalConfig {
    /// The startup `user` the client connects as.
    pub name: String,
    #[serde(default)]
    pub groups: Vec<String>,
    /// SCRAM-SHA-256 verifier in PostgreSQL's format, made with
    /// `sluice hash-token`.
    pub token_verifier: String,
}

/// `[[plugins]]`: a WebAssembly component that makes one kind of decision.
/// Plugins of one hook run in the order they are listed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Names the plugin in logs, metrics and errors; unique.
    pub name: String,
    /// Which hook it serves: `identity`, `policy`, `masking` or `approval`.
    pub hook: Hook,
    /// `builtin:NAME` for a plugin shipped inside sluice, or the path of a
    /// component file, relative to this config file.
    pub path: String,
    /// Longest a single call may run before it is stopped and fails closed.
    pub deadline_ms: Option<u64>,
    /// Most linear memory one instance may grow to (MiB).
    pub memory_mb: Option<u64>,
    /// Most instances that may exist at once; a call that finds them all
    /// busy waits for one within its time, then fails closed.
    pub max_instances: Option<u64>,
    /// The plugin's own settings, handed to it as JSON by `config.get`.
    #[serde(default)]
    pub config: toml::Table,
    /// Data files the host reads and watches for the plugin, by the key the
    /// plugin asks `config.file` for; paths relative to this config file.
    #[serde(default)]
    pub files: std::collections::BTreeMap<String, PathBuf>,
    /// WASI capabilities granted beyond none.
    #[serde(default)]
    pub grants: GrantsConfig,
}

/// `[plugins.grants]`: what a plugin may reach through WASI. Nothing by
/// default; prefer `files`, which the host reads and watches for it.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsConfig {
    /// Environment variables the plugin may read (names; values are read
    /// from sluice's environment when the plugin is loaded).
    #[serde(default)]
    pub env: Vec<String>,
    /// Directories the plugin may read, visible to it under the same path.
    #[serde(default)]
    pub read_dirs: Vec<PathBuf>,
}

/// The decision a plugin makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hook {
    Identity,
    Policy,
    Masking,
    Approval,
}

impl Hook {
    pub const ALL: [Hook; 4] = [Hook::Identity, Hook::Policy, Hook::Masking, Hook::Approval];

    pub fn name(self) -> &'static str {
        match self {
            Hook::Identity => "identity",
            Hook::Policy => "policy",
            Hook::Masking => "masking",
            Hook::Approval => "approval",
        }
    }
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a plugin's component comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginSource {
    /// Shipped inside the sluice binary.
    Builtin(String),
    /// A component file.
    File(PathBuf),
}

impl std::fmt::Display for PluginSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PluginSource::Builtin(name) => write!(f, "builtin:{name}"),
            PluginSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A plugin entry, checked and resolved.
#[derive(Clone)]
pub struct PluginSettings {
    pub name: String,
    pub hook: Hook,
    pub source: PluginSource,
    pub deadline: Duration,
    pub memory_bytes: usize,
    /// Most instances of the plugin that may exist at once (in calls and
    /// kept warm): its memory is at most this many times `memory_bytes`.
    pub max_instances: usize,
    /// The plugin's config table as JSON text.
    pub config_json: String,
    pub files: std::collections::BTreeMap<String, PathBuf>,
    /// Environment variables granted, with their values.
    pub env: Vec<(String, String)>,
    pub read_dirs: Vec<PathBuf>,
}

impl std::fmt::Debug for PluginSettings {
    /// Granted environment variables are shown by name: their values are
    /// typically secrets (a Slack token, say).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let env: Vec<&str> = self.env.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("PluginSettings")
            .field("name", &self.name)
            .field("hook", &self.hook)
            .field("source", &self.source)
            .field("deadline", &self.deadline)
            .field("memory_bytes", &self.memory_bytes)
            .field("max_instances", &self.max_instances)
            .field("config_json", &self.config_json)
            .field("files", &self.files)
            .field("env", &env)
            .field("read_dirs", &self.read_dirs)
            .finish()
    }
}

/// Default per-call deadline: plugins decide on the data path, where a
/// well-behaved one answers in microseconds. Only time the call runs counts.
pub const DEFAULT_PLUGIN_DEADLINE: Duration = Duration::from_millis(50);
/// Default memory cap per plugin instance.
pub const DEFAULT_PLUGIN_MEMORY_MB: u64 = 64;
/// Default bound on a plugin's instances. A call holds one for microseconds
/// (an approval plugin's, for a Slack round trip), so a few dozen serve far
/// more sessions; the bound keeps a flood of slow calls from growing the
/// plugin's memory past this many times its cap.
pub const DEFAULT_PLUGIN_MAX_INSTANCES: usize = 32;

/// Command-line values that replace what the file says.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub upstream: Option<String>,
    /// `--audit-file`: record here (relative to the working directory).
    pub audit_file: Option<PathBuf>,
    /// `--admin-listen`: serve the admin HTTP port here.
    pub admin_listen: Option<String>,
}

/// Everything the gateway needs, checked and resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub tls: Option<ListenTls>,
    pub require_tls: bool,
    pub max_connections: usize,
    /// Threads serving sessions (`sluice serve`).
    pub worker_threads: usize,
    /// Where connections start with a PROXY protocol header naming the
    /// client (`[listen] proxy_protocol_from`).
    pub proxy_protocol_from: Vec<AddressRange>,
    pub upstream: UpstreamSettings,
    pub limits: Limits,
    pub allowed_startup_parameters: BTreeSet<String>,
    pub principals: Vec<Principal>,
    /// Plugins in config order.
    pub plugins: Vec<PluginSettings>,
    /// How long a statement held for approval waits.
    pub approval_timeout: Duration,
    /// Who may answer approval tickets (`[approvals.approvers]`).
    pub approvers: crate::approval::Approvers,
    /// The audit trail; `None`: nothing is recorded.
    pub audit: Option<AuditSettings>,
    /// The admin HTTP port; `None`: not served.
    pub admin: Option<SocketAddr>,
    /// Trace export; `None`: no spans.
    pub telemetry: Option<crate::telemetry::TelemetrySettings>,
    /// Groups whose sessions see the row values of a constraint
    /// violation's DETAIL (`[errors] row_values_for`).
    pub row_values_for: BTreeSet<String>,
}

/// An address, or a range of them in CIDR notation (`10.0.0.0/8`,
/// `2001:db8::/32`); an address alone is a range of one. IPv4 clients are
/// matched as IPv4 addresses even on an IPv6 socket, so an IPv6 range
/// (`::/0` too) never holds them: list IPv4 ranges for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressRange {
    network: std::net::IpAddr,
    prefix: u8,
}

impl AddressRange {
    /// Whether `address` is in the range. An IPv4 client seen on an IPv6
    /// socket (`::ffff:10.0.0.5`) counts as its IPv4 address.
    pub fn contains(&self, address: std::net::IpAddr) -> bool {
        let address = address.to_canonical();
        // The network is kept with the bits past its prefix cleared.
        address.is_ipv4() == self.network.is_ipv4() && masked(address, self.prefix) == self.network
    }
}

impl std::str::FromStr for AddressRange {
    type Err = String;

    fn from_str(text: &str) -> Result<AddressRange, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: std::net::IpAddr = address
            .parse()
            .map_err(|_| "not an IP address or CIDR range".to_owned())?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let mut prefix = match prefix {
            None => bits,
            Some(written) => match written.parse::<u8>() {
                // Digits only: `parse` would also take a sign.
                Ok(prefix) if prefix <= bits && written.bytes().all(|b| b.is_ascii_digit()) => {
                    prefix
                }
                _ => return Err(format!("the prefix length must be 0 to {bits}")),
            },
        };
        // An IPv4-mapped range (`::ffff:10.0.0.0/104`) is the IPv4 range
        // it maps, as the addresses it is matched against are.
        let canonical = network.to_canonical();
        if canonical.is_ipv4() && network.is_ipv6() {
            prefix = prefix
                .checked_sub(96)
                .ok_or("an IPv4-mapped range needs a prefix of at least 96")?;
        }
        let network = canonical;
        // `10.0.0.1/8` is most likely a typo for an address or a range:
        // refused rather than read as either.
        if masked(network, prefix) != network {
            return Err(format!(
                "{text} has bits set past its prefix (the range it is in is {}/{prefix})",
                masked(network, prefix)
            ));
        }
        Ok(AddressRange { network, prefix })
    }
}

/// `address` with every bit past `prefix` cleared.
fn masked(address: std::net::IpAddr, prefix: u8) -> std::net::IpAddr {
    use std::net::IpAddr;
    match address {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    }
}

/// Default cap on the returned data recorded per statement.
pub const DEFAULT_AUDIT_RESULT_BYTES: usize = 4096;

/// The audit trail, resolved.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    pub file: PathBuf,
    pub head_file: PathBuf,
    pub key: AuditKey,
    pub fsync: AuditFsync,
    pub rotate_bytes: Option<u64>,
    pub rotate_after: Option<Duration>,
    /// Per statement, at most this many bytes of returned (masked) data
    /// are recorded; 0 records none.
    pub result_bytes: usize,
    pub instance: String,
    /// Whether `[audit] instance` named `instance`; else it is this host's
    /// name, which on the machine that verifies need not be the gateway's.
    pub instance_named: bool,
    /// Record into this PostgreSQL database rather than `file` (whose
    /// other settings then do not apply).
    pub postgres: Option<UpstreamSettings>,
}

/// The active trail file is rotated past this size unless configured
/// otherwise. A file without bound would also make every start slower:
/// recovery reads the active file whole (for holes a power loss left).
pub const DEFAULT_ROTATE_BYTES: u64 = 1 << 30;

/// Where the audit chain's key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditKey {
    /// A key file the operator made.
    File(PathBuf),
    /// `FILE.key`, made by sluice when missing: demo-grade, since it sits
    /// next to the trail it protects.
    NextToTrail(PathBuf),
}

impl AuditKey {
    /// The key file, wherever it came from.
    pub fn path(&self) -> &Path {
        match self {
            AuditKey::File(path) | AuditKey::NextToTrail(path) => path,
        }
    }
}

impl AuditSettings {
    /// The settings for recording to `file` with nothing else configured:
    /// the key from `SLUICE_AUDIT_KEY_FILE` or `FILE.key`, the head in
    /// `FILE.head`, synced per commit.
    pub fn for_file(file: PathBuf, env: &dyn Fn(&str) -> Option<String>) -> AuditSettings {
        AuditSettings {
            head_file: with_suffix(&file, ".head"),
            key: match env("SLUICE_AUDIT_KEY_FILE") {
                Some(path) => AuditKey::File(PathBuf::from(path)),
                None => AuditKey::NextToTrail(with_suffix(&file, ".key")),
            },
            file,
            fsync: AuditFsync::Always,
            rotate_bytes: Some(DEFAULT_ROTATE_BYTES),
            rotate_after: None,
            result_bytes: 0,
            instance: default_instance(),
            instance_named: false,
            postgres: None,
        }
    }
}

/// `[audit] record_results` and `result_bytes`: the cap on returned data
/// recorded per statement (0: none).
fn resolve_result_bytes(audit: &AuditConfig) -> Result<usize, Error> {
    match (audit.record_results, audit.result_bytes) {
        (false, Some(_)) => Err(invalid("[audit] result_bytes needs record_results = true")),
        (false, None) => Ok(0),
        (true, None) => Ok(DEFAULT_AUDIT_RESULT_BYTES),
        (true, Some(bytes @ 1..=1_048_576)) => Ok(bytes),
        (true, Some(bytes)) => Err(invalid(format!(
            "[audit] result_bytes {bytes} is not between 1 and 1048576"
        ))),
    }
}

fn check_instance(instance: &str) -> Result<String, Error> {
    if instance.is_empty() || instance.len() > 128 {
        return Err(invalid("[audit] instance must be 1 to 128 characters"));
    }
    Ok(instance.to_owned())
}

impl TelemetryConfig {
    fn resolve(&self, base_dir: &Path) -> Result<crate::telemetry::TelemetrySettings, Error> {
        let endpoint = url::Url::parse(&self.otlp_endpoint).map_err(|error| {
            invalid(format!(
                "[telemetry] otlp_endpoint {:?} is not a URL: {error}",
                self.otlp_endpoint
            ))
        })?;
        // Checked first: the errors below repeat the URL.
        if !endpoint.username().is_empty() || endpoint.password().is_some() {
            return Err(invalid(
                "[telemetry] otlp_endpoint must not hold credentials (use OTEL_EXPORTER_OTLP_HEADERS)",
            ));
        }
        let tls_ca_file = self.tls_ca_file.as_ref().map(|path| base_dir.join(path));
        match (endpoint.scheme(), &tls_ca_file) {
            ("http", None) | ("https", Some(_)) => {}
            ("http", Some(_)) => {
                return Err(invalid(
                    "[telemetry] tls_ca_file is for an https:// otlp_endpoint",
                ));
            }
            ("https", None) => {
                return Err(invalid(
                    "[telemetry] an https:// otlp_endpoint needs tls_ca_file (the CA that signed the collector's certificate)",
                ));
            }
            _ => {
                return Err(invalid(format!(
                    "[telemetry] otlp_endpoint {:?}: only http:// and https:// are supported",
                    self.otlp_endpoint
                )));
            }
        }
        let traces_endpoint = if endpoint.path().ends_with("/v1/traces") {
            endpoint.to_string()
        } else {
            format!("{}/v1/traces", endpoint.as_str().trim_end_matches('/'))
        };
        let sample_ratio = match self.sample_ratio {
            None => 1.0,
            Some(ratio) if (0.0..=1.0).contains(&ratio) => ratio,
            Some(ratio) => {
                return Err(invalid(format!(
                    "[telemetry] sample_ratio {ratio} is not between 0 and 1"
                )));
            }
        };
        let export_timeout = match self.export_timeout_ms {
            None => Duration::from_secs(10),
            Some(ms @ 1..=600_000) => Duration::from_millis(ms),
            Some(ms) => {
                return Err(invalid(format!(
                    "[telemetry] export_timeout_ms {ms} is not between 1 and 600000"
                )));
            }
        };
        let service_name = match &self.service_name {
            None => "sluice".to_owned(),
            Some(name) if !name.is_empty() && name.len() <= 255 => name.clone(),
            Some(_) => {
                return Err(invalid(
                    "[telemetry] service_name must be 1 to 255 characters",
                ));
            }
        };
        Ok(crate::telemetry::TelemetrySettings {
            traces_endpoint,
            service_name,
            sample_ratio,
            export_timeout,
            tls_ca_file,
        })
    }
}

/// `path` with `suffix` appended to its file name (`a/audit.jsonl` →
/// `a/audit.jsonl.head`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The host name, as the kernel has it; `sluice` if it cannot be read.
fn default_instance() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "sluice".to_owned())
}

/// Certificate and key files for client-facing TLS.
#[derive(Debug, Clone)]
pub struct ListenTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where and how to reach PostgreSQL.
#[derive(Clone)]
pub struct UpstreamSettings {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// The database asked for when a client names none of its own.
    pub database: String,
    pub databases: BTreeSet<String>,
    pub password: Option<Secret>,
    pub tls: UpstreamTlsMode,
    pub tls_ca_file: Option<PathBuf>,
    pub channel_binding: ChannelBindingMode,
    pub connect_timeout: Duration,
    pub auth_methods: AuthMethods,
    /// The audit database's schema for sluice's tables (`[audit.postgres]`
    /// only; `public` for the upstream, where it is not used).
    pub schema: String,
}

/// The audit tables' schema when `[audit.postgres]` names none.
pub const DEFAULT_AUDIT_SCHEMA: &str = "public";

/// The ways sluice lets the server ask for its service password. Whoever
/// answers at the server's address chooses the method, so a method left
/// out is one a server in the middle cannot make sluice use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthMethods {
    pub scram_sha_256: bool,
    pub md5: bool,
    /// The password itself, in cleartext: off unless asked for, since a
    /// server in the middle (without `tls = "verify-full"`) reads it.
    pub password: bool,
    /// No password at all.
    pub trust: bool,
}

impl AuthMethods {
    const NONE: AuthMethods = AuthMethods {
        scram_sha_256: false,
        md5: false,
        password: false,
        trust: false,
    };

    /// With a password: SCRAM-SHA-256 alone, where the server proves it
    /// knows the password before sluice sends it anything (an impostor
    /// answering `trust`, or `md5` with a salt of its choosing, is taken
    /// at its word otherwise). Without one: `trust`, the only way in.
    pub fn default_for(has_password: bool) -> AuthMethods {
        AuthMethods {
            scram_sha_256: has_password,
            md5: false,
            password: false,
            trust: !has_password,
        }
    }

    /// The methods named in `[table] auth_methods`.
    fn from_names(table: &str, names: &[String]) -> Result<AuthMethods, Error> {
        let mut methods = AuthMethods::NONE;
        for name in names {
            match name.as_str() {
                "scram-sha-256" => methods.scram_sha_256 = true,
                "md5" => methods.md5 = true,
                "password" => methods.password = true,
                "trust" => methods.trust = true,
                other => {
                    return Err(invalid(format!(
                        "[{table}] auth_methods: unknown method {other:?} (scram-sha-256, md5, password, trust)"
                    )));
                }
            }
        }
        if methods == AuthMethods::NONE {
            return Err(invalid(format!(
                "[{table}] auth_methods must name at least one method"
            )));
        }
        Ok(methods)
    }
}

impl std::fmt::Debug for UpstreamSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("databases", &self.databases)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("channel_binding", &self.channel_binding)
            .field("schema", &self.schema)
            .finish()
    }
}

/// A secret value that never prints itself.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Bounds applied to every session.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_message_bytes: usize,
    pub max_held_server_message_bytes: usize,
    pub login_timeout: Duration,
    /// `None`: a quarter of `max_connections` (see `session::logins`).
    pub max_logins_per_address: Option<usize>,
    pub message_stall_timeout: Duration,
    pub shutdown_grace: Duration,
    /// `None`: sessions are never ended for being idle.
    pub idle_session_timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 16 << 20,
            max_held_server_message_bytes: 16 << 20,
            login_timeout: Duration::from_secs(15),
            max_logins_per_address: None,
            message_stall_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            // PCI DSS 8.2.8's fifteen minutes.
            idle_session_timeout: Some(Duration::from_secs(15 * 60)),
        }
    }
}

/// A client identity sluice authenticates itself.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    pub groups: Vec<String>,
    pub verifier: Verifier,
}

/// Smallest limit on held messages: PostgreSQL's own messages that sluice
/// must see whole (RowDescription of 1,664 columns, an 8,000-byte NOTIFY
/// payload) always fit in this.
const MIN_HELD_SERVER_MESSAGE_BYTES: usize = 256 << 10;
/// Smallest client message limit: enough for any startup-sized message and
/// an ordinary query.
const MIN_MESSAGE_BYTES: usize = 64 << 10;
/// PostgreSQL refuses messages of 1 GiB and more itself.
const MAX_MESSAGE_BYTES: usize = (1 << 30) - 1;

/// The largest config file read.
pub const MAX_CONFIG_FILE_BYTES: u64 = 4 << 20;

/// Reads a file the operator named — the config, a plugin's component or
/// data files — refusing anything but a regular file of at most `limit`
/// bytes. A FIFO or a device in its place would block the reading thread
/// (the one that also accepts connections and reloads) or never end, and
/// the file may change between reads, so its type is checked on the file
/// opened (without blocking) and the read stops past the limit.
pub fn read_regular_file(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = open_regular_file(path)?;
    let metadata = file.metadata()?;
    let mut bytes = Vec::with_capacity(metadata.len().min(limit) as usize);
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes"),
        ));
    }
    Ok(bytes)
}

/// Opens `path` to read, without blocking, refusing anything but a regular
/// file (a symlink to one is followed): see [`read_regular_file`].
pub fn open_regular_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(file)
}

/// A plugin's config table as the JSON it is handed: TOML's dates and
/// times become their RFC 3339 text (serde would give them as an object of
/// its own making), floats that JSON cannot hold (`nan`, `inf`) become
/// `null`.
fn toml_as_json(value: &toml::Value) -> serde_json::Value {
    use serde_json::Value as Json;
    match value {
        toml::Value::String(text) => Json::String(text.clone()),
        toml::Value::Integer(number) => Json::from(*number),
        toml::Value::Float(number) => {
            serde_json::Number::from_f64(*number).map_or(Json::Null, Json::Number)
        }
        toml::Value::Boolean(flag) => Json::Bool(*flag),
        toml::Value::Datetime(datetime) => Json::String(datetime.to_string()),
        toml::Value::Array(items) => Json::Array(items.iter().map(toml_as_json).collect()),
        toml::Value::Table(table) => Json::Object(
            table
                .iter()
                .map(|(key, value)| (key.clone(), toml_as_json(value)))
                .collect(),
        ),
    }
}

/// The directory a config file's relative paths start from: the file's
/// own (`.` for a bare file name). Loading and every reload must agree:
/// the plugins' directories are part of what a reload compares.
pub fn base_dir(config_path: &Path) -> PathBuf {
    match config_path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}

impl Config {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let read = |source| Error::Read {
            path: path.to_owned(),
            source,
        };
        let bytes = read_regular_file(path, MAX_CONFIG_FILE_BYTES).map_err(read)?;
        let text = String::from_utf8(bytes).map_err(|_| {
            read(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not UTF-8",
            ))
        })?;
        Config::from_toml(&text, path)
    }

    /// Parses config text; `path` is only used in error messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, Error> {
        toml::from_str(text).map_err(|error: toml::de::Error| {
            let offset = error.span().map(|span| span.start).unwrap_or(0);
            let (line, column) = line_and_column(text, offset);
            Error::Parse {
                path: path.to_owned(),
                line,
                column,
                message: error.message().to_owned(),
            }
        })
    }

    /// Checks the config and resolves it into [`Settings`]. `base_dir` is the
    /// directory of the config file: relative paths in it are relative to it.
    pub fn resolve(
        &self,
        base_dir: &Path,
        overrides: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, Error> {
        let listen_text = overrides
            .listen
            .clone()
            .or_else(|| self.listen.address.clone())
            .unwrap_or_else(|| format!("127.0.0.1:{DEFAULT_PORT}"));
        let listen: SocketAddr = listen_text
            .parse()
            .map_err(|_| invalid(format!("listen address {listen_text:?} is not HOST:PORT")))?;

        let tls = match (&self.listen.tls_cert, &self.listen.tls_key) {
            (Some(cert), Some(key)) => Some(ListenTls {
                cert: base_dir.join(cert),
                key: base_dir.join(key),
            }),
            (None, None) => None,
            _ => return Err(invalid("[listen] tls_cert and tls_key go together")),
        };
        if self.listen.require_tls && tls.is_none() {
            return Err(invalid("[listen] require_tls needs tls_cert and tls_key"));
        }

        let upstream = self.resolve_upstream(base_dir, overrides, env)?;
        let limits = self.limits.resolve()?;

        let mut allowed_startup_parameters: BTreeSet<String> = DEFAULT_STARTUP_PARAMETERS
            .iter()
            .map(|name| name.to_ascii_lowercase())
            .collect();
        for name in &self.startup.extra_allowed_parameters {
            let lower = name.to_ascii_lowercase();
            // An allowed parameter reaches the server unjudged, after the
            // settings sluice adds: none may be one sluice sets itself
            // (`sluice.principal`, which the database may trust), nor change
            // who the session runs as.
            if matches!(
                lower.as_str(),
                "options" | "replication" | "user" | "database" | "role" | "session_authorization"
            ) || lower.starts_with("_pq_.")
                || lower.starts_with("sluice.")
            {
                return Err(invalid(format!(
                    "[startup] extra_allowed_parameters: {name:?} cannot be allowed"
                )));
            }
            allowed_startup_parameters.insert(lower);
        }

        let mut principals = Vec::with_capacity(self.principals.len());
        let mut names = BTreeSet::new();
        for principal in &self.principals {
            if principal.name.is_empty() {
                return Err(invalid("[[principals]] name must not be empty"));
            }
            if principal.name.len() > MAX_NAME_BYTES {
                return Err(invalid(format!(
                    "[[principals]] {:?}: a principal's name is at most {MAX_NAME_BYTES} bytes (it is the user name clients log in as)",
                    principal.name
                )));
            }
            if !names.insert(principal.name.clone()) {
                return Err(invalid(format!(
                    "[[principals]] {:?} is defined twice",
                    principal.name
                )));
            }
            let verifier = principal.token_verifier.parse::<Verifier>().map_err(|e| {
                invalid(format!(
                    "[[principals]] {:?}: token_verifier: {e}",
                    principal.name
                ))
            })?;
            principals.push(Principal {
                name: principal.name.clone(),
                groups: principal.groups.clone(),
                verifier,
            });
        }

        let plugins = self.resolve_plugins(base_dir, env)?;
        let audit = self.resolve_audit(base_dir, overrides, env)?;
        let admin = match overrides
            .admin_listen
            .as_ref()
            .or(self.admin.as_ref().map(|admin| &admin.listen))
        {
            Some(text) => Some(text.parse::<SocketAddr>().map_err(|_| {
                invalid(format!("[admin] listen address {text:?} is not HOST:PORT"))
            })?),
            None => None,
        };
        let telemetry = self
            .telemetry
            .as_ref()
            .map(|telemetry| telemetry.resolve(base_dir))
            .transpose()?;

        Ok(Settings {
            listen,
            tls,
            require_tls: self.listen.require_tls,
            max_connections: self.listen.max_connections.unwrap_or(10_000),
            worker_threads: match self.listen.worker_threads {
                Some(0) => return Err(invalid("[listen] worker_threads must be above 0")),
                Some(n) => n,
                None => std::thread::available_parallelism().map_or(1, |n| n.get()),
            },
            proxy_protocol_from: self
                .listen
                .proxy_protocol_from
                .iter()
                .map(|text| {
                    text.parse().map_err(|why| {
                        invalid(format!("[listen] proxy_protocol_from {text:?}: {why}"))
                    })
                })
                .collect::<Result<_, _>>()?,
            upstream,
            limits,
            allowed_startup_parameters,
            principals,
            plugins,
            approval_timeout: match self.approvals.timeout_ms {
                None => Duration::from_secs(300),
                Some(ms @ 1..=86_400_000) => Duration::from_millis(ms),
                Some(ms) => {
                    return Err(invalid(format!(
                        "[approvals] timeout_ms {ms} is not between 1 and 86400000 (a day)"
                    )));
                }
            },
            approvers: self.resolve_approvers()?,
            audit,
            admin,
            telemetry,
            row_values_for: self.resolve_row_values_for()?,
        })
    }

    /// Checks `[audit]`, with `--audit-file` in place of its `file`.
    pub fn resolve_audit(
        &self,
        base_dir: &Path,
        overrides: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<AuditSettings>, Error> {
        let configured = self.audit.as_ref();
        if overrides.audit_file.is_none()
            && let Some(audit) = configured
            && let Some(postgres) = &audit.postgres
        {
            return self
                .resolve_audit_postgres(audit, postgres, base_dir, env)
                .map(Some);
        }
        let file = match (
            &overrides.audit_file,
            configured.and_then(|a| a.file.as_ref()),
        ) {
            (Some(file), _) => file.clone(),
            (None, Some(file)) => base_dir.join(file),
            (None, None) if configured.is_some() => {
                return Err(invalid("[audit] needs file (or --audit-file)"));
            }
            (None, None) => return Ok(None),
        };
        let mut settings = AuditSettings::for_file(file, env);
        let Some(audit) = configured else {
            return Ok(Some(settings));
        };
        if let Some(key_file) = &audit.key_file {
            settings.key = AuditKey::File(base_dir.join(key_file));
        }
        // The configured head is the configured trail's: another file's
        // head beside it (PATH.head) keeps the two from sharing one, which
        // would read as a trail cut short. The key is the deployment's.
        let configured_file = audit.file.as_ref().map(|file| base_dir.join(file));
        if let Some(head_file) = &audit.head_file
            && (overrides.audit_file.is_none() || overrides.audit_file == configured_file)
        {
            settings.head_file = base_dir.join(head_file);
        }
        settings.fsync = audit.fsync.unwrap_or_default();
        settings.rotate_bytes = match audit.rotate_bytes {
            Some(bytes) if bytes < 4096 => {
                return Err(invalid(format!(
                    "[audit] rotate_bytes {bytes} is below 4096"
                )));
            }
            bytes => bytes.or(settings.rotate_bytes),
        };
        settings.rotate_after = match audit.rotate_seconds {
            Some(0) => return Err(invalid("[audit] rotate_seconds must be above 0")),
            seconds => seconds.map(Duration::from_secs),
        };
        settings.result_bytes = resolve_result_bytes(audit)?;
        if let Some(instance) = &audit.instance {
            settings.instance = check_instance(instance)?;
            settings.instance_named = true;
        }
        Ok(Some(settings))
    }

    /// `[audit]` with `[audit.postgres]`: the trail in a database.
    fn resolve_audit_postgres(
        &self,
        audit: &AuditConfig,
        postgres: &UpstreamConfig,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<AuditSettings, Error> {
        let file_only = [
            ("file", audit.file.is_some()),
            ("head_file", audit.head_file.is_some()),
            ("fsync", audit.fsync.is_some()),
            ("rotate_bytes", audit.rotate_bytes.is_some()),
            ("rotate_seconds", audit.rotate_seconds.is_some()),
        ];
        if let Some((name, _)) = file_only.iter().find(|(_, set)| *set) {
            return Err(invalid(format!(
                "[audit] {name} is for the file sink; with [audit.postgres] the database keeps the records and the head"
            )));
        }
        if postgres.databases.is_some() {
            return Err(invalid(
                "[audit.postgres] databases does not apply: the url names the audit database",
            ));
        }
        let key = match (&audit.key_file, env("SLUICE_AUDIT_KEY_FILE")) {
            (Some(key_file), _) => AuditKey::File(base_dir.join(key_file)),
            (None, Some(path)) => AuditKey::File(PathBuf::from(path)),
            (None, None) => {
                return Err(invalid(
                    "[audit.postgres] needs key_file (or SLUICE_AUDIT_KEY_FILE): the chain's key stays with the gateway, not in the database",
                ));
            }
        };
        let url = UpstreamUrl::parse(&postgres.url)?;
        let password = match read_password(postgres, base_dir, env)? {
            Some(password) => Some(password),
            None if url.password.is_some() => {
                return Err(invalid(
                    "[audit.postgres] url must not carry a password: use password_env or password_file",
                ));
            }
            None => None,
        };
        let security = connection_security(
            "audit.postgres",
            Some(postgres),
            base_dir,
            password.is_some(),
        )?;
        // The other fields of the file sink's settings do not apply.
        let mut settings = AuditSettings::for_file(PathBuf::new(), env);
        settings.key = key;
        settings.result_bytes = resolve_result_bytes(audit)?;
        if let Some(instance) = &audit.instance {
            settings.instance = check_instance(instance)?;
            settings.instance_named = true;
        }
        settings.postgres = Some(UpstreamSettings {
            host: url.host,
            port: url.port,
            user: url.user,
            databases: BTreeSet::from([url.database.clone()]),
            database: url.database,
            password,
            tls: security.tls,
            tls_ca_file: security.tls_ca_file,
            channel_binding: security.channel_binding,
            connect_timeout: security.connect_timeout,
            auth_methods: security.auth_methods,
            schema: check_schema(postgres.schema.as_deref())?,
        });
        Ok(settings)
    }

    /// Checks the `[[plugins]]` entries. Whether the component exists and
    /// is of the right kind is checked when it is loaded.
    pub fn resolve_plugins(
        &self,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<PluginSettings>, Error> {
        let mut names = BTreeSet::new();
        let mut plugins = Vec::with_capacity(self.plugins.len());
        for plugin in &self.plugins {
            let name = &plugin.name;
            let valid_name = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid_name {
                return Err(invalid(format!(
                    "[[plugins]] name {name:?}: use 1 to 64 letters, digits, '-' or '_'"
                )));
            }
            if !names.insert(name.clone()) {
                return Err(invalid(format!("[[plugins]] {name:?} is defined twice")));
            }
            let source = match plugin.path.strip_prefix("builtin:") {
                Some(builtin) => PluginSource::Builtin(builtin.to_owned()),
                None if plugin.path.is_empty() => {
                    return Err(invalid(format!("[[plugins]] {name:?}: path is empty")));
                }
                None => PluginSource::File(base_dir.join(&plugin.path)),
            };
            let deadline = match plugin.deadline_ms {
                None => DEFAULT_PLUGIN_DEADLINE,
                Some(ms @ 1..=60_000) => Duration::from_millis(ms),
                Some(ms) => {
                    return Err(invalid(format!(
                        "[[plugins]] {name:?}: deadline_ms {ms} is not between 1 and 60000"
                    )));
                }
            };
            let memory_mb = plugin.memory_mb.unwrap_or(DEFAULT_PLUGIN_MEMORY_MB);
            if !(1..=4096).contains(&memory_mb) {
                return Err(invalid(format!(
                    "[[plugins]] {name:?}: memory_mb {memory_mb} is not between 1 and 4096"
                )));
            }
            let max_instances = match plugin.max_instances {
                None => DEFAULT_PLUGIN_MAX_INSTANCES,
                Some(n @ 1..=1024) => n as usize,
                Some(n) => {
                    return Err(invalid(format!(
                        "[[plugins]] {name:?}: max_instances {n} is not between 1 and 1024"
                    )));
                }
            };
            let config_json = toml_as_json(&toml::Value::Table(plugin.config.clone())).to_string();
            let mut granted_env = Vec::with_capacity(plugin.grants.env.len());
            for variable in &plugin.grants.env {
                match env(variable) {
                    Some(value) => granted_env.push((variable.clone(), value)),
                    None => {
                        return Err(invalid(format!(
                            "[[plugins]] {name:?}: granted environment variable {variable} is not set"
                        )));
                    }
                }
            }
            plugins.push(PluginSettings {
                name: name.clone(),
                hook: plugin.hook,
                source,
                deadline,
                memory_bytes: (memory_mb as usize) << 20,
                max_instances,
                config_json,
                files: plugin
                    .files
                    .iter()
                    .map(|(key, path)| (key.clone(), base_dir.join(path)))
                    .collect(),
                env: granted_env,
                read_dirs: plugin
                    .grants
                    .read_dirs
                    .iter()
                    .map(|dir| base_dir.join(dir))
                    .collect(),
            });
        }
        // An approver is shown the statement, its parameters and the
        // tables it reads as masking plugins mask them: with none, every
        // one is withheld (it may hold a card number), and an approval
        // would be given to a statement no one saw.
        let has = |hook| plugins.iter().any(|p| p.hook == hook);
        if has(Hook::Approval) && !has(Hook::Masking) {
            return Err(invalid(
                "an approval plugin needs a masking plugin: approvers are shown statements as masking plugins mask them, and with none every statement would be withheld from them",
            ));
        }
        Ok(plugins)
    }

    fn resolve_approvers(&self) -> Result<crate::approval::Approvers, Error> {
        let mut approvers = crate::approval::Approvers::default();
        for (name, entry) in &self.approvals.approvers {
            let at = |what: &str| invalid(format!("[approvals.approvers] {name:?}: {what}"));
            if name.trim().is_empty() {
                return Err(invalid(
                    "[approvals.approvers]: an approver's name must not be empty",
                ));
            }
            if entry.principal.trim().is_empty() {
                return Err(at("principal must not be empty"));
            }
            if entry.principal.len() > MAX_NAME_BYTES {
                return Err(at(&format!(
                    "principal is longer than {MAX_NAME_BYTES} bytes, which no principal's name is"
                )));
            }
            if entry.groups.is_empty() {
                return Err(at(
                    "groups is empty: name the approver groups it answers for",
                ));
            }
            if entry.groups.iter().any(|group| group.trim().is_empty()) {
                return Err(at("a group name must not be empty"));
            }
            if let Some(plugin) = &entry.plugin
                && !self
                    .plugins
                    .iter()
                    .any(|p| p.name == *plugin && p.hook == Hook::Approval)
            {
                return Err(at(&format!(
                    "plugin {plugin:?} is not an approval plugin of this config"
                )));
            }
            approvers.insert(
                name.clone(),
                entry.principal.clone(),
                entry.groups.clone(),
                entry.plugin.clone(),
            );
        }
        Ok(approvers)
    }

    fn resolve_row_values_for(&self) -> Result<BTreeSet<String>, Error> {
        let mut groups = BTreeSet::new();
        for group in &self.errors.row_values_for {
            if group.trim().is_empty() {
                return Err(invalid(
                    "[errors] row_values_for: a group name must not be empty",
                ));
            }
            groups.insert(group.clone());
        }
        Ok(groups)
    }

    fn resolve_upstream(
        &self,
        base_dir: &Path,
        overrides: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<UpstreamSettings, Error> {
        let section = self.upstream.as_ref();
        let url_text = overrides
            .upstream
            .clone()
            .or_else(|| section.map(|s| s.url.clone()))
            .ok_or_else(|| invalid("no upstream: set [upstream] url or pass --upstream"))?;
        let url = UpstreamUrl::parse(&url_text)?;

        let configured_password = match section {
            Some(s) => read_password(s, base_dir, env)?,
            None => None,
        };
        let password = match (configured_password, url.password) {
            (Some(configured), _) => Some(configured),
            (None, Some(inline)) => {
                tracing::warn!(
                    "the upstream URL carries a password: fine for local use, \
                     use [upstream] password_env or password_file in production"
                );
                Some(inline)
            }
            (None, None) => None,
        };

        let databases: BTreeSet<String> = match section.and_then(|s| s.databases.clone()) {
            // An --upstream override names the database to serve.
            Some(list) if overrides.upstream.is_none() => list.into_iter().collect(),
            _ => BTreeSet::from([url.database.clone()]),
        };
        if databases.is_empty() {
            return Err(invalid("[upstream] databases must name at least one"));
        }

        if section.is_some_and(|s| s.schema.is_some()) {
            return Err(invalid(
                "[upstream] schema does not apply: it names the schema of the audit tables, under [audit.postgres]",
            ));
        }
        let security = connection_security("upstream", section, base_dir, password.is_some())?;
        Ok(UpstreamSettings {
            host: url.host,
            port: url.port,
            user: url.user,
            database: url.database,
            databases,
            password,
            tls: security.tls,
            tls_ca_file: security.tls_ca_file,
            channel_binding: security.channel_binding,
            connect_timeout: security.connect_timeout,
            auth_methods: security.auth_methods,
            schema: DEFAULT_AUDIT_SCHEMA.to_owned(),
        })
    }
}

/// `[audit.postgres] schema`: a name PostgreSQL takes as one identifier
/// once quoted (not empty, no NUL, at most 63 bytes, which PostgreSQL would
/// cut silently).
fn check_schema(schema: Option<&str>) -> Result<String, Error> {
    let schema = schema.unwrap_or(DEFAULT_AUDIT_SCHEMA);
    if schema.is_empty() || schema.contains('\0') || schema.len() > MAX_NAME_BYTES {
        return Err(invalid(format!(
            "[audit.postgres] schema {schema:?}: a schema name is 1 to 63 bytes, without NUL"
        )));
    }
    // PostgreSQL's own: `pg_temp` would make the tables temporary, gone
    // with the connection (and it refuses to make any other `pg_` schema).
    if schema.starts_with("pg_") {
        return Err(invalid(format!(
            "[audit.postgres] schema {schema:?}: names starting with pg_ are PostgreSQL's \
             (pg_temp would make the audit tables temporary)"
        )));
    }
    Ok(schema.to_owned())
}

/// What `[upstream]` and `[audit.postgres]` say of how to connect.
struct ConnectionSecurity {
    tls: UpstreamTlsMode,
    tls_ca_file: Option<PathBuf>,
    channel_binding: ChannelBindingMode,
    connect_timeout: Duration,
    auth_methods: AuthMethods,
}

/// What `[upstream]` and `[audit.postgres]` say of how to connect: TLS
/// (`verify-full` needs the CA to verify against), the CA file relative to
/// the config file, channel binding (`require` needs TLS and a SCRAM login),
/// the connect timeout (5 s by default) and the ways the server may ask for
/// the password.
fn connection_security(
    table: &str,
    section: Option<&UpstreamConfig>,
    base_dir: &Path,
    has_password: bool,
) -> Result<ConnectionSecurity, Error> {
    let tls = section.map(|s| s.tls).unwrap_or_default();
    let tls_ca_file = section
        .and_then(|s| s.tls_ca_file.as_ref())
        .map(|p| base_dir.join(p));
    if tls == UpstreamTlsMode::VerifyFull && tls_ca_file.is_none() {
        return Err(invalid(format!(
            "[{table}] tls = \"verify-full\" needs tls_ca_file (the CA that signed the server's certificate)"
        )));
    }
    let connect_timeout =
        Duration::from_millis(section.and_then(|s| s.connect_timeout_ms).unwrap_or(5_000));
    let auth_methods = match section.and_then(|s| s.auth_methods.as_deref()) {
        Some(names) => AuthMethods::from_names(table, names)?,
        None => AuthMethods::default_for(has_password),
    };
    let channel_binding = section.map(|s| s.channel_binding).unwrap_or_default();
    if channel_binding == ChannelBindingMode::Require {
        if tls == UpstreamTlsMode::Disable {
            return Err(invalid(format!(
                "[{table}] channel_binding = \"require\" needs tls = \"require\" or \"verify-full\": channel binding binds to the server's TLS certificate"
            )));
        }
        if !auth_methods.scram_sha_256 {
            return Err(invalid(format!(
                "[{table}] channel_binding = \"require\" needs scram-sha-256 in auth_methods: only SCRAM-SHA-256-PLUS binds"
            )));
        }
    }
    if tls != UpstreamTlsMode::VerifyFull && has_password {
        if auth_methods.password {
            tracing::warn!(
                "[{table}] auth_methods allows \"password\" without tls = \"verify-full\": whoever answers at the server's address can ask for the service password in cleartext and read it"
            );
        }
        if auth_methods.md5 || auth_methods.trust {
            tracing::warn!(
                "[{table}] auth_methods allows md5 or trust without tls = \"verify-full\": a server that never proves it knows the password is taken at its word (scram-sha-256 alone makes it prove that)"
            );
        }
    }
    if !has_password && !auth_methods.trust {
        tracing::warn!(
            "[{table}] no password is configured and auth_methods leaves out trust: every login upstream will fail"
        );
    }
    Ok(ConnectionSecurity {
        tls,
        tls_ca_file,
        channel_binding,
        connect_timeout,
        auth_methods,
    })
}

fn read_password(
    section: &UpstreamConfig,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Secret>, Error> {
    match (&section.password_env, &section.password_file) {
        (Some(_), Some(_)) => Err(invalid(
            "[upstream] password_env and password_file: set one, not both",
        )),
        (Some(var), None) => match env(var) {
            Some(value) => Ok(Some(Secret(value))),
            None => Err(invalid(format!(
                "[upstream] password_env names {var}, which is not set"
            ))),
        },
        (None, Some(file)) => {
            let path = base_dir.join(file);
            let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
                path: path.clone(),
                source,
            })?;
            Ok(Some(Secret(text.trim_end_matches(['\r', '\n']).to_owned())))
        }
        (None, None) => Ok(None),
    }
}

impl LimitsConfig {
    fn resolve(&self) -> Result<Limits, Error> {
        let defaults = Limits::default();
        let max_message_bytes = self.max_message_bytes.unwrap_or(defaults.max_message_bytes);
        if !(MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES).contains(&max_message_bytes) {
            return Err(invalid(format!(
                "[limits] max_message_bytes must be between {MIN_MESSAGE_BYTES} and {MAX_MESSAGE_BYTES}"
            )));
        }
        let max_held = self
            .max_held_server_message_bytes
            .unwrap_or(defaults.max_held_server_message_bytes);
        if !(MIN_HELD_SERVER_MESSAGE_BYTES..=MAX_MESSAGE_BYTES).contains(&max_held) {
            return Err(invalid(format!(
                "[limits] max_held_server_message_bytes must be between {MIN_HELD_SERVER_MESSAGE_BYTES} and {MAX_MESSAGE_BYTES}"
            )));
        }
        let max_logins_per_address = match self.max_logins_per_address {
            Some(0) => {
                return Err(invalid(
                    "[limits] max_logins_per_address must be above 0".to_owned(),
                ));
            }
            other => other,
        };
        let millis = |value: Option<u64>, default: Duration, name: &str| match value {
            Some(0) => Err(invalid(format!("[limits] {name} must be above 0"))),
            Some(ms) => Ok(Duration::from_millis(ms)),
            None => Ok(default),
        };
        Ok(Limits {
            max_message_bytes,
            max_held_server_message_bytes: max_held,
            login_timeout: millis(
                self.login_timeout_ms,
                defaults.login_timeout,
                "login_timeout_ms",
            )?,
            max_logins_per_address,
            message_stall_timeout: millis(
                self.message_stall_timeout_ms,
                defaults.message_stall_timeout,
                "message_stall_timeout_ms",
            )?,
            shutdown_grace: millis(
                self.shutdown_grace_ms,
                defaults.shutdown_grace,
                "shutdown_grace_ms",
            )?,
            idle_session_timeout: match self.idle_session_timeout_ms {
                Some(0) => None,
                Some(ms) => Some(Duration::from_millis(ms)),
                None => defaults.idle_session_timeout,
            },
        })
    }
}

/// The parts of a `postgres://` URL sluice uses.
#[derive(Debug, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub database: String,
    pub password: Option<Secret>,
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for Secret {}

impl UpstreamUrl {
    /// Parses `postgres://[user[:password]@]host[:port][/database]`.
    /// Query parameters are refused rather than ignored: an operator who
    /// writes `?sslmode=verify-full` must not silently get a plain connection.
    pub fn parse(text: &str) -> Result<UpstreamUrl, Error> {
        // Never echo the URL itself: it may carry a password.
        let url = url::Url::parse(text)
            .map_err(|e| invalid(format!("upstream URL is not a valid URL: {e}")))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(invalid(
                "upstream URL must start with postgres:// or postgresql://",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid(
                "upstream URL takes no query parameters: use the [upstream] table for TLS and timeouts",
            ));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| invalid("upstream URL names no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let decode = |s: &str| {
            percent_decode(s).ok_or_else(|| invalid("upstream URL has bad percent-encoding"))
        };
        let user = match url.username() {
            "" => "postgres".to_owned(),
            name => decode(name)?,
        };
        let password = match url.password() {
            Some(p) => Some(Secret(decode(p)?)),
            None => None,
        };
        let database = match url.path().trim_start_matches('/') {
            "" => user.clone(),
            path => decode(path)?,
        };
        Ok(UpstreamUrl {
            host,
            port: url.port().unwrap_or(5432),
            user,
            database,
            password,
        })
    }
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// 1-based line and column of a byte offset.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn resolve(text: &str) -> Result<Settings, Error> {
        Config::from_toml(text, Path::new("sluice.toml"))?.resolve(
            Path::new("/etc/sluice"),
            &Overrides::default(),
            &no_env,
        )
    }

    /// By default only what makes the server prove itself; names are
    /// checked.
    #[test]
    fn auth_methods_default_to_what_proves_the_server() {
        let base =
            "[listen]\naddress = \"127.0.0.1:6432\"\n\n[upstream]\nurl = \"postgres://a@b/c\"\n";
        let methods = |extra: &str| {
            resolve(&format!("{base}{extra}")).map(|settings| settings.upstream.auth_methods)
        };
        // No password configured: trust is the only way in.
        let default = methods("").unwrap();
        assert!(default.trust && !default.scram_sha_256 && !default.md5 && !default.password);
        // With one: SCRAM alone, where the server proves it knows it.
        let with_password = resolve(&base.replace("a@b", "a:secret@b"))
            .unwrap()
            .upstream
            .auth_methods;
        assert!(with_password.scram_sha_256);
        assert!(!with_password.md5 && !with_password.trust && !with_password.password);
        let chosen = methods("auth_methods = [\"scram-sha-256\", \"password\"]\n").unwrap();
        assert!(chosen.scram_sha_256 && chosen.password);
        assert!(!chosen.md5 && !chosen.trust);
        let unknown = methods("auth_methods = [\"scram-sha-1\"]\n").unwrap_err();
        assert!(
            unknown
                .to_string()
                .contains("unknown method \"scram-sha-1\""),
            "{unknown}"
        );
        let none = methods("auth_methods = []\n").unwrap_err();
        assert!(none.to_string().contains("at least one"), "{none}");
    }

    /// A plugin's config reaches it as plain JSON: dates and times as
    /// their text, tables nested, floats that JSON cannot hold as null.
    #[test]
    fn a_plugins_config_is_handed_over_as_plain_json() {
        let settings = resolve(
            "[upstream]\nurl = \"postgres://a@b/c\"\n\n[[plugins]]\nname = \"p\"\nhook = \"policy\"\npath = \"builtin:read-only\"\n\
             [plugins.config]\nsince = 2026-12-01T05:00:00Z\nday = 2026-12-01\nratio = 0.5\nodd = nan\n\
             [plugins.config.nested]\nwords = [\"a\", 1, true]\n",
        )
        .unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&settings.plugins[0].config_json).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "since": "2026-12-01T05:00:00Z",
                "day": "2026-12-01",
                "ratio": 0.5,
                "odd": null,
                "nested": {"words": ["a", 1, true]},
            })
        );
    }

    #[test]
    fn proxy_protocol_sources_are_addresses_or_ranges() {
        let with = |list: &str| {
            resolve(&format!(
                "[listen]\naddress = \"127.0.0.1:6432\"\nproxy_protocol_from = [{list}]\n\n[upstream]\nurl = \"postgres://a@b/c\"\n"
            ))
        };
        let ranges =
            with(r#""10.0.0.0/8", "192.0.2.10", "2001:db8::/32", "::ffff:198.51.100.0/120""#)
                .unwrap()
                .proxy_protocol_from;
        let trusted = |address: &str| {
            let address = address.parse().unwrap();
            ranges.iter().any(|range| range.contains(address))
        };
        assert!(trusted("10.200.3.4") && trusted("192.0.2.10") && trusted("2001:db8::5"));
        // An IPv4 peer on an IPv6 socket is its IPv4 address.
        assert!(trusted("::ffff:10.1.1.1"));
        // A mapped range given in IPv6 form is an IPv4 range.
        assert!(trusted("198.51.100.77"));
        assert!(!trusted("11.0.0.1") && !trusted("192.0.2.11") && !trusted("2001:db9::5"));
        assert!(!trusted("127.0.0.1"));
        // /0 is everything of its family; an address alone is itself.
        let any = with(r#""0.0.0.0/0""#).unwrap().proxy_protocol_from;
        assert!(any[0].contains("203.0.113.1".parse().unwrap()));
        assert!(!any[0].contains("2001:db8::1".parse().unwrap()));
        assert!(with("").unwrap().proxy_protocol_from.is_empty());

        for (bad, says) in [
            (
                r#""10.0.0.1/8""#,
                "bits set past its prefix (the range it is in is 10.0.0.0/8)",
            ),
            (
                r#""::ffff:10.0.0.1/104""#,
                "the range it is in is 10.0.0.0/8",
            ),
            (r#""::ffff:10.0.0.0/95""#, "at least 96"),
            (r#""10.0.0.0/33""#, "the prefix length must be 0 to 32"),
            (r#""2001:db8::/129""#, "the prefix length must be 0 to 128"),
            (r#""10.0.0.0/+8""#, "the prefix length must be 0 to 32"),
            (r#""10.0.0.0/""#, "the prefix length must be 0 to 32"),
            (r#""lb.internal""#, "not an IP address or CIDR range"),
        ] {
            let error = with(bad).unwrap_err().to_string();
            assert!(
                error.contains("proxy_protocol_from") && error.contains(says),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn upstream_channel_binding_is_prefer_unless_configured() {
        let base = "[upstream]\nurl = \"postgres://a@b/c\"\npassword_env = \"P\"\n";
        let with = |extra: &str| {
            Config::from_toml(&format!("{base}{extra}"), Path::new("sluice.toml"))?.resolve(
                Path::new("."),
                &Overrides::default(),
                &|name| (name == "P").then(|| "pw".to_owned()),
            )
        };
        let mode = |extra: &str| with(extra).map(|s| s.upstream.channel_binding);
        assert_eq!(mode("").unwrap(), ChannelBindingMode::Prefer);
        assert_eq!(
            mode("channel_binding = \"disable\"\n").unwrap(),
            ChannelBindingMode::Disable
        );
        assert_eq!(
            mode("channel_binding = \"prefer\"\n").unwrap(),
            ChannelBindingMode::Prefer
        );
        assert_eq!(
            mode("tls = \"require\"\nchannel_binding = \"require\"\n").unwrap(),
            ChannelBindingMode::Require
        );
        assert!(mode("channel_binding = \"maybe\"\n").is_err());

        // `require` without TLS, or without SCRAM, could never log in.
        let error = mode("channel_binding = \"require\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("[upstream] channel_binding = \"require\" needs tls"),
            "{error}"
        );
        let error =
            mode("tls = \"require\"\nchannel_binding = \"require\"\nauth_methods = [\"md5\"]\n")
                .unwrap_err()
                .to_string();
        assert!(error.contains("needs scram-sha-256"), "{error}");
    }

    #[test]
    fn unknown_key_names_line_and_column() {
        let text = "[listen]\naddress = \"127.0.0.1:6432\"\n\n[upstream]\nurl = \"postgres://a@b/c\"\nsslmode = \"x\"\n";
        let error = Config::from_toml(text, Path::new("sluice.toml")).unwrap_err();
        match &error {
            Error::Parse {
                line,
                column,
                message,
                ..
            } => {
                assert_eq!((*line, *column), (6, 1), "{error}");
                assert!(message.contains("sslmode"), "{message}");
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn telemetry_and_admin_are_off_unless_configured() {
        let settings = resolve("[upstream]\nurl = \"postgres://a@b/c\"\n").unwrap();
        assert!(settings.admin.is_none());
        assert!(settings.telemetry.is_none());

        let settings = resolve(
            "[upstream]\nurl = \"postgres://a@b/c\"\n[admin]\nlisten = \"127.0.0.1:9187\"\n\
             [telemetry]\notlp_endpoint = \"http://collector:4318/\"\nsample_ratio = 0.25\n",
        )
        .unwrap();
        assert_eq!(settings.admin, Some("127.0.0.1:9187".parse().unwrap()));
        let telemetry = settings.telemetry.unwrap();
        assert_eq!(telemetry.traces_endpoint, "http://collector:4318/v1/traces");
        assert_eq!(telemetry.service_name, "sluice");
        assert_eq!(telemetry.sample_ratio, 0.25);
        assert_eq!(telemetry.export_timeout, Duration::from_secs(10));

        assert_eq!(telemetry.tls_ca_file, None);

        // https to a collector elsewhere, its CA relative to the config.
        let settings = resolve(
            "[upstream]\nurl = \"postgres://a@b/c\"\n\
             [telemetry]\notlp_endpoint = \"https://collector.example:4318\"\ntls_ca_file = \"otel-ca.pem\"\n",
        )
        .unwrap();
        let telemetry = settings.telemetry.unwrap();
        assert_eq!(
            telemetry.traces_endpoint,
            "https://collector.example:4318/v1/traces"
        );
        assert!(
            telemetry
                .tls_ca_file
                .is_some_and(|ca| ca.is_absolute() && ca.ends_with("otel-ca.pem"))
        );

        // A full traces URL is kept as it is.
        let settings = resolve(
            "[upstream]\nurl = \"postgres://a@b/c\"\n\
             [telemetry]\notlp_endpoint = \"http://127.0.0.1:4318/v1/traces\"\n",
        )
        .unwrap();
        assert_eq!(
            settings.telemetry.unwrap().traces_endpoint,
            "http://127.0.0.1:4318/v1/traces"
        );
    }

    #[test]
    fn bad_telemetry_and_admin_settings_are_refused() {
        for (table, expected) in [
            ("[admin]\nlisten = \"localhost\"\n", "is not HOST:PORT"),
            (
                "[telemetry]\notlp_endpoint = \"collector\"\n",
                "is not a URL",
            ),
            (
                "[telemetry]\notlp_endpoint = \"grpc://collector:4317\"\n",
                "only http:// and https://",
            ),
            (
                "[telemetry]\notlp_endpoint = \"https://collector:4318\"\n",
                "needs tls_ca_file",
            ),
            (
                "[telemetry]\notlp_endpoint = \"http://collector:4318\"\ntls_ca_file = \"ca.pem\"\n",
                "is for an https://",
            ),
            (
                "[telemetry]\notlp_endpoint = \"http://user:secret@collector:4318\"\n",
                "must not hold credentials",
            ),
            (
                "[telemetry]\notlp_endpoint = \"http://c:4318\"\nsample_ratio = 1.5\n",
                "sample_ratio 1.5",
            ),
            (
                "[telemetry]\notlp_endpoint = \"http://c:4318\"\nexport_timeout_ms = 0\n",
                "export_timeout_ms 0",
            ),
            (
                "[telemetry]\notlp_endpoint = \"http://c:4318\"\nservice_name = \"\"\n",
                "service_name",
            ),
        ] {
            let text = format!("[upstream]\nurl = \"postgres://a@b/c\"\n{table}");
            let error = resolve(&text).unwrap_err().to_string();
            assert!(error.contains(expected), "{table}: {error}");
            // A password in a refused URL is not repeated back.
            assert!(!error.contains("secret"), "{error}");
        }
    }

    /// The active trail file rotates at 1 GiB unless told otherwise, with
    /// a config or with `--audit-file` alone.
    #[test]
    fn the_trail_rotates_at_a_gigabyte_by_default() {
        let base = "[upstream]\nurl = \"postgres://a@b/c\"\n";
        let rotate = |audit: &str| {
            resolve(&format!(
                "{base}[audit]\nfile = \"a.jsonl\"\nkey_file = \"k\"\n{audit}"
            ))
            .unwrap()
            .audit
            .unwrap()
            .rotate_bytes
        };
        assert_eq!(rotate(""), Some(DEFAULT_ROTATE_BYTES));
        assert_eq!(DEFAULT_ROTATE_BYTES, 1 << 30);
        assert_eq!(rotate("rotate_bytes = 5000\n"), Some(5000));
        let overrides = Overrides {
            audit_file: Some("b.jsonl".into()),
            ..Overrides::default()
        };
        let settings = Config::from_toml(base, Path::new("sluice.toml"))
            .unwrap()
            .resolve(Path::new("/etc/sluice"), &overrides, &no_env)
            .unwrap();
        assert_eq!(
            settings.audit.unwrap().rotate_bytes,
            Some(DEFAULT_ROTATE_BYTES)
        );
    }

    #[test]
    fn the_postgres_audit_sink_is_checked() {
        let base = "[upstream]\nurl = \"postgres://a@b/c\"\n";
        let sink = "[audit.postgres]\nurl = \"postgres://auditor@audit-db:5433/audit\"\npassword_env = \"AUDIT_PW\"\n";
        let env = |name: &str| (name == "AUDIT_PW").then(|| "pw".to_owned());
        let resolve_with = |text: &str| {
            Config::from_toml(text, Path::new("sluice.toml"))?.resolve(
                Path::new("/etc/sluice"),
                &Overrides::default(),
                &env,
            )
        };
        let settings = resolve_with(&format!(
            "{base}[audit]\nkey_file = \"audit.key\"\ninstance = \"gw-1\"\n{sink}"
        ))
        .unwrap();
        let audit = settings.audit.unwrap();
        assert_eq!(audit.key, AuditKey::File("/etc/sluice/audit.key".into()));
        assert_eq!(audit.instance, "gw-1");
        assert!(audit.instance_named, "verify expects its chain");
        let database = audit.postgres.unwrap();
        assert_eq!(
            (
                database.host.as_str(),
                database.port,
                database.user.as_str()
            ),
            ("audit-db", 5433, "auditor")
        );
        assert_eq!(database.database, "audit");
        assert!(database.password.is_some());
        assert_eq!(database.schema, DEFAULT_AUDIT_SCHEMA);

        // The tables' schema: any one identifier, under [audit.postgres]
        // only.
        let audit = "[audit]\nkey_file = \"k\"\n";
        let unnamed = resolve_with(&format!(
            "{base}{audit}{sink}schema = \"Audit \\\"trail\\\"\"\n"
        ))
        .unwrap()
        .audit
        .unwrap();
        assert!(!unnamed.instance_named, "the host name is not expected");
        let named = unnamed.postgres.unwrap();
        assert_eq!(named.schema, "Audit \"trail\"");
        for (schema, expected) in [
            ("\"\"".to_owned(), "a schema name is 1 to 63 bytes"),
            (
                format!("\"{}\"", "s".repeat(64)),
                "a schema name is 1 to 63 bytes",
            ),
            (
                "\"pg_temp\"".to_owned(),
                "names starting with pg_ are PostgreSQL's",
            ),
        ] {
            let error = resolve_with(&format!("{base}{audit}{sink}schema = {schema}\n"))
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{schema}: {error}");
        }
        let error = resolve_with(&format!("{base}schema = \"x\"\n{audit}{sink}"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("[upstream] schema does not apply"),
            "{error}"
        );

        for (audit, expected) in [
            ("", "needs key_file"),
            (
                "key_file = \"k\"\nfile = \"a.jsonl\"\n",
                "file is for the file sink",
            ),
            (
                "key_file = \"k\"\nfsync = \"batch\"\n",
                "fsync is for the file sink",
            ),
            (
                "key_file = \"k\"\nrotate_bytes = 5000\n",
                "rotate_bytes is for the file sink",
            ),
        ] {
            let error = resolve_with(&format!("{base}[audit]\n{audit}{sink}"))
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{audit}: {error}");
        }
        let inline = "[audit.postgres]\nurl = \"postgres://auditor:secret@db/audit\"\n";
        let error = resolve_with(&format!("{base}[audit]\nkey_file = \"k\"\n{inline}"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("must not carry a password"), "{error}");
        assert!(!error.contains("secret"), "{error}");

        // TLS and the timeout as for [upstream]: verify-full needs its CA.
        let audit = "[audit]\nkey_file = \"k\"\n";
        let error = resolve_with(&format!("{base}{audit}{sink}tls = \"verify-full\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("[audit.postgres] tls = \"verify-full\" needs tls_ca_file"),
            "{error}"
        );
        let verified = resolve_with(&format!(
            "{base}{audit}{sink}tls = \"verify-full\"\ntls_ca_file = \"audit-ca.pem\"\nconnect_timeout_ms = 750\n"
        ))
        .unwrap()
        .audit
        .and_then(|audit| audit.postgres)
        .unwrap();
        assert_eq!(verified.tls, UpstreamTlsMode::VerifyFull);
        assert_eq!(
            verified.tls_ca_file.as_deref(),
            Some(Path::new("/etc/sluice/audit-ca.pem"))
        );
        assert_eq!(verified.connect_timeout, Duration::from_millis(750));

        // --audit-file points a ready config at a file instead.
        let overrides = Overrides {
            audit_file: Some("/tmp/elsewhere.jsonl".into()),
            ..Overrides::default()
        };
        let settings = Config::from_toml(
            &format!("{base}[audit]\nkey_file = \"k\"\n{sink}"),
            Path::new("sluice.toml"),
        )
        .unwrap()
        .resolve(Path::new("/etc/sluice"), &overrides, &env)
        .unwrap();
        let audit = settings.audit.unwrap();
        assert!(audit.postgres.is_none());
        assert_eq!(audit.file, PathBuf::from("/tmp/elsewhere.jsonl"));

        // A file trail's configured head stays with the configured file;
        // the configured key stays the key.
        let settings = Config::from_toml(
            &format!(
                "{base}[audit]\nfile = \"trail.jsonl\"\nkey_file = \"k\"\nhead_file = \"/var/lib/heads/trail.head\"\n"
            ),
            Path::new("sluice.toml"),
        )
        .unwrap()
        .resolve(Path::new("/etc/sluice"), &overrides, &env)
        .unwrap();
        let audit = settings.audit.unwrap();
        assert_eq!(audit.head_file, PathBuf::from("/tmp/elsewhere.jsonl.head"));
        assert!(matches!(&audit.key, AuditKey::File(key) if key == Path::new("/etc/sluice/k")));
        // Unless it names the configured file itself.
        let same = Overrides {
            audit_file: Some("/etc/sluice/trail.jsonl".into()),
            ..Overrides::default()
        };
        let settings = Config::from_toml(
            &format!(
                "{base}[audit]\nfile = \"trail.jsonl\"\nhead_file = \"/var/lib/heads/trail.head\"\n"
            ),
            Path::new("sluice.toml"),
        )
        .unwrap()
        .resolve(Path::new("/etc/sluice"), &same, &env)
        .unwrap();
        assert_eq!(
            settings.audit.unwrap().head_file,
            PathBuf::from("/var/lib/heads/trail.head")
        );
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let settings =
            resolve("[upstream]\nurl = \"postgres://svc@db.internal/payments\"\n").unwrap();
        assert_eq!(settings.listen.port(), DEFAULT_PORT);
        assert_eq!(settings.upstream.host, "db.internal");
        assert_eq!(settings.upstream.port, 5432);
        assert_eq!(settings.upstream.user, "svc");
        assert_eq!(
            settings.upstream.databases,
            BTreeSet::from(["payments".to_owned()])
        );
        assert!(settings.upstream.password.is_none());
        assert!(settings.allowed_startup_parameters.contains("datestyle"));
        assert!(
            settings.row_values_for.is_empty(),
            "no session sees a violation's row values unless configured"
        );
        assert!(
            settings.approvers.is_empty(),
            "nobody answers a ticket unless configured"
        );
    }

    #[test]
    fn overrides_replace_listen_and_upstream() {
        let config = Config::from_toml(
            "[listen]\naddress = \"0.0.0.0:1\"\n[upstream]\nurl = \"postgres://a@b/c\"\ndatabases = [\"c\", \"d\"]\n",
            Path::new("x"),
        )
        .unwrap();
        let overrides = Overrides {
            listen: Some("127.0.0.1:7000".into()),
            upstream: Some("postgres://other@10.0.0.1:5433/ledger".into()),
            audit_file: None,
            admin_listen: None,
        };
        let settings = config.resolve(Path::new("/"), &overrides, &no_env).unwrap();
        assert_eq!(settings.listen.to_string(), "127.0.0.1:7000");
        assert_eq!(settings.upstream.host, "10.0.0.1");
        assert_eq!(settings.upstream.port, 5433);
        assert_eq!(settings.upstream.user, "other");
        assert_eq!(
            settings.upstream.databases,
            BTreeSet::from(["ledger".to_owned()])
        );
    }

    #[test]
    fn password_comes_from_the_named_environment_variable() {
        let config = Config::from_toml(
            "[upstream]\nurl = \"postgres://a@b/c\"\npassword_env = \"PGPASS_TEST\"\n",
            Path::new("x"),
        )
        .unwrap();
        let env = |name: &str| (name == "PGPASS_TEST").then(|| "s3cret".to_owned());
        let settings = config
            .resolve(Path::new("/"), &Overrides::default(), &env)
            .unwrap();
        assert_eq!(settings.upstream.password.unwrap().expose(), "s3cret");
        let missing = config
            .resolve(Path::new("/"), &Overrides::default(), &no_env)
            .unwrap_err();
        assert!(missing.to_string().contains("PGPASS_TEST"), "{missing}");
    }

    #[test]
    fn password_comes_from_the_named_file_relative_to_the_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("upstream.pass"), "from-a-file\n").unwrap();
        let config = Config::from_toml(
            "[upstream]\nurl = \"postgres://a@b/c\"\npassword_file = \"upstream.pass\"\n",
            Path::new("x"),
        )
        .unwrap();
        let settings = config
            .resolve(dir.path(), &Overrides::default(), &no_env)
            .unwrap();
        assert_eq!(settings.upstream.password.unwrap().expose(), "from-a-file");
        let missing = config
            .resolve(Path::new("/nonexistent"), &Overrides::default(), &no_env)
            .unwrap_err();
        assert!(missing.to_string().contains("upstream.pass"), "{missing}");
        let both = Config::from_toml(
            "[upstream]\nurl = \"postgres://a@b/c\"\npassword_file = \"f\"\npassword_env = \"E\"\n",
            Path::new("x"),
        )
        .unwrap()
        .resolve(dir.path(), &Overrides::default(), &no_env)
        .unwrap_err();
        assert!(both.to_string().contains("not both"), "{both}");
    }

    #[test]
    fn idle_sessions_end_after_fifteen_minutes_unless_configured() {
        let idle = |limits: &str| {
            resolve(&format!(
                "[upstream]\nurl=\"postgres://a@b/c\"\n[limits]\n{limits}"
            ))
            .unwrap()
            .limits
            .idle_session_timeout
        };
        assert_eq!(idle(""), Some(Duration::from_secs(900)));
        assert_eq!(
            idle("idle_session_timeout_ms = 60000"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(idle("idle_session_timeout_ms = 0"), None, "0 turns it off");
    }

    /// A principal's name is the startup `user`, which startup refuses past
    /// 63 bytes: a longer one in the config could never log in, so it is
    /// refused there too, as an approver's principal is.
    #[test]
    fn principal_names_are_at_most_63_bytes() {
        let verifier = crate::auth::scram::make_verifier("t", 4096).to_string();
        let principal = |name: &str| {
            resolve(&format!(
                "[upstream]\nurl=\"postgres://a@b/c\"\n[[principals]]\nname=\"{name}\"\ntoken_verifier=\"{verifier}\""
            ))
        };
        assert!(principal(&"n".repeat(63)).is_ok());
        let error = principal(&"n".repeat(64)).unwrap_err().to_string();
        assert!(error.contains("at most 63 bytes"), "{error}");
        let approver = |name: &str| {
            resolve(&format!(
                "[upstream]\nurl=\"postgres://a@b/c\"\n[approvals.approvers]\nU1 = {{ principal = \"{name}\", groups = [\"dba\"] }}"
            ))
        };
        assert!(approver(&"n".repeat(63)).is_ok());
        let error = approver(&"n".repeat(64)).unwrap_err().to_string();
        assert!(error.contains("longer than 63 bytes"), "{error}");
    }

    #[test]
    fn secrets_never_print() {
        let settings = resolve("[upstream]\nurl = \"postgres://a:hunter2@b/c\"\n").unwrap();
        let printed = format!("{settings:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert_eq!(settings.upstream.password.unwrap().expose(), "hunter2");
        // The file as read, too.
        let config: Config =
            toml::from_str("[upstream]\nurl = \"postgres://a:hunter2@b/c\"\n").unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(
            printed.contains("postgres://a:<redacted>@b:5432/c"),
            "{printed}"
        );
        // A plugin's granted environment: names, not values.
        let plugin = PluginSettings {
            name: "slack".to_owned(),
            hook: Hook::Approval,
            source: PluginSource::Builtin("x".to_owned()),
            deadline: DEFAULT_PLUGIN_DEADLINE,
            memory_bytes: 1 << 20,
            max_instances: 1,
            config_json: "{}".to_owned(),
            files: Default::default(),
            env: vec![("SLACK_TOKEN".to_owned(), "xoxb-hunter2".to_owned())],
            read_dirs: Vec::new(),
        };
        let printed = format!("{plugin:?}");
        assert!(
            !printed.contains("hunter2") && printed.contains("SLACK_TOKEN"),
            "{printed}"
        );
    }

    /// A FIFO or a device where a file is expected is refused at once,
    /// not read forever; a file past the limit is refused whole.
    #[test]
    fn only_regular_files_within_the_limit_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("words.fifo");
        let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path in a directory of our own.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let error = read_regular_file(&fifo, 1024).unwrap_err();
        assert_eq!(error.to_string(), "not a regular file");
        assert!(read_regular_file(Path::new("/dev/zero"), 1024).is_err());

        let file = dir.path().join("words.txt");
        std::fs::write(&file, vec![b'x'; 2048]).unwrap();
        assert_eq!(read_regular_file(&file, 2048).unwrap().len(), 2048);
        let error = read_regular_file(&file, 2047).unwrap_err();
        assert!(
            error.to_string().contains("larger than 2047 bytes"),
            "{error}"
        );
    }

    #[test]
    fn url_errors_do_not_echo_the_url() {
        let error = UpstreamUrl::parse("mysql://u:hunter2@h/d").unwrap_err();
        assert!(!error.to_string().contains("hunter2"));
        assert!(UpstreamUrl::parse("postgres://u@h/d?sslmode=require").is_err());
        let url = UpstreamUrl::parse("postgresql://we%40ird:p%3Ass@[::1]:6000/my%20db").unwrap();
        assert_eq!(url.host, "::1");
        assert_eq!(url.user, "we@ird");
        assert_eq!(url.password.unwrap().expose(), "p:ss");
        assert_eq!(url.database, "my db");
    }

    #[test]
    fn bad_values_are_refused() {
        for (text, needle) in [
            (
                "[listen]\naddress = \"nope\"\n[upstream]\nurl=\"postgres://a@b/c\"",
                "listen address",
            ),
            (
                "[upstream]\nurl=\"postgres://a@b/c\"\ntls=\"verify-full\"",
                "tls_ca_file",
            ),
            (
                "[upstream]\nurl=\"postgres://a@b/c\"\n[limits]\nmax_message_bytes = 10",
                "max_message_bytes",
            ),
            (
                "[upstream]\nurl=\"postgres://a@b/c\"\n[limits]\nmax_logins_per_address = 0",
                "max_logins_per_address must be above 0",
            ),
            (
                "[upstream]\nurl=\"postgres://a@b/c\"\n[startup]\nextra_allowed_parameters=[\"options\"]",
                "options",
            ),
            (
                "[upstream]\nurl=\"postgres://a@b/c\"\n[startup]\nextra_allowed_parameters=[\"Sluice.Principal\"]",
                "Sluice.Principal",
            ),
            (
                "[upstream]\nurl=\"postgres://a@b/c\"\n[startup]\nextra_allowed_parameters=[\"role\"]",
                "role",
            ),
            (
                "[upstream]\nurl=\"postgres://a@b/c\"\n[[principals]]\nname=\"x\"\ntoken_verifier=\"plain\"",
                "token_verifier",
            ),
            (
                "[listen]\ntls_cert = \"a.pem\"\n[upstream]\nurl=\"postgres://a@b/c\"",
                "go together",
            ),
            (
                "[upstream]\nurl=\"postgres://a@b/c\"\n[errors]\nrow_values_for = \"admins\"",
                "line 4, column 18: invalid type: string \"admins\", expected a sequence",
            ),
            (
                "[upstream]\nurl=\"postgres://a@b/c\"\n[errors]\nrow_values_for = [\" \"]",
                "row_values_for: a group name must not be empty",
            ),
            (
                "[upstream]\nurl=\"postgres://a@b/c\"\n[errors]\nrow_values = [\"admins\"]",
                "row_values",
            ),
            (
                "[upstream]\nurl=\"postgres://a@b/c\"\n[approvals.approvers]\nU1 = { principal = \"\", groups = [\"dba\"] }",
                "[approvals.approvers] \"U1\": principal must not be empty",
            ),
            (
                "[upstream]\nurl=\"postgres://a@b/c\"\n[approvals.approvers]\nU1 = { principal = \"alice\", groups = [] }",
                "[approvals.approvers] \"U1\": groups is empty",
            ),
            (
                "[upstream]\nurl=\"postgres://a@b/c\"\n[approvals.approvers]\nU1 = { principal = \"alice\", groups = [\"\"] }",
                "[approvals.approvers] \"U1\": a group name must not be empty",
            ),
            (
                "[upstream]\nurl=\"postgres://a@b/c\"\n[approvals.approvers]\nU1 = { principal = \"alice\" }",
                "missing field `groups`",
            ),
            (
                "[upstream]\nurl=\"postgres://a@b/c\"\n[approvals.approvers]\nU1 = { principal = \"alice\", groups = [\"dba\"], group = \"x\" }",
                "unknown field `group`",
            ),
            (
                "[upstream]\nurl=\"postgres://a@b/c\"\n[approvals.approvers]\n\"\" = { principal = \"alice\", groups = [\"dba\"] }",
                "an approver's name must not be empty",
            ),
            (
                "[upstream]\nurl=\"postgres://a@b/c\"\n[approvals.approvers]\nU1 = { principal = \"alice\", groups = [\"dba\"], plugin = \"slack\" }\n[[plugins]]\nname = \"slack\"\nhook = \"policy\"\npath = \"builtin:read-only\"",
                "[approvals.approvers] \"U1\": plugin \"slack\" is not an approval plugin of this config",
            ),
            (
                "[upstream]\nurl=\"postgres://a@b/c\"\n[[plugins]]\nname = \"slack\"\nhook = \"approval\"\npath = \"slack.wasm\"",
                "an approval plugin needs a masking plugin",
            ),
        ] {
            let error = resolve(text).unwrap_err().to_string();
            assert!(error.contains(needle), "{text:?} gave {error:?}");
        }
    }
}
