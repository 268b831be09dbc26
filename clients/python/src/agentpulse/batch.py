"""Turning queued events into NDJSON batches for ``POST /events``."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple

#: One queued event as :meth:`agentpulse.Emitter.emit` stamped it:
#: ``(event_type, payload, timestamp, event_id)``. A plain tuple, the
#: cheapest thing to build on the caller's thread.
Item = Tuple[str, Dict[str, Any], float, str]


def _fallback(value: Any) -> Any:
    """JSON for values ``json`` does not know: sets as lists, bytes as text,
    anything else as its ``str()``."""
    if isinstance(value, (set, frozenset)):
        return list(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=_fallback)


def encode_event(item: Item) -> bytes:
    """One event as a JSON line (without the newline), in the wire format.

    Raises ``ValueError`` (NaN or infinity, a reference cycle), ``TypeError``
    (a key that is not a string, number, bool or None) or ``RecursionError``.
    """
    return _ENCODER.encode(
        {
            "event_type": item[0],
            "timestamp": item[2],
            "event_id": item[3],
            "payload": item[1],
        }
    ).encode("utf-8")


class Batch:
    """Encoded events sent together; the hub answers per event, in order."""

    __slots__ = ("lines", "size")

    def __init__(self, lines: Optional[List[bytes]] = None) -> None:
        self.lines: List[bytes] = lines or []
        self.size = sum(len(x) + 1 for x in self.lines)

    def add(self, line: bytes) -> None:
        """Appends an encoded event."""
        self.lines.append(line)
        self.size += len(line) + 1

    def __len__(self) -> int:
        return len(self.lines)

    def body(self) -> bytes:
        """The NDJSON body: one line per event."""
        return b"\n".join(self.lines) + b"\n"

    def split(self) -> Tuple["Batch", "Batch"]:
        """Two halves, in order (for a hub that finds the body too large)."""
        mid = len(self.lines) // 2
        return Batch(self.lines[:mid]), Batch(self.lines[mid:])
