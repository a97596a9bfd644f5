//! Masking: what sluice does with the masking plugins' answers, on every
//! path a card number could leave by.
//!
//! The plugins decide what to hide; this module does the protocol work
//! around them:
//!
//! - [`rows`]: result rows (DataRow), in text or binary format, through
//!   [`codec`]s that turn each column's values into text pieces and back,
//!   batched into [`batch`]es of many rows per call;
//! - [`copy`] and [`copy_text`]: COPY TO STDOUT data — binary tuples, and
//!   text and csv rows field by field — masked as rows of the COPY source's
//!   columns, which sluice describes before the COPY runs;
//! - [`types`]: user-defined types, looked up in the database's catalog so
//!   that binary values of them can be read;
//! - [`messages`]: the text of server messages — error and notice fields,
//!   column names, reported parameters, notifications;
//! - [`for_log`] and [`mask_texts`]: the text sluice itself writes about
//!   traffic (query text and parameters in logs, and later the audit trail
//!   and traces) goes through the same plugins, its backslash escapes
//!   shown to them as [`escapes`] says.

pub mod batch;
pub mod codec;
pub mod copy;
pub mod copy_text;
pub mod escapes;
pub mod messages;
pub mod rows;
pub mod types;

use crate::config::Hook;
use crate::plugin::{Fault, PluginSet};

/// Separates short texts masked in one call: PostgreSQL texts cannot
/// contain NUL, and the host refuses a plugin answer that adds or removes
/// one.
const SEPARATOR: char = '\0';

/// Masks several short texts with one call per plugin. `None` when no
/// plugin changed any of them; otherwise every text, masked.
pub async fn mask_texts(plugins: &PluginSet, texts: &[&str]) -> Result<Option<Vec<String>>, Fault> {
    // No texts (a RowDescription of no columns, an error with no text
    // fields): no call. Joined, they would be one empty text, and an edit
    // a plugin made of it would bring back one text for none.
    if texts.is_empty() {
        return Ok(None);
    }
    if texts.iter().any(|text| text.contains(SEPARATOR)) {
        // Not from PostgreSQL: mask each on its own.
        let mut masked = Vec::with_capacity(texts.len());
        let mut changed = false;
        for text in texts {
            match plugins.mask_text(text).await? {
                Some(edited) => {
                    masked.push(edited);
                    changed = true;
                }
                None => masked.push((*text).to_owned()),
            }
        }
        return Ok(changed.then_some(masked));
    }
    let joined = texts.join("\0");
    let Some(edited) = plugins.mask_text(&joined).await? else {
        return Ok(None);
    };
    // The plugin set refuses an answer that adds or removes a NUL, so the
    // count holds; were it ever not to, the texts are refused, not guessed.
    split_joined(&edited, texts.len())
        .map(Some)
        .map_err(|detail| Fault::InvalidAnswer {
            plugin: plugins
                .chain(Hook::Masking)
                .iter()
                .map(|plugin| plugin.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            detail: format!("mask-text: {detail}"),
        })
}

/// The `count` texts that were joined by [`SEPARATOR`] into `edited`; an
/// error if the separators did not survive the edits.
fn split_joined(edited: &str, count: usize) -> Result<Vec<String>, String> {
    let masked: Vec<String> = edited.split(SEPARATOR).map(str::to_owned).collect();
    if masked.len() != count {
        return Err(format!(
            "{} texts came back from {count} joined",
            masked.len()
        ));
    }
    Ok(masked)
}

/// `texts` as sluice may write them to its audit trail: masked by the
/// masking plugins, or withheld — never raw — when none is loaded. A
/// plugin that fails is an error: the caller refuses what it cannot record.
pub async fn for_record(plugins: &PluginSet, texts: &[&str]) -> Result<Vec<String>, Fault> {
    if !plugins.masks() {
        return Ok(texts
            .iter()
            .map(|_| "[withheld: no masking plugin is loaded]".to_owned())
            .collect());
    }
    Ok(match mask_texts(plugins, texts).await? {
        Some(masked) => masked,
        None => texts.iter().map(|text| (*text).to_owned()).collect(),
    })
}

/// `text` as sluice may write it to its own logs: masked by the masking
/// plugins, or withheld — never raw — when none is loaded or masking
/// fails.
pub async fn for_log(plugins: &PluginSet, text: &str) -> String {
    if !plugins.masks() {
        return "[withheld: no masking plugin is loaded]".to_owned();
    }
    match plugins.mask_text(text).await {
        Ok(Some(masked)) => masked,
        Ok(None) => text.to_owned(),
        Err(fault) => {
            tracing::warn!(%fault, "text for a log line could not be masked");
            "[withheld: masking failed]".to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::builtin::test_guests;
    use crate::plugin::{Runtime, testing};

    #[tokio::test]
    async fn no_texts_are_masked_without_a_plugin_call() {
        let plugins = PluginSet::load(
            Runtime::shared(),
            &[testing::plugin_settings(
                "needle",
                Hook::Masking,
                test_guests::GUEST_MASK_NEEDLE,
                r#"{"needle": "4111111111111111"}"#,
            )],
            None,
        )
        .await
        .unwrap();
        let calls = || plugins.chain(Hook::Masking)[0].stats.calls();
        // Loading checked the plugin's configuration: a call of its own.
        let loaded = calls();
        assert_eq!(mask_texts(&plugins, &[]).await.unwrap(), None);
        assert_eq!(
            for_record(&plugins, &[]).await.unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(calls(), loaded);
        // One text or several: one call each time.
        let masked = mask_texts(&plugins, &["4111111111111111", "x"]).await;
        assert_eq!(masked.unwrap(), Some(vec!["*".repeat(16), "x".to_owned()]));
        assert_eq!(calls(), loaded + 1);
    }

    #[test]
    fn joined_texts_that_lost_or_gained_a_separator_are_refused() {
        assert_eq!(split_joined("a\0\0b", 3).unwrap(), ["a", "", "b"]);
        assert_eq!(split_joined("", 1).unwrap(), [""]);
        for (edited, count) in [("", 0), ("a\0b", 3), ("a\0b\0c", 2)] {
            let error = split_joined(edited, count).unwrap_err();
            assert!(error.contains("texts came back"), "{error}");
        }
    }
}
