"""Shape ranges for backends that build for shapes (TensorRT), from every bundled model's real manifest and ONNX
graph, run through the TensorRT backend's own profile code (`optimization_profiles`, which needs no GPU).

The graph inputs are read here with ONNX Runtime's metadata, as TensorRT's parser would see them (a symbolic
axis is -1), independently of the library's reader. The shapes the real pre-processing makes from real photos
and video frames must fall inside the profile: that is what TensorRT accepts at `set_input_shape`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from edgevision.engines.base import EngineLoadError
from edgevision.engines.onnx_inputs import onnx_input_shapes
from edgevision.engines.tensorrt_engine import optimization_profiles
from edgevision.models import LoadedModel, ModelRepository
from edgevision.tasks.preprocess import Preprocessor
from edgevision.vision import build_task, engine_config_for, model_input_shape

MODELS = Path(__file__).resolve().parents[4] / "models"
# The ONNX models: TensorRT builds from ONNX only (TensorFlow Lite models run on LiteRT, which checks its own shapes).
BUNDLED = sorted(
    (p.parent.parent.name, p.parent.name)
    for p in MODELS.glob("*/*/model.json")
    if json.loads(p.read_text(encoding="utf-8"))["file"].endswith(".onnx")
)
PHOTOS = ("chelsea.png", "coffee.png", "dog.jpg", "imageTextN.png", "squirrel_cls.jpg")


def graph_inputs(path: Path) -> dict[str, tuple[int, ...]]:
    """The ONNX graph's inputs as TensorRT's parser declares them: -1 for every axis not fixed to a number."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return {i.name: tuple(d if isinstance(d, int) else -1 for d in i.shape) for i in session.get_inputs()}


def load(name: str, version: str, root: Path = MODELS) -> LoadedModel:
    """A model from a repository, checksum verified."""
    return ModelRepository(root).load(name, version)


def real_frames(media) -> list[np.ndarray]:
    """Every bundled photo, and a frame of the pedestrian video (768x576) in landscape and portrait."""
    frames = [media.image(name) for name in PHOTOS]
    capture = cv2.VideoCapture(str(media.path("vtest.avi")))
    ok, frame = capture.read()
    capture.release()
    assert ok, "vtest.avi gave no frame"
    return [*frames, frame, np.ascontiguousarray(frame.transpose(1, 0, 2))]


def _shapes_of(config) -> dict:
    """The two shape settings of an EngineConfig, as optimization_profiles takes them."""
    return {"input_shapes": config.input_shapes, "dynamic_shapes": config.dynamic_shapes}


def test_every_bundled_model_is_covered() -> None:
    """The list below is the bundled models, so a new one gets checked too."""
    assert {name for name, _ in BUNDLED} >= {"efficientnet-lite0", "nanodet-m-416", "ppocr-det"}


@pytest.mark.parametrize(("name", "version"), BUNDLED, ids=[f"{n}/{v}" for n, v in BUNDLED])
def test_bundled_model_profiles_build_and_cover_real_frames(name: str, version: str, media) -> None:
    """engine_config_for + optimization_profiles accept every bundled model, vary only the axes its graph
    leaves open, and cover the tensors its pre-processing makes from real photos and video frames."""
    model = load(name, version)
    network = graph_inputs(model.model_path)
    profiles = optimization_profiles(network, **_shapes_of(engine_config_for(model, threads=1)))
    graph_shape = network[model.manifest.input.name]
    assert set(profiles) == {n for n, s in network.items() if -1 in s}
    low, opt, high = profiles.get(model.manifest.input.name, (graph_shape,) * 3)
    for axis, size in enumerate(graph_shape):
        if size >= 0:  # fixed in the graph: never varied, whatever model.json says
            assert low[axis] == opt[axis] == high[axis] == size, f"axis {axis} of {low}, {opt}, {high}"
    preprocessor = Preprocessor(model.manifest.preprocess, model.manifest.input)
    for frame in real_frames(media):
        shape = preprocessor(frame)[0].shape
        assert len(shape) == len(low)
        assert all(a <= s <= b for a, s, b in zip(low, shape, high)), f"{shape} outside {low}..{high}"


@pytest.mark.parametrize(
    ("name", "expected_shape", "expected_range"),
    [
        # The manifest says [-1, 3, 224, 224]; the graph fixes 224 x 224 and leaves only the batch open.
        ("efficientnet-lite0", (-1, 3, 224, 224), ((1, 3, 224, 224),) * 3),
        ("nanodet-m-416", (1, 3, 416, 416), None),
        # Both leave batch, height and width open: sides vary from 32 to 2048, tuned for 736.
        ("ppocr-det", (-1, 3, -1, -1), ((1, 3, 32, 32), (1, 3, 736, 736), (1, 3, 2048, 2048))),
    ],
)
def test_engine_config_of_each_bundled_model(
    name: str, expected_shape: tuple[int, ...], expected_range: tuple | None
) -> None:
    """What engine_config_for asks of a backend for each bundled model."""
    model = load(name, "1")
    config = engine_config_for(model, threads=2)
    input_name = model.manifest.input.name
    assert config.input_shapes == {input_name: expected_shape}
    assert config.dynamic_shapes == ({input_name: expected_range} if expected_range else {})
    assert config.output_names == tuple(model.manifest.outputs) and config.intra_op_threads == 2


@pytest.mark.parametrize(("name", "version"), BUNDLED, ids=[f"{n}/{v}" for n, v in BUNDLED])
def test_onnx_and_onnxruntime_readers_agree(name: str, version: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With or without the `onnx` package, the library reads the same input shapes, equal to the graph's."""
    path = load(name, version).model_path
    expected = graph_inputs(path)
    pytest.importorskip("onnx", reason="the onnx reader needs the onnx package (a dev dependency)")
    with_onnx = onnx_input_shapes(path)
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now fails: the ONNX Runtime reader runs
    with_onnxruntime = onnx_input_shapes(path)
    assert with_onnx == with_onnxruntime == expected


@pytest.mark.parametrize("reader", ["onnx", "onnxruntime"])
def test_a_file_that_is_not_onnx_is_a_load_error(tmp_path: Path, reader: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bytes that are not an ONNX model: EngineLoadError naming the file, from either reader."""
    if reader == "onnx":
        pytest.importorskip("onnx", reason="the onnx reader needs the onnx package (a dev dependency)")
    else:
        monkeypatch.setitem(sys.modules, "onnx", None)
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x08\x07 not a model")
    with pytest.raises(EngineLoadError, match="model.onnx"):
        onnx_input_shapes(bad)
    with pytest.raises(EngineLoadError, match="not found"):
        onnx_input_shapes(tmp_path / "absent.onnx")


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"name": "images"}, "has no input 'images'"),
        ({"shape": [-1, 3, 224]}, "input shape must have 4 axes"),
        ({"shape": [-1, 3, 256, 256]}, "does not fit the ONNX graph's \\[-1, 3, 224, 224\\] at axis 2"),
        ({"shape": [-1, 1, 224, 224]}, "at axis 1"),
    ],
    ids=["wrong-name", "wrong-rank", "other-size", "other-channels"],
)
def test_manifest_that_disagrees_with_the_graph_is_refused(model_copy, change: dict, error: str) -> None:
    """A model.json input that the ONNX graph contradicts fails with both shapes named, before any engine."""
    folder = model_copy("efficientnet-lite0")
    manifest_path = folder / "model.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["input"].update(change)
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(Exception, match=error) as raised:
        model_input_shape(load("efficientnet-lite0", "1", folder.parent.parent))
    if "axes" not in error:  # the rank rule belongs to the manifest schema, the others to the graph check
        assert isinstance(raised.value, EngineLoadError)


def test_manifest_size_pins_an_axis_the_graph_leaves_open(model_copy) -> None:
    """A size in model.json over an open graph axis is kept: ppocr-det with a fixed 640 x 640 input is static
    apart from its batch axis, which is pinned to 1."""
    folder = model_copy("ppocr-det")
    manifest_path = folder / "model.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["input"]["shape"] = [-1, 3, 640, 640]
    manifest_path.write_text(json.dumps(manifest))
    model = load("ppocr-det", "1", folder.parent.parent)
    config = engine_config_for(model, threads=1)
    assert config.input_shapes == {"x": (-1, 3, 640, 640)}
    assert config.dynamic_shapes == {"x": ((1, 3, 640, 640),) * 3}
    profiles = optimization_profiles(graph_inputs(model.model_path), config.input_shapes, config.dynamic_shapes)
    assert profiles == {"x": ((1, 3, 640, 640),) * 3}


def test_built_task_says_which_backend_runs_it() -> None:
    """build_task's task names the backend actually running the model, for the module to report."""
    task = build_task(load("efficientnet-lite0", "1"), "onnxruntime", threads=1)
    try:
        assert task.backend == "onnxruntime"
        facts = task.engine.describe()
        assert facts["backend"] == "onnxruntime" and facts["device"] == "CPU"
        assert facts["onnxruntime"] == ort.__version__
    finally:
        task.engine.close()
