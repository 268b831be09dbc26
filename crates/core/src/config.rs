//! The configuration file: the original's `observability.yaml` format.
//!
//! One YAML file declares the event types and their fields (`events:`), the
//! destinations, the metrics to track and their window, and alert rules.
//! The original project's file is embedded as the default, so agentpulse
//! needs no file at all. Keys agentpulse adds to the format:
//!
//! - `strict: true` (top level): refuse event types the file does not declare.
//! - `limits.max_payload_bytes` (default 65536): largest accepted payload.
//! - `limits.max_log_bytes` (no default): the disk cap of the hub's JSONL
//!   log, a number of bytes or a size such as `10GB` or `512 MiB` (see
//!   the hub's JSONL sink); `--max-log-bytes` overrides it.
//! - `limits.max_total_connections`, `limits.header_timeout`,
//!   `limits.idle_timeout`, `limits.body_timeout` (seconds) and
//!   `limits.max_body_bytes`: the hub's HTTP limits, each overridden by the
//!   `serve` flag of the same name (defaults: see `agentpulse serve --help`).
//! - `tokens:` the hub's tokens by role, `admin:`, `ingest:` and `read:`,
//!   each a list, added to those of `--token`, `--ingest-token` and
//!   `--read-token` (see the hub's `tokens` module); `validate-config` shows
//!   how many, never the tokens.
//! - an `emit:` entry may be `field: kind` instead of a bare `field`, to give
//!   its type explicitly (kinds: see [`crate::schema::FieldKind`]).
//! - `alerts:` entries take `min_samples` and `repeat_interval` besides the
//!   original `condition`, `action` and `message`; `notifiers:` says what an
//!   alert's `action` does and `budgets:` declares spending limits. All three
//!   are documented in [`crate::alerts`], and checked at load: a bad rule
//!   fails with its position (`my.yaml:7:18: alerts[2].condition: ...`).
//! - `prices:` model prices (USD per million tokens) that extend and
//!   override the built-in table of [`crate::prices`], used to cost
//!   OpenTelemetry spans and records that carry tokens but no cost
//!   ([`PriceConfig`]; a bad entry fails with its position:
//!   `prices[1].input_per_mtok: ...`).
//!
//! # A file extends the built-in configuration
//!
//! A user's file is laid over the built-in one ([`merge`]): its event
//! types, destinations, alert rules and notifiers add to the built-in ones
//! or override those of the same name (an event type by `on`, a
//! destination by `type`, a rule by its condition, a notifier by action);
//! other settings override key by key (`metrics.aggregate.window_minutes`
//! alone keeps the built-in buckets). `replace: [events, alerts,
//! notifiers, destinations]` starts the named sections from nothing, and
//! `replace: all` ignores the built-in file. [`Config::sources`] says where
//! each entry of the result came from; `agentpulse validate-config` prints it.
//!
//! The built-in alert rules name the actions `notify_admin` and
//! `warn_user`, which notify the console ([`BUILTIN_NOTIFIERS_YAML`]).
//!
//! # Checks
//!
//! Every key at every level must be known: the structs below refuse
//! unknown fields, so a key added to one is known at once. A refusal names
//! its file, line and column, the path, and the nearest known key:
//! `my.yaml:3:1: budget: unknown key; did you mean `budgets`? (known: ...)`.
//! An alert action must have a `notifiers:` entry (an empty list silences
//! it). An empty file is accepted with a warning ([`Config::warnings`]):
//! the built-in configuration applies.

use std::collections::BTreeMap;

mod build;
mod locate;
pub mod merge;

pub use merge::{Source, Sources, BUILTIN};

// Each section's declarations live with what reads them; the
// configuration only gathers them.
pub use crate::alerts::{BudgetConfig, BudgetPeriod, BudgetScope};
pub use crate::prices::{PriceConfig, MAX_PRICE_PER_MTOK};
pub use crate::schema::{EventDecl, FieldDecl};
pub use crate::units::Seconds;

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

/// Notifiers of the built-in rules' actions (the contract file has none):
/// both notify the console.
pub const BUILTIN_NOTIFIERS_YAML: &str = "\
notifiers:
  notify_admin:
    - type: console
  warn_user:
    - type: console
";

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// What each alert `action` does: action name → notifiers. Every rule's
    /// action must have an entry (checked at load); the built-in ones,
    /// `notify_admin` and `warn_user`, notify the console.
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
    /// Built-in sections this file replaces instead of extending.
    #[serde(default)]
    pub replace: Replace,
    /// Model prices that extend and override the built-in table.
    #[serde(default)]
    pub prices: Vec<PriceConfig>,
    /// The hub's tokens by role, besides those of the command line.
    #[serde(default)]
    pub tokens: TokensSection,
    /// Where this configuration came from (a path, or `<built-in>`).
    #[serde(skip)]
    pub origin: String,
    /// Where each entry came from: the built-in file or the user's.
    #[serde(skip)]
    pub sources: Sources,
    /// Things accepted but worth saying (an empty file, ...).
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// Which built-in sections a file replaces instead of extending: `replace:
/// all`, or a list of `events`, `destinations`, `alerts`, `notifiers`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Replace {
    /// Ignore the built-in file altogether.
    pub all: bool,
    /// Start `events:` from nothing.
    pub events: bool,
    /// Start `destinations:` from nothing.
    pub destinations: bool,
    /// Start `alerts:` from nothing.
    pub alerts: bool,
    /// Start `notifiers:` from nothing.
    pub notifiers: bool,
}

impl Replace {
    /// The names `replace:` takes.
    pub const NAMES: [&'static str; 5] = ["all", "events", "destinations", "alerts", "notifiers"];

    /// Whether section `name` starts from nothing.
    pub fn replaces(self, name: &str) -> bool {
        self.all
            || match name {
                "events" => self.events,
                "destinations" => self.destinations,
                "alerts" => self.alerts,
                "notifiers" => self.notifiers,
                _ => false,
            }
    }

    fn set(&mut self, name: &str) -> Result<(), String> {
        match name {
            "all" => self.all = true,
            "events" => self.events = true,
            "destinations" => self.destinations = true,
            "alerts" => self.alerts = true,
            "notifiers" => self.notifiers = true,
            other => {
                return Err(format!(
                    "unknown section `{other}`{} (known: {})",
                    crate::suggest::did_you_mean(other, Replace::NAMES),
                    Replace::NAMES.join(", ")
                ))
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Replace {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Spec {
            One(String),
            Many(Vec<String>),
        }
        let names = match Spec::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected `all` or a list of sections (events, destinations, alerts, notifiers)",
            )
        })? {
            Spec::One(s) => vec![s],
            Spec::Many(v) => v,
        };
        let mut r = Replace::default();
        for n in &names {
            r.set(n).map_err(serde::de::Error::custom)?;
        }
        Ok(r)
    }
}

fn one() -> u32 {
    1
}

/// One destination entry (`type: websocket | console | file`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
pub struct Aggregate {
    /// Rolling window length in minutes (default 60).
    #[serde(default = "sixty")]
    pub window_minutes: u32,
    /// Bucket granularities kept (`hourly`, `daily`, `weekly`).
    #[serde(default)]
    pub buckets: Vec<String>,
    /// Tasks the metrics engine holds in memory at most (default 250,000);
    /// past it the least recently active one is evicted and counted.
    #[serde(default = "default_max_open_tasks")]
    pub max_open_tasks: usize,
    /// Names per section (agents, features, event types) the all-time
    /// totals keep (default 1,000); the least active are folded into one
    /// `(other)` row.
    #[serde(default = "default_max_names")]
    pub max_names: usize,
}

fn default_max_open_tasks() -> usize {
    crate::metrics::DEFAULT_MAX_OPEN_TASKS
}

fn default_max_names() -> usize {
    crate::metrics::DEFAULT_MAX_NAMES
}

impl Default for Aggregate {
    fn default() -> Self {
        Aggregate {
            window_minutes: 60,
            buckets: vec!["hourly".into(), "daily".into(), "weekly".into()],
            max_open_tasks: default_max_open_tasks(),
            max_names: default_max_names(),
        }
    }
}

fn sixty() -> u32 {
    60
}

/// `limits:` (an agentpulse extension).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest accepted serialised payload, in bytes.
    #[serde(default = "default_max_payload")]
    pub max_payload_bytes: usize,
    /// The disk cap of the JSONL log (none by default).
    #[serde(default, deserialize_with = "max_log_bytes")]
    pub max_log_bytes: Option<ByteSize>,
    /// The hub's HTTP limits, each overridden by its `serve` flag (or
    /// environment variable) of the same name: most connections at once.
    #[serde(default)]
    pub max_total_connections: Option<usize>,
    /// Seconds a request's head may take (`--header-timeout`).
    #[serde(default)]
    pub header_timeout: Option<f64>,
    /// Seconds a kept-alive connection may idle (`--idle-timeout`).
    #[serde(default)]
    pub idle_timeout: Option<f64>,
    /// Seconds a request's body may take (`--body-timeout`).
    #[serde(default)]
    pub body_timeout: Option<f64>,
    /// Largest request body in bytes (`--max-body-bytes`).
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: default_max_payload(),
            max_log_bytes: None,
            max_total_connections: None,
            header_timeout: None,
            idle_timeout: None,
            body_timeout: None,
            max_body_bytes: None,
        }
    }
}

// serde_norway loses the key of a value inside an `Option`: name it.
fn max_log_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<ByteSize>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None => Ok(None),
        Some(v) => ByteSize::deserialize(v)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("max_log_bytes: {e}"))),
    }
}

/// A number of bytes, written as a number (`1000000`) or a size (`10GB`,
/// `512 MiB`, `1.5 GiB`; `KB`, `MB`, `GB` are powers of 1000, `KiB`, `MiB`,
/// `GiB` of 1024). Always > 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ByteSize(pub u64);

impl std::str::FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<ByteSize, String> {
        let n = s
            .trim()
            .parse::<bytesize::ByteSize>()
            .map_err(|_| {
                format!("expected a number of bytes or a size such as 10GB or 512MiB, got {s:?}")
            })?
            .as_u64();
        if n == 0 {
            return Err("must be more than 0 bytes".into());
        }
        Ok(ByteSize(n))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) => match n.as_u64() {
                Some(0) | None => Err(serde::de::Error::custom(format!(
                    "expected a number of bytes > 0, got {n}"
                ))),
                Some(n) => Ok(ByteSize(n)),
            },
            Value::String(s) => s.parse().map_err(serde::de::Error::custom),
            v => Err(serde::de::Error::custom(format!(
                "expected a number of bytes or a size such as 10GB, got {v}"
            ))),
        }
    }
}

/// `tokens:` (an agentpulse extension): the hub's tokens by role, as
/// `--token`, `--ingest-token` and `--read-token` give them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensSection {
    /// Tokens that may do everything.
    #[serde(default)]
    pub admin: Vec<String>,
    /// Tokens that may only send events.
    #[serde(default)]
    pub ingest: Vec<String>,
    /// Tokens that may only read.
    #[serde(default)]
    pub read: Vec<String>,
}

impl TokensSection {
    /// Whether the file gives any token.
    pub fn is_empty(&self) -> bool {
        self.admin.is_empty() && self.ingest.is_empty() && self.read.is_empty()
    }
}

fn default_max_payload() -> usize {
    64 * 1024
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

/// The console alone: the built-in actions' notifiers, and what
/// [`Config::notifiers_for`] gives an action without an entry (which a
/// loaded configuration's rules never have).
pub const DEFAULT_NOTIFIERS: &[NotifierConfig] = &[NotifierConfig::Console {}];

/// The largest `retries` a webhook notifier accepts.
pub const MAX_WEBHOOK_RETRIES: u32 = 10;

/// The six KPI names of the contract (defined with the metrics).
pub use crate::metrics::KPI_NAMES;

/// A check's finding: where (a path such as `alerts[2].action`) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Problem {
    path: String,
    message: String,
}

impl Problem {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Splits `path: message` (the form of the errors other modules give).
    fn from_text(text: &str) -> Problem {
        match text.split_once(": ") {
            Some((p, m)) if !p.contains(' ') => Problem::new(p, m),
            _ => Problem::new("", text),
        }
    }
}

/// `file:line:col` when the position is known.
fn place(file: &str, at: Option<(usize, usize)>) -> String {
    match at {
        Some((l, c)) => format!("{file}:{l}:{c}"),
        None => file.to_string(),
    }
}

/// The built-in configuration as a JSON value: the contract file and the
/// notifiers of its actions.
fn builtin_value() -> Value {
    let mut v: Value =
        serde_norway::from_str(DEFAULT_CONFIG_YAML).expect("built-in config is YAML");
    let n: Value = serde_norway::from_str(BUILTIN_NOTIFIERS_YAML).expect("built-in notifiers");
    v["notifiers"] = n["notifiers"].clone();
    v
}

/// A serde_norway error as `(file:line:col, message)`: the path and the
/// fault, and for an unknown key or value the nearest known one. A key
/// inside a list of tagged entries (`notifiers.x[1].urll`) is reported by
/// the parser at the list, without the index: it is looked for in each
/// entry.
fn parse_error(file: &str, text: &str, e: &serde_norway::Error) -> ConfigError {
    let mut at = e.location().map(|l| (l.line(), l.column()));
    let mut message = explain(e);
    if let Some((path, rest)) = message.split_once(": unknown key") {
        let segs = locate::parse_path(path);
        if locate::locate(text, &segs).is_none() {
            if let Some((parent, key)) = path.rsplit_once('.') {
                let found = (0..1000).find_map(|i| {
                    let p = format!("{parent}[{i}].{key}");
                    locate::locate(text, &locate::parse_path(&p)).map(|pos| (p, pos))
                });
                if let Some((p, pos)) = found {
                    at = Some(pos);
                    message = format!("{p}: unknown key{rest}");
                }
            }
        }
    }
    ConfigError::Parse {
        origin: place(file, at),
        message,
    }
}

/// A serde_norway error as a message: the path and the fault, and for an
/// unknown key or value the nearest known one.
fn explain(e: &serde_norway::Error) -> String {
    let mut text = e.to_string();
    // The position goes in front (`file:line:col`), not at the end.
    if let Some(l) = e.location() {
        let suffix = format!(" at line {} column {}", l.line(), l.column());
        if text.ends_with(&suffix) {
            text.truncate(text.len() - suffix.len());
        }
    }
    // serde's wording: "unknown field `x`, expected one of `a`, `b`" (or
    // "expected `a`", "expected `a` or `b`", "there are no fields").
    for (what, noun) in [("unknown field `", "key"), ("unknown variant `", "value")] {
        let Some(at) = text.find(what) else { continue };
        let prefix = text[..at].trim_end_matches(": ").to_string();
        let rest = &text[at + what.len()..];
        let Some(end) = rest.find('`') else { continue };
        let word = &rest[..end];
        let known: Vec<&str> = rest[end + 1..].split('`').skip(1).step_by(2).collect();
        let path = if noun == "key" {
            match prefix.as_str() {
                "" => word.to_string(),
                p => format!("{p}.{word}"),
            }
        } else {
            prefix
        };
        let shown = if noun == "key" {
            String::new()
        } else {
            format!(" `{word}`")
        };
        let head = if path.is_empty() {
            String::new()
        } else {
            format!("{path}: ")
        };
        return format!(
            "{head}unknown {noun}{shown}{} (known: {})",
            crate::suggest::did_you_mean(word, known.iter().copied()),
            known.join(", ")
        );
    }
    text
}

impl Config {
    /// The built-in default: the original project's file, with console
    /// notifiers for its alert actions.
    pub fn builtin() -> Config {
        Config::layered(None).expect("built-in config is valid")
    }

    /// Parses YAML text and lays it over the built-in configuration;
    /// `origin` names it in errors and in [`Config::sources`].
    pub fn from_yaml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let parse_error = |e: serde_norway::Error| parse_error(origin, text, &e);
        // Empty, or only comments.
        let doc: Value = serde_norway::from_str(text).map_err(parse_error)?;
        if doc.is_null() {
            let mut c = Config::builtin();
            c.origin = origin.to_string();
            c.warnings.push(format!(
                "{origin} is empty: the built-in configuration applies"
            ));
            return Ok(c);
        }
        // The file alone, as typed: unknown keys and wrong types, with
        // their positions; then its entries, each checked where it is.
        let own: Config = serde_norway::from_str(text).map_err(parse_error)?;
        own.check_entries().map_err(|p| {
            let at = locate::locate(text, &locate::parse_path(&p.path));
            ConfigError::Invalid {
                origin: place(origin, at),
                message: if p.path.is_empty() {
                    p.message
                } else {
                    format!("{}: {}", p.path, p.message)
                },
            }
        })?;
        Config::layered(Some(&merge::Layer {
            file: origin,
            text,
            value: &doc,
            replace: own.replace,
        }))
    }

    /// The built-in configuration with `layer` over it, checked.
    fn layered(layer: Option<&merge::Layer<'_>>) -> Result<Config, ConfigError> {
        let (value, sources) = merge::merge(&builtin_value(), layer);
        let origin = layer.map_or(BUILTIN, |l| l.file).to_string();
        let mut config: Config =
            serde_json::from_value(value).map_err(|e| ConfigError::Invalid {
                origin: origin.clone(),
                message: format!("merged with the built-in configuration: {e}"),
            })?;
        config.origin = origin;
        config.sources = sources;
        if let Some(l) = layer {
            config.replace = l.replace;
        }
        if layer.is_none() {
            config.check_entries().map_err(|p| ConfigError::Invalid {
                origin: BUILTIN.into(),
                message: format!("{}: {}", p.path, p.message),
            })?;
        }
        config.check_links(layer)?;
        Ok(config)
    }

    /// Checks each entry on its own (in the file that holds it, so that
    /// positions are that file's).
    fn check_entries(&self) -> Result<(), Problem> {
        if self.version != 1 {
            return Err(Problem::new(
                "version",
                format!("{} is not supported (only 1)", self.version),
            ));
        }
        for (i, m) in self.metrics.track.iter().enumerate() {
            if !KPI_NAMES.contains(&m.as_str()) {
                return Err(Problem::new(
                    format!("metrics.track[{i}]"),
                    format!(
                        "unknown metric `{m}`{} (known: {})",
                        crate::suggest::did_you_mean(m, KPI_NAMES),
                        KPI_NAMES.join(", ")
                    ),
                ));
            }
        }
        const BUCKETS: [&str; 3] = ["hourly", "daily", "weekly"];
        for (i, b) in self.metrics.aggregate.buckets.iter().enumerate() {
            if !BUCKETS.contains(&b.as_str()) {
                return Err(Problem::new(
                    format!("metrics.aggregate.buckets[{i}]"),
                    format!(
                        "unknown bucket `{b}`{} (hourly, daily, weekly)",
                        crate::suggest::did_you_mean(b, BUCKETS)
                    ),
                ));
            }
        }
        let w = self.metrics.aggregate.window_minutes;
        if !(1..=7 * 24 * 60).contains(&w) {
            return Err(Problem::new(
                "metrics.aggregate.window_minutes",
                format!("{w} is outside 1..=10080"),
            ));
        }
        const DESTINATIONS: [&str; 3] = ["websocket", "console", "file"];
        for (i, d) in self.destinations.iter().enumerate() {
            if !DESTINATIONS.contains(&d.kind.as_str()) {
                return Err(Problem::new(
                    format!("destinations[{i}].type"),
                    format!(
                        "unknown destination `{}`{} (websocket, console, file)",
                        d.kind,
                        crate::suggest::did_you_mean(&d.kind, DESTINATIONS)
                    ),
                ));
            }
        }
        if self.limits.max_payload_bytes == 0 {
            return Err(Problem::new("limits.max_payload_bytes", "must be > 0"));
        }
        for (role, list) in [
            ("admin", &self.tokens.admin),
            ("ingest", &self.tokens.ingest),
            ("read", &self.tokens.read),
        ] {
            for (i, t) in list.iter().enumerate() {
                // Tokens travel in headers and URLs: visible ASCII only.
                if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(Problem::new(
                        format!("tokens.{role}[{i}]"),
                        "a token must be non-empty visible ASCII (no spaces)",
                    ));
                }
            }
        }
        self.rules()
            .map_err(|e| Problem::from_text(&e.to_string()))?;
        self.check_notifiers()?;
        self.check_budgets()?;
        self.check_prices().map_err(|e| Problem::from_text(&e))?;
        // Building the schema checks the event declarations.
        crate::schema::Schema::from_config(self)
            .map(|_| ())
            .map_err(|e| match e {
                ConfigError::Invalid { message, .. } => Problem::from_text(&message),
                other => Problem::new("", other.to_string()),
            })
    }

    /// Checks what joins entries of the effective configuration: every
    /// alert action has notifiers.
    fn check_links(&self, layer: Option<&merge::Layer<'_>>) -> Result<(), ConfigError> {
        let rules = self.rules().map_err(|e| ConfigError::Invalid {
            origin: self.origin.clone(),
            message: e.to_string(),
        })?;
        for (rule, source) in rules.iter().zip(&self.sources.alerts) {
            if self.notifiers.contains_key(&rule.action) {
                continue;
            }
            let index = source.index.unwrap_or(rule.index);
            let path = format!("alerts[{index}].action");
            let (origin, whose) = match layer.filter(|_| !source.is_builtin()) {
                Some(l) => (
                    place(l.file, locate::locate(l.text, &locate::parse_path(&path))),
                    String::new(),
                ),
                None => (
                    self.origin.clone(),
                    " (a built-in rule: define its notifier, or `replace: [alerts]`)".to_string(),
                ),
            };
            let defined: Vec<&str> = self.notifiers.keys().map(String::as_str).collect();
            return Err(ConfigError::Invalid {
                origin,
                message: format!(
                    "{path}: no notifier `{}`{}{whose} (defined under notifiers: {})",
                    rule.action,
                    crate::suggest::did_you_mean(&rule.action, defined.iter().copied()),
                    if defined.is_empty() {
                        "none".to_string()
                    } else {
                        defined.join(", ")
                    }
                ),
            });
        }
        Ok(())
    }

    fn check_notifiers(&self) -> Result<(), Problem> {
        for (name, list) in &self.notifiers {
            if !crate::alerts::is_action_name(name) {
                return Err(Problem::new(
                    format!("notifiers.{name}"),
                    format!(
                        "bad action name {name:?} ({})",
                        crate::alerts::ACTION_NAME_RULE
                    ),
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
                            return Err(Problem::new(
                                format!("{at}.url"),
                                format!(
                                    "expected an http:// or https:// URL with a host, got {url:?}"
                                ),
                            ));
                        }
                        if retries.is_some_and(|r| r > MAX_WEBHOOK_RETRIES) {
                            return Err(Problem::new(
                                format!("{at}.retries"),
                                format!("at most {MAX_WEBHOOK_RETRIES}"),
                            ));
                        }
                    }
                    NotifierConfig::Command { command } => {
                        if command.first().is_none_or(|p| p.is_empty()) {
                            return Err(Problem::new(
                                format!("{at}.command"),
                                "expected [program, args...] with a non-empty program",
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn check_budgets(&self) -> Result<(), Problem> {
        for (i, b) in self.budgets.iter().enumerate() {
            if !(b.limit_usd.is_finite()
                && b.limit_usd > 0.0
                && b.limit_usd <= crate::metrics::MAX_AMOUNT)
            {
                return Err(Problem::new(
                    format!("budgets[{i}].limit_usd"),
                    format!("expected a number > 0 and <= 1e12, got {}", b.limit_usd),
                ));
            }
            if !(b.warn_at > 0.0 && b.warn_at <= 1.0) {
                return Err(Problem::new(
                    format!("budgets[{i}].warn_at"),
                    format!("expected a fraction in (0, 1], got {}", b.warn_at),
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
                let key = crate::prices::normalize(name);
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
    /// the console alone ([`DEFAULT_NOTIFIERS`]) when it has none (no rule
    /// of a loaded configuration: an action without an entry is refused at
    /// load). An explicit empty list (`notify_admin: []`) silences it.
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
        let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/contract/observability.yaml");
        if let Ok(text) = std::fs::read_to_string(shared) {
            assert_eq!(text, DEFAULT_CONFIG_YAML);
        }
        let c = Config::builtin();
        assert_eq!(c.events.len(), 7);
        assert_eq!(c.metrics.aggregate.window_minutes, 60);
        assert_eq!(c.alerts.len(), 4);
        assert_eq!(
            c.notifiers.keys().collect::<Vec<_>>(),
            ["notify_admin", "warn_user"]
        );
        assert!(c.sources.alerts.iter().all(Source::is_builtin));
        assert!(c.warnings.is_empty());
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
        assert!(e.starts_with("invalid config x.yaml:2:1: "), "{e}");

        let e = Config::from_yaml("metrics:\n  track: [nope]\n", "x.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("invalid config x.yaml:2:11: metrics.track[0]: unknown metric `nope`"),
            "{e}"
        );

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
        // The first rule overrides the built-in one of the same condition,
        // the second is added.
        assert_eq!(c.alerts.len(), 5);
        assert_eq!(c.alerts[0]["message"], "Critic rejecting >50% of tests");
        assert!(c.sources.alerts[0].overrides);
        assert_eq!(c.sources.alerts[0].line, Some(3));
        assert_eq!(c.alerts[4]["condition"], "events_dropped>0");
        assert_eq!(c.sources.alerts[4].to_string(), "a.yaml:8");
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
        // The built-in file has no budgets; its actions go to the console.
        let b = Config::builtin();
        assert!(b.budgets.is_empty());
        assert_eq!(b.notifiers_for("notify_admin"), DEFAULT_NOTIFIERS);
    }

    #[test]
    fn bad_alerting_sections_fail_at_load_with_their_position() {
        let err = |yaml: &str| Config::from_yaml(yaml, "x.yaml").unwrap_err().to_string();
        let e = err("alerts:\n  - {condition: \"events > 1\", action: a}\n  - {condition: \"critic_rejection > 0.5\", action: a}\n");
        assert!(
            e.starts_with(
                r#"invalid config x.yaml:3:6: alerts[1].condition: unknown metric "critic_rejection"; did you mean `critic_rejection_rate`? (known: "#
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
        assert!(
            e.contains(r#"x.yaml:2:3: notifiers.a b: bad action name "a b""#),
            "{e}"
        );

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

    /// The README's example (`Alerts and budgets`), saved as a file.
    const README_SHAPED: &str = r#"
alerts:
  - condition: "agent_failures{agent=\"medic\"} >= 3"
    action: notify_admin
    message: "The medic keeps failing"
notifiers:
  notify_admin:
    - type: webhook
      url: http://127.0.0.1:9999/hook
      format: slack
budgets:
  - scope: global
    period: day
    limit_usd: 50
"#;

    #[test]
    fn a_readme_shaped_file_extends_the_built_in_configuration() {
        let c = Config::from_yaml(README_SHAPED, "my.yaml").unwrap();
        // Validation stays on: the built-in event types are all there (the
        // original's 7, the 4 of OpenTelemetry in and the hub's hitl_resolved).
        let schema = crate::schema::Schema::from_config(&c).unwrap();
        assert_eq!(schema.declared_types().len(), 12);
        assert!(c.sources.events.values().all(Source::is_builtin));
        // Its rule is added to the four built-in ones.
        assert_eq!(c.alerts.len(), 5);
        assert_eq!(c.sources.alerts[4].to_string(), "my.yaml:3");
        // Its notifier replaces the built-in one of that action; the other stays.
        assert!(matches!(
            c.notifiers_for("notify_admin"),
            [NotifierConfig::Webhook { .. }]
        ));
        assert!(c.sources.notifiers["notify_admin"].overrides);
        assert_eq!(c.notifiers_for("warn_user"), DEFAULT_NOTIFIERS);
        assert!(c.sources.notifiers["warn_user"].is_builtin());
        assert_eq!(c.budgets.len(), 1);
        assert_eq!(c.sources.budgets[0].to_string(), "my.yaml:12");
        // Settings not in the file keep the built-in values.
        assert_eq!(c.metrics.aggregate.window_minutes, 60);
        assert_eq!(c.metrics.track.len(), 6);
        assert!(c.destination_enabled("file"));
    }

    #[test]
    fn settings_merge_key_by_key_and_replace_opts_out() {
        let c = Config::from_yaml(
            "metrics:\n  aggregate:\n    window_minutes: 5\nstrict: true\nevents:\n  - on: agent_completed\n    emit: [agent]\n  - on: note\n    emit: [text]\n",
            "m.yaml",
        )
        .unwrap();
        assert_eq!(c.metrics.aggregate.window_minutes, 5);
        assert_eq!(c.metrics.aggregate.buckets.len(), 3);
        assert!(c.strict);
        let schema = crate::schema::Schema::from_config(&c).unwrap();
        assert_eq!(schema.declared_types().len(), 13);
        assert_eq!(schema.fields("agent_completed").unwrap().count(), 1);
        assert!(c.sources.events["agent_completed"].overrides);
        assert_eq!(c.sources.events["note"].to_string(), "m.yaml:8");
        let (_, v, src) = c
            .sources
            .settings
            .iter()
            .find(|(k, _, _)| k == "metrics.aggregate.window_minutes")
            .unwrap();
        assert_eq!(
            (v.clone(), src.to_string()),
            (Value::from(5), "m.yaml:3".into())
        );

        // `replace: all`: the file alone, as before.
        let c = Config::from_yaml(
            "replace: all\nalerts:\n  - {condition: events > 1, action: page}\nnotifiers:\n  page: []\n",
            "r.yaml",
        )
        .unwrap();
        assert_eq!(c.alerts.len(), 1);
        assert!(c.events.is_empty());
        // `replace: [alerts]`: the built-in rules go, the schema stays.
        let c = Config::from_yaml(
            "replace: [alerts]\nalerts:\n  - {condition: events > 1, action: warn_user}\n",
            "r.yaml",
        )
        .unwrap();
        assert_eq!((c.alerts.len(), c.events.len()), (1, 7));
        let e = Config::from_yaml("replace: [alert]\n", "r.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown section `alert`; did you mean `alerts`?"),
            "{e}"
        );
    }

    #[test]
    fn every_typo_class_is_refused_with_its_position_and_suggestion() {
        let err = |yaml: &str| Config::from_yaml(yaml, "t.yaml").unwrap_err().to_string();
        for (yaml, want) in [
            (
                "budget:\n  - {scope: global, period: day, limit_usd: 5}\n",
                "t.yaml:1:1: budget: unknown key; did you mean `budgets`?",
            ),
            (
                "alert:\n  - {condition: events > 1, action: warn_user}\n",
                "t.yaml:1:1: alert: unknown key; did you mean `alerts`?",
            ),
            ("stric: true\n", "t.yaml:1:1: stric: unknown key; did you mean `strict`?"),
            (
                "metrics:\n  aggregate:\n    windw_minutes: 5\n",
                "t.yaml:3:5: metrics.aggregate.windw_minutes: unknown key; did you mean `window_minutes`?",
            ),
            (
                "budgets:\n  - scope: global\n    period: day\n    limit: 5\n",
                "t.yaml:4:5: budgets[0].limit: unknown key; did you mean `limit_usd`?",
            ),
            (
                "budgets:\n  - {scope: globl, period: day, limit_usd: 5}\n",
                "budgets[0].scope: unknown value `globl`; did you mean `global`?",
            ),
            (
                "events:\n  - on: x\n    emits: [a]\n",
                "t.yaml:3:5: events[0].emits: unknown key; did you mean `emit`?",
            ),
            (
                "destinations:\n  - type: consol\n",
                "t.yaml:2:5: destinations[0].type: unknown destination `consol`; did you mean `console`?",
            ),
            (
                "alerts:\n  - condition: events > 1\n    action: warn_user\n    mesage: hi\n",
                "t.yaml:4:5: alerts[0].mesage: unknown key; did you mean `message`?",
            ),
            (
                "alerts:\n  - condition: events > 1\n    action: notify_admn\n",
                "t.yaml:3:5: alerts[0].action: no notifier `notify_admn`; did you mean `notify_admin`?",
            ),
            (
                "notifiers:\n  page:\n    - type: webhok\n      url: http://x\n",
                "unknown value `webhok`; did you mean `webhook`?",
            ),
            (
                "notifiers:\n  page:\n    - type: console\n    - type: webhook\n      urll: http://x\n",
                "t.yaml:5:7: notifiers.page[1].urll: unknown key; did you mean `url`?",
            ),
            (
                "events:\n  - on: x\n    emit:\n      - cost: monye\n",
                "t.yaml:4:9: events[0].emit[0].cost: unknown field kind `monye`; did you mean `money`?",
            ),
        ] {
            let e = err(yaml);
            assert!(e.contains(want), "{yaml}\n  gave: {e}\n  want: {want}");
        }
        // The known keys come from the structs.
        let e = err("stric: true\n");
        assert!(e.contains("(known: version, events, destinations"), "{e}");
    }

    #[test]
    fn an_empty_file_is_a_warning_and_the_defaults_apply() {
        for text in ["", "\n\n", "# nothing yet\n"] {
            let c = Config::from_yaml(text, "e.yaml").unwrap();
            assert_eq!(c.alerts.len(), 4);
            assert_eq!(
                c.warnings,
                ["e.yaml is empty: the built-in configuration applies"]
            );
        }
    }
}
