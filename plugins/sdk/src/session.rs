//! The session a policy or masking call is made for: who is asking, over
//! which connection.
//!
//! sluice lends the plugin a handle on the session for each call rather
//! than copying the session into it, and a [`Session`] fetches each fact
//! from the host the first time it is asked for, then keeps it for the
//! rest of the call. A plugin that never looks at the session (most
//! maskers) pays nothing for it; one that reads the principal pays once
//! per call.
//!
//! Outside sluice — in a plugin's native unit tests — build one from a
//! [`SessionInfo`] with [`Session::new`].

use std::cell::OnceCell;

use crate::types::{ConnectionInfo, Principal};
use crate::wit::host::sluice::gateway::session as host;

/// A logged-in session, as a policy or masking method is given it.
pub struct Session<'a> {
    source: Source<'a>,
    id: OnceCell<u64>,
    principal: OnceCell<Principal>,
    connection: OnceCell<ConnectionInfo>,
}

enum Source<'a> {
    /// The handle sluice lent for this call.
    Host(&'a host::Session),
    /// Facts given directly, for tests.
    Given(SessionInfo),
}

/// Everything about a session, as plain values: what [`Session::new`]
/// builds a session from in tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionInfo {
    /// Unique for the life of the gateway process; the audit trail and
    /// traces use the same id.
    pub session_id: u64,
    /// Who the session belongs to.
    pub principal: Principal,
    /// The connection it arrived on.
    pub connection: ConnectionInfo,
}

impl Session<'static> {
    /// A session with these facts, for calling a plugin's methods in
    /// tests. (`SessionInfo::default()` for logic that ignores the
    /// session.)
    pub fn new(info: SessionInfo) -> Self {
        Session {
            source: Source::Given(info),
            id: OnceCell::new(),
            principal: OnceCell::new(),
            connection: OnceCell::new(),
        }
    }
}

impl<'a> Session<'a> {
    #[doc(hidden)]
    pub fn lent(handle: &'a host::Session) -> Self {
        Session {
            source: Source::Host(handle),
            id: OnceCell::new(),
            principal: OnceCell::new(),
            connection: OnceCell::new(),
        }
    }

    /// sluice's id for the session: fetched from sluice on first use.
    pub fn id(&self) -> u64 {
        match &self.source {
            Source::Host(handle) => *self.id.get_or_init(|| handle.id()),
            Source::Given(info) => info.session_id,
        }
    }

    /// Who the session belongs to: fetched from sluice on first use.
    pub fn principal(&self) -> &Principal {
        match &self.source {
            Source::Host(handle) => self.principal.get_or_init(|| handle.principal()),
            Source::Given(info) => &info.principal,
        }
    }

    /// The connection the session arrived on: fetched from sluice on
    /// first use.
    pub fn connection(&self) -> &ConnectionInfo {
        match &self.source {
            Source::Host(handle) => self.connection.get_or_init(|| handle.connection()),
            Source::Given(info) => &info.connection,
        }
    }
}

impl std::fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = f.debug_struct("Session");
        match &self.source {
            Source::Host(_) => s.field("source", &"sluice"),
            Source::Given(info) => s.field("info", info),
        };
        s.finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_session_answers_from_its_info() {
        let info = SessionInfo {
            session_id: 7,
            principal: Principal {
                id: "ana".into(),
                groups: vec!["analysts".into()],
                attributes: vec![],
                expires_at: None,
            },
            connection: ConnectionInfo {
                database: "payments".into(),
                ..ConnectionInfo::default()
            },
        };
        let session = Session::new(info.clone());
        assert_eq!(session.id(), 7);
        assert_eq!(session.principal(), &info.principal);
        assert_eq!(session.connection().database, "payments");
    }
}
