"""Conformance of the authoring API with the official `clarifai` SDK (12.5.0), which nobody here
wrote: the same model source gives the same signatures; the official client's encoding of every
type decodes to the same Python values here; Orchard's return values encode exactly as the
official runtime's and decode with the official deserializer; and the official typed
``ModelClient`` calls an Orchard model (predict, batch, generate, stream, legacy inputs,
failures) with the answers it should get.

Marked e2e: the official SDK runs in its own virtual environment (built under .cache/ by
tests/test_official_sdk.py), in a child process; the typed client talks to this process over
the child's stdin/stdout, no sockets.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, List  # noqa: UP035 - the model source is run by both SDKs

import numpy as np
import pytest
from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from google.protobuf import json_format

from orchard import authoring
from orchard.authoring import Concept, Image, ModelClass, NamedFields, Text, signatures_json
from orchard.runners.models import calls, request_adapter
from orchard.runners.models.model_class import method_infos

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
PEER = Path(__file__).resolve().parent / "official_sdk" / "authoring_peer.py"

MODEL_SOURCE = '''
from typing import Iterator, List, Tuple

class Shapes(ModelClass):
    @ModelClass.method
    def predict(
        self,
        prompt: str,
        n: int = 3,
        t: float = 0.5,
        flag: bool = False,
        s: str = "hi",
        none: str = None,
        js: dict = {"a": 1},
        lst: List[int] = [1, 2],
        tup: Tuple[int, str] = (1, "a"),
        p: float = Param(default=0.7, description="temperature", min_value=0.0, max_value=2.0),
        c: str = Param(default="x", choices=["x", "y"]),
        nf: NamedFields(a=int, b=str) = None,
        arr: np.ndarray = None,
        img: Image = None,
        lc: List[Concept] = None,
    ) -> NamedFields(x=str, y=List[float]):
        """Doc.

        More doc."""
        return NamedFields(x=prompt, y=[t])

    @ModelClass.method
    def generate(self, prompt: str, k: int = 2) -> Iterator[str]:
        yield prompt

    @ModelClass.method
    def stream(self, chunks: Iterator[Text], k: int = 1) -> Iterator[Text]:
        yield from chunks

    @ModelClass.method
    def frames(self, video: Video) -> List[Frame]:
        return []

    @ModelClass.method
    def nested(
        self, x: List[List[Tuple[int, Image]]]
    ) -> List[NamedFields(a=Audio, b=List[Region])]:
        return []


class Types(ModelClass):
    @ModelClass.method
    def t_str(self, v: str) -> str: return v
    @ModelClass.method
    def t_bytes(self, v: bytes) -> bytes: return v
    @ModelClass.method
    def t_int(self, v: int) -> int: return v
    @ModelClass.method
    def t_float(self, v: float) -> float: return v
    @ModelClass.method
    def t_bool(self, v: bool) -> bool: return v
    @ModelClass.method
    def t_ndarray(self, v: np.ndarray) -> np.ndarray: return v
    @ModelClass.method
    def t_dict(self, v: dict) -> dict: return v
    @ModelClass.method
    def t_list_json(self, v: list) -> list: return v
    @ModelClass.method
    def t_text(self, v: Text) -> Text: return v
    @ModelClass.method
    def t_image(self, v: Image) -> Image: return v
    @ModelClass.method
    def t_audio(self, v: Audio) -> Audio: return v
    @ModelClass.method
    def t_video(self, v: Video) -> Video: return v
    @ModelClass.method
    def t_concept(self, v: Concept) -> Concept: return v
    @ModelClass.method
    def t_region(self, v: Region) -> Region: return v
    @ModelClass.method
    def t_frame(self, v: Frame) -> Frame: return v
    @ModelClass.method
    def t_list_int(self, v: List[int]) -> List[int]: return v
    @ModelClass.method
    def t_list_str(self, v: List[str]) -> List[str]: return v
    @ModelClass.method
    def t_list_concept(self, v: List[Concept]) -> List[Concept]: return v
    @ModelClass.method
    def t_list_list(self, v: List[List[int]]) -> List[List[int]]: return v
    @ModelClass.method
    def t_tuple(self, v: Tuple[int, str, float]) -> Tuple[int, str, float]: return v
    @ModelClass.method
    def t_named(self, v: NamedFields(a=int, b=List[str])) -> NamedFields(a=int, b=List[str]):
        return v
    @ModelClass.method
    def t_list_dict(self, v: List[dict]) -> List[dict]: return v
    @ModelClass.method
    def t_list_image(self, v: List[Image]) -> List[Image]: return v
    @ModelClass.method
    def t_list_region(self, v: List[Region]) -> List[Region]: return v
'''

# (method of Types, a value as Python source, evaluated with each SDK's own types)
CASES = [
    ("t_str", "'héllo ✓'"),
    ("t_str", "''"),
    ("t_bytes", "b'\\x00\\x01\\xff'"),
    ("t_int", "-(2**40)"),
    ("t_int", "0"),
    ("t_float", "0.1"),
    ("t_bool", "True"),
    ("t_ndarray", "np.arange(6, dtype=np.float32).reshape(2, 3)"),
    ("t_ndarray", "np.array([[1, -2], [3, 4]], dtype=np.int64)"),
    ("t_dict", "{'a': 1, 'b': [1, 2.5, {'c': None}], 'd': 'x'}"),
    ("t_list_json", "[1, 'x', {'y': True}]"),
    ("t_text", "Text('hello', url='http://example.com/t.txt')"),
    ("t_image", "Image(bytes=b'\\x89PNG', url='http://example.com/i.png')"),
    ("t_audio", "Audio(bytes=b'RIFF')"),
    ("t_video", "Video(url='http://example.com/v.mp4')"),
    ("t_concept", "Concept('cat', 0.5)"),
    (
        "t_region",
        "Region(box=[0.25, 0.5, 0.75, 1.0], concepts=[Concept('dog', 0.75)], "
        "mask=Image(bytes=b'm'), point=(0.5, 0.25, 0.0), track_id='t1', text='a dog', id='r1')",
    ),
    (
        "t_frame",
        "Frame(image=Image(bytes=b'img'), regions=[Region(box=[0.0, 0.0, 0.5, 0.5], id='r2')], "
        "time=1.5, index=3)",
    ),
    ("t_list_int", "[1, 2, 3]"),
    ("t_list_str", "['a', '', 'c']"),
    ("t_list_concept", "[Concept('a'), Concept('b c!', 0.25)]"),
    ("t_list_list", "[[1], [2, 3], []]"),
    ("t_tuple", "(1, 'a', 2.5)"),
    ("t_named", "NamedFields(a=1, b=['x', 'y'])"),
    ("t_list_dict", "[{'a': 1}, {'b': 'c'}]"),
    ("t_list_image", "[Image(bytes=b'1'), Image(url='http://example.com/2.png')]"),
    ("t_list_region", "[Region(box=[0.0, 0.25, 0.5, 0.75], id='a'), Region(text='t', id='b')]"),
]

OUR_NAMES: dict[str, Any] = {"np": np, **{n: getattr(authoring, n) for n in authoring.__all__}}


def _models() -> dict[str, type[ModelClass]]:
    namespace = dict(OUR_NAMES)
    exec(MODEL_SOURCE, namespace)
    return {"Shapes": namespace["Shapes"], "Types": namespace["Types"]}


MODELS = _models()


def _env(tmp_path: Path) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONIOENCODING": "utf-8"}


def _data(text: str) -> resources_pb2.Data:
    return resources_pb2.Data.FromString(base64.b64decode(text))


def _b64(message: Any) -> str:
    return base64.b64encode(message.SerializeToString()).decode()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(a.dtype == b.dtype and np.array_equal(a, b))
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    return bool(a == b)


def _our_return(method: str, value: Any) -> resources_pb2.Data:
    info = method_infos(MODELS["Types"])[method]
    output = calls.value_output(MODELS["Types"], info, value, is_legacy=False)
    assert output.status.code == calls.SC.SUCCESS, output.status.description
    return output.data


@pytest.fixture(scope="module")
def wire_results(official_python: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("wire")
    job = {
        "model_source": MODEL_SOURCE,
        "signatures": {name: signatures_json(cls) for name, cls in MODELS.items()},
        "cases": [
            {
                "cls": "Types",
                "method": m,
                "expr": e,
                "ours_out": _b64(_our_return(m, eval(e, OUR_NAMES))),
            }
            for m, e in CASES
        ],
    }
    (tmp / "in.json").write_text(json.dumps(job))
    done = subprocess.run(
        [str(official_python), str(PEER), "wire", str(tmp / "in.json"), str(tmp / "out.json")],
        env=_env(tmp),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads((tmp / "out.json").read_text())


def _parsed(signatures: str) -> dict[str, resources_pb2.MethodSignature]:
    return {
        name: json_format.ParseDict(sig, resources_pb2.MethodSignature())
        for name, sig in json.loads(signatures).items()
    }


@pytest.mark.parametrize("cls", sorted(MODELS))
def test_signatures_match_the_official_sdk(wire_results, cls):
    theirs = _parsed(wire_results["signatures"][cls])
    ours = _parsed(signatures_json(MODELS[cls]))
    assert list(ours) == list(theirs)
    for name in ours:
        assert ours[name] == theirs[name], name


@pytest.mark.parametrize(("index", "case"), list(enumerate(CASES)), ids=[m for m, _ in CASES])
def test_official_client_arguments_decode_to_the_same_values(wire_results, index, case):
    method, expr = case
    info = method_infos(MODELS["Types"])[method]
    argument = resources_pb2.Input(data=_data(wire_results["cases"][index]["argument"]))
    decoded = calls.decode_input(info, argument, {}).kwargs["v"]
    assert _same(decoded, eval(expr, OUR_NAMES)), (decoded, expr)


@pytest.mark.parametrize(("index", "case"), list(enumerate(CASES)), ids=[m for m, _ in CASES])
def test_our_return_values_encode_as_the_official_runtime_and_decode_there(
    wire_results, index, case
):
    method, expr = case
    ours = _our_return(method, eval(expr, OUR_NAMES))
    assert _data(wire_results["cases"][index]["returned"]) == ours
    assert _data(wire_results["cases"][index]["again"]) == ours


# -- the official typed client against an Orchard model --------------------------------------


class Conformance(ModelClass):
    @ModelClass.method
    def predict(self, prompt: str, n: int = 1, upper: bool = False) -> str:
        out = prompt * n
        return out.upper() if upper else out

    @ModelClass.method
    def count_json(self, data: dict, extra: List[int] | None = None) -> dict:  # noqa: UP006
        return {"keys": sorted(data), "n": len(data), "extra_sum": sum(extra or [])}

    @ModelClass.method
    def tag(self, text: Text, k: int = 2) -> List[Concept]:  # noqa: UP006
        return [Concept(w, 1.0 / (i + 1)) for i, w in enumerate(text.text.split()[:k])]

    @ModelClass.method
    def pair(self, a: str, b: int) -> NamedFields(s=str, n=int):
        return NamedFields(s=a * b, n=b)

    @ModelClass.method
    def flip(self, image: Image) -> Image:
        return Image(bytes=(image.bytes or b"")[::-1])

    @ModelClass.method
    async def shout(self, text: str) -> str:
        return text.upper() + "!"

    @ModelClass.method
    def generate(self, prompt: str) -> Iterator[str]:
        yield from prompt.split()

    @ModelClass.method
    def stream(self, chunks: Iterator[str], suffix: str = "!") -> Iterator[str]:
        for chunk in chunks:
            yield chunk + suffix

    @ModelClass.method
    def fails(self, x: int) -> int:
        raise ValueError(f"boom {x}")


_HANDLERS = {
    "PostModelOutputs": lambda model, reqs: [request_adapter.predict(model, reqs[0])],
    "GenerateModelOutputs": lambda model, reqs: list(request_adapter.generate(model, reqs[0])),
    "StreamModelOutputs": lambda model, reqs: list(request_adapter.stream(model, iter(reqs))),
}


def _serve_peer(peer: subprocess.Popen[str], model: ModelClass) -> dict[str, Any]:
    """Answer the peer's RPCs until it reports its results."""
    assert peer.stdin is not None and peer.stdout is not None
    while line := peer.stdout.readline():
        message = json.loads(line)
        if message["rpc"] == "done":
            return message["results"]
        requests = [
            service_pb2.PostModelOutputsRequest.FromString(base64.b64decode(r))
            for r in message["requests"]
        ]
        responses = _HANDLERS[message["rpc"]](model, requests)
        peer.stdin.write(json.dumps({"responses": [_b64(r) for r in responses]}) + "\n")
        peer.stdin.flush()
    raise AssertionError("the official client exited without reporting its results")


def test_official_typed_client_calls_an_orchard_model(official_python, tmp_path):
    with (
        (tmp_path / "peer.log").open("w") as log,
        subprocess.Popen(
            [str(official_python), str(PEER), "client"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=_env(tmp_path),
        ) as peer,
    ):
        try:
            results = _serve_peer(peer, Conformance())
        finally:
            peer.kill()
    logged = (tmp_path / "peer.log").read_text()
    values = {k: v.get("value", v) for k, v in results.items()}
    assert values == {
        "methods": sorted(method_infos(Conformance)),
        "predict": "hihi",
        "positional": "YO",
        "batch": ["a", "bbb"],
        "json": {"keys": ["a", "b"], "n": 2, "extra_sum": 9},
        "tag": [{"concept": ["big", 1.0, "big"]}, {"concept": ["red", 0.5, "red"]}],
        "pair": {"s": "xx", "n": 2},
        "flip": {"image": "cba"},
        "shout": "ASYNC!",
        "generate": ["a", "b", "c"],
        "stream": ["x?", "y?"],
        "fails": values["fails"],
        "legacy": "legacy",
        "legacy_params": "legacylegacylegacy",
    }, logged
    assert "Conformance.fails raised ValueError: boom 1" in results["fails"]["error"]
    assert "Traceback" not in results["fails"]["error"]
