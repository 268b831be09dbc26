#!/usr/bin/env python3
"""Writes a realistic, task-heavy JSONL log for `agentpulse logs --stats`
and `agentpulse report` benchmarks (issue 19).

Each task is the original example's workflow: task_queued, then scribe,
critic (approved or rejected), runner (and medic retries on failure), a
validation_complete, sometimes a hitl_escalated; about 9 events a task, so
1 GB is some 5 M events and 550 k tasks. Lines are agentpulse's format
(with ids), one in ten in the original's id-less format.

    scripts/gen-logs-bench.py OUT.jsonl [SIZE_MB]   (default 1024)
"""

import json
import random
import sys


def main():
    out = sys.argv[1]
    size = int(sys.argv[2] if len(sys.argv) > 2 else 1024) * 1024 * 1024
    # Fixed seed: the same file every time, so runs compare.
    rng = random.Random(19)
    features = [f"feature_{i}" for i in range(40)]
    models = ["claude-sonnet-4.5", "claude-haiku-4.5", "gemini-2.5-pro"]
    ts = 1_764_547_200.0  # 2025-12-01T00:00:00Z
    eid = 0
    task = 0
    written = 0
    with open(out, "w", buffering=1 << 20) as f:

        def emit(ty, payload):
            nonlocal eid, ts, written
            eid += 1
            ts += rng.uniform(0.001, 0.05)
            if eid % 10 == 0:
                line = {"event_type": ty, "timestamp": round(ts, 3), "payload": payload}
            else:
                line = {
                    "id": eid,
                    "event_type": ty,
                    "timestamp": round(ts, 3),
                    "event_id": f"e{eid:x}",
                    "payload": payload,
                }
            text = json.dumps(line, separators=(",", ":")) + "\n"
            f.write(text)
            written += len(text)

        while written < size:
            task += 1
            t = f"t_{task:07d}"
            feature = rng.choice(features)
            emit("task_queued", {"task_id": t, "feature": feature, "est_cost": round(rng.uniform(0.1, 0.9), 2)})
            for agent in ("scribe", "critic", "runner"):
                emit("agent_started", {"agent": agent, "task_id": t, "model": rng.choice(models)})
                if agent == "critic":
                    status = "approved" if rng.random() < 0.8 else "rejected"
                elif agent == "runner":
                    status = "success" if rng.random() < 0.7 else "failed"
                else:
                    status = "success"
                payload = {
                    "agent": agent,
                    "task_id": t,
                    "status": status,
                    "duration_ms": rng.randint(100, 3000),
                    "cost_usd": round(rng.uniform(0.005, 0.2), 4),
                }
                if status == "failed":
                    payload["error"] = "TimeoutError: the Checkout button never appeared"
                emit("agent_completed", payload)
            passed = rng.random() < 0.75
            emit(
                "validation_complete",
                {
                    "task_id": t,
                    "result": {"passed": passed, "browser_launched": True, "test_executed": True, "test_passed": passed},
                    "cost": 0.08,
                    "duration_ms": rng.randint(500, 5000),
                    "screenshots": rng.randint(0, 5),
                },
            )
            if not passed and rng.random() < 0.3:
                emit("hitl_escalated", {"task_id": t, "attempts": 2, "last_error": "assertion failed", "priority": "high"})
    print(f"{out}: {written} bytes, {eid} events, {task} tasks", file=sys.stderr)


if __name__ == "__main__":
    main()
