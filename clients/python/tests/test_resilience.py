"""The hub goes away and comes back; or is never there. The agent never notices."""

from __future__ import annotations

import signal
import statistics
import subprocess
import sys
import threading
import time

import pytest

from conftest import free_port, wait_until


@pytest.mark.parametrize("crash", [False, True], ids=["graceful-stop", "sigkill"])
def test_hub_restarted_mid_stream_loses_and_doubles_nothing(hub_factory, make_emitter, crash):
    hub = hub_factory(extra=("--durability", "always") if crash else ())
    em = make_emitter(hub.url, retry_initial=0.02, retry_max=0.2, flush_interval=0.02, max_queue=100_000)
    emitted: list = []
    stop = threading.Event()

    def agent() -> None:  # a steady stream across the restart
        i = 0
        while not stop.is_set():
            emitted.append(em.emit("note", {"i": i}))
            i += 1
            if i % 5 == 0:
                time.sleep(0.001)  # the workload's pace (~4k events/s), not synchronisation

    t = threading.Thread(target=agent)
    t.start()
    try:
        hub.wait_events(200)
        hub.stop(signal.SIGKILL if crash else signal.SIGTERM)
        # Events pile up while the hub is down, and sends fail.
        wait_until(lambda: em.stats().retries >= 3, 10, "failed sends while the hub is down")
        # The thread sends batches in order and is now stuck on one: the
        # first `acked` events are exactly those the hub acknowledged.
        acked = em.stats().sent
        down_at = len(emitted)
        wait_until(lambda: len(emitted) >= down_at + 500, 10, "emits while the hub is down")
        hub.restart()
        first_after = len(emitted)
        wait_until(lambda: len(emitted) >= first_after + 500, 10, "emits after the restart")
    finally:
        stop.set()
        t.join()
    assert None not in emitted
    assert em.flush(timeout=30)
    st = em.stats()
    assert st.sent == len(emitted) and st.retries >= 3
    assert (st.dropped, st.rejected, st.lost, st.queued) == (0, 0, 0, 0)

    def stored_ids():
        ids = [e["event_id"] for e in hub.events()]
        return ids if set(emitted[acked:]) <= set(ids) else None

    # What was not acknowledged before the stop is stored, exactly once.
    stored = wait_until(stored_ids, 30, "every event not acknowledged before the stop")
    assert len(stored) == len(set(stored)), "an event was stored twice"
    if not crash:
        # None lost, none doubled: exactly the event_ids emitted, in order,
        # with the hub's ids running 1..n without a gap across its restart.
        events = hub.events()
        assert [e["event_id"] for e in events] == emitted
        assert [e["id"] for e in events] == list(range(1, len(emitted) + 1))
        assert [e["payload"]["i"] for e in events] == list(range(len(emitted)))
        return
    # After a crash, only the hub can have lost events: acknowledged ones.
    lost = set(emitted[:acked]) - set(stored)
    assert set(stored) <= set(emitted)
    # Regression: the hub used to answer before its log had the events.
    assert not lost, f"the crashed hub lost {len(lost)} of {acked} events it had acknowledged"


def test_hub_absent_agent_unaffected_and_memory_bounded(make_emitter):
    url = f"http://127.0.0.1:{free_port()}"
    em = make_emitter(url, max_queue=1_000, retry_initial=0.01, retry_max=0.05)
    durations = []
    results = []
    for i in range(20_000):
        t0 = time.perf_counter()
        results.append(em.emit("note", {"i": i}))
        durations.append(time.perf_counter() - t0)
        if i % 250 == 0:
            assert em.stats().queued <= 1_000
    st = em.stats()
    # The first 1000 are held (queue + batch in flight), the rest dropped.
    assert all(results[:1_000]) and not any(results[1_000:])
    assert (st.queued, st.dropped, st.sent) == (1_000, 19_000, 0)
    assert len(em._queue) <= 1_000
    durations.sort()
    assert statistics.median(durations) < 50e-6, statistics.median(durations)
    assert durations[int(len(durations) * 0.99)] < 1e-3
    wait_until(lambda: em.stats().retries >= 2, 10, "retries against the absent hub")
    assert "Connection" in (em.stats().last_error or "")
    # Closing gives up within its timeout; what was held is counted lost.
    t0 = time.monotonic()
    assert em.close(timeout=0.3) is False
    assert time.monotonic() - t0 < 1.0
    wait_until(lambda: em.stats().lost == 1_000, 5, "held events counted as lost")
    assert em.stats().queued == 0


def test_exit_is_bounded_when_hub_absent(child_env):
    """The atexit flush waits at most ~2 s, then the interpreter exits."""
    child_env["AGENTPULSE_HUB_URL"] = f"http://127.0.0.1:{free_port()}"
    code = (
        "import time\n"
        "from agentpulse import emit_event\n"
        "for i in range(5000): emit_event('note', {'i': i})\n"
        "print(time.monotonic(), flush=True)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=child_env, capture_output=True, timeout=30)
    ended = time.monotonic()
    assert proc.returncode == 0, proc.stderr
    last_emit = float(proc.stdout.split()[-1])
    assert 1.5 < ended - last_emit < 6.0, ended - last_emit
    # It said so, in one line that agrees with itself.
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert "exiting with 5000 events undelivered: no hub at" in lines[0], lines
    assert "is `agentpulse serve` running there?" in lines[0], lines


def test_late_hub_gets_everything_held(make_emitter, hub_factory):
    port = free_port()
    em = make_emitter(f"http://127.0.0.1:{port}", retry_initial=0.02, retry_max=0.2)
    ids = [em.emit("note", {"i": i}) for i in range(300)]
    wait_until(lambda: em.stats().retries >= 1, 10, "a failed send")
    hub = hub_factory()  # then moved to exactly that port
    hub.stop()
    hub.port = port
    hub.restart()
    assert em.flush(timeout=20)
    assert [e["event_id"] for e in hub.wait_events(300)] == ids


def test_no_hub_is_one_line_that_agrees_with_itself(child_env):
    """A short script with no hub: one line, at exit, with the right count."""
    child_env["AGENTPULSE_HUB_URL"] = f"http://127.0.0.1:{free_port()}"
    code = (
        "from agentpulse import emit_event\n"
        "emit_event('agent_started', {'agent': 'a', 'task_id': 't', 'model': 'm', 'tools': []})\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=child_env, capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    text = proc.stderr.decode()
    assert "Traceback" not in text, text
    lines = text.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("agentpulse: exiting with 1 event undelivered: no hub at http://127.0.0.1:"), lines


def test_a_hub_away_for_long_is_reported_while_running(make_emitter, caplog):
    """Deliveries failing for longer than WARN_AFTER: said while it lasts."""
    import logging
    from agentpulse import emitter as emitter_module
    caplog.set_level(logging.WARNING, logger="agentpulse")
    old = emitter_module.WARN_AFTER
    emitter_module.WARN_AFTER = 0.2
    try:
        em = make_emitter(f"http://127.0.0.1:{free_port()}", retry_initial=0.02, retry_max=0.05)
        em.emit("note", {})
        wait_until(lambda: "no hub at" in caplog.text, 10, "the warning")
        assert "1 event held, retrying" in caplog.text, caplog.text
        em.close(timeout=0.1)
    finally:
        emitter_module.WARN_AFTER = old

