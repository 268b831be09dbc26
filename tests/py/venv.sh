#!/usr/bin/env bash
# Makes target/py-venv (or $AGENTPULSE_TEST_VENV) a Python venv with the
# packages of tests/py/requirements.txt, from PyPI; prints its interpreter.
# Idempotent and safe to run from several test processes at once: a lock
# serialises them, and a stamp of requirements.txt skips the work when
# nothing changed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${AGENTPULSE_TEST_VENV:-${CARGO_TARGET_DIR:-$repo/target}/py-venv}"
req="$here/requirements.txt"
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
stamp="$venv/.requirements"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && cmp -s "$req" "$stamp"; then
  echo "$venv/bin/python"
  exit 0
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
"${PYTHON:-python3}" -m venv "$venv" >&2
"$venv/bin/python" -m pip install -q -r "$req" >&2
cp "$req" "$stamp"
echo "$venv/bin/python"
