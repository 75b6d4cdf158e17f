"""Schemas of the resource configs (compute cluster, nodepool, deployment).

The field names are the protobuf field names (api-notes section 2), so one schema serves both
ends: the SDK and CLI validate a user's YAML before sending it, and the server validates the
protobuf it received (turned into a dict) before storing it. A failure becomes one error that
lists every problem with its field path and what to write instead.

Bounds. The wire takes integers up to 2**32 and strings up to the message size; a server
should store neither 4,000,000,000 replicas nor an 8 MiB description. The bounds below are what
one self-hosted server can mean (a deployment of more than a thousand replicas, or a nodepool of
more than a thousand instances, is a typo or an attack, and both would hold the orchestrator's
rounds), and what the store's columns hold:

===================================  =====================================================
``MAX_REPLICAS`` = 1,000              a deployment's ``min_replicas``, ``max_replicas`` and
                                      ``soft_min_replicas``; a runner's ``num_replicas`` and
                                      ``min_replicas``
``MAX_INSTANCES`` = 1,000             a nodepool's ``min_instances``, ``max_instances`` and
                                      ``warm_instances``
``MAX_ID`` = 64 characters            every id, a resource's own and the ones it names (the
                                      store's id columns)
``MAX_REGION`` = 128 characters       a cluster's ``region`` (its column)
``MAX_DESCRIPTION`` = 512 characters  every description (the store's PAT description column;
                                      one bound for all)
===================================  =====================================================
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from google.protobuf import json_format
from google.protobuf.message import Message
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from orchard import errors
from orchard.quantities import byte_count, cpu_count, parse_quantity

MAX_REPLICAS = 1000
MAX_INSTANCES = 1000
MAX_ID = 64
MAX_REGION = 128
MAX_DESCRIPTION = 512

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
ID_RULE = "1-64 characters of letters, digits, '_' and '-', starting with a letter or digit"

Ref = Annotated[str, Field(max_length=MAX_ID)]  # an id a config names (or its own, unchecked)
Description = Annotated[str, Field(max_length=MAX_DESCRIPTION)]
Replicas = Annotated[int, Field(ge=0, le=MAX_REPLICAS)]
Instances = Annotated[int, Field(ge=0, le=MAX_INSTANCES)]

# Autoscaling defaults published for the seed system (api-notes 2.3); a zero on the wire means
# "not set", so zeros are replaced by these.
AUTOSCALE_DEFAULTS: dict[str, int] = {
    "max_replicas": 5,
    "traffic_history_seconds": 300,
    "scale_up_delay_seconds": 300,
    "scale_down_delay_seconds": 300,
    "scale_to_zero_delay_seconds": 1800,
}
SCHEDULING_PERFORMANCE = 4


def check_id(value: str, what: str) -> str:
    """Raise ValueError unless ``value`` is a valid resource id."""
    if not ID_RE.match(value):
        raise ValueError(f"{what} {shown(value)} is not a valid id; use {ID_RULE}")
    return value


def shown(value: str, limit: int = MAX_ID) -> str:
    """``value`` quoted for a message, cut when longer than ``limit`` (a message never carries
    a whole oversized input back)."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def ensure_id(value: str, what: str, error: type[errors.OrchardError], where: str = "") -> str:
    """``check_id`` for the services: the problem as ``error``, prefixed by its field path."""
    try:
        return check_id(value, what)
    except ValueError as exc:
        raise error(f"{where}.id: {exc}" if where else str(exc)) from None


def ensure_description(
    value: str, what: str, error: type[errors.OrchardError], where: str = ""
) -> str:
    """``value`` when it is a description of at most ``MAX_DESCRIPTION`` characters (for
    resources without a config schema: PATs, apps, models); else ``error``."""
    if len(value) <= MAX_DESCRIPTION:
        return value
    problem = f"the {what} description has {len(value)} characters; write at most {MAX_DESCRIPTION}"
    raise error(f"{where}: {problem}" if where else problem)


class Spec(BaseModel):
    """Strict: no unknown fields, no silent type coercion."""

    model_config = ConfigDict(extra="forbid", strict=True)
    OUTPUT_FIELDS: ClassVar[frozenset[str]] = frozenset()


class CloudProviderSpec(Spec):
    id: str = Field(min_length=1, max_length=MAX_ID)
    name: Ref = ""
    special_handling: list[dict[str, Any]] = []


class VisibilitySpec(Spec):
    gettable: Literal[10, 30, 50] = 10


class ClusterRefSpec(Spec):
    id: Ref = ""
    user_id: Ref = ""


class ComputeClusterSpec(Spec):
    OUTPUT_FIELDS = frozenset({"created_at", "modified_at"})

    id: str = ""
    description: Description = ""
    cloud_provider: CloudProviderSpec
    region: str = Field(min_length=1, max_length=MAX_REGION)
    user_id: Ref = ""
    visibility: VisibilitySpec | None = None
    cluster_type: Literal["dedicated", "local-dev"] = "dedicated"
    managed_by: Literal["user", "clarifai"] = "user"
    # The seed's SDK puts the caller's PAT here; Orchard never stores it (see compute_clusters).
    key: dict[str, Any] | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return check_id(value, "compute cluster id") if value else value


class ComputeInfoSpec(Spec):
    cpu_limit: str = ""
    cpu_memory: str = ""
    cpu_requests: str = ""
    cpu_memory_requests: str = ""
    num_accelerators: int = Field(default=0, ge=0)
    accelerator_memory: str = ""
    accelerator_type: list[str] = []
    accelerator_topology: list[str] = []  # repeated in the proto (e.g. ["2x2x1"])

    @field_validator(
        "cpu_limit", "cpu_memory", "cpu_requests", "cpu_memory_requests", "accelerator_memory"
    )
    @classmethod
    def _quantity(cls, value: str) -> str:
        if value:
            parse_quantity(value)
        return value

    @model_validator(mode="after")
    def _accelerator_memory_needs_accelerators(self) -> ComputeInfoSpec:
        if self.accelerator_memory and self.num_accelerators == 0:
            raise ValueError(
                "accelerator_memory is set but num_accelerators is 0; "
                "set num_accelerators or remove accelerator_memory"
            )
        return self

    def reserved(self) -> tuple[float, int]:
        """What one replica of a model with this ``inference_compute_info`` reserves: (CPUs,
        memory bytes), the ``*_requests`` quantities when given, else the limits."""
        cpus = self.cpu_requests or self.cpu_limit
        memory = self.cpu_memory_requests or self.cpu_memory
        return (cpu_count(cpus) if cpus else 0.0, byte_count(memory) if memory else 0)


class CapacityTypesSpec(Spec):
    capacity_types: list[Literal[1, 2]] = [1]


class InstanceTypeSpec(Spec):
    id: str = Field(min_length=1, max_length=MAX_ID)
    description: Description = ""
    compute_info: ComputeInfoSpec | None = None
    price: str = ""
    cloud_provider: CloudProviderSpec | None = None
    region: str = Field(default="", max_length=MAX_REGION)
    allowed_capacity_types: CapacityTypesSpec | None = None
    feature_flag_group: str = ""
    architecture: str = ""
    special_handling: list[dict[str, Any]] = []
    available_compute_info: ComputeInfoSpec | None = None


EGRESS = ("default", "none")  # a nodepool's metadata.egress: whether its replicas reach the network


class NodepoolSpec(Spec):
    OUTPUT_FIELDS = frozenset(
        {
            "created_at",
            "modified_at",
            "enforced_min_instances",
            "enforced_max_instances",
            "node_count",
            "status",
            "status_description",
        }
    )

    id: str = ""
    description: Description = ""
    compute_cluster: ClusterRefSpec | None = None
    node_capacity_type: CapacityTypesSpec = CapacityTypesSpec()
    instance_types: list[InstanceTypeSpec] = Field(min_length=1)
    min_instances: Instances = 0
    # Zero (also what an unset field reads as on the wire) disables the pool, as in the seed.
    max_instances: Instances = 0
    warm_instances: Instances = 0
    visibility: VisibilitySpec | None = None
    metadata: dict[str, Any] | None = None
    special_handling: list[dict[str, Any]] = []

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return check_id(value, "nodepool id") if value else value

    @field_validator("metadata")
    @classmethod
    def _egress(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        egress = (value or {}).get("egress")
        if egress is not None and egress not in EGRESS:
            raise ValueError(
                f"egress {egress!r} is not one of {', '.join(EGRESS)}; "
                "none gives the nodepool's replicas no network but their link to the server"
            )
        return value

    @model_validator(mode="after")
    def _bounds(self) -> NodepoolSpec:
        if self.min_instances > self.max_instances:
            raise ValueError(
                f"min_instances ({self.min_instances}) is greater than max_instances "
                f"({self.max_instances}); make min_instances <= max_instances "
                "(max_instances: 0 disables the pool)"
            )
        return self


class NodepoolRefSpec(Spec):
    id: str = Field(min_length=1, max_length=MAX_ID)
    compute_cluster: ClusterRefSpec | None = None


class DeploymentNodepoolSpec(Spec):
    id: Ref = ""
    compute_cluster: ClusterRefSpec | None = None
    priority: int = Field(default=0, ge=0, le=9)
    nodepool: NodepoolRefSpec | None = None

    def ref(self) -> NodepoolRefSpec:
        """The nodepool this entry names, in either of its two spellings."""
        if self.nodepool is not None:
            return self.nodepool
        return NodepoolRefSpec(id=self.id, compute_cluster=self.compute_cluster)

    @model_validator(mode="after")
    def _names_a_nodepool(self) -> DeploymentNodepoolSpec:
        if not self.id and self.nodepool is None:
            raise ValueError(
                "each deployment_nodepools entry needs 'id' (with 'compute_cluster') "
                "or 'nodepool: {id, compute_cluster}'"
            )
        return self


class AutoscaleSpec(Spec):
    min_replicas: Replicas = 0
    max_replicas: Replicas = 0
    traffic_history_seconds: int = Field(default=0, ge=0)
    scale_down_delay_seconds: int = Field(default=0, ge=0)
    scale_up_delay_seconds: int = Field(default=0, ge=0)
    disable_packing: bool = False
    scale_to_zero_delay_seconds: int = Field(default=0, ge=0)
    soft_min_replicas: Replicas = 0

    @model_validator(mode="before")
    @classmethod
    def _removed_fields(cls, data: Any) -> Any:
        if isinstance(data, dict) and "enable_packing" in data:
            raise ValueError(
                "enable_packing was removed from the API; "
                "write disable_packing: true to give each replica its own node"
            )
        return data

    @model_validator(mode="after")
    def _effective(self) -> AutoscaleSpec:
        for name, default in AUTOSCALE_DEFAULTS.items():
            if getattr(self, name) == 0:
                setattr(self, name, default)
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) is greater than max_replicas "
                f"({self.max_replicas}); make min_replicas <= max_replicas"
            )
        if self.scale_to_zero_delay_seconds < self.scale_down_delay_seconds:
            raise ValueError(
                f"scale_to_zero_delay_seconds ({self.scale_to_zero_delay_seconds}) is less than "
                f"scale_down_delay_seconds ({self.scale_down_delay_seconds}); it must be greater "
                "than or equal to it"
            )
        return self


class ModelVersionRefSpec(Spec):
    id: Ref = ""


class ModelRefSpec(Spec):
    id: str = Field(min_length=1, max_length=MAX_ID)
    user_id: Ref = ""
    app_id: Ref = ""
    model_version: ModelVersionRefSpec | None = None


class WorkerSpec(Spec):
    model: ModelRefSpec | None = None
    workflow: dict[str, Any] | None = None
    user: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _model_only(self) -> WorkerSpec:
        if self.workflow is not None or self.user is not None:
            raise ValueError(
                "Orchard deploys models only; write worker: {model: {id, app_id, "
                "user_id, model_version: {id}}}"
            )
        if self.model is None:
            raise ValueError("worker needs a model: {id, app_id, user_id, model_version: {id}}")
        return self


class DeploymentSpec(Spec):
    OUTPUT_FIELDS = frozenset({"created_at", "modified_at", "deployment_metrics"})

    id: str = ""
    user_id: Ref = ""
    description: Description = ""
    autoscale_config: AutoscaleSpec = AutoscaleSpec()
    nodepools: list[NodepoolRefSpec] = []
    deployment_nodepools: list[DeploymentNodepoolSpec] = []
    scheduling_choice: int = Field(default=0, ge=0, le=8)
    visibility: VisibilitySpec | None = None
    metadata: dict[str, Any] | None = None
    worker: WorkerSpec | None = None
    desired_worker: WorkerSpec | None = None
    deploy_latest_version: bool = False
    graceful_deploy: bool = False
    special_handling: list[dict[str, Any]] = []
    email_reminder_after: str | None = None  # a protobuf Duration in JSON form, e.g. "86400s"
    status: Literal[0, 1] = 0

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return check_id(value, "deployment id") if value else value

    @model_validator(mode="after")
    def _shape(self) -> DeploymentSpec:
        if self.nodepools and self.deployment_nodepools:
            raise ValueError("set either nodepools or deployment_nodepools, not both")
        if not self.nodepools and not self.deployment_nodepools:
            raise ValueError(
                "a deployment needs at least one nodepool: write nodepools: "
                "[{id: NODEPOOL_ID, compute_cluster: {id: CLUSTER_ID}}]"
            )
        if self.worker is None and self.desired_worker is None:
            raise ValueError(
                "worker is missing; write worker: {model: {id, app_id, user_id, "
                "model_version: {id}}}"
            )
        if self.scheduling_choice == 0:
            self.scheduling_choice = SCHEDULING_PERFORMANCE
        return self

    def target_model(self) -> ModelRefSpec:
        worker = self.desired_worker or self.worker
        assert worker is not None and worker.model is not None  # guaranteed by _shape
        return worker.model

    def nodepool_entries(self) -> list[DeploymentNodepoolSpec]:
        """Every nodepool with its priority; the plain ``nodepools`` list has priority 0."""
        if self.deployment_nodepools:
            return self.deployment_nodepools
        return [DeploymentNodepoolSpec(nodepool=ref) for ref in self.nodepools]


# -- turning input into specs ----------------------------------------------------------------


def _path(prefix: str, loc: tuple[int | str, ...]) -> str:
    text = prefix
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _fields_at(spec: type[Spec], loc: tuple[int | str, ...]) -> list[str]:
    """The field names allowed in the object at ``loc`` (for unknown-field hints)."""
    model: Any = spec
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        model = None
        if field is not None:
            for arg in (field.annotation, *getattr(field.annotation, "__args__", ())):
                for inner in (arg, *getattr(arg, "__args__", ())):
                    if isinstance(inner, type) and issubclass(inner, Spec):
                        model = inner
    return sorted(model.model_fields) if model is not None else []


def _describe(spec: type[Spec], err: ErrorDetails) -> str:
    kind, loc = err["type"], tuple(err["loc"])
    if kind == "extra_forbidden":
        allowed = _fields_at(spec, loc[:-1])
        return "unknown field" + (f"; allowed here: {', '.join(allowed)}" if allowed else "")
    if kind == "missing":
        return "required field is missing"
    if kind == "value_error":
        return str(err["ctx"]["error"]) if "ctx" in err else err["msg"]
    got = err.get("input")
    if kind == "less_than_equal":
        return f"{err['msg']} (got {got!r})"
    if kind == "string_too_long":
        return f"{err['msg']} (got {len(got)})"
    return f"{err['msg']} (got {got!r})" if kind.endswith("_type") else err["msg"]


def validate(spec: type[Spec], data: Any, *, where: str, error: type[errors.OrchardError]) -> Any:
    """``data`` as a ``spec``, or ``error`` listing each problem by field path."""
    if not isinstance(data, dict):
        raise error(f"{where or 'config'}: expected a mapping of fields, got {type(data).__name__}")
    try:
        return spec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            loc = tuple(p for p in err["loc"] if p not in ("function-after", "function-before"))
            problems.append(f"{_path(where, loc)}: {_describe(spec, err)}")
        raise error("invalid config: " + "; ".join(problems)) from None


def spec_from_proto(
    message: Message, spec: type[Spec], *, where: str, error: type[errors.OrchardError]
) -> Any:
    """Validate a protobuf resource received on the wire against its spec."""
    data = json_format.MessageToDict(
        message, preserving_proto_field_name=True, use_integers_for_enums=True
    )
    for name in spec.OUTPUT_FIELDS:
        data.pop(name, None)
    return validate(spec, data, where=where, error=error)


def spec_to_proto(value: Spec, message: Message) -> Message:
    """Fill ``message`` from a spec (field names match one to one)."""
    json_format.ParseDict(value.model_dump(exclude_none=True), message)
    return message


def load_config_file(path: str | Path, top_key: str, error: type[errors.OrchardError]) -> Any:
    """The mapping under ``top_key`` of a YAML config file, with file-level problems explained."""
    file = Path(path)
    if not file.is_file():
        raise errors.UserError(f"config file not found at {str(file)!r}; check the path")
    try:
        data = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise error(
            f"{file}: YAML syntax error{where}: {problem}; fix the file and retry"
        ) from None
    if not isinstance(data, dict) or top_key not in data:
        raise error(f"{file}: the config must have a top-level '{top_key}:' key")
    return data[top_key]


class RunnerSpec(Spec):
    """A runner: who serves what, from which nodepool (the request names the nodepool)."""

    OUTPUT_FIELDS = frozenset({"id", "created_at", "modified_at", "runner_metrics", "nodepool"})

    description: Description = ""
    labels: list[str] = []
    metadata: dict[str, Any] | None = None
    worker: WorkerSpec
    compute_info: ComputeInfoSpec | None = None
    num_replicas: Replicas = 1
    min_replicas: Replicas = 0
    priority: int = Field(default=0, ge=0, le=9)
    special_handling: list[dict[str, Any]] = []
