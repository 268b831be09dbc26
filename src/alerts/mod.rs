//! Alerts: rules over the live metrics. Pure logic: no I/O, no clock.

mod rule;

pub use rule::{
    is_action_name, parse_rules, AgentField, Condition, ConditionError, Counter, Kpi, Metric,
    MetricInput, Op, Reading, Rule, RuleError, RuleProblem, ACTION_NAME_RULE, DEFAULT_MIN_SAMPLES,
    DEFAULT_REPEAT_INTERVAL, METRIC_NAMES, RULE_KEYS,
};
