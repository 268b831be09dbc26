#!/bin/bash
# Three release hubs + one redis-server (AOF everysec) on this machine.
B=/work/main/target/release/agentpulse
R=/tmp/clb; pkill -f 'redis-server .*6399' ; pkill -f 'agentpulse serve --quiet --port 40' ; sleep 0.5
rm -rf $R; mkdir -p $R/redis
redis-server --port 6399 --dir $R/redis --appendonly yes --appendfsync everysec --save "" --daemonize yes >/dev/null
for p in 4001 4002 4003; do
  $B serve --quiet --port $p --log-dir $R/l$p --otlp-grpc-port 0 --cluster redis://127.0.0.1:6399 > $R/hub$p.log 2>&1 &
done
for p in 4001 4002 4003; do
  for i in $(seq 100); do curl -sf localhost:$p/health >/dev/null && break; sleep 0.1; done
done
echo "== ingest: one generator per hub at once, $1 events each"
for p in 4001 4002 4003; do
  $B bench ingest --hub http://127.0.0.1:$p --events $1 --batch 1000 --connections 2 > $R/ing$p.txt 2>&1 &
done
wait %4 %5 %6 2>/dev/null; wait $(jobs -p | tail -3) 2>/dev/null
for p in 4001 4002 4003; do tail -3 $R/ing$p.txt; done
# every hub tailed everything?
for p in 4001 4002 4003; do curl -s localhost:$p/health | python3 -c "import json,sys; h=json.load(sys.stdin); c=h['components']['cluster']; print($p, {k:c[k] for k in c if k in ('appends','round_trips','tailed','missed','append_round_trips','tail_round_trips','last_id')})" ; done
