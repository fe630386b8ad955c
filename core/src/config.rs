//! Start-up configuration errors: every refusal names the setting at fault.

/// A bad setting found at start-up. `setting` is the flag (and its env var
/// is `ENSEMBLE_` + the flag in upper snake case).
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {setting}: {reason}")]
pub struct ConfigError {
    pub setting: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(setting: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            setting: setting.into(),
            reason: reason.into(),
        }
    }
}

/// Checks a `host:port` listen address.
pub fn parse_listen(setting: &str, value: &str) -> Result<std::net::SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        ConfigError::new(
            setting,
            format!("`{value}` is not an address like 127.0.0.1:8080"),
        )
    })
}

/// Checks `--ops-listen`: unset or empty means the ops routes stay on
/// `--listen`; otherwise another address.
pub fn parse_ops_listen(
    listen: std::net::SocketAddr,
    value: Option<&str>,
) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    let ops = value
        .filter(|s| !s.is_empty())
        .map(|s| parse_listen("--ops-listen", s))
        .transpose()?;
    if ops == Some(listen) {
        return Err(ConfigError::new(
            "--ops-listen",
            "must differ from --listen (leave it unset to serve both on one port)",
        ));
    }
    Ok(ops)
}
