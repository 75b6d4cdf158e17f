"""Reading, checking, packing and unpacking a model package folder.

    my-model/
      config.yaml         model id/app/type, build_info, inference_compute_info, num_threads ...
      requirements.txt    what model.py imports (may be empty)
      1/model.py          one ModelClass subclass

Every problem is reported as one :class:`~orchard.errors.ModelInvalid` that names the file, the
field and the fix, before anything is uploaded.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

from orchard import configs, errors
from orchard.packaging import CONFIG, MODEL_FILE, REQUIREMENTS
from orchard.packaging.config import PackageConfig

EXCLUDED_DIRS = {
    "__pycache__",
    ".git",
    ".venv",
    "venv",
    ".ruff_cache",
    ".mypy_cache",
    ".pytest_cache",
    ".ipynb_checkpoints",
}
EXCLUDED_SUFFIXES = {".pyc", ".pyo"}


@dataclass(frozen=True)
class Package:
    root: Path
    config: PackageConfig
    requirements: str

    @property
    def model_file(self) -> Path:
        return self.root / MODEL_FILE


def _invalid(message: str) -> errors.ModelInvalid:
    return errors.ModelInvalid(message)


def read_config(root: Path) -> PackageConfig:
    path = root / CONFIG
    if not path.is_file():
        raise _invalid(
            f"{path}: missing; write a config.yaml with at least `model: {{id: MY_MODEL}}`"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise _invalid(
            f"{path}: YAML syntax error{where}: "
            f"{getattr(exc, 'problem', None) or exc}; fix the file"
        ) from None
    try:
        config: PackageConfig = configs.validate(
            PackageConfig, data, where="", error=errors.ModelInvalid
        )
    except errors.ModelInvalid as exc:
        raise _invalid(f"{path}: {exc.message}") from None
    return config


def check_model_source(path: Path) -> None:
    """Static checks of ``1/model.py``: it parses and defines a class with a base (whether
    that is a ModelClass, of Orchard or of the official SDK, however named or imported, is
    decided by loading it: :mod:`orchard.packaging.inspect`)."""
    if not path.is_file():
        raise _invalid(
            f"{path}: missing; the model's code lives in 1/model.py with a class "
            "that subclasses ModelClass"
        )
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except SyntaxError as exc:
        raise _invalid(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.bases:
            return
    raise _invalid(
        f"{path}: defines no ModelClass subclass; write "
        "`class MyModel(ModelClass):` with methods decorated @ModelClass.method"
    )


def load_package(path: str | Path) -> Package:
    """Read and check the package at ``path``."""
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise errors.UserError(f"model package folder not found at {str(path)!r}; check the path")
    config = read_config(root)
    requirements = root / REQUIREMENTS
    if not requirements.is_file():
        raise _invalid(
            f"{requirements}: missing; list the model's Python dependencies there "
            "(an empty file if it needs none)"
        )
    check_model_source(root / MODEL_FILE)
    return Package(root=root, config=config, requirements=requirements.read_text())


def _included(root: Path) -> list[Path]:
    files = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part in EXCLUDED_DIRS for part in relative.parts):
            continue
        if path.is_file() and path.suffix not in EXCLUDED_SUFFIXES:
            files.append(path)
    return files


def _add(tar: tarfile.TarFile, name: str, data: IO[bytes], size: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    tar.addfile(info, data)


def pack(package: Package, out: IO[bytes], config: dict[str, Any] | None = None) -> str:
    """Write the package as a reproducible tar.gz to ``out``; returns its sha256.

    ``config`` replaces config.yaml (the SDK writes the normalized config with its ids).
    """
    digest = hashlib.sha256()

    class Hashing(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, data: Any) -> int:
            digest.update(data)
            return out.write(data)

    with (
        gzip.GzipFile(fileobj=Hashing(), mode="wb", mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w") as tar,
    ):
        for path in _included(package.root):
            name = path.relative_to(package.root).as_posix()
            if name == CONFIG and config is not None:
                text = yaml.safe_dump(config, sort_keys=False).encode()
                _add(tar, name, io.BytesIO(text), len(text))
                continue
            with path.open("rb") as handle:
                _add(tar, name, handle, path.stat().st_size)
    return digest.hexdigest()


def unpack(archive: Path, dest: Path) -> Package:
    """Extract a package archive safely (no paths outside ``dest``, no links out) and load it."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise _invalid(f"the uploaded package is not a valid tar.gz archive: {exc}") from None
    return load_package(dest)
