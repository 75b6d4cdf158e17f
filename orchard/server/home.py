"""The server's home: private to the server from the first start.

The home holds the database (every user's rows and PAT hashes), the bootstrap PAT file, the
uploaded packages, the built environments and the replicas' logs. It is made 0700 and the
database 0600, so that no other account on the host, and no replica, reads them: replicas see
only what their sandbox binds of it (:mod:`orchard.providers.sandbox`). Looser modes found on
an existing home are reported at start (the operator may have chosen them; nothing is changed).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def prepare_home(home: Path, database: Path | None, secrets: list[Path]) -> list[str]:
    """Make ``home`` (0700) and the SQLite ``database`` file (0600) when missing; returns a
    warning for each of them and of ``secrets`` (files that hold credentials) that other
    accounts can read or write."""
    if not home.exists():
        home.mkdir(mode=PRIVATE_DIR, parents=True)
    if database is not None and not database.exists():
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    found = [(home, "the server's home")]
    found += [(database, "the database")] if database is not None else []
    found += [(path, "a PAT file") for path in secrets if path.exists()]
    warnings = [_warning(path, what) for path, what in found if _loose(path)]
    for warning in warnings:
        log.warning(warning)
    return warnings


def _loose(path: Path) -> bool:
    return bool(path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))


def _warning(path: Path, what: str) -> str:
    mode = stat.S_IMODE(path.stat().st_mode)
    fix = f"chmod {PRIVATE_DIR if path.is_dir() else PRIVATE_FILE:o} {path}"
    return f"{what} {path} is mode {mode:o}: other accounts on this host can reach it; run `{fix}`"
