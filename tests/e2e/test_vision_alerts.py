"""Vision alerts end to end, all real: the edgeHub emulator with the solution's deployment.template.json (its
routes), the classifier running NanoDet on a video made from the bundled dog photo, the alert module, the
unmodified azure-iot-device SDK in both, `edgehub-emulator monitor` reading `$upstream`, `edgehub-emulator twin`
patching rules, and a local HTTP server as the webhook.

The video: 10 frames of media/dog.jpg sliding right (bicycle 0.58-0.72 in 9 of them; dog 0.36-0.52 in frames
0-2, 4-5, 7 and 9: at most 3 consecutive), then 5 frames of a cat photo (nothing detected), looped at 10 fps.

MQTT is on 8883 (fixed by the SDK): run this inside a private network namespace when other emulators may run,
`unshare --net bash -c 'ip link set lo up; .venv/bin/python -m pytest tests/e2e/test_vision_alerts.py'`.
The tests run in order on one running solution; each sets the rules it needs."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np
import pytest

from edgehub_emulator.process import EmulatorProcess, free_port
from solution_testkit import wait_for as poll

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SOLUTION = ROOT / "iot-edge-solution"
MANIFEST = SOLUTION / "deployment.template.json"
DEVICE = "edge-device"
LOOP_FRAMES = 15
KEEP = ("PATH", "HOME", "LANG", "TMPDIR", "SYSTEMROOT")


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `condition` until it is truthy (returned) or the timeout passes."""
    return poll(condition, timeout, what, interval=0.2)


def make_video(path: Path) -> Path:
    """Write the test video (see the module docstring) to `path`."""
    dog = cv2.imread(str(SOLUTION / "media" / "dog.jpg"))
    cat = cv2.imread(str(SOLUTION / "media" / "chelsea.png"))
    assert dog is not None and cat is not None, "bundled media missing"
    height, width = dog.shape[:2]
    cat = cv2.resize(cat, (width, height))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (width, height))
    for image, count in ((dog, 10), (cat, 5)):
        for step in range(count):
            shift = np.float32([[1, 0, 3 * step], [0, 1, 0]])
            writer.write(cv2.warpAffine(image, shift, (width, height), borderMode=cv2.BORDER_REPLICATE))
    writer.release()
    return path


class Webhook:
    """A local endpoint that records the Event Grid arrays POSTed to it."""

    def __init__(self, port: int) -> None:
        self.events: list[dict[str, Any]] = []
        events = self.events

        class Handler(http.server.BaseHTTPRequestHandler):
            """Records each POSTed body."""

            def do_POST(self) -> None:  # pylint: disable=invalid-name
                """Record the body and answer."""
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                events.extend(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Stop it."""
        self.server.shutdown()
        self.server.server_close()


class Solution:
    """The emulator, `monitor`, the classifier and the alert module as processes."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.hub = EmulatorProcess(tmp / "state", MANIFEST, log=tmp / "emulator.log")
        self.video = make_video(tmp / "dog-then-cat.avi")
        self.webhook_port = free_port()
        self.queue_dir = tmp / "alert-queue"
        self.processes: dict[str, subprocess.Popen] = {}
        self.upstream: list[dict[str, Any]] = []

    def cli(self, *argv: str) -> str:
        """Run an edgehub-emulator command against this emulator; its stdout."""
        return self.hub.cli(*argv).stdout

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        """Start a process with its output in <name>.log."""
        log = open(self.tmp / f"{name}.log", "ab")  # pylint: disable=consider-using-with
        self.processes[name] = subprocess.Popen(  # pylint: disable=consider-using-with
            argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd
        )

    def log(self, name: str) -> str:
        """What a process wrote so far."""
        return (self.tmp / f"{name}.log").read_text(encoding="utf-8", errors="replace")

    def start_hub(self) -> None:
        """The emulator with the solution's manifest, and `monitor` following $upstream."""
        self.processes["emulator"] = self.hub.start().process
        monitor = subprocess.Popen(  # pylint: disable=consider-using-with
            [sys.executable, "-m", "edgehub_emulator.cli", "monitor", "--from-start", "--raw", *self.hub.args],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.processes["monitor"] = monitor

        def follow() -> None:
            assert monitor.stdout is not None
            for line in monitor.stdout:
                self.upstream.append(json.loads(line))

        threading.Thread(target=follow, daemon=True).start()

    def module_env(self, module: str, **settings: str) -> dict[str, str]:
        """The environment a module gets under the emulator, plus `settings`."""
        env = {k: v for k, v in os.environ.items() if k in KEEP}
        env.update(self.hub.env(module))
        # the test's own folders for what a module keeps (never the state of a user's `make run`)
        own = self.queue_dir.parent / "module-state" / module
        env.update(MODEL_STORE=str(own / "model-store"), ENGINE_CACHE_DIR=str(own / "engine-cache"))
        env.update(ALERT_QUEUE_DIR=str(own / "alert-queue"))
        env.update(PYTHONUNBUFFERED="1", LOG_LEVEL="INFO", **settings)
        return env

    def start_module(self, name: str, **settings: str) -> None:
        """Start a module's main.py from its folder, as edgeAgent (or `up`) would."""
        folder = SOLUTION / "modules" / name
        self.spawn(name, [sys.executable, str(folder / "main.py")], self.module_env(name, **settings), folder)

    def start_alert(self) -> None:
        """The alert module: default rule bicycle >= 0.6 once an hour, the webhook (down at first)."""
        self.start_module(
            "alert",
            ALERT_CLASSES="bicycle",
            ALERT_MIN_CONFIDENCE="0.6",
            ALERT_COOLDOWN_SECONDS="3600",
            ALERT_MIN_CONSECUTIVE_FRAMES="1",
            ALERT_WEBHOOK_URL=f"http://127.0.0.1:{self.webhook_port}/hooks/alert?sig=NOT_FOR_LOGS",
            ALERT_WEBHOOK_MAX_BACKOFF_SECONDS="1",
            ALERT_QUEUE_DIR=str(self.queue_dir),
            ALERT_REPORT_INTERVAL_SECONDS="1",
        )
        wait_for(lambda: "alert module running" in self.log("alert"), 60, "the alert module")

    def stop(self, name: str) -> int:
        """Stop it."""
        process = self.processes.pop(name)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                return process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                return process.wait()
        return process.returncode

    def alerts(self, after: int = 0, cls: str | None = None) -> list[dict[str, Any]]:
        """`alerts` messages on $upstream with seq > after (of one class)."""
        found = []
        for item in list(self.upstream):
            if item["seq"] > after and item["moduleId"] == "alert" and item["output"] == "alerts":
                body = json.loads(item["body"])
                if cls is None or body["class"] == cls:
                    found.append({**item, "body": body})
        return found

    def last_seq(self) -> int:
        """The newest $upstream sequence number seen."""
        return max((item["seq"] for item in self.upstream), default=0)

    def reported(self) -> dict[str, Any]:
        """The alert module twin's reported properties."""
        return json.loads(self.cli("twin", "get", DEVICE, "alert"))["properties"]["reported"]

    def patch_rules(self, rules: Any) -> None:
        """Patch the desired `rules` of the alert module."""
        self.cli("twin", "patch", DEVICE, "alert", json.dumps({"rules": rules}))


@pytest.fixture(scope="module")
def solution(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Solution]:
    """The running solution for the tests of this file."""
    running = Solution(tmp_path_factory.mktemp("vision-alerts"))
    try:
        running.start_hub()
        running.start_alert()
        running.start_module(
            "classifier",
            CAMERA_PATH=str(running.video),
            MODEL_NAME="nanodet-m-416",
            LOOP_VIDEO="True",
            VIDEO_REALTIME="True",
            LOG_EVERY_FRAME="True",  # the tests read the frame index of its `frame N |` lines
            INTRA_OP_THREADS="1",
            DETECTIONS_MAX_PER_SECOND="50",
            DETECTIONS_MIN_CONFIDENCE="0.3",
            DETECTIONS_REPEAT_SECONDS="0",
            PREVIEW_PORT="0",
        )
        yield running
    finally:
        for name in reversed(list(running.processes)):  # modules first, the hub last
            running.stop(name)
        for name in ("emulator", "alert", "classifier"):
            path = running.tmp / f"{name}.log"
            if path.exists():
                print(f"---- {name} (last lines)\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:]))


def test_default_rule_from_env_raises_one_alert_upstream_with_its_properties(solution: Solution) -> None:
    first = wait_for(lambda: solution.alerts(cls="bicycle"), 90, "a bicycle alert on $upstream")[0]
    assert first["properties"]["alertClass"] == "bicycle"
    assert 0.6 <= float(first["properties"]["confidence"]) <= 1
    body = first["body"]
    assert body["class"] == "bicycle" and body["confidence"] >= 0.6
    assert body["model"] == "nanodet-m-416" and body["modelVersion"] == "1"
    assert body["device"] == DEVICE and body["module"] == "alert"
    assert body["frameTime"].endswith("Z") and body["time"].endswith("Z")
    assert body["rule"] == {
        "class": "bicycle",
        "minConfidence": 0.6,
        "cooldownSeconds": 3600.0,
        "minConsecutiveFrames": 1,
    }
    # the classifier's detections are not on $upstream themselves: the route takes them to the alert module
    assert not [m for m in solution.upstream if m["moduleId"] == "classifier"]
    # bicycles stay in view for two more loops: the cooldown (3600 s) holds every further alert back
    time.sleep(3.5)
    assert len(solution.alerts(cls="bicycle")) == 1
    reported = wait_for(
        lambda: (r := solution.reported()).get("counts", {}).get("bicycle", {}).get("suppressedByCooldown") and r,
        30,
        "counts in the reported properties",
    )
    assert reported["rulesSource"] == "environment"
    assert "rulesError" not in reported  # reported as null: the twin drops it
    assert reported["counts"]["bicycle"]["alerts"] == 1


def test_a_twin_patch_changes_rules_live_and_consecutive_frames_are_respected(solution: Solution) -> None:
    four = [{"class": "dog", "minConfidence": 0.3, "cooldownSeconds": 0, "minConsecutiveFrames": 4}]
    solution.patch_rules(four)
    wait_for(lambda: solution.reported().get("rules") == four, 30, "the new rules reported")
    assert solution.reported()["rulesSource"] == "twin"
    marker = solution.last_seq()
    time.sleep(4.5)  # three loops: the dog is never in 4 consecutive frames, bicycles have no rule now
    assert solution.alerts(after=marker) == []
    three = [{**four[0], "minConsecutiveFrames": 3}]
    solution.patch_rules(three)
    wait_for(lambda: solution.reported().get("rules") == three, 30, "the new rules reported")
    alerts = wait_for(
        lambda: len(solution.alerts(after=marker)) >= 3 and solution.alerts(after=marker),
        30,
        "dog alerts once 3 frames are enough",
    )
    for alert in alerts:
        assert alert["properties"]["alertClass"] == "dog"
        assert alert["body"]["consecutiveFrames"] == 3
        assert alert["body"]["frameIndex"] % LOOP_FRAMES == 2  # frames 0, 1, 2 are the only run of three
    # without a cooldown, an alert every loop (1.5 s apart)
    times = [a["enqueuedTime"] for a in alerts]
    assert min(b - a for a, b in zip(times, times[1:])) < 2.5


def test_cooldown_spaces_the_alerts_of_a_class(solution: Solution) -> None:
    rules = [{"class": "dog", "minConfidence": 0.3, "cooldownSeconds": 2.5, "minConsecutiveFrames": 3}]
    solution.patch_rules(rules)
    wait_for(lambda: solution.reported().get("rules") == rules, 30, "the new rules reported")
    marker = solution.last_seq()
    alerts = wait_for(
        lambda: len(solution.alerts(after=marker)) >= 3 and solution.alerts(after=marker), 40, "three dog alerts"
    )
    times = [a["enqueuedTime"] for a in alerts]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) >= 2.4, gaps  # loops come every 1.5 s: every other one is held back


def test_an_invalid_patch_is_reported_and_the_previous_rules_stay(solution: Solution) -> None:
    before = solution.reported()["rules"]
    solution.patch_rules([{"class": "dog", "minConfidence": 7}])
    reported = wait_for(lambda: (r := solution.reported()).get("rulesError") and r, 30, "rulesError reported")
    assert "rules[0].minConfidence" in reported["rulesError"]
    assert reported["rules"] == before
    marker = solution.last_seq()
    wait_for(lambda: solution.alerts(after=marker, cls="dog"), 30, "alerts under the previous rules")


def test_webhook_alerts_queued_while_it_was_down_arrive_after_a_restart(solution: Solution) -> None:
    queued = sorted(solution.queue_dir.glob("*.json"))
    sent_upstream = solution.alerts()
    assert queued, "nothing queued for the webhook while it was down"
    assert len(queued) == len(sent_upstream) or len(queued) == len(sent_upstream) - 1  # one may be in flight
    queued_ids = [json.loads(path.read_text())["id"] for path in queued]
    assert solution.stop("alert") == 0  # a restart: the queue lives on disk
    assert "NOT_FOR_LOGS" not in solution.log("alert")
    webhook = Webhook(solution.webhook_port)
    try:
        solution.start_alert()
        wait_for(lambda: len(webhook.events) >= len(queued_ids), 30, "the queued alerts at the webhook")
        assert [e["id"] for e in webhook.events[: len(queued_ids)]] == queued_ids  # oldest first, none lost
        first = webhook.events[0]
        assert first["eventType"] == "EdgeVision.Alert" and first["dataVersion"] == "1.0"
        assert first["subject"] == f"devices/{DEVICE}/modules/alert/alerts/{first['data']['class']}"
        assert first["data"]["device"] == DEVICE
        # and new alerts go straight through
        solution.patch_rules([{"class": "dog", "minConfidence": 0.3, "cooldownSeconds": 0, "minConsecutiveFrames": 3}])
        count = len(webhook.events)
        wait_for(lambda: len(webhook.events) > count, 30, "a new alert at the webhook")
        wait_for(lambda: not list(solution.queue_dir.glob("*.json")), 10, "an empty queue")
    finally:
        webhook.stop()


def last_frame(log: str) -> int:
    """The index in the classifier's last `frame N |` line."""
    lines = [line for line in log.splitlines() if line.startswith("frame ")]
    return int(lines[-1].split()[1]) if lines else -1


def test_with_edgehub_away_detections_are_dropped_and_counted_and_inference_keeps_its_pace(
    solution: Solution,
) -> None:
    solution.stop("monitor")
    assert solution.stop("emulator") == 0
    before = last_frame(solution.log("classifier"))
    time.sleep(6)
    after = last_frame(solution.log("classifier"))
    assert after - before >= 40, f"inference slowed while edgeHub was away: {after - before} frames in 6 s"
    assert solution.stop("classifier") == 0
    summary = next(line for line in solution.log("classifier").splitlines() if "detections output: {" in line)
    counters = json.loads(summary.split("detections output: ", 1)[1].replace("'", '"'))
    # the SDK refuses sends while it cannot connect (send_failed), or they wait and the bounded queue drops the
    # oldest (dropped): either way counted, never piled up
    assert counters["dropped"] + counters["send_failed"] >= 20, counters
    assert counters["queued"] <= 16
