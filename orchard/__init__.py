"""Orchard: self-hosted compute orchestration for ML inference.

``from orchard import User, ComputeCluster, Nodepool, Deployment, App, Model`` gives the SDK
clients; errors are in :mod:`orchard.errors`; model authors use :mod:`orchard.authoring`.
The clients are imported on first use, so that ``import orchard.authoring`` inside a model's
environment needs only the runner's dependencies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchard.client import App, ComputeCluster, Deployment, Model, Nodepool, User

__all__ = ["App", "ComputeCluster", "Deployment", "Model", "Nodepool", "User"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        import orchard.client

        return getattr(orchard.client, name)
    raise AttributeError(f"module 'orchard' has no attribute {name!r}")
