"""The classifier's `detections` output: one JSON message per frame whose results changed, rate-limited, holding
only results at or above a confidence floor. Routed to the alert module (and anything else a route names).

Sending never slows the pipeline: `handle` only builds the message and offers it to a small bounded hand-off; a
sender thread of its own talks to edgeHub. When edgeHub is slow or away, the oldest queued messages are dropped
and counted, never queued without bound."""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable

from pydantic import Field

from edgevision.config import ModuleSettings
from edgevision.frames import Frame
from edgevision.iot import IoTError, ModuleConnection
from edgevision.pipeline.fanout import Handoff
from edgevision.tasks.results import TaskResult

log = logging.getLogger(__name__)

OUTPUT_NAME = "detections"
SCHEMA = "edgevision.detections/1"
_STOP = object()


class DetectionsSettings(ModuleSettings):
    """Settings of the `detections` output."""

    detections_max_per_second: float = Field(
        5.0,
        ge=0,
        le=100,
        description="DETECTIONS_MAX_PER_SECOND: most messages a second per camera; 0 turns the output off.",
    )
    detections_min_confidence: float = Field(
        0.3, ge=0, le=1, description="DETECTIONS_MIN_CONFIDENCE: results below this are left out of the messages."
    )
    detections_repeat_seconds: float = Field(
        5.0,
        ge=0,
        description="DETECTIONS_REPEAT_SECONDS: send unchanged, non-empty results again after this long, so a "
        "lasting object keeps being reported; 0: only changes.",
    )
    detections_queue_size: int = Field(
        16, ge=1, le=10000, description="DETECTIONS_QUEUE_SIZE: messages waiting for edgeHub before the oldest drop."
    )


def split_model_ref(ref: str) -> tuple[str, str | None]:
    """`name:version` (what results carry) -> (name, version); a ref without a version gives (ref, None)."""
    name, sep, version = ref.rpartition(":")
    return (name, version) if sep and name and version else (ref, None)


def detections_message(frame: Frame, result: TaskResult, min_confidence: float) -> dict[str, Any]:
    """The JSON body for one frame: model and version, frame index and time, image size, and each result at or
    above `min_confidence` (label, confidence, box or polygon), most confident first."""
    model, version = split_model_ref(result.model)
    kept = sorted((p for p in result.predictions if p.confidence >= min_confidence), key=lambda p: -p.confidence)
    return {
        "schema": SCHEMA,
        "model": model,
        "modelVersion": version,
        "task": result.task,
        "camera": frame.camera,
        "frameIndex": frame.index,
        "frameTime": frame.captured_at_iso,
        "imageSize": list(result.image_size),
        "detections": [p.to_dict() for p in kept],
    }


def _fingerprint(message: dict[str, Any]) -> tuple:
    """What counts as 'the results changed': labels, confidences to 2 decimals, boxes to whole pixels."""
    items = []
    for detection in message["detections"]:
        box = tuple(round(v) for v in detection.get("box", ()))
        items.append((detection["label"], round(detection["confidence"], 2), box))
    return (message["model"], message["modelVersion"], tuple(items))


class DetectionsOutput:
    """A pipeline consumer that sends the `detections` output message of frames whose results changed."""

    name = "detections"

    def __init__(
        self,
        connection: ModuleConnection,
        settings: DetectionsSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.connection = connection
        self.settings = settings
        self._clock = clock
        self._handoff: Handoff[object] = Handoff(settings.detections_queue_size)
        self._thread: threading.Thread | None = None
        # per camera: when its last message went, and what it said (each camera is deduplicated and rate
        # limited on its own, so one busy camera never hides another's change)
        self._last_sent_at: dict[str, float] = {}
        self._last_fingerprint: dict[str, tuple] = {}
        self._lock = threading.Lock()
        self.counters = {"frames": 0, "unchanged": 0, "rate_limited": 0, "sent": 0, "send_failed": 0}

    @property
    def enabled(self) -> bool:
        """False when DETECTIONS_MAX_PER_SECOND is 0 or there is no edgeHub (the offline connection)."""
        return self.settings.detections_max_per_second > 0 and self.connection.enabled

    @property
    def dropped(self) -> int:
        """Messages dropped because edgeHub did not keep up (the hand-off was full)."""
        return self._handoff.dropped

    def stats(self) -> dict[str, int]:
        """Counters: frames seen, unchanged, rate-limited, sent, failed and dropped messages."""
        with self._lock:
            return {**self.counters, "dropped": self.dropped, "queued": len(self._handoff)}

    def start(self) -> None:
        """Start the sender thread."""
        if not self.enabled:
            why = "DETECTIONS_MAX_PER_SECOND=0" if self.connection.enabled else "no edgeHub"
            log.info("detections output off (%s)", why)
            return
        self._thread = threading.Thread(target=self._send_loop, name="detections-sender", daemon=True)
        self._thread.start()

    def handle(self, frame: Frame, result: TaskResult) -> None:
        """Queue a message when the results changed (or are due again) and the rate limit allows."""
        if not self.enabled:
            return
        message = self.decide(frame, result)
        if message is not None:
            self._handoff.offer(message)

    def decide(self, frame: Frame, result: TaskResult) -> dict[str, Any] | None:
        """The message to send for this frame, or None (unchanged, or over the rate); counts either way."""
        settings = self.settings
        message = detections_message(frame, result, settings.detections_min_confidence)
        fingerprint = _fingerprint(message)
        now = self._clock()
        with self._lock:
            self.counters["frames"] += 1
            last_sent_at = self._last_sent_at.get(frame.camera)
            since = None if last_sent_at is None else now - last_sent_at
            if fingerprint == self._last_fingerprint.get(frame.camera):
                repeat = settings.detections_repeat_seconds
                if not (message["detections"] and repeat > 0 and since is not None and since >= repeat):
                    self.counters["unchanged"] += 1
                    return None
            if since is not None and since < 1.0 / settings.detections_max_per_second - 1e-9:
                self.counters["rate_limited"] += 1
                return None
            self._last_sent_at[frame.camera] = now
            self._last_fingerprint[frame.camera] = fingerprint
        return message

    def _send_loop(self) -> None:
        while True:
            try:
                message = self._handoff.get(timeout=0.5)
            except queue.Empty:
                continue
            if message is _STOP:
                return
            try:
                self.connection.send_output(OUTPUT_NAME, message)
            except IoTError as e:
                with self._lock:
                    self.counters["send_failed"] += 1
                    failed = self.counters["send_failed"]
                if failed <= 3 or failed % 100 == 0:
                    log.warning("detections message not sent (%d so far): %s", failed, e)
                continue
            with self._lock:
                self.counters["sent"] += 1

    def close(self) -> None:
        """Stop the sender after what is queued (waiting a few seconds at most) and log the counters."""
        if self._thread is not None:
            self._handoff.offer(_STOP)
            self._thread.join(5.0)
            if self._thread.is_alive():
                log.warning("detections sender still blocked on edgeHub at shutdown; leaving it")
            self._thread = None
        if self.enabled:
            log.info("detections output: %s", self.stats())
