#!/usr/bin/env bash
# Run every test of ftab on a fresh machine: prepare what the tests need, then run the
# whole suite (`cargo test --workspace`, with any arguments given passed on).
#
# - The Python clients the tests use (pyarrow, pytest, deltalake: clients ftab did not
#   write) go into a virtual environment outside the repository, made on first use and
#   refreshed when tests/python/requirements.txt changes: $FTAB_VENV, by default
#   ~/.cache/ftab-venv. Its python3 comes first on PATH while the tests run.
# - Cargo builds into $CARGO_TARGET_DIR, by default ~/.cache/ftab-target (one target
#   directory outside the clone; docs/build.md).
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${FTAB_VENV:-$HOME/.cache/ftab-venv}"
requirements=tests/python/requirements.txt
stamp="$venv/.ftab-requirements"

if [ ! -x "$venv/bin/python3" ]; then
  echo "==> making a Python virtual environment for the test clients at $venv"
  mkdir -p "$(dirname "$venv")"
  if ! python3 -m venv "$venv"; then
    echo "error: python3 cannot make a virtual environment; install Python's venv module (Debian: apt-get install python3-venv) and run this again" >&2
    exit 2
  fi
fi
if ! cmp -s "$requirements" "$stamp"; then
  echo "==> installing the Python test clients ($requirements)"
  "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$stamp"
fi

export PATH="$venv/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ftab-target}"
if [ -z "${FTAB_TEST_AEROSPIKE:-}" ]; then
  echo "==> FTAB_TEST_AEROSPIKE is not set: the tests that need an Aerospike server skip (docs/online-store.md#running-the-aerospike-tests)"
else
  echo "==> Aerospike tests against $FTAB_TEST_AEROSPIKE"
fi
echo "==> cargo test --workspace $* (target directory $CARGO_TARGET_DIR)"
exec cargo test --workspace "$@"
