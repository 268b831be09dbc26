"""Fixtures: a real agentpulse hub process, emitters, and polling helpers.

The hub binary is ``$AGENTPULSE_BIN``, else ``<repo>/target/debug/agentpulse``.
No test sleeps to synchronise: each polls a condition against a deadline.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any, Callable, Dict, Iterator, List, Optional, Tuple, TypeVar

import pytest

from agentpulse import Emitter

REPO = Path(__file__).resolve().parents[3]
T = TypeVar("T")

_LISTENING = re.compile(r"^agentpulse listening on (http://\S+) ")


def hub_binary() -> Path:
    """Where the hub binary is expected."""
    return Path(os.environ.get("AGENTPULSE_BIN") or REPO / "target" / "debug" / "agentpulse")


def wait_until(cond: Callable[[], T], timeout: float = 15.0, what: str = "condition") -> T:
    """Polls ``cond`` until it returns something truthy; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {value!r})")
        time.sleep(0.01)  # poll interval, not synchronisation


def free_port() -> int:
    """A TCP port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _drain(pipe: IO[bytes]) -> None:
    with pipe:
        pipe.read()


class Hub:
    """One ``agentpulse serve`` process; ``restart()`` keeps port and log dir."""

    def __init__(self, binary: Path, log_dir: Path, token: Optional[str] = None, extra: Tuple[str, ...] = ()) -> None:
        self.binary = binary
        self.log_dir = log_dir
        self.token = token
        self.extra = extra
        self.port = 0
        self.url = ""
        self.proc: Optional[subprocess.Popen] = None

    def start(self, timeout: float = 20.0) -> "Hub":
        """Starts the hub (on the port of the previous run, if any)."""
        assert self.proc is None, "already running"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        args = [str(self.binary), "serve", "--quiet", "--port", str(self.port), "--log-dir", str(self.log_dir)]
        if self.token:
            args += ["--token", self.token]
        args += list(self.extra)
        # The hub reads AGENTPULSE_* too (AGENTPULSE_TOKEN, _PORT...): keep ours out.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTPULSE_")}
        stderr = open(self.log_dir.parent / f"{self.log_dir.name}.stderr", "ab")
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=stderr, env=env)
        stderr.close()
        self.proc = proc
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline().decode() if ready else ""
        m = _LISTENING.match(line)
        if not m:
            self.stop()
            proc.stdout.close()
            raise RuntimeError(f"hub did not start: first line {line!r}; see {self.log_dir}.stderr")
        self.url = m.group(1)
        self.port = int(self.url.rsplit(":", 1)[1])
        # Keep reading stdout so that the hub can never block on it.
        threading.Thread(target=_drain, args=(proc.stdout,), daemon=True).start()
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        """Stops the hub (gracefully by default) and waits for it."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def restart(self) -> "Hub":
        """A new process on the same port and log directory."""
        self.stop()
        return wait_until(self._try_start, timeout=20, what="the hub to start again on its port")

    def _try_start(self) -> Optional["Hub"]:
        try:
            return self.start()
        except RuntimeError:  # the port not yet free
            return None

    def request(self, path: str, token: Optional[str] = None) -> Tuple[int, Any]:
        """``GET path`` with the hub's token (or ``token``); (status, JSON)."""
        req = urllib.request.Request(self.url + path)
        tok = self.token if token is None else token
        if tok:
            req.add_header("Authorization", f"Bearer {tok}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def get(self, path: str) -> Any:
        status, doc = self.request(path)
        assert status == 200, (path, status, doc)
        return doc

    def events(self) -> List[Dict[str, Any]]:
        """Every event the hub holds, oldest first."""
        out: List[Dict[str, Any]] = []
        since = 0
        while True:
            page = self.get(f"/api/events?since={since}&limit=100000")["events"]
            if not page:
                return out
            out.extend(page)
            since = page[-1]["id"]

    def wait_events(self, n: int, timeout: float = 15.0) -> List[Dict[str, Any]]:
        """Waits until the hub holds at least ``n`` events; returns them."""
        return wait_until(lambda: (lambda evs: evs if len(evs) >= n else None)(self.events()), timeout, f"{n} events")


@pytest.fixture(scope="session")
def hub_bin() -> Path:
    path = hub_binary()
    if not path.is_file():
        pytest.fail(f"hub binary {path} not found: run `cargo build` or set AGENTPULSE_BIN", pytrace=False)
    return path


@pytest.fixture
def hub_factory(hub_bin: Path, tmp_path: Path) -> Iterator[Callable[..., Hub]]:
    """Starts hubs (``token=``, extra CLI args); all are stopped at teardown."""
    hubs: List[Hub] = []

    def start(token: Optional[str] = None, extra: Tuple[str, ...] = ()) -> Hub:
        hub = Hub(hub_bin, tmp_path / f"hub{len(hubs)}", token, extra)
        hubs.append(hub)
        return hub.start()

    yield start
    for hub in hubs:
        hub.stop(signal.SIGKILL)


@pytest.fixture
def hub(hub_factory: Callable[..., Hub]) -> Hub:
    return hub_factory()


@pytest.fixture
def make_emitter() -> Iterator[Callable[..., Emitter]]:
    """Emitters without the exit flush; closed at teardown."""
    made: List[Emitter] = []

    def make(hub_url: str, **kw: Any) -> Emitter:
        kw.setdefault("token", "")
        kw.setdefault("flush_at_exit", False)
        e = Emitter(hub_url, **kw)
        made.append(e)
        return e

    yield make
    for e in made:
        e.close(timeout=0.5)


@pytest.fixture
def child_env() -> Dict[str, str]:
    """Environment for Python subprocesses: no AGENTPULSE_* of ours."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AGENTPULSE_")}
