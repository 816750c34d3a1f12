"""Benchmark the edgeHub emulator through the real SDK clients; prints one JSON object.

Figures: messages per second routed output -> input (sender module -> route -> receiver module), and direct
method round-trip latency p50/p99 (azure-iot-hub service client -> emulator -> module -> back).
Needs port 8883 free. Usage: python bench/emulator_bench.py [--messages N] [--calls N]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from azure.iot.device import IoTHubModuleClient, Message, MethodResponse
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import CloudToDeviceMethod

from edgehub_emulator.config import EmulatorConfig
from edgehub_emulator.emulator import EmulatorThread
from edgehub_emulator.environment import module_connection_string, module_identity, service_connection_string
from edgehub_emulator.manifest import parse_manifest

ROUTE = 'FROM /messages/modules/sender/outputs/out INTO BrokeredEndpoint("/modules/receiver/inputs/in")'
MANIFEST = {
    "modulesContent": {
        "$edgeAgent": {"properties.desired": {"modules": {"sender": {}, "receiver": {}}}},
        "$edgeHub": {"properties.desired": {"routes": {"r": ROUTE}}},
    }
}


def _measure_routing(
    sender: IoTHubModuleClient, receiver: IoTHubModuleClient, messages: int
) -> tuple[int, float]:
    """Send messages output -> route -> input; (messages received, seconds until the last one or 120 s)."""
    done = threading.Event()
    count = [0]

    def on_message(_message: Message) -> None:
        count[0] += 1
        if count[0] >= messages:
            done.set()

    receiver.on_message_received = on_message
    start = time.perf_counter()
    for index in range(messages):
        sender.send_message_to_output(Message(json.dumps({"i": index})), "out")
    done.wait(120)
    return count[0], time.perf_counter() - start


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


def main() -> int:
    """Run both measurements and print the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        config = EmulatorConfig(
            state_dir=Path(tmp), service_port=18443, workload_port=18580, module_method_port=None
        )
        hub = EmulatorThread(config, parse_manifest(MANIFEST)).start()
        ca = hub.ca_cert.read_text(encoding="utf-8")
        os.environ["REQUESTS_CA_BUNDLE"] = str(hub.ca_cert)

        def client(name: str) -> IoTHubModuleClient:
            cs = module_connection_string(config, module_identity(config, hub.emulator.store, name))
            return IoTHubModuleClient.create_from_connection_string(cs, server_verification_cert=ca)

        receiver, sender = client("receiver"), client("sender")
        receiver.on_method_request_received = lambda r: receiver.send_method_response(
            MethodResponse.create_from_method_request(r, 200, r.payload)
        )
        receiver.connect()
        sender.connect()
        received, routed_secs = _measure_routing(sender, receiver, args.messages)
        registry = IoTHubRegistryManager.from_connection_string(service_connection_string(config))
        latencies = _measure_methods(registry, config.device_id, args.calls)
        sender.shutdown()
        receiver.shutdown()
        hub.stop()
    result = {
        "messages": args.messages,
        "messages_received": received,
        "routed_messages_per_second": round(received / routed_secs, 1),
        "method_calls": args.calls,
        "method_round_trip_ms_p50": round(statistics.median(latencies), 2),
        "method_round_trip_ms_p99": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 2),
        "python": sys.version.split()[0],
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
