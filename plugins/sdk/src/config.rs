//! The plugin's own configuration.
//!
//! The operator writes it in the plugin's table of `sluice.toml`:
//!
//! ```toml
//! [[plugins]]
//! name = "no-exports"
//! hook = "policy"
//! path = "no_exports.wasm"
//!
//! [plugins.config]          # reaches the plugin as JSON: get()
//! deny_kinds = ["copy-out"]
//!
//! [plugins.files]           # read and watched by the host: file("words")
//! words = "forbidden-words.txt"
//! ```
//!
//! A change to either reloads the plugin, and its `check_config` runs
//! again before the new version serves.
//!
//! Outside sluice (in native tests) there is no configuration and both
//! functions panic: keep the logic to test in functions that take the
//! configuration as an argument. [`line_column`] and
//! [`without_json_position`] help word errors about either.

/// The plugin's config table, as JSON text (`{}` when it has none).
pub fn get() -> String {
    if cfg!(target_arch = "wasm32") {
        crate::wit::host::sluice::gateway::config::get()
    } else {
        outside_sluice("config::get")
    }
}

/// The contents of the data file the operator names under `key` in the
/// plugin's `files` table, or `None` when no file has that key. The host
/// reads the file; the plugin never touches the filesystem.
pub fn file(key: &str) -> Option<Vec<u8>> {
    if cfg!(target_arch = "wasm32") {
        crate::wit::host::sluice::gateway::config::file(key)
    } else {
        outside_sluice("config::file")
    }
}

/// The 1-based line and column (in characters) of byte `offset` of
/// `text`: where to point an operator at a problem in a data file.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The text of a data file a plugin needs, given what [`file`] returned
/// for `key`: an error that tells the operator what to do when the file is
/// not named, or names where it stops being UTF-8. `what` names the file
/// for people ("rules file"), `example` is a file name to suggest.
pub fn file_text<'a>(
    contents: Option<&'a [u8]>,
    key: &str,
    what: &str,
    example: &str,
) -> Result<&'a str, String> {
    let Some(contents) = contents else {
        return Err(format!(
            "no {what}: name one in the plugin's files table, as {key} = \"{example}\""
        ));
    };
    std::str::from_utf8(contents)
        .map_err(|error| format!("{what} is not UTF-8 text (at byte {})", error.valid_up_to()))
}

/// A JSON parser's message about the config table without its " at line
/// L column C": the table reaches the plugin as JSON sluice made from
/// `sluice.toml`, so positions in that JSON would only mislead the
/// operator.
pub fn without_json_position(message: &str) -> String {
    match message.rsplit_once(" at line ") {
        Some((head, position))
            if position
                .split(" column ")
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) =>
        {
            head.to_owned()
        }
        _ => message.to_owned(),
    }
}

/// Stands in for a capability in native builds, where there is no host.
pub(crate) fn outside_sluice(function: &str) -> ! {
    panic!(
        "sluice_plugin::{function} is only available inside sluice; \
         in native tests, pass the configuration to the logic under test instead"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters() {
        let text = "a = 1\nbé = x\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        // `x` follows a two-byte character: column 6, byte 12.
        assert_eq!(line_column(text, 12), (2, 6));
    }

    #[test]
    fn data_files_must_be_named_and_utf8() {
        assert_eq!(
            file_text(Some(b"x = 1"), "rules", "rules file", "r.toml"),
            Ok("x = 1")
        );
        let missing = file_text(None, "rules", "rules file", "r.toml").unwrap_err();
        assert_eq!(
            missing,
            "no rules file: name one in the plugin's files table, as rules = \"r.toml\""
        );
        let binary = file_text(Some(b"ab\xff"), "rules", "rules file", "r.toml").unwrap_err();
        assert_eq!(binary, "rules file is not UTF-8 text (at byte 2)");
    }

    #[test]
    fn json_positions_are_dropped_and_nothing_else() {
        assert_eq!(
            without_json_position("unknown field `x` at line 1 column 12"),
            "unknown field `x`"
        );
        assert_eq!(
            without_json_position("expected a name at line one"),
            "expected a name at line one"
        );
    }
}
