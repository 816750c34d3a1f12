"""Results fanned out to consumers. Each consumer has a lifecycle (start, handle, close), its own thread and a
bounded hand-off, so a slow consumer never stalls inference: when its hand-off is full the oldest result is
dropped and counted."""

from __future__ import annotations

import logging
import queue
import threading
from typing import Generic, Protocol, TypeVar, runtime_checkable

from edgevision.frames import Frame
from edgevision.tasks.results import TaskResult

log = logging.getLogger(__name__)

T = TypeVar("T")
_STOP = object()


@runtime_checkable
class Consumer(Protocol):
    """Something that acts on every result of the pipeline: a reporter, the request matcher, a preview, an output.

    `start` runs before the first result (open connections, start servers); `handle` runs on the consumer's own
    thread, one result at a time and in order, but may miss results when it is slower than the pipeline;
    `close` runs once after the last `handle`."""

    name: str

    def start(self) -> None:
        """Get ready to handle results."""

    def handle(self, frame: Frame, result: TaskResult) -> None:
        """Act on one result; an exception is logged and counted, and the next result still comes."""

    def close(self) -> None:
        """Release what `start` took."""


class BaseConsumer:
    """A consumer with nothing to start or close; subclasses implement `handle`."""

    name = "consumer"

    def start(self) -> None:
        """Nothing to start."""

    def handle(self, frame: Frame, result: TaskResult) -> None:
        """Act on one result."""
        raise NotImplementedError

    def close(self) -> None:
        """Nothing to close."""


class Handoff(Generic[T]):
    """A bounded queue between one producer that must never wait and one consumer thread: when full, `offer`
    drops the oldest item and counts it."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"hand-off size must be >= 1, got {size}")
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._lock = threading.Lock()
        self.dropped = 0

    def offer(self, item: T) -> None:
        """Queue `item` without blocking, dropping the oldest queued item when full."""
        with self._lock:  # one offer at a time, so a drop and its put cannot interleave with another offer
            while True:
                try:
                    self._queue.put_nowait(item)
                    return
                except queue.Full:
                    try:
                        self._queue.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass

    def get(self, timeout: float | None = None) -> T:
        """The oldest queued item; raises queue.Empty after `timeout`."""
        return self._queue.get(timeout=timeout)

    def put_stop(self, timeout: float = 5.0) -> None:
        """Queue the end marker after whatever is queued; when the consumer does not drain a full queue within
        `timeout` s, the oldest item makes room for it."""
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            self.offer(_STOP)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self._queue.qsize()


class _ConsumerWorker:
    def __init__(self, consumer: Consumer, size: int) -> None:
        if not isinstance(consumer, Consumer):
            raise TypeError(f"{consumer!r} is not a Consumer: it needs name, start, handle and close")
        self.consumer = consumer
        self.name = consumer.name
        self.handoff: Handoff[object] = Handoff(size)
        self.failures = 0
        self.started = False
        self.thread = threading.Thread(target=self._loop, name=f"consumer-{self.name}", daemon=True)

    def _loop(self) -> None:
        while (item := self.handoff.get()) is not _STOP:
            try:
                self.consumer.handle(*item)  # type: ignore[misc]
            except Exception:  # pylint: disable=broad-exception-caught
                # one consumer's bug must not stop the others or the pipeline
                self.failures += 1
                if self.failures <= 3 or self.failures % 100 == 0:
                    log.exception("consumer %s failed (%d failures so far)", self.name, self.failures)


class Fanout:
    """Delivers every result to every consumer, in order, without blocking the publisher."""

    def __init__(self, consumers: list[Consumer], queue_size: int = 8) -> None:
        self._workers = [_ConsumerWorker(c, queue_size) for c in consumers]
        names = [w.name for w in self._workers]
        if len(set(names)) != len(names):
            raise ValueError(f"consumer names must be unique, got {names}")

    def start(self) -> None:
        """Start every consumer, then one thread per consumer. A consumer that fails to start is closed with the
        ones started before it, and the error is raised."""
        for worker in self._workers:
            try:
                worker.consumer.start()
            except BaseException:
                self.close()
                raise
            worker.started = True
        for worker in self._workers:
            worker.thread.start()

    def publish(self, frame: Frame, result: TaskResult) -> None:
        """Queue a result for every consumer."""
        for worker in self._workers:
            worker.handoff.offer((frame, result))

    def close(self, timeout: float = 5.0) -> None:
        """Let every consumer finish what it has queued, stop its thread, then close it."""
        for worker in self._workers:
            if worker.thread.is_alive():
                worker.handoff.put_stop(timeout)
        for worker in self._workers:
            if worker.thread.is_alive():
                worker.thread.join(timeout)
            if worker.started:
                worker.started = False
                try:
                    worker.consumer.close()
                except Exception:  # pylint: disable=broad-exception-caught
                    log.exception("consumer %s failed to close", worker.name)

    def stats(self) -> dict[str, dict[str, int]]:
        """Per consumer: results dropped because it was slow, and failures."""
        return {w.name: {"dropped": w.handoff.dropped, "failures": w.failures} for w in self._workers}
