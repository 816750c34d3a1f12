"""Keys, SAS tokens and connection strings.

Keys derive from a seed so that connection strings are stable; SAS tokens follow what the SDKs build:
`SharedAccessSignature sr=<url-encoded resource>&sig=<url-encoded b64 HMAC>&se=<expiry>[&skn=<policy>]`,
signed over `<url-encoded resource>\\n<expiry>` with the base64-decoded key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
import urllib.parse
from dataclasses import dataclass

from edgehub_emulator.errors import AuthError
from edgehub_emulator.store import Identity

SERVICE_POLICY = "iothubowner"


def derive_key(seed: str, purpose: str) -> str:
    """A stable base64 key of 32 bytes for `purpose` (e.g. `module:dev/mod`)."""
    digest = hmac.new(seed.encode("utf-8"), purpose.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def service_key(seed: str) -> str:
    """The key of the `iothubowner` policy."""
    return derive_key(seed, f"service:{SERVICE_POLICY}")


def derived_keys(seed: str, device_id: str, module_id: str) -> tuple[str, str, str]:
    """(primary key, secondary key, generation id) of an identity, derived from the seed: the one place that
    turns a seed into an identity's secrets. The generation id is what the workload API checks besides the module
    name, so it must not be guessable from the names alone."""
    purpose = f"{device_id}/{module_id}" if module_id else device_id
    generation = hmac.new(seed.encode("utf-8"), f"generation:{purpose}".encode("utf-8"), hashlib.sha256)
    return (
        derive_key(seed, f"primary:{purpose}"),
        derive_key(seed, f"secondary:{purpose}"),
        generation.hexdigest()[:20],
    )


def sign(key_b64: str, data: str) -> str:
    """Base64 HMAC-SHA256 of `data` with the base64 key, as IoT Hub and the workload API compute it."""
    try:
        key = base64.b64decode(key_b64, validate=True)
    except (binascii.Error, ValueError) as e:
        raise AuthError("the key is not valid base64") from e
    return base64.b64encode(hmac.new(key, data.encode("utf-8"), hashlib.sha256).digest()).decode("ascii")


def generate_sas(resource: str, key_b64: str, ttl_secs: int = 3600, policy: str | None = None) -> str:
    """A SAS token for `resource` (not url-encoded yet)."""
    encoded = urllib.parse.quote(resource, safe="")
    expiry = int(time.time() + ttl_secs)
    signature = urllib.parse.quote(sign(key_b64, f"{encoded}\n{expiry}"), safe="")
    token = f"SharedAccessSignature sr={encoded}&sig={signature}&se={expiry}"
    return f"{token}&skn={policy}" if policy else token


@dataclass(frozen=True)
class SasToken:
    """The parts of a parsed SAS token; `raw_resource` is the `sr` exactly as signed."""

    raw_resource: str
    resource: str
    signature: str
    expiry: int
    policy: str | None


def parse_sas(token: str) -> SasToken:
    """Split a SAS token into its fields; raises AuthError with the reason when it is malformed."""
    prefix = "SharedAccessSignature "
    if not token.startswith(prefix):
        raise AuthError("the password is not a SharedAccessSignature token")
    fields: dict[str, str] = {}
    for part in token[len(prefix) :].split("&"):
        name, sep, value = part.partition("=")
        if not sep:
            raise AuthError(f"malformed SAS token field {name!r}")
        fields[name] = value
    missing = {"sr", "sig", "se"} - fields.keys()
    if missing:
        raise AuthError(f"SAS token lacks {', '.join(sorted(missing))}")
    try:
        expiry = int(fields["se"])
    except ValueError as e:
        raise AuthError("SAS token expiry `se` is not an integer") from e
    return SasToken(
        raw_resource=fields["sr"],
        resource=urllib.parse.unquote_plus(fields["sr"]),
        signature=urllib.parse.unquote(fields["sig"]),
        expiry=expiry,
        policy=fields.get("skn"),
    )


def verify_sas(token: SasToken, key_b64: str, now: float | None = None) -> None:
    """Check expiry and signature; raises AuthError (without echoing the token) on failure."""
    if token.expiry < (time.time() if now is None else now):
        raise AuthError("SAS token expired")
    # The SDKs sign the resource as they put it in the token, url-encoded; both quote styles are accepted.
    candidates = {
        token.raw_resource,
        urllib.parse.quote(token.resource, safe=""),
        urllib.parse.quote_plus(token.resource),
    }
    for resource in candidates:
        expected = sign(key_b64, f"{resource}\n{token.expiry}")
        if hmac.compare_digest(expected, token.signature):
            return
    raise AuthError("SAS signature does not match the identity's key")


def parse_connection_string(text: str) -> dict[str, str]:
    """`Key=Value;...` into a dict; values may contain `=` (base64 keys)."""
    result: dict[str, str] = {}
    for part in text.strip().split(";"):
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep:
            raise AuthError(f"malformed connection string segment {name!r}")
        result[name] = value
    return result


def derived_identity(seed: str, device_id: str, module_id: str) -> Identity:
    """The identity with the keys and generation id the seed gives it."""
    primary, secondary, generation = derived_keys(seed, device_id, module_id)
    return Identity(device_id, module_id, primary, secondary, generation_id=generation)
