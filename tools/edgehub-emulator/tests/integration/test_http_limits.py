"""The HTTP APIs run on aiohttp's server: half-sent requests time out and cannot starve MQTT or the service API."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from pathlib import Path
from typing import Callable

import pytest
from azure.iot.device import IoTHubModuleClient, MethodResponse
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import CloudToDeviceMethod

from edgehub_emulator.config import EmulatorConfig
from edgehub_emulator.emulator import Emulator

from .conftest import EmulatorProcess, call_service_api, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DEVICE = "edge-device"
HALF_SENT = 300


def _half_sent(emulator: EmulatorProcess, context: ssl.SSLContext, data: bytes) -> ssl.SSLSocket:
    sock = context.wrap_socket(
        socket.create_connection(("127.0.0.1", emulator.service_port), timeout=30), server_hostname="localhost"
    )
    sock.sendall(data)
    return sock


def _closed_by_server(sock: ssl.SSLSocket) -> bytes:
    """What the server sent before closing (b"" when it closed without an answer)."""
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except (ConnectionError, ssl.SSLError):
        pass
    return data


def test_half_sent_requests_neither_starve_the_hub_nor_stay_open(
    emulator: EmulatorProcess, registry: IoTHubRegistryManager, module_client: Callable[..., IoTHubModuleClient]
) -> None:
    context = ssl.create_default_context(cafile=emulator.env("sender")["REQUESTS_CA_BUNDLE"])
    heads = [
        _half_sent(emulator, context, b"GET /emulator/status HTTP/1.1\r\nHost: localhost\r\n") for _ in range(HALF_SENT)
    ]
    body = _half_sent(
        emulator,
        context,
        b"PATCH /twins/edge-device/modules/receiver HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{",
    )
    try:
        # meanwhile MQTT and the service API answer as usual
        receiver = module_client("receiver")
        receiver.on_method_request_received = lambda r: receiver.send_method_response(
            MethodResponse.create_from_method_request(r, 200, {"alive": True})
        )
        receiver.connect()
        result = registry.invoke_device_module_method(
            DEVICE, "receiver", CloudToDeviceMethod(method_name="m", response_timeout_in_seconds=5)
        )
        assert result.payload == {"alive": True}
        assert call_service_api(emulator, "GET", "/emulator/status", b"").status_code == 200
        # then the read timeout closes the unfinished requests: an unfinished head without an answer,
        # an unfinished body with 408
        assert _closed_by_server(heads[0]) == b""
        answer = _closed_by_server(body)
        assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within" in answer
    finally:
        for sock in [*heads, body]:
            sock.close()
    log = emulator.log_text()
    assert "Too many open files" not in log and "Traceback" not in log


def test_connections_over_the_cap_are_closed_and_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = EmulatorConfig(
        state_dir=tmp_path / "state",
        mqtt_port=free_port(),
        service_port=free_port(),
        workload_port=free_port(),
        module_method_port=None,
        bind_hosts=("0.0.0.0",),
    )

    async def scenario() -> list[bytes]:
        emulator = Emulator(config)
        await emulator.start()
        for server in emulator._http:  # pylint: disable=protected-access  # a small cap to reach it quickly
            server.max_connections = 3
        try:
            held = [await asyncio.open_connection("127.0.0.1", config.workload_port) for _ in range(3)]
            for _, writer in held:
                writer.write(b"GET /trust-bundle HTTP/1.1\r\n")  # half-sent: keeps its slot
                await writer.drain()
            await asyncio.sleep(0.2)
            answers = []
            for _ in range(2):
                reader, writer = await asyncio.open_connection("127.0.0.1", config.workload_port)
                writer.write(b"GET /trust-bundle HTTP/1.1\r\nHost: x\r\n\r\n")
                answers.append(await asyncio.wait_for(reader.read(), 5))
                writer.close()
            for _, writer in held:
                writer.close()
            return answers
        finally:
            await emulator.stop()
            emulator.close()

    with caplog.at_level(logging.WARNING):
        answers = asyncio.run(scenario())
    assert answers == [b"", b""]  # closed at once, no answer
    assert sum("connections open, the limit" in r.message for r in caplog.records) == 1
    # listening beyond loopback with the public default seed is worth a warning
    assert "with the default seed: every key derives from a public value" in caplog.text


def test_a_connection_without_connect_is_closed_with_an_info_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = EmulatorConfig(
        state_dir=tmp_path / "state",
        mqtt_port=free_port(),
        service_port=free_port(),
        workload_port=free_port(),
        module_method_port=None,
    )

    async def scenario() -> bytes:
        emulator = Emulator(config)
        await emulator.start()
        emulator.mqtt.connect_timeout = 0.5
        try:
            context = ssl.create_default_context(cafile=str(emulator.certs.ca_cert))
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", config.mqtt_port, ssl=context, server_hostname="localhost"
            )
            data = await asyncio.wait_for(reader.read(), 10)  # sends nothing; the server closes
            writer.close()
            return data
        finally:
            await emulator.stop()
            emulator.close()

    with caplog.at_level(logging.INFO):
        assert asyncio.run(scenario()) == b""
    assert "sent no CONNECT within 0.5 s: closing" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
