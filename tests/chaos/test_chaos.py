"""The whole solution under faults (tools/chaos.py): one fault of each kind and part while ten users sign in
through the front-end and alerts flow to a webhook, and an over-the-air model update is published meanwhile;
then the invariants. The version in `make test`: each part's fault in its own lane at a moment of the first two
minutes, the lanes at once (--overlap), each stop (authrequest, the classifier, alert, the front-end, the hub)
65 s, longer than the SDKs' 60 s MQTT keep-alive, and each damaged state file (the hub's database, the alert
queue, the model store) once; bench/chaos_bench.py injects hundreds of faults. The seed is CHAOS_SEED when
set, else SEED (fixed, so `make test` is reproducible); it is printed and in the failure message, so a run can
be replayed with `tools/chaos.py --seed N`.

Needs the fixed ports of `make run`: run it inside `unshare --net` (locally it skips when they are taken, in CI
it fails)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from solution_testkit import port_free, require_part, wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1500)]

ROOT = Path(__file__).resolve().parents[2]
FIXED_PORTS = (8883, 10000, 10001, 10002, 8443, 8000, 8080)
SEED = 19  # the seed that found the lost request (see authrequest's follow-up)


def test_one_fault_of_each_kind_under_load_loses_nothing(tmp_path: Path) -> None:
    try:  # the previous test module's parts may still be on their way out
        wait_for(lambda: all(port_free(port) for port in FIXED_PORTS), 30, "the fixed ports to be free", 0.5)
    except AssertionError:
        pass
    taken = [port for port in FIXED_PORTS if not port_free(port)]
    require_part(not taken, f"ports {taken} are taken: run this inside `unshare --net`")
    seed = int(os.environ.get("CHAOS_SEED") or SEED)
    print(f"chaos seed {seed}")
    figures_path = tmp_path / "figures.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "chaos.py"), "--seed", str(seed), "--faults-per-kind", "1",
         "--overlap", "--span", "120", "--stop-seconds", "65", "--state", str(tmp_path / "run"),
         "--json", str(figures_path)],
        capture_output=True, text=True, timeout=1400, check=False, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode in (0, 1), f"seed {seed}: the solution did not run:\n{run.stderr[-4000:]}"
    assert figures_path.is_file(), f"seed {seed}: no figures (exit {run.returncode}):\n{run.stderr[-4000:]}"
    figures = json.loads(figures_path.read_text(encoding="utf-8"))
    # the harness did what it says: every fault of every kind, under real load
    assert figures["faults_by_kind"] == {
        f"{kind}:{part}": 1
        for kind, parts in (("kill", ("authrequest", "classifier", "alert", "frontend", "azurite", "hub")),
                            ("stop", ("authrequest", "classifier", "alert", "frontend", "hub")), ("away", ("hub",)),
                            ("corrupt", ("hub", "alert", "classifier")))
        for part in parts
    }  # fmt: skip
    assert figures["sign_ins"] >= 10 and figures["requests_queued"] >= 10
    assert figures["sign_ins_by_state"].get("found", 0) >= 1
    # the invariants
    assert figures["violations"] == [], f"seed {seed}: {figures['violations']}\n{run.stderr[-4000:]}"
    assert figures["requests_lost"] == [] and figures["results_without_request"] == []
    assert figures["sign_ins_unanswered"] == 0 and figures["faults_not_recovered"] == 0
    assert figures["sign_ins_refused_without_try_again"] == 0 and figures["sign_ins_unreachable_while_frontend_up"] == 0
    assert figures["recovery_bound_s"] == 120.0  # 65 s stops + 40 s reconnection + 15 s start (tools/chaos.py)
    # every answered request: found or expired; nothing for the forged ones sent all along; results lost by
    # Azurite only within its 5 s autosave window before a kill
    assert figures["results_neither_found_nor_expired"] == [] and figures["forged_requests"] >= 10
    assert figures["forged_requests_with_blobs"] == [] and figures["results_lost_outside_azurite_autosave_window"] == []
    # every upstream message is read (none capped), the damaged hub database's included
    assert (
        figures["upstream_messages"]
        >= figures["verifications_upstream"]
        >= figures["requests_with_verification_upstream"]
    )
    assert figures["upstream_messages_read_before_hub_damage"] >= 1 and figures["hub_rebuilt_from_manifest"] == 1
    # damaged state files: refused with the clear error (the hub) or recovered with a warning (alert, classifier)
    damaged = {d["fault"]: d for d in figures["damaged_state_files"]}
    assert set(damaged) == {"corrupt:hub", "corrupt:alert", "corrupt:classifier"}
    assert all(d["ok"] for d in damaged.values()), damaged
    # the hub away 30 s and stopped 65 s: the classifier kept processing frames, its verifications arrived after
    offline = figures["hub_offline"]
    assert sorted(o["fault"] for o in offline) == ["away:hub", "stop:hub"]
    assert all(o["verifications_never_delivered"] == [] and o["classifier_fps"] != 0 for o in offline), offline
    assert figures["alerts_accepted"] >= 1 and figures["alerts_lost"] == []
    assert figures["left_over"] == []
    update = figures["model_update"]  # published during the faults; never half-swapped
    assert update["published"] and update["ok"], update
    assert update["status"] in ("active", "failed") and update["served_version"] == update["reported_version"]
    assert run.returncode == 0
