//! Rust bindings of the `sluice:gateway` WIT package, one set per world.
//!
//! The policy world's bindings own the shared types and the host
//! capabilities (session, log, config, clock); the other worlds reuse them,
//! so a `Principal` or a `Column` is one Rust type whichever hook it goes
//! to.

/// The policy world: its bindings also define the shared interfaces.
pub mod policy {
    wasmtime::component::bindgen!({
        world: "policy-plugin",
        path: "../wit",
        // A session handle is lent only for the length of a call; a method
        // called without one traps rather than answer for another session.
        // They answer from memory, so they are plain (not async) calls.
        imports: {
            "sluice:gateway/session.[method]session.id": trappable,
            "sluice:gateway/session.[method]session.principal": trappable,
            "sluice:gateway/session.[method]session.connection": trappable,
            default: async,
        },
        exports: { default: async },
        // The analysis compares and deduplicates what it reports.
        additional_derives: [PartialEq, Eq],
    });
}

/// The identity world.
pub mod identity {
    wasmtime::component::bindgen!({
        world: "identity-plugin",
        path: "../wit",
        imports: { default: async },
        exports: { default: async },
        with: {
            "sluice:gateway/types": super::policy::sluice::gateway::types,
            "sluice:gateway/log": super::policy::sluice::gateway::log,
            "sluice:gateway/config": super::policy::sluice::gateway::config,
            "sluice:gateway/clock": super::policy::sluice::gateway::clock,
        },
    });
}

/// The masking world.
pub mod masking {
    wasmtime::component::bindgen!({
        world: "masking-plugin",
        path: "../wit",
        imports: { default: async },
        exports: { default: async },
        with: {
            "sluice:gateway/types": super::policy::sluice::gateway::types,
            "sluice:gateway/session": super::policy::sluice::gateway::session,
            "sluice:gateway/log": super::policy::sluice::gateway::log,
            "sluice:gateway/config": super::policy::sluice::gateway::config,
            "sluice:gateway/clock": super::policy::sluice::gateway::clock,
        },
    });
}

/// The approval world, the only one that may import `slack`.
pub mod approval {
    wasmtime::component::bindgen!({
        world: "approval-plugin",
        path: "../wit",
        imports: { default: async },
        exports: { default: async },
        with: {
            "sluice:gateway/types": super::policy::sluice::gateway::types,
            "sluice:gateway/log": super::policy::sluice::gateway::log,
            "sluice:gateway/config": super::policy::sluice::gateway::config,
            "sluice:gateway/clock": super::policy::sluice::gateway::clock,
        },
    });
}

pub use policy::sluice::gateway::{clock, config, log, session, types};
