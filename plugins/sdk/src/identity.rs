//! Identity plugins: who a client is, established once per login.
//!
//! At login sluice first asks [`Identity::scram_verifier`] for the startup
//! user's stored secret. With one, sluice runs SCRAM-SHA-256 with the
//! client itself, so the client's password never reaches the plugin.
//! Without one, sluice asks the client for a bearer token (an IdP's JWT,
//! say; only over TLS or loopback) and hands it to
//! [`Identity::authenticate`].
//!
//! Either way the principal that comes back must have the startup `user`
//! as its `id`, or the login is refused. A panic, a timeout or an answer
//! the host cannot use refuses the login too: the client gets 28P01, the
//! log gets the reason.

use std::marker::PhantomData;

pub use crate::wit::identity::exports::sluice::gateway::identity::{AuthError, StoredSecret};

use crate::types::{ConnectionInfo, Principal};
use crate::wit::identity::exports::sluice::gateway::identity;
use crate::wit::plugin::exports::sluice::gateway::plugin;

/// An identity source: maps a startup user to a stored secret, or a bearer
/// token to a principal.
///
/// Implement it for a type of your own and register that type with
/// [`register_identity!`](crate::register_identity). Implement
/// `scram_verifier` for users with stored secrets, `authenticate` for
/// tokens that must be seen to be checked, or both.
pub trait Identity {
    /// Checks the plugin's configuration ([`crate::config`]).
    ///
    /// Called once on a fresh instance whenever the plugin is loaded or
    /// reloaded, before it serves any call. An error (saying what is
    /// wrong) rejects this version: at startup sluice refuses to start, on
    /// a reload the version already loaded keeps serving. A panic or a
    /// timeout counts as an error. The default accepts any configuration.
    fn check_config() -> Result<(), String> {
        Ok(())
    }

    /// The stored secret of `user`, the startup user, if the plugin keeps
    /// one for it.
    ///
    /// Called first at every login. `Some` has sluice authenticate the
    /// client with SCRAM-SHA-256 against the verifier and, on success,
    /// give the session the secret's principal. `None` has sluice ask the
    /// client for a bearer token and call [`Identity::authenticate`]. The
    /// default is `None`.
    fn scram_verifier(user: &str, connection: &ConnectionInfo) -> Option<StoredSecret> {
        let _ = (user, connection);
        None
    }

    /// The principal a bearer `token` stands for, sent as the password of
    /// the startup `user`.
    ///
    /// Called when [`Identity::scram_verifier`] returned `None`. The
    /// principal's `id` must be `user`. Every error gives the client the
    /// same 28P01; the case goes to the log and the audit trail. The
    /// default is [`AuthError::UnknownUser`], for plugins that only keep
    /// stored secrets.
    fn authenticate(
        user: &str,
        token: &str,
        connection: &ConnectionInfo,
    ) -> Result<Principal, AuthError> {
        let _ = (user, token, connection);
        Err(AuthError::UnknownUser)
    }
}

/// Registers a type implementing [`Identity`] as the plugin's identity
/// source. Call it once per crate, at the top level.
#[macro_export]
macro_rules! register_identity {
    ($plugin:ty) => {
        $crate::__register!($plugin, identity, Identity, __export_identity);
    };
}

/// Connects an [`Identity`] to the generated bindings; used by
/// [`register_identity!`](crate::register_identity).
#[doc(hidden)]
pub struct Adapter<T>(PhantomData<T>);

impl<T: Identity> plugin::Guest for Adapter<T> {
    fn check_config() -> Result<(), String> {
        T::check_config()
    }
}

impl<T: Identity> identity::Guest for Adapter<T> {
    fn scram_verifier(user: String, connection: ConnectionInfo) -> Option<StoredSecret> {
        T::scram_verifier(&user, &connection)
    }

    fn authenticate(
        user: String,
        token: String,
        connection: ConnectionInfo,
    ) -> Result<Principal, AuthError> {
        T::authenticate(&user, &token, &connection)
    }
}
