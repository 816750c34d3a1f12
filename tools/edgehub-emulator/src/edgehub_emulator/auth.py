"""Who may connect and call: SAS tokens of identities and of the service policy, checked against this hub's names.

Keys come from one derivation (identity.derived_keys); an identity's stored keys win when the service API set them.
"""

from __future__ import annotations

import logging

from edgehub_emulator.config import EmulatorConfig
from edgehub_emulator.errors import AuthError
from edgehub_emulator.identity import SERVICE_POLICY, SasToken, derived_identity, parse_sas, service_key, verify_sas
from edgehub_emulator.store import Identity, Store

logger = logging.getLogger(__name__)

LEGACY_GENERATION_ID = "1"  # what identities stored by earlier versions carry


def _verify_either_key(token: SasToken, identity: Identity) -> None:
    """IoT Hub accepts tokens signed with the primary or the secondary key."""
    try:
        verify_sas(token, identity.primary_key)
    except AuthError:
        verify_sas(token, identity.secondary_key)


def _host(name: str) -> str:
    """The host part of `host[:port]`, lower case."""
    return name.lower().split(":", 1)[0]


class Authenticator:
    """Identities (created from the seed) and the checks of MQTT credentials and HTTP SAS tokens."""

    def __init__(self, config: EmulatorConfig, store: Store) -> None:
        self.config = config
        self.store = store

    def ensure_identity(self, device_id: str, module_id: str) -> tuple[Identity, bool]:
        """The identity, created with keys derived from the seed when new; (identity, created)."""
        existing = self.store.get_identity(device_id, module_id)
        if existing:
            if existing.generation_id == LEGACY_GENERATION_ID:
                existing.generation_id = derived_identity(self.config.seed, device_id, module_id).generation_id
                self.store.put_identity(existing)
            return existing, False
        identity = derived_identity(self.config.seed, device_id, module_id)
        self.store.put_identity(identity)
        return identity, True

    def service_key(self) -> str:
        """The key of the `iothubowner` policy."""
        return service_key(self.config.seed)

    def _check_host(self, host: str, what: str) -> None:
        if _host(host) != _host(self.config.hostname):
            raise AuthError(f"{what} names the hub {host!r}, not this hub {self.config.hostname!r}")

    def authenticate_client(self, client_id: str, username: str | None, password: str | None) -> Identity:
        """Check MQTT credentials: the username names this hub and the client, the SAS matches a key."""
        device_id, _, module_id = client_id.partition("/")
        if not device_id or "/" in module_id:
            raise AuthError(f"client id {client_id!r} is not 'device' or 'device/module'")
        if username is None or password is None:
            raise AuthError("username and SAS password are required")
        user_client = username.split("/?", 1)[0]
        host, _, named = user_client.partition("/")
        if named != client_id:
            raise AuthError(f"username names {named!r} but the client id is {client_id!r}")
        self._check_host(host, "the username")
        identity = self.store.get_identity(device_id, module_id)
        if identity is None:
            raise AuthError(f"no identity {client_id!r} on this hub")
        token = parse_sas(password)
        expected = f"{host}/devices/{device_id}" + (f"/modules/{module_id}" if module_id else "")
        if token.resource.lower() != expected.lower():
            raise AuthError(f"SAS token is for {token.resource!r}, not {expected!r}")
        _verify_either_key(token, identity)
        return identity

    def authenticate_http(self, authorization: str | None) -> Identity | None:
        """A service-policy SAS returns None (full access); a module SAS returns that module's identity."""
        if not authorization:
            raise AuthError("the Authorization header with a SAS token is missing")
        token = parse_sas(authorization)
        host = token.resource.split("/", maxsplit=1)[0]
        self._check_host(host, "the SAS token")
        if token.policy is not None:
            if token.policy != SERVICE_POLICY:
                raise AuthError(f"unknown shared access policy {token.policy!r}")
            verify_sas(token, self.service_key())
            return None
        parts = token.resource.split("/")
        if len(parts) != 5 or parts[1] != "devices" or parts[3] != "modules":
            raise AuthError("a module SAS token must be for '<host>/devices/<d>/modules/<m>'")
        identity = self.store.get_identity(parts[2], parts[4])
        if identity is None:
            raise AuthError(f"no identity {parts[2]}/{parts[4]} on this hub")
        _verify_either_key(token, identity)
        return identity
