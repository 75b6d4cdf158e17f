"""The pages' writes: create and edit clusters, nodepools and deployments from their forms,
the YAML a form makes, and deletes confirmed by the resource's name. Every write goes through
the API, whose validation messages come back by form field."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from orchard.server.http.dashboard import forms
from orchard.server.http.dashboard.calls import Api, ApiError, to_json
from orchard.server.http.dashboard.web import Refused, json_body

# kind: (create RPC, patch RPC, delete RPC, the request's list field, the response's)
RPCS = {
    "cluster": ("PostComputeClusters", "PatchComputeClusters", "DeleteComputeClusters"),
    "nodepool": ("PostNodepools", "PatchNodepools", "DeleteNodepools"),
    "deployment": ("PostDeployments", "PatchDeployments", "DeleteDeployments"),
}
LISTS = {"cluster": "compute_clusters", "nodepool": "nodepools", "deployment": "deployments"}


def _form(request: Request) -> forms.Form:
    form = forms.FORMS.get(str(request.path_params["kind"]))
    if form is None:
        raise Refused(404, "no such form; the forms are cluster, nodepool and deployment")
    return form


async def _current(api: Api, kind: str, ids: dict[str, str]) -> dict[str, Any]:
    """The resource an edit starts from, as the API answers it."""
    if kind == "cluster":
        found = await api.call("GetComputeCluster", compute_cluster_id=ids.get("id", ""))
        return to_json(found.compute_cluster, enum_numbers=True)
    if kind == "nodepool":
        found = await api.call(
            "GetNodepool",
            compute_cluster_id=ids.get("cluster", ""),
            nodepool_id=ids.get("id", ""),
        )
        return to_json(found.nodepool, enum_numbers=True)
    found = await api.call("GetDeployment", deployment_id=ids.get("id", ""))
    return to_json(found.deployment, enum_numbers=True)


async def describe(request: Request, api: Api) -> dict[str, Any]:
    """A form's fields, with the current values when ``?id=`` names a resource to edit."""
    form = _form(request)
    ids = dict(request.query_params)
    answer: dict[str, Any] = {"kind": form.kind, "fields": [asdict(f) for f in form.fields]}
    if ids.get("id"):
        answer["values"] = forms.values(form, await _current(api, form.kind, ids))
    return answer


def _request_fields(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {LISTS[kind]: [data]}
    if kind == "nodepool":
        fields["compute_cluster_id"] = data.get("compute_cluster", {}).get("id", "")
    return fields


async def save(request: Request, api: Api) -> dict[str, Any]:
    """Create (or, with ``"edit": true``, overwrite) the resource of a form's values."""
    form = _form(request)
    body = await json_body(request)
    data = forms.resource(form, dict(body.get("values") or {}))
    create, patch, _ = RPCS[form.kind]
    fields = _request_fields(form.kind, data)
    if body.get("edit"):
        fields["action"] = "overwrite"
    try:
        response = await api.call(patch if body.get("edit") else create, **fields)
    except ApiError as exc:
        if exc.http_status != 400:
            raise
        raise forms.FormError(forms.field_errors(form, exc.status.description)) from None
    saved = to_json(getattr(response, LISTS[form.kind])[0])
    return {"saved": saved, "kind": form.kind}


async def as_yaml(request: Request, api: Api) -> Response:
    """The YAML file a form's values make (what `orchard <noun> create --config` reads)."""
    form = _form(request)
    body = await json_body(request)
    data = forms.resource(form, dict(body.get("values") or {}))
    name = f"{data.get('id') or form.kind}.yaml"
    return Response(
        forms.as_yaml(form, data),
        media_type="application/yaml",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


async def delete(request: Request, api: Api) -> dict[str, Any]:
    """Delete one resource; the body must repeat its id as ``confirm``."""
    form = _form(request)
    body = await json_body(request)
    resource_id = str(body.get("id") or "")
    if not resource_id or body.get("confirm") != resource_id:
        raise forms.FormError({"confirm": f"type the name {resource_id!r} to delete it"})
    fields: dict[str, Any] = {"ids": [resource_id]}
    if form.kind == "nodepool":
        fields["compute_cluster_id"] = str(body.get("cluster") or "")
    await api.call(RPCS[form.kind][2], **fields)
    return {"deleted": resource_id}
