"""Model packages: checks before upload, the upload stream, and builds with uv.

Builds here are real (uv creates environments) and hermetic: the test server builds offline,
from uv's cache, which scripts/setup.sh fills when it installs Orchard's own dependencies."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from clarifai_grpc.grpc.api import resources_pb2 as r
from clarifai_grpc.grpc.api import service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2 as sc

from orchard import errors, wire
from orchard.client.base import BaseClient
from orchard.client.uploads import _version_proto, ensure_model, send_package, upload_model
from orchard.packaging.inspect import run_inspection
from orchard.packaging.package import load_package
from orchard.services.builds import installed_interpreters
from tests.resources import LIGHT_EXAMPLES, ok
from tests.waiting import wait_for

CONFIG = """\
model:
  id: echo
  app_id: examples
  model_type_id: text-to-text
build_info:
  python_version: "{python}"
inference_compute_info:
  cpu_limit: "1"
  cpu_memory: 512Mi
num_threads: 4
"""
MODEL = """\
from orchard.authoring import ModelClass


class Echo(ModelClass):
    @ModelClass.method
    def predict(self, text: str) -> str:
        return text
"""
OWN_PYTHON = next(iter(installed_interpreters()))


def write_package(
    root: Path,
    *,
    config: str | None = None,
    requirements: str | None = "",
    model: str | None = MODEL,
) -> Path:
    (root / "1").mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(
        CONFIG.format(python=OWN_PYTHON) if config is None else config
    )
    if requirements is not None:
        (root / "requirements.txt").write_text(requirements)
    if model is not None:
        (root / "1" / "model.py").write_text(model)
    return root


def upload(server, path: Path, lines: list[str] | None = None) -> r.ModelVersion:
    sink = lines if lines is not None else []
    return upload_model(
        path, user_id=server.user_id, base_url=server.base_url, pat=server.pat, on_log=sink.append
    )


def test_upload_builds_and_a_second_version_reuses_the_environment(server, api, tmp_path):
    package = write_package(tmp_path / "echo")
    first_log: list[str] = []
    first = upload(server, package, first_log)
    assert first.status.code == sc.MODEL_TRAINED
    assert any("creating environment" in line for line in first_log)
    second_log: list[str] = []
    second = upload(server, package, second_log)
    assert second.status.code == sc.MODEL_TRAINED and second.id != first.id
    assert any("is cached; reusing it" in line for line in second_log)
    uid = r.UserAppIDSet(user_id=api.user_id, app_id="examples")
    versions = ok(api.call("ListModelVersions", user_app_id=uid, model_id="echo")).model_versions
    assert [v.id for v in versions] == [second.id, first.id]
    served = ok(
        api.call(
            "ListLogEntries",
            user_app_id=uid,
            model_id="echo",
            model_version_id=first.id,
            log_type="builder",
        )
    ).log_entries
    assert [e.message for e in served] == first_log


def test_unsatisfiable_requirement_fails_the_build_and_the_log_names_it(server, api, tmp_path):
    package = write_package(tmp_path / "echo", requirements="no-such-package-orchard==9.9\n")
    lines: list[str] = []
    with pytest.raises(errors.ModelBuildFailed, match="build failed"):
        upload(server, package, lines)
    assert any("no-such-package-orchard" in line for line in lines)
    uid = r.UserAppIDSet(user_id=api.user_id, app_id="examples")
    version = ok(api.call("ListModelVersions", user_app_id=uid, model_id="echo")).model_versions[0]
    assert version.status.code == sc.MODEL_BUILDING_FAILED


def test_missing_python_is_an_error_unless_fallback_is_allowed(server, tmp_path):
    package = write_package(tmp_path / "old", config=CONFIG.format(python="3.4"))
    lines: list[str] = []
    assert upload(server, package, lines).status.code == sc.MODEL_TRAINED
    assert any(
        "Python 3.4 (build_info.python_version) is not installed" in line
        and "building with Python" in line
        for line in lines
    )
    server.server.builds.builder.settings.python_fallback = False
    with pytest.raises(errors.ModelBuildFailed, match=f"installed: .*{OWN_PYTHON}"):
        upload(server, package)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"config": None, "remove": "config.yaml"}, "config.yaml: missing"),
        ({"config": "model: [unclosed\n"}, "config.yaml: YAML syntax error at line"),
        (
            {"config": "model: {id: echo}\nnum_threads: many\n"},
            "config.yaml: invalid config: num_threads: Input should be a valid integer",
        ),
        ({"config": "model: {id: echo}\ncolour: red\n"}, "colour: unknown field"),
        ({"config": "model: {id: has.dot}\n"}, "model.id: model id 'has.dot' must not contain"),
        ({"config": "build_info: {}\n"}, "model: required field is missing"),
        ({"requirements": None}, "requirements.txt: missing"),
        ({"model": None}, "1/model.py: missing"),
        ({"model": "def broken(:\n"}, "1/model.py:1: syntax error"),
        ({"model": "class Nothing:\n    pass\n"}, "defines no ModelClass subclass"),
    ],
)
def test_malformed_packages_upload_nothing(server, api, tmp_path, change, message):
    remove = change.pop("remove", None)
    package = write_package(tmp_path / "bad", **change)
    if remove:
        (package / remove).unlink()
    with pytest.raises(errors.ModelInvalid) as info:
        upload(server, package)
    assert message in str(info.value)
    assert ok(api.call("ListModels")).models == []


OFFICIAL_SUBCLASS = """\
from clarifai.runners.models.visual_classifier_class import VisualClassifierClass


class Classifier(VisualClassifierClass):
    def load_model(self):
        pass
"""
ALIASED = """\
from orchard.authoring import ModelClass as Base


class Echo(Base):
    @Base.method
    def predict(self, text: str) -> str:
        return text
"""
OWN_BASE = """\
from orchard.authoring import ModelClass


class Shared(ModelClass):
    def load_model(self):
        self.prefix = ">"


class Echo(Shared):
    @ModelClass.method
    def predict(self, text: str) -> str:
        return self.prefix + text
"""


@pytest.mark.parametrize(
    ("model", "methods"),
    [(OFFICIAL_SUBCLASS, None), (ALIASED, ["predict"]), (OWN_BASE, ["predict"])],
    ids=["official-VisualClassifierClass", "aliased-ModelClass", "own-base-class"],
)
def test_any_subclass_of_a_model_class_passes_the_uploaders_checks(tmp_path, model, methods):
    package = load_package(write_package(tmp_path / "pkg", model=model))
    found = run_inspection(sys.executable, package.root, stub_missing=True)
    assert (found if found is None else [s["name"] for s in found]) == methods


def test_an_aliased_model_class_uploads_and_builds(server, tmp_path):
    version = upload(server, write_package(tmp_path / "aliased", model=ALIASED))
    assert version.status.code == sc.MODEL_TRAINED


def _stream(api, requests):
    call = wire.callable_for(api.channel, "PostModelVersionsUpload")
    return list(call(iter(requests), metadata=(("authorization", f"Key {api.pat}"),), timeout=30))


def _config_message(user_id: str, total: int) -> service_pb2.PostModelVersionsUploadRequest:
    return service_pb2.PostModelVersionsUploadRequest(
        upload_config=service_pb2.PostModelVersionsUploadConfig(
            user_app_id=r.UserAppIDSet(user_id=user_id, app_id="examples"),
            model_id="echo",
            total_size=total,
        )
    )


def _part(data: bytes) -> service_pb2.PostModelVersionsUploadRequest:
    return service_pb2.PostModelVersionsUploadRequest(
        content_part=r.UploadContentPart(data=data, part_number=1)
    )


@pytest.fixture
def echo_model(api):
    uid = r.UserAppIDSet(user_id=api.user_id, app_id="examples")
    ok(api.call("PostApps", apps=[r.App(id="examples")]))
    ok(api.call("PostModels", user_app_id=uid, models=[r.Model(id="echo")]))
    return uid


def test_upload_stream_that_ends_early_fails_the_version(api, echo_model):
    responses = _stream(api, [_config_message(api.user_id, 100), _part(b"x" * 40)])
    assert responses[-1].status.code == sc.CONN_INVALID_REQUEST
    assert "ended after 40 of 100 bytes" in responses[-1].status.description
    version = ok(
        api.call("ListModelVersions", user_app_id=echo_model, model_id="echo")
    ).model_versions[0]
    assert version.status.code == sc.MODEL_UPLOADING_FAILED


def test_upload_stream_must_start_with_its_config(api, echo_model):
    responses = _stream(api, [_part(b"x")])
    assert "send upload_config first" in responses[-1].status.description


def test_upload_into_another_users_model_is_refused(api, other, echo_model):
    responses = _stream(other, [_config_message(api.user_id, 10), _part(b"x" * 10)])
    assert responses[-1].status.code == sc.CONN_DOES_NOT_EXIST
    own_name = _stream(other, [_config_message(other.user_id, 10), _part(b"x" * 10)])
    assert own_name[-1].status.code == sc.MODEL_DOES_NOT_EXIST


def test_a_corrupt_archive_fails_the_build_not_the_server(api, echo_model):
    responses = _stream(api, [_config_message(api.user_id, 5), _part(b"abcde")])
    assert responses[-1].status.code == sc.MODEL_BUILDING
    version_id = responses[-1].model_version_id

    # The build runs in the background; its end is observable through GetModelVersion.
    def build_ended():
        version = ok(
            api.call(
                "GetModelVersion", user_app_id=echo_model, model_id="echo", version_id=version_id
            )
        ).model_version
        return version if version.status.code != sc.MODEL_BUILDING else None

    version = wait_for(build_ended, timeout=60, what="the build to end")
    assert version.status.code == sc.MODEL_BUILDING_FAILED
    assert "not a valid tar.gz archive" in version.status.description


def test_bad_annotation_is_reported_before_upload(server, api, tmp_path):
    model = MODEL.replace("def predict(self, text: str) -> str:", "def predict(self, text):")
    package = write_package(tmp_path / "bad", model=model)
    with pytest.raises(errors.ModelInvalid, match="predict") as info:
        upload(server, package)
    assert "1/model.py" in str(info.value)
    assert ok(api.call("ListModels")).models == []


def test_signatures_are_stored_on_the_version(server, api, tmp_path):
    version = upload(server, write_package(tmp_path / "echo"))
    uid = r.UserAppIDSet(user_id=api.user_id, app_id="examples")
    stored = ok(
        api.call("GetModelVersion", user_app_id=uid, model_id="echo", version_id=version.id)
    ).model_version
    assert [s.name for s in stored.method_signatures] == ["predict"]
    assert stored.method_signatures[0].input_fields[0].name == "text"


def test_an_import_missing_from_requirements_fails_the_build(server, tmp_path):
    model = "import not_installed_anywhere_xyz\n" + MODEL
    lines: list[str] = []
    with pytest.raises(errors.ModelBuildFailed, match="not_installed_anywhere_xyz"):
        upload(server, write_package(tmp_path / "echo", model=model), lines)
    assert any("add the package that provides it to requirements.txt" in line for line in lines)


def _wheel(folder: Path, name: str, version: str) -> Path:
    """A minimal pure-Python wheel, written by hand (no build tool, no network)."""
    import base64
    import hashlib
    import zipfile

    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: orchard-tests\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    records = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        records.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join([*records, f"{dist}/RECORD,,"]) + "\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


def test_environments_build_from_a_local_wheel_folder(server, tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "orchard_local_dep", "0.1.0")
    server.server.builds.builder.settings.find_links = [wheels]
    model = "import orchard_local_dep\n" + MODEL
    package = write_package(
        tmp_path / "echo", requirements="orchard_local_dep==0.1.0\n", model=model
    )
    lines: list[str] = []
    assert upload(server, package, lines).status.code == sc.MODEL_TRAINED
    assert any("orchard-local-dep==0.1.0" in line for line in lines)


GATED = """\
import os
import time

from orchard.authoring import ModelClass

# Holds the build (it loads this file) until the test opens the gate; bounded by a deadline.
_deadline = time.monotonic() + 120
while not os.path.exists(os.environ["ORCHARD_TEST_BUILD_GATE"]):
    if time.monotonic() > _deadline:
        raise TimeoutError("the test never opened the gate")
    time.sleep(0.02)


class Echo(ModelClass):
    @ModelClass.method
    def predict(self, text: str) -> str:
        return text
"""


def test_a_build_does_not_block_other_requests(server, api, tmp_path, monkeypatch):
    gate = tmp_path / "gate"
    monkeypatch.setenv("ORCHARD_TEST_BUILD_GATE", str(gate))
    # Sent without the uploader's own check, which would load (and wait in) model.py.
    loaded = load_package(write_package(tmp_path / "echo", model=GATED))
    with BaseClient(user_id=server.user_id, base_url=server.base_url, pat=server.pat) as client:
        ensure_model(client, loaded)
        version_id = send_package(
            client, loaded, _version_proto(loaded, None), lambda sent, total: None
        )
    uid = r.UserAppIDSet(user_id=api.user_id, app_id="examples")

    def status():
        return ok(
            api.call("GetModelVersion", user_app_id=uid, model_id="echo", version_id=version_id)
        ).model_version.status

    def loading_model():
        entries = ok(
            api.call(
                "ListLogEntries",
                user_app_id=uid,
                model_id="echo",
                model_version_id=version_id,
                log_type="builder",
            )
        ).log_entries
        return any("loading 1/model.py" in e.message for e in entries)

    wait_for(loading_model, timeout=120, what="the build to reach model loading")
    # The build is held inside model.py; the server keeps answering meanwhile.
    assert status().code == sc.MODEL_BUILDING
    assert ok(api.call("ListComputeClusters")).compute_clusters == []
    gate.touch()
    final = wait_for(
        lambda: (s := status()).code != sc.MODEL_BUILDING and s,
        timeout=120,
        what="the build to finish",
    )
    assert final.code == sc.MODEL_TRAINED


@pytest.mark.parametrize("example", LIGHT_EXAMPLES, ids=lambda p: p.name)
def test_every_example_builds(server, example):
    version = upload(server, example)
    assert version.status.code == sc.MODEL_TRAINED
    assert version.method_signatures


def test_cli_upload_shows_the_build_and_fails_with_one_line(server, tmp_path):
    from click.testing import CliRunner

    from orchard.cli.main import cli

    env = {
        "ORCHARD_API_BASE": server.base_url,
        "ORCHARD_PAT": server.pat,
        "ORCHARD_USER_ID": server.user_id,
        "ORCHARD_CONFIG": str(tmp_path / "none"),
    }
    good = CliRunner().invoke(
        cli, ["model", "upload", str(write_package(tmp_path / "ok"))], env=env
    )
    assert good.exit_code == 0, good.output
    assert "Model is built and ready to deploy" in good.stdout
    assert good.stdout.strip().splitlines()[-1].startswith("Built version ")
    bad = write_package(tmp_path / "bad", requirements="no-such-package-orchard==1\n")
    failed = CliRunner().invoke(cli, ["model", "upload", str(bad)], env=env)
    assert failed.exit_code == 1
    assert failed.stderr.startswith("Error: version ") and "build failed" in failed.stderr


def test_a_full_disk_fails_the_upload_with_a_status_that_says_so(server, api, echo_model):
    packages = server.server.runtime.packages
    receive = packages.receive

    def onto_a_full_disk(upload_id: str):
        # /dev/full answers every write with ENOSPC: the kernel's own full disk. The part
        # file is a link to it, which abort removes (the link, never the device).
        (packages.incoming / f"{upload_id}.part").symlink_to("/dev/full")
        return receive(upload_id)

    packages.receive = onto_a_full_disk
    responses = _stream(api, [_config_message(api.user_id, 100), _part(b"x" * 100)])
    last = responses[-1].status
    assert last.code == sc.INTERNAL_RESOURCE_EXHAUSTED
    assert last.description.startswith("the server's disk is full: the package could not be")
    assert "free disk space" in last.description
    version = ok(
        api.call("ListModelVersions", user_app_id=echo_model, model_id="echo")
    ).model_versions[0]
    assert version.status.code == sc.MODEL_UPLOADING_FAILED
    assert version.status.description.startswith("the server's disk is full")
    assert list(packages.incoming.iterdir()) == [] and list(packages.blobs.iterdir()) == []
