"""Orchard: self-hosted compute orchestration for ML inference.

``from orchard import User, ComputeCluster, Nodepool, Deployment, App, Model`` gives the SDK
clients;
errors are in :mod:`orchard.errors`.
"""

from orchard.client import App, ComputeCluster, Deployment, Model, Nodepool, User

__all__ = ["App", "ComputeCluster", "Deployment", "Model", "Nodepool", "User"]
