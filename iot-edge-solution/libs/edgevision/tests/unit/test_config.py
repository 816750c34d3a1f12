"""Settings from the environment: accepted values, defaults, and errors that name the variable."""

from __future__ import annotations

import pytest

from edgevision.config import (
    SettingsError,
    VisionSettings,
    available_cpus,
    load_settings,
    parse_bool,
    resolve_threads,
)

ENV_NAMES = [
    "CAMERA_PATH",
    "USE_TENSOR_RT",
    "TENSORRT_FALLBACK",
    "MODEL_NAME",
    "MODEL_REPOSITORY",
    "MODEL_VERSION",
    "LOG_LEVEL",
    "INTRA_OP_THREADS",
    "LOOP_VIDEO",
    "VIDEO_REALTIME",
    "PROCESS_EVERY_FRAME",
    "FRAME_WATCHDOG_SECONDS",
    "ENGINE_CACHE_DIR",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with none of the module variables set."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("True", True),
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("False", False),
        ("false", False),
        ("FALSE", False),
        ("0", False),
        (" true ", True),
        (True, True),
        (0, False),
    ],
)
def test_bool_values_accepted(text: object, expected: bool) -> None:
    assert parse_bool(text) is expected


@pytest.mark.parametrize("text", ["yes", "no", "2", "", "on", "truthy", 5])
def test_bool_values_refused(text: object) -> None:
    with pytest.raises(ValueError, match="True or False"):
        parse_bool(text)


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAMERA_PATH", "video.mp4")
    settings = load_settings(VisionSettings)
    assert settings.camera_path == "video.mp4"
    assert settings.use_tensor_rt is False and settings.tensorrt_fallback is False
    assert settings.model_name == "efficientnet-lite0"
    assert settings.loop_video is True
    assert settings.log_level == "INFO"
    assert settings.resolved_threads() >= 1


def test_values_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("CAMERA_PATH", "/dev/video0")
    monkeypatch.setenv("USE_TENSOR_RT", "TRUE")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    monkeypatch.setenv("MODEL_REPOSITORY", str(tmp_path))
    monkeypatch.setenv("INTRA_OP_THREADS", "3")
    monkeypatch.setenv("LOOP_VIDEO", "0")
    settings = load_settings(VisionSettings)
    assert settings.use_tensor_rt is True
    assert settings.log_level == "DEBUG"
    assert settings.model_repository == tmp_path
    assert settings.resolved_threads() == 3
    assert settings.loop_video is False


def test_empty_values_mean_not_set(monkeypatch: pytest.MonkeyPatch) -> None:
    # `NAME=` lines in .env_template and manifests leave the default in force
    monkeypatch.setenv("CAMERA_PATH", "video.mp4")
    for name in ("MODEL_REPOSITORY", "MODEL_VERSION", "ENGINE_CACHE_DIR", "USE_TENSOR_RT", "LOG_LEVEL"):
        monkeypatch.setenv(name, "")
    settings = load_settings(VisionSettings)
    assert settings.model_repository is None and settings.model_version is None
    assert settings.engine_cache_dir is None and settings.use_tensor_rt is False and settings.log_level == "INFO"
    monkeypatch.setenv("CAMERA_PATH", "")
    with pytest.raises(SettingsError, match="CAMERA_PATH is required"):
        load_settings(VisionSettings)


@pytest.mark.parametrize(
    "env, expected_fragments",
    [
        ({}, ["CAMERA_PATH is required"]),
        ({"CAMERA_PATH": "   "}, ["CAMERA_PATH", "must not be empty"]),
        ({"CAMERA_PATH": "x", "USE_TENSOR_RT": "maybe"}, ["USE_TENSOR_RT='maybe'", "True or False", "1 or 0"]),
        ({"CAMERA_PATH": "x", "TENSORRT_FALLBACK": "yes"}, ["TENSORRT_FALLBACK", "True or False"]),
        ({"CAMERA_PATH": "x", "LOG_LEVEL": "loud"}, ["LOG_LEVEL", "DEBUG", "CRITICAL"]),
        ({"CAMERA_PATH": "x", "INTRA_OP_THREADS": "-1"}, ["INTRA_OP_THREADS", "greater than or equal to 0"]),
        ({"CAMERA_PATH": "x", "INTRA_OP_THREADS": "many"}, ["INTRA_OP_THREADS", "integer"]),
        ({"CAMERA_PATH": "x", "MODEL_REPOSITORY": "/no/such/folder"}, ["MODEL_REPOSITORY", "not a folder"]),
        ({"CAMERA_PATH": "x", "FRAME_WATCHDOG_SECONDS": "0"}, ["FRAME_WATCHDOG_SECONDS", "greater than 0"]),
    ],
)
def test_bad_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected_fragments: list[str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings(VisionSettings)
    for fragment in expected_fragments:
        assert fragment in str(caught.value)


def test_every_bad_variable_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USE_TENSOR_RT", "perhaps")
    monkeypatch.setenv("LOOP_VIDEO", "sometimes")
    with pytest.raises(SettingsError) as caught:
        load_settings(VisionSettings)
    message = str(caught.value)
    assert "CAMERA_PATH" in message and "USE_TENSOR_RT" in message and "LOOP_VIDEO" in message


def test_default_threads_are_every_available_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAMERA_PATH", "video.mp4")
    assert load_settings(VisionSettings).resolved_threads() == available_cpus()
    assert resolve_threads(0) == available_cpus() and resolve_threads(3) == 3
    with pytest.raises(ValueError, match="threads must be >= 0"):
        resolve_threads(-3)


@pytest.mark.parametrize(
    "env, halved",
    [
        ({"CAMERA_PATH": "video.mp4", "VIDEO_REALTIME": "False"}, True),  # every frame of a file, unpaced
        ({"CAMERAS": "a=one.mp4;b=two.avi", "VIDEO_REALTIME": "False"}, True),
        ({"CAMERA_PATH": "video.mp4", "VIDEO_REALTIME": "True"}, False),  # paced: the file's own frame rate
        ({"CAMERA_PATH": "video.mp4", "VIDEO_REALTIME": "False", "PROCESS_EVERY_FRAME": "False"}, False),
        ({"CAMERA_PATH": "video.mp4", "VIDEO_REALTIME": "False", "INTRA_OP_THREADS": "2"}, False),  # the user's
        ({"CAMERA_PATH": "/dev/video0", "VIDEO_REALTIME": "False"}, False),  # a live camera: one inference
        ({"CAMERA_PATH": "rtsp://10.0.0.5/stream", "VIDEO_REALTIME": "False"}, False),
        ({"CAMERAS": "a=one.mp4;b=/dev/video0", "VIDEO_REALTIME": "False"}, False),  # not every camera a file
    ],
)
def test_two_inferences_at_once_get_half_the_cpus_each(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], halved: bool
) -> None:
    """INTRA_OP_THREADS=0 on unpaced files, where the pipeline runs two inferences at once: half the CPUs each
    (at least one); anything else keeps every CPU (or the user's INTRA_OP_THREADS) for the one inference."""
    monkeypatch.delenv("CAMERAS", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(VisionSettings)
    expected = max(1, available_cpus() // 2) if halved else None
    assert settings.concurrent_engine_threads() == expected
    assert settings.resolved_threads() == (int(env.get("INTRA_OP_THREADS", "0")) or available_cpus())
