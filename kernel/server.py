"""Boot and stop a kernel with its transports on one uvloop event loop."""

import asyncio
import logging
import os
import signal

from nubis import security
from nubis.config import KernelConfig, runtime_dir
from nubis.core import Kernel

log = logging.getLogger("nubis.kernel")


class Server:
    """A kernel serving its call table over ZeroMQ and gRPC."""

    def __init__(self, config: KernelConfig):
        self.config = config
        self.kernel = Kernel(config)
        self.transports = []
        self.demo_token = None
        self.stopped = asyncio.Event()
        self.proc_runtime = None

    async def start(self) -> None:
        if not self.kernel.tenants.by_name:
            self._add_demo_tenant()
        self._open_journal()
        if self.config.zmq:
            await self._start_zmq()
            if self.config.spawn:
                await self._start_procs()
        if self.config.grpc:
            from nubis.transport.grpc_server import GrpcServer

            tls = security.server_tls(self.config)
            grpc_server = GrpcServer(self.kernel, self.config.grpc, tls)
            await grpc_server.start()
            self.transports.append(grpc_server)
            scheme = "grpcs" if tls else "grpc"
            self.kernel.endpoints.append(f"{scheme}://{grpc_server.bound}")
        log.info("kernel %s serving %s (hot paths: %s)", self.kernel.version,
                 ", ".join(self.kernel.endpoints), self.kernel.hot_paths())

    async def _start_zmq(self) -> None:
        """One ZeroMQ server per security mechanism: a socket has one.

        With a CURVE key the tcp:// endpoints get CURVE; ipc:// endpoints
        keep PLAIN, protected by the socket file's permissions.
        """
        from nubis.transport.zmq_server import ZmqServer

        curve = security.server_curve(self.config)
        plain = [e for e in self.config.zmq
                 if not (curve and e.startswith("tcp://"))]
        curved = [e for e in self.config.zmq if e not in plain]
        for endpoints, keys in ((plain, None), (curved, curve)):
            if not endpoints:
                continue
            zmq_server = ZmqServer(self.kernel, endpoints, keys)
            await zmq_server.start()
            self.transports.append(zmq_server)
            self.kernel.endpoints += [f"zmq+{e}" for e in zmq_server.bound]

    async def _start_procs(self) -> None:
        """SPAWN: the zygote, the worker endpoint and the supervisor."""
        from nubis.proc import ProcRuntime

        runtime = ProcRuntime(self.kernel, self.config)
        try:
            await runtime.start()
        except OSError as e:
            log.warning("cloud processes are off: %s", e)
            await runtime.stop()
            return
        self.proc_runtime = runtime
        self.kernel.procs = runtime.supervisor
        if self.kernel.journal is not None:
            self.kernel.journal.restore_processes(runtime.supervisor, self.kernel)

    def _open_journal(self) -> None:
        """With a data folder and fsync policy, replay and keep the journal."""
        c = self.config
        if not c.data_dir or c.fsync == "none":
            return
        from nubis.journal import Journal

        journal = Journal(c.data_dir, c.fsync, self.kernel.clock,
                          c.journal_compact_bytes)
        journal.open(self.kernel)
        journal.start()
        self.kernel.journal = journal

    def _add_demo_tenant(self) -> None:
        """With no tenants configured, make `demo` and write its token down."""
        token = os.environ.get("NUBIS_TOKEN", "")
        from nubis.tenants import parse_ports

        ports = parse_ports(self.config.demo_ports, "demo_ports")
        _, token = self.kernel.tenants.add("demo", token, admin=True, ports=ports)
        self.demo_token = token
        folder = runtime_dir()
        os.makedirs(folder, mode=0o700, exist_ok=True)
        path = os.path.join(folder, "demo.token")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        log.info("no tenants configured: made tenant 'demo' (admin); its token "
                 "is in %s", path)

    async def stop(self) -> None:
        await self.kernel.net.close()
        if self.proc_runtime is not None:
            await self.proc_runtime.stop()
            self.proc_runtime = None
            self.kernel.procs = None
        for transport in reversed(self.transports):
            await transport.stop()
        self.transports.clear()
        if self.kernel.journal is not None:
            await self.kernel.journal.close()
        log.info("kernel stopped")
        self.stopped.set()

    async def serve_until_signal(self) -> None:
        """Serve until SIGINT or SIGTERM, then stop cleanly."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        await stop.wait()
        log.info("kernel stopping on signal")
        await self.stop()


def run(config: KernelConfig) -> None:
    """Run a kernel in the foreground on uvloop."""
    import uvloop

    uvloop.run(Server(config).serve_until_signal())
