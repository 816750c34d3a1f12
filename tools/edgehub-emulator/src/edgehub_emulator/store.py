"""Persistent state in one SQLite file: identities, twins, MQTT sessions, queued and upstream messages.

Every write commits before the emulator acknowledges it, so a restart loses nothing that was acknowledged.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgehub_emulator.errors import StateError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS identities (
    device_id TEXT NOT NULL, module_id TEXT NOT NULL, primary_key TEXT NOT NULL, secondary_key TEXT NOT NULL,
    managed_by TEXT, generation_id TEXT NOT NULL, PRIMARY KEY (device_id, module_id));
CREATE TABLE IF NOT EXISTS twins (
    device_id TEXT NOT NULL, module_id TEXT NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (device_id, module_id));
CREATE TABLE IF NOT EXISTS sessions (client_id TEXT PRIMARY KEY, subscriptions TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, client_id TEXT NOT NULL, topic TEXT NOT NULL, payload BLOB NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0, expires_at REAL);
CREATE INDEX IF NOT EXISTS queue_client ON queue (client_id, priority, seq);
CREATE INDEX IF NOT EXISTS queue_expiry ON queue (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS upstream (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, enqueued_at REAL NOT NULL, device_id TEXT NOT NULL, module_id TEXT,
    output TEXT, properties TEXT NOT NULL, body BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS upstream_time ON upstream (enqueued_at);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS devices (device_id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS configurations (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
"""
PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def make_private_dir(folder: Path) -> None:
    """Create `folder` (and parents) readable by its owner only; an existing one is made so too."""
    folder.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    os.chmod(folder, PRIVATE_DIR)


def write_private(path: Path, data: bytes) -> None:
    """Write a file that only its owner can read (0600), atomically."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(tmp, PRIVATE_FILE)
    os.replace(tmp, path)


@dataclass
class Identity:
    """A device (module_id "") or module identity with its SAS keys."""

    device_id: str
    module_id: str
    primary_key: str
    secondary_key: str
    managed_by: str | None = None
    generation_id: str = "1"

    @property
    def client_id(self) -> str:
        """The MQTT client id: `dev` or `dev/mod`."""
        return f"{self.device_id}/{self.module_id}" if self.module_id else self.device_id


@dataclass
class Twin:
    """A module twin; `version` counts every change, desired and reported have their own `$version`."""

    desired: dict[str, Any] = field(default_factory=dict)
    desired_version: int = 1
    reported: dict[str, Any] = field(default_factory=dict)
    reported_version: int = 1
    tags: dict[str, Any] = field(default_factory=dict)
    version: int = 1

    @property
    def etag(self) -> str:
        """Changes with every update, like IoT Hub's opaque etag."""
        return base64.b64encode(f"v{self.version}".encode()).decode()


@dataclass
class QueuedMessage:
    """A message waiting for (or in flight to) one client."""

    seq: int
    client_id: str
    topic: str
    payload: bytes
    priority: int
    expires_at: float | None


@dataclass
class UpstreamMessage:
    """A message routed to `$upstream`, kept so that `monitor` can read it."""

    seq: int
    enqueued_at: float
    device_id: str
    module_id: str | None
    output: str | None
    properties: dict[str, str]
    body: bytes


class Store:  # pylint: disable=too-many-public-methods  # one table per concern, a few calls each
    """Thread-safe access to the state database (the HTTP and MQTT servers share one loop, the CLI may read)."""

    def __init__(self, path: Path) -> None:
        make_private_dir(path.parent)
        # The database holds every key: create it (and its WAL and shared-memory files) for the owner only.
        for name in (path.name, path.name + "-wal", path.name + "-shm"):
            file = path.with_name(name)
            if name == path.name or file.exists():
                os.close(os.open(file, os.O_RDWR | os.O_CREAT, PRIVATE_FILE))
                os.chmod(file, PRIVATE_FILE)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            # a truncated file can open and fail later, half-way through a request: check it whole at start
            problems = [row[0] for row in self._db.execute("PRAGMA quick_check").fetchall()]
            if problems != ["ok"]:
                raise sqlite3.DatabaseError("; ".join(str(p) for p in problems[:3]))
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise StateError(
                f"the state database {path} is damaged ({e}); nothing was changed. Move it aside to keep it, or "
                "run `edgehub-emulator reset` (identities, twins and queued messages start again from the manifest)"
            ) from e

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    # identities
    def put_identity(self, identity: Identity) -> None:
        """Insert or replace an identity."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO identities VALUES (?,?,?,?,?,?)",
                (
                    identity.device_id,
                    identity.module_id,
                    identity.primary_key,
                    identity.secondary_key,
                    identity.managed_by,
                    identity.generation_id,
                ),
            )

    def get_identity(self, device_id: str, module_id: str = "") -> Identity | None:
        """The identity or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM identities WHERE device_id=? AND module_id=?", (device_id, module_id)
            ).fetchone()
        return Identity(*row) if row else None

    def list_identities(self, device_id: str) -> list[Identity]:
        """All identities of a device (the device's own first)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM identities WHERE device_id=? ORDER BY module_id", (device_id,)
            ).fetchall()
        return [Identity(*row) for row in rows]

    # twins
    def get_twin(self, device_id: str, module_id: str) -> Twin | None:
        """The twin or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT doc FROM twins WHERE device_id=? AND module_id=?", (device_id, module_id)
            ).fetchone()
        return Twin(**json.loads(row[0])) if row else None

    def put_twin(self, device_id: str, module_id: str, twin: Twin) -> None:
        """Insert or replace a twin."""
        doc = json.dumps(twin.__dict__)
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO twins VALUES (?,?,?)", (device_id, module_id, doc))

    # sessions
    def get_subscriptions(self, client_id: str) -> list[str]:
        """Topic filters a client subscribed to (kept across reconnects and restarts)."""
        with self._lock:
            row = self._db.execute("SELECT subscriptions FROM sessions WHERE client_id=?", (client_id,)).fetchone()
        return list(json.loads(row[0])) if row else []

    def put_subscriptions(self, client_id: str, filters: list[str]) -> None:
        """Replace a client's subscriptions."""
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO sessions VALUES (?,?)", (client_id, json.dumps(filters)))

    def delete_session(self, client_id: str) -> None:
        """Forget a session (clean_session=1)."""
        with self._lock:
            self._db.execute("DELETE FROM sessions WHERE client_id=?", (client_id,))

    # queue
    def enqueue(
        self, client_id: str, topic: str, payload: bytes, priority: int = 0, expires_at: float | None = None
    ) -> int:
        """Store a message for a client; returns its sequence number."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO queue (client_id, topic, payload, priority, expires_at) VALUES (?,?,?,?,?)",
                (client_id, topic, payload, priority, expires_at),
            )
        return int(cursor.lastrowid or 0)

    def pending(
        self,
        client_id: str,
        wanted: Callable[[int, str], bool],
        limit: int,
        now: float | None = None,
    ) -> list[QueuedMessage]:
        """Up to `limit` unexpired messages for a client, by priority then arrival, for which wanted(seq, topic)
        holds. Reads in batches along the index and stops when it has enough: the cost follows what is skipped
        (messages in flight, topics not subscribed), never the length of the backlog."""
        now = time.time() if now is None else now
        found: list[QueuedMessage] = []
        with self._lock:
            cursor = self._db.execute(
                "SELECT seq, topic FROM queue WHERE client_id=? AND (expires_at IS NULL OR expires_at >= ?) "
                "ORDER BY priority, seq",
                (client_id, now),
            )
            try:
                while len(found) < limit:
                    rows = cursor.fetchmany(max(64, limit))
                    if not rows:
                        break
                    chosen = [seq for seq, topic in rows if wanted(seq, topic)][: limit - len(found)]
                    if chosen:
                        marks = ",".join("?" * len(chosen))
                        full = self._db.execute(
                            f"SELECT * FROM queue WHERE seq IN ({marks})",
                            chosen,  # nosec: only placeholders
                        ).fetchall()
                        by_seq = {row[0]: QueuedMessage(*row) for row in full}
                        found.extend(by_seq[seq] for seq in chosen if seq in by_seq)
            finally:
                cursor.close()
        return found

    def purge_expired(self, now: float | None = None) -> int:
        """Delete queued messages whose time to live has passed; returns how many."""
        now = time.time() if now is None else now
        with self._lock:
            cursor = self._db.execute("DELETE FROM queue WHERE expires_at IS NOT NULL AND expires_at < ?", (now,))
        return int(cursor.rowcount or 0)

    def ack(self, seq: int) -> None:
        """The client acknowledged the message: forget it."""
        with self._lock:
            self._db.execute("DELETE FROM queue WHERE seq=?", (seq,))

    def queue_length(self, client_id: str | None = None) -> int:
        """How many messages wait (for one client or in all)."""
        with self._lock:
            if client_id is None:
                return int(self._db.execute("SELECT COUNT(*) FROM queue").fetchone()[0])
            return int(self._db.execute("SELECT COUNT(*) FROM queue WHERE client_id=?", (client_id,)).fetchone()[0])

    # upstream
    def add_upstream(
        self,
        device_id: str,
        module_id: str | None,
        output: str | None,
        properties: dict[str, str],
        body: bytes,
    ) -> int:
        """Keep a message routed to `$upstream`."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO upstream (enqueued_at, device_id, module_id, output, properties, body) "
                "VALUES (?,?,?,?,?,?)",
                (time.time(), device_id, module_id, output, json.dumps(properties), body),
            )
        return int(cursor.lastrowid or 0)

    def prune_upstream(self, keep: int, older_than: float) -> int:
        """Keep at most the newest `keep` `$upstream` messages and none enqueued before `older_than`."""
        with self._lock:
            removed = self._db.execute("DELETE FROM upstream WHERE enqueued_at < ?", (older_than,)).rowcount or 0
            row = self._db.execute("SELECT MAX(seq) FROM upstream").fetchone()
            if row and row[0] is not None:
                removed += self._db.execute("DELETE FROM upstream WHERE seq <= ?", (row[0] - keep,)).rowcount or 0
        return int(removed)

    def upstream_count(self) -> int:
        """How many `$upstream` messages are kept."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM upstream").fetchone()[0])

    # devices of the registry (what is not in the identity: edge capability, status, when it was made)
    def get_device(self, device_id: str) -> dict[str, Any] | None:
        """The device's registry record or None."""
        with self._lock:
            row = self._db.execute("SELECT doc FROM devices WHERE device_id=?", (device_id,)).fetchone()
        return dict(json.loads(row[0])) if row else None

    def put_device(self, device_id: str, doc: dict[str, Any]) -> None:
        """Insert or replace a device's registry record."""
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO devices VALUES (?,?)", (device_id, json.dumps(doc)))

    def list_devices(self) -> list[str]:
        """Every device id of the registry, sorted."""
        with self._lock:
            rows = self._db.execute("SELECT device_id FROM devices ORDER BY device_id").fetchall()
        return [str(row[0]) for row in rows]

    def delete_device(self, device_id: str) -> None:
        """Forget a device with its modules' identities, twins and sessions."""
        with self._lock:
            self._db.execute("DELETE FROM devices WHERE device_id=?", (device_id,))
            self._db.execute("DELETE FROM identities WHERE device_id=?", (device_id,))
            self._db.execute("DELETE FROM twins WHERE device_id=?", (device_id,))

    def find_module_identity(self, module_id: str, generation_id: str) -> Identity | None:
        """The module identity with that name and generation id, on whichever device."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM identities WHERE module_id=? AND generation_id=?", (module_id, generation_id)
            ).fetchone()
        return Identity(*row) if row else None

    def delete_identity(self, device_id: str, module_id: str) -> None:
        """Forget a module identity and its twin."""
        with self._lock:
            self._db.execute("DELETE FROM identities WHERE device_id=? AND module_id=?", (device_id, module_id))
            self._db.execute("DELETE FROM twins WHERE device_id=? AND module_id=?", (device_id, module_id))

    # configurations (deployments)
    def get_configuration(self, config_id: str) -> dict[str, Any] | None:
        """A configuration document or None."""
        with self._lock:
            row = self._db.execute("SELECT doc FROM configurations WHERE id=?", (config_id,)).fetchone()
        return dict(json.loads(row[0])) if row else None

    def put_configuration(self, config_id: str, doc: dict[str, Any]) -> None:
        """Insert or replace a configuration."""
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO configurations VALUES (?,?)", (config_id, json.dumps(doc)))

    def delete_configuration(self, config_id: str) -> None:
        """Forget a configuration."""
        with self._lock:
            self._db.execute("DELETE FROM configurations WHERE id=?", (config_id,))

    def list_configurations(self) -> list[dict[str, Any]]:
        """Every configuration, by id."""
        with self._lock:
            rows = self._db.execute("SELECT doc FROM configurations ORDER BY id").fetchall()
        return [dict(json.loads(row[0])) for row in rows]

    # meta
    def get_meta(self, name: str) -> str | None:
        """A value the emulator keeps about itself (e.g. which manifest section it applied), or None."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE name=?", (name,)).fetchone()
        return str(row[0]) if row else None

    def put_meta(self, name: str, value: str) -> None:
        """Set a value of get_meta."""
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?,?)", (name, value))

    def upstream_after(self, seq: int, limit: int = 500) -> list[UpstreamMessage]:
        """Upstream messages with a sequence number above `seq`."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM upstream WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
            ).fetchall()
        return [UpstreamMessage(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6]) for r in rows]
