"""The one error family of Orchard, shared by the server, the SDK and the CLI.

Every error has a stable API status code (``clarifai.api.status.StatusCode``). The server turns
an :class:`OrchardError` into a response status in one place (``orchard.server.rpc``); the SDK
turns a non-success status back into the same class in one place (:func:`from_status`).
Messages carry the facts and the next step.
"""

from __future__ import annotations

from clarifai_grpc.grpc.api.status import status_code_pb2, status_pb2

SC = status_code_pb2.StatusCode


class OrchardError(Exception):
    """Base of every error Orchard raises on purpose."""

    code: int = SC.FAILURE

    def __init__(self, message: str, *, details: str = "", req_id: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.req_id = req_id

    def to_status(self) -> status_pb2.Status:
        return status_pb2.Status(
            code=self.code, description=self.message, details=self.details, req_id=self.req_id
        )

    def __str__(self) -> str:
        return self.message if not self.details else f"{self.message} ({self.details})"


# -- authentication and generic request problems -------------------------------------------


class AuthenticationError(OrchardError):
    """No credentials, or a PAT the server does not know."""

    code = SC.CONN_KEY_INVALID


class InvalidRequest(OrchardError):
    """A request that is malformed independently of any resource."""

    code = SC.CONN_INVALID_REQUEST


class NotFound(OrchardError):
    """A resource (or user) that does not exist for the caller."""

    code = SC.CONN_DOES_NOT_EXIST


class NotImplementedByOrchard(OrchardError):
    code = SC.NOT_IMPLEMENTED


class InternalError(OrchardError):
    """A bug or an unexpected failure; the message never carries a traceback."""

    code = SC.INTERNAL_UNCATEGORIZED


class Unavailable(OrchardError):
    """The server cannot be reached (SDK side only)."""

    code = SC.CONN_UNCATEGORIZED


class UserError(OrchardError):
    """Bad local input caught by the SDK or CLI before anything is sent."""

    code = SC.BAD_REQUEST


# -- resources: does-not-exist / invalid argument / invalid request (conflict) ---------------


class UserNotFound(NotFound):
    code = SC.CONN_DOES_NOT_EXIST


class AppNotFound(NotFound):
    code = SC.CONN_DOES_NOT_EXIST


class ComputeClusterNotFound(NotFound):
    code = SC.COMPUTE_CLUSTER_DOES_NOT_EXIST


class ComputeClusterInvalid(OrchardError):
    code = SC.COMPUTE_CLUSTER_INVALID_ARGUMENT


class ComputeClusterConflict(OrchardError):
    code = SC.COMPUTE_CLUSTER_INVALID_REQUEST


class NodepoolNotFound(NotFound):
    code = SC.NODEPOOL_DOES_NOT_EXIST


class NodepoolInvalid(OrchardError):
    code = SC.NODEPOOL_INVALID_ARGUMENT


class NodepoolConflict(OrchardError):
    code = SC.NODEPOOL_INVALID_REQUEST


class DeploymentNotFound(NotFound):
    code = SC.DEPLOYMENT_DOES_NOT_EXIST


class DeploymentInvalid(OrchardError):
    code = SC.DEPLOYMENT_INVALID_ARGUMENT


class DeploymentConflict(OrchardError):
    code = SC.DEPLOYMENT_INVALID_REQUEST


class ModelNotFound(NotFound):
    code = SC.MODEL_DOES_NOT_EXIST


class ModelVersionNotFound(ModelNotFound):
    """Shares MODEL_DOES_NOT_EXIST: the API has no separate code for versions."""


class ModelInvalid(OrchardError):
    code = SC.MODEL_INVALID_ARGUMENT


class ModelConflict(OrchardError):
    code = SC.MODEL_INVALID_REQUEST


class ModelUploadFailed(OrchardError):
    code = SC.MODEL_UPLOADING_FAILED


class ModelBuildFailed(OrchardError):
    code = SC.MODEL_BUILDING_FAILED


class AppInvalid(OrchardError):
    code = SC.CONN_INVALID_REQUEST


class InstanceTypeNotFound(NotFound):
    code = SC.INSTANCE_TYPE_DOES_NOT_EXIST


class ProviderUnavailable(OrchardError):
    """What a provider drives (a Ray cluster) cannot be reached now; the message says why."""

    code = SC.CLUSTER_INTERNAL_FAILURE


class RunnerNotFound(NotFound):
    code = SC.RUNNER_DOES_NOT_EXIST


class RunnerInvalid(OrchardError):
    code = SC.RUNNER_INVALID_ARGUMENT


class RunnerConflict(OrchardError):
    """A runner the request may not change: one Orchard runs for a deployment."""

    code = SC.RUNNER_INVALID_REQUEST


class DeploymentDisabled(OrchardError):
    code = SC.DEPLOYMENT_DISABLED


class ModelNotDeployed(OrchardError):
    code = SC.MODEL_NOT_DEPLOYED


class ModelDeploying(OrchardError):
    """No replica became ready in time; the official SDK retries this status."""

    code = SC.MODEL_DEPLOYING


class ModelBusy(OrchardError):
    """The deployment's queue is full; the official SDK retries this status."""

    code = SC.MODEL_BUSY_PLEASE_RETRY


class RunnerFailed(OrchardError):
    """The replica serving a call went away before answering it."""

    code = SC.RUNNER_PROCESSING_FAILED


class KeyNotFound(NotFound):
    code = SC.CONN_KEY_NOT_FOUND


class StorageFull(OrchardError):
    """The server's disk (or its database) has no room left; nothing of the request was kept.
    Raised where the store or the package files meet the disk, from the OS or database error."""

    code = SC.INTERNAL_RESOURCE_EXHAUSTED


class QuotaExceeded(OrchardError):
    """A write that would take a user past a quota the operator set; the message names the
    quota and its use. Not retried by the official SDK: waiting does not free a quota."""

    code = SC.CONN_EXCEEDS_LIMITS


# -- inputs of predictions ---------------------------------------------------------------------


class InputFetchError(OrchardError):
    """A URL input of a prediction that the server refused or failed to fetch."""

    code = SC.INPUT_DOWNLOAD_FAILED


class RequestTooLarge(OrchardError):
    """A request larger than the server accepts (``orchard serve --max-request-bytes``), as
    sent or with its URL inputs fetched; the message names the limit."""

    code = SC.RPC_MAX_MESSAGE_SIZE_EXCEEDED


class InputTooLarge(OrchardError):
    """The replica running the call was killed for using more memory than its model may: the
    input was too large for the model's memory. Not sent to another replica (it would do the
    same there) and not retried by the official SDK."""

    code = SC.INPUT_OVER_LIMIT


# The reverse map: a status code names exactly one class. Classes that share a code with a
# more general one (ModelVersionNotFound, AppNotFound, UserNotFound) come back as that one.
_BY_CODE: dict[int, type[OrchardError]] = {
    cls.code: cls
    for cls in (
        OrchardError,
        AuthenticationError,
        InvalidRequest,
        NotFound,
        NotImplementedByOrchard,
        InternalError,
        Unavailable,
        UserError,
        ComputeClusterNotFound,
        ComputeClusterInvalid,
        ComputeClusterConflict,
        NodepoolNotFound,
        NodepoolInvalid,
        NodepoolConflict,
        DeploymentNotFound,
        DeploymentInvalid,
        DeploymentConflict,
        ModelNotFound,
        ModelInvalid,
        ModelConflict,
        ModelUploadFailed,
        ModelBuildFailed,
        InstanceTypeNotFound,
        ProviderUnavailable,
        RunnerNotFound,
        RunnerInvalid,
        RunnerConflict,
        DeploymentDisabled,
        ModelNotDeployed,
        ModelDeploying,
        ModelBusy,
        RunnerFailed,
        KeyNotFound,
        StorageFull,
        QuotaExceeded,
        InputFetchError,
        RequestTooLarge,
        InputTooLarge,
    )
}


def error_class_for(code: int) -> type[OrchardError]:
    return _BY_CODE.get(code, OrchardError)


def from_status(status: status_pb2.Status) -> OrchardError:
    """The error a non-success response status stands for (SDK side of the mapping)."""
    cls = error_class_for(status.code)
    err = cls(status.description or "request failed", details=status.details, req_id=status.req_id)
    err.code = status.code
    return err


def raise_for_status(status: status_pb2.Status) -> None:
    if status.code != SC.SUCCESS:
        raise from_status(status)
