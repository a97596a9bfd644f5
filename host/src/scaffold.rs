//! `sluice plugin new`: a new plugin crate, made from the template in
//! `plugins/template/`.
//!
//! The crate depends on the plugin SDK by path, on the SDK of the source
//! tree this sluice was built from, so it builds against the WIT contract
//! this sluice speaks. It is a workspace of its own, with one working
//! plugin of the chosen kind, a native unit test of its logic, and a README
//! on building it and loading it into sluice.

use std::io;
use std::path::{Path, PathBuf};

/// The SDK the new crate depends on, where this sluice was built from.
const SDK_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/sdk");

/// Longest plugin name accepted.
pub const MAX_NAME_LEN: usize = 64;

/// Which kind of plugin to make: the hook it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PluginKind {
    /// Decides whether each statement may run.
    Policy,
    /// Finds what must be masked in results, errors and logs.
    Masking,
    /// Establishes who a client is at login.
    Identity,
    /// Asks humans to approve held statements.
    Approval,
}

impl PluginKind {
    /// The hook's name, as `sluice.toml` spells it.
    pub fn name(self) -> &'static str {
        match self {
            PluginKind::Policy => "policy",
            PluginKind::Masking => "masking",
            PluginKind::Identity => "identity",
            PluginKind::Approval => "approval",
        }
    }

    /// The template of `src/lib.rs` for this kind.
    fn lib_template(self) -> &'static str {
        match self {
            PluginKind::Policy => include_str!("../../plugins/template/src/policy.rs.tmpl"),
            PluginKind::Masking => include_str!("../../plugins/template/src/masking.rs.tmpl"),
            PluginKind::Identity => include_str!("../../plugins/template/src/identity.rs.tmpl"),
            PluginKind::Approval => include_str!("../../plugins/template/src/approval.rs.tmpl"),
        }
    }

    /// Lines for `[dependencies]` that this kind's template needs beyond
    /// the SDK, each ending in a newline.
    fn dependencies(self) -> &'static str {
        match self {
            PluginKind::Policy | PluginKind::Masking | PluginKind::Identity => "",
            // Slack's interaction payloads in, Block Kit blocks out.
            PluginKind::Approval => "serde_json = \"1\"\n",
        }
    }
}

impl std::fmt::Display for PluginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a plugin crate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error(
        "invalid plugin name {name:?}: {why} (use lowercase letters, digits and '-', \
         starting with a letter, at most {MAX_NAME_LEN} characters)"
    )]
    InvalidName { name: String, why: &'static str },
    #[error("{} already exists; choose another name or directory", .0.display())]
    AlreadyExists(PathBuf),
    #[error(
        "the plugin SDK is not at {} (sluice plugin new uses the SDK of the source tree \
         sluice was built from; rebuild sluice from a checkout that has it): {source}",
        path.display()
    )]
    SdkMissing { path: PathBuf, source: io::Error },
    #[error("the plugin SDK's path {} is not valid UTF-8", .0.display())]
    SdkPathNotUtf8(PathBuf),
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
}

/// Makes a new plugin crate named `name` of `kind` in `parent_dir/name`
/// (creating `parent_dir` if need be) and returns its directory. Refuses
/// an invalid name and a directory that already exists; on an error after
/// the directory was made, removes it again.
pub fn new_plugin(
    name: &str,
    kind: PluginKind,
    parent_dir: &Path,
) -> Result<PathBuf, ScaffoldError> {
    validate_name(name)?;
    let sdk = sdk_dir()?;
    std::fs::create_dir_all(parent_dir).map_err(|source| ScaffoldError::Write {
        path: parent_dir.to_path_buf(),
        source,
    })?;
    let dir = parent_dir.join(name);
    // `create_dir`, not `create_dir_all`: an existing directory is an error,
    // however it got there.
    if let Err(source) = std::fs::create_dir(&dir) {
        return Err(if source.kind() == io::ErrorKind::AlreadyExists {
            ScaffoldError::AlreadyExists(dir)
        } else {
            ScaffoldError::Write { path: dir, source }
        });
    }
    match write_crate(&dir, name, kind, &sdk) {
        Ok(()) => Ok(dir),
        Err(error) => {
            let _ = std::fs::remove_dir_all(&dir);
            Err(error)
        }
    }
}

/// Checks a plugin name: it becomes the crate's name, the component's file
/// name and the plugin's name in `sluice.toml`.
pub fn validate_name(name: &str) -> Result<(), ScaffoldError> {
    let invalid = |why| {
        Err(ScaffoldError::InvalidName {
            name: name.to_owned(),
            why,
        })
    };
    let Some(first) = name.chars().next() else {
        return invalid("it is empty");
    };
    if name.len() > MAX_NAME_LEN {
        return invalid("it is too long");
    }
    if !first.is_ascii_lowercase() {
        return invalid("it does not start with a lowercase letter");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return invalid("it has a character other than a lowercase letter, a digit or '-'");
    }
    if name.ends_with('-') {
        return invalid("it ends with '-'");
    }
    if RESERVED.contains(&name) {
        return invalid("cargo reserves it");
    }
    Ok(())
}

/// Names cargo refuses for a package, or that would clash with a crate
/// every plugin links: Rust keywords and the standard crates.
const RESERVED: &[&str] = &[
    "abstract",
    "alloc",
    "as",
    "async",
    "await",
    "become",
    "box",
    "break",
    "const",
    "continue",
    "core",
    "crate",
    "do",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "proc-macro",
    "pub",
    "ref",
    "return",
    "self",
    "sluice-plugin",
    "static",
    "std",
    "struct",
    "super",
    "test",
    "trait",
    "true",
    "try",
    "type",
    "typeof",
    "unsafe",
    "unsized",
    "use",
    "virtual",
    "where",
    "while",
    "yield",
];

/// The SDK's directory, absolute, if it is still there.
fn sdk_dir() -> Result<PathBuf, ScaffoldError> {
    let path = PathBuf::from(SDK_DIR);
    let sdk = std::fs::canonicalize(&path)
        .and_then(|sdk| {
            if sdk.join("Cargo.toml").is_file() {
                Ok(sdk)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "no Cargo.toml there",
                ))
            }
        })
        .map_err(|source| ScaffoldError::SdkMissing { path, source })?;
    match sdk.to_str() {
        Some(_) => Ok(sdk),
        None => Err(ScaffoldError::SdkPathNotUtf8(sdk)),
    }
}

fn write_crate(dir: &Path, name: &str, kind: PluginKind, sdk: &Path) -> Result<(), ScaffoldError> {
    let fill = |template: &str| fill(template, name, kind, sdk);
    write(
        dir,
        "Cargo.toml",
        &fill(include_str!("../../plugins/template/Cargo.toml.tmpl")),
    )?;
    write(
        dir,
        "README.md",
        &fill(include_str!("../../plugins/template/README.md.tmpl")),
    )?;
    write(
        dir,
        ".gitignore",
        include_str!("../../plugins/template/gitignore.tmpl"),
    )?;
    write(dir, "src/lib.rs", &fill(kind.lib_template()))?;
    // Start from the dependency versions the SDK is built and tested with
    // (cargo drops what the plugin does not use on its first build).
    if let Ok(lock) = std::fs::read_to_string(sdk.join("../Cargo.lock")) {
        write(dir, "Cargo.lock", &lock)?;
    }
    Ok(())
}

fn write(dir: &Path, file: &str, contents: &str) -> Result<(), ScaffoldError> {
    let path = dir.join(file);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| ScaffoldError::Write {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    std::fs::write(&path, contents).map_err(|source| ScaffoldError::Write { path, source })
}

/// Replaces the template's placeholders.
fn fill(template: &str, name: &str, kind: PluginKind, sdk: &Path) -> String {
    let sdk = sdk.to_str().expect("sdk_dir checked the path is UTF-8");
    template
        .replace("{{name}}", name)
        .replace("{{crate_name}}", &name.replace('-', "_"))
        .replace("{{type_name}}", &type_name(name))
        .replace("{{kind}}", kind.name())
        .replace("{{kind_dependencies}}", kind.dependencies())
        .replace("{{sdk_path}}", &toml_escape(sdk))
}

/// `no-blind-writes` -> `NoBlindWrites`: the plugin's Rust type.
fn type_name(name: &str) -> String {
    name.split('-')
        .flat_map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase())
                .into_iter()
                .chain(chars)
        })
        .collect()
}

/// Escapes text for a TOML basic string (`"..."`). The README shows the
/// SDK's path escaped the same way, which only a path with quotes,
/// backslashes or control characters would notice.
fn toml_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => escaped.push_str("\\\""),
            '\\' => escaped.push_str("\\\\"),
            c if c.is_control() => escaped.push_str(&format!("\\u{:04X}", c as u32)),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [PluginKind; 4] = [
        PluginKind::Policy,
        PluginKind::Masking,
        PluginKind::Identity,
        PluginKind::Approval,
    ];

    #[test]
    fn valid_names_are_accepted() {
        for name in [
            "a",
            "no-blind-writes",
            "mask2",
            "x-1-y",
            &"a".repeat(MAX_NAME_LEN),
        ] {
            assert!(validate_name(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn invalid_names_are_refused() {
        for name in [
            "",
            "1abc",
            "-abc",
            "Abc",
            "ab_c",
            "ab c",
            "ab/c",
            "../x",
            "é",
            "abc-",
            "test",
            "fn",
            &"a".repeat(MAX_NAME_LEN + 1),
        ] {
            let error = validate_name(name).unwrap_err();
            assert!(
                matches!(error, ScaffoldError::InvalidName { .. }),
                "{name}: {error}"
            );
        }
    }

    #[test]
    fn type_names_are_camel_case() {
        assert_eq!(type_name("no-blind-writes"), "NoBlindWrites");
        assert_eq!(type_name("mask2"), "Mask2");
        assert_eq!(type_name("a-1b"), "A1b");
    }

    #[test]
    fn every_kind_is_filled_completely() {
        let dir = tempfile::tempdir().unwrap();
        for kind in KINDS {
            let name = format!("my-{kind}");
            let made = new_plugin(&name, kind, dir.path()).unwrap();
            assert_eq!(made, dir.path().join(&name));
            for file in ["Cargo.toml", "README.md", ".gitignore", "src/lib.rs"] {
                let text = std::fs::read_to_string(made.join(file)).unwrap();
                assert!(!text.contains("{{"), "{kind} {file} has a placeholder left");
            }
            let manifest = std::fs::read_to_string(made.join("Cargo.toml")).unwrap();
            assert!(
                manifest.contains(&format!("name = \"{name}\"")),
                "{manifest}"
            );
            assert!(manifest.contains(kind.dependencies()), "{manifest}");
            assert_eq!(
                manifest.contains("serde_json"),
                kind == PluginKind::Approval,
                "{manifest}"
            );
            let lib = std::fs::read_to_string(made.join("src/lib.rs")).unwrap();
            assert!(lib.contains(&format!("register_{kind}!")), "{lib}");
        }
    }

    #[test]
    fn an_existing_directory_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let existing = dir.path().join("taken");
        std::fs::create_dir(&existing).unwrap();
        std::fs::write(existing.join("keep.txt"), "mine").unwrap();
        let error = new_plugin("taken", PluginKind::Policy, dir.path()).unwrap_err();
        assert!(matches!(error, ScaffoldError::AlreadyExists(_)), "{error}");
        assert!(error.to_string().contains("already exists"), "{error}");
        assert_eq!(
            std::fs::read_to_string(existing.join("keep.txt")).unwrap(),
            "mine"
        );
        assert!(!existing.join("Cargo.toml").exists());
    }

    #[test]
    fn an_existing_file_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("taken"), "mine").unwrap();
        let error = new_plugin("taken", PluginKind::Masking, dir.path()).unwrap_err();
        assert!(matches!(error, ScaffoldError::AlreadyExists(_)), "{error}");
    }

    #[test]
    fn paths_are_escaped_for_toml() {
        assert_eq!(toml_escape(r#"/a "b"\c"#), r#"/a \"b\"\\c"#);
    }
}
