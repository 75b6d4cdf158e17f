"""The CLI's half of ``orchard model local-test``: the package's environment, built as the server
builds it, and :mod:`orchard.packaging.localtest` run inside it (the other half)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from orchard import errors
from orchard.packaging import REQUIREMENTS
from orchard.packaging.package import Package
from orchard.services.builds import (
    BuildError,
    BuildLog,
    BuildSettings,
    EnvBuilder,
    Interpreter,
    choose_interpreter,
)


def build_env(package: Package, settings: BuildSettings, say: Callable[[str], None]) -> Path:
    """The package's environment, built as the server builds it unless cached; the build log
    goes to ``say`` as it is written. Raises ModelBuildFailed."""
    try:
        python = choose_interpreter(package.config.build_info.python_version, settings, say)
        builder = EnvBuilder(settings)
        out = BuildLog(lambda lines: _say_each(say, lines))
        key = asyncio.run(_ensure_env(builder, python, package, out))
    except BuildError as exc:
        raise errors.ModelBuildFailed(
            f"building the environment of {package.root} failed: {exc}"
        ) from None
    return builder.env_path(key)


def _say_each(say: Callable[[str], None], lines: list[str]) -> None:
    for line in lines:
        say(line)


async def _ensure_env(
    builder: EnvBuilder, python: Interpreter, package: Package, out: BuildLog
) -> str:
    key = await builder.ensure_env(python, package.root / REQUIREMENTS, out)
    await out.flush()
    return key


def run_in_env(env: Path, package_dir: Path, echo: Callable[[str], None]) -> int:
    """Run :func:`main` in the environment ``env``, its output passed to ``echo`` line by line;
    returns its exit code. It runs in the package folder."""
    command = [str(env / "bin" / "python"), "-m", "orchard.packaging.localtest", str(package_dir)]
    environ = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        command,
        cwd=package_dir,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            echo(line.rstrip("\n"))
    return proc.returncode
