//! Alerts and budgets: rules over the live metrics, and spending limits
//! over the event stream. Pure logic: no I/O, no threads, no clock (the
//! time is always passed in as `now`, Unix seconds).
//!
//! # Configuration
//!
//! Three sections of the configuration file (the same file as the event
//! schema) configure this module; all are optional and checked at load, so
//! a bad entry stops the hub with its position (`alerts[2].condition:
//! unknown metric "critic_rejection" (known: ...)`).
//!
//! ```yaml
//! alerts:
//!   - condition: "critic_rejection_rate > 0.50"
//!     action: notify_admin
//!     message: "Critic rejecting >50% of tests"
//!     min_samples: 5            # optional, default 5
//!     repeat_interval: 1h       # optional, default 1h
//! notifiers:
//!   notify_admin:
//!     - type: webhook
//!       url: http://127.0.0.1:9999/hook
//!       format: slack            # optional: json (default) | slack
//!       timeout: 5s              # optional
//!       retries: 3               # optional
//!     - type: command
//!       command: ["/usr/bin/logger", "-t", "agentpulse"]
//!   warn_user:
//!     - type: console
//! budgets:
//!   - scope: global             # global | feature | task | agent
//!     period: day               # day | week | month | lifetime
//!     limit_usd: 50
//!     warn_at: 0.8              # optional, default 0.8
//! ```
//!
//! ## `alerts:`
//!
//! | key               | required | meaning                                                        |
//! |-------------------|----------|----------------------------------------------------------------|
//! | `condition`       | yes      | `metric operator number`, see below                            |
//! | `action`          | yes      | a name: which `notifiers:` entry to use (`[A-Za-z0-9_.-]`, ≤ 64) |
//! | `message`         | no       | text sent with the alert (default: the condition)              |
//! | `min_samples`     | no       | samples the metric needs before the rule may fire (default 5)  |
//! | `repeat_interval` | no       | re-notify this often while active (default `1h`)               |
//!
//! Other keys are refused, so that a misspelt option is not silently
//! ignored. Durations (`repeat_interval`, a webhook's `timeout`) are written
//! `30s`, `5m`, `1h`, `1d` (decimals allowed: `1.5h`) or as a number of
//! seconds; they must be > 0 and at most 365 days.
//!
//! **Conditions** are `metric operator number`, with any whitespace around
//! the parts. Operators: `>`, `>=`, `<`, `<=`, `==`, `!=` (exact float
//! comparisons). The number is a finite decimal (`0.5`, `-1`, `2e3`).
//! Metrics, each with the sample count that `min_samples` is compared with:
//!
//! | metric                          | value                                        | samples                    |
//! |---------------------------------|----------------------------------------------|----------------------------|
//! | `agent_utilization`             | window KPI                                   | events in the window       |
//! | `cost_per_feature`              | window KPI                                   | features completed         |
//! | `average_retry_count`           | window KPI                                   | tasks finished             |
//! | `critic_rejection_rate`         | window KPI                                   | critic decisions           |
//! | `validation_pass_rate`          | window KPI                                   | validations                |
//! | `time_to_completion` (`_p50`, `_p95`) | window KPI, seconds                    | completions                |
//! | `agent_utilization{agent="x"}`  | agent x's utilization over the window        | x's runs in the window     |
//! | `agent_failures{agent="x"}`     | agent x's failed runs in the window          | x's runs in the window     |
//! | `agent_cost_usd{agent="x"}`     | agent x's cost in the window, USD            | x's runs in the window     |
//! | `events`                        | events accepted since the hub started        | always enough              |
//! | `events_rejected`               | events refused by validation since start     | always enough              |
//! | `events_dropped`                | events dropped (queue full) since start      | always enough              |
//! | `events_duplicate`              | retries dropped by `event_id` since start    | always enough              |
//!
//! KPIs are those of the metrics engine's rolling window
//! ([`crate::metrics`]). The agent label takes double or single quotes.
//! An agent absent from the window reads 0 with 0 samples. Counters are
//! totals, not rates: once `events_rejected > 100` holds it stays true
//! until the hub restarts (and re-notifies every `repeat_interval`).
//!
//! **Semantics.** Rules are evaluated after each metrics batch
//! ([`AlertEngine::evaluate`]). A rule *holds* when its metric has at least
//! `min_samples` samples and the comparison is true (a NaN value never
//! holds, not even with `!=`). An alert
//! - *fires* (`alert_triggered`, `repeat: false`) when its rule starts to
//!   hold;
//! - while it keeps holding, *re-notifies* (`alert_triggered`, `repeat:
//!   true`) once `repeat_interval` has passed since its last notification,
//!   and is otherwise quiet;
//! - *resolves* (`alert_resolved`) as soon as the rule stops holding:
//!   either the comparison is false (`reason: condition_false`) or the
//!   samples dropped below `min_samples`, e.g. the window emptied
//!   (`reason: insufficient_samples`): an alert is only active while the
//!   evidence for it is;
//! - fires again the next time the rule holds.
//!
//! Alert events carry `{rule, metric, agent_name?, value, samples?,
//! threshold, operator, message, action, rule_index, since}`, plus `repeat`
//! (triggered) or `reason` and `duration_secs` (resolved). The engine reads
//! metrics, never events, so the events it produces cannot re-trigger it;
//! the per-agent label travels as `agent_name` (not `agent`) so that the
//! metrics engine does not count an alert as activity of that agent.
//!
//! ## `notifiers:`
//!
//! A mapping from action name to a list of notifiers, each chosen by
//! `type`; all of an action's notifiers are used.
//!
//! | type      | keys                                                                  |
//! |-----------|-----------------------------------------------------------------------|
//! | `console` | none                                                                  |
//! | `webhook` | `url` (http/https, required), `format` (`json` default, `slack`), `timeout` (duration), `retries` (0–10) |
//! | `command` | `command`: program and arguments, a list (no shell)                   |
//!
//! Every rule's action must have an entry: a misspelt action is refused at
//! load with the nearest defined one (`alerts[0].action: no notifier
//! `notify_admn`; did you mean `notify_admin`?`). The built-in rules'
//! actions, `notify_admin` and `warn_user`, notify the console; a file's
//! entry of the same name replaces that. An explicit empty list
//! (`notify_admin: []`) silences an action (its events are still emitted
//! and kept in the history). Unknown keys are refused.
//!
//! ## `budgets:`
//!
//! | key         | required | meaning                                                   |
//! |-------------|----------|-----------------------------------------------------------|
//! | `scope`     | yes      | `global`, `feature`, `task` or `agent`                    |
//! | `period`    | yes      | `day`, `week`, `month` or `lifetime`                      |
//! | `limit_usd` | yes      | the limit, a number > 0                                   |
//! | `warn_at`   | no       | fraction of the limit that warns, in (0, 1] (default 0.8) |
//!
//! **Spend** is `agent_completed.cost_usd` and `validation_complete.cost`
//! (finite, in (0, 10¹²]; anything else is ignored). It is charged to:
//! - `global`: all spend;
//! - `feature`: the `feature` of the task's `task_queued` (costs of a task
//!   whose feature is unknown count for no feature);
//! - `task`: the event's `task_id`;
//! - `agent`: the event's `agent`. `validation_complete` has no agent: it
//!   counts for `global`, `feature` and `task` only.
//!
//! Each budget applies to every key of its scope separately (a `feature`
//! budget of $5/day allows $5 per feature per day).
//!
//! **Periods** are UTC: `day` from 00:00, `week` from Monday 00:00 (ISO),
//! `month` from the 1st 00:00, `lifetime` never resets. A cost belongs to
//! the period of its event's timestamp; the first cost of a newer period
//! starts fresh sums for every key of that budget (the past period's sums
//! are dropped). A cost of a period that a budget has already left is not
//! counted (`late_costs`).
//!
//! **Events.** When a key's spend reaches `warn_at` × limit, the tracker
//! emits `budget_warning` `{current_spend, limit, remaining, warn_at, scope,
//! period, key?, period_start, budget_index}`; when it reaches the limit,
//! `budget_exceeded` `{current_spend, limit, remaining, tasks_blocked,
//! scope, period, key?, period_start, budget_index}`. `key` is the
//! feature, task or agent (absent for `global`); `period_start` is Unix
//! seconds (0 for `lifetime`); `remaining` is negative once overspent;
//! `tasks_blocked` counts the scope's tasks still active (queued or started,
//! and not finished by `validation_complete` or `hitl_escalated` since; a
//! later `agent_started` makes a task active again; an agent's tasks are
//! those it started on). Each is emitted at most once per
//! (budget, key, period); a single cost crossing both thresholds emits only
//! `budget_exceeded`. Thresholds are compared with a relative tolerance of
//! 10⁻⁹ (ten costs of $0.10 reach $1.00). Budget events that agents emit
//! themselves are neither spend nor do they stand in for the tracker's own.
//!
//! **Check.** [`BudgetTracker::check`] answers "may I spend `cost` on this
//! feature / task / agent now?": every `global` budget and every budget
//! whose scope key is given (the feature may come from a known task) is
//! checked; one blocks when its spend has reached the limit or the cost
//! would take it over.
//!
//! **Bounds.** At most 10 000 keys per budget and 100 000 tasks are
//! remembered; beyond, the least recently used is forgotten and counted
//! ([`TrackerStats`]). A forgotten key that spends again starts from 0 in
//! that period. With no budget configured the tracker keeps nothing.
//!
//! **Clock.** The tracker has none: costs go to the period of their event's
//! timestamp, so an event stamped far in the future would move a budget
//! into that period. [`BudgetTracker::observe_at`] counts the cost of an
//! event stamped after the caller's `now` as of `now` (and counts that).
//!
//! # Files
//!
//! - `rule.rs`: parsing `alerts:` entries ([`Rule`], [`Condition`],
//!   [`parse_rules`]) and reading metrics ([`MetricInput`]).
//! - `eval.rs`: the alert state machine ([`AlertEngine`]).
//! - `budget.rs`: budgets ([`BudgetTracker`]).

mod budget;
mod eval;
mod rule;

pub use budget::{
    period_end, period_start, BadCost, BudgetCheck, BudgetConfig, BudgetPeriod, BudgetScope,
    BudgetState, BudgetStatus, BudgetTracker, CheckKeys, CheckResult, TrackerStats,
    BUDGET_EXCEEDED, BUDGET_WARNING, DEFAULT_MAX_KEYS, DEFAULT_MAX_TASKS,
};
pub use eval::{
    ActiveAlert, AlertEngine, AlertEvent, AlertKind, ResolveReason, ALERT_RESOLVED,
    ALERT_TRIGGERED, HISTORY_LEN,
};
pub use rule::{
    is_action_name, parse_rules, AgentField, Condition, ConditionError, Counter, Kpi, Metric,
    MetricInput, Op, Reading, Rule, RuleError, RuleProblem, ACTION_NAME_RULE, DEFAULT_MIN_SAMPLES,
    DEFAULT_REPEAT_INTERVAL, METRIC_NAMES, RULE_KEYS,
};
