"""Orchard: self-hosted compute orchestration for ML inference.

``from orchard import User, ComputeCluster, Nodepool, Deployment`` gives the SDK clients;
errors are in :mod:`orchard.errors`.
"""

from orchard.client import ComputeCluster, Deployment, Nodepool, User

__all__ = ["ComputeCluster", "Deployment", "Nodepool", "User"]
