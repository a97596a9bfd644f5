//! Plugins shipped inside the sluice binary, named in config as
//! `builtin:NAME`. The build script compiles `plugins/builtin/*` for
//! wasm32-wasip2 and embeds the components.

mod built {
    include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));
}

/// The component bytes of a builtin plugin.
pub fn get(name: &str) -> Option<&'static [u8]> {
    built::BUILTIN
        .iter()
        .find(|(builtin, _)| *builtin == name)
        .map(|(_, bytes)| *bytes)
}

/// Names of the builtin plugins.
pub fn names() -> Vec<&'static str> {
    built::BUILTIN.iter().map(|(name, _)| *name).collect()
}

/// Paths of the test plugins the build script built (`plugins/guests/*`),
/// for tests that load them by path as an operator would.
#[doc(hidden)]
pub mod test_guests {
    include!(concat!(env!("OUT_DIR"), "/test_guests.rs"));
}
