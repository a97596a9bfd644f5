//! Time.

/// Wall-clock time, in milliseconds since the Unix epoch. Outside sluice
/// (in native tests) it is the system clock's.
pub fn now() -> u64 {
    if cfg!(target_arch = "wasm32") {
        crate::wit::host::sluice::gateway::clock::now()
    } else {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as u64)
    }
}
