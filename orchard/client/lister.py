"""The generic pager behind every ``list_*`` method.

With neither ``page_no`` nor ``per_page`` it walks every page (``per_page=128``) until a page
comes back short or empty. With either given it fetches exactly one page: ``page_no`` (1-based,
default 1) of ``per_page`` items (default 16, the seed SDK's page size).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from orchard import errors

T = TypeVar("T")
WALK_PER_PAGE = 128
ONE_PAGE_PER_PAGE = 16

Fetch = Callable[[int, int], Sequence[T]]


def paginate(
    fetch: Fetch[T], page_no: int | None = None, per_page: int | None = None
) -> Iterator[T]:
    """Items from ``fetch(page, per_page)``; see the module docstring for which pages."""
    for name, value in (("page_no", page_no), ("per_page", per_page)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise errors.UserError(f"{name} must be a whole number >= 1, got {value!r}")
    if page_no is None and per_page is None:
        return _walk(fetch)
    return iter(fetch(page_no or 1, per_page or ONE_PAGE_PER_PAGE))


def _walk(fetch: Fetch[T]) -> Iterator[T]:
    page = 1
    while True:
        items = fetch(page, WALK_PER_PAGE)
        yield from items
        # A short page is the last one; a long one means the server ignored paging.
        if len(items) != WALK_PER_PAGE:
            return
        page += 1
