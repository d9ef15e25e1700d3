"""The kernel's end of the zygote (see nubis.proc.zygote for the protocol)."""

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys

from nubis.errors import Unavailable

log = logging.getLogger("nubis.proc")

# The zygote's environment: nothing of the kernel's (tokens, config paths).
_ENV_KEPT = ("PATH", "LANG", "LC_ALL", "TZ", "PYTHONPATH")


class ZygoteHandle:
    """Start the zygote, ask it to fork, and route its reports."""

    def __init__(self, uid_base: int, on_message, preload=()):
        self.uid_base = uid_base
        self.preload = tuple(preload)    # modules beyond the zygote's own
        self.on_message = on_message    # called with each report but "ready"
        self.sock = None
        self.proc = None
        self.probe: dict = {}
        self._ready = None

    async def start(self, timeout: float = 30.0) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {k: v for k, v in os.environ.items() if k in _ENV_KEPT}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nubis.proc.zygote", str(theirs.fileno()),
             str(self.uid_base), ",".join(self.preload)],
            pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL)
        theirs.close()
        ours.setblocking(False)
        self.sock = ours
        self._ready = loop.create_future()
        loop.add_reader(ours.fileno(), self._readable)
        try:
            self.probe = await asyncio.wait_for(self._ready, timeout)
        except asyncio.TimeoutError:
            await self.stop()
            raise OSError(f"the zygote did not start within {timeout:.0f} s") from None
        log.info("zygote started (os pid %d)", self.proc.pid)

    def _readable(self) -> None:
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._lost()
                return
            message = json.loads(data)
            if message.get("op") == "ready":
                if not self._ready.done():
                    self._ready.set_result(message["probe"])
            else:
                self.on_message(message)

    def _lost(self) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(self.sock.fileno())
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(OSError("the zygote exited at start"))
        log.warning("the zygote exited: cloud processes cannot start until "
                    "the kernel restarts; see the kernel log above for why")
        self.on_message({"op": "lost"})

    def fork(self, wid: int, spec: dict, fds: list[int]) -> None:
        """Ask for a worker; its pid arrives as a "forked" report."""
        message = json.dumps({"op": "fork", "wid": wid, "spec": spec}).encode()
        try:
            socket.send_fds(self.sock, [message], fds)
        except OSError as e:
            raise Unavailable(f"cannot reach the zygote: {e}") from None

    async def stop(self) -> None:
        if self.sock is not None:
            try:
                asyncio.get_running_loop().remove_reader(self.sock.fileno())
            except (ValueError, OSError):
                pass
            self.sock.close()    # the zygote kills its workers and exits
            self.sock = None
        if self.proc is not None:
            try:
                await asyncio.to_thread(self.proc.wait, 5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
