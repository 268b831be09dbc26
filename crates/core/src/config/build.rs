//! What a configuration builds: its schema and its alert rules. (Here, and
//! not in `schema` or `alerts`, so that those depend on nothing above
//! them: they take their own sections, the configuration gathers them.)

use super::{Config, ConfigError};
use crate::alerts::{parse_rules, Rule, RuleError};
use crate::schema::Schema;

impl Schema {
    /// The schema of the built-in configuration.
    pub fn builtin() -> Schema {
        Schema::from_config(&Config::builtin()).expect("built-in schema is valid")
    }

    /// Builds the schema from a configuration's `events:` section, its
    /// `strict` flag and its payload limit.
    pub fn from_config(config: &Config) -> Result<Schema, ConfigError> {
        Schema::from_decls(
            &config.events,
            config.strict,
            config.limits.max_payload_bytes,
        )
        .map_err(|message| ConfigError::Invalid {
            origin: config.origin.clone(),
            message,
        })
    }
}

impl Config {
    /// The configuration's alert rules, parsed; the first bad one is the
    /// error.
    pub fn rules(&self) -> Result<Vec<Rule>, RuleError> {
        parse_rules(&self.alerts)
    }
}
