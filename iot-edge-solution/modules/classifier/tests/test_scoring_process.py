"""The classifier process serves the scoring API on SCORING_PORT while its pipeline runs, and stops it on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from solution_testkit import free_port

MODULE = Path(__file__).resolve().parents[1] / "main.py"
SOLUTION = Path(__file__).resolve().parents[3]
KEEP = ("PATH", "HOME", "LANG", "SYSTEMROOT", "TMPDIR")


def get(url: str, data: bytes | None = None) -> tuple[int, bytes]:
    """Status and body (errors included)."""
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "image/png"} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_the_module_scores_over_http_while_it_runs(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k in KEEP}
    env.update(
        PYTHONUNBUFFERED="1",
        CAMERA_PATH=str(SOLUTION / "media" / "demo.mp4"),
        LOOP_VIDEO="True",
        VIDEO_REALTIME="True",
        SCORING_HOST="127.0.0.1",
        SCORING_PORT=str(port),
        MODEL_STORE=str(tmp_path / "store"),
    )
    with subprocess.Popen(
        [sys.executable, str(MODULE)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            deadline = time.monotonic() + 120
            ready = 0
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    ready = get(f"http://127.0.0.1:{port}/readyz")[0]
                except OSError:
                    ready = 0
                if ready == 200:
                    break
                time.sleep(0.2)
            assert ready == 200, "the scoring API never became ready"
            status, body = get(f"http://127.0.0.1:{port}/score", (SOLUTION / "media" / "coffee.png").read_bytes())
            answer = json.loads(body)
            assert status == 200 and answer["predictions"][0]["label"] == "espresso"
            assert answer["model_name"] == "efficientnet-lite0" and answer["model_version"] == "1"
            metrics = get(f"http://127.0.0.1:{port}/metrics")[1].decode()
            assert 'model_active_info{name="efficientnet-lite0",version="1"} 1.0' in metrics
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=60)
        finally:
            process.kill()
    assert process.returncode == 0, err
    assert not (tmp_path / "store").exists()  # nothing installed, nothing written
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        still_listening = True
    except OSError:
        still_listening = False
    assert not still_listening
