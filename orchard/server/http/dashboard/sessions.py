"""The dashboard's sign-in sessions and the checks every write passes.

A session is held in this server's memory under a random id (the only thing the browser gets,
in an ``HttpOnly; SameSite=Strict`` cookie); it keeps the user's PAT, which never reaches a
page, and a CSRF token of its own. A session ends at sign-out or when it expires; a restart of
the server ends them all. Every write (any POST) must carry the session's CSRF token (form
field ``csrf`` or header ``X-CSRF-Token``) and must not come from another site
(``Sec-Fetch-Site``, else ``Origin``).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

COOKIE = "orchard_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"
SESSION_SECONDS = 8 * 3600
MAX_SESSIONS = 10_000


@dataclass(frozen=True)
class DashboardSession:
    id: str
    user_id: str
    token: str  # the user's PAT: the dashboard calls the API with it, server side only
    csrf: str
    expires: float  # on the store's clock

    @property
    def metadata(self) -> list[tuple[str, str]]:
        """The API metadata of this session's calls."""
        return [("authorization", f"Key {self.token}")]


class SessionStore:
    """Sessions by id, each valid for ``ttl`` seconds from sign-in (``clock`` is injected)."""

    def __init__(
        self,
        ttl: float = SESSION_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        limit: int = MAX_SESSIONS,
    ) -> None:
        self.ttl, self.clock, self.limit = ttl, clock, limit
        self._sessions: dict[str, DashboardSession] = {}

    def create(self, user_id: str, token: str) -> DashboardSession:
        if len(self._sessions) >= self.limit:
            self._drop_expired()
        if len(self._sessions) >= self.limit:  # the oldest goes
            del self._sessions[next(iter(self._sessions))]
        session = DashboardSession(
            secrets.token_urlsafe(32),
            user_id,
            token,
            secrets.token_urlsafe(32),
            self.clock() + self.ttl,
        )
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> DashboardSession | None:
        """The live session of ``session_id``; None when unknown or expired (then forgotten)."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires <= self.clock():
            del self._sessions[session_id]
            return None
        return session

    def end(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(session_id, None)

    def end_user(self, user_id: str, token: str) -> None:
        """End the sessions signed in with ``token`` (a PAT that no longer works)."""
        for key, session in list(self._sessions.items()):
            if session.user_id == user_id and session.token == token:
                del self._sessions[key]

    def __len__(self) -> int:
        return len(self._sessions)

    def _drop_expired(self) -> None:
        now = self.clock()
        for key in [k for k, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[key]


def csrf_matches(session: DashboardSession, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(session.csrf, str(presented))


def cross_site_reason(headers: Mapping[str, str], own_origin: str) -> str | None:
    """Why a write with these request headers comes from another site; None when it does not.
    Browsers send ``Sec-Fetch-Site``; older ones send ``Origin`` on a cross-site POST."""
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return f"the request came from another site (Sec-Fetch-Site: {fetch_site})"
    origin = headers.get("origin")
    if origin is not None and origin != own_origin:
        return f"the request came from another origin ({origin})"
    return None


def cookie_header(session: DashboardSession | None, ttl: float, secure: bool) -> str:
    """The ``Set-Cookie`` value that holds ``session`` (None: the one that clears it)."""
    value, age = (session.id, int(ttl)) if session is not None else ("", 0)
    flags = "; Secure" if secure else ""
    return f"{COOKIE}={value}; Max-Age={age}; Path=/; HttpOnly; SameSite=Strict{flags}"
