"""Server-side sessions behind a signed cookie; CSRF tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from frontend.sessions import SessionStore, Stage

SECRET = "s" * 40


@pytest.fixture
def sessions(tmp_path: Path) -> SessionStore:
    """An empty session store; sessions end after 60 s idle."""
    return SessionStore(tmp_path / "db.sqlite3", SECRET, max_age=60)


def test_round_trip(sessions: SessionStore) -> None:
    session = sessions.new()
    session.user, session.stage, session.data = "alice", Stage.PASSWORD, {"request_id": "r"}
    sessions.save(session)
    loaded = sessions.load(sessions.cookie_value(session))
    assert loaded is not None
    assert (loaded.id, loaded.user, loaded.stage, loaded.data) == (
        session.id,
        "alice",
        Stage.PASSWORD,
        {"request_id": "r"},
    )


def test_cookie_holds_a_signed_id_only(sessions: SessionStore) -> None:
    session = sessions.new()
    session.user = "alice"
    sessions.save(session)
    cookie = sessions.cookie_value(session)
    assert cookie.startswith(session.id + ".")
    assert "alice" not in cookie and session.csrf not in cookie


@pytest.mark.parametrize(
    "tamper",
    [
        # signature changed: a character inside it (the last one also holds padding bits that base64 decoding
        # drops, so changing it alone left the signature's bytes the same about one time in twenty)
        lambda c: c[:-5] + ("A" if c[-5] != "A" else "B") + c[-4:],
        lambda c: "x" + c,  # id changed
        lambda c: c.split(".")[0],  # unsigned id
        lambda c: "",
        lambda c: "not a cookie at all",
    ],
)
def test_tampered_cookie_is_no_session(sessions: SessionStore, tamper) -> None:
    cookie = sessions.cookie_value(sessions.new())
    assert sessions.load(tamper(cookie)) is None


def test_cookie_signed_with_another_key_is_refused(tmp_path: Path, sessions: SessionStore) -> None:
    other = SessionStore(tmp_path / "db.sqlite3", "o" * 40)
    session = other.new()
    assert other.load(other.cookie_value(session)) is not None
    assert sessions.load(other.cookie_value(session)) is None


def test_idle_session_expires(sessions: SessionStore) -> None:
    session = sessions.new()
    sessions.save(session, now=1000.0)
    cookie = sessions.cookie_value(session)
    assert sessions.load(cookie, now=1059.0) is not None  # and marks it used at 1059
    assert sessions.load(cookie, now=1118.0) is not None
    assert sessions.load(cookie, now=1179.0) is None


def test_rotate_gives_new_id_and_csrf_and_ends_the_old(sessions: SessionStore) -> None:
    session = sessions.new()
    session.user, session.stage = "alice", Stage.SIGNED_IN
    old_cookie = sessions.cookie_value(session)
    rotated = sessions.rotate(session)
    assert rotated.id != session.id and rotated.csrf != session.csrf
    assert sessions.load(old_cookie) is None
    loaded = sessions.load(sessions.cookie_value(rotated))
    assert loaded is not None and loaded.user == "alice" and loaded.stage == Stage.SIGNED_IN


def test_delete(sessions: SessionStore) -> None:
    session = sessions.new()
    sessions.delete(session.id)
    assert sessions.load(sessions.cookie_value(session)) is None


@pytest.mark.parametrize(("token", "ok"), [(None, False), ("", False), ("wrong", False), ("SAME", True)])
def test_csrf_check(sessions: SessionStore, token: str | None, ok: bool) -> None:
    session = sessions.new()
    assert session.csrf_ok(session.csrf if token == "SAME" else token) is ok
