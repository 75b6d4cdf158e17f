"""Engine, sessions and migrations.

``Store(url)`` opens SQLite (the embedded default) or PostgreSQL by URL and brings the schema
to the newest Alembic revision. Services get a session per request from :meth:`Store.session`,
which commits on success and rolls back on any error, so a failed request writes nothing. A
database without room left (SQLite's "database or disk is full", PostgreSQL's disk_full) is
raised as :class:`~orchard.errors.StorageFull`, which says so and what to do.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from orchard import errors

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).with_name("migrations")
PG_DISK_FULL = "53100"
STORE_FULL = (
    "the server's storage is full: its database has no room left, and nothing of this request "
    "was saved; ask the server's operator to free disk space where the database lives (the "
    "server's home for SQLite), then retry"
)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def _normalize(url: str) -> str:
    """Use psycopg 3 for plain ``postgresql://`` URLs."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def make_engine(url: str) -> Engine:
    url = _normalize(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def is_full(exc: DBAPIError) -> bool:
    """Whether the database refused a write for want of room."""
    orig = exc.orig
    return (
        getattr(orig, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
        or getattr(orig, "sqlstate", None) == PG_DISK_FULL
    )


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


class Store:
    def __init__(self, url: str, *, run_migrations: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url)
        if run_migrations:
            migrate(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back when it raises."""
        try:
            with self._sessions() as session, session.begin():
                yield session
        except DBAPIError as exc:
            if not is_full(exc):
                raise
            log.error("the database is full: %s", exc.orig)
            raise errors.StorageFull(STORE_FULL) from exc

    def close(self) -> None:
        self.engine.dispose()
