"""Every script in benchmarks/ runs, at a tiny size, so that one that breaks fails the suite.

Each script has an entry in ``SMOKES``: the smallest run that still goes through its code (a
few seconds, no Ray, nothing from the network). Scripts that need what this machine may not
have get the smallest honest check instead: ``--help`` and their imports (the Ray ones, which
need a Ray cluster in a network namespace or Ray Serve's own virtual environment), a syntax
check and the install half (``gpu_wheels.sh``, whose download half needs the package index),
and a CPU run where torch is importable (``gpu_batching.py``). A script added without an entry
fails ``test_every_benchmark_script_has_a_smoke_entry``.

Marked e2e: the runs start real servers and replicas. Each runs in a session of its own; one
that outlives its timeout is stopped with its whole process group (SIGTERM, so that a server
it started stops its replicas, then SIGKILL).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from clarifai_grpc.grpc.api import resources_pb2, service_pb2

from orchard.wire import callable_for

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
PYTHON = sys.executable
RAY_SERVE_PYTHON = REPO / ".cache" / "ray-serve-venv" / "bin" / "python"


def run(*args: str | Path, timeout: float = 120, stdin: str | None = None) -> str:
    """Run a command from the repository's root in a session of its own; its stdout. Fails
    with its output when it exits non-zero or outlives ``timeout``."""
    proc = subprocess.Popen(
        [str(a) for a in args],
        cwd=REPO,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        out, err = _stop_group(proc)
        pytest.fail(f"{args} ran past {timeout} s; its output:\n{out}\n{err}")
    assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{out}\n{err}"
    return out


def _stop_group(proc: subprocess.Popen[str]) -> tuple[str, str]:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        return proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.communicate()


Check = Callable[[Path], None]  # given a temporary folder of its own


def figures(script: str, *args: str, timeout: float = 120) -> Check:
    """Run the script with ``args``: it must print its figures as one JSON object."""

    def check(tmp_path: Path) -> None:
        result = json.loads(run(PYTHON, BENCHMARKS / script, *args, timeout=timeout))
        assert result["benchmark"] == Path(script).stem

    return check


def help_and_imports(script: str) -> Check:
    """``--help``: the script imports everything it uses and builds its arguments."""

    def check(tmp_path: Path) -> None:
        assert "usage:" in run(PYTHON, BENCHMARKS / script, "--help")

    return check


def bare_echo(tmp_path: Path) -> None:
    """Serves the V2 echo, plain and in slots, and stops when its standard input closes."""
    for extra in ([], ["--slots", "2", "--service-ms", "1"]):
        proc = subprocess.Popen(
            [PYTHON, BENCHMARKS / "bare_echo.py", *extra],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            assert proc.stdout is not None and proc.stdin is not None
            port = int(proc.stdout.readline().split()[1])
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                text = resources_pb2.Text(raw="ping")
                request = service_pb2.PostModelOutputsRequest(
                    inputs=[resources_pb2.Input(data=resources_pb2.Data(text=text))]
                )
                answer = callable_for(channel, "PostModelOutputs")(request, timeout=30)
            assert answer.outputs[0].data.text.raw == "ping"
            proc.stdin.close()
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                _stop_group(proc)
            if proc.stdout is not None:
                proc.stdout.close()


def common(tmp_path: Path) -> None:
    """A module the others import (and so run): importable on its own."""
    run(PYTHON, "-c", "import sys; sys.path.insert(0, 'benchmarks'); import common")


def gpu_batching(tmp_path: Path) -> None:
    """A CPU run at the smallest size where torch is importable; else --help and imports."""
    if importlib.util.find_spec("torch") is None:
        help_and_imports("gpu_batching.py")(tmp_path)
        return
    tiny = ["--device", "cpu", "--batch-size", "2", "--concurrency", "2", "--client-procs", "1"]
    sizes = ["--seconds", "1", "--warmup", "0.2", "--rounds", "1"]
    figures("gpu_batching.py", *tiny, *sizes, timeout=300)(tmp_path)


def gpu_wheels(tmp_path: Path) -> None:
    """Its syntax, its usage, and the install half: with no wheels to unpack it still checks
    that Orchard's server, runner and CLI import (the download half needs the index)."""
    script = BENCHMARKS / "gpu_wheels.sh"
    run("bash", "-n", script)
    usage = subprocess.run(["bash", script], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "usage:" in usage.stderr
    if importlib.util.find_spec("pip") is not None:
        return  # with pip, the install half would ask pip to install no wheels at all
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    wheels.mkdir()
    assert run("bash", script, "--install", wheels, site, PYTHON).startswith("uv ")


def h200_check(tmp_path: Path) -> None:
    """Its CPU dry run of the accelerator machine's checks (inventory and sharing: a real
    server, the probe model built offline, two sandboxed replicas answering "no GPU", the third
    refused by placement); the batching benchmark has gpu_batching.py's own entry."""
    out = tmp_path / "out"
    settings = [f"OUT={out}", "WHEELS=", "FIND_LINKS=", "SECTIONS=inventory sharing"]
    run("env", *settings, "bash", BENCHMARKS / "h200_check.sh", "--cpu", timeout=300)
    summary = (out / "summary.txt").read_text()
    assert "CHECK FAIL" not in summary and "CHECK PASS third-replica-refused" in summary


def ray_serve_child(tmp_path: Path) -> None:
    """It runs only under Ray Serve's environment (ray_serve.py builds it): there, --help; here,
    that it compiles."""
    child = BENCHMARKS / "ray_serve_child.py"
    if RAY_SERVE_PYTHON.exists():
        assert "usage:" in run(RAY_SERVE_PYTHON, child, "--help")
    else:
        run(PYTHON, "-m", "py_compile", child)


def dashboard_cost(tmp_path: Path) -> None:
    """One round of each condition with a page open in Debian's chromium; where chromium is
    not installed, --help and imports."""
    if not Path("/usr/bin/chromium").exists():
        help_and_imports("dashboard_cost.py")(tmp_path)
        return
    tiny = ["--rounds", "1", "--seconds", "0.5", "--calls", "20"]
    figures("dashboard_cost.py", *tiny, timeout=300)(tmp_path)


@dataclass(frozen=True)
class Smoke:
    check: Check
    marks: tuple[pytest.MarkDecorator, ...] = ()


SMOKES: dict[str, Smoke] = {
    "bare_echo.py": Smoke(bare_echo),
    "build.py": Smoke(figures("build.py", "--smoke")),
    "coldstart.py": Smoke(figures("coldstart.py", "--rounds", "1", "--no-ray")),
    "common.py": Smoke(common),
    "control_plane.py": Smoke(figures("control_plane.py", "--rounds", "2", "--stored", "12")),
    "dashboard_cost.py": Smoke(dashboard_cost),
    "dataplane.py": Smoke(
        figures("dataplane.py", "--no-ray", "--rounds", "1", "--seconds", "0.5", "--calls", "20")
    ),
    "fairness.py": Smoke(figures("fairness.py", "--smoke")),
    "gpu_batching.py": Smoke(gpu_batching),
    "gpu_wheels.sh": Smoke(gpu_wheels),
    "h200_check.sh": Smoke(h200_check),
    "http_api.py": Smoke(
        figures(
            "http_api.py",
            *("--rounds", "1", "--seconds", "0.5", "--calls", "20"),
            *("--openai-tokens", "8", "--openai-calls", "1"),
        )
    ),
    "openai_stream.py": Smoke(
        figures("openai_stream.py", "--tokens", "8", "--calls", "1", "--rounds", "1")
    ),
    "ray_provider.py": Smoke(help_and_imports("ray_provider.py")),
    "ray_serve.py": Smoke(help_and_imports("ray_serve.py")),
    "ray_serve_child.py": Smoke(ray_serve_child),
    "relay_floor.py": Smoke(figures("relay_floor.py", "--calls", "20")),
}


def test_every_benchmark_script_has_a_smoke_entry():
    scripts = sorted(p.name for p in BENCHMARKS.iterdir() if p.suffix in (".py", ".sh"))
    assert scripts == sorted(SMOKES), "give each script in benchmarks/ an entry in SMOKES"


@pytest.mark.parametrize(
    "script", [pytest.param(name, marks=smoke.marks) for name, smoke in SMOKES.items()]
)
def test_the_benchmark_runs(script: str, tmp_path: Path) -> None:
    SMOKES[script].check(tmp_path)
