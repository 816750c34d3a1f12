"""A local edgeAgent: the modules of a device's `$edgeAgent` desired properties as processes, reconciled at run time.

As IoT Edge's agent does, it diffs each new desired version against what runs: added modules start, removed ones
stop (and lose their identity), changed ones (image, env, createOptions, restartPolicy, startupOrder, version)
are stopped and recreated, a status-only change starts or stops, and every other module keeps running. Exits
follow the restartPolicy with IoT Edge's back-off; `$edgeAgent` reported properties say what runs.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

from edgehub_emulator.config import EmulatorConfig
from edgehub_emulator.environment import module_environment, module_identity
from edgehub_emulator.errors import ManifestError
from edgehub_emulator.manifest import Manifest, ModuleSpec, module_specs
from edgehub_emulator.store import Store

logger = logging.getLogger(__name__)

# IoT Edge's restart back-off: min(unit * 2^restartCount, 300 s); failed after 20 restarts; the count resets after
# 10 minutes running.
BACKOFF_UNIT_SECS = 10.0
MAX_BACKOFF_SECS = 300.0
MAX_RESTARTS = 20
HEALTHY_RESET_SECS = 600.0
STOP_GRACE_SECS = 10.0
DEFAULT_STARTUP_ORDER = 4294967295
# What a module's container image would provide for a process to run at all; nothing else of this shell passes.
PROCESS_BASICS = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "TEMP",
    "TMP",
    "SYSTEMROOT",
    "VIRTUAL_ENV",
    "LD_LIBRARY_PATH",
)


def find_env_file(manifest_path: Path) -> Path | None:
    """The `.env` nearest the manifest: its folder, then each parent up to the repository root. Without one, the
    nearest `.env_template` (the documented local defaults), with a warning; None when there is neither."""
    folders = []
    for folder in Path(manifest_path).resolve().parents:
        folders.append(folder)
        if (folder / ".git").exists():
            break
    for name in (".env", ".env_template"):
        for folder in folders:
            candidate = folder / name
            if candidate.is_file():
                if name == ".env_template":
                    logger.warning(
                        "no .env found; module settings come from %s (copy it to .env to change them)", candidate
                    )
                return candidate
    return None


def read_env_file(path: Path) -> dict[str, str]:
    """`NAME=value` lines of a .env file (comments, blanks and `export ` prefixes allowed)."""
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            logger.warning("%s:%d is not NAME=value; ignored", path, number)
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name.strip()] = value
    return values


def utc_now() -> str:
    """Now as the agent reports times."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def definition_key(raw: dict[str, Any]) -> str:
    """What makes a module's container: everything but `status` (a status-only change only starts or stops).
    `settings.createOptions` compares as JSON, as IoT Edge's agent compares it: the same options written with other
    spacing or key order are no change."""
    definition = {k: v for k, v in raw.items() if k != "status"}
    settings = definition.get("settings")
    if isinstance(settings, dict) and isinstance(settings.get("createOptions"), str):
        try:
            definition["settings"] = {**settings, "createOptions": json.loads(settings["createOptions"])}
        except ValueError:
            pass  # not JSON: compared as written
    return json.dumps(definition, sort_keys=True)


@dataclass
class ModuleProcess:  # pylint: disable=too-many-instance-attributes  # one module's run state
    """One module's process and restart bookkeeping."""

    spec: ModuleSpec
    script: Path
    raw: dict[str, Any] = field(default_factory=dict)
    process: subprocess.Popen[str] | None = None
    restarts: int = 0
    next_start: float = 0.0
    finished: bool = False
    readers: list[threading.Thread] = field(default_factory=list)
    runtime_status: str = "unknown"
    exit_code: int | None = None
    status_description: str = ""
    last_start: str | None = None
    last_exit: str | None = None
    last_restart: str | None = None
    started_at: float = 0.0
    starts: int = 0

    @property
    def startup_order(self) -> int:
        """Lower starts first (IoT Edge's default is the largest)."""
        value = self.raw.get("startupOrder", DEFAULT_STARTUP_ORDER)
        return value if isinstance(value, int) else DEFAULT_STARTUP_ORDER

    @property
    def wanted(self) -> bool:
        """The desired status is running."""
        return self.spec.status == "running"

    def reported(self) -> dict[str, Any]:
        """The module's entry in `$edgeAgent` reported properties."""
        return {
            "runtimeStatus": self.runtime_status,
            "exitCode": self.exit_code,
            "statusDescription": self.status_description,
            "lastStartTimeUtc": self.last_start,
            "lastExitTimeUtc": self.last_exit,
            "restartCount": self.restarts,
            "lastRestartTimeUtc": self.last_restart,
            "status": self.spec.status,
            "restartPolicy": self.spec.restart_policy,
            "version": self.raw.get("version", ""),
            "type": self.raw.get("type", "docker"),
            "settings": {"image": self.spec.image},
        }


def _kill_group(process: subprocess.Popen[str]) -> None:
    """SIGKILL what the module left behind in its process group, as a container's end kills everything in it."""
    if os.name != "posix":
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone: the module left nothing behind


def process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, /proc/PID/stat's field 22): with the pid, a process's
    identity (a pid alone may be reused). None where the process or /proc is missing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except (OSError, ValueError):
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def stop_leftover(pid: int, started: str, grace: float = STOP_GRACE_SECS) -> bool:
    """SIGTERM the process group of `pid` when `pid` is still the process that started at `started`, SIGKILL
    after `grace` seconds; True when there was one to stop."""
    if process_start(pid) != started:
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return False
    deadline = time.monotonic() + grace
    while process_start(pid) == started and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)  # what is left in the group, the module too when it ignored SIGTERM
    except (ProcessLookupError, PermissionError):
        pass
    return True


def module_script(solution_dir: Path, name: str, image: str) -> Path:
    """Where a module's code is: `modules/<name>/main.py`, else the folder its image names (`${MODULES.x}`,
    `registry/x:tag`), as the image would be built from that folder."""
    script = solution_dir / "modules" / name / "main.py"
    if script.exists() or not image:
        return script
    base = image.rsplit("/", 1)[-1]
    if base.startswith("${MODULES.") and base.endswith("}"):
        folder = base[len("${MODULES.") : -1].split(".")[0]
    else:
        folder = base.split(":")[0].split("@")[0]
    return solution_dir / "modules" / folder / "main.py"


class LocalEdgeAgent:  # pylint: disable=too-many-instance-attributes  # the agent's run state
    """Starts, watches, reconciles and stops one device's module processes; output lines are prefixed with the
    module name (and the device's, in a fleet).

    Each module runs in its own session and process group (a container of its own): Ctrl-C in the terminal
    reaches only the agent, which stops every module with SIGTERM as the IoT Edge runtime does; whatever a
    module leaves behind in its group is killed once the module has exited.

    The desired modules come from the device's `$edgeAgent` twin in the store (the manifest's when no twin holds
    any). `on_hub(fn)` runs fn on the hub's event loop (twin writes); default: call it here.
    """

    def __init__(  # pylint: disable=too-many-arguments
        self,
        manifest: Manifest,
        config: EmulatorConfig,
        store: Store,
        env_file: Path | None = None,
        output: TextIO | None = None,
        python: str | None = None,
        *,
        stop_event: threading.Event | None = None,
        on_hub: Callable[[Callable[[], Any]], Any] | None = None,
        label: str = "",
        backoff_unit: float = BACKOFF_UNIT_SECS,
        env_overrides: Callable[[ModuleSpec], dict[str, str]] | None = None,
    ) -> None:
        self.manifest = manifest
        self.config = config
        self.device_id = config.device_id
        self.store = store
        self.python = python or sys.executable
        self.env_file = env_file or manifest.solution_dir / ".env"
        self.output = output or sys.stdout
        self._out_lock = threading.Lock()
        self.stopping = stop_event or threading.Event()
        self.on_hub = on_hub or (lambda fn: fn())
        self.label = label
        self.backoff_unit = backoff_unit
        self.env_overrides = env_overrides
        self.modules: dict[str, ModuleProcess] = {}
        self.desired_version: int | None = None
        # The modules the desired version being applied starts; its lastDesiredStatus is reported once each has
        # started or failed to (IoT Edge's agent reports it when its plan has run, not when it reads the twin).
        self._plan: dict[str, int] = {}  # module name: its start count when the version came
        self._plan_pending = False
        self._report_due = True
        self._width = 0
        self.pid_dir = config.state_dir / "agent" / self.device_id
        self.stop_leftovers()
        self.reconcile()

    # modules of an agent that did not stop
    def stop_leftovers(self) -> list[str]:
        """Stop the modules an earlier agent of this device started and left running because it was killed
        (SIGKILL, a crash: it could not stop them): they would run twice beside the ones this agent starts. Each
        running module is recorded with its pid and start time under STATE/agent/DEVICE/. Returns their names."""
        stopped = []
        for record in sorted(self.pid_dir.glob("*.json")) if self.pid_dir.is_dir() else []:
            try:
                data = json.loads(record.read_text(encoding="utf-8"))
                pid, started = int(data["pid"]), str(data["started"])
            except (OSError, ValueError, KeyError, TypeError):
                logger.warning("ignoring %s: not a module record", record)
                record.unlink(missing_ok=True)
                continue
            if stop_leftover(pid, started):
                logger.warning(
                    "module %s (pid %d) was left running by an agent that did not stop; stopped it",
                    self._prefix(record.stem),
                    pid,
                )
                stopped.append(record.stem)
            record.unlink(missing_ok=True)
        return stopped

    def _record(self, name: str, pid: int) -> None:
        started = process_start(pid)
        if started is None:
            return
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        partial = self.pid_dir / f"{name}.json.partial"
        partial.write_text(json.dumps({"pid": pid, "started": started}), encoding="utf-8")
        os.replace(partial, self.pid_dir / f"{name}.json")

    # output
    def _prefix(self, name: str) -> str:
        return f"{self.label}/{name}" if self.label else name

    def _emit(self, name: str, line: str) -> None:
        with self._out_lock:
            self.output.write(f"{self._prefix(name):<{self._width}} | {line.rstrip()}\n")
            self.output.flush()

    # desired state
    def _desired(self) -> tuple[int, dict[str, Any]]:
        twin = self.store.get_twin(self.device_id, "$edgeAgent")
        if twin is not None and isinstance(twin.desired.get("modules"), dict):
            return twin.desired_version, twin.desired
        return 0, {"modules": {}}

    def reconcile(self) -> bool:
        """Act on a new `$edgeAgent` desired version; True when there was one."""
        version, desired = self._desired()
        if version == self.desired_version:
            return False
        self.desired_version = version
        try:
            specs = module_specs(desired)
        except ManifestError as e:
            logger.error("%s: desired version %d not applied: %s", self.device_id, version, e)
            self._report({"lastDesiredVersion": version, "lastDesiredStatus": {"code": 400, "description": str(e)}})
            return True
        raw = desired.get("modules") or {}
        plan: set[str] = set()
        for name in [n for n in self.modules if n not in specs]:
            logger.info("%s: module %s removed from the deployment; stopping it", self.device_id, name)
            self._stop_one(self.modules.pop(name))
            self.on_hub(lambda n=name: self.store.delete_identity(self.device_id, n))
            self._report({"modules": {name: None}})
        for name, spec in specs.items():
            current = self.modules.get(name)
            fresh = ModuleProcess(spec, module_script(self.manifest.solution_dir, name, spec.image), dict(raw[name]))
            if current is None:
                logger.info("%s: module %s added", self.device_id, name)
                self.modules[name] = fresh
                plan.add(name)
            elif definition_key(current.raw) != definition_key(fresh.raw):
                logger.info("%s: module %s changed; recreating it", self.device_id, name)
                self._stop_one(current)
                self.modules[name] = fresh
                plan.add(name)
            elif current.spec.status != spec.status:
                logger.info("%s: module %s desired status %s", self.device_id, name, spec.status)
                current.spec, current.raw, current.finished = spec, fresh.raw, False
                current.restarts, current.next_start = 0, 0.0
                if not current.wanted:
                    self._stop_one(current)
                plan.add(name)
            # otherwise untouched: it keeps running
        for module in self.modules.values():
            if not module.wanted and module.process is None:
                module.runtime_status = "stopped"
        self._width = max([self._width, *(len(self._prefix(n)) for n in self.modules)])
        self._plan = {name: self.modules[name].starts for name in plan if self.modules[name].wanted}
        self._plan_pending = True
        self._finish_plan()
        return True

    def _finish_plan(self) -> None:
        """Report the desired version applied once every module it starts has started (200), or failed to start
        (500, naming them); until then the reported lastDesiredVersion stays the one before."""
        if not self._plan_pending:
            return
        failed, waiting = [], False
        for name, starts in sorted(self._plan.items()):
            module = self.modules.get(name)
            if module is None or not module.wanted or module.starts > starts:
                continue  # gone, no longer wanted, or started (it may have exited since: that is run time)
            if module.finished:
                failed.append(f"module {name}: {module.status_description}")
            else:
                waiting = True
        if waiting:
            return
        self._plan_pending = False
        status = {"code": 500, "description": "; ".join(failed)} if failed else {"code": 200, "description": ""}
        if failed:
            logger.error("%s: desired version %s failed: %s", self.device_id, self.desired_version, "; ".join(failed))
        self._report({"lastDesiredVersion": self.desired_version, "lastDesiredStatus": status})

    def _report(self, patch: dict[str, Any]) -> None:
        """Patch `$edgeAgent` reported properties, with every module's state."""
        modules = patch.get("modules", {})
        for name, module in self.modules.items():
            modules.setdefault(name, module.reported())
        body = {
            "schemaVersion": "1.1",
            "runtime": {
                "platform": {"os": sys.platform, "architecture": os.uname().machine if os.name == "posix" else ""}
            },
            "systemModules": {
                "edgeAgent": {"runtimeStatus": "running"},
                "edgeHub": {"runtimeStatus": "running"},
            },
            **patch,
            "modules": modules,
        }
        identity = self.store.get_identity(self.device_id, "$edgeAgent")
        if identity is None:
            return
        payload = json.dumps(body).encode()

        def write() -> None:
            from edgehub_emulator.twins import Twins  # pylint: disable=import-outside-toplevel

            Twins(self.device_id, self.store, lambda *_: None, lambda _c: False).patch_reported(identity, payload)

        try:
            self.on_hub(write)
        except Exception:  # pylint: disable=broad-exception-caught  # a report is retried on the next change
            logger.exception("%s: reporting $edgeAgent properties failed", self.device_id)
        self._report_due = False

    def environment(self, spec: ModuleSpec) -> dict[str, str]:
        """What a device gives the module: the manifest's `env` (placeholders already expanded from .env and the
        shell), the edge environment, and the basics a process needs (PROCESS_BASICS, as its image would set
        them). Nothing else of .env or this shell reaches the module."""
        env = {name: os.environ[name] for name in PROCESS_BASICS if name in os.environ}
        env.update(spec.env)
        if self.env_overrides:
            env.update(self.env_overrides(spec))
        identity = module_identity(self.config, self.store, spec.name)
        env.update(module_environment(self.config, identity, workload=True))
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _start(self, module: ModuleProcess) -> None:
        if not module.script.exists():
            logger.error("module %s: %s does not exist; it is not started", module.spec.name, module.script)
            module.finished = True
            module.runtime_status = "failed"
            module.status_description = f"{module.script} does not exist"
            self._report_due = True
            return
        module.process = subprocess.Popen(  # pylint: disable=consider-using-with  # runs until stop()
            [self.python, str(module.script)],
            cwd=module.script.parent,
            env=self.environment(module.spec),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            start_new_session=os.name == "posix",
        )
        self._record(module.spec.name, module.process.pid)
        reader = threading.Thread(target=self._pump, args=(module.spec.name, module.process.stdout), daemon=True)
        reader.start()
        module.readers = [reader]
        module.runtime_status, module.status_description = "running", "running"
        module.last_start, module.started_at = utc_now(), time.monotonic()
        module.starts += 1
        self._report_due = True
        logger.info("module %s started (pid %d)", self._prefix(module.spec.name), module.process.pid)

    def _pump(self, name: str, stream: TextIO | None) -> None:
        if stream is None:
            return
        for line in stream:
            self._emit(name, line)

    @staticmethod
    def _should_restart(policy: str, code: int) -> bool:
        if policy == "always":
            return True
        if policy in ("on-failure", "on-unhealthy"):
            # IoT Edge restarts an on-unhealthy module when it crashes or its health check fails; no health checks
            # run locally, so here it is the crash alone
            return code != 0
        return False  # "never"

    def _exited(self, module: ModuleProcess, code: int, now: float) -> None:
        """Clean up after an exit and schedule the restart the policy asks for, with IoT Edge's back-off."""
        assert module.process is not None
        _kill_group(module.process)
        for reader in module.readers:
            reader.join(1)
        module.process = None
        module.exit_code, module.last_exit = code, utc_now()
        self._report_due = True
        if now - module.started_at >= HEALTHY_RESET_SECS:
            module.restarts = 0  # it ran long enough to count as healthy
        name, policy = self._prefix(module.spec.name), module.spec.restart_policy
        if not self._should_restart(policy, code):
            logger.info("module %s exited with %d; not restarted (restartPolicy %s)", name, code, policy)
            module.finished = True
            module.runtime_status = "stopped" if code == 0 else "failed"
            module.status_description = f"exited with {code}"
            return
        if module.restarts >= MAX_RESTARTS:
            logger.error("module %s exited with %d after %d restarts; it stays failed", name, code, module.restarts)
            module.finished, module.runtime_status = True, "failed"
            module.status_description = f"exited with {code} after {module.restarts} restarts"
            return
        delay = min(self.backoff_unit * 2**module.restarts, MAX_BACKOFF_SECS)
        module.restarts += 1
        module.next_start = now + delay
        module.runtime_status, module.status_description = "backoff", f"exited with {code}; restarting"
        module.last_restart = utc_now()
        logger.warning("module %s exited with %d; restarting in %.0f s (restartPolicy %s)", name, code, delay, policy)

    def poll(self) -> None:
        """Reconcile a new desired version, start due modules by startupOrder, handle exits; call periodically."""
        if self.stopping.is_set():
            return
        self.reconcile()
        now = time.monotonic()
        for module in sorted(self.modules.values(), key=lambda m: (m.startup_order, m.spec.name)):
            if module.finished or not module.wanted or self.stopping.is_set():
                continue
            if module.process is None:
                if now >= module.next_start:
                    self._start(module)
                continue
            code = module.process.poll()
            if code is not None:
                self._exited(module, code, now)
        self._finish_plan()
        if self._report_due:
            self._report({})

    def run(self, should_stop: Callable[[], bool] | None = None, interval: float = 0.2) -> None:
        """Poll until the stop event is set (stop(), a signal handler) or should_stop(); then stop every module."""
        try:
            while not self.stopping.is_set() and not (should_stop and should_stop()):
                self.poll()
                self.stopping.wait(interval)
        finally:
            self.stop()

    def _stop_one(self, module: ModuleProcess) -> None:
        """SIGTERM one module, SIGKILL after the grace period."""
        process = module.process
        if process is not None and process.poll() is None:
            logger.info("stopping module %s (pid %d)", self._prefix(module.spec.name), process.pid)
            process.terminate()
            try:
                process.wait(STOP_GRACE_SECS)
            except subprocess.TimeoutExpired:
                logger.warning("module %s ignored SIGTERM; killing it", module.spec.name)
                process.kill()
                process.wait()
        if process is not None:
            _kill_group(process)
            module.exit_code, module.last_exit = process.returncode, utc_now()
        for reader in module.readers:
            reader.join(1)
        module.process = None
        module.runtime_status, module.status_description = "stopped", "stopped"
        self._report_due = True

    def stop(self) -> None:
        """SIGTERM every module (as the IoT Edge runtime does), SIGKILL after the grace period."""
        self.stopping.set()
        running = [m for m in self.modules.values() if m.process and m.process.poll() is None]
        for module in running:
            assert module.process is not None
            logger.info("stopping module %s (pid %d)", self._prefix(module.spec.name), module.process.pid)
            module.process.terminate()
        deadline = time.monotonic() + STOP_GRACE_SECS
        for module in running:
            assert module.process is not None
            try:
                module.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("module %s ignored SIGTERM; killing it", module.spec.name)
                module.process.kill()
                module.process.wait()
            _kill_group(module.process)
        for module in self.modules.values():
            for reader in module.readers:
                reader.join(1)
            (self.pid_dir / f"{module.spec.name}.json").unlink(missing_ok=True)


def hub_caller(loop: Any) -> Callable[[Callable[[], Any]], Any]:
    """A function that runs a callable on the hub's event loop and waits for its result."""

    def call(fn: Callable[[], Any]) -> Any:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except Exception as e:  # pylint: disable=broad-exception-caught  # handed to the caller
                future.set_exception(e)

        loop.call_soon_threadsafe(run)
        return future.result(30)

    return call
