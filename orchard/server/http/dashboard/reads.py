"""The pages' read endpoints: the API's answers as JSON, with the live parts (replicas, events,
the last hour's series) a deployment's page adds from the orchestrator's view."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from orchard.server.http.dashboard.calls import Api, ApiError, to_json
from orchard.server.http.dashboard.web import Dashboard
from orchard.server.timeseries import Point

PER_PAGE = 1000


def _param(request: Request, name: str) -> str:
    return str(request.path_params[name])


async def overview(request: Request, api: Api) -> dict[str, Any]:
    clusters = await api.call("ListComputeClusters", per_page=PER_PAGE)
    deployments = await api.call("ListDeployments", per_page=PER_PAGE)
    return {
        "clusters": [to_json(c) for c in clusters.compute_clusters],
        "deployments": [to_json(d) for d in deployments.deployments],
    }


async def cluster(request: Request, api: Api) -> dict[str, Any]:
    cc = _param(request, "cluster")
    found = await api.call("GetComputeCluster", compute_cluster_id=cc)
    pools = await api.call("ListNodepools", compute_cluster_id=cc, per_page=PER_PAGE)
    return {
        "cluster": to_json(found.compute_cluster),
        "nodepools": [to_json(n) for n in pools.nodepools],
    }


async def nodepool(request: Request, api: Api) -> dict[str, Any]:
    cc, np = _param(request, "cluster"), _param(request, "nodepool")
    found = await api.call("GetNodepool", compute_cluster_id=cc, nodepool_id=np)
    deployments = await api.call(
        "ListDeployments", compute_cluster_id=cc, nodepool_id=np, per_page=PER_PAGE
    )
    return {
        "nodepool": to_json(found.nodepool),
        "deployments": [to_json(d) for d in deployments.deployments],
    }


async def models(request: Request, api: Api) -> dict[str, Any]:
    found = await api.call("ListModels", per_page=PER_PAGE)
    return {"models": [to_json(m) for m in found.models]}


async def model(request: Request, api: Api) -> dict[str, Any]:
    app, model_id = _param(request, "app"), _param(request, "model")
    ids: dict[str, Any] = {
        "user_app_id": {"user_id": api.user_id, "app_id": app},
        "model_id": model_id,
    }
    found = await api.call("GetModel", **ids)
    versions = await api.call("ListModelVersions", **ids, per_page=PER_PAGE)
    return {
        "model": to_json(found.model),
        "versions": [to_json(v) for v in versions.model_versions],
    }


async def version(request: Request, api: Api) -> dict[str, Any]:
    app, model_id = _param(request, "app"), _param(request, "model")
    found = await api.call(
        "GetModelVersion",
        user_app_id={"user_id": api.user_id, "app_id": app},
        model_id=model_id,
        version_id=_param(request, "version"),
    )
    return {"version": to_json(found.model_version)}


def _point(p: Point) -> dict[str, Any]:
    return {
        "at": p.at,
        "rate": round(p.rate, 4),
        "p50": None if p.p50 is None else round(p.p50 * 1000, 3),
        "p99": None if p.p99 is None else round(p.p99 * 1000, 3),
        "queued": p.queued,
        "live": p.live,
        "desired": p.desired,
    }


class DeploymentPage:
    """A deployment as its page shows it: the API's answer, then what the orchestrator saw."""

    def __init__(self, dashboard: Dashboard) -> None:
        self.dashboard = dashboard

    async def __call__(self, request: Request, api: Api) -> dict[str, Any]:
        dep_id = _param(request, "deployment")
        found = await api.call("GetDeployment", deployment_id=dep_id)  # not found: not yours
        answer = {"deployment": to_json(found.deployment), **self.live(api.user_id, dep_id)}
        if request.query_params.get("version"):  # the page asks once, for "try it"
            answer["version"] = await self._version(api, found.deployment.worker.model)
        return answer

    def live(self, user_id: str, dep_id: str) -> dict[str, Any]:
        context = self.dashboard.context
        orchestrator = context.runtime.orchestrator
        view = orchestrator.view if orchestrator is not None else None
        seen = view.deployments.get((user_id, dep_id)) if view is not None else None
        series = context.timeseries
        points = series.points(user_id, dep_id) if series is not None else []
        replicas = []
        for r in seen.replicas if seen is not None else ():
            since = series.since(r.id, r.state) if series is not None else None
            replicas.append(
                {
                    "id": r.id,
                    "nodepool": f"{r.nodepool.compute_cluster_id}/{r.nodepool.nodepool_id}",
                    "runner_id": r.runner_id,
                    "instance_id": r.instance_id,
                    "where": r.where,
                    "state": r.state,
                    "since": since,
                }
            )
        return {
            "orchestrated": view is not None,
            "replicas": replicas,
            "events": list(seen.events) if seen is not None else [],
            "problem": seen.problem if seen is not None else "",
            "in_flight": seen.in_flight if seen is not None else 0,
            "queued": seen.queued if seen is not None else 0,
            "series": [_point(p) for p in points],
        }

    @staticmethod
    async def _version(api: Api, worker: Any) -> dict[str, Any]:
        """The deployed version (its signatures name the methods "try it" offers); empty
        when it cannot be read."""
        try:
            found = await api.call(
                "GetModelVersion",
                user_app_id={"user_id": api.user_id, "app_id": worker.app_id},
                model_id=worker.id,
                version_id=worker.model_version.id,
            )
        except ApiError:
            return {}
        return to_json(found.model_version)
