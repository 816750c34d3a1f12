"""Settings of one emulator instance, read once; everything else derives from them."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgehub_emulator.errors import ConfigError
from edgehub_emulator.store import make_private_dir, write_private

# under the repository's local state folder, where `make run` and `make emulator` keep it too
DEFAULT_STATE_DIR = ".state/edgehub-emulator"
STATE_DIR_ENV = "EDGEHUB_EMULATOR_STATE"
RUNTIME_FILE = "runtime.json"
DEFAULT_SEED = "edgehub-emulator-local-seed"
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


@dataclass
class EmulatorConfig:  # pylint: disable=too-many-instance-attributes  # one field per setting
    """Where the emulator keeps its state and what it listens on.

    `hostname` is the IoT Hub host name the SDKs see (the SAS `sr` uses it); `gateway_hostname` is the name
    modules connect to (it must be in the server certificate). The device SDK always uses MQTT port 8883.
    """

    state_dir: Path = field(default_factory=lambda: Path(os.environ.get(STATE_DIR_ENV, DEFAULT_STATE_DIR)))
    hostname: str = "localhost"
    gateway_hostname: str = "localhost"
    device_id: str = "edge-device"
    mqtt_port: int = 8883
    service_port: int = 8443
    workload_port: int = 15580
    module_method_port: int | None = 443
    bind_hosts: tuple[str, ...] = ("127.0.0.1", "::1")
    max_message_bytes: int = 256 * 1024
    extra_cert_names: tuple[str, ...] = ()
    default_ttl_secs: int = 7200
    method_default_timeout_secs: float = 30.0
    # `$upstream` messages are kept for `monitor` up to this many and this long; older ones are pruned.
    upstream_max_messages: int = 10_000
    upstream_max_age_secs: float = 24 * 3600.0
    purge_interval_secs: float = 30.0
    # Keys derive from the seed, so connection strings stay the same across restarts and resets. The default is
    # public (it is in this source): fine on loopback, a warning anywhere else.
    seed: str = DEFAULT_SEED

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)
        if not self.device_id or "/" in self.device_id:
            raise ConfigError(f"device id {self.device_id!r} must be non-empty and contain no '/'")
        ports = {
            "mqtt_port": self.mqtt_port,
            "service_port": self.service_port,
            "workload_port": self.workload_port,
        }
        if self.module_method_port is not None:
            ports["module_method_port"] = self.module_method_port
        for name, port in ports.items():
            if not 0 < int(port) < 65536:
                raise ConfigError(f"{name} must be between 1 and 65535, got {port}")
        if self.max_message_bytes < 1:
            raise ConfigError(f"max_message_bytes must be positive, got {self.max_message_bytes}")
        if self.upstream_max_messages < 1 or self.upstream_max_age_secs <= 0 or self.purge_interval_secs <= 0:
            raise ConfigError(
                "upstream_max_messages, upstream_max_age_secs and purge_interval_secs must be positive, got "
                f"{self.upstream_max_messages}, {self.upstream_max_age_secs}, {self.purge_interval_secs}"
            )
        if not self.bind_hosts:
            raise ConfigError("bind_hosts must name at least one address")

    @property
    def public_seed_exposed(self) -> bool:
        """True when the public default seed guards an emulator that listens beyond loopback."""
        return self.seed == DEFAULT_SEED and any(
            host not in LOOPBACK_HOSTS and not host.startswith("127.") for host in self.bind_hosts
        )

    @property
    def service_hostname(self) -> str:
        """The HostName of the service connection string: the hub name with the service port."""
        return f"{self.hostname}:{self.service_port}"

    def write_runtime_file(self) -> None:
        """Record the settings of the running instance so that CLI commands find its ports and names."""
        data = asdict(self)
        data["state_dir"] = str(self.state_dir)
        make_private_dir(self.state_dir)
        write_private(self.state_dir / RUNTIME_FILE, json.dumps(data, indent=2).encode("utf-8"))

    @classmethod
    def from_state_dir(cls, state_dir: Path | str | None = None) -> EmulatorConfig:
        """The settings recorded by the last `start` in that state folder (defaults when it never ran)."""
        folder = Path(state_dir) if state_dir else Path(os.environ.get(STATE_DIR_ENV, DEFAULT_STATE_DIR))
        path = folder / RUNTIME_FILE
        if not path.exists():
            return cls(state_dir=folder)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read {path}: {e}") from e
        data["state_dir"] = folder
        for key in ("bind_hosts", "extra_cert_names"):
            if key in data:
                data[key] = tuple(data[key])
        known = set(cls.__dataclass_fields__)  # pylint: disable=no-member
        return cls(**{k: v for k, v in data.items() if k in known})
