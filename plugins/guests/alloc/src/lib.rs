//! Test plugin (policy): allocates without bound on a statement whose text
//! contains `alloc`, allows every other, so a test can check the host's
//! memory cap.

use std::hint::black_box;

use sluice_plugin::policy::Policy;
use sluice_plugin::session::Session;
use sluice_plugin::types::{Decision, Statement};

struct Alloc;

/// Each step keeps one more mebibyte alive.
const CHUNK: usize = 1 << 20;

impl Policy for Alloc {
    fn evaluate(_session: &Session, statement: &Statement) -> Decision {
        if statement.text.contains("alloc") {
            let mut kept: Vec<Vec<u8>> = Vec::new();
            loop {
                kept.push(black_box(vec![0xa5; CHUNK]));
                black_box(&kept);
            }
        }
        Decision::Allow
    }
}

sluice_plugin::register_policy!(Alloc);
