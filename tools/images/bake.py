"""`make images [PLATFORMS=linux/amd64,linux/arm64] [PUSH=1]`: every module image for every platform its
module.json lists, and the dev container flavours, with `docker buildx bake`. The bake file is generated from the
module.json files on every run (never kept by hand), and each image is tagged exactly as iotedgedev and the VS Code
IoT Edge extension tag it, so the manifests `make genconfig` expands point at what was built:

    <repository, ${VAR}s expanded, lower case>:<version>[-<CONTAINER_TAG>]-<module.json platform>
    e.g. localhost:5000/classifier:0.1.0-arm64v8.debug

Variables (CONTAINER_REGISTRY_SERVER, CONTAINER_TAG) come from the environment, then .env, then .env_template, as
for iotedgedev. Usage:
    python tools/images/bake.py [--platforms linux/amd64,linux/arm64] [--push] [--print] [--no-devcontainer]
--print writes the bake file to stdout and needs no Docker. Exit status 2 when docker or buildx is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SOLUTION = ROOT / "iot-edge-solution"
# module.json platform -> the Docker platform it is built for.
DOCKER_PLATFORM = {"amd64": "linux/amd64", "arm64v8": "linux/arm64"}
# The dev container flavours (Dockerfile stage chosen by TARGETARCH x CUDA_SUPPORT), tagged as
# .devcontainer/docker-compose.yml names its image.
DEVCONTAINER_FLAVOURS = (("amd64", "nocuda"), ("amd64", "cuda"), ("arm64", "nocuda"), ("arm64", "cuda"))


def read_dotenv() -> dict[str, str]:
    """KEY=value lines of .env (or .env_template when there is no .env yet)."""
    path = ROOT / ".env"
    if not path.is_file():
        path = ROOT / ".env_template"
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\s*([A-Za-z_]\w*)\s*=\s*(.*?)\s*$", line)
        if match:
            values[match.group(1)] = match.group(2).strip("\"'")
    return values


def expand(text: str, variables: dict[str, str]) -> str:
    """${VAR} from `variables`; an unset variable is an error naming it."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if not variables.get(name):
            raise SystemExit(f"images: {name} is not set (in the environment, .env or .env_template)")
        return variables[name]

    return re.sub(r"\$\{(\w+)\}", value, text)


def docker_platform(module_platform: str) -> str:
    """`arm64v8.debug` -> linux/arm64; `amd64.gpu` -> linux/amd64."""
    arch = module_platform.split(".", 1)[0]
    if arch not in DOCKER_PLATFORM:
        raise ValueError(f"unknown module.json platform {module_platform!r}")
    return DOCKER_PLATFORM[arch]


def module_tag(module_json: dict[str, Any], module_platform: str, variables: dict[str, str]) -> str:
    """The tag iotedgedev gives this module's image for this platform."""
    image = module_json["image"]
    container_tag = variables.get("CONTAINER_TAG", "")
    suffix = f"-{container_tag}" if container_tag else ""
    repository = expand(image["repository"], variables).lower()
    return f"{repository}:{image['tag']['version']}{suffix}-{module_platform}"


def bake_file(platforms: set[str], variables: dict[str, str], devcontainer: bool = True) -> dict[str, Any]:
    """The bake definition (JSON form) for every module platform, and dev container flavour, on `platforms`."""
    targets: dict[str, Any] = {}
    for path in sorted(SOLUTION.glob("modules/*/module.json")):
        module = json.loads(path.read_text(encoding="utf-8"))
        context = (path.parent / module["image"].get("contextPath", ".")).resolve()
        for module_platform, dockerfile in module["image"]["tag"]["platforms"].items():
            platform = docker_platform(module_platform)
            if platform not in platforms:
                continue
            name = f"{path.parent.name}-{module_platform.replace('.', '-')}"
            targets[name] = {
                "context": os.path.relpath(context, ROOT),
                "dockerfile": os.path.relpath((path.parent / dockerfile).resolve(), context),
                "platforms": [platform],
                "tags": [module_tag(module, module_platform, variables)],
                "args": {},
            }
            options = module["image"].get("buildOptions") or []
            if options:
                targets[name]["args"] = _build_args(options)
    if devcontainer:
        for arch, cuda in DEVCONTAINER_FLAVOURS:
            if f"linux/{arch}" not in platforms:
                continue
            targets[f"devcontainer-{arch}-{cuda}"] = {
                "context": ".",
                "dockerfile": ".devcontainer/Dockerfile",
                "target": "base",
                "platforms": [f"linux/{arch}"],
                "tags": [f"iot-edge-vision-devcontainer:{arch}-{cuda}"],
                "args": {"TARGETARCH": arch, "CUDA_SUPPORT": cuda},
            }
    return {"group": {"default": {"targets": sorted(targets)}}, "target": targets}


def _build_args(options: list[str]) -> dict[str, str]:
    """module.json buildOptions `--build-arg K=V` (the only kind this repository uses) as bake args."""
    args = {}
    words = " ".join(options).split()
    for i, word in enumerate(words):
        if word == "--build-arg" and i + 1 < len(words):
            key, _, value = words[i + 1].partition("=")
            args[key] = value
        elif word.startswith("--build-arg="):
            key, _, value = word[len("--build-arg=") :].partition("=")
            args[key] = value
    return args


def docker_problem() -> str | None:
    """Why `docker buildx bake` cannot run here, or None."""
    if shutil.which("docker") is None:
        return "docker is not installed (or not on PATH): install Docker Engine or Docker Desktop"
    probe = subprocess.run(["docker", "buildx", "version"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return "docker buildx is missing: install the buildx plugin (Debian/Ubuntu: docker-buildx-plugin)"
    return None


def main(argv: list[str] | None = None) -> int:
    """Generate the bake file and run `docker buildx bake` (or only print it)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--platforms", default="linux/amd64,linux/arm64", help="comma-separated Docker platforms")
    parser.add_argument("--push", action="store_true", help="push every image to its registry")
    parser.add_argument("--print", action="store_true", help="print the bake file and stop (no Docker needed)")
    parser.add_argument("--no-devcontainer", action="store_true", help="modules only")
    args = parser.parse_args(argv)
    platforms = {p.strip() for p in args.platforms.split(",") if p.strip()}
    unknown = platforms - set(DOCKER_PLATFORM.values())
    if unknown:
        print(
            f"images: unknown platform(s) {', '.join(sorted(unknown))}; use linux/amd64 and/or linux/arm64",
            file=sys.stderr,
        )
        return 2
    variables = {**read_dotenv(), **os.environ}
    bake = bake_file(platforms, variables, devcontainer=not args.no_devcontainer)
    if args.print:
        print(json.dumps(bake, indent=2))
        return 0
    problem = docker_problem()
    if problem:
        print(
            f"images: {problem}. `make images-check` builds the amd64 images without Docker (buildah).", file=sys.stderr
        )
        return 2
    state = ROOT / ".state" / "images"
    state.mkdir(parents=True, exist_ok=True)
    bake_path = state / "docker-bake.json"
    bake_path.write_text(json.dumps(bake, indent=2), encoding="utf-8")
    command = ["docker", "buildx", "bake", "-f", str(bake_path)]
    if args.push:
        command.append("--push")
    elif len(platforms) == 1:
        command.append("--load")  # one platform: into the local engine, where `docker run` finds it
    else:
        print(
            "images: several platforms without PUSH=1 stay in buildx's cache (a local engine holds one platform"
            " per tag); add PUSH=1 to push them, or choose one platform",
            file=sys.stderr,
        )
    print("+ " + " ".join(command), flush=True)
    return subprocess.run(command, cwd=ROOT, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
