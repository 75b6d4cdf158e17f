"""The store: SQLAlchemy 2 rows, sessions and Alembic migrations (SQLite or PostgreSQL)."""

from orchard.store.db import Store

__all__ = ["Store"]
