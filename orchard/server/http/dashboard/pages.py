"""The dashboard's HTML: the sign-in page, the page every view of a signed-in user is drawn in
(``static/app.js`` fills it from the JSON endpoints), sign-in and sign-out."""

from __future__ import annotations

import html
import logging

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from orchard import errors
from orchard.server.http.dashboard.sessions import DashboardSession, cookie_header
from orchard.server.http.dashboard.web import Dashboard, Refused, csrf_of, form_body

log = logging.getLogger(__name__)
ASSETS = "/ui/static"
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def _document(title: str, body: str, head: str = "") -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title>"
        '<link rel="icon" href="data:,">'
        f'<link rel="stylesheet" href="{ASSETS}/app.css">{head}</head>'
        f"<body>{body}</body></html>"
    )


def signin_page(message: str = "") -> str:
    alert = f'<p class="error" role="alert">{html.escape(message)}</p>' if message else ""
    return _document(
        "Sign in · Orchard",
        '<main class="signin"><h1>Orchard</h1>'
        '<form method="post" action="/ui/signin">'
        '<label for="pat">Personal access token</label>'
        '<input id="pat" name="pat" type="password" autocomplete="current-password" required '
        'autofocus aria-describedby="pat-help">'
        '<p id="pat-help" class="help">Make one with <code>orchard pat create</code>; '
        "it stays on the server for this session.</p>"
        f'{alert}<button type="submit">Sign in</button></form></main>',
    )


def shell_page(session: DashboardSession) -> str:
    user = html.escape(session.user_id)
    return _document(
        "Orchard",
        '<header><a class="brand" href="/">Orchard</a><nav aria-label="Main">'
        '<a href="/">Compute</a> <a href="/ui/models">Models</a></nav>'
        f'<span class="who">Signed in as <strong id="user">{user}</strong></span>'
        '<form method="post" action="/ui/signout">'
        f'<input type="hidden" name="csrf" value="{html.escape(session.csrf)}">'
        '<button type="submit" class="link">Sign out</button></form></header>'
        '<main id="main" tabindex="-1"><p>Loading…</p></main>'
        '<p id="status" class="status" role="status" aria-live="polite"></p>',
        head=(
            f'<meta name="csrf-token" content="{html.escape(session.csrf)}">'
            f'<script src="{ASSETS}/charts.js" defer></script>'
            f'<script src="{ASSETS}/app.js" defer></script>'
        ),
    )


def _html(body: str, status: int = 200, cookie: str | None = None) -> HTMLResponse:
    response = HTMLResponse(body, status_code=status, headers=HEADERS)
    if cookie is not None:
        response.headers["Set-Cookie"] = cookie
    return response


class Pages:
    def __init__(self, dashboard: Dashboard) -> None:
        self.dashboard = dashboard

    async def index(self, request: Request) -> Response:
        session = self.dashboard.session_of(request)
        return _html(shell_page(session) if session else signin_page())

    async def view(self, request: Request) -> Response:
        """Any page under /ui/: drawn by the script, once signed in."""
        session = self.dashboard.session_of(request)
        if session is None:
            return RedirectResponse("/", status_code=303, headers=HEADERS)
        return _html(shell_page(session))

    async def signin(self, request: Request) -> Response:
        try:
            self.dashboard.check_write(request, None, "")
            token = (await form_body(request)).get("pat", "").strip()
            if not token:
                return _html(signin_page("Enter a personal access token."), 400)
            user_id = await self.dashboard.context.adapter.authenticate(token)
        except Refused as exc:
            return _html(signin_page(exc.message), exc.status)
        except Exception as exc:  # the API's own refusal of the token
            return _html(signin_page(_signin_refusal(exc)), 401)
        session = self.dashboard.sessions.create(user_id, token)
        return self._redirect(session)

    async def signout(self, request: Request) -> Response:
        session = self.dashboard.session_of(request)
        try:
            self.dashboard.check_write(request, session, csrf_of(await form_body(request)))
        except Refused as exc:
            return _html(signin_page(exc.message), exc.status)
        if session is not None:
            self.dashboard.sessions.end(session.id)
        return self._redirect(None)

    def _redirect(self, session: DashboardSession | None) -> Response:
        secure = False  # the listener serves plain HTTP; a TLS proxy in front may add Secure
        cookie = cookie_header(session, self.dashboard.sessions.ttl, secure)
        response = RedirectResponse("/", status_code=303, headers=HEADERS)
        response.headers["Set-Cookie"] = cookie
        return response


def _signin_refusal(exc: Exception) -> str:
    if isinstance(exc, errors.OrchardError):
        return exc.message
    log.error("dashboard: sign-in failed", exc_info=exc)
    return "The server could not check that token now; try again."
