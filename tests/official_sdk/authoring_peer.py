"""Runs INSIDE a virtual environment with the official `clarifai` SDK (not Orchard's).

The official side of tests/test_authoring_official.py. Two jobs, chosen by argv[1]:

``wire IN OUT``
    IN (JSON) holds a model source, Orchard's signatures and cases (a value expression per
    method, plus Orchard's encoding of that value as a return value). For each case this writes
    to OUT: the official client's encoding of the value as the method's argument (``serialize``
    with Orchard's signature), the official encoding of it as a return value, and Orchard's
    return encoding decoded by the official ``deserialize`` and encoded again. It also writes
    the signatures the official SDK builds from the same model source.

``client``
    Drives the official typed ``ModelClient`` against an Orchard model served by the parent
    test process: every RPC is one JSON line on stdout (requests, base64) answered by one JSON
    line on stdin (responses). The last line carries the results of the calls.
"""

import base64
import json
import os
import sys

import numpy as np
from clarifai.client.input import Inputs
from clarifai.client.model_client import ModelClient
from clarifai.runners.models.model_class import ModelClass
from clarifai.runners.utils.data_types import (
    JSON,
    Audio,
    Concept,
    Frame,
    Image,
    NamedFields,
    Region,
    Text,
    Video,
)
from clarifai.runners.utils.data_utils import Param
from clarifai.runners.utils.method_signatures import (
    deserialize,
    serialize,
    signatures_from_json,
    signatures_to_json,
)
from clarifai_grpc.grpc.api import resources_pb2, service_pb2

NAMES = {
    "np": np,
    "ModelClass": ModelClass,
    "Param": Param,
    "JSON": JSON,
    "Audio": Audio,
    "Concept": Concept,
    "Frame": Frame,
    "Image": Image,
    "NamedFields": NamedFields,
    "Region": Region,
    "Text": Text,
    "Video": Video,
}


def b64(message):
    return base64.b64encode(message.SerializeToString()).decode()


def data_from(text):
    return resources_pb2.Data.FromString(base64.b64decode(text))


# -- wire ----------------------------------------------------------------------------------


def official_signatures(source):
    namespace = dict(NAMES)
    exec(source, namespace)
    found = {}
    for name, value in namespace.items():
        if isinstance(value, type) and issubclass(value, ModelClass) and value is not ModelClass:
            infos = value._get_method_infos()
            found[name] = signatures_to_json({n: i.signature for n, i in infos.items()})
    return found


def wire_case(case, signatures):
    sig = signatures[case["cls"]][case["method"]]
    value = eval(case["expr"], dict(NAMES))
    argument = serialize({sig.input_fields[0].name: value}, sig.input_fields)
    returned = serialize({"return": value}, sig.output_fields, is_output=True)
    decoded = deserialize(data_from(case["ours_out"]), sig.output_fields, is_output=True)
    again = serialize({"return": decoded}, sig.output_fields, is_output=True)
    return {"argument": b64(argument), "returned": b64(returned), "again": b64(again)}


def wire(path_in, path_out):
    with open(path_in) as source:
        job = json.load(source)
    signatures = {cls: signatures_from_json(text) for cls, text in job["signatures"].items()}
    result = {
        "signatures": official_signatures(job["model_source"]),
        "cases": [wire_case(case, signatures) for case in job["cases"]],
    }
    with open(path_out, "w") as out:
        json.dump(result, out)


# -- client --------------------------------------------------------------------------------


class PipeStub:
    """The three prediction RPCs, relayed to the parent process one JSON line each way."""

    def __init__(self, to_parent, from_parent):
        self.to_parent, self.from_parent = to_parent, from_parent

    def _relay(self, rpc, requests):
        line = json.dumps({"rpc": rpc, "requests": [b64(r) for r in requests]})
        self.to_parent.write(line + "\n")
        self.to_parent.flush()
        answer = json.loads(self.from_parent.readline())
        return [
            service_pb2.MultiOutputResponse.FromString(base64.b64decode(r))
            for r in answer["responses"]
        ]

    def GetModelVersion(self, request):
        raise RuntimeError("no model version here; fall back to _GET_SIGNATURES")

    def PostModelOutputs(self, request):
        return self._relay("PostModelOutputs", [request])[0]

    def GenerateModelOutputs(self, request):
        return iter(self._relay("GenerateModelOutputs", [request]))

    def StreamModelOutputs(self, requests):
        return iter(self._relay("StreamModelOutputs", list(requests)))


def plain(value):
    """Official SDK values as JSON."""
    if isinstance(value, Concept):
        return {"concept": [value.name, round(value.value, 6), value.id]}
    if isinstance(value, Image):
        return {"image": value.bytes.decode()}
    if isinstance(value, NamedFields):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def attempt(call):
    try:
        return {"value": plain(call())}
    except Exception as exc:
        return {"error": str(exc)}


def client_calls(client):
    legacy_input = Inputs.get_input_from_bytes("", text_bytes=b"legacy")
    return {
        "methods": attempt(lambda: sorted(client.available_methods())),
        "predict": attempt(lambda: client.predict(prompt="hi", n=2)),
        "positional": attempt(lambda: client.predict("yo", upper=True)),
        "batch": attempt(lambda: client.predict([{"prompt": "a"}, {"prompt": "b", "n": 3}])),
        "json": attempt(lambda: client.count_json(data={"a": 1, "b": [1, 2]}, extra=[4, 5])),
        "tag": attempt(lambda: client.tag(text=Text("big red dog"))),
        "pair": attempt(lambda: client.pair(a="x", b=2)),
        "flip": attempt(lambda: client.flip(image=Image(bytes=b"abc"))),
        "shout": attempt(lambda: client.shout(text="async")),
        "generate": attempt(lambda: list(client.generate(prompt="a b c"))),
        "stream": attempt(lambda: list(client.stream(iter(["x", "y"]), suffix="?"))),
        "fails": attempt(lambda: client.fails(x=1)),
        "legacy": attempt(
            lambda: client._predict_by_proto([legacy_input]).outputs[0].data.text.raw
        ),
        "legacy_params": attempt(
            lambda: (
                client._predict_by_proto([legacy_input], inference_params={"n": "3"})
                .outputs[0]
                .data.text.raw
            )
        ),
    }


def run_client():
    to_parent = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything else printed goes to stderr, not into the protocol
    client = ModelClient(PipeStub(to_parent, sys.stdin))
    results = client_calls(client)
    to_parent.write(json.dumps({"rpc": "done", "results": results}) + "\n")
    to_parent.flush()


if __name__ == "__main__":
    if sys.argv[1] == "wire":
        wire(sys.argv[2], sys.argv[3])
    else:
        run_client()
