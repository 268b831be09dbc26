//! Alert rules: the `alerts:` entries of the configuration, their
//! conditions, and the metrics a condition can read.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::metrics::{AgentKpis, Kpis, MetricsSnapshot};
use crate::stats::StatsSnapshot;
use crate::units::Seconds;

/// `min_samples` when a rule does not give one.
pub const DEFAULT_MIN_SAMPLES: u64 = 5;

/// `repeat_interval` when a rule does not give one: one hour, in seconds.
pub const DEFAULT_REPEAT_INTERVAL: f64 = 3_600.0;

/// The keys an `alerts:` entry may have.
pub const RULE_KEYS: [&str; 5] = [
    "condition",
    "action",
    "message",
    "min_samples",
    "repeat_interval",
];

/// What an action name may look like, for error messages.
pub const ACTION_NAME_RULE: &str = "1 to 64 characters among a-z A-Z 0-9 _ . -";

/// Longest agent name accepted in a `{agent="..."}` label (the schema's
/// limit for names).
const MAX_AGENT_NAME: usize = 256;

/// Whether `name` is a valid action name (see [`ACTION_NAME_RULE`]).
pub fn is_action_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A KPI of the rolling window ([`MetricsSnapshot::window`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kpi {
    /// `agent_utilization`; samples: events in the window.
    AgentUtilization,
    /// `cost_per_feature`; samples: features completed.
    CostPerFeature,
    /// `average_retry_count`; samples: tasks finished.
    AverageRetryCount,
    /// `critic_rejection_rate`; samples: critic decisions.
    CriticRejectionRate,
    /// `validation_pass_rate`; samples: validations.
    ValidationPassRate,
    /// `time_to_completion`; samples: completions.
    TimeToCompletion,
    /// `time_to_completion_p50`; samples: completions.
    TimeToCompletionP50,
    /// `time_to_completion_p95`; samples: completions.
    TimeToCompletionP95,
}

/// A pipeline counter, a total since the hub started
/// ([`StatsSnapshot`]). Counters ignore `min_samples`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    /// `events`: events accepted.
    Events,
    /// `events_rejected`: events refused by validation.
    EventsRejected,
    /// `events_dropped`: events dropped (queue full, pipeline stopped).
    EventsDropped,
    /// `events_duplicate`: retries recognised by their `event_id`.
    EventsDuplicate,
}

/// A per-agent figure over the rolling window
/// ([`MetricsSnapshot::agents`]); samples: the agent's runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgentField {
    /// `agent_utilization{agent="x"}`: [`AgentKpis::utilization`].
    Utilization,
    /// `agent_failures{agent="x"}`: [`AgentKpis::failures`].
    Failures,
    /// `agent_cost_usd{agent="x"}`: [`AgentKpis::cost_usd`].
    CostUsd,
}

/// What a condition reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Metric {
    /// A window KPI.
    Kpi(Kpi),
    /// A pipeline counter.
    Counter(Counter),
    /// One agent's figure.
    Agent {
        /// Which figure.
        field: AgentField,
        /// The agent's name, as in the label.
        agent: String,
    },
}

/// Every metric name a condition accepts; the `agent_*` ones other than
/// `agent_utilization` need an `{agent="..."}` label.
pub const METRIC_NAMES: [&str; 14] = {
    // The contract's six KPIs first, in its order, then the rest.
    const MORE: [&str; 8] = [
        "time_to_completion_p50",
        "time_to_completion_p95",
        "events",
        "events_rejected",
        "events_dropped",
        "events_duplicate",
        "agent_failures",
        "agent_cost_usd",
    ];
    let kpis = crate::metrics::KPI_NAMES;
    let mut all = [""; 14];
    let mut i = 0;
    while i < all.len() {
        all[i] = if i < kpis.len() {
            kpis[i]
        } else {
            MORE[i - kpis.len()]
        };
        i += 1;
    }
    all
};

impl Kpi {
    /// Every KPI, in [`METRIC_NAMES`] order.
    pub const ALL: [Kpi; 8] = [
        Kpi::AgentUtilization,
        Kpi::CostPerFeature,
        Kpi::AverageRetryCount,
        Kpi::CriticRejectionRate,
        Kpi::ValidationPassRate,
        Kpi::TimeToCompletion,
        Kpi::TimeToCompletionP50,
        Kpi::TimeToCompletionP95,
    ];

    fn from_name(name: &str) -> Option<Kpi> {
        Kpi::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The metric's name.
    pub const fn name(self) -> &'static str {
        match self {
            Kpi::AgentUtilization => "agent_utilization",
            Kpi::CostPerFeature => "cost_per_feature",
            Kpi::AverageRetryCount => "average_retry_count",
            Kpi::CriticRejectionRate => "critic_rejection_rate",
            Kpi::ValidationPassRate => "validation_pass_rate",
            Kpi::TimeToCompletion => "time_to_completion",
            Kpi::TimeToCompletionP50 => "time_to_completion_p50",
            Kpi::TimeToCompletionP95 => "time_to_completion_p95",
        }
    }

    /// The KPI's value and its sample count.
    pub fn read(self, k: &Kpis) -> (f64, u64) {
        let s = &k.samples;
        match self {
            Kpi::AgentUtilization => (k.agent_utilization, s.events),
            Kpi::CostPerFeature => (k.cost_per_feature, s.features_completed),
            Kpi::AverageRetryCount => (k.average_retry_count, s.tasks_finished),
            Kpi::CriticRejectionRate => (k.critic_rejection_rate, s.critic_decisions),
            Kpi::ValidationPassRate => (k.validation_pass_rate, s.validations),
            Kpi::TimeToCompletion => (k.time_to_completion, s.completions),
            Kpi::TimeToCompletionP50 => (k.time_to_completion_p50, s.completions),
            Kpi::TimeToCompletionP95 => (k.time_to_completion_p95, s.completions),
        }
    }
}

impl Counter {
    /// Every counter, in [`METRIC_NAMES`] order.
    pub const ALL: [Counter; 4] = [
        Counter::Events,
        Counter::EventsRejected,
        Counter::EventsDropped,
        Counter::EventsDuplicate,
    ];

    fn from_name(name: &str) -> Option<Counter> {
        Counter::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The metric's name.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Events => "events",
            Counter::EventsRejected => "events_rejected",
            Counter::EventsDropped => "events_dropped",
            Counter::EventsDuplicate => "events_duplicate",
        }
    }

    /// The counter's value.
    pub fn read(self, c: &StatsSnapshot) -> u64 {
        match self {
            Counter::Events => c.accepted,
            Counter::EventsRejected => c.rejected,
            Counter::EventsDropped => c.dropped,
            Counter::EventsDuplicate => c.duplicates,
        }
    }
}

impl AgentField {
    /// Every per-agent figure.
    pub const ALL: [AgentField; 3] = [
        AgentField::Utilization,
        AgentField::Failures,
        AgentField::CostUsd,
    ];

    fn from_name(name: &str) -> Option<AgentField> {
        AgentField::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The metric's name (without the label).
    pub const fn name(self) -> &'static str {
        match self {
            AgentField::Utilization => "agent_utilization",
            AgentField::Failures => "agent_failures",
            AgentField::CostUsd => "agent_cost_usd",
        }
    }

    /// The figure's value and the agent's runs (its sample count).
    pub fn read(self, a: &AgentKpis) -> (f64, u64) {
        let v = match self {
            AgentField::Utilization => a.utilization,
            AgentField::Failures => a.failures as f64,
            AgentField::CostUsd => a.cost_usd,
        };
        (v, a.runs)
    }
}

/// What the alert engine reads at one evaluation: the rolling-window KPIs,
/// the per-agent figures and the pipeline counters. Borrowed, so building
/// one per metrics batch costs nothing.
#[derive(Debug, Clone, Copy)]
pub struct MetricInput<'a> {
    /// KPIs over the rolling window.
    pub window: &'a Kpis,
    /// Per agent, over the rolling window.
    pub agents: &'a BTreeMap<String, AgentKpis>,
    /// The pipeline's counters (totals since the hub started).
    pub counters: StatsSnapshot,
}

impl<'a> MetricInput<'a> {
    /// The input of a metrics snapshot and the pipeline's counters.
    pub fn new(snapshot: &'a MetricsSnapshot, counters: StatsSnapshot) -> Self {
        MetricInput {
            window: &snapshot.window,
            agents: &snapshot.agents,
            counters,
        }
    }
}

/// A metric's value at one evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// The value.
    pub value: f64,
    /// Its sample count; `None` for counters, which always have enough.
    pub samples: Option<u64>,
}

impl Reading {
    /// Whether the value rests on at least `min` samples.
    pub fn enough(&self, min: u64) -> bool {
        self.samples.is_none_or(|s| s >= min)
    }
}

impl Metric {
    /// The metric's name, without any label.
    pub fn name(&self) -> &'static str {
        match self {
            Metric::Kpi(k) => k.name(),
            Metric::Counter(c) => c.name(),
            Metric::Agent { field, .. } => field.name(),
        }
    }

    /// The agent of a per-agent metric.
    pub fn agent(&self) -> Option<&str> {
        match self {
            Metric::Agent { agent, .. } => Some(agent),
            _ => None,
        }
    }

    /// Reads the metric. An agent absent from the window reads 0 with 0
    /// samples.
    pub fn read(&self, input: &MetricInput<'_>) -> Reading {
        let (value, samples) = match self {
            Metric::Kpi(k) => {
                let (v, s) = k.read(input.window);
                (v, Some(s))
            }
            Metric::Counter(c) => (c.read(&input.counters) as f64, None),
            Metric::Agent { field, agent } => match input.agents.get(agent.as_str()) {
                Some(a) => {
                    let (v, s) = field.read(a);
                    (v, Some(s))
                }
                None => (0.0, Some(0)),
            },
        };
        Reading { value, samples }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Metric::Agent { field, agent } => write!(f, "{}{{agent=\"{agent}\"}}", field.name()),
            m => f.write_str(m.name()),
        }
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `==` (exact)
    Eq,
    /// `!=` (exact)
    Ne,
}

impl Op {
    /// The operator as written.
    pub const fn as_str(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }

    /// `value <op> threshold`; never true when `value` is NaN (not even for
    /// `!=`).
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        if value.is_nan() {
            return false;
        }
        match self {
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
            Op::Eq => value == threshold,
            Op::Ne => value != threshold,
        }
    }
}

/// A parsed condition: `metric op threshold`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// What is read.
    pub metric: Metric,
    /// How it is compared.
    pub op: Op,
    /// With what (finite).
    pub threshold: f64,
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.metric, self.op.as_str(), self.threshold)
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct View<'a> {
            metric: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            agent: Option<&'a str>,
            operator: &'a str,
            threshold: f64,
        }
        View {
            metric: self.metric.name(),
            agent: self.metric.agent(),
            operator: self.op.as_str(),
            threshold: self.threshold,
        }
        .serialize(s)
    }
}

/// Why a condition could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConditionError {
    /// Nothing but whitespace.
    #[error("is empty; expected `metric operator number`, e.g. \"critic_rejection_rate > 0.5\"")]
    Empty,
    /// The text does not start with a name.
    #[error("expected a metric name, found {found:?}")]
    ExpectedMetric {
        /// What was there instead.
        found: String,
    },
    /// A name that is not a metric.
    #[error(
        "unknown metric {name:?}{} (known: {})",
        crate::suggest::did_you_mean(name, METRIC_NAMES.iter().copied()),
        METRIC_NAMES.join(", ")
    )]
    UnknownMetric {
        /// The name.
        name: String,
    },
    /// A label on a metric that takes none.
    #[error("metric {metric:?} takes no label")]
    LabelNotAllowed {
        /// The metric.
        metric: String,
    },
    /// A per-agent metric without its label.
    #[error("metric {metric:?} needs an agent: {metric}{{agent=\"name\"}}")]
    LabelRequired {
        /// The metric.
        metric: String,
    },
    /// A malformed `{agent="..."}` label.
    #[error("bad label after {metric:?}: expected {{agent=\"name\"}} ({detail})")]
    BadLabel {
        /// The metric.
        metric: String,
        /// What is wrong.
        detail: &'static str,
    },
    /// No operator after the metric.
    #[error(
        "expected an operator after {after:?} (one of > >= < <= == !=){}",
        found_suffix(found)
    )]
    ExpectedOperator {
        /// The metric, as written.
        after: String,
        /// What was there instead, if anything.
        found: Option<String>,
    },
    /// No number after the operator.
    #[error("expected a number after {after:?}")]
    ExpectedNumber {
        /// The operator.
        after: &'static str,
    },
    /// The threshold is not a finite number.
    #[error("threshold {text:?} is not a finite number")]
    BadNumber {
        /// The text.
        text: String,
    },
    /// Something after the threshold.
    #[error("unexpected {text:?} after the threshold")]
    Trailing {
        /// The rest of the text.
        text: String,
    },
}

fn found_suffix(found: &Option<String>) -> String {
    found
        .as_ref()
        .map(|f| format!(", found {f:?}"))
        .unwrap_or_default()
}

/// A cursor over the condition text.
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn skip_ws(&mut self) {
        let rest = &self.s[self.pos..];
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    fn eat(&mut self, prefix: &str) -> bool {
        if self.rest().starts_with(prefix) {
            self.pos += prefix.len();
            true
        } else {
            false
        }
    }

    /// A run of `[A-Za-z0-9_]`.
    fn ident(&mut self) -> &'a str {
        let rest = self.rest();
        let n = rest
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .count();
        self.pos += n;
        &rest[..n]
    }

    /// The next whitespace-delimited word (for error messages and numbers).
    fn word(&mut self) -> &'a str {
        let rest = self.rest();
        let n = rest.find(char::is_whitespace).unwrap_or(rest.len());
        self.pos += n;
        &rest[..n]
    }
}

impl Condition {
    /// Parses `metric op number`, whitespace-tolerant: `metric` is one of
    /// [`METRIC_NAMES`], optionally with `{agent="name"}` (or single
    /// quotes), `op` one of `> >= < <= == !=`, `number` a finite decimal
    /// number (`0.5`, `-1`, `2e3`; not `nan`, `inf`).
    pub fn parse(text: &str) -> Result<Condition, ConditionError> {
        let mut c = Cursor { s: text, pos: 0 };
        c.skip_ws();
        if c.rest().is_empty() {
            return Err(ConditionError::Empty);
        }
        let name = c.ident();
        if name.is_empty() || name.as_bytes()[0].is_ascii_digit() {
            let found = c.word();
            return Err(ConditionError::ExpectedMetric {
                found: format!("{name}{found}"),
            });
        }
        let label_start = c.pos;
        c.skip_ws();
        let label = if c.rest().starts_with('{') {
            Some(parse_label(&mut c, name)?)
        } else {
            c.pos = label_start;
            None
        };
        let metric = match (label, AgentField::from_name(name)) {
            (Some(agent), Some(field)) => Metric::Agent { field, agent },
            (Some(_), None) => {
                return Err(
                    if Kpi::from_name(name).is_some() || Counter::from_name(name).is_some() {
                        ConditionError::LabelNotAllowed {
                            metric: name.to_string(),
                        }
                    } else {
                        ConditionError::UnknownMetric {
                            name: name.to_string(),
                        }
                    },
                )
            }
            (None, _) => {
                if let Some(k) = Kpi::from_name(name) {
                    Metric::Kpi(k)
                } else if let Some(cn) = Counter::from_name(name) {
                    Metric::Counter(cn)
                } else if AgentField::from_name(name).is_some() {
                    return Err(ConditionError::LabelRequired {
                        metric: name.to_string(),
                    });
                } else {
                    return Err(ConditionError::UnknownMetric {
                        name: name.to_string(),
                    });
                }
            }
        };
        let after = text[..c.pos].trim().to_string();
        c.skip_ws();
        let op = [
            (">=", Op::Ge),
            ("<=", Op::Le),
            ("==", Op::Eq),
            ("!=", Op::Ne),
            (">", Op::Gt),
            ("<", Op::Lt),
        ]
        .into_iter()
        .find(|(s, _)| c.eat(s))
        .map(|(_, op)| op)
        .ok_or_else(|| {
            let found = c.word();
            ConditionError::ExpectedOperator {
                after,
                found: (!found.is_empty()).then(|| found.to_string()),
            }
        })?;
        c.skip_ws();
        let num = c.word();
        if num.is_empty() {
            return Err(ConditionError::ExpectedNumber { after: op.as_str() });
        }
        let plain = num
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
            && num.bytes().any(|b| b.is_ascii_digit());
        let threshold = plain
            .then(|| num.parse::<f64>().ok())
            .flatten()
            .filter(|x| x.is_finite())
            .ok_or_else(|| ConditionError::BadNumber {
                text: num.to_string(),
            })?;
        c.skip_ws();
        if !c.rest().is_empty() {
            return Err(ConditionError::Trailing {
                text: c.rest().to_string(),
            });
        }
        Ok(Condition {
            metric,
            op,
            // -0.0 reads as 0.
            threshold: threshold + 0.0,
        })
    }

    /// Reads the metric and compares: `Some(true)` when the condition holds
    /// on enough samples, `Some(false)` when it does not hold on enough
    /// samples, `None` when there are fewer than `min_samples`.
    pub fn test(&self, input: &MetricInput<'_>, min_samples: u64) -> (Reading, Option<bool>) {
        let r = self.metric.read(input);
        let verdict = r
            .enough(min_samples)
            .then(|| self.op.holds(r.value, self.threshold));
        (r, verdict)
    }
}

/// Parses `{agent="name"}` at the cursor (which is on the `{`).
fn parse_label(c: &mut Cursor<'_>, metric: &str) -> Result<String, ConditionError> {
    let bad = |detail| ConditionError::BadLabel {
        metric: metric.to_string(),
        detail,
    };
    c.eat("{");
    c.skip_ws();
    if c.ident() != "agent" {
        return Err(bad("the only label is `agent`"));
    }
    c.skip_ws();
    if !c.eat("=") {
        return Err(bad("missing `=`"));
    }
    c.skip_ws();
    let quote = match c.rest().chars().next() {
        Some(q @ ('"' | '\'')) => q,
        _ => return Err(bad("the name must be quoted")),
    };
    c.pos += 1;
    let rest = c.rest();
    let end = rest.find(quote).ok_or_else(|| bad("unterminated quote"))?;
    let agent = &rest[..end];
    if agent.is_empty() || agent.len() > MAX_AGENT_NAME {
        return Err(bad("the name must be 1 to 256 bytes"));
    }
    c.pos += end + 1;
    c.skip_ws();
    if !c.eat("}") {
        return Err(bad("missing `}`"));
    }
    Ok(agent.to_string())
}

/// One parsed `alerts:` entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rule {
    /// Its position in `alerts:` (0-based).
    pub index: usize,
    /// The condition as written (trimmed): the alert's name in events.
    pub rule: String,
    /// The parsed condition.
    pub condition: Condition,
    /// The action (a key of `notifiers:`).
    pub action: String,
    /// The message; the condition text when the entry has none.
    pub message: String,
    /// Samples needed before the rule may fire.
    pub min_samples: u64,
    /// Seconds between re-notifications while the alert stays active.
    pub repeat_interval: f64,
}

/// What is wrong with an `alerts:` entry.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuleProblem {
    /// The entry is not a mapping.
    #[error("expected a mapping with `condition` and `action`, got {0}")]
    NotAMapping(String),
    /// A key the entry may not have (with the nearest known one, if any).
    #[error(
        "unknown key{} (known: {})",
        crate::suggest::did_you_mean(.0, RULE_KEYS),
        RULE_KEYS.join(", ")
    )]
    UnknownKey(String),
    /// A required key is missing.
    #[error("is required")]
    Missing,
    /// A key that must be a string is not.
    #[error("expected a string, got {0}")]
    NotAString(String),
    /// The condition does not parse.
    #[error(transparent)]
    Condition(#[from] ConditionError),
    /// A bad action name.
    #[error("bad action name {0:?} ({ACTION_NAME_RULE})")]
    BadAction(String),
    /// A bad `min_samples`.
    #[error("expected an integer >= 0, got {0}")]
    BadMinSamples(String),
    /// A bad `repeat_interval`.
    #[error("{0}")]
    BadInterval(String),
}

/// An `alerts:` entry that cannot be used, with its position:
/// `alerts[2].condition: unknown metric "x" (known: ...)`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("alerts[{index}]{}: {problem}", key_suffix(key))]
pub struct RuleError {
    /// The entry's position (0-based).
    pub index: usize,
    /// The key at fault; `None` for the entry as a whole.
    pub key: Option<String>,
    /// What is wrong.
    pub problem: RuleProblem,
}

fn key_suffix(key: &Option<String>) -> String {
    key.as_ref().map(|k| format!(".{k}")).unwrap_or_default()
}

/// A short rendering of a YAML value for error messages.
fn show(v: &Value) -> String {
    let mut s = v.to_string();
    if s.len() > 60 {
        let mut cut = 57;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

impl Rule {
    /// Parses entry `index` of `alerts:`.
    pub fn parse(index: usize, entry: &Value) -> Result<Rule, RuleError> {
        let err = |key: Option<&str>, problem| RuleError {
            index,
            key: key.map(str::to_string),
            problem,
        };
        let map = entry
            .as_object()
            .ok_or_else(|| err(None, RuleProblem::NotAMapping(show(entry))))?;
        if let Some(k) = map.keys().find(|k| !RULE_KEYS.contains(&k.as_str())) {
            return Err(err(Some(k), RuleProblem::UnknownKey(k.clone())));
        }
        let string = |key: &'static str| -> Result<Option<&str>, RuleError> {
            match map.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(v) => Err(err(Some(key), RuleProblem::NotAString(show(v)))),
            }
        };
        let text = string("condition")?
            .ok_or_else(|| err(Some("condition"), RuleProblem::Missing))?
            .trim();
        let condition = Condition::parse(text)
            .map_err(|e| err(Some("condition"), RuleProblem::Condition(e)))?;
        let action = string("action")?.ok_or_else(|| err(Some("action"), RuleProblem::Missing))?;
        if !is_action_name(action) {
            return Err(err(
                Some("action"),
                RuleProblem::BadAction(action.to_string()),
            ));
        }
        let message = string("message")?.unwrap_or(text).to_string();
        let min_samples = match map.get("min_samples") {
            None | Some(Value::Null) => DEFAULT_MIN_SAMPLES,
            Some(v) => v
                .as_u64()
                .ok_or_else(|| err(Some("min_samples"), RuleProblem::BadMinSamples(show(v))))?,
        };
        let repeat_interval = match map.get("repeat_interval") {
            None | Some(Value::Null) => DEFAULT_REPEAT_INTERVAL,
            Some(v) => {
                Seconds::parse(v)
                    .map_err(|e| err(Some("repeat_interval"), RuleProblem::BadInterval(e)))?
                    .0
            }
        };
        Ok(Rule {
            index,
            rule: text.to_string(),
            condition,
            action: action.to_string(),
            message,
            min_samples,
            repeat_interval,
        })
    }
}

/// Parses the `alerts:` entries of a configuration; the first bad one is
/// the error (see also `Config::rules` in [`crate::config`]).
pub fn parse_rules(alerts: &[Value]) -> Result<Vec<Rule>, RuleError> {
    alerts
        .iter()
        .enumerate()
        .map(|(i, v)| Rule::parse(i, v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Samples;
    use serde_json::json;

    fn cond(s: &str) -> Condition {
        Condition::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> String {
        Condition::parse(s).unwrap_err().to_string()
    }

    #[test]
    fn the_original_rules_parse() {
        let rules = parse_rules(&crate::config::Config::builtin().alerts).unwrap();
        assert_eq!(rules.len(), 4);
        let shown: Vec<String> = rules.iter().map(|r| r.condition.to_string()).collect();
        assert_eq!(
            shown,
            [
                "critic_rejection_rate > 0.5",
                "validation_pass_rate < 0.7",
                "cost_per_feature > 1",
                "average_retry_count > 2",
            ]
        );
        assert_eq!(rules[0].rule, "critic_rejection_rate > 0.50");
        assert_eq!(rules[0].action, "notify_admin");
        assert_eq!(rules[2].action, "warn_user");
        assert!(rules[1].message.starts_with("Validation pass rate <70%"));
        assert!(rules
            .iter()
            .all(|r| r.min_samples == 5 && r.repeat_interval == 3600.0));
    }

    #[test]
    fn whitespace_and_every_operator() {
        for (text, op) in [
            ("x > 1", Op::Gt),
            ("x>=1", Op::Ge),
            ("x <1", Op::Lt),
            ("x<= 1", Op::Le),
            ("x == 1", Op::Eq),
            ("x != 1", Op::Ne),
        ] {
            let text = text.replace('x', "\t events_dropped ");
            let c = cond(&format!("  {text}\n"));
            assert_eq!(c.op, op, "{text}");
            assert_eq!(c.threshold, 1.0);
            assert_eq!(c.metric, Metric::Counter(Counter::EventsDropped));
        }
        assert_eq!(cond("cost_per_feature>-2.5e-1").threshold, -0.25);
        assert_eq!(cond("cost_per_feature > .5").threshold, 0.5);
        assert!(cond("cost_per_feature > -0").threshold.is_sign_positive());
    }

    #[test]
    fn per_agent_metrics() {
        let c = cond(r#"agent_utilization{agent="medic"} < 0.1"#);
        assert_eq!(
            c.metric,
            Metric::Agent {
                field: AgentField::Utilization,
                agent: "medic".into()
            }
        );
        let c = cond("agent_failures { agent = 'bug fixer' } >= 3");
        assert_eq!(c.metric.agent(), Some("bug fixer"));
        assert_eq!(c.metric.name(), "agent_failures");
        assert_eq!(c.to_string(), r#"agent_failures{agent="bug fixer"} >= 3"#);
        let c = cond(r#"agent_cost_usd{agent="scribe"}>10"#);
        assert_eq!(c.metric.name(), "agent_cost_usd");
        // Without a label, agent_utilization is the window KPI.
        assert_eq!(
            cond("agent_utilization > 0.9").metric,
            Metric::Kpi(Kpi::AgentUtilization)
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let e = err("critic_rejection > 0.5");
        assert!(
            e.starts_with(
                r#"unknown metric "critic_rejection"; did you mean `critic_rejection_rate`? (known: agent_utilization, "#
            ),
            "{e}"
        );
        assert_eq!(
            err("cost_per_feature"),
            r#"expected an operator after "cost_per_feature" (one of > >= < <= == !=)"#
        );
        assert_eq!(
            err("cost_per_feature = 1"),
            r#"expected an operator after "cost_per_feature" (one of > >= < <= == !=), found "=""#
        );
        assert_eq!(err("cost_per_feature >"), r#"expected a number after ">""#);
        assert_eq!(
            err("cost_per_feature > nan"),
            r#"threshold "nan" is not a finite number"#
        );
        assert!(err("cost_per_feature > inf").contains("not a finite"));
        assert!(err("cost_per_feature > 1e999").contains("not a finite"));
        assert!(err("cost_per_feature > 1.2.3").contains("not a finite"));
        assert!(err("cost_per_feature > 0x10").contains("not a finite"));
        assert_eq!(
            err("cost_per_feature > 1 and more"),
            r#"unexpected "and more" after the threshold"#
        );
        assert!(err("   ").starts_with("is empty"));
        assert!(err("> 1").starts_with("expected a metric name"));
        assert!(err("1 > 1").starts_with("expected a metric name"));
        assert_eq!(
            err("agent_failures > 1"),
            r#"metric "agent_failures" needs an agent: agent_failures{agent="name"}"#
        );
        assert_eq!(
            err(r#"events{agent="x"} > 1"#),
            r#"metric "events" takes no label"#
        );
        assert!(err(r#"agent_failures{agent=x} > 1"#).contains("must be quoted"));
        assert!(err(r#"agent_failures{agent="x} > 1"#).contains("unterminated"));
        assert!(err(r#"agent_failures{task="x"} > 1"#).contains("only label"));
        assert!(err(r#"agent_failures{agent=""} > 1"#).contains("1 to 256"));
        assert!(err(r#"agent_failures{agent="x" > 1"#).contains("missing `}`"));
    }

    #[test]
    fn rule_errors_name_the_position_and_key() {
        let parse = |v: Value| Rule::parse(3, &v).unwrap_err().to_string();
        assert!(parse(json!({"condition": "nope > 1", "action": "a"}))
            .starts_with(r#"alerts[3].condition: unknown metric "nope""#));
        assert_eq!(
            parse(json!({"action": "a"})),
            "alerts[3].condition: is required"
        );
        assert_eq!(
            parse(json!({"condition": "events > 1"})),
            "alerts[3].action: is required"
        );
        assert!(parse(json!({"condition": "events > 1", "action": "a b"}))
            .starts_with(r#"alerts[3].action: bad action name "a b""#));
        assert_eq!(
            parse(json!({"condition": 5, "action": "a"})),
            "alerts[3].condition: expected a string, got 5"
        );
        assert!(parse(
            json!({"condition": "events > 1", "action": "a", "repeat_interval": "soon"})
        )
        .starts_with("alerts[3].repeat_interval: expected a duration"));
        assert!(
            parse(json!({"condition": "events > 1", "action": "a", "repeat_interval": 0}))
                .starts_with("alerts[3].repeat_interval: must be more than 0")
        );
        assert_eq!(
            parse(json!({"condition": "events > 1", "action": "a", "min_samples": -1})),
            "alerts[3].min_samples: expected an integer >= 0, got -1"
        );
        assert!(
            parse(json!({"condition": "events > 1", "action": "a", "mesage": "x"})).starts_with(
                "alerts[3].mesage: unknown key; did you mean `message`? (known: condition, action"
            )
        );
        assert!(parse(json!("events > 1")).starts_with("alerts[3]: expected a mapping"));
    }

    #[test]
    fn rule_options() {
        let r = Rule::parse(
            0,
            &json!({"condition": " events_rejected > 10 ", "action": "page", "min_samples": 0,
                    "repeat_interval": "5m"}),
        )
        .unwrap();
        assert_eq!(r.rule, "events_rejected > 10");
        assert_eq!(r.message, "events_rejected > 10");
        assert_eq!(r.min_samples, 0);
        assert_eq!(r.repeat_interval, 300.0);
        for (v, secs) in [
            (json!("30s"), 30.0),
            (json!("1h"), 3600.0),
            (json!("1d"), 86400.0),
            (json!(90), 90.0),
            (json!("90"), 90.0),
            (json!("1.5m"), 90.0),
            (json!(" 2 h "), 7200.0),
        ] {
            assert_eq!(Seconds::parse(&v).unwrap().0, secs, "{v}");
        }
        for v in [
            json!("-5s"),
            json!("1w"),
            json!("inf"),
            json!(""),
            json!("h"),
            json!(true),
            json!("400d"),
        ] {
            assert!(Seconds::parse(&v).is_err(), "{v}");
        }
    }

    #[test]
    fn metrics_read_value_and_samples() {
        let snap = MetricsSnapshot {
            window: Kpis {
                agent_utilization: 0.4,
                cost_per_feature: 1.5,
                average_retry_count: 2.5,
                critic_rejection_rate: 0.6,
                validation_pass_rate: 0.9,
                time_to_completion: 30.0,
                time_to_completion_p50: 20.0,
                time_to_completion_p95: 90.0,
                samples: Samples {
                    events: 100,
                    agents: 3,
                    features_completed: 2,
                    tasks_finished: 4,
                    critic_decisions: 5,
                    validations: 6,
                    completions: 7,
                },
            },
            agents: [(
                "medic".to_string(),
                AgentKpis {
                    utilization: 0.25,
                    runs: 8,
                    failures: 3,
                    cost_usd: 1.25,
                    ..Default::default()
                },
            )]
            .into(),
            ..Default::default()
        };
        let counters = StatsSnapshot {
            accepted: 11,
            rejected: 12,
            dropped: 13,
            duplicates: 14,
            last_id: 99,
            ..Default::default()
        };
        let input = MetricInput::new(&snap, counters);
        let read = |s: &str| {
            let r = cond(&format!("{s} > 0")).metric.read(&input);
            (r.value, r.samples)
        };
        assert_eq!(read("agent_utilization"), (0.4, Some(100)));
        assert_eq!(read("cost_per_feature"), (1.5, Some(2)));
        assert_eq!(read("average_retry_count"), (2.5, Some(4)));
        assert_eq!(read("critic_rejection_rate"), (0.6, Some(5)));
        assert_eq!(read("validation_pass_rate"), (0.9, Some(6)));
        assert_eq!(read("time_to_completion"), (30.0, Some(7)));
        assert_eq!(read("time_to_completion_p50"), (20.0, Some(7)));
        assert_eq!(read("time_to_completion_p95"), (90.0, Some(7)));
        assert_eq!(read("events"), (11.0, None));
        assert_eq!(read("events_rejected"), (12.0, None));
        assert_eq!(read("events_dropped"), (13.0, None));
        assert_eq!(read("events_duplicate"), (14.0, None));
        assert_eq!(read(r#"agent_utilization{agent="medic"}"#), (0.25, Some(8)));
        assert_eq!(read(r#"agent_failures{agent="medic"}"#), (3.0, Some(8)));
        assert_eq!(read(r#"agent_cost_usd{agent="medic"}"#), (1.25, Some(8)));
        assert_eq!(read(r#"agent_cost_usd{agent="ghost"}"#), (0.0, Some(0)));
    }

    #[test]
    fn metric_names_list_every_metric() {
        use std::collections::BTreeSet;
        let names: BTreeSet<&str> = (Kpi::ALL.iter().map(|k| k.name()))
            .chain(Counter::ALL.iter().map(|c| c.name()))
            .chain(AgentField::ALL.iter().map(|a| a.name()))
            .collect();
        let listed: BTreeSet<&str> = METRIC_NAMES.into_iter().collect();
        assert_eq!(listed.len(), METRIC_NAMES.len());
        assert_eq!(names, listed);
    }

    #[test]
    fn nan_never_holds() {
        for op in [Op::Gt, Op::Ge, Op::Lt, Op::Le, Op::Eq, Op::Ne] {
            assert!(!op.holds(f64::NAN, 0.0), "{op:?}");
        }
        assert!(Op::Gt.holds(f64::INFINITY, 1e300));
        assert!(Op::Eq.holds(0.0, -0.0));
        assert!(Op::Ge.holds(0.5, 0.5) && !Op::Gt.holds(0.5, 0.5));
    }
}
