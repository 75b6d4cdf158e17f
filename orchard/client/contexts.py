"""The CLI config file: named contexts, each a (base URL, PAT, user id), one of them current.

Shared by the CLI (``orchard login``, ``orchard config ...``) and the SDK, which reads the
current context through :func:`load_context` when a setting is given neither as an argument
nor in the environment.

Location: the ``--config`` option of the CLI, else env ``ORCHARD_CONFIG``, else
``~/.config/orchard/config``. The file is YAML, written with mode 0600 because it holds PATs::

    current_context: local
    contexts:
      local:
        base_url: http://127.0.0.1:7600
        pat: 0123456789abcdef
        user_id: alice
      prod:
        base_url: https://orchard.example.com
        pat: fedcba9876543210
        user_id: alice

Every field of a context is optional; a missing one is simply not taken from the file.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orchard import errors

CONFIG_ENV = "ORCHARD_CONFIG"
DEFAULT_CONFIG_PATH = "~/.config/orchard/config"
CONTEXT_FIELDS = ("base_url", "pat", "user_id")


@dataclass
class Context:
    base_url: str = ""
    pat: str = ""
    user_id: str = ""

    def to_dict(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in CONTEXT_FIELDS if getattr(self, name)}


@dataclass
class ConfigFile:
    """The parsed file; ``exists`` is False when there is no file at ``path`` yet."""

    path: Path
    current_context: str = ""
    contexts: dict[str, Context] = field(default_factory=dict)
    exists: bool = False

    def context(self, name: str | None = None) -> Context:
        """The context called ``name`` (default: the current one), or a UserError saying why not."""
        wanted = name or self.current_context
        if not wanted:
            raise errors.UserError(
                f"no current context in {self.path}; pick one with `orchard config use-context "
                "NAME` or log in with `orchard login`"
            )
        if wanted not in self.contexts:
            known = ", ".join(sorted(self.contexts)) or "none"
            raise errors.UserError(
                f"context {wanted!r} not found in {self.path} (known: {known}); list them with "
                "`orchard config get-contexts`"
            )
        return self.contexts[wanted]

    def to_dict(self) -> dict[str, Any]:
        return {
            "current_context": self.current_context,
            "contexts": {name: ctx.to_dict() for name, ctx in self.contexts.items()},
        }


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Where the config file is: ``explicit``, else env ORCHARD_CONFIG, else the default."""
    raw = explicit or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH
    return Path(raw).expanduser()


def read_config(path: str | os.PathLike[str] | None = None) -> ConfigFile:
    """The config file at ``config_path(path)``; an empty one if the file does not exist."""
    file = config_path(path)
    if not file.exists():
        return ConfigFile(path=file)
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise errors.UserError(f"cannot read config file {file}: {exc}; fix or remove it") from None
    if not isinstance(data, dict):
        raise errors.UserError(f"config file {file} is not a YAML mapping; fix or remove it")
    return ConfigFile(
        path=file,
        current_context=str(data.get("current_context") or ""),
        contexts=_parse_contexts(file, data.get("contexts") or {}),
        exists=True,
    )


def _parse_contexts(file: Path, raw: Any) -> dict[str, Context]:
    if not isinstance(raw, dict):
        raise errors.UserError(f"config file {file}: 'contexts' must be a mapping of names")
    contexts = {}
    for name, body in raw.items():
        body = body or {}
        unknown = sorted(set(body) - set(CONTEXT_FIELDS)) if isinstance(body, dict) else None
        if unknown is None or unknown:
            raise errors.UserError(
                f"config file {file}: context {name!r} must hold only "
                f"{', '.join(CONTEXT_FIELDS)} (found {unknown or body!r})"
            )
        contexts[str(name)] = Context(**{k: str(v) for k, v in body.items() if v is not None})
    return contexts


def write_config(config: ConfigFile) -> None:
    """Write ``config`` atomically with mode 0600, creating its parent folders."""
    config.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    text = yaml.safe_dump(config.to_dict(), sort_keys=False)
    fd, tmp = tempfile.mkstemp(dir=config.path.parent, prefix=".config-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, config.path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    config.exists = True


def load_context(
    name: str | None = None, path: str | os.PathLike[str] | None = None
) -> Context | None:
    """The context the SDK falls back to: ``name`` or the current one of the config file.

    Returns None when no context applies (no file, or a file with no current context and no
    ``name`` asked for); a named context that is missing is a UserError.
    """
    config = read_config(path)
    if name is None and not config.current_context:
        return None
    if name is not None and not config.exists:
        raise errors.UserError(
            f"context {name!r} asked for, but there is no config file at {config.path}; "
            "create one with `orchard login` or `orchard config create-context`"
        )
    return config.context(name)
