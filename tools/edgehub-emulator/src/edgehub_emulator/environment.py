"""Connection strings and the environment a module process gets, as on a device."""

from __future__ import annotations

from pathlib import Path

from edgehub_emulator.certs import CA_CERT
from edgehub_emulator.config import EmulatorConfig
from edgehub_emulator.identity import SERVICE_POLICY, derived_identity, service_key
from edgehub_emulator.store import Identity, Store

WORKLOAD_API_VERSION = "2019-01-30"


def ca_path(config: EmulatorConfig) -> Path:
    """The CA certificate file in the state folder."""
    return (config.state_dir / "certs" / CA_CERT).resolve()


def module_identity(config: EmulatorConfig, store: Store | None, module_id: str) -> Identity:
    """The stored identity (keys may have been set through the service API) or the derived one."""
    stored = store.get_identity(config.device_id, module_id) if store else None
    derived = derived_identity(config.seed, config.device_id, module_id)
    if stored is None:
        return derived
    if stored.generation_id == "1":  # stored by an earlier version; the hub derives it on its next start
        stored.generation_id = derived.generation_id
    return stored


def module_connection_string(config: EmulatorConfig, identity: Identity) -> str:
    """What `IoTHubModuleClient.create_from_connection_string` takes (with GatewayHostName)."""
    parts = [f"HostName={config.hostname}", f"DeviceId={identity.device_id}"]
    if identity.module_id:
        parts.append(f"ModuleId={identity.module_id}")
    parts += [f"SharedAccessKey={identity.primary_key}", f"GatewayHostName={config.gateway_hostname}"]
    return ";".join(parts)


def service_connection_string(config: EmulatorConfig) -> str:
    """What `IoTHubRegistryManager.from_connection_string` takes."""
    key = service_key(config.seed)
    return f"HostName={config.service_hostname};SharedAccessKeyName={SERVICE_POLICY};SharedAccessKey={key}"


def module_environment(config: EmulatorConfig, identity: Identity, workload: bool) -> dict[str, str]:
    """The variables `create_from_edge_environment()` reads, plus the service side for tools.

    workload=False gives the simulator path (`EdgeHubConnectionString`, `EdgeModuleCACertificateFile`);
    workload=True the `IOTEDGE_*` path a device's edgeAgent sets (signing through the workload API).
    """
    env = {
        "IOTEDGE_DEVICEID": identity.device_id,
        "IOTEDGE_MODULEID": identity.module_id,
        "IOTHUB_CONNECTION_STRING": service_connection_string(config),
        "REQUESTS_CA_BUNDLE": str(ca_path(config)),
    }
    if workload:
        env.update(
            {
                "IOTEDGE_IOTHUBHOSTNAME": config.hostname,
                "IOTEDGE_GATEWAYHOSTNAME": config.gateway_hostname,
                "IOTEDGE_MODULEGENERATIONID": identity.generation_id,
                "IOTEDGE_WORKLOADURI": f"http://127.0.0.1:{config.workload_port}/",
                "IOTEDGE_APIVERSION": WORKLOAD_API_VERSION,
                "IOTEDGE_AUTHSCHEME": "sasToken",
            }
        )
    else:
        # Leaving IOTEDGE_WORKLOADURI out makes the SDK take the simulator path.
        env.update(
            {
                "EdgeHubConnectionString": module_connection_string(config, identity),
                "EdgeModuleCACertificateFile": str(ca_path(config)),
            }
        )
    return env
