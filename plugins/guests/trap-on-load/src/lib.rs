//! Test plugin (policy): traps (panics) in `check_config`, so it can never
//! be loaded; it would allow every statement.

use sluice_plugin::policy::Policy;
use sluice_plugin::session::Session;
use sluice_plugin::types::{Decision, Statement};

struct TrapOnLoad;

impl Policy for TrapOnLoad {
    fn check_config() -> Result<(), String> {
        panic!("guest-trap-on-load: trapping while loading");
    }

    fn evaluate(_session: &Session, _statement: &Statement) -> Decision {
        Decision::Allow
    }
}

sluice_plugin::register_policy!(TrapOnLoad);
