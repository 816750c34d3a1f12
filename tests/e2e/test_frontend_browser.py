"""The sign-in web front-end in a real headless Chromium (the distribution's package, driven by Playwright),
against the real edgeHub emulator (`edgehub-emulator up`), a real Azurite and the front-end as its own process.

The device side: the real `authrequest` + `classifier` modules of deployment.template.json when they are in the
tree (iot-edge-solution/modules/authrequest/main.py); until then the STAND-IN DEVICE
(iot-edge-solution/frontend/tests/standin_device.py), run by `up` as the authrequest module, answers
ProcessRequest through the real azure-iot-device SDK and writes result.json + the image into Azurite through the
real azure-storage-blob SDK (it recognises nothing: it reports the stand-in's visible object as found).
FRONTEND_E2E_DEVICE=standin|real forces one.

Screenshots of each test's final page go to test-output/frontend-browser/ (git-ignored). MQTT is always on port
8883 (fixed by the SDK): run this alone or in a private network namespace (`unshare --net`).
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests

from edgehub_emulator.process import cli_options, free_port
from solution_testkit import wait_for as poll

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SOLUTION = REPO / "iot-edge-solution"
STANDIN_DEVICE = SOLUTION / "frontend" / "tests" / "standin_device.py"
REAL_AUTHREQUEST = SOLUTION / "modules" / "authrequest" / "main.py"
OUTPUT = REPO / "test-output" / "frontend-browser"
ENV_TEMPLATE = REPO / ".env_template"
BIN = Path(sys.executable).parent
# The object the device sees (the stand-in reports it found, with coffee.png as the image; the real classifier
# sees it in the demo video, made from coffee.png and chelsea.png) and one it never sees.
SEEN_OBJECT = os.environ.get("FRONTEND_E2E_SEEN_OBJECT", "espresso")
UNSEEN_OBJECT = "banana"
REQUEST_SECONDS = 20
PASSWORD = {"alice": "alice's long password", "bob": "bob's long password"}
STANDIN_MANIFEST = {
    "$schema-template": "4.0.0",
    "modulesContent": {
        "$edgeAgent": {
            "properties.desired": {
                "schemaVersion": "1.1",
                "runtime": {"type": "docker", "settings": {}},
                "systemModules": {},
                "modules": {
                    "authrequest": {
                        "version": "1.0",
                        "type": "docker",
                        "status": "running",
                        "restartPolicy": "always",
                        "settings": {"image": "stand-in", "createOptions": {}},
                        "env": {
                            name: {"value": f"${name}"}
                            for name in (
                                "STORAGE_CONNECTION_STRING",
                                "STANDIN_VISIBLE_OBJECTS",
                                "STANDIN_IMAGE",
                                "STANDIN_DELAY_SECONDS",
                            )
                        },
                    }
                },
            }
        },
        "$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {}}},
    },
}


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll until predicate() is truthy."""
    return poll(condition, timeout, what, interval=0.2)


def use_real_device() -> bool:
    """The real modules once they are in the tree, unless FRONTEND_E2E_DEVICE says otherwise."""
    forced = os.environ.get("FRONTEND_E2E_DEVICE", "").lower()
    if forced in ("standin", "real"):
        return forced == "real"
    return REAL_AUTHREQUEST.is_file()


class Device:
    """`edgehub-emulator up` on the solution (real modules) or on a one-module solution running the stand-in."""

    def __init__(self, root: Path, storage: str) -> None:
        self.root = root
        self.real = use_real_device()
        self.options = cli_options(root / "state", free_port(), free_port(), "--module-method-port", "0")
        self.out = root / "up.out"
        self.err = root / "up.err"
        self.env_file = root / ".env"
        settings = {
            "STORAGE_CONNECTION_STRING": storage,
            "MODULE_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            "CAMERA_PATH": str(SOLUTION / "media" / "demo.mp4"),
            "USE_TENSOR_RT": "False",
            "TENSORRT_FALLBACK": "True",
            "VIDEO_REALTIME": "True",
            "LOOP_VIDEO": "True",
            "STANDIN_VISIBLE_OBJECTS": SEEN_OBJECT,
            "STANDIN_IMAGE": str(SOLUTION / "media" / "coffee.png"),
            "STANDIN_DELAY_SECONDS": "1",
            # the test's own folders for what the modules keep (.env_template names the images' volumes)
            "MODEL_STORE": str(root / "model-store"),
            "ENGINE_CACHE_DIR": str(root / "engine-cache"),
            "ALERT_QUEUE_DIR": str(root / "alert-queue"),
        }
        # the documented defaults (every $VARIABLE the solution's manifest names), then this test's values
        values = dict(re.findall(r"^([A-Z_][A-Z0-9_]*)=(.*)$", ENV_TEMPLATE.read_text(encoding="utf-8"), re.MULTILINE))
        values.update(settings)
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()), encoding="utf-8")
        if self.real:
            self.manifest = SOLUTION / "deployment.template.json"
        else:
            solution = root / "solution"
            (solution / "modules" / "authrequest").mkdir(parents=True)
            (solution / "modules" / "authrequest" / "main.py").symlink_to(STANDIN_DEVICE)
            self.manifest = solution / "deployment.json"
            self.manifest.write_text(json.dumps(STANDIN_MANIFEST), encoding="utf-8")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the hub and the modules; return once authrequest answers methods."""
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.process = subprocess.Popen(  # pylint: disable=consider-using-with
                [str(BIN / "edgehub-emulator"), "up", str(self.manifest), "--env-file", str(self.env_file)]
                + self.options,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        wait_for(lambda: "REQUESTS_CA_BUNDLE=" in self.output() or self.process.poll() is not None, 60, "hub up")
        assert self.process.poll() is None, self.err.read_text(encoding="utf-8")
        # a payload with no fields: the module answers 400 once it is connected (IoT Hub answers 404 before)
        try:
            # exit status 1: the method answered with a status other than 2xx (its 400); 2: not connected (404)
            wait_for(lambda: self.cli("invoke", "edge-device", "authrequest", "ProcessRequest", "--payload", "{}")
                     .returncode in (0, 1), 120, "authrequest connected")  # fmt: skip
        except AssertionError as e:
            raise AssertionError(f"{e}; what the modules printed:\n{self.output()[-4000:]}") from e

    def cli(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """Another emulator command against this hub."""
        return subprocess.run(
            [str(BIN / "edgehub-emulator"), *argv, *self.options],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def service_env(self) -> dict[str, str]:
        """IOTHUB_CONNECTION_STRING and REQUESTS_CA_BUNDLE for the front-end."""
        env = json.loads(self.cli("env", "authrequest", "--format", "json").stdout)
        return {name: env[name] for name in ("IOTHUB_CONNECTION_STRING", "REQUESTS_CA_BUNDLE")}

    def output(self) -> str:
        """What `up` and its modules printed."""
        return self.out.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        """SIGTERM to `up`: it stops the modules, then the hub."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(60)


class FrontendServer:
    """`frontend serve` as its own process; users enrolled with `frontend users add`."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / "frontend.log"
        self.env = {
            **os.environ,
            **env,
            "FRONTEND_DATABASE": str(root / "frontend.sqlite3"),
            "FRONTEND_PORT": str(self.port),
            "FRONTEND_REQUEST_SECONDS": str(REQUEST_SECONDS),
            "FRONTEND_SECRET_KEY": secrets.token_urlsafe(40),
            "LOG_LEVEL": "INFO",
        }
        self.process: subprocess.Popen[bytes] | None = None

    def add_user(self, name: str, object_name: str) -> None:
        """Enrol a user through the console script."""
        subprocess.run(
            [str(BIN / "frontend"), "users", "add", name, "--object", object_name, "--password-stdin"],
            input=PASSWORD[name] + "\n",
            env=self.env,
            text=True,
            capture_output=True,
            check=True,
            timeout=60,
        )

    def start(self) -> None:
        """Start and wait for /healthz."""
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(  # pylint: disable=consider-using-with
                [str(BIN / "frontend"), "serve"], env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

        def healthy() -> bool:
            assert self.process is not None and self.process.poll() is None, self.log.read_text(encoding="utf-8")
            try:
                return requests.get(f"{self.url}/healthz", timeout=1).ok
            except requests.ConnectionError:
                return False

        wait_for(healthy, 60, "front-end up")

    def method_calls(self) -> int:
        """How many ProcessRequest calls the front-end made so far (from its log)."""
        return self.log.read_text(encoding="utf-8", errors="replace").count("invoking ProcessRequest")

    def stop(self) -> None:
        """SIGTERM and wait."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


@pytest.fixture(scope="module")
def frontend(tmp_path_factory: pytest.TempPathFactory, azurite: Any) -> Iterator[FrontendServer]:
    """The device side (hub + modules) and the front-end with alice (seen object) and bob (unseen)."""
    root = tmp_path_factory.mktemp("frontend-e2e")
    device = Device(root, azurite.connection_string)
    server: FrontendServer | None = None
    try:
        device.start()
        server = FrontendServer(root, {**device.service_env(), "STORAGE_CONNECTION_STRING": azurite.connection_string})
        server.add_user("alice", SEEN_OBJECT)
        server.add_user("bob", UNSEEN_OBJECT)
        server.start()
        yield server
    finally:
        if server:
            server.stop()
        device.stop()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context (its own cookies); its final page is saved as a screenshot."""
    context = browser.new_context()
    current = context.new_page()
    current.errors = []  # JavaScript errors and Content-Security-Policy violations
    current.on("pageerror", lambda error: current.errors.append(str(error)))
    # console errors but HTTP statuses (the 401 of a wrong password, the favicon's 404), which the tests check
    current.on(
        "console",
        lambda message: (
            message.type == "error"
            and not message.text.startswith("Failed to load resource")
            and current.errors.append(message.text)
        ),
    )
    yield current
    OUTPUT.mkdir(parents=True, exist_ok=True)
    current.screenshot(path=str(OUTPUT / f"{request.node.name}.png"), full_page=True)
    context.close()


def sign_in(page: Any, server: FrontendServer, name: str, password: str) -> Any:
    """Fill the sign-in form and submit it; the response of the form post."""
    page.goto(f"{server.url}/login")
    page.fill("#username", name)
    page.fill("#password", password)
    with page.expect_navigation() as navigation:
        page.click("#sign-in")
    return navigation.value


def test_wrong_password_shows_an_error_and_calls_no_method(page: Any, frontend: FrontendServer) -> None:
    calls = frontend.method_calls()
    response = sign_in(page, frontend, "alice", "not alice's password")
    assert response.status == 401
    assert page.inner_text("#error") == "Wrong user name or password."
    assert page.url == f"{frontend.url}/login"
    assert frontend.method_calls() == calls
    assert page.errors == []


def test_missing_csrf_token_is_refused(page: Any, frontend: FrontendServer) -> None:
    calls = frontend.method_calls()
    page.goto(f"{frontend.url}/login")
    page.evaluate("document.querySelector('input[name=csrf_token]').remove()")
    page.fill("#username", "alice")
    page.fill("#password", PASSWORD["alice"])
    with page.expect_navigation() as navigation:
        page.click("#sign-in")
    assert navigation.value.status == 403
    assert page.inner_text("h1") == "Request refused"
    assert "CSRF" in page.inner_text("#error")
    assert frontend.method_calls() == calls


def image_loaded(page: Any, selector: str) -> bool:
    """The image is decoded and has pixels."""
    return bool(page.eval_on_selector(selector, "img => img.complete && img.naturalWidth > 0"))


def test_right_password_then_object_signs_in(page: Any, browser: Any, frontend: FrontendServer) -> None:
    calls = frontend.method_calls()
    response = sign_in(page, frontend, "alice", PASSWORD["alice"])
    assert response.status == 200 and page.url == f"{frontend.url}/verify"
    assert frontend.method_calls() == calls + 1
    assert f"show your {SEEN_OBJECT} to the camera" in page.inner_text("h1")
    assert 0 < int(page.inner_text("#countdown")) <= REQUEST_SECONDS
    page.wait_for_selector("#captured-image", state="visible", timeout=(REQUEST_SECONDS + 10) * 1000)
    wait_for(lambda: image_loaded(page, "#captured-image"), 10, "captured image shown")
    image_url = page.get_attribute("#captured-image", "src")
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUTPUT / "waiting_page_with_the_captured_image.png"), full_page=True)
    page.click("#continue")
    page.wait_for_url(f"{frontend.url}/account")
    assert page.inner_text("#welcome") == "Welcome, alice"
    wait_for(lambda: image_loaded(page, "#account-image"), 10, "account image shown")
    assert page.errors == []

    # another session cannot fetch the image: neither a fresh browser nor another user past the password
    other = browser.new_context()
    try:
        stranger = other.new_page()
        assert stranger.goto(f"{frontend.url}{image_url}").status == 404
        sign_in(stranger, frontend, "bob", PASSWORD["bob"])
        assert stranger.goto(f"{frontend.url}{image_url}").status == 404
        assert stranger.goto(f"{frontend.url}/account").url == f"{frontend.url}/login"
        OUTPUT.mkdir(parents=True, exist_ok=True)
        stranger.screenshot(path=str(OUTPUT / "another_session_cannot_fetch_the_image.png"), full_page=True)
    finally:
        other.close()
    # the owner still can (the browser context's own cookies), and stays signed in
    assert page.request.get(f"{frontend.url}{image_url}").status == 200
    page.reload()
    assert page.inner_text("#welcome") == "Welcome, alice"


def test_object_never_shown_expires(page: Any, frontend: FrontendServer) -> None:
    sign_in(page, frontend, "bob", PASSWORD["bob"])
    assert f"show your {UNSEEN_OBJECT} to the camera" in page.inner_text("h1")
    page.wait_for_selector("#retry", state="visible", timeout=(REQUEST_SECONDS + 20) * 1000)
    assert page.inner_text("#status-message") == f"Your {UNSEEN_OBJECT} was not seen before the time ran out."
    assert page.goto(f"{frontend.url}/account").url == f"{frontend.url}/login"
    page.goto(f"{frontend.url}/verify")
    assert page.is_visible("#retry")
    assert page.errors == []
