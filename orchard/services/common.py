"""Small pieces every service uses: pages, conflict detection, patches and hints."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select
from sqlalchemy.orm import Session

from orchard import errors

DEFAULT_PER_PAGE = 128
MAX_PER_PAGE = 1000


@dataclass(frozen=True)
class Page:
    page: int = 1
    per_page: int = DEFAULT_PER_PAGE

    @classmethod
    def of(cls, page: int, per_page: int) -> Page:
        """From a request's ``page``/``per_page`` (zero means the default)."""
        if per_page > MAX_PER_PAGE:
            raise errors.InvalidRequest(
                f"per_page {per_page} is too large; ask for at most {MAX_PER_PAGE} per page"
            )
        return cls(page=page or 1, per_page=per_page or DEFAULT_PER_PAGE)

    def apply(self, query: Select[Any]) -> Select[Any]:
        return query.limit(self.per_page).offset((self.page - 1) * self.per_page)


def only_one(
    session: Session,
    query: Select[Any],
    missing: errors.OrchardError,
    ambiguous: errors.OrchardError,
) -> Any:
    """The single row ``query`` finds; ``missing`` or ``ambiguous`` when not exactly one."""
    rows = list(session.scalars(query.limit(2)))
    if not rows:
        raise missing
    if len(rows) > 1:
        raise ambiguous
    return rows[0]


PATCH_ACTIONS = ("overwrite", "merge")


def _merge(current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    merged = dict(current)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def patch_fields(
    current: dict[str, Any],
    change: dict[str, Any],
    action: str,
    error: type[errors.OrchardError],
) -> dict[str, Any]:
    """What a Patch* request makes of ``current``: ``overwrite`` (the default) replaces the
    fields ``change`` sets, ``merge`` merges nested objects field by field."""
    action = action or "overwrite"
    if action not in PATCH_ACTIONS:
        raise error(f"invalid action {action!r}; use one of: {', '.join(PATCH_ACTIONS)}")
    return current | change if action == "overwrite" else _merge(current, change)


def cli_hint(command: str) -> str:
    """A command as users of either CLI type it: Orchard's and the official ``clarifai`` CLI
    share the command shapes named in messages."""
    return f"`orchard {command}` (or `clarifai {command}`)"
