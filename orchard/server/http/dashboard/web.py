"""What every dashboard route shares: the session of a request, the write checks, and the
wrapping of the pages' JSON endpoints (errors as JSON, never a traceback)."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from orchard.server.http.dashboard.calls import Api, ApiError
from orchard.server.http.dashboard.forms import FormError
from orchard.server.http.dashboard.sessions import (
    COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    DashboardSession,
    SessionStore,
    cross_site_reason,
    csrf_matches,
)
from orchard.server.rpc import new_request_id

if TYPE_CHECKING:  # the HTTP app imports the dashboard
    from orchard.server.http.app import HttpContext

log = logging.getLogger(__name__)
MAX_BODY = 1 << 20  # a form or a try-it text

Endpoint = Callable[[Request, Api], Awaitable[Any]]


class Refused(Exception):
    """A request the dashboard refuses before calling the API (HTTP status, message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class Dashboard:
    """The dashboard's state: the HTTP context and the sign-in sessions."""

    def __init__(self, context: HttpContext, sessions: SessionStore | None = None) -> None:
        self.context = context
        self.sessions = sessions or SessionStore()

    @property
    def serving(self) -> bool:
        """False once the server stops: live streams end so that it can."""
        series = self.context.timeseries
        return series is None or series.running

    def session_of(self, request: Request) -> DashboardSession | None:
        return self.sessions.get(request.cookies.get(COOKIE))

    def api(self, session: DashboardSession) -> Api:
        return Api(self.context.adapter, session)

    def check_write(self, request: Request, session: DashboardSession | None, csrf: str) -> None:
        """Refuse a write from another site, or without this session's CSRF token."""
        origin = f"{request.url.scheme}://{request.url.netloc}"
        reason = cross_site_reason(request.headers, origin)
        if reason is not None:
            raise Refused(403, f"refused: {reason}")
        if session is not None and not csrf_matches(session, csrf):
            raise Refused(403, "refused: the CSRF token is missing or wrong; reload the page")

    def endpoint(self, handler: Endpoint) -> Callable[[Request], Awaitable[Response]]:
        """A JSON endpoint of the pages: signed in, writes checked, errors as JSON."""

        async def serve(request: Request) -> Response:
            session = None
            try:
                writes = request.method == "POST"
                if writes:  # another site's write is refused before anything else
                    self.check_write(request, None, "")
                session = self.session_of(request)
                if session is None:
                    raise Refused(401, "not signed in, or the session expired; sign in again")
                if writes:
                    self.check_write(request, session, request.headers.get(CSRF_HEADER, ""))
                answer = await handler(request, self.api(session))
            except ApiError as exc:
                if exc.http_status == 401 and session is not None:  # the PAT was revoked
                    self.sessions.end(session.id)
                return self.failure(exc)
            except Exception as exc:
                return self.failure(exc)
            return answer if isinstance(answer, Response) else JSONResponse(answer)

        return serve

    def failure(self, exc: Exception) -> Response:
        if isinstance(exc, Refused):
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        if isinstance(exc, ApiError):
            return JSONResponse(exc.as_json(), status_code=exc.http_status)
        if isinstance(exc, FormError):
            return JSONResponse({"error": "check the fields", "fields": exc.fields}, 400)
        request_id = new_request_id()
        log.error("dashboard: internal error (request id %s)", request_id, exc_info=exc)
        message = f"internal error (request id {request_id}); the server log has the details"
        return JSONResponse({"error": message}, status_code=500)


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object (at most 1 MiB)."""
    body = await request.body()
    if len(body) > MAX_BODY:
        raise Refused(413, f"the request is over {MAX_BODY} bytes")
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        raise Refused(400, "the request body is not JSON") from None
    if not isinstance(data, dict):
        raise Refused(400, "the request body must be a JSON object")
    return data


async def form_body(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (the last value of each)."""
    body = await request.body()
    if len(body) > MAX_BODY:
        raise Refused(413, f"the form is over {MAX_BODY} bytes")
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {key: values[-1] for key, values in fields.items()}


def csrf_of(form: dict[str, str]) -> str:
    return form.get(CSRF_FIELD, "")
