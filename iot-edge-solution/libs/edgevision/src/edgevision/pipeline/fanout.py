"""Results fanned out to consumers, each on its own thread with a small queue, so a slow consumer never
stalls inference: when its queue is full the oldest result is dropped and counted."""

from __future__ import annotations

import logging
import queue
import threading
from typing import Callable

from edgevision.frames import Frame
from edgevision.tasks.results import TaskResult

log = logging.getLogger(__name__)

Consumer = Callable[[Frame, TaskResult], None]
_STOP = object()


class _ConsumerWorker:
    def __init__(self, consumer: Consumer, size: int) -> None:
        self.consumer = consumer
        self.name = getattr(consumer, "name", None) or getattr(consumer, "__name__", type(consumer).__name__)
        self.queue: queue.Queue = queue.Queue(maxsize=size)
        self.dropped = 0
        self.failures = 0
        self.thread = threading.Thread(target=self._loop, name=f"consumer-{self.name}", daemon=True)

    def offer(self, item: tuple[Frame, TaskResult]) -> None:
        """Queue without blocking; when full, drop the oldest queued result."""
        while True:
            try:
                self.queue.put_nowait(item)
                return
            except queue.Full:
                try:
                    self.queue.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def _loop(self) -> None:
        while (item := self.queue.get()) is not _STOP:
            try:
                self.consumer(*item)
            except Exception:  # pylint: disable=broad-exception-caught
                # one consumer's bug must not stop the others or the pipeline
                self.failures += 1
                if self.failures <= 3 or self.failures % 100 == 0:
                    log.exception("consumer %s failed (%d failures so far)", self.name, self.failures)


class Fanout:
    """Delivers every result to every consumer, in order, without blocking the publisher."""

    def __init__(self, consumers: list[Consumer], queue_size: int = 8) -> None:
        self._workers = [_ConsumerWorker(c, queue_size) for c in consumers]

    def start(self) -> None:
        """Start one thread per consumer."""
        for worker in self._workers:
            worker.thread.start()

    def publish(self, frame: Frame, result: TaskResult) -> None:
        """Queue a result for every consumer."""
        for worker in self._workers:
            worker.offer((frame, result))

    def close(self, timeout: float = 5.0) -> None:
        """Let every consumer finish what it has queued, then stop its thread."""
        for worker in self._workers:
            if worker.thread.is_alive():
                worker.queue.put(_STOP)
        for worker in self._workers:
            worker.thread.join(timeout)

    def stats(self) -> dict[str, dict[str, int]]:
        """Per consumer: results dropped because it was slow, and failures."""
        return {w.name: {"dropped": w.dropped, "failures": w.failures} for w in self._workers}
