"""The :class:`Emitter`: a bounded in-memory queue drained by one daemon thread.

The caller's side (:meth:`Emitter.emit`) only checks types, stamps the event
(``time.time()`` and an ``event_id``), copies the payload's top level and
appends it to a deque under a lock held for a few hundred nanoseconds. It
never waits for the network and never raises.

The background thread takes batches (up to ``max_batch`` events or
``max_batch_bytes`` bytes, or whatever arrived within ``flush_interval``),
encodes them as NDJSON and posts them to the hub's ``POST /events``:

- connection errors, timeouts, HTTP 408, 429 and 5xx: the same batch, with
  the same ``event_id``\\ s, is sent again after an exponential backoff
  (``retry_initial`` doubling up to ``retry_max``, with jitter), for as long
  as it takes, or until :meth:`Emitter.close`'s deadline. The hub answers a
  re-sent event as a duplicate of the original, so nothing is stored twice;
- events the hub refuses (HTTP 207 or 422 with per-event errors) are
  counted as ``rejected``, their errors logged, and never sent again;
- a body the hub finds too large (413) is split in halves and re-sent; a
  single event it refuses that way is rejected;
- any other answer (401 wrong token, 404 wrong URL, 400...) drops the
  batch: ``failed_batches`` and ``lost`` count it, the error is logged.

Bound: at most ``max_queue`` events are held at once, counting the batch in
flight; beyond that the newest event is dropped and counted (``dropped``).
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import random
import threading
import time
import weakref
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Deque, Dict, List, Optional
from urllib.parse import quote

from .batch import Batch, Item, encode_event
from .config import hub_url_from_env, token_from_env
from .transport import AgentPulseError, HubTransport, TransportError

logger = logging.getLogger("agentpulse")

#: Seconds deliveries must have failed before the emitter says so: a hub
#: restarting is no news, and a short script with no hub gets one line, at
#: exit.
WARN_AFTER = 5.0

#: The six KPIs that :meth:`Emitter.get_metrics` puts at the top level.
KPI_NAMES = (
    "agent_utilization",
    "cost_per_feature",
    "average_retry_count",
    "critic_rejection_rate",
    "validation_pass_rate",
    "time_to_completion",
)

#: Event type of :meth:`Emitter.record_critic_decision`.
CRITIC_DECISION = "critic_decision"


@dataclass(frozen=True)
class Stats:
    """Counters of one emitter (of this process, since its creation or fork).

    Every event given to :meth:`Emitter.emit` ends up in exactly one of
    ``sent``, ``rejected``, ``dropped``, ``invalid``, ``lost`` or is still
    ``queued``.
    """

    #: Events the hub stored (or recognised as already stored).
    sent: int
    #: Of ``sent``, those the hub answered as duplicates of an earlier send.
    duplicates: int
    #: Events the hub refused as invalid (HTTP 207/422); never re-sent.
    rejected: int
    #: Events not queued: the queue was full, or the emitter closed.
    dropped: int
    #: Calls refused on the caller's side: not a str type, not a dict
    #: payload, or a payload that cannot be encoded as JSON.
    invalid: int
    #: Events of batches given up: a non-retryable answer (401, 404...), or
    #: still undelivered at :meth:`Emitter.close`'s deadline.
    lost: int
    #: Times a batch was sent again after a failure.
    retries: int
    #: Batches given up (their events are in ``lost``).
    failed_batches: int
    #: Events held now: waiting in the queue or in the batch in flight.
    queued: int
    #: The last delivery problem seen, if any (``None`` until one happens).
    last_error: Optional[str]

    def as_dict(self) -> Dict[str, Any]:
        """The counters as a plain dict."""
        return asdict(self)


class _Throttle:
    """Lets a message through at most once per ``interval`` seconds."""

    __slots__ = ("interval", "_next")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next = 0.0

    def ready(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.interval
        return True


# Every live emitter, for the exit flush and for resetting after a fork.
_registry: "weakref.WeakSet[Emitter]" = weakref.WeakSet()


class Emitter:
    """Sends events to an agentpulse hub without ever blocking the caller.

    ``hub_url`` defaults to ``$AGENTPULSE_HUB_URL`` (else
    ``http://127.0.0.1:3010``) and ``token`` to ``$AGENTPULSE_TOKEN``; pass
    ``token=""`` to send none. An invalid ``hub_url`` or option raises
    ``ValueError`` here; nothing later raises into the caller except
    :meth:`get_metrics`.

    The background thread starts with the first event and runs until
    :meth:`close`: close the emitters you create (or use ``with``). Unless
    ``flush_at_exit`` is false, the interpreter's exit closes the emitter,
    waiting at most ``exit_timeout`` seconds for undelivered events. Use it
    as a context manager to close it at the end of a block.
    """

    def __init__(
        self,
        hub_url: Optional[str] = None,
        token: Optional[str] = None,
        *,
        max_queue: int = 10_000,
        max_batch: int = 500,
        max_batch_bytes: int = 1024 * 1024,
        flush_interval: float = 0.1,
        retry_initial: float = 0.1,
        retry_max: float = 5.0,
        request_timeout: float = 10.0,
        compress_min_bytes: Optional[int] = 64 * 1024,
        flush_at_exit: bool = True,
        exit_timeout: float = 2.0,
        warn_interval: float = 10.0,
    ) -> None:
        for name, value in (("max_queue", max_queue), ("max_batch", max_batch), ("max_batch_bytes", max_batch_bytes)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name, fvalue in (
            ("flush_interval", flush_interval),
            ("retry_initial", retry_initial),
            ("retry_max", retry_max),
            ("request_timeout", request_timeout),
            ("exit_timeout", exit_timeout),
            ("warn_interval", warn_interval),
        ):
            if not isinstance(fvalue, (int, float)) or not fvalue >= 0:
                raise ValueError(f"{name} must be a number >= 0, got {fvalue!r}")
        if request_timeout <= 0:
            raise ValueError("request_timeout must be > 0")
        self.hub_url: str = hub_url or hub_url_from_env()
        self._token = token_from_env() if token is None else (token or None)
        self._transport_args = (self.hub_url, self._token, float(request_timeout), compress_min_bytes)
        HubTransport(*self._transport_args)  # checks the URL now, not in the thread
        self._max_queue = max_queue
        self._max_batch = max_batch
        self._max_batch_bytes = max_batch_bytes
        self._flush_interval = float(flush_interval)
        self._retry_initial = float(retry_initial)
        self._retry_max = float(retry_max)
        self._flush_at_exit = flush_at_exit
        self._exit_timeout = float(exit_timeout)
        self._warn_interval = float(warn_interval)
        self._closed = False
        self._reset()
        _registry.add(self)

    def _reset(self) -> None:
        """Fresh runtime state: at creation, and in a forked child (whose
        copy of the parent's queue is the parent's to send)."""
        self._lock = threading.Lock()
        self._queue: Deque[Item] = deque()
        # Events accepted by emit() / resolved by the thread (sent, rejected,
        # lost, invalid). Their difference is what is held: the bound.
        self._enqueued = 0
        self._done = 0
        self._done_cond = threading.Condition(threading.Lock())
        self._flush_target = 0
        self._wake = threading.Event()  # work for the thread
        self._kick = threading.Event()  # cut a retry backoff short
        self._sleeping = False
        self._stopping = False
        self._stop_deadline: Optional[float] = None
        self._thread: Optional[threading.Thread] = None
        # A new prefix per process: event ids stay unique across forks.
        self._prefix = os.urandom(8).hex() + "-"
        self._seq = itertools.count(1)
        self._sent = self._duplicates = self._rejected = 0
        self._dropped = self._invalid = self._lost = 0
        self._retries = self._failed_batches = 0
        self._last_error: Optional[str] = None
        interval = self._warn_interval
        self._warn_drop = _Throttle(interval)
        self._warn_invalid = _Throttle(interval)
        self._warn_reject = _Throttle(interval)
        self._warn_retry = _Throttle(interval)
        self._warn_lost = _Throttle(interval)
        # Since when deliveries fail (None: they work). A hub that is away
        # for less than WARN_AFTER seconds is not worth a line.
        self._failing_since: Optional[float] = None
        # Closing at interpreter exit: one summary line instead of the
        # per-batch ones.
        self._at_exit = False

    def __repr__(self) -> str:
        return f"<agentpulse.Emitter hub_url={self.hub_url!r} queued={self._enqueued - self._done}>"

    def __enter__(self) -> "Emitter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(self._exit_timeout)

    # ----------------------------------------------------------------- caller

    def emit(
        self,
        event_type: str,
        payload: Optional[Dict[str, Any]] = None,
        *,
        event_id: Optional[str] = None,
        timestamp: Optional[float] = None,
    ) -> Optional[str]:
        """Queues an event; returns its ``event_id``, or ``None`` when it was
        not queued (invalid arguments, queue full, emitter closed).

        ``timestamp`` defaults to ``time.time()`` now and ``event_id`` to a
        fresh id unique to this emitter; pass your own ``event_id`` to make
        re-emitting the same event idempotent at the hub. Never raises and
        never waits for the network. The top level of ``payload`` is copied;
        nested objects are read later, on the background thread, so do not
        mutate them after the call.
        """
        try:
            if (
                not isinstance(event_type, str)
                or not (payload is None or isinstance(payload, dict))
                or not (event_id is None or isinstance(event_id, str))
                or not (timestamp is None or (isinstance(timestamp, (int, float)) and not isinstance(timestamp, bool)))
            ):
                self._refuse(event_type, payload, event_id, timestamp)
                return None
            if event_id is None:
                event_id = f"{self._prefix}{next(self._seq):x}"
            item = (
                event_type,
                {} if payload is None else payload.copy(),
                time.time() if timestamp is None else timestamp,
                event_id,
            )
            with self._lock:
                if self._closed or self._enqueued - self._done >= self._max_queue:
                    self._dropped += 1
                    dropped = self._dropped
                else:
                    if self._thread is None:
                        self._start()
                    self._queue.append(item)
                    self._enqueued += 1
                    dropped = 0
            if dropped:
                if self._warn_drop.ready():
                    why = "the emitter is closed" if self._closed else f"the queue is full ({self._max_queue} events held)"
                    logger.warning("agentpulse: dropping events: %s; %d dropped so far", why, dropped)
                return None
            if self._sleeping or len(self._queue) == self._max_batch:
                self._wake.set()
            return event_id
        except Exception:  # never into the agent
            try:
                with self._lock:
                    self._invalid += 1
                logger.debug("agentpulse: emit failed", exc_info=True)
            except Exception:
                pass
            return None

    def record_critic_decision(self, rejected: bool = True) -> Optional[str]:
        """Emits a ``critic_decision`` event with payload ``{"rejected": bool}``
        (the hub counts it in ``critic_rejection_rate``)."""
        return self.emit(CRITIC_DECISION, {"rejected": bool(rejected)})

    def _refuse(self, event_type: Any, payload: Any, event_id: Any, timestamp: Any) -> None:
        with self._lock:
            self._invalid += 1
            invalid = self._invalid
        if self._warn_invalid.ready():
            if not isinstance(event_type, str):
                why = f"event_type must be a str, got {type(event_type).__name__}"
            elif not (payload is None or isinstance(payload, dict)):
                why = f"payload must be a dict, got {type(payload).__name__}"
            elif not (event_id is None or isinstance(event_id, str)):
                why = f"event_id must be a str, got {type(event_id).__name__}"
            else:
                why = f"timestamp must be a number, got {type(timestamp).__name__}"
            logger.warning("agentpulse: event not sent: %s; %d invalid so far", why, invalid)

    def _start(self) -> None:
        """Starts the background thread (called with the lock held)."""
        t = threading.Thread(target=self._run, name="agentpulse-emitter", daemon=True)
        t.start()  # may raise (at interpreter shutdown): tried again next time
        self._thread = t

    # ------------------------------------------------------------- control

    def flush(self, timeout: Optional[float] = 2.0) -> bool:
        """Sends what is queued and waits, at most ``timeout`` seconds
        (``None``: no limit), until the hub has answered every event queued
        before the call (stored it, or rejected it as invalid).

        Returns True when it has; False on timeout, or when events were given
        up while waiting (``stats().lost``: a wrong token, say)."""
        with self._lock:
            target = self._enqueued
        if self._done >= target:
            return True
        if threading.current_thread() is self._thread:
            return False
        lost = self._lost
        with self._done_cond:
            self._flush_target = max(self._flush_target, target)
        self._wake.set()
        self._kick.set()  # a batch waiting for a retry: try now
        return self._wait_done(target, timeout) and self._lost == lost

    def close(self, timeout: Optional[float] = 2.0) -> bool:
        """Stops taking events and gives the queued ones at most ``timeout``
        seconds (``None``: no limit) to reach the hub; then the thread stops
        and what is left is counted as ``lost``. Returns whether everything
        reached the hub (as :meth:`flush`). Later events are dropped. Safe to
        call more than once."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._closed = True
            thread = self._thread
            if not self._stopping:
                self._stopping = True  # the thread sends at once, then ends
                self._stop_deadline = deadline
        self._wake.set()
        delivered = self.flush(timeout)
        if thread is not None and thread is not threading.current_thread():
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return delivered

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def _wait_done(self, target: int, timeout: Optional[float]) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._done_cond:
            while self._done < target:
                if deadline is None:
                    self._done_cond.wait()
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._done_cond.wait(left)
        return True

    def stats(self) -> Stats:
        """A snapshot of the counters."""
        return Stats(
            sent=self._sent,
            duplicates=self._duplicates,
            rejected=self._rejected,
            dropped=self._dropped,
            invalid=self._invalid,
            lost=self._lost,
            retries=self._retries,
            failed_batches=self._failed_batches,
            queued=self._enqueued - self._done,
            last_error=self._last_error,
        )

    def get_metrics(self, timeout: float = 5.0, flush: bool = True) -> Dict[str, Any]:
        """The hub's ``GET /api/metrics`` document, with the six KPIs of its
        rolling ``window`` copied to the top level (``metrics[
        "validation_pass_rate"]``...). Raises :class:`AgentPulseError` when the
        hub cannot be reached or refuses.

        With ``flush`` (the default) this emitter's queued events are sent
        first (waiting at most ``timeout``), so the metrics include them
        once the hub's engine has taken them (a few milliseconds after the
        hub acknowledged them).
        """
        if flush:
            self.flush(timeout)
        transport = HubTransport(self.hub_url, self._token, timeout, None)
        try:
            doc = transport.get_json("/api/metrics")
        except TransportError as e:
            raise TransportError(f"hub {self.hub_url} unreachable: {e}") from e
        finally:
            transport.close()
        window = doc.get("window")
        if not isinstance(window, dict):
            raise AgentPulseError("GET /api/metrics: no `window` object in the answer")
        metrics = dict(doc)
        for name in KPI_NAMES:
            metrics[name] = window.get(name, 0.0)
        return metrics

    def wait_for_resolution(
        self, task_id: str, timeout: float = 30.0, flush: bool = True
    ) -> Optional[Dict[str, Any]]:
        """Waits for a human's answer to the escalation of ``task_id`` (the
        hub's ``GET /api/hitl/{task_id}?wait=``, long polls of at most 30 s
        until ``timeout`` seconds): the resolution (``{"resolution":
        "resolved"|"retry"|"abandoned", "note", "by", "timestamp", "id"}``)
        once answered, ``None`` if still open when ``timeout`` is over.

        With ``flush`` (the default) this emitter's queued events (its
        ``hitl_escalated``) are sent first. Raises :class:`AgentPulseError`
        when the hub knows no escalation of the task (status 404) or cannot
        be asked.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        if flush:
            self.flush(timeout)
        path = "/api/hitl/" + quote(str(task_id), safe="")
        while True:
            wait = min(30.0, max(0.0, deadline - time.monotonic()))
            transport = HubTransport(self.hub_url, self._token, wait + 10.0, None)
            try:
                doc = transport.get_json(f"{path}?wait={wait:.3f}")
            except TransportError as e:
                raise TransportError(f"hub {self.hub_url} unreachable: {e}") from e
            finally:
                transport.close()
            if doc.get("state") == "resolved":
                resolution = doc.get("resolution")
                if not isinstance(resolution, dict):
                    raise AgentPulseError(f"GET {path}: no `resolution` object in the answer")
                return resolution
            if time.monotonic() >= deadline:
                return None

    # ------------------------------------------------------------- thread

    def _run(self) -> None:
        transport = HubTransport(*self._transport_args)
        try:
            while True:
                if self._past_deadline():
                    self._abandon_queue()
                    return
                if not self._wait_for_work():
                    return
                batch = self._take_batch()
                if not batch:
                    continue
                try:
                    self._deliver(transport, batch)
                except Exception as e:  # a bug here must not stop the thread
                    logger.exception("agentpulse: unexpected error while sending")
                    self._give_up(batch, f"internal error: {e!r}")
        finally:
            transport.close()

    def _urgent(self) -> bool:
        return self._stopping or self._flush_target > self._done

    def _past_deadline(self) -> bool:
        d = self._stop_deadline
        return self._stopping and d is not None and time.monotonic() >= d

    def _wait_for_work(self) -> bool:
        """Sleeps until events are queued, then lingers up to
        ``flush_interval`` for a fuller batch. False: stop now."""
        q = self._queue
        while not q:
            if self._stopping:
                return False
            self._sleeping = True
            if not q and not self._stopping:  # re-checked after announcing sleep
                self._wake.wait(1.0)
            self._sleeping = False
            self._wake.clear()
        if len(q) < self._max_batch and not self._urgent():
            until = time.monotonic() + self._flush_interval
            while len(q) < self._max_batch and not self._urgent():
                left = until - time.monotonic()
                if left <= 0:
                    break
                self._wake.wait(left)
                self._wake.clear()
        return True

    def _take_batch(self) -> Batch:
        batch = Batch()
        q = self._queue
        while len(batch) < self._max_batch:
            try:
                item = q.popleft()
            except IndexError:
                break
            try:
                line = encode_event(item)
            except (TypeError, ValueError, RecursionError) as e:
                with self._lock:
                    self._invalid += 1
                self._resolve(1)
                if self._warn_invalid.ready():
                    logger.warning("agentpulse: %s event not sent: payload is not JSON: %s", item[0], e)
                continue
            if batch and batch.size + len(line) + 1 > self._max_batch_bytes:
                q.appendleft(item)  # starts the next batch
                break
            batch.add(line)
        return batch

    def _resolve(self, n: int) -> None:
        with self._done_cond:
            self._done += n
            self._done_cond.notify_all()

    def _deliver(self, transport: HubTransport, batch: Batch) -> None:
        """Sends one batch until the hub answers it or the close deadline."""
        attempt = 0
        while True:
            try:
                status, answer = transport.post_events(batch.body())
            except TransportError as e:
                problem = str(e)
            else:
                if status in (200, 207, 422) and answer is not None and isinstance(answer.get("ids"), list):
                    self._account(batch, answer)
                    return
                if status == 200:  # an answer we cannot read: the hub took it
                    self._failing_since = None
                    self._sent += len(batch)
                    self._resolve(len(batch))
                    return
                if status == 413 and len(batch) > 1:
                    for half in batch.split():
                        self._deliver(transport, half)
                    return
                why = (answer or {}).get("error") or f"HTTP {status}"
                problem = f"HTTP {status}: {why}"
                if status == 413:
                    self._reject(batch, [problem])
                    return
                if not (status in (408, 429) or status >= 500):
                    self._give_up(batch, problem)
                    return
            self._last_error = problem
            if self._past_deadline():
                self._give_up(batch, f"{problem} (still failing when closed)")
                return
            delay = min(self._retry_max, self._retry_initial * 2 ** min(attempt, 32))
            delay *= random.uniform(0.5, 1.0)
            if self._stop_deadline is not None and self._stopping:
                delay = min(delay, max(0.0, self._stop_deadline - time.monotonic()))
            attempt += 1
            now = time.monotonic()
            if self._failing_since is None:
                self._failing_since = now
            if now - self._failing_since >= WARN_AFTER and self._warn_retry.ready():
                logger.warning(
                    "agentpulse: %s; %s held, retrying (for %.0f s so far)",
                    self._no_hub(problem), _n(self._enqueued - self._done, "event"),
                    now - self._failing_since,
                )
            self._kick.wait(delay)
            self._kick.clear()
            self._retries += 1

    def _no_hub(self, problem: str) -> str:
        """What a delivery failure means, in a phrase: no hub answering
        (with the obvious question), or the problem itself."""
        if "refused" in problem.lower():
            return f"no hub at {self.hub_url} ({problem}; is `agentpulse serve` running there?)"
        return f"cannot deliver to {self.hub_url} ({problem})"

    def _account(self, batch: Batch, answer: Dict[str, Any]) -> None:
        """Counts a 200/207/422 answer: one id (or null: rejected) per event."""
        self._failing_since = None
        ids = answer.get("ids") or []
        n = len(batch)
        rejected = sum(1 for i in ids[:n] if i is None)
        self._sent += n - rejected
        self._duplicates += int(answer.get("duplicates") or 0)
        if rejected:
            errors = [
                str(e.get("error") or f"{e.get('event_type')}.{e.get('field')}: {e.get('message')}")
                for e in answer.get("errors") or []
                if isinstance(e, dict)
            ]
            self._reject(batch, errors, rejected)
        else:
            self._resolve(n)

    def _reject(self, batch: Batch, errors: List[str], count: Optional[int] = None) -> None:
        n = len(batch) if count is None else count
        self._rejected += n
        self._last_error = errors[0] if errors else "rejected"
        self._resolve(len(batch))
        if self._warn_reject.ready():
            shown = "; ".join(errors[:5]) + (f" (and {len(errors) - 5} more)" if len(errors) > 5 else "")
            logger.warning(
                "agentpulse: the hub rejected %s (not retried): %s; %d rejected so far",
                _n(n, "event"), shown, self._rejected,
            )

    def _give_up(self, batch: Batch, problem: str) -> None:
        self._failed_batches += 1
        self._lost += len(batch)
        self._last_error = problem
        self._resolve(len(batch))
        if not self._at_exit and self._warn_lost.ready():
            logger.error(
                "agentpulse: gave up on %s for %s: %s; %d lost so far",
                _n(len(batch), "event"), self.hub_url, problem, self._lost,
            )

    def _abandon_queue(self) -> None:
        """At the close deadline: what is still queued is lost."""
        n = 0
        while True:
            try:
                self._queue.popleft()
            except IndexError:
                break
            n += 1
        if n:
            self._lost += n
            self._resolve(n)
            if not self._at_exit and self._warn_lost.ready():
                logger.error("agentpulse: %s still queued when the emitter closed not sent", _n(n, "event"))


def _n(count: int, noun: str) -> str:
    """``1 event``, ``2 events``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _close_at_exit() -> None:
    """Closes every emitter that asked for it, each within its exit timeout."""
    for emitter in list(_registry):
        if emitter._flush_at_exit and not emitter._closed:
            try:
                emitter._at_exit = True
                lost_before = emitter.stats().lost
                if not emitter.close(emitter._exit_timeout):
                    # One line: what did not get there (held, or given up
                    # while closing), and why.
                    s = emitter.stats()
                    undelivered = s.queued + s.lost - lost_before
                    if undelivered:
                        logger.warning(
                            "agentpulse: exiting with %s undelivered: %s",
                            _n(undelivered, "event"), emitter._no_hub(s.last_error or "no answer"),
                        )
            except Exception:  # pragma: no cover - never fail the exit
                pass


def _after_fork_in_child() -> None:
    for emitter in list(_registry):
        emitter._reset()


atexit.register(_close_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
