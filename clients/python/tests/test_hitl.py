"""wait_for_resolution() against a real hub: the agent that escalated
learns the human's answer."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest

from agentpulse import AgentPulseError


def resolve(hub, task: str, body: dict) -> dict:
    req = urllib.request.Request(
        f"{hub.url}/api/hitl/{task}/resolve",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {hub.token}"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def escalate(em, task: str) -> None:
    em.emit("hitl_escalated", {"task_id": task, "attempts": 2, "last_error": "boom", "priority": "high"})


def test_wait_for_resolution_returns_the_answer(hub_factory, make_emitter):
    hub = hub_factory(token="py-tok")
    em = make_emitter(hub.url, token="py-tok")
    escalate(em, "t_py")
    # Still open: None once the timeout is over.
    t = time.monotonic()
    assert em.wait_for_resolution("t_py", timeout=0.3) is None
    assert time.monotonic() - t >= 0.25
    got = {}
    waiter = threading.Thread(target=lambda: got.update(r=em.wait_for_resolution("t_py", timeout=20)))
    waiter.start()
    # The human answers while the agent waits, or just before: either way
    # the call returns the answer.
    answer = resolve(hub, "t_py", {"resolution": "retry", "note": "try the staging db", "by": "carol"})
    assert answer["state"] == "resolved"
    waiter.join(25)
    assert not waiter.is_alive()
    r = got["r"]
    assert (r["resolution"], r["note"], r["by"]) == ("retry", "try the staging db", "carol")
    assert r["id"] == answer["id"]


def test_wait_for_resolution_of_an_unknown_task_raises(hub, make_emitter):
    em = make_emitter(hub.url)
    with pytest.raises(AgentPulseError) as e:
        em.wait_for_resolution("t_nobody", timeout=1)
    assert "404" in str(e.value)
