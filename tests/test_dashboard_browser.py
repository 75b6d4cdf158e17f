"""The dashboard in a real headless browser (Debian's chromium, driven by Playwright).

These are e2e tests: what is tested is what a person does in the pages (sign in with the
keyboard, walk the compute tree and a model version, fill a form, read a validation message
beside its field, edit, try a prediction and watch the replicas go from 0 to 1, delete with
the name) and what a browser enforces with the server (the session cookie's flags, a forged
cross-site POST refused). One orchestrating server for the module, with the echo example
uploaded; one browser, a fresh context per test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchard.client.uploads import upload_model
from orchard.testing import CHROMIUM, ServerThread, chromium_options
from tests.resources import EXAMPLES

WAIT_MS = 120_000  # a deadline for what the server does (a replica starting), never a bound

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM),
        reason=f"Debian's chromium is not installed at {CHROMIUM} (scripts/setup.sh installs it)",
    ),
]
sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    home = tmp_path_factory.mktemp("dashboard") / "home"
    with ServerThread(
        home,
        offline=True,
        orchestrate=True,
        default_cluster=True,
        http_port=0,
        drain_seconds=1.0,
    ) as running:
        upload_model(
            EXAMPLES / "echo", user_id=running.user_id, base_url=running.base_url, pat=running.pat
        )
        yield running


@pytest.fixture(scope="module")
def base(server: ServerThread) -> str:
    assert server.server is not None
    return f"http://127.0.0.1:{server.server.http_port}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium (each launch has a fresh, empty profile)."""
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(**chromium_options())
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    context.set_default_timeout(30_000)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    yield opened
    context.close()
    assert errors == [], errors


def sign_in(page: Any, base: str, pat: str) -> None:
    page.goto(base + "/")
    page.get_by_label("Personal access token").fill(pat)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Compute clusters")).to_be_visible()


def test_sign_in_walk_the_tree_and_sign_out(page: Any, base: str, server: ServerThread) -> None:
    page.goto(base + "/")
    page.get_by_label("Personal access token").fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("PAT")
    page.get_by_label("Personal access token").focus()  # the keyboard alone signs in
    page.keyboard.type(server.pat)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Compute clusters")).to_be_visible()
    cookie = next(c for c in page.context.cookies() if c["name"] == "orchard_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] > 0
    assert server.pat not in page.content()
    clusters = page.get_by_role("table", name="Compute clusters")
    expect(clusters).to_contain_text("local")
    clusters.get_by_role("link", name="local").click()
    nodepools = page.get_by_role("table", name="Nodepools")
    expect(nodepools).to_contain_text("local-cpu")
    nodepools.get_by_role("link", name="default").click()
    expect(page.get_by_role("heading", name="Nodepool default")).to_be_visible()
    expect(page.get_by_role("table", name="Deployments")).to_be_visible()
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Models").click()
    page.get_by_role("table", name="Models").get_by_role("link", name="echo").click()
    page.get_by_role("table", name="Versions").get_by_role("link").first.click()
    expect(page.get_by_role("table", name="Methods")).to_contain_text("unary → streaming")
    expect(page.locator("pre.log")).to_contain_text("methods: predict, generate, stream")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Personal access token")).to_be_visible()
    page.goto(base + "/ui/clusters/local")
    expect(page.get_by_label("Personal access token")).to_be_visible()


def fill_deployment(page: Any, dep_id: str, min_replicas: str, max_replicas: str) -> None:
    page.get_by_label("Id", exact=True).fill(dep_id)
    page.get_by_label("App", exact=True).fill("examples")
    page.get_by_label("Model", exact=True).fill("echo")
    page.get_by_label("Min replicas", exact=True).fill(min_replicas)
    page.get_by_label("Max replicas", exact=True).fill(max_replicas)
    page.get_by_label("Scale-to-zero delay").fill("3600")


def test_create_try_it_scale_from_zero_and_delete(
    page: Any, base: str, server: ServerThread
) -> None:
    sign_in(page, base, server.pat)
    page.goto(base + "/ui/new/deployment?nodepool=local/default")
    fill_deployment(page, "echo-dep", "3", "1")
    page.get_by_role("button", name="Create deployment").click()
    min_field = page.get_by_label("Min replicas", exact=True)
    error = page.locator("#f-autoscale-config-min-replicas-error")
    expect(error).to_contain_text("min_replicas (3) is greater than max_replicas (1)")
    expect(min_field).to_have_attribute("aria-invalid", "true")
    assert "f-autoscale-config-min-replicas-error" in min_field.get_attribute("aria-describedby")
    with page.expect_download() as download:
        page.get_by_role("button", name="Download YAML").click()
    text = Path(download.value.path()).read_text()
    assert text.startswith("deployment:\n") and "min_replicas: 3" in text

    min_field.fill("0")
    page.get_by_role("button", name="Create deployment").click()
    expect(page.get_by_role("heading", name="Deployment echo-dep")).to_be_visible()
    expect(page.locator("#live-desired")).to_have_text("0 / 0", timeout=WAIT_MS)
    page.get_by_label("Text to send").fill("hello from the page")
    page.get_by_role("button", name="Send").click()
    answer = page.locator("#try-output")
    expect(answer).to_have_attribute("data-done", "true", timeout=WAIT_MS)
    expect(answer).to_have_text("hello from the page")
    expect(page.locator("#live-desired")).to_have_text("1 / 1", timeout=WAIT_MS)
    expect(page.get_by_role("table", name="Replicas")).to_contain_text("ready")

    page.get_by_role("link", name="Edit").click()
    expect(page.get_by_label("Id", exact=True)).to_have_attribute("readonly", "")
    expect(page.get_by_label("Min replicas", exact=True)).to_have_value("0")
    page.get_by_label("Max replicas", exact=True).fill("2")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#autoscale")).to_contain_text("Max replicas2")

    page.get_by_role("button", name="Delete deployment…").click()
    page.get_by_label("Type the name").fill("echo")
    page.get_by_role("button", name="Delete deployment", exact=True).click()
    expect(page.locator("#confirm-error")).to_contain_text("echo-dep")
    page.get_by_label("Type the name").fill("echo-dep")
    page.get_by_role("button", name="Delete deployment", exact=True).click()
    expect(page.get_by_role("heading", name="Compute clusters")).to_be_visible()
    expect(page.get_by_role("table", name="Deployments")).to_contain_text("No deployments yet.")


def test_a_second_user_sees_none_of_the_first_users(
    page: Any, base: str, server: ServerThread
) -> None:
    sign_in(page, base, server.create_user("bob"))
    expect(page.get_by_role("table", name="Compute clusters")).to_contain_text(
        "No compute clusters yet."
    )
    page.goto(base + "/ui/clusters/local")
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("not found")
    page.goto(base + "/ui/models")
    expect(page.get_by_role("table", name="Models")).to_contain_text("No models yet.")
    answer = page.request.get(base + "/ui/api/models/examples/echo")
    assert answer.status == 404


FORGED = """<!doctype html><form method="post" action="{action}">
<input name="id" value="local"><input name="confirm" value="local"></form>
<script>document.forms[0].submit()</script>"""


def test_a_forged_cross_site_post_is_refused(page: Any, base: str, server: ServerThread) -> None:
    sign_in(page, base, server.pat)
    action = base + "/ui/api/forms/cluster/delete"
    page.route(
        "http://forger.test/**",
        lambda route: route.fulfill(content_type="text/html", body=FORGED.format(action=action)),
    )
    with page.expect_response(action) as refused:
        page.goto("http://forger.test/")
    assert refused.value.status == 403
    assert "another site" in refused.value.text()
    no_token = page.request.post(action, data={"id": "local", "confirm": "local"})
    assert no_token.status == 403 and "CSRF" in no_token.text()
    page.goto(base + "/ui/clusters/local")
    expect(page.get_by_role("heading", name="Compute cluster local")).to_be_visible()
