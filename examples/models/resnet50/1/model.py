"""ResNet-50 image classifier: an image in, its 5 most likely of 1,000 classes out.

The network is ResNet-50 (bottleneck blocks [3, 4, 6, 3], 1,000 classes), defined here with
plain ``torch.nn``, so torch is its only heavy dependency. Its parameters have torchvision's
names, so a torchvision-format ``state_dict`` loads as it is.

Weights: the ``state_dict`` saved (``torch.save``) at the local path ``RESNET50_CHECKPOINT``;
nothing is ever downloaded. Without it the weights are random, drawn from a fixed seed (the same
at every start): the scores are then a real softmax of a real ResNet-50, and meaningless as
labels. Concepts: the class index as ``class-0`` .. ``class-999`` (id and name), generated here
because no label list ships with the example; ``RESNET50_LABELS`` may name a local text file
with 1,000 names, one per line, in class order, to use as the names (the ids stay).

Device: a GPU when torch sees one (a replica placed on a GPU nodepool gets its GPUs in
``CUDA_VISIBLE_DEVICES``), in bfloat16; else the CPU, in float32. ``RESNET50_DEVICE=cpu`` or
``cuda`` forces one.

``predict`` is batched (``@ModelClass.method(batch_size=..., batch_wait_ms=...)``): the runner
gathers the inputs of concurrent requests and calls it with up to ``RESNET50_BATCH_SIZE``
images (default 32), the first of them waiting at most ``RESNET50_BATCH_WAIT_MS`` (default 2)
for company; ``RESNET50_CONCURRENT_BATCHES`` (default 1) batches may run at once, so that on
a GPU one batch's decoding overlaps another's forward pass. On a CUDA device with torchvision
installed, the JPEGs of a call are decoded on the GPU together (nvJPEG, through
``torchvision.io.decode_jpeg``), since decoding on the CPU, even in parallel threads, caps a
GPU replica at a fraction of what the network does; other images, and every image elsewhere
(or with ``RESNET50_DECODE=pillow``), are decoded with Pillow in parallel threads. Each image is
resized (its shorter side to 224 pixels) and center-cropped to 224 x 224, and the call's images
go to the device as one uint8 tensor, which is normalised there (ImageNet mean and standard
deviation) and classified in one forward pass. An input whose bytes are not an image fails
alone, saying so; the other inputs of its call are answered. The batch settings are read when
this file is loaded; the other variables in ``load_model``; all of them where the model runs
(the runner's environment: what the model's config declares for the replicas the server
starts, the shell's for ``orchard model serve``).

This example imports Orchard's authoring classes only: the official SDK's ``ModelClass`` has no
dynamic batching, so this package is uploaded with ``orchard model upload``.

On a GPU: ``config.yaml`` asks for no accelerator, so the example deploys on CPU-only hosts.
For a GPU nodepool, set ``inference_compute_info.num_accelerators: 1`` in ``config.yaml``, upload
it from a server whose builds reach PyPI (whose ``torch==2.13.0`` wheel is the CUDA build; a
CPU-only ``--find-links`` folder would give the CPU build), create a nodepool of a
``local-gpu-1x-...`` instance type (``orchard list-instances``) and deploy there.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
from torch import nn

from orchard.authoring import Concept, Image, ModelClass, Param

BATCH_SIZE = int(os.environ.get("RESNET50_BATCH_SIZE", "32"))
BATCH_WAIT_MS = float(os.environ.get("RESNET50_BATCH_WAIT_MS", "2"))
CONCURRENT_BATCHES = int(os.environ.get("RESNET50_CONCURRENT_BATCHES", "1"))
SIZE = 224
CLASSES = 1000
SEED = 0
MEAN = (0.485, 0.456, 0.406)  # ImageNet, per RGB channel, of pixel values scaled to [0, 1]
STD = (0.229, 0.224, 0.225)
JPEG = b"\xff\xd8\xff"
TOP_K = Param(default=5, description="how many concepts to return", min_value=1, max_value=CLASSES)
log = logging.getLogger("resnet50")


# -- the network ---------------------------------------------------------------------------------


class Bottleneck(nn.Module):
    """1x1 (reduce), 3x3 (``stride``), 1x1 (expand x4) convolutions plus the shortcut."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + shortcut)


class ResNet50(nn.Module):
    """ResNet-50 over NCHW images normalised per channel; returns the logits of ``classes``."""

    def __init__(self, classes: int = CLASSES) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._stage(64, 64, 3, stride=1)
        self.layer2 = self._stage(256, 128, 4, stride=2)
        self.layer3 = self._stage(512, 256, 6, stride=2)
        self.layer4 = self._stage(1024, 512, 3, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * Bottleneck.expansion, classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def _stage(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        first = Bottleneck(inplanes, planes, stride)
        rest = [Bottleneck(planes * Bottleneck.expansion, planes) for _ in range(blocks - 1)]
        return nn.Sequential(first, *rest)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def build_network(checkpoint: str | None) -> ResNet50:
    """ResNet-50 in eval mode with the weights of ``checkpoint`` (a local ``state_dict`` file,
    every parameter and buffer present), or random ones from ``SEED``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        net = ResNet50()
    if checkpoint:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"RESNET50_CHECKPOINT={checkpoint}: no such file")
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.eval()


# -- images, devices, names ----------------------------------------------------------------------


def pixels_of(image: Image) -> np.ndarray | ValueError:
    """The image as SIZE x SIZE RGB pixels (uint8, height x width x channel): its shorter side
    resized to SIZE, then center-cropped; or a ValueError saying why it cannot be read."""
    try:
        picture = image.to_pil()
        picture.draft("RGB", (SIZE, SIZE))  # a large JPEG is decoded at a reduced scale
        picture.load()
        rgb = picture if picture.mode == "RGB" else picture.convert("RGB")
    except Exception as exc:
        return ValueError(f"not an image Pillow can read ({type(exc).__name__}: {exc})")
    if rgb.size != (SIZE, SIZE):
        rgb = PIL.ImageOps.fit(rgb, (SIZE, SIZE), PIL.Image.Resampling.BILINEAR)
    return np.asarray(rgb)


def host_pixels(image: Image) -> torch.Tensor | ValueError:
    """:func:`pixels_of` as a 3 x SIZE x SIZE tensor (channels first), or the error."""
    pixels = pixels_of(image)
    return pixels if isinstance(pixels, ValueError) else torch.from_numpy(pixels).permute(2, 0, 1)


Decoder = Callable[[list[bytes]], list[torch.Tensor]]


def device_decoder(device: torch.device) -> Decoder | None:
    """Decodes JPEGs on ``device`` together (nvJPEG: 3 x H x W uint8 tensors there), when the
    device is a GPU and torchvision is installed; else None."""
    if device.type != "cuda" or os.environ.get("RESNET50_DECODE") == "pillow":
        return None
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:
        return None

    def decode(jpegs: list[bytes]) -> list[torch.Tensor]:
        data = [torch.frombuffer(bytearray(jpeg), dtype=torch.uint8) for jpeg in jpegs]
        return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))

    return decode


def fit(picture: torch.Tensor) -> torch.Tensor:
    """A 3 x H x W uint8 image with its shorter side resized to SIZE (bilinear), then
    center-cropped to SIZE x SIZE, where it is (what ``PIL.ImageOps.fit`` does on the host)."""
    height, width = picture.shape[1:]
    if (height, width) == (SIZE, SIZE):
        return picture
    scale = SIZE / min(height, width)
    size = (max(SIZE, round(height * scale)), max(SIZE, round(width * scale)))
    resized = nn.functional.interpolate(
        picture[None].float(), size=size, mode="bilinear", antialias=True, align_corners=False
    )[0]
    top, left = (size[0] - SIZE) // 2, (size[1] - SIZE) // 2
    cropped = resized[:, top : top + SIZE, left : left + SIZE]
    return cropped.round().clamp(0, 255).to(torch.uint8)


def pick_device() -> torch.device:
    """``RESNET50_DEVICE`` if set, else the first GPU torch sees, else the CPU."""
    wanted = os.environ.get("RESNET50_DEVICE", "")
    if wanted:
        return torch.device(wanted)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def class_names(labels: str | None) -> list[str]:
    """``class-0`` .. ``class-999``, or the lines of the file ``labels`` (one per class)."""
    if not labels:
        return [f"class-{index}" for index in range(CLASSES)]
    names = Path(labels).expanduser().read_text().splitlines()
    if len(names) != CLASSES:
        raise ValueError(f"RESNET50_LABELS={labels} has {len(names)} lines; it needs {CLASSES}")
    return [name.strip() for name in names]


def decode_threads() -> int:
    """One per CPU this process may run on, up to 16 (Pillow decodes without the GIL)."""
    return min(16, len(os.sched_getaffinity(0)))


# -- the model -----------------------------------------------------------------------------------


class ResNet50Classifier(ModelClass):
    def load_model(self) -> None:
        self.device = pick_device()
        self.dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        net = build_network(os.environ.get("RESNET50_CHECKPOINT"))
        self.net = net.to(self.device, self.dtype, memory_format=torch.channels_last)
        self.mean = torch.tensor(MEAN, device=self.device).view(1, 3, 1, 1) * 255
        self.scale = torch.tensor(STD, device=self.device).view(1, 3, 1, 1) * 255
        self.ids = [f"class-{index}" for index in range(CLASSES)]
        self.names = class_names(os.environ.get("RESNET50_LABELS"))
        self.decoder = ThreadPoolExecutor(decode_threads(), thread_name_prefix="decode")
        self.on_device = device_decoder(self.device)
        self.top(torch.zeros((1, 3, SIZE, SIZE), dtype=torch.uint8), 1)  # the first call's setup
        log.info(
            "ResNet-50 on %s (%s), batches of up to %d, JPEGs decoded %s",
            self.device,
            self.dtype,
            BATCH_SIZE,
            "on the device" if self.on_device else "with Pillow",
        )

    @ModelClass.method(
        batch_size=BATCH_SIZE,
        batch_wait_ms=BATCH_WAIT_MS,
        max_concurrent_batches=CONCURRENT_BATCHES,
    )
    def predict(
        self, image: list[Image], top_k: list[int] = TOP_K
    ) -> list[list[Concept] | Exception]:
        """The image's top_k classes, most likely first, each scored by its softmax
        probability."""
        decoded = self.decode(image)
        readable = [i for i, d in enumerate(decoded) if isinstance(d, torch.Tensor)]
        log.debug(
            "a batch of %d image(s), %d unreadable", len(decoded), len(decoded) - len(readable)
        )
        answers = [d if isinstance(d, Exception) else [] for d in decoded]
        if readable:
            pixels = torch.stack([decoded[i].to(self.device) for i in readable])
            ranked = self.concepts(pixels, [top_k[i] for i in readable])
            for i, concepts in zip(readable, ranked, strict=True):
                answers[i] = concepts
        return answers

    def decode(self, images: list[Image]) -> list[torch.Tensor | ValueError]:
        """Each image as 3 x SIZE x SIZE uint8 pixels (on the device when it decoded them), or
        the error saying why it is not an image. JPEGs go to the device's decoder together when
        there is one; a broken one among them makes Pillow decode them all, saying which."""
        decoded: list[torch.Tensor | ValueError | None] = [None] * len(images)
        jpegs = [i for i, im in enumerate(images) if self.on_device and im.bytes[:3] == JPEG]
        if self.on_device is not None and jpegs:
            try:
                pictures = self.on_device([images[i].bytes for i in jpegs])
                for i, picture in zip(jpegs, pictures, strict=True):
                    decoded[i] = fit(picture)
            except RuntimeError as exc:
                log.debug("the device could not decode the batch (%s); Pillow decodes it", exc)
                decoded = [None] * len(images)
        rest = [i for i, d in enumerate(decoded) if d is None]
        found = self.decoder.map(host_pixels, [images[i] for i in rest])
        for i, pixels in zip(rest, found, strict=True):
            decoded[i] = pixels
        return [d for d in decoded if d is not None]

    def concepts(self, pixels: torch.Tensor, top_k: Sequence[int]) -> list[list[Concept]]:
        """The ``top_k[i]`` most likely concepts of image ``i`` of ``pixels`` (N x 3 x SIZE x
        SIZE uint8), for each image, classified together."""
        scores, classes = self.top(pixels, max(top_k))
        return [
            [self.concept(int(c), float(s)) for s, c in zip(ss[:k], cs[:k], strict=True)]
            for ss, cs, k in zip(scores, classes, top_k, strict=True)
        ]

    def concept(self, index: int, score: float) -> Concept:
        return Concept(self.names[index], score, id=self.ids[index])

    def top(self, pixels: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` highest softmax probabilities of each image and their class indices, most
        likely first: ``pixels`` is N x 3 x SIZE x SIZE uint8 RGB, moved to the device as one
        tensor (if it is not there) and normalised there; both results are N x k, on the
        host."""
        with torch.inference_mode():
            batch = pixels.to(self.device)
            x = ((batch.float() - self.mean) / self.scale).to(
                self.dtype, memory_format=torch.channels_last
            )
            probabilities = self.net(x).float().softmax(dim=1)
            scores, classes = probabilities.topk(k, dim=1)
        return scores.cpu().numpy(), classes.cpu().numpy()
