//! Test plugin (policy): traps (panics) on a statement whose text contains
//! `trap`, allows every other: one plugin both serves and fails, so a test
//! can check that a trap denies the statement and the next one is served
//! again.

use sluice_plugin::policy::Policy;
use sluice_plugin::session::Session;
use sluice_plugin::types::{Decision, Statement};

struct Trap;

impl Policy for Trap {
    fn evaluate(_session: &Session, statement: &Statement) -> Decision {
        if statement.text.contains("trap") {
            panic!("guest-trap: trapping as the statement asks");
        }
        Decision::Allow
    }
}

sluice_plugin::register_policy!(Trap);
