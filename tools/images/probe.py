"""Runs INSIDE a module image (or the dev container), as the image's own user, for tools/images/images_check.py.
Standard library only: it must run on any image with a Python. Prints one JSON line prefixed with PROBE_RESULT:
who it runs as, what is writable, whether a mapped video-group device node opens, the installed distributions,
and what the image's command did (started and answered, or stopped naming what is missing).

Usage: python probe.py SPEC_JSON   where SPEC_JSON holds
  {"command": [...], "workdir": "...", "device": "/dev/video0" | null, "writable_env": ["ENGINE_CACHE_DIR", ...],
   "expect": "serve" | "report" | "none", "timeout": 120, "tools": [[argv...], ...]}
"""

from __future__ import annotations

import grp
import importlib.metadata
import json
import os
import pwd
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

MARKER = "PROBE_RESULT:"
# A start that prints one of these is a defect (ONNX Runtime's HOME warning, Python warnings, crashes).
BAD_OUTPUT = re.compile(r"warning|traceback|permission denied", re.IGNORECASE)
# ... except the module's own report of what is missing (no IoT Edge environment, a required variable unset).
MISSING_REPORT = re.compile(rb"not set|is required")


def identity() -> dict[str, Any]:
    """Who the image's USER makes us: uid, gid, supplementary group names, HOME."""
    uid = os.getuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = None
    groups = sorted({grp.getgrgid(g).gr_name for g in os.getgroups() if _group_exists(g)})
    return {"uid": uid, "gid": os.getgid(), "user": name, "groups": groups, "home": os.environ.get("HOME")}


def _group_exists(gid: int) -> bool:
    try:
        grp.getgrgid(gid)
        return True
    except KeyError:
        return False


def writable(path: str | None) -> str:
    """'ok', or why a file cannot be created in `path`."""
    if not path:
        return "not set"
    try:
        with tempfile.NamedTemporaryFile(dir=path):
            return "ok"
    except OSError as e:
        return f"{type(e).__name__}: {e.strerror}"


def open_device(path: str | None) -> str:
    """'ok' when the mapped device node opens for reading and writing, else the error."""
    if not path:
        return "not mapped"
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError as e:
        return f"{type(e).__name__}: {e.strerror}"
    os.close(fd)
    return "ok"


def distributions() -> dict[str, str]:
    """Installed distributions (normalised name -> version), what `pip freeze` would list."""
    found = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found[re.sub(r"[-_.]+", "-", name).lower()] = dist.version
    return found


def _get(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 (a local URL)
            return answer.status, answer.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def serve_checks(port: int, sample: Path, deadline: float, process: subprocess.Popen) -> dict[str, Any]:
    """Wait for /healthz, then POST a photo to /score; what each answered."""
    result: dict[str, Any] = {}
    base = f"http://127.0.0.1:{port}"
    while time.monotonic() < deadline and process.poll() is None:
        try:
            status, _ = _get(base + "/healthz")
            result["healthz"] = status
            break
        except OSError:
            time.sleep(0.5)
    else:
        result["healthz"] = "no answer"
        return result
    while time.monotonic() < deadline:
        status, body = _get(base + "/score", sample.read_bytes(), {"Content-Type": "image/jpeg"})
        if status != 503:  # 503: the model is still warming up
            break
        time.sleep(0.5)
    result["score_status"] = status
    try:
        answer = json.loads(body)
        top = (answer.get("results") or answer.get("predictions") or [None])[0]
        result["score"] = top if top is not None else answer
    except ValueError:
        result["score"] = body[:200].decode(errors="replace")
    return result


def run_command(spec: dict[str, Any]) -> dict[str, Any]:
    """Start the image's command in its working directory; for 'serve' check the scoring API and that frames are
    processed, then stop it with SIGTERM (as the IoT Edge runtime does); for 'exit' wait for it to end."""
    timeout = float(spec.get("timeout", 120))
    deadline = time.monotonic() + timeout
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(  # pylint: disable=consider-using-with  # stopped below on every path
            spec["command"],
            cwd=spec["workdir"],
            env={**os.environ, **spec.get("env", {})},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        result: dict[str, Any] = {}
        try:
            if spec["expect"] == "serve":
                port = int(os.environ.get("SCORING_PORT", "8080"))
                result.update(serve_checks(port, Path(spec["sample"]), deadline, process))
                # Frames of the demo video go through the model: the console reports them.
                while time.monotonic() < deadline and process.poll() is None:
                    out.seek(0)
                    if re.search(rb"frame\s+\d+ \|", out.read()):
                        break
                    time.sleep(0.5)
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            elif spec["expect"] == "report":
                # It stops at once (a required variable unset) or runs on after saying what is missing.
                while time.monotonic() < deadline and process.poll() is None:
                    out.seek(0)
                    if MISSING_REPORT.search(out.read()):
                        time.sleep(2)
                        break
                    time.sleep(0.5)
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            process.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            result["timed_out"] = True
        out.seek(0)
        output = out.read().decode(errors="replace")
    result["exit_code"] = process.returncode
    result["output_tail"] = output[-3000:]
    result["bad_lines"] = [
        line for line in output.splitlines() if BAD_OUTPUT.search(line) and not MISSING_REPORT.search(line.encode())
    ][:10]
    return result


def run_tool(argv: list[str]) -> str:
    """'ok: <first line of its output>' when the command succeeds, else why not."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{type(e).__name__}: {e}"
    first = (done.stdout or done.stderr).strip().splitlines()[:1]
    return f"{'ok' if done.returncode == 0 else f'exit {done.returncode}'}: {first[0] if first else ''}"


def main() -> int:
    """Probe as the spec (argv[1]) says; the report goes to stdout after the marker."""
    spec = json.loads(sys.argv[1])
    report: dict[str, Any] = {
        "identity": identity(),
        "home_writable": writable(os.environ.get("HOME")),
        "writable": {name: writable(os.environ.get(name)) for name in spec.get("writable_env", [])},
        "device": open_device(spec.get("device")),
        "distributions": distributions(),
    }
    report["tools"] = {" ".join(argv): run_tool(argv) for argv in spec.get("tools", [])}
    if spec.get("expect", "none") != "none":
        report["command"] = run_command(spec)
    print(MARKER + json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
