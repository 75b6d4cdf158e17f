"""gRPC handlers for what the providers offer: providers, regions, instance types."""

from __future__ import annotations

from clarifai_grpc.grpc.api import resources_pb2, service_pb2

from orchard import errors
from orchard.providers import InstanceTypeInfo, Provider
from orchard.server.rpc import Call, Router

router = Router()


def _provider(call: Call, provider_id: str) -> Provider:
    provider = call.providers.get(provider_id)
    if provider is None:
        raise errors.InstanceTypeNotFound(
            f"cloud provider {provider_id!r} is not a provider of this Orchard server; use one "
            f"of: {', '.join(call.providers.ids())}"
        )
    return provider


def instance_type_to_proto(
    provider: Provider, region: str, info: InstanceTypeInfo
) -> resources_pb2.InstanceType:
    compute = resources_pb2.ComputeInfo(**info.shape.compute_info())
    return resources_pb2.InstanceType(
        id=info.id,
        description=info.description,
        compute_info=compute,
        price=info.price,
        cloud_provider=resources_pb2.CloudProvider(id=provider.id, name=provider.name),
        region=region,
        allowed_capacity_types=resources_pb2.NodeCapacityType(
            capacity_types=list(info.capacity_types)
        ),
    )


@router.rpc("ListCloudProviders")
def list_providers(
    request: service_pb2.ListCloudProvidersRequest, call: Call
) -> service_pb2.MultiCloudProviderResponse:
    return service_pb2.MultiCloudProviderResponse(
        cloud_providers=[
            resources_pb2.CloudProvider(id=p.id, name=p.name) for p in call.providers.all()
        ]
    )


@router.rpc("ListCloudRegions")
def list_regions(
    request: service_pb2.ListCloudRegionsRequest, call: Call
) -> service_pb2.MultiCloudRegionResponse:
    regions = _provider(call, request.cloud_provider.id).regions()
    return service_pb2.MultiCloudRegionResponse(
        regions=regions, cloud_regions=[resources_pb2.CloudRegion(id=r) for r in regions]
    )


@router.rpc("ListInstanceTypes")
def list_instance_types(
    request: service_pb2.ListInstanceTypesRequest, call: Call
) -> service_pb2.MultiInstanceTypeResponse:
    provider = _provider(call, request.cloud_provider.id)
    region = request.region or provider.regions()[0]
    if region not in provider.regions():
        raise errors.InstanceTypeNotFound(
            f"region {region!r} is not a region of provider {provider.id!r}; use one of: "
            f"{', '.join(provider.regions())}"
        )
    return service_pb2.MultiInstanceTypeResponse(
        instance_types=[
            instance_type_to_proto(provider, region, t) for t in provider.instance_types(region)
        ]
    )
