"""`make images-check`: build the amd64 CPU image of every module (Dockerfile and context from its module.json) and
the dev container's amd64 + nocuda flavour (from devcontainer.json and its compose file) WITHOUT a Docker daemon,
with buildah (vfs storage, chroot isolation, --pull=never on the stand-in bases of make-standin-base.sh), then run
each image as its own user (tools/images/probe.py inside it) and check what a device would hit:

- the user is not root and a `video`-group (root:video 0660) device node mapped in opens (the classifier and the
  dev container, whose users are in that group);
- HOME, the engine cache, the model store and the alert queue are writable;
- the classifier plays the demo video and answers /healthz and /score; authrequest and alert start and stop with a
  line naming what is missing; nothing on start says "warning" or shows a traceback;
- the installed distributions are those of the image's lock file (iot-edge-solution/requirements/<name>.txt);
- each module image is at most SIZE_BUDGET_MB above its base (the classifier's budget is its own, see README).

Prints a table (image, build seconds, size, size above base, what ran) and writes it with every detail to
.state/images-check/report.json. Exit status 1 when a check fails, 2 when buildah or the stand-ins are missing.
The host's CA bundle reaches RUN steps through bind mounts (pip.conf, npmrc) that are not part of any layer.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SOLUTION = ROOT / "iot-edge-solution"
LOCKS = SOLUTION / "requirements"
PROBE = Path(__file__).resolve().parent / "probe.py"
STATE = ROOT / ".state" / "images-check"
TAG_PREFIX = "localhost/edgevision-check"
MB = 1_000_000
# A module image may add at most this much to its base (authrequest, alert).
SIZE_BUDGET_MB = 100
# The classifier carries ONNX Runtime, OpenCV, NumPy and LiteRT: about 560 MB that no base image holds (README,
# "Image check"). Its budget keeps it from growing further; authrequest and alert keep the 100 MB one.
CLASSIFIER_BUDGET_MB = 600
# Distributions an image may hold beyond its lock: the base image's installer, and the project's own library.
NOT_LOCKED = {"pip", "setuptools", "wheel", "edgevision"}
MARKER = "PROBE_RESULT:"
# The folders (named by the image's environment) a module writes to at run time: volumes in createOptions.
WRITABLE = {
    "classifier": ("ENGINE_CACHE_DIR", "MODEL_STORE"),
    "alert": ("ALERT_QUEUE_DIR",),
    "authrequest": ("AUTHREQUEST_STATE_DIR",),
}


# What a terminal in the dev container needs before `make setup`: each must run as its user.
DEVCONTAINER_TOOLS = (
    ("python3", "-c", "import cv2, numpy, onnxruntime; print('cv2', cv2.__version__, 'ort', onnxruntime.__version__)"),
    ("node", "--version"),
    ("azurite", "--version"),
    ("hadolint", "--version"),
    ("pytest", "--version"),
    ("ffmpeg", "-version"),
    ("gst-inspect-1.0", "--version"),
    ("git", "--version"),
    ("make", "--version"),
    ("sudo", "-n", "true"),
)


class CheckError(Exception):
    """A prerequisite is missing: buildah, a stand-in base, the CA bundle."""


@dataclass
class Target:
    """One image to build and run."""

    name: str
    dockerfile: Path
    context: Path
    lock: Path
    expect: str  # serve | report | none
    device: bool
    budget_mb: float | None
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    writable_env: tuple[str, ...] = ()
    tools: tuple[tuple[str, ...], ...] = ()

    @property
    def tag(self) -> str:
        """Where the built image goes in buildah's storage."""
        return f"{TAG_PREFIX}/{self.name}:amd64"


def strip_jsonc(text: str) -> str:
    """JSON with comments and trailing commas (VS Code's format, devcontainer.json) to plain JSON; strings are left
    alone."""
    out, in_string, i = [], False, 0
    while i < len(text):
        char = text[i]
        if in_string:
            out.append(char)
            if char == "\\":
                out.append(text[i + 1])
                i += 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
            out.append(char)
        elif text.startswith("//", i):
            i = text.find("\n", i)
            if i < 0:
                break
            continue
        elif text.startswith("/*", i):
            i = text.index("*/", i) + 2
            continue
        else:
            out.append(char)
        i += 1
    return re.sub(r",(\s*[}\]])", r"\1", "".join(out))


def compose_default(value: str) -> str:
    """`${TARGETARCH:-amd64}` -> amd64 (the compose file's default, what a machine without .env builds)."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def module_targets() -> list[Target]:
    """The amd64 image of every module, as its module.json gives Dockerfile and build context."""
    targets = []
    for module_json in sorted(SOLUTION.glob("modules/*/module.json")):
        module_dir = module_json.parent
        image = json.loads(module_json.read_text(encoding="utf-8"))["image"]
        dockerfile = (module_dir / image["tag"]["platforms"]["amd64"]).resolve()
        context = (module_dir / image.get("contextPath", ".")).resolve()
        name = module_dir.name
        serves = name == "classifier"
        targets.append(
            Target(
                name=name,
                dockerfile=dockerfile,
                context=context,
                lock=LOCKS / f"{name}.txt",
                expect="serve" if serves else "report",
                device=serves,
                budget_mb=CLASSIFIER_BUDGET_MB if serves else SIZE_BUDGET_MB,
                writable_env=WRITABLE.get(name, ()),
            )
        )
    return targets


def devcontainer_target() -> Target:
    """The dev container's amd64 + nocuda flavour, as devcontainer.json -> docker-compose.yml build it."""
    import yaml  # pylint: disable=import-outside-toplevel  # pyyaml: requirements-dev.txt

    devcontainer_dir = ROOT / ".devcontainer"
    config = json.loads(strip_jsonc((devcontainer_dir / "devcontainer.json").read_text(encoding="utf-8")))
    compose_file = devcontainer_dir / config["dockerComposeFile"][0]
    build = yaml.safe_load(compose_file.read_text(encoding="utf-8"))["services"][config["service"]]["build"]
    context = (compose_file.parent / build["context"]).resolve()
    args = {k: compose_default(str(v)) for k, v in build.get("args", {}).items()}
    return Target(
        name="devcontainer",
        dockerfile=(context / build["dockerfile"]).resolve(),
        context=context,
        lock=LOCKS / "devcontainer.txt",
        expect="none",
        device=True,
        budget_mb=None,
        build_args=args,
        target=build.get("target"),
        tools=DEVCONTAINER_TOOLS,
    )


def buildah(*args: str, check: bool = True, capture: bool = True, **kwargs: Any) -> subprocess.CompletedProcess:
    """buildah with vfs storage and chroot isolation: no daemon, no fuse, no privileges beyond root's."""
    env = {**os.environ, "STORAGE_DRIVER": "vfs", "BUILDAH_ISOLATION": "chroot"}
    return subprocess.run(["buildah", *args], check=check, capture_output=capture, text=True, env=env, **kwargs)


def image_size(ref: str) -> int:
    """Bytes of the image's layers (uncompressed, as local storage keeps them)."""
    info = json.loads(buildah("inspect", "--type", "image", ref).stdout)
    manifest = json.loads(info["Manifest"])
    return sum(layer["size"] for layer in manifest["layers"])


def image_config(ref: str) -> dict[str, Any]:
    """The image's OCI config: Cmd, Entrypoint, WorkingDir, User, Env."""
    info = json.loads(buildah("inspect", "--type", "image", ref).stdout)
    return info["OCIv1"]["config"]


def _stages(target: Target) -> tuple[dict[str, str], dict[str, str], str]:
    """Stage name -> its base (ARGs resolved), stage name -> its instructions, and the stage the build ends in."""
    text = target.dockerfile.read_text(encoding="utf-8")
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.MULTILINE))
    args.update(target.build_args)
    bases: dict[str, str] = {}
    bodies: dict[str, str] = {}
    last = ""
    parts = re.split(r"^FROM\s+", text, flags=re.MULTILINE)[1:]
    for index, part in enumerate(parts):
        head, _, body = part.partition("\n")
        words = [w for w in head.split() if not w.startswith("--platform=")]
        name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else f"#{index}"
        bases[name] = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), words[0])
        bodies[name] = body
        last = name
    return bases, bodies, target.target or last


def external_bases(target: Target) -> list[str]:
    """The images from outside that building the target stage needs (its FROM chain and COPY --from stages);
    the other stages are skipped, as BuildKit and buildah skip them."""
    bases, bodies, start = _stages(target)
    needed, todo, external = set(), [start], []
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        if name not in bases:
            if name not in external:
                external.append(name)
            continue
        needed.add(name)
        todo.append(bases[name])
        todo += re.findall(r"--from=(\S+)", bodies[name])
    return external


def final_base(target: Target) -> str:
    """The external image the built stage starts from."""
    bases, _, current = _stages(target)
    seen = set()
    while current in bases and current not in seen:
        seen.add(current)
        current = bases[current]
    return current


def ca_mounts(workdir: Path) -> list[str]:
    """Bind mounts that let RUN steps trust the host's CA bundle (TLS to the registries may be re-signed by a local
    CA) without writing it into a layer: pip and npm read their config files from the mounted paths."""
    bundle = Path(os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt")
    if not bundle.is_file():
        return []
    pip_conf = workdir / "pip.conf"
    pip_conf.write_text("[global]\ncert = /etc/edgevision-build-ca.pem\n", encoding="utf-8")
    npmrc = workdir / "npmrc"
    npmrc.write_text("cafile=/etc/edgevision-build-ca.pem\n", encoding="utf-8")
    return [
        "--volume",
        f"{bundle}:/etc/edgevision-build-ca.pem:ro",
        "--volume",
        f"{pip_conf}:/etc/pip.conf:ro",
        "--volume",
        f"{npmrc}:/usr/local/etc/npmrc:ro",
    ]


def build(target: Target, workdir: Path, log: Path) -> float:
    """Build the image; its seconds. The log of the build goes to `log`."""
    for base in external_bases(target):
        if buildah("inspect", "--type", "image", base, check=False).returncode != 0:
            raise CheckError(f"base image {base} is not in buildah's storage: run tools/images/make-standin-base.sh")
    # Docker's image format, as `docker build` makes: it keeps SHELL (the dev container's bash -o pipefail).
    command = ["build", "--layers", "--format", "docker", "--pull=never", "--platform", "linux/amd64"]
    command += ["-f", str(target.dockerfile)]
    command += ["-t", target.tag, *ca_mounts(workdir)]
    for key, value in target.build_args.items():
        command += ["--build-arg", f"{key}={value}"]
    if target.target:
        command += ["--target", target.target]
    started = time.monotonic()
    with log.open("w", encoding="utf-8") as out:
        done = buildah(*command, str(target.context), check=False, capture=False, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        tail = "".join(log.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-25:])
        raise RuntimeError(f"{target.name}: build failed (full log: {log}):\n{tail}")
    return seconds


DEVICE_DIR = "/run/edgevision-dev"


def video_node(workdir: Path) -> Path:
    """A character device node root:video 0660 (the kernel's /dev/null numbers, so opening it is harmless), as
    /dev/video0 of a camera appears on a device."""
    node = workdir / "dev" / "video0"
    node.parent.mkdir(exist_ok=True)
    if not node.exists():
        subprocess.run(["mknod", "-m", "0660", str(node), "c", "1", "3"], check=True)
        shutil.chown(node, "root", "video")
        node.chmod(0o660)
    return node


def run_probe(target: Target, workdir: Path) -> dict[str, Any]:
    """Run probe.py in a container of the image, as the image's USER, in a network namespace of its own (ports do
    not collide with anything on the host). Where a device node is mapped in, a second run as `uid:gid` (a USER
    that names its group) is the control: the node must NOT open then, or the check could not see the defect."""
    config = image_config(target.tag)
    spec = {
        "command": (config.get("Entrypoint") or []) + (config.get("Cmd") or []),
        "workdir": config.get("WorkingDir") or "/",
        "device": f"{DEVICE_DIR}/video0" if target.device else None,
        "writable_env": list(target.writable_env),
        "expect": target.expect,
        # the console prints a status line every 30 s by default: a line per frame shows the video going through
        "env": {"LOG_EVERY_FRAME": "True"} if target.expect == "serve" else {},
        "sample": "/app/media/dog.jpg",
        "timeout": 150,
        "tools": [list(argv) for argv in target.tools],
    }
    report = probe_container(target, workdir, spec)
    if target.device:
        who = report["identity"]
        control = {**spec, "expect": "none", "tools": [], "writable_env": []}
        report["control_user_with_group"] = probe_container(
            target, workdir, control, user=f"{who['uid']}:{who['gid']}"
        )["device"]
    return report


def probe_container(target: Target, workdir: Path, spec: dict[str, Any], user: str | None = None) -> dict[str, Any]:
    """One run of probe.py in a fresh container of the image; its report."""
    name = f"edgevision-check-{target.name}"
    buildah("rm", name, check=False)
    buildah("from", "--pull=never", "--name", name, target.tag)
    run = ["buildah", "run", "--volume", f"{PROBE}:/run/edgevision-probe.py:ro"]
    if user:
        run += ["--user", user]
    if target.device:
        # buildah 1.28 has no `run --device`: the node is bound in with its folder (a volume onto /dev is hidden).
        run += ["--volume", f"{video_node(workdir).parent}:{DEVICE_DIR}"]
    python = "python3" if target.name == "devcontainer" else "python"
    run += [name, "--", python, "/run/edgevision-probe.py", json.dumps(spec)]
    script = 'ip link set lo up && exec "$@"'
    env = {**os.environ, "STORAGE_DRIVER": "vfs", "BUILDAH_ISOLATION": "chroot"}
    try:
        done = subprocess.run(
            ["unshare", "--net", "--", "sh", "-c", script, "sh", *run],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )
    finally:
        buildah("rm", name, check=False)
    for line in done.stdout.splitlines():
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER) :])
    raise RuntimeError(f"{target.name}: the probe gave no result (exit {done.returncode}):\n{done.stderr[-2000:]}")


def read_lock(path: Path, python: str = "3.11") -> dict[str, str]:
    """name -> version of a uv/pip-compile lock file, for Linux x86_64 and the given Python (markers evaluated)."""
    pins: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$", line)
        if not match:
            continue
        name, version, marker = match.groups()
        if marker and not marker_holds(marker, python):
            continue
        pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def marker_holds(marker: str, python: str) -> bool:
    """Evaluate a requirement marker for linux/x86_64 and `python` (the few forms uv writes)."""
    major, minor = (int(v) for v in python.split(".")[:2])
    values = {
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "os_name": "posix",
    }

    def compare(match: re.Match[str]) -> str:
        name, op, value = match.group(1), match.group(2), match.group(3)
        if name in ("python_version", "python_full_version"):
            have = (major, minor)
            want = tuple(int(v) for v in value.split(".")[:2])
            result = {
                "<": have < want,
                "<=": have <= want,
                ">": have > want,
                ">=": have >= want,
                "==": have == want,
                "!=": have != want,
            }[op]
        else:
            result = (values.get(name) == value) == (op == "==")
        return " True " if result else " False "

    expression = re.sub(r"(\w+)\s*(<=|>=|==|!=|<|>)\s*'([^']*)'", compare, marker)
    if not re.fullmatch(r"[\sTrueFalsnd()o]*", expression):
        raise ValueError(f"cannot evaluate marker {marker!r}")
    return bool(eval(expression))  # pylint: disable=eval-used  # only True/False/and/or/() remain, checked above


def lock_differences(installed: dict[str, str], lock: dict[str, str], extra_allowed: set[str]) -> list[str]:
    """What differs between an image's installed distributions and its lock; empty when they agree."""
    problems = []
    for name, version in sorted(lock.items()):
        if name not in installed:
            problems.append(f"{name}=={version} is locked but not installed")
        elif installed[name] != version:
            problems.append(f"{name} is {installed[name]}, the lock says {version}")
    for name in sorted(set(installed) - set(lock) - extra_allowed):
        problems.append(f"{name}=={installed[name]} is installed but not in the lock")
    return problems


def judge(target: Target, probe: dict[str, Any], above_base_mb: float) -> tuple[list[str], str]:
    """The failed checks, and a one-line account of what ran."""
    failures = []
    who = probe["identity"]
    if who["uid"] == 0:
        failures.append("runs as root")
    if probe["home_writable"] != "ok":
        failures.append(f"HOME {who['home']} is not writable: {probe['home_writable']}")
    for name, state in probe["writable"].items():
        if state != "ok":
            failures.append(f"{name} is not writable: {state}")
    if target.device and probe["device"] != "ok":
        failures.append(f"the video-group device node does not open as {who['user']}: {probe['device']}")
    if target.device and probe.get("control_user_with_group") == "ok":
        failures.append("control failed: the device node opened even as uid:gid (no supplementary groups)")
    installed = probe["distributions"]
    # Python 3.11: the python:3.11 base (and its stand-in) of every image checked here.
    failures += lock_differences(installed, read_lock(target.lock, "3.11"), NOT_LOCKED)
    if target.budget_mb is not None and above_base_mb > target.budget_mb:
        failures.append(f"{above_base_mb:.0f} MB above its base, over the budget of {target.budget_mb} MB")
    ran = f"as {who['user']} ({who['uid']}; groups {','.join(who['groups'])})"
    if target.device:
        ran += f"; video node opens ({who['uid']}:{who['gid']}: {probe.get('control_user_with_group')})"
    tools = probe.get("tools", {})
    failures += [f"`{argv}` failed: {state}" for argv, state in tools.items() if not state.startswith("ok")]
    if tools:
        ran += "; " + ", ".join(argv.split()[0] for argv, state in tools.items() if state.startswith("ok")) + " run"
    command = probe.get("command")
    if command is not None:
        command_failures, command_ran = judge_command(target, command)
        failures += command_failures
        ran += command_ran
    return failures, ran


def shorten(line: str) -> str:
    """A log line without its timestamp, cut to fit a table cell."""
    line = re.sub(r"^\d{4}-\d\d-\d\d [\d:,]+ ", "", line)
    return line if len(line) <= 110 else line[:107] + "..."


def judge_command(target: Target, command: dict[str, Any]) -> tuple[list[str], str]:
    """The failed checks of the image's command, and what it did."""
    failures = []
    if command.get("bad_lines"):
        failures.append("warnings or errors on start: " + " | ".join(command["bad_lines"][:3]))
    if target.expect == "serve":
        score = command.get("score")
        label = score.get("label") if isinstance(score, dict) else score
        if command.get("healthz") != 200:
            failures.append(f"/healthz answered {command.get('healthz')}")
        if command.get("score_status") != 200:
            failures.append(f"/score answered {command.get('score_status')}: {score}")
        if not re.search(r"frame\s+\d+ \|", command["output_tail"]):
            failures.append("no frame of the demo video was reported")
        if command.get("exit_code") != 0:
            failures.append(f"exit {command.get('exit_code')} after SIGTERM")
        return (
            failures,
            f"; demo video, /healthz {command.get('healthz')}, /score {command.get('score_status')} ({label})",
        )
    lines = [ln for ln in command["output_tail"].splitlines() if ln.strip()]
    reports = [ln for ln in lines if re.search(r"not set|is required", ln)]
    said = reports[0] if reports else (lines[-1] if lines else "(nothing)")
    if command.get("timed_out") or command.get("exit_code") not in (0, 2) or not reports:
        failures.append(f"expected a line naming what is missing, then exit 0 or 2: {command}")
    return failures, f"; exit {command.get('exit_code')}: {shorten(said)}"


def table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of the results (the README keeps one)."""
    lines = [
        "| image | build s | size MB | above base MB | what ran |",
        "|---|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['image']} | {row['build_seconds']:.0f} | {row['size_mb']:.0f} | {row['above_base_mb']:.0f} "
            f"| {row['ran']}{'' if row['ok'] else ' — FAILED: ' + '; '.join(row['failures'])} |"
        )
    return "\n".join(lines)


def check_target(target: Target, workdir: Path, logs: Path) -> dict[str, Any]:
    """Build, measure and run one image: its row of the table (failures included)."""
    print(f"== {target.name}: building {target.dockerfile.relative_to(ROOT)}", flush=True)
    seconds = build(target, workdir, logs / f"{target.name}.build.log")
    size = image_size(target.tag)
    above_base = (size - image_size(final_base(target))) / MB
    print(f"== {target.name}: built in {seconds:.0f} s, {size / MB:.0f} MB; running it", flush=True)
    probe = run_probe(target, workdir)
    failures, ran = judge(target, probe, above_base)
    for failure in failures:
        print(f"   FAILED {target.name}: {failure}", flush=True)
    return {
        "image": target.name,
        "dockerfile": str(target.dockerfile.relative_to(ROOT)),
        "build_seconds": seconds,
        "size_mb": size / MB,
        "above_base_mb": above_base,
        "ran": ran,
        "ok": not failures,
        "failures": failures,
        "probe": probe,
    }


def main(argv: list[str] | None = None) -> int:
    """Check every image; 0 when all pass, 1 when a check fails, 2 when a prerequisite is missing."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--only", nargs="*", help="image names to check (default: every module and devcontainer)")
    parser.add_argument("--no-devcontainer", action="store_true", help="skip the dev container")
    parser.add_argument("--report", type=Path, default=STATE / "report.json")
    args = parser.parse_args(argv)

    if shutil.which("buildah") is None:
        print(
            "images-check: buildah is not installed (Debian/Ubuntu: apt-get install buildah debootstrap uidmap)",
            file=sys.stderr,
        )
        return 2
    targets = module_targets()
    if not args.no_devcontainer:
        targets.append(devcontainer_target())
    if args.only:
        targets = [t for t in targets if t.name in args.only]
    args.report.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="images-check-") as tmp:
        workdir = Path(tmp)
        for target in targets:
            try:
                rows.append(check_target(target, workdir, args.report.parent))
            except CheckError as e:
                print(f"images-check: {e}", file=sys.stderr)
                return 2
    args.report.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    print(table(rows))
    return 0 if all(row["ok"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
