#!/usr/bin/env bash
# Issue 15's benchmark: three release hubs in one cluster and one
# redis-server (AOF, fsync every second) on this machine; one ingest load
# generator per hub at once, then the figures of each hub's cluster
# component. Usage: scripts/bench-cluster.sh [EVENTS_PER_HUB]
# With KEEP=1 the hubs (ports 4001-4003) and Redis (6399) stay up, e.g. for
#   agentpulse bench fanout --hub http://127.0.0.1:4002 --post-to http://127.0.0.1:4001 --subscribers 10 --rate 10000 --seconds 5
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${1:-100000}
B=${AGENTPULSE_BIN:-target/release/agentpulse}
R=$(mktemp -d /tmp/agentpulse-cluster-bench.XXXXXX)
mkdir -p "$R/redis"
redis-server --port 6399 --dir "$R/redis" --appendonly yes --appendfsync everysec --save "" \
  --daemonize yes --pidfile "$R/redis.pid" >/dev/null
hubs=()
for p in 4001 4002 4003; do
  "$B" serve --quiet --port $p --log-dir "$R/l$p" --otlp-grpc-port 0 \
    --cluster redis://127.0.0.1:6399 >"$R/hub$p.log" 2>&1 &
  hubs+=($!)
done
stop() { [ "${KEEP:-}" = 1 ] || { kill "${hubs[@]}" 2>/dev/null; redis-cli -p 6399 shutdown nosave >/dev/null 2>&1 || true; }; }
trap stop EXIT
for p in 4001 4002 4003; do
  for _ in $(seq 100); do curl -sf "localhost:$p/health" >/dev/null && break; sleep 0.1; done
done
gens=()
for p in 4001 4002 4003; do
  "$B" bench ingest --hub "http://127.0.0.1:$p" --events "$EVENTS" --batch 1000 --connections 2 \
    >"$R/ingest$p.txt" 2>&1 &
  gens+=($!)
done
wait "${gens[@]}"
for p in 4001 4002 4003; do grep 'events/s' "$R/ingest$p.txt"; done
# Acknowledged is in Redis; wait (at most 60 s) until every hub has tailed all.
tailed() { curl -s "localhost:$1/health" | python3 -c "import json,sys; print(json.load(sys.stdin)['components']['cluster']['tailed'])"; }
deadline=$((SECONDS + 60))
for p in 4001 4002 4003; do
  while [ "$(tailed $p)" -lt $((3 * EVENTS)) ]; do
    [ $SECONDS -lt $deadline ] || { echo "hub $p has not tailed everything in 60 s" >&2; exit 1; }
    sleep 0.1
  done
done
for p in 4001 4002 4003; do
  curl -s "localhost:$p/health" | python3 -c "import json,sys; c=json.load(sys.stdin)['components']['cluster']; print($p, {k: c[k] for k in ('appended','append_round_trips','tailed','tail_reads','missed')})"
done
