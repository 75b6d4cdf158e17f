"""The REST/JSON view of the V2 API (orchard/server/http/rest.py, routes.py, json_mapping.py).

The routing table and the JSON mapping are checked on their own; the rest against one live
server on loopback for the module (HTTP on a free port), with two real replicas (the echo and the
token-streamer examples, attached by hand) for predictions, streams and a client that goes
away, and the official JSON client (clarifai_grpc's ``get_json_channel``) for the seed's CRUD.
The tests that use the replicas are marked e2e: what they check crosses into the runner
processes (a prediction's answer, a cancel that reaches the model).
"""

from __future__ import annotations

import asyncio
import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from clarifai_grpc.channel import clarifai_channel
from clarifai_grpc.channel.clarifai_channel import ClarifaiChannel
from clarifai_grpc.grpc.api import resources_pb2 as r
from clarifai_grpc.grpc.api import service_pb2, service_pb2_grpc
from clarifai_grpc.grpc.api.status import status_code_pb2 as sc

from orchard.server.app import build_router
from orchard.server.http import rest
from orchard.server.http.json_mapping import (
    BadRequest,
    QueryFields,
    RequestMapping,
    scalar,
    text_field,
)
from orchard.server.http.routes import Binding, RouteTable, bindings, parse_template, split_path
from orchard.testing import ServerThread
from orchard.wire import SERVICE
from tests.conftest import Api
from tests.replicas import Replica
from tests.resources import cluster, deploy, deployment, make_cluster, make_nodepool, nodepool
from tests.waiting import wait_for

MAX_REQUEST_BYTES = 1 << 20
GRPC_ONLY = ("StreamModelOutputs", "PostModelVersionsUpload", "ProcessRunnerItems")

# -- the routing table and the JSON mapping, without a server ------------------------------------


def table() -> RouteTable:
    return RouteTable(bindings())


def test_every_rpc_orchard_serves_has_a_route():
    routed = table().by_rpc
    assert build_router().served() <= set(routed)
    assert len(routed) == len(SERVICE.methods)  # every V2 RPC, served or not


def test_a_template_sets_nested_fields():
    found = table().match("POST", split_path("/v2/users/alice/deployments/d1/outputs"))
    assert found is not None
    assert found.binding.rpc == "PostModelOutputs"
    assert [v.path for v in found.binding.variables] == [
        "runner_selector.deployment.user_id",
        "runner_selector.deployment.id",
    ]
    request = RequestMapping(found.binding, QueryFields()).build(found.values, b"", b"")
    assert (request.runner_selector.deployment.user_id, request.runner_selector.deployment.id) == (
        "alice",
        "d1",
    )


def test_more_literal_segments_win_over_a_variable():
    routes = table()
    upload = routes.match("POST", split_path("/v2/models/versions/upload"))
    assert upload is not None and upload.binding.rpc == "PostModelVersionsUpload"
    method = SERVICE.methods_by_name["GetApp"]
    general = _binding(method, "/v2/users/{user_app_id.user_id}/apps/{user_app_id.app_id}", 0)
    special = _binding(method, "/v2/users/me/apps/{user_app_id.app_id}", 1)
    for order in ([general, special], [special, general]):
        found = RouteTable(order).match("GET", split_path("/v2/users/me/apps/a"))
        assert found is not None and found.binding.template == special.template


def test_bindings_of_one_path_go_to_the_stream_when_the_client_asks_for_one():
    routes = table()
    path = split_path("/v2/users/me/compute_clusters/cc/nodepools/np/runners/r/runner/logs")
    plain = routes.match("GET", path)
    streamed = routes.match("GET", path, wants_stream=True)
    assert plain is not None and plain.binding.rpc == "ListLogEntries"
    assert streamed is not None and streamed.binding.rpc == "StreamLogEntries"


def test_paths_tolerate_a_trailing_slash_and_keep_encoded_slashes_in_their_segment():
    assert split_path("/v2/users/me/compute_clusters/") == ["v2", "users", "me", "compute_clusters"]
    assert split_path("/v2/users/a%2Fb") == ["v2", "users", "a/b"]


def test_the_query_string_fills_scalars_repeated_fields_and_enums_and_skips_the_unknown():
    routes = table()
    found = routes.match("GET", split_path("/v2/users/me/compute_clusters"))
    assert found is not None
    build = RequestMapping(found.binding, QueryFields()).build
    request = build(found.values, b"page=2&perPage=3&bogus=1&user_app_id.app_id=x", b"")
    assert (request.page, request.per_page, request.user_app_id.app_id) == (2, 3, "x")
    listed = routes.match("GET", split_path("/v2/users/me/apps/a/models"))
    assert listed is not None
    models = RequestMapping(listed.binding, QueryFields()).build(
        listed.values, b"toolkits=a&toolkits=b&sort_ascending=true&license_type=2", b""
    )
    assert (list(models.toolkits), models.sort_ascending, models.license_type) == (
        ["a", "b"],
        True,
        2,
    )


def test_a_field_of_the_wrong_type_is_named_in_the_problem():
    found = table().match("POST", split_path("/v2/users/me/compute_clusters"))
    assert found is not None
    with pytest.raises(BadRequest) as refused:
        RequestMapping(found.binding, QueryFields()).build(
            found.values, b"", b'{"compute_clusters": [{"id": 5}]}'
        )
    assert "compute_clusters.id" in refused.value.message
    assert "PostComputeClustersRequest" in refused.value.message


def test_a_named_body_field_takes_the_body_and_bad_bodies_say_what_to_send():
    method = SERVICE.methods_by_name["GetApp"]
    named = Binding(method, "POST", "/v2/apps", ("v2", "apps"), (), "user_app_id", 0)
    build = RequestMapping(named, QueryFields()).build
    assert build((), b"", b'{"userId": "u", "app_id": "a"}').user_app_id.user_id == "u"
    whole = Binding(method, "POST", "/v2/apps", ("v2", "apps"), (), "*", 1)
    with pytest.raises(BadRequest, match="the body is a JSON null; send a JSON object"):
        RequestMapping(whole, QueryFields()).build((), b"", b"null")


def test_a_query_parameter_of_the_wrong_type_is_named():
    found = table().match("GET", split_path("/v2/users/me/compute_clusters"))
    assert found is not None
    with pytest.raises(BadRequest, match="field 'page' of ListComputeClustersRequest"):
        RequestMapping(found.binding, QueryFields()).build(found.values, b"page=x", b"")


def test_wrappers_and_timestamps_come_from_text_other_messages_do_not():
    app = r.App.DESCRIPTOR.fields_by_name
    wrapped = text_field(app["is_template"])
    assert wrapped is not None and wrapped.name == "value"
    assert text_field(app["created_at"]) is app["created_at"]
    assert text_field(app["metadata"]) is None  # a Struct
    assert scalar(wrapped, "true") is True


def _binding(method: Any, template: str, order: int) -> Binding:
    segments, variables = parse_template(template, method.input_type)
    return Binding(method, "GET", template, segments, variables, "", order)


async def test_a_stream_that_fails_after_its_first_response_ends_with_a_status_line():
    async def responses():
        yield service_pb2.MultiOutputResponse(status={"code": sc.SUCCESS})
        raise RuntimeError("boom")

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await rest._pump(responses(), send, rest.ndjson_frame, rest.NDJSON)
    assert sent[0]["status"] == 200
    lines = [json.loads(m["body"]) for m in sent[1:] if m.get("body")]
    assert [line["status"]["code"] for line in lines] == [sc.SUCCESS, sc.INTERNAL_UNCATEGORIZED]
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


async def test_a_client_that_goes_away_cancels_the_calls_generator():
    first, cancelled = asyncio.Event(), asyncio.Event()

    async def responses():
        try:
            yield service_pb2.MultiOutputResponse(status={"code": sc.SUCCESS})
            await asyncio.Event().wait()  # a replica that has more to say, later
            yield service_pb2.MultiOutputResponse()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def send(message: dict[str, Any]) -> None:
        if message.get("body"):
            first.set()

    async def receive() -> dict[str, Any]:
        await first.wait()
        return {"type": "http.disconnect"}

    generator = responses()
    pump = rest._pump(generator, send, rest.ndjson_frame, rest.NDJSON)
    assert await rest.until_gone(pump, receive, generator) is None
    assert cancelled.is_set()
    assert asyncio.current_task().cancelling() == 0  # the call's own cancel, not the task's


# -- one live server -------------------------------------------------------------------


@dataclass
class Live:
    server: ServerThread
    api: Api
    home: Path

    @property
    def http_port(self) -> int:
        assert self.server.server is not None
        return self.server.server.http_port

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=60)

    def call(
        self, verb: str, path: str, body: Any = None, *, key: str | None = "", **headers: str
    ) -> tuple[int, dict[str, Any]]:
        """One REST call; (HTTP status, JSON body). ``key=None``: no Authorization header."""
        conn = self.connect()
        try:
            data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
            if key is not None:
                headers.setdefault("Authorization", f"Key {key or self.server.pat}")
            conn.request(verb, path, body=data, headers=headers)
            answer = conn.getresponse()
            return answer.status, json.loads(answer.read())
        finally:
            conn.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    home = tmp_path_factory.mktemp("rest")
    settings = {"http_port": 0, "max_request_bytes": MAX_REQUEST_BYTES}
    with ServerThread(home / "home", offline=True, **settings) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        try:
            yield Live(server, Api(channel, server.pat, server.user_id), home)
        finally:
            channel.close()


@pytest.fixture(scope="module")
def replicas(live: Live) -> Iterator[dict[str, Replica]]:
    """Deployments echo-dep and tokens in cc/np, each with one replica attached by hand."""
    make_cluster(live.api)
    make_nodepool(live.api)
    started: list[Replica] = []
    try:
        for example, dep in (("echo", "echo-dep"), ("token-streamer", "tokens")):
            runner_id, package, python = deploy(live.server, live.api, example, dep)
            replica = Replica(
                live.server, runner_id, package, live.home, python=str(python), replica_id=dep
            )
            started.append(replica.start())
        yield {replica.replica_id: replica for replica in started}
    finally:
        for replica in started:
            replica.stop()


@pytest.fixture
def stub(live: Live) -> Iterator[Any]:
    """The official JSON client's V2 stub (it sets a process-wide hook: put back after)."""
    saved = clarifai_channel.wrap_response_deserializer
    channel = ClarifaiChannel.get_json_channel(base_url=live.base)
    try:
        yield service_pb2_grpc.V2Stub(channel)
    finally:
        clarifai_channel.wrap_response_deserializer = saved
        channel.session.close()


def ok(response: Any) -> Any:
    assert response.status.code == sc.SUCCESS, response.status
    return response


def uid(live: Live, app: str = "") -> r.UserAppIDSet:
    return r.UserAppIDSet(user_id=live.server.user_id, app_id=app)


def json_call(live: Live, stub: Any, name: str, *, check: bool = True, **fields: Any) -> Any:
    """RPC ``name`` through the official JSON client as the module's user; with ``check``, its
    answer must be SUCCESS."""
    request = getattr(service_pb2, f"{name}Request")(user_app_id=uid(live), **fields)
    key = (("authorization", f"Key {live.server.pat}"),)
    answer = getattr(stub, name)(request, metadata=key)
    return ok(answer) if check else answer


@pytest.mark.e2e
def test_the_seed_flow_through_the_official_json_client(live, replicas, stub):
    def call(name: str, **fields: Any) -> Any:
        return json_call(live, stub, name, **fields)

    call("PostComputeClusters", compute_clusters=[cluster("json-cc")])
    got = call("GetComputeCluster", compute_cluster_id="json-cc")
    assert got.compute_cluster.cloud_provider.id == "local"
    listed = call("ListComputeClusters", page=1, per_page=50)
    assert "json-cc" in [c.id for c in listed.compute_clusters]
    call("PostNodepools", compute_cluster_id="json-cc", nodepools=[nodepool("json-np")])
    pools = call("ListNodepools", compute_cluster_id="json-cc")
    assert [p.id for p in pools.nodepools] == ["json-np"]
    echo = ok(live.api.call("GetDeployment", deployment_id="echo-dep")).deployment.worker.model
    model = {"id": "echo", "app_id": "examples", "model_version": {"id": echo.model_version.id}}
    placement = [{"id": "json-np", "compute_cluster": {"id": "json-cc"}}]
    call(
        "PostDeployments",
        deployments=[deployment("json-dep", nodepools=placement, worker={"model": model})],
    )
    got_dep = call("GetDeployment", deployment_id="json-dep")
    assert got_dep.deployment.nodepools[0].id == "json-np"
    change = r.Deployment(id="json-dep", autoscale_config=r.AutoscaleConfig(max_replicas=3))
    patched = call("PatchDeployments", deployments=[change], action="merge")
    assert patched.deployments[0].autoscale_config.max_replicas == 3
    call("DeleteDeployments", ids=["json-dep"])
    call("DeleteNodepools", compute_cluster_id="json-cc", ids=["json-np"])
    call("DeleteComputeClusters", ids=["json-cc"])
    gone = json_call(live, stub, "GetComputeCluster", check=False, compute_cluster_id="json-cc")
    assert gone.status.code == sc.COMPUTE_CLUSTER_DOES_NOT_EXIST


@pytest.mark.e2e
def test_a_prediction_by_deployment_through_the_official_json_client(live, replicas, stub):
    request = service_pb2.PostModelOutputsRequest(
        user_app_id=uid(live, "examples"),
        model_id="echo",
        runner_selector=r.RunnerSelector(
            deployment=r.Deployment(id="echo-dep", user_id=live.server.user_id)
        ),
        inputs=[r.Input(data=r.Data(text=r.Text(raw="hello over json")))],
    )
    answer = ok(
        stub.PostModelOutputs(request, metadata=(("authorization", f"Key {live.server.pat}"),))
    )
    assert answer.outputs[0].data.text.raw == "hello over json"


@pytest.mark.e2e
def test_users_me_names_the_caller_in_a_prediction_by_deployment(live, replicas):
    body = {"inputs": [{"data": {"text": {"raw": "hello me"}}}]}
    status, answer = live.call("POST", "/v2/users/me/deployments/echo-dep/outputs", body)
    assert status == 200, answer
    assert answer["outputs"][0]["data"]["text"]["raw"] == "hello me"


def test_the_json_client_gets_statuses_for_bad_keys_and_other_users(live, stub):
    request = service_pb2.ListComputeClustersRequest(user_app_id=uid(live))
    refused = stub.ListComputeClusters(request, metadata=(("authorization", "Key nope"),))
    assert refused.status.code == sc.CONN_KEY_INVALID
    other = service_pb2.ListComputeClustersRequest(user_app_id=r.UserAppIDSet(user_id="someone"))
    hidden = stub.ListComputeClusters(
        other, metadata=(("authorization", f"Key {live.server.pat}"),)
    )
    assert hidden.status.code == sc.CONN_DOES_NOT_EXIST


def generate_body(text: str, dep: str, **params: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "runner_selector": {"deployment": {"id": dep}},
        "inputs": [{"data": {"text": {"raw": text}, "metadata": {"_method_name": "generate"}}}],
    }
    if params:
        body["model"] = {"model_version": {"output_info": {"params": params}}}
    return body


def open_stream(
    live: Live, model: str, body: dict[str, Any], accept: str = ""
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    conn = live.connect()
    headers = {"Authorization": f"Key {live.server.pat}", "Content-Type": "application/json"}
    if accept:
        headers["Accept"] = accept
    path = f"/v2/users/me/apps/examples/models/{model}/outputs/generate"
    conn.request("POST", path, body=json.dumps(body).encode(), headers=headers)
    return conn, conn.getresponse()


@pytest.mark.e2e
def test_generate_streams_newline_delimited_json(live, replicas):
    conn, answer = open_stream(live, "echo", generate_body("a b c", "echo-dep"))
    try:
        assert answer.status == 200
        assert answer.getheader("Content-Type") == "application/x-ndjson"
        lines = [json.loads(line) for line in answer.read().splitlines()]
    finally:
        conn.close()
    assert [line["status"]["code"] for line in lines] == [sc.SUCCESS] * 3
    assert [line["outputs"][0]["data"]["text"]["raw"] for line in lines] == ["a ", "b ", "c"]


@pytest.mark.e2e
def test_generate_streams_server_sent_events(live, replicas):
    conn, answer = open_stream(
        live, "echo", generate_body("x y", "echo-dep"), accept="text/event-stream"
    )
    try:
        assert answer.getheader("Content-Type") == "text/event-stream"
        events = [e for e in answer.read().decode().split("\n\n") if e]
    finally:
        conn.close()
    assert all(e.startswith("data: ") for e in events)
    texts = [json.loads(e[len("data: ") :])["outputs"][0]["data"]["text"]["raw"] for e in events]
    assert texts == ["x ", "y"]


@pytest.mark.e2e
def test_a_client_that_goes_away_cancels_the_item_on_its_replica(live, replicas):
    body = generate_body("tell me", "tokens", delay_ms=100, max_tokens=500)
    conn, answer = open_stream(live, "token-streamer", body)
    try:
        first = json.loads(answer.readline())
        assert first["outputs"][0]["data"]["text"]["raw"]
    finally:
        conn.close()  # the client goes away after one token
    wait_for(
        lambda: "generate generate cancelled" in replicas["tokens"].output(),
        timeout=60,
        what="the replica to log the cancelled item",
    )


def test_a_body_that_is_not_json_or_has_a_field_of_the_wrong_type_is_400(live):
    status, body = live.call("POST", "/v2/users/me/compute_clusters", b"{not json")
    assert status == 400 and "not JSON" in body["status"]["description"]
    status, body = live.call(
        "POST", "/v2/users/me/compute_clusters", {"compute_clusters": [{"id": 5}]}
    )
    assert status == 400
    assert "'compute_clusters.id'" in body["status"]["description"]
    assert body["status"]["code"] == sc.CONN_INVALID_REQUEST


def test_a_body_over_the_servers_limit_is_413(live):
    text = "x" * (MAX_REQUEST_BYTES + 1)
    status, body = live.call("POST", "/v2/users/me/compute_clusters", {"description": text})
    assert status == 413 and "--max-request-bytes" in body["status"]["description"]


def test_bad_or_missing_keys_are_401_and_bearer_works(live):
    status, body = live.call("GET", "/v2/users/me/compute_clusters", key="wrong")
    assert (status, body["status"]["code"]) == (401, sc.CONN_KEY_INVALID)
    status, body = live.call("GET", "/v2/users/me/compute_clusters", key=None)
    assert status == 401 and "authorization" in body["status"]["description"]
    status, body = live.call(
        "GET", "/v2/users/me/compute_clusters", key=None, Authorization=f"Bearer {live.server.pat}"
    )
    assert (status, body["status"]["code"]) == (200, sc.SUCCESS)


def test_another_users_resources_are_not_found(live):
    live.server.create_user("carol")
    status, body = live.call("GET", "/v2/users/carol/compute_clusters")
    assert status == 404 and body["status"]["code"] == sc.CONN_DOES_NOT_EXIST


def test_an_unknown_route_is_a_404_and_a_known_path_with_another_verb_a_405(live):
    status, body = live.call("GET", "/v2/no/such/route")
    assert status == 404 and "no V2 route" in body["status"]["description"]
    status, body = live.call("PUT", "/v2/users/me/compute_clusters")
    assert status == 405 and "GET" in body["status"]["description"]


def test_camel_case_bodies_enums_by_number_and_trailing_slashes(live):
    cc = {
        "id": "camel-cc",
        "cloudProvider": {"id": "local"},
        "region": "local",
        "clusterType": "dedicated",
        "managedBy": "user",
    }
    status, body = live.call("POST", "/v2/users/me/compute_clusters/", {"computeClusters": [cc]})
    assert (status, body["status"]["code"]) == (200, sc.SUCCESS), body
    pool = {
        "id": "camel-np",
        "instanceTypes": [{"id": "local-cpu-1"}],
        "nodeCapacityType": {"capacityTypes": [2]},  # SPOT_TYPE, by number
        "maxInstances": 1,
    }
    status, body = live.call(
        "POST", "/v2/users/me/compute_clusters/camel-cc/nodepools", {"nodepools": [pool]}
    )
    assert status == 200, body
    status, body = live.call("GET", "/v2/users/me/compute_clusters/camel-cc/nodepools/camel-np/")
    assert body["nodepool"]["node_capacity_type"]["capacity_types"] == [2]
    live.call("DELETE", "/v2/users/me/compute_clusters", {"ids": ["camel-cc"]})


def test_list_routes_take_page_and_per_page_from_the_query(live):
    for name in ("page-a", "page-b", "page-c"):
        status, _ = live.call(
            "POST", "/v2/users/me/compute_clusters", {"compute_clusters": [_cluster(name)]}
        )
        assert status == 200
    try:
        pages = [
            live.call("GET", f"/v2/users/me/compute_clusters?per_page=2&page={n}&x=1")[1]
            for n in (1, 2, 3)
        ]
        ids = [[c["id"] for c in page.get("compute_clusters", [])] for page in pages]
        assert len(ids[0]) == 2
        every = [i for page in ids for i in page]
        assert len(every) == len(set(every)) and {"page-a", "page-b", "page-c"} <= set(every)
    finally:
        live.call(
            "DELETE", "/v2/users/me/compute_clusters", {"ids": ["page-a", "page-b", "page-c"]}
        )


def _cluster(name: str) -> dict[str, Any]:
    return {"id": name, "cloud_provider": {"id": "local"}, "region": "local"}


def test_client_streaming_rpcs_say_to_use_grpc(live):
    for path in ("/v2/models/outputs/stream", "/v2/models/versions/upload"):
        status, body = live.call("POST", path, {})
        assert status == 400 and "gRPC" in body["status"]["description"]
        assert str(live.server.port) in body["status"]["description"]


def test_an_rpc_orchard_does_not_serve_answers_not_implemented(live):
    status, body = live.call("GET", "/v2/users/me/apps/a/concepts/c/relations")
    assert (status, body["status"]["code"]) == (200, sc.NOT_IMPLEMENTED)


def test_a_stream_refused_at_once_takes_its_http_status_from_the_first_response(live):
    status, body = live.call(
        "POST",
        "/v2/users/me/apps/examples/models/echo/outputs/generate",
        generate_body("a", "echo-dep"),
        key="wrong",
    )
    assert (status, body["status"]["code"]) == (401, sc.CONN_KEY_INVALID)
