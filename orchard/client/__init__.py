"""The Orchard Python SDK: the seed's clients, speaking the clarifai V2 gRPC protocol."""

from orchard.client.app import App
from orchard.client.base import BaseClient, Settings, resolve_settings
from orchard.client.compute_cluster import ComputeCluster
from orchard.client.deployment import Deployment
from orchard.client.model import Model
from orchard.client.nodepool import Nodepool
from orchard.client.user import User

__all__ = [
    "App",
    "BaseClient",
    "ComputeCluster",
    "Deployment",
    "Model",
    "Nodepool",
    "Settings",
    "User",
    "resolve_settings",
]
