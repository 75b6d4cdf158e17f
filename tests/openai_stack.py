"""A server with the OpenAI-compatible endpoint and models behind it, for the tests of the
endpoint (the module-scoped ``stack`` fixture of tests/test_http_openai.py).

It serves tiny-chat (deployment ``tiny-dep``, one replica), tiny-chat again with no replica
(``tiny-idle``, in nodepool ``idle-np``: every call to it waits) and ``dribble``, a model that
streams until its client goes away and holds a unary chat until a file exists.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from clarifai_grpc.grpc.api import resources_pb2 as r
from openai import OpenAI

from orchard.cli.runner import version_files
from orchard.client.uploads import upload_model
from orchard.client.user import User
from orchard.testing import ServerThread
from tests.conftest import Api
from tests.replicas import Replica
from tests.resources import EXAMPLES, make_cluster, make_nodepool, ok

DRIBBLE = '''
import time
from pathlib import Path

from orchard.authoring import OpenAIModelClass, chat_chunk


class Dribble(OpenAIModelClass):
    """Streams a chunk every 20 ms until its client goes away (at most two minutes); answers a
    unary chat once the file its message names exists."""

    def chat_completion(self, request):
        gate = Path(request["messages"][-1]["content"])
        print("unary chat started", flush=True)
        deadline = time.monotonic() + 120
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        return {"object": "chat.completion", "choices": []}

    def chat_completion_stream(self, request):
        deadline, sent = time.monotonic() + 120, 0
        while time.monotonic() < deadline:
            yield chat_chunk(request, "dribble", {"content": f"{sent} "})
            sent += 1
            time.sleep(0.02)
'''


@dataclass
class Stack:
    server: ServerThread
    api: Api
    tmp: Path
    replicas: list[Replica] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        assert self.server.server is not None
        return f"http://127.0.0.1:{self.server.server.http_port}/v2/ext/openai/v1"

    def client(self, api_key: str | None = None, **options: object) -> OpenAI:
        return OpenAI(base_url=self.base_url, api_key=api_key or self.server.pat, **options)  # type: ignore[arg-type]

    def model(self, model_id: str) -> str:
        return f"{self.server.user_id}/examples/models/{model_id}"

    def deploy(self, model_id: str, version_id: str, dep_id: str, nodepool: str = "np") -> str:
        """A deployment of the version in ``nodepool`` and a runner record; the runner's id."""
        model = r.Model(id=model_id, app_id="examples", model_version=r.ModelVersion(id=version_id))
        deployment = r.Deployment(
            id=dep_id,
            worker=r.Worker(model=model),
            nodepools=[r.Nodepool(id=nodepool, compute_cluster=r.ComputeCluster(id="cc"))],
            scheduling_choice=4,
            autoscale_config=r.AutoscaleConfig(max_replicas=2),
        )
        ok(self.api.call("PostDeployments", deployments=[deployment]))
        runner = r.Runner(worker=r.Worker(model=model))
        response = self.api.call(
            "PostRunners", compute_cluster_id="cc", nodepool_id=nodepool, runners=[runner]
        )
        return str(ok(response).runners[0].id)

    def serve(self, model_id: str, version_id: str, dep_id: str) -> Replica:
        """Deploy the version and attach one replica to it."""
        runner_id = self.deploy(model_id, version_id, dep_id)
        server = self.server
        user = User(user_id=server.user_id, base_url=server.base_url, pat=server.pat)
        model = r.Model(id=model_id, app_id="examples", model_version=r.ModelVersion(id=version_id))
        package, python = version_files(user, model, server.settings.home)
        replica = Replica(
            server, runner_id, package, self.tmp, python=str(python), replica_id=model_id
        )
        self.replicas.append(replica.start())
        return replica

    def upload(self, folder: Path) -> str:
        server = self.server
        return str(
            upload_model(
                folder, user_id=server.user_id, base_url=server.base_url, pat=server.pat
            ).id
        )


@contextlib.contextmanager
def running_stack(tmp: Path) -> Iterator[Stack]:
    """The server and its deployments, under ``tmp``; everything stopped on leaving."""
    with ServerThread(tmp / "home", offline=True, http_port=0) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        stack = Stack(server, Api(channel, server.pat, server.user_id), tmp)
        try:
            make_cluster(stack.api)
            make_nodepool(stack.api)
            make_nodepool(stack.api, id="idle-np")
            tiny = stack.upload(EXAMPLES / "tiny-chat")
            stack.serve("tiny-chat", tiny, "tiny-dep")
            stack.deploy("tiny-chat", tiny, "tiny-idle", nodepool="idle-np")  # no replica
            dribble = tmp / "dribble"
            (dribble / "1").mkdir(parents=True)
            (dribble / "1" / "model.py").write_text(DRIBBLE)
            (dribble / "requirements.txt").write_text("")
            (dribble / "config.yaml").write_text("model: {id: dribble, app_id: examples}\n")
            stack.serve("dribble", stack.upload(dribble), "dribble-dep")
            yield stack
        finally:
            for replica in stack.replicas:
                assert replica.stop() == 0, replica.output()
            channel.close()
