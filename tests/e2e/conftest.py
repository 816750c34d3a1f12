"""The whole device side of the solution as real processes: Azurite, the edgeHub emulator (hub only), and the
authrequest and classifier modules started from their main.py with the environment a device gives them. Requests
go through the unmodified azure-iot-hub service SDK (ProcessRequest), results are read with azure-storage-blob.

MQTT is always on port 8883 (fixed by the SDK): run these tests alone or inside a private network namespace,
`unshare --net bash -c 'ip link set lo up; .venv/bin/python -m pytest tests/e2e'`."""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import pytest
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import CloudToDeviceMethod
from azure.storage.blob import ContainerClient
from azure.storage.queue import QueueClient

from edgehub_emulator.azurite import Azurite
from edgehub_emulator.process import MQTT_PORT, EmulatorProcess, free_port, port_free
from solution_testkit import require_part
from solution_testkit import wait_for as poll
from solution_testkit.browser import chromium

ROOT = Path(__file__).resolve().parents[2]
SOLUTION = ROOT / "iot-edge-solution"
MEDIA = SOLUTION / "media"
MANIFEST = SOLUTION / "deployment.template.json"
KEEP = ("PATH", "HOME", "LANG", "SYSTEMROOT", "TMPDIR")


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `condition` until it returns something true; fail naming `what` after `timeout` s."""
    return poll(condition, timeout, what, interval=0.1)


def make_video(path: Path, scenes: list[tuple[str, float]], fps: int = 10) -> Path:
    """An MJPG video of bundled photos, each shown for its seconds (all scaled to 640x480)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (640, 480))
    for name, seconds in scenes:
        image = cv2.imread(str(MEDIA / name), cv2.IMREAD_COLOR)
        assert image is not None, f"bundled photo {name} is missing"
        frame = cv2.resize(image, (640, 480))
        for _ in range(int(seconds * fps)):
            writer.write(frame)
    writer.release()
    return path


class ModuleProcess:
    """One module's main.py as a process, with a clean environment plus `env`; output to a log file."""

    def __init__(self, name: str, env: dict[str, str], log: Path) -> None:
        self.name = name
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self._offset = 0

    def start(self, ready: str, timeout: float = 90) -> ModuleProcess:
        """Start and wait until the log shows `ready`."""
        clean = {k: v for k, v in os.environ.items() if k in KEEP}
        self._offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(  # pylint: disable=consider-using-with
                [sys.executable, "-u", str(SOLUTION / "modules" / self.name / "main.py")],
                cwd=SOLUTION / "modules" / self.name, env={**clean, **self.env, "PYTHONUNBUFFERED": "1"},
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        wait_for(lambda: ready in self.output() or self.process.poll() is not None, timeout, f"{self.name}: {ready}")
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.output()}")
        return self

    def output(self) -> str:
        """What this run of the process printed so far."""
        if not self.log.exists():
            return ""
        return self.log.read_bytes()[self._offset :].decode("utf-8", errors="replace")

    def kill(self) -> None:
        """SIGKILL: no clean-up runs, like a power cut or the OOM killer."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> int | None:
        """SIGTERM (as the IoT Edge runtime stops a module) and wait; the exit status."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        return None if self.process is None else self.process.returncode


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The edgeHub emulator for the solution's manifest. Needs port 8883: locally it skips when that is taken
    (run under `unshare --net`), in CI it fails."""
    require_part(
        port_free(MQTT_PORT),
        f"port {MQTT_PORT} is in use: run the e2e tests inside `unshare --net` (see tests/e2e/conftest.py)",
    )
    instance = EmulatorProcess(tmp_path_factory.mktemp("emulator") / "state", MANIFEST).start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """The distribution's headless Chromium through Playwright (a Browser); skips locally, fails in CI when
    missing."""
    with chromium() as instance:
        yield instance


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory, azurite_executable: Path) -> Any:
    """An Azurite of this test module's own (the tests restart it), data in a temporary folder."""
    location = tmp_path_factory.mktemp("azurite-e2e")
    instance = Azurite(location, free_port(), free_port(), free_port(), executable=azurite_executable)
    instance.start()
    yield instance
    instance.stop()


DEVICE = "edge-device"
QUEUE = "e2e-requests"
CONTAINER = "e2e-results"
KEY_TEXT = base64.b64encode(secrets.token_bytes(32)).decode()  # a fresh key per run
CLASSIFIER_READY = "two-factor request service on"
SIMULATOR_VARIABLES = ("EdgeHubConnectionString", "EdgeModuleCACertificateFile")


class Solution:
    """The running modules and the service-side clients of one test module."""

    def __init__(self, hub: EmulatorProcess, storage: Azurite, videos: dict[str, Path], logs: Path) -> None:
        self.hub = hub
        self.storage = storage
        self.videos = videos
        self.logs = logs
        self.key_text = KEY_TEXT
        shared = {
            "STORAGE_CONNECTION_STRING": storage.connection_string,
            "MODULE_KEY": KEY_TEXT,
            "REQUEST_QUEUE": QUEUE,
            "LOG_LEVEL": "INFO",
        }
        self.authrequest = ModuleProcess(
            "authrequest", {**self._edge("authrequest"), **shared, "ENQUEUE_TIMEOUT_SECONDS": "2"},
            logs / "authrequest.log",
        )  # fmt: skip
        self.classifier_env = {
            **self._edge("classifier"),
            **shared,
            "RESULT_CONTAINER": CONTAINER,
            "REQUEST_VISIBILITY_SECONDS": "4",
            "REQUEST_POLL_SECONDS": "0.2",
            "MODEL_NAME": "efficientnet-lite0",
            "VIDEO_REALTIME": "True",
            "LOOP_VIDEO": "True",
            "PROCESS_EVERY_FRAME": "False",
            "INTRA_OP_THREADS": "1",
            # the test's own model store: a user's walkthrough leaves version 2 active in theirs
            "MODEL_STORE": str(logs / "classifier-model-store"),
            "ENGINE_CACHE_DIR": str(logs / "classifier-engine-cache"),
        }
        self.classifier: ModuleProcess | None = None
        service = hub.env("authrequest")
        os.environ["REQUESTS_CA_BUNDLE"] = service["REQUESTS_CA_BUNDLE"]
        self.registry = IoTHubRegistryManager.from_connection_string(service["IOTHUB_CONNECTION_STRING"])
        self.results = ContainerClient.from_connection_string(storage.connection_string, CONTAINER)
        self.queue = QueueClient.from_connection_string(storage.connection_string, QUEUE)
        self.poison = QueueClient.from_connection_string(storage.connection_string, QUEUE + "-poison")

    def _edge(self, module: str) -> dict[str, str]:
        return {k: v for k, v in self.hub.env(module).items() if k in SIMULATOR_VARIABLES}

    def classifier_on(self, video: str) -> ModuleProcess:
        """(Re)start the classifier on one of the test videos."""
        if self.classifier is not None:
            self.classifier.stop()
        env = {**self.classifier_env, "CAMERA_PATH": str(self.videos[video])}
        self.classifier = ModuleProcess("classifier", env, self.logs / "classifier.log").start(CLASSIFIER_READY)
        return self.classifier

    def invoke(self, payload: Any, timeout: int = 20) -> tuple[int, Any]:
        """ProcessRequest through the emulator's service API, as the web front-end calls it."""
        request = CloudToDeviceMethod(method_name="ProcessRequest", payload=payload,
                                      response_timeout_in_seconds=timeout)  # fmt: skip
        answer = self.registry.invoke_device_module_method(DEVICE, "authrequest", request)
        return answer.status, answer.payload

    def request(self, class_name: str, threshold: float = 30, **extra: Any) -> str:
        """A successful ProcessRequest; returns the requestId."""
        request_id = str(uuid.uuid4())
        payload = {"CoorelationId": request_id, "ClassName": class_name, "ThresholdPercentage": threshold, **extra}
        status, answer = self.invoke(payload)
        assert status == 200, answer
        assert answer["requestId"] == request_id and answer["expiresAt"].endswith("Z")
        return request_id

    def result(self, request_id: str, timeout: float = 45) -> dict[str, Any]:
        """result.json of `request_id`, once it is there."""

        def read() -> dict[str, Any] | None:
            blob = self.results.get_blob_client(f"{request_id}/result.json")
            return json.loads(blob.download_blob().readall()) if blob.exists() else None

        return wait_for(read, timeout, f"{request_id}/result.json")

    def blobs(self, prefix: str) -> list[str]:
        """Blob names under `prefix`."""
        return sorted(b.name for b in self.results.list_blobs(name_starts_with=prefix))

    def queue_empty(self) -> bool:
        """No message left, visible or held."""
        return self.queue.get_queue_properties().approximate_message_count == 0

    def verifications(self, request_id: str) -> list[dict[str, Any]]:
        """The `verification` messages of `request_id` that reached $upstream."""
        return [
            m for m in self.hub.upstream()
            if m["output"] == "verification" and m["properties"].get("requestId") == request_id
        ]  # fmt: skip

    @staticmethod
    def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
        """Poll `condition` until it returns something true; fail naming `what` after `timeout` s."""
        return wait_for(condition, timeout, what)

    def stop(self) -> None:
        """Stop both modules."""
        for module in (self.classifier, self.authrequest):
            if module is not None:
                module.stop()


@pytest.fixture(scope="module")
def solution(hub: EmulatorProcess, storage: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Solution]:
    """authrequest and the classifier (on a video where a squirrel follows four seconds of coffee) against the
    emulator and Azurite."""
    folder = tmp_path_factory.mktemp("e2e")
    videos = {
        # the class appears after a few seconds, then the video loops
        "coffee-then-squirrel": make_video(
            folder / "coffee-then-squirrel.avi", [("coffee.png", 4), ("squirrel_cls.jpg", 3)]
        ),
        "coffee": make_video(folder / "coffee.avi", [("coffee.png", 2)]),
    }
    saved = os.environ.get("REQUESTS_CA_BUNDLE")
    made = Solution(hub, storage, videos, folder)
    try:
        made.authrequest.start("serving ProcessRequest")
        made.classifier_on("coffee-then-squirrel")
        yield made
    finally:
        made.stop()
        if saved is None:
            os.environ.pop("REQUESTS_CA_BUNDLE", None)
        else:
            os.environ["REQUESTS_CA_BUNDLE"] = saved


def pytest_configure(config: pytest.Config) -> None:
    """This folder's own marker."""
    config.addinivalue_line("markers", "overrides(*assignments): NAME=value arguments a `make run` test adds")
