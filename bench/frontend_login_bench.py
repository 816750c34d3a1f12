"""Benchmark the front-end's first factor; prints one JSON object.

Figures: time to refuse a wrong password of an enrolled user against time to refuse an unknown user (the two must
not be told apart by timing), at the user store and through the web app's `POST /login` (in-process ASGI), with
argon2id at its default cost; samples interleaved, in a shuffled order per round, so that machine load hits both
alike. Also the time to accept the right password (user store).
Usage: python bench/frontend_login_bench.py [--samples N]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from argon2 import PasswordHasher
from starlette.testclient import TestClient

from frontend.app import create_app
from frontend.config import FrontendSettings, load_settings
from frontend.secondfactor import Ticket

PASSWORD = "correct horse battery"


class NoDevice:
    """The benchmark never passes the first factor through the app: no device is needed."""

    def request(self, request_id: str, class_name: str, threshold: int, expires_in: int) -> Ticket:
        """Never called by the benchmark."""
        raise AssertionError(f"unexpected ProcessRequest {request_id} {class_name} {threshold} {expires_in}")


def _timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return (time.perf_counter() - start) * 1000


def _summary(wrong: list[float], unknown: list[float]) -> dict[str, float]:
    return {
        "wrong_password_ms_p50": round(statistics.median(wrong), 2),
        "unknown_user_ms_p50": round(statistics.median(unknown), 2),
        "ratio_unknown_over_wrong": round(statistics.median(unknown) / statistics.median(wrong), 3),
    }


def _login_app(folder: str, hasher: PasswordHasher) -> tuple[Callable[[str, str], object], Callable[[str], None]]:
    """The app with alice enrolled: (authenticate at the user store, refused `POST /login` for a user name)."""
    settings = load_settings(
        FrontendSettings,
        iothub_connection_string="HostName=unused;SharedAccessKeyName=s;SharedAccessKey=a2V5",
        frontend_database=Path(folder) / "bench.sqlite3",
        frontend_secret_key="b" * 40,
        frontend_max_failures=10**6,
    )
    app = create_app(settings, gateway=NoDevice(), hasher=hasher)
    users = app.state.services.users
    users.add("alice", PASSWORD, "coffee mug")
    client = TestClient(app, follow_redirects=False)
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
    assert match
    token = match.group(1)

    def post(name: str) -> None:
        response = client.post("/login", data={"csrf_token": token, "username": name, "password": "wrong one"})
        assert response.status_code == 401

    return users.authenticate, post


def _measure(samples: int, hasher: PasswordHasher) -> dict[str, list[float]]:
    """Interleaved samples of each case in a shuffled order per round; the first two rounds warm up and are
    dropped."""
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        authenticate, post = _login_app(folder, hasher)
        cases: dict[str, Callable[[], object]] = {
            "store_wrong": lambda: authenticate("alice", "wrong one"),
            "store_unknown": lambda: authenticate("mallory", "wrong one"),
            "store_right": lambda: authenticate("alice", PASSWORD),
            "http_wrong": lambda: post("alice"),
            "http_unknown": lambda: post("mallory"),
        }
        order = random.Random(1)
        for i in range(samples + 2):
            names = list(cases)
            order.shuffle(names)  # no case always runs right after another (memory, caches)
            for name in names:
                action = cases[name]
                elapsed = _timed(action)
                if i >= 2:
                    times.setdefault(name, []).append(elapsed)
    return times


def main(argv: list[str] | None = None) -> int:
    """Run and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=30)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    hasher = PasswordHasher()
    times = _measure(args.samples, hasher)
    figures = {
        "samples": args.samples,
        "argon2": {"time_cost": hasher.time_cost, "memory_kib": hasher.memory_cost, "parallelism": hasher.parallelism},
        "user_store": {
            **_summary(times["store_wrong"], times["store_unknown"]),
            "right_password_ms_p50": round(statistics.median(times["store_right"]), 2),
        },
        "post_login": _summary(times["http_wrong"], times["http_unknown"]),
    }
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
