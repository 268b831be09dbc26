//! The configuration file, read from disk. What it holds, how it is
//! checked and how it is laid over the built-in one is pure and lives in
//! [`agentpulse_core::config`] (all of it is re-exported here); this
//! module adds the one step that touches the file system.

use std::path::Path;

pub use agentpulse_core::config::*;

/// Reads `path` and lays it over the built-in configuration.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    Config::from_yaml(&text, &path.display().to_string())
}

/// The file at `path` over the built-in default when given, else the
/// built-in default.
pub fn load_or_builtin(path: Option<&Path>) -> Result<Config, ConfigError> {
    match path {
        Some(p) => load(p),
        None => Ok(Config::builtin()),
    }
}
