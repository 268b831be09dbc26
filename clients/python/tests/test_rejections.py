"""Refusals: by the hub (schema, token), or on the caller's side. None is
retried, none raises into the agent, each is counted and logged."""

from __future__ import annotations

import logging
import math
import time

import pytest

from agentpulse import AgentPulseError, Emitter

BAD = {"agent": "scribe", "task_id": "t_1", "status": "success", "duration_ms": 10, "cost_usd": "abc"}
GOOD = dict(BAD, cost_usd=0.5)


def test_invalid_events_are_rejected_counted_and_not_retried(hub, make_emitter, caplog):
    caplog.set_level(logging.WARNING, logger="agentpulse")
    em = make_emitter(hub.url)
    em.emit("agent_completed", GOOD)
    em.emit("agent_completed", BAD)  # 207: one of the batch refused
    em.emit("note", {"ok": True})
    assert em.flush(timeout=10)
    bad_only = make_emitter(hub.url)
    bad_only.emit("agent_completed", BAD)  # 422: all of the batch refused
    bad_only.emit("Not A Name", {})
    assert bad_only.flush(timeout=10)

    events = hub.wait_events(2)
    assert [e["event_type"] for e in events] == ["agent_completed", "note"]
    assert events[0]["payload"]["cost_usd"] == 0.5
    st, st2 = em.stats(), bad_only.stats()
    assert (st.sent, st.rejected, st.retries, st.lost, st.queued) == (2, 1, 0, 0, 0)
    assert (st2.sent, st2.rejected, st2.retries, st2.lost, st2.queued) == (0, 2, 0, 0, 0)
    assert 'agent_completed.cost_usd: expected a finite number >= 0, got "abc"' in caplog.text
    assert "not retried" in caplog.text
    # Exactly one request per batch reached the hub: nothing was re-sent.
    assert hub.get("/api/metrics")["hub"]["ingest_requests"] == 2


@pytest.mark.parametrize(
    "args",
    [
        (42, {}),
        (None, {}),
        ("note", "not a dict"),
        ("note", ["a", "list"]),
    ],
)
def test_wrong_argument_types_never_raise(hub, make_emitter, args):
    em = make_emitter(hub.url)
    assert em.emit(*args) is None
    assert em.stats().invalid == 1 and em.stats().queued == 0


def test_unencodable_payloads_are_counted_not_sent(hub, make_emitter):
    em = make_emitter(hub.url)
    cyclic: dict = {}
    cyclic["me"] = cyclic
    assert em.emit("note", {"x": math.nan})  # queued; found out on encoding
    assert em.emit("note", cyclic)
    assert em.emit("note", {(1, 2): "tuple key"})
    ok = em.emit("note", {"when": __import__("datetime").date(2025, 1, 2), "tags": {"a"}, "raw": b"hi"})
    assert em.flush(timeout=10)
    events = hub.wait_events(1)
    assert [e["event_id"] for e in events] == [ok]
    assert events[0]["payload"] == {"when": "2025-01-02", "tags": ["a"], "raw": "hi"}
    st = em.stats()
    assert (st.invalid, st.sent, st.queued) == (3, 1, 0)


def test_warnings_are_rate_limited(hub, make_emitter, caplog):
    caplog.set_level(logging.WARNING, logger="agentpulse")
    em = make_emitter(hub.url, warn_interval=3600)
    for _ in range(1000):
        em.emit(123, {})  # type: ignore[arg-type]
    assert em.stats().invalid == 1000
    assert len([r for r in caplog.records if "invalid so far" in r.getMessage()]) == 1


def test_token(hub_factory, make_emitter):
    hub = hub_factory(token="s3cret")
    good = make_emitter(hub.url, token="s3cret")
    ids = [good.emit("note", {"i": i}) for i in range(5)]
    assert good.flush(timeout=10)
    assert [e["event_id"] for e in hub.wait_events(5)] == ids
    assert good.get_metrics()["events_by_type"]["note"] == 5

    for token in ("wrong", ""):
        bad = make_emitter(hub.url, token=token, flush_interval=60)
        for i in range(5):
            bad.emit("note", {"i": i})
        t0 = time.monotonic()
        assert bad.flush(timeout=10) is False  # given up at once, not retried
        assert time.monotonic() - t0 < 5
        st = bad.stats()
        assert (st.sent, st.lost, st.failed_batches, st.retries) == (0, 5, 1, 0)
        assert "401" in st.last_error
        with pytest.raises(AgentPulseError) as info:
            bad.get_metrics(flush=False)
        assert info.value.status == 401
    assert len(hub.events()) == 5


def test_token_from_environment(hub_factory, monkeypatch):
    hub = hub_factory(token="from-env")
    monkeypatch.setenv("AGENTPULSE_HUB_URL", hub.url)
    monkeypatch.setenv("AGENTPULSE_TOKEN", "from-env")
    with Emitter(flush_at_exit=False) as em:
        assert em.hub_url == hub.url
        em.emit("note", {})
        assert em.flush(timeout=10)
        assert em.stats().sent == 1


def test_bad_hub_url_is_refused_at_construction():
    for url in ("localhost:3010", "ws://127.0.0.1:3010", "http://", "http://h:notaport"):
        with pytest.raises(ValueError):
            Emitter(url, flush_at_exit=False)
