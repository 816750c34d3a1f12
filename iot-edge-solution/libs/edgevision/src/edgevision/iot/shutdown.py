"""Graceful shutdown: the IoT Edge runtime stops a module with SIGTERM, a person with Ctrl-C."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Callable

log = logging.getLogger(__name__)


class ShutdownSignal:
    """Set when SIGTERM or SIGINT arrives (or `set` is called); runs the registered callbacks once, in order.

    Install it from the main thread (Python delivers signals there)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._callbacks: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self.signal_name: str | None = None

    def install(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> ShutdownSignal:
        """Handle `signals` from now on; returns self."""
        for signum in signals:
            signal.signal(signum, self._on_signal)
        return self

    def on_shutdown(self, callback: Callable[[], None]) -> None:
        """Run `callback` when shutdown starts (at once if it already has)."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return
        callback()

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.signal_name = signal.Signals(signum).name
        log.info("received %s, stopping", self.signal_name)
        self.set()

    def set(self) -> None:
        """Start shutdown: wake waiters and run the callbacks (once)."""
        with self._lock:
            if self._event.is_set():
                return
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # pylint: disable=broad-exception-caught
                log.exception("shutdown callback %r failed", callback)

    def is_set(self) -> bool:
        """True once shutdown has started."""
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until shutdown starts or `timeout` passes; True when it started."""
        return self._event.wait(timeout)
