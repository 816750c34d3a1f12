"""Model packages that arrive over the air: download, verify, unzip safely, validate, install into a store.

A package is a zip holding one model folder: `model.json` (as in the bundled repository) and the files it names,
either at the top of the archive or in one folder. Every step raises PackageError with a reason fit for the
module twin's reported properties; nothing half-installed is left behind."""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import shutil
import stat
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

from edgevision.models.errors import ModelError
from edgevision.models.repository import MANIFEST_NAME, LoadedModel, ModelRepository
from edgevision.models.tflite_package import describe_tflite_package

log = logging.getLogger(__name__)

_CHUNK = 1 << 16


class PackageError(ModelError):
    """A model package cannot be downloaded, verified, unpacked or validated; `step` names where it failed."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(message)
        self.step = step


@dataclass(frozen=True)
class PackageLimits:
    """Bounds on what a package may cost: download size, unpacked size and file count, download timeout."""

    max_download_bytes: int = 1 << 30
    max_unpacked_bytes: int = 2 << 30
    max_files: int = 1000
    timeout_s: float = 60.0


@dataclass(frozen=True)
class Downloaded:
    """A package on disk with the digests computed while it streamed in."""

    path: Path
    size: int
    md5_hex: str
    sha256_hex: str


def redact_url(url: str) -> str:
    """The URL without its query (a SAS token is a secret) and without user info."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def _normalise_digest(value: str, field: str, what: str, size: int, forms: str) -> str:
    """A digest of `size` bytes given as hex or base64, as lower-case hex; PackageError naming `field` otherwise."""
    text = value.strip()
    if len(text) == size * 2 and all(c in "0123456789abcdefABCDEF" for c in text):
        return text.lower()
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise PackageError("verifying", f"{field} {value!r} is neither {forms}") from e
    if len(raw) != size:
        raise PackageError("verifying", f"{field} {value!r} is not {what} ({size} bytes)")
    return raw.hex()


def normalise_md5(value: str) -> str:
    """An MD5 given as base64 (as Azure Storage's Content-MD5) or as 32 hex digits, as lower-case hex."""
    return _normalise_digest(value, "ContentMD5", "an MD5", 16, "base64 nor hex")


def normalise_sha256(value: str) -> str:
    """A SHA-256 given as 64 hex digits or base64, as lower-case hex."""
    return _normalise_digest(value, "ContentSHA256", "a SHA-256", 32, "hex nor base64")


def download(url: str, target: Path, limits: PackageLimits) -> Downloaded:
    """Stream `url` (http or https, e.g. a blob SAS URL) into `target`, at most `max_download_bytes`."""
    shown = redact_url(url)
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise PackageError("downloading", f"DownloadUrl must be http(s); got {scheme or 'no scheme'}: {shown}")
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    size = 0
    try:
        with urllib.request.urlopen(urllib.request.Request(url), timeout=limits.timeout_s) as response:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > limits.max_download_bytes:
                raise PackageError(
                    "downloading",
                    f"{shown} is {declared} bytes, over MODEL_MAX_BYTES={limits.max_download_bytes}",
                )
            with target.open("wb") as handle:
                while chunk := response.read(_CHUNK):
                    size += len(chunk)
                    if size > limits.max_download_bytes:
                        raise PackageError(
                            "downloading", f"{shown} is over MODEL_MAX_BYTES={limits.max_download_bytes}"
                        )
                    md5.update(chunk)
                    sha.update(chunk)
                    handle.write(chunk)
    except urllib.error.HTTPError as e:
        raise PackageError("downloading", f"{shown} answered HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        raise PackageError("downloading", f"cannot reach {shown}: {e.reason}") from e
    except (TimeoutError, OSError) as e:
        raise PackageError("downloading", f"download of {shown} failed: {e}") from e
    log.info("downloaded %s (%d bytes)", shown, size)
    return Downloaded(target, size, md5.hexdigest(), sha.hexdigest())


def verify(package: Downloaded, md5: str | None, sha256: str | None) -> None:
    """Compare the package's digests with the ones the twin gave (each optional)."""
    if md5:
        expected = normalise_md5(md5)
        if expected != package.md5_hex:
            raise PackageError(
                "verifying", f"MD5 mismatch: the package has {package.md5_hex}, ContentMD5 says {expected}"
            )
    if sha256:
        expected = normalise_sha256(sha256)
        if expected != package.sha256_hex:
            raise PackageError(
                "verifying", f"SHA-256 mismatch: the package has {package.sha256_hex}, ContentSHA256 says {expected}"
            )


def _safe_member_path(info: zipfile.ZipInfo) -> PurePosixPath:
    name = info.filename.replace("\\", "/")
    path = PurePosixPath(name)
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise PackageError("unpacking", f"the archive holds an absolute path: {info.filename!r}")
    if ".." in path.parts:
        raise PackageError("unpacking", f"the archive holds a path outside its folder: {info.filename!r}")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise PackageError("unpacking", f"the archive holds a link: {info.filename!r}")
    kind = stat.S_IFMT(mode)  # 0 when the archiver wrote permissions only
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        raise PackageError("unpacking", f"the archive holds a special file: {info.filename!r}")
    return path


def safe_unzip(archive: Path, target: Path, limits: PackageLimits) -> None:
    """Unpack `archive` into the empty folder `target`, refusing absolute paths, `..`, links, special files and
    archives over the file-count or unpacked-size limit (counted as bytes are written, not as declared)."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = zipped.infolist()
            if len(members) > limits.max_files:
                raise PackageError("unpacking", f"the archive holds {len(members)} entries, over {limits.max_files}")
            declared = sum(info.file_size for info in members)
            if declared > limits.max_unpacked_bytes:
                raise PackageError(
                    "unpacking", f"the archive unpacks to {declared} bytes, over {limits.max_unpacked_bytes}"
                )
            paths = [(info, _safe_member_path(info)) for info in members]
            written = 0
            for info, path in paths:
                destination = target.joinpath(*path.parts)
                if info.is_dir():
                    destination.mkdir(parents=True, exist_ok=True)
                    continue
                destination.parent.mkdir(parents=True, exist_ok=True)
                with zipped.open(info) as source, destination.open("wb") as sink:
                    while chunk := source.read(_CHUNK):
                        written += len(chunk)
                        if written > limits.max_unpacked_bytes:
                            raise PackageError(
                                "unpacking", f"the archive unpacks to more than {limits.max_unpacked_bytes} bytes"
                            )
                        sink.write(chunk)
    except zipfile.BadZipFile as e:
        raise PackageError("unpacking", f"the package is not a valid zip archive: {e}") from e
    except (RuntimeError, NotImplementedError) as e:  # encrypted or unsupported compression
        raise PackageError("unpacking", f"the archive cannot be unpacked: {e}") from e


def find_model_folder(root: Path) -> Path:
    """The folder holding model.json: the archive's top, or its only top-level folder. Without model.json, a
    folder holding one .tflite detection model (and its labels) gets a model.json written from the model."""
    if (root / MANIFEST_NAME).is_file():
        return root
    folders = [p for p in root.iterdir() if p.is_dir()]
    files = [p for p in root.iterdir() if p.is_file()]
    if len(folders) == 1 and not files and (folders[0] / MANIFEST_NAME).is_file():
        return folders[0]
    folder = folders[0] if len(folders) == 1 and not files else root
    if any(folder.glob("*.tflite")):
        try:
            describe_tflite_package(folder)
        except ModelError as e:
            raise PackageError("validating", f"the package holds no {MANIFEST_NAME}, and {e}") from e
        return folder
    raise PackageError("validating", f"the package holds no {MANIFEST_NAME} (at its top or in its one folder)")


def validate(folder: Path) -> LoadedModel:
    """model.json and the model file's SHA-256 (and labels) as the repository checks them."""
    try:
        return ModelRepository.load_folder(folder)
    except ModelError as e:
        raise PackageError("validating", str(e).replace(str(folder), "<package>")) from e


@dataclass(frozen=True)
class Installed:
    """A package's model in the store; `new` when this install created its folder."""

    model: LoadedModel
    new: bool


def install(model: LoadedModel, store: Path) -> Installed:
    """Move a validated package into `store/<name>/<version>`. An installed version with the same model file is
    kept (the package is the same); one with a different file is refused (versions are immutable)."""
    name, version = model.manifest.name, model.manifest.version
    for part in (name, version):
        if part in (".", "..") or "/" in part or "\\" in part:
            raise PackageError("validating", f"model name/version {part!r} cannot be a folder name")
    target = store / name / version
    if target.exists():
        try:
            existing = ModelRepository.load_folder(target)
        except ModelError:
            existing = None
        if existing is not None and existing.manifest.sha256 == model.manifest.sha256:
            return Installed(existing, False)
        if existing is not None:
            raise PackageError(
                "validating",
                f"{name}:{version} is already installed with a different model file; publish a new version",
            )
        shutil.rmtree(target)  # a broken leftover
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(model.folder), str(target))
    return Installed(ModelRepository.load_folder(target), True)


def fetch_package(
    url: str,
    store: Path,
    limits: PackageLimits,
    md5: str | None = None,
    sha256: str | None = None,
    on_step: Callable[[str], None] | None = None,
) -> Installed:
    """Download, verify, unpack, validate and install one package; `on_step(step)` before each step."""
    store.mkdir(parents=True, exist_ok=True)
    step = on_step or (lambda _step: None)
    with tempfile.TemporaryDirectory(prefix=".incoming-", dir=store) as scratch:
        scratch_path = Path(scratch)
        step("downloading")
        package = download(url, scratch_path / "package.zip", limits)
        step("verifying")
        verify(package, md5, sha256)
        unpacked = scratch_path / "unpacked"
        unpacked.mkdir()
        safe_unzip(package.path, unpacked, limits)
        package.path.unlink()
        model = validate(find_model_folder(unpacked))
        return install(model, store)
