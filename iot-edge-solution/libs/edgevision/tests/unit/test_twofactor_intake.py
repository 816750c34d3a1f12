"""ProcessRequest payloads: what is accepted, and a clear error naming the field for everything else."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from edgevision.twofactor import PayloadError, iso_utc, parse_payload

GUID = "9b2f6a4e-0d1c-4c55-9a8e-4f0a6b1f2c3d"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"CoorelationId": GUID, "ClassName": "tabby", "ThresholdPercentage": 70}, (GUID, "tabby", 70.0, 120)),
        (
            {"CorrelationId": GUID, "ClassName": " tiger cat ", "ThresholdPercentage": "55.5"},
            (GUID, "tiger cat", 55.5, 120),
        ),
        (
            {
                "CoorelationId": GUID,
                "CorrelationId": GUID,
                "ClassName": "cat",
                "ThresholdPercentage": 1,
                "ExpiresInSeconds": 30,
            },
            (GUID, "cat", 1.0, 30),
        ),
        (
            json.dumps(
                {"CoorelationId": "req_1.a", "ClassName": "dog", "ThresholdPercentage": 100, "ExpiresInSeconds": "60"}
            ),
            ("req_1.a", "dog", 100.0, 60),
        ),
        (
            {"CoorelationId": GUID, "ClassName": "cat", "ThresholdPercentage": 70, "Extra": "ignored"},
            (GUID, "cat", 70.0, 120),
        ),
    ],
)
def test_accepted_payloads(payload: Any, expected: tuple) -> None:
    checked = parse_payload(payload, 120)
    assert (checked.request_id, checked.class_name, checked.threshold, checked.expires_in_s) == expected


def test_a_payload_without_an_id_gets_a_fresh_uuid() -> None:
    first = parse_payload({"ClassName": "cat", "ThresholdPercentage": 70}, 120).request_id
    second = parse_payload({"ClassName": "cat", "ThresholdPercentage": 70}, 120).request_id
    assert re.fullmatch(r"[0-9a-f-]{36}", first) and first != second


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        (None, "payload", "JSON object"),
        ([1, 2], "payload", "JSON object"),
        ("{not json", "payload", "not JSON"),
        ({"ThresholdPercentage": 70}, "ClassName", "required"),
        ({"ClassName": "  ", "ThresholdPercentage": 70}, "ClassName", "required"),
        ({"ClassName": 5, "ThresholdPercentage": 70}, "ClassName", "required"),
        ({"ClassName": "x" * 201, "ThresholdPercentage": 70}, "ClassName", "longer than 200"),
        ({"ClassName": "cat"}, "ThresholdPercentage", "required"),
        ({"ClassName": "cat", "ThresholdPercentage": "high"}, "ThresholdPercentage", "must be a number"),
        ({"ClassName": "cat", "ThresholdPercentage": True}, "ThresholdPercentage", "must be a number"),
        ({"ClassName": "cat", "ThresholdPercentage": None}, "ThresholdPercentage", "must be a number"),
        ({"ClassName": "cat", "ThresholdPercentage": "nan"}, "ThresholdPercentage", "finite"),
        ({"ClassName": "cat", "ThresholdPercentage": 0}, "ThresholdPercentage", "between 1 and 100"),
        ({"ClassName": "cat", "ThresholdPercentage": 100.5}, "ThresholdPercentage", "between 1 and 100"),
        ({"ClassName": "cat", "ThresholdPercentage": 70, "ExpiresInSeconds": 2}, "ExpiresInSeconds", "5..86400"),
        ({"ClassName": "cat", "ThresholdPercentage": 70, "ExpiresInSeconds": 10.5}, "ExpiresInSeconds", "whole"),
        ({"ClassName": "cat", "ThresholdPercentage": 70, "ExpiresInSeconds": []}, "ExpiresInSeconds", "number"),
        ({"CoorelationId": "../etc", "ClassName": "cat", "ThresholdPercentage": 70}, "CoorelationId", "letters"),
        ({"CorrelationId": "a/b", "ClassName": "cat", "ThresholdPercentage": 70}, "CorrelationId", "letters"),
        ({"CoorelationId": 7, "ClassName": "cat", "ThresholdPercentage": 70}, "CoorelationId", "letters"),
        ({"CoorelationId": "x" * 129, "ClassName": "cat", "ThresholdPercentage": 70}, "CoorelationId", "1..128"),
        (
            {"CoorelationId": "a", "CorrelationId": "b", "ClassName": "cat", "ThresholdPercentage": 70},
            "CorrelationId",
            "differ",
        ),
    ],
)
def test_bad_payloads_name_the_field(payload: Any, field: str, message: str) -> None:
    with pytest.raises(PayloadError, match=message) as caught:
        parse_payload(payload, 120)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_iso_utc_has_milliseconds_and_z() -> None:
    assert iso_utc(1_800_000_000.25) == "2027-01-15T08:00:00.250Z"


@pytest.mark.parametrize(
    ("camera", "expected", "error"),
    [
        (None, None, None),
        ("door", "door", None),
        (" door ", "door", None),
        ("", None, "CameraName: must be a camera's name"),
        ("front door", None, "CameraName: must be a camera's name"),
        (3, None, "CameraName: must be a camera's name"),
    ],
)
def test_camera_name_is_optional_and_checked(camera: Any, expected: str | None, error: str | None) -> None:
    payload: dict[str, Any] = {"CoorelationId": GUID, "ClassName": "tabby", "ThresholdPercentage": 70}
    if camera is not None:
        payload["CameraName"] = camera
    if error is None:
        assert parse_payload(payload, 120).camera == expected
    else:
        with pytest.raises(PayloadError, match=re.escape(error)):
            parse_payload(payload, 120)
