"""The two-factor flow on the device: `authrequest` checks, signs and queues requests (intake); the classifier's
request service (`edgevision.twofactor.service`, imported on its own: it needs OpenCV) matches them against live
results and writes the results to blobs."""

from edgevision.twofactor.intake import (
    ConflictError,
    PayloadError,
    RequestIntake,
    RequestPayload,
    iso_utc,
    parse_payload,
)
from edgevision.twofactor.settings import (
    DEFAULT_REQUEST_QUEUE,
    DEFAULT_RESULT_CONTAINER,
    AuthRequestSettings,
    TwoFactorSettings,
)

__all__ = [
    "DEFAULT_REQUEST_QUEUE",
    "DEFAULT_RESULT_CONTAINER",
    "AuthRequestSettings",
    "ConflictError",
    "PayloadError",
    "RequestIntake",
    "RequestPayload",
    "TwoFactorSettings",
    "iso_utc",
    "parse_payload",
]
