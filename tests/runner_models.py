"""Model packages written into a test's tmp_path for the runner tests, and the hooks through
which a test watches and holds their calls (sync methods run in worker threads)."""

from __future__ import annotations

import threading
from pathlib import Path

PROBE_SOURCE = '''
import asyncio
from collections.abc import AsyncIterator, Iterator

from orchard.authoring import ModelClass


class Probe(ModelClass):
    """A model whose calls a test can hold and watch through ``self.hooks``."""

    hooks = None  # set by the test: tests.runner_models.Hooks

    @ModelClass.method
    def echo(self, text: str) -> str:
        return text

    @ModelClass.method
    def slow(self, key: str) -> str:
        self.hooks.started(key)
        self.hooks.release.wait(60)
        return key

    @ModelClass.method
    def fail(self, text: str) -> str:
        raise ValueError(f"failed on purpose: {text}")

    @ModelClass.method
    def big(self, size: int) -> bytes:
        return b"x" * size

    @ModelClass.method
    def ticks(self, text: str) -> Iterator[str]:
        try:
            yield text
            self.hooks.release.wait(60)
            yield text
        finally:
            self.hooks.closed.set()

    @ModelClass.method
    async def aticks(self, text: str) -> AsyncIterator[str]:
        try:
            yield text
            await asyncio.Event().wait()
        finally:
            self.hooks.closed.set()

    @ModelClass.method
    def upper(self, chunks: Iterator[str]) -> Iterator[str]:
        try:
            for chunk in chunks:
                yield chunk.upper()
        finally:
            self.hooks.closed.set()
'''

BROKEN_SOURCE = """
from orchard.authoring import ModelClass


class Broken(ModelClass):
    def load_model(self) -> None:
        raise RuntimeError("the weights are missing, on purpose")

    @ModelClass.method
    def predict(self, text: str) -> str:
        return text
"""

SLOW_LOAD_SOURCE = """
import threading

from orchard.authoring import ModelClass


class SlowLoad(ModelClass):
    def load_model(self) -> None:
        threading.Event().wait(120)  # still loading when the test stops it

    @ModelClass.method
    def predict(self, text: str) -> str:
        return text
"""

CONFIG = """model:
  id: {name}
  app_id: tests
  model_type_id: text-to-text
build_info:
  python_version: "3.11"
inference_compute_info:
  cpu_limit: "1"
  cpu_memory: 256Mi
num_threads: {threads}
"""


def write_package(root: Path, name: str, source: str, threads: int = 2) -> Path:
    package = root / name
    (package / "1").mkdir(parents=True)
    (package / "1" / "model.py").write_text(source)
    (package / "config.yaml").write_text(CONFIG.format(name=name, threads=threads))
    (package / "requirements.txt").write_text("")
    return package


class Hooks:
    """Thread-safe: what the probe model's calls did, and the event that holds them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.keys: list[str] = []
        self.release = threading.Event()
        self.closed = threading.Event()

    def started(self, key: str) -> None:
        with self._lock:
            self.keys.append(key)

    def count(self) -> int:
        with self._lock:
            return len(self.keys)
