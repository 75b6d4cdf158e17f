"""Dynamic batching: images/s of the resnet50 example through Orchard, batched and not, against
raw PyTorch running the same model code in-process on the same device, in one run.

- raw: the example's ``top`` (the batch to the device as one uint8 tensor, normalised there,
  one forward pass, softmax top-5 back to the host) called in a loop on an already decoded
  batch of ``--batch-size`` images, in this process: the ceiling;
- inprocess_predict: the example's ``predict`` called in this process on ``--batch-size``
  images as bytes (adds decoding and resizing with Pillow), for reference;
- orchard_batched: a real ``orchard serve`` and one replica of the example with
  ``RESNET50_BATCH_SIZE=--batch-size``, ``--concurrency`` clients each sending one 224x224 JPEG
  (as bytes, encoded as the official typed client encodes them) per PostModelOutputs and the
  next one when it is answered;
- orchard_unbatched: the same with a second replica whose batch size is 1 (one image per call).

The replicas are served by ``orchard model serve`` (the local-runner flow) from this very
interpreter, each from a copy of the example folder under its own model id (the batch size
comes from the environment, so the example itself is unchanged). A server-built environment is
not used, so the benchmark runs where uv cannot install torch (no index). Clients run in
``--client-procs`` processes. Throughput is measured between two answers (the first one after
a warm-up and the last one of the round), so a batch is never cut in half; every figure is
the median of ``--rounds``, and ``ratios`` compare the medians. Failed requests are counted
and must be zero.

Here (CPU; torch 2.13.0's CPU wheel from /opt/wheels), in a virtual environment of its own:

    uv venv .cache/bench-torch --python 3.11
    uv pip install --python .cache/bench-torch/bin/python --find-links /opt/wheels \\
        -e ".[models]" torch==2.13.0
    .cache/bench-torch/bin/python benchmarks/gpu_batching.py --device cpu

On the accelerator machine (an NVIDIA H200; Python 3.12 and torch (CUDA) in
/opt/torch/.venv; no network, no package index), with the wheels of Orchard's dependencies
that it lacks, downloaded here and carried in the working tree (``.cache/`` is ignored by git):

    benchmarks/gpu_wheels.sh .cache/gpu-wheels                        # here, with network
    benchmarks/gpu_wheels.sh --install .cache/gpu-wheels .cache/gpu-site \\
        /opt/torch/.venv/bin/python3                                  # there
    PYTHONPATH=$PWD:$PWD/.cache/gpu-site /opt/torch/.venv/bin/python3 \\
        benchmarks/gpu_batching.py --device cuda

``--device cuda`` defaults to the issue's setting (batch 64, 256 clients in 4 processes,
15 s rounds); its target is ``orchard_batched_over_raw >= 0.7``.

    python benchmarks/gpu_batching.py [--device cpu|cuda] [--batch-size N] [--wait-ms MS]
        [--concurrency C] [--client-procs P] [--seconds S] [--warmup S] [--rounds R]
        [--images-per-request N]

At batch 64 on an H200 the raw ceiling is about 11,000 images/s; at one image per request that
is as many calls per second through one server process, which the CPU side may not keep up
with. ``--images-per-request 8`` measures the batching with an eighth of the calls (a request's
inputs join the same batch queue as everyone else's).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import io
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import PIL.Image
import yaml
from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2
from common import start_server, stop_server

from orchard.authoring import Image
from orchard.client.predictions import RETRYABLE
from orchard.codec.serializers import encode_args
from orchard.runners.utils.method_signatures import build_field
from orchard.wire import callable_for

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "models" / "resnet50"
USER = "bench"
SUCCESS = status_code_pb2.SUCCESS
DEFAULTS = {  # per device: the setting on a GPU, a quick one on a CPU
    "cuda": {
        "batch_size": 64,
        "concurrency": 256,
        "client_procs": 4,
        "seconds": 15.0,
        "concurrent_batches": 2,
    },
    "cpu": {
        "batch_size": 8,
        "concurrency": 16,
        "client_procs": 1,
        "seconds": 15.0,
        "concurrent_batches": 1,
    },
}
TARGET = {"orchard_batched_over_raw_min": 0.7}
NOTES = {
    "cpu": "a dry run on CPU, which shows the benchmark working end to end; the target is for "
    "--device cuda (batch 64), where batching is what lifts throughput",
    "cuda": "the issue's setting when run with the defaults of --device cuda",
}
BURST = 0.01  # seconds: answers this close to the first one of a window came with it


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- images and requests ---------------------------------------------------------------------


def jpegs(count: int, seed: int = 0) -> list[bytes]:
    """``count`` distinct 224x224 JPEGs (smooth colour fields with some noise, quality 90)."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:224, 0:224].astype(np.float32) / 224
    found = []
    for _ in range(count):
        a, b, c = rng.uniform(0, 255, 3)
        field = np.stack([a * xs, b * ys, c * (1 - xs * ys)], axis=2)
        noisy = field + rng.normal(0, 12, field.shape)
        out = io.BytesIO()
        PIL.Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(out, "JPEG", quality=90)
        found.append(out.getvalue())
    return found


def predict_request(pictures: list[bytes], deployment: str) -> service_pb2.PostModelOutputsRequest:
    """``predict(image=...)`` for ``deployment``, one input per picture, each as the official
    typed client encodes it."""
    inputs = []
    for picture in pictures:
        inp = resources_pb2.Input()
        encode_args([build_field("image", Image)[0]], {"image": Image(bytes=picture)}, inp.data)
        inp.data.metadata["_method_name"] = "predict"
        inputs.append(inp)
    return service_pb2.PostModelOutputsRequest(
        inputs=inputs,
        runner_selector=resources_pb2.RunnerSelector(
            deployment=resources_pb2.Deployment(id=deployment, user_id=USER)
        ),
    )


# -- measuring ----------------------------------------------------------------------------------


def rate(done: list[float], weight: int = 1, burst: float = 0.0) -> float:
    """Items/s between the first and the last of the completion times ``done``, each of
    ``weight`` items. The window opens at the first completion, so the items completed then
    (those within ``burst`` seconds of it: the answers of one batch) are not counted."""
    done = sorted(done)
    opened = bisect.bisect_right(done, done[0] + burst) if done else 0
    if len(done) <= opened or done[-1] <= done[0]:
        return 0.0
    return (len(done) - opened) * weight / (done[-1] - done[0])


def shares(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` near-equal whole parts."""
    base, extra = divmod(total, parts)
    return [base + (i < extra) for i in range(parts)]


@dataclass
class Drive:
    """What one client process saw: completion times of answered requests, their latencies
    (seconds), and failed requests."""

    done: list[float]
    latencies: list[float]
    failed: int


async def _drive(
    address: str, pat: str, requests: list[Any], concurrency: int, start: float, until: float
) -> Drive:
    result = Drive([], [], 0)
    metadata = (("authorization", f"Key {pat}"),)
    async with grpc.aio.insecure_channel(address) as channel:
        call = callable_for(channel, "PostModelOutputs")

        async def client(index: int) -> None:
            while (sent := time.monotonic()) < until:
                response = await call(requests[index % len(requests)], metadata=metadata)
                index += concurrency
                answered = time.monotonic()
                if response.status.code != SUCCESS:
                    result.failed += 1
                elif start <= answered <= until:
                    result.done.append(answered)
                    result.latencies.append(answered - sent)

        await asyncio.gather(*(client(i) for i in range(concurrency)))
    return result


def drive(
    address: str,
    pat: str,
    pictures: list[bytes],
    deployment: str,
    concurrency: int,
    start: float,
    until: float,
    per_request: int = 1,
) -> Drive:
    """A client process's part of a load: ``concurrency`` clients, each sending its next
    request (of ``per_request`` images) when its last one is answered, until ``until``
    (monotonic clock); answers before ``start`` are the warm-up, and not counted."""
    ring = pictures * per_request
    requests = [
        predict_request(ring[i : i + per_request], deployment) for i in range(len(pictures))
    ]
    return asyncio.run(_drive(address, pat, requests, concurrency, start, until))


class Load:
    """Closed-loop load on one deployment from a pool of client processes."""

    def __init__(
        self, port: int, pat: str, pictures: list[bytes], args: argparse.Namespace
    ) -> None:
        self.address, self.pat, self.pictures = f"127.0.0.1:{port}", pat, pictures
        self.concurrency, self.procs = args.concurrency, args.client_procs
        self.per_request = args.images_per_request
        self.pool = ProcessPoolExecutor(self.procs, mp_context=get_context("spawn"))
        list(self.pool.map(abs, range(self.procs)))  # the processes are up before any timing

    def run(self, deployment: str, warmup: float, seconds: float) -> dict[str, float]:
        """Images/s and p50 latency (ms) over ``seconds`` after ``warmup`` seconds."""
        start = time.monotonic() + warmup
        until = start + seconds
        parts = [
            self.pool.submit(
                drive,
                self.address,
                self.pat,
                self.pictures,
                deployment,
                n,
                start,
                until,
                self.per_request,
            )
            for n in shares(self.concurrency, self.procs)
            if n
        ]
        drives = [part.result() for part in parts]
        done = [t for d in drives for t in d.done]
        latencies = [x for d in drives for x in d.latencies]
        return {
            "images_per_s": round(rate(done, self.per_request, burst=BURST), 2),
            "p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else 0.0,
            "failed": sum(d.failed for d in drives),
        }

    def close(self) -> None:
        self.pool.shutdown()


def timed_loop(step: Callable[[], object], seconds: float) -> list[float]:
    """Completion times of ``step`` called over and over for ``seconds``."""
    done = [time.monotonic()]
    until = done[0] + seconds
    while done[-1] < until:
        step()
        done.append(time.monotonic())
    return done


# -- raw PyTorch, in this process ---------------------------------------------------------------


class Raw:
    """The example's model loaded in this process, on the same device as the replicas."""

    def __init__(self, pictures: list[bytes], batch_size: int) -> None:
        import torch

        from orchard.packaging.inspect import load_model_class

        self.model = load_model_class(EXAMPLE, stub_missing=False)()
        self.model.load_model()
        host_pixels = type(self.model).load_model.__globals__["host_pixels"]  # model.py's own
        self.images = [Image(bytes=pictures[i % len(pictures)]) for i in range(batch_size)]
        self.pixels = torch.stack([host_pixels(image) for image in self.images])
        self.top_k = [5] * batch_size

    def forward(self) -> None:
        self.model.top(self.pixels, 5)

    def predict(self) -> None:
        self.model.predict(image=self.images, top_k=self.top_k)

    def run(self, seconds: float) -> dict[str, float]:
        n = len(self.images)
        return {
            "raw_images_per_s": round(rate(timed_loop(self.forward, seconds), n), 2),
            "inprocess_predict_images_per_s": round(
                rate(timed_loop(self.predict, seconds / 2), n), 2
            ),
        }

    def describe(self) -> dict[str, str]:
        """The device the model runs on, its number type and torch's version."""
        import torch

        device = self.model.device
        if device.type == "cuda":
            name = torch.cuda.get_device_name(device)
        else:
            name = f"{len(os.sched_getaffinity(0))} CPU cores, {torch.get_num_threads()} threads"
        return {
            "device": device.type,
            "name": name,
            "dtype": str(self.model.dtype),
            "torch": torch.__version__,
        }


# -- Orchard: a server and replicas served from this interpreter --------------------------------


def model_copy(root: Path, model_id: str) -> Path:
    """A copy of the example folder whose config.yaml names the model ``model_id``."""
    target = root / model_id
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("__pycache__"))
    config = yaml.safe_load((target / "config.yaml").read_text())
    config["model"]["id"] = model_id
    (target / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return target


@contextmanager
def served(
    folder: Path, port: int, pat: str, environ: dict[str, str], concurrency: int, log: Path
) -> Iterator[str]:
    """``orchard model serve FOLDER`` against the server on ``port`` until the block ends
    (stopped with SIGINT, as Ctrl-C would); yields its deployment's id."""
    model_id = yaml.safe_load((folder / "config.yaml").read_text())["model"]["id"]
    env = {
        **os.environ,
        **environ,
        "ORCHARD_API_BASE": f"http://127.0.0.1:{port}",
        "ORCHARD_PAT": pat,
        "ORCHARD_USER_ID": USER,
        "ORCHARD_CONFIG": str(log.with_suffix(".none")),
    }
    command = [sys.executable, "-m", "orchard", "model", "serve", str(folder)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*command, "--concurrency", str(concurrency)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        wait_for_line(proc, log, f"Serving '{model_id}' as deployment")
        yield f"local-{model_id}"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for_line(
    proc: subprocess.Popen[bytes], log: Path, line: str, timeout: float = 300
) -> None:
    deadline = time.monotonic() + timeout
    while line not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"`orchard model serve` did not start:\n{log.read_text()[-4000:]}")
        time.sleep(0.2)


def wait_until_answered(port: int, pat: str, deployment: str, picture: bytes) -> None:
    """Send one request until it is answered: the replica has loaded the model and connected.
    The server holds a request meanwhile, up to its hold bound; past it the answer says to
    retry (the codes the SDK retries on), and the request is sent again."""
    deadline = time.monotonic() + 600
    metadata = (("authorization", f"Key {pat}"),)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = callable_for(channel, "PostModelOutputs")
        while True:
            request = predict_request([picture], deployment)
            response = call(request, metadata=metadata, timeout=120)
            if response.status.code == SUCCESS:
                return
            if response.status.code not in RETRYABLE or time.monotonic() > deadline:
                raise RuntimeError(f"{deployment} did not answer: {response.status}")
            time.sleep(1.0)


# -- the run ------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    pictures = jpegs(32)
    load_env = {"RESNET50_DEVICE": args.device, "RESNET50_BATCH_WAIT_MS": str(args.wait_ms)}
    capacity = (args.concurrent_batches + 1) * args.batch_size  # running, and one gathering
    pat = secrets.token_hex(16)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server, port = start_server(root / "home", pat)
        load = Load(port, pat, pictures, args)
        try:
            batched_env = {
                **load_env,
                "RESNET50_BATCH_SIZE": str(args.batch_size),
                "RESNET50_CONCURRENT_BATCHES": str(args.concurrent_batches),
            }
            single_env = {**load_env, "RESNET50_BATCH_SIZE": "1"}
            batched_copy = model_copy(root, "resnet50-batched")
            single_copy = model_copy(root, "resnet50-single")
            with (
                served(batched_copy, port, pat, batched_env, capacity, root / "b.log") as batched,
                served(single_copy, port, pat, single_env, capacity, root / "s.log") as single,
            ):
                say("loading the model in this process (raw PyTorch)")
                os.environ["RESNET50_DEVICE"] = args.device
                raw = Raw(pictures, args.batch_size)
                for deployment in (batched, single):
                    wait_until_answered(port, pat, deployment, pictures[0])
                rounds = measure(args, raw, load, batched, single)
        finally:
            load.close()
            stop_server(server)
    return summarize(args, raw.describe(), pictures, rounds)


def measure(
    args: argparse.Namespace, raw: Raw, load: Load, batched: str, single: str
) -> list[dict[str, Any]]:
    """The rounds: raw PyTorch, Orchard batched, Orchard unbatched, one after another."""
    raw.run(args.warmup)
    rounds = []
    for number in range(1, args.rounds + 1):
        say(f"round {number} of {args.rounds}")
        figures: dict[str, Any] = raw.run(args.seconds)
        figures["orchard_batched"] = load.run(batched, args.warmup, args.seconds)
        figures["orchard_unbatched"] = load.run(single, args.warmup, args.seconds)
        say(json.dumps(figures))
        rounds.append(figures)
    return rounds


def summarize(
    args: argparse.Namespace,
    device: dict[str, str],
    pictures: list[bytes],
    rounds: list[dict[str, Any]],
) -> dict[str, Any]:
    def median(pick: Callable[[dict[str, Any]], float]) -> float:
        return round(statistics.median(pick(r) for r in rounds), 2)

    med = {
        "raw_images_per_s": median(lambda r: r["raw_images_per_s"]),
        "inprocess_predict_images_per_s": median(lambda r: r["inprocess_predict_images_per_s"]),
        "orchard_batched_images_per_s": median(lambda r: r["orchard_batched"]["images_per_s"]),
        "orchard_batched_p50_ms": median(lambda r: r["orchard_batched"]["p50_ms"]),
        "orchard_unbatched_images_per_s": median(lambda r: r["orchard_unbatched"]["images_per_s"]),
        "orchard_unbatched_p50_ms": median(lambda r: r["orchard_unbatched"]["p50_ms"]),
    }
    raw = med["raw_images_per_s"] or 1.0
    return {
        "benchmark": "gpu_batching",
        **device,
        "note": NOTES[device["device"]],
        "settings": {
            "batch_size": args.batch_size,
            "batch_wait_ms": args.wait_ms,
            "replica_concurrency": (args.concurrent_batches + 1) * args.batch_size,
            "concurrent_batches": args.concurrent_batches,
            "clients": args.concurrency,
            "images_per_request": args.images_per_request,
            "client_processes": args.client_procs,
            "seconds_per_measurement": args.seconds,
            "warmup_seconds": args.warmup,
            "rounds": args.rounds,
            "image": f"224x224 JPEG, {sum(map(len, pictures)) // len(pictures)} bytes on average",
        },
        "median": med,
        "rounds": rounds,
        "ratios": {
            "orchard_batched_over_raw": round(med["orchard_batched_images_per_s"] / raw, 3),
            "orchard_unbatched_over_raw": round(med["orchard_unbatched_images_per_s"] / raw, 3),
            "orchard_batched_over_unbatched": round(
                med["orchard_batched_images_per_s"]
                / (med["orchard_unbatched_images_per_s"] or 1.0),
                2,
            ),
            "inprocess_predict_over_raw": round(med["inprocess_predict_images_per_s"] / raw, 3),
        },
        "targets": TARGET,
        "failed_requests": sum(
            r[side]["failed"] for r in rounds for side in ("orchard_batched", "orchard_unbatched")
        ),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--device", choices=sorted(DEFAULTS), default="cpu")
    parser.add_argument("--batch-size", type=int, help="cuda: 64, cpu: 8")
    parser.add_argument("--wait-ms", type=float, default=2.0, help="batch_wait_ms (default 2)")
    parser.add_argument("--concurrency", type=int, help="clients in all (cuda: 256, cpu: 16)")
    parser.add_argument("--client-procs", type=int, help="client processes (cuda: 4, cpu: 1)")
    parser.add_argument("--seconds", type=float, help="per measurement (default 15)")
    parser.add_argument("--warmup", type=float, help="seconds before each (default: seconds/4)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--concurrent-batches",
        type=int,
        help="max_concurrent_batches of the batched replica (cuda: 2, so that decoding one batch "
        "overlaps the forward pass of another; cpu: 1)",
    )
    parser.add_argument(
        "--images-per-request",
        type=int,
        default=1,
        help="inputs of each request (default 1; up to 128): fewer calls for the server per image",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.images_per_request <= 128:
        parser.error("--images-per-request must be between 1 and 128")
    for name, value in DEFAULTS[args.device].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.warmup is None:
        args.warmup = args.seconds / 4
    return args


def main() -> None:
    print(json.dumps(run(parse_args()), indent=2))


if __name__ == "__main__":
    main()
