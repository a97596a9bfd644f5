//! Test plugin (policy): allows every statement.

use sluice_plugin::policy::Policy;
use sluice_plugin::session::Session;
use sluice_plugin::types::{Decision, Statement};

struct AllowAll;

impl Policy for AllowAll {
    fn evaluate(_session: &Session, _statement: &Statement) -> Decision {
        Decision::Allow
    }
}

sluice_plugin::register_policy!(AllowAll);
