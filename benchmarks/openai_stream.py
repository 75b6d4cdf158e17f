"""OpenAI streaming through Orchard: chunks per second of streamed completions, read with the
official ``openai`` client from the OpenAI-compatible endpoint, against the same model class
called in-process (target: at least 0.5x for tiny-chat).

Two models, each making one chunk per token and streaming ``--tokens`` of them per call:

- ``tiny-chat`` (examples/models/tiny-chat), a numpy transformer with a KV cache (``ignore_eos``,
  so every call is as long): the target's model, where generating a token costs what it costs
  a small language model on this CPU;
- ``chunks``, written by this script: an ``OpenAIModelClass`` that yields ready-made chunks and
  computes nothing, so that its figure is what the endpoint itself can carry (no target).

Orchard: ``orchard serve`` on loopback, both models uploaded and deployed with one replica
each (the server starts them), ``AsyncOpenAI`` streaming ``/completions`` from the HTTP port,
``--concurrency`` streams at once. In-process: the model class loaded from its folder in this
process, ``openai_stream_transport`` called directly and each chunk decoded from JSON, the same
number of streams one after another. Both sides run ``--rounds`` rounds, alternating; figures
are medians.

:func:`measure` is the Orchard half alone, for a server someone else started with the models
deployed (:func:`deploy`); ``benchmarks/http_api.py`` runs tiny-chat's comparison
(:func:`compare`) as a section of its own run.

    .venv/bin/python benchmarks/openai_stream.py [--tokens 256] [--calls 8] [--rounds 3]
        [--concurrency 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from common import http_port, start_server, stop_server
from openai import AsyncOpenAI

from orchard.client.nodepool import Nodepool
from orchard.client.uploads import upload_model
from orchard.client.user import User
from orchard.packaging.inspect import load_model_class

ROOT = Path(__file__).resolve().parents[1]
TINY_CHAT = ROOT / "examples" / "models" / "tiny-chat"
USER = "bench"
CHUNKS = """
from orchard.authoring import OpenAIModelClass


class Chunks(OpenAIModelClass):
    def completion_stream(self, request):
        chunk = {"id": "cmpl-chunks", "object": "text_completion", "created": 0, "model": ""}
        for _ in range(request["max_tokens"]):
            yield chunk | {"choices": [{"index": 0, "text": "x", "finish_reason": None}]}
        usage = {"prompt_tokens": 1, "completion_tokens": request["max_tokens"]}
        yield chunk | {"choices": [], "usage": usage}
"""
CHUNKS_CONFIG = """
model: {id: chunks, app_id: examples, model_type_id: text-to-text}
build_info: {python_version: "3.11"}
inference_compute_info: {cpu_limit: "0.5", cpu_memory: 256Mi}
"""
PROMPT = "User: What is a deployment?\nAssistant:"


def _model(model_id: str) -> str:
    return f"{USER}/examples/models/{model_id}"


def _request(model_id: str, tokens: int) -> dict[str, Any]:
    return {
        "model": _model(model_id),
        "prompt": PROMPT,
        "max_tokens": tokens,
        "extra_body": {"ignore_eos": True},
    }


async def measure(
    base_url: str,
    pat: str,
    *,
    model_id: str = "tiny-chat",
    tokens: int = 256,
    calls: int = 8,
    concurrency: int = 1,
) -> dict[str, float]:
    """Chunks per second of ``calls`` streamed completions of ``model_id`` (deployed for user
    ``bench``: :func:`deploy`) through the OpenAI-compatible endpoint at ``base_url``
    (``.../v2/ext/openai/v1``), ``concurrency`` at a time; and the median time to the first
    chunk."""
    client = AsyncOpenAI(base_url=base_url, api_key=pat, max_retries=0)
    firsts: list[float] = []
    chunks = 0
    queue = list(range(calls))

    async def worker() -> None:
        nonlocal chunks
        while queue:
            queue.pop()
            started, first = time.perf_counter(), True
            stream = await client.completions.create(**_request(model_id, tokens), stream=True)
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].text:
                    chunks += 1
                    if first:
                        firsts.append(time.perf_counter() - started)
                        first = False

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    await client.close()
    return {
        "chunks_per_s": round(chunks / elapsed, 1),
        "first_chunk_ms": round(statistics.median(firsts) * 1000, 2),
        "chunks": chunks,
    }


def measure_in_process(
    model: Any, model_id: str, *, tokens: int = 256, calls: int = 8
) -> dict[str, float]:
    """The same streams from the model class itself, in this process."""
    msg = json.dumps(
        {
            "model": _model(model_id),
            "prompt": PROMPT,
            "max_tokens": tokens,
            "ignore_eos": True,
            "stream": True,
            "openai_endpoint": "/completions",
        }
    )
    chunks, firsts = 0, []
    started = time.perf_counter()
    for _ in range(calls):
        call_started, first = time.perf_counter(), True
        for text in model.openai_stream_transport(msg):
            chunk = json.loads(text)
            if chunk["choices"] and chunk["choices"][0]["text"]:
                chunks += 1
                if first:
                    firsts.append(time.perf_counter() - call_started)
                    first = False
    elapsed = time.perf_counter() - started
    return {
        "chunks_per_s": round(chunks / elapsed, 1),
        "first_chunk_ms": round(statistics.median(firsts) * 1000, 2),
        "chunks": chunks,
    }


def chunks_package(root: Path) -> Path:
    """The ``chunks`` model's package, written under ``root``."""
    package = root / "chunks"
    (package / "1").mkdir(parents=True)
    (package / "1" / "model.py").write_text(CHUNKS)
    (package / "config.yaml").write_text(CHUNKS_CONFIG)
    (package / "requirements.txt").write_text("")
    return package


def deploy(base: str, pat: str, package: Path, model_id: str) -> None:
    """Upload the package and deploy it with one replica into the nodepool the server made
    for this host (cluster ``local``, nodepool ``default``); the server starts the replica."""
    version = upload_model(package, user_id=USER, base_url=base, pat=pat)
    user = User(user_id=USER, base_url=base, pat=pat)
    pool = Nodepool("default", compute_cluster_id="local", _client=user)
    model = {"id": model_id, "app_id": "examples", "model_version": {"id": version.id}}
    pool.create_deployment(
        deployment_id=f"{model_id}-dep",
        deployment_config={
            "worker": {"model": model},
            "scheduling_choice": 4,
            "nodepools": [{"id": "default", "compute_cluster": {"id": "local"}}],
            "autoscale_config": {"min_replicas": 1, "max_replicas": 1},
        },
    )


def _loaded(package: Path) -> Any:
    model = load_model_class(package, stub_missing=False)()
    model.load_model()
    return model


async def run(args: argparse.Namespace) -> dict[str, Any]:
    pat = secrets.token_hex(16)
    rounds: dict[str, dict[str, list[dict[str, float]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        packages = {"tiny-chat": TINY_CHAT, "chunks": chunks_package(Path(tmp))}
        home = Path(tmp) / "home"
        server, port = start_server(home, pat, "--offline", "--http-port", "0")
        try:
            for model_id, package in packages.items():
                deploy(f"http://127.0.0.1:{port}", pat, package, model_id)
            base_url = f"http://127.0.0.1:{http_port(home)}/v2/ext/openai/v1"
            for model_id, package in packages.items():
                rounds[model_id] = await compare(base_url, pat, model_id, package, args)
        finally:
            stop_server(server)
    return summarize(rounds, args)


async def compare(
    base_url: str, pat: str, model_id: str, package: Path, args: argparse.Namespace
) -> dict[str, list[dict[str, float]]]:
    """``args.rounds`` rounds of the deployed model through the endpoint at ``base_url``
    against its class loaded from ``package`` in this process, the two sides alternating."""
    sizes = {"tokens": args.tokens, "calls": args.calls}
    model = _loaded(package)
    # the first call is held until the model's replica is up
    await measure(base_url, pat, model_id=model_id, tokens=2, calls=1)
    sides: dict[str, list[dict[str, float]]] = {"orchard": [], "in_process": []}
    for _ in range(args.rounds):
        sides["in_process"].append(measure_in_process(model, model_id, **sizes))
        orchard = measure(base_url, pat, model_id=model_id, **sizes, concurrency=args.concurrency)
        sides["orchard"].append(await orchard)
    return sides


def medians(sides: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    median = {
        side: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        for side, runs in sides.items()
    }
    ratio = median["orchard"]["chunks_per_s"] / median["in_process"]["chunks_per_s"]
    return {"median": median, "orchard_vs_in_process": round(ratio, 3)}


def summarize(
    rounds: dict[str, dict[str, list[dict[str, float]]]], args: argparse.Namespace
) -> dict[str, Any]:
    tiny, ceiling = medians(rounds["tiny-chat"]), medians(rounds["chunks"])
    return {
        "benchmark": "openai_stream",
        "settings": {
            "tokens": args.tokens,
            "calls": args.calls,
            "rounds": args.rounds,
            "concurrency": args.concurrency,
        },
        "tiny_chat": tiny | {"target": ">= 0.5"},
        "meets_target": tiny["orchard_vs_in_process"] >= 0.5,
        "chunks_no_compute": ceiling,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=256, help="chunks per stream")
    parser.add_argument("--calls", type=int, default=8, help="streams per round and side")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=1, help="Orchard streams at once")
    print(json.dumps(asyncio.run(run(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
