"""A Storage queue with its poison queue, and a worker that holds messages while they are worked on.

A message is received with a visibility timeout: nobody else sees it until then. The worker renews the timeout
while the handler still works on the message, deletes it only when the handler says the work is done (after the
result is written), and moves a message that keeps coming back (dequeue count over the limit) or that the handler
refuses to `<queue>-poison`. A worker that stops or dies leaves its messages to reappear for the next one."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueClient

from edgevision.storage.errors import Backoff, StorageError, StorageUnavailableError, call, error_code

log = logging.getLogger(__name__)

POISON_SUFFIX = "-poison"
# Storage's own limits: 32 messages per receive, visibility up to 7 days.
MAX_BATCH = 32
# Timeouts of one Storage call (seconds); the worker's own back-off retries, so the SDK's retries are off.
CLIENT_OPTIONS: dict[str, Any] = {"retry_total": 0, "connection_timeout": 5, "read_timeout": 10}


class MessageLostError(StorageError):
    """The message is no longer held: it was deleted, or its visibility ran out and someone received it again."""


@dataclass
class QueueMessage:
    """A received message. `pop_receipt` changes with every renewal; `visible_at` is time.monotonic() when the
    message becomes visible to others again."""

    id: str
    content: str
    dequeue_count: int
    pop_receipt: str
    visible_at: float
    inserted_on: datetime | None = None


def _not_held(error: StorageError) -> bool:
    """True when Storage refused because the message is gone or someone received it since."""
    cause = error.__cause__
    return isinstance(cause, ResourceNotFoundError) or error_code(cause) in ("MessageNotFound", "PopReceiptMismatch")


class StorageQueue:
    """One queue and its poison queue `<name>-poison` over azure-storage-queue; both are created when missing."""

    def __init__(self, connection_string: str, name: str, **client_options: Any) -> None:
        options = {**CLIENT_OPTIONS, **client_options}
        self.name = name
        self.poison_name = name + POISON_SUFFIX
        self.client = QueueClient.from_connection_string(connection_string, name, **options)
        self.poison_client = QueueClient.from_connection_string(connection_string, self.poison_name, **options)

    def ensure(self) -> None:
        """Create the queue and its poison queue when missing."""
        for client in (self.client, self.poison_client):
            try:
                call(f"creating queue {client.queue_name}", client.create_queue)
                log.info("created queue %s", client.queue_name)
            except StorageError as e:
                if not isinstance(e.__cause__, ResourceExistsError):
                    raise

    def _with_queue(self, doing: str, operation: Callable[[], Any]) -> Any:
        """Run `operation`; when the queue is missing, create it (and the poison queue) and run it again."""
        try:
            return call(doing, operation)
        except StorageError as e:
            if not isinstance(e.__cause__, ResourceNotFoundError) or isinstance(e, StorageUnavailableError):
                raise
            self.ensure()
            return call(doing, operation)

    def send(self, content: str, time_to_live: int | None = None) -> str:
        """Put `content` on the queue; returns the message id. `time_to_live` in seconds (-1: never expires)."""
        sent = self._with_queue(
            f"sending to queue {self.name}", lambda: self.client.send_message(content, time_to_live=time_to_live)
        )
        return str(sent.id)

    def receive(self, max_messages: int, visibility_s: int) -> list[QueueMessage]:
        """Up to `max_messages` visible messages, hidden from others for `visibility_s` seconds."""
        count = max(1, min(max_messages, MAX_BATCH))

        def receive() -> list[Any]:
            pages = self.client.receive_messages(
                messages_per_page=count, max_messages=count, visibility_timeout=visibility_s
            )
            return list(pages)

        started = time.monotonic()
        received = self._with_queue(f"receiving from queue {self.name}", receive)
        return [
            QueueMessage(
                id=m.id,
                content=m.content,
                dequeue_count=int(m.dequeue_count or 0),
                pop_receipt=m.pop_receipt,
                visible_at=started + visibility_s,
                inserted_on=m.inserted_on,
            )
            for m in received
        ]

    def renew(self, message: QueueMessage, visibility_s: int) -> None:
        """Keep `message` hidden for `visibility_s` more seconds; raises MessageLostError when it is not held."""
        started = time.monotonic()
        try:
            updated = call(
                f"renewing message {message.id}",
                lambda: self.client.update_message(message.id, message.pop_receipt, visibility_timeout=visibility_s),
            )
        except StorageUnavailableError:
            raise
        except StorageError as e:
            raise MessageLostError(f"message {message.id} is no longer held: {e}") from e
        message.pop_receipt = updated.pop_receipt
        message.visible_at = started + visibility_s

    def delete(self, message: QueueMessage) -> bool:
        """Delete `message`; False when it was not held any more (deleted already, or received again)."""
        try:
            call(f"deleting message {message.id}", lambda: self.client.delete_message(message.id, message.pop_receipt))
        except StorageUnavailableError:
            raise
        except StorageError as e:
            if _not_held(e):
                return False
            raise
        return True

    def poison(self, message: QueueMessage) -> bool:
        """Copy `message` unchanged to the poison queue (kept until someone deletes it), then delete it here.
        False when the message was not held any more (the copy stays: better twice there than lost)."""
        call(
            f"sending to queue {self.poison_name}",
            lambda: self.poison_client.send_message(message.content, time_to_live=-1),
        )
        return self.delete(message)

    def close(self) -> None:
        """Close the HTTP sessions."""
        self.client.close()
        self.poison_client.close()


@dataclass
class Lease:
    """A message the worker holds for a handler: the worker renews its visibility until the handler calls
    `complete` (delete it: the work is done), `poison` (refuse it) or `release` (let it reappear)."""

    message: QueueMessage
    _worker: QueueWorker = field(repr=False)
    lost: bool = False
    settled: bool = False

    @property
    def content(self) -> str:
        """The message text."""
        return self.message.content

    def complete(self) -> None:
        """The work is done and its result written: delete the message (the worker does it, retrying)."""
        self._worker.settle(self, "delete")

    def poison(self, reason: str) -> None:
        """Move the message to the poison queue; `reason` goes to the log (it must not hold secrets)."""
        self._worker.settle(self, "poison", reason)

    def release(self) -> None:
        """Stop renewing: the message reappears when its visibility runs out (a retry, counted in dequeue_count)."""
        self._worker.settle(self, "release")


Handler = Callable[[Lease], None]


@dataclass(frozen=True)
class WorkerOptions:
    """How a QueueWorker receives: visibility timeout (s), dequeue-count limit, messages held at most, and the
    wait between receives when the queue is empty (s)."""

    visibility_s: int
    max_dequeue_count: int
    max_held: int
    poll_s: float


class QueueWorker:
    """Receives messages from `queue` on its own thread and hands each to `handler(lease)`, which must return
    soon; the lease is settled later, from any thread. Messages received more than `max_dequeue_count` times go
    to the poison queue without reaching the handler. While Storage is unreachable the worker backs off and logs
    once per outage; it creates the queue when missing."""

    def __init__(
        self,
        queue: StorageQueue,
        handler: Handler,
        visibility_s: int = 30,
        max_dequeue_count: int = 5,
        max_held: int = 64,
        poll_s: float = 0.5,
        backoff: Backoff | None = None,
    ) -> None:
        if visibility_s < 2:
            raise ValueError(f"visibility must be at least 2 s, got {visibility_s}")
        self.queue = queue
        self.handler = handler
        self.options = WorkerOptions(visibility_s, max_dequeue_count, max_held, poll_s)
        self.backoff = backoff or Backoff(log, f"queue {queue.name}")
        self._held: dict[str, Lease] = {}
        self._settled: list[tuple[Lease, str, str]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"queue-{queue.name}", daemon=True)
        self.counters = {"received": 0, "deleted": 0, "poisoned": 0, "lost": 0, "released": 0}

    # -- control ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker thread (it creates the queue when missing)."""
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the settled leases, hand the held ones back at once (visibility 0) and stop the thread."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def held(self) -> int:
        """How many messages the worker holds now."""
        with self._lock:
            return len(self._held)

    def settle(self, lease: Lease, action: str, reason: str = "") -> None:
        """Queue `action` (delete, poison, release) for `lease`; the worker thread carries it out."""
        with self._lock:
            if lease.settled:
                return
            lease.settled = True
            self._settled.append((lease, action, reason))
        self._wake.set()

    # -- the thread ------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        ensured = False
        while True:
            stopping = self._stop.is_set()
            try:
                if not ensured:
                    self.queue.ensure()
                    ensured = True
                self._carry_out_settled()
                if stopping:
                    self._hand_back()
                    return
                self._renew_due()
                received = self._receive()
                self.backoff.succeeded()
            except StorageUnavailableError as e:
                if stopping:
                    return
                self._wake.clear()
                self._stop.wait(self.backoff.failed(e))
                continue
            except Exception:  # pylint: disable=broad-exception-caught
                # a bug or a refusal must not end the worker: log it and try again after a while
                log.exception("queue worker for %s failed; trying again", self.queue.name)
                self._stop.wait(self.backoff.maximum)
                continue
            if not received:
                self._wake.wait(self.options.poll_s)
                self._wake.clear()

    def _carry_out_settled(self) -> None:
        while True:
            with self._lock:
                if not self._settled:
                    return
                lease, action, reason = self._settled[0]
            self._carry_out(lease, action, reason)  # raises StorageUnavailableError: stays queued, retried
            with self._lock:
                self._settled.pop(0)
                self._held.pop(lease.message.id, None)

    def _carry_out(self, lease: Lease, action: str, reason: str) -> None:
        message = lease.message
        if action == "release" or lease.lost:
            self.counters["released"] += int(action == "release")
            return
        if action == "poison":
            log.warning(
                "moved message %s (dequeued %d times) to %s: %s",
                message.id,
                message.dequeue_count,
                self.queue.poison_name,
                reason,
            )
            self.queue.poison(message)
            self.counters["poisoned"] += 1
            return
        if self.queue.delete(message):
            self.counters["deleted"] += 1

    def _renew_due(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [
                lease
                for lease in self._held.values()
                if not lease.settled
                and not lease.lost
                and lease.message.visible_at - now < self.options.visibility_s / 2
            ]
        for lease in due:
            try:
                self.queue.renew(lease.message, self.options.visibility_s)
            except MessageLostError as e:
                lease.lost = True
                self.counters["lost"] += 1
                log.warning("%s; it will be worked on when received again", e)
                with self._lock:
                    self._held.pop(lease.message.id, None)

    def _receive(self) -> bool:
        room = self.options.max_held - self.held
        if room <= 0:
            return False
        messages = self.queue.receive(room, self.options.visibility_s)
        for message in messages:
            self.counters["received"] += 1
            lease = Lease(message, self)
            with self._lock:
                self._held[message.id] = lease
            if message.dequeue_count > self.options.max_dequeue_count:
                lease.poison(f"received {message.dequeue_count} times (limit {self.options.max_dequeue_count})")
                continue
            try:
                self.handler(lease)
            except Exception:  # pylint: disable=broad-exception-caught
                log.exception("handler failed on message %s; it will come back", message.id)
                lease.release()
        return bool(messages)

    def _hand_back(self) -> None:
        """On stop: make every held message visible at once, so the next worker need not wait out the timeout."""
        with self._lock:
            held, self._held = list(self._held.values()), {}
        for lease in held:
            if lease.lost:
                continue
            try:
                self.queue.renew(lease.message, 0)
            except StorageError as e:
                log.info(
                    "could not hand message %s back (%s); it reappears when its visibility ends", lease.message.id, e
                )
