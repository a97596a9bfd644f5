//! Authentication of clients to sluice.
//!
//! sluice runs SCRAM-SHA-256 itself against stored verifiers, so a client's
//! token never crosses the wire and never reaches PostgreSQL.

pub mod lockout;
pub mod scram;
