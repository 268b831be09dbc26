#!/usr/bin/env bash
# The one command that runs every test of agentpulse.
#
# It installs what the tests need where it can (redis-server, chromium,
# from Debian's packages, when run as root or with sudo), then runs the
# format check, clippy and the whole test suite. CI (.ci/run) calls exactly
# this script.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

need_pkg() { # need_pkg COMMAND PACKAGE... (apt-get options may come first among the packages)
  command -v "$1" >/dev/null 2>&1 && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 && sudo="sudo -n" || {
      echo "warning: $1 is missing and cannot be installed (not root); tests that need it will fail" >&2
      return 0
    }
  fi
  log "installing ${*:2}"
  if [ -z "${APT_UPDATED:-}" ]; then
    $sudo apt-get update -qq || true
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${@:2}" >/dev/null
}

need_pkg redis-server redis-server
# The Rust tests make a venv from PyPI (tests/py/venv.sh); Debian's python3
# needs python3-venv for that.
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  need_pkg __python3_venv__ python3-venv
fi
need_pkg chromium chromium
# promtool checks the /metrics exposition (tests/hub.rs).
need_pkg promtool --no-install-recommends prometheus

if ! command -v cargo-nextest >/dev/null 2>&1 && ! cargo nextest --version >/dev/null 2>&1; then
  NEXTEST=""
else
  NEXTEST=1
fi

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings

log "architecture (module cycles, the client's and the core's dependencies)"
./scripts/check-architecture.sh
log "cargo doc (broken or private links are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --workspace

status=0
log "Rust tests"
if [ -n "$NEXTEST" ]; then
  cargo nextest run --locked --no-fail-fast || status=1
else
  cargo test --locked --no-fail-fast || status=1
fi
# Doc tests are not run by nextest.
cargo test --locked --doc || status=1

# The browser and Python suites run the debug binary the Rust tests built.
cargo build --locked --bin agentpulse
export AGENTPULSE_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/agentpulse"

log "browser tests (dashboard, headless Chromium)"
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
node --test tests/browser/ || status=1

log "Python SDK tests"
clients/python/run_tests.sh -q || status=1

if [ "$status" -ne 0 ]; then
  log "FAILED"
fi
exit "$status"
