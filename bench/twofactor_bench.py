"""The two-factor flow's figures, measured in one run; prints one JSON object.

- Latency from ProcessRequest (service SDK -> edgeHub emulator -> authrequest process -> Azurite queue) to
  `result.json` in the result container, with the requested object already in view, over N sequential requests:
  p50 / p95 / max (goal: p95 <= 1 s). The queue poll (REQUEST_POLL_SECONDS, 0.25 s) is most of it.
- Pipeline FPS with 20 concurrent pending requests (queued through ProcessRequest for a class that never reaches
  its threshold) against none, in 1 s phases alternated ABBA 20 times in the same run, so that a shared
  machine's changing load falls on both alike; ratio with / without (goal >= 0.9).

The classifier runs in this process (its pipeline, request service and module client), authrequest as its own
process from main.py, Azurite and the emulator on free ports (MQTT needs 8883: run it alone or under
`unshare --net`).

    .venv/bin/python bench/twofactor_bench.py [--requests 25] [--phase-seconds 8] [--threads 0]
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import cv2
from azure.iot.device import IoTHubModuleClient
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import CloudToDeviceMethod
from azure.storage.blob import ContainerClient

from edgehub_emulator.azurite import Azurite
from edgehub_emulator.config import EmulatorConfig
from edgehub_emulator.emulator import EmulatorThread
from edgehub_emulator.environment import module_connection_string, module_identity, service_connection_string
from edgehub_emulator.manifest import parse_manifest
from edgehub_emulator.process import free_port
from edgevision.config import resolve_threads
from edgevision.frames import SourceOptions, open_source
from edgevision.iot import EdgeModuleConnection
from edgevision.models import ModelRepository
from edgevision.pipeline import Pipeline, PipelineStats
from edgevision.security import ModuleKey
from edgevision.storage import BlobStore, StorageQueue
from edgevision.twofactor.matcher import best_match
from edgevision.twofactor.service import RequestService
from edgevision.vision import build_task

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "iot-edge-solution"
QUEUE, CONTAINER = "bench-requests", "bench-results"
MANIFEST = {
    "modulesContent": {
        "$edgeAgent": {"properties.desired": {"modules": {"authrequest": {}, "classifier": {}}}},
        "$edgeHub": {
            "properties.desired": {
                "routes": {"verification": "FROM /messages/modules/classifier/outputs/verification INTO $upstream"}
            }
        },
    }
}


def _wait(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise RuntimeError(f"timed out waiting for {what}")


def _video(path: Path) -> Path:
    """Five seconds of the bundled squirrel photo at 10 fps (640x480, MJPG)."""
    image = cv2.resize(cv2.imread(str(SOLUTION / "media" / "squirrel_cls.jpg")), (640, 480))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 480))
    for _ in range(50):
        writer.write(image)
    writer.release()
    return path


def _invoke(registry: IoTHubRegistryManager, device: str, payload: dict[str, Any]) -> dict[str, Any]:
    method = CloudToDeviceMethod(method_name="ProcessRequest", payload=payload, response_timeout_in_seconds=30)
    answer = registry.invoke_device_module_method(device, "authrequest", method)
    if answer.status != 200:
        raise RuntimeError(f"ProcessRequest answered {answer.status}: {answer.payload}")
    return answer.payload


def _fps_over(stats: PipelineStats, seconds: float) -> float:
    before, started = stats.results, time.monotonic()
    time.sleep(seconds)
    return (stats.results - before) / (time.monotonic() - started)


def _alternate(
    service: RequestService, stats: PipelineStats, cycles: int, seconds: float
) -> tuple[list[float], list[float]]:
    """FPS without and with the pending requests, alternated ABBA so that drift and other load cancel out. The
    requests stay held by the worker; for a phase without them the service's pending table is set aside."""
    none: list[float] = []
    pending: list[float] = []
    parked: dict[str, Any] = {}
    for cycle in range(cycles):
        for with_requests in (False, True) if cycle % 2 == 0 else (True, False):
            with service._lock:  # pylint: disable=protected-access  # the bench's switch, not an API
                if with_requests:
                    service._pending.update(parked)  # pylint: disable=protected-access
                    parked = {}
                else:
                    parked.update(service._pending)  # pylint: disable=protected-access
                    service._pending.clear()  # pylint: disable=protected-access
            (pending if with_requests else none).append(_fps_over(stats, seconds))
    with service._lock:  # pylint: disable=protected-access
        service._pending.update(parked)  # pylint: disable=protected-access
    return none, pending


def _matching_cost(task: Any, requests: int) -> float:
    """Microseconds to match `requests` pending requests against one real result (what the service adds per
    frame), without the noise of a shared machine."""
    image = cv2.resize(cv2.imread(str(SOLUTION / "media" / "squirrel_cls.jpg")), (640, 480))
    result = task.run(image)
    classes = [("espresso", 99.0)] * requests
    started, rounds = time.perf_counter(), 2000
    for _ in range(rounds):
        for class_name, threshold in classes:
            best_match(class_name, result, threshold)
    return (time.perf_counter() - started) / rounds * 1e6


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def main() -> int:  # pylint: disable=too-many-locals,too-many-statements
    """Start everything, measure, print the JSON figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--requests", type=int, default=25, help="sequential requests for the latency (>= 20)")
    parser.add_argument("--pending", type=int, default=20, help="concurrent pending requests for the FPS phase")
    parser.add_argument("--phase-seconds", type=float, default=1.0, help="length of each FPS phase")
    parser.add_argument("--cycles", type=int, default=20, help="FPS phases without and with requests, alternated")
    parser.add_argument("--threads", type=int, default=0, help="inference threads (0 = cores - 1)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    key_text = base64.b64encode(secrets.token_bytes(32)).decode()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        azurite = Azurite(tmp / "azurite", free_port(), free_port(), free_port()).start()
        config = EmulatorConfig(
            state_dir=tmp / "hub", service_port=free_port(), workload_port=free_port(), module_method_port=None
        )
        hub = EmulatorThread(config, parse_manifest(MANIFEST)).start()
        os.environ["REQUESTS_CA_BUNDLE"] = str(hub.ca_cert)

        def connection_string(module: str) -> str:
            return module_connection_string(config, module_identity(config, hub.emulator.store, module))

        authrequest = subprocess.Popen(  # pylint: disable=consider-using-with
            [sys.executable, str(SOLUTION / "modules" / "authrequest" / "main.py")],
            cwd=SOLUTION / "modules" / "authrequest",
            env={
                "PATH": os.environ.get("PATH", ""),
                "EdgeHubConnectionString": connection_string("authrequest"),
                "EdgeModuleCACertificateFile": str(hub.ca_cert),
                "STORAGE_CONNECTION_STRING": azurite.connection_string,
                "MODULE_KEY": key_text,
                "REQUEST_QUEUE": QUEUE,
                "LOG_LEVEL": "WARNING",
            },
        )
        client = IoTHubModuleClient.create_from_connection_string(
            connection_string("classifier"), server_verification_cert=hub.ca_cert.read_text(encoding="utf-8")
        )
        connection = EdgeModuleConnection(client)
        task = build_task(
            ModelRepository(SOLUTION / "models").load("efficientnet-lite0"), threads=resolve_threads(args.threads)
        )
        service = RequestService(
            ModuleKey.from_base64(key_text),
            StorageQueue(azurite.connection_string, QUEUE),
            BlobStore(azurite.connection_string, CONTAINER),
            connection,
            lambda: task.labels,
            lambda: task.model.ref,
            {"poll_s": 0.25},
        )  # the classifier's defaults: visibility 30 s, poll 0.25 s
        stats = PipelineStats()
        source = open_source(str(_video(tmp / "squirrel.avi")), SourceOptions(loop=True))
        pipeline = Pipeline(source, task, [service], stats=stats)
        connection.start()
        pipeline.start()
        registry = IoTHubRegistryManager.from_connection_string(service_connection_string(config))
        results = ContainerClient.from_connection_string(azurite.connection_string, CONTAINER)
        try:
            _wait(lambda: _ready(registry, config.device_id), 60, "authrequest to answer")
            latencies = []
            for _ in range(args.requests):
                request_id = str(uuid.uuid4())
                started = time.perf_counter()
                _invoke(
                    registry,
                    config.device_id,
                    {"CoorelationId": request_id, "ClassName": "fox squirrel", "ThresholdPercentage": 80},
                )
                blob = results.get_blob_client(f"{request_id}/result.json")
                _wait(blob.exists, 30, f"{request_id}/result.json")
                latencies.append((time.perf_counter() - started) * 1000)
            for _ in range(args.pending):
                _invoke(
                    registry,
                    config.device_id,
                    {"ClassName": "espresso", "ThresholdPercentage": 99, "ExpiresInSeconds": 600},
                )
            _wait(lambda: service.pending == args.pending, 60, f"{args.pending} pending requests")
            none, pending = _alternate(service, stats, args.cycles, args.phase_seconds)
            match_us = _matching_cost(task, args.pending)
            service_counters = dict(service.counters)
        finally:
            pipeline.close()
            connection.close()
            task.engine.close()
            authrequest.terminate()
            authrequest.wait(20)
            hub.stop()
            azurite.stop()
    fps_none, fps_pending = statistics.mean(none), statistics.mean(pending)
    print(json.dumps({
        "requests": len(latencies),
        "process_request_to_result_ms_p50": round(statistics.median(latencies), 1),
        "process_request_to_result_ms_p95": round(_percentile(latencies, 0.95), 1),
        "process_request_to_result_ms_max": round(max(latencies), 1),
        "pending_requests": args.pending,
        "fps_without_requests": round(fps_none, 2),
        "fps_with_pending_requests": round(fps_pending, 2),
        "fps_ratio_with_to_without": round(fps_pending / fps_none, 3),
        "fps_phases": len(none) + len(pending),
        "fps_phase_spread": [round(min(none + pending), 1), round(max(none + pending), 1)],
        "matching_us_per_frame_with_pending": round(match_us, 1),
        "inference_ms_per_frame": round(stats.mean_ms("inference"), 2),
        "service_counters": service_counters,
        "threads": resolve_threads(args.threads),
        "python": sys.version.split()[0],
    }))  # fmt: skip
    return 0


def _ready(registry: IoTHubRegistryManager, device: str) -> bool:
    """True once authrequest answers ProcessRequest (a payload error is an answer)."""
    try:
        method = CloudToDeviceMethod(method_name="ProcessRequest", payload={}, response_timeout_in_seconds=5)
        return registry.invoke_device_module_method(device, "authrequest", method).status == 400
    except Exception:  # pylint: disable=broad-exception-caught  # not connected yet: the emulator answers 404
        time.sleep(0.2)
        return False


if __name__ == "__main__":
    sys.exit(main())
