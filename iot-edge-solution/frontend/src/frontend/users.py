"""Users (argon2-hashed passwords and the enrolled object) and failed sign-ins, in SQLite."""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from frontend.errors import UserStoreError
from frontend.labels import ObjectCatalog

logger = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")
MIN_PASSWORD_LENGTH = 8
DEFAULT_THRESHOLD = 70

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    object TEXT NOT NULL,
    threshold INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS failed_logins (name TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS failed_logins_name ON failed_logins (name, at);
CREATE TABLE IF NOT EXISTS retries (name TEXT NOT NULL, session TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS retries_name ON retries (name, at);
"""


@dataclass(frozen=True)
class User:
    """An enrolled user: the first factor's hash stays in the store, the second factor is object + threshold."""

    name: str
    object: str
    threshold: int


@contextmanager
def connect(path: Path) -> Iterator[sqlite3.Connection]:
    """One short-lived connection per operation (callers run on several threads); commits on success."""
    with closing(sqlite3.connect(path, timeout=10)) as connection:
        with connection:
            yield connection


def prepare_database(path: Path, schema: str) -> None:
    """Create the folder and the tables when missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with connect(path) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.executescript(schema)


def normalize_name(name: str) -> str:
    """User names are case-insensitive: stored and compared in lower case."""
    return name.strip().lower()


class UserStore:
    """Users in SQLite; passwords hashed with argon2id."""

    def __init__(self, path: Path, catalog: ObjectCatalog, hasher: PasswordHasher | None = None) -> None:
        self.path = path
        self.catalog = catalog
        self.hasher = hasher or PasswordHasher()
        # Unknown users are checked against this hash, so that they cost the same time as a wrong password.
        self._dummy_hash = self.hasher.hash("not a password of anyone")
        prepare_database(path, _SCHEMA)

    def add(self, name: str, password: str, object_name: str, threshold: int = DEFAULT_THRESHOLD) -> User:
        """Enrol a new user; UserStoreError (a clear reason) when a value is refused or the name is taken."""
        user = User(check_name(name), self.catalog.resolve(object_name), check_threshold(threshold))
        password_hash = self.hasher.hash(check_password(password))
        try:
            with connect(self.path) as connection:
                connection.execute(
                    "INSERT INTO users (name, password_hash, object, threshold, created_at) VALUES (?, ?, ?, ?, ?)",
                    (user.name, password_hash, user.object, user.threshold, time.time()),
                )
        except sqlite3.IntegrityError as e:
            raise UserStoreError(f"user {user.name!r} exists already") from e
        logger.info("enrolled user %s (object %r, threshold %d %%)", user.name, user.object, user.threshold)
        return user

    def update(
        self, name: str, password: str | None = None, object_name: str | None = None, threshold: int | None = None
    ) -> User:
        """Change a user's password, object or threshold (None keeps it)."""
        current = self.get(name)
        if current is None:
            raise UserStoreError(f"no user {normalize_name(name)!r}")
        user = User(
            current.name,
            current.object if object_name is None else self.catalog.resolve(object_name),
            current.threshold if threshold is None else check_threshold(threshold),
        )
        with connect(self.path) as connection:
            connection.execute(
                "UPDATE users SET object = ?, threshold = ? WHERE name = ?", (user.object, user.threshold, user.name)
            )
            if password is not None:
                connection.execute(
                    "UPDATE users SET password_hash = ? WHERE name = ?",
                    (self.hasher.hash(check_password(password)), user.name),
                )
        return user

    def get(self, name: str) -> User | None:
        """The user of that name (any case), or None."""
        with connect(self.path) as connection:
            row = connection.execute(
                "SELECT name, object, threshold FROM users WHERE name = ?", (normalize_name(name),)
            ).fetchone()
        return User(*row) if row else None

    def list(self) -> list[User]:
        """Every user, by name."""
        with connect(self.path) as connection:
            rows = connection.execute("SELECT name, object, threshold FROM users ORDER BY name").fetchall()
        return [User(*row) for row in rows]

    def remove(self, name: str) -> bool:
        """Delete a user; False when there was none of that name."""
        with connect(self.path) as connection:
            deleted = connection.execute("DELETE FROM users WHERE name = ?", (normalize_name(name),)).rowcount
        return bool(deleted)

    def authenticate(self, name: str, password: str) -> User | None:
        """The user when the password is right; None for a wrong password and for an unknown user alike, after
        the same argon2 work (the answer and its timing do not tell whether the user exists)."""
        key = normalize_name(name)
        with connect(self.path) as connection:
            row = connection.execute(
                "SELECT name, object, threshold, password_hash FROM users WHERE name = ?", (key,)
            ).fetchone()
        stored = row[3] if row else self._dummy_hash
        try:
            self.hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if row is None:
            return None
        if self.hasher.check_needs_rehash(stored):
            with connect(self.path) as connection:
                connection.execute(
                    "UPDATE users SET password_hash = ? WHERE name = ?", (self.hasher.hash(password), key)
                )
        return User(row[0], row[1], row[2])


class LoginGuard:
    """Lock-out after repeated failures: `max_failures` failed sign-ins of one user name within `window` seconds
    lock that name for `lockout` seconds after the last failure. Counted per name whether or not the user
    exists, so the lock-out tells nothing about who is enrolled."""

    def __init__(self, path: Path, max_failures: int = 5, window: float = 900, lockout: float = 300) -> None:
        self.path = path
        self.max_failures = max_failures
        self.window = window
        self.lockout = lockout
        prepare_database(path, _SCHEMA)

    def wait_seconds(self, name: str, now: float | None = None) -> float:
        """0 when the name may try now, else how many seconds it must wait."""
        now = time.time() if now is None else now
        with connect(self.path) as connection:
            count, last = connection.execute(
                "SELECT COUNT(*), MAX(at) FROM failed_logins WHERE name = ? AND at > ?",
                (normalize_name(name), now - self.window),
            ).fetchone()
        if count < self.max_failures:
            return 0.0
        return max(0.0, last + self.lockout - now)

    def record_failure(self, name: str, now: float | None = None) -> None:
        """Count a failed sign-in (and forget failures older than the window)."""
        now = time.time() if now is None else now
        with connect(self.path) as connection:
            connection.execute("DELETE FROM failed_logins WHERE at <= ?", (now - max(self.window, self.lockout),))
            connection.execute("INSERT INTO failed_logins (name, at) VALUES (?, ?)", (normalize_name(name), now))

    def reset(self, name: str) -> int:
        """Clear the name's failures (a successful sign-in, or `frontend users unlock`); how many there were."""
        with connect(self.path) as connection:
            cursor = connection.execute("DELETE FROM failed_logins WHERE name = ?", (normalize_name(name),))
            return int(cursor.rowcount)


class RetryGuard:
    """A limit on "Try again": each one makes the device watch its camera for a new request, so one session may
    start `session_limit` and one user name `user_limit` (all sessions together) within `window` seconds. Kept in
    the database, so a restart of the front-end or a new session does not reset the user's count."""

    def __init__(self, path: Path, session_limit: int = 3, user_limit: int = 6, window: float = 300) -> None:
        self.path = path
        self.session_limit = session_limit
        self.user_limit = user_limit
        self.window = window
        prepare_database(path, _SCHEMA)

    def acquire(self, name: str, session: str, now: float | None = None) -> float:
        """Count one retry and return 0 when allowed; else, counting nothing, the seconds until one is."""
        now = time.time() if now is None else now
        key = normalize_name(name)
        since = now - self.window
        with connect(self.path) as connection:
            connection.execute("DELETE FROM retries WHERE at <= ?", (since,))
            waits = []
            for column, value, limit in (("session", session, self.session_limit), ("name", key, self.user_limit)):
                times = [
                    row[0]
                    for row in connection.execute(
                        f"SELECT at FROM retries WHERE {column} = ? AND at > ? ORDER BY at DESC LIMIT ?",
                        (value, since, limit),
                    )
                ]
                if len(times) >= limit:
                    waits.append(times[-1] + self.window - now)  # when the oldest counted one leaves the window
            if waits:
                return max(0.001, *waits)
            connection.execute("INSERT INTO retries (name, session, at) VALUES (?, ?, ?)", (key, session, now))
        return 0.0


def check_name(name: str) -> str:
    """A user name: 1 to 64 of a-z 0-9 . _ @ - (any case), starting with a letter or digit."""
    key = normalize_name(name)
    if not NAME_PATTERN.match(key):
        raise UserStoreError(
            f"invalid user name {name!r}: 1 to 64 letters, digits or . _ @ -, starting with a letter or digit"
        )
    return key


def check_password(password: str) -> str:
    """At least MIN_PASSWORD_LENGTH characters."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserStoreError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    return password


def check_threshold(threshold: int) -> int:
    """The confidence the object must reach, in percent: 1 to 100 (ProcessRequest's ThresholdPercentage)."""
    if isinstance(threshold, bool) or not isinstance(threshold, int) or not 1 <= threshold <= 100:
        raise UserStoreError(f"invalid threshold {threshold!r}: a whole percentage from 1 to 100")
    return threshold
