#!/usr/bin/env bash
# Runs one `agentpulse bench` against a fresh hub, for A/B comparisons:
#   scripts/bench-hub.sh HUB_BIN LABEL -- BENCH_ARGS...
# starts HUB_BIN serve --quiet on port 3901 with a fresh temporary log
# directory, runs target/release/agentpulse bench BENCH_ARGS --hub
# http://127.0.0.1:3901, prints the result lines, stops the hub and removes
# the log. Build first: cargo build --release.
set -u
hubbin=$1; label=$2; shift 3
client="$(cd "$(dirname "$0")/.." && pwd)/target/release/agentpulse"
dir=$(mktemp -d /tmp/benchhub-XXXX)
"$hubbin" serve --quiet --port 3901 --log-dir "$dir" > "$dir.out" 2> "$dir.err" &
pid=$!
for _ in $(seq 100); do grep -q listening "$dir.out" 2>/dev/null && break; sleep 0.1; done
echo "== $label: $*"
"$client" bench "$@" --hub http://127.0.0.1:3901 2>&1 | grep -E "^(ingest|fanout|latency|lagging|catch-up)"
kill "$pid"; wait "$pid" 2>/dev/null
rm -rf "$dir" "$dir.out" "$dir.err"
