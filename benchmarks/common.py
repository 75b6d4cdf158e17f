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


def start_server(home: Path, pat: str, *extra: str) -> tuple[subprocess.Popen[str], int]:
    """`orchard serve` in its own process with a fixed bootstrap user ``bench``."""
    env = {**os.environ, "ORCHARD_BOOTSTRAP_USER": "bench", "ORCHARD_BOOTSTRAP_PAT": pat}
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
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if match := LISTENING.search(line):
            return proc, int(match.group(1))
    raise RuntimeError("orchard serve exited before listening")


def stop_server(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(timeout=30)
    if proc.stdout is not None:
        proc.stdout.close()


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_ms(fn: Callable[[], object], rounds: int) -> float:
    return round(statistics.median(seconds(fn) for _ in range(rounds)) * 1000, 3)
