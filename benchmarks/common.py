"""What the benchmarks share: a real `orchard serve` process on loopback, and medians."""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

LISTENING = re.compile(r"Orchard listening on 127\.0\.0\.1:(\d+)")
HTTP_LISTENING = re.compile(r"HTTP \(.*\) at http://127\.0\.0\.1:(\d+)/")


def start_server(
    home: Path, pat: str, *extra: str, timeout: float = 120.0
) -> tuple[subprocess.Popen[bytes], int]:
    """`orchard serve` in its own process with a fixed bootstrap user ``bench``. What it prints
    goes to HOME/serve.log, never to a pipe: a pipe nobody reads fills up, and the server then
    blocks on its next log line."""
    env = {**os.environ, "ORCHARD_BOOTSTRAP_USER": "bench", "ORCHARD_BOOTSTRAP_PAT": pat}
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    log = home / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "orchard",
                "serve",
                "--home",
                str(home),
                "--port",
                "0",
                "--log-level",
                "WARNING",
                *extra,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    return proc, _listening_port(proc, log, timeout)


def _listening_port(proc: subprocess.Popen[bytes], log: Path, timeout: float) -> int:
    """The port the server says it listens on, once it says so in ``log``."""
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text(errors="replace")
        if match := LISTENING.search(text):
            return int(match.group(1))
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_server(proc)
            tail = "\n".join(text.splitlines()[-20:])
            raise RuntimeError(f"orchard serve did not start listening (see {log}):\n{tail}")
        time.sleep(0.05)


def http_port(home: Path) -> int:
    """The HTTP port the server under ``home`` printed in its log (``--http-port 0``)."""
    match = HTTP_LISTENING.search((home / "serve.log").read_text(errors="replace"))
    if match is None:
        raise RuntimeError(f"orchard serve did not print its HTTP port (see {home / 'serve.log'})")
    return int(match.group(1))


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_ms(fn: Callable[[], object], rounds: int) -> float:
    return round(statistics.median(seconds(fn) for _ in range(rounds)) * 1000, 3)
