"""The second factor's two cloud calls: `ProcessRequest` on the device's authrequest module through the IoT Hub
service SDK, and the classifier's result blobs through the Storage SDK."""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import CloudToDeviceMethod
from azure.storage.blob import BlobServiceClient
from msrest.exceptions import ClientException, HttpOperationError

from frontend.errors import (
    DeviceOfflineError,
    DeviceRefusedError,
    DeviceTimeoutError,
    HubUnavailableError,
    MalformedResultError,
    SecondFactorError,
    StorageUnavailableError,
)

logger = logging.getLogger(__name__)

METHOD_NAME = "ProcessRequest"
RESULT_BLOB = "{request_id}/result.json"
IMAGE_BLOB = "{request_id}/imageWithDetection.jpg"
STATUSES = ("found", "expired", "rejected")


@dataclass(frozen=True)
class Ticket:
    """A request the device accepted: its id and when it expires (epoch seconds)."""

    request_id: str
    expires_at: float


@dataclass(frozen=True)
class Result:
    """The classifier's `result.json`."""

    request_id: str
    status: str
    class_name: str
    confidence: float | None
    reason: str
    detected_at: str
    raw: dict[str, Any]


class Gateway(Protocol):
    """Sends a second-factor request to the device."""

    def request(self, request_id: str, class_name: str, threshold: int, expires_in: int) -> Ticket:
        """Ask the device to look for `class_name`; raise SecondFactorError with a user message when it cannot."""


class Results(Protocol):
    """Reads what the classifier wrote."""

    def result(self, request_id: str) -> Result | None:
        """The request's result, or None while there is none."""

    def image(self, request_id: str) -> bytes:
        """The annotated image of a found request."""


def new_request_id() -> str:
    """A fresh request id (the seed's CoorelationId is a GUID)."""
    return str(uuid.uuid4())


def check_request_id(request_id: str) -> str:
    """Request ids become blob paths: only canonical (lower-case, hyphenated) GUIDs are accepted."""
    try:
        canonical = str(uuid.UUID(request_id))
    except (ValueError, TypeError, AttributeError):
        canonical = None
    if canonical != request_id:
        raise SecondFactorError(f"invalid request id {str(request_id)[:64]!r}")
    return request_id


class HubGateway:
    """`ProcessRequest` on `device_id/module_id` through `IoTHubRegistryManager.invoke_device_module_method`."""

    def __init__(self, connection_string: str, device_id: str, module_id: str, timeout: int = 15) -> None:
        self._connection_string = connection_string
        self.device_id = device_id
        self.module_id = module_id
        self.timeout = timeout

    def request(self, request_id: str, class_name: str, threshold: int, expires_in: int) -> Ticket:
        """Invoke ProcessRequest; the module's answer becomes a Ticket, any failure a SecondFactorError."""
        payload = {
            "CoorelationId": check_request_id(request_id),
            "ClassName": class_name,
            "ThresholdPercentage": threshold,
            "ExpiresInSeconds": expires_in,
        }
        method = CloudToDeviceMethod(
            method_name=METHOD_NAME,
            payload=payload,
            response_timeout_in_seconds=self.timeout,
            connect_timeout_in_seconds=0,
        )
        target = f"{self.device_id}/{self.module_id}"
        logger.info("invoking %s on %s for request %s", METHOD_NAME, target, request_id)
        try:
            # one client per call: the SDK's HTTP session is not shared between the app's worker threads
            registry = IoTHubRegistryManager.from_connection_string(self._connection_string)
        except (ValueError, KeyError, TypeError) as e:
            raise HubUnavailableError("IOTHUB_CONNECTION_STRING is not a valid IoT Hub connection string.") from e
        try:
            answer = registry.invoke_device_module_method(self.device_id, self.module_id, method)
        except HttpOperationError as e:
            raise _hub_error(e, target) from e
        except (ClientException, ValueError, OSError) as e:
            logger.warning("IoT Hub cannot be reached for %s: %s", target, type(e).__name__)
            raise HubUnavailableError("IoT Hub cannot be reached right now. Try again in a moment.") from e
        finally:
            # the service client also holds an AMQP sender (for cloud-to-device messages) that this never opens
            registry.amqp_svc_client.disconnect_sync()
        return _ticket(answer.status, answer.payload, request_id, expires_in, target)


def _hub_error(error: HttpOperationError, target: str) -> SecondFactorError:
    status = getattr(error.response, "status_code", None)
    logger.warning("ProcessRequest on %s: IoT Hub answered %s", target, status)
    if status == 404:
        return DeviceOfflineError(
            "The camera device is offline (its authrequest module is not connected). Try again when it is back."
        )
    if status == 504:
        return DeviceTimeoutError("The camera device did not answer in time. Try again.")
    if status in (401, 403):
        return HubUnavailableError("The front-end is not allowed to call IoT Hub (check IOTHUB_CONNECTION_STRING).")
    return HubUnavailableError(f"IoT Hub answered {status}. Try again in a moment.")


def _ticket(status: Any, payload: Any, request_id: str, expires_in: int, target: str) -> Ticket:
    if status == 503:
        logger.warning("ProcessRequest on %s: 503 %s", target, payload)
        raise DeviceRefusedError("The camera device cannot queue the request right now (Storage). Try again.")
    if status != 200:
        logger.warning("ProcessRequest on %s: %s %s", target, status, payload)
        detail = payload.get("error") if isinstance(payload, dict) else None
        raise DeviceRefusedError(
            f"The camera device refused the request ({status}{': ' + str(detail) if detail else ''})."
        )
    expires_at = time.time() + expires_in
    if isinstance(payload, dict):
        if payload.get("requestId") not in (None, request_id):
            raise DeviceRefusedError("The camera device answered for another request. Try again.")
        if isinstance(payload.get("expiresAt"), str):
            try:
                expires_at = datetime.fromisoformat(payload["expiresAt"].replace("Z", "+00:00")).timestamp()
            except ValueError:
                logger.warning("ProcessRequest on %s: unreadable expiresAt %r", target, payload["expiresAt"])
    return Ticket(request_id, expires_at)


class BlobResults:
    """`{requestId}/result.json` and `{requestId}/imageWithDetection.jpg` in the result container."""

    def __init__(self, connection_string: str, container: str, timeout: float = 5) -> None:
        try:
            service = BlobServiceClient.from_connection_string(
                connection_string, connection_timeout=timeout, read_timeout=timeout, retry_total=1
            )
        except ValueError as e:
            raise StorageUnavailableError("STORAGE_CONNECTION_STRING is not a valid connection string") from e
        self._container = service.get_container_client(container)

    def _download(self, blob: str) -> bytes | None:
        try:
            return self._container.get_blob_client(blob).download_blob().readall()
        except ResourceNotFoundError:
            return None
        except AzureError as e:
            logger.warning("Storage cannot be reached for %s: %s", blob, type(e).__name__)
            raise StorageUnavailableError(
                "The result store (Azure Storage) cannot be reached right now. Try again in a moment."
            ) from e

    def result(self, request_id: str) -> Result | None:
        """The parsed result.json, None while the classifier has written none."""
        data = self._download(RESULT_BLOB.format(request_id=check_request_id(request_id)))
        return None if data is None else parse_result(data, request_id)

    def image(self, request_id: str) -> bytes:
        """The annotated image; MalformedResultError when there is none."""
        data = self._download(IMAGE_BLOB.format(request_id=check_request_id(request_id)))
        if data is None:
            raise MalformedResultError("The result has no image.")
        return data


def parse_result(data: bytes, request_id: str) -> Result:
    """Check a `result.json` document; MalformedResultError when it is not one for this request."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise MalformedResultError("The device's result is unreadable.") from e
    if not isinstance(doc, dict):
        raise MalformedResultError("The device's result is unreadable.")
    if doc.get("requestId") != request_id:
        raise MalformedResultError("The device's result is for another request.")
    status = doc.get("status")
    if status not in STATUSES:
        raise MalformedResultError(f"The device's result has an unknown status {str(status)[:32]!r}.")
    confidence = doc.get("confidence")
    return Result(
        request_id=request_id,
        status=status,
        class_name=str(doc.get("className", "")),
        confidence=float(confidence) if isinstance(confidence, (int, float)) else None,
        reason=str(doc.get("reason", "")),
        detected_at=str(doc.get("detectedAt", "")),
        raw=doc,
    )
