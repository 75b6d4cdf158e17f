"""What an open dashboard costs the prediction path: ``dataplane.py``'s figures (Orchard and the
bare grpc.aio floor, same client) with no page open, and with a headless chromium page open on
the deployment's page (which polls its JSON every 2 s and follows its replica logs), in
alternating rounds on one server, so that both conditions see the same machine.

    .venv/bin/python benchmarks/dashboard_cost.py [--rounds 3] [--seconds 5] [--calls 400]

Prints JSON: the medians of each condition, Orchard over bare in each, and with-page over
without-page for Orchard (1.0: no cost; these machines are noisy, so read it against the
spread of the rounds). Each round also measures, with no calls, the CPU time the server
process and the browser spend per second (``idle_*_cpu_ms_per_s``): what the open page costs
the server itself, and the CPU the browser takes from the same cores, which the throughput
figures' noise can hide.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from common import start_server, stop_server
from dataplane import Target, measure, noop_targets, start_bare
from playwright.async_api import async_playwright

from orchard.testing import chromium_options

CONDITIONS = ("no_page", "page_open")
IDLE_SECONDS = 4.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def open_page(browser: Any, base: str, pat: str) -> Any:
    page = await browser.new_page()
    await page.goto(base + "/")
    await page.get_by_label("Personal access token").fill(pat)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("heading", name="Compute clusters").wait_for()
    return page


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for proc in processes:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def browser_processes() -> list[psutil.Process]:
    """This run's chromium processes (under Playwright's driver, a child of this process)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "chromium" in proc.name() or "chrome" in proc.name():
                found.append(proc)
        except psutil.Error:
            continue
    return found


async def idle_cpu(server: psutil.Process) -> dict[str, float]:
    """Milliseconds of CPU per second that the server process and the browser use while no
    call is made."""
    browser = browser_processes()
    before = cpu_seconds([server]), cpu_seconds(browser)
    began = time.perf_counter()
    await asyncio.sleep(IDLE_SECONDS)
    took = time.perf_counter() - began
    after = cpu_seconds([server]), cpu_seconds(browser)
    return {
        "idle_server_cpu_ms_per_s": round((after[0] - before[0]) * 1000 / took, 2),
        "idle_browser_cpu_ms_per_s": round((after[1] - before[1]) * 1000 / took, 2),
    }


async def rounds(
    args: argparse.Namespace, page: Any, base: str, targets: tuple[Target, Target], pid: int
) -> dict[str, dict[str, list[dict[str, float]]]]:
    orchard, floor = targets
    found: dict[str, dict[str, list[dict[str, float]]]] = {
        c: {"bare": [], "orchard": []} for c in CONDITIONS
    }
    for _ in range(args.rounds):
        for condition in CONDITIONS:
            if condition == "page_open":
                await page.goto(base + "/ui/deployments/noop-dep")
                await page.get_by_text("ready").first.wait_for()
            else:
                await page.goto("about:blank")
            idle = await idle_cpu(psutil.Process(pid))
            found[condition]["bare"].append(await measure(floor, args))
            figures = await measure(orchard, args)
            found[condition]["orchard"].append({**figures, **idle})
    return found


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}


def summarize(found: dict[str, dict[str, list[dict[str, float]]]]) -> dict[str, object]:
    med = {c: {side: medians(runs) for side, runs in sides.items()} for c, sides in found.items()}
    without, with_page = med["no_page"]["orchard"], med["page_open"]["orchard"]
    over_bare = {
        c: {k: round(m["orchard"][k] / m["bare"][k], 3) for k in m["bare"]} for c, m in med.items()
    }
    return {
        "benchmark": "dashboard_cost",
        "median": med,
        "orchard_over_bare": over_bare,
        "page_open_over_no_page": {
            k: round(with_page[k] / without[k], 3) for k in without if without[k]
        },
        "rounds": found,
    }


async def run(args: argparse.Namespace) -> dict[str, object]:
    pat, http_port = secrets.token_hex(16), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server, port = start_server(
            Path(tmp) / "home", pat, "--offline", "--http-port", str(http_port)
        )
        bare, bare_port = start_bare()
        try:
            orchard, floor = await noop_targets(port, pat, bare_port)
            base = f"http://127.0.0.1:{http_port}"
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(**chromium_options())
                page = await open_page(browser, base, pat)
                found = await rounds(args, page, base, (orchard, floor), server.pid)
                await browser.close()
            await orchard.close()
            await floor.close()
        finally:
            bare.communicate("", timeout=30)
            stop_server(server)
    return summarize(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    print(json.dumps(asyncio.run(run(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
