"""The data types a model method takes and returns, and their wire messages.

Each type is a small dataclass with ``to_proto()`` / ``from_proto()`` for its ``resources_pb2``
message; :mod:`orchard.codec.serializers` puts those messages into ``Data``. The wire
conventions follow the official SDK (``clarifai/runners/utils/data_types/data_types.py``):

- ``Concept.id`` defaults to the name with everything but letters, digits and spaces dropped
  and spaces turned into ``-``.
- ``Region.box`` is ``[xmin, ymin, xmax, ymax]`` = ``[left_col, top_row, right_col,
  bottom_row]``; ``Region.point`` is ``(x, y, z)`` = ``(col, row, z)``; a new region gets a
  random hex id.
- ``Frame.time`` is in seconds; the wire keeps whole milliseconds (``frame_info.time``).

Pillow and numpy are optional: they are imported only by the methods that need them, and a
missing one raises ``ModuleNotFoundError`` naming the package to add to requirements.txt.
"""

from __future__ import annotations

import builtins
import importlib
import io
import re
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, ClassVar

from clarifai_grpc.grpc.api import resources_pb2

__all__ = [
    "JSON",
    "Audio",
    "Concept",
    "Frame",
    "Image",
    "NamedFields",
    "Region",
    "Text",
    "Video",
    "is_pil_image",
    "require",
]

_PIP_NAMES = {"numpy": "numpy", "PIL.Image": "pillow"}


def require(module: str, what: str) -> ModuleType:
    """Import an optional dependency, or explain which package the model must list."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = _PIP_NAMES.get(module, module)
        raise ModuleNotFoundError(
            f"{what} needs the '{package}' package; add '{package}' to the model's "
            f"requirements.txt (or install orchard[models])",
            name=module,
        ) from exc


def is_pil_image(value: Any) -> bool:
    """Whether ``value`` is a ``PIL.Image.Image`` (without importing Pillow)."""
    pil = sys.modules.get("PIL.Image")
    return pil is not None and isinstance(value, pil.Image)


@dataclass
class Text:
    """Text, inline (``text``) or by reference (``url``); wire: ``Data.text{raw, url}``."""

    text: str = ""
    url: str | None = None

    def to_proto(self) -> resources_pb2.Text:
        return resources_pb2.Text(raw=self.text, url=self.url or "")

    @classmethod
    def from_proto(cls, proto: resources_pb2.Text) -> Text:
        return cls(proto.raw, proto.url or None)


@dataclass(repr=False)
class _Media:
    """Bytes or a URL; wire: a message with ``base64`` (raw bytes) and ``url``."""

    bytes: builtins.bytes | None = None
    url: str | None = None
    proto_class: ClassVar[Any]

    def __repr__(self) -> str:
        shown = [f"bytes=<{len(self.bytes)} bytes>"] if self.bytes else []
        shown += [f"url={self.url!r}"] if self.url else []
        return f"{type(self).__name__}({', '.join(shown)})"

    @classmethod
    def from_url(cls, url: str) -> Any:
        return cls(url=url)

    def to_proto(self) -> Any:
        return self.proto_class(base64=self.bytes or b"", url=self.url or "")

    @classmethod
    def from_proto(cls, proto: Any) -> Any:
        return cls(proto.base64 or None, proto.url or None)


@dataclass(repr=False)
class Image(_Media):
    """An image; ``from_pil``/``to_pil`` need Pillow, ``from_numpy``/``to_numpy`` also numpy."""

    proto_class = resources_pb2.Image

    @classmethod
    def from_pil(cls, image: Any, format: str = "PNG") -> Image:
        """Encode a ``PIL.Image.Image`` (PNG unless ``format`` says otherwise)."""
        with io.BytesIO() as out:
            image.save(out, format=format)
            return cls(bytes=out.getvalue())

    @classmethod
    def from_numpy(cls, array: Any, format: str = "PNG") -> Image:
        pil = require("PIL.Image", "Image.from_numpy")
        return cls.from_pil(pil.fromarray(array), format=format)

    def to_pil(self) -> Any:
        """Decode the bytes; a URL-only image must be downloaded first."""
        pil = require("PIL.Image", "Image.to_pil")
        if not self.bytes:
            raise ValueError(f"{self!r} has no bytes to decode; download its url first")
        return pil.open(io.BytesIO(self.bytes))

    def to_numpy(self) -> Any:
        np = require("numpy", "Image.to_numpy")
        return np.asarray(self.to_pil())


@dataclass(repr=False)
class Audio(_Media):
    proto_class = resources_pb2.Audio


@dataclass(repr=False)
class Video(_Media):
    proto_class = resources_pb2.Video


def concept_id(name: str) -> str:
    """The id the official SDK derives from a concept name."""
    return re.sub(r"[^a-zA-Z0-9\s]", "", name).replace(" ", "-")


@dataclass
class Concept:
    """A label with a score; ``value`` travels as a 32-bit float."""

    name: str
    value: float = 1.0
    id: str | None = None

    def __post_init__(self) -> None:
        if not self.id:
            self.id = concept_id(self.name)

    def to_proto(self) -> resources_pb2.Concept:
        return resources_pb2.Concept(id=self.id or "", name=self.name, value=self.value)

    @classmethod
    def from_proto(cls, proto: resources_pb2.Concept) -> Concept:
        return cls(proto.name, proto.value, proto.id)


def _new_region_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Region:
    """A part of an image or video frame: a box or point, a mask, concepts and text."""

    box: list[float] | None = None
    concepts: list[Concept] = field(default_factory=list)
    mask: Image | None = None
    point: tuple[float, float, float] | None = None
    track_id: str = ""
    text: str = ""
    id: str = field(default_factory=_new_region_id)

    def to_proto(self) -> resources_pb2.Region:
        proto = resources_pb2.Region(id=self.id, track_id=self.track_id)
        info = proto.region_info
        if self.box is not None:
            xmin, ymin, xmax, ymax = self.box
            info.bounding_box.CopyFrom(
                resources_pb2.BoundingBox(
                    left_col=xmin, top_row=ymin, right_col=xmax, bottom_row=ymax
                )
            )
        if self.mask is not None:
            info.mask.image.CopyFrom(self.mask.to_proto())
        if self.point is not None:
            x, y, z = self.point
            info.point.CopyFrom(resources_pb2.Point(col=x, row=y, z=z))
        if self.concepts:  # touching ``data`` at all would mark it present
            proto.data.concepts.extend(c.to_proto() for c in self.concepts)
        if self.text:
            proto.data.text.raw = self.text
        return proto

    @classmethod
    def from_proto(cls, proto: resources_pb2.Region) -> Region:
        info = proto.region_info
        box = info.bounding_box
        point = info.point
        return cls(
            box=[box.left_col, box.top_row, box.right_col, box.bottom_row]
            if info.HasField("bounding_box")
            else None,
            concepts=[Concept.from_proto(c) for c in proto.data.concepts],
            mask=Image.from_proto(info.mask.image) if info.HasField("mask") else None,
            point=(point.col, point.row, point.z) if info.HasField("point") else None,
            track_id=proto.track_id,
            text=proto.data.text.raw,
            id=proto.id,
        )


@dataclass
class Frame:
    """One video frame: its image, regions found in it, time (seconds) and index."""

    image: Image | None = None
    regions: list[Region] = field(default_factory=list)
    time: float = 0.0
    index: int = 0

    def to_proto(self) -> resources_pb2.Frame:
        proto = resources_pb2.Frame()
        proto.frame_info.time = round(self.time * 1000)
        proto.frame_info.index = self.index
        if self.image is not None:
            proto.data.image.CopyFrom(self.image.to_proto())
        if self.regions:
            proto.data.regions.extend(r.to_proto() for r in self.regions)
        return proto

    @classmethod
    def from_proto(cls, proto: resources_pb2.Frame) -> Frame:
        return cls(
            image=Image.from_proto(proto.data.image) if proto.data.HasField("image") else None,
            regions=[Region.from_proto(r) for r in proto.data.regions],
            time=proto.frame_info.time / 1000.0,
            index=proto.frame_info.index,
        )


@dataclass(frozen=True)
class JSON:
    """JSON data (a dict or a list). As an annotation it means the same as ``dict``; a method
    may also return ``JSON(value)``. Wire: ``Data.struct_value`` (a list is wrapped as
    ``{"_list": [...]}``, as the official SDK does)."""

    value: Any = None


class NamedFields:
    """Several named values in one argument or return value.

    As an annotation: ``NamedFields(text=str, score=float)``, or a subclass with annotated
    fields. As a value: ``NamedFields(text="hi", score=0.9)``; fields read as attributes or
    items. Wire: one ``Data.parts[]`` entry per field, ``id`` = the field name.
    """

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    def __getattr__(self, name: str) -> Any:
        fields = list(self.__dict__)
        raise AttributeError(f"{type(self).__name__} has no field {name!r}; it has {fields}")

    def keys(self) -> list[str]:
        return list(self.__dict__)

    def items(self) -> list[tuple[str, Any]]:
        return list(self.__dict__.items())

    def values(self) -> list[Any]:
        return list(self.__dict__.values())

    def __getitem__(self, name: str) -> Any:
        return self.__dict__[name]

    def __contains__(self, name: object) -> bool:
        return name in self.__dict__

    def __iter__(self) -> Iterator[str]:
        return iter(self.__dict__)

    def __len__(self) -> int:
        return len(self.__dict__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NamedFields) and self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items())
        return f"{type(self).__name__}({inner})"
