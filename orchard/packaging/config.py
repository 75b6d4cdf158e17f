"""The schema of a model package's ``config.yaml`` (api-notes 5.2)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from orchard.configs import ComputeInfoSpec, Spec, check_id

DEFAULT_APP_ID = "main"
DEFAULT_MODEL_TYPE = "any-to-any"
DEFAULT_NUM_THREADS = 16


class ModelSection(Spec):
    id: str = Field(min_length=1)
    user_id: str = ""
    app_id: str = DEFAULT_APP_ID
    model_type_id: str = DEFAULT_MODEL_TYPE

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if "." in value:
            raise ValueError(f"model id {value!r} must not contain '.'")
        return check_id(value, "model id")


class BuildInfo(Spec):
    python_version: str = ""
    image: str = ""
    platform: str = ""
    node_version: str = ""
    dereference_symlinks: bool = False

    @field_validator("python_version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) else value


class Checkpoints(Spec):
    type: Literal["huggingface", "local"] = "huggingface"
    repo_id: str = ""
    path: str = ""
    hf_token: str = ""
    when: Literal["upload", "build", "runtime"] = "runtime"
    allowed_file_patterns: list[str] = []
    ignore_file_patterns: list[str] = []


class Concept(Spec):
    id: str
    name: str = ""


class Secret(Spec):
    id: str
    type: str = "env"
    env_var: str = ""
    value: str = ""


class PackageConfig(Spec):
    model: ModelSection
    build_info: BuildInfo = BuildInfo()
    inference_compute_info: ComputeInfoSpec = ComputeInfoSpec(cpu_limit="1", cpu_memory="1Gi")
    compute: dict[str, Any] | None = None
    checkpoints: Checkpoints | None = None
    concepts: list[Concept] = []
    num_threads: int = Field(default=DEFAULT_NUM_THREADS, ge=1, le=1024)
    secrets: list[Secret] = []
    toolkit: dict[str, Any] | None = None
    streaming_video_consumer: bool = False

    @field_validator("inference_compute_info", mode="before")
    @classmethod
    def _stringify_quantities(cls, value: Any) -> Any:
        """``cpu_limit: 4`` is written as a number often enough; the proto wants strings."""
        if isinstance(value, dict):
            return {
                k: str(v) if k in _QUANTITY_FIELDS and isinstance(v, int | float) else v
                for k, v in value.items()
            }
        return value


_QUANTITY_FIELDS = {
    "cpu_limit",
    "cpu_memory",
    "cpu_requests",
    "cpu_memory_requests",
    "accelerator_memory",
}
