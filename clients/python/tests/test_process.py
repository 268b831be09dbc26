"""Whole processes: the module-level API from the environment, the exit
flush, forks, and the example agent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import REPO

EXAMPLE = REPO / "examples" / "python_agent.py"


def run_python(code: str, env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=timeout, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_atexit_flush_delivers_without_explicit_flush(hub, child_env):
    child_env["AGENTPULSE_HUB_URL"] = hub.url
    code = (
        "import json\n"
        "from agentpulse import emit_event, get_emitter\n"
        "ids = [emit_event('note', {'i': i}) for i in range(1000)]\n"
        "get_emitter().record_critic_decision(rejected=False)\n"
        "print(json.dumps(ids))\n"
        # no flush, no close: the exit does it
    )
    t0 = time.monotonic()
    proc = run_python(code, child_env)
    assert time.monotonic() - t0 < 10
    ids = json.loads(proc.stdout)
    events = hub.wait_events(1001)
    assert [e["event_id"] for e in events[:1000]] == ids
    assert events[-1]["event_type"] == "critic_decision"


def test_module_api_from_environment(hub_factory, child_env):
    hub = hub_factory(token="tok")
    child_env.update(AGENTPULSE_HUB_URL=hub.url, AGENTPULSE_TOKEN="tok")
    code = (
        "import json\n"
        "from agentpulse import emit_event, get_emitter\n"
        "assert get_emitter() is get_emitter()\n"
        "emit_event('task_queued', {'task_id': 't', 'feature': 'f', 'est_cost': 0.1, 'timestamp': 1.0})\n"
        "assert emit_event(1, {}) is None and emit_event('x', 'y') is None\n"
        "m = get_emitter().get_metrics()\n"
        "print(json.dumps({'stats': get_emitter().stats().as_dict(), 'by_type': m['events_by_type']}))\n"
    )
    out = json.loads(run_python(code, child_env).stdout)
    assert out["stats"]["sent"] == 1 and out["stats"]["invalid"] == 2
    assert [e["event_type"] for e in hub.wait_events(1)] == ["task_queued"]


def test_bad_hub_url_in_environment_never_raises(child_env):
    child_env["AGENTPULSE_HUB_URL"] = "not-a-url"
    code = (
        "from agentpulse import emit_event\n"
        "assert emit_event('note', {}) is None\n"
        "assert emit_event('note', {}) is None\n"
    )
    proc = run_python(code, child_env)
    assert proc.stderr.count("events are not sent") == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_sends_its_own_events(hub, child_env):
    child_env["AGENTPULSE_HUB_URL"] = hub.url
    code = (
        "import os, json\n"
        "from agentpulse import emit_event, get_emitter\n"
        "parent = [emit_event('note', {'who': 'parent', 'i': i}) for i in range(50)]\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    child = [emit_event('note', {'who': 'child', 'i': i}) for i in range(50)]\n"
        "    ok = get_emitter().flush(10)\n"
        "    print(json.dumps(child), flush=True)\n"
        "    os._exit(0 if ok else 1)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "assert status == 0\n"
        "print(json.dumps(parent))\n"
    )
    lines = run_python(code, child_env).stdout.splitlines()
    child, parent = json.loads(lines[0]), json.loads(lines[1])
    assert len(set(child) | set(parent)) == 100  # ids never collide across the fork
    events = hub.wait_events(100)
    assert len(events) == 100
    assert sorted(e["event_id"] for e in events) == sorted(child + parent)


def test_example_agent(hub, child_env):
    child_env["AGENTPULSE_HUB_URL"] = hub.url
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE)], env=child_env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    events = hub.wait_events(9)
    kinds = [(e["event_type"], e["payload"].get("agent"), e["payload"].get("status")) for e in events]
    assert kinds == [
        ("task_queued", None, None),
        ("agent_started", "scribe", None),
        ("agent_completed", "scribe", "success"),
        ("agent_started", "critic", None),
        ("agent_completed", "critic", "approved"),
        ("agent_started", "runner", None),
        ("agent_completed", "runner", "success"),
        ("agent_started", "gemini", None),
        ("validation_complete", None, None),
    ]
    assert len({e["payload"]["task_id"] for e in events}) == 1
    assert events[-1]["payload"]["result"]["passed"] is True
    assert "validation_pass_rate" in proc.stdout and "100.0%" in proc.stdout


def test_configure_replaces_the_process_emitter(hub, monkeypatch):
    import agentpulse

    monkeypatch.setattr(agentpulse, "_default", None)
    first = agentpulse.configure(hub.url, token="", flush_at_exit=False, flush_interval=60)
    assert agentpulse.get_emitter() is first
    a = agentpulse.emit_event("note", {"n": 1})
    second = agentpulse.configure(hub.url, token="", flush_at_exit=False)
    assert first.closed and agentpulse.get_emitter() is second
    b = agentpulse.emit_event("note", {"n": 2})
    assert second.flush(timeout=10)
    # The first emitter's close delivered its queued event.
    assert [e["event_id"] for e in hub.wait_events(2)] == [a, b]
    second.close(timeout=1)
