"""The bundled models and media are the files their manifests and NOTICE files say they are.

Every `models/<name>/<version>/model.json` names its model file with a SHA-256; each folder's NOTICE and
`media/NOTICE` end with `sha256  <hex>  <file>` and `size  <bytes>  <file>` lines (written by
tools/models/). These tests recompute them, so a file changed by hand, a broken Git LFS checkout or a
half-finished rebuild fails here. Standard library only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from edgevision.files import sha256_of


def find_solution_dir() -> Path:
    """The iot-edge-solution folder above this test file."""
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "iot-edge-solution"
        if (candidate / "models").is_dir():
            return candidate
    raise RuntimeError(f"no iot-edge-solution/models above {__file__}")


SOLUTION_DIR = find_solution_dir()
MODELS_DIR = SOLUTION_DIR / "models"
MEDIA_DIR = SOLUTION_DIR / "media"
MANIFESTS = sorted(MODELS_DIR.glob("*/*/model.json"))
NOTICE_LINE = re.compile(r"^(sha256|size)  (\S+)  (\S.*)$")

EXPECTED_MODELS = {"efficientnet-lite0", "nanodet-m-416", "ppocr-det"}
EXPECTED_MEDIA = {
    "vtest.avi",
    "imageTextN.png",
    "squirrel_cls.jpg",
    "dog.jpg",
    "chelsea.png",
    "coffee.png",
    "demo.mp4",
}


def parse_notice(path: Path) -> dict[str, dict[str, str]]:
    """{file: {"sha256": hex, "size": bytes}} from a NOTICE's machine-readable lines."""
    entries: dict[str, dict[str, str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = NOTICE_LINE.match(line)
        if match:
            kind, value, name = match.groups()
            assert kind not in entries.get(name, {}), f"{path}: {name} has two {kind} lines"
            entries.setdefault(name, {})[kind] = value
    return entries


def check_notice(folder: Path) -> dict[str, dict[str, str]]:
    """Checks a folder against its NOTICE: every file listed, sizes and hashes equal."""
    notice = folder / "NOTICE"
    assert notice.is_file(), f"{folder} has no NOTICE"
    entries = parse_notice(notice)
    on_disk = {p.name for p in folder.iterdir() if p.is_file() and p.name != "NOTICE"}
    assert set(entries) == on_disk, f"{notice} lists {sorted(entries)}, the folder holds {sorted(on_disk)}"
    for name, entry in entries.items():
        assert set(entry) == {"sha256", "size"}, f"{notice}: {name} needs one sha256 and one size line"
        path = folder / name
        assert path.stat().st_size == int(entry["size"]), f"{path}: size differs from {notice}"
        assert sha256_of(path) == entry["sha256"], f"{path}: SHA-256 differs from {notice}"
    return entries


def test_every_bundled_model_is_there() -> None:
    """The three bundled models have manifests."""
    assert {path.parent.parent.name for path in MANIFESTS} >= EXPECTED_MODELS


@pytest.mark.parametrize("manifest_path", MANIFESTS, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}")
def test_manifest_matches_its_files(manifest_path: Path) -> None:
    """model.json names its folder and version, and its model file's SHA-256 holds."""
    folder = manifest_path.parent
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    assert manifest["name"] == folder.parent.name
    assert manifest["version"] == folder.name
    model = folder / manifest["file"]
    assert model.is_file(), f"{model} is missing"
    assert re.fullmatch(r"[0-9a-f]{64}", manifest["sha256"])
    assert sha256_of(model) == manifest["sha256"], f"{model}: SHA-256 differs from model.json"
    if manifest["labels"] is not None:
        labels = (folder / manifest["labels"]).read_text(encoding="utf-8").splitlines()
        assert labels and all(label.strip() for label in labels)


@pytest.mark.parametrize("manifest_path", MANIFESTS, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}")
def test_model_notice_matches_its_files(manifest_path: Path) -> None:
    """The model folder's NOTICE lists every file with the right hash and size."""
    folder = manifest_path.parent
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    entries = check_notice(folder)
    assert entries[manifest["file"]]["sha256"] == manifest["sha256"]
    assert "model.json" in entries
    if manifest["labels"] is not None:
        assert manifest["labels"] in entries


@pytest.mark.parametrize(
    ("name", "label_count"), [("efficientnet-lite0", 1000), ("nanodet-m-416", 80), ("ppocr-det", None)]
)
def test_bundled_label_counts(name: str, label_count: int | None) -> None:
    """ImageNet has 1000 labels, COCO 80, text detection none."""
    manifest = json.loads((MODELS_DIR / name / "1" / "model.json").read_text(encoding="utf-8"))
    if label_count is None:
        assert manifest["labels"] is None
        return
    labels = (MODELS_DIR / name / "1" / manifest["labels"]).read_text(encoding="utf-8").splitlines()
    assert len(labels) == label_count


def test_nanodet_heads_cover_every_output_once() -> None:
    """Each NanoDet output belongs to exactly one head."""
    manifest = json.loads((MODELS_DIR / "nanodet-m-416" / "1" / "model.json").read_text(encoding="utf-8"))
    heads = manifest["postprocess"]["heads"]
    assert [head["stride"] for head in heads] == [8, 16, 32]
    named = [head[kind] for head in heads for kind in ("scores", "boxes")]
    assert sorted(named) == sorted(manifest["outputs"])


def test_media_notice_matches_the_media() -> None:
    """media/NOTICE lists every medium with the right hash and size."""
    entries = check_notice(MEDIA_DIR)
    assert set(entries) >= EXPECTED_MEDIA


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("sha256  " + "a" * 64 + "  model.onnx", {"model.onnx": {"sha256": "a" * 64}}),
        ("size  12  labels.txt", {"labels.txt": {"size": "12"}}),
        ("sha256 " + "a" * 64 + " model.onnx", {}),  # single spaces: prose, not an entry
        ("License: Apache-2.0", {}),
    ],
)
def test_parse_notice_lines(tmp_path: Path, line: str, expected: dict) -> None:
    """Only the two-space `sha256`/`size` lines are read from a NOTICE."""
    notice = tmp_path / "NOTICE"
    notice.write_text(f"Title\n=====\n\n{line}\n", encoding="utf-8")
    assert parse_notice(notice) == expected
