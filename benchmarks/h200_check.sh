#!/usr/bin/env bash
# Issue 17's checks on the accelerator machine (one NVIDIA H200; Python 3.12 and torch in
# /opt/torch/.venv; no network, no package index), in one run of about 5 minutes:
#
#   setup      the carried wheels (benchmarks/gpu_wheels.sh .cache/gpu-wheels, done here)
#              installed into SITE; PYTHONPATH=REPO:SITE from then on
#   inventory  a real `orchard serve` (loopback, home in a temp folder, model environments
#              built offline from the carried wheels); `orchard list-instances` and the
#              provider's own inventory; a nodepool of the H200 instance type (created) and
#              two asking for two GPUs (refused; the messages are saved)
#   sharing    examples/models/gpu_probe deployed with 3 replicas on that nodepool: two share
#              the H200 (60Gi each), each allocates and touches GPU memory through the CUDA
#              driver and reports what it sees; the third stays unplaced, and the deployment's
#              events show placement's refusal naming the device's free memory
#   benchmark  benchmarks/gpu_batching.py --device cuda (batch 64), shortened to fit
#
# Each section runs whatever happened before it (a failure is reported, never fatal), under
# its own time limit and an overall budget (H200_CHECK_BUDGET seconds, default 360). Results
# go to $OUT (default .cache/h200-check): h200_check.log (everything printed), summary.txt
# (one PASS/FAIL line per check), inventory.txt, sharing.txt, serve.log, replicas.log and
# gpu_batching-h200.json (gpu_batching-h200-8per-request.json too when time is left).
#
#   benchmarks/h200_check.sh          # there: the checks above
#   benchmarks/h200_check.sh --cpu    # here, a dry run without a GPU: the same flow on a CPU
#                                     # nodepool; the probe must answer "no GPU"
#
# Settings (environment): DEBS (folder holding Debian's bubblewrap .deb, unpacked when the
# machine has no bwrap; default .cache/h200-debs, made here with `apt-get download bubblewrap`),
# PY (default /opt/torch/.venv/bin/python3 where it exists, else
# .venv/bin/python), WHEELS (default .cache/gpu-wheels; "" installs nothing), SITE,
# FIND_LINKS (the wheels model environments are built from; default WHEELS), SERVE_ARGS
# (more `orchard serve` options), PROBE_MIB (MiB each probe replica allocates; default 40960),
# BENCH_ARGS (default "--seconds 8 --warmup 2 --rounds 3"), SECTIONS (default "inventory sharing
# benchmark"; e.g. "benchmark" alone for a rerun; sharing needs inventory's server and nodepool).
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 1
MODE=gpu
[[ "${1:-}" == "--cpu" ]] && MODE=cpu
OUT="${OUT:-$REPO/.cache/h200-check}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/h200_check.log") 2>&1
export PYTHONUNBUFFERED=1 COLUMNS=220 NO_COLOR=1

if [[ -z "${PY:-}" ]]; then
  PY="$REPO/.venv/bin/python"
  [[ -x /opt/torch/.venv/bin/python3 ]] && PY=/opt/torch/.venv/bin/python3
fi
WHEELS="${WHEELS-$REPO/.cache/gpu-wheels}"
SITE="${SITE:-/tmp/orchard-h200-site}"
FIND_LINKS="${FIND_LINKS-$WHEELS}"
PROBE_MIB="${PROBE_MIB:-40960}"
BENCH_ARGS="${BENCH_ARGS:---seconds 8 --warmup 2 --rounds 3}"
BUDGET="${H200_CHECK_BUDGET:-360}"
SECTIONS=" ${SECTIONS:-inventory sharing benchmark} "
[[ "$SECTIONS" == *" sharing "* ]] && SECTIONS+="inventory "
STARTED=$SECONDS
# Not under /tmp, which a sandboxed replica sees as its own folder.
[[ -d "${WORK_BASE:-/var/tmp}" ]] || WORK_BASE=/tmp
WORK="$(mktemp -d "${WORK_BASE:-/var/tmp}/h200-check.XXXXXX")"
chmod 755 "$WORK"
export ORCHARD_CONFIG="$WORK/orchard-config"
PAT=""
SERVER_PID=""
PORT=""

# -- helpers ----------------------------------------------------------------------------------

section() { echo; echo "=== $1 === (t=$((SECONDS - STARTED))s, $(left)s left)"; }
wanted() { [[ "$SECTIONS" == *" $1 "* ]] || { echo "(not in SECTIONS:$SECTIONS)"; false; }; }
left() { echo $((BUDGET - (SECONDS - STARTED))); }
check() { # NAME PASS|FAIL DETAIL...
  local name=$1 verdict=$2
  shift 2
  echo "CHECK $verdict $name: $*" | tee -a "$OUT/summary.txt"
}
limit() { # the seconds a step may take: $1, or what the budget leaves (keeping $2 back)
  local want=$1 keep=${2:-0} have
  have=$(($(left) - keep))
  ((have < want)) && want=$have
  ((want < 1)) && want=1
  echo "$want"
}
run() { # FILE SECONDS COMMAND...: run it, its output to the log and to FILE
  local file=$1 seconds=$2 shown
  shift 2
  shown="$*"
  [[ -n "${PAT:-}" ]] && shown="${shown//$PAT/<pat>}"
  echo "\$ $shown" | tee -a "$file"
  timeout -k 5 "$(limit "$seconds")" "$@" 2>&1 | tee -a "$file"
  local code=${PIPESTATUS[0]}
  ((code == 0)) || echo "(exit code $code)" | tee -a "$file"
  return "$code"
}
orc() { # FILE SECONDS ARGS...: the orchard CLI
  local file=$1 seconds=$2
  shift 2
  run "$file" "$seconds" "$PY" -m orchard "$@"
}

start_server() { # HOME LOG: `orchard serve` on loopback; sets SERVER_PID and PORT
  local home=$1 log=$2 from
  from=$(($(cat "$log" 2>/dev/null | wc -l) + 1))
  local args=(--home "$home" --host 127.0.0.1 --port 0 --http-port -1 --hold-seconds 20)
  [[ -n "$FIND_LINKS" ]] && args+=(--find-links "$FIND_LINKS" --offline)
  # shellcheck disable=SC2206
  [[ -n "${SERVE_ARGS:-}" ]] && args+=($SERVE_ARGS)
  echo "\$ $PY -m orchard serve ${args[*]}"
  "$PY" -m orchard serve "${args[@]}" >>"$log" 2>&1 &
  SERVER_PID=$!
  PORT=""
  for _ in $(seq 600); do
    PORT=$(tail -n +"$from" "$log" | sed -n 's/.*Orchard listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' | head -1)
    [[ -n "$PORT" ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [[ -z "$PORT" ]]; then
    echo "orchard serve did not start:"
    cat "$log"
    return 1
  fi
  echo "orchard serve (pid $SERVER_PID) listens on 127.0.0.1:$PORT"
}

stop_server() { # SIGTERM (it drains and stops its replicas), SIGKILL after 45 s
  [[ -n "$SERVER_PID" ]] || return 0
  kill -TERM "$SERVER_PID" 2>/dev/null
  for _ in $(seq 450); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "orchard serve (pid $SERVER_PID) did not stop in 45 s; killing it"
    kill -KILL "$SERVER_PID" 2>/dev/null
  fi
  wait "$SERVER_PID" 2>/dev/null
  SERVER_PID=""
}

end_replicas() { # replicas of this script's servers (their package is under an h200-check folder)
  local proc pid
  for proc in /proc/[0-9]*; do
    pid=${proc#/proc/}
    ((pid == $$)) && continue
    if tr '\0' ' ' <"$proc/cmdline" 2>/dev/null |
      grep -q "orchard.runners.serve .*/h200-check\.[A-Za-z0-9]*/home/"; then
      echo "ending replica pid $pid, still running: $(tr '\0' ' ' <"$proc/cmdline" | cut -c1-200)"
      kill -KILL "$pid" 2>/dev/null
    fi
  done
}

cleanup() {
  stop_server
  end_replicas
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'echo "interrupted"; exit 130' INT TERM

pyyaml_edit() { # FILE PYTHON-EXPRESSION-ON-c: edit a YAML file in place
  "$PY" - "$1" "$2" <<'EOF'
import sys
import yaml

path, expression = sys.argv[1], sys.argv[2]
c = yaml.safe_load(open(path))
exec(expression)
open(path, "w").write(yaml.safe_dump(c, sort_keys=False))
EOF
}

# -- setup ------------------------------------------------------------------------------------

section "setup ($MODE)"
rm -f "$OUT/summary.txt"
end_replicas
echo "repo $REPO, python $PY, out $OUT, work $WORK"
uname -a
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=index,name,memory.total,memory.used,driver_version --format=csv
"$PY" -V
if [[ -n "$WHEELS" ]]; then
  rm -rf "$SITE"
  if timeout 120 bash benchmarks/gpu_wheels.sh --install "$WHEELS" "$SITE" "$PY"; then
    check wheels PASS "installed into $SITE"
  else
    check wheels FAIL "benchmarks/gpu_wheels.sh --install $WHEELS $SITE $PY failed"
  fi
  export PYTHONPATH="$REPO:$SITE${PYTHONPATH:+:$PYTHONPATH}"
  export PATH="$SITE/bin:$PATH"
else
  export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
fi
# The replica sandbox: bubblewrap, from Debian's package carried in DEBS (no package index
# there), unpacked beside the site rather than over the system.
DEBS="${DEBS-$REPO/.cache/h200-debs}"
if ! command -v bwrap >/dev/null && compgen -G "$DEBS/bubblewrap_*.deb" >/dev/null; then
  dpkg -x "$(compgen -G "$DEBS/bubblewrap_*.deb" | head -1)" /tmp/orchard-bwrap &&
    export PATH="/tmp/orchard-bwrap/usr/bin:$PATH"
fi
echo "bwrap: $(command -v bwrap || echo none), setpriv: $(command -v setpriv || echo none)"
# What model environments will be built with: the runner's pins (this server's versions), each
# of which FIND_LINKS must hold, offline.
"$PY" - "$FIND_LINKS" <<'EOF'
import re, sys
from pathlib import Path

import grpc

from orchard.services.builds import installed_interpreters, runner_pins

print("grpc from", grpc.__file__)
print("runner pins:", " ".join(runner_pins()))
print("interpreters:", installed_interpreters())
folder = Path(sys.argv[1]) if sys.argv[1] else None
if folder:
    names = [re.sub(r"[-_.]+", "_", w.name.split("-")[0]).lower() + "-" + w.name.split("-")[1]
             for w in folder.glob("*.whl")]
    missing = [p for p in runner_pins()
               if re.sub(r"[-_.]+", "_", p.split("==")[0]).lower() + "-" + p.split("==")[1]
               not in names]
    print("pins without a wheel in", folder, ":", missing or "none")
EOF

# -- inventory --------------------------------------------------------------------------------

section "inventory"
INV="$OUT/inventory.txt"
: >"$INV"
SERVER_UP=0
if ! wanted inventory; then
  :
elif start_server "$WORK/home" "$OUT/serve.log"; then
  SERVER_UP=1
  PAT=$(cat "$WORK/home/admin.pat")
  orc "$INV" 30 login "http://127.0.0.1:$PORT" --pat "$PAT"
  check sandbox INFO "$(grep -m1 -oE "replicas run sandboxed.*|REPLICAS RUN UNSANDBOXED[^:]*" "$OUT/serve.log")"
else
  check server FAIL "orchard serve did not start (serve.log)"
fi

echo "# the provider's own call: LocalProvider().instance_types('local') and host_inventory()" | tee -a "$INV"
"$PY" - <<'EOF' 2>&1 | tee -a "$INV"
from orchard.providers.inventory import host_inventory
from orchard.providers.local import LocalProvider

print(host_inventory())
for t in LocalProvider().instance_types("local"):
    print(t.id, t.shape)
EOF
GPU_TYPE=$("$PY" -c "
from orchard.providers.local import LocalProvider
print(next((t.id for t in LocalProvider().instance_types('local') if t.id.startswith('local-gpu-1x-')), ''))
" 2>/dev/null)
TWO_GPU_TYPE="${GPU_TYPE/local-gpu-1x-/local-gpu-2x-}"
echo "GPU instance type: ${GPU_TYPE:-none}" | tee -a "$INV"

if ((SERVER_UP)); then
  : >"$WORK/li.txt"
  orc "$WORK/li.txt" 30 list-instances
  cat "$WORK/li.txt" >>"$INV"
  echo "# the same through the API (ListInstanceTypes), each type's compute_info" | tee -a "$INV"
  "$PY" - <<'EOF' 2>&1 | tee -a "$WORK/api.txt" | tee -a "$INV"
from google.protobuf.json_format import MessageToDict

from orchard.client import User

with User(user_id="me") as user:  # the context `orchard login` wrote
    for item in user.list_instance_types("local", "local"):
        print(item.id, MessageToDict(item.compute_info))
EOF
  if [[ "$MODE" == gpu ]]; then
    ROW=$(grep -m1 -- " ${GPU_TYPE:-no-gpu-type} " "$WORK/li.txt" | tr -s ' ')
    if [[ -n "$GPU_TYPE" && "$ROW" == *H200* ]]; then
      check list-instances PASS "$ROW"
    else
      check list-instances FAIL "no local-gpu-1x-...h200 row in orchard list-instances"
    fi
    # The GPU's memory: in the API's compute_info, and in the CLI's row (as the API gives it)
    GPU_MEMORY=$(grep -m1 -- "^${GPU_TYPE:-no-gpu-type} " "$WORK/api.txt" |
      sed -n "s/.*'acceleratorMemory': '\([^']*\)'.*/\1/p")
    if [[ -z "$GPU_MEMORY" ]]; then
      check gpu-memory-listed FAIL "ListInstanceTypes gives no accelerator_memory for ${GPU_TYPE:-?}"
    elif [[ "$ROW" == *"$GPU_MEMORY"* ]]; then
      check gpu-memory-listed PASS "accelerator_memory $GPU_MEMORY in the API and in list-instances"
    else
      check gpu-memory-listed FAIL "the API says accelerator_memory $GPU_MEMORY, but orchard list-instances shows no GPU memory column"
    fi
  fi

  cat >"$WORK/cc.yaml" <<'EOF'
compute_cluster:
  description: "issue 17 checks"
  cloud_provider:
    id: "local"
  region: "local"
  managed_by: "user"
  cluster_type: "dedicated"
EOF
  orc "$INV" 30 computecluster create h200-cc --config "$WORK/cc.yaml"

  pool_yaml() { # ID INSTANCE-TYPE-BLOCK
    printf 'nodepool:\n  compute_cluster:\n    id: "h200-cc"\n  instance_types:\n%s\n  node_capacity_type:\n    capacity_types: [1]\n  min_instances: 0\n  max_instances: 1\n' "$2" >"$WORK/$1.yaml"
  }
  if [[ "$MODE" == gpu ]]; then
    POOL_TYPE="$GPU_TYPE"
  else
    POOL_TYPE=local-cpu-2 # the dry run: two one-CPU replicas fit, a third does not
  fi
  pool_yaml gpu-pool "    - id: \"${POOL_TYPE:-local-gpu-1x-nvidia-h200}\""
  if orc "$INV" 30 nodepool create h200-cc gpu-pool --config "$WORK/gpu-pool.yaml"; then
    check nodepool-one-gpu PASS "nodepool gpu-pool of ${POOL_TYPE:-?} created"
  else
    check nodepool-one-gpu FAIL "nodepool gpu-pool of ${POOL_TYPE:-?} refused (inventory.txt)"
  fi

  pool_yaml two-gpus '    - id: "two-gpus"
      compute_info:
        cpu_limit: "1"
        cpu_memory: 1Gi
        num_accelerators: 2
        accelerator_type: ["NVIDIA-*"]'
  : >"$WORK/refusal.txt"
  if orc "$WORK/refusal.txt" 30 nodepool create h200-cc two-gpus --config "$WORK/two-gpus.yaml"; then
    check nodepool-two-gpus FAIL "a nodepool asking for 2 GPUs was created"
  else
    check nodepool-two-gpus PASS "refused: $(grep -v '^\$' "$WORK/refusal.txt" | grep -v '^(exit' | tr '\n' ' ')"
  fi
  cat "$WORK/refusal.txt" >>"$INV"
  pool_yaml two-gpus-type "    - id: \"${TWO_GPU_TYPE:-local-gpu-2x-nvidia-h200}\""
  : >"$WORK/refusal.txt"
  if orc "$WORK/refusal.txt" 30 nodepool create h200-cc two-gpus-type --config "$WORK/two-gpus-type.yaml"; then
    check nodepool-two-gpu-type FAIL "a nodepool of ${TWO_GPU_TYPE:-?} was created"
  else
    check nodepool-two-gpu-type PASS "refused: $(grep -v '^\$' "$WORK/refusal.txt" | grep -v '^(exit' | tr '\n' ' ' | cut -c1-400)"
  fi
  cat "$WORK/refusal.txt" >>"$INV"
  orc "$INV" 30 nodepool list
fi

# -- sharing ----------------------------------------------------------------------------------

section "sharing"
SHARE="$OUT/sharing.txt"
: >"$SHARE"
SHARING_DEADLINE=$((SECONDS + $(limit 170 150)))
if ((SERVER_UP)) && wanted sharing; then
  MODEL="$WORK/gpu_probe"
  cp -r examples/models/gpu_probe "$MODEL"
  # Build with the server's own Python (the carried wheels are for it), whatever else is there.
  SERVER_PYTHON=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  pyyaml_edit "$MODEL/config.yaml" "c['build_info']['python_version'] = '$SERVER_PYTHON'"
  if [[ "$MODE" == cpu ]]; then # no GPU: the same model on a CPU nodepool
    pyyaml_edit "$MODEL/config.yaml" "
info = c['inference_compute_info']
for key in ('num_accelerators', 'accelerator_type', 'accelerator_memory'):
    info.pop(key, None)
info['cpu_limit'] = '1'  # two fill local-cpu-2: the third is refused for CPUs
info['cpu_memory'] = '512Mi'"
  fi
  echo "# the package as uploaded: config.yaml" | tee -a "$SHARE"
  tee -a "$SHARE" <"$MODEL/config.yaml"
  if orc "$SHARE" 120 model upload "$MODEL"; then
    check upload PASS "gpu_probe built offline (Python $SERVER_PYTHON, find-links ${FIND_LINKS:-none})"
  else
    check upload FAIL "gpu_probe did not build (sharing.txt has the build log)"
  fi
  cat >"$WORK/dep.yaml" <<'EOF'
deployment:
  description: "gpu_probe: three replicas of 60Gi on one H200; two fit"
  worker:
    model:
      id: "gpu_probe"
      app_id: "examples"
  scheduling_choice: 4
  nodepools:
    - id: "gpu-pool"
      compute_cluster:
        id: "h200-cc"
  autoscale_config:
    min_replicas: 3
    max_replicas: 3
    scale_down_delay_seconds: 300
    scale_to_zero_delay_seconds: 1800
EOF
  orc "$SHARE" 30 deployment create gpu-pool probe-dep --config "$WORK/dep.yaml"

  cat >"$WORK/probe.py" <<'EOF'
"""Two concurrent predictions at a time until two replicas answered; checks their reports."""

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from orchard.client.model import Model

base, user, deployment, mib, mode, out = sys.argv[1:]
model = Model(
    url=f"{user}/examples/models/gpu_probe",
    base_url=base,
    pat=os.environ["PROBE_PAT"],
    deployment_id=deployment,
    retry_timeout=60,
)
seen: dict[str, dict] = {}  # by replica
started = time.monotonic()
for _ in range(8):
    with ThreadPoolExecutor(2) as pool:
        calls = [
            pool.submit(model.predict, allocate_mib=int(mib), hold_seconds=3.0) for _ in range(2)
        ]
        for call in calls:
            try:
                report = json.loads(call.result())
            except Exception as exc:
                print(f"call failed: {type(exc).__name__}: {exc}")
                continue
            print(f"[{time.monotonic() - started:5.1f}s] {json.dumps(report, sort_keys=True)}")
            seen[report.get("replica") or report["load_id"]] = report
    if len(seen) >= 2:
        break
reports = list(seen.values())
with open(out, "w") as file:
    json.dump(reports, file, indent=2)
problems = [] if len(reports) >= 2 else [f"{len(reports)} replica(s) answered, not 2"]
for r in reports:
    who = f"replica {r.get('replica') or r['load_id']}"
    if mode != "gpu":
        if r.get("gpu") is not None or not str(r.get("error", "")).startswith("no GPU"):
            problems.append(f"{who} did not answer 'no GPU'")
    elif r.get("cuda_visible_devices") != "0":
        problems.append(f"{who} sees CUDA_VISIBLE_DEVICES={r.get('cuda_visible_devices')!r}")
    elif not r.get("gpu") or r.get("error"):
        problems.append(f"{who}: gpu {r.get('gpu')!r}, error {r.get('error')!r}")
    elif r.get("allocated_bytes") != int(mib) * 2**20:
        problems.append(f"{who} allocated {r.get('allocated_bytes')} bytes")
GIB = 2**30
summary = "; ".join(
    f"{r.get('replica') or r['load_id']}: CUDA_VISIBLE_DEVICES={r.get('cuda_visible_devices')!r} "
    f"gpu={r.get('gpu')!r} allocated={r.get('allocated_bytes', 0) / GIB:g} GiB, device "
    f"free {r.get('free_bytes', 0) / GIB:.1f} of {r.get('total_bytes', 0) / GIB:.1f} GiB"
    + (f", error={r['error']}" if r.get("error") else "")
    for r in reports
)
print(("PROBE OK: " if not problems else "PROBE FAILED: " + "; ".join(problems) + " | ") + summary)
sys.exit(1 if problems else 0)
EOF
  probe() { # SECONDS: the probe against the server on $PORT (ending 45 s before the deadline)
    local seconds=$(($1 < SHARING_DEADLINE - SECONDS - 45 ? $1 : SHARING_DEADLINE - SECONDS - 45))
    echo "# two concurrent predictions at a time until two replicas answered" | tee -a "$SHARE"
    PROBE_PAT="$PAT" run "$SHARE" "$seconds" "$PY" "$WORK/probe.py" \
      "http://127.0.0.1:$PORT" admin probe-dep "$PROBE_MIB" "$MODE" "$WORK/probe.json"
  }
  probe 60 # replicas answer in seconds; a minute leaves time to try without the sandbox
  PROBE_CODE=$?
  PROBE_LINE=$(grep -h '^PROBE ' "$SHARE" | tail -1)
  if grep -q "replicas run sandboxed (bwrap)" "$OUT/serve.log"; then
    if ((PROBE_CODE == 0)); then
      check sandboxed-gpu PASS "replicas in the bwrap sandbox answered"
    else
      WHY=$(timeout 20 "$PY" -m orchard deployment logs probe-dep --log-type events --no-follow \
        2>&1 | grep -A1 "exited with code" | tail -2 | tr '\n' ' ')
      check sandboxed-gpu FAIL "${PROBE_LINE:-the probe did not finish} (bwrap sandbox) ${WHY}"
      if [[ "$MODE" == gpu && "${SERVE_ARGS:-}" != *--sandbox* ]] &&
        ((SHARING_DEADLINE - SECONDS >= 75)); then
        echo "# again with orchard serve --sandbox none (same home)" | tee -a "$SHARE"
        stop_server
        SERVE_ARGS="${SERVE_ARGS:-} --sandbox none"
        if start_server "$WORK/home" "$OUT/serve.log"; then
          orc "$SHARE" 30 login "http://127.0.0.1:$PORT" --pat "$PAT"
          probe 120
          PROBE_CODE=$?
          PROBE_LINE="$(grep -h '^PROBE ' "$SHARE" | tail -1) (with --sandbox none)"
        fi
      fi
    fi
  fi
  if ((PROBE_CODE == 0)); then
    check replicas-share-gpu PASS "${PROBE_LINE#PROBE OK: }"
  else
    check replicas-share-gpu FAIL "${PROBE_LINE:-the probe did not finish (sharing.txt)}"
  fi
  if [[ "$MODE" == gpu ]] && command -v nvidia-smi >/dev/null; then
    echo "# nvidia-smi while both replicas hold their allocations" | tee -a "$SHARE"
    nvidia-smi --query-gpu=index,name,memory.used,memory.total --format=csv 2>&1 | tee -a "$SHARE"
    nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv 2>&1 | tee -a "$SHARE"
  fi

  echo "# waiting for placement's refusal of the third replica in the events" | tee -a "$SHARE"
  REFUSAL=""
  WAIT_UNTIL=$((SECONDS + 30))
  while ((SECONDS < WAIT_UNTIL && SECONDS < SHARING_DEADLINE - 20)); do
    timeout 20 "$PY" -m orchard deployment logs probe-dep --log-type events --no-follow \
      >"$WORK/events.txt" 2>&1
    # placement's refusal; one that names the GPU's free memory first
    REFUSAL=$(grep -m1 -E "(no nodepool of deployment|no room for a replica).*GPU 0 has" \
      "$WORK/events.txt" || grep -m1 -E "no nodepool of deployment|no room for a replica" \
      "$WORK/events.txt")
    [[ -n "$REFUSAL" && ("$MODE" == cpu || "$REFUSAL" == *"GPU 0 has"*) ]] && break
    sleep 2
  done
  orc "$SHARE" 20 deployment get probe-dep
  orc "$SHARE" 20 deployment logs probe-dep --log-type events --no-follow
  if [[ -z "$REFUSAL" ]]; then
    check third-replica-refused FAIL "no refusal in the deployment's events (sharing.txt)"
  elif [[ "$MODE" == gpu ]] && ! grep -qE "GPU 0 has [0-9.]+ [KMGT]i?B free" <<<"$REFUSAL"; then
    check third-replica-refused FAIL "refused without naming GPU 0's free memory: $REFUSAL"
  else
    check third-replica-refused PASS "$REFUSAL"
  fi
  echo "# the replicas' own output" | tee -a "$SHARE"
  timeout 20 "$PY" -m orchard deployment logs probe-dep --no-follow >"$OUT/replicas.log" 2>&1
  orc "$SHARE" 60 deployment delete probe-dep
fi
stop_server
end_replicas

# -- benchmark --------------------------------------------------------------------------------

section "benchmark"
bench() { # JSON-FILE SECONDS ARGS...
  local json=$1 seconds=$2
  shift 2
  echo "\$ $PY benchmarks/gpu_batching.py $*"
  # SIGINT first, so that the benchmark stops its server and replicas on the way out.
  timeout -s INT -k 30 "$(limit "$seconds")" "$PY" benchmarks/gpu_batching.py "$@" >"$json"
  local code=$?
  ((code == 0)) || echo "(exit code $code)"
  cat "$json"
  "$PY" - "$json" <<'EOF'
import json, sys

try:
    result = json.load(open(sys.argv[1]))
except (OSError, ValueError) as exc:
    print(f"BENCH FAILED: no JSON ({exc})")
    sys.exit(1)
m, r = result["median"], result["ratios"]
ok = r["orchard_batched_over_raw"] >= result["targets"]["orchard_batched_over_raw_min"]
ok = ok and result["failed_requests"] == 0
print(
    f"BENCH {'OK' if ok else 'FAILED'}: {result['name']} batch {result['settings']['batch_size']}"
    f" x{result['settings']['images_per_request']}/request: raw {m['raw_images_per_s']}/s, "
    f"batched {m['orchard_batched_images_per_s']}/s ({r['orchard_batched_over_raw']} of raw, "
    f"p50 {m['orchard_batched_p50_ms']} ms), unbatched {m['orchard_unbatched_images_per_s']}/s "
    f"({r['orchard_unbatched_over_raw']}), failed {result['failed_requests']}"
)
sys.exit(0 if ok else 1)
EOF
}
if ! wanted benchmark; then
  :
elif ! "$PY" -c "import torch" 2>/dev/null; then
  check benchmark FAIL "no torch in $PY"
elif [[ "$MODE" == gpu ]]; then
  # shellcheck disable=SC2086
  if bench "$OUT/gpu_batching-h200.json" 220 --device cuda $BENCH_ARGS | tee "$WORK/bench.txt"; then
    check benchmark PASS "$(grep '^BENCH' "$WORK/bench.txt" | tail -1)"
  else
    check benchmark FAIL "$(grep '^BENCH' "$WORK/bench.txt" | tail -1)"
  fi
  if (($(left) >= 100)); then # the same with an eighth of the calls, as the docstring suggests
    bench "$OUT/gpu_batching-h200-8per-request.json" 90 --device cuda --images-per-request 8 \
      --seconds 8 --warmup 2 --rounds 1 | tee "$WORK/bench8.txt"
    check benchmark-8-per-request INFO "$(grep '^BENCH' "$WORK/bench8.txt" | tail -1)"
  fi
else
  # shellcheck disable=SC2086
  if bench "$OUT/gpu_batching-cpu-dry.json" 120 --device cpu --seconds 3 --warmup 1 --rounds 1 \
    | tee "$WORK/bench.txt"; then
    check benchmark INFO "$(grep '^BENCH' "$WORK/bench.txt" | tail -1)"
  else
    check benchmark INFO "dry run: $(grep '^BENCH' "$WORK/bench.txt" | tail -1)"
  fi
fi

section "summary"
cat "$OUT/summary.txt"
echo "h200_check done in $((SECONDS - STARTED)) s; files in $OUT: $(cd "$OUT" && echo *)"
! grep -q "^CHECK FAIL" "$OUT/summary.txt"
