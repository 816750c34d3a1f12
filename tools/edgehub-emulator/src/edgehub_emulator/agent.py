"""A local edgeAgent: every module of the manifest as a process, restarted per its restartPolicy."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TextIO

from edgehub_emulator.config import EmulatorConfig
from edgehub_emulator.environment import module_environment, module_identity
from edgehub_emulator.manifest import Manifest, ModuleSpec
from edgehub_emulator.store import Store

logger = logging.getLogger(__name__)

MAX_BACKOFF_SECS = 30.0
STOP_GRACE_SECS = 10.0
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


@dataclass
class ModuleProcess:
    """One module's process and restart bookkeeping."""

    spec: ModuleSpec
    script: Path
    process: subprocess.Popen[str] | None = None
    restarts: int = 0
    next_start: float = 0.0
    backoff: float = 1.0
    finished: bool = False
    readers: list[threading.Thread] = field(default_factory=list)


def _kill_group(process: subprocess.Popen[str]) -> None:
    """SIGKILL what the module left behind in its process group, as a container's end kills everything in it."""
    if os.name != "posix":
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone: the module left nothing behind


class LocalEdgeAgent:
    """Starts, watches and stops module processes; output lines are prefixed with the module name.

    Each module runs in its own session and process group (a container of its own): Ctrl-C in the terminal
    reaches only the agent, which stops every module with SIGTERM as the IoT Edge runtime does; whatever a
    module leaves behind in its group is killed once the module has exited.
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
    ) -> None:
        self.manifest = manifest
        self.config = config
        self.store = store
        self.python = python or sys.executable
        self.env_file = env_file or manifest.solution_dir / ".env"
        self.output = output or sys.stdout
        self._out_lock = threading.Lock()
        self.stopping = stop_event or threading.Event()
        self.modules: dict[str, ModuleProcess] = {}
        for name, spec in manifest.modules.items():
            if spec.status != "running":
                logger.info("module %s has status %r: not started", name, spec.status)
                continue
            script = manifest.solution_dir / "modules" / name / "main.py"
            self.modules[name] = ModuleProcess(spec, script)
        self._width = max((len(n) for n in self.modules), default=0)

    def _emit(self, name: str, line: str) -> None:
        with self._out_lock:
            self.output.write(f"{name:<{self._width}} | {line.rstrip()}\n")
            self.output.flush()

    def environment(self, spec: ModuleSpec) -> dict[str, str]:
        """What a device gives the module: the manifest's `env` (placeholders already expanded from .env and the
        shell), the edge environment, and the basics a process needs (PROCESS_BASICS, as its image would set
        them). Nothing else of .env or this shell reaches the module."""
        env = {name: os.environ[name] for name in PROCESS_BASICS if name in os.environ}
        env.update(spec.env)
        identity = module_identity(self.config, self.store, spec.name)
        env.update(module_environment(self.config, identity, workload=True))
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _start(self, module: ModuleProcess) -> None:
        if not module.script.exists():
            logger.error("module %s: %s does not exist; it is not started", module.spec.name, module.script)
            module.finished = True
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
        reader = threading.Thread(target=self._pump, args=(module.spec.name, module.process.stdout), daemon=True)
        reader.start()
        module.readers = [reader]
        logger.info("module %s started (pid %d)", module.spec.name, module.process.pid)

    def _pump(self, name: str, stream: TextIO | None) -> None:
        if stream is None:
            return
        for line in stream:
            self._emit(name, line)

    @staticmethod
    def _should_restart(policy: str, code: int) -> bool:
        if policy == "always":
            return True
        if policy == "on-failure":
            return code != 0
        return False  # "never", and "on-unhealthy" (no health checks run locally)

    def _exited(self, module: ModuleProcess, code: int, now: float) -> None:
        """Clean up after an exit and schedule the restart the policy asks for."""
        assert module.process is not None
        _kill_group(module.process)
        for reader in module.readers:
            reader.join(1)
        name, policy = module.spec.name, module.spec.restart_policy
        if not self._should_restart(policy, code):
            logger.info("module %s exited with %d; not restarted (restartPolicy %s)", name, code, policy)
            module.finished = True
            return
        module.restarts += 1
        module.next_start = now + module.backoff
        logger.warning(
            "module %s exited with %d; restarting in %.0f s (restartPolicy %s)",
            name,
            code,
            module.backoff,
            policy,
        )
        module.backoff = min(module.backoff * 2, MAX_BACKOFF_SECS)
        module.process = None

    def poll(self) -> None:
        """Start due modules and handle exits; call it periodically."""
        now = time.monotonic()
        for module in self.modules.values():
            if module.finished or self.stopping.is_set():
                continue
            if module.process is None:
                if now >= module.next_start:
                    self._start(module)
                continue
            code = module.process.poll()
            if code is not None:
                self._exited(module, code, now)

    def run(self, should_stop: Callable[[], bool] | None = None, interval: float = 0.2) -> None:
        """Poll until the stop event is set (stop(), a signal handler) or should_stop(); then stop every module."""
        try:
            while not self.stopping.is_set() and not (should_stop and should_stop()):
                self.poll()
                self.stopping.wait(interval)
        finally:
            self.stop()

    def stop(self) -> None:
        """SIGTERM every module (as the IoT Edge runtime does), SIGKILL after the grace period."""
        self.stopping.set()
        running = [m for m in self.modules.values() if m.process and m.process.poll() is None]
        for module in running:
            assert module.process is not None
            logger.info("stopping module %s (pid %d)", module.spec.name, module.process.pid)
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
