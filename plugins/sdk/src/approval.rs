//! Approval plugins: asking humans about held statements.
//!
//! When a policy answers [`Decision::RequireApproval`], sluice holds the
//! statement and makes a [`Ticket`]. The approval plugin tells the
//! approvers ([`Approval::request`], typically with [`crate::slack`]),
//! reads their answers from the interactions sluice receives
//! ([`Approval::on_interaction`]), and hears how each ticket ended
//! ([`Approval::on_outcome`]). Your plugin reads only *who* answered (the
//! name in the interaction, a Slack user ID say) and what; sluice enforces
//! the rest: a ticket is answered once, before it expires, by a name its
//! operator listed in `[approvals.approvers]` for the ticket's approver
//! group, and never by the principal who sent the statement.
//!
//! Show the ticket's statement as it is, whole: see "Showing a statement to
//! an approver" in [`crate::slack`].
//!
//! [`Decision::RequireApproval`]: crate::types::Decision::RequireApproval

use std::marker::PhantomData;

pub use crate::slack::MessageRef;
pub use crate::wit::approval::exports::sluice::gateway::approval::{Answer, Ticket, Verdict};

use crate::wit::approval::exports::sluice::gateway::approval;
use crate::wit::plugin::exports::sluice::gateway::plugin;

/// An approval channel: tells approvers about tickets and reads their
/// answers.
///
/// Implement it for a type of your own and register that type with
/// [`register_approval!`](crate::register_approval).
pub trait Approval {
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

    /// Tells the approvers about a held statement.
    ///
    /// Called once per ticket, when the statement is held. An error
    /// refuses the statement at once.
    fn request(ticket: &Ticket) -> Result<(), String>;

    /// The answer an interaction carries, if it is one.
    ///
    /// Called with the payload of an interaction callback, already
    /// authenticated by sluice (Slack's signature checked, say). `None`
    /// means the payload is not an answer to a ticket.
    fn on_interaction(payload: &str) -> Option<Answer>;

    /// Hears how a ticket ended: `outcome` is `approved`, `denied`,
    /// `expired` (no answer in time) or `withdrawn` (the requester
    /// cancelled the statement or left).
    ///
    /// Called once per ticket, so the plugin can update what approvers
    /// see. An error is logged; the outcome stands. The default does
    /// nothing.
    fn on_outcome(ticket: &Ticket, outcome: &str) -> Result<(), String> {
        let _ = (ticket, outcome);
        Ok(())
    }
}

/// Registers a type implementing [`Approval`] as the plugin's approval
/// channel. Call it once per crate, at the top level.
#[macro_export]
macro_rules! register_approval {
    ($plugin:ty) => {
        $crate::__register!($plugin, approval, Approval, __export_approval);
    };
}

/// Connects an [`Approval`] to the generated bindings; used by
/// [`register_approval!`](crate::register_approval).
#[doc(hidden)]
pub struct Adapter<T>(PhantomData<T>);

impl<T: Approval> plugin::Guest for Adapter<T> {
    fn check_config() -> Result<(), String> {
        T::check_config()
    }
}

impl<T: Approval> approval::Guest for Adapter<T> {
    fn request(ticket: Ticket) -> Result<(), String> {
        T::request(&ticket)
    }

    fn on_interaction(payload: String) -> Option<Answer> {
        T::on_interaction(&payload)
    }

    fn on_outcome(ticket: Ticket, outcome: String) -> Result<(), String> {
        T::on_outcome(&ticket, &outcome)
    }
}
