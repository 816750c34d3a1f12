"""authrequest's side of the flow: check a ProcessRequest payload, sign the request, put it on the queue.

Payload (the seed front-end's, `CoorelationId` sic):
    {"CoorelationId": "<guid>", "ClassName": "tabby", "ThresholdPercentage": 70, "ExpiresInSeconds": 120}
`CorrelationId` is accepted too; the threshold may be a number or a numeric string (1-100); `ExpiresInSeconds` is
optional, and so is `CameraName` (only that camera of the classifier's CAMERAS may satisfy the request; it is
signed with the rest). The id becomes the request's id and the folder of its result blobs, so it is restricted
to letters, digits, '.', '_' and '-'; without one a UUID is made up."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from edgevision.errors import EdgeVisionError
from edgevision.security import ModuleKey, SignedRequest, sign_request
from edgevision.security.signing import CAMERA_NAME, MAX_CLASS_NAME
from edgevision.storage import BlobStore, StorageError, StorageQueue, StorageUnavailableError

log = logging.getLogger(__name__)

REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MIN_EXPIRES_S = 5
MAX_EXPIRES_S = 86400
# A request without result.json this long after its expiry is put on the queue again (the classifier writes
# `expired` within a second of the expiry while it runs), up to FOLLOW_UP_TRIES times, FOLLOW_UP_S apart.
FOLLOW_UP_S = 20.0
FOLLOW_UP_TRIES = 5
RESULT_BLOB = "result.json"
UNANSWERED_FILE = "unanswered.json"


class PayloadError(EdgeVisionError):
    """A ProcessRequest payload field is missing or wrong; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class ConflictError(EdgeVisionError):
    """The requestId is pending with another class or threshold."""


@dataclass(frozen=True)
class RequestPayload:
    """A checked ProcessRequest payload."""

    request_id: str
    class_name: str
    threshold: float
    expires_in_s: int
    camera: str | None = None


def iso_utc(moment: float) -> str:
    """Unix seconds as ISO 8601 UTC with milliseconds, e.g. 2026-12-01T21:09:52.123Z."""
    value = datetime.fromtimestamp(moment, tz=timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _number(field: str, value: Any) -> float:
    if isinstance(value, bool) or value is None:
        raise PayloadError(field, f"must be a number, got {json.dumps(value)}")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise PayloadError(field, f"must be a number, got {value!r}") from None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PayloadError(field, f"must be a finite number, got {value!r}")
    return float(value)


def _request_id(payload: dict[str, Any]) -> str:
    given = {key: payload[key] for key in ("CoorelationId", "CorrelationId") if payload.get(key) is not None}
    if len(set(map(str, given.values()))) > 1:
        raise PayloadError("CorrelationId", "CoorelationId and CorrelationId differ; send one of them")
    if not given:
        return str(uuid.uuid4())
    field, value = next(iter(given.items()))
    if not isinstance(value, str) or not REQUEST_ID.match(value):
        raise PayloadError(
            field, "must be 1..128 letters, digits, '.', '_' or '-', starting with a letter or digit (e.g. a GUID)"
        )
    return value


def parse_payload(payload: Any, default_expires_s: int) -> RequestPayload:
    """The checked payload; raises PayloadError naming the first bad field."""
    if isinstance(payload, (str, bytes)):
        try:
            payload = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise PayloadError("payload", f"is not JSON: {e}") from None
    if not isinstance(payload, dict):
        raise PayloadError("payload", 'must be a JSON object like {"ClassName": "tabby", "ThresholdPercentage": 70}')
    request_id = _request_id(payload)
    class_name = payload.get("ClassName")
    if not isinstance(class_name, str) or not class_name.strip():
        raise PayloadError("ClassName", 'is required: the class the camera must see, e.g. "tabby"')
    if len(class_name.strip()) > MAX_CLASS_NAME:
        raise PayloadError("ClassName", f"is longer than {MAX_CLASS_NAME} characters")
    if "ThresholdPercentage" not in payload:
        raise PayloadError("ThresholdPercentage", "is required: the confidence in percent, 1-100")
    threshold = _number("ThresholdPercentage", payload["ThresholdPercentage"])
    if not 1 <= threshold <= 100:
        raise PayloadError("ThresholdPercentage", f"must be between 1 and 100 (percent), got {threshold:g}")
    expires_in = default_expires_s
    if payload.get("ExpiresInSeconds") is not None:
        seconds = _number("ExpiresInSeconds", payload["ExpiresInSeconds"])
        if not MIN_EXPIRES_S <= seconds <= MAX_EXPIRES_S or seconds != int(seconds):
            raise PayloadError(
                "ExpiresInSeconds", f"must be a whole number of seconds, {MIN_EXPIRES_S}..{MAX_EXPIRES_S}"
            )
        expires_in = int(seconds)
    camera = payload.get("CameraName")
    if camera is not None and (not isinstance(camera, str) or not CAMERA_NAME.match(camera.strip())):
        raise PayloadError("CameraName", "must be a camera's name: 1-32 letters, digits, '-' or '_' (or left out)")
    return RequestPayload(
        request_id, class_name.strip(), threshold, expires_in, camera.strip() if camera is not None else None
    )


@dataclass
class _Pending:
    payload: RequestPayload
    expires_at: float
    answer: dict[str, Any]


@dataclass
class _Unanswered:
    """A queued request whose result.json has not been seen yet: its signed message, sent again when due."""

    text: str
    check_at: float
    sent: int = 1


class RequestIntake:
    """Signs checked requests and enqueues each requestId once while it is pending: the same requestId again
    gets the first answer (a retry of a call whose answer was lost must not start a second request)."""

    def __init__(
        self,
        queue: StorageQueue,
        key: ModuleKey,
        default_expires_s: int = 120,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        state_dir: Path | None = None,
    ) -> None:
        self.queue = queue
        self.state_file = None if state_dir is None else Path(state_dir) / UNANSWERED_FILE
        self.key = key
        self.default_expires_s = default_expires_s
        self.timeout_s = timeout_s
        self.clock = clock
        self._pending: dict[str, _Pending] = {}
        self._unanswered: dict[str, _Unanswered] = self._load()
        self._lock = threading.Lock()

    def submit(self, payload: Any) -> dict[str, Any]:
        """Check, sign and enqueue; returns {"requestId", "expiresAt"}. Raises PayloadError, ConflictError,
        StorageUnavailableError (the queue did not answer within `timeout_s`) or StorageError."""
        checked = parse_payload(payload, self.default_expires_s)
        with self._lock:
            now = self.clock()
            self._pending = {k: p for k, p in self._pending.items() if p.expires_at > now}
            pending = self._pending.get(checked.request_id)
            if pending is not None:
                first = pending.payload
                if (first.class_name, first.threshold, first.camera) != (
                    checked.class_name,
                    checked.threshold,
                    checked.camera,
                ):
                    raise ConflictError(
                        f"request {checked.request_id} is pending for {first.class_name!r} at {first.threshold:g}%; "
                        "use another CoorelationId for another request"
                    )
                log.info("request %s is pending already; answering as before", checked.request_id)
                return dict(pending.answer)
            request = SignedRequest(
                checked.request_id,
                checked.class_name,
                checked.threshold,
                round(now, 3),
                round(now + checked.expires_in_s, 3),
                camera=checked.camera,
            )
            text = sign_request(self.key, request)
            self._send(text)
            answer = {"requestId": request.request_id, "expiresAt": iso_utc(request.expires_at)}
            self._pending[request.request_id] = _Pending(checked, request.expires_at, answer)
            self._unanswered[request.request_id] = _Unanswered(text, request.expires_at + FOLLOW_UP_S)
            self._save()
        log.info(
            "request %s queued: %r at %g%% until %s%s",
            request.request_id,
            request.class_name,
            request.threshold,
            answer["expiresAt"],
            f" on camera {request.camera}" if request.camera else "",
        )
        return dict(answer)

    def _load(self) -> dict[str, _Unanswered]:
        """The requests still to follow up that an earlier run left in the state file (none without one). A
        damaged file is moved aside with an error naming it: its requests are not followed up, the rest works."""
        if self.state_file is None or not self.state_file.is_file():
            return {}
        try:
            data = json.loads(self.state_file.read_text(encoding="utf-8"))
            found = {str(k): _Unanswered(str(v["text"]), float(v["checkAt"]), int(v["sent"])) for k, v in data.items()}
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
            aside = self.state_file.with_name(self.state_file.name + ".damaged")
            os.replace(self.state_file, aside)
            log.error(
                "%s is damaged (%s): moved to %s; the requests in it are not followed up", self.state_file, e, aside
            )
            return {}
        if found:
            log.info("following up %d queued requests of the previous run (%s)", len(found), self.state_file)
        return found

    def _save(self) -> None:
        """Write the requests to follow up to the state file (a new file renamed over the old: never half one);
        the caller holds the lock."""
        if self.state_file is None:
            return
        data = {k: {"text": u.text, "checkAt": u.check_at, "sent": u.sent} for k, u in self._unanswered.items()}
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        partial = self.state_file.with_name(self.state_file.name + ".partial")
        with partial.open("w", encoding="utf-8") as out:
            json.dump(data, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, self.state_file)

    @property
    def unanswered(self) -> int:
        """Queued requests whose result.json has not been seen yet."""
        with self._lock:
            return len(self._unanswered)

    def follow_up(self, results: BlobStore) -> int:
        """Make sure every queued request ends with a result: a request whose result.json is still missing
        FOLLOW_UP_S after its expiry goes on the queue again, the same signed message (the classifier writes each
        result once and only deletes a message whose result exists, so a second copy is harmless). This covers a
        queue that lost an acknowledged message (Azurite keeps its queue in memory and saves it every 5 s: a
        message sent just before it is killed is gone after its restart) and a result blob lost the same way.
        Returns how many were sent again; StorageError when Storage does not answer (tried again next time)."""
        now = self.clock()
        with self._lock:
            due = [(k, u) for k, u in self._unanswered.items() if u.check_at <= now]
        sent = 0
        for request_id, unanswered in due:
            if results.metadata(f"{request_id}/{RESULT_BLOB}") is not None:
                with self._lock:
                    self._unanswered.pop(request_id, None)
                    self._save()
                continue
            if unanswered.sent > FOLLOW_UP_TRIES:
                log.warning(
                    "request %s: no result after %d sends; is the classifier running with this MODULE_KEY?",
                    request_id,
                    unanswered.sent,
                )
                with self._lock:
                    self._unanswered.pop(request_id, None)
                    self._save()
                continue
            self.queue.send(unanswered.text)
            with self._lock:
                unanswered.sent += 1
                unanswered.check_at = now + FOLLOW_UP_S
                self._save()
            sent += 1
            log.warning("request %s: no result %.0f s after its expiry; queued it again", request_id, FOLLOW_UP_S)
        return sent

    def follow_up_forever(self, results: BlobStore, stop: threading.Event, every_s: float = 5.0) -> None:
        """follow_up() every `every_s` seconds until `stop` is set; a Storage outage is logged once and waited
        out."""
        failing = False
        while not stop.wait(every_s):
            try:
                self.follow_up(results)
                failing = False
            except StorageError as e:
                if not failing:
                    log.warning("cannot check the requests' results yet (%s); trying again", e)
                failing = True

    def _send(self, text: str) -> None:
        deadline = time.monotonic() + self.timeout_s
        delay = 0.2
        while True:
            try:
                self.queue.send(text)
                return
            except StorageUnavailableError as e:
                remaining = deadline - time.monotonic()
                if remaining <= delay:
                    raise StorageUnavailableError(
                        f"the request queue did not answer within {self.timeout_s:g} s: {e}"
                    ) from e
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
