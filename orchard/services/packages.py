"""Package archives, stored content-addressed under the server's home.

HOME/packages/blobs/<sha256>.tar.gz     the uploaded archive
HOME/packages/unpacked/<sha256>/        its files, extracted once for builds and runners
HOME/packages/incoming/<version>.part   an upload in progress

A disk without room left while an upload is stored is raised as
:class:`~orchard.errors.StorageFull` (the part file is removed by ``abort``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from orchard import errors
from orchard.packaging.package import Package, load_package, unpack

log = logging.getLogger(__name__)
NO_ROOM = (errno.ENOSPC, errno.EDQUOT)
UPLOAD_FULL = (
    "the server's disk is full: the package could not be stored, and nothing of it was kept; "
    "ask the server's operator to free disk space under the server's home, then upload again"
)


class PackageStore:
    def __init__(self, root: Path) -> None:
        self.blobs = root / "blobs"
        self.unpacked = root / "unpacked"
        self.incoming = root / "incoming"
        for folder in (self.blobs, self.unpacked, self.incoming):
            folder.mkdir(parents=True, exist_ok=True)
        # A digest names its content, so a package read once is the package for good (the
        # orchestrator asks for its deployments' packages every round).
        self._loaded: dict[str, Package] = {}

    def blob(self, digest: str) -> Path:
        return self.blobs / f"{digest}.tar.gz"

    def receive(self, upload_id: str) -> Upload:
        return Upload(self, self.incoming / f"{upload_id}.part")

    def unpacked_if_present(self, digest: str) -> Package | None:
        """The package's files if they were extracted already (None: not yet); only reads."""
        if (known := self._loaded.get(digest)) is not None:
            return known
        target = self.unpacked / digest
        if not target.is_dir():
            return None
        package = self._loaded[digest] = load_package(target)
        return package

    def unpacked_package(self, digest: str) -> Package:
        """The package's files (extracted and read on first use; later calls reuse them)."""
        if (known := self._loaded.get(digest)) is not None:
            return known
        target = self.unpacked / digest
        if not target.is_dir():
            staging = Path(tempfile.mkdtemp(dir=self.unpacked, prefix=f".{digest[:12]}-"))
            try:
                unpack(self.blob(digest), staging)
                os.replace(staging, target)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        # Readable by replicas that run as their tenants' uids: the folder is reachable only
        # through the server's private home, or a sandbox's read-only bind of it.
        target.chmod(0o755)
        package = self._loaded[digest] = load_package(target)
        return package


class Upload:
    """Bytes of one upload, hashed as they arrive; ``finish`` files them by digest."""

    def __init__(self, store: PackageStore, path: Path) -> None:
        self.store, self.path = store, path
        self.size = 0
        self._hash = hashlib.sha256()
        with _room_for(path):
            self._file: BinaryIO = path.open("wb")

    def write(self, data: bytes) -> None:
        with _room_for(self.path):
            self._file.write(data)
        self._hash.update(data)
        self.size += len(data)

    def finish(self) -> str:
        with _room_for(self.path):
            self._file.close()
        digest = self._hash.hexdigest()
        os.replace(self.path, self.store.blob(digest))
        return digest

    def abort(self) -> None:
        with contextlib.suppress(OSError):  # what is left to flush goes with the file
            self._file.close()
        self.path.unlink(missing_ok=True)


@contextlib.contextmanager
def _room_for(path: Path) -> Iterator[None]:
    """Raise StorageFull, from the OS error, when the disk has no room for ``path``."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in NO_ROOM:
            raise
        log.error("no room on disk for an upload at %s: %s", path, exc)
        raise errors.StorageFull(UPLOAD_FULL) from exc
