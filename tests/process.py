"""Run ``orchard serve`` as a real process for tests, and always stop it."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

LISTENING = re.compile(r"Orchard listening on 127\.0\.0\.1:(\d+)")


class ServeProcess:
    def __init__(self, home: Path, *, env: dict[str, str] | None = None) -> None:
        self.home = home
        self.env = {**os.environ, **(env or {})}
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    def start(self, timeout: float = 60) -> ServeProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "orchard", "serve", "--home", str(self.home), "--port", "0"],
            stderr=subprocess.STDOUT,
            stdout=subprocess.PIPE,
            text=True,
            env=self.env,
        )
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()
        try:
            self.port = int(self.wait_for(LISTENING, timeout).group(1))
        except BaseException:
            self.stop(signal.SIGKILL)
            raise
        return self

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        """The first output line matching ``pattern``; fails at the deadline or process exit."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no line matching {pattern.pattern!r} in: {self.output}")
            try:
                line = self.lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                if self.proc is not None and self.proc.poll() is not None and self.lines.empty():
                    raise RuntimeError(f"orchard serve exited: {self.output}") from None
                continue
            self.output.append(line)
            if match := pattern.search(line):
                return match

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Signal the server and wait for it to exit; returns its exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._pump_thread.join(timeout=timeout)  # ends at EOF, once the process is gone
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode
