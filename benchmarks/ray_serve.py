"""Ray Serve, the peer the design compares against, measured on this machine.

Ray is not a dependency of Orchard: it is installed into its own virtual environment,
``.cache/ray-serve-venv`` in the repository (made with uv, reused while its pins match), and
driven by ``ray_serve_child.py`` under that environment's Python. The child starts a local Ray
cluster (no dashboard, usage stats off, a 200 MB object store) and Ray Serve's HTTP proxy on
127.0.0.1. Ray binds some listeners to every interface whatever it is told, so the child runs
in a private network namespace whose only interface is loopback (``unshare -n``): no Ray port
is reachable from outside, and nothing Ray does leaves the machine. Afterwards every process
of that namespace is stopped by process id, and the run fails if any survives.

The deployment is the no-op Orchard's data-plane benchmark serves (takes a 300-byte text,
returns it), tuned as a fair user would: one replica, ``max_ongoing_requests=100``,
``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``. Clients call it through the HTTP proxy with aiohttp (the
path a client outside Ray takes), and for reference on the replica's own direct-ingress port
and in-process through a DeploymentHandle. ``--haproxy`` measures everything once more with
Serve's HAProxy ingress (``RAY_SERVE_ENABLE_HA_PROXY=1``, the bundled binary) on the proxy's
port instead of the Python proxy.

    .venv/bin/python benchmarks/ray_serve.py [--seconds 5] [--calls 400] [--rounds 3]
        [--cold-rounds 5] [--haproxy]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENV = REPO / ".cache" / "ray-serve-venv"
CHILD = HERE / "ray_serve_child.py"
# The pins the Ray environment is built from; the marker file in the venv holds them, and a
# venv whose marker differs is rebuilt.
REQUIREMENTS = ("ray[serve]==2.60.0", "aiohttp==3.14.5", "psutil==7.2.2")
MARKER = VENV / "orchard-requirements.txt"


def ray_python() -> Path:
    """The Python of the Ray Serve environment, created (or rebuilt) when its pins differ."""
    python = VENV / "bin" / "python"
    pins = "\n".join(REQUIREMENTS) + "\n"
    if python.exists() and MARKER.exists() and MARKER.read_text() == pins:
        return python
    uv = Path(sys.executable).with_name("uv")
    if not uv.exists():
        found = shutil.which("uv")
        if found is None:
            raise RuntimeError("uv is needed to build the Ray Serve environment")
        uv = Path(found)
    if VENV.exists():
        shutil.rmtree(VENV)
    VENV.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    subprocess.run([str(uv), "venv", "--quiet", "--python", "3.11", str(VENV)], check=True)
    subprocess.run(
        [str(uv), "pip", "install", "--quiet", "--python", str(python), *REQUIREMENTS],
        check=True,
    )
    MARKER.write_text(pins)
    print(
        f"built {VENV} in {time.perf_counter() - start:.1f} s ({', '.join(REQUIREMENTS)})",
        file=sys.stderr,
    )
    return python


def child_env(temp_dir: str, haproxy: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(
        {
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
            # A stopping ingress replica otherwise stays up 30 s for external load balancers
            # to drain it; nothing here balances onto it, and no timed figure includes a stop.
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "0",
            "TMPDIR": temp_dir,
        }
    )
    if haproxy:
        # Serve's HAProxy ingress (the bundled binary) in place of its Python proxy; its files
        # default to /tmp/haproxy-serve, so they are kept in the run's temporary directory.
        files = Path(temp_dir) / "h"
        env.update(
            {
                "RAY_SERVE_ENABLE_HA_PROXY": "1",
                "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(files / "haproxy.cfg"),
                "RAY_SERVE_HAPROXY_SOCKET_PATH": str(files / "admin.sock"),
                "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(files),
                "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(files / "server-state"),
                "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(files / "metrics.sock"),
            }
        )
    return env


def netns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def namespace_processes(namespace: str) -> list[psutil.Process]:
    """Every living process whose network namespace is ``namespace``."""
    found = []
    for proc in psutil.process_iter():
        if netns(proc.pid) == namespace:
            found.append(proc)
    return found


def stop_all(processes: list[psutil.Process]) -> None:
    for proc in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(processes, timeout=30)


def run_child(command: str, *args: str, timeout: float, haproxy: bool) -> dict[str, float]:
    """Run one child sub-command in a loopback-only network namespace; its last stdout line
    is the JSON answer. Every process of that namespace is stopped before this returns."""
    python = ray_python()
    own = netns(os.getpid())
    temp_dir = tempfile.mkdtemp(prefix="orchard-ray-")
    # ``$0 "$@"`` hands the arguments through sh without re-quoting them.
    argv = [
        "unshare",
        "-n",
        "sh",
        "-c",
        'ip link set lo up && exec "$0" "$@"',
        str(python),
        str(CHILD),
        command,
        "--temp-dir",
        temp_dir,
        *args,
    ]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        # Files, not pipes: a Ray process that outlived the child could hold a pipe open.
        child = subprocess.Popen(argv, stdout=out, stderr=err, env=child_env(temp_dir, haproxy))
        namespace = None
        code: int | None = None
        try:
            # ``unshare`` enters the new namespace and then execs, keeping its process id.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and child.poll() is None:
                current = netns(child.pid)
                if current is not None and current != own:
                    namespace = current
                    break
                time.sleep(0.001)
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = child.wait(timeout=timeout)
        finally:
            survivors = stop_ray(child, namespace)
            shutil.rmtree(temp_dir, ignore_errors=True)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    if survivors:
        raise RuntimeError(f"Ray processes survived being killed: {survivors}")
    if code != 0:
        reason = "timed out" if code is None else f"exited with {code}"
        raise RuntimeError(f"the Ray Serve child {reason}:\n{stderr[-4000:]}")
    lines = stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"the Ray Serve child printed nothing:\n{stderr[-4000:]}")
    result: dict[str, float] = json.loads(lines[-1])
    return result


def stop_ray(child: subprocess.Popen[bytes], namespace: str | None) -> list[int]:
    """Kill the child's process tree and every process left in its namespace, by process id;
    the ids of any that still live afterwards."""
    if child.poll() is None:  # not reaped yet, so its id is still the child's
        with contextlib.suppress(psutil.NoSuchProcess):
            tree = psutil.Process(child.pid)
            stop_all([*tree.children(recursive=True), tree])
        child.wait(timeout=30)
    if namespace is None:  # the child never left our namespace: its tree was all it had
        return []
    # Orphans of the child were reparented away from its tree; the namespace still names them.
    deadline = time.monotonic() + 30
    while left := namespace_processes(namespace):
        if time.monotonic() > deadline:
            return [proc.pid for proc in left]
        stop_all(left)
    return []


def measure_dataplane(
    seconds: float, calls: int, rounds: int = 1, haproxy: bool = False
) -> dict[str, float]:
    """Ray Serve's no-op, one replica, max_ongoing_requests=100, medians over ``rounds``
    (one cluster, one replica, warmed up first; starting them is not timed):

    - ``proxy_unary_c1_p50_ms``: p50 of ``calls`` HTTP POSTs (300-byte text) one at a time
      through Serve's HTTP proxy, the path a client outside Ray takes;
    - ``proxy_unary_c64_per_s``: HTTP requests/s through the proxy, 64 in flight, over
      ``seconds``;
    - ``direct_ingress_unary_c1_p50_ms`` / ``direct_ingress_unary_c64_per_s``: the same
      against the replica's own HTTP port, which throughput-optimized Serve opens for an
      external load balancer to use instead of the proxy (no Serve routing, no hop);
    - ``handle_unary_c1_p50_ms`` / ``handle_unary_c64_per_s``: the same through a
      DeploymentHandle in the driver process (Python calls through Serve's router, no HTTP).

    With ``haproxy``, Serve's HAProxy ingress (``RAY_SERVE_ENABLE_HA_PROXY=1``, which Ray's
    high-throughput guide sets together with ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``) listens on
    the proxy's port instead of the Python proxy, and the ``proxy_*`` figures are HAProxy's.

    The aiohttp client runs in the driver process, inside the namespace. The answer also
    holds ``processes_killed_after_shutdown``: how many of Ray's processes outlived
    ``ray.shutdown()`` and had to be killed.
    """
    return run_child(
        "dataplane",
        "--seconds",
        str(seconds),
        "--calls",
        str(calls),
        "--rounds",
        str(rounds),
        timeout=300 + rounds * (6 * seconds + 60),
        haproxy=haproxy,
    )


def measure_coldstart(rounds: int, haproxy: bool = False) -> dict[str, float]:
    """Medians over ``rounds`` of two cold starts, with the Ray cluster and Serve's HTTP
    proxy already running and one application deployed and deleted first (so the controller,
    the proxy and Ray's worker pool are warm):

    - ``deploy_to_first_response_s``: from calling ``serve.run(app)`` for a new no-op
      application to its first successful HTTP response through the proxy. Included: the
      controller's deployment, the replica's actor and process start (or a pooled worker's
      reuse), importing and constructing the deployment, its health check, route propagation
      to the proxy, and the request itself. Not included: starting Ray or the proxy, importing
      Ray in the driver, building the environment.
    - ``scale_from_zero_s``: a deployment with autoscaling ``min_replicas=0`` that Serve's
      status shows at zero replicas: from sending one HTTP request to its response, which
      covers the proxy holding the request, the controller scaling to one replica, the
      replica's start and the call.

    ``*_failed_requests`` count every non-200 answer or connection error over all rounds
    (requests are retried until the first success, so a failure costs time as well), and
    ``processes_killed_after_shutdown`` is as in ``measure_dataplane``. ``haproxy`` is as in
    ``measure_dataplane`` too.
    """
    return run_child(
        "coldstart", "--rounds", str(rounds), timeout=300 + 120 * rounds, haproxy=haproxy
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3, help="data-plane rounds")
    parser.add_argument("--cold-rounds", type=int, default=5, help="cold-start rounds")
    parser.add_argument(
        "--haproxy", action="store_true", help="also measure with Serve's HAProxy ingress"
    )
    args = parser.parse_args()
    result: dict[str, object] = {
        "benchmark": "ray_serve",
        "ray": REQUIREMENTS[0],
        "dataplane": measure_dataplane(args.seconds, args.calls, args.rounds),
        "coldstart": measure_coldstart(args.cold_rounds),
    }
    if args.haproxy:
        result["dataplane_haproxy"] = measure_dataplane(
            args.seconds, args.calls, args.rounds, haproxy=True
        )
        result["coldstart_haproxy"] = measure_coldstart(args.cold_rounds, haproxy=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
