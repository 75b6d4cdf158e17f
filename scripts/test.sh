#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what it needs (uv, the virtual
# environment, PostgreSQL for the store tests), then lint, types and pytest.
# Extra arguments go to pytest, e.g. scripts/test.sh -m "not e2e".
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy

pgdir=$(mktemp -d /tmp/orchard-pg.XXXXXX)
cleanup() { scripts/postgres.sh stop "$pgdir" || true; rm -rf "$pgdir"; }
trap cleanup EXIT
if url=$(scripts/postgres.sh start "$pgdir"); then
  export ORCHARD_TEST_POSTGRES_URL="$url"
else
  echo "warning: no PostgreSQL server; the PostgreSQL half of the store tests will skip" >&2
fi

echo "== pytest"
.venv/bin/pytest "$@"
