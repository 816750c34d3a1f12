"""Model packages and update requests: checksum formats, redaction, safe unzip, desired-property parsing."""

from __future__ import annotations

import base64
import hashlib
import io
import stat
import zipfile
from pathlib import Path

import pytest

from edgevision.models.package import (
    PackageError,
    PackageLimits,
    normalise_md5,
    normalise_sha256,
    redact_url,
    safe_unzip,
)
from edgevision.updates import merge_patch, parse_request

DIGEST = hashlib.md5(b"model", usedforsecurity=False).digest()


@pytest.mark.parametrize(
    ("value", "expected", "error"),
    [
        (base64.b64encode(DIGEST).decode(), DIGEST.hex(), None),
        (DIGEST.hex().upper(), DIGEST.hex(), None),
        (" " + DIGEST.hex() + " ", DIGEST.hex(), None),
        ("not base64!", None, "neither base64 nor hex"),
        (base64.b64encode(b"short").decode(), None, "not an MD5"),
    ],
)
def test_content_md5_as_base64_or_hex(value: str, expected: str | None, error: str | None) -> None:
    if error:
        with pytest.raises(PackageError, match=error):
            normalise_md5(value)
    else:
        assert normalise_md5(value) == expected


def test_content_sha256_as_hex_or_base64() -> None:
    digest = hashlib.sha256(b"model").digest()
    assert normalise_sha256(digest.hex()) == normalise_sha256(base64.b64encode(digest).decode()) == digest.hex()
    with pytest.raises(PackageError, match="not a SHA-256"):
        normalise_sha256(base64.b64encode(b"x" * 16).decode())


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://acct.blob.core.windows.net/models/m.zip?sv=2024&sig=SECRET",
            "https://acct.blob.core.windows.net/models/m.zip",
        ),
        (
            "http://user:pass@127.0.0.1:10000/devstoreaccount1/models/m.zip?sig=x",
            "http://127.0.0.1:10000/devstoreaccount1/models/m.zip",
        ),
    ],
)
def test_urls_are_shown_without_secrets(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def _zip(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zipped:
        for info, data in entries:
            zipped.writestr(info, data)
    path = Path(__import__("tempfile").mkdtemp()) / "p.zip"
    path.write_bytes(buffer.getvalue())
    return path


def _link(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def _fifo(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFIFO | 0o644) << 16
    return info


@pytest.mark.parametrize(
    ("entries", "limits", "error"),
    [
        ([("../x", b"1")], PackageLimits(), "outside its folder"),
        ([("a/../../x", b"1")], PackageLimits(), "outside its folder"),
        ([("/etc/x", b"1")], PackageLimits(), "absolute path"),
        ([("C:/x", b"1")], PackageLimits(), "absolute path"),
        ([(_link("model/link"), b"/etc/passwd")], PackageLimits(), "a link"),
        ([(_fifo("model/fifo"), b"")], PackageLimits(), "special file"),
        ([(f"f{i}", b"1") for i in range(6)], PackageLimits(max_files=5), "6 entries, over 5"),
        ([("big", bytes(5000))], PackageLimits(max_unpacked_bytes=4096), "5000 bytes, over 4096"),
    ],
)
def test_unsafe_archives_are_refused(tmp_path: Path, entries, limits: PackageLimits, error: str) -> None:
    with pytest.raises(PackageError, match=error):
        safe_unzip(_zip(entries), tmp_path, limits)
    assert not (tmp_path.parent / "x").exists()


def test_an_archive_whose_sizes_lie_is_refused(tmp_path: Path) -> None:
    archive = _zip([("big", bytes(5000))])
    data = bytearray(archive.read_bytes())
    # patch the declared uncompressed size (local header and central directory) down to 10 bytes
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.find(signature)
        data[at + offset : at + offset + 4] = (10).to_bytes(4, "little")
    archive.write_bytes(bytes(data))
    with pytest.raises(PackageError):
        safe_unzip(archive, tmp_path, PackageLimits(max_unpacked_bytes=4096))


def test_a_good_archive_unpacks(tmp_path: Path) -> None:
    safe_unzip(_zip([("model/model.json", b"{}"), ("model/sub/labels.txt", b"a\n")]), tmp_path, PackageLimits())
    assert (tmp_path / "model" / "sub" / "labels.txt").read_bytes() == b"a\n"


@pytest.mark.parametrize(
    ("desired", "expected", "error"),
    [
        (
            {"FileName": "m.zip", "DownloadUrl": "https://h/m.zip", "ContentMD5": "x"},
            ("m.zip", "https://h/m.zip", "x"),
            None,
        ),
        ({"modelUpdate": {"DownloadUrl": "https://h/p/n.zip?sig=1"}}, ("n.zip", "https://h/p/n.zip?sig=1", None), None),
        ({"labels": ["a"]}, None, None),
        ({"DownloadUrl": 5}, None, "DownloadUrl must be a string"),
        ({"DownloadUrl": ""}, None, "DownloadUrl is empty"),
    ],
)
def test_update_requests_from_desired_properties(desired, expected, error) -> None:
    if error:
        with pytest.raises(PackageError, match=error):
            parse_request(desired)
        return
    request = parse_request(desired)
    if expected is None:
        assert request is None
    else:
        assert request is not None and (request.file_name, request.url, request.md5) == expected
        assert "sig" not in request.key  # a digest, never the URL


def test_patches_merge_like_the_twin() -> None:
    document = {"modelUpdate": {"FileName": "a.zip", "DownloadUrl": "u1", "ContentSHA256": "s"}, "keep": 1}
    patch = {"modelUpdate": {"DownloadUrl": "u2", "ContentSHA256": None}, "$version": 4}
    assert merge_patch(document, patch) == {"modelUpdate": {"FileName": "a.zip", "DownloadUrl": "u2"}, "keep": 1}


@pytest.mark.parametrize(
    ("state", "model_name", "expected"),
    [
        (None, "efficientnet-lite0", "default"),
        ({"name": "efficientnet-lite0", "version": "1"}, "efficientnet-lite0", "store"),
        ({"name": "efficientnet-lite0", "version": "1"}, "nanodet-m-416", "default"),  # MODEL_NAME changed
        ({"name": "efficientnet-lite0", "version": "9"}, "efficientnet-lite0", "default"),  # not installed
        ("not json", "efficientnet-lite0", "default"),
    ],
)
def test_the_model_after_a_restart(tmp_path: Path, state, model_name: str, expected: str) -> None:
    import json  # pylint: disable=import-outside-toplevel
    import shutil  # pylint: disable=import-outside-toplevel

    from edgevision.iot import OfflineModuleConnection  # pylint: disable=import-outside-toplevel
    from edgevision.manager import ModelManager  # pylint: disable=import-outside-toplevel
    from edgevision.models import ModelRepository  # pylint: disable=import-outside-toplevel
    from edgevision.updates import ModelUpdater  # pylint: disable=import-outside-toplevel

    models = Path(__file__).resolve().parents[4] / "models"
    store = tmp_path / "store"
    shutil.copytree(models / "efficientnet-lite0" / "1", store / "efficientnet-lite0" / "1")
    if state is not None:
        (store / "active.json").write_text(state if isinstance(state, str) else json.dumps(state), encoding="utf-8")
    updater = ModelUpdater(ModelManager(), OfflineModuleConnection(), store)
    default = ModelRepository(models).load("efficientnet-lite0", "1")
    chosen = updater.initial_model(lambda: default, model_name)
    assert (chosen is default) == (expected == "default")
    if expected == "store":
        assert chosen.folder == store / "efficientnet-lite0" / "1"
