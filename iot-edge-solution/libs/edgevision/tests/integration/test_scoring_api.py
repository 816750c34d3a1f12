"""The scoring API over HTTP on a real port, with the real model on the bundled photos."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.request
import uuid
from typing import Any

import cv2
import pytest

from edgevision.manager import ModelManager
from edgevision.models import ModelRepository
from edgevision.scoring import ScoringServer, ScoringSettings
from edgevision.config import SettingsError, load_settings
from solution_testkit import free_port


def call(url: str, data: bytes | None = None, content_type: str | None = None) -> tuple[int, str, bytes]:
    """Status, content type and body of one request (errors included)."""
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def multipart(field: str, data: bytes, part_type: str = "image/jpeg") -> tuple[bytes, str]:
    """A multipart/form-data body with one file part."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="photo"\r\n'
            f"Content-Type: {part_type}\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.fixture(scope="module")
def served(models_dir, media):
    """A manager with the bundled classifier, served on a free port; small body limit to test 413."""
    manager = ModelManager(sample_image=media.path("squirrel_cls.jpg"))
    manager.activate(ModelRepository(models_dir).load("efficientnet-lite0"))
    server = ScoringServer(manager, "127.0.0.1", free_port(), max_bytes=1_000_000, fps=lambda: 12.5)
    server.start()
    yield server
    server.stop()
    manager.close()


def test_score_a_jpeg_body_like_edgevision_infer(served, media) -> None:
    data = media.path("squirrel_cls.jpg").read_bytes()
    status, content_type, body = call(f"{served.url}/score", data, "image/jpeg")
    assert status == 200 and content_type.startswith("application/json")
    answer = json.loads(body)
    assert answer["model"] == "efficientnet-lite0:1" and answer["task"] == "classification"
    assert answer["model_name"] == "efficientnet-lite0" and answer["model_version"] == "1"
    assert "squirrel" in answer["predictions"][0]["label"]
    # the same predictions as running the model directly (what `edgevision infer` prints)
    with served.manager.acquire() as model:
        direct = model.run(media.image("squirrel_cls.jpg")).to_dict()
    assert answer["predictions"] == direct["predictions"]


def test_score_a_png_body_and_a_multipart_file(served, media) -> None:
    png = cv2.imencode(".png", media.image("dog.jpg"))[1].tobytes()
    status, _, body = call(f"{served.url}/score", png, "image/png")
    assert status == 200
    by_body = json.loads(body)["predictions"]
    form, content_type = multipart("file", png, "image/png")
    status, _, body = call(f"{served.url}/score", form, content_type)
    assert status == 200 and json.loads(body)["predictions"] == by_body


@pytest.mark.parametrize(
    ("case", "status", "error"),
    [
        ("text body", 415, "unsupported content type text/plain"),
        ("no content type", 415, "unsupported content type application/x-www-form-urlencoded"),  # urllib's default
        ("corrupt jpeg", 400, "not a usable image"),
        ("empty body", 400, "image data is empty"),
        ("form without file", 400, "file part named 'file'"),
        ("form with a text file", 415, "unsupported file type text/plain"),
        ("broken form", 400, "malformed multipart form"),
        ("one pixel", 400, "at least 2x2"),
    ],
)
def test_bad_requests_get_a_json_error(served, media, case, status, error) -> None:
    jpeg = media.path("dog.jpg").read_bytes()
    requests: dict[str, tuple[bytes, str | None]] = {
        "text body": (b"hello", "text/plain"),
        "no content type": (jpeg, None),
        "corrupt jpeg": (jpeg[:200] + b"\x00" * 200, "image/jpeg"),
        "empty body": (b"", "image/jpeg"),
        "form without file": multipart("photo", jpeg),
        "form with a text file": multipart("file", b"hello", "text/plain"),
        "broken form": (b"--x\r\nnot a form", "multipart/form-data; boundary=zzz"),
        "one pixel": (cv2.imencode(".png", media.image("dog.jpg")[:1, :1])[1].tobytes(), "image/png"),
    }
    data, content_type = requests[case]
    code, answer_type, body = call(f"{served.url}/score", data, content_type)
    assert code == status, body
    assert answer_type.startswith("application/json")
    assert error in json.loads(body)["error"]


def test_a_body_over_the_limit_is_413_before_it_is_read(served) -> None:
    """The answer comes from the headers: the client need not send the megabytes it announced."""
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    try:
        connection.putrequest("POST", "/score")
        connection.putheader("Content-Type", "image/jpeg")
        connection.putheader("Content-Length", str(served.max_bytes + 1))
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413
        assert "over the limit of 1000000 bytes" in json.loads(response.read())["error"]
    finally:
        connection.close()


def test_a_chunked_body_over_the_limit_is_413(served) -> None:
    def chunks():
        for _ in range(20):
            yield b"\xff" * 100_000

    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    try:
        try:
            connection.request(
                "POST", "/score", body=chunks(), headers={"Content-Type": "image/jpeg"}, encode_chunked=True
            )
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed while the client was still sending
        response = connection.getresponse()
        assert response.status == 413
        assert "over the limit" in json.loads(response.read())["error"]
    finally:
        connection.close()


def test_health_readiness_and_metrics(served, media) -> None:
    assert call(f"{served.url}/healthz")[0] == 200
    status, _, body = call(f"{served.url}/readyz")
    assert status == 200 and json.loads(body)["model_version"] == "1"
    call(f"{served.url}/score", media.path("dog.jpg").read_bytes(), "image/jpeg")
    call(f"{served.url}/score", b"x", "text/plain")
    status, content_type, body = call(f"{served.url}/metrics")
    text = body.decode()
    assert status == 200 and content_type.startswith("text/plain")
    assert 'scoring_requests_total{path="/score",status="200"}' in text
    assert 'scoring_requests_total{path="/score",status="415"}' in text
    assert 'scoring_request_seconds_bucket{le="+Inf",path="/score"}' in text
    assert "pipeline_fps 12.5" in text
    assert 'model_active_info{name="efficientnet-lite0",version="1"} 1.0' in text


def test_served_by_the_c_parser_which_refuses_malformed_http(served) -> None:
    assert served.http_parser == "httptools", "httptools is a dependency: uvicorn fell back to pure-Python h11"
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as connection:
        connection.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        reply = connection.recv(4096)
    assert reply.startswith(b"HTTP/1.1 400"), reply[:80]
    assert call(f"{served.url}/healthz")[0] == 200, "still serving"


def test_not_ready_without_a_model(media) -> None:
    manager = ModelManager(sample_image=media.path("dog.jpg"))
    server = ScoringServer(manager, "127.0.0.1", free_port())
    server.start()
    try:
        assert call(f"{server.url}/readyz")[0] == 503
        status, _, body = call(f"{server.url}/score", media.path("dog.jpg").read_bytes(), "image/jpeg")
        assert status == 503 and "no model" in json.loads(body)["error"]
    finally:
        server.stop()


def test_a_busy_port_is_a_clear_error(served) -> None:
    other = ScoringServer(served.manager, "127.0.0.1", served.port)
    with pytest.raises(Exception, match=f"cannot listen on 127.0.0.1:{served.port}"):
        other.start()
    assert call(f"{served.url}/healthz")[0] == 200


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SCORING_PORT": "70000"}, "SCORING_PORT='70000'"),
        ({"SCORING_ENABLED": "maybe"}, "SCORING_ENABLED='maybe'"),
        ({"SCORING_MAX_BYTES": "0"}, "SCORING_MAX_BYTES='0'"),
    ],
)
def test_bad_settings_name_the_variable(monkeypatch, env: dict[str, Any], message: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError, match=message):
        load_settings(ScoringSettings)


@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        ("GET", "/score", 405, "method GET not allowed on /score"),
        ("PUT", "/score", 405, "method PUT not allowed on /score"),
        ("POST", "/healthz", 405, "method POST not allowed on /healthz"),
        ("GET", "/no-such-path", 404, "Not Found"),
    ],
)
def test_wrong_methods_and_paths_get_a_json_error_too(served, method: str, path: str, status: int, error: str) -> None:
    request = urllib.request.Request(f"{served.url}{path}", data=b"" if method != "GET" else None, method=method)
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=30)  # pylint: disable=consider-using-with
    assert answer.value.code == status
    assert answer.value.headers.get("Content-Type", "").startswith("application/json")
    assert json.loads(answer.value.read()) == {"error": error}
    if status == 405:
        assert "POST" in answer.value.headers.get("Allow", "") or "GET" in answer.value.headers.get("Allow", "")
