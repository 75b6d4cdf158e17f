"""The dashboard's parts without a browser: sessions and the write checks, the forms (values to
the seed's YAML and the API's messages back to fields), and the in-memory time series."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Histogram

from orchard.configs import DeploymentSpec, NodepoolSpec
from orchard.ids import PoolKey
from orchard.orchestration.view import LiveDeployment, LiveReplica, LiveView
from orchard.server.http.dashboard import forms
from orchard.server.http.dashboard.sessions import (
    SessionStore,
    cookie_header,
    cross_site_reason,
    csrf_matches,
)
from orchard.server.metrics import LATENCY_BUCKETS
from orchard.server.timeseries import TimeSeries, difference, quantile
from orchard.testing import ServerThread

ORIGIN = "http://127.0.0.1:7601"


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


# -- sessions and writes --------------------------------------------------------------------


def test_a_session_expires_and_ends_at_sign_out() -> None:
    clock = Clock()
    store = SessionStore(ttl=60, clock=clock)
    first = store.create("alice", "pat-a")
    second = store.create("alice", "pat-a")
    assert first.id != second.id and first.csrf != second.csrf and len(first.id) >= 40
    assert store.get(first.id) == first
    store.end(first.id)
    assert store.get(first.id) is None
    clock.now += 60
    assert store.get(second.id) is None and len(store) == 0
    assert store.get(None) is None and store.get("made-up") is None


def test_the_store_is_bounded() -> None:
    store = SessionStore(limit=2, clock=Clock())
    sessions = [store.create("u", str(i)) for i in range(3)]
    assert len(store) == 2 and store.get(sessions[0].id) is None


def test_session_metadata_carries_the_pat_for_the_api_only() -> None:
    session = SessionStore().create("alice", "secret-pat")
    assert session.metadata == [("authorization", "Key secret-pat")]
    assert "secret-pat" not in cookie_header(session, 60, secure=False)


def test_the_cookie_is_http_only_strict_and_expires() -> None:
    session = SessionStore().create("alice", "pat")
    header = cookie_header(session, 3600, secure=False)
    assert header.startswith(f"orchard_session={session.id}; Max-Age=3600; Path=/")
    assert "HttpOnly" in header and "SameSite=Strict" in header and "Secure" not in header
    assert "Secure" in cookie_header(session, 3600, secure=True)
    assert cookie_header(None, 3600, secure=False).startswith("orchard_session=; Max-Age=0")


def test_csrf_token_must_match() -> None:
    session = SessionStore().create("alice", "pat")
    assert csrf_matches(session, session.csrf)
    assert not csrf_matches(session, "")
    assert not csrf_matches(session, None)
    assert not csrf_matches(session, session.csrf[:-1] + "x")


@pytest.mark.parametrize(
    ("headers", "refused"),
    [
        ({}, False),
        ({"sec-fetch-site": "same-origin", "origin": ORIGIN}, False),
        ({"sec-fetch-site": "none"}, False),
        ({"sec-fetch-site": "cross-site"}, True),
        ({"sec-fetch-site": "same-site"}, True),
        ({"origin": "http://forger.test"}, True),
        ({"origin": ORIGIN}, False),
        ({"origin": "null"}, True),
    ],
)
def test_writes_from_another_site_are_refused(headers: dict[str, str], refused: bool) -> None:
    assert (cross_site_reason(headers, ORIGIN) is not None) is refused


# -- forms ------------------------------------------------------------------------------------


DEPLOYMENT_VALUES = {
    "id": "echo-dep",
    "description": "echo here",
    "worker.model.app_id": "examples",
    "worker.model.id": "echo",
    "worker.model.model_version.id": "",
    "nodepools": "local/default, cc/np",
    "scheduling_choice": "4",
    "autoscale_config.min_replicas": "0",
    "autoscale_config.max_replicas": "2",
    "autoscale_config.soft_min_replicas": "",
    "autoscale_config.traffic_history_seconds": "60",
    "autoscale_config.scale_up_delay_seconds": "5",
    "autoscale_config.scale_down_delay_seconds": "30",
    "autoscale_config.scale_to_zero_delay_seconds": "600",
    "autoscale_config.disable_packing": True,
    "status": "0",
}


def test_a_deployment_form_makes_the_seeds_yaml() -> None:
    form = forms.FORMS["deployment"]
    data = forms.resource(form, DEPLOYMENT_VALUES)
    assert data["nodepools"] == [
        {"id": "default", "compute_cluster": {"id": "local"}},
        {"id": "np", "compute_cluster": {"id": "cc"}},
    ]
    assert data["autoscale_config"] == {
        "min_replicas": 0,
        "max_replicas": 2,
        "traffic_history_seconds": 60,
        "scale_up_delay_seconds": 5,
        "scale_down_delay_seconds": 30,
        "scale_to_zero_delay_seconds": 600,
        "disable_packing": True,
    }
    text = forms.as_yaml(form, data)
    loaded = yaml.safe_load(text)["deployment"]
    assert loaded == data
    spec = DeploymentSpec.model_validate(loaded)  # what `orchard deployment create` checks
    assert spec.target_model().id == "echo" and spec.autoscale_config.disable_packing


def test_form_values_round_trip_through_the_resource() -> None:
    form = forms.FORMS["deployment"]
    data = forms.resource(form, DEPLOYMENT_VALUES)
    again = forms.values(form, data)
    assert forms.resource(form, again) == data


def test_a_nodepool_form_makes_the_seeds_yaml() -> None:
    form = forms.FORMS["nodepool"]
    values = {
        "compute_cluster.id": "local-cc",
        "id": "cpu-pool",
        "instance_types": "local-cpu-1",
        "node_capacity_type.capacity_types": "1",
        "min_instances": "0",
        "max_instances": "2",
    }
    data = forms.resource(form, values)
    assert data["instance_types"] == [{"id": "local-cpu-1"}]
    assert data["node_capacity_type"] == {"capacity_types": [1]}
    NodepoolSpec.model_validate(yaml.safe_load(forms.as_yaml(form, data))["nodepool"])


def test_bad_form_input_names_its_field() -> None:
    form = forms.FORMS["deployment"]
    with pytest.raises(forms.FormError) as caught:
        forms.resource(
            form,
            {"nodepools": "default", "autoscale_config.max_replicas": "two"},
        )
    assert set(caught.value.fields) == {"nodepools", "autoscale_config.max_replicas"}
    assert "cluster/nodepool" in caught.value.fields["nodepools"]


def test_api_messages_go_beside_their_fields() -> None:
    form = forms.FORMS["deployment"]
    message = (
        "invalid config: deployments[0].autoscale_config: min_replicas (3) is greater than "
        "max_replicas (1); make min_replicas <= max_replicas; deployments[0].id: id is too long"
    )
    assert forms.field_errors(form, message) == {
        "autoscale_config.min_replicas": "min_replicas (3) is greater than max_replicas (1); "
        "make min_replicas <= max_replicas",
        "id": "id is too long",
    }
    nested = "invalid config: nodepools[0].instance_types[0].id: required field is missing"
    assert forms.field_errors(forms.FORMS["nodepool"], nested) == {
        "instance_types": "required field is missing"
    }
    assert forms.field_errors(form, "model 'x' not found") == {"": "model 'x' not found"}


# -- the time series --------------------------------------------------------------------------


def test_quantiles_interpolate_inside_a_bucket() -> None:
    assert quantile(0.5, {}) is None
    assert quantile(0.5, {0.1: 0.0, float("inf"): 0.0}) is None
    buckets = {0.01: 0.0, 0.02: 10.0, 0.05: 10.0, float("inf"): 10.0}
    assert quantile(0.5, buckets) == pytest.approx(0.015)
    assert quantile(0.99, {0.01: 0.0, 0.02: 0.0, float("inf"): 4.0}) == 0.02
    assert difference({1.0: 5.0}, {1.0: 7.0}) == {1.0: 5.0}  # a reset counts from zero


@dataclass
class Views:
    view: LiveView | None = None
    seen: list[LiveView | None] = field(default_factory=list)

    def __call__(self) -> LiveView | None:
        return self.view


def _view(live: int, desired: int, queued: int, replicas: Iterable[LiveReplica] = ()) -> LiveView:
    dep = LiveDeployment(desired, live, 0, queued, tuple(replicas), ("12:00:00 started",), "")
    return LiveView({("alice", "d1"): dep})


def test_the_series_samples_counters_and_the_view() -> None:
    registry = CollectorRegistry()
    histogram = Histogram(
        "lat", "", ["target", "method"], buckets=LATENCY_BUCKETS, registry=registry
    )
    clock, views = Clock(), Views(_view(0, 0, 0))
    series = TimeSeries(histogram, views, every=5, window=60, clock=clock)
    series.sample()
    for _ in range(10):
        histogram.labels("deployment/alice/d1", "predict").observe(0.004)
    histogram.labels("deployment/alice/d1", "generate").observe(0.4)
    histogram.labels("model/alice/other", "predict").observe(0.4)  # not a deployment
    clock.now += 5
    views.view = _view(1, 1, 3)
    series.sample()
    points = series.points("alice", "d1")
    assert [p.rate for p in points] == [0.0, pytest.approx(11 / 5)]
    last = points[-1]
    assert last.p50 is not None and 0.0025 < last.p50 <= 0.005
    assert last.p99 is not None and 0.25 < last.p99 <= 0.5
    assert (last.live, last.desired, last.queued) == (1, 1, 3)
    assert series.points("bob", "d1") == []


def test_the_series_keeps_one_hour_and_forgets_gone_deployments() -> None:
    histogram = Histogram("lat2", "", ["target", "method"], registry=CollectorRegistry())
    clock, views = Clock(), Views(_view(1, 1, 0))
    series = TimeSeries(histogram, views, every=5, window=60, clock=clock)
    for _ in range(30):
        series.sample()
        clock.now += 5
    points = series.points("alice", "d1")
    assert len(points) <= 13 and points[0].at >= clock.now - 65
    views.view = LiveView()
    clock.now += 61
    series.sample()
    assert series.points("alice", "d1") == []


def test_replicas_are_dated_by_state() -> None:
    histogram = Histogram("lat3", "", ["target", "method"], registry=CollectorRegistry())
    pool = PoolKey("alice", "cc", "np")
    starting = LiveReplica("r1", "d1", pool, "run", "i1", "here", "starting")
    clock, views = Clock(), Views(_view(0, 1, 0, [starting]))
    series = TimeSeries(histogram, views, clock=clock)
    series.sample()
    clock.now += 7
    series.sample()
    assert series.since("r1", "starting") == 1000.0
    views.view = _view(1, 1, 0, [LiveReplica("r1", "d1", pool, "run", "i1", "here", "ready")])
    series.sample()
    assert series.since("r1", "ready") == 1007.0
    views.view = LiveView()
    series.sample()
    clock.now += 1
    assert series.since("r1", "ready") == 1008.0  # gone, then seen again: a new date


# -- the routes over HTTP, without a browser ------------------------------------------------


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any) -> None:
        return None


def _send(url: str, data: bytes | None = None, **headers: str) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(url, data=data, headers=headers)
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[ServerThread, str]]:
    with ServerThread(tmp_path / "home", default_cluster=True, http_port=0) as running:
        assert running.server is not None
        yield running, f"http://127.0.0.1:{running.server.http_port}"


def _sign_in(base: str, pat: str) -> tuple[str, str]:
    """The session cookie and the page's CSRF token."""
    status, headers, _ = _send(base + "/ui/signin", urllib.parse.urlencode({"pat": pat}).encode())
    assert status == 303, headers
    cookie = headers["set-cookie"].split(";")[0]
    _, _, page = _send(base + "/", Cookie=cookie)
    match = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert match is not None
    return cookie, match.group(1)


def test_the_routes_check_sessions_tokens_and_sites(web: tuple[ServerThread, str]) -> None:
    server, base = web
    assert _send(base + "/ui/api/overview")[0] == 401
    status, _, page = _send(base + "/ui/signin", b"pat=wrong")
    assert status == 401 and "Personal access token" in page and "Traceback" not in page
    cookie, csrf = _sign_in(base, server.pat)
    status, _, body = _send(base + "/ui/api/overview", Cookie=cookie)
    assert status == 200 and json.loads(body)["clusters"][0]["id"] == "local"
    assert server.pat not in _send(base + "/", Cookie=cookie)[2]
    delete = base + "/ui/api/forms/cluster/delete"
    body_bytes = json.dumps({"id": "local", "confirm": "local"}).encode()
    json_type, token = "application/json", "X-CSRF-Token"
    refused = [
        _send(delete, body_bytes, Cookie=cookie, **{"Content-Type": json_type}),
        _send(delete, body_bytes, Cookie=cookie, **{"X-CSRF-Token": "x" + csrf}),
        _send(delete, body_bytes, Cookie=cookie, Origin="http://forger.test", **{token: csrf}),
    ]
    assert [r[0] for r in refused] == [403, 403, 403]
    assert _send(base + "/ui/api/clusters/local", Cookie=cookie)[0] == 200
    assert _send(base + "/ui/api/nothing-here", Cookie=cookie)[0] == 404


def test_a_second_user_gets_not_found_and_sign_out_ends_the_session(
    web: tuple[ServerThread, str],
) -> None:
    server, base = web
    cookie, csrf = _sign_in(base, server.create_user("bob"))
    status, _, body = _send(base + "/ui/api/clusters/local", Cookie=cookie)
    assert status == 404 and "not found" in json.loads(body)["error"]
    form = urllib.parse.urlencode({"csrf": csrf}).encode()
    assert _send(base + "/ui/signout", form, Cookie=cookie)[0] == 303
    assert _send(base + "/ui/api/overview", Cookie=cookie)[0] == 401
