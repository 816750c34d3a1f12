"""`monitor --from-start --once` prints every stored `$upstream` message, not only the service's first batch of
500 (tools/chaos.py counted the verification duplicates of 438 of 922 requests because of it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgehub_emulator import cli

STORED = 1234  # more than two of the service's default batches (500)


def _fake_service(calls: list[dict[str, Any]]) -> Any:
    def request(_config: Any, method: str, path: str, **kwargs: Any) -> Any:
        assert (method, path) == ("GET", "/emulator/upstream")
        params = kwargs.get("params", {})
        calls.append(dict(params))
        after, limit = int(params.get("after", 0)), int(params.get("limit", 500))
        return [{"seq": seq, "enqueuedTime": 0.0, "properties": {}, "body": "{}"}
                for seq in range(after + 1, min(after + limit, STORED) + 1)]  # fmt: skip

    return request


@pytest.mark.parametrize("raw", [False, True])
def test_once_from_start_prints_every_stored_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], raw: bool
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(cli, "_service_request", _fake_service(calls))
    argv = ["monitor", "--from-start", "--once", "--state", str(tmp_path), *(["--raw"] if raw else [])]
    assert cli.main(argv) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["seq"] for line in lines] == list(range(1, STORED + 1))
    assert calls[-1]["after"] == STORED  # it stopped at the first empty batch


def test_once_without_from_start_prints_nothing_old(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "_service_request", _fake_service([]))
    assert cli.main(["monitor", "--once", "--state", str(tmp_path)]) == 0
    assert capsys.readouterr().out == ""
