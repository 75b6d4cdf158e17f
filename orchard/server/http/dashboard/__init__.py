"""The web dashboard: a window on the signed-in user's own resources, at ``/`` of the HTTP
listener.

Pages are at ``/`` and ``/ui/...``, their script and styles at ``/ui/static/...`` (written
here, no outside asset), and the JSON the pages draw at ``/ui/api/...``; nothing of the
dashboard is under ``/v2/``. Every read and write is a call of the API's own handlers through
:class:`~orchard.server.rpc.GrpcAdapter` with the user's PAT, which the server keeps in the
session (:mod:`.sessions`): isolation, validation and errors are the API's.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from orchard.server.http.dashboard import live, reads, writes
from orchard.server.http.dashboard.calls import Api
from orchard.server.http.dashboard.pages import Pages
from orchard.server.http.dashboard.web import Dashboard

if TYPE_CHECKING:  # the HTTP app imports the dashboard
    from orchard.server.http.app import HttpContext

STATIC = Path(__file__).resolve().parent / "static"


def _api_routes(dashboard: Dashboard) -> list[BaseRoute]:
    json = dashboard.endpoint
    streams = live.Streams(dashboard)
    dep = "/ui/api/deployments/{deployment}"
    version = "/ui/api/models/{app}/{model}/versions/{version}"
    return [
        Route("/ui/api/overview", json(reads.overview)),
        Route("/ui/api/clusters/{cluster}", json(reads.cluster)),
        Route("/ui/api/clusters/{cluster}/nodepools/{nodepool}", json(reads.nodepool)),
        Route(dep, json(reads.DeploymentPage(dashboard))),
        Route(dep + "/logs", json(streams.deployment_logs)),
        Route(dep + "/predict", json(live.try_it), methods=["POST"]),
        Route("/ui/api/models", json(reads.models)),
        Route("/ui/api/models/{app}/{model}", json(reads.model)),
        Route(version, json(reads.version)),
        Route(version + "/log", json(streams.build_log)),
        Route("/ui/api/forms/{kind}", json(writes.describe)),
        Route("/ui/api/forms/{kind}", json(writes.save), methods=["POST"]),
        Route("/ui/api/forms/{kind}/yaml", json(writes.as_yaml), methods=["POST"]),
        Route("/ui/api/forms/{kind}/delete", json(writes.delete), methods=["POST"]),
        Route("/ui/api/{rest:path}", json(_unknown), methods=["GET", "POST"]),
    ]


async def _unknown(request: Request, api: Api) -> Response:
    return JSONResponse({"error": f"no dashboard endpoint at {request.url.path}"}, 404)


def dashboard_routes(context: HttpContext) -> list[BaseRoute]:
    """The dashboard's routes on ``context``, with a session store of their own."""
    dashboard = Dashboard(context)
    pages = Pages(dashboard)
    return [
        Route("/", pages.index, methods=["GET"]),
        Route("/ui/signin", pages.signin, methods=["POST"]),
        Route("/ui/signout", pages.signout, methods=["POST"]),
        Mount("/ui/static", app=StaticFiles(directory=STATIC), name="dashboard-static"),
        *_api_routes(dashboard),
        Route("/ui/{page:path}", pages.view, methods=["GET"]),
    ]
