"""The HTTP app: the routes of every part that answers on the HTTP listener.

Each part (``rest``, ``openai``, ``dashboard``) contributes its routes given one
:class:`HttpContext`; this module puts them together, with ``/metrics``.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from orchard.server.http.dashboard import dashboard_routes
from orchard.server.http.openai import openai_routes
from orchard.server.http.rest import rest_routes
from orchard.server.rpc import GrpcAdapter, Runtime
from orchard.server.timeseries import TimeSeries


@dataclass(frozen=True)
class HttpContext:
    """What HTTP routes reach: the adapter every call goes through, and the runtime."""

    adapter: GrpcAdapter
    runtime: Runtime
    grpc_port: int = 0  # the server's gRPC port (for links and examples the pages show)
    timeseries: TimeSeries | None = None  # each deployment's last hour, for the dashboard

    @property
    def max_request_bytes(self) -> int:
        """The largest body a call may send: the server's ``--max-request-bytes``, which its
        URL-input policy holds."""
        return self.runtime.fetcher.policy.max_request_bytes


def metrics_routes(context: HttpContext) -> list[BaseRoute]:
    async def scrape(request: Request) -> Response:
        body = context.runtime.metrics.exposition()
        return Response(body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return [Route("/metrics", scrape, methods=["GET"])]


def build_app(context: HttpContext) -> Starlette:
    """Every route of the HTTP listener."""
    routes: list[BaseRoute] = [*metrics_routes(context)]
    routes += openai_routes(context)  # before rest: `/v2/ext/openai/v1/...`
    routes += rest_routes(context)
    routes += dashboard_routes(context)  # last: `/`, `/ui/...` (never `/v2/...`)
    return Starlette(routes=routes)
