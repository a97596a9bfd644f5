//! Test plugin (policy): waits ten seconds inside WASI (a monotonic-clock
//! pollable, blocked on) on a statement whose text contains `sleep`, and in
//! `check_config` when its config says `{"sleep_in_check": true}`; allows
//! every other statement. A wait inside the host runs no wasm, so the
//! epoch deadline never sees it: a test can check that the host bounds a
//! call by the wall clock too.
//!
//! ```json
//! {"sleep_in_check": true}
//! ```

use std::time::Duration;

use serde::Deserialize;
use sluice_plugin::config;
use sluice_plugin::policy::Policy;
use sluice_plugin::session::Session;
use sluice_plugin::types::{Decision, Statement};

/// Far longer than any deadline a test sets, so a call that returns at all
/// before it is over was cut short by the host.
const WAIT: Duration = Duration::from_secs(10);

struct Sleep;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    sleep_in_check: bool,
}

impl Policy for Sleep {
    fn check_config() -> Result<(), String> {
        let config: Config =
            serde_json::from_str(&config::get()).map_err(|error| error.to_string())?;
        if config.sleep_in_check {
            std::thread::sleep(WAIT);
        }
        Ok(())
    }

    fn evaluate(_session: &Session, statement: &Statement) -> Decision {
        if statement.text.contains("sleep") {
            std::thread::sleep(WAIT);
        }
        Decision::Allow
    }
}

sluice_plugin::register_policy!(Sleep);
