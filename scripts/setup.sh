#!/usr/bin/env bash
# Install what Orchard needs into .venv (uv from PyPI when missing). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install --quiet uv
fi
[ -x .venv/bin/python ] || uv venv --quiet .venv --python 3.11
uv pip install --quiet --python .venv/bin/python -e '.[dev,ray]'
