"""SPAWN: cloud processes, run by the kernel on sandboxed, reusable workers.

What runs where:

- the kernel (one event loop): the supervisor (processes, attempts,
  retries, limits; nubis.proc.supervisor), the warm pools (nubis.proc.pools)
  and a second ZeroMQ server on the worker endpoint (nubis.proc.gate);
- the zygote (a separate, pre-loaded Python process; nubis.proc.zygote):
  forks workers and reports their exits, as the kernel itself never forks;
- workers (the zygote's children; nubis.proc.worker): enter the sandbox
  (nubis.proc.sandbox), run one tenant's executable, and talk to the kernel
  over a private channel (tasks, results; nubis.proc.channel) and as clients
  over the worker endpoint (cloud calls, with a token minted per worker).

`ProcRuntime.start` boots all of it and says at WARNING what this host
cannot isolate.
"""

import asyncio
import logging
import os
import shutil
import tempfile

from nubis.proc.gate import WorkerGate
from nubis.proc.pools import Pools
from nubis.proc.supervisor import Supervisor
from nubis.proc.zygote_handle import ZygoteHandle

log = logging.getLogger("nubis.proc")


class ProcRuntime:
    """The zygote, the worker endpoint, the pools and the supervisor."""

    def __init__(self, kernel, config):
        self.kernel = kernel
        self.config = config
        self.folder = ""
        self.zygote = None
        self.server = None
        self.pools = None
        self.supervisor = None
        self._sweeper = None

    async def start(self) -> None:
        c = self.config
        # Not the kernel's 0700 runtime folder: workers run as other users
        # and must reach their socket; 0711 lets them in only by exact name.
        self.folder = tempfile.mkdtemp(prefix="nubis-proc-", dir=c.proc_dir or None)
        os.chmod(self.folder, 0o711)
        os.mkdir(os.path.join(self.folder, "scratch"), 0o711)
        os.chmod(os.path.join(self.folder, "scratch"), 0o711)
        gate = WorkerGate(self.kernel)
        self.zygote = ZygoteHandle(c.proc_uid_base, self._on_zygote,
                                   c.spawn_preload)
        await self.zygote.start()
        probe = self.zygote.probe
        self._warn(probe)

        from nubis.transport.zmq_server import ZmqServer

        path = os.path.join(self.folder, "kernel.sock")
        self.server = ZmqServer(gate, [f"ipc://{path}"])
        await self.server.start()
        os.chmod(path, 0o666)    # any local user may try; the token decides
        settings = dict(
            url=f"zmq+ipc://{path}", proc_dir=self.folder,
            uid_base=c.proc_uid_base, setuid=probe.get("setuid", False),
            netns=probe.get("netns", False), max_payload=c.max_message_bytes,
            max_processes=c.proc_max_processes, open_files=c.proc_open_files,
            file_bytes=c.proc_file_bytes)
        self.pools = Pools(self.zygote, gate, settings)
        self.supervisor = Supervisor(self.kernel, self.pools, dict(
            concurrency=c.proc_concurrency, history=c.proc_history,
            log_bytes=c.proc_log_bytes))
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        log.info("cloud processes: workers reach the kernel at %s", path)

    def _on_zygote(self, message: dict) -> None:
        if self.pools is not None:
            self.pools.on_zygote(message)

    def _warn(self, probe: dict) -> None:
        missing = []
        if not probe.get("setuid"):
            missing.append("workers run as the kernel's own user (not root, "
                           "or setuid failed): tenants can read the kernel's "
                           "files and each other's scratch folders, and no "
                           "per-tenant process limit applies")
        if not probe.get("netns"):
            missing.append("no network namespace (unshare failed): workers "
                           "can open TCP and UDP sockets")
        if probe.get("setuid") and not probe.get("stdlib", True):
            log.warning("cloud processes can import only preloaded modules: "
                        "tenant user ids cannot read %s; install Python where "
                        "other users may read it", probe.get("stdlib_path"))
        for what in missing:
            log.warning("cloud processes are not isolated: %s", what)
        if not missing:
            log.info("cloud processes: own user ids, rlimits, scratch folders, "
                     "no network")

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                self.pools.sweep(self.config.proc_idle_seconds)
            except Exception:
                log.exception("warm pool sweep")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.supervisor is not None:
            self.supervisor.kill_all()
        if self.pools is not None:
            self.pools.kill_all()
        if self.zygote is not None:
            await self.zygote.stop()
        if self.server is not None:
            await self.server.stop()
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)
