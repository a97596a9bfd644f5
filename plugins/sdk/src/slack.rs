//! Posting to Slack: approval plugins only, and only where the operator's
//! config grants it.
//!
//! The host holds the token and does the network I/O; the plugin says what
//! to post. Using this module from any other kind of plugin makes the
//! component import a capability its world does not offer, and sluice
//! refuses to load it. Outside sluice (in native tests) both posting
//! functions panic; the text helpers work anywhere.
//!
//! # Showing a statement to an approver
//!
//! A ticket's statement text is the client's, card numbers masked and
//! nothing else changed: it may hold `<!channel>`, a link that shows other
//! words than it leads to (`<https://x|SELECT 1>`), backticks that end a
//! code block early, or `_`, `*` and `~` that Slack's formatting would take
//! out (`LIKE '_admin_'` shown as an italic `'admin'`). In `mrkdwn` text
//! Slack reads all of these, so the approver would see something other than
//! what runs. Put statement text in `plain_text` objects with `"emoji":
//! false`, which Slack shows as they are. [`escape_mrkdwn`] is for text
//! that must be `mrkdwn` (a message's fallback `text`): it keeps mentions
//! and links out, not formatting. Never cut a statement short: a tail Slack
//! hides or a block's 3000-character limit drops is a part of the statement
//! nobody approved. [`plain_text_chunks`] splits it for as many blocks as
//! it takes; a message holds at most 50 blocks, and a statement too long
//! for them is to be refused (an error from `request` refuses it), not
//! shortened.

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

/// `text` escaped for Slack's `mrkdwn`: `&`, `<` and `>` as Slack's own
/// escapes, so that no `<...>` in it is read as a mention or a link.
/// Formatting (`*`, `_`, `~`, backticks) still applies, and Slack may
/// still link bare URLs and names unless the text object is `verbatim`:
/// for a statement, use `plain_text`.
pub fn escape_mrkdwn(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Most characters of one Block Kit text object Slack accepts in a section.
pub const MAX_BLOCK_TEXT: usize = 3000;

/// `text` in pieces of at most `max` characters (at least one, split on
/// character boundaries, nothing dropped): one `plain_text` section each,
/// so that a long statement is shown whole. An empty text is one empty
/// piece.
pub fn plain_text_chunks(text: &str, max: usize) -> Vec<&str> {
    let max = max.max(1);
    let mut chunks = Vec::new();
    let mut rest = text;
    loop {
        let cut = rest
            .char_indices()
            .nth(max)
            .map_or(rest.len(), |(at, _)| at);
        let (chunk, after) = rest.split_at(cut);
        chunks.push(chunk);
        if after.is_empty() {
            return chunks;
        }
        rest = after;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_and_links_are_escaped_for_mrkdwn() {
        assert_eq!(
            escape_mrkdwn("SELECT 1 <!channel> <https://x|DROP TABLE y> a && b"),
            "SELECT 1 &lt;!channel&gt; &lt;https://x|DROP TABLE y&gt; a &amp;&amp; b"
        );
        assert_eq!(escape_mrkdwn("plain"), "plain");
    }

    #[test]
    fn chunks_keep_every_character_in_order() {
        let text = format!("{}é{}", "a".repeat(2999), "b".repeat(3001));
        let chunks = plain_text_chunks(&text, MAX_BLOCK_TEXT);
        assert_eq!(chunks.len(), 3);
        assert!(chunks.iter().all(|c| c.chars().count() <= MAX_BLOCK_TEXT));
        assert_eq!(chunks.concat(), text);
        assert!(chunks[0].ends_with('é'), "split on a character boundary");
        assert_eq!(plain_text_chunks("", 10), [""]);
        assert_eq!(plain_text_chunks("abc", 0), ["a", "b", "c"]);
    }
}
