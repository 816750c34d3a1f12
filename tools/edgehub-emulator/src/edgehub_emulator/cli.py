"""`edgehub-emulator`: start the hub, run a manifest's modules, and talk to the hub as the service does."""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from edgehub_emulator.config import DEFAULT_STATE_DIR, STATE_DIR_ENV, EmulatorConfig
from edgehub_emulator.errors import EmulatorError
from edgehub_emulator.identity import SERVICE_POLICY, generate_sas, service_key

if TYPE_CHECKING:
    from edgehub_emulator.emulator import EmulatorThread
    from edgehub_emulator.manifest import Manifest

logger = logging.getLogger(__name__)
EXIT_METHOD_FAILED = 1


def _json_arg(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        raise EmulatorError(f"{what} is not valid JSON: {e}") from e


def _config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    base = EmulatorConfig.from_state_dir(args.state)
    overrides = {
        "hostname": args.hostname,
        "gateway_hostname": args.gateway_hostname,
        "device_id": args.device_id,
        "service_port": args.service_port,
        "workload_port": args.workload_port,
        "max_message_bytes": args.max_message_bytes,
        "upstream_max_messages": args.upstream_max_messages,
        "upstream_max_age_secs": args.upstream_max_age,
        "seed": args.seed,
    }
    values = {**base.__dict__, **{k: v for k, v in overrides.items() if v is not None}}
    if args.module_method_port is not None:
        values["module_method_port"] = args.module_method_port or None
    if args.cert_name:
        values["extra_cert_names"] = tuple(args.cert_name)
    if args.bind:
        values["bind_hosts"] = tuple(args.bind)
    return EmulatorConfig(**values)


def _stop_on_signals(stop: threading.Event) -> threading.Event:
    """SIGTERM and SIGINT (Ctrl-C) set stop: the main loop then shuts down in order and exits with 0."""

    def handler(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def _start_hub(
    config: EmulatorConfig, manifest: Manifest | None, fleet: dict[str, dict[str, Any]] | None = None
) -> EmulatorThread:
    """Start the hub's servers; print where the service API is and the CA (the 'ready' lines). Keys are never
    printed here: `edgehub-emulator env MODULE` gives connection strings to whoever asks for them."""
    from edgehub_emulator.emulator import EmulatorThread  # pylint: disable=import-outside-toplevel

    hub = EmulatorThread(config, manifest, fleet).start()
    logger.info("hub %s, device %s, state in %s", config.hostname, config.device_id, config.state_dir.resolve())
    print(f"SERVICE_API=https://{config.hostname}:{config.service_port}", flush=True)
    print(f"REQUESTS_CA_BUNDLE={hub.ca_cert.resolve()}", flush=True)
    return hub


def cmd_start(args: argparse.Namespace) -> int:
    """Run the hub until Ctrl-C / SIGTERM."""
    # pylint: disable=import-outside-toplevel
    from edgehub_emulator.agent import find_env_file, read_env_file
    from edgehub_emulator.manifest import load_manifest

    config = _config_from_args(args)
    manifest = None
    if args.manifest:
        # $VAR placeholders expand from the nearest .env and this shell, as under `up` and genconfig.
        env_file = find_env_file(Path(args.manifest))
        variables = {**os.environ, **(read_env_file(env_file) if env_file else {})}
        manifest = load_manifest(args.manifest, variables)
    stop = _stop_on_signals(threading.Event())
    hub = _start_hub(config, manifest)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        hub.stop()
    return 0


def cmd_up(args: argparse.Namespace) -> int:  # pylint: disable=too-many-locals,too-many-branches  # one fleet's set-up
    """Run the hub and each device's modules until Ctrl-C / SIGTERM; then stop the modules, the hub."""
    # pylint: disable=import-outside-toplevel
    import dataclasses

    from edgehub_emulator.agent import LocalEdgeAgent, find_env_file, hub_caller, read_env_file
    from edgehub_emulator.fleet import (
        load_fleet,
        local_ports,
        parse_device_paths,
        port_environment,
        state_environment,
    )
    from edgehub_emulator.manifest import load_manifest

    config = _config_from_args(args)
    fleet = load_fleet(args.device, args.fleet)
    device_paths = parse_device_paths(args.device_path)
    device_state = Path(args.device_state) if args.device_state else None
    if device_paths and device_state is None:
        raise EmulatorError("--device-path needs --device-state (the folder that holds each device's state)")
    if fleet and args.device_id is None:
        config = dataclasses.replace(config, device_id=fleet[0].device_id)
    manifest_path = Path(args.manifest)
    env_file = Path(args.env_file) if args.env_file else find_env_file(manifest_path)
    if args.env_file and not env_file.is_file():
        raise EmulatorError(f"--env-file {env_file} does not exist")
    if env_file is None:
        env_file = manifest_path.parent / ".env"
        logger.warning(
            "no .env or .env_template found above %s; $VARIABLES in the manifest stay as written", manifest_path
        )
    else:
        logger.info("module settings from %s", env_file)
    # Placeholders expand as the IoT Edge tooling expands them when it generates deployment.json.
    manifest = load_manifest(manifest_path, {**os.environ, **read_env_file(env_file)})
    stop = _stop_on_signals(threading.Event())
    hub = _start_hub(config, manifest, {d.device_id: d.tags for d in fleet})
    on_hub = hub_caller(hub.loop)
    devices = fleet or load_fleet([config.device_id], None)
    agents = []
    for device in devices:
        index = device.index

        def overrides(spec: Any, index: int = index, device_id: str = device.device_id) -> dict[str, str]:
            return {
                **port_environment(spec, index, args.port_step),
                **state_environment(spec, device_id, device_state, device_paths),
            }

        agents.append(
            LocalEdgeAgent(
                manifest,
                dataclasses.replace(config, device_id=device.device_id),
                hub.emulator.store,
                env_file,
                stop_event=stop,
                on_hub=on_hub,
                label=device.device_id if len(devices) > 1 else "",
                backoff_unit=args.backoff_unit,
                env_overrides=overrides,
            )
        )
    for device, agent in zip(devices, agents):
        served = {
            name: local_ports(module.spec, device.index, args.port_step) for name, module in agent.modules.items()
        }
        # what `status` maps each module's bindings with, from the device's desired modules of the moment
        plan = {"index": device.index, "step": args.port_step}
        hub.emulator.store.put_meta(f"port-plan:{device.device_id}", json.dumps(plan))
        own = str(device_state.resolve() / device.device_id) if device_state else ""
        hub.emulator.store.put_meta(f"state:{device.device_id}", own)
        shown = ", ".join(
            f"{name} {container}->{port}" for name, ports in served.items() for container, port in ports.items()
        )
        if own:
            shown = f"{shown or 'no published ports'}; state in {own}"
        if len(devices) > 1:  # the fleet's banner: which device serves what
            print(f"DEVICE {device.device_id}: {shown or 'no published ports'}", flush=True)
        else:
            logger.info("device %s: %s", device.device_id, shown or "no published ports")
    threads = [threading.Thread(target=agent.run, name=f"agent-{agent.device_id}") for agent in agents[1:]]
    for thread in threads:
        thread.start()
    try:
        agents[0].run()
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        hub.stop()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Print the hub's devices: each one's modules as its agent reports them, and the ports they serve."""
    print(json.dumps(_service_request(_config_from_args(args), "GET", "/emulator/status"), indent=2))
    return 0


def _require_state(config: EmulatorConfig) -> None:
    """A client command needs the emulator's CA: without it the emulator never ran here (or was reset)."""
    from edgehub_emulator.environment import ca_path  # pylint: disable=import-outside-toplevel

    if not ca_path(config).is_file():
        raise EmulatorError(
            f"no emulator has run with the state folder {config.state_dir} (never started, or reset): "
            "start it first with `edgehub-emulator start --manifest <deployment.json>` or `make emulator`"
        )


def _unreachable(config: EmulatorConfig, e: Exception) -> EmulatorError:
    return EmulatorError(
        f"cannot reach the emulator at https://{config.service_hostname}: is it running? "
        f"Start it with `edgehub-emulator start --manifest <deployment.json>` or `make emulator` ({type(e).__name__})"
    )


def _registry(config: EmulatorConfig) -> Any:
    # pylint: disable=import-outside-toplevel
    from azure.iot.hub import IoTHubRegistryManager
    from edgehub_emulator.environment import ca_path, service_connection_string

    _require_state(config)
    # The CLI talks to the emulator only: trust its CA even where the shell points requests at another bundle.
    os.environ["REQUESTS_CA_BUNDLE"] = str(ca_path(config))
    return IoTHubRegistryManager.from_connection_string(service_connection_string(config))


def _sdk_call(config: EmulatorConfig, call: Any) -> Any:
    """Run a service SDK call; its errors become one-line EmulatorErrors."""
    # pylint: disable=import-outside-toplevel
    import requests
    from msrest.exceptions import ClientRequestError, HttpOperationError

    try:
        return call()
    except HttpOperationError as e:
        raise _http_error(e) from e
    except (ClientRequestError, requests.RequestException) as e:
        raise _unreachable(config, e) from e


def _service_request(config: EmulatorConfig, method: str, path: str, **kwargs: Any) -> Any:
    import requests  # pylint: disable=import-outside-toplevel
    from edgehub_emulator.environment import ca_path  # pylint: disable=import-outside-toplevel

    _require_state(config)
    token = generate_sas(config.service_hostname, service_key(config.seed), policy=SERVICE_POLICY)
    url = f"https://{config.service_hostname}{path}"
    try:
        response = requests.request(
            method, url, headers={"Authorization": token}, verify=str(ca_path(config)), timeout=30, **kwargs
        )
    except requests.RequestException as e:
        raise _unreachable(config, e) from e
    if response.status_code >= 400:
        raise EmulatorError(f"{method} {path}: {response.status_code} {response.text}")
    return response.json()


def _http_error(e: Exception) -> EmulatorError:
    response = getattr(e, "response", None)
    status = getattr(response, "status_code", None)
    text = getattr(response, "text", "") or str(e)
    return EmulatorError(f"the hub answered {status}: {text}" if status else f"request failed: {e}")


def cmd_invoke(args: argparse.Namespace) -> int:
    """Invoke a direct method and print `{status, payload}`."""
    from azure.iot.hub.models import CloudToDeviceMethod  # pylint: disable=import-outside-toplevel

    payload = _json_arg(args.payload, "--payload")
    config = _config_from_args(args)
    registry = _registry(config)
    request = CloudToDeviceMethod(
        method_name=args.method,
        payload=payload,
        response_timeout_in_seconds=args.timeout,
        connect_timeout_in_seconds=0,
    )
    if args.module:
        result = _sdk_call(config, lambda: registry.invoke_device_module_method(args.device, args.module, request))
    else:
        result = _sdk_call(config, lambda: registry.invoke_device_method(args.device, request))
    print(json.dumps({"status": result.status, "payload": result.payload}))
    # the method's own answer decides, as for any command: 2xx is success, any other status exit 1
    return 0 if isinstance(result.status, int) and 200 <= result.status < 300 else EXIT_METHOD_FAILED


def cmd_twin(args: argparse.Namespace) -> int:
    """Print a module twin, or patch its desired properties."""
    from azure.iot.hub.models import Twin, TwinProperties  # pylint: disable=import-outside-toplevel

    desired = None
    if args.action == "patch":
        if args.patch is None:
            raise EmulatorError("twin patch needs a JSON object of desired properties")
        desired = _json_arg(args.patch, "the desired patch")
        if not isinstance(desired, dict):
            raise EmulatorError("the desired patch must be a JSON object")
    config = _config_from_args(args)
    registry = _registry(config)
    if desired is None:
        twin = _sdk_call(config, lambda: registry.get_module_twin(args.device, args.module))
    else:
        patch = Twin(properties=TwinProperties(desired=desired))
        twin = _sdk_call(config, lambda: registry.update_module_twin(args.device, args.module, patch))
    print(json.dumps(twin.as_dict(), indent=2, sort_keys=True))
    return 0


def readable_message(item: dict[str, Any]) -> dict[str, Any]:
    """A `$upstream` message as people read it: a JSON body as JSON (not an escaped string), the enqueued time as
    ISO 8601 UTC (the raw seconds stay in `enqueuedTimeEpoch`)."""
    out = dict(item)
    if out.get("encoding", "utf-8") == "utf-8" and isinstance(out.get("body"), str):
        try:
            out["body"] = json.loads(out["body"])
            out["encoding"] = "json"
        except ValueError:
            pass
    when = out.get("enqueuedTime")
    if isinstance(when, (int, float)):
        out["enqueuedTimeEpoch"] = when
        out["enqueuedTime"] = (
            datetime.datetime.fromtimestamp(when, tz=datetime.timezone.utc).isoformat(timespec="milliseconds")
        ).replace("+00:00", "Z")
    return out


def cmd_monitor(args: argparse.Namespace) -> int:
    """Follow `$upstream` messages, one JSON object per line (bodies as JSON, times as ISO 8601; --raw: as
    stored)."""
    config = _config_from_args(args)
    after = 0
    if not args.from_start:
        existing = _service_request(config, "GET", "/emulator/upstream", params={"after": 0, "limit": 5000})
        while existing:
            after = existing[-1]["seq"]
            existing = _service_request(config, "GET", "/emulator/upstream", params={"after": after, "limit": 5000})
    deadline = time.monotonic() + args.duration if args.duration else None
    while True:
        batch = _service_request(config, "GET", "/emulator/upstream", params={"after": after})
        for item in batch:
            print(json.dumps(item if args.raw else readable_message(item)), flush=True)
            after = item["seq"]
        if args.once and batch:  # --once prints every stored message: the service answers a batch at a time
            continue
        if args.once or (deadline and time.monotonic() > deadline):
            return 0
        if not batch:
            time.sleep(0.3)


def cmd_send_input(args: argparse.Namespace) -> int:
    """Put a JSON message on a module input, as a route would."""
    _json_arg(args.message, "the message")
    path = f"/emulator/modules/{args.module}/inputs/{args.input}"
    result = _service_request(_config_from_args(args), "POST", path, data=args.message.encode("utf-8"))
    print(json.dumps(result))
    return 0


def _known_modules(config: EmulatorConfig, store: Any, manifest: str | None) -> set[str]:
    """Modules of the deployment: identities in the state folder and the manifest's modules."""
    from edgehub_emulator.manifest import load_manifest  # pylint: disable=import-outside-toplevel

    known = {i.module_id for i in store.list_identities(config.device_id)} if store else set()
    if manifest:
        known |= set(load_manifest(manifest).modules)
    return {name for name in known if name and not name.startswith("$")}


def cmd_env(args: argparse.Namespace) -> int:
    """Print the environment a module needs (dotenv lines by default)."""
    # pylint: disable=import-outside-toplevel
    from edgehub_emulator.environment import module_environment, module_identity
    from edgehub_emulator.store import Store

    config = _config_from_args(args)
    if not args.module:  # the service side only: what a deployment or a back-end needs
        from edgehub_emulator.environment import ca_path, service_connection_string

        _require_state(config)
        _print_env(
            {"IOTHUB_CONNECTION_STRING": service_connection_string(config), "REQUESTS_CA_BUNDLE": str(ca_path(config))},
            args.format,
        )
        return 0
    db = config.state_dir / "state.sqlite3"
    store = Store(db) if db.exists() else None
    try:
        known = _known_modules(config, store, args.manifest)
        if args.module not in known:
            if not known:
                raise EmulatorError(
                    f"no emulator state in {config.state_dir} and no --manifest: cannot tell whether module "
                    f"{args.module!r} exists; start the emulator first or pass --manifest"
                )
            names = ", ".join(sorted(known))
            raise EmulatorError(f"module {args.module!r} is not in the deployment; known modules: {names}")
        identity = module_identity(config, store, args.module)
    finally:
        if store:
            store.close()
    _print_env(module_environment(config, identity, workload=args.workload), args.format)
    return 0


def _print_env(env: dict[str, str], style: str) -> None:
    if style == "json":
        print(json.dumps(env, indent=2))
        return
    prefix = "export " if style == "shell" else ""
    for name, value in env.items():
        quoted = "'" + value.replace("'", "'\\''") + "'" if style == "shell" else value
        print(f"{prefix}{name}={quoted}")


def cmd_reset(args: argparse.Namespace) -> int:
    """Delete the state folder (identities keep their keys: they derive from the seed)."""
    folder = Path(args.state or os.environ.get(STATE_DIR_ENV, DEFAULT_STATE_DIR))
    if not (folder / "state.sqlite3").exists() and not (folder / "certs").exists():
        print(f"nothing to reset in {folder}")
        return 0
    shutil.rmtree(folder)
    print(f"removed {folder}")
    return 0


def _options_parser(server_help: bool) -> argparse.ArgumentParser:
    """The options every command takes; the hub's own ones documented only when `server_help`."""
    options = argparse.ArgumentParser(add_help=False)

    def server(*names: str, **kwargs: Any) -> None:
        if not server_help:
            kwargs["help"] = argparse.SUPPRESS
        options.add_argument(*names, **kwargs)

    options.add_argument("--state", help=f"state folder (default ${STATE_DIR_ENV} or ./{DEFAULT_STATE_DIR})")
    options.add_argument("--hostname", help="IoT Hub host name the SDKs see (default localhost)")
    server("--gateway-hostname", help="host name modules connect to (default localhost)")
    options.add_argument("--device-id", help="the edge device id (default edge-device)")
    options.add_argument("--service-port", type=int, help="service HTTPS port (default 8443)")
    options.add_argument("--workload-port", type=int, help="workload API HTTP port (default 15580)")
    server("--module-method-port", type=int, help="module-to-module method port (443; 0 = off)")
    server("--max-message-bytes", type=int, help="largest message payload (default 262144)")
    server("--cert-name", action="append", help="extra name for the server certificate")
    options.add_argument("--seed", help="seed the keys derive from (stable connection strings; the default is public)")
    server("--bind", action="append", help="address to listen on (repeatable; default 127.0.0.1 and ::1)")
    server("--upstream-max-messages", type=int, help="$upstream messages kept for monitor (default 10000)")
    server("--upstream-max-age", type=float, help="seconds a $upstream message is kept (default 86400)")
    options.add_argument("--log-level", default=os.environ.get("EDGEHUB_EMULATOR_LOG_LEVEL", "INFO"))
    return options


def build_parser() -> argparse.ArgumentParser:  # pylint: disable=too-many-statements  # one line per option
    """The argument parser of every command."""
    # the hub's own options: shown by the commands that run a hub (start, up); the client commands accept them
    # (scripts pass one set of options to every call) but keep them out of their --help
    common = _options_parser(server_help=True)
    client = _options_parser(server_help=False)

    parser = argparse.ArgumentParser(prog="edgehub-emulator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", parents=[common], help="run the hub (Ctrl-C stops it)")
    start.add_argument("--manifest", help="deployment manifest: identities, routes, desired properties")
    up = sub.add_parser("up", parents=[common], help="run the hub and every module of a manifest")
    up.add_argument("manifest", help="deployment.template.json")
    up.add_argument("--env-file", help=".env file for the modules (default: next to the manifest)")
    up.add_argument("--device", action="append", help="an edge device of a local fleet (repeatable)")
    up.add_argument("--fleet", help='fleet file: {"devices": {"<id>": {"tags": {...}}}}')
    up.add_argument(
        "--port-step", type=int, default=100, help="port offset between fleet devices (default 100: 8080, 8180, ...)"
    )
    up.add_argument(
        "--device-state", help="folder of each device's own module state: DIR/<device-id>/ (with --device-path)"
    )
    up.add_argument(
        "--device-path",
        action="append",
        help="NAME=RELATIVE: a module env variable NAME is set to DEVICE_STATE/<device-id>/RELATIVE (repeatable)",
    )
    up.add_argument("--backoff-unit", type=float, default=10.0, help="restart back-off unit in seconds (IoT Edge: 10)")
    env = sub.add_parser("env", parents=[client], help="print the environment a module needs")
    env.add_argument("module", nargs="?", help="module id (omit for the service side only: IOTHUB_CONNECTION_STRING)")
    env.add_argument("--manifest", help="deployment manifest whose modules count as known (besides the state's)")
    env.add_argument("--workload", action="store_true", help="the IOTEDGE_* (workload API) path")
    env.add_argument("--format", choices=("dotenv", "shell", "json"), default="dotenv")
    invoke = sub.add_parser(
        "invoke",
        parents=[client],
        help="invoke a direct method",
        description="Invoke a direct method and print {status, payload}. Exit status: 0 when the method answers "
        "2xx, 1 for any other status it answers, 2 when it cannot be invoked (unknown or offline module: 404).",
    )
    invoke.add_argument("device")
    invoke.add_argument("module", nargs="?", default="", help="module id (omit for a device method)")
    invoke.add_argument("method")
    invoke.add_argument("--payload", default="null", help="JSON payload")
    invoke.add_argument("--timeout", type=int, default=30, help="response timeout in seconds")
    twin = sub.add_parser("twin", parents=[client], help="get a module twin or patch its desired properties")
    twin.add_argument("action", choices=("get", "patch"))
    twin.add_argument("device")
    twin.add_argument("module")
    twin.add_argument("patch", nargs="?", help="JSON object of desired properties (patch only)")
    monitor = sub.add_parser("monitor", parents=[client], help="follow $upstream messages as JSON lines")
    monitor.add_argument("--from-start", action="store_true", help="print stored messages first")
    monitor.add_argument("--once", action="store_true", help="print what is there and exit")
    monitor.add_argument("--duration", type=float, help="stop after this many seconds")
    monitor.add_argument("--raw", action="store_true", help="bodies as stored strings, times as epoch seconds")
    send = sub.add_parser("send-input", parents=[client], help="send a JSON message to a module input")
    send.add_argument("module")
    send.add_argument("input")
    send.add_argument("message", help="JSON message body")
    sub.add_parser("reset", parents=[client], help="delete the state folder")
    sub.add_parser("status", parents=[client], help="the hub's devices, their modules and ports")
    return parser


COMMANDS = {
    "start": cmd_start,
    "up": cmd_up,
    "env": cmd_env,
    "invoke": cmd_invoke,
    "twin": cmd_twin,
    "monitor": cmd_monitor,
    "send-input": cmd_send_input,
    "reset": cmd_reset,
    "status": cmd_status,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; errors become one line on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("azure", "paho", "msrest"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # its retry warnings come before the one-line error
    try:
        return COMMANDS[args.command](args)
    except EmulatorError as e:
        print(f"edgehub-emulator {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
