"""The dashboard's forms of clusters, nodepools and deployments (pure).

A form is a list of fields, each named by its path in the resource (``autoscale_config.
min_replicas``), so that a form's values become the resource the seed's YAML describes (the
same dict the SDK sends, and the same YAML the page offers for download), and the API's
validation messages, which name the field by its path, are shown beside that field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

TEXT, NUMBER, CHECK, SELECT, LIST = "text", "number", "checkbox", "select", "list"


@dataclass(frozen=True)
class Field:
    name: str  # the path in the resource
    label: str
    kind: str = TEXT
    help: str = ""
    options: tuple[tuple[str, str], ...] = ()  # (value, label) of a select
    fixed: bool = False  # set on create, shown but not changed on edit


@dataclass(frozen=True)
class Form:
    kind: str  # cluster, nodepool, deployment
    top_key: str  # the YAML's top-level key
    fields: tuple[Field, ...] = field(default_factory=tuple)

    def by_name(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)


VISIBILITY = (("10", "private"), ("50", "public"))
CAPACITY = (("1", "on-demand"), ("2", "spot"))
SCHEDULING = (
    ("4", "performance (4)"),
    ("1", "any (1)"),
    ("2", "random (2)"),
    ("3", "price (3)"),
    ("5", "network (5)"),
    ("6", "utilization (6)"),
    ("7", "prefer spot (7)"),
    ("8", "prefer on-demand (8)"),
)
STATUS = (("0", "enabled"), ("1", "disabled"))
SECONDS = "seconds; 0 or empty: the default"
TO_ZERO = "autoscale_config.scale_to_zero_delay_seconds"

FORMS = {
    "cluster": Form(
        "cluster",
        "compute_cluster",
        (
            Field("id", "Id", fixed=True),
            Field("description", "Description"),
            Field("cloud_provider.id", "Provider", help="local or ray"),
            Field("region", "Region", help="local; for ray, a configured Ray cluster"),
            Field("cluster_type", "Cluster type", help="dedicated or local-dev"),
            Field("managed_by", "Managed by", help="user"),
            Field("visibility.gettable", "Visibility", SELECT, options=VISIBILITY),
        ),
    ),
    "nodepool": Form(
        "nodepool",
        "nodepool",
        (
            Field("compute_cluster.id", "Compute cluster", fixed=True),
            Field("id", "Id", fixed=True),
            Field("description", "Description"),
            Field("instance_types", "Instance types", LIST, help="ids, comma-separated"),
            Field("node_capacity_type.capacity_types", "Capacity type", SELECT, options=CAPACITY),
            Field("min_instances", "Min instances", NUMBER),
            Field("max_instances", "Max instances", NUMBER),
        ),
    ),
    "deployment": Form(
        "deployment",
        "deployment",
        (
            Field("id", "Id", fixed=True),
            Field("description", "Description"),
            Field("worker.model.app_id", "App"),
            Field("worker.model.id", "Model"),
            Field("worker.model.model_version.id", "Version", help="empty: the newest"),
            Field("nodepools", "Nodepools", LIST, help="cluster/nodepool, comma-separated"),
            Field("scheduling_choice", "Scheduling", SELECT, options=SCHEDULING),
            Field("autoscale_config.min_replicas", "Min replicas", NUMBER),
            Field("autoscale_config.max_replicas", "Max replicas", NUMBER),
            Field("autoscale_config.soft_min_replicas", "Soft min replicas", NUMBER),
            Field("autoscale_config.traffic_history_seconds", "Traffic history", NUMBER, SECONDS),
            Field("autoscale_config.scale_up_delay_seconds", "Scale-up delay", NUMBER, SECONDS),
            Field("autoscale_config.scale_down_delay_seconds", "Scale-down delay", NUMBER, SECONDS),
            Field(
                "autoscale_config.scale_to_zero_delay_seconds",
                "Scale-to-zero delay",
                NUMBER,
                SECONDS,
            ),
            Field("autoscale_config.disable_packing", "Disable packing", CHECK),
            Field("status", "Status", SELECT, options=STATUS),
        ),
    ),
}


class FormError(Exception):
    """Values the form cannot turn into a resource, by field name."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields


def _set(target: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        target = target.setdefault(part, {})
    target[last] = value


def _get(source: dict[str, Any], path: str) -> Any:
    value: Any = source
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _list_value(name: str, text: str) -> list[Any]:
    items = [p for p in re.split(r"[\s,]+", text.strip()) if p]
    if name == "instance_types":
        return [{"id": i} for i in items]
    pools = []
    for item in items:
        cluster, slash, nodepool = item.partition("/")
        if not slash or not cluster or not nodepool:
            raise FormError({name: f"write each nodepool as cluster/nodepool (got {item!r})"})
        pools.append({"id": nodepool, "compute_cluster": {"id": cluster}})
    return pools


def _value(spec: Field, raw: Any) -> Any:
    """One field's value in the resource; None to leave it out."""
    if spec.kind == CHECK:
        return bool(raw) or None
    text = str(raw if raw is not None else "").strip()
    if not text:
        return None
    if spec.kind == LIST:
        return _list_value(spec.name, text)
    if spec.kind == NUMBER or (spec.kind == SELECT and text.isdigit()):
        if not re.fullmatch(r"\d+", text):
            raise FormError({spec.name: f"write a whole number, 0 or more (got {text!r})"})
        number = int(text)
        return [number] if spec.name.endswith("capacity_types") else number
    return text


def resource(form: Form, values: dict[str, Any]) -> dict[str, Any]:
    """The resource a form's ``values`` (by field name) describe, as in the seed's YAML."""
    problems: dict[str, str] = {}
    data: dict[str, Any] = {}
    for spec in form.fields:
        try:
            value = _value(spec, values.get(spec.name))
        except FormError as exc:
            problems.update(exc.fields)
            continue
        if value is not None:
            _set(data, spec.name, value)
    if problems:
        raise FormError(problems)
    return data


def values(form: Form, data: dict[str, Any]) -> dict[str, Any]:
    """A resource (as the API answers it) as the form's values."""
    found: dict[str, Any] = {}
    for spec in form.fields:
        value = _get(data, spec.name)
        if spec.name == "instance_types":
            value = ", ".join(t.get("id", "") for t in value or [])
        elif spec.name == "nodepools":
            value = ", ".join(f"{p['compute_cluster']['id']}/{p['id']}" for p in value or [])
        elif spec.name.endswith("capacity_types"):
            value = str(value[0]) if value else ""
        elif spec.kind == CHECK:
            value = bool(value)
        elif value is not None:
            value = str(value)
        found[spec.name] = "" if value is None else value
    return found


def as_yaml(form: Form, data: dict[str, Any]) -> str:
    """The YAML file of ``data``, as ``orchard <noun> create --config`` reads it."""
    return yaml.safe_dump({form.top_key: data}, sort_keys=False)


_PROBLEM = re.compile(r"(?:^invalid config: |; )([A-Za-z_]+s\[\d+\][\w.\[\]]*|\(top level\)): ")


def field_errors(form: Form, message: str) -> dict[str, str]:
    """The API's validation ``message``, split by the form field each problem names (a problem
    about an object goes to the field its text starts with, when there is one; the rest under
    "")."""
    found: dict[str, str] = {}
    marks = list(_PROBLEM.finditer(message))
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(message)
        text = message[mark.end() : end]
        name = _field_of(form, mark.group(1), text)
        found[name] = f"{found[name]}; {text}" if name in found else text
    if not marks:
        found[""] = message
    return found


def _field_of(form: Form, where: str, text: str) -> str:
    path = re.sub(r"^[A-Za-z_]+s\[\d+\]\.?", "", where)
    path = re.sub(r"\[\d+\].*$", "", path)
    if form.by_name(path) is not None:
        return path
    first = re.match(r"[a-z_]+", text)
    inner = f"{path}.{first.group(0)}" if path and first else (first.group(0) if first else "")
    if form.by_name(inner) is not None:
        return inner
    for spec in form.fields:
        if path and spec.name.startswith(path + "."):
            return spec.name
    return ""
