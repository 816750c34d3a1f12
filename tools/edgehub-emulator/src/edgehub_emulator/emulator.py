"""One emulator instance: state folder, certificates, the hub and its servers on one event loop."""

from __future__ import annotations

import asyncio
import errno
import logging
import ssl
import threading
from pathlib import Path
from typing import Any

from edgehub_emulator.broker import MqttServer
from edgehub_emulator.certs import CertPaths, ensure_certificates
from edgehub_emulator.config import EmulatorConfig
from edgehub_emulator.errors import ConfigError
from edgehub_emulator.hub import Hub
from edgehub_emulator.manifest import Manifest
from edgehub_emulator.service import ServiceApi, WorkloadApi
from edgehub_emulator.store import Store, make_private_dir
from edgehub_emulator.web import WebServer, raise_open_files_limit

logger = logging.getLogger(__name__)

DB_FILE = "state.sqlite3"


class Emulator:
    """Start with `await start()`, stop with `await stop()`; or use EmulatorThread from synchronous code."""

    def __init__(
        self, config: EmulatorConfig, manifest: Manifest | None = None, fleet: dict[str, dict[str, Any]] | None = None
    ) -> None:
        self.config = config
        self.manifest = manifest
        make_private_dir(self.config.state_dir)
        self.certs: CertPaths = ensure_certificates(
            config.state_dir, [config.gateway_hostname, config.hostname, *config.extra_cert_names]
        )
        self.store = Store(config.state_dir / DB_FILE)
        self.hub = Hub(config, self.store, manifest, fleet)
        self.mqtt = MqttServer(self.hub)
        self._servers: list[asyncio.base_events.Server] = []
        self.module_method_port_bound = False
        self._http: list[WebServer] = []
        self._purger: asyncio.Task[None] | None = None

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.certs.server_cert, self.certs.server_key)
        return context

    async def _listen(  # pylint: disable=too-many-arguments
        self,
        handler: MqttServer | WebServer,
        port: int,
        hosts: tuple[str, ...],
        tls: bool,
        what: str,
        required: bool = True,
    ) -> bool:
        bound = []
        for host in hosts:
            try:
                context = self._tls_context() if tls else None
                if isinstance(handler, WebServer):
                    server = await handler.listen(host, port, context)
                else:
                    server = await asyncio.start_server(handler.handle, host, port, ssl=context, reuse_address=True)
            except OSError as e:
                if host == "::1" and e.errno != errno.EADDRINUSE:
                    logger.info("%s: IPv6 loopback unavailable (%s); serving IPv4 only", what, e.strerror)
                    continue
                if required:
                    await self.stop()
                    raise ConfigError(f"{what}: cannot listen on {host}:{port}: {e.strerror}") from e
                logger.warning("%s: cannot listen on %s:%d (%s); it stays off", what, host, port, e.strerror)
                continue
            self._servers.append(server)
            bound.append(host)
        if bound:
            logger.info("%s listening on %s port %d", what, " and ".join(bound), port)
        return bool(bound)

    async def start(self) -> None:
        """Bind every server; ConfigError when a required port is taken."""
        cfg = self.config
        cfg.write_runtime_file()
        if cfg.public_seed_exposed:
            logger.warning(
                "listening on %s with the default seed: every key derives from a public value; "
                "pass --seed with a secret of your own",
                ", ".join(cfg.bind_hosts),
            )
        raise_open_files_limit()
        service = WebServer(ServiceApi(self.hub).routes(), cfg.max_message_bytes + 64 * 1024, "service API")
        workload = WebServer(WorkloadApi(self.hub, self.certs.ca_cert).routes(), 64 * 1024, "workload API")
        self._http = [service, workload]
        for http in self._http:
            await http.setup()
        await self._listen(self.mqtt, cfg.mqtt_port, cfg.bind_hosts, True, "MQTT over TLS")
        await self._listen(service, cfg.service_port, cfg.bind_hosts, True, "service API (HTTPS)")
        await self._listen(workload, cfg.workload_port, ("127.0.0.1",), False, "workload API (HTTP)")
        self._purger = asyncio.get_running_loop().create_task(self._purge_periodically())
        if cfg.module_method_port:
            self.module_method_port_bound = await self._listen(
                service,
                cfg.module_method_port,
                cfg.bind_hosts,
                True,
                "module-to-module methods (HTTPS)",
                required=False,
            )

    async def stop(self) -> None:
        """Close servers and connections, then the database."""
        if self._purger:
            self._purger.cancel()
            await asyncio.gather(self._purger, return_exceptions=True)
            self._purger = None
        for server in self._servers:
            server.close()
        await self.mqtt.close_all()
        for http in self._http:
            await http.close()
        self._http.clear()
        for server in self._servers:
            try:
                await asyncio.wait_for(server.wait_closed(), 2)
            except asyncio.TimeoutError:
                pass
        self._servers.clear()

    async def _purge_periodically(self) -> None:
        """Expired queued messages and old `$upstream` messages go on a timer, whoever is connected."""
        while True:
            try:
                self.hub.purge()
            except Exception:  # pylint: disable=broad-exception-caught  # the next round tries again
                logger.exception("purging expired messages failed")
            await asyncio.sleep(self.config.purge_interval_secs)

    def close(self) -> None:
        """Release the database (after stop)."""
        self.store.close()


class EmulatorThread:
    """Runs an Emulator on its own event loop in a daemon thread (never inside an SDK's loop)."""

    def __init__(
        self, config: EmulatorConfig, manifest: Manifest | None = None, fleet: dict[str, dict[str, Any]] | None = None
    ) -> None:
        self.emulator = Emulator(config, manifest, fleet)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="edgehub-emulator", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def ca_cert(self) -> Path:
        """The CA certificate clients must trust."""
        return self.emulator.certs.ca_cert

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.emulator.start())
        except BaseException as e:  # pylint: disable=broad-exception-caught
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.emulator.stop())
        self.emulator.close()
        self.loop.close()

    def start(self) -> EmulatorThread:
        """Start and wait until every server listens; re-raises a start-up error."""
        self._thread.start()
        self._ready.wait()
        if self._error:
            raise self._error
        return self

    def stop(self) -> None:
        """Stop the loop and wait for the thread."""
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
