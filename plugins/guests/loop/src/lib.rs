//! Test plugin (policy): never returns on a statement whose text contains
//! `loop`, allows every other, so a test can check the host's deadline.

use std::hint::black_box;

use sluice_plugin::policy::Policy;
use sluice_plugin::session::Session;
use sluice_plugin::types::{Decision, Statement};

struct Loop;

impl Policy for Loop {
    fn evaluate(_session: &Session, statement: &Statement) -> Decision {
        if statement.text.contains("loop") {
            // `black_box` keeps the optimiser from proving the loop does
            // nothing.
            let mut turns = 0_u64;
            loop {
                turns = black_box(turns.wrapping_add(1));
            }
        }
        Decision::Allow
    }
}

sluice_plugin::register_policy!(Loop);
