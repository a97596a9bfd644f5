//! Values for exercising plugins outside a session: the runtime's unit
//! tests and the plugin-call benchmark. Not part of the gateway's API.

use std::sync::Arc;

use super::bindings::types::{ConnectionInfo, Principal, Statement, StatementKind};
use super::host_api::SessionInfo;
use crate::config::{
    DEFAULT_PLUGIN_DEADLINE, DEFAULT_PLUGIN_MAX_INSTANCES, DEFAULT_PLUGIN_MEMORY_MB, Hook,
    PluginSettings, PluginSource,
};

/// Settings for the component at `path` with the default limits.
pub fn plugin_settings(name: &str, hook: Hook, path: &str, config_json: &str) -> PluginSettings {
    PluginSettings {
        name: name.to_owned(),
        hook,
        source: PluginSource::File(path.into()),
        deadline: DEFAULT_PLUGIN_DEADLINE,
        memory_bytes: (DEFAULT_PLUGIN_MEMORY_MB as usize) << 20,
        max_instances: DEFAULT_PLUGIN_MAX_INSTANCES,
        config_json: config_json.to_owned(),
        files: Default::default(),
        env: Vec::new(),
        read_dirs: Vec::new(),
    }
}

/// A session as a loopback client `agent` would have.
pub fn session() -> Arc<SessionInfo> {
    Arc::new(SessionInfo {
        session_id: 1,
        principal: Principal {
            id: "agent".into(),
            groups: vec!["agents".into()],
            attributes: vec![],
            expires_at: None,
        },
        connection: ConnectionInfo {
            client_address: "127.0.0.1:50000".into(),
            tls: false,
            database: "payments".into(),
            application_name: None,
        },
    })
}

/// A statement of `kind` with nothing but its text analysed.
pub fn statement(kind: StatementKind, text: &str) -> Statement {
    Statement {
        text: text.into(),
        kind,
        command: text
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase(),
        tables: vec![],
        columns: vec![],
        functions: vec![],
        has_where: true,
        settings: vec![],
        copy_endpoint: None,
        wrappers: vec![],
        is_multi: false,
        params: vec![],
    }
}
