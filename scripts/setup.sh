#!/usr/bin/env bash
# Install what Orchard needs into .venv (uv from PyPI when missing), and bubblewrap, the
# replica sandbox, and chromium for the dashboard's browser tests (Debian's packages,
# installed when we are root). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
# debian PACKAGE PRESENT WHY MISSING: install PACKAGE unless PRESENT (a path) exists, or warn
# with MISSING when it cannot be installed here (not root, or no apt).
debian() {
  [ -e "$2" ] && return
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing $1 (Debian package $1) $3..." >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
  else
    echo "warning: $1 is not installed; $4 (install Debian's $1)" >&2
  fi
}
debian bubblewrap /usr/bin/bwrap "for the replica sandbox" "replicas will run unsandboxed"
debian chromium /usr/bin/chromium "for the dashboard's browser tests" \
  "the dashboard's browser tests will skip"
if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install --quiet uv
fi
[ -x .venv/bin/python ] || uv venv --quiet .venv --python 3.11
uv pip install --quiet --python .venv/bin/python -e '.[dev,ray]'
