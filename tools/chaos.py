"""Faults across the whole solution under load: the solution runs as `make run` runs it (Azurite, the emulator
with its local edgeAgent starting every module of the deployment manifest, the sign-in front-end), users sign in
through the front-end's HTTP API, alerts go to a local webhook receiver, and faults come at random but
reproducible moments (the seed is printed and accepted by --seed):

- kill: SIGKILL of authrequest, the classifier, alert (restarted by the emulator's agent per their restartPolicy),
  the front-end and Azurite (restarted by this harness, as a service manager would);
- stop: SIGSTOP of authrequest or the classifier for --stop-seconds, then SIGCONT (a hung peer);
- away: the hub (the emulator's process) stopped for 30 s while the modules keep working, then SIGCONT;
- kill hub: SIGKILL of the emulator (the hub and its agent), started again by this harness; its modules run on
  until the new agent stops them and starts its own;
- an over-the-air model update (`edgevision publish-model`, version 2) published once among the faults.

After the last fault the load stops, the requests still pending run out, and the invariants are checked:

- lost requests: every ProcessRequest that authrequest queued (answered 200) has its result.json; a result the
  classifier wrote that Azurite lost when it was SIGKILLed is counted apart (results_lost_by_azurite_kill);
- stray results: no result for a request that neither authrequest queued nor the front-end asked for (two forged
  ones are put on the queue); a request whose answer was lost when authrequest or the hub was killed just after
  it queued it may still be served (counted: results_for_requests_whose_answer_was_lost);
- duplicates upstream: `verification` messages beyond one per request, each carrying the request id as $.mid;
- users waiting forever: a sign-in whose page neither answered nor said "try again" in time;
- lost alerts: alerts the alert module accepted that never reached the webhook (duplicates share an id);
- recovery: each part back (probed as a user of it would) within --recovery-bound seconds of its fault;
- left over: no process of the run alive after the stop.

Needs the ports of `make run` (8883, 8443, 10000-10002, 8000, 8080, 5012): run it inside `unshare --net`:

    unshare --net bash -c 'ip link set lo up; .venv/bin/python tools/chaos.py --faults-per-kind 1'

Prints one JSON object (the figures and the invariants) on stdout; --json writes it to a file too. The exit status
is 0 when every invariant holds, 1 when one does not, 2 when the solution did not start.
"""

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
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import httpx
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
STOP_PARTS = ("authrequest", "classifier")
KINDS = (*(("kill", p) for p in KILL_PARTS), *(("stop", p) for p in STOP_PARTS), ("away", "hub"))
HUB_AWAY_S = 30.0
FINAL_STATES = {"found", "expired", "rejected", "failed"}
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
ALERTED = re.compile(r"alert\s*\|.*alert: .*, id ([0-9a-f-]+)\)")


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
    """The alert webhook's receiver: keeps the id of every event it is sent."""

    daemon_threads = True

    def __init__(self) -> None:
        self.ids: list[str] = []
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


@dataclass
class Fault:
    """One injected fault and how long its part took to come back."""

    kind: str
    part: str
    at: float
    recovery_s: float | None = None


@dataclass
class Run:  # pylint: disable=too-many-instance-attributes,too-many-public-methods  # the run's parts, load, faults
    """The solution under faults; see the module docstring."""

    state: Path
    seed: int
    users: int = 10
    stop_seconds: float = 65.0
    backoff_unit: float = 10.0  # the agent's restart back-off unit (IoT Edge's: 10 s)
    span: float = 0.0  # with overlap: each part's faults spread over about this many seconds
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
                 str(MANIFEST), "--state", str(self.hub_state), "--backoff-unit", str(self.backoff_unit)],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT,
            )  # fmt: skip

    def kill_hub(self) -> None:
        """SIGKILL of the emulator (the hub and its agent): its modules run on without it; solution_up ends with
        it and is started again (as a service manager would), and the new agent stops the old modules before it
        starts its own."""
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
        self.start_hub()

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
        if kind == "kill":
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
            pid = self.hub_pid() if part == "hub" else self.module_pid(part)
            if pid is not None:
                os.kill(pid, signal.SIGSTOP)
                time.sleep(HUB_AWAY_S if part == "hub" else self.stop_seconds)
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:  # another lane killed it while it was stopped: its restart is awaited
                    log.info("%s ended while stopped", part)
        start = fault.at
        try:
            _wait(lambda: self.healthy(part, old_pid), bound, f"{part} after {kind}")
            fault.recovery_s = round(time.monotonic() - start, 2)
        except TimeoutError as e:
            log.error("%s", e)
        self.faults.append(fault)
        return fault

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
                self.update["published"] = True
                log.info("model update: version 2 published (%.0f s into the run)", self.update["issued_at"])
                return
            log.info("model update not published yet (%s); again in 10 s", published.stderr.strip()[-200:])
            time.sleep(10)
        self.update["published"] = False

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
                answer = client.post(
                    "/login",
                    data={"csrf_token": token.group(1) if token else "", "username": attempt.user,
                          "password": self.passwords[attempt.user]},
                )  # fmt: skip
            except httpx.HTTPError:
                attempt.state = "frontend-unreachable"  # the user sees the browser's error at once
                return
            if answer.status_code != 303:
                attempt.state = f"login-{answer.status_code}"
                return
            deadline = time.monotonic() + REQUEST_SECONDS + 10 + ANSWER_MARGIN_S
            while time.monotonic() < deadline:
                try:
                    status = client.get("/verify/status").json()
                except (httpx.HTTPError, ValueError):
                    status = {"state": "unreachable"}
                if status.get("state") in FINAL_STATES:
                    attempt.state = status["state"]
                    return
                time.sleep(1)
            attempt.state = "unanswered"

    def forge(self) -> None:
        """Someone with the Storage key but not the module key queues requests: nothing may be written for them
        (checked with the stray results)."""
        queue = QueueClient.from_connection_string(
            self.azurite.connection_string, "iot-edge-object-classification-requests"
        )
        now = time.time()
        other_key = ModuleKey(secrets.token_bytes(32))
        queue.send_message(sign_request(other_key, SignedRequest("forged-1", USER_OBJECT, 1, now, now + 60)))
        queue.send_message(json.dumps({"requestId": "forged-2", "className": USER_OBJECT, "threshold": 1}))
        queue.close()

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
        self.forge()
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
            thread.join(REQUEST_SECONDS + 10 + ANSWER_MARGIN_S + 30)
        time.sleep(REQUEST_SECONDS + 5)  # requests still pending expire, and the classifier writes `expired`
        figures = self.check(bound)
        figures["model_update"] = self.check_update()
        figures["overlap"] = overlap
        figures["span_s"] = self.span
        figures["backoff_unit_s"] = self.backoff_unit
        figures["startup_s"] = round(up_s, 1)
        figures["duration_s"] = round(time.monotonic() - began, 1)
        return figures

    def check(self, bound: float) -> dict[str, Any]:  # pylint: disable=too-many-locals  # one report
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
        verifications: dict[str, list[str]] = {}
        monitor = self.emulator("monitor", "--from-start", "--once", timeout=120)
        for line in monitor.stdout.splitlines():
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if not isinstance(message, dict):
                continue
            if message.get("output") == "verification":
                props = message.get("properties", {})
                verifications.setdefault(props.get("requestId", ""), []).append(props.get("$.mid", ""))
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
        return {
            "seed": self.seed,
            "faults": len(self.faults),
            "faults_by_kind": kinds,
            "faults_not_recovered": sum(1 for f in self.faults if f.recovery_s is None),
            "recovery_bound_s": bound,
            "recovery_p95_s": {part: _p95(values) for part, values in sorted(by_part.items())},
            "recovery_max_s": {part: max(values) for part, values in sorted(by_part.items())},
            "requests_queued": len(queued),
            "requests_lost": sorted(queued - results - written),
            # written and acknowledged by Azurite, then gone after Azurite was SIGKILLed: the stand-in keeps its
            # metadata in memory and saves it every few seconds (Azure Storage's acknowledged writes are durable)
            "results_lost_by_azurite_kill": sorted((queued - results) & written),
            # a result for neither a queued request nor one the front-end asked for: a forged or unsigned one
            "results_without_request": sorted(results - queued - invoked),
            "results_for_requests_whose_answer_was_lost": len((results & invoked) - queued),
            "requests_with_more_than_one_image": sorted(k for k, n in images.items() if n > 1),
            "verifications_upstream": sum(len(v) for v in verifications.values()),
            "verification_duplicates": sum(len(v) - 1 for v in verifications.values()),
            "verifications_without_request_id_as_message_id": sorted(
                k for k, mids in verifications.items() if any(m != k for m in mids)
            ),
            "sign_ins": len(self.attempts),
            "sign_ins_by_state": states,
            "sign_ins_unanswered": states.get("unanswered", 0),
            "slowest_answer_s": max((a.seconds for a in answered), default=None),
            "alerts_accepted": len(accepted),
            "alerts_delivered": len(set(alert_ids)),
            "alerts_lost": sorted(accepted - set(alert_ids)),
            "alert_duplicates": len(alert_ids) - len(set(alert_ids)),
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
    return found


def main(argv: list[str] | None = None) -> int:  # pylint: disable=too-many-locals  # options, run, report
    """Run once; print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--seed", type=int, help="the faults' order and moments (default: a new one, printed)")
    parser.add_argument("--faults-per-kind", type=int, default=1, help="faults of each kind and part")
    parser.add_argument("--users", type=int, default=10, help="users signing in at the same time")
    parser.add_argument("--stop-seconds", type=float, default=65.0, help="how long a stopped module stays stopped")
    parser.add_argument("--gap", type=float, nargs=2, default=(2.0, 8.0), help="seconds between faults (min max)")
    parser.add_argument("--recovery-bound", type=float, default=120.0, help="seconds a part may take to come back")
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
              span=args.span)  # fmt: skip
    # SIGTERM (a timeout, Ctrl-C's cousin) still stops every part this run started
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        figures = run.run(args.faults_per_kind, tuple(args.gap), args.recovery_bound, counts, args.overlap)
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
