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
//! - `alerts:` entries take `min_samples` and `repeat_interval` besides the
//!   original `condition`, `action` and `message`; `notifiers:` says what an
//!   alert's `action` does and `budgets:` declares spending limits. All three
//!   are documented in [`crate::alerts`], and checked at load: a bad rule
//!   fails with its position (`alerts[2].condition: ...`).
//! - `prices:` model prices (USD per million tokens) that extend and
//!   override the built-in table of [`crate::otel::prices`], used to cost
//!   OpenTelemetry spans and records that carry tokens but no cost
//!   ([`PriceConfig`]; a bad entry fails with its position:
//!   `prices[1].input_per_mtok: ...`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
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
    /// Alert rules, kept as written (so `/api/config` shows them verbatim);
    /// checked at load and parsed by [`crate::alerts::parse_rules`].
    #[serde(default)]
    pub alerts: Vec<Value>,
    /// What each alert `action` does: action name → notifiers. An action
    /// with no entry notifies the console only ([`Config::notifiers_for`]).
    #[serde(default)]
    pub notifiers: BTreeMap<String, Vec<NotifierConfig>>,
    /// Spending limits, tracked by [`crate::alerts::BudgetTracker`].
    #[serde(default)]
    pub budgets: Vec<BudgetConfig>,
    /// Refuse undeclared event types.
    #[serde(default)]
    pub strict: bool,
    /// Size limits.
    #[serde(default)]
    pub limits: Limits,
    /// Model prices that extend and override the built-in table.
    #[serde(default)]
    pub prices: Vec<PriceConfig>,
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

/// A length of time in seconds, written `30s`, `5m`, `1h`, `1d` or as a
/// number of seconds (`90`, `"90"`, `2.5`). Always finite and > 0.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize)]
#[serde(transparent)]
pub struct Seconds(pub f64);

impl Seconds {
    /// The longest accepted: 365 days.
    pub const MAX: f64 = 365.0 * 86_400.0;

    /// Reads a YAML/JSON value: a number of seconds or a string `<n>[s|m|h|d]`.
    /// The error says what was expected.
    pub fn parse(v: &Value) -> Result<Seconds, String> {
        let expected = "expected a duration such as 30s, 5m, 1h, 1d or a number of seconds";
        let secs = match v {
            Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
            Value::String(s) => {
                let t = s.trim();
                let (num, unit) = match t.char_indices().last() {
                    Some((i, c @ ('s' | 'm' | 'h' | 'd'))) => (&t[..i], c),
                    _ => (t, 's'),
                };
                let num = num.trim_end();
                // Only plain decimal numbers: no `inf`, `nan`, signs or exponents.
                if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                    return Err(format!("{expected}, got {s:?}"));
                }
                let n: f64 = num.parse().map_err(|_| format!("{expected}, got {s:?}"))?;
                n * match unit {
                    'm' => 60.0,
                    'h' => 3_600.0,
                    'd' => 86_400.0,
                    _ => 1.0,
                }
            }
            other => return Err(format!("{expected}, got {other}")),
        };
        if !(secs.is_finite() && secs > 0.0) {
            return Err(format!("must be more than 0 seconds, got {v}"));
        }
        if secs > Seconds::MAX {
            return Err(format!("must be at most 365 days, got {v}"));
        }
        Ok(Seconds(secs))
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Seconds::parse(&v).map_err(serde::de::Error::custom)
    }
}

/// One notifier of an action (`notifiers.<action>[i]`), chosen by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum NotifierConfig {
    /// `type: console`: a line on the hub's standard error.
    Console {},
    /// `type: webhook`: an HTTP POST of the alert.
    Webhook {
        /// `http://` or `https://` URL.
        url: String,
        /// Body format (default `json`).
        #[serde(default)]
        format: WebhookFormat,
        /// Per-attempt timeout (default chosen by the notifier).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout: Option<Seconds>,
        /// Further attempts after a failure (default chosen by the notifier).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retries: Option<u32>,
    },
    /// `type: command`: runs a program (no shell), the alert on its stdin.
    Command {
        /// Program and arguments; the first item is the program.
        command: Vec<String>,
    },
}

/// The body a webhook notifier sends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// The alert event as JSON.
    #[default]
    Json,
    /// A Slack incoming-webhook body (`{"text": ...}`).
    Slack,
}

/// The notifiers of an action that has no `notifiers:` entry.
pub const DEFAULT_NOTIFIERS: &[NotifierConfig] = &[NotifierConfig::Console {}];

/// The largest `retries` a webhook notifier accepts.
pub const MAX_WEBHOOK_RETRIES: u32 = 10;

/// What a budget's spend is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetScope {
    /// All spend together.
    Global,
    /// Per feature (the `feature` of the task's `task_queued`).
    Feature,
    /// Per `task_id`.
    Task,
    /// Per `agent`.
    Agent,
}

impl BudgetScope {
    /// The lowercase name.
    pub const fn as_str(self) -> &'static str {
        match self {
            BudgetScope::Global => "global",
            BudgetScope::Feature => "feature",
            BudgetScope::Task => "task",
            BudgetScope::Agent => "agent",
        }
    }
}

/// The period over which a budget's spend is summed (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetPeriod {
    /// From 00:00 UTC.
    Day,
    /// ISO week, from Monday 00:00 UTC.
    Week,
    /// Calendar month, from the 1st 00:00 UTC.
    Month,
    /// Never resets.
    Lifetime,
}

impl BudgetPeriod {
    /// The lowercase name.
    pub const fn as_str(self) -> &'static str {
        match self {
            BudgetPeriod::Day => "day",
            BudgetPeriod::Week => "week",
            BudgetPeriod::Month => "month",
            BudgetPeriod::Lifetime => "lifetime",
        }
    }
}

/// One `budgets:` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// What the spend is grouped by.
    pub scope: BudgetScope,
    /// Over which period it is summed.
    pub period: BudgetPeriod,
    /// The limit in USD: finite and > 0.
    pub limit_usd: f64,
    /// Fraction of the limit at which `budget_warning` is emitted, in
    /// (0, 1] (default 0.8).
    #[serde(default = "default_warn_at")]
    pub warn_at: f64,
}

fn default_warn_at() -> f64 {
    0.8
}

/// One `prices:` entry (and one row of the built-in table): USD per million
/// tokens of a model.
///
/// ```yaml
/// prices:
///   - model: my-model
///     input_per_mtok: 2.0
///     output_per_mtok: 10.0
///     cache_read_per_mtok: 0.2     # optional; default: the input price
///     cache_write_per_mtok: 2.5    # optional; default: the input price
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    /// The model name (matched after normalisation, see
    /// [`crate::otel::prices::normalize`]).
    pub model: String,
    /// Other names of the same model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Input (prompt) tokens not read from or written to a cache.
    pub input_per_mtok: f64,
    /// Output (completion) tokens.
    pub output_per_mtok: f64,
    /// Input tokens read from the provider's cache (default: the input price).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_per_mtok: Option<f64>,
    /// Input tokens written to the provider's cache (default: the input price).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_per_mtok: Option<f64>,
}

/// The largest price per million tokens taken (USD).
pub const MAX_PRICE_PER_MTOK: f64 = 1_000_000.0;

impl PriceConfig {
    /// Checks the entry; the error names the field (`input_per_mtok: ...`).
    pub fn check(&self) -> Result<(), String> {
        if self.model.trim().is_empty() {
            return Err("model: expected a non-empty model name".into());
        }
        for (i, a) in self.aliases.iter().enumerate() {
            if a.trim().is_empty() {
                return Err(format!("aliases[{i}]: expected a non-empty model name"));
            }
        }
        let prices = [
            ("input_per_mtok", Some(self.input_per_mtok)),
            ("output_per_mtok", Some(self.output_per_mtok)),
            ("cache_read_per_mtok", self.cache_read_per_mtok),
            ("cache_write_per_mtok", self.cache_write_per_mtok),
        ];
        for (name, v) in prices {
            if let Some(v) = v {
                if !(v.is_finite() && (0.0..=MAX_PRICE_PER_MTOK).contains(&v)) {
                    return Err(format!(
                        "{name}: expected USD per million tokens, a number in 0..=1000000, got {v}"
                    ));
                }
            }
        }
        Ok(())
    }
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
        crate::alerts::parse_rules(self).map_err(|e| invalid(e.to_string()))?;
        self.check_notifiers().map_err(invalid)?;
        self.check_budgets().map_err(invalid)?;
        self.check_prices().map_err(invalid)?;
        // Building the schema checks the event declarations.
        crate::schema::Schema::from_config(self).map(|_| ())
    }

    fn check_notifiers(&self) -> Result<(), String> {
        for (name, list) in &self.notifiers {
            if !crate::alerts::is_action_name(name) {
                return Err(format!(
                    "notifiers: bad action name {name:?} ({})",
                    crate::alerts::ACTION_NAME_RULE
                ));
            }
            for (i, n) in list.iter().enumerate() {
                let at = format!("notifiers.{name}[{i}]");
                match n {
                    NotifierConfig::Console {} => {}
                    NotifierConfig::Webhook { url, retries, .. } => {
                        let rest = url
                            .strip_prefix("http://")
                            .or_else(|| url.strip_prefix("https://"));
                        if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
                            return Err(format!(
                                "{at}.url: expected an http:// or https:// URL with a host, got {url:?}"
                            ));
                        }
                        if retries.is_some_and(|r| r > MAX_WEBHOOK_RETRIES) {
                            return Err(format!("{at}.retries: at most {MAX_WEBHOOK_RETRIES}"));
                        }
                    }
                    NotifierConfig::Command { command } => {
                        if command.first().is_none_or(|p| p.is_empty()) {
                            return Err(format!(
                                "{at}.command: expected [program, args...] with a non-empty program"
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn check_budgets(&self) -> Result<(), String> {
        for (i, b) in self.budgets.iter().enumerate() {
            if !(b.limit_usd.is_finite()
                && b.limit_usd > 0.0
                && b.limit_usd <= crate::metrics::MAX_AMOUNT)
            {
                return Err(format!(
                    "budgets[{i}].limit_usd: expected a number > 0 and <= 1e12, got {}",
                    b.limit_usd
                ));
            }
            if !(b.warn_at > 0.0 && b.warn_at <= 1.0) {
                return Err(format!(
                    "budgets[{i}].warn_at: expected a fraction in (0, 1], got {}",
                    b.warn_at
                ));
            }
        }
        Ok(())
    }

    fn check_prices(&self) -> Result<(), String> {
        let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for (i, p) in self.prices.iter().enumerate() {
            p.check().map_err(|e| format!("prices[{i}].{e}"))?;
            for name in std::iter::once(&p.model).chain(&p.aliases) {
                let key = crate::otel::prices::normalize(name);
                if let Some(j) = seen.insert(key, i) {
                    if j != i {
                        return Err(format!(
                            "prices[{i}].model: {name:?} is priced twice (also prices[{j}]; names match after normalisation)"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The notifiers of alert action `action`: its `notifiers:` entry, or
    /// the console alone ([`DEFAULT_NOTIFIERS`]) when it has none. An
    /// explicit empty list (`notify_admin: []`) silences the action.
    pub fn notifiers_for(&self, action: &str) -> &[NotifierConfig] {
        self.notifiers
            .get(action)
            .map(Vec::as_slice)
            .unwrap_or(DEFAULT_NOTIFIERS)
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

    #[test]
    fn prices_section() {
        let c = Config::from_yaml(
            "prices:\n  - model: my-model\n    input_per_mtok: 2.0\n    output_per_mtok: 10.0\n    cache_read_per_mtok: 0.2\n",
            "p.yaml",
        )
        .unwrap();
        assert_eq!(c.prices[0].model, "my-model");
        assert_eq!(c.prices[0].cache_read_per_mtok, Some(0.2));
        assert_eq!(c.prices[0].cache_write_per_mtok, None);
        assert!(Config::builtin().prices.is_empty());
        let err = |yaml: &str| Config::from_yaml(yaml, "x.yaml").unwrap_err().to_string();
        let e = err("prices:\n  - {model: a, input_per_mtok: 1, output_per_mtok: 1}\n  - {model: b, input_per_mtok: -1, output_per_mtok: 1}\n");
        assert!(
            e.contains("prices[1].input_per_mtok: expected USD per million tokens"),
            "{e}"
        );
        let e = err("prices:\n  - {model: \"\", input_per_mtok: 1, output_per_mtok: 1}\n");
        assert!(
            e.contains("prices[0].model: expected a non-empty model name"),
            "{e}"
        );
        let e = err("prices:\n  - {model: gpt-4.1, input_per_mtok: 1, output_per_mtok: 1}\n  - {model: GPT-4-1-2025-04-14, input_per_mtok: 1, output_per_mtok: 1}\n");
        assert!(
            e.contains("prices[1].model: \"GPT-4-1-2025-04-14\" is priced twice (also prices[0]"),
            "{e}"
        );
        let e = err("prices:\n  - {model: a, input_per_mtok: 1}\n");
        assert!(e.contains("output_per_mtok"), "{e}");
        let e = err(
            "prices:\n  - {model: a, input_per_mtok: 1, output_per_mtok: 1, cache_per_mtok: 1}\n",
        );
        assert!(e.contains("cache_per_mtok"), "{e}");
    }

    const ALERTING: &str = r#"
alerts:
  - condition: "critic_rejection_rate > 0.50"
    action: notify_admin
    message: "Critic rejecting >50% of tests"
    min_samples: 5
    repeat_interval: 1h
  - condition: "events_dropped>0"
    action: warn_user
notifiers:
  notify_admin:
    - type: webhook
      url: http://127.0.0.1:9999/hook
      format: slack
      timeout: 5s
      retries: 3
    - type: command
      command: ["/usr/bin/logger", "-t", "agentpulse"]
  warn_user:
    - type: console
  quiet: []
budgets:
  - scope: global
    period: day
    limit_usd: 50
    warn_at: 0.8
  - scope: feature
    period: month
    limit_usd: 5.5
"#;

    #[test]
    fn alerting_sections() {
        let c = Config::from_yaml(ALERTING, "a.yaml").unwrap();
        assert_eq!(c.alerts.len(), 2);
        assert_eq!(
            c.notifiers_for("notify_admin"),
            [
                NotifierConfig::Webhook {
                    url: "http://127.0.0.1:9999/hook".into(),
                    format: WebhookFormat::Slack,
                    timeout: Some(Seconds(5.0)),
                    retries: Some(3),
                },
                NotifierConfig::Command {
                    command: vec!["/usr/bin/logger".into(), "-t".into(), "agentpulse".into()],
                },
            ]
        );
        assert_eq!(c.notifiers_for("warn_user"), [NotifierConfig::Console {}]);
        assert_eq!(c.notifiers_for("quiet"), []);
        // An action without notifiers goes to the console.
        assert_eq!(c.notifiers_for("unheard_of"), DEFAULT_NOTIFIERS);
        assert_eq!(
            c.budgets,
            [
                BudgetConfig {
                    scope: BudgetScope::Global,
                    period: BudgetPeriod::Day,
                    limit_usd: 50.0,
                    warn_at: 0.8,
                },
                BudgetConfig {
                    scope: BudgetScope::Feature,
                    period: BudgetPeriod::Month,
                    limit_usd: 5.5,
                    warn_at: 0.8,
                },
            ]
        );
        // The built-in file has neither section.
        let b = Config::builtin();
        assert!(b.notifiers.is_empty() && b.budgets.is_empty());
        assert_eq!(b.notifiers_for("notify_admin"), DEFAULT_NOTIFIERS);
    }

    #[test]
    fn bad_alerting_sections_fail_at_load_with_their_position() {
        let err = |yaml: &str| Config::from_yaml(yaml, "x.yaml").unwrap_err().to_string();
        let e = err("alerts:\n  - {condition: \"events > 1\", action: a}\n  - {condition: \"critic_rejection > 0.5\", action: a}\n");
        assert!(
            e.starts_with(
                r#"invalid config x.yaml: alerts[1].condition: unknown metric "critic_rejection" (known: "#
            ),
            "{e}"
        );
        let e = err("alerts:\n  - {condition: cost_per_feature, action: a}\n");
        assert!(
            e.contains(r#"alerts[0].condition: expected an operator after "cost_per_feature""#),
            "{e}"
        );
        let e = err("alerts:\n  - {condition: events > 1, action: a, repeat_interval: 1y}\n");
        assert!(
            e.contains("alerts[0].repeat_interval: expected a duration"),
            "{e}"
        );
        let e = err("alerts:\n  - {condition: events > 1, action: \"\"}\n");
        assert!(e.contains("alerts[0].action: bad action name"), "{e}");

        let e = err("notifiers:\n  a:\n    - type: webhook\n      url: ftp://x\n");
        assert!(e.contains("notifiers.a[0].url: expected an http"), "{e}");
        let e =
            err("notifiers:\n  a:\n    - type: webhook\n      url: http://x\n      retries: 11\n");
        assert!(e.contains("notifiers.a[0].retries: at most 10"), "{e}");
        let e = err("notifiers:\n  a:\n    - type: command\n      command: []\n");
        assert!(
            e.contains("notifiers.a[0].command: expected [program"),
            "{e}"
        );
        let e = err("notifiers:\n  a:\n    - type: pager\n");
        assert!(e.contains("notifiers") && e.contains("pager"), "{e}");
        let e = err("notifiers:\n  a:\n    - type: console\n      colour: red\n");
        assert!(e.contains("colour"), "{e}");
        let e =
            err("notifiers:\n  a:\n    - type: webhook\n      url: http://x\n      timeout: -1s\n");
        assert!(e.contains("expected a duration"), "{e}");
        let e = err("notifiers:\n  \"a b\":\n    - type: console\n");
        assert!(e.contains(r#"notifiers: bad action name "a b""#), "{e}");

        let e = err("budgets:\n  - {scope: global, period: day, limit_usd: 0}\n");
        assert!(
            e.contains("budgets[0].limit_usd: expected a number > 0"),
            "{e}"
        );
        let e = err("budgets:\n  - {scope: global, period: day, limit_usd: 1, warn_at: 1.5}\n");
        assert!(
            e.contains("budgets[0].warn_at: expected a fraction in (0, 1]"),
            "{e}"
        );
        let e = err("budgets:\n  - {scope: galaxy, period: day, limit_usd: 1}\n");
        assert!(
            e.contains("budgets[0].scope") && e.contains("galaxy"),
            "{e}"
        );
        let e = err("budgets:\n  - {scope: task, period: year, limit_usd: 1}\n");
        assert!(e.contains("budgets[0].period") && e.contains("year"), "{e}");
        let e = err("budgets:\n  - {scope: task, period: day, limit: 1}\n");
        assert!(e.contains("limit"), "{e}");
    }
}
