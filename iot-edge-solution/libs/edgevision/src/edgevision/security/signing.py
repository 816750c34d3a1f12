"""A two-factor request travels from `authrequest` to the classifier through a Storage queue that anyone with the
storage key can write to, so the classifier acts only on requests signed with the module key both share.

Wire format (one queue message, UTF-8 JSON):
    {"v": 1, "requestId": "...", "className": "...", "threshold": 70, "issuedAt": 1764623392,
     "expiresAt": 1764623512, "sig": "<base64 HMAC-SHA256>"}
A request for one camera carries `"camera": "<name>"` as well (optional: without it any camera may satisfy the
request, and the message is exactly the one-camera format). The MAC covers the canonical encoding of every field
but `sig`, `camera` included when present: JSON with sorted keys, no spaces, UTF-8."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import time
from dataclasses import dataclass
from typing import Any

from edgevision.errors import EdgeVisionError

REQUEST_VERSION = 1
MIN_KEY_BYTES = 32
CLOCK_SKEW_SECONDS = 30.0
MAX_CLASS_NAME = 200
MAX_REQUEST_ID = 128
_FIELDS = ("v", "requestId", "className", "threshold", "issuedAt", "expiresAt")
CAMERA_FIELD = "camera"  # optional, signed when present
CAMERA_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class ModuleKeyError(EdgeVisionError):
    """MODULE_KEY is missing, not base64, or too short."""


class VerificationError(EdgeVisionError):
    """A request must not be acted on. The message never contains the key."""


class MalformedRequestError(VerificationError):
    """Not a request of the supported version: bad JSON, a missing or mistyped field."""


class SignatureError(VerificationError):
    """The signature does not match (tampered message or another key)."""


class ExpiredRequestError(VerificationError):
    """The request expired (or was issued in the future beyond the clock-skew allowance)."""


class ModuleKey:
    """The shared secret. Its repr and str never show the key."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_KEY_BYTES:
            raise ModuleKeyError(f"MODULE_KEY must decode to at least {MIN_KEY_BYTES} bytes, got {len(secret)}")
        self._secret = secret

    @classmethod
    def from_base64(cls, text: str | None) -> ModuleKey:
        """Decode MODULE_KEY (standard or URL-safe base64, padding optional)."""
        if text is None or not text.strip():
            raise ModuleKeyError(
                "MODULE_KEY is not set: generate one with "
                '`python3 -c "import secrets, base64; print(base64.b64encode(secrets.token_bytes(32)).decode())"` '
                "and give the same value to authrequest and classifier"
            )
        cleaned = text.strip()
        padded = cleaned + "=" * (-len(cleaned) % 4)
        try:
            alphabet = b"-_" if ("-" in cleaned or "_" in cleaned) else None
            secret = base64.b64decode(padded, altchars=alphabet, validate=True)
        except (binascii.Error, ValueError) as e:
            raise ModuleKeyError("MODULE_KEY is not valid base64") from e
        return cls(secret)

    def mac(self, data: bytes) -> bytes:
        """HMAC-SHA256 of `data`."""
        return hmac.new(self._secret, data, hashlib.sha256).digest()

    def __repr__(self) -> str:
        return "ModuleKey(<hidden>)"

    __str__ = __repr__


@dataclass(frozen=True)
class SignedRequest:
    """A verified (or about to be signed) two-factor request."""

    request_id: str
    class_name: str
    threshold: float  # percent, 1..100
    issued_at: float  # Unix seconds
    expires_at: float  # Unix seconds
    v: int = REQUEST_VERSION
    camera: str | None = None  # the one camera that may satisfy it; None: any camera

    def fields(self) -> dict[str, Any]:
        """The signed fields in wire names (`camera` only when the request names one)."""
        fields: dict[str, Any] = {
            "v": self.v,
            "requestId": self.request_id,
            "className": self.class_name,
            "threshold": self.threshold,
            "issuedAt": self.issued_at,
            "expiresAt": self.expires_at,
        }
        if self.camera is not None:
            fields[CAMERA_FIELD] = self.camera
        return fields


def canonical_bytes(fields: dict[str, Any]) -> bytes:
    """The bytes the MAC covers: the signed fields as JSON with sorted keys and no spaces."""
    signed = {k: fields[k] for k in _FIELDS}
    if CAMERA_FIELD in fields:
        signed[CAMERA_FIELD] = fields[CAMERA_FIELD]
    return json.dumps(signed, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


def _check_fields(data: Any) -> SignedRequest:
    if not isinstance(data, dict):
        raise MalformedRequestError("a request must be a JSON object")
    missing = [k for k in (*_FIELDS, "sig") if k not in data]
    if missing:
        raise MalformedRequestError(f"request lacks {', '.join(missing)}")
    if data["v"] != REQUEST_VERSION or isinstance(data["v"], bool):
        raise MalformedRequestError(f"unsupported request version {data['v']!r}; this module reads {REQUEST_VERSION}")
    request_id, class_name = data["requestId"], data["className"]
    if not isinstance(request_id, str) or not 0 < len(request_id) <= MAX_REQUEST_ID:
        raise MalformedRequestError(f"requestId must be a string of 1..{MAX_REQUEST_ID} characters")
    if not isinstance(class_name, str) or not 0 < len(class_name.strip()) <= MAX_CLASS_NAME:
        raise MalformedRequestError(f"className must be a string of 1..{MAX_CLASS_NAME} characters")
    numbers = {}
    for name in ("threshold", "issuedAt", "expiresAt"):
        value = data[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise MalformedRequestError(f"{name} must be a finite number")
        numbers[name] = float(value)
    if not 1 <= numbers["threshold"] <= 100:
        raise MalformedRequestError("threshold must be between 1 and 100 (percent)")
    if numbers["expiresAt"] <= numbers["issuedAt"]:
        raise MalformedRequestError("expiresAt must be after issuedAt")
    if not isinstance(data["sig"], str):
        raise MalformedRequestError("sig must be a base64 string")
    camera = data.get(CAMERA_FIELD)
    if CAMERA_FIELD in data and (not isinstance(camera, str) or not CAMERA_NAME.match(camera)):
        raise MalformedRequestError("camera must be a camera name: 1-32 letters, digits, '-' or '_'")
    return SignedRequest(
        request_id,
        class_name,
        numbers["threshold"],
        numbers["issuedAt"],
        numbers["expiresAt"],
        camera=camera,
    )


def sign_request(key: ModuleKey, request: SignedRequest) -> str:
    """The queue message text for `request`, signed with `key`."""
    fields = request.fields()
    _check_fields({**fields, "sig": ""})  # refuse to sign what the other side would refuse to read
    signature = base64.b64encode(key.mac(canonical_bytes(fields))).decode("ascii")
    return json.dumps({**fields, "sig": signature}, separators=(",", ":"), ensure_ascii=False)


def verify_request(
    key: ModuleKey,
    message: str | bytes,
    now: float | None = None,
    skew: float = CLOCK_SKEW_SECONDS,
    check_expiry: bool = True,
) -> SignedRequest:
    """The request in `message` when its signature matches and it has not expired (with `skew` seconds of
    clock-skew allowance either way); raises MalformedRequestError, SignatureError or ExpiredRequestError."""
    try:
        data = json.loads(message)
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError) as e:
        raise MalformedRequestError(f"request is not JSON: {e}") from e
    request = _check_fields(data)
    try:
        given = base64.b64decode(data["sig"], validate=True)
    except (binascii.Error, ValueError) as e:
        raise SignatureError("signature is not base64") from e
    if not hmac.compare_digest(given, key.mac(canonical_bytes(data))):
        raise SignatureError(f"signature of request {request.request_id!r} does not match")
    if check_expiry:
        now = time.time() if now is None else now
        if now > request.expires_at + skew:
            raise ExpiredRequestError(f"request {request.request_id!r} expired at {request.expires_at:.0f}")
        if request.issued_at > now + skew:
            raise ExpiredRequestError(
                f"request {request.request_id!r} was issued in the future ({request.issued_at:.0f})"
            )
    return request
