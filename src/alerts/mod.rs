//! Alerts: rules over the live metrics and the alert state machine. Pure
//! logic: no I/O, no clock (the time is passed in as `now`).

mod eval;
mod rule;

pub use eval::{
    ActiveAlert, AlertEngine, AlertEvent, AlertKind, ResolveReason, ALERT_RESOLVED,
    ALERT_TRIGGERED, HISTORY_LEN,
};
pub use rule::{
    is_action_name, parse_rules, AgentField, Condition, ConditionError, Counter, Kpi, Metric,
    MetricInput, Op, Reading, Rule, RuleError, RuleProblem, ACTION_NAME_RULE, DEFAULT_MIN_SAMPLES,
    DEFAULT_REPEAT_INTERVAL, METRIC_NAMES, RULE_KEYS,
};
