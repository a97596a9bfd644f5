//! Test plugin (policy): allows every statement.
//!
//! Its decision follows from nothing at all, so it says the decision holds
//! for every statement of a shape, as the contract lets any policy that
//! decides on the analysis alone: the benchmark's trivial policy is then
//! the one a plugin author would write, called once per statement shape of
//! a session. (The cost of a call itself is measured by the `plugin_calls`
//! Criterion bench, which calls it directly.)

use sluice_plugin::policy::Policy;
use sluice_plugin::session::Session;
use sluice_plugin::types::{Decision, Statement};

struct AllowAll;

impl Policy for AllowAll {
    const SAME_FOR_SHAPE: bool = true;

    fn evaluate(_session: &Session, _statement: &Statement) -> Decision {
        Decision::Allow
    }
}

sluice_plugin::register_policy!(AllowAll);
