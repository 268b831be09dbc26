"""agentpulse: send multi-agent observability events to an agentpulse hub.

Drop-in for the original ``observability`` module's calls::

    from agentpulse import emit_event, get_emitter

    emit_event("task_queued", {"task_id": "t_1", "feature": "checkout", "est_cost": 0.4})
    get_emitter().record_critic_decision(rejected=False)
    print(get_emitter().get_metrics()["validation_pass_rate"])

``emit_event`` never blocks on the network and never raises: events go to a
bounded queue that a daemon thread posts to the hub (``$AGENTPULSE_HUB_URL``,
default ``http://127.0.0.1:3010``, token ``$AGENTPULSE_TOKEN``) in batches,
retrying safely. At interpreter exit the queue is flushed for at most two
seconds. Standard library only.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Dict, Optional

from ._version import __version__
from .config import DEFAULT_HUB_URL, ENV_HUB_URL, ENV_TOKEN
from .emitter import CRITIC_DECISION, KPI_NAMES, Emitter, Stats
from .transport import AgentPulseError, TransportError

__all__ = [
    "AgentPulseError",
    "CRITIC_DECISION",
    "DEFAULT_HUB_URL",
    "ENV_HUB_URL",
    "ENV_TOKEN",
    "Emitter",
    "KPI_NAMES",
    "Stats",
    "TransportError",
    "__version__",
    "configure",
    "emit_event",
    "get_emitter",
]

_logger = logging.getLogger("agentpulse")
_default: Optional[Emitter] = None
_default_error: Optional[str] = None
_default_lock = threading.Lock()


def get_emitter() -> Emitter:
    """The process-wide emitter, created on first use from the environment
    (``AGENTPULSE_HUB_URL``, ``AGENTPULSE_TOKEN``).

    Raises ``ValueError`` when ``AGENTPULSE_HUB_URL`` is not an http(s) URL.
    """
    global _default, _default_error
    emitter = _default
    if emitter is not None:
        return emitter
    with _default_lock:
        if _default is None:
            try:
                _default = Emitter()
            except ValueError as e:
                _default_error = str(e)
                raise
            _default_error = None
        return _default


def configure(hub_url: Optional[str] = None, token: Optional[str] = None, **options: Any) -> Emitter:
    """Replaces the process-wide emitter by ``Emitter(hub_url, token,
    **options)`` and returns it; the previous one is closed (within its exit
    timeout), so its queued events are still delivered."""
    global _default, _default_error
    new = Emitter(hub_url, token, **options)
    with _default_lock:
        old, _default, _default_error = _default, new, None
    if old is not None:
        old.close(old._exit_timeout)
    return new


def emit_event(event_type: str, payload: Optional[Dict[str, Any]] = None) -> Optional[str]:
    """Queues an event for the hub; returns its ``event_id``, or ``None`` when
    it was not queued. Never raises and never waits for the network.

    ``payload`` is a dict of JSON-compatible values (see
    :meth:`Emitter.emit`).
    """
    emitter = _default
    if emitter is None:
        if _default_error is not None:
            return None
        try:
            emitter = get_emitter()
        except Exception as e:  # a bad AGENTPULSE_HUB_URL: say it once
            _logger.error("agentpulse: events are not sent: %s", e)
            return None
    return emitter.emit(event_type, payload)
