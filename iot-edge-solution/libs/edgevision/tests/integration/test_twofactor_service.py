"""The classifier's request service against a real Azurite, with real model results on the bundled photos:
found / expired / rejected results, the poison queue for unauthenticated messages, duplicates, and the results
an earlier (crashed) attempt left behind. The module-to-process flow through the edgeHub emulator is in tests/e2e.
Outputs go to the offline connection here (no hub)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any, Callable, Iterator

import cv2
import numpy as np
import pytest

from edgehub_emulator.azurite import Azurite
from edgevision.frames import Frame
from edgevision.iot import OfflineModuleConnection
from edgevision.models import ModelRepository
from edgevision.security import ModuleKey, SignedRequest, canonical_bytes, sign_request
from edgevision.storage import BlobStore, StorageQueue
from edgevision.tasks import Task
from edgevision.twofactor.service import RequestService
from edgevision.vision import build_task
from solution_testkit import wait_for

pytestmark = pytest.mark.integration

KEY = ModuleKey(bytes(range(32)))
OTHER_KEY = ModuleKey(bytes(range(100, 132)))


def _wait_for(condition: Callable[[], Any], timeout: float = 20.0) -> Any:
    """The shared poll with this file's default timeout."""
    return wait_for(condition, timeout)


@pytest.fixture(scope="module")
def tasks(models_dir) -> Iterator[dict[str, Task]]:
    """The bundled classifier and detectors (the TensorFlow Lite SSD runs on LiteRT)."""
    repository = ModelRepository(models_dir)
    names = ("efficientnet-lite0", "nanodet-m-416", "ssd-mobilenet-v2-coco-tflite")
    built = {name: build_task(repository.load(name), threads=1) for name in names}
    yield built
    for task in built.values():
        task.engine.close()


class Rig:
    """A request service on fresh queue/container names, and helpers to feed it."""

    def __init__(self, azurite: Azurite, task: Task) -> None:
        suffix = uuid.uuid4().hex[:10]
        self.queue = StorageQueue(azurite.connection_string, f"requests-{suffix}")
        self.blobs = BlobStore(azurite.connection_string, f"results-{suffix}")
        self.task = task
        self.service = RequestService(
            KEY,
            StorageQueue(azurite.connection_string, self.queue.name),
            BlobStore(azurite.connection_string, self.blobs.container),
            OfflineModuleConnection("tests"),
            lambda: task.labels,
            lambda: task.model.ref,
            {"visibility_s": 5, "poll_s": 0.1},
        )
        self.queue.ensure()
        self.blobs.ensure()

    def request(self, class_name: str, threshold: float = 30, expires_in: float = 60, **changes: Any) -> str:
        """Queue a signed request; returns its id."""
        now = time.time()
        request_id = changes.pop("request_id", uuid.uuid4().hex)
        request = SignedRequest(request_id, class_name, threshold, now, now + expires_in)
        self.queue.send(sign_request(changes.pop("key", KEY), request))
        return request_id

    def frame(self, image: np.ndarray, index: int = 0) -> None:
        """Run the model on `image` as a frame captured now, and hand the result to the service."""
        frame = Frame(image, index, time.monotonic(), "test", time.time())
        self.service.handle(frame, self.task.run(image))

    def result(self, request_id: str, timeout: float = 20) -> dict[str, Any]:
        """result.json of `request_id`, once written."""
        found = _wait_for(lambda: self.blobs.read(f"{request_id}/result.json"), timeout)
        return json.loads(found[0])

    def names(self) -> list[str]:
        """Every blob in the container."""
        return sorted(b.name for b in self.blobs.client.list_blobs())

    def queued(self, poison: bool = False) -> list[str]:
        """Visible messages (peeked)."""
        client = self.queue.poison_client if poison else self.queue.client
        return [m.content for m in client.peek_messages(max_messages=32)]

    def all_deleted(self) -> bool:
        """True when the request queue holds no message, visible or not."""
        return self.queue.client.get_queue_properties().approximate_message_count == 0


@pytest.fixture
def rig(azurite: Azurite, tasks: dict[str, Task]) -> Iterator[Rig]:
    """A started request service over the bundled classifier."""
    made = Rig(azurite, tasks["efficientnet-lite0"])
    made.service.start()
    yield made
    made.service.close()


def test_a_class_in_view_is_found_with_the_annotated_frame_then_the_message_is_deleted(rig: Rig, media) -> None:
    rig.frame(media.image("chelsea.png"))  # before the request: must not count
    request_id = rig.request("Tiger Cat", threshold=30)
    _wait_for(lambda: rig.service.pending == 1)
    rig.frame(media.image("coffee.png"), 1)
    assert rig.service.pending == 1
    rig.frame(media.image("chelsea.png"), 2)
    result = rig.result(request_id)
    assert result["status"] == "found" and result["requestId"] == request_id
    assert (result["className"], result["label"], result["threshold"]) == ("Tiger Cat", "tiger cat", 30)
    assert 30 <= result["confidence"] <= 100 and result["model"] == "efficientnet-lite0:1"
    assert result["detectedAt"].endswith("Z") and result["elapsedMs"] >= 0
    image_blob = rig.blobs.read(f"{request_id}/imageWithDetection.jpg")
    assert image_blob is not None
    image = cv2.imdecode(np.frombuffer(image_blob[0], np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == media.image("chelsea.png").shape
    assert not np.array_equal(image, media.image("chelsea.png")), "the frame is annotated"
    _wait_for(rig.all_deleted)


@pytest.mark.parametrize("detector", ["nanodet-m-416", "ssd-mobilenet-v2-coco-tflite"])
def test_a_detection_model_is_matched_on_its_boxes(
    azurite: Azurite, tasks: dict[str, Task], media, detector: str
) -> None:
    rig = Rig(azurite, tasks[detector])
    rig.service.start()
    try:
        request_id = rig.request("DOG", threshold=35)
        _wait_for(lambda: rig.service.pending == 1)
        rig.frame(media.image("dog.jpg"))
        result = rig.result(request_id)
        assert (result["status"], result["label"], result["model"]) == ("found", "dog", f"{detector}:1")
        assert len(result["box"]) == 4
    finally:
        rig.service.close()


def test_a_class_never_reaching_the_threshold_expires(rig: Rig, media) -> None:
    request_id = rig.request("tiger cat", threshold=95, expires_in=2)
    _wait_for(lambda: rig.service.pending == 1)
    rig.frame(media.image("chelsea.png"))  # in view, but below the threshold
    result = rig.result(request_id)
    assert result["status"] == "expired" and result["elapsedMs"] == 2000
    assert rig.names() == [f"{request_id}/result.json"]
    _wait_for(rig.all_deleted)


def test_a_request_expired_before_it_arrives_is_answered_expired(rig: Rig) -> None:
    now = time.time()
    request = SignedRequest("late-1", "tiger cat", 50, now - 100, now - 40)
    rig.queue.send(sign_request(KEY, request))
    assert rig.result("late-1")["status"] == "expired"


@pytest.mark.parametrize("class_name", ["unicorn", "tabby cat's owner"])
def test_a_class_the_model_cannot_output_is_rejected_at_once(rig: Rig, class_name: str) -> None:
    request_id = rig.request(class_name)
    result = rig.result(request_id, timeout=10)
    assert result["status"] == "rejected" and "cannot output" in result["reason"]
    assert rig.names() == [f"{request_id}/result.json"]


def _wrong_version(request_id: str) -> str:
    now = time.time()
    fields = {
        "v": 2,
        "requestId": request_id,
        "className": "tiger cat",
        "threshold": 30,
        "issuedAt": now,
        "expiresAt": now + 60,
    }
    return json.dumps({**fields, "sig": base64.b64encode(KEY.mac(canonical_bytes(fields))).decode()})


def _tampered(request_id: str) -> str:
    now = time.time()
    data = json.loads(sign_request(KEY, SignedRequest(request_id, "tiger cat", 90, now, now + 60)))
    data["threshold"] = 1
    return json.dumps(data)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (
            lambda rid: sign_request(OTHER_KEY, SignedRequest(rid, "tiger cat", 30, time.time(), time.time() + 60)),
            "SignatureError",
        ),
        (_tampered, "SignatureError"),
        (lambda rid: '{"requestId": "%s", "className": "tiger cat"' % rid, "MalformedRequestError"),
        (
            lambda rid: json.dumps({"requestId": rid, "className": "tiger cat", "threshold": 30}),
            "MalformedRequestError",
        ),
        (_wrong_version, "MalformedRequestError"),
    ],
    ids=["other key", "tampered threshold", "not JSON", "unsigned", "version 2"],
)
def test_unauthenticated_messages_go_to_the_poison_queue_and_write_no_blob(
    rig: Rig, media, make: Callable[[str], str], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    request_id = f"forged-{uuid.uuid4().hex[:8]}"
    text = make(request_id)
    rig.queue.send(text)
    _wait_for(lambda: rig.queued(poison=True))
    for index in range(3):
        rig.frame(media.image("chelsea.png"), index)  # the class is in view: still nothing may be written
    time.sleep(0.5)
    assert rig.queued(poison=True) == [text]
    assert rig.names() == []
    assert rig.service.pending == 0
    assert any(reason in r.getMessage() for r in caplog.records)
    assert not any(base64.b64encode(bytes(range(32))).decode() in r.getMessage() for r in caplog.records)


def test_the_same_request_twice_gets_one_result_and_both_messages_go(rig: Rig, media) -> None:
    now = time.time()
    text = sign_request(KEY, SignedRequest("twice-1", "tiger cat", 30, now, now + 60))
    rig.queue.send(text)
    rig.queue.send(text)
    _wait_for(lambda: rig.service.worker.counters["received"] == 2 and rig.service.pending == 1)
    rig.frame(media.image("chelsea.png"))
    assert rig.result("twice-1")["status"] == "found"
    _wait_for(rig.all_deleted)
    assert rig.names() == ["twice-1/imageWithDetection.jpg", "twice-1/result.json"]


def test_an_existing_result_stands_and_the_message_is_only_deleted(rig: Rig, media) -> None:
    first = b'{"requestId":"done-1","status":"expired"}'
    assert rig.blobs.create("done-1/result.json", first, "application/json")
    now = time.time()
    rig.queue.send(sign_request(KEY, SignedRequest("done-1", "tiger cat", 30, now, now + 60)))
    _wait_for(lambda: rig.service.counters["answered_before"] == 1)
    rig.frame(media.image("chelsea.png"))
    _wait_for(rig.all_deleted)
    assert rig.blobs.read("done-1/result.json")[0] == first
    assert rig.names() == ["done-1/result.json"], "no image for an answered request"


def test_an_image_left_by_a_crashed_attempt_gives_its_result(rig: Rig) -> None:
    earlier = {"requestId": "crash-1", "status": "found", "label": "tiger cat", "confidence": 41.0}
    encoded = base64.b64encode(json.dumps(earlier).encode()).decode()
    assert rig.blobs.create("crash-1/imageWithDetection.jpg", b"jpeg", "image/jpeg", {"result": encoded})
    now = time.time()
    rig.queue.send(sign_request(KEY, SignedRequest("crash-1", "tiger cat", 30, now, now + 60)))
    assert rig.result("crash-1") == earlier
    assert rig.blobs.read("crash-1/imageWithDetection.jpg")[0] == b"jpeg"
    _wait_for(rig.all_deleted)
