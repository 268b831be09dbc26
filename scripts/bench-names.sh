#!/usr/bin/env bash
# A/B: one-event POST rate and /api/metrics with 10 vs 100,000 agent names.
set -u
BIN="${AGENTPULSE_BIN:-$(dirname "$0")/../target/release/agentpulse}"
for round in 1 2; do
  for n in 10 100000; do
    d=$(mktemp -d)
    port=$((3400 + round * 10 + (n > 10)))
    $BIN serve --quiet --port $port --log-dir "$d" > "$d/out" 2>&1 &
    pid=$!
    for i in $(seq 100); do curl -s "localhost:$port/health" >/dev/null && break; sleep 0.1; done
    $BIN bench names --hub "http://127.0.0.1:$port" --agents $n --seconds 10 --connections 4
    echo "hub RSS: $(grep VmRSS /proc/$pid/status)"
    kill -TERM $pid; wait $pid
    rm -rf "$d"
  done
done
