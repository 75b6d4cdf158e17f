"""Screenshots of the dashboard's main pages for the docs (docs/img/*.png).

Starts a real server on loopback (orchestrating, with its default cluster), uploads the echo
example, deploys it, sends it some traffic for a minute so that the charts have a shape, and
saves the pages as Debian's chromium draws them:

    .venv/bin/python scripts/screenshots.py [--out docs/img] [--seconds 60]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from clarifai_grpc.grpc.api import resources_pb2 as r
from clarifai_grpc.grpc.api import service_pb2
from playwright.sync_api import sync_playwright

from orchard.client.nodepool import Nodepool
from orchard.client.uploads import upload_model
from orchard.client.user import User
from orchard.testing import ServerThread, chromium_options
from orchard.wire import callable_for

ROOT = Path(__file__).resolve().parents[1]


def deploy(server: ServerThread) -> str:
    version = upload_model(
        ROOT / "examples/models/echo",
        user_id=server.user_id,
        base_url=server.base_url,
        pat=server.pat,
    )
    user = User(user_id=server.user_id, base_url=server.base_url, pat=server.pat)
    Nodepool("default", compute_cluster_id="local", _client=user).create_deployment(
        deployment_id="echo-dep",
        deployment_config={
            "description": "echo on this host",
            "worker": {"model": {"id": "echo", "app_id": "examples"}},
            "scheduling_choice": 4,
            "nodepools": [{"id": "default", "compute_cluster": {"id": "local"}}],
            "autoscale_config": {
                "min_replicas": 1,
                "max_replicas": 2,
                "scale_up_delay_seconds": 10,
                "scale_down_delay_seconds": 60,
                "scale_to_zero_delay_seconds": 600,
            },
        },
    )
    return str(version.id)


def traffic(server: ServerThread, seconds: float) -> None:
    """Calls at a rate that rises and falls, so that the charts show something."""
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    predict = callable_for(channel, "PostModelOutputs")
    request = service_pb2.PostModelOutputsRequest(
        user_app_id=r.UserAppIDSet(user_id=server.user_id, app_id="examples"),
        model_id="echo",
        inputs=[r.Input(data=r.Data(text=r.Text(raw="hello")))],
        runner_selector=r.RunnerSelector(
            deployment=r.Deployment(id="echo-dep", user_id=server.user_id)
        ),
    )
    metadata = (("authorization", f"Key {server.pat}"),)
    began = time.monotonic()
    while (elapsed := time.monotonic() - began) < seconds:
        pause = 0.02 + 0.2 * abs((elapsed % 30) - 15) / 15
        predict(request, metadata=metadata, timeout=60)
        time.sleep(pause)
    channel.close()


def shoot(page: Any, url: str, path: Path, wait_for: str) -> None:
    page.goto(url)
    page.get_by_text(wait_for).first.wait_for()
    page.screenshot(path=str(path), full_page=True)


def screenshots(server: ServerThread, out: Path, version: str) -> None:
    assert server.server is not None
    base = f"http://127.0.0.1:{server.server.http_port}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(**chromium_options())
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(base + "/")
        page.get_by_label("Personal access token").fill(server.pat)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("link", name="echo-dep").wait_for()
        page.screenshot(path=str(out / "dashboard-overview.png"), full_page=True)
        shoot(page, base + "/ui/deployments/echo-dep", out / "dashboard-deployment.png", "ready")
        page.goto(base + "/ui/new/deployment?nodepool=local/default")
        page.get_by_label("Id", exact=True).fill("echo-two")
        page.get_by_label("App", exact=True).fill("examples")
        page.get_by_label("Model", exact=True).fill("echo")
        page.get_by_label("Min replicas", exact=True).fill("3")
        page.get_by_label("Max replicas", exact=True).fill("1")
        page.get_by_role("button", name="Create deployment").click()
        page.get_by_text("is greater than max_replicas").wait_for()
        page.screenshot(path=str(out / "dashboard-form-error.png"), full_page=True)
        version_url = f"{base}/ui/models/examples/echo/versions/{version}"
        shoot(page, version_url, out / "dashboard-model-version.png", "generate")
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory() as tmp,
        ServerThread(
            Path(tmp) / "home", offline=True, orchestrate=True, default_cluster=True, http_port=0
        ) as server,
    ):
        version = deploy(server)
        traffic(server, args.seconds)
        screenshots(server, args.out, version)
    print(f"saved to {args.out}")


if __name__ == "__main__":
    main()
