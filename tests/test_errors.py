"""The error family maps to API status codes and back, one class per code."""

from __future__ import annotations

import pytest
from clarifai_grpc.grpc.api.status import status_code_pb2 as sc
from clarifai_grpc.grpc.api.status import status_pb2

from orchard import errors

TABLE = [
    (errors.AuthenticationError, sc.CONN_KEY_INVALID),
    (errors.InvalidRequest, sc.CONN_INVALID_REQUEST),
    (errors.NotFound, sc.CONN_DOES_NOT_EXIST),
    (errors.NotImplementedByOrchard, sc.NOT_IMPLEMENTED),
    (errors.InternalError, sc.INTERNAL_UNCATEGORIZED),
    (errors.Unavailable, sc.CONN_UNCATEGORIZED),
    (errors.UserError, sc.BAD_REQUEST),
    (errors.ComputeClusterNotFound, sc.COMPUTE_CLUSTER_DOES_NOT_EXIST),
    (errors.ComputeClusterInvalid, sc.COMPUTE_CLUSTER_INVALID_ARGUMENT),
    (errors.ComputeClusterConflict, sc.COMPUTE_CLUSTER_INVALID_REQUEST),
    (errors.NodepoolNotFound, sc.NODEPOOL_DOES_NOT_EXIST),
    (errors.NodepoolInvalid, sc.NODEPOOL_INVALID_ARGUMENT),
    (errors.NodepoolConflict, sc.NODEPOOL_INVALID_REQUEST),
    (errors.DeploymentNotFound, sc.DEPLOYMENT_DOES_NOT_EXIST),
    (errors.DeploymentInvalid, sc.DEPLOYMENT_INVALID_ARGUMENT),
    (errors.DeploymentConflict, sc.DEPLOYMENT_INVALID_REQUEST),
    (errors.ModelNotFound, sc.MODEL_DOES_NOT_EXIST),
    (errors.ModelInvalid, sc.MODEL_INVALID_ARGUMENT),
    (errors.ModelConflict, sc.MODEL_INVALID_REQUEST),
    (errors.ModelUploadFailed, sc.MODEL_UPLOADING_FAILED),
    (errors.ModelBuildFailed, sc.MODEL_BUILDING_FAILED),
    (errors.InstanceTypeNotFound, sc.INSTANCE_TYPE_DOES_NOT_EXIST),
    (errors.ProviderUnavailable, sc.CLUSTER_INTERNAL_FAILURE),
    (errors.RunnerNotFound, sc.RUNNER_DOES_NOT_EXIST),
    (errors.RunnerInvalid, sc.RUNNER_INVALID_ARGUMENT),
    (errors.RunnerConflict, sc.RUNNER_INVALID_REQUEST),
    (errors.DeploymentDisabled, sc.DEPLOYMENT_DISABLED),
    (errors.ModelNotDeployed, sc.MODEL_NOT_DEPLOYED),
    (errors.ModelDeploying, sc.MODEL_DEPLOYING),
    (errors.ModelBusy, sc.MODEL_BUSY_PLEASE_RETRY),
    (errors.RunnerFailed, sc.RUNNER_PROCESSING_FAILED),
    (errors.KeyNotFound, sc.CONN_KEY_NOT_FOUND),
    (errors.StorageFull, sc.INTERNAL_RESOURCE_EXHAUSTED),
    (errors.QuotaExceeded, sc.CONN_EXCEEDS_LIMITS),
    (errors.InputFetchError, sc.INPUT_DOWNLOAD_FAILED),
    (errors.RequestTooLarge, sc.RPC_MAX_MESSAGE_SIZE_EXCEEDED),
    (errors.InputTooLarge, sc.INPUT_OVER_LIMIT),
]
# Classes that share their code with a more general one come back as that one.
SHARED = [
    (errors.ModelVersionNotFound, errors.ModelNotFound),
    (errors.AppNotFound, errors.NotFound),
    (errors.UserNotFound, errors.NotFound),
    (errors.AppInvalid, errors.InvalidRequest),
]


@pytest.mark.parametrize(("cls", "code"), TABLE)
def test_both_directions(cls, code):
    status = cls("boom", details="more").to_status()
    assert (status.code, status.description, status.details) == (code, "boom", "more")
    back = errors.from_status(status)
    assert type(back) is cls and back.message == "boom" and back.details == "more"


@pytest.mark.parametrize(("cls", "general"), SHARED)
def test_shared_codes_come_back_as_the_general_class(cls, general):
    back = errors.from_status(cls("x").to_status())
    assert type(back) is general and isinstance(back, errors.OrchardError)


def test_every_error_class_is_in_a_table():
    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    listed = {cls for cls, _ in TABLE} | {cls for cls, _ in SHARED}
    assert set(subclasses(errors.OrchardError)) == listed


def test_unknown_code_keeps_its_code():
    err = errors.from_status(status_pb2.Status(code=sc.MODEL_LOADING, description="wait"))
    assert type(err) is errors.OrchardError and err.code == sc.MODEL_LOADING


def test_success_raises_nothing():
    errors.raise_for_status(status_pb2.Status(code=sc.SUCCESS))
