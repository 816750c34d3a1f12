"""Signing and verifying two-factor requests: tampering, wrong key, expiry with clock skew, malformed input."""

from __future__ import annotations

import base64
import json

import pytest

from edgevision.security import (
    ExpiredRequestError,
    MalformedRequestError,
    ModuleKey,
    ModuleKeyError,
    SignatureError,
    SignedRequest,
    sign_request,
    verify_request,
)

KEY = ModuleKey(bytes(range(32)))
OTHER = ModuleKey(bytes(range(1, 33)))
NOW = 1_800_000_000.0


def _request(**changes) -> SignedRequest:
    values = {
        "request_id": "7d1e",
        "class_name": "coffee mug",
        "threshold": 70,
        "issued_at": NOW,
        "expires_at": NOW + 120,
    }
    values.update(changes)
    return SignedRequest(**values)


def test_a_signed_request_verifies_to_the_same_fields() -> None:
    request = verify_request(KEY, sign_request(KEY, _request()), now=NOW + 1)
    assert (request.request_id, request.class_name, request.threshold) == ("7d1e", "coffee mug", 70)
    assert request.expires_at == NOW + 120


@pytest.mark.parametrize("field", ["v", "requestId", "className", "threshold", "issuedAt", "expiresAt"])
def test_changing_any_signed_field_breaks_the_signature(field: str) -> None:
    data = json.loads(sign_request(KEY, _request()))
    data[field] = {
        "v": 1,
        "requestId": "other",
        "className": "cat",
        "threshold": 5,
        "issuedAt": NOW - 1,
        "expiresAt": NOW + 999,
    }[field]
    if field == "v":
        with pytest.raises(MalformedRequestError, match="version"):
            verify_request(KEY, json.dumps({**data, "v": 2}), now=NOW)
        return
    with pytest.raises(SignatureError, match="does not match"):
        verify_request(KEY, json.dumps(data), now=NOW)


def test_another_key_is_refused() -> None:
    with pytest.raises(SignatureError):
        verify_request(OTHER, sign_request(KEY, _request()), now=NOW)


@pytest.mark.parametrize(
    ("now", "error"),
    [
        (NOW + 120 + 29, None),  # expired 29 s ago: within the skew allowance
        (NOW + 120 + 31, ExpiredRequestError),
        (NOW - 29, None),  # our clock 29 s behind the signer's
        (NOW - 31, ExpiredRequestError),  # issued "in the future"
    ],
)
def test_expiry_with_clock_skew(now: float, error: type[Exception] | None) -> None:
    message = sign_request(KEY, _request())
    if error is None:
        verify_request(KEY, message, now=now)
    else:
        with pytest.raises(error):
            verify_request(KEY, message, now=now)


@pytest.mark.parametrize(
    ("message", "error", "text"),
    [
        (b"\xff\xfe", MalformedRequestError, "not JSON"),
        ("not json", MalformedRequestError, "not JSON"),
        ("[1, 2]", MalformedRequestError, "JSON object"),
        ('{"v": 1}', MalformedRequestError, "lacks requestId"),
        (None, MalformedRequestError, "not JSON"),
    ],
)
def test_malformed_messages(message, error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text):
        verify_request(KEY, message, now=NOW)


@pytest.mark.parametrize(
    ("changes", "text"),
    [
        ({"threshold": 0}, "between 1 and 100"),
        ({"threshold": float("nan")}, "finite"),
        ({"class_name": " "}, "className"),
        ({"request_id": ""}, "requestId"),
        ({"expires_at": NOW}, "after issuedAt"),
    ],
)
def test_invalid_requests_are_not_signed(changes: dict, text: str) -> None:
    with pytest.raises(MalformedRequestError, match=text):
        sign_request(KEY, _request(**changes))


def test_signature_that_is_not_base64() -> None:
    data = json.loads(sign_request(KEY, _request()))
    data["sig"] = "!!!"
    with pytest.raises(SignatureError, match="not base64"):
        verify_request(KEY, json.dumps(data), now=NOW)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "not set"),
        ("  ", "not set"),
        ("not base64 at all!", "not valid base64"),
        (base64.b64encode(b"short").decode(), "at least 32 bytes"),
    ],
)
def test_module_key_errors(text: str | None, message: str) -> None:
    with pytest.raises(ModuleKeyError, match=message):
        ModuleKey.from_base64(text)


def test_module_key_accepts_standard_and_url_safe_base64_and_hides_itself() -> None:
    secret = bytes([250] * 32)
    standard = base64.b64encode(secret).decode()
    urlsafe = base64.urlsafe_b64encode(secret).decode().rstrip("=")
    assert ModuleKey.from_base64(standard).mac(b"x") == ModuleKey.from_base64(urlsafe).mac(b"x")
    assert standard not in repr(ModuleKey.from_base64(standard)) and "hidden" in str(KEY)


def test_a_camera_is_signed_with_the_rest() -> None:
    """The optional camera is covered by the MAC: dropping, changing or adding it breaks the signature; a request
    without one is exactly the one-camera message."""
    signed = sign_request(KEY, _request(camera="door"))
    assert verify_request(KEY, signed, now=NOW + 1).camera == "door"
    data = json.loads(signed)
    for tampered in ({k: v for k, v in data.items() if k != "camera"}, {**data, "camera": "lobby"}):
        with pytest.raises(SignatureError):
            verify_request(KEY, json.dumps(tampered), now=NOW + 1)
    plain = json.loads(sign_request(KEY, _request()))
    assert "camera" not in plain and verify_request(KEY, json.dumps(plain), now=NOW + 1).camera is None
    with pytest.raises(SignatureError):
        verify_request(KEY, json.dumps({**plain, "camera": "door"}), now=NOW + 1)


@pytest.mark.parametrize("camera", ["", "a b", "x" * 33, 7, None])
def test_a_malformed_camera_is_refused(camera: object) -> None:
    data = json.loads(sign_request(KEY, _request()))
    with pytest.raises(MalformedRequestError, match="camera must be a camera name"):
        verify_request(KEY, json.dumps({**data, "camera": camera}), now=NOW + 1)
    if isinstance(camera, str):  # nor is it signed
        with pytest.raises(MalformedRequestError, match="camera must be a camera name"):
            sign_request(KEY, _request(camera=camera))
