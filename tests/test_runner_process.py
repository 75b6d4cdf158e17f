"""``python -m orchard.runners.serve`` as a real process against the fake server.

Marked e2e: signals (SIGTERM drains), exit codes and the health probes over HTTP exist only in
a real process. The process runs with the server side's dependencies and modules made
unimportable, as in a model's environment; a model built on the official SDK is served in the
official SDK's own environment (when tests/test_official_sdk.py has built it).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from orchard import work_protocol
from orchard.packaging.inspect import load_model_class
from orchard.runners.health import LIVENESS, READINESS, STARTUP
from tests.fake_orchard import (
    EXAMPLES,
    PAT,
    SC,
    FakeOrchard,
    FakeStream,
    eventually,
    request,
    stream_item,
    text_of,
)
from tests.runner_models import BROKEN_SOURCE, SLOW_LOAD_SOURCE, write_package
from tests.runner_process import banned_imports_command

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
WAIT = 60.0


class RunnerProcess:
    """One runner process; its stderr is collected line by line."""

    def __init__(self, command: list[str], env: dict[str, str] | None = None) -> None:
        self.command, self.env = command, env
        self.lines: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None

    async def start(self) -> RunnerProcess:
        self.proc = await asyncio.create_subprocess_exec(
            *self.command,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env=self.env,
        )
        self._pump = asyncio.ensure_future(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.lines.append(line.decode(errors="replace"))

    async def line(self, pattern: str) -> re.Match[str]:
        def found() -> re.Match[str] | None:
            return next((m for line in self.lines if (m := re.search(pattern, line))), None)

        return await eventually(found, f"{pattern!r} in {self.lines}", WAIT)

    async def exit_code(self) -> int:
        assert self.proc is not None and self._pump is not None
        code = await asyncio.wait_for(self.proc.wait(), WAIT)
        await asyncio.wait_for(self._pump, WAIT)
        return code

    @property
    def output(self) -> str:
        return "".join(self.lines)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._pump is not None:
            await asyncio.gather(self._pump, return_exceptions=True)


@pytest.fixture
async def fake() -> AsyncIterator[FakeOrchard]:
    server = await FakeOrchard().start()
    yield server
    await server.stop()


@pytest.fixture
async def processes() -> AsyncIterator[list[RunnerProcess]]:
    """Every runner process a test starts is killed at its end, if still running."""
    started: list[RunnerProcess] = []
    yield started
    for process in started:
        await process.kill()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve_args(package: Path, server: str, *extra: str) -> list[str]:
    # DEBUG: the per-item lines the tests wait on
    return [
        "--package",
        str(package),
        "--server",
        server,
        "--runner-id",
        "r1",
        "--log-level",
        "DEBUG",
        *extra,
    ]


async def _start(processes: list[RunnerProcess], *args: str, pat: str = PAT) -> RunnerProcess:
    env = {**os.environ, "ORCHARD_PAT": pat}
    process = RunnerProcess(banned_imports_command("orchard.runners.serve", *args), env)
    processes.append(process)
    return await process.start()


async def _get(port: int, path: str) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: runner\r\n\r\n".encode())
        await writer.drain()
        return int((await asyncio.wait_for(reader.readline(), WAIT)).split()[1])
    finally:
        writer.close()
        await writer.wait_closed()


async def _until_status(port: int, path: str, status: int) -> None:
    async def probe() -> bool:
        try:
            return await _get(port, path) == status
        except OSError:  # not listening yet
            return False

    deadline = asyncio.get_running_loop().time() + WAIT
    while not await probe():
        assert asyncio.get_running_loop().time() < deadline, f"{path} never answered {status}"
        await asyncio.sleep(0.02)


async def test_serves_with_health_probes_and_sigterm_drains_then_exits_0(fake, processes):
    echo = load_model_class(EXAMPLES / "echo", stub_missing=False)
    health = _free_port()
    args = _serve_args(EXAMPLES / "echo", fake.target, "--health-port", str(health))
    runner = await _start(processes, *args)
    stream = await fake.next_stream(WAIT)
    hello = work_protocol.read_hello(await stream.next(WAIT))
    assert (hello.runner_id, hello.capacity) == ("r1", 4)  # num_threads of echo's config.yaml
    await _until_status(health, READINESS, 200)
    assert await _get(health, LIVENESS) == 200 and await _get(health, STARTUP) == 200
    assert await _get(health, "/metrics") == 404

    await stream.send(
        work_protocol.start("p1", work_protocol.UNARY, request(echo, "predict", text="hi"))
    )
    assert [text_of(r) for r in await stream.until_end_of("p1", WAIT)] == ["hi"]
    await runner.line(r"predict predict ok [\d.]+ms item=p1")
    assert "serving Echo (Orchard ModelClass) as runner r1" in runner.output

    # a stream item stays open until its input ends: SIGTERM must wait for it
    first = request(echo, "stream", input_iterator="a")
    await stream.send(work_protocol.start("s1", work_protocol.BIDI, first))
    assert text_of((await stream.next(WAIT)).runner_item_outputs[0].multi_output_response) == "a"
    assert runner.proc is not None
    runner.proc.send_signal(signal.SIGTERM)
    assert await stream.next(WAIT) == work_protocol.draining()
    await _until_status(health, READINESS, 503)
    await stream.send(
        work_protocol.next_request("s1", stream_item(echo, "stream", input_iterator="b"))
    )
    await stream.send(work_protocol.control("s1", SC.RUNNER_STREAM_END))
    assert [text_of(r) for r in await stream.until_end_of("s1", WAIT)] == ["b"]
    await stream.wait_closed(WAIT)
    assert await runner.exit_code() == 0, runner.output


async def test_a_model_whose_load_model_raises_exits_non_zero_with_the_message(tmp_path, processes):
    broken = write_package(tmp_path, "broken", BROKEN_SOURCE)
    runner = await _start(processes, *_serve_args(broken, f"127.0.0.1:{_free_port()}"))
    assert await runner.exit_code() == 1
    assert "the weights are missing, on purpose" in runner.output
    assert "Broken.load_model() raised RuntimeError" in runner.output


async def test_probes_while_loading_and_sigterm_then_exits_0_at_once(tmp_path, processes):
    slow = write_package(tmp_path, "slow", SLOW_LOAD_SOURCE)
    health = _free_port()
    args = _serve_args(slow, f"127.0.0.1:{_free_port()}", "--health-port", str(health))
    runner = await _start(processes, *args)
    await runner.line("loading the model in")
    await _until_status(health, LIVENESS, 200)
    assert await _get(health, STARTUP) == 503 and await _get(health, READINESS) == 503
    assert runner.proc is not None
    runner.proc.send_signal(signal.SIGTERM)
    assert await runner.exit_code() == 0, runner.output
    assert "stopped while loading the model" in runner.output


async def test_exits_3_when_the_server_stays_unreachable(processes):
    args = _serve_args(EXAMPLES / "echo", f"127.0.0.1:{_free_port()}", "--server-gone-grace", "0.5")
    runner = await _start(processes, *args)
    assert await runner.exit_code() == 3
    assert "unreachable for more than" in runner.output


async def test_exits_1_when_the_server_refuses_the_pat(fake, processes):
    runner = await _start(processes, *_serve_args(EXAMPLES / "echo", fake.target), pat="wrong")
    assert await runner.exit_code() == 1
    assert "refused this runner: UNAUTHENTICATED" in runner.output


async def test_a_model_on_the_official_sdk_is_served_through_its_wrappers(
    fake, processes, official_python
):
    """The echo example imports the official ModelClass where ``clarifai`` is installed."""
    echo = load_model_class(EXAMPLES / "echo", stub_missing=False)  # Orchard's, for encoding
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT)}
    env["ORCHARD_PAT"] = PAT
    command = [str(official_python), "-m", "orchard.runners.serve"]
    runner = RunnerProcess([*command, *_serve_args(EXAMPLES / "echo", fake.target)], env)
    processes.append(await runner.start())
    stream = await fake.next_stream(WAIT)
    await stream.next(WAIT)
    await runner.line(r"serving Echo \(official clarifai ModelClass\)")
    await _official_calls(stream, echo)
    await runner.line(r"generate generate ok [\d.]+ms item=g1")
    assert runner.proc is not None
    runner.proc.send_signal(signal.SIGTERM)
    assert await runner.exit_code() == 0, runner.output


async def _official_calls(stream: FakeStream, echo: type) -> None:
    await stream.send(
        work_protocol.start("p1", work_protocol.UNARY, request(echo, "predict", text="hi"))
    )
    assert [text_of(r) for r in await stream.until_end_of("p1", WAIT)] == ["hi"]
    generate = request(echo, "generate", text="x y")
    await stream.send(work_protocol.start("g1", work_protocol.SERVER_STREAM, generate))
    assert [text_of(r) for r in await stream.until_end_of("g1", WAIT)] == ["x ", "y"]
    await stream.send(
        work_protocol.start("s1", work_protocol.BIDI, request(echo, "stream", input_iterator="a"))
    )
    await stream.send(
        work_protocol.next_request("s1", stream_item(echo, "stream", input_iterator="b"))
    )
    await stream.send(work_protocol.control("s1", SC.RUNNER_STREAM_END))
    assert [text_of(r) for r in await stream.until_end_of("s1", WAIT)] == ["a", "b"]
