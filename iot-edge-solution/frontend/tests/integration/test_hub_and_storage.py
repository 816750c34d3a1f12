"""The front-end against the real edgeHub emulator (IoT Hub service API through azure-iot-hub) and a real Azurite
(through azure-storage-blob). The device is the stand-in device process (tests/standin_device.py) until the real
authrequest and classifier modules run here."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import pytest
from starlette.testclient import TestClient

from edgehub_emulator.azurite import Azurite, connection_string
from frontend.app import create_app
from frontend.config import DEFAULT_CONTAINER, FrontendSettings
from frontend.errors import (
    DeviceOfflineError,
    DeviceRefusedError,
    DeviceTimeoutError,
    HubUnavailableError,
    MalformedResultError,
    StorageUnavailableError,
)
from frontend.secondfactor import BlobResults, HubGateway, Result
from frontend.users import UserStore

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MEDIA = Path(__file__).resolve().parents[3] / "media"
PASSWORD = "correct horse battery"


def gateway_for(hub: Any, **kwargs: Any) -> HubGateway:
    """The gateway with the emulator's service connection string."""
    return HubGateway(hub.env("authrequest")["IOTHUB_CONNECTION_STRING"], "edge-device", "authrequest", **kwargs)


def wait_result(results: BlobResults, request_id: str, timeout: float = 30) -> Result:
    """Poll like the app does until the result is there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = results.result(request_id)
        if result is not None:
            return result
        time.sleep(0.2)
    raise AssertionError(f"no result for {request_id} within {timeout} s")


def assert_is_the_photo(jpeg: bytes) -> None:
    """The stand-in device's image: the bundled coffee photo, as a JPEG."""
    assert jpeg[:3] == b"\xff\xd8\xff"
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == cv2.imread(str(MEDIA / "coffee.png")).shape


def dead_storage() -> str:
    """A connection string to an Azurite that does not run (a port nobody listens on)."""
    return connection_string(blob_port=1, queue_port=1)


def test_device_offline_is_a_clear_error(hub: Any) -> None:
    """The authrequest identity exists but nothing is connected: IoT Hub answers 404."""
    with pytest.raises(DeviceOfflineError, match="The camera device is offline"):
        gateway_for(hub).request(str(uuid.uuid4()), "coffee mug", 70, 30)


def test_device_that_does_not_answer_is_a_timeout(hub: Any, standin_device: Callable[..., Any]) -> None:
    """Connected but silent: IoT Hub gives up after the method's response timeout and answers 504."""
    device = standin_device(silent=True)
    with pytest.raises(DeviceTimeoutError, match="did not answer in time"):
        gateway_for(hub, timeout=5).request(str(uuid.uuid4()), "coffee mug", 70, 30)
    assert "STANDIN_SILENT ProcessRequest" in device.output()


def test_unknown_module_is_offline_too(hub: Any) -> None:
    gateway = HubGateway(hub.env("authrequest")["IOTHUB_CONNECTION_STRING"], "edge-device", "nosuchmodule")
    with pytest.raises(DeviceOfflineError):
        gateway.request(str(uuid.uuid4()), "coffee mug", 70, 30)


@pytest.mark.parametrize(
    ("mutate", "error", "message"),
    [
        (lambda cs: re.sub(r"SharedAccessKey=[^;]+", "SharedAccessKey=d3Jvbmcga2V5IHdyb25nIGtleQ==", cs),
         HubUnavailableError, "not allowed to call IoT Hub"),
        (lambda cs: re.sub(r"HostName=[^;]+", "HostName=127.0.0.1:1", cs), HubUnavailableError, "cannot be reached"),
        (lambda cs: "not a connection string", HubUnavailableError, "not a valid IoT Hub connection string"),
    ],
)  # fmt: skip
def test_hub_problems_are_clear_errors(
    hub: Any, mutate: Callable[[str], str], error: type[Exception], message: str
) -> None:
    gateway = HubGateway(mutate(hub.env("authrequest")["IOTHUB_CONNECTION_STRING"]), "edge-device", "authrequest")
    with pytest.raises(error, match=message):
        gateway.request(str(uuid.uuid4()), "coffee mug", 70, 30)


def test_found_through_the_real_sdks(hub: Any, azurite: Azurite, standin_device: Callable[..., Any]) -> None:
    device = standin_device(visible="coffee mug", delay=0.5)
    request_id = str(uuid.uuid4())
    before = time.time()
    ticket = gateway_for(hub).request(request_id, "coffee mug", 80, 30)
    assert ticket.request_id == request_id
    assert before + 29 <= ticket.expires_at <= time.time() + 31  # from the device's expiresAt
    assert f"STANDIN_REQUEST {request_id} 'coffee mug' 80" in device.output()
    results = BlobResults(azurite.connection_string, DEFAULT_CONTAINER)
    result = wait_result(results, request_id)
    assert (result.status, result.class_name, result.confidence) == ("found", "coffee mug", 0.93)
    assert_is_the_photo(results.image(request_id))


def test_rejected_class(hub: Any, azurite: Azurite, standin_device: Callable[..., Any]) -> None:
    standin_device()
    request_id = str(uuid.uuid4())
    gateway_for(hub).request(request_id, "unicorn", 70, 30)
    result = wait_result(BlobResults(azurite.connection_string, DEFAULT_CONTAINER), request_id)
    assert result.status == "rejected" and "unicorn" in result.reason


def test_device_refusal_names_the_field(hub: Any, standin_device: Callable[..., Any]) -> None:
    standin_device()
    with pytest.raises(DeviceRefusedError, match=r"refused the request \(400: ClassName is missing or invalid\)"):
        gateway_for(hub).request(str(uuid.uuid4()), " ", 70, 30)


def test_storage_down_is_a_clear_error() -> None:
    results = BlobResults(dead_storage(), DEFAULT_CONTAINER, timeout=2)
    with pytest.raises(StorageUnavailableError, match=r"Azure Storage\) cannot be reached"):
        results.result(str(uuid.uuid4()))


def test_bad_result_blob_is_refused(azurite: Azurite) -> None:
    from azure.storage.blob import BlobServiceClient  # pylint: disable=import-outside-toplevel

    container = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("bad-results")
    container.create_container()
    request_id = str(uuid.uuid4())
    container.upload_blob(f"{request_id}/result.json", b"{not json")
    results = BlobResults(azurite.connection_string, "bad-results")
    with pytest.raises(MalformedResultError, match="unreadable"):
        results.result(request_id)
    with pytest.raises(MalformedResultError, match="no image"):
        results.image(request_id)
    assert results.result(str(uuid.uuid4())) is None


def csrf_of(html: str) -> str:
    """The CSRF token of a page's form."""
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def app_client(settings: FrontendSettings) -> TestClient:
    """The app with the real gateway and result store from `settings`, alice enrolled (coffee mug)."""
    app = create_app(settings)
    users: UserStore = app.state.services.users
    users.add("alice", PASSWORD, "coffee mug", 70)
    client = TestClient(app, follow_redirects=False)
    token = csrf_of(client.get("/login").text)
    response = client.post("/login", data={"csrf_token": token, "username": "alice", "password": PASSWORD})
    assert response.headers["location"] == "/verify"
    return client


def poll(client: TestClient, timeout: float = 30) -> dict[str, Any]:
    """Poll /verify/status until it leaves `pending`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get("/verify/status").json()
        if status["state"] != "pending":
            return status
        time.sleep(0.3)
    raise AssertionError("still pending")


def test_app_signs_in_with_the_device(
    hub: Any, azurite: Azurite, standin_device: Callable[..., Any], make_settings: Callable[..., FrontendSettings]
) -> None:
    standin_device(visible="coffee mug")
    client = app_client(
        make_settings(
            iothub_connection_string=hub.env("authrequest")["IOTHUB_CONNECTION_STRING"],
            storage_connection_string=azurite.connection_string,
        )
    )
    status = poll(client)
    assert status["state"] == "found"
    assert_is_the_photo(client.get(status["image"]).content)
    assert client.get("/account").status_code == 200


def test_app_expired(
    hub: Any, azurite: Azurite, standin_device: Callable[..., Any], make_settings: Callable[..., FrontendSettings]
) -> None:
    standin_device(visible="banana")
    client = app_client(
        make_settings(
            iothub_connection_string=hub.env("authrequest")["IOTHUB_CONNECTION_STRING"],
            storage_connection_string=azurite.connection_string,
            frontend_request_seconds=5,
        )
    )
    status = poll(client)
    assert status == {"state": "expired", "message": "Your coffee mug was not seen before the time ran out."}


def test_app_with_device_offline(hub: Any, azurite: Azurite, make_settings: Callable[..., FrontendSettings]) -> None:
    client = app_client(
        make_settings(
            iothub_connection_string=hub.env("authrequest")["IOTHUB_CONNECTION_STRING"],
            storage_connection_string=azurite.connection_string,
        )
    )
    page = client.get("/verify")
    assert "The camera device is offline (its authrequest module is not connected)" in page.text
    assert 'id="retry"' in page.text
    assert client.get("/verify/status").json()["state"] == "failed"


def test_app_with_storage_down(
    hub: Any, standin_device: Callable[..., Any], make_settings: Callable[..., FrontendSettings]
) -> None:
    standin_device(visible="banana")
    client = app_client(
        make_settings(
            iothub_connection_string=hub.env("authrequest")["IOTHUB_CONNECTION_STRING"],
            storage_connection_string=dead_storage(),
        )
    )
    status = client.get("/verify/status").json()
    assert status["state"] == "unavailable"
    assert "The result store (Azure Storage) cannot be reached right now" in status["message"]
    assert json.dumps(status).find("AccountKey") == -1
