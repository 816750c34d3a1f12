"""Alerts to an HTTP endpoint (e.g. a Logic App's HTTP trigger), shaped like the Event Grid events a Logic App
gets from an IoT Hub subscription, with retries and a bounded on-disk queue that survives restarts.

Every alert is first written to the queue folder (one JSON file each, written atomically), then a sender thread
posts the oldest one and deletes it once the endpoint answers 2xx. Network errors, 408, 429 and 5xx are retried
with exponential backoff; other 4xx answers mean the endpoint will never take that event: it is moved to
`rejected/` (kept, not retried). When the queue is full the oldest event is dropped and counted. The URL may hold
a signature (Logic App URLs do): it is never logged, only its scheme, host and path."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import requests

log = logging.getLogger(__name__)

EVENT_TYPE = "EdgeVision.Alert"
RETRYABLE_STATUS = {408, 429}


def redact_url(url: str) -> str:
    """scheme://host[:port]/path of `url`: no user, query or fragment (where a Logic App keeps its signature)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def make_event(alert_body: dict[str, Any], device: str | None, module: str | None) -> dict[str, Any]:
    """One event in the Event Grid schema: id, eventType, subject, eventTime, data, dataVersion."""
    return {
        "id": str(uuid.uuid4()),
        "eventType": EVENT_TYPE,
        "subject": f"devices/{device or 'unknown'}/modules/{module or 'alert'}/alerts/{alert_body.get('class')}",
        "eventTime": alert_body.get("time"),
        "data": alert_body,
        "dataVersion": "1.0",
        "metadataVersion": "1",
    }


class DiskQueue:
    """A folder of JSON files, oldest first, holding at most `max_items`; a full queue drops its oldest."""

    def __init__(self, folder: Path, max_items: int) -> None:
        if max_items < 1:
            raise ValueError(f"queue size must be >= 1, got {max_items}")
        self.folder = Path(folder)
        self.rejected = self.folder / "rejected"
        self.max_items = max_items
        self._lock = threading.Lock()
        self._seq = 0
        self.dropped = 0
        self.folder.mkdir(parents=True, exist_ok=True)
        for leftover in sorted(self.folder.glob("*.tmp")):
            # a write cut short by a crash: never became an item (an alert is accepted once its .json is in place)
            leftover.unlink(missing_ok=True)
            log.warning("alert queue: removed %s, an alert write cut short by a crash (never accepted)", leftover.name)

    def _items(self) -> list[Path]:
        return sorted(self.folder.glob("*.json"))

    def __len__(self) -> int:
        with self._lock:
            return len(self._items())

    def put(self, item: dict[str, Any]) -> Path:
        """Store `item` (atomically: a reader never sees half a file); drop the oldest items beyond the bound."""
        data = json.dumps(item, separators=(",", ":")).encode("utf-8")
        with self._lock:
            self._seq += 1
            name = f"{time.time_ns():020d}-{self._seq:06d}-{uuid.uuid4().hex[:8]}"
            tmp = self.folder / f"{name}.tmp"
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            path = self.folder / f"{name}.json"
            os.replace(tmp, path)
            items = self._items()
            for old in items[: max(0, len(items) - self.max_items)]:
                old.unlink(missing_ok=True)
                self.dropped += 1
                log.warning("alert queue full (%d): dropped the oldest undelivered alert %s", self.max_items, old.name)
            return path

    def peek(self) -> tuple[Path, dict[str, Any]] | None:
        """The oldest item and its path; an unreadable file is moved to `rejected/` with a warning."""
        with self._lock:
            for path in self._items():
                try:
                    item = json.loads(path.read_text(encoding="utf-8"))
                    if not isinstance(item, dict):
                        raise ValueError("not a JSON object")
                    return path, item
                except (OSError, ValueError) as e:
                    log.warning("alert queue: %s is unreadable (%s); moved to %s", path.name, e, self.rejected)
                    self._move_to_rejected(path)
            return None

    def remove(self, path: Path) -> None:
        """Delete a delivered item."""
        with self._lock:
            path.unlink(missing_ok=True)

    def reject(self, path: Path) -> None:
        """Keep an item the endpoint refused for good in `rejected/`, out of the queue."""
        with self._lock:
            self._move_to_rejected(path)

    def _move_to_rejected(self, path: Path) -> None:
        self.rejected.mkdir(exist_ok=True)
        try:
            os.replace(path, self.rejected / path.name)
        except OSError as e:  # never silently: the item leaves the queue either way
            log.error("alert queue: cannot move %s to %s (%s); deleted it", path.name, self.rejected, e)
            path.unlink(missing_ok=True)


class WebhookSender:
    """Posts queued events to `url`, oldest first, on its own thread; `enqueue` never blocks on the network."""

    def __init__(
        self,
        url: str,
        queue: DiskQueue,
        timeout_s: float = 10.0,
        initial_backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        post: Callable[..., requests.Response] | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"webhook URL must be http(s)://host/..., got {redact_url(url)!r}")
        self.url = url
        self.queue = queue
        self.timeout_s = timeout_s
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self._post = post or requests.post
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.counters = {"delivered": 0, "retries": 0, "rejected": 0}

    def stats(self) -> dict[str, int]:
        """Delivered, retried, rejected, dropped (queue full) and queued events."""
        with self._lock:
            return {**self.counters, "dropped": self.queue.dropped, "queued": len(self.queue)}

    def enqueue(self, event: dict[str, Any]) -> None:
        """Store the event on disk and wake the sender."""
        self.queue.put(event)
        self._wake.set()

    def start(self) -> None:
        """Start the sender thread (it first sends what earlier runs left in the queue)."""
        waiting = len(self.queue)
        log.info(
            "alert webhook to %s%s", redact_url(self.url), f"; {waiting} alerts queued from before" if waiting else ""
        )
        self._thread = threading.Thread(target=self._loop, name="alert-webhook", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the sender; what is not delivered stays on disk for the next start."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _count(self, key: str) -> None:
        with self._lock:
            self.counters[key] += 1

    def _deliver(self, event: dict[str, Any]) -> str:
        """'ok', 'retry' or 'reject' for one attempt."""
        try:
            response = self._post(
                self.url,
                data=json.dumps([event], separators=(",", ":")).encode("utf-8"),
                headers={"Content-Type": "application/json", "aeg-event-type": "Notification"},
                timeout=self.timeout_s,
            )
        except requests.RequestException as e:
            log.warning("alert webhook %s unreachable: %s", redact_url(self.url), type(e).__name__)
            return "retry"
        status = response.status_code
        response.close()
        if 200 <= status < 300:
            return "ok"
        if status >= 500 or status in RETRYABLE_STATUS:
            log.warning("alert webhook %s answered %d; retrying", redact_url(self.url), status)
            return "retry"
        log.error(
            "alert webhook %s refused an alert with %d; kept in %s", redact_url(self.url), status, self.queue.rejected
        )
        return "reject"

    def _loop(self) -> None:
        backoff = self.initial_backoff_s
        while not self._stop.is_set():
            head = self.queue.peek()
            if head is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            path, event = head
            outcome = self._deliver(event)
            if outcome == "ok":
                self.queue.remove(path)
                self._count("delivered")
                backoff = self.initial_backoff_s
            elif outcome == "reject":
                self.queue.reject(path)
                self._count("rejected")
            else:
                self._count("retries")
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
