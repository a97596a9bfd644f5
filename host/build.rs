//! Builds the plugins (`../plugins`, a workspace of its own) for
//! `wasm32-wasip2` with a nested cargo, into a target directory of their own
//! (a nested cargo on the outer target directory would wait forever on its
//! lock). It writes `$OUT_DIR/builtin_plugins.rs`, the shipped plugins
//! (`plugins/builtin/*`) embedded in the binary, and `$OUT_DIR/test_guests.rs`,
//! the paths of the test plugins (`plugins/guests/*`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let plugins = manifest_dir.join("../plugins");
    // The plugins' sources, not the whole directory: its `target/` (from a
    // `cargo test` there) would be walked at every build, and would rebuild
    // sluice whenever those tests ran.
    for source in ["sdk", "builtin", "guests", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", plugins.join(source).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("../wit").display()
    );

    let out_dir = PathBuf::from(env("OUT_DIR"));
    // <target>/<profile>/build/sluice-<hash>/out -> <target>/<profile>/plugins
    let target_dir = out_dir
        .ancestors()
        .nth(3)
        .expect("OUT_DIR is inside the target directory")
        .join("plugins");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(plugins.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        // Flags meant for the host build must not reach the wasm one.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_MAKEFLAGS")
        .status()
        .expect("run cargo for the plugins");
    if !status.success() {
        panic!(
            "building the plugins for wasm32-wasip2 failed; if the target is missing, \
             install it with `rustup target add wasm32-wasip2` (tests/run does)"
        );
    }

    let built = target_dir.join("wasm32-wasip2/release");
    let component = |stem: &str| built.join(format!("{stem}.wasm")).display().to_string();

    // Shipped plugins: one per directory under plugins/builtin, embedded.
    let builtins = crates_under(&plugins.join("builtin"));
    let mut table = String::from(
        "/// Builtin plugins: name and component bytes.\npub static BUILTIN: &[(&str, &[u8])] = &[\n",
    );
    for name in &builtins {
        table.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            component(&name.replace('-', "_"))
        ));
    }
    table.push_str("];\n");
    write_if_changed(&out_dir.join("builtin_plugins.rs"), &table);

    // Test plugins (plugins/guests/NAME, crates `guest-NAME`): paths only,
    // never embedded. From the sources, not the output directory, which
    // keeps the components of guests removed since.
    let guests = crates_under(&plugins.join("guests"));
    let mut paths = String::new();
    for stem in guests
        .iter()
        .map(|name| format!("guest_{}", name.replace('-', "_")))
    {
        paths.push_str(&format!(
            "/// Path of the `{stem}` test component.\npub const {}: &str = {:?};\n",
            stem.to_ascii_uppercase(),
            component(&stem)
        ));
    }
    write_if_changed(&out_dir.join("test_guests.rs"), &paths);
}

/// The directories under `dir` that hold a crate, by name, sorted.
fn crates_under(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok())
                .filter(|entry| entry.path().join("Cargo.toml").is_file())
                .filter_map(|entry| entry.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is set by cargo"))
}

fn write_if_changed(path: &Path, contents: &str) {
    if std::fs::read_to_string(path).ok().as_deref() != Some(contents) {
        std::fs::write(path, contents).expect("write the plugin constants");
    }
}
