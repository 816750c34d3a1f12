"""STAND-IN DEVICE for the front-end's tests: plays the edge device's side of the two-factor flow until the real
`authrequest` and `classifier` modules run in the tests.

A separate process, connected to the edgeHub emulator through the real azure-iot-device SDK as the `authrequest`
module (`IoTHubModuleClient.create_from_edge_environment()`, so it needs `edgehub-emulator env authrequest`'s
variables). It answers `ProcessRequest` as the real module does (200 `{requestId, expiresAt}`, 400 naming the bad
field), and writes what the classifier would into Azurite through the real azure-storage-blob SDK:

- a class listed in STANDIN_VISIBLE_OBJECTS (comma-separated) is "seen" after STANDIN_DELAY_SECONDS:
  `{requestId}/imageWithDetection.jpg` (the photo STANDIN_IMAGE as a JPEG) then `{requestId}/result.json` with
  `found`;
- a class the model cannot output (not in FRONTEND_LABELS_FILE / the bundled labels): `rejected` at once;
- any other class: `expired` at the request's expiry.

It does no recognition at all: it only lets the front-end be tested against real IoT Hub and Storage protocols.
STANDIN_SILENT=1 plays a device that receives methods but never answers them (IoT Hub then answers 504).
Prints `STANDIN_READY` once connected; SIGTERM stops it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
from azure.core.exceptions import ResourceExistsError
from azure.iot.device import IoTHubModuleClient, MethodRequest, MethodResponse
from azure.storage.blob import BlobServiceClient, ContentSettings

from frontend.config import BUNDLED_LABELS, DEFAULT_CONTAINER
from frontend.labels import ObjectCatalog, normalize


def iso(epoch: float) -> str:
    """UTC ISO 8601 with a Z, as the device writes times."""
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat().replace("+00:00", "Z")


class StandInDevice:
    """Answers ProcessRequest and writes results like the device would (no camera, no model)."""

    def __init__(self) -> None:
        service = BlobServiceClient.from_connection_string(os.environ["STORAGE_CONNECTION_STRING"])
        self.container = service.get_container_client(os.environ.get("RESULT_CONTAINER") or DEFAULT_CONTAINER)
        try:
            self.container.create_container()
        except ResourceExistsError:
            pass
        self.visible = {normalize(n) for n in os.environ.get("STANDIN_VISIBLE_OBJECTS", "").split(",") if n.strip()}
        self.delay = float(os.environ.get("STANDIN_DELAY_SECONDS", "1"))
        photo = cv2.imread(os.environ["STANDIN_IMAGE"])
        if photo is None:
            raise SystemExit(f"STANDIN_IMAGE={os.environ['STANDIN_IMAGE']!r} is not a readable image")
        self.image = cv2.imencode(".jpg", photo)[1].tobytes()
        self.catalog = ObjectCatalog.from_file(Path(os.environ.get("FRONTEND_LABELS_FILE") or BUNDLED_LABELS))
        self.pending: set[str] = set()
        self.lock = threading.Lock()

    def on_method(self, request: MethodRequest) -> tuple[int, dict[str, Any]]:
        """ProcessRequest's answer; the result is written later on a thread."""
        if request.name != "ProcessRequest":
            return 404, {"error": f"unknown method {request.name}"}
        payload = request.payload if isinstance(request.payload, dict) else {}
        request_id = payload.get("CoorelationId") or payload.get("CorrelationId")
        class_name = payload.get("ClassName")
        threshold = payload.get("ThresholdPercentage")
        ttl = payload.get("ExpiresInSeconds", 120)
        for field, ok in (
            ("CoorelationId", isinstance(request_id, str) and request_id),
            ("ClassName", isinstance(class_name, str) and class_name.strip()),
            ("ThresholdPercentage", isinstance(threshold, (int, float)) and 1 <= threshold <= 100),
            ("ExpiresInSeconds", isinstance(ttl, int) and 1 <= ttl <= 3600),
        ):
            if not ok:
                return 400, {"error": f"{field} is missing or invalid"}
        expires_at = time.time() + ttl
        with self.lock:
            first = request_id not in self.pending
            self.pending.add(request_id)
        if first:
            threading.Thread(
                target=self.serve, args=(request_id, class_name, threshold, expires_at), daemon=True
            ).start()
        print(f"STANDIN_REQUEST {request_id} {class_name!r} {threshold}", flush=True)
        return 200, {"requestId": request_id, "expiresAt": iso(expires_at)}

    def serve(self, request_id: str, class_name: str, threshold: float, expires_at: float) -> None:
        """Write the result the classifier would write for this request."""
        started = time.time()
        doc: dict[str, Any] = {
            "requestId": request_id,
            "className": class_name,
            "threshold": threshold,
            "model": "stand-in device (no model)",
        }
        if class_name not in self.catalog:
            doc.update(status="rejected", reason=f"the model cannot output {class_name!r}")
        elif normalize(class_name) in self.visible:
            time.sleep(self.delay)
            self.container.upload_blob(
                f"{request_id}/imageWithDetection.jpg",
                self.image,
                content_settings=ContentSettings(content_type="image/jpeg"),
            )
            doc.update(status="found", confidence=0.93, detectedAt=iso(time.time()))
        else:
            time.sleep(max(0.0, expires_at - time.time()))
            doc.update(status="expired")
        doc["elapsedMs"] = round((time.time() - started) * 1000)
        self.container.upload_blob(
            f"{request_id}/result.json",
            json.dumps(doc).encode(),
            content_settings=ContentSettings(content_type="application/json"),
        )
        print(f"STANDIN_RESULT {request_id} {doc['status']}", flush=True)


def main() -> int:
    """Connect as the authrequest module; answer methods until SIGTERM."""
    device = StandInDevice()
    client = IoTHubModuleClient.create_from_edge_environment(connection_retry_interval=1)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    silent = os.environ.get("STANDIN_SILENT") == "1"

    def handler(request: MethodRequest) -> None:
        if silent:
            print(f"STANDIN_SILENT {request.name}", flush=True)
            return
        status, payload = device.on_method(request)
        client.send_method_response(MethodResponse.create_from_method_request(request, status, payload))

    client.on_method_request_received = handler
    client.connect()
    print("STANDIN_READY", flush=True)
    try:
        stop.wait()
    finally:
        client.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
