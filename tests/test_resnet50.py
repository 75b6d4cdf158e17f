"""The resnet50 example (examples/models/resnet50): its package and published signature, and,
in its real environment, ``orchard model local-test`` and a real server and runner replica that
answer top-5 concepts, batch the inputs of one request and of concurrent requests, and fail an
unreadable image alone.

The environment is the one the server builds (uv, ``torch==2.13.0``), with find-links to the
folder that holds torch's CPU wheel (``/opt/wheels``, or ``ORCHARD_TORCH_WHEELS``); those tests
are skipped where it has none, since the build would then download the multi-GB CUDA build.
The replica batches up to 4 inputs and waits up to 30 s for a batch to fill, so every batch
here is full and which inputs shared a call is certain; its DEBUG log says what each call got.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import PIL.Image
import pytest
from clarifai_grpc.grpc.api import resources_pb2 as r
from clarifai_grpc.grpc.api import service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2
from click.testing import CliRunner

from orchard.authoring import Concept, Image
from orchard.cli.main import cli
from orchard.cli.runner import version_files
from orchard.client.model import Model
from orchard.client.uploads import upload_model
from orchard.client.user import User
from orchard.codec.serializers import decode, encode_args
from orchard.packaging.package import load_package
from orchard.runners.utils.method_signatures import build_field
from orchard.testing import ServerThread
from tests.conftest import Api
from tests.replicas import Replica
from tests.resources import EXAMPLES, make_cluster, make_nodepool, ok

SC = status_code_pb2.StatusCode
PACKAGE = EXAMPLES / "resnet50"
WHEELS = Path(os.environ.get("ORCHARD_TORCH_WHEELS", "/opt/wheels"))
BATCH = 4
WAIT_MS = 30_000

needs_torch = pytest.mark.skipif(
    not any(WHEELS.glob("torch-2.13.0+cpu-cp311-*.whl")),
    reason=f"no torch 2.13.0 CPU wheel for Python 3.11 in {WHEELS} (ORCHARD_TORCH_WHEELS names "
    "another folder); building the example's environment without one would download the "
    "multi-GB CUDA build of torch",
)


def orchard(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def encoded(picture: PIL.Image.Image, kind: str) -> bytes:
    out = io.BytesIO()
    picture.save(out, format=kind)
    return out.getvalue()


def images() -> list[bytes]:
    """Four small images, unlike each other in size, shape, mode and format."""
    ramp = np.tile(np.linspace(0, 255, 48, dtype=np.uint8), (32, 1))
    ramps = np.stack([ramp, ramp[:, ::-1], np.full_like(ramp, 90)], axis=2)
    noise = np.random.default_rng(7).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    return [
        encoded(PIL.Image.fromarray(ramps), "PNG"),
        encoded(PIL.Image.fromarray(noise), "JPEG"),
        encoded(PIL.Image.new("P", (64, 64), 3), "GIF"),
        encoded(PIL.Image.linear_gradient("L").resize((224, 224)), "PNG"),
    ]


def assert_top_concepts(concepts: list[Concept], k: int = 5) -> None:
    """``k`` distinct classes, scores in (0, 1], most likely first: the head of a probability
    distribution over the 1,000 classes."""
    assert len(concepts) == k
    assert len({c.id for c in concepts}) == k
    assert all(c.id.startswith("class-") and c.name == c.id for c in concepts)
    assert all(0 < c.value <= 1 for c in concepts)
    assert [c.value for c in concepts] == sorted((c.value for c in concepts), reverse=True)
    assert sum(c.value for c in concepts) <= 1 + 1e-6


def assert_same_answer(got: list[Concept], expected: list[Concept]) -> None:
    """The same image's answer from another call: the same best class and (up to the float
    differences of another batch) the same scores, as far as both go."""
    n = min(len(got), len(expected))
    assert got[0].id == expected[0].id
    assert [c.value for c in got[:n]] == pytest.approx([c.value for c in expected[:n]], abs=1e-3)


# -- the package -----------------------------------------------------------------------------


def test_the_package_deploys_on_a_cpu_host_and_pins_torch():
    package = load_package(PACKAGE)
    config = package.config
    assert (config.model.id, config.model.app_id) == ("resnet50", "examples")
    assert config.inference_compute_info.num_accelerators == 0
    assert config.num_threads >= 2 * 32  # twice the default batch size
    requirements = (PACKAGE / "requirements.txt").read_text().split()
    assert "torch==2.13.0" in requirements


def test_the_published_signature_is_per_image():
    """Loaded with torch stubbed, as the uploader loads it: no torch needed here."""
    result = orchard("model", "signatures", str(PACKAGE))
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()[1:]]
    assert rows == [
        ["predict", "UNARY_UNARY", "image:", "IMAGE", "LIST[CONCEPT]"],
        ["top_k:", "INT", "=", "5"],
    ]


# -- orchard model local-test ----------------------------------------------------------------


@pytest.mark.e2e
@needs_torch
def test_local_test_builds_the_environment_and_classifies_an_image(tmp_path):
    """Builds the real environment with uv (torch from the find-links folder) and runs the
    model there, in a process of its own."""
    result = orchard(
        "model", "local-test", str(PACKAGE), "--find-links", str(WHEELS), "--home", str(tmp_path)
    )
    assert result.exit_code == 0, result.output
    assert "-> [Concept(name='class-" in result.output
    assert result.output.rstrip().endswith("1 passed")


# -- a server and a runner replica -----------------------------------------------------------


@dataclass
class Stack:
    server: ServerThread
    api: Api
    replica: Replica

    def model(self) -> Model:
        return Model(
            url=f"{self.server.user_id}/examples/models/resnet50",
            base_url=self.server.base_url,
            pat=self.server.pat,
            deployment_id="resnet50-dep",
        )

    def batches(self, readable: int, unreadable: int = 0) -> int:
        """Calls of ``predict`` so far with that many readable and unreadable images."""
        line = f"a batch of {readable + unreadable} image(s), {unreadable} unreadable"
        return self.replica.output().count(line)


def deploy(server: ServerThread, api: Api) -> tuple[str, Path, Path]:
    """Upload the example (the server builds its environment), deploy it into cc/np and make
    a runner for it; (runner id, package folder, the environment's python)."""
    version = upload_model(
        PACKAGE, user_id=server.user_id, base_url=server.base_url, pat=server.pat
    )
    model = r.Model(id="resnet50", app_id="examples", model_version=r.ModelVersion(id=version.id))
    pool = r.Nodepool(id="np", compute_cluster=r.ComputeCluster(id="cc"))
    deployment = r.Deployment(
        id="resnet50-dep",
        worker=r.Worker(model=model),
        nodepools=[pool],
        scheduling_choice=4,
        autoscale_config=r.AutoscaleConfig(max_replicas=1),
    )
    ok(api.call("PostDeployments", deployments=[deployment]))
    runner = r.Runner(worker=r.Worker(model=model))
    made = ok(api.call("PostRunners", compute_cluster_id="cc", nodepool_id="np", runners=[runner]))
    user = User(user_id=server.user_id, base_url=server.base_url, pat=server.pat)
    package, python = version_files(user, model, server.settings.home)
    return made.runners[0].id, package, python


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("resnet50")
    with ServerThread(tmp / "home", find_links=[WHEELS]) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        api = Api(channel, server.pat, server.user_id)
        make_cluster(api)
        make_nodepool(api, instance_types=[{"id": "local-cpu-2"}])
        runner_id, package, python = deploy(server, api)
        replica = Replica(server, runner_id, package, tmp, python=str(python), concurrency=8)
        replica.command += ["--log-level", "DEBUG"]
        with pytest.MonkeyPatch.context() as env:  # read by the replica when it starts
            env.setenv("RESNET50_BATCH_SIZE", str(BATCH))
            env.setenv("RESNET50_BATCH_WAIT_MS", str(WAIT_MS))
            replica.start()
        try:
            yield Stack(server, api, replica)
        finally:
            code = replica.stop()
            channel.close()
        assert code == 0, replica.output()


@pytest.fixture(scope="module")
def answers(stack: Stack) -> list[list[Concept]]:
    """Each image's concepts, all four sent in one request."""
    return list(stack.model().predict([{"image": Image(bytes=b)} for b in images()]))


@pytest.mark.e2e
@needs_torch
def test_the_images_of_one_request_are_classified_in_one_batch(stack, answers):
    """A real replica in the built environment: its runner's batching is what is checked."""
    assert len(answers) == BATCH
    for concepts in answers:
        assert_top_concepts(concepts)
    assert stack.batches(BATCH) >= 1


@pytest.mark.e2e
@needs_torch
def test_each_input_of_a_batch_keeps_its_own_top_k(stack, answers):
    """Per-input parameters travel through the real runner's batch."""
    calls = [
        {"image": Image(bytes=b), "top_k": k} for b, k in zip(images(), (1, 5, 2, 7), strict=True)
    ]
    got = stack.model().predict(calls)
    assert [len(concepts) for concepts in got] == [1, 5, 2, 7]
    assert_top_concepts(got[3], k=7)
    for concepts, expected in zip(got, answers, strict=True):
        assert_same_answer(concepts, expected)


@pytest.mark.e2e
@needs_torch
def test_concurrent_requests_share_one_batch(stack, answers):
    """Four clients at once, one image each, through the real server to the real replica:
    the batch only leaves full, so the four ride together (its log says so)."""
    before = stack.batches(BATCH)
    models = [stack.model() for _ in range(BATCH)]
    with ThreadPoolExecutor(BATCH) as pool:
        calls = [
            pool.submit(model.predict, image=Image(bytes=b))
            for model, b in zip(models, images(), strict=True)
        ]
        got = [call.result(timeout=120) for call in calls]
    for concepts, expected in zip(got, answers, strict=True):
        assert_top_concepts(concepts)
        assert_same_answer(concepts, expected)
    assert stack.batches(BATCH) == before + 1


@pytest.mark.e2e
@needs_torch
def test_an_unreadable_image_fails_alone(stack, answers):
    """The failure travels from the replica's model code to the client as that input's
    status, the rest of the request answered."""
    pictures = images()
    pictures[1] = b"these bytes are no image"
    request = service_pb2.PostModelOutputsRequest(
        inputs=[image_input(b) for b in pictures],
        runner_selector=r.RunnerSelector(deployment=r.Deployment(id="resnet50-dep")),
    )
    response = stack.api.call("PostModelOutputs", request)
    assert response.status.code == SC.MIXED_STATUS, response.status
    codes = [output.status.code for output in response.outputs]
    assert codes == [SC.SUCCESS, SC.FAILURE, SC.SUCCESS, SC.SUCCESS]
    failure = response.outputs[1].status.description
    assert "ResNet50Classifier.predict raised ValueError: not an image Pillow can read" in failure
    for index in (0, 2, 3):
        assert_same_answer(concepts_of(response.outputs[index]), answers[index])
    assert stack.batches(BATCH - 1, unreadable=1) == 1


def image_input(data: bytes) -> r.Input:
    """An input calling ``predict(image=...)``, encoded as the official typed client does."""
    inp = r.Input()
    encode_args([build_field("image", Image)[0]], {"image": Image(bytes=data)}, inp.data)
    inp.data.metadata["_method_name"] = "predict"
    return inp


def concepts_of(output: r.Output) -> list[Concept]:
    (part,) = output.data.parts
    return list(decode(build_field("return", list[Concept])[0], part.data))
