"""Python values to ``resources_pb2.Data`` and back, for every type; old-format conversions."""

from __future__ import annotations

import io
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import pytest
from clarifai_grpc.grpc.api import resources_pb2
from hypothesis import given
from hypothesis import strategies as st

from orchard.authoring import (
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
from orchard.codec.data_types import require
from orchard.codec.serializers import (
    WireError,
    decode,
    decode_args,
    encode,
    encode_args,
)
from orchard.runners.utils import legacy
from orchard.runners.utils.method_signatures import build_field

ROOT = Path(__file__).resolve().parents[1]
Data = resources_pb2.Data


def _field(annotation: Any, name: str = "v") -> resources_pb2.ModelTypeField:
    return build_field(name, annotation)[0]


def _round_trip(annotation: Any, value: Any) -> Any:
    field = _field(annotation)
    data = Data()
    encode(field, value, data)
    return decode(field, Data.FromString(data.SerializeToString()))


ROUND_TRIPS = [
    (str, "héllo"),
    (bytes, b"\x00\xff"),
    (int, -(2**62)),
    (float, 1e-300),
    (bool, False),
    (dict, {"a": [1, 2.5, {"b": None, "c": True}], "d": "x"}),
    (list, [1, "two", {"three": 3}]),
    (JSON, {"k": "v"}),
    (Text, Text("hi", url="http://example.com/t")),
    (Image, Image(bytes=b"img")),
    (Image, Image(url="http://example.com/i.png")),
    (Audio, Audio(bytes=b"wav", url="http://example.com/a.wav")),
    (Video, Video(url="http://example.com/v.mp4")),
    (Concept, Concept("sky blue", 0.5)),
    (
        Region,
        Region(
            box=[0.25, 0.5, 0.75, 1.0],
            concepts=[Concept("dog", 0.75)],
            mask=Image(bytes=b"mask"),
            point=(0.5, 0.25, 1.0),
            track_id="t",
            text="a dog",
            id="r1",
        ),
    ),
    (Region, Region(id="bare")),
    (Frame, Frame(image=Image(bytes=b"f"), regions=[Region(id="x")], time=2.25, index=7)),
    (Frame, Frame()),
    (list[int], [3, 1, 2]),
    (list[Concept], [Concept("a"), Concept("b", 0.25)]),
    (list[Region], [Region(id="a"), Region(text="t", id="b")]),
    (list[list[str]], [["a"], [], ["b", "c"]]),
    (list[dict], [{"a": 1}, {}]),
    (tuple[int, str, Image], (1, "x", Image(bytes=b"t"))),
    (NamedFields(a=int, b=list[Text]), NamedFields(a=1, b=[Text("x")])),
    (list[NamedFields(n=int)], [NamedFields(n=1), NamedFields(n=2)]),
]


@pytest.mark.parametrize(("annotation", "value"), ROUND_TRIPS)
def test_every_type_round_trips(annotation, value):
    assert _round_trip(annotation, value) == value


def test_json_lists_are_wrapped_and_whole_numbers_come_back_as_int():
    data = Data()
    encode(_field(list), [1, 2.0, 2.5], data)
    assert list(data.struct_value.fields) == ["_list"]
    assert _round_trip(dict, {"n": 3}) == {"n": 3}
    assert type(_round_trip(dict, {"n": 3})["n"]) is int
    assert _round_trip(JSON, JSON([1])) == [1]


def test_ndarrays_round_trip_with_dtype_and_shape():
    array = np.arange(12, dtype=np.float16).reshape(3, 4)
    back = _round_trip(np.ndarray, array)
    assert back.dtype == np.float16 and back.shape == (3, 4) and np.array_equal(back, array)
    data = Data()
    encode(_field(np.ndarray), np.array([[1, 2]], dtype=np.int32), data)
    assert (list(data.ndarray.shape), data.ndarray.dtype) == ([1, 2], "int32")
    assert _round_trip(np.ndarray, np.zeros((0, 3))).shape == (0, 3)


def test_concepts_regions_and_frames_use_the_official_wire_layout():
    assert Concept("Big dog!").id == "Big-dog"
    proto = Region(box=[0.1, 0.2, 0.3, 0.4], point=(1.0, 2.0, 3.0), id="r").to_proto()
    box = proto.region_info.bounding_box
    assert (box.left_col, box.top_row, box.right_col, box.bottom_row) == pytest.approx(
        (0.1, 0.2, 0.3, 0.4)
    )
    point = proto.region_info.point
    assert (point.col, point.row, point.z) == (1.0, 2.0, 3.0)
    assert Frame(time=1.5, index=2).to_proto().frame_info.time == 1500
    assert len(Region().id) == 32
    data = Data()
    encode(_field(list[Concept]), [Concept("a"), Concept("b")], data)
    assert [c.name for c in data.concepts] == ["a", "b"] and not data.parts


def test_concept_values_are_32_bit():
    back = _round_trip(Concept, Concept("x", 0.1))
    assert back.value == pytest.approx(0.1) and back.id == "x"


def test_strings_and_pil_images_are_accepted_for_message_types():
    assert _round_trip(Text, "plain") == Text("plain")
    assert _round_trip(Concept, "cat") == Concept("cat")
    pil = PIL.Image.new("RGB", (2, 1), (255, 0, 0))
    back = _round_trip(Image, pil)
    assert back.to_pil().size == (2, 1)


def test_image_pillow_and_numpy_conversions():
    array = np.zeros((3, 2, 3), dtype=np.uint8)
    array[0, 0] = (9, 8, 7)
    image = Image.from_numpy(array)
    assert image.bytes is not None and image.bytes.startswith(b"\x89PNG")
    assert np.array_equal(image.to_numpy(), array)
    jpeg = Image.from_pil(PIL.Image.fromarray(array), format="JPEG")
    assert PIL.Image.open(io.BytesIO(jpeg.bytes or b"")).format == "JPEG"
    with pytest.raises(ValueError, match="no bytes to decode; download its url first"):
        Image(url="http://example.com/x.png").to_pil()
    assert repr(Image(bytes=b"abc", url="u")) == "Image(bytes=<3 bytes>, url='u')"


def test_a_missing_optional_package_says_what_to_add(monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    with pytest.raises(ModuleNotFoundError, match="'pillow' package; add 'pillow' to the model's"):
        require("PIL.Image", "Image.to_pil")
    with pytest.raises(ModuleNotFoundError, match=r"requirements\.txt"):
        Image(bytes=b"x").to_pil()


def test_authoring_imports_and_serves_without_numpy_or_pillow():
    script = (
        "import sys\n"
        "sys.modules['numpy'] = None; sys.modules['PIL'] = None\n"
        "from orchard.authoring import ModelClass, Image, signatures\n"
        "from orchard.runners.models import request_adapter\n"
        "from clarifai_grpc.grpc.api import resources_pb2 as r, service_pb2 as s\n"
        "class M(ModelClass):\n"
        "    @ModelClass.method\n"
        "    def predict(self, x: str, image: Image = None) -> str:\n"
        "        return x.upper()\n"
        "req = s.PostModelOutputsRequest(inputs=[r.Input(data=r.Data(text=r.Text(raw='ok')))])\n"
        "print(request_adapter.predict(M(), req).outputs[0].data.text.raw, len(signatures(M)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["OK", "1"]


ENCODE_ERRORS = [
    (int, "3", r"^expected int, got str '3'$"),
    (int, True, "expected int, got bool"),
    (float, "x", "expected float"),
    (bool, 1, "expected bool, got int"),
    (str, None, "expected str, got NoneType"),
    (bytes, "s", "expected bytes"),
    (list[int], [1, "x"], r"^\[1\]: expected int, got str 'x'$"),
    (list[int], "abc", "expected a list"),
    (tuple[int, str], (1,), "expected a tuple of 2"),
    (NamedFields(a=int), NamedFields(b=1), r"unexpected field\(s\) \['b'\]"),
    (NamedFields(a=int, b=int), {"a": 1}, "missing field 'b'"),
    (NamedFields(a=list[int]), NamedFields(a=[0, None]), r"^\.a\[1\]: expected int"),
    (dict, {"a": object()}, "not JSON data"),
    (dict, 3, "expected a JSON object"),
    (Image, b"raw", "expected Image or PIL.Image.Image, got bytes"),
    (np.ndarray, np.array(["a"]), "a numeric numpy array"),
]


@pytest.mark.parametrize(("annotation", "value", "message"), ENCODE_ERRORS)
def test_values_that_do_not_fit_say_where_and_why(annotation, value, message):
    with pytest.raises(WireError, match=message):
        encode(_field(annotation), value, Data())


def test_decode_errors():
    data = Data()
    data.concepts.add(name="a")
    data.concepts.add(name="b")
    with pytest.raises(WireError, match="expected one entry in concepts, got 2; declare List"):
        decode(_field(Concept), data)
    short = Data()
    short.parts.add(id="0")
    with pytest.raises(WireError, match="expected a tuple of 2, got 1 parts"):
        decode(_field(tuple[int, int]), short)
    with pytest.raises(WireError, match=r"missing field 'a' \(got parts \['0'\]\)"):
        decode(_field(NamedFields(a=int, b=int)), short)


def test_absent_messages_decode_as_none():
    for annotation in (Text, Image, Concept, dict, np.ndarray, tuple[int], NamedFields(a=int)):
        assert decode(_field(annotation), Data()) is None


def test_arguments_are_one_part_each_and_optional_nones_are_left_out():
    fields = [
        build_field("a", int)[0],
        build_field("b", str, default=None)[0],
        build_field("c", list[int], default=[])[0],
    ]
    data = Data()
    encode_args(fields, {"a": 0, "b": None, "c": [1]}, data)
    assert [p.id for p in data.parts] == ["a", "c"]
    assert decode_args(fields, data) == {"a": 0, "c": [1]}
    with pytest.raises(WireError, match="missing required argument 'a'"):
        encode_args(fields, {}, Data())
    with pytest.raises(WireError, match=r"unexpected argument\(s\) \['z'\]"):
        encode_args(fields, {"a": 1, "z": 2}, Data())


# -- hypothesis: primitives and nested containers -----------------------------------------

_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_json = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(st.text())
def test_str_round_trips(value):
    assert _round_trip(str, value) == value


@given(st.binary())
def test_bytes_round_trip(value):
    assert _round_trip(bytes, value) == value


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_int64_round_trips(value):
    assert _round_trip(int, value) == value


@given(st.floats(allow_nan=False))
def test_floats_round_trip(value):
    assert _round_trip(float, value) == value


@given(st.floats(allow_nan=True, allow_infinity=True).filter(math.isnan))
def test_nan_round_trips(value):
    assert math.isnan(_round_trip(float, value))


@given(st.booleans())
def test_bools_round_trip(value):
    assert _round_trip(bool, value) is value


@given(st.lists(st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=4)))
def test_nested_lists_round_trip(value):
    assert _round_trip(list[list[int]], value) == value


@given(st.dictionaries(st.text(), _json, max_size=5))
def test_json_objects_round_trip(value):
    assert _round_trip(dict, value) == value


@given(st.lists(_json, max_size=5))
def test_json_lists_round_trip(value):
    assert _round_trip(list, value) == value


@given(st.tuples(st.text(), st.lists(st.booleans()), st.binary()))
def test_tuples_round_trip(value):
    assert _round_trip(tuple[str, list[bool], bytes], value) == value


# -- old-format data ----------------------------------------------------------------------


def _legacy(data: Data, *annotations: Any) -> dict[str, Any]:
    fields = [build_field(f"p{i}", a)[0] for i, a in enumerate(annotations)]
    assert legacy.is_legacy(data)
    return decode_args(fields, legacy.to_parts(data, fields))


def test_old_format_inputs_reach_parameters_by_type():
    image = resources_pb2.Image(base64=b"png", url="http://example.com/i")
    data = Data(text=resources_pb2.Text(raw="hi"), image=image)
    assert _legacy(data, str, Image) == {"p0": "hi", "p1": Image(b"png", "http://example.com/i")}
    assert _legacy(data, Image, str) == {"p0": Image(b"png", "http://example.com/i"), "p1": "hi"}
    assert _legacy(Data(text=resources_pb2.Text(raw="t")), Text) == {"p0": Text("t")}
    assert _legacy(Data(string_value='{"a": 1}'), dict) == {"p0": {"a": 1}}
    assert _legacy(Data(int_value=4, float_value=0.5), float, int) == {"p0": 0.5, "p1": 4}
    concepts = Data(concepts=[resources_pb2.Concept(id="a", name="a", value=1.0)])
    assert _legacy(concepts, list[Concept]) == {"p0": [Concept("a")]}
    audio = Data(audio=resources_pb2.Audio(base64=b"wav"))
    assert _legacy(audio, Audio) == {"p0": Audio(b"wav")}


def test_old_format_bytes_parameters_take_media_bytes_or_text():
    assert _legacy(Data(image=resources_pb2.Image(base64=b"png")), bytes) == {"p0": b"png"}
    assert _legacy(Data(video=resources_pb2.Video(base64=b"mp4")), bytes) == {"p0": b"mp4"}
    assert _legacy(Data(text=resources_pb2.Text(raw="é")), bytes) == {"p0": "é".encode()}


def test_metadata_alone_and_parts_are_not_old_format():
    only_metadata = Data()
    only_metadata.metadata["_method_name"] = "predict"
    assert not legacy.is_legacy(only_metadata)
    with_parts = Data(text=resources_pb2.Text(raw="x"))
    with_parts.parts.add(id="x")
    assert not legacy.is_legacy(with_parts)


def test_old_format_outputs_carry_the_payload_on_top():
    data = Data()
    encode_args([build_field("return", str)[0]], {"return": "answer"}, data)
    legacy.to_legacy_output(data)
    assert (data.text.raw, data.string_value, data.parts[0].id) == ("answer", "answer", "return")
    concepts = Data()
    encode_args([build_field("return", list[Concept])[0]], {"return": [Concept("a")]}, concepts)
    legacy.to_legacy_output(concepts)
    assert [c.name for c in concepts.concepts] == ["a"] and len(concepts.parts) == 1
