"""edgevision.storage against a real Azurite through the unmodified azure-storage-queue / -blob SDKs."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

import pytest

from edgehub_emulator.azurite import Azurite, connection_string
from edgevision.storage import (
    Backoff,
    BlobStore,
    Lease,
    QueueWorker,
    StorageError,
    StorageQueue,
    StorageUnavailableError,
)
from solution_testkit import free_port

pytestmark = pytest.mark.integration


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def _all(queue: StorageQueue, poison: bool = False) -> list[str]:
    """Every message's content, peeked (not received)."""
    client = queue.poison_client if poison else queue.client
    return [m.content for m in client.peek_messages(max_messages=32)]


class Collector:
    """A handler that keeps the leases it gets."""

    def __init__(self) -> None:
        self.leases: list[Lease] = []
        self.got = threading.Event()

    def __call__(self, lease: Lease) -> None:
        self.leases.append(lease)
        self.got.set()


def test_queue_and_poison_queue_are_created_when_missing(azurite: Azurite) -> None:
    queue = StorageQueue(azurite.connection_string, _name("q"))
    queue.send("hello")  # the queue does not exist yet
    assert _all(queue) == ["hello"]
    assert queue.poison_client.get_queue_properties().name == queue.poison_name


def test_a_received_message_is_hidden_until_its_visibility_ends(azurite: Azurite) -> None:
    queue = StorageQueue(azurite.connection_string, _name("q"))
    queue.send("one")
    [message] = queue.receive(5, visibility_s=2)
    assert (message.content, message.dequeue_count) == ("one", 1)
    assert queue.receive(5, visibility_s=2) == []
    time.sleep(2.5)
    [again] = queue.receive(5, visibility_s=2)
    assert again.dequeue_count == 2
    assert not queue.delete(message), "the first receipt is stale once the message was received again"
    assert queue.delete(again)


def test_the_worker_renews_while_working_and_deletes_only_when_complete(azurite: Azurite) -> None:
    queue = StorageQueue(azurite.connection_string, _name("q"))
    queue.send("work")
    collector = Collector()
    worker = QueueWorker(queue, collector, visibility_s=2, poll_s=0.1)
    worker.start()
    try:
        assert collector.got.wait(15)
        time.sleep(5)  # more than twice the visibility: without renewal it would have reappeared
        other = StorageQueue(azurite.connection_string, queue.name)
        assert other.receive(5, visibility_s=2) == [], "a held message must stay hidden"
        assert len(collector.leases) == 1 and collector.leases[0].message.dequeue_count == 1
        assert _all(queue) == [], "peek shows only visible messages"
        collector.leases[0].complete()
        _wait_for(lambda: worker.counters["deleted"] == 1)
        time.sleep(2.5)
        assert other.receive(5, visibility_s=2) == [], "a completed message is gone"
    finally:
        worker.stop()


def test_a_message_over_the_dequeue_limit_goes_to_the_poison_queue_unhandled(azurite: Azurite) -> None:
    queue = StorageQueue(azurite.connection_string, _name("q"))
    queue.send("crashes every time")
    for _ in range(2):  # two receivers that died without deleting
        assert queue.receive(1, visibility_s=2)
        time.sleep(2.2)
    collector = Collector()
    worker = QueueWorker(queue, collector, visibility_s=2, max_dequeue_count=2, poll_s=0.1)
    worker.start()
    try:
        _wait_for(lambda: worker.counters["poisoned"] == 1)
    finally:
        worker.stop()
    assert not collector.leases
    assert _all(queue, poison=True) == ["crashes every time"]
    time.sleep(2.2)
    assert queue.receive(5, visibility_s=2) == []


def test_a_refused_message_moves_to_the_poison_queue_unchanged(azurite: Azurite) -> None:
    queue = StorageQueue(azurite.connection_string, _name("q"))
    queue.send('{"forged": true}')
    collector = Collector()
    worker = QueueWorker(queue, collector, visibility_s=5, poll_s=0.1)
    worker.start()
    try:
        assert collector.got.wait(15)
        collector.leases[0].poison("bad signature")
        _wait_for(lambda: worker.counters["poisoned"] == 1)
    finally:
        worker.stop()
    assert _all(queue, poison=True) == ['{"forged": true}']


def test_stopping_hands_held_messages_back_at_once(azurite: Azurite) -> None:
    queue = StorageQueue(azurite.connection_string, _name("q"))
    queue.send("unfinished")
    collector = Collector()
    worker = QueueWorker(queue, collector, visibility_s=60, poll_s=0.1)
    worker.start()
    assert collector.got.wait(15)
    worker.stop()
    [message] = queue.receive(1, visibility_s=5)
    assert message.content == "unfinished" and message.dequeue_count == 2


def test_a_handler_error_releases_the_message_for_a_retry(azurite: Azurite) -> None:
    queue = StorageQueue(azurite.connection_string, _name("q"))
    queue.send("boom")
    calls: list[int] = []

    def failing(lease: Lease) -> None:
        calls.append(lease.message.dequeue_count)
        if len(calls) == 1:
            raise RuntimeError("handler bug")
        lease.complete()

    worker = QueueWorker(queue, failing, visibility_s=2, poll_s=0.1)
    worker.start()
    try:
        _wait_for(lambda: worker.counters["deleted"] == 1)
    finally:
        worker.stop()
    assert calls == [1, 2]


def test_blobs_are_created_once_and_never_overwritten(azurite: Azurite) -> None:
    store = BlobStore(azurite.connection_string, _name("c"))  # the container does not exist yet
    assert store.create("r1/result.json", b'{"first": 1}', "application/json", {"k": "v"})
    assert not store.create("r1/result.json", b'{"second": 2}', "application/json")
    assert store.read("r1/result.json") == (b'{"first": 1}', {"k": "v"})
    assert store.read("r2/result.json") is None
    assert store.metadata("r2/result.json") is None
    store.set_metadata("r1/result.json", {"k": "w"})
    assert store.metadata("r1/result.json") == {"k": "w"}


def test_a_second_writer_racing_the_first_cannot_overwrite(azurite: Azurite) -> None:
    container = _name("c")
    stores = [BlobStore(azurite.connection_string, container) for _ in range(8)]
    stores[0].ensure()
    results: dict[int, bool] = {}

    def write(index: int) -> None:
        results[index] = stores[index].create("race/result.json", b"%d" % index, "text/plain")

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results.values()) == [False] * 7 + [True]
    found = stores[0].read("race/result.json")
    assert found is not None
    assert results[int(found[0])] is True, "the blob holds what the one successful writer wrote"


@pytest.mark.parametrize(
    ("queue_name", "container", "expected"),
    [
        ("Upper-Case", "fine", "Storage refused creating queue Upper-Case"),
        ("ok-queue", "Bad_Container", "Storage refused creating container Bad_Container"),
    ],
)
def test_names_storage_refuses_give_clear_errors(
    azurite: Azurite, queue_name: str, container: str, expected: str
) -> None:
    with pytest.raises(StorageError, match=expected):
        StorageQueue(azurite.connection_string, queue_name).ensure()
        BlobStore(azurite.connection_string, container).ensure()


def test_an_unreachable_storage_is_a_transient_error_without_the_key() -> None:
    port = free_port()
    conn = connection_string(port, port)
    with pytest.raises(StorageUnavailableError) as caught:
        StorageQueue(conn, "q").send("x")
    assert "Eby8" not in str(caught.value)
    with pytest.raises(StorageUnavailableError):
        BlobStore(conn, "c").create("a", b"x", "text/plain")


def test_the_worker_backs_off_logs_once_per_outage_and_resumes(
    tmp_path: Path, azurite_executable: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blob_port, queue_port = free_port(), free_port()
    conn = connection_string(blob_port, queue_port)
    collector = Collector()
    queue = StorageQueue(conn, "outage")
    worker = QueueWorker(
        queue,
        collector,
        visibility_s=5,
        poll_s=0.1,
        backoff=Backoff(logging.getLogger("test.outage"), "queue outage", initial=0.05, maximum=0.4),
    )
    caplog.set_level(logging.INFO, logger="test.outage")
    instance = Azurite(tmp_path / "a", blob_port, queue_port, free_port(), executable=azurite_executable)
    worker.start()
    try:
        time.sleep(2.0)  # several failed tries
        instance.start()
        StorageQueue(conn, "outage").send("after the outage")
        assert collector.got.wait(20)
        collector.leases[0].complete()
        _wait_for(lambda: worker.counters["deleted"] == 1)
    finally:
        worker.stop(timeout=3)  # before Azurite stops: that would be a second outage
        instance.stop()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "retrying with back-off" in warnings[0].getMessage()
    assert any("answers again" in r.getMessage() for r in caplog.records)
    assert worker.backoff.outages == 1
