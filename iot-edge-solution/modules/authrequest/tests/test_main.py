"""authrequest: start-up errors as a process, and the ProcessRequest handler over a real Azurite queue (answers,
status codes, one enqueue per pending requestId, 503 when Storage does not answer in time). The whole method call
through the edgeHub emulator is in tests/e2e."""

from __future__ import annotations

import base64
import importlib.util
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from edgehub_emulator.azurite import Azurite, connection_string
from edgevision.iot import MethodError
from edgevision.security import ModuleKey, verify_request
from edgevision.storage import StorageQueue
from edgevision.twofactor import RequestIntake

MODULE = Path(__file__).resolve().parents[1] / "main.py"
KEEP = ("PATH", "HOME", "LANG", "SYSTEMROOT", "TMPDIR")
KEY_TEXT = base64.b64encode(bytes(range(32))).decode()
KEY = ModuleKey.from_base64(KEY_TEXT)


def load_main() -> ModuleType:
    """authrequest's main.py as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("authrequest_main", MODULE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_module(**env: str) -> subprocess.CompletedProcess:
    """Run main.py to its end with only `env` (and PATH, HOME, ...)."""
    clean = {k: v for k, v in os.environ.items() if k in KEEP}
    return subprocess.run(
        [sys.executable, str(MODULE)], env={**clean, **env}, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "STORAGE_CONNECTION_STRING is required but not set; MODULE_KEY is required but not set"),
        (
            {"MODULE_KEY": "c2hvcnQ=", "STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true"},
            "MODULE_KEY: MODULE_KEY must decode to at least 32 bytes",
        ),
        ({"MODULE_KEY": KEY_TEXT, "STORAGE_CONNECTION_STRING": "no pairs here"}, "STORAGE_CONNECTION_STRING: must be"),
        (
            {
                "MODULE_KEY": KEY_TEXT,
                "STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true",
                "REQUEST_QUEUE": "Bad_Name",
            },
            "REQUEST_QUEUE='Bad_Name': must be 3..56 lower-case",
        ),
        (
            {
                "MODULE_KEY": KEY_TEXT,
                "STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true",
                "ENQUEUE_TIMEOUT_SECONDS": "0",
            },
            "ENQUEUE_TIMEOUT_SECONDS='0'",
        ),
    ],
)
def test_bad_configuration_stops_with_exit_2_naming_the_variable(env: dict[str, str], expected: str) -> None:
    completed = run_module(**env)
    assert completed.returncode == 2
    assert expected in completed.stderr
    assert "c2hvcnQ" not in completed.stderr and KEY_TEXT not in completed.stderr, "a secret was printed"


@pytest.fixture
def handler(azurite: Azurite) -> Any:
    """The ProcessRequest handler over a fresh queue on the session's Azurite; `.queue` is that queue."""
    queue = StorageQueue(azurite.connection_string, f"requests-{uuid.uuid4().hex[:10]}")
    queue.ensure()
    handle = load_main().process_request_handler(RequestIntake(queue, KEY, 120, 5.0))
    handle.queue = queue
    return handle


def _queued(queue: StorageQueue) -> list[str]:
    return [m.content for m in queue.client.peek_messages(max_messages=32)]


def test_a_request_is_signed_queued_and_answered_with_its_id_and_expiry(handler: Any) -> None:
    before = time.time()
    status, answer = handler({"CoorelationId": "abc-1", "ClassName": "tabby", "ThresholdPercentage": "70"})
    assert status == 200 and set(answer) == {"requestId", "expiresAt"} and answer["requestId"] == "abc-1"
    [message] = _queued(handler.queue)
    request = verify_request(KEY, message)
    assert (request.request_id, request.class_name, request.threshold) == ("abc-1", "tabby", 70.0)
    assert before - 0.01 <= request.issued_at and request.expires_at == pytest.approx(request.issued_at + 120, abs=0.01)
    assert answer["expiresAt"].endswith("Z")


def test_the_same_pending_request_id_is_answered_the_same_and_queued_once(handler: Any) -> None:
    payload = {"CoorelationId": "dup-1", "ClassName": "cat", "ThresholdPercentage": 60}
    first = handler(payload)
    assert handler(dict(payload)) == first
    assert handler({**payload, "ThresholdPercentage": "60"}) == first
    assert len(_queued(handler.queue)) == 1
    with pytest.raises(MethodError) as caught:
        handler({**payload, "ClassName": "dog"})
    assert caught.value.status == 409 and "dup-1" in caught.value.message


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"ClassName": "cat"}, "ThresholdPercentage"),
        ({"ClassName": "cat", "ThresholdPercentage": 101}, "ThresholdPercentage"),
        ({"ThresholdPercentage": 50}, "ClassName"),
        ({"CoorelationId": "a b", "ClassName": "cat", "ThresholdPercentage": 50}, "CoorelationId"),
        ("not json", "payload"),
    ],
)
def test_bad_payloads_are_400_naming_the_field_and_queue_nothing(handler: Any, payload: Any, field: str) -> None:
    with pytest.raises(MethodError) as caught:
        handler(payload)
    assert caught.value.status == 400 and caught.value.message.startswith(f"{field}: ")
    assert _queued(handler.queue) == []


def test_an_unreachable_queue_is_503_within_the_time_allowed() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    queue = StorageQueue(connection_string(port, port), "requests", connection_timeout=1, read_timeout=1)
    handle = load_main().process_request_handler(RequestIntake(queue, KEY, 120, timeout_s=1.5))
    started = time.monotonic()
    with pytest.raises(MethodError) as caught:
        handle({"CoorelationId": "down-1", "ClassName": "cat", "ThresholdPercentage": 50})
    assert caught.value.status == 503 and "did not answer within 1.5 s" in caught.value.message
    assert time.monotonic() - started < 5
    assert "Eby8" not in caught.value.message
