"""The web app's flows through Starlette's TestClient, with a real user store and session store (SQLite, argon2).

The device side is played by two small stand-ins here (a gateway that records ProcessRequest calls, results held
in memory); tests/integration runs the same app against the real emulator and Azurite."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from argon2 import PasswordHasher
from starlette.testclient import TestClient

from frontend.app import create_app
from frontend.config import FrontendSettings
from frontend.errors import DeviceOfflineError, SecondFactorError, StorageUnavailableError
from frontend.secondfactor import Result, Ticket, parse_result
from frontend.sessions import COOKIE_NAME
from frontend.users import RetryGuard

PASSWORD = "correct horse battery"


class RecordingGateway:
    """Stand-in for IoT Hub: records each ProcessRequest; raises `error` when set."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.error: SecondFactorError | None = None

    def request(self, request_id: str, class_name: str, threshold: int, expires_in: int) -> Ticket:
        """Record the call; raise the set error or accept."""
        self.calls.append(
            {"request_id": request_id, "class_name": class_name, "threshold": threshold, "expires_in": expires_in}
        )
        if self.error:
            raise self.error
        return Ticket(request_id, time.time() + expires_in)


class MemoryResults:
    """Stand-in for the result container: documents and images by request id; `down` plays a Storage outage."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        self.images: dict[str, bytes] = {}
        self.down = False

    def result(self, request_id: str) -> Result | None:
        """The stored document, parsed like a result blob."""
        if self.down:
            raise StorageUnavailableError("The result store (Azure Storage) cannot be reached right now.")
        doc = self.docs.get(request_id)
        return None if doc is None else parse_result(json.dumps(doc).encode(), request_id)

    def image(self, request_id: str) -> bytes:
        """The stored image."""
        return self.images[request_id]

    def found(self, request_id: str, class_name: str = "coffee mug") -> None:
        """Store a found result and its image."""
        self.docs[request_id] = {
            "requestId": request_id,
            "status": "found",
            "className": class_name,
            "confidence": 0.91,
        }
        self.images[request_id] = b"\xff\xd8 jpeg of " + request_id.encode()


class Harness:
    """The app with its stand-ins and an enrolled user alice (coffee mug, 80 %)."""

    def __init__(self, settings: FrontendSettings) -> None:
        self.gateway = RecordingGateway()
        self.results = MemoryResults()
        # low-cost argon2 parameters keep the tests quick; the algorithm and the code paths are the same
        hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
        self.app = create_app(settings, gateway=self.gateway, results=self.results, hasher=hasher)
        self.app.state.services.users.add("alice", PASSWORD, "coffee mug", 80)

    def client(self) -> TestClient:
        """A browser-like client of the app (cookies kept, redirects not followed)."""
        return TestClient(self.app, follow_redirects=False)


def csrf_of(html: str) -> str:
    """The CSRF token of a page's form."""
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def sign_in(client: TestClient, username: str = "alice", password: str = PASSWORD, **extra: str) -> Any:
    """Fetch the sign-in form and post it."""
    token = csrf_of(client.get("/login").text)
    return client.post("/login", data={"csrf_token": token, "username": username, "password": password, **extra})


@pytest.fixture
def harness(make_settings: Callable[..., FrontendSettings]) -> Harness:
    """The app, alice enrolled, lock-out after 3 failures, 30 s requests."""
    return Harness(make_settings(frontend_max_failures=3, frontend_lockout_seconds=120, frontend_request_seconds=30))


def test_login_page_sets_a_strict_httponly_session_cookie(harness: Harness) -> None:
    response = harness.client().get("/login")
    assert response.status_code == 200
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("token", [None, "", "forged-token", "OTHER_SESSION"])
def test_login_without_the_session_csrf_token_is_refused(harness: Harness, token: str | None) -> None:
    client = harness.client()
    client.get("/login")
    if token == "OTHER_SESSION":
        token = csrf_of(harness.client().get("/login").text)
    data = {"username": "alice", "password": PASSWORD}
    if token is not None:
        data["csrf_token"] = token
    response = client.post("/login", data=data)
    assert response.status_code == 403
    assert "CSRF" in response.text
    assert harness.gateway.calls == []


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("multipart/form-data; boundary=zzz", b"xx--zzz\r\nnot a part", 403),  # no valid CSRF token in it
        ("multipart/form-data", b"--no-boundary", 400),  # Starlette's own answer
        ("application/x-www-form-urlencoded", b"%zz=%%&csrf_token", 403),
    ],
)
def test_a_malformed_form_is_refused_not_a_server_error(
    harness: Harness, content_type: str, body: bytes, status: int
) -> None:
    client = harness.client()
    client.get("/login")
    response = client.post("/login", content=body, headers={"content-type": content_type})
    assert response.status_code == status
    assert harness.gateway.calls == []


def test_login_without_any_session_is_refused(harness: Harness) -> None:
    token = csrf_of(harness.client().get("/login").text)
    response = harness.client().post("/login", data={"csrf_token": token, "username": "alice", "password": PASSWORD})
    assert response.status_code == 403
    assert harness.gateway.calls == []


def test_wrong_password_and_unknown_user_get_the_same_answer(harness: Harness) -> None:
    wrong = sign_in(harness.client(), "alice", "wrong password")
    unknown = sign_in(harness.client(), "mallory", "wrong password")
    assert wrong.status_code == unknown.status_code == 401
    assert "Wrong user name or password." in wrong.text
    assert wrong.text.replace("alice", "NAME").replace(csrf_of(wrong.text), "T") == unknown.text.replace(
        "mallory", "NAME"
    ).replace(csrf_of(unknown.text), "T")
    assert harness.gateway.calls == []


@pytest.mark.parametrize(("username", "password"), [("", PASSWORD), ("alice", "")])
def test_empty_fields(harness: Harness, username: str, password: str) -> None:
    response = sign_in(harness.client(), username, password)
    assert response.status_code == 400
    assert "Enter your user name and password." in response.text


def test_lockout_after_repeated_failures(harness: Harness) -> None:
    client = harness.client()
    for _ in range(3):
        assert sign_in(client, "Alice", "wrong password").status_code == 401
    locked = sign_in(client, "alice", PASSWORD)
    assert locked.status_code == 429
    assert 110 <= int(locked.headers["retry-after"]) <= 120
    assert re.search(r"Try again in \d+ seconds", locked.text)
    assert harness.gateway.calls == []
    # an unknown name locks the same way: the lock-out does not tell who is enrolled
    for _ in range(3):
        sign_in(client, "mallory", "wrong password")
    assert sign_in(client, "mallory", "wrong password").status_code == 429


def test_right_password_starts_the_second_factor(harness: Harness) -> None:
    client = harness.client()
    client.get("/login")
    anonymous_cookie = client.cookies[COOKIE_NAME]
    response = sign_in(client, "ALICE", PASSWORD)
    assert response.status_code == 303 and response.headers["location"] == "/verify"
    assert client.cookies[COOKIE_NAME] != anonymous_cookie  # a new session id after the password
    (call,) = harness.gateway.calls
    assert (call["class_name"], call["threshold"], call["expires_in"]) == ("coffee mug", 80, 30)
    page = client.get("/verify")
    assert page.status_code == 200
    assert "show your coffee mug to the camera" in page.text
    assert client.get("/account").headers["location"] == "/login"  # one factor is not enough
    status = client.get("/verify/status").json()
    assert status["state"] == "pending" and 25 <= status["secondsLeft"] <= 30


def test_found_signs_in_and_only_this_session_sees_the_image(harness: Harness) -> None:
    client = harness.client()
    sign_in(client)
    request_id = harness.gateway.calls[0]["request_id"]
    harness.results.found(request_id)
    before = client.cookies[COOKIE_NAME]
    status = client.get("/verify/status").json()
    assert status == {
        "state": "found",
        "message": "Your coffee mug was recognised: you are signed in.",
        "image": f"/images/{request_id}",
    }
    assert client.cookies[COOKIE_NAME] != before  # a new session id with the new privilege
    image = client.get(f"/images/{request_id}")
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert image.content == harness.results.images[request_id]
    assert "no-store" in image.headers["cache-control"]
    account = client.get("/account")
    assert account.status_code == 200 and "Welcome, alice" in account.text and "91 %" in account.text

    other = harness.client()
    sign_in(other)  # another user session, signed in with the password only
    assert other.get(f"/images/{request_id}").status_code == 404
    stranger = harness.client()
    stranger.get("/login")
    assert stranger.get(f"/images/{request_id}").status_code == 404
    stranger.cookies.set(COOKIE_NAME, before)  # the pre-rotation cookie is dead
    assert stranger.get(f"/images/{request_id}").status_code == 404


@pytest.mark.parametrize(
    ("doc", "state", "message"),
    [
        ({"status": "expired", "className": "coffee mug"}, "expired", "Your coffee mug was not seen"),
        (
            {"status": "rejected", "className": "coffee mug", "reason": "class not in model"},
            "rejected",
            "rejected the request: class not in model",
        ),
        ({"status": "found", "className": "banana", "confidence": 0.99}, "failed", "reported another object"),
        ({"status": "maybe"}, "failed", "unknown status"),
    ],
)
def test_final_results(harness: Harness, doc: dict[str, Any], state: str, message: str) -> None:
    client = harness.client()
    sign_in(client)
    request_id = harness.gateway.calls[0]["request_id"]
    harness.results.docs[request_id] = {"requestId": request_id, **doc}
    status = client.get("/verify/status").json()
    assert status["state"] == state and message in status["message"]
    assert client.get("/account").status_code == 303
    assert message in client.get("/verify").text
    # retry sends a new request
    page = client.get("/verify")
    assert client.post("/verify/retry", data={"csrf_token": csrf_of(page.text)}).status_code == 303
    assert len(harness.gateway.calls) == 2
    assert client.get("/verify/status").json()["state"] == "pending"


def test_result_for_another_request_is_refused(harness: Harness) -> None:
    client = harness.client()
    sign_in(client)
    request_id = harness.gateway.calls[0]["request_id"]
    harness.results.docs[request_id] = {"requestId": "someone-else", "status": "found", "className": "coffee mug"}
    status = client.get("/verify/status").json()
    assert status["state"] == "failed" and "another request" in status["message"]


def test_no_result_long_after_expiry_is_expired(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    client = harness.client()
    sign_in(client)
    later = time.time() + 30 + 11
    monkeypatch.setattr("frontend.app.time.time", lambda: later)
    status = client.get("/verify/status").json()
    assert status["state"] == "expired" and "No answer from the camera device" in status["message"]


def test_device_offline_shows_a_message_and_retry_works(harness: Harness) -> None:
    harness.gateway.error = DeviceOfflineError(
        "The camera device is offline (its authrequest module is not connected)."
    )
    client = harness.client()
    assert sign_in(client).headers["location"] == "/verify"
    page = client.get("/verify")
    assert "The camera device is offline" in page.text and 'id="retry"' in page.text
    assert client.get("/verify/status").json()["state"] == "failed"
    harness.gateway.error = None
    client.post("/verify/retry", data={"csrf_token": csrf_of(page.text)})
    assert client.get("/verify/status").json()["state"] == "pending"


def test_retry_needs_csrf(harness: Harness) -> None:
    harness.gateway.error = DeviceOfflineError("offline")
    client = harness.client()
    sign_in(client)
    assert client.post("/verify/retry", data={}).status_code == 403
    assert len(harness.gateway.calls) == 1


def test_storage_down_is_reported_and_polling_goes_on(harness: Harness) -> None:
    client = harness.client()
    sign_in(client)
    harness.results.down = True
    status = client.get("/verify/status").json()
    assert status["state"] == "unavailable" and "Azure Storage" in status["message"]
    harness.results.down = False
    harness.results.found(harness.gateway.calls[0]["request_id"])
    assert client.get("/verify/status").json()["state"] == "found"


def test_logout_needs_csrf_and_ends_the_session(harness: Harness) -> None:
    client = harness.client()
    sign_in(client)
    harness.results.found(harness.gateway.calls[0]["request_id"])
    client.get("/verify/status")
    account = client.get("/account")
    assert client.post("/logout", data={}).status_code == 403
    assert client.get("/account").status_code == 200
    cookie = client.cookies[COOKIE_NAME]
    assert client.post("/logout", data={"csrf_token": csrf_of(account.text)}).headers["location"] == "/login"
    client.cookies.set(COOKIE_NAME, cookie)
    assert client.get("/account").headers["location"] == "/login"


def test_pages_without_a_session(harness: Harness) -> None:
    client = harness.client()
    assert client.get("/").headers["location"] == "/login"
    assert client.get("/verify").headers["location"] == "/login"
    assert client.get("/verify/status").status_code == 401
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/static/verify.js").status_code == 200


def test_try_again_is_limited_per_session_and_per_user_with_a_clear_message(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each "Try again" makes the device watch for a new request: 3 per session and 6 per user in 300 s."""
    harness.gateway.error = DeviceOfflineError("The camera device is offline.")

    def retry(client: TestClient) -> Any:
        return client.post("/verify/retry", data={"csrf_token": csrf_of(client.get("/verify").text)})

    first = harness.client()
    sign_in(first)
    assert [retry(first).status_code for _ in range(3)] == [303, 303, 303]
    assert len(harness.gateway.calls) == 4  # the sign-in's request and three retries
    refused = retry(first)
    assert refused.status_code == 429 and len(harness.gateway.calls) == 4
    assert 299 <= int(refused.headers["retry-after"]) <= 300
    assert re.search(r"Too many new requests to the camera device\. Try again in \d+ seconds", refused.text)
    assert "The camera device is offline" in refused.text and 'id="retry"' in refused.text
    # another session of the same user: its own three, then the user's limit (6) is reached
    second = harness.client()
    sign_in(second)
    assert [retry(second).status_code for _ in range(3)] == [303, 303, 303]
    third = harness.client()
    sign_in(third)
    assert retry(third).status_code == 429
    assert len(harness.gateway.calls) == 4 + 1 + 3 + 1
    # the window passes: allowed again
    later = time.time() + 301
    monkeypatch.setattr("frontend.app.time.time", lambda: later)
    monkeypatch.setattr("frontend.users.time.time", lambda: later)
    assert retry(third).status_code == 303


def test_try_again_while_a_request_is_pending_starts_nothing_and_counts_nothing(harness: Harness) -> None:
    client = harness.client()
    sign_in(client)
    page = client.get("/verify")
    for _ in range(5):
        assert client.post("/verify/retry", data={"csrf_token": csrf_of(page.text)}).status_code == 303
    assert len(harness.gateway.calls) == 1


def test_retry_guard_counts_per_session_and_per_user(tmp_path: Path) -> None:
    guard = RetryGuard(tmp_path / "users.db", session_limit=2, user_limit=3, window=100)
    assert [guard.acquire("Alice", "s1", now=t) for t in (0, 1)] == [0, 0]
    assert guard.acquire("alice", "s1", now=2) == pytest.approx(98)  # s1's oldest leaves the window at 100
    assert guard.acquire("alice", "s2", now=3) == 0
    assert guard.acquire("alice", "s3", now=4) == pytest.approx(96)  # the user's third was at 0... and 1, 3
    assert guard.acquire("bob", "s4", now=5) == 0  # other users are not affected
    assert guard.acquire("alice", "s3", now=101) == 0
