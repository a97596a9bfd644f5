//! The plugin's config table: which issuer and audience to trust, which
//! claims name the user and the groups, and how much clock skew to allow.

use serde::Deserialize;

/// Most clock skew an operator may allow. The leeway stretches every
/// token's life by as much; clocks further apart than this need fixing,
/// not tolerating.
pub const MAX_LEEWAY_SECONDS: u64 = 300;

/// The config table, checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The `iss` tokens must carry, exactly as the IdP writes it (OIDC
    /// discovery's `issuer`, trailing slash and all).
    pub issuer: String,
    /// A value the token's `aud` must hold (usually the client id the IdP
    /// gave sluice's users).
    pub audience: String,
    /// The claim whose string value is the principal's id, and must be the
    /// startup user.
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    /// The claim listing the principal's groups.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Clock skew allowed when checking `exp` and `nbf`.
    #[serde(default = "default_leeway_seconds")]
    pub leeway_seconds: u64,
}

fn default_user_claim() -> String {
    "sub".to_owned()
}

fn default_groups_claim() -> String {
    "groups".to_owned()
}

fn default_leeway_seconds() -> u64 {
    60
}

impl Settings {
    /// Reads the config table (JSON, as the host hands it over) and checks
    /// what serde cannot.
    pub fn parse(json: &str) -> Result<Self, String> {
        let settings: Settings = serde_json::from_str(json).map_err(|error| {
            format!(
                "plugin config: {}",
                sluice_plugin::config::without_json_position(&error.to_string())
            )
        })?;
        for (key, value) in [
            ("issuer", &settings.issuer),
            ("audience", &settings.audience),
            ("user_claim", &settings.user_claim),
            ("groups_claim", &settings.groups_claim),
        ] {
            if value.trim().is_empty() {
                return Err(format!("plugin config: `{key}` is empty"));
            }
        }
        if settings.leeway_seconds > MAX_LEEWAY_SECONDS {
            return Err(format!(
                "plugin config: `leeway_seconds` is {}, at most {MAX_LEEWAY_SECONDS} is allowed",
                settings.leeway_seconds
            ));
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_in_the_optional_keys() {
        let settings =
            Settings::parse(r#"{"issuer": "https://idp.example.com", "audience": "sluice"}"#)
                .unwrap();
        assert_eq!(settings.issuer, "https://idp.example.com");
        assert_eq!(settings.audience, "sluice");
        assert_eq!(settings.user_claim, "sub");
        assert_eq!(settings.groups_claim, "groups");
        assert_eq!(settings.leeway_seconds, 60);

        let settings = Settings::parse(
            r#"{"issuer": "i", "audience": "a", "user_claim": "email",
                "groups_claim": "roles", "leeway_seconds": 0}"#,
        )
        .unwrap();
        assert_eq!(settings.user_claim, "email");
        assert_eq!(settings.groups_claim, "roles");
        assert_eq!(settings.leeway_seconds, 0);
    }

    #[test]
    fn issuer_and_audience_are_required() {
        let error = Settings::parse(r#"{"audience": "sluice"}"#).unwrap_err();
        assert_eq!(error, "plugin config: missing field `issuer`");
        let error = Settings::parse(r#"{"issuer": "i"}"#).unwrap_err();
        assert_eq!(error, "plugin config: missing field `audience`");
        let error = Settings::parse(r#"{"issuer": " ", "audience": "a"}"#).unwrap_err();
        assert_eq!(error, "plugin config: `issuer` is empty");
        let error =
            Settings::parse(r#"{"issuer": "i", "audience": "a", "user_claim": ""}"#).unwrap_err();
        assert_eq!(error, "plugin config: `user_claim` is empty");
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_refused() {
        let error =
            Settings::parse(r#"{"issuer": "i", "audience": "a", "audiences": ["b"]}"#).unwrap_err();
        assert!(
            error.starts_with("plugin config: unknown field `audiences`"),
            "{error}"
        );
        let error = Settings::parse(r#"{"issuer": "i", "audience": "a", "leeway_seconds": -5}"#)
            .unwrap_err();
        assert!(error.contains("invalid value: integer `-5`"), "{error}");
        let error = Settings::parse(r#"{"issuer": "i", "audience": ["a"]}"#).unwrap_err();
        assert!(error.contains("invalid type: sequence"), "{error}");
    }

    #[test]
    fn leeway_is_bounded() {
        assert!(
            Settings::parse(r#"{"issuer": "i", "audience": "a", "leeway_seconds": 300}"#).is_ok()
        );
        let error = Settings::parse(r#"{"issuer": "i", "audience": "a", "leeway_seconds": 301}"#)
            .unwrap_err();
        assert!(error.contains("at most 300"), "{error}");
    }
}
