"""HTTP to the hub: one keep-alive connection, bearer token, gzip for large bodies.

A :class:`HubTransport` is not thread-safe; each thread that talks to the hub
uses its own (the emitter's background thread has one, and every
:meth:`agentpulse.Emitter.get_metrics` call opens a short-lived one).
"""

from __future__ import annotations

import gzip
import http.client
import json
import socket
from typing import Any, Dict, Optional, Tuple
from urllib.parse import urlsplit

from ._version import __version__

USER_AGENT = f"agentpulse-python/{__version__}"


class AgentPulseError(Exception):
    """A request to the hub failed: unreachable, refused, or a bad answer.

    ``status`` is the HTTP status when the hub answered, else ``None``.
    """

    def __init__(self, message: str, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.status = status


class TransportError(AgentPulseError):
    """The hub could not be reached or the connection broke (worth retrying)."""


class HubTransport:
    """Requests to one hub over a persistent HTTP/1.1 connection.

    A request that fails on a connection reused from an earlier request is
    retried once at once on a fresh connection (the hub may have closed the
    idle one); any other failure raises :class:`TransportError`.
    """

    def __init__(
        self,
        hub_url: str,
        token: Optional[str] = None,
        timeout: float = 10.0,
        compress_min_bytes: Optional[int] = 64 * 1024,
    ) -> None:
        """Checks ``hub_url`` (``http://`` or ``https://``); raises ``ValueError``.

        Bodies of at least ``compress_min_bytes`` are sent gzipped (``None``
        never compresses).
        """
        parts = urlsplit(hub_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"hub URL must be http://HOST[:PORT] or https://..., got {hub_url!r}")
        try:
            port = parts.port
        except ValueError as e:
            raise ValueError(f"hub URL {hub_url!r}: {e}") from None
        self.hub_url = hub_url
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = port
        self._base = parts.path.rstrip("/")
        self._timeout = timeout
        self._compress_min = compress_min_bytes
        self._headers: Dict[str, str] = {"User-Agent": USER_AGENT}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._conn: Optional[http.client.HTTPConnection] = None

    def _connect(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return cls(self._host, self._port, timeout=self._timeout)

    def close(self) -> None:
        """Closes the connection (the next request opens a new one)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # pragma: no cover - closing never matters
                pass

    def request(
        self,
        method: str,
        path: str,
        body: Optional[bytes] = None,
        headers: Optional[Dict[str, str]] = None,
    ) -> Tuple[int, bytes]:
        """Sends one request; returns ``(status, body)`` of any HTTP answer."""
        all_headers = dict(self._headers)
        if headers:
            all_headers.update(headers)
        url = self._base + path
        while True:
            reused = self._conn is not None
            if self._conn is None:
                self._conn = self._connect()
            conn = self._conn
            try:
                conn.request(method, url, body=body, headers=all_headers)
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as e:
                self.close()
                if reused and not isinstance(e, (TimeoutError, socket.timeout)):
                    continue  # a stale keep-alive connection: once more, fresh
                raise TransportError(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__) from e
            if resp.will_close:
                self.close()
            return resp.status, data

    def post_events(self, ndjson: bytes) -> Tuple[int, Optional[Dict[str, Any]]]:
        """``POST /events`` of an NDJSON body; returns the status and the
        decoded answer (``None`` when it is not a JSON object)."""
        headers = {"Content-Type": "application/x-ndjson"}
        if self._compress_min is not None and len(ndjson) >= self._compress_min:
            ndjson = gzip.compress(ndjson, compresslevel=1, mtime=0)
            headers["Content-Encoding"] = "gzip"
        status, data = self.request("POST", "/events", ndjson, headers)
        return status, decode_object(data)

    def get_json(self, path: str) -> Dict[str, Any]:
        """``GET path``; the JSON object answered, or :class:`AgentPulseError`."""
        status, data = self.request("GET", path, headers={"Accept": "application/json"})
        doc = decode_object(data)
        if status != 200:
            why = doc.get("error") if doc else data[:200].decode("utf-8", "replace")
            raise AgentPulseError(f"GET {path}: HTTP {status}: {why}", status)
        if doc is None:
            raise AgentPulseError(f"GET {path}: the answer is not a JSON object", status)
        return doc


def decode_object(data: bytes) -> Optional[Dict[str, Any]]:
    """``data`` as a JSON object, or ``None``."""
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None
