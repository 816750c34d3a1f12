"""The web app: sign-in with a password (first factor), then the enrolled object shown to the device's camera
(second factor), then `/account`, which needs both."""

from __future__ import annotations

import logging
import math
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from frontend.config import FrontendSettings
from frontend.errors import SecondFactorError, StorageUnavailableError
from frontend.labels import ObjectCatalog, normalize
from frontend.secondfactor import BlobResults, Gateway, HubGateway, Results, new_request_id
from frontend.sessions import COOKIE_NAME, Session, SessionStore, Stage
from frontend.users import LoginGuard, RetryGuard, User, UserStore

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
# A request with no result this long after its expiry counts as expired (the classifier writes `expired` itself).
EXPIRY_GRACE_SECONDS = 10
MAX_FIELD_LENGTH = 1024
FINAL_STATES = ("expired", "rejected", "failed")

SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self'; frame-ancestors 'none'; form-action 'self'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


class SecurityHeaders:
    """Adds the security headers to every response, and `no-store` to everything but static assets."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(SECURITY_HEADERS)
                if not static and not any(name == b"cache-control" for name, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


@dataclass
class Services:
    """What the handlers share."""

    settings: FrontendSettings
    users: UserStore
    guard: LoginGuard
    sessions: SessionStore
    retries: RetryGuard
    gateway: Gateway
    results: Results
    templates: Jinja2Templates


def create_app(
    settings: FrontendSettings,
    gateway: Gateway | None = None,
    results: Results | None = None,
    hasher: PasswordHasher | None = None,
) -> Starlette:
    """The app for `settings`; `gateway` and `results` default to IoT Hub and Azure Storage from the settings,
    `hasher` to argon2id with the library's default cost."""
    secret = settings.frontend_secret_key
    if not secret:
        logger.warning("FRONTEND_SECRET_KEY is not set: a random key signs sessions until the app stops")
        secret = secrets.token_urlsafe(48)
    database = settings.frontend_database
    services = Services(
        settings=settings,
        users=UserStore(database, ObjectCatalog.from_file(settings.frontend_labels_file), hasher),
        guard=LoginGuard(
            database,
            settings.frontend_max_failures,
            settings.frontend_failure_window_seconds,
            settings.frontend_lockout_seconds,
        ),
        sessions=SessionStore(database, secret, settings.frontend_session_seconds),
        retries=RetryGuard(
            database,
            settings.frontend_retry_session_limit,
            settings.frontend_retry_user_limit,
            settings.frontend_retry_window_seconds,
        ),
        gateway=gateway
        or HubGateway(
            settings.iothub_connection_string,
            settings.frontend_device_id,
            settings.frontend_module_id,
            settings.frontend_method_timeout_seconds,
        ),
        results=results or BlobResults(settings.storage_connection_string, settings.result_container),
        templates=Jinja2Templates(directory=str(HERE / "templates")),
    )
    handlers = Handlers(services)
    routes = [
        Route("/", handlers.home),
        Route("/login", handlers.login_page, methods=["GET"]),
        Route("/login", handlers.login, methods=["POST"]),
        Route("/verify", handlers.verify_page, methods=["GET"]),
        Route("/verify/status", handlers.verify_status, methods=["GET"]),
        Route("/verify/retry", handlers.retry, methods=["POST"]),
        Route("/images/{request_id}", handlers.image, methods=["GET"]),
        Route("/account", handlers.account, methods=["GET"]),
        Route("/logout", handlers.logout, methods=["POST"]),
        Route("/healthz", handlers.health, methods=["GET"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(SecurityHeaders)
    app.state.services = services
    return app


class Handlers:
    """The routes' handlers over one set of services."""

    def __init__(self, services: Services) -> None:
        self.s = services

    # -- helpers
    def _session(self, request: Request) -> Session | None:
        return self.s.sessions.load(request.cookies.get(COOKIE_NAME))

    def _set_cookie(self, response: Response, session: Session) -> Response:
        response.set_cookie(
            COOKIE_NAME,
            self.s.sessions.cookie_value(session),
            httponly=True,
            samesite="strict",
            secure=self.s.settings.frontend_cookie_secure,
            path="/",
        )
        return response

    def _render(
        self, request: Request, template: str, session: Session | None, code: int = 200, **context: Any
    ) -> Response:
        context.setdefault("csrf_token", session.csrf if session else "")
        response = self.s.templates.TemplateResponse(request, template, context, status_code=code)
        return self._set_cookie(response, session) if session else response

    def _refused(self, request: Request) -> Response:
        return self._render(
            request,
            "message.html",
            None,
            code=403,
            title="Request refused",
            message="This form was not sent by this site or has expired (missing or wrong CSRF token). "
            "Open the sign-in page again.",
        )

    async def _form(self, request: Request) -> tuple[Session | None, dict[str, str]]:
        """The session and the form, or (None, form) when the CSRF token does not match the session's."""
        try:
            form = await request.form()
        except (MultiPartException, ValueError) as e:  # a malformed body is a form without a valid token
            logger.info("refused a malformed form post to %s: %s", request.url.path, e)
            return None, {}
        fields = {key: str(value)[:MAX_FIELD_LENGTH] for key, value in form.items() if isinstance(value, str)}
        session = self._session(request)
        if session is None or not session.csrf_ok(fields.get("csrf_token")):
            logger.info("refused a form post to %s: missing or wrong CSRF token", request.url.path)
            return None, fields
        return session, fields

    def _user(self, session: Session | None) -> User | None:
        return self.s.users.get(session.user) if session and session.user else None

    # -- pages
    async def home(self, request: Request) -> Response:
        """`/`: the account when signed in, else the sign-in page."""
        session = self._session(request)
        signed_in = session is not None and session.stage == Stage.SIGNED_IN
        return RedirectResponse("/account" if signed_in else "/login", status_code=303)

    async def login_page(self, request: Request) -> Response:
        """The sign-in form (a new anonymous session holds its CSRF token)."""
        session = self._session(request)
        if session is not None and session.stage == Stage.SIGNED_IN:
            return RedirectResponse("/account", status_code=303)
        return self._render(request, "login.html", session or self.s.sessions.new())

    async def login(self, request: Request) -> Response:
        """The first factor: CSRF, lock-out, password; then the second factor starts."""
        session, fields = await self._form(request)
        if session is None:
            return self._refused(request)
        name = fields.get("username", "").strip()
        password = fields.get("password", "")
        if not name or not password:
            return self._render(request, "login.html", session, 400, error="Enter your user name and password.")
        wait = self.s.guard.wait_seconds(name)
        if wait > 0:
            seconds = math.ceil(wait)
            response = self._render(
                request,
                "login.html",
                session,
                429,
                error=f"Too many failed sign-ins for this user name. Try again in {seconds} seconds.",
                username=name,
            )
            response.headers["Retry-After"] = str(seconds)
            return response
        user = await run_in_threadpool(self.s.users.authenticate, name, password)
        if user is None:
            self.s.guard.record_failure(name)
            logger.info("failed sign-in")
            return self._render(
                request, "login.html", session, 401, error="Wrong user name or password.", username=name
            )
        self.s.guard.reset(name)
        session.user, session.stage, session.data = user.name, Stage.PASSWORD, {}
        session = self.s.sessions.rotate(session)
        logger.info("user %s passed the first factor", user.name)
        await self._start_second_factor(session, user)
        return self._set_cookie(RedirectResponse("/verify", status_code=303), session)

    async def _start_second_factor(self, session: Session, user: User) -> None:
        request_id = new_request_id()
        try:
            ticket = await run_in_threadpool(
                self.s.gateway.request,
                request_id,
                user.object,
                user.threshold,
                self.s.settings.frontend_request_seconds,
            )
            session.data = {"request_id": ticket.request_id, "expires_at": ticket.expires_at}
        except SecondFactorError as e:
            session.data = {"outcome": {"state": "failed", "message": str(e)}}
        self.s.sessions.save(session)

    def _status(self, session: Session, user: User) -> dict[str, Any]:  # pylint: disable=too-many-return-statements
        """The second factor's state for this session; reads the result blob while it is pending."""
        data = session.data
        if session.stage == Stage.SIGNED_IN:
            return self._found(user, data["request_id"])
        if "outcome" in data:
            return dict(data["outcome"])
        seconds_left = max(0, math.ceil(data["expires_at"] - time.time()))
        try:
            result = self.s.results.result(data["request_id"])
        except StorageUnavailableError as e:
            return {"state": "unavailable", "message": str(e), "secondsLeft": seconds_left}
        except SecondFactorError as e:
            return self._finish(session, "failed", str(e))
        if result is None:
            if time.time() > data["expires_at"] + EXPIRY_GRACE_SECONDS:
                return self._finish(
                    session, "expired", "No answer from the camera device before the time ran out. Try again."
                )
            return {
                "state": "pending",
                "message": f"Show your {user.object} to the camera.",
                "secondsLeft": seconds_left,
            }
        if result.status == "expired":
            return self._finish(session, "expired", f"Your {user.object} was not seen before the time ran out.")
        if result.status == "rejected":
            reason = f": {result.reason}" if result.reason else ""
            return self._finish(session, "rejected", f"The camera device rejected the request{reason}.")
        if normalize(result.class_name) != user.object:
            return self._finish(session, "failed", "The camera device reported another object. Try again.")
        session.stage = Stage.SIGNED_IN
        session.data["result"] = {
            "confidence": result.confidence,
            "detected_at": result.detected_at,
            "class_name": result.class_name,
        }
        self.s.sessions.save(session)
        logger.info("user %s passed the second factor", user.name)
        return self._found(user, data["request_id"])

    @staticmethod
    def _found(user: User, request_id: str) -> dict[str, Any]:
        return {
            "state": "found",
            "message": f"Your {user.object} was recognised: you are signed in.",
            "image": f"/images/{request_id}",
        }

    def _finish(self, session: Session, state: str, message: str) -> dict[str, Any]:
        session.data["outcome"] = {"state": state, "message": message}
        self.s.sessions.save(session)
        return dict(session.data["outcome"])

    async def _second_factor_session(self, request: Request) -> tuple[Session | None, User | None]:
        session = self._session(request)
        user = self._user(session)
        if session is None or user is None or session.stage < Stage.PASSWORD:
            return None, None
        return session, user

    async def verify_page(self, request: Request) -> Response:
        """The waiting page (also works without JavaScript, by refreshing)."""
        session, user = await self._second_factor_session(request)
        if session is None or user is None:
            return RedirectResponse("/login", status_code=303)
        if session.stage == Stage.SIGNED_IN:
            return RedirectResponse("/account", status_code=303)
        status = await run_in_threadpool(self._status, session, user)
        if status["state"] == "found":
            session = self.s.sessions.rotate(session)
            return self._set_cookie(RedirectResponse("/account", status_code=303), session)
        return self._render(request, "verify.html", session, user=user, status=status)

    async def verify_status(self, request: Request) -> Response:
        """The second factor's state as JSON, polled by the waiting page."""
        session, user = await self._second_factor_session(request)
        if session is None or user is None:
            return JSONResponse({"state": "signed-out", "message": "Your session has ended. Sign in again."}, 401)
        was_signed_in = session.stage == Stage.SIGNED_IN
        status = await run_in_threadpool(self._status, session, user)
        response = JSONResponse(status)
        if status["state"] == "found" and not was_signed_in:
            # a new session id with the new privilege (no session fixation)
            self._set_cookie(response, self.s.sessions.rotate(session))
        return response

    async def retry(self, request: Request) -> Response:
        """A new second-factor request after a failed, expired or rejected one."""
        session, _ = await self._form(request)
        if session is None:
            return self._refused(request)
        user = self._user(session)
        if user is None or session.stage != Stage.PASSWORD:
            return RedirectResponse("/login", status_code=303)
        pending = "outcome" not in session.data and time.time() < session.data.get("expires_at", 0)
        if pending:
            return RedirectResponse("/verify", status_code=303)
        wait = self.s.retries.acquire(user.name, session.id)
        if wait > 0:
            seconds = math.ceil(wait)
            logger.info("user %s: Try again refused for %d s (too many new requests)", user.name, seconds)
            status = dict(session.data.get("outcome") or {"state": "failed"})
            status["message"] = (
                f"Too many new requests to the camera device. Try again in {seconds} seconds "
                f"({self._previous(status)})."
            )
            response = self._render(request, "verify.html", session, 429, user=user, status=status)
            response.headers["Retry-After"] = str(seconds)
            return response
        await self._start_second_factor(session, user)
        return RedirectResponse("/verify", status_code=303)

    @staticmethod
    def _previous(status: dict[str, Any]) -> str:
        previous = str(status.get("message") or "").rstrip(".")
        return f"last answer: {previous}" if previous else "no answer yet"

    async def image(self, request: Request) -> Response:
        """The captured image, only to the session whose request it answers."""
        session = self._session(request)
        request_id = request.path_params["request_id"]
        if session is None or session.stage != Stage.SIGNED_IN or session.data.get("request_id") != request_id:
            return Response("Not found", status_code=404, media_type="text/plain")
        try:
            data = await run_in_threadpool(self.s.results.image, request_id)
        except SecondFactorError as e:
            return Response(str(e), status_code=503, media_type="text/plain")
        return Response(data, media_type="image/jpeg", headers={"cache-control": "private, no-store"})

    async def account(self, request: Request) -> Response:
        """The page behind both factors."""
        session = self._session(request)
        user = self._user(session)
        if session is None or user is None or session.stage != Stage.SIGNED_IN:
            return RedirectResponse("/login", status_code=303)
        return self._render(
            request,
            "account.html",
            session,
            user=user,
            result=session.data.get("result", {}),
            image=f"/images/{session.data['request_id']}",
        )

    async def logout(self, request: Request) -> Response:
        """End the session."""
        session, _ = await self._form(request)
        if session is None:
            return self._refused(request)
        self.s.sessions.delete(session.id)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE_NAME, path="/")
        return response

    async def health(self, _: Request) -> Response:
        """Liveness for scripts and load balancers."""
        return JSONResponse({"status": "ok"})
