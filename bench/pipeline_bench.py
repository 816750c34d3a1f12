"""Single-stream throughput of the default classifier against the machine's best inference-only rate, on the
demo video and a 1280x720 video, measured in one run.

The classifier plays a video file at its own frame rate by default (`VIDEO_REALTIME=True` in `.env_template`);
a throughput figure needs the file read as fast as the engine takes frames, so this bench runs the pipeline with
`VIDEO_REALTIME=False` (unthrottled) and every other setting at the classifier's default (intra-op threads = half
the CPUs for each of the two frames in inference at once, as the classifier chooses with INTRA_OP_THREADS=0 for an
unpaced file; no spinning, OpenCV on one thread, a queue of 4, the capture thread's `capture_nice`).

Prints one JSON object: per video (`demo`, `1280x720`) what `edgevision bench pipeline` prints (the engine alone
and the pipeline at every thread count, the naive sequential loop, a live source's latency), plus
- `inference_only_machine_best_fps`: the engine alone at its best over thread counts *and* 1 .. CPU-count
  callers at once, and `ratio_to_machine_best` = the default pipeline's rate over it (the goal: >= 0.8);
- `where_time_goes_ms`: per frame, the capture thread's decode and pre-processing, the inference thread's
  engine, post-processing and idle time, and how long a frame waited in the queue, against the frame interval;
- `capture_nice_gain`: the default pipeline against the same with the capture thread at normal priority;
and `uptime` before and after each video (the load average: the figures are only comparable on a quiet machine).

    .venv/bin/python bench/pipeline_bench.py [--model efficientnet-lite0] [--frames 600] [--rounds 10]
        [--threads 0] [--videos demo,1280x720]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from edgevision.bench import BenchPlan, bench_pipeline
from edgevision.config import available_cpus, concurrent_call_threads, resolve_threads
from edgevision.models import ModelRepository

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_720p_video import make_video  # noqa: E402  pylint: disable=wrong-import-position

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "iot-edge-solution" / "media" / "demo.mp4"
GOAL = 0.8


def uptime() -> str:
    """`uptime`'s line (the load averages), or /proc/loadavg where the command is missing."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return Path("/proc/loadavg").read_text(encoding="ascii").strip()


def main(argv: list[str]) -> int:
    """Bench each video in turn; print the JSON figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--frames", type=int, default=600, help="frames per configuration, over all rounds")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument(
        "--threads", type=int, default=0, help="the classifier's INTRA_OP_THREADS (0: its default, half the CPUs here)"
    )
    parser.add_argument("--videos", default="demo,1280x720", help="comma-separated: demo, 1280x720")
    args = parser.parse_args(argv)
    videos = {"demo": DEMO, "1280x720": None}
    wanted = [name.strip() for name in args.videos.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in videos]
    if unknown:
        parser.error(f"--videos: unknown {unknown}; choose from {list(videos)}")
    model = ModelRepository(ROOT / "iot-edge-solution" / "models").load(args.model)
    threads = resolve_threads(args.threads) if args.threads else concurrent_call_threads()
    plan = BenchPlan(frames=args.frames, rounds=args.rounds, max_callers=available_cpus())
    report: dict = {
        "model": model.ref,
        "settings": "the classifier's defaults, VIDEO_REALTIME=False (the file read unthrottled)",
        "intra_op_threads": threads,
        "cpu_count": available_cpus(),
        "python": sys.version.split()[0],
        "uptime_start": uptime(),
        "videos": {},
    }
    for name in wanted:
        video = videos[name] or make_video()
        before = uptime()
        figures = bench_pipeline(model, video, threads, plan=plan)
        figures.update({"uptime_before": before, "uptime_after": uptime()})
        report["videos"][name] = figures
    report["goals"] = {
        f"{name}: ratio_to_machine_best >= {GOAL}": figures["ratio_to_machine_best"] >= GOAL
        for name, figures in report["videos"].items()
    }
    report["uptime_end"] = uptime()
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
