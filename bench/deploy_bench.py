"""Deploying to a local fleet of 3 emulated edge devices (`edgehub-emulator up --fleet`); prints one JSON object.

Each round deploys at scale (`edgevision deploy --target-condition ... --wait`, the command `make deploy` runs)
a manifest that changes one module's env on the two targeted devices of three, and measures:
- seconds from starting the deploy command to every targeted device reporting the deployment applied
  (`reportedSuccessfulCount` = targeted), the command's start-up and its 1 s polling included;
- the share of untouched modules (every module of the untargeted device, and the unchanged ones of the targeted
  devices) whose process kept running (the goal: 100 %).
Memory per added device: the proportional set size (PSS) of one device's module processes, for the light test
modules and, with --solution, for the solution's real modules (classifier, authrequest, alert: `up` on
deployment.template.json with two devices, Azurite started by tools/solution_up.py).
Needs port 8883 free: unshare --net bash -c 'ip link set lo up; .venv/bin/python bench/deploy_bench.py'
Usage: python bench/deploy_bench.py [--rounds N] [--solution] [--settle SECONDS] [--json PATH]
(--json also writes the figures to PATH, e.g. bench/results/<date>-quiet/deploy.json)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edgehub_emulator.process import FleetProcess, free_port, module_processes, proportional_memory

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tools" / "edgehub-emulator" / "tests" / "fixtures" / "solution"
BIN = Path(sys.executable).parent
DEVICES = ("lobby", "garage", "attic")
TARGET = "tags.site='lobby' OR tags.site='garage'"


def expanded_fleet_manifest() -> dict[str, Any]:
    """The test modules' fleet manifest as genconfig would expand it."""
    manifest = json.loads((FIXTURE / "fleet.template.json").read_text(encoding="utf-8"))
    manifest.pop("$schema-template", None)
    agent = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]
    for spec in agent["modules"].values():
        folder = spec["settings"]["image"].removeprefix("${MODULES.").removesuffix("}")
        spec["settings"]["image"] = f"example.azurecr.io/{folder}:1.0-amd64"
        spec["settings"]["createOptions"] = json.dumps(spec["settings"].get("createOptions", {}))
    agent["systemModules"] = {
        name: {"type": "docker", "settings": {"image": f"mcr.microsoft.com/azureiotedge-{name[4:].lower()}:1.5"}}
        for name in ("edgeAgent", "edgeHub")
    }
    return manifest


def device_memory(device: str) -> tuple[int, int]:
    """(bytes of PSS, process count) of a device's module processes."""
    pids = [pid for pids in module_processes(device).values() for pid in pids]
    return sum(proportional_memory(pid) for pid in pids), len(pids)


def light_fleet(rounds: int, work: Path) -> dict[str, Any]:  # pylint: disable=too-many-locals
    """Deploy rounds on the light fleet; timings, the untouched share and memory per device."""
    solution = work / "solution"
    shutil.copytree(FIXTURE, solution)
    manifest = expanded_fleet_manifest()
    (solution / "deployment.json").write_text(json.dumps(manifest), encoding="utf-8")
    totals: list[float] = []
    kept = untouched = 0
    with FleetProcess(work / "state", solution / "deployment.json", solution / "fleet.json", work / "up.log") as fleet:
        env = {**os.environ, **fleet.service_env()}
        deadline = time.monotonic() + 60
        while len(module_processes()) < len(DEVICES) * 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)  # the SDK modules connect
        memory = {device: device_memory(device) for device in DEVICES}
        for number in range(rounds):
            modules = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]
            modules["worker"]["env"]["GREETING"]["value"] = f"round{number}"
            path = solution / f"round{number}.json"
            path.write_text(json.dumps(manifest), encoding="utf-8")
            before = module_processes()
            started = time.monotonic()
            result = subprocess.run(
                [str(BIN / "edgevision"), "deploy", "--manifest", str(path), "--target-condition", TARGET]
                + ["--priority", str(number + 1), "--wait", "--timeout", "120"],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            total = time.monotonic() - started
            if result.returncode != 0:
                raise RuntimeError(f"deploy failed: {result.stderr}")
            totals.append(total)
            after = module_processes()
            for (device, module), pids in before.items():
                if device in ("lobby", "garage") and module == "worker":
                    continue
                untouched += 1
                kept += int(after.get((device, module)) == pids)
    return {
        "devices": len(DEVICES),
        "rounds": rounds,
        "deploy_to_all_applied_s_median": round(statistics.median(totals), 2),
        "deploy_to_all_applied_s_max": round(max(totals), 2),
        "untouched_modules_kept_running_share": round(kept / untouched, 4) if untouched else None,
        "untouched_modules_counted": untouched,
        "light_modules_pss_mib_per_device": {device: round(pss / 2**20, 1) for device, (pss, _count) in memory.items()},
        "light_module_processes_per_device": memory["lobby"][1],
    }


def solution_memory(settle: float, work: Path) -> dict[str, Any]:
    """PSS of each device's real modules, two devices of the solution's template under `up` (with Azurite)."""
    state = work / "solution-state"
    command = [
        sys.executable,
        str(ROOT / "tools" / "solution_up.py"),
        "--state",
        str(state),
        "--",
        str(BIN / "edgehub-emulator"),
        "up",
        str(ROOT / "iot-edge-solution" / "deployment.template.json"),
        "--state",
        str(state),
        "--device",
        "device-a",
        "--device",
        "device-b",
        "--service-port",
        str(free_port()),
        "--workload-port",
        str(free_port()),
        "--module-method-port",
        "0",
    ]
    with (work / "solution.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # pylint: disable=consider-using-with
    try:
        time.sleep(settle)
        figures = {}
        for device in ("device-a", "device-b"):
            by_module = {
                module: round(sum(proportional_memory(pid) for pid in pids) / 2**20, 1)
                for (owner, module), pids in module_processes(device).items()
                if owner == device
            }
            figures[device] = {"modules_pss_mib": by_module, "total_pss_mib": round(sum(by_module.values()), 1)}
        return {"settle_s": settle, "per_device": figures}
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def write_figures(figures: dict[str, Any], json_path: Path | None) -> str:
    """The figures as JSON text, also written to json_path (its folder made) when given."""
    text = json.dumps(figures, indent=2)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(text + "\n", encoding="utf-8")
    return text


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="deployments in a row (default 3)")
    parser.add_argument("--solution", action="store_true", help="also the real modules' memory per device")
    parser.add_argument("--settle", type=float, default=60.0, help="seconds the real modules run before measuring")
    parser.add_argument("--json", type=Path, help="also write the figures to this file (e.g. under bench/results/)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    with tempfile.TemporaryDirectory(prefix="deploy-bench-") as folder:
        work = Path(folder)
        figures: dict[str, Any] = {"light_fleet": light_fleet(args.rounds, work)}
        if args.solution:
            figures["solution_memory"] = solution_memory(args.settle, work)
    print(write_figures(figures, args.json))


if __name__ == "__main__":
    main()
