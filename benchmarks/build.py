"""Seconds from `upload` to a built model version, with a cold and with a warm environment
cache, for the echo example; and, measured in the same run as the baseline, a plain
`python -m venv` + `pip install` of the same requirements (what a server without uv's cache
would do).

- env_cold: a fresh server home (no environment built yet); uv's package cache as it is.
- env_warm: a second version with the same requirements (the environment is reused).
- baseline_venv_pip: venv + pip install of the runner's dependencies and requirements.txt.

``--smoke`` checks that the script works: one round, the server building from uv's cache only
(``--offline``), and no baseline (pip needs the package index).

    .venv/bin/python benchmarks/build.py [--model examples/models/echo] [--rounds 3] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import seconds, start_server, stop_server

from orchard.client.uploads import upload_model
from orchard.services.builds import runner_pins


def upload_seconds(home: Path, model: Path, versions: int, *server_args: str) -> list[float]:
    """Upload ``model`` ``versions`` times to one fresh server; seconds per build."""
    pat = secrets.token_hex(16)
    proc, port = start_server(home, pat, *server_args)
    try:
        base = f"http://127.0.0.1:{port}"
        return [
            seconds(lambda: upload_model(model, user_id="bench", base_url=base, pat=pat))
            for _ in range(versions)
        ]
    finally:
        stop_server(proc)


def venv_pip_seconds(model: Path, folder: Path) -> float:
    def build() -> None:
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
        subprocess.run(
            [
                str(folder / "bin/python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
                str(model / "requirements.txt"),
                *runner_pins(),
            ],
            check=True,
        )

    return seconds(build)


def smoke(model: Path) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        cold, warm = upload_seconds(Path(tmp) / "home", model, 2, "--offline")
    return {"benchmark": "build", "smoke": True, "env_cold_s": cold, "env_warm_s": warm}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("examples/models/echo"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="once, offline, without baseline")
    args = parser.parse_args()
    if args.smoke:
        print(json.dumps(smoke(args.model), indent=2))
        return
    cold, warm, baseline = [], [], []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            first, second = upload_seconds(Path(tmp) / "home", args.model, versions=2)
            cold.append(first)
            warm.append(second)
            baseline.append(venv_pip_seconds(args.model, Path(tmp) / "venv"))
    med = {
        name: round(statistics.median(values), 3)
        for name, values in (
            ("env_cold_s", cold),
            ("env_warm_s", warm),
            ("baseline_venv_pip_s", baseline),
        )
    }
    print(
        json.dumps(
            {
                "benchmark": "build",
                "model": str(args.model),
                "rounds": args.rounds,
                "median": med,
                "runs": {"env_cold_s": cold, "env_warm_s": warm, "baseline_venv_pip_s": baseline},
                "ratio_env_cold_over_baseline": round(
                    med["env_cold_s"] / med["baseline_venv_pip_s"], 3
                ),
                "ratio_env_warm_over_env_cold": round(med["env_warm_s"] / med["env_cold_s"], 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
