//! Writing to sluice's log.
//!
//! Each line goes to sluice's log under the plugin's name, at the level
//! given; the host masks card numbers in it before it reaches any log.
//! Outside sluice (in native tests) lines go to standard error instead.
//!
//! ```no_run
//! sluice_plugin::log::info("rules loaded");
//! sluice_plugin::log::warn(format!("{} rules ignored", 2));
//! ```

pub use crate::wit::host::sluice::gateway::log::Level;

/// Writes `message` at `level`.
pub fn write(level: Level, message: impl AsRef<str>) {
    let message = message.as_ref();
    if cfg!(target_arch = "wasm32") {
        crate::wit::host::sluice::gateway::log::write(level, message);
    } else {
        eprintln!("[{level:?}] {message}");
    }
}

/// Writes `message` at trace level.
pub fn trace(message: impl AsRef<str>) {
    write(Level::Trace, message);
}

/// Writes `message` at debug level.
pub fn debug(message: impl AsRef<str>) {
    write(Level::Debug, message);
}

/// Writes `message` at info level.
pub fn info(message: impl AsRef<str>) {
    write(Level::Info, message);
}

/// Writes `message` at warn level.
pub fn warn(message: impl AsRef<str>) {
    write(Level::Warn, message);
}

/// Writes `message` at error level.
pub fn error(message: impl AsRef<str>) {
    write(Level::Error, message);
}
