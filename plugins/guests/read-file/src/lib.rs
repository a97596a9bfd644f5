//! Test plugin (policy): on a statement `read PATH`, tries to read the file
//! at PATH and denies the statement saying how that went (`read N bytes`
//! or `cannot read: ERROR`), so a test can check that plugins have no
//! filesystem unless granted one. Allows every other statement.

use sluice_plugin::policy::Policy;
use sluice_plugin::session::Session;
use sluice_plugin::types::{Decision, Statement};

struct ReadFile;

impl Policy for ReadFile {
    fn evaluate(_session: &Session, statement: &Statement) -> Decision {
        let Some(path) = statement.text.strip_prefix("read ") else {
            return Decision::Allow;
        };
        let reason = match std::fs::read(path.trim()) {
            Ok(bytes) => format!("read {} bytes", bytes.len()),
            Err(error) => format!("cannot read: {error}"),
        };
        Decision::deny("read-file", reason)
    }
}

sluice_plugin::register_policy!(ReadFile);
