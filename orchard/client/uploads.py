"""Uploading a model package: check it, pack it, stream it, follow its build.

    version = upload_model("examples/models/echo")      # user, PAT, server: as every client

The package is checked locally first (files, config.yaml fields, and model.py loaded in a
separate interpreter with uninstalled imports stubbed, which also gives its method
signatures), so a broken package uploads nothing. The app and the model are created when
missing. ``on_progress(sent, total)`` follows the upload and ``on_log(line)`` the build log,
which the server keeps.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2 as sc
from google.protobuf import json_format

from orchard import errors
from orchard.client.base import BaseClient
from orchard.client.logs import LogReader
from orchard.packaging.inspect import run_inspection
from orchard.packaging.package import Package, load_package, pack

CHUNK_BYTES = 4 << 20
# The build is polled quickly at first (a cached environment is ready in well under a second),
# then less often.
POLL_FIRST_S, POLL_MAX_S = 0.05, 1.0


def normalized_config(package: Package, user_id: str) -> dict[str, Any]:
    """config.yaml as uploaded: with the owner filled in."""
    config = package.config.model_dump(exclude_defaults=False, exclude_none=True)
    config["model"]["user_id"] = user_id
    return config


def _version_proto(
    package: Package, signatures: list[dict[str, Any]] | None
) -> resources_pb2.ModelVersion:
    config = package.config
    version = resources_pb2.ModelVersion(num_threads=config.num_threads)
    for signature in signatures or []:
        json_format.ParseDict(signature, version.method_signatures.add())
    info = config.inference_compute_info.model_dump(exclude_defaults=True)
    version.inference_compute_info.CopyFrom(resources_pb2.ComputeInfo(**info))
    for concept in config.concepts:
        version.output_info.data.concepts.add(id=concept.id, name=concept.name or concept.id)
    return version


def _requests(
    client: BaseClient,
    package: Package,
    version: resources_pb2.ModelVersion,
    archive: IO[bytes],
    size: int,
    on_progress: Callable[[int, int], None],
) -> Iterator[Any]:
    cfg = package.config.model
    yield service_pb2.PostModelVersionsUploadRequest(
        upload_config=service_pb2.PostModelVersionsUploadConfig(
            user_app_id=client._user_app_id(cfg.app_id),
            model_id=cfg.id,
            model_version=version,
            total_size=size,
            is_v3=True,
        )
    )
    sent, part = 0, 1
    while chunk := archive.read(CHUNK_BYTES):
        sent += len(chunk)
        yield service_pb2.PostModelVersionsUploadRequest(
            content_part=resources_pb2.UploadContentPart(
                data=chunk, part_number=part, range_start=sent - len(chunk)
            )
        )
        part += 1
        on_progress(sent, size)


def ensure_model(client: BaseClient, package: Package) -> None:
    """Create the package's app and model unless they exist."""
    cfg = package.config.model
    user_app = client._user_app_id(cfg.app_id)
    try:
        client._call("GetApp", service_pb2.GetAppRequest(user_app_id=user_app))
    except errors.NotFound:
        client._call(
            "PostApps",
            service_pb2.PostAppsRequest(
                user_app_id=user_app, apps=[resources_pb2.App(id=cfg.app_id)]
            ),
        )
    try:
        client._call("GetModel", service_pb2.GetModelRequest(user_app_id=user_app, model_id=cfg.id))
    except errors.ModelNotFound:
        model = resources_pb2.Model(id=cfg.id, model_type_id=cfg.model_type_id)
        client._call(
            "PostModels", service_pb2.PostModelsRequest(user_app_id=user_app, models=[model])
        )


def send_package(
    client: BaseClient,
    package: Package,
    version: resources_pb2.ModelVersion,
    on_progress: Callable[[int, int], None],
) -> str:
    """Stream the packed package; returns the new version's id once the server builds it."""
    with tempfile.TemporaryFile() as archive:
        pack(package, archive, normalized_config(package, client.user_id))
        size = archive.tell()
        archive.seek(0)
        version_id = ""
        for response in client._stream(
            "PostModelVersionsUpload",
            _requests(client, package, version, archive, size, on_progress),
        ):
            version_id = response.model_version_id or version_id
            if response.status.code == sc.MODEL_BUILDING:
                return version_id
            if response.status.code != sc.UPLOAD_IN_PROGRESS:
                raise errors.from_status(response.status)
    raise errors.ModelUploadFailed(
        "the server closed the upload without confirming it; upload again"
    )


def follow_build(
    client: BaseClient, package: Package, version_id: str, on_log: Callable[[str], None]
) -> resources_pb2.ModelVersion:
    """Poll the version until its build ends, passing new build log lines to ``on_log``."""
    cfg = package.config.model
    user_app = client._user_app_id(cfg.app_id)
    reader = LogReader(
        client,
        service_pb2.ListLogEntriesRequest(
            user_app_id=user_app, model_id=cfg.id, model_version_id=version_id, log_type="builder"
        ),
    )
    pause = POLL_FIRST_S
    while True:
        version = client._call(
            "GetModelVersion",
            service_pb2.GetModelVersionRequest(
                user_app_id=user_app, model_id=cfg.id, version_id=version_id
            ),
        ).model_version
        for message in reader.read():
            on_log(message)
        if version.status.code != sc.MODEL_BUILDING:
            break
        time.sleep(pause)
        pause = min(pause * 1.5, POLL_MAX_S)
    if version.status.code != sc.MODEL_TRAINED:
        raise errors.ModelBuildFailed(
            f"version {version_id} of model {cfg.id!r}: {version.status.description}"
        )
    return version


def upload_model(
    path: str | Path,
    *,
    user_id: str | None = None,
    base_url: str | None = None,
    pat: str | None = None,
    wait: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
    on_log: Callable[[str], None] | None = None,
    **client_kwargs: Any,
) -> resources_pb2.ModelVersion:
    """Upload the package at ``path``; with ``wait`` (default) return the built version, or
    raise ``ModelBuildFailed`` with the reason (the build log has the tools' output)."""
    package = load_package(path)
    signatures = run_inspection(sys.executable, package.root, stub_missing=True)
    version = _version_proto(package, signatures)
    with BaseClient(user_id=user_id, base_url=base_url, pat=pat, **client_kwargs) as client:
        ensure_model(client, package)
        version_id = send_package(
            client, package, version, on_progress or (lambda sent, total: None)
        )
        if not wait:
            return resources_pb2.ModelVersion(id=version_id)
        return follow_build(client, package, version_id, on_log or (lambda line: None))
