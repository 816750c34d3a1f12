"""Server-side sessions in SQLite behind a signed cookie, and their CSRF tokens.

The cookie holds only a random session id signed with the app's secret (itsdangerous); what the session may do
(first factor done, second factor done, which request and image belong to it) stays on the server, so a copied or
altered cookie gains nothing and signing out ends the session everywhere."""

from __future__ import annotations

import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, Signer

from frontend.users import connect, prepare_database

COOKIE_NAME = "frontend_session"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    csrf TEXT NOT NULL,
    user TEXT,
    stage INTEGER NOT NULL,
    data TEXT NOT NULL,
    last_seen REAL NOT NULL
);
"""


class Stage(IntEnum):
    """How far a session has signed in."""

    ANONYMOUS = 0
    PASSWORD = 1  # first factor done, second pending
    SIGNED_IN = 2  # both factors done


@dataclass
class Session:
    """One browser's session. `data` holds the second factor's state (request id, expiry, result, error)."""

    id: str
    csrf: str
    user: str | None = None
    stage: Stage = Stage.ANONYMOUS
    data: dict[str, Any] = field(default_factory=dict)

    def csrf_ok(self, token: str | None) -> bool:
        """Constant-time check of a form's CSRF token against the session's."""
        return bool(token) and hmac.compare_digest(self.csrf.encode(), str(token).encode())


class SessionStore:
    """Sessions in SQLite; a session idle for `max_age` seconds is gone."""

    def __init__(self, path: Path, secret_key: str, max_age: float = 3600) -> None:
        self.path = path
        self.max_age = max_age
        self._signer = Signer(secret_key, salt="frontend-session")
        prepare_database(path, _SCHEMA)

    def new(self) -> Session:
        """A fresh anonymous session with its own CSRF token."""
        session = Session(id=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32))
        self.save(session)
        return session

    def rotate(self, session: Session) -> Session:
        """The same state under a new id and CSRF token (on each change of stage: no session fixation)."""
        self.delete(session.id)
        rotated = Session(
            id=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            user=session.user,
            stage=session.stage,
            data=dict(session.data),
        )
        self.save(rotated)
        return rotated

    def save(self, session: Session, now: float | None = None) -> None:
        """Store the session's state and mark it used now."""
        with connect(self.path) as connection:
            connection.execute(
                "INSERT OR REPLACE INTO sessions (id, csrf, user, stage, data, last_seen) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    session.id,
                    session.csrf,
                    session.user,
                    int(session.stage),
                    json.dumps(session.data),
                    time.time() if now is None else now,
                ),
            )

    def load(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The live session a cookie names; None for no cookie, a bad signature, an unknown or expired id."""
        if not cookie:
            return None
        try:
            session_id = self._signer.unsign(cookie).decode()
        except (BadSignature, UnicodeDecodeError):
            return None
        now = time.time() if now is None else now
        with connect(self.path) as connection:
            connection.execute("DELETE FROM sessions WHERE last_seen < ?", (now - self.max_age,))
            row = connection.execute(
                "SELECT id, csrf, user, stage, data FROM sessions WHERE id = ?", (session_id,)
            ).fetchone()
            if row is None:
                return None
            connection.execute("UPDATE sessions SET last_seen = ? WHERE id = ?", (now, session_id))
        return Session(id=row[0], csrf=row[1], user=row[2], stage=Stage(row[3]), data=json.loads(row[4]))

    def delete(self, session_id: str) -> None:
        """End a session."""
        with connect(self.path) as connection:
            connection.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    def cookie_value(self, session: Session) -> str:
        """The signed session id the browser keeps."""
        return self._signer.sign(session.id).decode()
