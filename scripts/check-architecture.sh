#!/usr/bin/env bash
# The workspace's shape, checked (run by scripts/test.sh):
# - no module cycles inside any crate (scripts/check-module-cycles.py);
# - the client crate's normal dependency tree holds none of the server's
#   crates, and the core's holds no runtime, server or I/O crate.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 scripts/check-module-cycles.py

deps() { cargo tree --locked -p "$1" -e normal --prefix none | awk '{print $1}' | sort -u; }
fail=0
forbid() {
  local crate=$1; shift
  local tree; tree=$(deps "$crate")
  for bad in "$@"; do
    if grep -qx "$bad" <<<"$tree"; then
      echo "$crate depends on $bad (cargo tree -p $crate -e normal -i $bad)" >&2
      fail=1
    fi
  done
}
server=(agentpulse axum hyper redis clap indicatif metrics-exporter-prometheus mimalloc tonic)
forbid agentpulse-client "${server[@]}"
forbid agentpulse-core "${server[@]}" agentpulse-client tokio tokio-tungstenite ureq flate2
[ "$fail" = 0 ] && echo "client and core trees: none of the server's crates"
exit "$fail"
