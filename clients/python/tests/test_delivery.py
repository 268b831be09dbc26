"""Events reach a real hub intact, in batches, from any number of threads."""

from __future__ import annotations

import threading
import time

import pytest

from conftest import wait_until


def test_events_arrive_with_their_payloads(hub, make_emitter):
    em = make_emitter(hub.url)
    before = time.time()
    sent = [
        ("task_queued", {"task_id": "t_1", "feature": "checkout", "est_cost": 0.45, "timestamp": 1729012418.123}),
        ("agent_started", {"agent": "scribe", "task_id": "t_1", "model": "m", "tools": ["read", "write"]}),
        ("agent_completed", {"agent": "scribe", "task_id": "t_1", "status": "success", "duration_ms": 2500, "cost_usd": 0.12}),
        ("note", {"text": "héllo ✓", "nested": {"a": [1, 2.5, None, True]}}),
        ("note", None),
    ]
    ids = [em.emit(t, p) for t, p in sent]
    assert all(ids) and len(set(ids)) == len(ids)
    assert em.flush(timeout=10)
    events = hub.wait_events(len(sent))
    assert len(events) == len(sent)
    for ev, (etype, payload), eid in zip(events, sent, ids):
        assert ev["event_type"] == etype
        assert ev["payload"] == (payload or {})
        assert ev["event_id"] == eid
        assert before <= ev["timestamp"] <= time.time()
    st = em.stats()
    assert (st.sent, st.rejected, st.dropped, st.lost, st.retries, st.queued) == (len(sent), 0, 0, 0, 0, 0)


def test_floats_round_trip_exactly(hub, make_emitter):
    em = make_emitter(hub.url)
    em.emit("note", {"x": 1796110967.4733875})  # sent exactly: json uses repr()
    assert em.flush(timeout=10)
    assert hub.wait_events(1)[0]["payload"]["x"] == 1796110967.4733875


def test_payload_is_copied_at_call_time(hub, make_emitter):
    em = make_emitter(hub.url)
    payload = {"step": 1}
    em.emit("note", payload)
    payload["step"] = 2  # an agent reusing its dict
    em.emit("note", payload)
    assert em.flush(timeout=10)
    assert [e["payload"]["step"] for e in hub.wait_events(2)] == [1, 2]


def test_caller_chosen_event_id_and_timestamp(hub, make_emitter):
    em = make_emitter(hub.url)
    assert em.emit("note", {"n": 1}, event_id="my-key-1", timestamp=1_700_000_000.25) == "my-key-1"
    assert em.emit("note", {"n": 1}, event_id="my-key-1") == "my-key-1"  # re-emitted
    assert em.flush(timeout=10)
    events = hub.wait_events(1)
    assert [(e["event_id"], e["timestamp"]) for e in events] == [("my-key-1", 1_700_000_000.25)]
    assert em.stats().sent == 2 and em.stats().duplicates == 1


def test_many_threads_no_loss_no_doubles(hub, make_emitter):
    em = make_emitter(hub.url, max_queue=100_000)
    per_thread, threads = 2_000, 4
    ids: list = [[] for _ in range(threads)]

    def agent(k: int) -> None:
        for i in range(per_thread):
            ids[k].append(em.emit("note", {"thread": k, "i": i}))

    workers = [threading.Thread(target=agent, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    emitted = {i for chunk in ids for i in chunk}
    assert None not in emitted and len(emitted) == per_thread * threads
    assert em.flush(timeout=30)
    events = hub.wait_events(len(emitted))
    assert {e["event_id"] for e in events} == emitted
    assert len(events) == len(emitted)
    # Per thread, the hub's order is the emit order.
    for k in range(threads):
        assert [e["payload"]["i"] for e in events if e["payload"]["thread"] == k] == list(range(per_thread))
    assert em.stats().sent == len(emitted)


def test_batches_respect_count_and_byte_limits(hub, make_emitter):
    em = make_emitter(hub.url, max_batch=100, max_batch_bytes=20_000, flush_interval=5.0)
    blob = "x" * 1000
    for i in range(450):
        em.emit("note", {"i": i, "blob": blob})
    assert em.flush(timeout=20)
    hub.wait_events(450)
    requests = hub.get("/api/metrics")["hub"]["ingest_requests"]
    # ~1 KiB events, 20 kB per batch: at least 450 / 19 requests.
    assert requests >= 24, requests
    em2 = make_emitter(hub.url, max_batch=100, flush_interval=5.0)
    for i in range(450):
        em2.emit("note", {"i": i})
    assert em2.flush(timeout=20)
    # 450 small events, 100 per batch: 5 requests more.
    assert hub.get("/api/metrics")["hub"]["ingest_requests"] == requests + 5


def test_full_batch_is_sent_without_waiting_for_the_interval(hub, make_emitter):
    em = make_emitter(hub.url, max_batch=50, flush_interval=60.0)
    for i in range(50):
        em.emit("note", {"i": i})
    hub.wait_events(50, timeout=10)  # long before the 60 s interval


def test_interval_sends_a_partial_batch_without_flush(hub, make_emitter):
    em = make_emitter(hub.url, flush_interval=0.05)
    em.emit("note", {"alone": True})
    hub.wait_events(1, timeout=10)


def test_gzip_bodies(hub, make_emitter):
    em = make_emitter(hub.url, compress_min_bytes=0)  # every body gzipped
    for i in range(300):
        em.emit("note", {"i": i, "text": "compressible " * 50})
    assert em.flush(timeout=20)
    events = hub.wait_events(300)
    assert [e["payload"]["i"] for e in events] == list(range(300))
    assert em.stats().rejected == 0 and em.stats().lost == 0


def test_body_too_large_is_split(hub_factory, make_emitter):
    hub = hub_factory(extra=("--max-body-bytes", "20000"))
    em = make_emitter(hub.url, compress_min_bytes=None, flush_interval=1.0)
    for i in range(200):  # ~100 kB in one batch: the hub answers 413
        em.emit("note", {"i": i, "blob": "y" * 400})
    assert em.flush(timeout=20)
    events = hub.wait_events(200)
    assert [e["payload"]["i"] for e in events] == list(range(200))
    st = em.stats()
    assert (st.sent, st.rejected, st.lost) == (200, 0, 0)


def test_flush_and_close_are_quick_when_idle(hub, make_emitter):
    em = make_emitter(hub.url)
    t0 = time.monotonic()
    assert em.flush(timeout=5)
    assert em.close(timeout=5)
    assert em.close(timeout=5)  # twice is fine
    assert time.monotonic() - t0 < 1.0
    assert em.emit("note", {}) is None  # closed
    assert em.stats().dropped == 1


def test_close_delivers_what_was_queued(hub, make_emitter):
    em = make_emitter(hub.url, flush_interval=30.0)
    ids = [em.emit("note", {"i": i}) for i in range(10)]
    assert em.close(timeout=10)
    assert [e["event_id"] for e in hub.wait_events(10)] == ids
    assert wait_until(lambda: not em._thread.is_alive(), 5, "the thread to stop")
