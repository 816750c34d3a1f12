"""Connection life cycle: a second connection of an identity replaces the first; keepalive closes silent clients."""

from __future__ import annotations

import socket
import ssl
import time
from typing import Any, Callable

import pytest
from azure.iot.device import IoTHubModuleClient, MethodResponse
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import CloudToDeviceMethod
from msrest.exceptions import HttpOperationError

from edgehub_emulator import mqtt

from .conftest import EmulatorProcess, connect_packet, read_all, tls_socket, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DEVICE = "edge-device"
PINGREQ = b"\xc0\x00"
Factory = Callable[..., IoTHubModuleClient]


def _answer_as(client: IoTHubModuleClient, name: str) -> None:
    """Answer every direct method with the client's name, so the caller sees which connection got it."""
    client.on_method_request_received = lambda request: client.send_method_response(
        MethodResponse.create_from_method_request(request, 200, {"answered_by": name})
    )


def _who_answers(registry: IoTHubRegistryManager, module: str) -> Any:
    """The payload of a `who` method on module, or None while no connection listens for methods yet."""
    try:
        result = registry.invoke_device_module_method(
            DEVICE, module, CloudToDeviceMethod(method_name="who", payload=None, response_timeout_in_seconds=5)
        )
    except HttpOperationError as e:
        if e.response.status_code == 404:
            return None
        raise
    return result.payload


def _connected_raw(emulator: EmulatorProcess, module: str, keepalive: int) -> ssl.SSLSocket:
    sock = tls_socket(emulator)
    sock.sendall(connect_packet(emulator, module, keepalive=keepalive))
    connack = sock.recv(4)
    assert connack[:2] == b"\x20\x02" and connack[3] == mqtt.CONNACK_ACCEPTED, connack
    return sock


def test_second_sdk_connection_replaces_the_first(
    emulator: EmulatorProcess, registry: IoTHubRegistryManager, module_client: Factory
) -> None:
    # No automatic reconnect for the first client: it would take the identity back (as on IoT Hub).
    first = module_client("receiver", connection_retry=False)
    _answer_as(first, "first")
    first.connect()
    assert wait_for(lambda: _who_answers(registry, "receiver")) == {"answered_by": "first"}

    second = module_client("receiver", how="connection_string", connection_retry=False)
    _answer_as(second, "second")
    second.connect()
    wait_for(lambda: not first.connected)
    assert "edge-device/receiver connected again: closing its previous connection" in emulator.log_text()
    assert second.connected
    assert wait_for(lambda: _who_answers(registry, "receiver")) == {"answered_by": "second"}
    assert registry.get_module(DEVICE, "receiver").connection_state == "Connected"


def test_sdk_connection_replaces_a_raw_connection_which_sees_the_socket_closed(
    emulator: EmulatorProcess, registry: IoTHubRegistryManager, module_client: Factory
) -> None:
    with _connected_raw(emulator, "sender", keepalive=60) as raw:
        raw.sendall(mqtt.publish("$iothub/twin/GET/?$rid=1", b""))
        assert b"$iothub/twin/res/200/?$rid=1" in raw.recv(4096)  # the raw client is served
        raw.settimeout(10)
        sdk = module_client("sender")
        _answer_as(sdk, "sdk")
        sdk.connect()
        started = time.monotonic()
        assert read_all(raw) == b""  # closed by the server, without a packet
        assert time.monotonic() - started < 9  # closed, not timed out
    assert wait_for(lambda: _who_answers(registry, "sender")) == {"answered_by": "sdk"}
    assert sdk.connected


def test_silent_client_is_closed_after_one_and_a_half_keepalive(emulator: EmulatorProcess) -> None:
    with _connected_raw(emulator, "sender", keepalive=1) as raw:
        raw.settimeout(10)
        started = time.monotonic()
        assert read_all(raw) == b""
        elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 9, f"closed after {elapsed:.1f} s"
    assert "edge-device/sender sent nothing for 1.5 x keepalive (1 s): closing" in emulator.log_text()


def test_pingreq_gets_pingresp_and_keeps_the_connection(emulator: EmulatorProcess) -> None:
    with _connected_raw(emulator, "sender", keepalive=1) as raw:
        raw.settimeout(5)
        deadline = time.monotonic() + 3  # twice the 1.5 s the server waits for a packet
        pings = 0
        while time.monotonic() < deadline:
            raw.sendall(PINGREQ)
            assert raw.recv(2) == mqtt.pingresp() == b"\xd0\x00"
            pings += 1
            time.sleep(0.5)
        raw.sendall(mqtt.publish("$iothub/twin/GET/?$rid=9", b""))
        assert b"$iothub/twin/res/200/?$rid=9" in raw.recv(4096)  # still connected and served
        raw.sendall(b"\xe0\x00")  # DISCONNECT
        assert read_all(raw) == b""
    assert pings >= 4


def test_keepalive_zero_is_never_closed_for_silence(emulator: EmulatorProcess) -> None:
    with _connected_raw(emulator, "sender", keepalive=0) as raw:
        raw.settimeout(2.5)
        with pytest.raises((TimeoutError, socket.timeout)):
            raw.recv(1)  # nothing arrives and the connection stays open
        raw.sendall(PINGREQ)
        assert raw.recv(2) == b"\xd0\x00"
