"""The alert webhook against a real local HTTP server: Event Grid shaped events, retries with backoff while the
endpoint is down or failing, a bounded on-disk queue that survives a restart, and URLs with signatures kept out
of logs."""

from __future__ import annotations

import http.server
import json
import logging
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from edgevision.alerts import DiskQueue, WebhookSender, make_event, redact_url
from solution_testkit import wait_for as poll


class Endpoint:
    """A local HTTP endpoint that records POSTed JSON and answers with `status` (changeable)."""

    def __init__(self, port: int = 0) -> None:
        self.received: list[Any] = []
        self.headers: list[dict[str, str]] = []
        self.status = 200
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            """Records each POSTed body."""

            def do_POST(self) -> None:  # pylint: disable=invalid-name
                """Record the body and answer."""
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if endpoint.status == 200:
                    endpoint.received.append(json.loads(body))
                    endpoint.headers.append(dict(self.headers))
                self.send_response(endpoint.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, query: str = "") -> str:
        """The endpoint's URL with an optional query."""
        return f"http://127.0.0.1:{self.port}/hooks/alert{query}"

    def stop(self) -> None:
        """Stop it."""
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    """A running local endpoint."""
    server = Endpoint()
    yield server
    server.stop()


def wait_for(condition: Callable[[], Any], timeout: float = 10) -> Any:
    """Poll `condition` until it is truthy (returned) or the timeout passes."""
    return poll(condition, timeout, interval=0.02)


def event(n: int) -> dict[str, Any]:
    """An Event Grid event around alert number `n`."""
    return make_event(
        {"class": "person", "confidence": 0.9, "time": "2026-12-01T21:00:00.000Z", "n": n}, "edge-device", "alert"
    )


def test_event_has_the_event_grid_shape() -> None:
    item = event(1)
    assert set(item) == {"id", "eventType", "subject", "eventTime", "data", "dataVersion", "metadataVersion"}
    assert item["subject"] == "devices/edge-device/modules/alert/alerts/person"
    assert item["eventTime"] == "2026-12-01T21:00:00.000Z" and item["data"]["n"] == 1
    assert event(1)["id"] != item["id"]


def test_delivers_in_order_as_an_event_grid_array(endpoint: Endpoint, tmp_path: Path) -> None:
    sender = WebhookSender(endpoint.url(), DiskQueue(tmp_path / "q", 10), initial_backoff_s=0.05)
    sender.start()
    try:
        for n in range(3):
            sender.enqueue(event(n))
        wait_for(lambda: len(endpoint.received) == 3)
    finally:
        sender.close()
    assert [batch[0]["data"]["n"] for batch in endpoint.received] == [0, 1, 2]
    assert all(len(batch) == 1 for batch in endpoint.received)
    assert endpoint.headers[0]["aeg-event-type"] == "Notification"
    assert len(sender.queue) == 0 and sender.stats()["delivered"] == 3


def test_retries_with_backoff_through_5xx_and_429(endpoint: Endpoint, tmp_path: Path) -> None:
    endpoint.status = 503
    sender = WebhookSender(endpoint.url(), DiskQueue(tmp_path / "q", 10), initial_backoff_s=0.05, max_backoff_s=0.2)
    sender.start()
    try:
        sender.enqueue(event(1))
        wait_for(lambda: sender.stats()["retries"] >= 2)
        endpoint.status = 429
        wait_for(lambda: sender.stats()["retries"] >= 4)
        assert endpoint.received == [] and len(sender.queue) == 1
        endpoint.status = 200
        wait_for(lambda: len(endpoint.received) == 1)
    finally:
        sender.close()
    assert len(sender.queue) == 0


def test_a_4xx_refusal_is_kept_aside_and_the_next_alert_goes_on(endpoint: Endpoint, tmp_path: Path) -> None:
    endpoint.status = 400
    queue = DiskQueue(tmp_path / "q", 10)
    sender = WebhookSender(endpoint.url(), queue, initial_backoff_s=0.05)
    sender.start()
    try:
        sender.enqueue(event(1))
        wait_for(lambda: sender.stats()["rejected"] == 1)
        endpoint.status = 200
        sender.enqueue(event(2))
        wait_for(lambda: len(endpoint.received) == 1)
    finally:
        sender.close()
    assert endpoint.received[0][0]["data"]["n"] == 2
    assert len(list(queue.rejected.glob("*.json"))) == 1


def test_alerts_queued_while_the_endpoint_is_down_arrive_after_a_restart(tmp_path: Path) -> None:
    """The endpoint is down: alerts wait on disk; the sender stops (module restart); a new sender on the same
    folder delivers them once the endpoint is up, oldest first, and the bound drops the oldest beyond it."""
    down = Endpoint()
    port = down.port
    down.stop()  # nobody listens on `port` now
    url = f"http://127.0.0.1:{port}/hooks/alert?sp=%2Ftriggers&sig=SECRET"
    first = WebhookSender(url, DiskQueue(tmp_path / "q", 3), initial_backoff_s=0.05, max_backoff_s=0.1)
    first.start()
    for n in range(5):
        first.enqueue(event(n))
    wait_for(lambda: first.stats()["retries"] >= 2)
    first.close()
    assert first.stats()["dropped"] == 2 and len(first.queue) == 3
    up = Endpoint(port)
    try:
        second = WebhookSender(url, DiskQueue(tmp_path / "q", 3), initial_backoff_s=0.05)
        second.start()
        wait_for(lambda: len(up.received) == 3)
        second.close()
    finally:
        up.stop()
    assert [batch[0]["data"]["n"] for batch in up.received] == [2, 3, 4]


def test_unreadable_queue_files_are_moved_aside_not_lost(tmp_path: Path) -> None:
    queue = DiskQueue(tmp_path / "q", 10)
    (queue.folder / "00000000000000000001-000001-aaaa.json").write_text("{broken", encoding="utf-8")
    (queue.folder / "00000000000000000002-000001-bbbb.tmp").write_text("half", encoding="utf-8")
    queue.put({"ok": True})
    assert DiskQueue(tmp_path / "q", 10).peek()[1] == {"ok": True}  # the .tmp of a crash is gone on start
    assert [p.name for p in queue.rejected.iterdir()] == ["00000000000000000001-000001-aaaa.json"]
    assert not list(queue.folder.glob("*.tmp"))


def test_what_a_crash_or_a_damaged_disk_leaves_in_the_queue_is_reported_never_dropped_silently(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """tools/chaos.py's `corrupt alert` fault: the .tmp of a write cut short (never accepted) is removed with a
    warning naming it, a truncated record is moved to rejected/ with a warning naming it (it was deleted without a
    word before)."""
    folder = tmp_path / "q"
    folder.mkdir()
    (folder / "00000000000000000001-000000-chaos.json").write_text('{"id": "chaos-1", "eventTy', encoding="utf-8")
    (folder / "00000000000000000002-000000-chaos.tmp").write_text('{"id": "cha', encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="edgevision.alerts.webhook"):
        queue = DiskQueue(folder, 10)
        assert queue.peek() is None
    messages = [r.getMessage() for r in caplog.records]
    assert any("00000000000000000002-000000-chaos.tmp" in m and "cut short" in m for m in messages), messages
    assert any("00000000000000000001-000000-chaos.json is unreadable" in m for m in messages), messages
    assert [p.name for p in queue.rejected.iterdir()] == ["00000000000000000001-000000-chaos.json"]
    assert not list(folder.glob("*.tmp"))


def test_signature_of_the_url_never_reaches_the_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = "http://127.0.0.1:9/hooks/alert?sp=%2Ftriggers&sig=SECRET"
    assert redact_url(url) == "http://127.0.0.1:9/hooks/alert"
    caplog.set_level(logging.DEBUG)
    sender = WebhookSender(url, DiskQueue(tmp_path / "q", 3), initial_backoff_s=0.05, timeout_s=0.5)
    sender.start()
    sender.enqueue(event(1))
    wait_for(lambda: sender.stats()["retries"] >= 1)
    sender.close()
    assert "127.0.0.1:9/hooks/alert" in caplog.text and "SECRET" not in caplog.text


@pytest.mark.parametrize(
    "url, error",
    [("ftp://host/x", "must be http"), ("not a url", "must be http"), ("https:///path?sig=SECRET", "must be http")],
)
def test_bad_webhook_urls_are_refused_without_their_secrets(url: str, error: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=error) as raised:
        WebhookSender(url, DiskQueue(tmp_path / "q", 3))
    assert "SECRET" not in str(raised.value)
