//! The configuration file: the original's `observability.yaml` format.
//!
//! One YAML file declares the event types and their fields (`events:`), the
//! destinations, the metrics to track and their window, and alert rules.
//! The original project's file is embedded as the default, so agentpulse
//! needs no file at all. Keys agentpulse adds to the format:
//!
//! - `strict: true` (top level): refuse event types the file does not declare.
//! - `limits.max_payload_bytes` (default 65536): largest accepted payload.
//! - an `emit:` entry may be `field: kind` instead of a bare `field`, to give
//!   its type explicitly (kinds: see [`crate::schema::FieldKind`]).

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

/// The content of the original project's `observability.yaml`, the built-in
/// default when no file is given.
pub const DEFAULT_CONFIG_YAML: &str = include_str!("../config/observability.yaml");

/// A configuration file could not be read or understood.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The YAML is malformed or has the wrong shape.
    #[error("invalid config {origin}: {message}")]
    Parse {
        /// The file, or `<built-in>`.
        origin: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The content is well-formed but not acceptable.
    #[error("invalid config {origin}: {message}")]
    Invalid {
        /// The file, or `<built-in>`.
        origin: String,
        /// What is wrong and where.
        message: String,
    },
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// Format version (1).
    #[serde(default = "one")]
    pub version: u32,
    /// Declared event types and the fields each must carry.
    #[serde(default)]
    pub events: Vec<EventDecl>,
    /// Where events go.
    #[serde(default)]
    pub destinations: Vec<Destination>,
    /// Which metrics are tracked and how they are aggregated.
    #[serde(default)]
    pub metrics: MetricsSection,
    /// Alert rules, kept as written; evaluated by the alerting layer.
    #[serde(default)]
    pub alerts: Vec<Value>,
    /// Refuse undeclared event types.
    #[serde(default)]
    pub strict: bool,
    /// Size limits.
    #[serde(default)]
    pub limits: Limits,
    /// Where this configuration came from (a path, or `<built-in>`).
    #[serde(skip)]
    pub origin: String,
}

fn one() -> u32 {
    1
}

/// One declared event type.
#[derive(Debug, Clone, Deserialize)]
pub struct EventDecl {
    /// The event type name.
    #[serde(rename = "on")]
    pub on: String,
    /// The fields its payload must carry.
    #[serde(default)]
    pub emit: Vec<FieldDecl>,
}

/// A field of an event declaration: a bare name, or `name: kind`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FieldDecl {
    /// A field whose kind is inferred from its name.
    Name(String),
    /// A field with an explicit kind.
    Typed(std::collections::BTreeMap<String, String>),
}

/// One destination entry (`type: websocket | console | file`).
#[derive(Debug, Clone, Deserialize)]
pub struct Destination {
    /// `websocket`, `console` or `file`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Whether it is on.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// For `file`: the log path (directory and file name).
    #[serde(default)]
    pub path: Option<String>,
    /// For `console`: the minimum level shown.
    #[serde(default)]
    pub level: Option<String>,
    /// For `websocket`: the URL the original served.
    #[serde(default)]
    pub url: Option<String>,
}

fn yes() -> bool {
    true
}

/// The `metrics:` section.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MetricsSection {
    /// KPI names to track.
    #[serde(default)]
    pub track: Vec<String>,
    /// Aggregation settings.
    #[serde(default)]
    pub aggregate: Aggregate,
}

/// `metrics.aggregate`.
#[derive(Debug, Clone, Deserialize)]
pub struct Aggregate {
    /// Rolling window length in minutes (default 60).
    #[serde(default = "sixty")]
    pub window_minutes: u32,
    /// Bucket granularities kept (`hourly`, `daily`, `weekly`).
    #[serde(default)]
    pub buckets: Vec<String>,
}

impl Default for Aggregate {
    fn default() -> Self {
        Aggregate {
            window_minutes: 60,
            buckets: vec!["hourly".into(), "daily".into(), "weekly".into()],
        }
    }
}

fn sixty() -> u32 {
    60
}

/// `limits:` (an agentpulse extension).
#[derive(Debug, Clone, Deserialize)]
pub struct Limits {
    /// Largest accepted serialised payload, in bytes.
    #[serde(default = "default_max_payload")]
    pub max_payload_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: default_max_payload(),
        }
    }
}

fn default_max_payload() -> usize {
    64 * 1024
}

/// The six KPI names of the contract.
pub const KPI_NAMES: [&str; 6] = [
    "agent_utilization",
    "cost_per_feature",
    "average_retry_count",
    "critic_rejection_rate",
    "validation_pass_rate",
    "time_to_completion",
];

impl Config {
    /// The built-in default (the original project's file).
    pub fn builtin() -> Config {
        Config::from_yaml(DEFAULT_CONFIG_YAML, "<built-in>").expect("built-in config is valid")
    }

    /// Reads `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_yaml(&text, &path.display().to_string())
    }

    /// The file at `path` when given, else the built-in default.
    pub fn load_or_builtin(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            Some(p) => Config::load(p),
            None => Ok(Config::builtin()),
        }
    }

    /// Parses YAML text; `origin` names it in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let mut config: Config = serde_norway::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        config.origin = origin.to_string();
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            origin: self.origin.clone(),
            message,
        };
        if self.version != 1 {
            return Err(invalid(format!(
                "version {} is not supported (only 1)",
                self.version
            )));
        }
        for (i, m) in self.metrics.track.iter().enumerate() {
            if !KPI_NAMES.contains(&m.as_str()) {
                return Err(invalid(format!(
                    "metrics.track[{i}]: unknown metric `{m}` (known: {})",
                    KPI_NAMES.join(", ")
                )));
            }
        }
        for (i, b) in self.metrics.aggregate.buckets.iter().enumerate() {
            if !["hourly", "daily", "weekly"].contains(&b.as_str()) {
                return Err(invalid(format!(
                    "metrics.aggregate.buckets[{i}]: unknown bucket `{b}` (hourly, daily, weekly)"
                )));
            }
        }
        let w = self.metrics.aggregate.window_minutes;
        if !(1..=7 * 24 * 60).contains(&w) {
            return Err(invalid(format!(
                "metrics.aggregate.window_minutes: {w} is outside 1..=10080"
            )));
        }
        for (i, d) in self.destinations.iter().enumerate() {
            if !["websocket", "console", "file"].contains(&d.kind.as_str()) {
                return Err(invalid(format!(
                    "destinations[{i}].type: unknown destination `{}` (websocket, console, file)",
                    d.kind
                )));
            }
        }
        if self.limits.max_payload_bytes == 0 {
            return Err(invalid("limits.max_payload_bytes must be > 0".into()));
        }
        // Building the schema checks the event declarations.
        crate::schema::Schema::from_config(self).map(|_| ())
    }

    /// The first destination of `kind`, if any.
    pub fn destination(&self, kind: &str) -> Option<&Destination> {
        self.destinations.iter().find(|d| d.kind == kind)
    }

    /// Whether destination `kind` is present and enabled (absent means on:
    /// a file without `destinations:` keeps every output).
    pub fn destination_enabled(&self, kind: &str) -> bool {
        self.destination(kind).map(|d| d.enabled).unwrap_or(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_is_the_contract_file() {
        let shared =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/contract/observability.yaml");
        if let Ok(text) = std::fs::read_to_string(shared) {
            assert_eq!(text, DEFAULT_CONFIG_YAML);
        }
        let c = Config::builtin();
        assert_eq!(c.events.len(), 7);
        assert_eq!(c.metrics.aggregate.window_minutes, 60);
        assert_eq!(c.alerts.len(), 4);
        assert!(c.destination_enabled("file"));
        assert_eq!(
            c.destination("file").unwrap().path.as_deref(),
            Some("logs/agent-events.jsonl")
        );
    }

    #[test]
    fn errors_name_the_place() {
        let e = Config::from_yaml("events: [", "x.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.yaml"), "{e}");
        assert!(e.contains("line"), "{e}");

        let e = Config::from_yaml("metrics:\n  track: [nope]\n", "x.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("metrics.track[0]: unknown metric `nope`"), "{e}");

        let e = Config::from_yaml("events:\n  - on: \"Bad Type\"\n", "x.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("events[0]"), "{e}");
    }
}
