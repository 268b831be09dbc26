#!/usr/bin/env bash
# Runs the Python SDK's tests against a real agentpulse hub.
#
# - A venv in clients/python/.venv (or $AGENTPULSE_VENV) gets pytest and the
#   build backend once; later runs need no network.
# - The SDK is reinstalled from these sources on every run (not editable), so
#   the tests exercise the installed package.
# - The hub is $AGENTPULSE_BIN, else ${CARGO_TARGET_DIR:-<repo>/target}/debug/agentpulse,
#   built with `cargo build` when missing.
# Arguments go to pytest; the exit code is pytest's.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${AGENTPULSE_VENV:-$here/.venv}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

if [ ! -x "$venv/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$venv"
fi
py="$venv/bin/python"
if ! "$py" -c 'import pytest, setuptools, wheel' 2>/dev/null; then
  "$py" -m pip install -q 'pytest>=7' 'setuptools>=61' wheel
fi
"$py" -m pip install -q --no-deps --no-build-isolation --force-reinstall "$here"

if [ -z "${AGENTPULSE_BIN:-}" ]; then
  export AGENTPULSE_BIN="${CARGO_TARGET_DIR:-$repo/target}/debug/agentpulse"
  if [ ! -x "$AGENTPULSE_BIN" ]; then
    echo "run_tests.sh: building the hub ($AGENTPULSE_BIN is missing)" >&2
    (cd "$repo" && cargo build --bin agentpulse)
  fi
fi

cd "$here"
exec "$py" -m pytest "$@"
