"""Over-the-air model updates end to end: packages in real Azurite behind SAS URLs, desired properties patched
through IoT Hub's service SDK on the edgeHub emulator, the module's real SDK client, the scoring API over HTTP.

Port 8883 is fixed by the device SDK: run under `unshare --net` when anything else may use it."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import shutil
import socket
import threading
import urllib.error
import urllib.request
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from edgehub_emulator.process import EmulatorProcess, free_port
from edgevision.iot import EdgeModuleConnection
from edgevision.manager import ModelManager
from edgevision.models import ModelRepository, PackageLimits
from edgevision.scoring import ScoringServer
from edgevision.updates import ModelUpdater
from solution_testkit import wait_for as poll

REPO = Path(__file__).resolve().parents[5]
MANIFEST = REPO / "iot-edge-solution" / "deployment.template.json"
BUNDLED = REPO / "iot-edge-solution" / "models"
MODULE = "classifier"
LIMITS = PackageLimits(max_download_bytes=40 << 20, max_unpacked_bytes=60 << 20, max_files=50, timeout_s=10)


def wait_for(condition: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Poll until condition() is truthy (the shared poll, with this file's default timeout)."""
    return poll(condition, timeout)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory) -> Iterator[EmulatorProcess]:
    """The emulator, with the classifier's edge environment set in this process."""
    try:
        socket.create_connection(("127.0.0.1", 8883), timeout=0.5).close()
        pytest.fail("port 8883 is taken: run these tests under `unshare --net` (see the module docstring)")
    except OSError:
        pass
    instance = EmulatorProcess(tmp_path_factory.mktemp("emulator") / "state", MANIFEST, stop_timeout=15).start()
    saved = dict(os.environ)
    os.environ.update(instance.env(MODULE))
    yield instance
    instance.stop()
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def registry(emulator):  # pylint: disable=unused-argument  # the emulator sets the connection string
    """The IoT Hub service SDK client."""
    from azure.iot.hub import IoTHubRegistryManager  # pylint: disable=import-outside-toplevel

    return IoTHubRegistryManager.from_connection_string(os.environ["IOTHUB_CONNECTION_STRING"])


class Module:  # pylint: disable=attribute-defined-outside-init  # start() (re)builds the services
    """The classifier's model services as main.py wires them: manager, updater, scoring API, module client."""

    def __init__(self, store: Path, sample: Path) -> None:
        self.store = store
        self.sample = sample
        self.port = free_port()

    def start(self) -> None:
        """Connect, serve the model active before (or bundled v1), and apply the twin."""
        self.connection = EdgeModuleConnection.from_edge_environment(connection_retry_interval=1)
        self.manager = ModelManager(sample_image=self.sample)
        self.updater = ModelUpdater(self.manager, self.connection, self.store, LIMITS, BUNDLED)
        self.manager.swap(
            self.manager.build(
                self.updater.initial_model(lambda: ModelRepository(BUNDLED).load("efficientnet-lite0", "1"))
            )
        )
        self.updater.register()
        self.server = ScoringServer(self.manager, "127.0.0.1", self.port)
        self.server.start()
        self.connection.start()
        assert self.updater.wait_idle(120)

    def stop(self) -> None:
        """Everything down, as on SIGTERM."""
        self.server.stop()
        self.updater.stop()
        self.connection.close()
        self.manager.close()

    def score(self, image: Path) -> dict[str, Any]:
        """POST /score with a JPEG."""
        request = urllib.request.Request(
            f"{self.server.url}/score", data=image.read_bytes(), headers={"Content-Type": "image/jpeg"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())


@pytest.fixture(scope="module")
def module(emulator, tmp_path_factory) -> Iterator[Module]:  # pylint: disable=unused-argument
    """The running module services with an empty MODEL_STORE."""
    media = REPO / "iot-edge-solution" / "media"
    instance = Module(tmp_path_factory.mktemp("store"), media / "squirrel_cls.jpg")
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def models_container(azurite):
    """The `models` blob container in Azurite."""
    from azure.storage.blob import BlobServiceClient  # pylint: disable=import-outside-toplevel

    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = service.get_container_client("models")
    container.create_container()
    return container


def upload(container, name: str, data: bytes) -> str:
    """Upload a package; its read-only SAS URL, valid for an hour."""
    from azure.storage.blob import BlobSasPermissions, generate_blob_sas  # pylint: disable=import-outside-toplevel

    container.upload_blob(name, data, overwrite=True)
    credential = container.credential
    sas = generate_blob_sas(
        account_name=credential.account_name,
        container_name=container.container_name,
        blob_name=name,
        account_key=credential.account_key,
        permission=BlobSasPermissions(read=True),
        expiry=datetime.now(timezone.utc) + timedelta(hours=1),
    )
    return f"{container.get_blob_client(name).url}?{sas}"


def version_folder(root: Path, version: str, prefix: str) -> Path:
    """efficientnet-lite0 as a new version: the real model file, labels prefixed with `prefix`."""
    target = root / f"efficientnet-lite0-{version}-{prefix or 'same'}"
    shutil.copytree(BUNDLED / "efficientnet-lite0" / "1", target)
    manifest = json.loads((target / "model.json").read_text(encoding="utf-8"))
    manifest["version"] = version
    (target / "model.json").write_text(json.dumps(manifest), encoding="utf-8")
    labels = (target / "labels.txt").read_text(encoding="utf-8").splitlines()
    (target / "labels.txt").write_text("\n".join(prefix + label for label in labels) + "\n", encoding="utf-8")
    return target


def zip_folder(folder: Path, extra: dict[str, bytes] | None = None, skip: tuple[str, ...] = ()) -> bytes:
    """The folder as a package (in a top-level folder), plus `extra` entries, minus `skip` names."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zipped:
        for path in sorted(folder.iterdir()):
            if path.name not in skip:
                zipped.write(path, f"model/{path.name}")
        for name, data in (extra or {}).items():
            zipped.writestr(name, data)
    return buffer.getvalue()


def md5_b64(data: bytes) -> str:
    """Content-MD5 as Azure Storage writes it."""
    return base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324 - the seed's checksum


def request_update(
    registry, module: Module, file_name: str, url: str, md5: str | None, sha256: str | None = None, **extra: Any
) -> dict[str, Any]:
    """Patch the desired properties through the service SDK; wait until the module handled the patch; the
    reported `model`."""
    from azure.iot.hub.models import Twin, TwinProperties  # pylint: disable=import-outside-toplevel

    device = os.environ["IOTEDGE_DEVICEID"]
    before = module.updater.handled
    desired = {
        "modelUpdate": {"FileName": file_name, "DownloadUrl": url, "ContentMD5": md5, "ContentSHA256": sha256},
        **extra,
    }
    twin = registry.get_module_twin(device, MODULE)
    registry.update_module_twin(device, MODULE, Twin(properties=TwinProperties(desired=desired)), twin.etag)
    wait_for(lambda: module.updater.handled > before and module.updater.wait_idle(0))
    return reported(registry)["model"]


def reported(registry) -> dict[str, Any]:
    """The classifier's reported properties as the service sees them."""
    return registry.get_module_twin(os.environ["IOTEDGE_DEVICEID"], MODULE).properties.reported


SQUIRREL = REPO / "iot-edge-solution" / "media" / "squirrel_cls.jpg"


def test_1_a_good_package_becomes_active_and_is_reported(
    emulator, registry, module, models_container, tmp_path
) -> None:
    assert module.score(SQUIRREL)["model_version"] == "1"
    data = zip_folder(version_folder(tmp_path, "2", "v2-"))
    url = upload(models_container, "efficientnet-v2.zip", data)
    sent = module.connection.counters["outputs_sent"]
    model = request_update(
        registry, module, "efficientnet-v2.zip", url, md5_b64(data), hashlib.sha256(data).hexdigest()
    )
    assert model["status"] == "active" and model.get("error") is None  # null removes a reported key
    assert (model["name"], model["version"]) == ("efficientnet-lite0", "2")
    assert model["engine"]["backend"] == "onnxruntime"  # the backend actually running it
    assert reported(registry)["LatestAIModelFileName"] == "efficientnet-v2.zip"
    answer = module.score(SQUIRREL)
    assert answer["model_version"] == "2" and answer["predictions"][0]["label"].startswith("v2-")
    assert module.connection.counters["outputs_sent"] == sent + 1  # DLModelOutput
    upstream = [json.loads(line) for line in emulator.monitor_lines() if "efficientnet-v2.zip" in line]
    assert len(upstream) == 1 and upstream[0]["output"] == "DLModelOutput"  # routed by the template's route
    body = json.loads(upstream[0]["body"])
    assert (body["FileName"], body["name"], body["version"]) == ("efficientnet-v2.zip", "efficientnet-lite0", "2")
    assert (module.store / "efficientnet-lite0" / "2" / "model.onnx").is_file()
    # the same patch again (here: the whole twin, as after a reconnect) changes nothing
    swaps = module.manager.swaps
    module.updater.on_desired(
        {
            "modelUpdate": {
                "FileName": "efficientnet-v2.zip",
                "DownloadUrl": url,
                "ContentMD5": md5_b64(data),
                "ContentSHA256": hashlib.sha256(data).hexdigest(),
            }
        },
        True,
    )
    assert module.updater.wait_idle(60)
    assert module.manager.swaps == swaps
    assert "sig=" not in (module.store / "active.json").read_text(encoding="utf-8")  # the SAS is a secret


def _package(case: str, tmp_path: Path) -> tuple[bytes, dict[str, str | None]]:  # pylint: disable=too-many-branches
    """A bad package and the checksums to announce for it."""
    folder = version_folder(tmp_path, "3", f"{case}-")
    data = zip_folder(folder)
    checksums: dict[str, str | None] = {"md5": md5_b64(data), "sha256": None}
    if case == "bad md5":
        checksums["md5"] = md5_b64(data + b"x")
    elif case == "hex md5 of other data":
        checksums["md5"] = hashlib.md5(b"other").hexdigest()  # noqa: S324
    elif case == "bad sha256":
        checksums["sha256"] = hashlib.sha256(b"other").hexdigest()
    elif case == "zip slip":
        data = zip_folder(folder, {"../escape.txt": b"x"})
    elif case == "absolute path":
        data = zip_folder(folder, {"/tmp/escape.txt": b"x"})
    elif case == "zip bomb":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zipped:
            with zipped.open("model/zeros.bin", "w") as handle:
                for _ in range(80):
                    handle.write(bytes(1 << 20))
        data = buffer.getvalue()
    elif case == "missing model.json":
        data = zip_folder(folder, skip=("model.json",))
    elif case == "invalid model.json":
        (folder / "model.json").write_text("{not json", encoding="utf-8")
        data = zip_folder(folder)
    elif case == "model file does not match":
        (folder / "model.onnx").write_bytes((folder / "model.onnx").read_bytes()[:-10])
        data = zip_folder(folder)
    elif case == "model fails to load":
        onnx = (folder / "model.onnx").read_bytes()[:5000]
        (folder / "model.onnx").write_bytes(onnx)
        manifest = json.loads((folder / "model.json").read_text(encoding="utf-8"))
        manifest["sha256"] = hashlib.sha256(onnx).hexdigest()
        (folder / "model.json").write_text(json.dumps(manifest), encoding="utf-8")
        data = zip_folder(folder)
    elif case == "not a zip":
        data = b"PK\x03\x04 truncated"
    if case not in ("bad md5", "hex md5 of other data"):
        checksums["md5"] = md5_b64(data)
    return data, checksums


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("bad md5", "verifying: MD5 mismatch"),
        ("hex md5 of other data", "verifying: MD5 mismatch"),
        ("bad sha256", "verifying: SHA-256 mismatch"),
        ("zip slip", "unpacking: the archive holds a path outside its folder: '../escape.txt'"),
        ("absolute path", "unpacking: the archive holds an absolute path"),
        ("zip bomb", "unpacking: the archive unpacks to 83886080 bytes, over 62914560"),
        ("missing model.json", "validating: the package holds no model.json"),
        ("invalid model.json", "is not valid JSON"),
        ("model file does not match", "is corrupt or was replaced"),
        ("model fails to load", "loading: cannot "),
        ("not a zip", "unpacking: the package is not a valid zip archive"),
        ("unreachable", "downloading: cannot reach http://127.0.0.1:"),
        ("missing blob", "downloading: http://127.0.0.1:"),
    ],
)
def test_2_a_bad_package_fails_with_its_reason_and_the_old_model_serves(
    registry, module, models_container, tmp_path, case, reason
) -> None:
    active = module.score(SQUIRREL)["model_version"]
    name = f"bad-{case.replace(' ', '-')}.zip"
    if case == "unreachable":
        url, checksums = f"http://127.0.0.1:{free_port()}/models/{name}?sv=x&sig=secret", {"md5": None, "sha256": None}
    elif case == "missing blob":
        url, checksums = (
            upload(models_container, "placeholder.zip", b"x").replace("placeholder", "nothing"),
            {"md5": None, "sha256": None},
        )
    else:
        data, checksums = _package(case, tmp_path)
        url = upload(models_container, name, data)
    model = request_update(registry, module, name, url, checksums["md5"], checksums["sha256"])
    assert model["status"] == "failed"
    assert reason in model["error"]
    assert "sig=" not in model["error"]  # the SAS token is a secret
    assert model["version"] == active
    assert module.score(SQUIRREL)["model_version"] == active
    assert not (module.store / "efficientnet-lite0" / "3").exists()
    assert not list(module.store.glob(".incoming-*"))


def test_3_rollback_by_model_version_and_back(registry, module) -> None:
    from azure.iot.hub.models import Twin, TwinProperties  # pylint: disable=import-outside-toplevel

    device = os.environ["IOTEDGE_DEVICEID"]
    for version in ("1", "2"):
        before = module.updater.handled
        twin = registry.get_module_twin(device, MODULE)
        registry.update_module_twin(
            device, MODULE, Twin(properties=TwinProperties(desired={"modelVersion": version})), twin.etag
        )
        wait_for(lambda seen=before: module.updater.handled > seen and module.updater.wait_idle(0))
        model = reported(registry)["model"]
        assert model["status"] == "active" and model["version"] == version
        assert module.score(SQUIRREL)["model_version"] == version
    before = module.updater.handled
    twin = registry.get_module_twin(device, MODULE)
    registry.update_module_twin(
        device, MODULE, Twin(properties=TwinProperties(desired={"modelVersion": "7"})), twin.etag
    )
    wait_for(lambda: module.updater.handled > before and module.updater.wait_idle(0))
    model = reported(registry)["model"]
    assert model["status"] == "failed" and "no version '7'" in model["error"] and model["version"] == "2"


def test_4_a_restart_keeps_the_active_version(registry, module) -> None:
    module.stop()
    module.start()  # reads the whole twin again: every request in it was handled before
    assert module.score(SQUIRREL)["model_version"] == "2"
    assert module.manager.swaps == 1  # only the start-up model: nothing re-applied
    # the last request (version 7) failed before the restart: the start-up report says so again instead of an
    # `active` that would hide it (found killing the classifier after an update whose download failed)
    module.updater.report_active()  # as main.py does once the module reaches its twin
    wait_for(lambda: reported(registry)["model"]["status"] == "failed")
    model = reported(registry)["model"]
    assert "no version '7'" in model["error"] and model["version"] == "2"


def test_4b_a_half_written_active_model_is_refused_at_restart_and_the_bundled_one_serves(module, caplog) -> None:
    """A crash or a full disk left the active version's model file half-written: never served half-swapped."""
    module.stop()
    state = json.loads((module.store / "active.json").read_text(encoding="utf-8"))
    [model_file] = (module.store / state["name"] / state["version"]).glob("*.onnx")
    whole = model_file.read_bytes()
    model_file.write_bytes(whole[: len(whole) // 2])
    try:
        with caplog.at_level(logging.WARNING, logger="edgevision.updates"):
            module.start()
        assert module.score(SQUIRREL)["model_version"] == "1"
        refused = [r.getMessage() for r in caplog.records if "cannot be used" in r.getMessage()]
        assert refused and f"{state['name']}:{state['version']}" in refused[0]
    finally:
        module.stop()
        model_file.write_bytes(whole)
        module.start()
    assert module.score(SQUIRREL)["model_version"] == state["version"]


def test_5_publish_model_updates_the_module(registry, module, azurite, tmp_path, capsys) -> None:
    """`edgevision publish-model` zips, uploads to Azurite, signs and patches the twin; the module follows."""
    from edgevision.cli import main  # pylint: disable=import-outside-toplevel

    folder = version_folder(tmp_path, "5", "v5-")
    before = module.updater.handled
    status = main(
        [
            "publish-model",
            str(folder),
            "--device",
            os.environ["IOTEDGE_DEVICEID"],
            "--module",
            MODULE,
            "--storage-connection-string",
            azurite.connection_string,
            "--hub-connection-string",
            os.environ["IOTHUB_CONNECTION_STRING"],
            "--expiry-hours",
            "1",
        ]
    )
    assert status == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["file_name"] == "efficientnet-lite0-5.zip" and "sig=" not in json.dumps(summary)
    wait_for(lambda: module.updater.handled > before and module.updater.wait_idle(0))
    model = reported(registry)["model"]
    assert model["status"] == "active" and model["version"] == "5"
    assert reported(registry)["LatestAIModelFileName"] == "efficientnet-lite0-5.zip"
    assert module.score(SQUIRREL)["predictions"][0]["label"].startswith("v5-")


DOG = REPO / "iot-edge-solution" / "media" / "dog.jpg"


def seed_tflite_package() -> bytes:
    """The seed's example package: `ssd_mobilenet_v1_1_metadata_1.tflite` + `labelmap.txt`, no model.json (the
    model is the bundled Coral SSD MobileNet V2 COCO under that name; labelmap.txt in the Zoo's format)."""
    ssd = ModelRepository(BUNDLED).load("ssd-mobilenet-v2-coco-tflite")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.write(ssd.model_path, "ssd_mobilenet_v1_1_metadata_1.tflite")
        zipped.writestr("labelmap.txt", "\n".join(("???",) + ssd.labels) + "\n")
    return buffer.getvalue()


class ScoringLoad:
    """Clients posting /score in a loop while models swap: every answer is kept (status, model)."""

    def __init__(self, module: Module, image: Path) -> None:
        self.module, self.image = module, image
        self.answers: list[tuple[int, str]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                answer = self.module.score(self.image)
                self.answers.append((200, f"{answer['model_name']}:{answer['model_version']}"))
            except urllib.error.HTTPError as e:
                self.answers.append((e.code, ""))
            except Exception as e:  # pylint: disable=broad-exception-caught  # reported by the test
                self.errors.append(repr(e))

    def __enter__(self) -> ScoringLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def test_6_onnx_to_tflite_to_onnx_over_the_air_under_load(registry, module, models_container, tmp_path) -> None:
    """The seed's .tflite package (no model.json) replaces the ONNX classifier while /score is under load, finds
    the dog in dog.jpg, and a new ONNX version replaces it again; no request fails meanwhile."""
    data = seed_tflite_package()
    url = upload(models_container, "ssd_mobilenet_v1_1_metadata_1.zip", data)
    with ScoringLoad(module, DOG) as load:
        model = request_update(registry, module, "ssd_mobilenet_v1_1_metadata_1.zip", url, md5_b64(data))
        assert model["status"] == "active", model.get("error")
        assert model["name"] == "ssd-mobilenet-v1-1-metadata-1" and model["engine"]["backend"] == "tflite"
        answer = module.score(DOG)
        assert {"dog", "bicycle", "car"} <= {p["label"] for p in answer["predictions"]}
        back = zip_folder(version_folder(tmp_path, "8", "v8-"))
        url = upload(models_container, "efficientnet-v8.zip", back)
        model = request_update(registry, module, "efficientnet-v8.zip", url, md5_b64(back))
        assert model["status"] == "active" and model["engine"]["backend"] == "onnxruntime"
        wait_for(lambda: any(m.endswith(":8") for _, m in load.answers[-3:]))
    assert not load.errors, load.errors[:3]
    assert {status for status, _ in load.answers} == {200}
    served = [m for _, m in load.answers]
    tflite = "ssd-mobilenet-v1-1-metadata-1:"
    assert any(m.startswith(tflite) for m in served) and served[-1] == "efficientnet-lite0:8"
    assert served[0].startswith("efficientnet-lite0:")
    assert module.score(SQUIRREL)["predictions"][0]["label"].startswith("v8-")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--device", "d"], "set STORAGE_CONNECTION_STRING and IOTHUB_CONNECTION_STRING"),
    ],
)
def test_publish_model_needs_its_connection_strings(monkeypatch, capsys, argv, message, tmp_path) -> None:
    from edgevision.cli import main  # pylint: disable=import-outside-toplevel

    monkeypatch.delenv("STORAGE_CONNECTION_STRING", raising=False)
    monkeypatch.delenv("IOTHUB_CONNECTION_STRING", raising=False)
    assert main(["publish-model", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err


def test_publish_model_refuses_a_broken_folder(tmp_path, capsys) -> None:
    from edgevision.cli import main  # pylint: disable=import-outside-toplevel

    folder = version_folder(tmp_path, "6", "")
    (folder / "model.json").write_text("{}", encoding="utf-8")
    assert (
        main(
            [
                "publish-model",
                str(folder),
                "--device",
                "d",
                "--storage-connection-string",
                "x",
                "--hub-connection-string",
                "y",
            ]
        )
        == 2
    )
    assert "is not a valid model version folder" in capsys.readouterr().err
