"""Scoring API throughput with concurrent clients, measured in one run against two references.

Prints one JSON object: `score_rps` (POST /score over HTTP with `--clients` concurrent keep-alive clients, the
module's one shared model), `inference_only_rps` (the same model's engine alone on the same pre-processed image:
the better of one caller and `--clients` callers), and `session_per_request_rps` (the seed's pattern: decode,
a new ONNX Runtime session, infer, for each request, with the same number of concurrent callers and no HTTP at
all), with the two ratios.
Goals: score_vs_inference_only >= 0.8, score_vs_session_per_request >= 8.

    .venv/bin/python bench/scoring_bench.py [--seconds 10] [--clients 4] [--threads 0]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import threading
import time
from pathlib import Path

import onnxruntime as ort

from edgevision.config import resolve_threads
from edgevision.manager import ModelManager
from edgevision.models import ModelRepository
from edgevision.scoring import ScoringServer
from edgevision.tasks import decode_image
from edgehub_emulator.process import free_port

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "iot-edge-solution" / "media" / "squirrel_cls.jpg"


def concurrent_rate(clients: int, seconds: float, make_call) -> tuple[float, int]:
    """Calls per second of `clients` threads, each calling its own `make_call()` function for `seconds`."""
    counts = [0] * clients
    failures = [0] * clients
    start = threading.Barrier(clients + 1)
    deadline: list[float] = []

    def worker(index: int) -> None:
        call = make_call()
        start.wait()
        while time.perf_counter() < deadline[0]:
            if call():
                counts[index] += 1
            else:
                failures[index] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    deadline.append(time.perf_counter() + seconds)
    began = time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - began), sum(failures)


def main() -> None:  # pylint: disable=too-many-locals
    """Run the three measurements and print the JSON figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads; 0: CPU count - 1")
    args = parser.parse_args()
    threads = resolve_threads(args.threads)
    model = ModelRepository(ROOT / "iot-edge-solution" / "models").load("efficientnet-lite0")
    manager = ModelManager("onnxruntime", threads, sample_image=IMAGE)
    served = manager.activate(model)
    jpeg = IMAGE.read_bytes()

    # inference only: the engine on one pre-processed image, one caller and as many callers as clients; the
    # better of the two is the reference (the machine's best)
    inputs, _ = served.pre_process(decode_image(jpeg))
    for _ in range(5):
        served.task.engine.infer(inputs)

    def engine_caller():
        return lambda: bool(served.task.engine.infer(inputs))

    inference_one, _ = concurrent_rate(1, args.seconds, engine_caller)
    inference_many, _ = concurrent_rate(args.clients, args.seconds, engine_caller)
    inference_only = max(inference_one, inference_many)

    server = ScoringServer(manager, "127.0.0.1", free_port())
    server.start()

    def http_client():
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)

        def call() -> bool:
            connection.request("POST", "/score", body=jpeg, headers={"Content-Type": "image/jpeg"})
            response = connection.getresponse()
            response.read()
            return response.status == 200

        return call

    concurrent_rate(args.clients, 1.0, http_client)  # warm the server's thread pool
    score_rps, failed = concurrent_rate(args.clients, args.seconds, http_client)
    server.stop()

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3

    def seed_client():
        def call() -> bool:
            image = decode_image(jpeg)
            session = ort.InferenceSession(str(model.model_path), options, providers=["CPUExecutionProvider"])
            tensor, _ = served.task.preprocessor(image)
            session.run(None, {model.manifest.input.name: tensor})
            return True

        return call

    seed_rps, _ = concurrent_rate(args.clients, args.seconds, seed_client)
    manager.close()
    print(
        json.dumps(
            {
                "clients": args.clients,
                "intra_op_threads": threads,
                "cpu_count": os.cpu_count(),
                "score_rps": round(score_rps, 2),
                "score_failed_requests": failed,
                "inference_only_rps": round(inference_only, 2),
                "inference_only_one_caller_rps": round(inference_one, 2),
                "inference_only_concurrent_rps": round(inference_many, 2),
                "session_per_request_rps": round(seed_rps, 2),
                "score_vs_inference_only": round(score_rps / inference_only, 3),
                "score_vs_session_per_request": round(score_rps / seed_rps, 2) if seed_rps else None,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
