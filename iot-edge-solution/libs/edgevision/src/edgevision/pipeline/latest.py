"""A holder of the newest value: a writer replaces what readers have not taken yet.

The pipeline hands live frames to inference through one (`take`: whoever takes it owns it), and a preview or a
request matcher can follow the newest annotated frame through another without taking it from anyone
(`wait_newer`: every reader sees the newest value once, however many readers there are)."""

from __future__ import annotations

import threading
import time
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestValue(Generic[T]):
    """Thread-safe slot for the newest value, with a sequence number that counts every `put`."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._value: T | None = None
        self._taken = True
        self._seq = 0

    @property
    def seq(self) -> int:
        """How many values were put so far (0: none yet)."""
        with self._cond:
            return self._seq

    def put(self, value: T) -> bool:
        """Store `value`; True when it replaced a value nobody took."""
        with self._cond:
            replaced = not self._taken
            self._value = value
            self._taken = False
            self._seq += 1
            self._cond.notify_all()
            return replaced

    def take(self, timeout: float | None = None) -> T | None:
        """Take the newest value not taken yet, waiting up to `timeout` s; None when there is none."""
        with self._cond:
            if self._taken and not self._cond.wait_for(lambda: not self._taken, timeout):
                return None
            self._taken = True
            return self._value

    def peek(self) -> tuple[int, T | None]:
        """The newest value and its sequence number, without taking it ((0, None) before the first put)."""
        with self._cond:
            return self._seq, self._value

    def wait_newer(self, seen: int, timeout: float | None = None) -> tuple[int, T | None]:
        """Wait up to `timeout` s for a value newer than sequence number `seen`; returns (seq, value), with the
        old `seen` and None when nothing newer came. Does not take the value from anyone."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._seq <= seen:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return seen, None
                self._cond.wait(remaining)
            return self._seq, self._value
