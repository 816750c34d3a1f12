"""Azure Storage for the solution's flows: a queue worker (visibility timeout renewed while working, delete after
the result is written, a poison queue, back-off during outages) and a blob store that never overwrites."""

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
