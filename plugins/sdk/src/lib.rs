//! Write sluice plugins in Rust.
//!
//! sluice asks plugins four kinds of questions, one kind per plugin:
//!
//! | kind | trait | register with | asked |
//! |---|---|---|---|
//! | identity | [`identity::Identity`] | [`register_identity!`] | who a client is, once per login |
//! | policy | [`policy::Policy`] | [`register_policy!`] | whether a statement may run, once per statement |
//! | masking | [`masking::Masking`] | [`register_masking!`] | what to hide in results, errors and logs |
//! | approval | [`approval::Approval`] | [`register_approval!`] | how to ask humans about held statements |
//!
//! A plugin is one type implementing one of these traits, and one macro
//! call that registers it:
//!
//! ```
//! use sluice_plugin::policy::Policy;
//! use sluice_plugin::session::Session;
//! use sluice_plugin::types::{Decision, Statement, TableAction};
//!
//! /// Refuses DELETE without a real WHERE (a data-modifying CTE's too).
//! struct NoBlindDeletes;
//!
//! impl Policy for NoBlindDeletes {
//!     fn evaluate(_session: &Session, statement: &Statement) -> Decision {
//!         let deletes = statement.tables.iter().any(|t| t.action == TableAction::Delete);
//!         if deletes && !statement.has_where {
//!             return Decision::deny("no-blind-deletes", "DELETE needs a WHERE clause");
//!         }
//!         Decision::Allow
//!     }
//! }
//!
//! sluice_plugin::register_policy!(NoBlindDeletes);
//! ```
//!
//! `cargo build --release --target wasm32-wasip2` turns the crate (a
//! `cdylib`) into a WebAssembly component for the matching world of the
//! `sluice:gateway` WIT package, ready for sluice to load.
//!
//! # What the host promises, and what it enforces
//!
//! The trait methods have no `self`: a plugin is a set of pure functions of
//! their arguments and its configuration. sluice keeps a few warm instances
//! of every plugin and may call any of them, so a value cached in a
//! `static` (a parsed configuration, say) is per instance, and no call may
//! count on another having happened on the same instance first.
//!
//! Every call runs under the limits the operator set for the plugin: a
//! deadline per call and a memory cap. A panic, a deadline missed or the
//! memory cap reached all *fail closed*: the login is refused, the
//! statement denied, the result withheld, and sluice's log says why,
//! quoting what the call wrote to standard error (a panic's message). A
//! plugin has no network, and no filesystem or environment unless the
//! operator grants them; what it may use is in [`log`] (64 lines a call),
//! [`config`] and [`clock`] (and [`slack`] for approval plugins).
//!
//! # Configuration
//!
//! Each plugin's table in `sluice.toml` reaches it as JSON text through
//! [`config::get`], and the data files the operator names for it through
//! [`config::file`]. Every kind has a `check_config` method, run once on
//! each load and reload before any other call: return an error there to
//! have sluice refuse the configuration instead of failing later, one call
//! at a time.
//!
//! # Testing natively
//!
//! The SDK also builds for the machine you develop on, so the plugin's
//! logic can be unit-tested with a plain `cargo test` (no wasm runtime):
//! call the trait's functions directly. (There the `register_*!` macros
//! only check that the type implements the trait; they export it when
//! building for wasm.) Outside sluice the host
//! capabilities are not there: [`log`] writes to standard error and
//! [`clock`] reads the system clock, but [`config`] and [`slack`] panic,
//! so keep the logic to test in functions that take the configuration as
//! an argument. Test helpers such as [`types::Statement::new`],
//! [`masking::ValueBatch::from_values`] and [`masking::apply_text_edits`]
//! build the host's inputs and replay its handling of the answers.
#![deny(missing_docs)]

pub mod approval;
pub mod clock;
pub mod config;
pub mod identity;
pub mod log;
pub mod masking;
pub mod policy;
pub mod session;
pub mod slack;
pub mod types;

/// What every `register_*!` macro expands to: a check, on every target,
/// that the type implements the kind's trait (so a native `cargo test`
/// catches a wrong type), and for wasm only the exports of the `plugin`
/// interface and the kind's hook (export names are not symbols a native
/// linker takes).
#[doc(hidden)]
#[macro_export]
macro_rules! __register {
    ($plugin:ty, $kind:ident, $Trait:ident, $export:ident) => {
        const _: fn() = || {
            fn registered<T: $crate::$kind::$Trait>() {}
            registered::<$plugin>();
        };
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type SluiceAdapter = $crate::$kind::Adapter<$plugin>;
    $crate::wit::plugin::__export_plugin!(SluiceAdapter with_types_in $crate::wit::plugin);
    $crate::wit::$kind::$export!(SluiceAdapter with_types_in $crate::wit::$kind);
        };
    };
}

/// Generated bindings. Not part of the API: the modules above re-export
/// what plugins use, under stable names.
///
/// The bindings are not generated per world of `wit/worlds.wit` but per
/// piece of one, from the small worlds of the `sluice:sdk` package below,
/// because every world exports the same `plugin` interface and a crate can
/// hold the export macros of only one generated `plugin`. A `register_*!`
/// macro exports `plugin` and its hook, and `wit-component` unions the
/// pieces (the shared imports, `plugin`, the hook) back into the kind's
/// world when the component is made. The shared types and imports are
/// generated once, in `host`, and the hooks point at them with `with`, so
/// a `Statement` is one Rust type whatever the kind of plugin. sluice
/// checks every component against its kind's world when it loads it.
#[doc(hidden)]
pub mod wit {
    /// Generates the bindings of one world of the `sluice:sdk` package; the
    /// same package text every time, so the pieces union cleanly.
    macro_rules! bindings {
        ($world:tt $(, $option:ident: $value:tt)* $(,)?) => {
            wit_bindgen::generate!({
                inline: "
                    package sluice:sdk;

                    /// The types and imports every kind of plugin shares.
                    world host {
                        import sluice:gateway/types@0.4.0;
                        import sluice:gateway/session@0.4.0;
                        import sluice:gateway/log@0.4.0;
                        import sluice:gateway/config@0.4.0;
                        import sluice:gateway/clock@0.4.0;
                    }

                    /// What every kind of plugin exports.
                    world plugin {
                        export sluice:gateway/plugin@0.4.0;
                    }

                    world policy {
                        export sluice:gateway/policy@0.4.0;
                    }

                    world masking {
                        export sluice:gateway/masking@0.4.0;
                    }

                    world identity {
                        export sluice:gateway/identity@0.4.0;
                    }

                    world approval {
                        import sluice:gateway/slack@0.4.0;
                        export sluice:gateway/approval@0.4.0;
                    }
                ",
                path: "../../wit",
                world: $world,
                additional_derives: [PartialEq, Eq],
                $($option: $value,)*
            });
        };
    }

    #[allow(missing_docs)]
    pub mod host {
        bindings!("host", generate_unused_types: true, with: {
            "sluice:gateway/types@0.4.0": generate,
            "sluice:gateway/session@0.4.0": generate,
            "sluice:gateway/log@0.4.0": generate,
            "sluice:gateway/config@0.4.0": generate,
            "sluice:gateway/clock@0.4.0": generate,
        });
    }

    #[allow(missing_docs)]
    pub mod plugin {
        bindings!(
            "plugin",
            pub_export_macro: true,
            default_bindings_module: "sluice_plugin::wit::plugin",
            export_macro_name: "__export_plugin",
        );
    }

    #[allow(missing_docs)]
    pub mod policy {
        bindings!(
            "policy",
            with: {
                "sluice:gateway/types@0.4.0": crate::wit::host::sluice::gateway::types,
                "sluice:gateway/session@0.4.0": crate::wit::host::sluice::gateway::session,
            },
            pub_export_macro: true,
            default_bindings_module: "sluice_plugin::wit::policy",
            export_macro_name: "__export_policy",
        );
    }

    #[allow(missing_docs)]
    pub mod masking {
        bindings!(
            "masking",
            with: {
                "sluice:gateway/types@0.4.0": crate::wit::host::sluice::gateway::types,
                "sluice:gateway/session@0.4.0": crate::wit::host::sluice::gateway::session,
            },
            pub_export_macro: true,
            default_bindings_module: "sluice_plugin::wit::masking",
            export_macro_name: "__export_masking",
        );
    }

    #[allow(missing_docs)]
    pub mod identity {
        bindings!(
            "identity",
            with: { "sluice:gateway/types@0.4.0": crate::wit::host::sluice::gateway::types },
            pub_export_macro: true,
            default_bindings_module: "sluice_plugin::wit::identity",
            export_macro_name: "__export_identity",
        );
    }

    #[allow(missing_docs)]
    pub mod approval {
        bindings!(
            "approval",
            with: {
                "sluice:gateway/types@0.4.0": crate::wit::host::sluice::gateway::types,
                "sluice:gateway/slack@0.4.0": generate,
            },
            pub_export_macro: true,
            default_bindings_module: "sluice_plugin::wit::approval",
            export_macro_name: "__export_approval",
        );
    }
}
