"""The user store (argon2 hashes, enrolled objects), the lock-out, the object catalog."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from frontend.config import BUNDLED_LABELS
from frontend.errors import UnknownObjectError, UserStoreError
from frontend.labels import ObjectCatalog
from frontend.users import LoginGuard, User, UserStore

# low-cost argon2 parameters keep the tests quick; the algorithm and the code paths are the same
FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture
def catalog() -> ObjectCatalog:
    """The bundled model's classes."""
    return ObjectCatalog.from_file(BUNDLED_LABELS)


@pytest.fixture
def store(tmp_path: Path, catalog: ObjectCatalog) -> UserStore:
    """An empty user store with fast argon2 parameters."""
    return UserStore(tmp_path / "db.sqlite3", catalog, FAST)


def test_add_get_list_remove(store: UserStore) -> None:
    assert store.add("Alice", "correct horse", "Coffee  Mug", 80) == User("alice", "coffee mug", 80)
    store.add("bob", "battery staple", "banana")
    assert store.get("ALICE") == User("alice", "coffee mug", 80)
    assert [u.name for u in store.list()] == ["alice", "bob"]
    assert store.get("bob").threshold == 70
    assert store.remove("Bob") is True
    assert store.remove("bob") is False
    assert store.get("bob") is None


def test_password_is_stored_as_argon2id_hash(store: UserStore, tmp_path: Path) -> None:
    store.add("alice", "correct horse", "coffee mug")
    with sqlite3.connect(tmp_path / "db.sqlite3") as connection:
        (stored,) = connection.execute("SELECT password_hash FROM users").fetchone()
    assert stored.startswith("$argon2id$")
    assert "correct horse" not in stored


def test_authenticate(store: UserStore) -> None:
    store.add("alice", "correct horse", "coffee mug")
    assert store.authenticate("Alice", "correct horse") == User("alice", "coffee mug", 70)
    assert store.authenticate("alice", "wrong horse") is None
    assert store.authenticate("nobody", "correct horse") is None
    assert store.authenticate("alice", "") is None


class CountingHasher(PasswordHasher):
    """The real argon2 hasher, recording which hashes it verified against."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=1024, parallelism=1)
        self.verified: list[str] = []

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:  # pylint: disable=redefined-builtin
        self.verified.append(str(hash))
        return super().verify(hash, password)


def test_unknown_user_costs_an_argon2_verification(tmp_path: Path, catalog: ObjectCatalog) -> None:
    """An unknown user's password is checked against a dummy hash: the same work as a wrong password."""
    hasher = CountingHasher()
    store = UserStore(tmp_path / "db.sqlite3", catalog, hasher)
    store.add("alice", "correct horse", "coffee mug")
    assert store.authenticate("alice", "wrong horse") is None
    assert store.authenticate("nobody", "wrong horse") is None
    assert len(hasher.verified) == 2
    assert all(h.startswith("$argon2id$v=19$m=1024,t=1,p=1$") for h in hasher.verified)
    assert hasher.verified[0] != hasher.verified[1]


def test_old_parameters_are_rehashed_on_sign_in(tmp_path: Path, catalog: ObjectCatalog) -> None:
    path = tmp_path / "db.sqlite3"
    UserStore(path, catalog, FAST).add("alice", "correct horse", "coffee mug")
    stronger = PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1)
    assert UserStore(path, catalog, stronger).authenticate("alice", "correct horse") is not None
    with sqlite3.connect(path) as connection:
        (stored,) = connection.execute("SELECT password_hash FROM users").fetchone()
    assert not stronger.check_needs_rehash(stored)


def test_update(store: UserStore) -> None:
    store.add("alice", "correct horse", "coffee mug")
    assert store.update("alice", password="new password!", threshold=90) == User("alice", "coffee mug", 90)
    assert store.authenticate("alice", "correct horse") is None
    assert store.authenticate("alice", "new password!") is not None
    with pytest.raises(UserStoreError, match="no user 'carol'"):
        store.update("carol", threshold=50)


@pytest.mark.parametrize(
    ("name", "password", "object_name", "threshold", "error"),
    [
        ("", "correct horse", "banana", 70, "invalid user name"),
        ("a b", "correct horse", "banana", 70, "invalid user name"),
        ("-alice", "correct horse", "banana", 70, "invalid user name"),
        ("a" * 65, "correct horse", "banana", 70, "invalid user name"),
        ("alice", "short", "banana", 70, "at least 8 characters"),
        ("alice", "correct horse", "unicorn", 70, "unknown object 'unicorn'"),
        ("alice", "correct horse", "", 70, "unknown object"),
        ("alice", "correct horse", "banana", 0, "invalid threshold 0"),
        ("alice", "correct horse", "banana", 101, "invalid threshold 101"),
        ("alice", "correct horse", "banana", True, "invalid threshold"),
    ],
)
def test_bad_input_is_refused_and_stores_nothing(
    store: UserStore, name: str, password: str, object_name: str, threshold: int, error: str
) -> None:
    with pytest.raises(UserStoreError, match=error):
        store.add(name, password, object_name, threshold)
    assert store.list() == []


def test_duplicate_name_is_refused(store: UserStore) -> None:
    store.add("alice", "correct horse", "coffee mug")
    with pytest.raises(UserStoreError, match="exists already"):
        store.add("ALICE", "other password", "banana")
    assert store.authenticate("alice", "correct horse") is not None


def test_catalog_synonyms_and_suggestions(catalog: ObjectCatalog) -> None:
    assert "tabby" in catalog and "tabby cat" in catalog and "Coffee Mug" in catalog
    assert catalog.resolve(" Tiger  Cat ") == "tiger cat"
    with pytest.raises(UnknownObjectError, match="did you mean 'coffee mug'"):
        catalog.resolve("cofee mug")


@pytest.mark.parametrize(
    ("content", "error"),
    [(b"", "holds no class names"), (b" , ,\n", "holds no class names"), (b"\xff\xfe\x00", "cannot read")],
)
def test_bad_labels_file(tmp_path: Path, content: bytes, error: str) -> None:
    path = tmp_path / "labels.txt"
    path.write_bytes(content)
    with pytest.raises(UnknownObjectError, match=error):
        ObjectCatalog.from_file(path)


def test_missing_labels_file(tmp_path: Path) -> None:
    with pytest.raises(UnknownObjectError, match="cannot read"):
        ObjectCatalog.from_file(tmp_path / "missing.txt")


def test_lockout_after_max_failures(tmp_path: Path) -> None:
    guard = LoginGuard(tmp_path / "db.sqlite3", max_failures=3, window=60, lockout=30)
    now = 1_000_000.0
    for i in range(2):
        guard.record_failure("Alice", now + i)
        assert guard.wait_seconds("alice", now + i) == 0
    guard.record_failure("alice", now + 2)
    assert guard.wait_seconds("ALICE", now + 2) == pytest.approx(30)
    assert guard.wait_seconds("alice", now + 12) == pytest.approx(20)
    assert guard.wait_seconds("alice", now + 33) == 0
    assert guard.wait_seconds("bob", now + 2) == 0  # per user name


def test_failures_outside_the_window_do_not_count(tmp_path: Path) -> None:
    guard = LoginGuard(tmp_path / "db.sqlite3", max_failures=2, window=10, lockout=30)
    guard.record_failure("alice", 100.0)
    guard.record_failure("alice", 111.0)
    assert guard.wait_seconds("alice", 111.0) == 0


def test_reset_clears_failures(tmp_path: Path) -> None:
    guard = LoginGuard(tmp_path / "db.sqlite3", max_failures=1, window=60, lockout=30)
    now = time.time()
    guard.record_failure("alice", now)
    assert guard.wait_seconds("alice", now) > 0
    guard.reset("alice")
    assert guard.wait_seconds("alice", now) == 0
