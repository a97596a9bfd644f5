//! `sluice plugin new` as a plugin author runs it: the crate it makes
//! builds to a component (inside another workspace too) and its unit tests
//! pass natively; bad names and
//! existing directories are refused with a clear message.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

/// The header of a WebAssembly component (not a core module).
const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

/// The kinds of plugin, each made as `scaffolded-KIND`: names distinct
/// from every crate of `plugins/`, whose target directory the builds
/// below share.
const KINDS: [&str; 4] = ["policy", "masking", "identity", "approval"];

/// How many unit tests the template of `kind` has: all of them must run.
fn unit_tests(kind: &str) -> usize {
    match kind {
        // Answers only from Slack's authenticated user, every parameter
        // and table shown, the statement as plain text, whole or refused.
        "approval" => 6,
        _ => 2,
    }
}

fn sluice(args: &[&str]) -> Output {
    Command::new(SLUICE)
        .args(args)
        .output()
        .expect("run sluice")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The target directory the host's build script builds the plugins in
/// (`<target>/<profile>/plugins`): the SDK's dependencies are already
/// compiled there, so the new crate's build only compiles the crate.
fn shared_target_dir() -> PathBuf {
    Path::new(SLUICE)
        .parent()
        .expect("the sluice binary is in the profile directory")
        .join("plugins")
}

/// Runs cargo in `dir` as a plugin author would, without the flags of the
/// build running this test.
fn cargo(dir: &Path, args: &[&str]) -> Output {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    Command::new(cargo)
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", shared_target_dir())
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_MAKEFLAGS")
        .output()
        .expect("run cargo")
}

/// Removes what the test built from the shared output directory (the
/// component, the rlib, their dep-info), so the host's build script never
/// finds it there.
struct RemoveBuilt(PathBuf);

impl Drop for RemoveBuilt {
    fn drop(&mut self) {
        let wasm = &self.0;
        let rlib = wasm.with_file_name(format!(
            "lib{}.rlib",
            wasm.file_stem().unwrap().to_str().unwrap()
        ));
        for built in [wasm, &rlib] {
            let _ = std::fs::remove_file(built);
            let _ = std::fs::remove_file(built.with_extension("d"));
        }
    }
}

/// The promise of the template: a new plugin of every kind builds to a
/// component and its unit tests pass natively, with no edit.
#[test]
fn new_plugins_build_to_components_and_pass_their_tests() {
    for kind in KINDS {
        let name = format!("scaffolded-{kind}");
        let parent = tempfile::tempdir().unwrap();
        // Made inside another project's workspace, as an author with a
        // monorepo would: the crate's own `[workspace]` keeps it out of
        // that one (else cargo refuses to build it there).
        std::fs::write(
            parent.path().join("Cargo.toml"),
            "[workspace]\nmembers = []\nresolver = \"3\"\n",
        )
        .unwrap();
        let dir_arg = parent.path().to_str().unwrap();
        // The default kind is a policy.
        let mut args = vec!["plugin", "new", &name, "--dir", dir_arg];
        if kind != "policy" {
            args.extend(["--kind", kind]);
        }
        let made = sluice(&args);
        assert!(made.status.success(), "{kind}: {}", text(&made.stderr));
        let crate_dir = parent.path().join(&name);
        assert!(
            text(&made.stdout).contains(&crate_dir.display().to_string()),
            "{}",
            text(&made.stdout)
        );

        let wasm = shared_target_dir().join(format!(
            "wasm32-wasip2/release/{}.wasm",
            name.replace('-', "_")
        ));
        let _remove = RemoveBuilt(wasm.clone());
        let build = cargo(
            &crate_dir,
            &["build", "--release", "--target", "wasm32-wasip2"],
        );
        assert!(build.status.success(), "{kind}: {}", text(&build.stderr));
        let component = std::fs::read(&wasm).expect("the component was built");
        assert!(
            component.starts_with(&COMPONENT_HEADER),
            "{} is not a component",
            wasm.display()
        );
        // And sluice loads it as the kind it was made for (the identity
        // template reads its users from a data file, as its README says;
        // an approval plugin needs a masking plugin beside it).
        let config = parent.path().join("sluice.toml");
        let extra = match kind {
            "identity" => {
                std::fs::write(
                    parent.path().join("users.txt"),
                    "alice SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy analysts\n",
                )
                .unwrap();
                "[plugins.files]\nusers = \"users.txt\"\n"
            }
            "approval" => {
                "[[plugins]]\nname = \"pans\"\nhook = \"masking\"\npath = \"builtin:luhn-masker\"\n"
            }
            _ => "",
        };
        std::fs::write(
            &config,
            format!(
                "[upstream]\nurl = \"postgres://svc@127.0.0.1:9/payments\"\n\
                 [[plugins]]\nname = \"mine\"\nhook = \"{kind}\"\npath = \"{}\"\n{extra}",
                wasm.display()
            ),
        )
        .unwrap();
        let checked = sluice(&["check", "-c", config.to_str().unwrap()]);
        assert!(
            checked.status.success(),
            "{kind}: {}{}",
            text(&checked.stdout),
            text(&checked.stderr)
        );

        let test = cargo(&crate_dir, &["test"]);
        assert!(
            test.status.success(),
            "{kind}: {}\n{}",
            text(&test.stdout),
            text(&test.stderr)
        );
        let passed = format!("test result: ok. {} passed", unit_tests(kind));
        assert!(
            text(&test.stdout).contains(&passed),
            "{kind}: {}",
            text(&test.stdout)
        );
    }
}

/// A name cargo or sluice would refuse is refused up front, saying why.
#[test]
fn invalid_name_is_refused() {
    let parent = tempfile::tempdir().unwrap();
    let dir_arg = parent.path().to_str().unwrap();
    for name in ["Bad_Name", "9lives", "../escape"] {
        let out = sluice(&["plugin", "new", name, "--dir", dir_arg]);
        assert!(!out.status.success(), "{name} was accepted");
        let stderr = text(&out.stderr);
        assert!(stderr.contains("invalid plugin name"), "{name}: {stderr}");
    }
    assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
}

/// An existing directory is never written into.
#[test]
fn existing_directory_is_refused() {
    let parent = tempfile::tempdir().unwrap();
    let dir_arg = parent.path().to_str().unwrap();
    let existing = parent.path().join("taken");
    std::fs::create_dir(&existing).unwrap();
    let out = sluice(&[
        "plugin", "new", "taken", "--kind", "masking", "--dir", dir_arg,
    ]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(std::fs::read_dir(&existing).unwrap().count(), 0);
}

/// Only the four hooks are kinds of plugin.
#[test]
fn unknown_kind_is_refused() {
    let parent = tempfile::tempdir().unwrap();
    let dir_arg = parent.path().to_str().unwrap();
    let out = sluice(&["plugin", "new", "x", "--kind", "audit", "--dir", dir_arg]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("possible values"), "{stderr}");
}
