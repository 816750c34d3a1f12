"""Faults across the whole solution under load: the solution runs as `make run` runs it (Azurite, the emulator
with its local edgeAgent starting every module of the deployment manifest, the sign-in front-end), users sign in
through the front-end's HTTP API, alerts go to a local webhook receiver, and faults come at random but
reproducible moments (the seed is printed and accepted by --seed):

- kill: SIGKILL of authrequest, the classifier, alert (restarted by the emulator's agent per their restartPolicy),
  the front-end and Azurite (restarted by this harness, as a service manager would);
- stop: SIGSTOP of authrequest, the classifier, alert, the front-end (its process group) or the hub for
  --stop-seconds (65 s: over the SDKs' 60 s MQTT keep-alive), then SIGCONT (a hung peer);
- away: the hub (the emulator's process) stopped for 30 s while the modules keep working, then SIGCONT;
- corrupt: a damaged state file, as a crash, a full disk or a bad copy leaves it: the emulator's database (the
  hub killed, its file cut in half, the hub started again: it must refuse with a clear error, then the harness
  moves the file aside as the error says and the hub rebuilds identities and the deployment from the manifest);
  the alert module's queue (a record cut short and the .tmp of a write cut short, then the module killed: the
  record must be moved to rejected/ and both reported in its log); the classifier's model store (a partial
  package and a half-unpacked model of a next version where an update downloads, then the module killed: removed
  with a warning at its restart, never served);
- kill hub: SIGKILL of the emulator (the hub and its agent), started again by this harness; its modules run on
  until the new agent stops them and starts its own;
- an over-the-air model update (`edgevision publish-model`, version 2) published once among the faults.

After the last fault the load stops, the requests still pending run out, and the invariants are checked:

- lost requests: every ProcessRequest that authrequest queued (answered 200) has its result.json, whose status
  is found or expired; a result the classifier wrote within Azurite's autosave window (5 s) before Azurite was
  SIGKILLed may be lost by Azurite (results_lost_by_azurite_kill, see AZURITE_AUTOSAVE_S); any other is a loss;
- stray results: no result.json and no image for a forged request (one signed with another key, one unsigned,
  put straight on the queue every --forge-every seconds during the faults), nor for any request that neither
  authrequest queued nor the front-end asked for; a request whose answer was lost when authrequest or the hub
  was killed just after it queued it may still be served (counted: results_for_requests_whose_answer_was_lost);
- duplicates upstream: `verification` messages beyond one per request, each carrying the request id as $.mid,
  over every upstream message of the run (the damaged hub database's are read before it is damaged);
- offline: while the hub is away or stopped the classifier keeps processing frames and answering requests, and
  the verification of each request answered meanwhile reaches the hub afterwards;
- users: every sign-in ends in a final answer, a page that says "try again", or the browser's error while the
  front-end itself is down (killed or stopped); never a page waiting forever;
- lost alerts: alerts the alert module accepted that never reached the webhook (duplicates share an id);
- damaged state files: recovered or refused with the clear error in the log (see corrupt above);
- recovery: each part back (probed as a user of it would) within --recovery-bound seconds of its fault (default:
  derived from the outages and the agent's back-off, see recovery_bound);
- left over: no process of the run alive after the stop.

Needs the ports of `make run` (8883, 8443, 10000-10002, 8000, 8080, 5012): run it inside `unshare --net`:

    unshare --net bash -c 'ip link set lo up; .venv/bin/python tools/chaos.py --faults-per-kind 1'

Prints one JSON object (the figures and the invariants) on stdout; --json writes it to a file too. The exit status
is 0 when every invariant holds, 1 when one does not, 2 when the solution did not start.
"""

# pylint: disable=too-many-lines  # one harness: the parts, the faults, the load and the checks of one run

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import httpx
from azure.core.exceptions import AzureError
from azure.storage.blob import ContainerClient
from azure.storage.queue import QueueClient

from edgehub_emulator.azurite import Azurite
from edgevision.security import ModuleKey, SignedRequest, sign_request

log = logging.getLogger("chaos")
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MANIFEST = ROOT / "iot-edge-solution" / "deployment.template.json"
DEVICE = "edge-device"
MODULES = ("authrequest", "classifier", "alert")
MODEL = "efficientnet-lite0"  # the classifier's MODEL_NAME in .env_template
KILL_PARTS = (*MODULES, "frontend", "azurite", "hub")
STOP_PARTS = (*MODULES, "frontend", "hub")
CORRUPT_PARTS = ("hub", "alert", "classifier")
KINDS = (
    *(("kill", p) for p in KILL_PARTS),
    *(("stop", p) for p in STOP_PARTS),
    ("away", "hub"),
    *(("corrupt", p) for p in CORRUPT_PARTS),
)
HUB_AWAY_S = 30.0
HUB_DB = "state.sqlite3"  # the emulator's state database (edgehub_emulator.emulator.DB_FILE)
FINAL_STATES = {"found", "expired", "rejected", "failed"}
# what the page says when the session is gone: "Sign in again" (a clear answer too)
CLEAR_STATES = FINAL_STATES | {"signed-out"}
# Azurite (the local stand-in for Azure Storage) keeps its blob and queue metadata in LokiJS databases saved every
# 5 s (autosaveInterval 5000 in its LokiBlobMetadataStore and LokiQueueMetadataStore): a SIGKILL loses what it
# acknowledged in the last 5 s. That is the stand-in's durability, not the solution's (Azure Storage's acknowledged
# writes are durable), so a result lost that way is counted apart; one written longer before a kill is a loss.
AZURITE_AUTOSAVE_S = 5.0
# The recovery bound follows from the outages the harness causes, not from a preset: a part must be back within
# the longest outage (a stop, --stop-seconds; the hub away, 30 s) or the agent's longest restart back-off (IoT
# Edge's unit * 2^(restarts - 1) for a module's n-th restart), plus RECONNECT_S for the SDKs to reconnect after
# it (their connection retry backs off to about 20 s: the 200-fault run of 2026-12-05 measured at most 19 s past
# a 65 s stop) and START_S for a process to start and answer (the classifier loads its model). With the defaults
# (65 s stops, 10 s unit and at most 2 restarts of a module in `make test`; 0.25 s and 8 in the bench) that is
# 65 + 40 + 15 = 120 s.
RECONNECT_S = 40.0
START_S = 15.0
FRONTEND_URL = "http://127.0.0.1:8000"
USER_OBJECT = "espresso"  # what the demo video shows half of the time
REQUEST_SECONDS = 30
# A sign-in page must have answered by the request's expiry plus the front-end's grace (10 s) plus this margin.
ANSWER_MARGIN_S = 30
QUEUED = re.compile(r"authrequest\s*\|.*request ([\w.:-]+) queued")
# every request the front-end asked authrequest to sign and queue: one whose answer was lost (authrequest or the hub
# killed between the queue's send and the reply, so neither the 200 nor the "queued" line came) may still be served
INVOKED = re.compile(r"invoking ProcessRequest on \S+ for request ([\w.:-]+)")
ANSWERED = re.compile(r"classifier\s*\|.*request ([\w.:-]+) (?:found|expired|rejected): ")
# the same with the classifier's own time stamp (its log format's asctime: local time)
ANSWERED_AT = re.compile(
    r"^classifier\s*\|.*?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) .*?request ([\w.:-]+) (found|expired|rejected): ",
    re.M,
)
ALERTED = re.compile(r"alert\s*\|.*alert: .*, id ([0-9a-f-]+)\)")


def recovery_bound(stop_seconds: float, backoff_unit: float, restarts: int) -> float:
    """The seconds a part may take to come back (see RECONNECT_S): the longest outage or back-off, plus the SDKs'
    reconnection and a process's start."""
    backoff = backoff_unit * 2 ** max(0, restarts - 1)
    return round(max(stop_seconds, HUB_AWAY_S, backoff) + RECONNECT_S + START_S, 1)


def _local_epoch(stamp: str, millis: str) -> float:
    """A log line's asctime (local time) as seconds since the epoch."""
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").timestamp() + int(millis) / 1000


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    """Every descendant of `pid` (from /proc; the pid namespace is the host's, so never match by name alone)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="utf-8")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def _wait(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


class Webhook(ThreadingHTTPServer):
    """The alert webhook's receiver: keeps the id of every event it is sent, and when it first came."""

    daemon_threads = True

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.first_seen: dict[str, float] = {}
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _WebhookHandler)

    @property
    def url(self) -> str:
        """Where the alert module posts."""
        return f"http://127.0.0.1:{self.server_address[1]}/alerts"


class _WebhookHandler(BaseHTTPRequestHandler):
    server: Webhook

    def do_POST(self) -> None:  # pylint: disable=invalid-name  # http.server's name
        """Record the events' ids and answer 200."""
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            events = json.loads(body)
        except ValueError:
            events = []
        with self.server.lock:
            for event in events if isinstance(events, list) else [events]:
                if isinstance(event, dict):
                    self.server.ids.append(str(event.get("id")))
                    self.server.first_seen.setdefault(str(event.get("id")), time.monotonic())
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:  # quiet
        return None


@dataclass
class Attempt:
    """One sign-in: the first factor, then the second factor's page until it answers."""

    user: str
    started: float
    state: str = "unanswered"
    seconds: float = 0.0
    failed_at: float | None = None  # when the front-end could not be reached or refused the sign-in
    clear: bool = True  # a refused sign-in's page says what to do ("try again")
    login_s: float = 0.0  # how long the first factor's page took
    error: str = ""  # why the front-end could not be reached


@dataclass
class Fault:
    """One injected fault and how long its part took to come back."""

    kind: str
    part: str
    at: float
    recovery_s: float | None = None
    wall: float = field(default_factory=time.time)  # `at` on the wall clock (the modules' log times)
    outage_s: float = 0.0  # how long a stop or the hub away lasted
    detail: dict[str, Any] = field(default_factory=dict)  # what a corrupt or away fault found


@dataclass
class Run:  # pylint: disable=too-many-instance-attributes,too-many-public-methods  # the run's parts, load, faults
    """The solution under faults; see the module docstring."""

    state: Path
    seed: int
    users: int = 10
    stop_seconds: float = 65.0
    backoff_unit: float = 10.0  # the agent's restart back-off unit (IoT Edge's: 10 s)
    span: float = 0.0  # with overlap: each part's faults spread over about this many seconds
    forge_every: float = 20.0  # seconds between two forged requests during the faults
    bound: float = 120.0  # the recovery bound (set by run)
    log_path: Path = field(init=False)
    attempts: list[Attempt] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.hub_state = self.state / "hub"
        self.began = time.monotonic()
        self.log_path = self.state / "solution.log"
        self.webhook = Webhook()
        self.azurite = Azurite(self.state / "azurite")
        self.hub: subprocess.Popen[bytes] | None = None
        self.frontend: subprocess.Popen[bytes] | None = None
        self.frontend_env: dict[str, str] = {}
        self.passwords: dict[str, str] = {}
        self.load_stop = threading.Event()
        self.lock = threading.Lock()
        self.started_pids: set[int] = set()
        self.update: dict[str, Any] = {}
        self.orphans: set[int] = set()  # modules of a killed hub: its next agent must stop them
        self.forged: list[str] = []  # every forged request id sent (or tried: an answer lost may hide a send)
        self.upstream_saved: list[dict[str, Any]] = []  # upstream messages read from a hub database before damage
        self.hub_rebuilt_at: list[float] = []  # when the hub started again over a new database
        self.corruptions: list[dict[str, Any]] = []  # what each corrupt fault expects in the log and on disk

    # -- parts -----------------------------------------------------------------------------------------------
    def env_file(self) -> Path:
        """The .env_template with this run's webhook, state folders and short times."""
        path = self.state / "chaos.env"
        text = (ROOT / ".env_template").read_text(encoding="utf-8")
        overrides = {
            "ALERT_WEBHOOK_URL": self.webhook.url,
            "ALERT_COOLDOWN_SECONDS": "5",
            "FRONTEND_DATABASE": str(self.state / "frontend.sqlite3"),
            "FRONTEND_SECRET_KEY": secrets.token_urlsafe(32),  # sessions survive a front-end restart
            "FRONTEND_REQUEST_SECONDS": str(REQUEST_SECONDS),
            "FRONTEND_RETRY_USER_LIMIT": "1000",
            "FRONTEND_RETRY_SESSION_LIMIT": "1000",
            "PREVIEW_PORT": "0",
            "MODEL_STORE": str(self.state / "model-store"),
            "LOG_LEVEL": "INFO",
        }
        lines = [ln for ln in text.splitlines() if ln.split("=", 1)[0].strip() not in overrides]
        lines += [f"{name}={value}" for name, value in overrides.items()]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        path.chmod(0o600)
        return path

    def emulator(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`edgehub-emulator ARGV --state` of this run."""
        return subprocess.run(
            [str(BIN / "edgehub-emulator"), *argv, "--state", str(self.hub_state)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self) -> None:
        """Azurite, the hub with its modules (tools/solution_up.py, as `make run`), the users, the front-end."""
        self.state.mkdir(parents=True, exist_ok=True)
        threading.Thread(target=self.webhook.serve_forever, daemon=True).start()
        env_file = self.env_file()
        self.azurite.start()
        self.start_hub()
        _wait(self.authrequest_answers, 300, "authrequest to answer ProcessRequest")
        service = json.loads(self.emulator("env", "authrequest", "--format", "json").stdout)
        values = dict(line.split("=", 1) for line in env_file.read_text(encoding="utf-8").splitlines() if "=" in line)
        self.frontend_env = {
            **{k: v for k, v in values.items() if v and not k.startswith("#")},
            **os.environ,
            "IOTHUB_CONNECTION_STRING": service["IOTHUB_CONNECTION_STRING"],
            "REQUESTS_CA_BUNDLE": service["REQUESTS_CA_BUNDLE"],
        }

        def add(index: int) -> None:
            name, password = f"user{index:02d}", secrets.token_urlsafe(12)
            subprocess.run(
                [str(BIN / "frontend"), "users", "add", name, "--object", USER_OBJECT, "--threshold", "50",
                 "--password-stdin"],
                input=password + "\n", env=self.frontend_env, capture_output=True, text=True, check=True, timeout=120,
            )  # fmt: skip
            with self.lock:
                self.passwords[name] = password

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(add, range(self.users)))
        self.start_frontend()
        # the users start once the front-end answers (they met a port not yet bound: counted as unreachable)
        _wait(self.frontend_healthy, 120, "the front-end")
        _wait(lambda: self.module_pid("classifier") is not None and self.classifier_ready(), 300, "the classifier")

    def start_hub(self) -> None:
        """tools/solution_up.py with the emulator's `up` (as `make run`); Azurite is this run's, so solution_up
        never starts one of its own (--no-azurite): restarted while this run's Azurite is killed, it would start a
        second Azurite with another data folder, and the results written there would look lost."""
        with self.log_path.open("ab") as out:
            self.hub = subprocess.Popen(  # pylint: disable=consider-using-with
                [sys.executable, str(ROOT / "tools" / "solution_up.py"), "--state", str(self.hub_state),
                 "--env-source", str(self.state / "chaos.env"), "--no-azurite", "--",
                 str(BIN / "edgehub-emulator"), "up",
                 str(MANIFEST), "--state", str(self.hub_state), "--backoff-unit", str(self.backoff_unit),
                 "--upstream-max-messages", "1000000"],  # every upstream message is checked: keep them all
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT,
            )  # fmt: skip

    def kill_hub(self) -> None:
        """SIGKILL of the emulator (the hub and its agent): its modules run on without it; solution_up ends with
        it and is started again (as a service manager would), and the new agent stops the old modules before it
        starts its own."""
        self.hub_down()
        self.start_hub()

    def hub_down(self) -> None:
        """SIGKILL of the emulator; solution_up ends with it (its modules run on, orphans for the next agent)."""
        assert self.hub is not None
        pid = self.hub_pid()
        self.orphans |= {p for p in (self.module_pid(m) for m in MODULES) if p is not None}
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        try:
            self.hub.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.hub.pid, signal.SIGKILL)
            self.hub.wait()

    def module_path(self, name: str, module: str) -> Path:
        """A module's state folder setting (MODEL_STORE, ALERT_QUEUE_DIR) as solution_up handed it to the hub."""
        values = dict(
            line.split("=", 1)
            for line in (self.hub_state / "up.env").read_text(encoding="utf-8").splitlines()
            if "=" in line and not line.startswith("#")
        )
        path = Path(values[name])
        return path if path.is_absolute() else ROOT / "iot-edge-solution" / "modules" / module / path

    def start_frontend(self) -> None:
        """`frontend serve` (again), and wait for its health."""
        with self.log_path.open("ab") as out:
            self.frontend = subprocess.Popen(  # pylint: disable=consider-using-with
                [str(BIN / "frontend"), "serve"],
                env=self.frontend_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.started_pids.add(self.frontend.pid)

    def module_pid(self, name: str) -> int | None:
        """The pid of module `name`'s process under the hub (None while it is down)."""
        if self.hub is None:
            return None
        marker = f"modules/{name}/main.py"
        for pid in _children(self.hub.pid):
            if marker in _cmdline(pid):
                return pid
        return None

    def hub_pid(self) -> int | None:
        """The pid of `edgehub-emulator up` (the hub and its agent) under tools/solution_up.py."""
        if self.hub is None:
            return None
        return next((pid for pid in _children(self.hub.pid) if "edgehub-emulator up" in _cmdline(pid)), None)

    def authrequest_answers(self) -> bool:
        """ProcessRequest without fields is answered (400: `invoke` exits 1 for an answer that is not 2xx, 0 in
        older emulators) once authrequest is connected; 404 while it is not (exit 2)."""
        try:
            return self.emulator("invoke", DEVICE, "authrequest", "ProcessRequest", "--payload", "{}",
                                 "--timeout", "5", timeout=30).returncode in (0, 1)  # fmt: skip
        except subprocess.TimeoutExpired:
            return False

    @staticmethod
    def classifier_ready() -> bool:
        """The scoring API says a model is loaded."""
        try:
            return httpx.get("http://127.0.0.1:8080/readyz", timeout=3).status_code == 200
        except httpx.HTTPError:
            return False

    @staticmethod
    def frontend_healthy() -> bool:
        """The front-end answers its health check."""
        try:
            return httpx.get(f"{FRONTEND_URL}/healthz", timeout=3).status_code == 200
        except httpx.HTTPError:
            return False

    def healthy(self, part: str, old_pid: int | None = None) -> bool:  # pylint: disable=too-many-return-statements
        """`part` is back, as a user of it would see."""
        if part in MODULES:
            pid = self.module_pid(part)
            if pid is None or pid == old_pid:
                return False
            if part == "authrequest":
                return self.authrequest_answers()
            if part == "classifier":
                return self.classifier_ready()
            return True
        if part == "frontend":
            return self.frontend_healthy()
        if part == "hub":  # a new authrequest under a new hub after a kill (the killed hub's is stopped)
            return self.module_pid("authrequest") is not None and self.authrequest_answers()
        return _listening(self.azurite.blob_port) and _listening(self.azurite.queue_port)

    # -- faults ----------------------------------------------------------------------------------------------
    def inject(self, kind: str, part: str, bound: float) -> Fault:
        """One fault, then wait (up to `bound` s) until the part is back; the fault with its recovery time."""
        fault = Fault(kind, part, time.monotonic())
        log.info("fault: %s %s", kind, part)
        old_pid: int | None = None
        if kind == "corrupt":
            old_pid = self.corrupt(fault)
        elif kind == "kill":
            if part in MODULES:
                old_pid = self.module_pid(part)
                if old_pid is not None:
                    os.kill(old_pid, signal.SIGKILL)
            elif part == "frontend" and self.frontend is not None:
                os.killpg(self.frontend.pid, signal.SIGKILL)
                self.frontend.wait()
                self.start_frontend()
            elif part == "hub":
                self.kill_hub()
            elif part == "azurite" and self.azurite.process is not None:
                os.killpg(self.azurite.process.pid, signal.SIGKILL)
                self.azurite.process.wait()
                self.azurite.process = None
                self.azurite.start()
        else:
            self.stop_for(fault, HUB_AWAY_S if kind == "away" else self.stop_seconds)
        start = fault.at
        try:
            _wait(lambda: self.healthy(part, old_pid), bound, f"{part} after {kind}")
            fault.recovery_s = round(time.monotonic() - start, 2)
        except TimeoutError as e:
            log.error("%s", e)
        self.faults.append(fault)
        return fault

    def stop_for(self, fault: Fault, seconds: float) -> None:
        """SIGSTOP of the part (the front-end's whole process group), SIGCONT after `seconds`; while the hub is
        stopped, the classifier's frame rate is read half-way (it must keep processing offline)."""
        part = fault.part
        if part == "frontend":
            pid = self.frontend.pid if self.frontend is not None and self.frontend.poll() is None else None
            send: Callable[[int, int], None] = os.killpg
        else:
            pid, send = (self.hub_pid() if part == "hub" else self.module_pid(part)), os.kill
        if pid is None:
            return
        send(pid, signal.SIGSTOP)
        began = time.monotonic()
        if part == "hub":
            time.sleep(seconds / 2)
            fault.detail["pipeline_fps"] = self.pipeline_fps()
        time.sleep(max(0.0, seconds - (time.monotonic() - began)))
        try:
            send(pid, signal.SIGCONT)
        except ProcessLookupError:  # another lane killed it while it was stopped: its restart is awaited
            log.info("%s ended while stopped", part)
        fault.outage_s = round(time.monotonic() - began, 1)

    @staticmethod
    def pipeline_fps() -> float | None:
        """The classifier's pipeline results per second (its /metrics gauge); None while it does not answer."""
        try:
            text = httpx.get("http://127.0.0.1:8080/metrics", timeout=3).text
        except httpx.HTTPError:
            return None
        found = re.search(r"^pipeline_fps (\S+)$", text, re.M)
        return float(found.group(1)) if found else None

    # -- damaged state files ---------------------------------------------------------------------------------
    def corrupt(self, fault: Fault) -> int | None:
        """Damage the part's state file as a crash, a full disk or a bad copy leaves it; what the part must do
        about it goes to self.corruptions (checked at the end). The pid the part had (it is killed)."""
        expect: dict[str, Any] = {"fault": f"corrupt:{fault.part}", "log_from": self.log_path.stat().st_size}
        self.corruptions.append(expect)
        number = len(self.corruptions)
        if fault.part == "hub":
            self.corrupt_hub(expect, number)
            return None
        if fault.part == "alert":
            self.corrupt_alert_queue(expect, number)
        else:
            self.corrupt_model_store(expect, number)
        old_pid = self.module_pid(fault.part)
        if old_pid is not None:  # planted first, then the kill: the restarted module finds them (no race)
            os.kill(old_pid, signal.SIGKILL)
        return old_pid

    def corrupt_hub(self, expect: dict[str, Any], number: int) -> None:
        """The hub killed, its database cut in half, the hub started again: it must refuse with its clear error;
        then, as that error says, the file is moved aside and the hub starts over a new database, with the
        identities (their keys derive from the seed) and the deployment from the manifest. The twins' desired and
        reported properties, the messages queued for modules and the upstream messages are in the old file: the
        upstream ones are read first (a back-end's consumer would have them), the model update is published again
        (check_update) and the modules report again when the new agent starts them."""
        self.hub_down()
        database = self.hub_state / HUB_DB
        self.save_upstream(database)
        size = database.stat().st_size
        os.truncate(database, size // 2)
        expect.update(damage=f"{HUB_DB} cut from {size} to {size // 2} bytes",
                      log=[f"{HUB_DB} is damaged"])  # fmt: skip  # StateError's message
        self.start_hub()
        assert self.hub is not None
        try:
            self.hub.wait(90)  # refused: `up` ends at once, and solution_up with it
        except subprocess.TimeoutExpired:
            expect["accepted"] = True  # it opened the damaged file: the check says so
            return
        aside = database.with_name(f"{HUB_DB}.damaged-{number}")
        for suffix in ("", "-wal", "-shm"):
            if database.with_name(HUB_DB + suffix).exists():
                os.replace(database.with_name(HUB_DB + suffix), aside.with_name(aside.name + suffix))
        log.info("the hub refused its damaged database; moved it to %s and started the hub again", aside.name)
        self.hub_rebuilt_at.append(time.monotonic())
        self.start_hub()

    def save_upstream(self, database: Path) -> None:
        """Every upstream message in the (closed) hub database, as `monitor --raw` prints them."""
        connection = sqlite3.connect(database)
        try:
            rows = connection.execute("SELECT seq, enqueued_at, output, properties FROM upstream").fetchall()
        finally:
            connection.close()  # the last connection: its WAL goes into the file
        self.upstream_saved += [
            {"seq": seq, "enqueuedTime": at, "output": output, "properties": json.loads(props)}
            for seq, at, output, props in rows
        ]

    def corrupt_alert_queue(self, expect: dict[str, Any], number: int) -> None:
        """Two files in the alert queue: a record cut short (as a damaged disk or a bad copy leaves it: the module
        writes each one whole, fsynced, then renamed) that must be moved to rejected/ with a warning, and the .tmp
        of a write cut short by a crash (never accepted) that must be removed with a warning; oldest first, so
        they are read before any real alert."""
        queue = self.module_path("ALERT_QUEUE_DIR", "alert")
        queue.mkdir(parents=True, exist_ok=True)
        stamp = time.time_ns() - 10**15  # older than every alert of the run
        record = json.dumps({"id": f"chaos-corrupt-{number}", "eventType": "EdgeVision.Alert", "data": {}})
        name = f"{stamp:020d}-000000-chaos{number:03d}"
        (queue / f"{name}.json").write_text(record[: len(record) // 2], encoding="utf-8")
        (queue / f"{name}.tmp").write_text(record[: len(record) // 3], encoding="utf-8")
        expect.update(
            damage=f"{name}.json cut short, {name}.tmp left by a crash",
            log=[f"alert queue: {name}.json is unreadable", f"alert queue: removed {name}.tmp"],
            present=[str(queue / "rejected" / f"{name}.json")],
            absent=[str(queue / f"{name}.json"), str(queue / f"{name}.tmp")],
        )

    def corrupt_model_store(self, expect: dict[str, Any], number: int) -> None:
        """Where an update downloads and unpacks (MODEL_STORE/.incoming-*: a version folder only appears whole, by
        one rename), a partial package and a half-written model of a next version (3): the restarted classifier
        must remove them with a warning and serve the version it served before (or the update's), never 3."""
        store = self.module_path("MODEL_STORE", "classifier")
        scratch = store / f".incoming-chaos{number:03d}"
        bundled = ROOT / "iot-edge-solution" / "models" / MODEL / "1"
        manifest = json.loads((bundled / "model.json").read_text(encoding="utf-8"))
        model = (bundled / manifest["file"]).read_bytes()
        (scratch / "unpacked" / "model").mkdir(parents=True, exist_ok=True)
        (scratch / "package.zip").write_bytes(b"PK\x03\x04" + model[: len(model) // 3])
        (scratch / "unpacked" / "model" / "model.json").write_text(
            json.dumps({**manifest, "version": "3"}), encoding="utf-8"
        )
        (scratch / "unpacked" / "model" / manifest["file"]).write_bytes(model[: len(model) // 2])
        expect.update(
            damage=f"{scratch.name}: a partial package and half of version 3's {manifest['file']}",
            log=[f"removed {scratch.name} from MODEL_STORE"],
            absent=[str(scratch)],
            not_served="3",
        )

    def check_corruptions(self, text: str) -> list[dict[str, Any]]:
        """Each corrupt fault's outcome: refused or recovered as expected (`ok`), with what was found."""
        outcomes = []
        for expect in self.corruptions:
            after = text[expect["log_from"] :]
            missing = [line for line in expect.get("log", []) if line not in after]
            present = [path for path in expect.get("present", []) if not Path(path).exists()]
            absent = [path for path in expect.get("absent", []) if Path(path).exists()]
            served = self.served_model()
            outcome = {
                "fault": expect["fault"],
                "damage": expect.get("damage"),
                "log_lines_missing": missing,
                "files_missing": present,
                "files_left": absent,
                "accepted_damaged_file": bool(expect.get("accepted")),
                "served_version": served if "not_served" in expect else None,
            }
            outcome["ok"] = not (missing or present or absent or expect.get("accepted")) and (
                "not_served" not in expect or (served is not None and served != expect["not_served"])
            )
            outcomes.append(outcome)
        return outcomes

    def inject_overlapping(self, plan: list[tuple[str, str]], gap: tuple[float, float], bound: float) -> None:
        """One lane per part, all at once: a part's faults come one after the other (each after its part is
        back), in the order of `plan`, with gaps drawn from the seed and the part's name; the parts' faults
        overlap (a module killed while the hub is away, Azurite killed while the classifier is stopped)."""
        lanes: dict[str, list[tuple[str, str]]] = {}
        for kind, part in plan:
            lanes.setdefault(part, []).append((kind, part))

        def lane(part: str, faults: list[tuple[str, str]]) -> None:
            rng = random.Random(f"{self.seed}-{part}")
            start, slot = time.monotonic(), self.span / len(faults)
            for index, (kind, _) in enumerate(faults):
                # at a random moment in the fault's slot of the span, or after the gap when the last one ran late
                due = start + slot * (index + rng.random())
                time.sleep(max(rng.uniform(*gap), due - time.monotonic()))
                self.inject(kind, part, bound)

        threads = [threading.Thread(target=lane, args=item, daemon=True) for item in lanes.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    # -- the over-the-air model update ------------------------------------------------------------------------
    def update_model(self, delay: float) -> None:
        """After `delay` s, publish version 2 of the classifier's model (`edgevision publish-model`: the package
        to Azurite, the desired properties through the hub), as an operator would: again every 10 s while Azurite
        or the hub is away (faults keep coming meanwhile)."""
        time.sleep(delay)
        folder = self.state / "models" / "2"
        shutil.copytree(ROOT / "iot-edge-solution" / "models" / MODEL / "1", folder, dirs_exist_ok=True)
        manifest = folder / "model.json"
        manifest.write_text(
            manifest.read_text(encoding="utf-8").replace('"version": "1"', '"version": "2"'), encoding="utf-8"
        )
        self.update["before"] = self.served_model()
        self.update["published"] = self.publish(folder)
        self.update["published_at"] = time.monotonic()

    def publish(self, folder: Path) -> bool:
        """`edgevision publish-model FOLDER`, again every 10 s while Azurite or the hub is away; whether it was."""
        for _ in range(12):
            self.update["issued_at"] = round(time.monotonic() - self.began, 1)
            try:
                published = subprocess.run(
                    [str(BIN / "edgevision"), "publish-model", str(folder), "--device", DEVICE, "--module",
                     "classifier", "--storage-connection-string", self.azurite.connection_string],
                    env=self.frontend_env, capture_output=True, text=True, timeout=120, check=False,
                )  # fmt: skip
            except subprocess.TimeoutExpired:  # Azurite killed under the upload: publish again
                published = subprocess.CompletedProcess([], 124, "", "publish-model timed out after 120 s")
            if published.returncode == 0:
                log.info("model update: version 2 published (%.0f s into the run)", self.update["issued_at"])
                return True
            log.info("model update not published yet (%s); again in 10 s", published.stderr.strip()[-200:])
            time.sleep(10)
        return False

    @staticmethod
    def served_model() -> str | None:
        """The version the classifier's scoring API serves (None while it has none)."""
        try:
            answer = httpx.get("http://127.0.0.1:8080/readyz", timeout=3)
        except httpx.HTTPError:
            return None
        return str(answer.json().get("model_version")) if answer.status_code == 200 else None

    def check_update(self) -> dict[str, Any]:
        """The update's end: reported `active` (version 2 serving) or `failed` (version 1 still serving), the
        reported and the served version the same: never half-swapped."""
        result: dict[str, Any] = {**self.update, "status": None, "reported_version": None, "served_version": None}
        result.pop("published_at", None)
        if self.update.get("published") and any(t > self.update["published_at"] for t in self.hub_rebuilt_at):
            # the twin's desired properties were in the damaged hub database: the operator publishes again
            log.info("the hub's database was rebuilt after the model update was published: publishing it again")
            result["published_again_after_hub_rebuild"] = self.publish(self.state / "models" / "2")

        def settled() -> bool:
            twin = self.emulator("twin", "get", DEVICE, "classifier", timeout=60)
            try:
                reported = json.loads(twin.stdout)["properties"]["reported"].get("model") or {}
            except (ValueError, KeyError, TypeError):
                return False
            result.update(status=reported.get("status"), reported_version=str(reported.get("version")),
                          error=reported.get("error"), served_version=self.served_model())  # fmt: skip
            return result["status"] in ("active", "failed") and result["served_version"] is not None

        try:
            _wait(settled, 180, "the model update to end")
        except TimeoutError:
            pass
        expected = {"active": "2", "failed": result.get("before") or "1"}.get(result["status"] or "")
        result["ok"] = bool(
            result.get("published")
            and result.get("published_again_after_hub_rebuild", True)
            and expected is not None
            and result["served_version"] == result["reported_version"] == expected
        )
        return result

    # -- load ------------------------------------------------------------------------------------------------
    def sign_in_loop(self, name: str, rng: random.Random) -> None:
        """Sign in again and again until the load stops; each attempt is recorded."""
        while not self.load_stop.is_set():
            attempt = Attempt(name, time.monotonic())
            with self.lock:
                self.attempts.append(attempt)
            self.sign_in(attempt)
            attempt.seconds = round(time.monotonic() - attempt.started, 2)
            self.load_stop.wait(rng.uniform(0.5, 2.0))

    def sign_in(self, attempt: Attempt) -> None:
        """The first factor, then poll /verify/status until a final state or the answer deadline."""
        with httpx.Client(base_url=FRONTEND_URL, timeout=30, follow_redirects=False) as client:
            try:
                page = client.get("/login").text
                token = re.search(r'name="csrf_token" value="([^"]+)"', page)
                # the first factor starts the second (ProcessRequest through the hub): with the hub stopped it
                # waits for it, as a browser would (up to the recovery bound), then shows what the page says
                answer = client.post(
                    "/login",
                    timeout=self.bound,
                    data={"csrf_token": token.group(1) if token else "", "username": attempt.user,
                          "password": self.passwords[attempt.user]},
                )  # fmt: skip
            except httpx.HTTPError as e:
                attempt.state = "frontend-unreachable"  # the user sees the browser's error
                attempt.failed_at = time.monotonic()
                attempt.error = type(e).__name__
                return
            attempt.login_s = round(time.monotonic() - attempt.started, 2)
            if answer.status_code != 303:
                attempt.state = f"login-{answer.status_code}"
                attempt.failed_at = time.monotonic()
                attempt.clear = "try again" in answer.text.lower()
                return
            deadline = time.monotonic() + REQUEST_SECONDS + 10 + ANSWER_MARGIN_S
            waited_for_frontend = 0.0  # the page waits for a front-end that is down (killed or stopped)
            while time.monotonic() < deadline:
                polled = time.monotonic()
                try:
                    status = client.get("/verify/status").json()
                except (httpx.HTTPError, ValueError):
                    status = {"state": "unreachable"}
                if status.get("state") in CLEAR_STATES:
                    attempt.state = status["state"]
                    return
                time.sleep(1)
                if status.get("state") == "unreachable" and waited_for_frontend < self.bound:
                    waited_for_frontend += time.monotonic() - polled
                    deadline += time.monotonic() - polled
            attempt.state = "unanswered"

    def forge(self, number: int) -> None:
        """Someone with the Storage key but not the module key queues requests: one signed with another key, one
        unsigned; nothing may be written for them (no result.json, no image; checked at the end)."""
        signed, unsigned = f"forged-{number}-other-key", f"forged-{number}-unsigned"
        with self.lock:
            self.forged += [signed, unsigned]
        queue = QueueClient.from_connection_string(
            self.azurite.connection_string, "iot-edge-object-classification-requests", retry_total=2
        )
        now = time.time()
        other_key = ModuleKey(secrets.token_bytes(32))
        try:
            queue.send_message(sign_request(other_key, SignedRequest(signed, USER_OBJECT, 1, now, now + 60)))
            queue.send_message(json.dumps({"requestId": unsigned, "className": USER_OBJECT, "threshold": 1}))
        except (AzureError, OSError) as e:  # Azurite killed meanwhile: the next round forges again
            log.info("forged requests %d not queued: %s", number, type(e).__name__)
        finally:
            queue.close()

    def forge_loop(self) -> None:
        """Forged requests at the start and every --forge-every seconds until the load stops."""
        number = 0
        while True:
            number += 1
            self.forge(number)
            if self.load_stop.wait(self.forge_every):
                return

    # -- the whole run ---------------------------------------------------------------------------------------
    def run(  # pylint: disable=too-many-arguments,too-many-locals  # the run's options; its steps
        self,
        faults_per_kind: int,
        gap: tuple[float, float],
        bound: float,
        counts: dict[tuple[str, str], int] | None = None,
        overlap: bool = False,
    ) -> dict[str, Any]:
        """Start, load, inject the faults in a shuffled order (with `overlap`, each part's faults in their own
        order at the same time as the other parts'), quiesce, stop, check; the figures."""
        rng = random.Random(self.seed)
        self.bound = bound
        plan = [kind for kind in KINDS for _ in range((counts or {}).get(kind, faults_per_kind))]
        rng.shuffle(plan)
        began = self.began = time.monotonic()
        self.start()
        up_s = time.monotonic() - began
        threads = [
            threading.Thread(target=self.sign_in_loop, args=(name, random.Random(f"{self.seed}-{name}")), daemon=True)
            for name in self.passwords
        ]
        for thread in threads:
            thread.start()
        forger = threading.Thread(target=self.forge_loop, daemon=True)
        forger.start()
        updater = threading.Thread(target=self.update_model, args=(rng.uniform(5, 60),), daemon=True)
        updater.start()
        if overlap:
            self.inject_overlapping(plan, gap, bound)
        else:
            for kind, part in plan:
                time.sleep(rng.uniform(*gap))
                self.inject(kind, part, bound)
        updater.join(200)
        self.load_stop.set()
        for thread in threads:
            thread.join(REQUEST_SECONDS + 10 + ANSWER_MARGIN_S + bound + 30)
        forger.join(60)
        time.sleep(REQUEST_SECONDS + 5)  # requests still pending expire, and the classifier writes `expired`
        figures = self.check(bound)
        figures["model_update"] = self.check_update()
        figures["overlap"] = overlap
        figures["span_s"] = self.span
        figures["backoff_unit_s"] = self.backoff_unit
        figures["startup_s"] = round(up_s, 1)
        figures["duration_s"] = round(time.monotonic() - began, 1)
        return figures

    def upstream(self) -> list[dict[str, Any]]:
        """Every upstream message of the run: those read from hub databases before they were damaged, then the
        live hub's (`monitor --from-start --once` prints them all); one copy of each (a database that survived
        its damage would hold some of the saved ones again: same sequence number and time)."""
        monitor = self.emulator("monitor", "--from-start", "--once", "--raw", timeout=300)
        messages = list(self.upstream_saved)
        for line in monitor.stdout.splitlines():
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict):
                messages.append(message)
        unique: dict[tuple[Any, Any], dict[str, Any]] = {}
        for message in messages:
            unique.setdefault((message.get("seq"), message.get("enqueuedTime")), message)
        return list(unique.values())

    def offline(self, answered_at: list[tuple[float, str]], verified: set[str]) -> list[dict[str, Any]]:
        """For each time the hub was away or stopped: the classifier's frame rate half-way, the requests it
        answered meanwhile (Azurite is local) and those of them whose verification never reached the hub."""
        found = []
        for fault in self.faults:
            if fault.part != "hub" or fault.kind not in ("away", "stop"):
                continue
            end = fault.wall + fault.outage_s
            during = sorted({rid for when, rid in answered_at if fault.wall <= when <= end})
            found.append({
                "fault": f"{fault.kind}:hub", "outage_s": fault.outage_s,
                "classifier_fps": fault.detail.get("pipeline_fps"), "requests_answered": len(during),
                "verifications_never_delivered": sorted(set(during) - verified),
            })  # fmt: skip
        return found

    def frontend_down(self, moment: float) -> bool:
        """Whether the front-end was down (killed, or stopped) for a fault of its own at `moment` (monotonic); a
        request started just before the fault fails within the client's timeout (30 s) of it."""
        return any(
            fault.at - 1 <= moment <= fault.at + (fault.recovery_s or self.bound) + 31
            for fault in self.faults
            if fault.part == "frontend"
        )

    def check(self, bound: float) -> dict[str, Any]:  # pylint: disable=too-many-locals,too-many-statements  # one report
        """The invariants over what the run left (the solution still up)."""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        queued = set(QUEUED.findall(text))
        invoked = set(INVOKED.findall(text))
        written = set(ANSWERED.findall(text))  # the classifier logs once result.json is written
        container = ContainerClient.from_connection_string(
            self.azurite.connection_string, "iot-edge-object-classification-responses"
        )
        results: set[str] = set()
        images: dict[str, int] = {}

        def list_blobs() -> bool:
            results.clear()
            images.clear()
            for blob in container.list_blobs():
                request_id, _, name = blob.name.partition("/")
                if name == "result.json":
                    results.add(request_id)
                elif name.endswith(".jpg"):
                    images[request_id] = images.get(request_id, 0) + 1
            return queued <= results

        try:
            _wait(list_blobs, 90, "a result for every queued request")
        except TimeoutError:
            pass
        statuses: dict[str, str | None] = {}
        for request_id in sorted(queued & results):
            try:
                body = json.loads(container.download_blob(f"{request_id}/result.json").readall())
            except (AzureError, ValueError):
                body = None
            statuses[request_id] = body.get("status") if isinstance(body, dict) else None
        verifications: dict[str, list[str]] = {}
        upstream = self.upstream()
        for message in upstream:
            if message.get("output") == "verification":
                props = message.get("properties", {})
                verifications.setdefault(props.get("requestId", ""), []).append(props.get("$.mid", ""))
        answered_at = [(_local_epoch(day, ms), rid) for day, ms, rid, _ in ANSWERED_AT.findall(text)]
        written_at: dict[str, float] = {}
        for when, rid in answered_at:
            written_at.setdefault(rid, when)
        azurite_kills = [f.wall for f in self.faults if f.kind == "kill" and f.part == "azurite"]
        lost_by_azurite = sorted((queued - results) & written)
        # Azurite's loss, not ours, only when the result was written within its autosave window before a kill
        window = AZURITE_AUTOSAVE_S + 1  # and a second of clock rounding
        lost_unexplained = [
            rid for rid in lost_by_azurite
            if not any(0 <= kill - written_at.get(rid, float("-inf")) <= window for kill in azurite_kills)
        ]  # fmt: skip
        forged = set(self.forged)
        accepted = set(ALERTED.findall(text))  # logged once the alert is on disk for the webhook
        alert_ids: list[str] = []

        def delivered() -> bool:
            with self.webhook.lock:
                alert_ids[:] = self.webhook.ids
            return accepted <= set(alert_ids)

        try:
            _wait(delivered, 60, "the accepted alerts at the webhook")
        except TimeoutError:
            pass
        by_part: dict[str, list[float]] = {}
        kinds: dict[str, int] = {}
        for fault in self.faults:
            kinds[f"{fault.kind}:{fault.part}"] = kinds.get(f"{fault.kind}:{fault.part}", 0) + 1
            if fault.recovery_s is not None:
                by_part.setdefault(fault.part, []).append(fault.recovery_s)
        answered = [a for a in self.attempts if a.state in FINAL_STATES]
        states: dict[str, int] = {}
        for attempt in self.attempts:
            states[attempt.state] = states.get(attempt.state, 0) + 1
        refused = [a for a in self.attempts if a.failed_at is not None]
        unreachable_while_up = [
            a for a in refused if a.state == "frontend-unreachable" and not self.frontend_down(a.failed_at or 0)
        ]
        return {
            "seed": self.seed,
            "faults": len(self.faults),
            "faults_by_kind": kinds,
            "faults_not_recovered": sum(1 for f in self.faults if f.recovery_s is None),
            "recovery_bound_s": bound,
            # the bound's reasoning: see RECONNECT_S; each part's measured p95 and max below
            "recovery_p95_s": {part: _p95(values) for part, values in sorted(by_part.items())},
            "recovery_max_s": {part: max(values) for part, values in sorted(by_part.items())},
            "requests_queued": len(queued),
            "requests_lost": sorted(queued - results - written),
            # written and acknowledged by Azurite within its 5 s autosave window before it was SIGKILLed, then gone:
            # the stand-in's durability (AZURITE_AUTOSAVE_S), not a violation; any other lost result is
            "results_lost_by_azurite_kill": lost_by_azurite,
            "results_lost_outside_azurite_autosave_window": lost_unexplained,
            "results_by_status": {
                s: sum(1 for v in statuses.values() if v == s) for s in sorted(set(map(str, statuses.values())))
            },
            "results_neither_found_nor_expired": sorted(
                r for r, v in statuses.items() if v not in ("found", "expired")
            ),
            "images_for_results_not_found": sorted(r for r in images if statuses.get(r, "found") != "found"),
            "forged_requests": len(forged),
            "forged_requests_with_blobs": sorted(forged & (results | set(images))),
            # a result for neither a queued request nor one the front-end asked for: a forged or unsigned one
            "results_without_request": sorted(results - queued - invoked),
            "results_for_requests_whose_answer_was_lost": len((results & invoked) - queued),
            "requests_with_more_than_one_image": sorted(k for k, n in images.items() if n > 1),
            "upstream_messages": len(upstream),
            "upstream_messages_read_before_hub_damage": len(self.upstream_saved),
            "requests_with_verification_upstream": len(set(verifications) & queued),
            "verifications_upstream": sum(len(v) for v in verifications.values()),
            "verification_duplicates": sum(len(v) - 1 for v in verifications.values()),
            "verifications_without_request_id_as_message_id": sorted(
                k for k, mids in verifications.items() if any(m != k for m in mids)
            ),
            "sign_ins": len(self.attempts),
            "sign_ins_by_state": states,
            "sign_ins_unanswered": states.get("unanswered", 0),
            "sign_ins_refused_at_login": len(refused),  # the front-end unreachable or refusing the first factor
            "sign_ins_refused_without_try_again": sum(1 for a in refused if not a.clear),
            "sign_ins_unreachable_while_frontend_up": sum(1 for a in unreachable_while_up),
            # when (s into the run) and how: to match with the faults' times below
            "sign_ins_unreachable_while_frontend_up_at": [
                [round(a.started - self.began, 1), round((a.failed_at or 0) - self.began, 1), a.error]
                for a in unreachable_while_up[:30]
            ],
            "fault_times": [[f"{f.kind}:{f.part}", round(f.at - self.began, 1), f.recovery_s] for f in self.faults],
            "hub_offline": self.offline(answered_at, set(verifications)),
            "hub_rebuilt_from_manifest": len(self.hub_rebuilt_at),
            "damaged_state_files": self.check_corruptions(text),
            "slowest_answer_s": max((a.seconds for a in answered), default=None),
            "slowest_login_s": max((a.login_s for a in self.attempts), default=None),
            "alerts_accepted": len(accepted),
            "alerts_delivered": len(set(alert_ids)),
            "alerts_lost": sorted(accepted - set(alert_ids)),
            "alert_duplicates": len(alert_ids) - len(set(alert_ids)),
            # at the webhook, but no "accepted" line in the alert module's log: a kill between the alert reaching
            # the disk and its log line (harmless, it was delivered); their ids and when (s into the run) each first
            # reached the webhook, to match with the faults' times
            "alerts_delivered_without_accepted_log": [
                [aid, round(self.webhook.first_seen.get(aid, self.began) - self.began, 1)]
                for aid in sorted(set(alert_ids) - accepted)
            ],
        }

    def stop(self) -> list[str]:
        """Stop everything; what is left alive of this run afterwards (should be nothing)."""
        members: set[int] = set()
        if self.hub is not None:
            members |= set(_children(self.hub.pid))
        if self.frontend is not None and self.frontend.poll() is None:
            self.frontend.terminate()
            try:
                self.frontend.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.frontend.pid, signal.SIGKILL)
        if self.hub is not None and self.hub.poll() is None:
            self.hub.terminate()  # solution_up stops the hub, which stops its modules
            try:
                self.hub.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(self.hub.pid, signal.SIGKILL)
        self.azurite.stop()
        self.webhook.shutdown()
        time.sleep(1)
        members |= self.orphans
        return [f"{pid} {_cmdline(pid)}" for pid in sorted(members) if "modules/" in _cmdline(pid) or pid not in
                self.orphans and _cmdline(pid)]  # fmt: skip


def _p95(values: list[float]) -> float:
    if len(values) < 2:
        return values[0]
    return round(statistics.quantiles(values, n=20, method="inclusive")[18], 2)


def violations(figures: dict[str, Any]) -> list[str]:
    """The invariants that do not hold, in words."""
    found = []
    checks = (
        ("requests_lost", "requests answered 200 without a result"),
        ("results_lost_outside_azurite_autosave_window", "results lost by Azurite, not within 5 s before its kill"),
        ("results_neither_found_nor_expired", "answered requests whose result.json is neither found nor expired"),
        ("images_for_results_not_found", "images for requests not found"),
        ("forged_requests_with_blobs", "blobs written for forged or unsigned requests"),
        ("sign_ins_refused_without_try_again", "sign-ins refused without a clear 'try again'"),
        ("sign_ins_unreachable_while_frontend_up", "sign-ins that could not reach the front-end while it was up"),
        ("alerts_lost", "alerts accepted and never delivered"),
        ("results_without_request", "results for requests nobody asked for (forged or unsigned)"),
        ("requests_with_more_than_one_image", "requests with more than one image"),
        ("verifications_without_request_id_as_message_id", "verification messages without the request id as $.mid"),
        ("left_over", "processes left over after the stop"),
    )
    for key, what in checks:
        if figures.get(key):
            found.append(f"{what}: {figures[key]}")
    if not figures.get("model_update", {}).get("ok"):
        found.append(f"the model update did not end active or failed with the old model serving: "
                     f"{figures.get('model_update')}")  # fmt: skip
    if figures["sign_ins_unanswered"]:
        found.append(f"{figures['sign_ins_unanswered']} sign-ins whose page never answered")
    if figures["faults_not_recovered"]:
        found.append(f"{figures['faults_not_recovered']} faults after which a part was not back in time")
    for away in figures.get("hub_offline", []):
        if away["verifications_never_delivered"]:
            found.append(f"verifications sent while the hub was away never delivered: {away}")
        if away["classifier_fps"] == 0:
            found.append(f"the classifier stopped processing frames while the hub was away: {away}")
    for damaged in figures.get("damaged_state_files", []):
        if not damaged["ok"]:
            found.append(f"a damaged state file neither recovered nor refused with its clear error: {damaged}")
    return found


def main(argv: list[str] | None = None) -> int:  # pylint: disable=too-many-locals,too-many-statements  # options, run, report
    """Run once; print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--seed", type=int, help="the faults' order and moments (default: a new one, printed)")
    parser.add_argument("--faults-per-kind", type=int, default=1, help="faults of each kind and part")
    parser.add_argument("--users", type=int, default=10, help="users signing in at the same time")
    parser.add_argument("--stop-seconds", type=float, default=65.0, help="how long a stopped module stays stopped")
    parser.add_argument("--gap", type=float, nargs=2, default=(2.0, 8.0), help="seconds between faults (min max)")
    parser.add_argument(
        "--recovery-bound",
        type=float,
        help="seconds a part may take to come back (default: the longest outage or restart back-off + 55 s)",
    )
    parser.add_argument("--forge-every", type=float, default=20.0, help="seconds between forged requests")
    parser.add_argument(
        "--count",
        action="append",
        default=[],
        metavar="KIND:PART=N",
        help="N faults of this kind and part instead of --faults-per-kind (e.g. stop:classifier=8); repeatable",
    )
    parser.add_argument(
        "--overlap", action="store_true", help="each part's faults in their own lane, the parts' lanes at once"
    )
    parser.add_argument(
        "--span", type=float, default=0.0, help="with --overlap: spread each part's faults over about this many s"
    )
    parser.add_argument(
        "--backoff-unit", type=float, default=10.0, help="the agent's restart back-off unit (IoT Edge's: 10 s)"
    )
    parser.add_argument("--state", help="the run's folder (default: a temporary one, removed after)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="chaos: %(message)s", stream=sys.stderr)
    for chatty in ("httpx", "azure"):  # a line per request
        logging.getLogger(chatty).setLevel(logging.WARNING)
    counts: dict[tuple[str, str], int] = {}
    for item in args.count:
        name, _, number = item.partition("=")
        kind = tuple(name.split(":", 1))
        if kind not in KINDS or not number.isdigit():
            parser.error(f"--count {item}: expected KIND:PART=N with KIND:PART one of "
                         f"{', '.join(':'.join(k) for k in KINDS)}")  # fmt: skip
        counts[(kind[0], kind[1])] = int(number)
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    log.info("seed %d (run again with --seed %d)", seed, seed)
    state = Path(args.state) if args.state else Path(tempfile.mkdtemp(prefix="chaos-"))
    run = Run(state, seed, users=args.users, stop_seconds=args.stop_seconds, backoff_unit=args.backoff_unit,
              span=args.span, forge_every=args.forge_every)  # fmt: skip
    # a module's restarts: its kills and damaged state files (each restarted by the agent)
    restarts = max(
        sum(counts.get((kind, module), args.faults_per_kind) for kind in ("kill", "corrupt") if (kind, module) in KINDS)
        for module in MODULES
    )
    bound = args.recovery_bound or recovery_bound(args.stop_seconds, args.backoff_unit, restarts)
    # SIGTERM (a timeout, Ctrl-C's cousin) still stops every part this run started
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        figures = run.run(args.faults_per_kind, tuple(args.gap), bound, counts, args.overlap)
    except (TimeoutError, subprocess.CalledProcessError, OSError) as e:
        log.error("the solution did not start or run: %s; log in %s", e, run.log_path)
        run.stop()
        return 2
    except BaseException:
        run.stop()
        raise
    figures["left_over"] = run.stop()
    figures["violations"] = violations(figures)
    status = 1 if figures["violations"] else 0
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    if status:
        log.error("invariants broken (log in %s): %s", run.log_path, "; ".join(figures["violations"]))
    elif not args.state:
        shutil.rmtree(state, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
