#!/usr/bin/env python3
"""A small multi-agent run reporting to an agentpulse hub through the Python SDK.

It plays the original observability module's success workflow for one task:

    task_queued -> scribe (writes the test) -> critic (approves it)
    -> runner (executes it) -> gemini (validates it: validation_complete, passed)

then flushes and prints the hub's KPIs. The hub is ``$AGENTPULSE_HUB_URL``
(default ``http://127.0.0.1:3010``), with ``$AGENTPULSE_TOKEN`` if it needs one:

    agentpulse serve &
    pip install ./clients/python
    python examples/python_agent.py
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

try:
    from agentpulse import KPI_NAMES, AgentPulseError, emit_event, get_emitter
except ImportError:  # run from a checkout without installing the SDK
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "clients" / "python" / "src"))
    from agentpulse import KPI_NAMES, AgentPulseError, emit_event, get_emitter

MODEL = "claude-sonnet-4.5"
# Utilization is busy time over the whole window (60 min by default) and
# the number of agents: a few seconds of work is a small percentage.
FORMATS = {
    "agent_utilization": "{:.4%}",
    "cost_per_feature": "${:.3f}",
    "average_retry_count": "{:.2f}",
    "critic_rejection_rate": "{:.1%}",
    "validation_pass_rate": "{:.1%}",
    "time_to_completion": "{:.3f} s",
}


class Agent:
    """An agent whose every run is reported as agent_started/agent_completed."""

    def __init__(self, name: str, tools: list, cost_usd: float, verdict: str = "success") -> None:
        self.name, self.tools, self.cost_usd, self.verdict = name, tools, cost_usd, verdict

    def run(self, task_id: str) -> str:
        start = time.time()
        emit_event("agent_started", {"agent": self.name, "task_id": task_id, "model": MODEL, "tools": self.tools})
        time.sleep(0.05)  # the agent's work
        emit_event(
            "agent_completed",
            {
                "agent": self.name,
                "task_id": task_id,
                "status": self.verdict,
                "duration_ms": int((time.time() - start) * 1000),
                "cost_usd": self.cost_usd,
            },
        )
        return self.verdict


def validate(task_id: str) -> None:
    """Gemini's validation: its own start, then validation_complete."""
    start = time.time()
    emit_event("agent_started", {"agent": "gemini", "task_id": task_id, "model": "gemini-2.5-pro", "tools": ["browser"]})
    time.sleep(0.05)  # the browser run
    emit_event(
        "validation_complete",
        {
            "task_id": task_id,
            "result": {"passed": True, "browser_launched": True, "test_executed": True, "test_passed": True},
            "cost": 0.08,
            "duration_ms": int((time.time() - start) * 1000),
            "screenshots": 3,
        },
    )


def wait_for_metrics(task_count: int, timeout: float = 5.0) -> dict:
    """The hub's metrics once its engine has seen our validations."""
    deadline = time.monotonic() + timeout
    while True:
        metrics = get_emitter().get_metrics()
        if metrics["window"]["samples"]["validations"] >= task_count or time.monotonic() > deadline:
            return metrics
        time.sleep(0.02)


def main() -> int:
    task_id = f"t_{uuid.uuid4().hex[:8]}"
    emit_event("task_queued", {"task_id": task_id, "feature": "user_authentication", "est_cost": 0.35, "timestamp": time.time()})
    Agent("scribe", ["read", "write", "edit", "grep"], 0.12).run(task_id)
    # The critic's "approved" completion is its decision; the hub counts it
    # (record_critic_decision() would count the same decision twice).
    Agent("critic", ["read"], 0.02, verdict="approved").run(task_id)
    Agent("runner", ["bash"], 0.01).run(task_id)
    validate(task_id)

    emitter = get_emitter()
    if not emitter.flush(timeout=5):
        print(f"could not deliver every event to {emitter.hub_url}: {emitter.stats()}", file=sys.stderr)
        return 1
    try:
        metrics = wait_for_metrics(1)
    except AgentPulseError as e:
        print(f"cannot read metrics: {e}", file=sys.stderr)
        return 1
    print(f"task {task_id}: events delivered to {emitter.hub_url} ({emitter.stats().sent} sent)")
    print("KPIs over the hub's window:")
    for name in KPI_NAMES:
        print(f"  {name:<24} {FORMATS[name].format(metrics[name])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
