#!/usr/bin/env bash
# The main job, end to end on the embedded default (this host, SQLite), from a fresh clone:
# start `orchard serve`, log in, create a compute cluster and a nodepool from the example
# YAML, upload the echo model (its environment built with uv), deploy it (the server starts
# its replica when the first request arrives), predict in all three shapes (and once over REST/JSON), show everything,
# then delete it all and stop.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

work=$(mktemp -d /tmp/orchard-demo.XXXXXX)
export ORCHARD_CONFIG="$work/config"
orchard=.venv/bin/orchard
examples=examples/quickstart

touch "$work/serve.log"
.venv/bin/orchard serve --home "$work/home" --port 0 >"$work/serve.log" 2>&1 &
server=$!
cleanup() {
  kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

for _ in $(seq 300); do  # up to 30 s for the server to say where it listens
  port=$(sed -n 's/.*Orchard listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/serve.log")
  [ -n "$port" ] && break
  kill -0 "$server" 2>/dev/null || { cat "$work/serve.log"; exit 1; }
  sleep 0.1
done
[ -n "$port" ] || { echo "orchard serve did not start:"; cat "$work/serve.log"; exit 1; }

run() { echo; echo "\$ orchard $*"; "$orchard" "$@"; }
run login "http://127.0.0.1:$port" --pat "$(cat "$work/home/admin.pat")"
run list-instances
run computecluster create local-cc --config "$examples/compute_cluster.yaml"
run nodepool create local-cc cpu-pool --config "$examples/nodepool.yaml"

run model signatures examples/models/echo
run model upload examples/models/echo

run deployment create cpu-pool echo-dep --config "$examples/deployment.yaml"

model_url="http://127.0.0.1:$port/admin/examples/models/echo"
# The deployment has min_replicas 0: the first call is held while the server starts a replica
# in the model's built environment, then served.
run model predict --model_url "$model_url" --deployment_id echo-dep --bytes "hello orchard" --input_type text
run model predict --model_url "$model_url" --deployment_id echo-dep --bytes "one token at a time" --input_type text --method generate
run model predict --model_url "$model_url" --deployment_id echo-dep --bytes "streamed both ways" --input_type text --method stream

# The same deployment over REST/JSON on the HTTP port (curl -H "Authorization: Key $PAT" ...).
http=$(sed -n 's|.*HTTP (.*) at http://127\.0\.0\.1:\([0-9]*\)/.*|\1|p' "$work/serve.log")
rest="http://127.0.0.1:$http/v2/users/me/deployments/echo-dep/outputs"
echo; echo "\$ POST $rest  (REST/JSON)"
.venv/bin/python - "$rest" "$work/home/admin.pat" <<'PY'
import json, pathlib, sys, urllib.request
body = json.dumps({"inputs": [{"data": {"text": {"raw": "hello over HTTP"}}}]}).encode()
pat = pathlib.Path(sys.argv[2]).read_text().strip()
request = urllib.request.Request(sys.argv[1], body, {"Authorization": f"Key {pat}"})
answer = json.load(urllib.request.urlopen(request, timeout=60))
print(answer["status"]["description"], "->", answer["outputs"][0]["data"]["text"]["raw"])
PY
echo "(the dashboard is at http://127.0.0.1:$http/ while the server runs)"
run computecluster list
run nodepool list
run deployment list
run deployment get echo-dep
run deployment logs echo-dep --log-type events --no-follow
run deployment delete echo-dep
run nodepool delete local-cc cpu-pool
run computecluster delete local-cc
echo; echo "Done: cluster, nodepool, upload, deployment and predictions in all three shapes (gRPC) and over REST ran on this host."
