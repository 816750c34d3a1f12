"""The classifier's request service: a consumer of the running pipeline (the camera is opened once) that serves
signed two-factor requests from the Storage queue.

For each request: verified with MODULE_KEY (a bad signature, malformed body or wrong version goes to the poison
queue and never writes a blob); a class the model cannot output is `rejected` at once; otherwise live results are
matched until the class reaches the threshold (`found`: the exact frame, annotated) or `expiresAt` passes
(`expired`). Results go to `{requestId}/imageWithDetection.jpg` (found only), then `{requestId}/result.json`,
then the `verification` output; the queue message is deleted last.

Crash safety: blobs are only ever created, never overwritten (the first result stands). The image carries its
result in its metadata, so a classifier killed between the two writes finishes with the same result after a
restart; a message whose result.json exists is only deleted (and its verification sent if it was not)."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from edgevision.annotate import annotate, encode_jpeg
from edgevision.config import SettingsError
from edgevision.frames import Frame
from edgevision.iot import IoTError, ModuleConnection
from edgevision.pipeline import BaseConsumer
from edgevision.security import CLOCK_SKEW_SECONDS, ModuleKey, SignedRequest, VerificationError, verify_request
from edgevision.storage import Backoff, BlobStore, Lease, QueueWorker, StorageQueue, StorageUnavailableError
from edgevision.tasks.results import Prediction, TaskResult
from edgevision.twofactor.intake import iso_utc
from edgevision.twofactor.matcher import best_match, model_can_output
from edgevision.twofactor.settings import TwoFactorSettings

log = logging.getLogger(__name__)

IMAGE_BLOB = "imageWithDetection.jpg"
RESULT_BLOB = "result.json"
OUTPUT = "verification"
# Frames captured up to this long before expiresAt may still be in the pipeline: wait for them before expiring.
EXPIRY_GRACE_S = 1.0
_RESULT_METADATA = "result"
_SENT_METADATA = "verification"


@dataclass
class _Entry:
    request: SignedRequest
    leases: list[Lease] = field(default_factory=list)


@dataclass
class _Outcome:
    entry: _Entry
    body: dict[str, Any] | None  # None: read the answer from Storage (check only)
    image: bytes | None = None


class RequestService(BaseConsumer):  # pylint: disable=too-many-instance-attributes  # worker, writer, bookkeeping
    """Serves signed requests from `queue_store` against the pipeline's results; see the module docstring.

    `labels` and `model` give the running model's labels and reference when asked (they may change when the
    model is updated)."""

    name = "requests"

    def __init__(  # pylint: disable=too-many-arguments
        self,
        key: ModuleKey,
        queue_store: StorageQueue,
        blobs: BlobStore,
        connection: ModuleConnection,
        labels: Callable[[], Sequence[str]],
        model: Callable[[], str],
        worker_options: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.time,
        *,
        cameras: Sequence[str] | None = None,
    ) -> None:
        self.key = key
        self.cameras = tuple(cameras) if cameras is not None else None
        self.blobs = blobs
        self.connection = connection
        self.labels = labels
        self.model = model
        self.clock = clock
        self.worker = QueueWorker(queue_store, self._received, **(worker_options or {}))
        self._pending: dict[str, _Entry] = {}
        self._resolving: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._jobs: queue.Queue[_Outcome | None] = queue.Queue()
        self._writer = threading.Thread(target=self._write_loop, name="request-results", daemon=True)
        self._backoff = Backoff(log, f"results in container {blobs.container}")
        self.counters = {k: 0 for k in ("received", "poisoned", "found", "expired", "rejected", "answered_before")}

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the writer and the queue worker (both wait out a Storage outage; neither fails here)."""
        self._writer.start()
        self.worker.start()
        log.info(
            "two-factor request service on: queue %s, results in container %s",
            self.worker.queue.name,
            self.blobs.container,
        )

    def close(self) -> None:
        """Finish the results being written (up to 10 s), then stop the worker; pending requests go back to the
        queue at once for the next classifier."""
        self._closing.set()
        self._jobs.put(None)
        self._writer.join(10)
        self.worker.stop()
        self.worker.queue.close()
        self.blobs.close()

    @property
    def pending(self) -> int:
        """Requests waiting for their class."""
        with self._lock:
            return len(self._pending)

    # -- the queue worker's thread ---------------------------------------------------------------------------
    def _received(self, lease: Lease) -> None:
        self.counters["received"] += 1
        try:
            request = verify_request(self.key, lease.content, check_expiry=False)
        except VerificationError as e:
            self.counters["poisoned"] += 1
            lease.poison(f"{type(e).__name__}: {e}")  # the message says what failed, never the key
            return
        with self._lock:
            known = self._pending.get(request.request_id) or self._resolving.get(request.request_id)
            if known is not None:
                # the same request again: received a second time after a visibility lapse, or queued twice
                known.leases.append(lease)
                return
            entry = _Entry(request, [lease])
            self._resolving[request.request_id] = entry
        self._jobs.put(_Outcome(entry, None))  # first see whether Storage has an answer already

    def _first_look(self, entry: _Entry) -> _Outcome | None:
        """For a request without an answer in Storage: rejected or expired at once, else pending (None)."""
        request, now = entry.request, self.clock()
        if request.issued_at > now + CLOCK_SKEW_SECONDS:
            return self._rejected(entry, "the request was issued in the future: the clocks of the modules differ")
        if request.camera is not None and self.cameras is not None and request.camera not in self.cameras:
            return self._rejected(entry, f"no camera named {request.camera!r} (cameras: {', '.join(self.cameras)})")
        if not model_can_output(request.class_name, self.labels()):
            return self._rejected(entry, f"model {self.model()} cannot output {request.class_name!r}")
        if now > request.expires_at:
            return self._expired(entry)
        return None

    # -- the pipeline's consumer thread ----------------------------------------------------------------------
    def handle(self, frame: Frame, result: TaskResult) -> None:
        """Match the pending requests against this result; a found one is annotated here and written by the
        writer thread, so this returns in a few milliseconds."""
        if not self._pending:
            return
        found: list[tuple[_Entry, Prediction]] = []
        with self._lock:
            for request_id, entry in list(self._pending.items()):
                request = entry.request
                if not request.issued_at <= frame.captured_at <= request.expires_at:
                    continue
                if request.camera is not None and request.camera != frame.camera:
                    continue
                prediction = best_match(request.class_name, result, request.threshold)
                if prediction is not None:
                    del self._pending[request_id]
                    self._resolving[request_id] = entry
                    found.append((entry, prediction))
        for entry, prediction in found:
            self._jobs.put(self._found(entry, frame, result, prediction))

    # -- outcomes --------------------------------------------------------------------------------------------
    def _base(self, request: SignedRequest, status: str, model: str) -> dict[str, Any]:
        body = {
            "requestId": request.request_id,
            "status": status,
            "className": request.class_name,
            "threshold": request.threshold,
            "model": model,
            "issuedAt": iso_utc(request.issued_at),
            "expiresAt": iso_utc(request.expires_at),
        }
        if request.camera is not None:
            body["cameraName"] = request.camera
        return body

    def _found(self, entry: _Entry, frame: Frame, result: TaskResult, prediction: Prediction) -> _Outcome:
        request = entry.request
        body = self._base(request, "found", result.model)
        body.update(
            label=prediction.label,
            confidence=round(prediction.confidence * 100, 2),
            detectedAt=frame.captured_at_iso,
            elapsedMs=max(0, round((frame.captured_at - request.issued_at) * 1000)),
            image=f"{request.request_id}/{IMAGE_BLOB}",
            camera=frame.camera,
        )
        if prediction.box is not None:
            body["box"] = [round(v, 1) for v in prediction.box]
        extra = f"request {request.request_id}: {request.class_name} >= {request.threshold:g}%"
        if frame.camera != "default":
            extra += f" on {frame.camera}"
        image = annotate(frame.image, result, frame.captured_at_iso, highlight=prediction.label, extra=extra)
        return _Outcome(entry, body, encode_jpeg(image, quality=90))

    def _expired(self, entry: _Entry) -> _Outcome:
        body = self._base(entry.request, "expired", self.model())
        body["elapsedMs"] = max(0, round((entry.request.expires_at - entry.request.issued_at) * 1000))
        return _Outcome(entry, body)

    def _rejected(self, entry: _Entry, reason: str) -> _Outcome:
        body = self._base(entry.request, "rejected", self.model())
        body["reason"] = reason
        return _Outcome(entry, body)

    # -- the writer thread -----------------------------------------------------------------------------------
    def _write_loop(self) -> None:
        last_sweep = time.monotonic()
        while True:
            try:
                job = self._jobs.get(timeout=0.25)
            except queue.Empty:
                job = _SWEEP
            if job is None:  # close(): the jobs queued before it are done
                return
            if job is not _SWEEP:
                self._carry_out(job)
            if time.monotonic() - last_sweep >= 0.25:
                last_sweep = time.monotonic()
                self._sweep_expired()

    def _carry_out(self, job: _Outcome) -> None:
        while True:
            try:
                self._write(job)
                self._backoff.succeeded()
                return
            except StorageUnavailableError as e:
                if self._closing.is_set():
                    log.warning("request %s left for the next start: %s", job.entry.request.request_id, e)
                    self._release(job.entry)
                    return
                self._closing.wait(self._backoff.failed(e))
            except Exception:  # pylint: disable=broad-exception-caught
                # a refusal (bad name, bad credentials) or a bug: the messages come back after their visibility
                log.exception("could not write the result of request %s", job.entry.request.request_id)
                self._release(job.entry)
                return

    def _sweep_expired(self) -> None:
        now = self.clock()
        with self._lock:
            due = [e for e in self._pending.values() if now > e.request.expires_at + EXPIRY_GRACE_S]
            for entry in due:
                del self._pending[entry.request.request_id]
                self._resolving[entry.request.request_id] = entry
        for entry in due:
            self._carry_out(self._expired(entry))

    def _write(self, job: _Outcome) -> None:
        entry = job.entry
        request_id = entry.request.request_id
        result_name, image_name = f"{request_id}/{RESULT_BLOB}", f"{request_id}/{IMAGE_BLOB}"
        existing = self.blobs.listing(f"{request_id}/")  # one request tells what an earlier attempt left
        if result_name in existing:
            self._answered_before(entry, result_name, existing[result_name])
            return
        earlier = _result_of_image(image_name, existing.get(image_name))
        body = earlier or job.body
        if earlier is None and job.image is not None and body is not None:
            encoded = base64.b64encode(json.dumps(body, separators=(",", ":")).encode("utf-8")).decode("ascii")
            if not self.blobs.create(image_name, job.image, "image/jpeg", {_RESULT_METADATA: encoded}):
                body = _result_of_image(image_name, self.blobs.metadata(image_name)) or body  # lost a race
        if body is None:  # a first look: nothing in Storage yet
            outcome = self._first_look(entry)
            if outcome is None:
                with self._lock:
                    self._resolving.pop(request_id, None)
                    self._pending[request_id] = entry
                log.info(
                    "request %s pending: %r at %g%% until %s",
                    request_id,
                    entry.request.class_name,
                    entry.request.threshold,
                    iso_utc(entry.request.expires_at),
                )
                return
            body = outcome.body
            assert body is not None
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if not self.blobs.create(result_name, text, "application/json"):
            self._answered_before(entry, result_name, self.blobs.metadata(result_name) or {})
            return
        self.counters[str(body["status"])] = self.counters.get(str(body["status"]), 0) + 1
        log.info("request %s %s: %s", request_id, body["status"], _summary(body))
        self._verify_and_finish(entry, result_name, body)

    def _answered_before(self, entry: _Entry, result_name: str, metadata: dict[str, str]) -> None:
        self.counters["answered_before"] += 1
        if metadata.get(_SENT_METADATA) == "sent":
            log.info("request %s was answered before; its message is deleted", entry.request.request_id)
            self._finish(entry)
            return
        found = self.blobs.read(result_name)
        try:
            body = json.loads(found[0]) if found else None
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self._finish(entry)
            return
        log.info("request %s was answered before without its verification message: sending it", body.get("requestId"))
        self._verify_and_finish(entry, result_name, body)

    def _verify_and_finish(self, entry: _Entry, result_name: str, body: dict[str, Any]) -> None:
        try:
            # the request id as the message id: sent again after a crash, it is the same message to a consumer
            self.connection.send_output(
                OUTPUT,
                body,
                {"requestId": str(body.get("requestId")), "status": str(body.get("status"))},
                message_id=entry.request.request_id,
            )
        except IoTError as e:
            # the result is written; the message comes back after its visibility and the output is tried again
            log.warning("could not send the verification of request %s: %s", entry.request.request_id, e)
            self._release(entry)
            return
        if self.connection.enabled:
            self.blobs.set_metadata(result_name, {_SENT_METADATA: "sent"})
        self._finish(entry)

    def _finish(self, entry: _Entry) -> None:
        with self._lock:
            self._resolving.pop(entry.request.request_id, None)
            leases = list(entry.leases)
        for lease in leases:
            lease.complete()

    def _release(self, entry: _Entry) -> None:
        with self._lock:
            self._resolving.pop(entry.request.request_id, None)
            leases = list(entry.leases)
        for lease in leases:
            lease.release()


_SWEEP = _Outcome(_Entry(SignedRequest("-", "-", 1, 0, 1)), None)


def _result_of_image(image_name: str, metadata: dict[str, str] | None) -> dict[str, Any] | None:
    """The result an earlier attempt stored with the image (it crashed before writing result.json)."""
    if not metadata or _RESULT_METADATA not in metadata:
        return None
    try:
        body = json.loads(base64.b64decode(metadata[_RESULT_METADATA], validate=True))
    except (binascii.Error, ValueError):
        log.warning("%s has unreadable result metadata; its result is written anew", image_name)
        return None
    if not isinstance(body, dict):
        return None
    log.info("%s exists from an earlier attempt: its result stands", image_name)
    return body


def _summary(body: dict[str, Any]) -> str:
    if body["status"] == "found":
        return f"{body.get('label')!r} {body.get('confidence')}% at {body.get('detectedAt')} -> {body.get('image')}"
    return str(body.get("reason") or f"not seen by {body.get('expiresAt')}")


def request_service_from_settings(
    settings: TwoFactorSettings,
    connection: ModuleConnection,
    labels: Callable[[], Sequence[str]],
    model: Callable[[], str],
    cameras: Sequence[str] | None = None,
) -> RequestService | None:
    """The request service, or None (with one log line) when MODULE_KEY is not set. Raises SettingsError when
    MODULE_KEY is set without STORAGE_CONNECTION_STRING."""
    key = settings.key
    if key is None:
        level = logging.WARNING if connection.enabled else logging.INFO
        log.log(level, "two-factor request service off: MODULE_KEY is not set (see .env_template)")
        return None
    connection_string = settings.connection_string
    if connection_string is None:
        raise SettingsError("invalid configuration: STORAGE_CONNECTION_STRING must be set when MODULE_KEY is set")
    return RequestService(
        key,
        StorageQueue(connection_string, settings.request_queue),
        BlobStore(connection_string, settings.result_container),
        connection,
        labels,
        model,
        {
            "visibility_s": settings.request_visibility_seconds,
            "max_dequeue_count": settings.max_dequeue_count,
            "poll_s": settings.request_poll_seconds,
        },
        cameras=cameras,
    )
