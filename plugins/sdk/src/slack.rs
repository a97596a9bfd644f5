//! Posting to Slack: approval plugins only, and only where the operator's
//! config grants it.
//!
//! The host holds the token and does the network I/O; the plugin says what
//! to post. Using this module from any other kind of plugin makes the
//! component import a capability its world does not offer, and sluice
//! refuses to load it. Outside sluice (in native tests) both functions
//! panic.

use crate::wit::approval::sluice::gateway::slack as wit;

pub use wit::MessageRef;

/// Posts a message to `channel`: `text` as the plain-text fallback, and
/// Block Kit `blocks_json` (a JSON array, `"[]"` for none).
pub fn post_message(channel: &str, text: &str, blocks_json: &str) -> Result<MessageRef, String> {
    if cfg!(target_arch = "wasm32") {
        wit::post_message(channel, text, blocks_json)
    } else {
        crate::config::outside_sluice("slack::post_message")
    }
}

/// Replaces the content of a posted message.
pub fn update_message(message: &MessageRef, text: &str, blocks_json: &str) -> Result<(), String> {
    if cfg!(target_arch = "wasm32") {
        wit::update_message(message, text, blocks_json)
    } else {
        crate::config::outside_sluice("slack::update_message")
    }
}
