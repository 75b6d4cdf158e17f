"""`orchard model signatures` and `orchard model local-test`, and the example calls that
local-test builds (orchard/packaging/localtest.py), on the example packages and on small
packages written here."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import PIL.Image
import pytest
from click.testing import CliRunner, Result

from orchard.authoring import ModelClass, signatures
from orchard.cli import model_local_test
from orchard.cli.main import cli
from orchard.packaging import localtest
from orchard.packaging.inspect import collect_signatures, load_model_class

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "models"
CONFIG = """\
model:
  id: {id}
  app_id: examples
build_info:
  python_version: "3.11"
"""


def orchard(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def write_package(root: Path, model: str, requirements: str = "") -> Path:
    (root / "1").mkdir(parents=True)
    (root / "config.yaml").write_text(CONFIG.format(id=root.name))
    (root / "requirements.txt").write_text(requirements)
    (root / "1" / "model.py").write_text(model)
    return root


# -- orchard model signatures ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("example", "rows"),
    [
        (
            "echo",
            [
                ["predict", "UNARY_UNARY", "text: STR", "STR"],
                ["generate", "UNARY_STREAMING", "text: STR", "Iterator[STR]"],
                ["stream", "STREAMING_STREAMING", "input_iterator: Iterator[STR]", "Iterator[STR]"],
            ],
        ),
        (
            "image-classifier",
            [["predict", "UNARY_UNARY", "image: IMAGE", "LIST[CONCEPT]"], ["top_k: INT = 3"]],
        ),
        (
            "token-streamer",
            [
                ["predict", "UNARY_UNARY", "prompt: STR", "STR"],
                ["max_tokens: INT = 32"],
                ["generate", "UNARY_STREAMING", "prompt: STR", "Iterator[STR]"],
                ["max_tokens: INT = 32"],
                ["delay_ms: FLOAT = 20.0"],
            ],
        ),
    ],
)
def test_signatures_prints_a_table_of_the_methods(example, rows, monkeypatch):
    monkeypatch.delenv("TOKEN_STREAMER_DELAY_MS", raising=False)
    result = orchard("model", "signatures", str(EXAMPLES / example))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["METHOD", "SHAPE", "PARAMETERS", "RETURNS"]
    assert [line.split() for line in lines[1:]] == [
        [word for cell in row for word in cell.split()] for row in rows
    ]


def test_signatures_json_is_what_inspection_collects():
    result = orchard("model", "signatures", str(EXAMPLES / "token-streamer"), "--json")
    assert result.exit_code == 0, result.output
    expected = collect_signatures(EXAMPLES / "token-streamer", stub_missing=False)
    assert json.loads(result.output) == expected


def test_signatures_stubs_imports_that_are_not_installed(tmp_path):
    model = (
        "import not_installed_anywhere\n"
        "from orchard.authoring import ModelClass\n\n\n"
        "class M(ModelClass):\n"
        "    @ModelClass.method\n"
        "    def predict(self, flag: bool = True) -> str:\n"
        "        return not_installed_anywhere.run(flag)\n"
    )
    result = orchard("model", "signatures", str(write_package(tmp_path / "m", model)))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1].split() == [
        "predict", "UNARY_UNARY", "flag:", "BOOL", "=", "true", "STR"
    ]  # fmt: skip


def test_signatures_errors_are_one_line_with_the_fix(tmp_path):
    missing = orchard("model", "signatures", str(tmp_path / "nowhere"))
    assert missing.exit_code == 1
    assert missing.output.startswith("Error: model package folder not found")
    official = write_package(
        tmp_path / "official",
        "from clarifai.runners.models.model_class import ModelClass\n\n\n"
        "class M(ModelClass):\n    pass\n",
    )
    result = orchard("model", "signatures", str(official))
    assert result.exit_code == 1
    assert "official clarifai SDK's ModelClass" in result.output
    assert len(result.output.strip().splitlines()) == 1


# -- example calls ----------------------------------------------------------------------------

EVERY_TYPE = """\
from collections.abc import Iterator

import numpy as np

from orchard.authoring import (
    Audio, Concept, Frame, Image, ModelClass, NamedFields, Param, Region, Text,
)


class Everything(ModelClass):
    @ModelClass.method
    def predict(
        self,
        s: str,
        b: bytes,
        i: int,
        f: float,
        flag: bool,
        js: dict,
        t: Text,
        img: Image,
        c: Concept,
        r: Region,
        fr: Frame,
        arr: np.ndarray,
        ls: list[int],
        lc: list[Concept],
        tup: tuple[int, str],
        nf: NamedFields(a=int, b=Text),
        kept: int = Param(7, min_value=5),
    ) -> str:
        img.to_pil().load()
        self.received = [
            s, b, i, f, flag, js, t.text, c.name, r.box, fr.image.bytes[:4], arr.shape, ls,
            [x.name for x in lc], tup, nf.a, nf.b.text, kept,
        ]
        return "received"

    @ModelClass.method
    def stream(self, items: Iterator[Image], k: int = 1) -> Iterator[int]:
        for item in items:
            yield len(item.bytes) * k

    @ModelClass.method
    def hear(self, clip: Audio) -> str:
        return "never called"
"""


def test_example_png_is_a_valid_png_that_varies_with_the_index():
    picture = PIL.Image.open(io.BytesIO(localtest.example_png()))
    picture.load()
    assert (picture.format, picture.mode, picture.size) == ("PNG", "RGB", (16, 16))
    assert localtest.example_png(1) != localtest.example_png(0)


def test_example_calls_cover_every_type_and_keep_defaults(tmp_path, capsys):
    package = write_package(tmp_path / "every", EVERY_TYPE)
    model = load_model_class(package, stub_missing=False)()
    sigs = {s.name: s for s in signatures(model)}
    assert localtest.run_method(model, sigs["predict"]) is True
    shown = capsys.readouterr().out
    assert "FAILED" not in shown and "ok (1 output)" in shown
    assert model.received == [
        "hello world", b"hello world", 1, 0.5, True, {"example": 1}, "hello world", "example 1",
        pytest.approx([0.1, 0.1, 0.6, 0.6]), b"\x89PNG", (2, 3), [1, 2],
        ["example 1", "example 2"], (1, "hello world"), 1, "hello world", 7,
    ]  # fmt: skip


def test_a_streaming_parameter_gets_three_items_and_an_unknown_type_is_skipped(tmp_path, capsys):
    package = write_package(tmp_path / "every", EVERY_TYPE)
    model = load_model_class(package, stub_missing=False)()
    sigs = {s.name: s for s in signatures(model)}
    call = localtest.example_call(sigs["stream"])
    assert call.kwargs == {} and len(call.items or []) == 3
    requests = localtest.requests_for(sigs["stream"], call)
    assert [len(r.inputs[0].data.parts) for r in requests] == [1, 1, 1]
    assert localtest.run_method(model, sigs["stream"]) is True
    assert "ok (3 outputs)" in capsys.readouterr().out
    assert localtest.run_method(model, sigs["hear"]) is None
    assert "skipped: no example value for parameter 'clip' of type AUDIO" in capsys.readouterr().out


# -- the environment's half: localtest.main ----------------------------------------------------

FLAWED = """\
import asyncio
from collections.abc import AsyncIterator

from orchard.authoring import ModelClass, signatures


class Flawed(ModelClass):
    def load_model(self) -> None:
        self.loaded = True

    @ModelClass.method
    def predict(self, text: str) -> str:
        raise ValueError("broken on purpose")

    @ModelClass.method
    async def generate(self, text: str) -> AsyncIterator[str]:
        await asyncio.sleep(0)
        yield text.upper()

    def test(self) -> None:
        assert self.loaded
        print("test ran")
"""


def test_main_reports_each_method_and_fails_when_one_fails(tmp_path, capsys):
    package = write_package(tmp_path / "flawed", FLAWED)
    assert localtest.main([str(package)]) == 1
    out = capsys.readouterr().out
    assert "FAILED: Flawed.predict raised ValueError: broken on purpose" in out
    assert "-> 'HELLO WORLD'" in out
    assert "== test()\ntest ran\n   ok" in out
    assert out.rstrip().endswith("2 passed, 1 failed (predict)")


def test_main_fails_a_test_method_that_raises(tmp_path, capsys):
    model = FLAWED.replace("assert self.loaded", "assert not self.loaded, 'test() failed'")
    package = write_package(tmp_path / "flawed", model)
    assert localtest.main([str(package)]) == 1
    out = capsys.readouterr().out
    assert "AssertionError: test() failed" in out
    assert out.rstrip().endswith("1 passed, 2 failed (predict, test())")


def test_main_says_an_official_sdk_model_needs_orchards_model_class(tmp_path, capsys):
    official = write_package(
        tmp_path / "official",
        "from clarifai.runners.models.model_class import ModelClass\n\n\n"
        "class M(ModelClass):\n    pass\n",
    )
    assert localtest.main([str(official)]) == 1
    out = capsys.readouterr().out
    assert "subclasses the official clarifai SDK's ModelClass" in out
    assert "from orchard.authoring import ModelClass" in out


def test_main_reports_a_load_model_that_raises(tmp_path, capsys):
    model = FLAWED.replace("self.loaded = True", "raise RuntimeError('no weights')")
    assert localtest.main([str(write_package(tmp_path / "f", model))]) == 1
    assert "RuntimeError: no weights" in capsys.readouterr().out


def test_run_in_env_runs_the_example_in_a_given_environment():
    """This test process's own virtual environment stands in for a built one."""
    lines: list[str] = []
    env = Path(sys.executable).parent.parent
    assert model_local_test.run_in_env(env, EXAMPLES / "echo", lines.append) == 0
    assert "== stream (STREAMING_STREAMING)" in lines and lines[-1] == "3 passed"


def test_every_example_passes_its_local_test_in_this_environment(capsys, monkeypatch):
    monkeypatch.setenv("TOKEN_STREAMER_DELAY_MS", "0")
    for name in ("echo", "image-classifier", "token-streamer"):
        assert localtest.main([str(EXAMPLES / name)]) == 0, capsys.readouterr().out
    assert issubclass(load_model_class(EXAMPLES / "echo", stub_missing=False), ModelClass)


# -- orchard model local-test, for real ---------------------------------------------------------


@pytest.mark.e2e
def test_local_test_builds_the_environment_once_and_runs_every_method(tmp_path):
    """Builds a real environment with uv, offline from its cache (which scripts/setup.sh
    fills when it installs Orchard), then runs the echo example in it; a second package with
    the same requirements reuses that environment, and its failure ends in `Error:`."""
    home = tmp_path / "home"
    first = orchard("model", "local-test", str(EXAMPLES / "echo"), "--offline", "--home", str(home))
    assert first.exit_code == 0, first.output
    assert "creating environment with Python 3.11" in first.output
    assert first.output.rstrip().endswith("3 passed")
    assert len(list((home / "local-envs").iterdir())) == 1
    flawed = write_package(tmp_path / "flawed", FLAWED)
    second = orchard("model", "local-test", str(flawed), "--offline", "--home", str(home))
    assert second.exit_code == 1
    assert "is cached; reusing it" in second.output
    assert "FAILED: Flawed.predict raised ValueError" in second.output
    assert second.output.rstrip().splitlines()[-1].startswith("Error: local test of")
