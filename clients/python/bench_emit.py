#!/usr/bin/env python3
"""Caller-side cost of ``emit_event``: median and p99 over 100,000 calls.

Scenarios: a running hub (``--hub-url``, else one started from
``$AGENTPULSE_BIN`` or ``<repo>/target/debug/agentpulse``), and no hub at all
(a closed port). Every call is timed on its own with ``perf_counter_ns``;
the timer's own cost is shown on the first line.

    python clients/python/bench_emit.py [--calls N] [--hub-url URL]
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Tuple

try:
    import agentpulse
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
    import agentpulse

from agentpulse import Emitter

REPO = Path(__file__).resolve().parents[2]
PAYLOAD = {"agent": "scribe", "task_id": "t_001", "status": "success", "duration_ms": 2500, "cost_usd": 0.12}


def start_hub(log_dir: str) -> Tuple[subprocess.Popen, str]:
    binary = os.environ.get("AGENTPULSE_BIN") or str(REPO / "target" / "debug" / "agentpulse")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTPULSE_")}
    proc = subprocess.Popen(
        [binary, "serve", "--quiet", "--port", "0", "--log-dir", log_dir],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
    )
    assert proc.stdout is not None
    m = re.match(r"agentpulse listening on (http://\S+) ", proc.stdout.readline())
    if not m:
        proc.kill()
        sys.exit(f"could not start the hub {binary}")
    return proc, m.group(1)


def timer_overhead(n: int) -> float:
    clock = time.perf_counter_ns
    samples = []
    for _ in range(n):
        t0 = clock()
        samples.append(clock() - t0)
    samples.sort()
    return samples[n // 2] / 1000


def measure(em: Emitter, n: int) -> List[int]:
    clock = time.perf_counter_ns
    emit = em.emit
    samples = [0] * n
    for i in range(n):
        t0 = clock()
        emit("agent_completed", PAYLOAD)
        samples[i] = clock() - t0
    return samples


def row(name: str, em: Emitter, samples: List[int], rate: str) -> str:
    samples = sorted(samples)
    n = len(samples)
    pct = lambda p: samples[min(n - 1, int(n * p))] / 1000  # noqa: E731
    st = em.stats()
    return (
        f"| {name:<34} | {n:>7} | {pct(0.5):>6.2f} | {pct(0.99):>6.2f} | {pct(0.999):>7.2f} "
        f"| {samples[-1] / 1000:>8.1f} | {st.sent:>6} | {st.dropped:>7} | {st.queued:>6} | {rate:>9} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--hub-url")
    args = ap.parse_args()
    n = args.calls

    proc = None
    tmp = tempfile.TemporaryDirectory()
    url = args.hub_url
    if not url:
        proc, url = start_hub(tmp.name)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"

    print(f"agentpulse {agentpulse.__version__}, Python {sys.version.split()[0]}, {n} calls per scenario")
    print(f"timer overhead (two perf_counter_ns calls), median: {timer_overhead(n):.2f} µs, included below")
    print()
    print("| scenario                           |   calls | median |    p99 |   p99.9 |   max µs |   sent | dropped | queued | sent/s    |")
    print("|------------------------------------|---------|--------|--------|---------|----------|--------|---------|--------|-----------|")
    try:
        scenarios = [
            ("hub running (queue 10,000)", url, {}),
            ("hub running (queue 100,000)", url, {"max_queue": 100_000}),
            ("no hub (queue 10,000: then drops)", dead, {}),
        ]
        for name, hub_url, options in scenarios:
            em = Emitter(hub_url, token="", flush_at_exit=False, warn_interval=3600, **options)
            measure(em, 1000)  # warm-up: thread started, code paths hot
            em.flush(10 if hub_url == url else 0)
            fresh = Emitter(hub_url, token="", flush_at_exit=False, warn_interval=3600, **options)
            em.close(0)
            t0 = time.perf_counter()
            samples = measure(fresh, n)
            rate = "-"
            if hub_url == url:
                fresh.flush(60)
                rate = f"{fresh.stats().sent / (time.perf_counter() - t0):,.0f}"
            print(row(name, fresh, samples, rate), flush=True)
            fresh.close(0)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        tmp.cleanup()
    print()
    print("µs per emit_event call on the caller's thread. sent/dropped/queued: after a flush (hub)")
    print("or at once (no hub); sent/s: events delivered per second from the first call to the flush.")


if __name__ == "__main__":
    main()
