"""The queue reads only the window it needs; expired messages and old `$upstream` messages are purged."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgehub_emulator.config import EmulatorConfig
from edgehub_emulator.errors import ConfigError
from edgehub_emulator.hub import Hub
from edgehub_emulator.store import Store


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    """A fresh state database."""
    db = Store(tmp_path / "state" / "state.sqlite3")
    yield db
    db.close()


def test_pending_returns_the_window_by_priority_skipping_what_is_unwanted(store: Store) -> None:
    seqs = [store.enqueue("d/m", f"t/{i}", b"x", priority=i % 2) for i in range(10)]
    skipped = {seqs[0], seqs[2]}
    window = store.pending("d/m", lambda seq, topic: seq not in skipped, limit=4)
    assert [m.topic for m in window] == ["t/4", "t/6", "t/8", "t/1"]
    assert store.pending("other", lambda seq, topic: True, limit=4) == []


def test_pending_leaves_out_expired_messages_and_purge_deletes_them(store: Store) -> None:
    store.enqueue("d/m", "old", b"x", expires_at=100.0)
    store.enqueue("d/m", "new", b"x", expires_at=300.0)
    store.enqueue("d/m", "forever", b"x")
    assert [m.topic for m in store.pending("d/m", lambda s, t: True, 10, now=200.0)] == ["new", "forever"]
    assert store.queue_length() == 3
    assert store.purge_expired(now=200.0) == 1
    assert store.queue_length() == 2


def test_hub_purge_bounds_upstream_by_count_and_age(tmp_path: Path, store: Store) -> None:
    config = EmulatorConfig(state_dir=tmp_path / "state", upstream_max_messages=5, upstream_max_age_secs=60)
    hub = Hub(config, store)
    for i in range(8):
        store.add_upstream("edge-device", "m", "out", {}, str(i).encode())
    assert hub.purge() == (0, 3)
    assert [m.body for m in store.upstream_after(0)] == [b"3", b"4", b"5", b"6", b"7"]
    assert hub.purge(now=10**10) == (0, 5)  # all older than 60 s by then
    assert store.upstream_count() == 0


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({"upstream_max_messages": 0}, "upstream_max_messages"),
        ({"upstream_max_age_secs": -1}, "upstream_max_age_secs"),
        ({"purge_interval_secs": 0}, "purge_interval_secs"),
        ({"bind_hosts": ()}, "bind_hosts must name at least one address"),
    ],
)
def test_bad_retention_settings_are_refused(settings: dict[str, object], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        EmulatorConfig(**settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("hosts", "seed", "exposed"),
    [
        (("127.0.0.1", "::1"), "edgehub-emulator-local-seed", False),
        (("0.0.0.0",), "edgehub-emulator-local-seed", True),
        (("192.0.2.10",), "edgehub-emulator-local-seed", True),
        (("0.0.0.0",), "a secret of my own", False),
    ],
)
def test_the_public_seed_counts_as_exposed_only_beyond_loopback(
    hosts: tuple[str, ...], seed: str, exposed: bool
) -> None:
    assert EmulatorConfig(bind_hosts=hosts, seed=seed).public_seed_exposed is exposed
