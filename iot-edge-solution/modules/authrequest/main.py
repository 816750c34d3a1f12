"""authrequest module: the device's door for the second factor. Its direct method `ProcessRequest` checks the
payload, signs the request with MODULE_KEY and puts it on the REQUEST_QUEUE of STORAGE_CONNECTION_STRING, where
the classifier picks it up. Answers: 200 {"requestId", "expiresAt"}; 400 naming the bad field; 409 for a pending
requestId with another class; 503 when the queue does not answer within ENQUEUE_TIMEOUT_SECONDS. A queued
request whose result.json (in RESULT_CONTAINER) is still missing 20 s after its expiry is queued again, so that
every request answered 200 ends with a result even when the queue lost its message; with AUTHREQUEST_STATE_DIR
the requests to follow up survive a restart.
SIGTERM (what the IoT Edge runtime sends on stop) or Ctrl-C ends it cleanly."""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

from edgevision.config import module_settings
from edgevision.errors import EdgeVisionError
from edgevision.iot import MethodError, ShutdownSignal, connect_module
from edgevision.storage import BlobStore, StorageError, StorageQueue, StorageUnavailableError
from edgevision.twofactor import AuthRequestSettings, ConflictError, PayloadError, RequestIntake

log = logging.getLogger("authrequest")

EXIT_CONFIG = 2
EXIT_RUNTIME = 1
METHOD = "ProcessRequest"
# Errors of a call and the status the caller gets, most specific first.
STATUS_OF: tuple[tuple[type[Exception], int], ...] = (
    (PayloadError, 400),
    (ConflictError, 409),
    (StorageUnavailableError, 503),
    (StorageError, 502),
)


def process_request_handler(intake: RequestIntake) -> Any:
    """The ProcessRequest handler over `intake`: (200, answer), or MethodError with the status of the error."""

    def handle(payload: Any) -> tuple[int, Any]:
        try:
            return 200, intake.submit(payload)
        except EdgeVisionError as e:
            for error_class, status in STATUS_OF:
                if isinstance(e, error_class):
                    if status >= 500:
                        log.warning("%s answered %d: %s", METHOD, status, e)
                    raise MethodError(status, str(e)) from e
            raise

    return handle


def main() -> int:
    """Serve ProcessRequest until SIGTERM or Ctrl-C."""
    settings = module_settings(AuthRequestSettings, "authrequest")
    if settings is None:
        return EXIT_CONFIG
    shutdown = ShutdownSignal().install()
    key, connection_string = settings.key, settings.connection_string
    assert key is not None and connection_string is not None  # required by AuthRequestSettings
    timeout = settings.enqueue_timeout_seconds
    queue = StorageQueue(
        connection_string,
        settings.request_queue,
        connection_timeout=min(5.0, timeout),
        read_timeout=timeout,
    )
    intake = RequestIntake(queue, key, settings.request_ttl_seconds, timeout, state_dir=settings.authrequest_state_dir)
    try:
        queue.ensure()
    except StorageError as e:
        log.warning("cannot prepare queue %s yet (%s); ProcessRequest answers 503 until it can", queue.name, e)
    try:
        connection = connect_module()
        connection.on_method(METHOD, process_request_handler(intake))
        connection.start()
    except EdgeVisionError as e:
        log.error("cannot start: %s", e)
        queue.close()
        return EXIT_RUNTIME
    results = BlobStore(connection_string, settings.result_container)
    stop_follow_up = threading.Event()
    follow_up = threading.Thread(
        target=intake.follow_up_forever, args=(results, stop_follow_up), name="follow-up", daemon=True
    )
    follow_up.start()
    log.info("serving %s: requests go to queue %s", METHOD, queue.name)
    try:
        shutdown.wait()
    finally:
        stop_follow_up.set()
        follow_up.join(10)
        connection.close()
        queue.close()
        results.close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
