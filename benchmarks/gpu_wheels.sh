#!/usr/bin/env bash
# Orchard's runtime dependencies for a machine that has Python 3.12 and torch but no network
# and no package index (the accelerator machine of benchmarks/gpu_batching.py), which already
# has grpcio, numpy, pillow, click, rich, pyyaml, psutil, aiohttp, prometheus-client and
# nvidia-ml-py.
#
#   benchmarks/gpu_wheels.sh DIR [NAME...]             # here: download the wheels into DIR
#   benchmarks/gpu_wheels.sh --install DIR SITE [PY]   # there: unpack them into SITE, check
#
# Downloading takes the cp312 manylinux x86_64 wheels (pure-Python ones are "any"), at the
# versions installed in .venv (PYTHON names another interpreter to read them from), with
# `python3 -m pip download --no-deps`, so nothing else is fetched; NAMEs download only those
# of the list. protobuf, typing-extensions and markupsafe are carried although such a machine
# may have them: googleapis-common-protos needs protobuf >= 6.33.5 and pydantic
# typing-extensions >= 4.16, newer than it may hold. grpcio and pyyaml are carried too: a
# model environment that the server builds there (uv, offline, `orchard serve --offline
# --find-links DIR`) installs the runner's dependencies at the versions the server runs, so
# the server must run these versions (SITE comes before the machine's own site-packages) and
# DIR must hold them with everything they need (benchmarks/h200_check.sh does this).
#
# Installing puts them in SITE (with PY's pip if it has one, else by unpacking the wheels,
# uv's binary into SITE/bin), then imports Orchard's server, runner and CLI with
# PYTHONPATH=REPO:SITE to show that nothing is missing. Run Orchard there the same way:
# PYTHONPATH=$PWD:$PWD/SITE PY benchmarks/gpu_batching.py --device cuda
set -euo pipefail

PACKAGES=(
  clarifai-grpc googleapis-common-protos protobuf grpcio pyyaml
  sqlalchemy alembic mako markupsafe
  pydantic pydantic-core annotated-types typing-inspection typing-extensions
  uv
)
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
  echo "usage: $0 DIR [NAME...] | $0 --install DIR SITE [PYTHON]" >&2
  exit 2
}

pinned() {  # NAME==VERSION for each package named, from the interpreter that runs Orchard here
  "${PYTHON:-$REPO/.venv/bin/python}" - "$@" <<'EOF'
import sys
from importlib.metadata import version

for name in sys.argv[1:]:
    print(f"{name}=={version(name)}")
EOF
}

download() {
  local dir="$1"
  shift
  mkdir -p "$dir"
  for requirement in $(pinned "${@:-${PACKAGES[@]}}"); do
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
      --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -d "$dir" "$requirement"
    echo "$requirement"
  done
}

unpack() {  # without pip: a wheel is a zip; its .data/scripts go to SITE/bin
  "$1" - "$2" "$3" <<'EOF'
import shutil, stat, sys, zipfile
from pathlib import Path

wheels, site = Path(sys.argv[1]), Path(sys.argv[2])
for wheel in sorted(wheels.glob("*.whl")):
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
for data in site.glob("*.data"):
    for kind in data.iterdir():
        target = site / "bin" if kind.name == "scripts" else site
        target.mkdir(exist_ok=True)
        for item in kind.iterdir():
            shutil.move(str(item), target / item.name)
            if kind.name == "scripts":
                (target / item.name).chmod(0o755 | stat.S_IMODE((target / item.name).stat().st_mode))
    shutil.rmtree(data)
EOF
}

install() {
  local dir="$1" site="$2" python="${3:-python3}"
  mkdir -p "$site"
  if "$python" -m pip --version >/dev/null 2>&1; then
    "$python" -m pip install --quiet --no-index --no-deps --target "$site" "$dir"/*.whl
  else
    unpack "$python" "$dir" "$site"
  fi
  PYTHONPATH="$REPO:$site" "$python" -c \
    "import orchard.server.app, orchard.runners.serve, orchard.cli.main, uv; print('uv', uv.find_uv_bin())"
}

case "${1:-}" in
  --install) [[ $# -ge 3 ]] || usage; install "$2" "$3" "${4:-python3}" ;;
  "" | -*) usage ;;
  *) download "$@" ;;
esac
