"""Signing and verifying two-factor requests with the module key (HMAC-SHA256, expiry, constant-time compare)."""

from edgevision.security.signing import (
    CLOCK_SKEW_SECONDS,
    REQUEST_VERSION,
    ExpiredRequestError,
    MalformedRequestError,
    ModuleKey,
    ModuleKeyError,
    SignatureError,
    SignedRequest,
    VerificationError,
    canonical_bytes,
    sign_request,
    verify_request,
)

__all__ = [
    "CLOCK_SKEW_SECONDS",
    "REQUEST_VERSION",
    "ExpiredRequestError",
    "MalformedRequestError",
    "ModuleKey",
    "ModuleKeyError",
    "SignatureError",
    "SignedRequest",
    "VerificationError",
    "canonical_bytes",
    "sign_request",
    "verify_request",
]
