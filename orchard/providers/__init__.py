"""Providers by name (``cloud_provider.id``)."""

from __future__ import annotations

from orchard.providers.base import ComputeShape, InstanceTypeInfo, Provider
from orchard.providers.local import LocalProvider

__all__ = ["ComputeShape", "InstanceTypeInfo", "Provider", "ProviderRegistry"]


class ProviderRegistry:
    def __init__(self, providers: list[Provider] | None = None) -> None:
        self._providers = {p.id: p for p in (providers or [LocalProvider()])}

    def ids(self) -> list[str]:
        return list(self._providers)

    def all(self) -> list[Provider]:
        return list(self._providers.values())

    def get(self, provider_id: str) -> Provider | None:
        return self._providers.get(provider_id)
