//! Policy plugins: whether a statement may run.
//!
//! sluice analyses every statement before forwarding it (its kind, the
//! tables, columns and functions it touches, whether a DELETE or UPDATE
//! has a real WHERE) and asks each configured policy for a [`Decision`].
//! When several policies are configured, any deny wins, then any
//! require-approval; the statement runs only if all allow it.
//!
//! [`Decision`]: crate::types::Decision

use std::marker::PhantomData;

use crate::session::Session;
use crate::types::{Decision, Statement};
use crate::wit::host::sluice::gateway::session::Session as LentSession;
use crate::wit::plugin::exports::sluice::gateway::plugin;
use crate::wit::policy::exports::sluice::gateway::policy;

/// A policy: decides whether each statement may run.
///
/// Implement it for a type of your own and register that type with
/// [`register_policy!`](crate::register_policy).
pub trait Policy {
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

    /// Decides on one statement.
    ///
    /// Called for every statement before it can run: a simple query's text
    /// when it arrives (several statements in one string are judged one by
    /// one, with `is_multi` set, or whole as `Unparsed` when they cannot be
    /// split), and a prepared statement at each Bind, against the policies
    /// in force then. `session` says who asks (read it only if the rule
    /// needs it: each fact is fetched from sluice on first use). A panic or
    /// a timeout fails the statement closed.
    fn evaluate(session: &Session, statement: &Statement) -> Decision;

    /// Whether every decision of [`Policy::evaluate`] follows from the
    /// session, the configuration and the statement's analysis alone — not
    /// from its text, its parameters or the clock. When true, sluice gives
    /// a session the same decision for a statement that differs from an
    /// earlier one only in its literal values, without calling again,
    /// until the plugin reloads: a policy over tables, columns and kinds
    /// then costs one call per kind of statement, not one per statement.
    /// The default is false, which is always safe.
    const SAME_FOR_SHAPE: bool = false;
}

/// Registers a type implementing [`Policy`] as the plugin's policy.
///
/// Call it once per crate, at the top level:
///
/// ```
/// # use sluice_plugin::policy::Policy;
/// # use sluice_plugin::session::Session;
/// # use sluice_plugin::types::{Decision, Statement};
/// struct AllowAll;
///
/// impl Policy for AllowAll {
///     fn evaluate(_session: &Session, _statement: &Statement) -> Decision {
///         Decision::Allow
///     }
/// }
///
/// sluice_plugin::register_policy!(AllowAll);
/// ```
#[macro_export]
macro_rules! register_policy {
    ($plugin:ty) => {
        $crate::__register!($plugin, policy, Policy, __export_policy);
    };
}

/// Connects a [`Policy`] to the generated bindings; used by
/// [`register_policy!`](crate::register_policy).
#[doc(hidden)]
pub struct Adapter<T>(PhantomData<T>);

impl<T: Policy> plugin::Guest for Adapter<T> {
    fn check_config() -> Result<(), String> {
        T::check_config()
    }
}

impl<T: Policy> policy::Guest for Adapter<T> {
    fn evaluate(session: &LentSession, statement: Statement) -> policy::Judgement {
        policy::Judgement {
            decision: T::evaluate(&Session::lent(session), &statement),
            same_for_shape: T::SAME_FOR_SHAPE,
        }
    }
}
