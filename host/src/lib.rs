//! sluice: a PostgreSQL wire-protocol gateway that enforces PCI DSS controls
//! on the data path between SQL clients and a database holding card data.
//!
//! The modules follow the data path:
//!
//! - [`config`]: the operator's `sluice.toml`, checked and resolved.
//! - [`gateway`]: the listener, one task per session, graceful shutdown.
//! - [`transport`]: plain TCP or TLS to clients and to PostgreSQL.
//! - [`session`]: one client, from startup and authentication through the
//!   statement loop to its end; cancel keys.
//! - [`protocol`]: framing, the startup packets, and the messages sluice
//!   writes itself; decoding with `pgwire`'s message types.
//! - [`masking`]: what sluice does with the masking plugins' answers:
//!   result rows in any format, server messages, and the text sluice
//!   writes about traffic (logs, audit, traces).
//! - [`auth`]: SCRAM-SHA-256 for clients, against stored verifiers.
//! - [`audit`]: the tamper-evident audit trail every session writes, and
//!   `sluice audit verify|show|tail`.
//! - [`telemetry`]: OpenTelemetry spans for sessions, statements and the
//!   decisions made about them.
//! - [`metrics`] and [`admin`]: the operators' HTTP port — Prometheus
//!   metrics, health and readiness.
//! - [`upstream`]: the connection to PostgreSQL with sluice's own credential.
//! - [`pg_cluster`]: a throwaway PostgreSQL for the quickstart and the tests.
//! - [`scaffold`]: `sluice plugin new`, a plugin crate from the template.
//! - [`text`]: text from outside, shown in a line of sluice's own.

pub mod admin;
pub mod analysis;
pub mod approval;
pub mod audit;
pub mod auth;
pub mod config;
pub mod gateway;
pub mod masking;
pub mod metrics;
pub mod pg_cluster;
pub mod plugin;
pub mod protocol;
pub mod scaffold;
pub mod session;
pub mod telemetry;
pub mod text;
pub mod transport;
pub mod upstream;
