"""Pipeline throughput against the engine alone, on the demo video, measured in one run.

Prints one JSON object (`edgevision bench pipeline` prints the same): the engine alone and the pipeline at every
intra-op thread count from 1 to the CPU count, the best of each, the default pipeline against both
(`ratio_to_best`, `default_to_best_pipeline`), the naive sequential loop, and a live source's end-to-end latency.

    .venv/bin/python bench/pipeline_bench.py [--model efficientnet-lite0] [--frames 600] [--rounds 10] [--threads 0]
"""

from __future__ import annotations

import sys
from pathlib import Path

from edgevision.cli import main as edgevision_main

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = {
    "--model": "efficientnet-lite0",
    "--video": str(ROOT / "iot-edge-solution" / "media" / "demo.mp4"),
    "--frames": "600",
    "--rounds": "10",
}


def main(argv: list[str]) -> int:
    """`edgevision bench pipeline` with the demo video and 600 frames in 10 rounds unless told otherwise."""
    given = {arg.split("=", 1)[0] for arg in argv}
    defaults = [item for name, value in DEFAULTS.items() if name not in given for item in (name, value)]
    return edgevision_main(["bench", "pipeline", *defaults, *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
