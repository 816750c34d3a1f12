"""Benchmark the edgeHub emulator through the real SDK clients and a raw MQTT client; prints one JSON object.

The emulator runs in its own process (`edgehub-emulator start`), as it does for a developer, so the clients here do
not share its interpreter. Figures:
- routed messages per second, output -> route -> input, with one SDK sender and with two at once: their ratio says
  whether one SDK client or the emulator is the limit;
- the same route fed by a raw MQTT client that pipelines QoS 1 publishes (the emulator's own routing rate);
- direct method round trips p50/p99 (azure-iot-hub service client -> emulator -> SDK module -> back);
- the time to drain a backlog queued while its module was away, to a raw client that acknowledges at once and to
  the SDK client.
Needs port 8883 free (run it in a network namespace of its own).
Usage: python bench/emulator_bench.py [--messages N] [--calls N] [--backlog N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from azure.iot.device import IoTHubModuleClient, Message, MethodResponse
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import CloudToDeviceMethod

from edgehub_emulator import mqtt
from edgehub_emulator.config import EmulatorConfig
from edgehub_emulator.environment import module_connection_string, module_identity, service_connection_string
from edgehub_emulator.identity import SERVICE_POLICY, generate_sas, service_key

ROUTE = 'FROM /messages/modules/{src}/outputs/out INTO BrokeredEndpoint("/modules/{dst}/inputs/in")'
MODULES = ("sender", "sender2", "receiver", "loader", "drain")
MANIFEST = {
    "modulesContent": {
        "$edgeAgent": {"properties.desired": {"modules": {name: {} for name in MODULES}}},
        "$edgeHub": {
            "properties.desired": {
                "routes": {
                    "r1": ROUTE.format(src="sender", dst="receiver"),
                    "r2": ROUTE.format(src="sender2", dst="receiver"),
                    "r3": ROUTE.format(src="loader", dst="drain"),
                }
            }
        },
    }
}


def _start_emulator(state: Path, config: EmulatorConfig) -> subprocess.Popen[str]:
    manifest = state.parent / "deployment.json"
    manifest.write_text(json.dumps(MANIFEST), encoding="utf-8")
    process = subprocess.Popen(  # pylint: disable=consider-using-with  # stopped at the end of main()
        [
            sys.executable,
            "-m",
            "edgehub_emulator.cli",
            "start",
            "--manifest",
            str(manifest),
            "--state",
            str(state),
            "--service-port",
            str(config.service_port),
            "--workload-port",
            str(config.workload_port),
            "--module-method-port",
            "0",
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("REQUESTS_CA_BUNDLE="):
            return process
    raise RuntimeError("the emulator did not start")


def _measure_routing(
    senders: list[IoTHubModuleClient], receiver: IoTHubModuleClient, messages: int
) -> tuple[int, float]:
    """Each sender sends `messages` output -> route -> input, all at once; (messages received, seconds until the
    last one or 120 s)."""
    done = threading.Event()
    count = [0]
    wanted = messages * len(senders)

    def on_message(_message: Message) -> None:
        count[0] += 1
        if count[0] >= wanted:
            done.set()

    def send(sender: IoTHubModuleClient) -> None:
        for index in range(messages):
            sender.send_message_to_output(Message(json.dumps({"i": index})), "out")

    receiver.on_message_received = on_message
    threads = [threading.Thread(target=send, args=(sender,)) for sender in senders]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    done.wait(120)
    elapsed = time.perf_counter() - start
    for thread in threads:
        thread.join()
    receiver.on_message_received = None
    return count[0], elapsed


def _measure_methods(registry: IoTHubRegistryManager, device_id: str, calls: int) -> list[float]:
    """Round-trip milliseconds of direct method calls to the receiver, sorted."""
    latencies = []
    for index in range(calls):
        t0 = time.perf_counter()
        registry.invoke_device_module_method(
            device_id,
            "receiver",
            CloudToDeviceMethod(method_name="echo", payload={"i": index}, response_timeout_in_seconds=10),
        )
        latencies.append((time.perf_counter() - t0) * 1000)
    return sorted(latencies)


class RawClient:
    """A minimal MQTT 3.1.1 client over TLS with the emulator's packet codec."""

    def __init__(self, config: EmulatorConfig, ca: Path, module: str) -> None:
        self.config, self.ca, self.module = config, ca, module
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self, subscribe: bool) -> None:
        """CONNECT with a SAS token (and SUBSCRIBE to the module's inputs)."""
        cfg = self.config
        identity = module_identity(cfg, None, self.module)
        client_id = identity.client_id
        password = generate_sas(f"{cfg.hostname}/devices/{cfg.device_id}/modules/{self.module}", identity.primary_key)

        def field(text: str) -> bytes:
            data = text.encode()
            return len(data).to_bytes(2, "big") + data

        connect = b"".join(
            [
                field("MQTT"),
                bytes([4, 0xC0]),
                (60).to_bytes(2, "big"),
                field(client_id),
                field(f"{cfg.hostname}/{client_id}/?api-version=2019-10-01"),
                field(password),
            ]
        )
        context = ssl.create_default_context(cafile=str(self.ca))
        self.reader, self.writer = await asyncio.open_connection(
            "127.0.0.1", cfg.mqtt_port, ssl=context, server_hostname="localhost"
        )
        self.writer.write(bytes([0x10]) + mqtt.encode_remaining_length(len(connect)) + connect)
        kind, _, body = await mqtt.read_packet(self.reader, 1 << 20)
        assert kind == mqtt.CONNACK and body[1] == 0, body
        if subscribe:
            topic = f"devices/{cfg.device_id}/modules/{self.module}/inputs/#"
            packet = (1).to_bytes(2, "big") + field(topic) + b"\x01"
            self.writer.write(bytes([0x82]) + mqtt.encode_remaining_length(len(packet)) + packet)

    async def publish_outputs(self, count: int) -> float:
        """Publish `count` QoS 1 messages to output `out`, pipelined; seconds until every PUBACK is back."""
        assert self.reader and self.writer
        topic = f"devices/{self.config.device_id}/modules/{self.module}/messages/events/%24.on=out"
        start = time.perf_counter()
        acked = 0
        for index in range(count):
            self.writer.write(
                mqtt.publish(topic, json.dumps({"i": index}).encode(), qos=1, packet_id=index % 65535 + 1)
            )
            if index % 500 == 499:
                await self.writer.drain()
        await self.writer.drain()
        while acked < count:
            kind, _, _ = await asyncio.wait_for(mqtt.read_packet(self.reader, 1 << 20), 60)
            acked += kind == mqtt.PUBACK
        return time.perf_counter() - start

    async def drain(self, count: int) -> float:
        """Seconds from CONNECT to the `count`th message, acknowledging each at once."""
        start = time.perf_counter()
        await self.connect(subscribe=True)
        assert self.reader and self.writer
        received = 0
        while received < count:
            kind, flags, body = await asyncio.wait_for(mqtt.read_packet(self.reader, 1 << 20), 60)
            if kind == mqtt.PUBLISH:
                _, _, packet_id, _ = mqtt.parse_publish(flags, body)
                received += 1
                if packet_id is not None:
                    self.writer.write(mqtt.puback(packet_id))
        return time.perf_counter() - start

    def close(self) -> None:
        """Drop the connection."""
        if self.writer:
            self.writer.close()


async def _raw_figures(config: EmulatorConfig, ca: Path, backlog: int) -> dict[str, float]:
    loader = RawClient(config, ca, "loader")
    await loader.connect(subscribe=False)
    publish_secs = await loader.publish_outputs(backlog)
    drain = RawClient(config, ca, "drain")
    drain_secs = await drain.drain(backlog)
    drain.close()
    await loader.publish_outputs(backlog)  # a second backlog for the SDK client
    loader.close()
    return {
        "raw_publish_routed_messages_per_second": round(backlog / publish_secs, 1),
        "raw_client_drain_seconds": round(drain_secs, 2),
        "raw_client_drain_messages_per_second": round(backlog / drain_secs, 1),
    }


def _status(config: EmulatorConfig, ca: Path) -> dict[str, Any]:
    """The emulator's /emulator/status."""
    import requests  # pylint: disable=import-outside-toplevel

    token = generate_sas(config.service_hostname, service_key(config.seed), policy=SERVICE_POLICY)
    response = requests.get(
        f"https://{config.service_hostname}/emulator/status",
        headers={"Authorization": token},
        verify=str(ca),
        timeout=10,
    )
    response.raise_for_status()
    return dict(response.json())


def _sdk_drain(client: IoTHubModuleClient, count: int) -> tuple[int, float]:
    """(messages received, seconds) for an SDK client that connects to a backlog of `count` messages."""
    done = threading.Event()
    got = [0]

    def on_message(_message: Message) -> None:
        got[0] += 1
        if got[0] >= count:
            done.set()

    client.on_message_received = on_message
    start = time.perf_counter()
    client.connect()
    done.wait(180)
    return got[0], time.perf_counter() - start


def _sdk_client(config: EmulatorConfig, ca: str, name: str) -> IoTHubModuleClient:
    cs = module_connection_string(config, module_identity(config, None, name))
    return IoTHubModuleClient.create_from_connection_string(cs, server_verification_cert=ca)


def _sdk_figures(config: EmulatorConfig, ca: str, messages: int, calls: int) -> dict[str, Any]:
    """Routed rates with one and two SDK senders, then method round trips."""
    receiver, sender, sender2 = (_sdk_client(config, ca, name) for name in ("receiver", "sender", "sender2"))
    for each in (receiver, sender, sender2):
        each.connect()
    got, secs = _measure_routing([sender], receiver, messages)
    one = round(got / secs, 1)
    result: dict[str, Any] = {"one_sdk_sender": {"received": got, "routed_messages_per_second": one}}
    got, secs = _measure_routing([sender, sender2], receiver, messages)
    two = round(got / secs, 1)
    result["two_sdk_senders"] = {"received": got, "routed_messages_per_second": two}
    result["two_to_one_sender_ratio"] = round(two / one, 2)
    receiver.on_method_request_received = lambda r: receiver.send_method_response(
        MethodResponse.create_from_method_request(r, 200, r.payload)
    )
    registry = IoTHubRegistryManager.from_connection_string(service_connection_string(config))
    latencies = _measure_methods(registry, config.device_id, calls)
    result["method_round_trip_ms_p50"] = round(statistics.median(latencies), 2)
    result["method_round_trip_ms_p99"] = round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 2)
    for each in (receiver, sender, sender2):
        each.shutdown()
    return result


def _backlog_figures(config: EmulatorConfig, ca_path: Path, backlog: int) -> dict[str, Any]:
    """A backlog routed by a raw publisher, drained by a raw client, then again by the SDK client."""
    result: dict[str, Any] = {"messages": backlog}
    result.update(asyncio.run(_raw_figures(config, ca_path, backlog)))
    # QoS 1: what the raw client had not acknowledged when it left is queued again, on top of the backlog
    queued = _status(config, ca_path)["queued"]
    client = _sdk_client(config, ca_path.read_text(encoding="utf-8"), "drain")
    got, secs = _sdk_drain(client, queued)
    client.shutdown()
    result.update({"sdk_client_queued": queued, "sdk_client_received": got, "sdk_client_drain_seconds": round(secs, 2)})
    return result


def main() -> int:
    """Run the measurements and print the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=2000, help="messages per SDK sender")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--backlog", type=int, default=10_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    result: dict[str, Any] = {"messages_per_sender": args.messages, "method_calls": args.calls}
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        config = EmulatorConfig(state_dir=state, service_port=18443, workload_port=18580, module_method_port=None)
        emulator = _start_emulator(state, config)
        try:
            ca_path = state / "certs" / "ca.pem"
            os.environ["REQUESTS_CA_BUNDLE"] = str(ca_path)
            result.update(_sdk_figures(config, ca_path.read_text(encoding="utf-8"), args.messages, args.calls))
            result["backlog"] = _backlog_figures(config, ca_path, args.backlog)
            result["raw_to_one_sdk_sender_ratio"] = round(
                result["backlog"]["raw_publish_routed_messages_per_second"]
                / result["one_sdk_sender"]["routed_messages_per_second"],
                2,
            )
        finally:
            emulator.terminate()
            emulator.wait(30)
    result["python"] = sys.version.split()[0]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
