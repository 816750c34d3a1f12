"""Storage errors, translated from azure-core's at the boundary of this package, and the outage back-off."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, TypeVar

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from edgevision.errors import EdgeVisionError

T = TypeVar("T")


class StorageError(EdgeVisionError):
    """Storage refused an operation (bad name, bad credentials, a conflict the caller did not expect)."""


class StorageUnavailableError(StorageError):
    """Storage cannot be reached now (connection refused or dropped, timeout, 5xx): try again later."""


def is_transient(error: BaseException) -> bool:
    """True for errors that pass by themselves: no connection, a dropped response, a server error, throttling."""
    if isinstance(error, (ServiceRequestError, ServiceResponseError)):
        return True
    if isinstance(error, HttpResponseError) and not isinstance(error, ClientAuthenticationError):
        status = error.status_code or 0
        return status >= 500 or status in (408, 429)
    return False


def translate(error: AzureError, doing: str) -> StorageError:
    """A StorageUnavailableError or StorageError for `error`, with a message that says what was being done. The
    message never holds the connection string or its key (azure-core's messages hold neither)."""
    reason = str(getattr(error, "reason", None) or error.message or type(error).__name__).splitlines()[0]
    if is_transient(error):
        return StorageUnavailableError(f"Storage unreachable while {doing}: {reason}")
    return StorageError(f"Storage refused {doing}: {reason}")


def error_code(error: BaseException | None) -> str:
    """The Storage error code of an azure-core error (e.g. "PopReceiptMismatch"), or ""."""
    code = getattr(error, "error_code", None)
    return str(getattr(code, "value", code) or "")


def call(doing: str, operation: Callable[[], T]) -> T:
    """Run one SDK call, translating azure-core errors to StorageError / StorageUnavailableError."""
    try:
        return operation()
    except AzureError as e:
        raise translate(e, doing) from e


class Backoff:
    """Waits that double from `initial` to `maximum` seconds while Storage is unreachable, and one log line per
    outage: a warning when it starts and an info line when Storage answers again."""

    def __init__(self, log: logging.Logger, what: str, initial: float = 0.5, maximum: float = 30.0) -> None:
        self.log = log
        self.what = what
        self.initial = initial
        self.maximum = maximum
        self._delay = 0.0
        self._since: float | None = None
        self._lock = threading.Lock()
        self.outages = 0

    @property
    def in_outage(self) -> bool:
        """True between a failure and the next success."""
        with self._lock:
            return self._since is not None

    def failed(self, error: BaseException) -> float:
        """Record a failure; returns how long to wait before the next try."""
        with self._lock:
            if self._since is None:
                self._since = time.monotonic()
                self.outages += 1
                self._delay = self.initial
                self.log.warning("%s: %s; retrying with back-off until it answers", self.what, error)
            else:
                self._delay = min(self._delay * 2, self.maximum)
            return self._delay

    def succeeded(self) -> None:
        """Record a success; ends an outage (with one log line)."""
        with self._lock:
            if self._since is not None:
                self.log.info("%s: Storage answers again after %.1f s", self.what, time.monotonic() - self._since)
                self._since = None
                self._delay = 0.0
