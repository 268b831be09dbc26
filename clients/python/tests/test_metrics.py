"""get_metrics() and record_critic_decision() against the hub's engine."""

from __future__ import annotations

import time

import pytest

from agentpulse import KPI_NAMES, AgentPulseError
from conftest import free_port, wait_until


def workflow(em, task: str = "t_1", feature: str = "checkout") -> None:
    """The original's success workflow for one task."""
    em.emit("task_queued", {"task_id": task, "feature": feature, "est_cost": 0.45, "timestamp": time.time()})
    for agent, status, cost in (("scribe", "success", 0.12), ("critic", "approved", 0.02), ("runner", "success", 0.01)):
        em.emit("agent_started", {"agent": agent, "task_id": task, "model": "claude-sonnet-4.5", "tools": ["read"]})
        em.emit("agent_completed", {"agent": agent, "task_id": task, "status": status, "duration_ms": 1200, "cost_usd": cost})
    em.emit(
        "validation_complete",
        {"task_id": task, "result": {"passed": True}, "cost": 0.05, "duration_ms": 900, "screenshots": 2},
    )


def test_get_metrics_has_the_six_kpis(hub, make_emitter):
    em = make_emitter(hub.url)
    workflow(em)
    # flush=True (default) sends first; the hub's engine follows within ms.
    m = wait_until(
        lambda: (lambda m: m if m["window"]["samples"]["validations"] >= 1 else None)(em.get_metrics()),
        10,
        "the hub's metrics to include the workflow",
    )
    for name in KPI_NAMES:
        assert isinstance(m[name], float), name
        assert m[name] == m["window"][name]
    assert m["validation_pass_rate"] == 1.0
    assert m["critic_rejection_rate"] == 0.0
    assert m["average_retry_count"] == 0.0
    assert m["cost_per_feature"] == pytest.approx(0.12 + 0.02 + 0.01 + 0.05)
    assert m["time_to_completion"] >= 0.0
    assert 0.0 < m["agent_utilization"] <= 1.0
    # ...plus the rest of the hub's document.
    assert {"window", "buckets", "hub", "pipeline", "events_by_type"} <= set(m)
    assert m["events_by_type"]["agent_completed"] == 3


def test_record_critic_decision(hub, make_emitter):
    em = make_emitter(hub.url)
    assert em.record_critic_decision(rejected=True)
    assert em.record_critic_decision(rejected=False)
    assert em.record_critic_decision()  # rejected=True by default, as in the original
    assert em.flush(timeout=10)
    events = hub.wait_events(3)
    assert [(e["event_type"], e["payload"]) for e in events] == [
        ("critic_decision", {"rejected": True}),
        ("critic_decision", {"rejected": False}),
        ("critic_decision", {"rejected": True}),
    ]
    m = wait_until(
        lambda: (lambda m: m if m["window"]["samples"]["critic_decisions"] == 3 else None)(em.get_metrics()),
        10,
        "three critic decisions in the metrics",
    )
    assert m["critic_rejection_rate"] == pytest.approx(2 / 3)


def test_get_metrics_without_hub_raises(make_emitter):
    em = make_emitter(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(AgentPulseError) as info:
        em.get_metrics(timeout=2)
    assert info.value.status is None and "unreachable" in str(info.value)
