"""Azure Storage for the solution's flows: a queue worker (visibility timeout renewed while working, delete after
the result is written, a poison queue, back-off during outages) and a blob store that never overwrites."""

import logging

from edgevision.storage.blobs import BlobStore
from edgevision.storage.errors import Backoff, StorageError, StorageUnavailableError, is_transient
from edgevision.storage.queues import (
    POISON_SUFFIX,
    Lease,
    MessageLostError,
    QueueMessage,
    QueueWorker,
    StorageQueue,
)

# azure-core logs every HTTP request and response at INFO: with a queue polled twice a second that would drown a
# module's log. Its warnings and errors still show.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)

__all__ = [
    "POISON_SUFFIX",
    "Backoff",
    "BlobStore",
    "Lease",
    "MessageLostError",
    "QueueMessage",
    "QueueWorker",
    "StorageError",
    "StorageQueue",
    "StorageUnavailableError",
    "is_transient",
]
