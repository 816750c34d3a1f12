"""The long fault run: tools/chaos.py with many faults while ten users sign in all along: SIGKILL of
authrequest, the classifier, alert, the front-end, Azurite and the emulator; SIGSTOP of authrequest, the
classifier, alert, the front-end and the emulator for longer than the Azure IoT SDK's 60 s MQTT keep-alive, then
SIGCONT; the hub away 30 s; damaged state files (the emulator's database cut in half, a record cut short in the
alert queue, a partial package and half a model in the model store); an over-the-air model update among them.
Each part's faults come one after the other, spread over --span seconds, the parts' at the same time
(--overlap), so 200 faults take about half an hour on two cores. Prints the figures as JSON: faults by kind and
part, requests queued and lost (the goal is 0), verification duplicates upstream (over every upstream message),
alerts accepted and delivered, p95 and max recovery per part, the slowest user answer and the invariants that
did not hold.

Needs the fixed ports of `make run`: inside `unshare --net`, e.g. for 200 faults

    unshare --net bash -c 'ip link set lo up; nice .venv/bin/python bench/chaos_bench.py --faults 200'
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Shares of the faults by kind and part (of 200). A module killed again and again is restarted after a longer and
# longer back-off (IoT Edge's: unit * 2^restarts, reset after 10 minutes up) and given up after 20 restarts, so
# each module is restarted 8 times (its kills and its damaged state files) and the agent's back-off unit is 0.25 s
# here (10 s in production and tests/chaos): the 8th waits 32 s, within the recovery bound. The hub's lane holds
# 65 s stops, 30 s outages and restarts: about 20 minutes of the span. The cheap faults (the front-end, Azurite)
# make up the count.
MIX = {
    "kill:authrequest": 8,
    "kill:classifier": 6,
    "kill:alert": 6,
    "stop:authrequest": 8,
    "stop:classifier": 8,
    "stop:alert": 6,
    "stop:frontend": 6,
    "stop:hub": 4,
    "kill:frontend": 54,
    "kill:azurite": 64,
    "away:hub": 12,
    "kill:hub": 10,
    "corrupt:hub": 4,
    "corrupt:alert": 2,
    "corrupt:classifier": 2,
}


def main() -> int:
    """Run tools/chaos.py with enough faults of each kind; its JSON goes to stdout."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--faults", type=int, default=200, help="at least this many faults in all")
    parser.add_argument("--seed", type=int, help="the faults' order and moments (default: a new one, printed)")
    parser.add_argument("--stop-seconds", type=float, default=65.0, help="how long a stopped module stays stopped")
    parser.add_argument(
        "--gap", type=float, nargs=2, default=(1.0, 3.0), help="seconds between a part's faults (min max)"
    )
    parser.add_argument("--span", type=float, default=1380.0, help="seconds each part's faults are spread over")
    parser.add_argument("--backoff-unit", type=float, default=0.25, help="the agent's restart back-off unit (s)")
    parser.add_argument("--state", help="keep the run's folder here (logs, Azurite data, the emulator's state)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    command = [sys.executable, str(ROOT / "tools" / "chaos.py"), "--overlap", "--span", str(args.span),
               "--backoff-unit", str(args.backoff_unit), "--stop-seconds",
               str(args.stop_seconds), "--gap", *(str(g) for g in args.gap)]  # fmt: skip
    scale = args.faults / sum(MIX.values())
    for kind, share in MIX.items():
        command += ["--count", f"{kind}={max(1, math.ceil(share * scale))}"]
    for option, value in (("--seed", args.seed), ("--state", args.state), ("--json", args.json)):
        if value is not None:
            command += [option, str(value)]
    return subprocess.run(command, check=False, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
