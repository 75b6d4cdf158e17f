#!/usr/bin/env bash
# Install what Orchard needs into .venv (uv from PyPI when missing), and bubblewrap, the
# replica sandbox, and chromium for the dashboard's browser tests (Debian's packages,
# installed when we are root). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing bubblewrap (Debian package bubblewrap) for the replica sandbox..." >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null
  else
    echo "warning: bubblewrap is not installed; replicas will run unsandboxed" \
      "(install Debian's bubblewrap)" >&2
  fi
fi
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium (Debian package chromium) for the dashboard's browser tests..." >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "warning: /usr/bin/chromium is missing; the dashboard's browser tests will skip" \
      "(install Debian's chromium)" >&2
  fi
fi
if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install --quiet uv
fi
[ -x .venv/bin/python ] || uv venv --quiet .venv --python 3.11
uv pip install --quiet --python .venv/bin/python -e '.[dev,ray]'
