//! The metrics engine: six KPIs per UTC time bucket, over a rolling window,
//! overall, per agent and per feature. Pure logic, no I/O.
//!
//! The engine observes events one at a time. Events of one task must arrive
//! in their order; events of unrelated tasks may arrive in any order. The
//! time of every event is its `Event::timestamp` (Unix seconds), never a
//! payload field. Events with a negative, non-finite or later than
//! 9999-12-31T23:59:59Z timestamp are ignored and counted
//! (`ignored_events`). A missing or mistyped payload field never panics:
//! the event contributes what it can.
//!
//! # Buckets
//!
//! | granularity | length    | starts at                | name                  |
//! |-------------|-----------|--------------------------|-----------------------|
//! | minute      | 60 s      | second 0 of the minute   | `YYYY-MM-DDTHH:MM:00` |
//! | hourly      | 3 600 s   | minute 0 of the hour     | `YYYY-MM-DDTHH:00:00` |
//! | daily       | 86 400 s  | 00:00 UTC                | `YYYY-MM-DD`          |
//! | weekly      | 604 800 s | Monday 00:00 UTC         | `YYYY-Www`            |
//!
//! All buckets are UTC. Weekly names use the ISO week-year and the ISO week
//! number on two digits (2026-12-31 is in `2026-W53`, 2027-01-04 starts
//! `2027-W01`). A timestamp exactly on a boundary belongs to the bucket
//! that starts there; 1 ms before it, to the previous one.
//!
//! Each bucket holds additive raw state ([`BucketStats`]: counts, sums,
//! sets, a histogram), so buckets merge exactly and KPIs are derived only
//! when read. The rolling window is the merge of the minute buckets of the
//! last `window_minutes` minutes, ending with the minute containing the
//! snapshot time. The engine keeps the newest `retention` buckets of each
//! granularity (by default `window_minutes + 2` minutes, 168 hours, 31 days,
//! 14 weeks), counted back from the bucket of *now*: the newest event
//! timestamp seen, but never later than the hub's clock when it drives the
//! engine ([`MetricsEngine::advance_clock`], as the hub does before every
//! batch and before reading the log back). Contributions to older buckets
//! are dropped. An event stamped ahead of the clock (the pipeline accepts up
//! to a day) is counted in its own bucket and never prunes anything. The
//! engine also keeps all-time totals, which retention never drops; they are
//! bounded by name instead (see *State and bounds*).
//!
//! # Events
//!
//! | event type            | fields used                                         |
//! |-----------------------|-----------------------------------------------------|
//! | `task_queued`         | `task_id`, `feature`                                 |
//! | `agent_started`       | `agent`, `task_id`                                   |
//! | `agent_completed`     | `agent`, `task_id`, `status`, `duration_ms`, `cost_usd` |
//! | `validation_complete` | `task_id`, `result`, `cost`                          |
//! | `hitl_escalated`      | `task_id`, `attempts`                                |
//! | `critic_decision`     | `rejected` (bool)                                    |
//! | `llm_call`            | `agent`, `task_id`, `cost_usd` (a model call, from OpenTelemetry) |
//! | any other             | counted in `events_by_type` only                     |
//!
//! Any event with a string `agent` makes that agent *seen* in its bucket.
//! A cost (`agent_completed.cost_usd`, `llm_call.cost_usd`,
//! `validation_complete.cost`) or a
//! duration (`duration_ms`) is used only when it is a finite number in
//! [0, 10¹²]; larger values are treated as malformed so that sums stay
//! finite. A status is *failed* when it is one of `failed`, `failure`,
//! `error`, `timeout`, `crashed`, case-insensitively.
//!
//! # Definitions
//!
//! Every KPI whose denominator is 0 is 0.0; the denominators are reported
//! beside the KPIs (`samples`) so that a reader can tell "0" from "no data".
//!
//! **agent_utilization** = busy seconds of agents in the bucket / (bucket
//! length in seconds × number of distinct agents seen in the bucket),
//! clamped to [0, 1].
//! - A busy span runs from an `agent_started` to the matching
//!   `agent_completed`: same `agent` and same `task_id`; when the agent has
//!   several open starts on the task, the latest is matched. Only completed
//!   spans count: an open span contributes nothing until it completes.
//! - When an `agent_completed` has no matching start (or no `task_id`), a
//!   span of `duration_ms` ending at the completion is used, if
//!   `duration_ms` is usable. Spans are clipped at time 0; a matched start
//!   stamped after its completion gives no span.
//! - **The validator's span.** A `validation_complete` for a task ends the
//!   open span on that task (the latest start) of every agent that has no
//!   `agent_completed` of its own on the task: the original's validator
//!   (`gemini`) emits `agent_started` and then the validation, never a
//!   completion. Should such an agent complete the task after all, its span
//!   continues from the validation, so its busy time is counted once. An
//!   agent that has completed on the task (a retry in progress) keeps its
//!   open span until its own completion.
//! - A span is clipped to every bucket it overlaps, at each granularity's
//!   own boundaries (a span across an hour boundary adds to both hours).
//!   Only buckets within retention receive it; the totals receive it whole.
//! - An agent is seen in a bucket when it has an event or busy time in it.
//! - The length is always the full bucket length, so the current hour's
//!   value grows as the hour goes by. Concurrent spans of one agent add up
//!   (an agent running two tasks at once is busy twice), hence the clamp.
//! - Window: busy seconds in the window's minutes / (window_minutes × 60 ×
//!   agents seen in the window). Overall: the span is the time between the
//!   first and the last event observed (at least 1 s). Per agent: its busy
//!   seconds / span, clamped to [0, 1].
//!
//! **cost_per_feature** = cost (of `agent_completed`, `llm_call` and
//! `validation_complete`) attributed to the features completed in the
//! bucket / number of distinct features completed in the bucket.
//! - A task's feature is the `feature` of its `task_queued`. Costs of a task
//!   count towards its feature when they arrive once the feature is known;
//!   costs of tasks with no known feature count in `total_cost` only.
//! - A feature is completed when a `validation_complete` of one of its tasks
//!   arrives (the validation's own cost included). At that moment the part of
//!   the feature's cost not yet attributed is added to the bucket's
//!   `feature_cost`, and the feature joins the bucket's set of completed
//!   features. Costs arriving after a completion are attributed at the
//!   feature's next completion. So merging buckets never counts a cost
//!   twice, and a feature completed twice in one bucket counts once.
//! - For a feature spanning several tasks, the attribution follows the
//!   arrival order of those tasks' events.
//!
//! **average_retry_count** = sum of retries / number of tasks finished in
//! the bucket.
//! - A task finishes at its first `validation_complete` or first
//!   `hitl_escalated`, whichever comes first; it is counted once, there.
//! - Its retries are the `agent_started` events of an agent on the task
//!   whose previous `agent_completed` on the task (by the same agent) was
//!   failed. A non-failed completion clears that.
//! - If the task finished by escalation, retries = max(that count,
//!   `hitl_escalated.attempts`) (a non-negative number, truncated).
//!
//! **critic_rejection_rate** = rejections / critic decisions in the bucket.
//! A decision is an `agent_completed` with `agent == "critic"` and status
//! `approved` or `rejected` (case-insensitive), or a `critic_decision` event
//! with a boolean `rejected` (see [`critic_decision_event`]).
//!
//! **validation_pass_rate** = passed / `validation_complete` events in the
//! bucket. One passes when `result.passed == true`, or when
//! `result.test_passed == true` and `result.browser_launched` and
//! `result.test_executed` are true when present.
//!
//! **time_to_completion** = mean seconds from a task's `task_queued` to its
//! first `validation_complete` (exact sum / count), recorded in the
//! validation's bucket; a validation stamped before the queueing counts as
//! 0 s. **time_to_completion_p50** and **time_to_completion_p95** are the
//! nearest-rank quantiles read from a log-scale histogram (bins
//! `(γ^(i-1), γ^i]`, γ = 1.02/0.98, fixed boundaries so histograms merge by
//! adding counts): each is within 2 % (relative) of the exact quantile.
//!
//! # State and bounds
//!
//! - Per task: feature, queue time, open starts per agent (at most 64 per
//!   agent; the oldest is dropped), retry count, agents whose last
//!   completion failed, finished flag. Tasks with no event for more than
//!   `task_idle_eviction_secs` (default one day) before the newest event
//!   timestamp seen are evicted and counted (`evicted_tasks`); the check runs
//!   every 1 024 events or when the newest timestamp advanced by a minute,
//!   and not before an eighth as many events as there are tasks have passed
//!   since the last one (so its cost per event stays bounded). A later
//!   event of an evicted task starts it afresh.
//! - Per feature: its cost and the part already attributed, evicted the
//!   same way.
//! - At most `max_open_tasks` tasks (default 250,000) are held, open or
//!   finished: past it the least recently active task (by arrival of its
//!   events) is evicted and counted in `evicted_tasks`, so `open_tasks`
//!   never exceeds it.
//! - `open_tasks` counts the tasks in memory that have not finished.
//! - Per-bucket maps (by event type, agent, feature) are hash maps past a
//!   few names: an event costs the same with 10 names or 100,000. The
//!   all-time totals keep at most `max_names` names per section (default
//!   1,000; offline reports keep all): once a section holds twice that, the
//!   least active names are folded into one row named [`OTHER`] (`(other)`),
//!   whose figures are their sums (completed features folded so are
//!   counted in `features_completed_other`). Snapshots list the
//!   [`DEFAULT_SNAPSHOT_AGENTS`] most active agents of the window and count
//!   them all (`agents_total`).
//! - "Now" for retention and eviction is the newest event timestamp seen,
//!   capped by the clock when there is one: without a clock an event
//!   stamped far in the future moves both; with one it moves neither. The pipeline refuses events stamped more than a
//!   day ahead of its clock.
//!
//! # Files
//!
//! - `mod.rs`: this documentation and the re-exports.
//! - `bucket.rs`: [`Granularity`] (boundaries, names), [`BucketStats`]
//!   (raw state, merge, KPI derivation), [`BucketSet`].
//! - `histogram.rs`: [`LogHistogram`], the mergeable percentile histogram.
//! - `engine.rs`: [`MetricsEngine`] and its [`MetricsConfig`]: task, agent
//!   and feature state, turning events into bucket contributions.
//! - `name_map.rs`: [`NameMap`], the map of the per-bucket breakdowns: a
//!   scanned vector for a few names, a hash map past them.
//! - `kpi.rs`: the serialisable views [`Kpis`], [`MetricsSnapshot`],
//!   [`Report`] and their parts.
//! - `tests.rs`: worked scenarios and property tests of the whole engine.

mod bucket;
mod engine;
mod histogram;
mod input;
mod kpi;
mod name_map;
pub mod raw;
#[cfg(test)]
mod tests;

/// The six KPI names of the contract, in its order: the one list. The
/// alert rules' metric names start with it, `/api/config` serves it (as
/// `kpis`), and a test holds the dashboard's cards and the Python SDK's
/// `KPI_NAMES` to it.
pub const KPI_NAMES: [&str; 6] = [
    "agent_utilization",
    "cost_per_feature",
    "average_retry_count",
    "critic_rejection_rate",
    "validation_pass_rate",
    "time_to_completion",
];

pub use bucket::{AgentStats, BucketSet, BucketStats, FeatureStats, Granularity};
pub use engine::{
    critic_decision_event, is_failed_status, MetricsConfig, MetricsEngine, PointTotals, Retention,
    CRITIC_DECISION, DEFAULT_MAX_NAMES, DEFAULT_MAX_OPEN_TASKS, DEFAULT_SNAPSHOT_AGENTS,
    FAILED_STATUSES, LLM_CALL, MAX_AMOUNT, MAX_TIMESTAMP, OTHER,
};
pub use histogram::{LogHistogram, RELATIVE_ERROR};
pub use input::{validation_passed, EventFields};
pub use kpi::{
    AgentKpis, BucketView, CurrentBuckets, FeatureReport, Kpis, MetricsSnapshot, Report, Samples,
};
pub use name_map::NameMap;
